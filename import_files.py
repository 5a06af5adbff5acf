# SPDX-License-Identifier: GPL-3.0-or-later
"""Sending outside studies to Orthanc file by file, with import
reconciliation: shared by the streaming route (stream.py) and the
JSON-RPC upload (upload.py).

* A DICOM file with an identity (the patient chosen in the upload) is sent
  with its header rewritten (dicom_identity) and its pixel data as read:
  nothing under the other hospital's identity reaches Orthanc.  A file
  whose header cannot be read is not sent (Rejected, named).
* A ZIP archive is opened here, not by Orthanc, and each entry is sent as
  a file of its own, named ``archive.zip/path/in/archive``: what is not
  DICOM (a viewer, autorun.inf) and a DICOMDIR are skipped by name, and
  every entry can be reconciled.  An entry is read as it is sent (its
  size is bounded by the upload limits, checked before).
"""
import threading
import zipfile

from trytond.i18n import gettext

from . import dicom_identity, orthanc, stream, upload_frames

PIECE = 1 << 20


class _Body:
    """bytes then the rest of a one-pass stream, sent as read: an
    iterable of pieces of up to 1 MB with a len() (the Content-Length).

    The pieces are views of one buffer per thread, read into again for the
    next piece: the adapter sends each before it asks for the next one
    (no allocation and no copy per piece)."""

    def __init__(self, prefix, reader, remaining):
        self._prefix = prefix
        self._reader = reader
        self._remaining = remaining

    def __len__(self):
        return len(self._prefix) + self._remaining

    def __iter__(self):
        # Iterated once: the adapter does not send an iterable again.
        yield self._prefix
        # A file already in memory (the JSON-RPC upload's view) is sent
        # from where it is.
        read_view = getattr(self._reader, 'read_view', None)
        buffer = _piece_buffer() if read_view is None else None
        remaining = self._remaining
        while remaining > 0:
            if read_view is not None:
                piece = read_view(remaining)
            else:
                piece = buffer[:read_into(self._reader,
                        buffer[:min(PIECE, remaining)])]
            if not piece:
                raise orthanc.Unreachable('the file ended early')
            remaining -= len(piece)
            yield piece


_local = threading.local()


def _piece_buffer():
    "This thread's buffer of PIECE bytes (a memoryview)."
    buffer = getattr(_local, 'buffer', None)
    if buffer is None:
        buffer = _local.buffer = memoryview(bytearray(PIECE))
    return buffer


def read_into(reader, view):
    "reader.readinto(view), or read() and a copy for readers without it."
    readinto = getattr(reader, 'readinto', None)
    if readinto is not None:
        return readinto(view)
    piece = reader.read(len(view))
    view[:len(piece)] = piece
    return len(piece)


class _Chained:
    "read() of some bytes already read, then of the stream they came from."

    def __init__(self, head, reader):
        self._head = memoryview(head)
        self._reader = reader

    def read(self, size):
        if self._head:
            piece, self._head = self._head[:size], self._head[size:]
            return bytes(piece)
        return self._reader.read(size)

    def readinto(self, view):
        if self._head:
            count = min(len(view), len(self._head))
            view[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        return read_into(self._reader, view)


def not_reconciled(name, exc):
    return orthanc.UploadedFile(name, 'Rejected', reason=gettext(
            'health_orthanc.msg_reconcile_unreadable',
            detail=str(exc)[:200]))


def dicom_body(head, reader, length, identity):
    """What to send for a DICOM file of length bytes whose first bytes
    head were read from reader: as is without identity, else with its
    header rewritten (dicom_identity.NotRewritable if it cannot be)."""
    if identity is None:
        return _Body(head, reader, length - len(head))
    rewritten, ahead = dicom_identity.rewrite_stream(
        _Chained(head, reader), length, identity)
    consumed = rewritten.resume + len(ahead)
    return _Body(rewritten.header + ahead, reader, length - consumed)


def send_dicom(client, name, head, reader, length, identity):
    "POST one DICOM file: a list of orthanc.UploadedFile."
    try:
        body = dicom_body(head, reader, length, identity)
    except dicom_identity.NotRewritable as exc:
        stream.drain(reader, length)
        return [not_reconciled(name, exc)]
    try:
        return client.upload(name, body)
    except (orthanc.Rejected, orthanc.NotFound) as exc:
        return [stream.rejected(name, exc)]


def send_member(client, name, reader, length, identity):
    "One ZIP entry, DICOM or not."
    head = stream.read_head(reader, length)
    kind = stream.classify(head)
    if kind == 'dicom':
        return send_dicom(client, name, head, reader, length, identity)
    # A DICOMDIR, a viewer, a nested archive: not sent, named.
    return [stream.skipped(name, kind)]


def send_zip(client, name, view, identity):
    """Each entry of the ZIP archive view (a memoryview, checked against
    the upload limits) sent on its own: a list of orthanc.UploadedFile."""
    files = []
    try:
        with zipfile.ZipFile(upload_frames._ViewFile(view)) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                member = '%s/%s' % (name, info.filename)
                if not info.file_size:
                    files.append(stream.skipped(member, 'unknown'))
                    continue
                with archive.open(info) as reader:
                    files.extend(send_member(client, member, reader,
                            info.file_size, identity))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError,
            NotImplementedError, OSError) as exc:
        files.append(orthanc.UploadedFile(name, 'Rejected',
                reason=gettext('health_orthanc.msg_upload_bad_zip',
                    detail=str(exc) or exc.__class__.__name__)))
    if not any(f.status in ('Success', 'AlreadyStored') for f in files):
        files.append(orthanc.UploadedFile(name, 'Rejected', reason=gettext(
                    'health_orthanc.msg_reconcile_zip_empty')))
    return files


class _ChunkReader:
    "read() over an iterable of byte chunks (a gzip'ed file inflating)."

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._pending = b''

    def read(self, size):
        while len(self._pending) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._pending += chunk
        piece, self._pending = self._pending[:size], self._pending[size:]
        return piece


def reader_of(body):
    "A one-pass read() over what upload_frames.CheckedFile.body() gives."
    if isinstance(body, memoryview):
        return dicom_identity.ViewReader(body)
    return _ChunkReader(body)


def send_checked(client, name, kind, body, identity):
    """One checked file of the JSON-RPC upload (kind: upload_frames.kind_of
    of what is sent, body: CheckedFile.body()): a list of UploadedFile."""
    if kind == 'zip':
        return send_zip(client, name, memoryview(body).cast('B'), identity)
    if kind == 'dicom' and identity is not None:
        reader = reader_of(body)
        head = stream.read_head(reader, len(body))
        return send_dicom(client, name, head, reader, len(body), identity)
    # Sent as is: Orthanc names what it refuses (not DICOM...).
    try:
        return client.upload(name, body)
    except (orthanc.Rejected, orthanc.NotFound) as exc:
        return [stream.rejected(name, exc)]
