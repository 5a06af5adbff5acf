# SPDX-License-Identifier: GPL-3.0-or-later
"""The streaming upload route: files posted as they are read from disk,
forwarded to Orthanc as they arrive.

SAO's binary_dicom widget POSTs a few files at a time (the body is the
files' bytes one after the other, nothing else) to ``/<database>/
health_orthanc/upload?server=<id>&upload=<reference>&name=<file name>
&size=<its bytes>&name=...&size=...`` with the session's
``Authorization`` header (one file may come with its ``name`` alone), and
``&patient=<id>`` when the upload names a patient: the objects are then
given that patient's identity as they stream, see import_files.py.  A
DICOM file is forwarded while it is read from the request, in 1 MB
pieces: trytond never holds it whole.  A ZIP or gzip'ed file is spooled
to a temporary file on disk (a ZIP is read at random) and checked with the
same limits as the wizard (upload_frames.check_upload); a ZIP's entries
are then sent one by one.  What is not DICOM (a CD's viewer program,
autorun.inf) and the CD's DICOMDIR are read to the end and reported as
skipped, not sent.

Each outcome is stored as an upload file record under the upload
reference; the upload wizard then reads them by that reference (the
widget puts it in the field instead of the files) and shows the same
per-file result as for the JSON-RPC path.  The per-request work (session,
role, server, one commit of the outcomes) is shared by the files of a
request, which is why the widget sends several at once.
"""
import contextlib
import http.client
import io
import json
import logging
import mmap
import tempfile

from trytond.config import config
from trytond.i18n import gettext
from trytond.model import ModelSQL, fields
from trytond.model.exceptions import AccessError
from trytond.protocols.wrappers import (
    Response, abort, set_max_request_size, with_pool)
from trytond.transaction import Transaction, without_check_access
from trytond.wsgi import app
from werkzeug.exceptions import ClientDisconnected, HTTPException

from . import (
    bulk, import_files, limits, orthanc, reconcile, roles, upload,
    upload_frames)

logger = logging.getLogger(__name__)

WIZARD = 'gnuhealth.imaging_orthanc.upload_image_data'
UPLOAD_FILE = 'gnuhealth.imaging_orthanc.upload_file'
PIECE = 1 << 20  # bytes read from the request and sent to Orthanc at once
# Enough of a DICOM file to hold its preamble, 'DICM' and the file meta
# information group (where the SOP class of a DICOMDIR is named).
HEAD = 4096
# Media Storage Directory Storage: the SOP class of a DICOMDIR.
DICOMDIR_UID = b'1.2.840.10008.1.3.10'
# (0002,0002) Media Storage SOP Class UID, explicit VR little endian (the
# file meta information always is).
_SOP_CLASS_TAG = b'\x02\x00\x02\x00UI'
SKIPPED = 'Skipped'


class UploadFile(ModelSQL):
    """Outcome of a Streamed Upload File

    Written by the streaming route only, read by the upload wizard of the
    same user."""
    __name__ = UPLOAD_FILE

    reference = fields.Char('Upload reference', required=True)
    server = fields.Many2One('gnuhealth.orthanc.config', 'Server',
        required=True, ondelete='CASCADE')
    name = fields.Char('File name')
    status = fields.Char('Status')
    orthanc_id = fields.Char('Orthanc instance ID')
    study_id = fields.Char('Orthanc study ID')
    reason = fields.Char('Reason')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('id', 'ASC')]

    @classmethod
    def outcomes(cls, reference):
        """orthanc.UploadedFile of each file the current user posted under
        reference, in the order they were posted."""
        # One plain query: a CD's thousands of rows through search_read
        # cost the wizard more than the query.  The rows are the user's
        # own (create_uid); nobody else reads this model.
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(table.name, table.status,
                table.orthanc_id, table.study_id, table.reason,
                where=(table.reference == reference)
                & (table.create_uid == Transaction().user),
                order_by=[table.id.asc]))
        return [orthanc.UploadedFile(*row) for row in cursor]


def read_head(stream, length):
    "The first bytes of the body (up to HEAD)."
    head = b''
    while len(head) < min(HEAD, length):
        piece = stream.read(min(HEAD, length) - len(head))
        if not piece:
            break
        head += piece
    return head


def drain(stream, remaining):
    "Read and forget the rest of a body that is not sent."
    while remaining > 0:
        piece = stream.read(min(PIECE, remaining))
        if not piece:
            return
        remaining -= len(piece)


def media_storage_class(head):
    "The SOP class UID named in a DICOM file's meta information, or None."
    position = head.find(_SOP_CLASS_TAG, 132)
    if position < 0:
        return None
    start = position + len(_SOP_CLASS_TAG) + 2
    length = int.from_bytes(head[start - 2:start], 'little')
    return head[start:start + length].rstrip(b'\x00 ')


def classify(head):
    "'dicom', 'dicomdir', 'zip', 'gzip' or 'unknown'."
    kind = upload_frames.kind_of(head)
    if kind == 'dicom' and media_storage_class(head) == DICOMDIR_UID:
        return 'dicomdir'
    return kind


def _skipped(name, message):
    return orthanc.UploadedFile(name, SKIPPED,
        reason=gettext('health_orthanc.' + message))


def skipped(name, kind):
    "The outcome of a file of kind (classify()) that is not sent."
    return _skipped(name, 'msg_upload_skipped_dicomdir' if kind == 'dicomdir'
        else 'msg_upload_skipped_not_dicom')


def rejected(name, exc):
    "The outcome of a file Orthanc refused (exc: Rejected or NotFound)."
    return upload._rejected(name, upload.describe_error(exc))


def send_spooled(client, name, head, stream, length, identity=None):
    """A ZIP or gzip'ed file: spooled to disk, checked with the upload
    limits, then sent as the wizard sends it."""
    with tempfile.TemporaryFile(prefix='health-orthanc-') as spool:
        spool.write(head)
        remaining = length - len(head)
        while remaining > 0:
            piece = stream.read(min(PIECE, remaining))
            if not piece:
                break
            spool.write(piece)
            remaining -= len(piece)
        spool.flush()
        # Not closed here: the checked files are views of the map, which
        # is unmapped once the last of them is gone.
        data = mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ)
    return _send_mapped(client, name, memoryview(data), identity)


def _send_mapped(client, name, view, identity):
    checked = upload.check_files(view, name)
    return upload.send_files(client, checked, name,
        upload.UploadReport(), identity).files


def forward(client, name, stream, length, identity=None):
    """Send one posted file to Orthanc: the list of orthanc.UploadedFile.
    identity (dicom_identity.Identity): the patient the objects are given
    as they stream (import reconciliation), None to send them as they are.
    """
    head = read_head(stream, length)
    kind = classify(head)
    if kind == 'dicom':
        return import_files.send_dicom(client, name, head, stream, length,
            identity)
    if kind in ('zip', 'gzip'):
        return send_spooled(client, name, head, stream, length, identity)
    drain(stream, length - len(head))
    return [skipped(name, kind)]


def _json(data, status=http.client.OK):
    return Response(json.dumps(data), status,
        content_type='application/json')


def _session(request):
    """(user id, session key) of the request's SAO session (the
    Authorization header as SAO sends it); 401 without one."""
    auth = request.authorization
    if auth and auth.type == 'session':
        user_id, key = auth.get('userid'), auth.get('session')
        if isinstance(user_id, int) and key:
            return user_id, key
    _unauthorized()


def _check_session(pool, user_id, key):
    """Refuse (401) unless key is a session of user_id by trytond's own rule
    (ir.session: younger than [session] max_age), checked in the route's
    transaction on every request, with no cache: a session ended (logout,
    expired, password changed) is refused from the next file on."""
    if not pool.get('ir.session').check(user_id, key):
        _unauthorized()


def _unauthorized():
    # As trytond's auth_required answers SAO (no browser login prompt).
    abort(http.client.UNAUTHORIZED, response=Response(None,
            http.client.UNAUTHORIZED))


def _parts(request, most_files):
    """[(name, size)] of the files of the body, in order: the ``name``
    arguments with the ``size`` of each (the body is the files one after
    the other), or one ``name`` and the whole body.  400 if they do not
    add up to the body or are more than most_files."""
    names = request.args.getlist('name') or ['file #1']
    sizes = request.args.getlist('size')
    length = request.content_length
    if length is None:
        abort(http.client.LENGTH_REQUIRED)
    if not sizes and len(names) == 1:
        sizes = [length]
    try:
        sizes = [int(s) for s in sizes]
    except ValueError:
        abort(http.client.BAD_REQUEST)
    if (len(sizes) != len(names) or sum(sizes) != length
            or any(s < 0 for s in sizes)
            or len(names) > most_files):
        abort(http.client.BAD_REQUEST)
    return list(zip(names, sizes))


def _check_sizes(parts, largest_file):
    "Each file and the body against trytond's and the module's limits."
    most = config.getint('request', 'max_size_authenticated')
    if most and sum(size for _, size in parts) > most:
        abort(http.client.REQUEST_ENTITY_TOO_LARGE)
    for name, size in parts:
        if not size:
            abort(http.client.BAD_REQUEST, gettext(
                    'health_orthanc.msg_upload_refused_empty_file',
                    name=name))
        if size > largest_file:
            abort(http.client.REQUEST_ENTITY_TOO_LARGE)


class _Part:
    """read() of one file of the body: never past its end.

    On the server's own input (body()), readinto() gives what has arrived
    (readinto1) instead of waiting for a whole piece: Orthanc receives a
    file while the client is still sending it, not after.  A body that
    ends early raises ClientDisconnected, as werkzeug's request.stream."""

    def __init__(self, stream, size):
        self._stream = stream
        self._readinto1 = getattr(stream, 'readinto1', None)
        self.remaining = size

    def read(self, size):
        size = min(max(size, 0), self.remaining)
        with _client_errors():
            piece = self._stream.read(size)
        self._advance(len(piece), size)
        return piece

    def readinto(self, view):
        view = view[:min(len(view), self.remaining)]
        with _client_errors():
            count = (self._readinto1(view) if self._readinto1
                else import_files.read_into(self._stream, view))
        self._advance(count, len(view))
        return count

    def _advance(self, count, asked):
        "count bytes read of asked (never more than remaining)."
        if asked and not count:
            raise ClientDisconnected()
        self.remaining -= count


@contextlib.contextmanager
def _client_errors():
    """The client's socket failing (reset, TLS, timeout) as werkzeug's
    request.stream reports it: ClientDisconnected, never an OSError that
    the Orthanc side would take for its own."""
    try:
        yield
    except (OSError, ValueError) as exc:
        raise ClientDisconnected() from exc


def body(request):
    """The request's body for _Part: the server's own buffered input when
    it has one (werkzeug's server, which trytond runs), else
    request.stream.  The input is read no further than Content-Length:
    the files' sizes add up to it (_parts)."""
    raw = request.environ.get('wsgi.input')
    if (isinstance(raw, io.BufferedReader)
            and not request.environ.get('wsgi.input_terminated')):
        return raw
    return request.stream


def _server(pool, request):
    """The server to send to, its adapter client and the patient identity
    to give the objects, once the user's role is checked (the role that
    may run the upload wizard)."""
    Server = pool.get('gnuhealth.orthanc.config')
    try:
        server_id = int(request.args.get('server', ''))
    except ValueError:
        abort(http.client.BAD_REQUEST)
    try:
        roles.check_wizard_role(WIZARD)
    except AccessError as exc:
        abort(http.client.FORBIDDEN, exc.message)
    identity = reconcile.identity_of_request(pool, request)
    with without_check_access():
        servers = Server.search([('id', '=', server_id)])
        if not servers:
            abort(http.client.NOT_FOUND)
        server, = servers
        return server, upload.upload_client(server), identity


def _record(pool, server, reference, files, identity=None):
    "The outcomes, in one INSERT (nothing reads them back here)."
    bulk.insert_rows_checked(pool.get(UPLOAD_FILE), [{
                'reference': reference, 'server': server.id,
                'name': f.name, 'status': f.status,
                'orthanc_id': f.orthanc_id, 'study_id': f.study_id,
                'reason': f.reason,
                'puid': identity.patient_id if identity else None,
                } for f in files])


def _send(server, client, parts, stream, identity):
    """Each file of the body forwarded (forward()) as it is read: the
    outcomes, and the failure that stopped the files (an HTTPException,
    None if none did)."""
    files = []
    for name, size in parts:
        part = _Part(stream, size)
        try:
            files.extend(forward(client, name, part, size, identity))
            # What a file's reader left (a file not sent) is not the next's.
            drain(part, part.remaining)
        except orthanc.OrthancError as exc:
            logger.warning("Streamed upload to %s stopped at %s: %s",
                server.label, name, exc)
            done = sum(f.status in ('Success', 'AlreadyStored')
                for f in files)
            return files, _error(http.client.BAD_GATEWAY, gettext(
                    'health_orthanc.msg_upload_failed', server=server.label,
                    name=name, reason=upload.describe_error(exc),
                    done=done))
        except upload.OrthancUploadError as exc:
            return files, _error(http.client.REQUEST_ENTITY_TOO_LARGE,
                exc.message)
        except ClientDisconnected as exc:
            # The files before it are in Orthanc: their outcomes are kept
            # for the wizard (the widget may post the rest again).
            logger.info("Streamed upload to %s: the client left during %s",
                server.label, name)
            return files, exc
    return files, None


def _error(status, message):
    try:
        abort(status, message)
    except HTTPException as exc:
        return exc


# 0: trytond's dispatcher does not check the size (it would check the
# session in a transaction of its own to choose the limit); the route
# checks both in its one transaction, before reading the body.
@app.route('/<database_name>/health_orthanc/upload', methods=['POST'])
@set_max_request_size(0)
@with_pool
def upload_route(request, pool):
    """Forward the posted files to Orthanc as they arrive; answer the
    per-file outcomes as JSON.

    One database connection per request: session, role, server and
    patient are read, the transaction is ended (a commit of nothing)
    before the body is read, so no transaction is open while sending; then
    the outcomes are recorded in one commit (also those of the files sent
    before one that failed)."""
    reference = request.args.get('upload', '')
    if not reference or len(reference) > 64 or not reference.isprintable():
        abort(http.client.BAD_REQUEST)
    upload_limits = limits.upload_limits()
    parts = _parts(request, upload_limits.files)
    user_id, key = _session(request)
    # As trytond's own session check: a transaction as the claimed user,
    # refused unless the session is his.
    with Transaction().start(pool.database_name, user_id,
            context={'_request': request.context}) as transaction:
        _check_session(pool, user_id, key)
        _check_sizes(parts, upload_limits.inflated_file)
        server, client, identity = _server(pool, request)
        transaction.commit()
        files, failure = _send(server, client, parts, body(request),
            identity)
        _record(pool, server, reference, files, identity)
        transaction.commit()
    if failure is not None:
        raise failure
    return _json({'files': [{'name': f.name, 'status': f.status,
                    'reason': f.reason} for f in files]})
