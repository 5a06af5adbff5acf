# SPDX-License-Identifier: GPL-3.0-or-later
"""Split what an upload widget sent into files, without copying them.

No Tryton code here (unit-tested alone).  The value of a binary_dicom field
is one of:

* the GNU Health framing (GTK client widget and SAO's custom.js):
  ``b'MULT'`` then, per file, an 8-byte little-endian unsigned length and
  the file's bytes;
* one file as is: a DICOM Part 10 file, a ZIP archive of DICOM files, ...

``iter_files`` yields the files lazily as ``memoryview`` slices of the
value: a 200 MB upload is never copied as a whole.  A frame whose length
runs past the end of the value (a truncated upload) is yielded with an
error and ends the iteration: the bytes after it cannot be trusted.
"""
import struct
import zlib
from dataclasses import dataclass

__all__ = ['MAGIC', 'Frame', 'is_framed', 'iter_files', 'count_frames',
    'file_names', 'kind_of', 'gunzip']

MAGIC = b'MULT'
_LENGTH = struct.Struct('<Q')
_DICM_OFFSET = 128
ZIP_MAGIC = (b'PK\x03\x04', b'PK\x05\x06')  # an archive, an empty archive
GZIP_MAGIC = b'\x1f\x8b'
# A gzip'ed DICOM file (the GTK widget offers *.gz) is inflated up to this
# size; more is refused rather than risking a decompression bomb.
MAX_GUNZIP = 1 << 30


@dataclass(frozen=True)
class Frame:
    "One file of an upload: its position, bytes (a view) or an error."
    index: int  # 0-based position in the upload
    data: memoryview = None
    error: str = None

    @property
    def size(self):
        return len(self.data) if self.data is not None else 0


def _view(data):
    view = data if isinstance(data, memoryview) else memoryview(data)
    return view.cast('B') if view.format != 'B' or view.ndim != 1 else view


def _is_dicom(view):
    return bytes(view[_DICM_OFFSET:_DICM_OFFSET + 4]) == b'DICM'


def _walk(view):
    """(index, start, length, error) of each frame; no data is touched
    beyond the 8-byte headers."""
    position, index, size = len(MAGIC), 0, len(view)
    while position < size:
        if size - position < _LENGTH.size:
            yield index, position, 0, (
                'truncated upload: the length of file #%d is cut short '
                '(%d of %d bytes)' % (index + 1, size - position,
                    _LENGTH.size))
            return
        length, = _LENGTH.unpack_from(view, position)
        position += _LENGTH.size
        if length > size - position:
            yield index, position, 0, (
                'truncated upload: file #%d announces %d bytes, '
                'only %d arrived' % (index + 1, length, size - position))
            return
        yield index, position, length, None
        position += length
        index += 1


def is_framed(data):
    """True if data uses the MULT framing.

    A DICOM file whose 128-byte preamble happens to start with b'MULT' is
    not taken for a framed upload unless its framing is exact.
    """
    if data is None:
        return False
    view = _view(data)
    if bytes(view[:len(MAGIC)]) != MAGIC:
        return False
    if not _is_dicom(view):
        return True
    return all(error is None for _, _, _, error in _walk(view))


def count_frames(data):
    "Number of files in data (a truncated frame counts as one)."
    if not data:
        return 0
    view = _view(data)
    if not is_framed(view):
        return 1
    return sum(1 for _ in _walk(view))


def iter_files(data):
    """Yield a Frame per file of data (framed or one file), lazily.

    Empty files are yielded too (Orthanc rejects them, the user is told).
    """
    if not data:
        return
    view = _view(data)
    if not is_framed(view):
        yield Frame(0, view)
        return
    for index, start, length, error in _walk(view):
        if error:
            yield Frame(index, error=error)
        else:
            yield Frame(index, view[start:start + length])


def file_names(names, count):
    """Names of count files from the widget's file-name field.

    SAO's custom.js joins the names with '\\n' in file order; the GTK
    widget stores the total length there instead.  Any mismatch falls back
    to "file #1", "file #2"...
    """
    if isinstance(names, str):
        parts = names.split('\n')
        if len(parts) == count and all(p.strip() for p in parts):
            return [p.strip() for p in parts]
    return ['file #%d' % (i + 1) for i in range(count)]


def kind_of(data):
    "'dicom', 'zip', 'gzip' or 'unknown', from the first bytes."
    view = _view(data)
    head = bytes(view[:4])
    if _is_dicom(view):
        return 'dicom'
    if head in ZIP_MAGIC:
        return 'zip'
    if head[:2] == GZIP_MAGIC:
        return 'gzip'
    return 'unknown'


def gunzip(data, limit=MAX_GUNZIP):
    """Inflate a gzip stream (one member); ValueError if it is corrupt or
    inflates beyond limit bytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        result = inflater.decompress(_view(data), limit + 1)
    except zlib.error as exc:
        raise ValueError('corrupt gzip data: %s' % exc) from None
    if len(result) > limit:
        raise ValueError('gzip data inflates beyond %d MB'
            % (limit // 1_000_000))
    if not inflater.eof:
        raise ValueError('truncated gzip data')
    return result
