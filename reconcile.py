# SPDX-License-Identifier: GPL-3.0-or-later
"""Import reconciliation: outside studies filed under a GNU Health
patient's identity in Orthanc.

* At upload (stream.py, upload.py): a chosen patient's identity is given
  to every object as it is sent (import_files.py, dicom_identity.py).
  Without a chosen patient, the uploaded studies that no PUID linked are
  flagged for review ('outside').
* Later, *Reconcile with patient* (imaging administrators): a stored study
  that is not linked, or flagged for review, is rewritten in Orthanc.

Orthanc 1.10 refuses to change PatientID with /studies/{id}/modify, and
/split gives new StudyInstanceUIDs.  So, keeping every UID: each instance's
stored file is read back (GET /instances/{id}/file), given the identity
here (the same rewrite as at upload: original identity kept in the
object) and posted again.  Orthanc files it under a new patient, hence new
Orthanc ids of study, series and instances (they hash PatientID).  Only
once every instance is stored is the old study deleted; the mirror study
keeps its record (notes, links, attachments, log) and is re-keyed in place
to the new Orthanc ids.  If an instance cannot be stored, the copies made
so far are deleted and the study stays as it was.
"""
import http.client
import logging

from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool, PoolMeta
from trytond.protocols.wrappers import abort
from trytond.pyson import Bool, Eval
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from . import dicom_identity, import_files, orthanc, roles, stream
from .clinical import LinkPatient, describe_differences
from .exceptions import OrthancUploadError
from .server import describe_error

logger = logging.getLogger(__name__)

STUDY = 'gnuhealth.imaging_orthanc.study'
SERIES = 'gnuhealth.imaging_orthanc.study_series'
INSTANCE = 'gnuhealth.imaging_orthanc.series_instances'
PATIENT = 'gnuhealth.patient'
WIZARD = 'gnuhealth.imaging_orthanc.study.reconcile'
OUTSIDE = 'outside'


@without_check_access
def identity_of(patient):
    "The dicom_identity.Identity of a GNU Health patient (None: none)."
    if patient is None:
        return None
    party = patient.party
    return dicom_identity.Identity.of(patient.puid, party.lastname,
        party.name, party.dob, party.gender)


def identity_of_request(pool, request):
    """The identity of the patient named by the route's ``patient``
    argument, None without one; 403 if the user may not read him."""
    value = request.args.get('patient')
    if not value:
        return None
    try:
        patient_id = int(value)
    except ValueError:
        abort(http.client.BAD_REQUEST)
    Patient = pool.get(PATIENT)
    # The user's own access: model access and record rules.
    with Transaction().set_context(_check_access=True):
        try:
            patients = Patient.search([('id', '=', patient_id)])
        except AccessError as exc:
            abort(http.client.FORBIDDEN, exc.message)
    if not patients:
        abort(http.client.NOT_FOUND)
    return identity_of(patients[0])


@without_check_access
def check_streamed_patient(reference, patient):
    """Refuse to link streamed files to another patient than the one
    whose identity they were given (the form changed after sending)."""
    UploadFile = Pool().get('gnuhealth.imaging_orthanc.upload_file')
    expected = identity_of(patient).patient_id if patient else None
    given = UploadFile.given_puids(reference)
    if given != {expected}:
        raise OrthancUploadError(gettext(
                'health_orthanc.msg_reconcile_stream_patient',
                given=', '.join(sorted(p or '-' for p in given)),
                chosen=expected or '-'))


@without_check_access
def flag_outside_studies(studies):
    "Uploaded without a patient and linked to nobody: to review."
    Study = Pool().get(STUDY)
    unlinked = [s for s in studies if not s.patient and not s.link_review]
    if unlinked:
        Study.write(unlinked, {
                'link_review': OUTSIDE,
                'link_review_reason': gettext(
                    'health_orthanc.msg_reconcile_outside'),
                })


class UploadFile(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging_orthanc.upload_file'

    puid = fields.Char('Given PUID',
        help="The PUID the objects were given as they streamed")

    @classmethod
    def given_puids(cls, reference):
        """The PUIDs (None for none) the current user's files posted under
        reference were given: one grouped query, not thousands of
        records."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(table.puid,
                where=(table.reference == reference)
                & (table.create_uid == Transaction().user),
                group_by=[table.puid]))
        return {puid or None for puid, in cursor}


class Study(metaclass=PoolMeta):
    __name__ = STUDY

    @classmethod
    def __setup__(cls):
        super().__setup__()
        if (OUTSIDE, 'Outside study') not in cls.link_review.selection:
            cls.link_review.selection = cls.link_review.selection + [
                (OUTSIDE, 'Outside study')]
        cls._buttons.update({
                'reconcile_patient': {
                    'invisible': roles.admin_only(),
                    'readonly': (Bool(Eval('patient'))
                        & ~Bool(Eval('link_review'))),
                    'depends': ['patient', 'link_review'],
                    'icon': 'tryton-link',
                    },
                })

    @classmethod
    @ModelView.button_action('health_orthanc.act_study_reconcile')
    def reconcile_patient(cls, studies):
        pass

    @classmethod
    def check_reconcilable(cls, studies):
        "Only a study not linked, or flagged for review, is rewritten."
        for study in studies:
            if study.patient and not study.link_review:
                raise OrthancUploadError(gettext(
                        'health_orthanc.msg_reconcile_linked',
                        study=study.rec_name))
            if study.missing_on_orthanc:
                raise OrthancUploadError(gettext(
                        'health_orthanc.msg_reconcile_missing',
                        study=study.rec_name))

    @classmethod
    def reconcile_with(cls, studies, patient):
        """Give studies the patient's identity in Orthanc, re-key them and
        link them to patient (by hand)."""
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        cls.check_reconcilable(studies)
        identity = identity_of(patient)
        # A sync of the server would mirror the copies as new studies.
        Server.lock(list({s.server for s in studies}))
        for study in studies:
            tree = _rewrite_in_orthanc(study, identity)
            _rekey(study, tree, identity, patient)


def _store_copies(client, study, identity, instances):
    "Post each instance with the identity: [UploadedFile], all stored."
    copies = []
    for instance in instances:
        data = memoryview(client.instance_file(instance['ID']))
        reader = dicom_identity.ViewReader(data)
        head = stream.read_head(reader, len(data))
        outcome, = import_files.send_dicom(client, instance['ID'], head,
            reader, len(data), identity)
        del data, reader, head
        if outcome.status not in ('Success', 'AlreadyStored'):
            _delete_copies(client, copies)
            raise OrthancUploadError(gettext(
                    'health_orthanc.msg_reconcile_failed',
                    study=study.rec_name, reason=outcome.reason))
        copies.append(outcome)
    return copies


def _delete_copies(client, copies):
    for study_id in {c.study_id for c in copies}:
        try:
            client.delete_study(study_id)
        except orthanc.OrthancError as exc:
            logger.warning("Copy %s of a reconciled study not deleted: %s",
                study_id, exc)


def _rewrite_in_orthanc(study, identity):
    """Store the study again with identity, delete the old one; the new
    study's orthanc.StudyTree."""
    client = study.server.client
    old_id = study.orthanc_UID
    try:
        _, instances = client.study_children(old_id)
        copies = _store_copies(client, study, identity, instances)
        new_ids = {c.study_id for c in copies}
        if len(new_ids) != 1:
            _delete_copies(client, copies)
            raise OrthancUploadError(gettext(
                    'health_orthanc.msg_reconcile_failed',
                    study=study.rec_name, reason='%d studies' % len(new_ids)))
        new_id, = new_ids
        if new_id != old_id:
            client.delete_study(old_id)
        return client.study_tree(new_id)
    except orthanc.OrthancError as exc:
        raise OrthancUploadError(gettext(
                'health_orthanc.msg_reconcile_failed',
                study=study.rec_name, reason=describe_error(exc))) from exc


@without_check_access
def _rekey(study, tree, identity, patient):
    """The mirror study, its series and instances get the new Orthanc ids
    (same records: notes, links and attachments stay)."""
    pool = Pool()
    Study = pool.get(STUDY)
    Series = pool.get(SERIES)
    Instance = pool.get(INSTANCE)
    series_ids = {s['MainDicomTags'].get('SeriesInstanceUID'): s['ID']
        for s in tree.series}
    instance_ids = {i['MainDicomTags'].get('SOPInstanceUID'): i['ID']
        for i in tree.instances}
    series_list = Series.search([('study', '=', study.id)])
    instances = Instance.search([('series.study', '=', study.id)])
    to_write = []
    for series in series_list:
        if series.series_UID in series_ids:
            to_write.extend(([series],
                    {'orthanc_UID': series_ids[series.series_UID]}))
    if to_write:
        Series.write(*to_write)
    to_write = []
    for instance in instances:
        if instance.sop_instance_UID in instance_ids:
            to_write.extend(([instance], {
                        'orthanc_UID': instance_ids[instance.sop_instance_UID],
                        }))
    if to_write:
        Instance.write(*to_write)
    Study.write([study], {
            'orthanc_UID': tree.study['ID'],
            'last_update': tree.study.get('LastUpdate'),
            'patient_id': identity.patient_id,
            'patient_name': identity.name,
            'patient_sex': identity.sex or None,
            'patient_birth_date': patient.party.dob,
            'patient': patient.id,
            'manual_link': True,
            'link_review': None,
            'link_review_reason': None,
            })


class ReconcileStart(ModelView):
    "Reconcile studies with a patient"
    __name__ = 'gnuhealth.imaging_orthanc.study.reconcile.start'

    studies = fields.Many2Many(STUDY, None, None, 'Studies', readonly=True)
    patient = fields.Many2One(PATIENT, 'Patient', required=True,
        help="The patient whose identity (PUID, name, birth date, sex) the "
        "studies are given in Orthanc")


class ReconcileConfirm(ModelView):
    "Reconcile studies with a patient whose data differs"
    __name__ = 'gnuhealth.imaging_orthanc.study.reconcile.confirm'

    patient = fields.Many2One(PATIENT, 'Patient', readonly=True)
    differences = fields.Text('Differences', readonly=True)


class Reconcile(Wizard):
    "Reconcile with patient"
    __name__ = WIZARD

    start = StateView('gnuhealth.imaging_orthanc.study.reconcile.start',
        'health_orthanc.study_reconcile_start_view_form', [
            Button('Cancel', 'end', 'tryton-cancel'),
            Button('Reconcile', 'reconcile', 'tryton-ok', default=True),
            ])
    reconcile = StateTransition()
    # The same check as manual linking: the DICOM identity disagrees.
    confirm = StateView('gnuhealth.imaging_orthanc.study.reconcile.confirm',
        'health_orthanc.study_reconcile_confirm_view_form', [
            Button('Back', 'start', 'tryton-back'),
            Button('Cancel', 'end', 'tryton-cancel'),
            Button('Reconcile anyway', 'reconcile_anyway', 'tryton-ok'),
            ])
    reconcile_anyway = StateTransition()

    def default_start(self, fields):
        studies = list(self.records)
        patients = {s.patient for s in studies} - {None}
        return {
            'studies': [s.id for s in studies],
            'patient': patients.pop().id if len(patients) == 1 else None,
            }

    # The link wizard's checks: what the DICOM identity says that the
    # chosen patient is not, and its confirmation page.
    differences = LinkPatient.differences
    default_confirm = LinkPatient.default_confirm

    def transition_reconcile(self):
        Pool().get(STUDY).check_reconcilable(list(self.records))
        if self.differences():
            return 'confirm'
        return self._reconcile({})

    def transition_reconcile_anyway(self):
        return self._reconcile(self.differences())

    def _reconcile(self, differences):
        Study = Pool().get(STUDY)
        studies = list(self.records)
        patient = self.start.patient
        before = {s.id: (s.patient_id, s.orthanc_UID) for s in studies}
        Study.reconcile_with(studies, patient)
        for study in studies:
            patient_id, orthanc_id = before[study.id]
            detail = gettext('health_orthanc.msg_reconcile_log',
                patient=patient.rec_name, patient_id=patient_id or '-',
                orthanc_id=orthanc_id,
                differences=describe_differences(
                    differences.get(study, [])) or '-')
            # ir.model.log reads its target as "<wizard>:<state>".
            Study.log([study], 'wizard', target='%s:%s' % (
                    self.__name__, detail.replace(':', ' ')))
        return 'end'

    def end(self):
        return 'reload'
