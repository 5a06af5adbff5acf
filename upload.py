# SPDX-License-Identifier: GPL-3.0-or-later
"""The wizard that uploads DICOM files to Orthanc and brings the studies
into GNU Health at once.

The uploaded value is what the binary_dicom widget sends: the GNU Health
framing of several files (GTK client and SAO's custom.js), one DICOM file,
a ZIP archive of DICOM files or a gzip'ed file (see upload_frames.py).
The whole upload is checked against the limits of trytond.conf before any
file is sent (an upload beyond them is refused, nothing sent); then files
are sent one by one, as views of the uploaded value (a gzip'ed file as it
inflates); what Orthanc refuses is reported per file and the other files
are still stored.
"""
import logging
from dataclasses import dataclass, field

from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Bool, Eval, If
from trytond.transaction import without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from . import limits, orthanc, upload_frames
from .exceptions import OrthancUploadError
from .server import DEFAULT_TIMEOUT, describe_error
from .study import LINK_REVIEW_CLEARED
from .sync import ServerSync, queue_worker

logger = logging.getLogger(__name__)

SERVER_MODEL = 'gnuhealth.orthanc.config'
STUDY_MODEL = 'gnuhealth.imaging_orthanc.study'
UPLOAD_FILE_MODEL = 'gnuhealth.imaging_orthanc.upload_file'
# The field value SAO's widget sends once it has posted the files to the
# streaming route (stream.py): this prefix, then the upload reference.
REFERENCE_PREFIX = b'HOSTREAM:'


@dataclass
class UploadReport:
    "What an upload did: per-file answers, then the studies in GNU Health."
    count: int = 0  # files in the upload
    files: list = field(default_factory=list)  # orthanc.UploadedFile
    current: str = None  # name of the file being sent
    studies: list = field(default_factory=list)  # study records
    new_studies: int = 0
    sync_error: str = None
    sync_queued: bool = False

    def _count(self, status):
        return sum(1 for f in self.files if f.status == status)

    @property
    def stored(self):
        return self._count('Success')

    @property
    def already_stored(self):
        return self._count('AlreadyStored')

    @property
    def rejected(self):
        return [f for f in self.files if f.status == 'Rejected']

    @property
    def skipped(self):
        "Files that are not DICOM images (a CD's viewer, its DICOMDIR)."
        return [f for f in self.files if f.status == 'Skipped']

    @property
    def study_ids(self):
        "Orthanc IDs of the studies the stored files belong to, in order."
        ids = []
        for uploaded in self.files:
            if uploaded.study_id and uploaded.study_id not in ids:
                ids.append(uploaded.study_id)
        return ids


def reference_of(data):
    "The streaming upload reference the widget put in the field, or None."
    if data is None:
        return None
    head = bytes(memoryview(data)[:len(REFERENCE_PREFIX) + 64])
    if head.startswith(REFERENCE_PREFIX):
        return head[len(REFERENCE_PREFIX):].decode('ascii', 'replace')
    return None


def _rejected(name, reason):
    return orthanc.UploadedFile(name, 'Rejected', reason=reason)


# Refusals whose limit and size are in bytes (the others count files).
_SIZE_LIMITS = {'gzip_too_large', 'zip_entry_too_large', 'upload_too_large'}


def check_files(data, names):
    """The checked files of data (upload_frames.CheckedFile), none sent
    yet: OrthancUploadError if the upload is empty or breaks a limit."""
    try:
        checked = upload_frames.check_upload(data, limits.upload_limits())
    except upload_frames.UploadRefused as exc:
        logger.info("Upload refused before sending: %s %s", exc.code,
            exc.values)
        values = dict(exc.values)
        if exc.code in _SIZE_LIMITS:
            values.update({key: orthanc.megabytes(values[key])
                    for key in ('limit', 'size') if key in values})
        # The files were not all counted (there may be a million).
        values['name'] = upload_frames.file_name(names,
            values.pop('index', 1) - 1)
        raise OrthancUploadError(gettext(
                'health_orthanc.msg_upload_refused_' + exc.code, **values)
            ) from None
    if not checked:
        raise OrthancUploadError(gettext('health_orthanc.msg_upload_empty'))
    return checked


def send_files(client, checked, names, report):
    """POST each checked file to Orthanc, appending answers to report.

    A file Orthanc refuses is reported and the next one is sent; an
    adapter error that is not about the file (unreachable server, wrong
    credentials, timeout) is raised with report.current naming the file.
    """
    report.count = len(checked)
    labels = upload_frames.file_names(names, report.count)
    for item in checked:
        name = report.current = labels[item.index]
        if item.problem:
            code, values = item.problem
            report.files.append(_rejected(name,
                    gettext('health_orthanc.msg_upload_' + code, **values)))
            continue
        body = item.body()
        try:
            report.files.extend(named_zip_skips(name, item,
                    client.upload(name, body, zip_files=item.zip_files)))
        except (orthanc.Rejected, orthanc.NotFound) as exc:
            # Refused for this file only (a filter, a size limit...).
            report.files.append(_rejected(name, describe_error(exc)))
        del body
    report.current = None
    return report


def named_zip_skips(name, item, results):
    """results, the adapter's count of a ZIP's skipped entries replaced
    by one Skipped entry per name when the names account for it."""
    names = item.zip_not_dicom
    if not names or not results:
        return results
    summary = results[-1]
    stored = len(results) - 1
    if (summary.status != 'Rejected' or summary.orthanc_id
            or stored + len(names) != item.zip_files):
        return results
    reason = gettext('health_orthanc.msg_upload_skipped_not_dicom')
    return results[:-1] + [orthanc.UploadedFile('%s/%s' % (name, entry),
            'Skipped', reason=reason) for entry in names]


@without_check_access
def upload_client(server):
    """A pooled adapter client for uploads: the server's settings with a
    deadline long enough for Orthanc to store a large archive."""
    verify = (server.ca_bundle or True) if server.verify_tls else False
    return orthanc.client_for(server.domain, server.user, server.password,
        timeout=max(server.timeout or DEFAULT_TIMEOUT,
            limits.upload_timeout()),
        verify=verify, limits=limits.answer_limits())


class UploadImageDataStart(ModelView):
    "Upload Image Data"
    __name__ = 'gnuhealth.imaging_orthanc.upload_image_data.start'

    data_to_upload = fields.Binary('Files', filename='file_names',
        help="DICOM files, or ZIP archives of DICOM files; several files "
        "can be chosen at once")
    # strip=False: the GTK client's binary_dicom widget writes the total
    # length (an integer) here, which a stripping Char field cannot take.
    file_names = fields.Char('File names', strip=False,
        help="Names of the chosen files, one per line")
    server = fields.Many2One(SERVER_MODEL, 'Orthanc server', required=True,
        help="The Orthanc server that stores the files")
    patient = fields.Many2One('gnuhealth.patient', 'Patient',
        help="Link the uploaded studies to this patient "
        "(otherwise they are linked by their DICOM PatientID)")
    imaging_test = fields.Many2One('gnuhealth.imaging.test.result',
        'Imaging result',
        domain=[If(Bool(Eval('patient')),
                ('patient', '=', Eval('patient', -1)), ())],
        help="Link the uploaded studies to this imaging test result")

    @classmethod
    def default_server(cls):
        "The only, or first, validated server."
        Server = Pool().get(SERVER_MODEL)
        servers = Server.search([('validated', '=', True)],
            order=[('label', 'ASC'), ('id', 'ASC')], limit=1)
        return servers[0].id if servers else None

    @fields.depends('imaging_test', 'patient')
    def on_change_imaging_test(self):
        if self.imaging_test and self.imaging_test.patient:
            self.patient = self.imaging_test.patient


class UploadImageDataResult(ModelView):
    "Upload Image Data Result"
    __name__ = 'gnuhealth.imaging_orthanc.upload_image_data.result'

    summary = fields.Text('Result', readonly=True)
    stored = fields.Integer('Stored', readonly=True)
    already_stored = fields.Integer('Already stored', readonly=True)
    rejected = fields.Integer('Rejected', readonly=True)
    rejected_files = fields.Text('Rejected files', readonly=True,
        states={'invisible': ~Eval('rejected_files')},
        help="Each file Orthanc did not store, with Orthanc's reason")
    studies = fields.Many2Many(STUDY_MODEL, None, None, 'Studies',
        readonly=True, help="The studies of the uploaded files")


class UploadImageData(Wizard):
    "Upload Image Data"
    __name__ = 'gnuhealth.imaging_orthanc.upload_image_data'

    start = StateView('gnuhealth.imaging_orthanc.upload_image_data.start',
        'health_orthanc.upload_image_data_start_form', [
            Button('Cancel', 'end', 'tryton-cancel'),
            Button('Upload', 'upload', 'tryton-ok', default=True),
            ])
    upload = StateTransition()
    result = StateView('gnuhealth.imaging_orthanc.upload_image_data.result',
        'health_orthanc.upload_image_data_result_form', [
            Button('Close', 'end', 'tryton-close', default=True),
            ])

    def transition_upload(self):
        start = self.start
        data = start.data_to_upload
        names = getattr(start, 'file_names', None)
        # Never keep the files in the wizard session stored in database.
        start.data_to_upload = None
        # A user who may not read patients or results does not get (nor
        # send) these fields.
        report = self.upload_and_sync(start.server, data, names,
            patient=getattr(start, 'patient', None),
            imaging_test=getattr(start, 'imaging_test', None))
        del data
        self.result.summary = self.summary(start.server, report)
        self.result.stored = report.stored
        self.result.already_stored = report.already_stored
        self.result.rejected = len(report.rejected)
        self.result.rejected_files = '\n'.join(
            '%s: %s' % (f.name, f.reason) for f in report.rejected) or None
        self.result.studies = report.studies
        return 'result'

    def default_result(self, fields):
        result = self.result
        return {
            'summary': result.summary,
            'stored': result.stored,
            'already_stored': result.already_stored,
            'rejected': result.rejected,
            'rejected_files': result.rejected_files,
            'studies': [s.id for s in result.studies],
            }

    def end(self):
        return 'reload'

    @classmethod
    def upload_and_sync(cls, server, data, names=None, patient=None,
            imaging_test=None):
        """Upload data to server, then store its studies in GNU Health.

        What the wizard does, callable alone (benchmarks, scripts).
        Returns an UploadReport.
        """
        pool = Pool()
        Server = pool.get(SERVER_MODEL)
        reference = reference_of(data)
        if reference:
            # Already in Orthanc: the widget streamed each file.
            report = cls.streamed_report(reference)
            cls._finish(server, report, patient, imaging_test)
            return report
        # Refused before the lock: nothing to wait for, nothing sent.
        checked = check_files(data, names)
        # lock() restarts the transaction (trytond >= 7.0.38): before any
        # upload, or the files would be sent twice.  It also keeps a sync
        # of this server from running meanwhile.
        Server.lock([server])
        report = UploadReport()
        client = upload_client(server)
        try:
            send_files(client, checked, names, report)
        except orthanc.OrthancError as exc:
            logger.warning("Upload to %s stopped at %s: %s", server.label,
                report.current, exc)
            raise OrthancUploadError(gettext(
                    'health_orthanc.msg_upload_failed', server=server.label,
                    name=report.current, reason=describe_error(exc),
                    done=report.stored + report.already_stored)) from exc
        cls._finish(server, report, patient, imaging_test)
        return report

    @classmethod
    def streamed_report(cls, reference):
        "The UploadReport of the files the user streamed under reference."
        UploadFile = Pool().get(UPLOAD_FILE_MODEL)
        files = UploadFile.outcomes(reference)
        if not files:
            raise OrthancUploadError(gettext(
                    'health_orthanc.msg_upload_stream_unknown'))
        return UploadReport(count=len({f.name for f in files}), files=files)

    @classmethod
    def _finish(cls, server, report, patient, imaging_test):
        "Log the upload, store its studies in GNU Health and link them."
        logger.info("Upload to %s: %d file(s), %d stored, %d already "
            "stored, %d rejected, %d skipped", server.label, report.count,
            report.stored, report.already_stored, len(report.rejected),
            len(report.skipped))
        if report.study_ids:
            cls._sync_studies(server, report)
            cls._link_studies(report.studies, patient, imaging_test)

    @classmethod
    def _sync_studies(cls, server, report):
        "Make sure every uploaded study is stored in GNU Health."
        pool = Pool()
        Server = pool.get(SERVER_MODEL)
        Study = pool.get(STUDY_MODEL)
        ids = report.study_ids

        def stored():
            with without_check_access():
                return Study.search([
                        ('server', '=', server.id),
                        ('orthanc_UID', 'in', ids),
                        ])
        before = {s.orthanc_UID for s in stored()}
        # The incremental sync also stores what others sent meanwhile: the
        # worker runs it when there is one; the uploaded studies are read
        # below either way, so that they are shown and linked at once.
        if queue_worker():
            Server.queue_sync([server], 'incremental')
            report.sync_queued = True
        else:
            Server.synchronize([server], 'incremental', raise_errors=False)
        missing = set(ids) - {s.orthanc_UID for s in stored()}
        if missing:
            # The changes log may have been read before the upload ended
            # (or the sync failed): read these studies directly.
            try:
                trees = []
                for orthanc_id in sorted(missing):
                    try:
                        trees.append(server.client.study_tree(orthanc_id))
                    except orthanc.NotFound:
                        pass  # deleted on Orthanc meanwhile
                with without_check_access():
                    ServerSync(server).store_trees(trees)
            except orthanc.OrthancError as exc:
                report.sync_error = describe_error(exc)
        by_id = {s.orthanc_UID: s for s in stored()}
        report.studies = [by_id[i] for i in ids if i in by_id]
        report.new_studies = len(set(by_id) - before)

    @classmethod
    def _link_studies(cls, studies, patient=None, imaging_test=None):
        "Link to what the user chose; the sync leaves such links alone."
        Study = Pool().get(STUDY_MODEL)
        if not studies or not (patient or imaging_test):
            return
        values = {'manual_link': True, **LINK_REVIEW_CLEARED}
        if imaging_test:
            values['imaging_test'] = imaging_test.id
            if imaging_test.request:
                values['imaging_request'] = imaging_test.request.id
            patient = imaging_test.patient or patient
        if patient:
            values['patient'] = patient.id
        Study.write(list(studies), values)

    @classmethod
    def summary(cls, server, report):
        lines = [gettext('health_orthanc.msg_upload_summary',
                files=report.count, server=server.label,
                stored=report.stored, already=report.already_stored,
                rejected=len(report.rejected))]
        if report.skipped:
            lines.append(gettext('health_orthanc.msg_upload_skipped',
                    count=len(report.skipped),
                    names=', '.join(f.name for f in report.skipped)))
        if report.study_ids:
            lines.append(gettext('health_orthanc.msg_upload_studies',
                    studies=len(report.studies), new=report.new_studies))
        if report.sync_queued:
            lines.append(gettext('health_orthanc.msg_upload_sync_queued'))
        if report.sync_error:
            lines.append(gettext('health_orthanc.msg_upload_sync_failed',
                    reason=report.sync_error))
        return '\n'.join(lines)
