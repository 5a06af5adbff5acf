# SPDX-License-Identifier: GPL-3.0-or-later
"""Bomb uploads sent as the clients send them: JSON-RPC to a running
trytond (tests/rpc.py, the suite's database backend), the upload wizard's
'upload' transition run by a radiographer.

Each bomb is refused with one translated error, the peak resident memory
of the trytond process grows by less than a fixed bound (measured from
/proc/<pid>/status after resetting its high-water mark), Orthanc's memory
does not grow and nothing is stored in Orthanc.
"""
import unittest

import httpx

from . import bombs, rpc
from . import dicom_factory as dicom
from .orthanc_server import orthanc_available

# What trytond may grow by for one upload: the JSON-RPC request (the
# base64 text, its decoded bytes, the wizard's copy) is a few times the
# upload, at most 14 MB here; the bombs inflate to 1 to 10 GB.
TRYTOND_BOUND = 150_000_000
ORTHANC_BOUND = 10_000_000
WIZARD = 'gnuhealth.imaging_orthanc.upload_image_data'


@unittest.skipUnless(orthanc_available(), 'the Orthanc executable is not '
    'installed')
class UploadBombsOverRpcTest(rpc.RPCTestCase):
    roles = {key: rpc.ROLES[key] for key in ('imaging_admin', 'radiographer')}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server_id = cls.start_orthanc()

    def upload(self, data, names):
        """Run the wizard's upload over JSON-RPC as a radiographer; (the
        RPCError or None, trytond peak growth, Orthanc peak growth)."""
        radiographer = self.sessions['radiographer']
        values = {'start': {'server': self.server_id,
                'data_to_upload': data, 'file_names': names}}
        error = None
        with radiographer.wizard(WIZARD) as wizard:
            with bombs.PeakGrowth(self.orthanc.pid) as orthanc_growth:
                with bombs.PeakGrowth(self.server.process.pid) as growth:
                    try:
                        wizard.execute('upload', values)
                    except rpc.RPCError as exc:
                        error = exc
        return error, growth.bytes, orthanc_growth.bytes

    def orthanc_instances(self):
        return httpx.get(self.orthanc.url + '/instances',
            auth=self.orthanc.auth).json()

    def assert_refused(self, data, names, message):
        error, growth, orthanc_growth = self.upload(data, names)
        self.assertIsNotNone(error, 'the upload was not refused')
        self.assertEqual(error.type, 'UserError')
        text = error.message
        self.assertIn(message, text)
        self.assertIn('Nothing was sent to Orthanc', text)
        self.assertLess(growth, TRYTOND_BOUND)
        self.assertLess(orthanc_growth, ORTHANC_BOUND)
        self.assertEqual(self.orthanc_instances(), [])
        return text

    def test_gzip_of_ten_gigabytes(self):
        bomb = bombs.gzip_of_zeros(640 * bombs.BLOCK)  # 10.7 GB in 10 MB
        text = self.assert_refused(bomb, 'zeros.dcm.gz',
            'the gzip file "zeros.dcm.gz" inflates beyond 512 MB')
        self.assertIn('max_inflated_file', text)

    def test_gzip_of_one_gigabyte(self):
        bomb = bombs.gzip_of_zeros(64 * bombs.BLOCK)  # 1.07 GB in 1 MB
        self.assert_refused(dicom.frame_mult([dicom.image(), bomb]),
            'ct.dcm\nzeros.dcm.gz',
            'the gzip file "zeros.dcm.gz" inflates beyond 512 MB')

    def test_zip_bomb(self):
        bomb = bombs.zip_of_zeros(179 * bombs.BLOCK)  # 3 GB in 3 MB
        self.assert_refused(bomb, 'study.zip', 'the ZIP archive "study.zip" '
            'holds a file of 3003.1 MB once uncompressed, more than 512 MB')

    def test_million_empty_frames(self):
        self.assert_refused(bombs.zero_length_frames(1_000_000), None,
            'file "file #1" is empty')

    def test_upload_still_works(self):
        "The same path stores a real file (and its study is synchronised)."
        error, _, _ = self.upload(dicom.image(), 'ct.dcm')
        self.assertIsNone(error)
        stored = self.orthanc_instances()
        self.assertEqual(len(stored), 1)
        httpx.delete(self.orthanc.url + '/instances/' + stored[0],
            auth=self.orthanc.auth)


if __name__ == '__main__':
    unittest.main()
