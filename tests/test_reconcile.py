# SPDX-License-Identifier: GPL-3.0-or-later
"""Import reconciliation (issue 14, items 4 and 5) as the clients call it:
the streaming route and the JSON-RPC upload with a patient chosen, and
*Reconcile with patient* over JSON-RPC by each role.  Real Orthanc, real
trytond; what Orthanc stores is read back through its REST API.
"""
import io
import unittest
import uuid

import httpx
from pydicom import dcmread

from . import rpc
from . import dicom_factory as dicom
from .orthanc_server import orthanc_available

UPLOAD = 'gnuhealth.imaging_orthanc.upload_image_data'
RECONCILE = 'gnuhealth.imaging_orthanc.study.reconcile'
STUDY = 'gnuhealth.imaging_orthanc.study'
SERIES = 'gnuhealth.imaging_orthanc.study_series'
INSTANCE = 'gnuhealth.imaging_orthanc.series_instances'
PREFIX = b'HOSTREAM:'
PUID = 'PUID-RECON-1'


@unittest.skipUnless(orthanc_available(), 'the Orthanc executable is not '
    'installed')
class ReconcileTest(rpc.RPCTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server_id = cls.start_orthanc()
        cls.route = cls.server.rpc_url + 'health_orthanc/upload'
        cls.patient_id = cls.new_patient('Ada', 'Núñez', PUID, 'f',
            '1961-04-03')
        cls.other_id = cls.new_patient('Bob', 'Other', 'PUID-RECON-2', 'm',
            '1950-01-01')

    @classmethod
    def new_patient(cls, name, lastname, puid, gender, dob):
        admin = cls.sessions['admin']
        party, = admin.create_as_client('party.party', {
                'name': name, 'lastname': lastname, 'is_person': True,
                'is_patient': True, 'gender': gender, 'ref': puid,
                'dob': dob})
        ids = admin.search('gnuhealth.patient', [('party', '=', party)])
        return ids[0] if ids else admin.create('gnuhealth.patient',
            {'party': party})[0]

    def tearDown(self):
        for instance in self.orthanc_get('/instances'):
            httpx.delete(self.orthanc.url + '/instances/' + instance,
                auth=self.orthanc.auth)

    def orthanc_get(self, path):
        return httpx.get(self.orthanc.url + path,
            auth=self.orthanc.auth).json()

    def stored_datasets(self):
        "Every instance Orthanc stores, read back as a pydicom dataset."
        return [dcmread(io.BytesIO(httpx.get(
                        self.orthanc.url + '/instances/%s/file' % i,
                        auth=self.orthanc.auth).content))
            for i in self.orthanc_get('/instances')]

    def orthanc_patient_ids(self):
        return sorted(self.orthanc_get('/patients/%s' % p)['MainDicomTags']
            ['PatientID'] for p in self.orthanc_get('/patients'))

    def post(self, role, name, data, reference, patient=None):
        params = {'server': self.server_id, 'upload': reference,
            'name': name}
        if patient:
            params['patient'] = patient
        return httpx.post(self.route, content=data, params=params,
            headers={'Content-Type': 'application/octet-stream',
                'Authorization': self.sessions[role].authorization},
            timeout=300)

    def stream(self, role, files, patient=None):
        reference = uuid.uuid4().hex
        outcomes = []
        for name, data in files:
            answer = self.post(role, name, data, reference, patient)
            self.assertEqual(answer.status_code, 200, answer.text)
            outcomes.extend(answer.json()['files'])
        return reference, outcomes

    def upload_wizard(self, role, data, patient=None, names=None):
        values = {'server': self.server_id, 'data_to_upload': data,
            'file_names': names}
        if patient:
            values['patient'] = patient
        with self.sessions[role].wizard(UPLOAD) as wizard:
            return wizard.execute('upload', {'start': values})['view'][
                'defaults']

    def assert_reconciled(self, datasets, originals):
        "Each object has Ada's identity and keeps its original one."
        by_uid = {o.SOPInstanceUID: o for o in originals}
        self.assertEqual(sorted(d.SOPInstanceUID for d in datasets),
            sorted(by_uid))
        for ds in datasets:
            original = by_uid[ds.SOPInstanceUID]
            self.assertEqual(ds.PatientID, PUID)
            self.assertEqual(str(ds.PatientName), 'Núñez^Ada')
            self.assertEqual((ds.PatientBirthDate, ds.PatientSex),
                ('19610403', 'F'))
            self.assertEqual(ds.StudyInstanceUID, original.StudyInstanceUID)
            self.assertEqual(ds.SeriesInstanceUID,
                original.SeriesInstanceUID)
            self.assertIn(original.PatientID,
                [i.PatientID for i in ds.OtherPatientIDsSequence])
            modified = ds.OriginalAttributesSequence[-1]
            self.assertEqual(modified.ReasonForTheAttributeModification,
                'COERCE')
            kept = modified.ModifiedAttributesSequence[0]
            self.assertEqual((kept.PatientID, str(kept.PatientName)),
                (original.PatientID, str(original.PatientName)))
            self.assertEqual(ds.PixelData, original.PixelData)

    # --- item 4: while streaming ----------------------------------------
    def test_streamed_cd_with_patient(self):
        "Every image under Ada's PUID and name; nothing under the other."
        images = dicom.study(n_series=2, n_instances=3, patient_id='FOREIGN7',
            patient_name='STRANGER^JO')
        reference, outcomes = self.stream('radiographer',
            dicom.patient_cd(images), patient=self.patient_id)
        self.assertEqual(self.orthanc_patient_ids(), [PUID])
        self.assert_reconciled(self.stored_datasets(),
            [dcmread(io.BytesIO(i)) for i in images])
        skipped = [o['name'] for o in outcomes if o['status'] == 'Skipped']
        self.assertEqual(sorted(skipped), ['AUTORUN.INF', 'DICOMDIR',
                'README.TXT', 'VIEWER/viewer.exe'])

        result = self.upload_wizard('radiographer',
            PREFIX + reference.encode(), patient=self.patient_id)
        study, = result['studies']
        linked, = self.sessions['radiographer'].read(STUDY, [study],
            ['patient', 'patient_id', 'link_review'])
        self.assertEqual((linked['patient'], linked['patient_id'],
                linked['link_review']), (self.patient_id, PUID, None))

    def test_streamed_zip_entries_named_and_reconciled(self):
        images = dicom.study(n_series=1, n_instances=2, patient_id='ZIP9')
        archive = dicom.zip_of(
            [('IMAGES/%d' % i, data) for i, data in enumerate(images)]
            + [('autorun.inf', b'[autorun]\r\n'),
                ('DICOMDIR', dicom.dicomdir())])
        _, outcomes = self.stream('radiographer',
            [('referral.zip', archive)], patient=self.patient_id)
        self.assertEqual(sorted((o['name'], o['status']) for o in outcomes),
            [('referral.zip/DICOMDIR', 'Skipped'),
                ('referral.zip/IMAGES/0', 'Success'),
                ('referral.zip/IMAGES/1', 'Success'),
                ('referral.zip/autorun.inf', 'Skipped')])
        self.assertEqual(self.orthanc_patient_ids(), [PUID])

    def test_streamed_for_another_patient_is_not_linked(self):
        "The form's patient changed after sending: refused, not linked."
        reference, _ = self.stream('radiographer',
            [('ct.dcm', dicom.image(patient_id='X1'))],
            patient=self.patient_id)
        with self.assertRaises(rpc.RPCError) as caught:
            self.upload_wizard('radiographer', PREFIX + reference.encode(),
                patient=self.other_id)
        self.assertIn('PUID-RECON-2', caught.exception.message)

    def test_route_refuses_an_unknown_patient(self):
        answer = self.post('radiographer', 'ct.dcm', dicom.image(),
            uuid.uuid4().hex, patient=999999)
        self.assertEqual(answer.status_code, 404)
        self.assertEqual(self.orthanc_get('/instances'), [])

    def test_json_rpc_path_with_patient(self):
        "The GTK client's framed value: reconciled, ZIP entries named."
        images = dicom.study(n_series=1, n_instances=2, patient_id='GTK3')
        archive = dicom.zip_of([('a.dcm', images[0]),
                ('viewer.exe', b'MZ' + bytes(100))])
        result = self.upload_wizard('radiographer',
            dicom.frame_mult([images[1], archive]), patient=self.patient_id)
        self.assertEqual((result['stored'], result['rejected']), (2, 0))
        self.assertIn('file #2/viewer.exe', result['summary'])
        self.assertEqual(self.orthanc_patient_ids(), [PUID])
        self.assert_reconciled(self.stored_datasets(),
            [dcmread(io.BytesIO(i)) for i in images])

    def test_without_patient_kept_and_flagged(self):
        "No patient chosen: the identity stays, the study is to review."
        result = self.upload_wizard('radiographer',
            dicom.image(patient_id='NOBODY8'), names='x.dcm')
        study, = result['studies']
        flagged, = self.sessions['radiographer'].read(STUDY, [study],
            ['patient', 'link_review'])
        self.assertEqual((flagged['patient'], flagged['link_review']),
            (None, 'outside'))
        self.assertEqual(self.orthanc_patient_ids(), ['NOBODY8'])

    # --- item 5: reconcile later ----------------------------------------
    def uploaded_study(self, **kwargs):
        images = dicom.study(n_series=2, n_instances=2, **kwargs)
        result = self.upload_wizard('radiographer', dicom.frame_mult(images))
        study, = result['studies']
        return study, images

    def reconcile(self, role, study, patient, anyway=False):
        with self.sessions[role].wizard(RECONCILE, model=STUDY,
                ids=[study]) as wizard:
            answer = wizard.execute('reconcile',
                {'start': {'patient': patient, 'studies': [study]}})
            if anyway:
                self.assertEqual(answer['view']['state'], 'confirm')
                answer = wizard.execute('reconcile_anyway',
                    {'start': {'patient': patient, 'studies': [study]}})
            return answer

    def test_reconcile_later(self):
        "Moves to Ada in Orthanc, same UIDs, same record, notes kept."
        study, images = self.uploaded_study(patient_id='LATER1',
            patient_name='NUNEZ^ADA', birth_date='19610403', sex='F')
        radiographer = self.sessions['radiographer']
        radiographer.write(STUDY, [study], {'notes': 'Outside CT, read.'})
        before, = radiographer.read(STUDY, [study], ['orthanc_UID'])

        self.reconcile('imaging_admin', study, self.patient_id)

        self.assertEqual(self.orthanc_patient_ids(), [PUID])
        self.assert_reconciled(self.stored_datasets(),
            [dcmread(io.BytesIO(i)) for i in images])
        after, = radiographer.read(STUDY, [study], ['orthanc_UID', 'notes',
                'patient', 'patient_id', 'link_review', 'manual_link'])
        self.assertNotEqual(after['orthanc_UID'], before['orthanc_UID'])
        self.assertEqual(self.orthanc_get('/studies'),
            [after['orthanc_UID']])
        self.assertEqual((after['notes'], after['patient'],
                after['patient_id'], after['link_review'],
                after['manual_link']),
            ('Outside CT, read.', self.patient_id, PUID, None, True))
        instances = radiographer.search_read(INSTANCE,
            [('series.study', '=', study)], ['orthanc_UID'])
        self.assertEqual(sorted(i['orthanc_UID'] for i in instances),
            sorted(self.orthanc_get('/instances')))
        series = radiographer.search_read(SERIES, [('study', '=', study)],
            ['orthanc_UID'])
        self.assertEqual(sorted(s['orthanc_UID'] for s in series),
            sorted(self.orthanc_get('/series')))
        logs = self.sessions['imaging_admin'].search_read('ir.model.log',
            [('resource', '=', '%s,%s' % (STUDY, study))],
            ['user', 'target'])
        self.assertTrue(any('reconciled with' in (log['target'] or '')
                for log in logs), logs)

        # A sync afterwards neither duplicates nor flags it.
        self.sessions['imaging_admin'].button('gnuhealth.orthanc.config',
            'full_sync', [self.server_id])
        uid = dcmread(io.BytesIO(images[0])).StudyInstanceUID
        self.assertEqual(radiographer.search(STUDY,
                [('study_instance_UID', '=', uid)]), [study])
        kept, = radiographer.read(STUDY, [study], ['missing_on_orthanc',
                'patient'])
        self.assertEqual((kept['missing_on_orthanc'], kept['patient']),
            (False, self.patient_id))

    def test_reconcile_differences_need_confirmation(self):
        study, _ = self.uploaded_study(patient_id='DIFF1',
            patient_name='SOMEONE^ELSE', birth_date='19990101', sex='M')
        self.reconcile('imaging_admin', study, self.patient_id, anyway=True)
        self.assertEqual(self.orthanc_patient_ids(), [PUID])
        logs = self.sessions['imaging_admin'].search_read('ir.model.log',
            [('resource', '=', '%s,%s' % (STUDY, study))], ['target'])
        self.assertTrue(any('birth date 1999-01-01' in (log['target'] or '')
                for log in logs), logs)

    def test_reconcile_roles_and_linked_study(self):
        study, _ = self.uploaded_study(patient_id='ROLE1')
        for role in ('radiographer', 'doctor', 'nobody'):
            with self.subTest(role=role):
                with self.assertRaises(rpc.RPCError):
                    self.reconcile(role, study, self.patient_id)
        self.assertEqual(self.orthanc_patient_ids(), ['ROLE1'])
        # Linked by hand and not flagged: not rewritten.
        self.sessions['radiographer'].run_wizard(
            'gnuhealth.imaging_orthanc.study.link_patient',
            [('link_anyway', {'start': {'patient': self.other_id,
                            'imaging_test': None, 'studies': [study]}})],
            model=STUDY, ids=[study])
        with self.assertRaises(rpc.RPCError) as caught:
            self.reconcile('imaging_admin', study, self.patient_id)
        self.assertIn('not reconciled', caught.exception.message)
        self.assertEqual(self.orthanc_patient_ids(), ['ROLE1'])


if __name__ == '__main__':
    unittest.main()
