# SPDX-License-Identifier: GPL-3.0-or-later
"""The streaming upload route: files posted one by one, forwarded to
Orthanc as they arrive.

SAO's binary_dicom widget POSTs each file's bytes (the body is the file,
nothing else) to ``/<database>/health_orthanc/upload?server=<id>&upload=
<reference>&name=<file name>`` with the session's ``Authorization``
header.  A DICOM file is forwarded while it is read from the request, in
1 MB pieces: trytond never holds it whole.  A ZIP or gzip'ed file is
spooled to a temporary file on disk (Orthanc reads a ZIP at random) and
checked with the same limits as the wizard (upload_frames.check_upload).
What is not DICOM (a CD's viewer program, autorun.inf) and the CD's
DICOMDIR are read to the end and reported as skipped, not sent.

Each outcome is stored as an upload file record under the upload
reference; the upload wizard then reads them by that reference (the
widget puts it in the field instead of the files) and shows the same
per-file result as for the JSON-RPC path.
"""
import http.client
import json
import logging
import mmap
import tempfile

from trytond.i18n import gettext
from trytond.model import ModelSQL, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.protocols.wrappers import Response, abort, with_pool
from trytond.transaction import Transaction, without_check_access
from trytond.wsgi import app

from . import limits, orthanc, roles, upload, upload_frames

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
    """What happened to one file posted to the streaming route: written
    by the route only, read by the upload wizard of the same user."""
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
    @without_check_access
    def outcomes(cls, reference):
        """orthanc.UploadedFile of each file the current user posted under
        reference, in the order they were posted."""
        records = cls.search([
                ('reference', '=', reference),
                ('create_uid', '=', Transaction().user),
                ])
        return [orthanc.UploadedFile(r.name, r.status, r.orthanc_id,
                r.study_id, r.reason) for r in records]


class RequestBody:
    """The rest of a request body after its head, sent as read: a
    one-pass iterable of 1 MB pieces with a len() (the adapter sends it
    with this Content-Length)."""

    def __init__(self, head, stream, length):
        self._head = head
        self._stream = stream
        self._length = length
        self._used = False

    def __len__(self):
        return self._length

    def __iter__(self):
        if self._used:
            # A retry cannot read the request again.
            raise orthanc.Unreachable('connection to Orthanc lost while '
                'sending')
        self._used = True
        yield self._head
        remaining = self._length - len(self._head)
        while remaining > 0:
            piece = self._stream.read(min(PIECE, remaining))
            if not piece:
                raise orthanc.Unreachable('the upload ended early')
            remaining -= len(piece)
            yield piece


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


def send_spooled(client, name, head, stream, length):
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
    return _send_mapped(client, name, memoryview(data))


def _send_mapped(client, name, view):
    checked = upload.check_files(view, name)
    return upload.send_files(client, checked, name,
        upload.UploadReport()).files


def forward(client, name, stream, length):
    "Send one posted file to Orthanc: the list of orthanc.UploadedFile."
    head = read_head(stream, length)
    kind = classify(head)
    if kind == 'dicom':
        try:
            return client.upload(name, RequestBody(head, stream, length))
        except (orthanc.Rejected, orthanc.NotFound) as exc:
            return [upload._rejected(name, upload.describe_error(exc))]
    if kind in ('zip', 'gzip'):
        return send_spooled(client, name, head, stream, length)
    drain(stream, length - len(head))
    if kind == 'dicomdir':
        return [_skipped(name, 'msg_upload_skipped_dicomdir')]
    return [_skipped(name, 'msg_upload_skipped_not_dicom')]


def _json(data, status=http.client.OK):
    return Response(json.dumps(data), status,
        content_type='application/json')


def _start(pool, request, readonly):
    return Transaction().start(pool.database_name, request.user_id,
        readonly=readonly, context={'_request': request.context})


def _server(pool, request):
    """The server to send to and its adapter client, once the user's
    role is checked (the role that may run the upload wizard)."""
    Server = pool.get('gnuhealth.orthanc.config')
    try:
        server_id = int(request.args.get('server', ''))
    except ValueError:
        abort(http.client.BAD_REQUEST)
    with _start(pool, request, readonly=True):
        try:
            roles.check_wizard_role(WIZARD)
        except AccessError as exc:
            abort(http.client.FORBIDDEN, exc.message)
        with without_check_access():
            servers = Server.search([('id', '=', server_id)])
            if not servers:
                abort(http.client.NOT_FOUND)
            server, = servers
            return server.label, upload.upload_client(server)


def _record(pool, request, server_id, reference, files):
    UploadFile = pool.get(UPLOAD_FILE)
    with _start(pool, request, readonly=False) as transaction:
        UploadFile.create([{
                    'reference': reference, 'server': server_id,
                    'name': f.name, 'status': f.status,
                    'orthanc_id': f.orthanc_id, 'study_id': f.study_id,
                    'reason': f.reason,
                    } for f in files])
        transaction.commit()


@app.route('/<database_name>/health_orthanc/upload', methods=['POST'])
@app.auth_required
@with_pool
def upload_route(request, pool):
    """Forward the posted file to Orthanc as it arrives; answer the
    per-file outcome as JSON.  No transaction is open while sending."""
    reference = request.args.get('upload', '')
    name = request.args.get('name') or 'file #1'
    length = request.content_length
    if not reference or len(reference) > 64 or not reference.isprintable():
        abort(http.client.BAD_REQUEST)
    if length is None:
        abort(http.client.LENGTH_REQUIRED)
    if not length:
        abort(http.client.BAD_REQUEST, gettext(
                'health_orthanc.msg_upload_refused_empty_file', name=name))
    if length > limits.upload_limits().inflated_file:
        abort(http.client.REQUEST_ENTITY_TOO_LARGE)
    label, client = _server(pool, request)
    stream = request.stream
    try:
        files = forward(client, name, stream, length)
    except orthanc.OrthancError as exc:
        logger.warning("Streamed upload to %s stopped at %s: %s", label,
            name, exc)
        abort(http.client.BAD_GATEWAY, gettext(
                'health_orthanc.msg_upload_failed', server=label, name=name,
                reason=upload.describe_error(exc), done=0))
    except upload.OrthancUploadError as exc:
        abort(http.client.REQUEST_ENTITY_TOO_LARGE, exc.message)
    _record(pool, request, int(request.args['server']), reference, files)
    return _json({'files': [{'name': f.name, 'status': f.status,
                    'reason': f.reason} for f in files]})
