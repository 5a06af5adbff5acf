# SPDX-License-Identifier: GPL-3.0-or-later
"""The imaging report to the PACS over JSON-RPC (report_pacs.py).

One trytond with a user per role and a real Orthanc: who may press *Send
report to PACS*, the report stored after commit as a doctor saves the
findings, issued twice leaves one, and nobody writes the report's state.
The scenario (scenario_report_pacs.rst) covers the rest.
"""
import subprocess
import unittest

import httpx

from . import dicom_factory as dicom
from . import rpc
from . import test_security
from .orthanc_server import OrthancServer, orthanc_available, upload_files

RESULT = 'gnuhealth.imaging.test.result'
STUDY = 'gnuhealth.imaging_orthanc.study'
ADMIN, RADIOGRAPHER, DOCTOR, NOBODY = (
    'imaging_admin', 'radiographer', 'doctor', 'nobody')
BUTTON = 'send_report_to_pacs'


def pdf_text(pdf):
    return subprocess.run(['pdftotext', '-layout', '-', '-'], input=pdf,
        capture_output=True, check=True).stdout.decode()


@unittest.skipUnless(orthanc_available(), "Debian's orthanc is not installed")
class ReportToPACSTestCase(rpc.RPCTestCase):
    "The report to the PACS, as the clients call it"

    clinical_records = test_security.SecurityTestCase.__dict__[
        'clinical_records']
    one_of = test_security.SecurityTestCase.__dict__['one_of']

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.orthanc = OrthancServer(name='health_orthanc report').start()
        cls.addClassCleanup(cls.orthanc.stop)
        cls.admin = cls.sessions['admin']
        cls.puid = 'REPORT-PAT-1'
        cls.give_users_a_company()
        upload_files(cls.orthanc, dicom.study(n_series=1, n_instances=1,
                patient_id=cls.puid, study_description='REPORT CT'))
        imaging_admin = cls.sessions[ADMIN]
        cls.server_id, = imaging_admin.create('gnuhealth.orthanc.config', {
                'label': 'Report PACS', 'domain': cls.orthanc.url,
                'user': cls.orthanc.user, 'password': cls.orthanc.password})
        imaging_admin.button('gnuhealth.orthanc.config', 'check_connection',
            [cls.server_id])
        cls.sessions[RADIOGRAPHER].button('gnuhealth.orthanc.config',
            'sync_changes', [cls.server_id])
        cls.study_id, = cls.admin.search(STUDY, [
                ('description', '=', 'REPORT CT')])
        cls.patient_id, cls.result_id = cls.clinical_records()
        cls.link_study()

    @classmethod
    def give_users_a_company(cls):
        "health_imaging's report prints the user's company footer."
        admin = cls.admin
        currency, = admin.create('currency.currency', {'name': 'Euro',
                'code': 'EUR', 'symbol': '€'})
        party, = admin.create_as_client('party.party', {
                'name': 'Report Hospital', 'is_patient': False})
        company, = admin.create('company.company', {'party': party,
                'currency': currency})
        users = admin.search('res.user', [('login', 'in', list(rpc.ROLES))])
        admin.write('res.user', users, {
                'companies': [('add', [company])], 'company': company})

    @classmethod
    def link_study(cls):
        "A radiographer links the study to the patient and the result."
        with cls.sessions[RADIOGRAPHER].wizard(test_security.LINK,
                model=STUDY, ids=[cls.study_id]) as wizard:
            wizard.execute('start')
            start = {'start': {'patient': cls.patient_id,
                    'imaging_test': cls.result_id}}
            answer = wizard.execute('link', start)
            if answer.get('view', {}).get('state') == 'confirm':
                wizard.execute('link_anyway', start)

    def report(self):
        record, = self.admin.read(RESULT, [self.result_id], [
                'number', 'pacs_report_state', 'pacs_report_message',
                'pacs_report_series', 'pacs_report_instance'])
        return record

    def orthanc_get(self, path):
        return httpx.get(self.orthanc.url + path, auth=self.orthanc.auth,
            timeout=30)

    def report_series_on_orthanc(self):
        study_uid, = self.admin.read(STUDY, [self.study_id],
            ['orthanc_UID'])
        series = self.orthanc_get(
            '/studies/%s/series' % study_uid['orthanc_UID']).json()
        return [s['ID'] for s in series
            if s['MainDicomTags'].get('Modality') == 'DOC']

    def test_1_who_may_send_the_report(self):
        "The button: refused to nobody, and to who may not edit results"
        refused = {}
        for role in (NOBODY, RADIOGRAPHER, ADMIN):
            error = self.sessions[role].failure(
                'model.%s.%s' % (RESULT, BUTTON), [self.result_id])
            refused[role] = error.message
        self.assertTrue(test_security.is_refusal(
                rpc.RPCError('UserError', refused[NOBODY])), refused)
        # Only in the Orthanc groups, they may not even read GNU Health's
        # results (with Health Imaging too, they could send it).
        for role in (RADIOGRAPHER, ADMIN):
            self.assertTrue('may not edit' in refused[role]
                or 'not allowed' in refused[role], refused[role])
        self.assertIsNone(self.report()['pacs_report_state'])
        self.assertEqual(self.report_series_on_orthanc(), [])

        # A doctor may: the report is in the study when the call returns
        # (no worker: trytond runs the task after commit).
        self.sessions[DOCTOR].button(RESULT, BUTTON, [self.result_id])
        report = self.report()
        self.assertEqual(report['pacs_report_state'], 'stored',
            report['pacs_report_message'])
        self.assertEqual(self.report_series_on_orthanc(),
            [report['pacs_report_series']])
        instance = report['pacs_report_instance']
        text = pdf_text(self.orthanc_get('/instances/%s/pdf' % instance
                ).content)
        self.assertIn(report['number'], text)
        patient = self.orthanc_get('/instances/%s/patient' % instance).json()
        self.assertEqual(patient['MainDicomTags']['PatientID'], self.puid)

    def test_2_findings_saved_by_a_doctor_replace_the_report(self):
        "Saving findings re-issues the report; one report is left"
        doctor = self.sessions[DOCTOR]
        for findings in ['Normal study.', 'Normal study. Addendum: none.']:
            doctor.write(RESULT, [self.result_id], {'comment': findings})
            report = self.report()
            self.assertEqual(report['pacs_report_state'], 'stored',
                report['pacs_report_message'])
            self.assertEqual(self.report_series_on_orthanc(),
                [report['pacs_report_series']])
            text = pdf_text(self.orthanc_get('/instances/%s/pdf'
                    % report['pacs_report_instance']).content)
            self.assertIn(findings, ' '.join(text.split()))

    def test_3_report_state_is_the_systems(self):
        "Nobody writes the report's state over RPC"
        for role in (DOCTOR, 'admin'):
            error = self.sessions[role].failure('model.%s.write' % RESULT,
                [self.result_id], {'pacs_report_state': 'stored'})
            self.assertIn('GNU Health only', error.message)
