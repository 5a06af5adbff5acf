# SPDX-License-Identifier: GPL-3.0-or-later
"""The streaming upload route (stream.py) as SAO's widget calls it: one
HTTP POST per file to a running trytond with a user's session, then the
upload wizard over JSON-RPC with the upload reference in the field.
Real Orthanc, real trytond on the suite's backend.
"""
import socket
import struct
import time
import unittest
import uuid

import httpx

from . import bombs, rpc
from . import dicom_factory as dicom
from .orthanc_server import orthanc_available

WIZARD = 'gnuhealth.imaging_orthanc.upload_image_data'
STUDY = 'gnuhealth.imaging_orthanc.study'
PREFIX = b'HOSTREAM:'
# trytond may grow by this much beyond the largest file while streaming
# (the target: 64 MB + 2 x the largest file).
FIXED_GROWTH = 64_000_000


def wait_until(condition, seconds=60):
    "condition()'s first true value, polled; AssertionError after seconds."
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError('still false after %d s' % seconds)


def large_image(size):
    """A DICOM image followed by a private element of size bytes (sent
    through as any other element)."""
    creator = b'HO TEST '
    return (dicom.image(patient_id='BIG1', patient_name='LARGE^FILE')
        + struct.pack('<HH2sH', 0x7FE1, 0x0010, b'LO', len(creator))
        + creator
        + struct.pack('<HH2sHI', 0x7FE1, 0x1010, b'OB', 0, size)
        + bytes(size))


@unittest.skipUnless(orthanc_available(), 'the Orthanc executable is not '
    'installed')
class StreamedUploadTest(rpc.RPCTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server_id = cls.start_orthanc()
        cls.route = cls.server.rpc_url + 'health_orthanc/upload'
        cls.patient_id = cls.new_patient()

    @classmethod
    def new_patient(cls):
        admin = cls.sessions['admin']
        party, = admin.create_as_client('party.party', {
                'name': 'Ada', 'lastname': 'Outside', 'is_person': True,
                'is_patient': True, 'gender': 'f', 'ref': 'PUID-STREAM-1'})
        ids = admin.search('gnuhealth.patient', [('party', '=', party)])
        return ids[0] if ids else admin.create('gnuhealth.patient',
            {'party': party})[0]

    def tearDown(self):
        for instance in self.orthanc_instances():
            httpx.delete(self.orthanc.url + '/instances/' + instance,
                auth=self.orthanc.auth)

    def orthanc_instances(self):
        return httpx.get(self.orthanc.url + '/instances',
            auth=self.orthanc.auth).json()

    def post(self, role, name, data, reference, server=None, patient=None):
        "POST one file as the widget does; the httpx response."
        headers = {'Content-Type': 'application/octet-stream'}
        if role:
            headers['Authorization'] = self.sessions[role].authorization
        params = {'server': server or self.server_id, 'upload': reference,
            'name': name}
        if patient:
            params['patient'] = patient
        return httpx.post(self.route, content=data, headers=headers,
            params=params, timeout=300)

    def post_all(self, role, files, patient=None):
        "Post (name, bytes) files under a new reference; the reference."
        reference = uuid.uuid4().hex
        for name, data in files:
            answer = self.post(role, name, data, reference, patient=patient)
            self.assertEqual(answer.status_code, 200, answer.text)
        return reference

    def run_upload_wizard(self, role, reference, patient=None):
        "The wizard's result after an upload streamed under reference."
        values = {'server': self.server_id,
            'data_to_upload': PREFIX + reference.encode(),
            'file_names': None}
        if patient:
            values['patient'] = patient
        with self.sessions[role].wizard(WIZARD) as wizard:
            answer = wizard.execute('upload', {'start': values})
        return answer['view']['defaults']

    def test_patient_cd(self):
        "A CD: every image stored, the rest named as skipped, linked."
        images = dicom.study(n_series=2, n_instances=3, patient_id='FOREIGN7',
            patient_name='STRANGER^JO')
        reference = self.post_all('radiographer', dicom.patient_cd(images),
            patient=self.patient_id)
        self.assertEqual(len(self.orthanc_instances()), len(images))

        result = self.run_upload_wizard('radiographer', reference,
            patient=self.patient_id)
        self.assertEqual(result['stored'], len(images))
        self.assertEqual(result['rejected'], 0)
        summary = result['summary']
        self.assertIn('4 file(s) skipped, not DICOM images', summary)
        for name in ('DICOMDIR', 'VIEWER/viewer.exe', 'AUTORUN.INF',
                'README.TXT'):
            self.assertIn(name, summary)
        study, = result['studies']
        linked, = self.sessions['radiographer'].read(STUDY, [study],
            ['patient', 'manual_link'])
        self.assertEqual(linked['patient'], self.patient_id)

    def test_zip_is_spooled_and_checked(self):
        images = dicom.study(n_series=1, n_instances=4)
        archive = dicom.zip_of(
            [('IMAGES/%d' % i, data) for i, data in enumerate(images)]
            + [('autorun.inf', b'[autorun]\r\n')])
        answer = self.post('radiographer', 'referral.zip', archive,
            uuid.uuid4().hex)
        self.assertEqual(answer.status_code, 200, answer.text)
        statuses = [f['status'] for f in answer.json()['files']]
        self.assertEqual(statuses.count('Success'), 4)
        self.assertEqual(len(self.orthanc_instances()), 4)

    def test_roles(self):
        "Only the roles that may upload get through; nothing is stored."
        image = dicom.image()
        for role, status in (('doctor', 403), ('nobody', 403), (None, 401)):
            with self.subTest(role=role):
                answer = self.post(role, 'ct.dcm', image, uuid.uuid4().hex)
                self.assertEqual(answer.status_code, status)
        self.assertEqual(self.orthanc_instances(), [])
        answer = self.post('imaging_admin', 'ct.dcm', image,
            uuid.uuid4().hex)
        self.assertEqual(answer.status_code, 200, answer.text)

    def post_batch(self, files, sizes=None):
        "Several (name, bytes) files in one request, as the widget sends."
        return httpx.post(self.route, content=b''.join(d for _, d in files),
            headers={'Content-Type': 'application/octet-stream',
                'Authorization': self.sessions['radiographer'].authorization},
            params={'server': self.server_id, 'upload': uuid.uuid4().hex,
                'name': [n for n, _ in files],
                'size': sizes or [len(d) for _, d in files]}, timeout=300)

    def test_files_in_one_request(self):
        "A batch: each file sent or skipped on its own, in order."
        images = dicom.study(n_series=1, n_instances=2)
        answer = self.post_batch([('IMAGES/1', images[0]),
                ('AUTORUN.INF', b'[autorun]\r\n'), ('IMAGES/2', images[1])])
        self.assertEqual(answer.status_code, 200, answer.text)
        self.assertEqual([(f['name'], f['status'])
                for f in answer.json()['files']],
            [('IMAGES/1', 'Success'), ('AUTORUN.INF', 'Skipped'),
                ('IMAGES/2', 'Success')])
        self.assertEqual(len(self.orthanc_instances()), 2)
        # Sizes that do not add up to the body: nothing read, nothing sent.
        answer = self.post_batch([('a', dicom.image()), ('b', b'x')],
            sizes=[10, 10])
        self.assertEqual(answer.status_code, 400)
        self.assertEqual(len(self.orthanc_instances()), 2)

    def send_two_files_cut_in_the_second(self, reference):
        """POST two files on a raw socket, the body cut in the middle of
        the second: (the socket, still open, the two files)."""
        first, second = dicom.study(n_series=1, n_instances=2)
        url = httpx.URL(self.route, params={'server': self.server_id,
                'upload': reference, 'name': ['1.dcm', '2.dcm'],
                'size': [len(first), len(second)]})
        head = ('POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n'
            'Content-Type: application/octet-stream\r\n'
            'Content-Length: %d\r\n\r\n' % (url.raw_path.decode(),
                url.netloc.decode(),
                self.sessions['radiographer'].authorization,
                len(first) + len(second))).encode()
        sock = socket.create_connection((url.host, url.port), timeout=60)
        sock.sendall(head + first + second[:len(second) // 2])
        return sock

    def test_client_leaves_during_a_file(self):
        """A body that ends in its second file: the first is stored and
        its outcome kept for the wizard, the second is not stored."""
        reference = uuid.uuid4().hex
        with self.send_two_files_cut_in_the_second(reference) as sock:
            sock.shutdown(socket.SHUT_WR)
            answer = b''
            while piece := sock.recv(65536):
                answer += piece
        self.assertTrue(answer.startswith(b'HTTP/1.1 400'), answer[:100])
        self.assertEqual(len(self.orthanc_instances()), 1)
        result = self.run_upload_wizard('radiographer', reference)
        self.assertEqual(result['stored'], 1)

    def test_client_connection_reset_during_a_file(self):
        """A client whose connection is reset in the middle of a file: the
        route does not take it for Orthanc failing (no "upload stopped"
        warning), the first file's outcome is kept."""
        reference = uuid.uuid4().hex
        with self.send_two_files_cut_in_the_second(reference) as sock:
            wait_until(lambda: len(self.orthanc_instances()) == 1)
            # Closed with an RST instead of a FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                struct.pack('ii', 1, 0))
        result = wait_until(lambda: self.wizard_or_none(reference))
        self.assertEqual(result['stored'], 1)
        self.assertEqual(len(self.orthanc_instances()), 1)
        with open(self.server.log, encoding='utf-8',
                errors='replace') as log:
            self.assertNotIn('stopped at 2.dcm', log.read())

    def wizard_or_none(self, reference):
        "The wizard's result, None while the route has not recorded."
        try:
            return self.run_upload_wizard('radiographer', reference)
        except rpc.RPCError:
            return None

    def test_ended_session_refused(self):
        "A session ended by logout is refused from the next file on."
        session = self.server.login('radiographer',
            self.server.passwords['radiographer'])
        self.sessions['ended'] = session
        try:
            reference = uuid.uuid4().hex
            answer = self.post('ended', 'a.dcm', dicom.image(), reference)
            self.assertEqual(answer.status_code, 200, answer.text)
            session.call('common.db.logout', context=False)
            answer = self.post('ended', 'b.dcm', dicom.image(), reference)
            self.assertEqual(answer.status_code, 401)
        finally:
            del self.sessions['ended']
        self.assertEqual(len(self.orthanc_instances()), 1)

    def test_outcomes_are_the_uploaders(self):
        "Another user cannot read the outcome of someone else's upload."
        reference = self.post_all('radiographer',
            [('ct.dcm', dicom.image())])
        with self.assertRaises(rpc.RPCError) as caught:
            self.run_upload_wizard('imaging_admin', reference)
        self.assertIn('No file of this upload reached GNU Health',
            caught.exception.message)
        error = self.sessions['radiographer'].failure(
            'model.gnuhealth.imaging_orthanc.upload_file.search', [],
            0, None, None)
        # Refused as trytond refuses a model without access rights.
        self.assertIn(error.type, ('UserError', 'HTTP 403'))

    def test_file_never_held_whole(self):
        "trytond grows by far less than the file while forwarding it."
        size = 200_000_000
        data = large_image(size)
        with bombs.PeakGrowth(self.server.process.pid) as growth:
            answer = self.post('radiographer', 'large.dcm', data,
                uuid.uuid4().hex)
        self.assertEqual(answer.status_code, 200, answer.text)
        self.assertEqual(answer.json()['files'][0]['status'], 'Success')
        self.assertLess(growth.bytes, FIXED_GROWTH)


if __name__ == '__main__':
    unittest.main()
