# SPDX-License-Identifier: GPL-3.0-or-later
"""Orthanc studies in clinical work: the helpers and wizards.

The preview cache, deletion on Orthanc, comparing a study's DICOM patient
with a GNU Health patient, and the wizards that attach images and link
studies to patients by hand.  The models' own methods (previews, attaching,
deleting, linking) are in study.py.  Every call to Orthanc goes through the
adapter (orthanc.py) and its errors become user errors.
"""
import logging
import re
import threading
import time
import unicodedata
from collections import OrderedDict

from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Bool, Eval, If
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from . import orthanc
from .exceptions import OrthancDeleteError

logger = logging.getLogger(__name__)

STUDY = 'gnuhealth.imaging_orthanc.study'
SERIES = 'gnuhealth.imaging_orthanc.study_series'
INSTANCE = 'gnuhealth.imaging_orthanc.series_instances'
# Orthanc's answer to /preview for what it cannot render (SR, PDF...).
NOT_AN_IMAGE = 415
MAX_CANDIDATES = 20
# Failures that every further request to the same server would repeat.
SERVER_DOWN = (orthanc.Unreachable, orthanc.Timeout, orthanc.TLSFailure,
    orthanc.Unauthorized, orthanc.NotOrthanc)


class PreviewCache:
    """The last few previews, for a short time.

    A form reads the preview twice: its size with the other fields, then
    the image itself.  Orthanc identifiers name immutable content, so the
    second read may reuse the first answer.  Answers "not an image" are
    kept too; failures are not.
    """

    def __init__(self, size=8, seconds=30):
        self.size, self.seconds = size, seconds
        self._entries = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, fetch):
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry and now - entry[0] < self.seconds:
                self._entries.move_to_end(key)
                image, error = entry[1]
                if error:
                    raise orthanc.Rejected(error.reason, error.status)
                return image
        try:
            image, error = fetch(), None
        except orthanc.OrthancError as exc:
            if not is_not_an_image(exc):
                raise
            image, error = None, exc
        with self._lock:
            self._entries[key] = (now, (image, error))
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        if error:
            raise error
        return image

    def clear(self):
        with self._lock:
            self._entries.clear()


_previews = PreviewCache()


def is_not_an_image(exc):
    return isinstance(exc, orthanc.Rejected) and exc.status == NOT_AN_IMAGE


def log_deletion(Model, records):
    """Record in ir.model.log who deleted records.

    ModelStorage.delete logs only while access is checked, and buttons run
    without access checks: log here in that case (never twice).
    """
    if records and not Transaction().check_access:
        Model.log(records, 'delete')


def delete_on_orthanc(records, delete, message, values):
    """Delete each record's resource on Orthanc.

    delete(client, orthanc_id) is the adapter call; values(record) the
    message values naming the record.  A resource already gone (404) counts
    as deleted.  Returns the records deleted and the errors of the others.
    """
    done, errors = [], []
    down = {}  # server id: the failure that makes further requests futile
    for record in records:
        server = record.server
        try:
            with server.errors(message, OrthancDeleteError, **values(record)):
                if server.id in down:
                    raise down[server.id]
                delete(server.client, record.orthanc_UID)
        except OrthancDeleteError as exc:
            logger.warning("Orthanc deletion refused: %s", exc.message)
            errors.append(exc)
            if isinstance(exc.__cause__, SERVER_DOWN):
                down[server.id] = exc.__cause__
        else:
            done.append(record)
    return done, errors


def raise_delete_errors(errors, done):
    """Raise one error for every refusal.

    The records Orthanc did delete are removed from GNU Health too: that is
    committed first, so that GNU Health keeps mirroring Orthanc.
    """
    if not errors:
        return
    text = ' '.join(e.message for e in errors)
    if done:
        Transaction().commit()
        text += ' ' + gettext('health_orthanc.msg_delete_others_done',
            count=len(done))
    raise OrthancDeleteError(text)


def split_person_name(name):
    "(family, given names) of a name stored as 'FAMILY, GIVEN MIDDLE'."
    family, _, given = (name or '').partition(',')
    return family.strip(), given.split()


def name_words(text):
    "Lower-case words of a name without accents, to compare names."
    text = unicodedata.normalize('NFKD', text or '')
    return set(re.findall(r'\w+', ''.join(
                c for c in text if not unicodedata.combining(c)).lower()))


# DICOM PatientSex and the GNU Health genders they can be compared with.
DICOM_SEX = {'M': 'm', 'F': 'f'}


def identity_differences(study, patient):
    """What the DICOM header of study says that patient is not, as
    [(what, DICOM value, GNU Health value)]: 'name', 'birth_date', 'sex'.
    A value missing on either side never disagrees."""
    party = patient.party
    differences = []
    family, given = split_person_name(study.patient_name)
    family, given = name_words(family), name_words(' '.join(given))
    last, first = name_words(party.lastname), name_words(party.name)
    if ((family and last and not family & last)
            or (given and first and not given & first)):
        differences.append(('name', study.patient_name,
                ', '.join(filter(None, [party.lastname, party.name]))))
    if (study.patient_birth_date and party.dob
            and study.patient_birth_date != party.dob):
        differences.append(('birth_date',
                study.patient_birth_date.isoformat(), party.dob.isoformat()))
    sex = DICOM_SEX.get((study.patient_sex or '').strip().upper())
    if sex and party.gender in DICOM_SEX.values() and sex != party.gender:
        differences.append(('sex', study.patient_sex, party.gender.upper()))
    return differences


def describe_differences(differences):
    return '; '.join(gettext('health_orthanc.msg_link_differs_' + what,
            dicom=dicom, patient=value)
        for what, dicom, value in differences)


class AttachToImagingTest(Wizard):
    "Attach images to the imaging test result"
    __name__ = 'gnuhealth.imaging_orthanc.series_instances.attach'

    start = StateTransition()

    def transition_start(self):
        Instance = Pool().get(INSTANCE)
        Instance.attach_to_imaging_test(self.records)
        return 'end'

    def end(self):
        return 'reload'


class LinkPatientStart(ModelView):
    "Link studies to a patient"
    __name__ = 'gnuhealth.imaging_orthanc.study.link_patient.start'

    studies = fields.Many2Many(STUDY, None, None, 'Studies', readonly=True)
    candidates = fields.Many2Many('gnuhealth.patient', None, None,
        'Suggested patients', readonly=True,
        help="Patients whose identifier, name or birth date match the "
        "study's DICOM patient data, best first")
    only_candidates = fields.Boolean('Only suggested patients',
        help="Choose among the suggested patients only")
    patient = fields.Many2One('gnuhealth.patient', 'Patient', required=True,
        domain=[If(Bool(Eval('only_candidates')),
                ('id', 'in', Eval('candidates', [])), ())])
    imaging_test = fields.Many2One('gnuhealth.imaging.test.result',
        'Imaging test result',
        domain=[('patient', '=', Eval('patient', -1))],
        states={'readonly': ~Eval('patient')},
        help="Optionally, the result these studies belong to")

    @fields.depends('patient', 'imaging_test')
    def on_change_patient(self):
        if self.imaging_test and self.imaging_test.patient != self.patient:
            self.imaging_test = None


class LinkPatientConfirm(ModelView):
    "Link studies to a patient whose data differs"
    __name__ = 'gnuhealth.imaging_orthanc.study.link_patient.confirm'

    patient = fields.Many2One('gnuhealth.patient', 'Patient', readonly=True)
    differences = fields.Text('Differences', readonly=True)


class LinkPatient(Wizard):
    "Link studies to a patient"
    __name__ = 'gnuhealth.imaging_orthanc.study.link_patient'

    start = StateView('gnuhealth.imaging_orthanc.study.link_patient.start',
        'health_orthanc.study_link_patient_start_view_form', [
            Button('Cancel', 'end', 'tryton-cancel'),
            Button('Link', 'link', 'tryton-ok', default=True),
            ])
    link = StateTransition()
    # The DICOM name, birth date or sex disagree with the chosen patient.
    confirm = StateView(
        'gnuhealth.imaging_orthanc.study.link_patient.confirm',
        'health_orthanc.study_link_patient_confirm_view_form', [
            Button('Back', 'start', 'tryton-back'),
            Button('Cancel', 'end', 'tryton-cancel'),
            Button('Link anyway', 'link_anyway', 'tryton-ok'),
            ])
    link_anyway = StateTransition()

    def default_start(self, fields):
        Study = Pool().get(STUDY)
        studies = list(self.records)
        scored = Study.patient_candidates(studies)
        patients = {s.patient for s in studies}
        results = {s.imaging_test for s in studies}
        if len(patients) == 1 and None not in patients:
            patient, = patients
        elif scored and (len(scored) == 1 or scored[0][0] > scored[1][0]):
            patient = scored[0][1]
        else:
            patient = None
        result = results.pop() if len(results) == 1 else None
        if result and result.patient != patient:
            result = None
        candidates = [p for _, p in scored]
        return {
            'studies': [s.id for s in studies],
            'candidates': [p.id for p in candidates],
            'only_candidates': bool(candidates) and (
                patient is None or patient in candidates),
            'patient': patient.id if patient else None,
            'imaging_test': result.id if result else None,
            }

    def differences(self):
        "{study: differences} of the studies that disagree with the patient"
        by_study = {s: identity_differences(s, self.start.patient)
            for s in self.records}
        return {s: d for s, d in by_study.items() if d}

    def transition_link(self):
        if self.differences():
            return 'confirm'
        return self._link({})

    def default_confirm(self, fields):
        return {
            'patient': self.start.patient.id,
            'differences': '\n'.join('%s: %s' % (
                        study.rec_name, describe_differences(differences))
                for study, differences in self.differences().items()),
            }

    def transition_link_anyway(self):
        return self._link(self.differences())

    def _link(self, differences):
        """Link the studies; those whose DICOM data disagreed are logged
        with what disagreed (confirmed by the user)."""
        Study = Pool().get(STUDY)
        Study.link_to_patient(list(self.records), self.start.patient,
            self.start.imaging_test)
        for study, found in differences.items():
            # ir.model.log reads its target as "<wizard>:<state>".
            detail = gettext('health_orthanc.msg_link_confirmed_log',
                patient=self.start.patient.rec_name,
                differences=describe_differences(found)).replace(':', ' ')
            Study.log([study], 'wizard',
                target='%s:%s' % (self.__name__, detail))
        return 'end'

    def end(self):
        return 'reload'
