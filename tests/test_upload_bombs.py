# SPDX-License-Identifier: GPL-3.0-or-later
"""Bomb uploads sent as the clients send them: JSON-RPC to a running
trytond, the upload wizard's 'upload' transition.

Each bomb is refused with one translated error, the peak resident memory
of the trytond process grows by less than a fixed bound (measured from
/proc/<pid>/status after resetting its high-water mark), Orthanc's memory
does not grow and nothing is stored in Orthanc.

The trytond database is a SQLite file, whatever backend the suite runs on:
what is measured is memory, not SQL.  It is made once per state of the
module's sources (build/bombs-db) and copied for each run.
"""
import base64
import json
import os
import shutil
import tempfile
import unittest
import urllib.request

import httpx

from . import bombs, stack
from . import dicom_factory as dicom
from .orthanc_server import OrthancServer, orthanc_available
from .run_suite import source_hash

DATABASE = 'bombs'
PASSWORD = 'bombs-admin-password'
CACHE = os.path.join(stack.ROOT, 'build', 'bombs-db')
# What trytond may grow by for one upload: the JSON-RPC request (the
# base64 text, its decoded bytes, the wizard's copy) is a few times the
# upload, at most 14 MB here; the bombs inflate to 1 to 10 GB.
TRYTOND_BOUND = 150_000_000
ORTHANC_BOUND = 10_000_000
WIZARD = 'wizard.gnuhealth.imaging_orthanc.upload_image_data.'


def _cached_database():
    "The path of an activated SQLite database file for these sources."
    marker = os.path.join(CACHE, 'source')
    path = stack.sqlite_file(CACHE, DATABASE)
    try:
        with open(marker) as fp:
            if fp.read() == source_hash() and os.path.exists(path):
                return path
    except FileNotFoundError:
        pass
    shutil.rmtree(CACHE, ignore_errors=True)
    os.makedirs(CACHE)
    conf = stack.write_trytond_conf(os.path.join(CACHE, 'trytond.conf'),
        data_dir=CACHE, listen='127.0.0.1:0')
    stack.create_database(conf, CACHE, DATABASE, PASSWORD,
        log=os.path.join(CACHE, 'admin.log'))
    with open(marker, 'w') as fp:
        fp.write(source_hash())
    return path


class JsonRpc:
    "A logged-in JSON-RPC session, calling as SAO does."

    def __init__(self, url, database, login, password):
        self.url = '%s/%s/' % (url, database)
        self.session = None
        user_id, key = self.call('common.db.login', login,
            {'password': password}, 'en')
        token = '%s:%s:%s' % (login, user_id, key)
        self.session = base64.b64encode(token.encode()).decode()

    def request(self, method, *params):
        "The decoded answer: {'result': ...} or {'error': [name, args]}."
        body = json.dumps({'id': 1, 'method': method, 'params': params},
            default=_encode).encode()
        headers = {'Content-Type': 'application/json'}
        if self.session:
            headers['Authorization'] = 'Session ' + self.session
        request = urllib.request.Request(self.url, data=body,
            headers=headers)
        with urllib.request.urlopen(request, timeout=300) as answer:
            return json.loads(answer.read())

    def call(self, method, *params):
        answer = self.request(method, *params)
        if 'error' in answer:
            raise RuntimeError('%s failed: %r' % (method, answer['error']))
        return answer['result']


def _encode(value):
    if isinstance(value, bytes):
        return {'__class__': 'bytes',
            'base64': base64.b64encode(value).decode()}
    raise TypeError(type(value))


@unittest.skipUnless(orthanc_available(), 'the Orthanc executable is not '
    'installed')
class UploadBombsOverRpcTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.workdir = tempfile.mkdtemp(prefix='health-orthanc-bombs-')
        cls.addClassCleanup(shutil.rmtree, cls.workdir, True)
        cls.orthanc = OrthancServer().start()
        cls.addClassCleanup(cls.orthanc.stop)
        shutil.copy(_cached_database(),
            stack.sqlite_file(cls.workdir, DATABASE))
        port = stack.free_port()
        conf = stack.write_trytond_conf(
            os.path.join(cls.workdir, 'trytond.conf'),
            data_dir=cls.workdir, listen='127.0.0.1:%d' % port)
        url = 'http://127.0.0.1:%d' % port
        cls.trytond = stack.start_trytond(conf, url,
            os.path.join(cls.workdir, 'trytond.log'))
        cls.addClassCleanup(stack.stop_process, cls.trytond)
        cls.rpc = JsonRpc(url, DATABASE, 'admin', PASSWORD)
        server, = cls.rpc.call('model.gnuhealth.orthanc.config.create', [{
                    'label': 'PACS', 'domain': cls.orthanc.url,
                    'user': cls.orthanc.user,
                    'password': cls.orthanc.password}], {})
        cls.rpc.call('model.gnuhealth.orthanc.config.check_connection',
            [server], {})
        cls.server = server

    def upload(self, data, names):
        """Run the wizard's upload over JSON-RPC; (error or None, trytond
        peak growth, Orthanc peak growth) in bytes."""
        session, _, _ = self.rpc.call(WIZARD + 'create', {})
        self.addCleanup(self.rpc.call, WIZARD + 'delete', session, {})
        values = {'start': {'server': self.server, 'data_to_upload': data,
                'file_names': names}}
        with bombs.PeakGrowth(self.orthanc.pid) as orthanc_growth:
            with bombs.PeakGrowth(self.trytond.pid) as growth:
                answer = self.rpc.request(WIZARD + 'execute', session,
                    values, 'upload', {})
        return answer.get('error'), growth.bytes, orthanc_growth.bytes

    def orthanc_instances(self):
        return httpx.get(self.orthanc.url + '/instances',
            auth=self.orthanc.auth).json()

    def assert_refused(self, data, names, message):
        error, growth, orthanc_growth = self.upload(data, names)
        self.assertIsNotNone(error, 'the upload was not refused')
        name, (text, *_) = error
        self.assertEqual(name, 'UserError')
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
