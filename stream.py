# SPDX-License-Identifier: GPL-3.0-or-later
"""The streaming upload route: files posted one by one, forwarded to
Orthanc as they arrive.

SAO's binary_dicom widget POSTs each file's bytes (the body is the file,
nothing else) to ``/<database>/health_orthanc/upload?server=<id>&upload=
<reference>&name=<file name>`` with the session's ``Authorization``
header (and ``&patient=<id>`` when the upload names a patient: the
objects are then given that patient's identity as they stream, see
import_files.py).  A DICOM file is forwarded while it is read from the
request, in 1 MB pieces: trytond never holds it whole.  A ZIP or gzip'ed
file is spooled to a temporary file on disk (a ZIP is read at random) and
checked with the same limits as the wizard (upload_frames.check_upload);
a ZIP's entries are then sent one by one.
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

from . import import_files, limits, orthanc, roles, upload, upload_frames
from . import reconcile

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
        identity = reconcile.identity_of_request(pool, request)
        with without_check_access():
            servers = Server.search([('id', '=', server_id)])
            if not servers:
                abort(http.client.NOT_FOUND)
            server, = servers
            return server.label, upload.upload_client(server), identity


def _record(pool, request, server_id, reference, files, identity=None):
    UploadFile = pool.get(UPLOAD_FILE)
    with _start(pool, request, readonly=False) as transaction:
        UploadFile.create([{
                    'reference': reference, 'server': server_id,
                    'name': f.name, 'status': f.status,
                    'orthanc_id': f.orthanc_id, 'study_id': f.study_id,
                    'reason': f.reason,
                    'puid': identity.patient_id if identity else None,
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
    label, client, identity = _server(pool, request)
    stream = request.stream
    try:
        files = forward(client, name, stream, length, identity)
    except orthanc.OrthancError as exc:
        logger.warning("Streamed upload to %s stopped at %s: %s", label,
            name, exc)
        abort(http.client.BAD_GATEWAY, gettext(
                'health_orthanc.msg_upload_failed', server=label, name=name,
                reason=upload.describe_error(exc), done=0))
    except upload.OrthancUploadError as exc:
        abort(http.client.REQUEST_ENTITY_TOO_LARGE, exc.message)
    _record(pool, request, int(request.args['server']), reference, files,
        identity)
    return _json({'files': [{'name': f.name, 'status': f.status,
                    'reason': f.reason} for f in files]})
