# SPDX-License-Identifier: GPL-3.0-or-later
"""Viewer access over JSON-RPC, one logged-in user per role: who may read
the secret, open viewers and read the log of openings."""
from urllib.parse import parse_qs, urlsplit

import httpx

from ..orthanc_side import viewer_token
from . import dicom_factory as factory
from . import rpc
from .orthanc_server import upload_files
from .test_viewer_access import (
    SECRET, needs_python_plugin, start_viewer_orthanc)

SERVER = 'gnuhealth.orthanc.config'
STUDY = 'gnuhealth.imaging_orthanc.study'
SERIES = 'gnuhealth.imaging_orthanc.study_series'
LOG = 'gnuhealth.imaging_orthanc.viewer_access'
PATIENT = 'gnuhealth.patient'
OPENERS = ('doctor', 'radiographer', 'imaging_admin')


@needs_python_plugin
class ViewerRPCTestCase(rpc.RPCTestCase):

    @classmethod
    def setUpClass(cls):
        cls.orthanc = start_viewer_orthanc(cls, 'health_orthanc viewer rpc')
        super().setUpClass()
        upload_files(cls.orthanc, factory.study(n_series=1, n_instances=1,
                patient_id='VIEWER-RPC'))
        admin = cls.sessions['imaging_admin']
        cls.patient = cls._create_patient('VIEWER-RPC')
        cls.server_id, = admin.create(SERVER, {'label': 'RPC PACS',
                'domain': cls.orthanc.url, 'user': cls.orthanc.user,
                'password': cls.orthanc.password, 'viewer_secret': SECRET})
        admin.button(SERVER, 'check_connection', [cls.server_id])
        admin.button(SERVER, 'full_sync', [cls.server_id])
        cls.study_id, = admin.search(STUDY,
            [('server', '=', cls.server_id)])

    @classmethod
    def _create_patient(cls, puid):
        admin = cls.sessions['admin']
        party, = admin.create_as_client('party.party', {'name': 'Viewer',
                'lastname': 'RPC', 'is_person': True, 'is_patient': True,
                'gender': 'f', 'ref': puid})
        patients = admin.search(PATIENT, [('party', '=', party)])
        if patients:
            return patients[0]
        patient, = admin.create_as_client(PATIENT, {'party': party})
        return patient

    def open(self, role, model=STUDY, ids=None):
        return self.sessions[role].button(model, 'open_webviewer',
            ids or [self.study_id])

    def test_secret_is_for_imaging_administrators_only(self):
        admin = self.sessions['imaging_admin']
        record, = admin.read(SERVER, [self.server_id],
            ['viewer_secret', 'viewer_tokens'])
        self.assertEqual(record['viewer_secret'], SECRET)
        self.assertTrue(record['viewer_tokens'])
        for role in ('doctor', 'radiographer', 'nobody'):
            session = self.sessions[role]
            session.failure('model.%s.read' % SERVER, [self.server_id],
                ['viewer_secret'])
            session.failure('model.%s.write' % SERVER, [self.server_id],
                {'viewer_secret': 'x' * 40})
        for role in ('doctor', 'radiographer'):
            record, = self.sessions[role].read(SERVER, [self.server_id],
                ['viewer_tokens', 'viewer_token_lifetime'])
            self.assertTrue(record['viewer_tokens'])

    def test_clinicians_open_viewers_with_a_token_of_their_own(self):
        for role in OPENERS:
            action = self.open(role)
            self.assertEqual(action['type'], 'ir.action.url')
            token, = parse_qs(urlsplit(action['url']).query)['token']
            self.assertEqual(viewer_token.verify(SECRET, token)['us'], role)
            with httpx.Client(base_url=self.orthanc.url,
                    timeout=30) as browser:
                self.assertEqual(browser.get(action['url']).status_code, 303)
                self.assertEqual(browser.get('/studies/%s' % self.study_orthanc_id()
                        ).status_code, 200)
        series_ids = self.sessions['doctor'].search(SERIES,
            [('study', '=', self.study_id)])
        self.assertEqual(self.open('doctor', SERIES, series_ids[:1])['type'],
            'ir.action.url')
        error = self.sessions['nobody'].failure(
            'model.%s.open_webviewer' % STUDY, [self.study_id])
        self.assertEqual(error.type, 'UserError')

    def study_orthanc_id(self):
        record, = self.sessions['imaging_admin'].read(STUDY,
            [self.study_id], ['orthanc_UID'])
        return record['orthanc_UID']

    def test_openings_are_logged_and_read_by_imaging_administrators(self):
        self.open('doctor')
        admin = self.sessions['imaging_admin']
        doctor_id = self.sessions['doctor'].user_id
        study, = admin.read(STUDY, [self.study_id], ['viewer_accesses',
                'patient'])
        entries = admin.read(LOG, study['viewer_accesses'],
            ['user', 'viewer', 'patient', 'study', 'opened_at'])
        self.assertIn((doctor_id, 'webviewer', self.patient, self.study_id),
            [(e['user'], e['viewer'], e['patient'], e['study'])
                for e in entries])
        patient, = admin.read(PATIENT, [self.patient],
            ['orthanc_viewer_accesses'])
        self.assertTrue(set(study['viewer_accesses'])
            <= set(patient['orthanc_viewer_accesses']))

        entry = study['viewer_accesses'][0]
        for role in ('doctor', 'radiographer', 'nobody'):
            session = self.sessions[role]
            session.failure('model.%s.read' % LOG, [entry], ['user'])
            session.failure('model.%s.read' % STUDY, [self.study_id],
                ['viewer_accesses'])
        for role in ('doctor', 'imaging_admin'):
            session = self.sessions[role]
            session.failure('model.%s.write' % LOG, [entry],
                {'viewer': 'ohif'})
            session.failure('model.%s.delete' % LOG, [entry])
            session.failure('model.%s.create' % LOG, [{
                        'user': doctor_id, 'viewer': 'ohif',
                        'study_instance_UID': '1.2.3',
                        'opened_at': '2020-01-01 00:00:00'}])
