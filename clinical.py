# SPDX-License-Identifier: GPL-3.0-or-later
"""Orthanc studies in clinical work.

Instance previews, images attached to imaging test results, deletion on
Orthanc and linking studies to patients by hand.  Every call to Orthanc goes
through the adapter (orthanc.py) and its errors become user errors.
"""
import logging
import re
import threading
import time
import unicodedata
from collections import Counter, OrderedDict, defaultdict

from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval, If
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from . import orthanc, roles
from .exceptions import (
    ImagingLinkError, OrthancDeleteError, OrthancServerError)
from .server import describe_error
from .sync import LINK_REVIEW_CLEARED

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


class Study(metaclass=PoolMeta):
    __name__ = STUDY

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'link_patient': {
                    'invisible': roles.imaging_only(),
                    'icon': 'tryton-link',
                    },
                'unlink_patient': {
                    'invisible': (roles.imaging_only()
                        | (~Eval('patient') & ~Eval('imaging_test')
                            & ~Eval('imaging_request'))),
                    'depends': ['patient', 'imaging_test', 'imaging_request'],
                    'icon': 'tryton-clear',
                    },
                'delete_study': {
                    'invisible': roles.admin_only(),
                    'icon': 'tryton-delete',
                    },
                })

    # --- deletion -------------------------------------------------------
    @classmethod
    @ModelView.button
    def delete_study(cls, studies):
        "Delete studies on Orthanc, then in GNU Health."
        done, errors = delete_on_orthanc(studies,
            lambda client, uid: client.delete_study(uid),
            'msg_delete_study_failed',
            lambda s: {'study': s.rec_name})
        if done:
            log_deletion(cls, done)
            cls.delete(done)
        raise_delete_errors(errors, done)
        # Lists search again; custom.js drops the deleted records in SAO.
        return 'reload'

    @classmethod
    def remove_series(cls, studies):
        """Bring studies up to date after some of their series were deleted.

        A study left without series is deleted, as Orthanc does.
        """
        Series = Pool().get(SERIES)
        studies = list(set(studies))
        if not studies:
            return
        remaining = defaultdict(list)
        for series in Series.search([
                    ('study', 'in', [s.id for s in studies]),
                    ]):
            remaining[series.study.id].append(series)
        empty = [s for s in studies if not remaining[s.id]]
        to_write = []
        for study in studies:
            series_list = remaining[study.id]
            if not series_list:
                continue
            modalities = sorted({s.modality for s in series_list} - {None})
            to_write.extend(([study], {
                        'series_count': len(series_list),
                        'instance_count': sum(
                            s.instance_count or 0 for s in series_list),
                        'modalities': ', '.join(modalities) or None,
                        }))
        if to_write:
            cls.write(*to_write)
        if empty:
            log_deletion(cls, empty)
            cls.delete(empty)

    # --- manual linking -------------------------------------------------
    @classmethod
    @ModelView.button_action('health_orthanc.act_study_link_patient')
    def link_patient(cls, studies):
        pass

    @classmethod
    @ModelView.button
    def unlink_patient(cls, studies):
        "Detach studies from their patient, request and result for good."
        cls.write(list(studies), {
                'patient': None,
                'imaging_request': None,
                'imaging_test': None,
                'manual_link': True,
                **LINK_REVIEW_CLEARED,
                })

    @classmethod
    def link_to_patient(cls, studies, patient, result=None):
        """Link studies by hand to patient and optionally to a result.

        A request of another patient is dropped; synchronisation leaves the
        links alone from now on, and the study no longer needs review.
        """
        to_write = []
        for study in studies:
            values = {
                'patient': patient.id,
                'imaging_test': result.id if result else None,
                'manual_link': True,
                **LINK_REVIEW_CLEARED,
                }
            if result:
                values['imaging_request'] = (
                    result.request.id if result.request else None)
            elif (study.imaging_request
                    and study.imaging_request.patient != patient):
                values['imaging_request'] = None
            to_write.extend(([study], values))
        if to_write:
            cls.write(*to_write)

    @classmethod
    def patient_candidates(cls, studies, limit=MAX_CANDIDATES):
        """Patients who may be the person of studies, best first.

        Found by PatientID (PUID or an alternative identifier), family name
        and birth date, in one search; scored 4, 2 (+1 for a given name)
        and 1.  Returns [(score, patient)].
        """
        Patient = Pool().get('gnuhealth.patient')
        ids = {s.patient_id for s in studies if s.patient_id}
        names = [split_person_name(s.patient_name) for s in studies]
        families = {f.lower() for f, _ in names if f}
        given = {g.lower() for _, gs in names for g in gs}
        dobs = {s.patient_birth_date for s in studies if s.patient_birth_date}
        clauses = []
        if ids:
            clauses.append(('puid', 'in', sorted(ids)))
            clauses.append(('party.alternative_ids.code', 'in', sorted(ids)))
        for family in sorted(families):
            clauses.append(('party.lastname', 'ilike', family))
        if dobs:
            clauses.append(('party.dob', 'in', sorted(dobs)))
        if not clauses:
            return []
        scored = []
        for patient in Patient.search(['OR'] + clauses, limit=10 * limit):
            party = patient.party
            codes = {a.code for a in party.alternative_ids} | {party.ref}
            score = 0
            if codes & ids:
                score += 4
            if (party.lastname or '').lower() in families:
                score += 2
                if {n.lower() for n in (party.name or '').split()} & given:
                    score += 1
            if party.dob and party.dob in dobs:
                score += 1
            scored.append((score, patient))
        scored.sort(key=lambda s: (-s[0], s[1].rec_name, s[1].id))
        return scored[:limit]


class Series(metaclass=PoolMeta):
    __name__ = SERIES

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'delete_series': {
                    'invisible': roles.admin_only(),
                    'icon': 'tryton-delete',
                    },
                })

    @classmethod
    @ModelView.button
    def delete_series(cls, series_list):
        """Delete series on Orthanc, then in GNU Health.

        A study whose last series is deleted is deleted too.
        """
        Study = Pool().get(STUDY)
        done, errors = delete_on_orthanc(series_list,
            lambda client, uid: client.delete_series(uid),
            'msg_delete_series_failed',
            lambda s: {'series': s.rec_name, 'study': s.study.rec_name})
        if done:
            studies = [s.study for s in done]
            log_deletion(cls, done)
            cls.delete(done)
            Study.remove_series(studies)
        raise_delete_errors(errors, done)
        return 'reload'


class Instance(metaclass=PoolMeta):
    __name__ = INSTANCE

    preview = fields.Function(fields.Binary('Preview'), 'get_preview')
    preview_message = fields.Function(fields.Char('Preview status'),
        'get_preview')
    # gnuhealth-orthanc 5.0.4's name for the preview.
    image = fields.Function(fields.Binary('Image',
            help="The preview (earlier name)"), 'get_preview')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'attach_image_to_imaging_test_report': {
                    'icon': 'tryton-attach',
                    },
                })

    # --- preview --------------------------------------------------------
    @classmethod
    def get_preview(cls, instances, names):
        """The PNG preview and why there is none.

        Orthanc is asked only when exactly one instance is read, as a form
        does: lists get None without any request.
        """
        result = {n: {i.id: None for i in instances} for n in names}
        if len(instances) != 1:
            return result
        instance, = instances
        image, message = instance._preview()
        values = {'preview': image, 'image': image,
            'preview_message': message}
        for name in names:
            result[name][instance.id] = values[name]
        return result

    def get_image(self, name=None):
        "The PNG preview or None, as gnuhealth-orthanc 5.0.4's get_image."
        return self._preview()[0]

    def _preview(self):
        "(PNG, None) or (None, why there is no preview)."
        server = self.server
        key = (Transaction().database.name, server.id, self.orthanc_UID)
        try:
            image = _previews.get(key,
                lambda: server.client.preview(self.orthanc_UID))
        except orthanc.OrthancError as exc:
            if is_not_an_image(exc):
                return None, gettext('health_orthanc.msg_preview_not_image')
            logger.info("No preview of %s from %s: %s",
                self.orthanc_UID, server.label, exc)
            return None, gettext('health_orthanc.msg_preview_failed',
                server=server.label, reason=describe_error(exc))
        return image, None

    # --- attaching to imaging results -----------------------------------
    @classmethod
    @ModelView.button
    def attach_image_to_imaging_test_report(cls, instances):
        cls.attach_to_imaging_test(instances)

    @classmethod
    def attach_to_imaging_test(cls, instances):
        """Attach the PNG of each instance to its study's imaging result.

        All or nothing: an instance whose study has no result, or that
        Orthanc cannot render, stops it before anything is stored.  An
        instance attached before has its attachment updated.
        """
        Attachment = Pool().get('ir.attachment')
        instances = list(dict.fromkeys(instances))
        if not instances:
            return
        for instance in instances:
            study = instance.series.study
            if not study.imaging_test:
                raise ImagingLinkError(gettext(
                        'health_orthanc.msg_attach_no_result',
                        study=study.rec_name, uid=study.study_instance_UID))
        results = {i.series.study.imaging_test for i in instances}
        refused = results - set(roles.writable(results))
        if refused:
            raise ImagingLinkError(gettext(
                    'health_orthanc.msg_attach_result_not_writable',
                    result=', '.join(sorted(r.rec_name for r in refused))))
        names = cls.attachment_names(instances)
        existing = {(str(a.resource), a.name): a for a in Attachment.search([
                    ('resource', 'in', list({
                                str(i.series.study.imaging_test)
                                for i in instances})),
                    ('name', 'in', list(set(names.values()))),
                    ])}
        to_create, to_write = [], []
        for instance in instances:
            values = {
                'name': names[instance],
                'type': 'data',
                'data': instance._image_to_attach(),
                'description': instance.attachment_description,
                }
            resource = str(instance.series.study.imaging_test)
            attachment = existing.get((resource, names[instance]))
            if attachment:
                to_write.extend(([attachment], values))
            else:
                values['resource'] = resource
                to_create.append(values)
        if to_write:
            Attachment.write(*to_write)
        if to_create:
            Attachment.create(to_create)

    def _image_to_attach(self):
        server = self.server
        key = (Transaction().database.name, server.id, self.orthanc_UID)
        try:
            with server.errors('msg_attach_failed', OrthancServerError,
                    instance=self.rec_name):
                return _previews.get(key,
                    lambda: server.client.preview(self.orthanc_UID))
        except OrthancServerError as exc:
            if is_not_an_image(exc.__cause__):
                raise ImagingLinkError(gettext(
                        'health_orthanc.msg_attach_not_image',
                        instance=self.rec_name)) from exc
            raise

    @classmethod
    def attachment_names(cls, instances):
        """Deterministic attachment names by instance.

        <StudyInstanceUID>-<SeriesNumber>-<InstanceNumber>.png; a missing
        number, or an instance number shared by several instances of the
        series, is replaced by the series or SOP instance UID.
        """
        series_ids = list({i.series.id for i in instances})
        numbers = Counter((v['series'], v['instance_number'])
            for v in cls.search_read([('series', 'in', series_ids)],
                fields_names=['series', 'instance_number']))
        names = {}
        for instance in instances:
            series = instance.series
            number = instance.instance_number
            if number is None or numbers[(series.id, number)] > 1:
                number = instance.sop_instance_UID
            names[instance] = '%s-%s-%s.png' % (
                series.study.study_instance_UID,
                series.series_number or series.series_UID, number)
        return names

    @property
    def attachment_description(self):
        return gettext('health_orthanc.msg_attachment_description',
            number=('-' if self.instance_number is None
                else self.instance_number),
            position=(self.image_position_patient or '-').replace('\\', ', '),
            series=self.series.rec_name,
            study=self.series.study.rec_name)


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
