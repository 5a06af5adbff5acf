# SPDX-License-Identifier: GPL-3.0-or-later
"""The imaging result's report back to the PACS (issue 11, item 4).

GNU Health's own imaging result report (health_imaging's
``patient.imaging_report_results``), rendered to PDF the way trytond renders
reports (LibreOffice headless), is stored in the result's Orthanc study as a
DICOM Encapsulated PDF in a series of its own (modality DOC).  Issuing it
again stores the new one, then deletes the previous series.

GNU Health 5.0's imaging test result has no state nor signature: the report
is issued by the *Send report to PACS* button, and automatically when a
result with findings (``comment``) that is linked to a study is saved with a
change to what the report shows.  The work runs after commit through
trytond's queue (the worker when ``[queue] worker`` is on, otherwise the
request's own tasks after commit); the result's form shows the state, and a
cron job retries failures.
"""
import datetime
import logging
import subprocess

from genshi.template.eval import UndefinedError
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access

from . import orthanc, roles
from .clinical import PreviewCache
from .exceptions import describe_error

logger = logging.getLogger(__name__)

STUDY = 'gnuhealth.imaging_orthanc.study'
# health_imaging's report of a result (health_imaging_report.xml).
REPORT_NAME = 'patient.imaging_report_results'
REPORT_MODALITY = 'DOC'
# What the report shows: a change to one of these re-issues it.
REPORT_FIELDS = frozenset({'comment', 'doctor', 'date', 'report_style',
        'requested_test', 'patient'})
# Written by the system only (the task), never over RPC.
PACS_FIELDS = frozenset({'pacs_report_state', 'pacs_report_message',
        'pacs_report_date', 'pacs_report_study', 'pacs_report_series',
        'pacs_report_instance'})
# A queued report whose task did not run within this delay is retried.
STALE_QUEUED = datetime.timedelta(minutes=30)


class PacsReportError(UserError):
    "The report of an imaging result cannot be sent to the PACS."


class ReportFailure(Exception):
    "Why one result's report did not reach the PACS (a translated text)."


class ImagingTestResult(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.result'

    pacs_report_state = fields.Selection([
            (None, ''),
            ('queued', 'Queued'),
            ('stored', 'In the PACS'),
            ('failed', 'Failed, will be retried'),
            ], 'Report in the PACS', readonly=True, sort=False)
    pacs_report_message = fields.Text('Report status', readonly=True)
    pacs_report_date = fields.DateTime('Report stored at', readonly=True)
    pacs_report_study = fields.Many2One(STUDY, 'Report study',
        readonly=True, ondelete='SET NULL')
    pacs_report_series = fields.Char('Report series (Orthanc ID)',
        readonly=True)
    pacs_report_instance = fields.Char('Report instance (Orthanc ID)',
        readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'send_report_to_pacs': {
                    'icon': 'tryton-forward',
                    'readonly': ~Eval('orthanc_studies', []),
                    'depends': ['orthanc_studies'],
                    },
                })

    @classmethod
    def copy(cls, results, default=None):
        default = dict(default or {})
        for name in PACS_FIELDS:
            default.setdefault(name, None)
        return super().copy(results, default=default)

    @classmethod
    def write(cls, *args):
        actions = iter(args)
        pairs = list(zip(actions, actions))
        if roles.from_client() and any(
                PACS_FIELDS & set(values) for _, values in pairs):
            raise AccessError(gettext('health_orthanc.msg_report_fields'))
        super().write(*args)
        changed = {r for records, values in pairs
            if REPORT_FIELDS & set(values) for r in records}
        if changed:
            cls.queue_pacs_reports(cls.reported_with_study(changed))

    # --- button and automatic issue ------------------------------------
    @classmethod
    @ModelView.button
    def send_report_to_pacs(cls, results):
        """Queue the report of each result for its study.

        The user must be allowed to edit the results (model access and
        record rules), and each must be linked to a study.
        """
        results = list(dict.fromkeys(results))
        refused = set(results) - set(roles.writable(results))
        if refused:
            raise PacsReportError(gettext(
                    'health_orthanc.msg_report_not_writable',
                    result=', '.join(sorted(r.rec_name for r in refused))))
        studies = cls.report_studies(results)
        missing = [r for r in results if r not in studies]
        if missing:
            raise PacsReportError(gettext('health_orthanc.msg_report_no_study',
                    result=', '.join(sorted(r.rec_name for r in missing))))
        cls.queue_pacs_reports(results)

    @classmethod
    def reported_with_study(cls, results):
        "The results with findings and a study: those reported on save."
        results = [r for r in results if (r.comment or '').strip()]
        studies = cls.report_studies(results)
        return [r for r in results if r in studies]

    @classmethod
    @without_check_access
    def report_studies(cls, results):
        """The study of each result that receives its report: the newest
        linked study still on Orthanc.  One search for all results."""
        Study = Pool().get(STUDY)
        by_result = {}
        for study in Study.search([
                    ('imaging_test', 'in', [r.id for r in results]),
                    ], order=[('id', 'ASC')]):
            if not getattr(study, 'missing', False):
                by_result[study.imaging_test] = study
        return by_result

    @classmethod
    def queue_pacs_reports(cls, results):
        "Mark the results queued and leave the work to after commit."
        if not results:
            return
        with without_check_access():
            super().write(list(results), {
                    'pacs_report_state': 'queued',
                    'pacs_report_message': gettext(
                        'health_orthanc.msg_report_queued'),
                    })
        cls.__queue__.issue_pacs_reports(list(results))

    @classmethod
    def report_to_new_studies(cls, results):
        """Queue the reports with findings whose newest study is not the
        one their report was stored in: a study linked after the findings
        were saved.  The report lands in that study, so a later link write
        of the same study finds nothing to do (no re-send loop)."""
        results = list(dict.fromkeys(results))
        studies = cls.report_studies(results)
        cls.queue_pacs_reports([r for r in cls.reported_with_study(results)
                if r.pacs_report_state != 'queued'
                and r.pacs_report_study != studies[r]])

    @classmethod
    def cron_retry_pacs_reports(cls):
        "Retry failed reports, and queued ones whose task was lost."
        stale = datetime.datetime.now() - STALE_QUEUED
        results = cls.search(['OR',
                ('pacs_report_state', '=', 'failed'),
                [('pacs_report_state', '=', 'queued'),
                    ('write_date', '<', stale)],
                ])
        for result in results:
            with Transaction().new_transaction():
                cls.issue_pacs_reports([cls(result.id)])

    # --- the task -------------------------------------------------------
    @classmethod
    def issue_pacs_reports(cls, results):
        """Render and store each result's report; what the task runs.

        A failure is recorded on its result (and retried by the cron job):
        it does not stop the other results nor fail the task.
        """
        studies = cls.report_studies(results)
        for result in results:
            try:
                values = result._issue_pacs_report(studies.get(result))
            except ReportFailure as failure:
                logger.warning("Report of imaging result %s not sent to "
                    "the PACS: %s", result.id, failure)
                values = {'pacs_report_state': 'failed',
                    'pacs_report_message': str(failure)}
            with without_check_access():
                super().write([result], values)

    def _issue_pacs_report(self, study):
        "Store the report in study, then delete the previous one."
        if study is None:
            raise ReportFailure(gettext('health_orthanc.msg_report_no_study',
                    result=self.rec_name))
        if study.patient != self.patient:
            # Never file a patient's report under another patient.
            raise ReportFailure(gettext(
                    'health_orthanc.msg_report_patient_differs',
                    result=self.rec_name, study=study.rec_name))
        pdf = self.render_report_pdf()
        with without_check_access():
            server = study.server
            try:
                instance_id, series_id = server.client.store_pdf_in_study(
                    study.orthanc_UID, pdf, self.report_tags())
            except orthanc.OrthancError as exc:
                raise ReportFailure(gettext(
                        'health_orthanc.msg_report_store_failed',
                        server=server.label, reason=describe_error(exc)))
            message = gettext('health_orthanc.msg_report_stored',
                study=study.rec_name, server=server.label)
            previous = self.pacs_report_study, self.pacs_report_series
            if previous[1] and previous[1] != series_id:
                message = self._delete_previous(*previous) or message
        return {
            'pacs_report_state': 'stored',
            'pacs_report_message': message,
            'pacs_report_date': datetime.datetime.now(),
            'pacs_report_study': study.id,
            'pacs_report_series': series_id,
            'pacs_report_instance': instance_id,
            }

    def _delete_previous(self, study, series_id):
        "Delete the previous report's series; a note if it stays."
        if study is None:
            return None
        server = study.server
        try:
            server.client.delete_series(series_id)
        except orthanc.OrthancError as exc:
            logger.warning("Previous report series %s left on %s: %s",
                series_id, server.label, exc)
            return gettext('health_orthanc.msg_report_previous_left',
                series=series_id, server=server.label,
                reason=describe_error(exc))
        return None

    def render_report_pdf(self):
        """health_imaging's report of this result as PDF bytes, rendered
        by trytond (LibreOffice converts the ODT template)."""
        Report = Pool().get(REPORT_NAME, type='report')
        try:
            extension, content, _, _ = Report.execute([self.id], {})
        except (OSError, subprocess.SubprocessError, UndefinedError) as exc:
            # No soffice, LibreOffice timed out, or the template misses a
            # value (e.g. the user has no company for the footer).
            raise ReportFailure(gettext(
                    'health_orthanc.msg_report_not_rendered',
                    result=self.rec_name, reason=str(exc)))
        content = bytes(content)
        if extension != 'pdf' or not content.startswith(b'%PDF'):
            # trytond gives the ODT back when LibreOffice failed.
            raise ReportFailure(gettext(
                    'health_orthanc.msg_report_not_rendered',
                    result=self.rec_name, reason=extension))
        return content

    def report_tags(self):
        "The DICOM tags of the report's new series."
        title = gettext('health_orthanc.msg_report_document_title',
            result=self.rec_name)
        return {
            'SpecificCharacterSet': 'ISO_IR 192',
            'Modality': REPORT_MODALITY,
            'DocumentTitle': title[:64],
            'SeriesDescription': gettext(
                'health_orthanc.msg_report_series_description')[:64],
            }


class Study(metaclass=PoolMeta):
    "A study linked to a result with findings receives its report."
    __name__ = STUDY

    @classmethod
    def create(cls, vlist):
        studies = super().create(vlist)
        cls._report_to_linked_results(studies)
        return studies

    @classmethod
    def write(cls, *args):
        super().write(*args)
        actions = iter(args)
        cls._report_to_linked_results([s for records, values
                in zip(actions, actions) if values.get('imaging_test')
                for s in records])

    @classmethod
    def _report_to_linked_results(cls, studies):
        results = [s.imaging_test for s in studies if s.imaging_test]
        if results:
            Result = Pool().get('gnuhealth.imaging.test.result')
            Result.report_to_new_studies(results)


_documents = PreviewCache()


class Instance(metaclass=PoolMeta):
    "The PDF of a document instance (modality DOC), for clinicians."
    __name__ = 'gnuhealth.imaging_orthanc.series_instances'

    document = fields.Function(fields.Binary('Document',
            filename='document_name'), 'get_document')
    document_name = fields.Function(fields.Char('Document name'),
        'get_document')

    @classmethod
    def get_document(cls, instances, names):
        """The PDF of a DOC instance and its file name.

        Orthanc is asked only when exactly one instance is read, as a
        form does: lists get None without any request.
        """
        result = {n: {i.id: None for i in instances} for n in names}
        if len(instances) != 1:
            return result
        instance, = instances
        if instance.series.modality != REPORT_MODALITY:
            return result
        values = {'document': instance._document(),
            'document_name': '%s.pdf' % instance.sop_instance_UID}
        for name in names:
            result[name][instance.id] = values[name]
        return result

    def _document(self):
        server = self.server
        key = (Transaction().database.name, server.id, self.orthanc_UID)
        try:
            return _documents.get(key,
                lambda: server.client.instance_pdf(self.orthanc_UID))
        except orthanc.OrthancError as exc:
            logger.info("No PDF of %s from %s: %s",
                self.orthanc_UID, server.label, exc)
            return None
