# SPDX-License-Identifier: GPL-3.0-or-later
"""The Orthanc patients and studies of GNU Health 4.x, as gnuhealth-orthanc
5.0.0rc3 and 5.0.4 still carry them.

Those releases kept the 4.x models under their names, with their rows, but
no longer wrote them: the mirror (gnuhealth.imaging_orthanc.*) replaced
them.  Hospitals upgrading keep them the same way, as a read-only archive:
the rows, the hand-made links to GNU Health patients and results, and the
field names that their reports and scripts use.  Nothing here talks to
Orthanc.
"""
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool

from . import links
from .study import link_field, viewer_links

SERVER_MODEL = 'gnuhealth.orthanc.config'
STUDY = 'gnuhealth.imaging_orthanc.study'


class UniqueOrthancUuid:
    "One row per server and Orthanc ID, as in 4.x."
    __slots__ = ()

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints = [
            ('uuid_unique', Unique(t, t.server, t.uuid),
                'health_orthanc.msg_legacy_uuid_unique'),
            ]


class OrthancPatient(UniqueOrthancUuid, ModelSQL, ModelView):
    "Orthanc Patient (GNU Health 4.x)"
    __name__ = 'gnuhealth.orthanc.patient'

    patient = fields.Many2One('gnuhealth.patient', 'Patient', readonly=True,
        help="GNU Health patient this Orthanc patient was linked to")
    name = fields.Char('PatientName', readonly=True)
    bd = fields.Date('Birthdate', readonly=True)
    ident = fields.Char('PatientID', readonly=True)
    uuid = fields.Char('PatientUUID', readonly=True, required=True,
        help="Orthanc ID of the patient")
    studies = fields.One2Many('gnuhealth.orthanc.study', 'patient',
        'Studies', readonly=True)
    server = fields.Many2One(SERVER_MODEL, 'Server', readonly=True)
    link = fields.Function(fields.Char('URL',
            help="The patient in Orthanc Explorer"), 'get_links')

    @classmethod
    def get_links(cls, patients, names):
        return viewer_links(patients, names, lambda patient, server: {
                'link': links.explorer_patient(server.public_url,
                    patient.uuid),
                })

    def get_rec_name(self, name):
        return self.name or self.ident or self.uuid


class OrthancStudy(UniqueOrthancUuid, ModelSQL, ModelView):
    "Orthanc Study (GNU Health 4.x)"
    __name__ = 'gnuhealth.orthanc.study'

    patient = fields.Many2One('gnuhealth.orthanc.patient', 'Patient',
        readonly=True)
    uuid = fields.Char('UUID', readonly=True, required=True,
        help="Orthanc ID of the study")
    description = fields.Char('Description', readonly=True)
    date = fields.Date('Date', readonly=True)
    ident = fields.Char('ID', readonly=True)
    instance_uid = fields.Char('InstanceUID', readonly=True)
    requested_procedure_id = fields.Char('RequestedProcedureID',
        readonly=True)
    merge_id = fields.Char('Merge ID', readonly=True)
    institution = fields.Char('Institution', readonly=True)
    ref_phys = fields.Char('Referring Physician', readonly=True)
    req_phys = fields.Char('Requesting Physician', readonly=True)
    server = fields.Many2One(SERVER_MODEL, 'Server', readonly=True)
    imaging_test = fields.Many2One('gnuhealth.imaging.test.result', 'Study',
        readonly=True)
    study = fields.Function(fields.Many2One(STUDY, 'Mirrored study',
            help="The same Orthanc study in the current mirror, if any"),
        'get_study')
    ohif_viewer_link = link_field('OHIF Viewer')
    stone_viewer_link = link_field('Stone Viewer')
    orthanc_explorer_link = link_field('Orthanc Explorer')

    @classmethod
    def get_links(cls, studies, names):
        def build(study, server):
            base = server.public_url
            return {
                'ohif_viewer_link': links.ohif_dicom_json(base, study.uuid),
                'stone_viewer_link': (links.stone(base, study.instance_uid)
                    if study.instance_uid else None),
                'orthanc_explorer_link': links.explorer_study(
                    base, study.uuid),
                }
        return viewer_links(studies, names, build)

    @classmethod
    def get_study(cls, studies, name):
        "The mirror's study of the same server and Orthanc ID, in one search."
        Study = Pool().get(STUDY)
        result = {s.id: None for s in studies}
        keys = {(s.server.id, s.uuid): s.id for s in studies if s.server}
        if not keys:
            return result
        for study in Study.search([
                    ('server', 'in', list({k[0] for k in keys})),
                    ('orthanc_UID', 'in', list({k[1] for k in keys})),
                    ]):
            legacy_id = keys.get((study.server.id, study.orthanc_UID))
            if legacy_id is not None:
                result[legacy_id] = study.id
        return result

    def get_rec_name(self, name):
        return ': '.join((self.ident or self.uuid, self.description or ''))
