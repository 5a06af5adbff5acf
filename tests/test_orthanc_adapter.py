"""The Orthanc adapter against a real Orthanc (tests/orthanc_server.py).

Many test classes share one Orthanc: every test works on its own, freshly
generated UIDs and deletes what it stored.
"""
import base64
import datetime
import http.server
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest

import httpx

try:
    from .. import dicom, orthanc
except ImportError:  # tests/ run as a top-level package from the repo root
    import dicom
    import orthanc

from . import dicom_factory as factory
from .orthanc_server import (
    OrthancServer, free_port, orthanc_available, shared_server, upload_files)

# No database: tests/conftest.py runs it in the SQLite phase only.
SAME_ON_EVERY_BACKEND = True

needs_orthanc = unittest.skipUnless(orthanc_available(),
    'the Orthanc executable is not installed')


class CapturedLogs:
    "Every log record of every logger, at DEBUG level, formatted."

    def __enter__(self):
        self.records = []
        self.handler = logging.Handler(logging.DEBUG)
        self.handler.emit = lambda record: self.records.append(
            self.handler.format(record))
        self.root = logging.getLogger()
        self.old_level = self.root.level
        self.root.addHandler(self.handler)
        self.root.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc_info):
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.old_level)

    @property
    def text(self):
        return '\n'.join(self.records)


def secrets_of(user, password):
    "The password as it could leak: plain, or inside a Basic header."
    basic = base64.b64encode(('%s:%s' % (user, password)).encode()).decode()
    return [password, basic]


class _Background:
    "A loopback server of some kind, run in a daemon thread."

    def __init__(self, server):
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever,
            daemon=True)
        self.thread.start()

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _NotOrthancHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'<html><body>Hello, not a PACS</body></html>'
        self.send_response(200)
        self.send_header('Content-Type', 'text/html')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _SilentListener:
    "Accepts TCP connections and never answers: provokes read timeouts."

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.url = 'http://127.0.0.1:%d' % self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


class HelperTest(unittest.TestCase):

    def test_person_name(self):
        for value, expected in [
                ('DOE^JOHN^^^', 'DOE, JOHN'),
                ('DOE^JOHN^PAUL', 'DOE, JOHN PAUL'),
                ('DOE', 'DOE'),
                ('^JOHN', 'JOHN'),
                ('DOE^JOHN^^DR^JR', 'DOE, DR JOHN JR'),
                (' DOE ^ JOHN ', 'DOE, JOHN'),
                ('Yamada^Tarou=山田^太郎=やまだ^たろう', 'Yamada, Tarou'),
                ('=山田^太郎', '山田, 太郎'),
                ('', ''), (None, ''), ('^^^^', ''),
                ]:
            with self.subTest(value=value):
                self.assertEqual(dicom.person_name(value), expected)

    def test_dicom_date(self):
        self.assertEqual(dicom.dicom_date('20240102'),
            datetime.date(2024, 1, 2))
        self.assertEqual(dicom.dicom_date(' 20240102 '),
            datetime.date(2024, 1, 2))
        self.assertEqual(dicom.dicom_date('2024.01.02'),
            datetime.date(2024, 1, 2))
        self.assertEqual(dicom.dicom_date('20240102101500'),
            datetime.date(2024, 1, 2))
        for value in ['', None, 'garbage', '2024', '20241340', '00000000',
                'abcdefgh']:
            with self.subTest(value=value):
                self.assertIsNone(dicom.dicom_date(value))

    def test_dicom_int(self):
        for value, expected in [
                ('', None), (None, None), ('3.0', 3), (' 7 ', 7), ('12', 12),
                ('-2', -2), ('garbage', None), ('3.5', None), ('nan', None),
                ('inf', None), ('4\\5', 4), (5, 5), ('+8', 8)]:
            with self.subTest(value=value):
                self.assertEqual(dicom.dicom_int(value), expected)

    def test_redact(self):
        self.assertEqual(
            orthanc.redact('failed: https://bob:s3cr%40t@pacs.example:8042/x'
                ' and http://alice@h/'),
            'failed: https://pacs.example:8042/x and http://h/')
        self.assertEqual(orthanc.redact('no url here'), 'no url here')

    def test_credentials_in_url_move_to_auth(self):
        "What a host receives: the URL without them, Basic auth with them."
        seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append((self.path, self.headers.get('Authorization')))
                self.send_response(404)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args):
                pass
        httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.addCleanup(httpd.server_close)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        self.addCleanup(httpd.shutdown)
        port = httpd.server_address[1]
        client = orthanc.OrthancClient(
            'http://bob:pa%%3Ass@127.0.0.1:%d/' % port)
        self.addCleanup(client.close)
        self.assertEqual(client.url, 'http://127.0.0.1:%d' % port)
        with self.assertRaises(orthanc.NotFound):
            client.last_change()
        (path, authorization), = seen
        self.assertNotIn('bob', path)
        self.assertEqual(authorization, 'Basic '
            + base64.b64encode(b'bob:pa:ss').decode())

    def test_client_for_caches_and_evicts(self):
        self.addCleanup(orthanc.close_clients)
        first = orthanc.client_for('http://127.0.0.1:1', 'u', 'p')
        self.assertIs(orthanc.client_for('http://127.0.0.1:1', 'u', 'p'),
            first)
        self.assertIsNot(orthanc.client_for('http://127.0.0.1:1', 'u', 'q'),
            first)
        seen = []
        threads = [threading.Thread(target=lambda: seen.append(
                    orthanc.client_for('http://127.0.0.1:2', 'u', 'p')))
            for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(len({id(c) for c in seen}), 1)
        latest = [orthanc.client_for('http://127.0.0.1:%d' % port, 'u', 'p')
            for port in range(10, 10 + orthanc.CLIENT_CACHE_SIZE)]
        # The least used is closed; those kept are open.
        self.assertTrue(first.closed)
        self.assertFalse(any(c.closed for c in latest))


@needs_orthanc
class _OrthancTest(unittest.TestCase):
    "Base: a client of the shared Orthanc and cleanup of stored studies."

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = shared_server()

    def setUp(self):
        self.client = orthanc.OrthancClient(self.server.url,
            self.server.user, self.server.password, timeout=10)
        self.addCleanup(self.client.close)

    def store(self, files):
        "Upload fixtures directly; delete their studies after the test."
        answers = upload_files(self.server, files)
        for study_id in dict.fromkeys(a['ParentStudy'] for a in answers):
            self.addCleanup(self.client.delete_study, study_id)
        return answers


class ServerInfoTest(_OrthancTest):

    def test_server_info(self):
        before = self.client.request_count
        info = self.client.server_info()
        self.assertEqual(self.client.request_count - before, 3)
        self.assertEqual(info.name, 'health_orthanc tests')
        system = httpx.get(self.server.url + '/system',
            auth=self.server.auth, timeout=10).json()
        self.assertEqual(info.version, system['Version'])
        self.assertGreaterEqual(info.api_version, 1)
        self.assertIn('dicom-web', info.plugins)
        self.assertIn('web-viewer', info.plugins)
        self.assertNotIn('explorer.js', info.plugins)
        self.assertTrue(info.has_dicomweb)
        self.assertTrue(info.has_webviewer)
        self.assertFalse(info.has_ohif)
        self.assertFalse(info.has_stone)
        self.store(factory.study(1, 1))
        self.assertGreaterEqual(self.client.server_info().study_count, 1)

    def test_wrong_password(self):
        wrong = 'Wr0ng-%s' % os.urandom(6).hex()
        with CapturedLogs() as logs, orthanc.OrthancClient(self.server.url,
                self.server.user, wrong) as client:
            with self.assertRaises(orthanc.Unauthorized) as caught:
                client.server_info()
        self.assertEqual(caught.exception.status, 401)
        self.assertTrue(logs.records)  # httpx did log the request
        for secret in (secrets_of(self.server.user, wrong)
                + secrets_of(self.server.user, self.server.password)):
            self.assertNotIn(secret, str(caught.exception))
            self.assertNotIn(secret, repr(caught.exception))
            self.assertNotIn(secret, logs.text)

    def test_unreachable(self):
        password = 'Secr3t-%s' % os.urandom(6).hex()
        url = 'http://user:%s@127.0.0.1:%d' % (password, free_port())
        with CapturedLogs() as logs, orthanc.OrthancClient(url) as client:
            with self.assertRaises(orthanc.Unreachable) as caught:
                client.server_info()
        self.assertIsNone(caught.exception.status)
        self.assertIn('127.0.0.1', str(caught.exception))
        for secret in secrets_of('user', password):
            self.assertNotIn(secret, str(caught.exception))
            self.assertNotIn(secret, logs.text)

    def test_not_orthanc(self):
        background = _Background(http.server.ThreadingHTTPServer(
                ('127.0.0.1', 0), _NotOrthancHandler))
        self.addCleanup(background.close)
        with orthanc.OrthancClient(background.url, 'u', 'p') as client:
            with self.assertRaises(orthanc.NotOrthanc):
                client.server_info()

    def test_not_orthanc_4xx(self):
        # A web server without GET /system (e.g. an API that only accepts
        # POST: 405) is not an Orthanc; 403 and 5xx may be one behind a
        # proxy, and say so.
        for status, error in [(404, orthanc.NotOrthanc),
                (405, orthanc.NotOrthanc), (400, orthanc.NotOrthanc),
                (403, orthanc.Rejected), (503, orthanc.Rejected)]:
            class Handler(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    self.send_error(status)

                def log_message(self, *args):
                    pass
            background = _Background(http.server.ThreadingHTTPServer(
                    ('127.0.0.1', 0), Handler))
            self.addCleanup(background.close)
            with self.subTest(status=status):
                with orthanc.OrthancClient(background.url) as client:
                    with self.assertRaises(error) as caught:
                        client.server_info()
                self.assertEqual(caught.exception.status, status)
                if error is orthanc.Rejected:
                    self.assertNotIsInstance(caught.exception,
                        orthanc.NotOrthanc)

    def test_timeout(self):
        listener = _SilentListener()
        self.addCleanup(listener.close)
        with orthanc.OrthancClient(listener.url, 'u', 'p',
                timeout=0.3) as client:
            with self.assertRaises(orthanc.Timeout) as caught:
                client.last_change()
        self.assertIn('0.3', str(caught.exception))

    def test_server_error_body(self):
        # The one fake-transport test: an Orthanc 500 with its JSON body.
        def handler(request):
            return httpx.Response(500, json={
                    'HttpStatus': 500, 'Message': 'Internal error',
                    'Details': 'SQLite: database is locked'})
        with orthanc.OrthancClient('http://orthanc.invalid', 'u', 'p',
                transport=httpx.MockTransport(handler)) as client:
            with self.assertRaises(orthanc.Rejected) as caught:
                client.study('0' * 8 + '-00000000' * 4)
        self.assertEqual(caught.exception.status, 500)
        self.assertEqual(caught.exception.reason,
            'Internal error: SQLite: database is locked')

    @unittest.skipUnless(shutil.which('openssl'), 'needs openssl')
    def test_tls_failure(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        cert, key = (os.path.join(folder, n) for n in ('c.pem', 'k.pem'))
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048',
                '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
                '-addext', 'subjectAltName=IP:127.0.0.1',
                '-keyout', key, '-out', cert],
            check=True, capture_output=True)
        httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
            _NotOrthancHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        background = _Background(httpd)
        self.addCleanup(background.close)
        url = background.url.replace('http:', 'https:')
        with orthanc.OrthancClient(url, 'u', 'p', timeout=5) as client:
            with self.assertRaises(orthanc.TLSFailure):
                client.server_info()
        # Trusting that very certificate (or not verifying) gets through.
        for verify in (cert, False):
            with orthanc.OrthancClient(url, 'u', 'p', timeout=5,
                    verify=verify) as client:
                with self.assertRaises(orthanc.NotOrthanc):
                    client.server_info()
        with self.assertRaises(orthanc.TLSFailure):
            orthanc.OrthancClient(url, verify=os.path.join(folder, 'none'))


class ChangesTest(_OrthancTest):

    def test_changes_paging(self):
        start = self.client.last_change()
        answers = self.store(factory.study(n_series=1, n_instances=12))
        ours = {a['ID'] for a in answers}
        seqs, seen, pages = [], set(), 0
        since = start
        while True:
            page = self.client.changes_since(since, limit=5)
            pages += 1
            self.assertLessEqual(len(page.changes), 5)
            if page.changes:
                self.assertEqual(page.last, page.changes[-1].seq)
            seqs.extend(c.seq for c in page.changes)
            seen.update(c.resource_id for c in page.changes
                if c.change_type == 'NewInstance')
            since = page.last
            if page.done:
                break
        self.assertGreater(pages, 2)
        self.assertEqual(seqs, sorted(set(seqs)))  # strictly increasing
        self.assertGreater(seqs[0], start)
        self.assertLessEqual(ours, seen)
        self.assertEqual(since, self.client.last_change())
        # Past the end: an empty, done page whose Last is the log's end.
        page = self.client.changes_since(since + 1000)
        self.assertEqual((page.changes, page.done), ([], True))

    def test_deletion_removes_changes(self):
        # Orthanc 1.10 logs no "deleted" change: it drops the entries of the
        # deleted resources, so the changes log alone cannot see deletions.
        start = self.client.last_change()
        answers = upload_files(self.server, factory.study(1, 2))
        study_id = answers[0]['ParentStudy']
        page = self.client.changes_since(start, 1000)
        self.assertIn(study_id, {c.resource_id for c in page.changes})
        self.assertTrue(self.client.delete_study(study_id))
        page = self.client.changes_since(start, 1000)
        self.assertNotIn(study_id, {c.resource_id for c in page.changes})
        self.assertNotIn('Deleted', {c.change_type for c in page.changes})


class StudyTest(_OrthancTest):

    def test_list_and_iter_studies(self):
        mine = set()
        for index in range(5):
            answers = self.store(factory.study(1, 1,
                    accession='LIST%d' % index))
            mine.add(answers[0]['ParentStudy'])
        everything = set()
        pages = list(self.client.iter_studies(page_size=2))
        for page in pages[:-1]:
            self.assertEqual(len(page), 2)
        for page in pages:
            for study in page:
                self.assertNotIn(study['ID'], everything)
                everything.add(study['ID'])
        self.assertLessEqual(mine, everything)
        page = self.client.list_studies(since=0, limit=1000)
        self.assertEqual({s['ID'] for s in page}, everything)
        study = next(s for s in page if s['ID'] in mine)
        for key in ('PatientMainDicomTags', 'MainDicomTags', 'Series',
                'LastUpdate', 'ParentPatient', 'IsStable', 'Type'):
            self.assertIn(key, study)
        self.assertEqual(study['PatientMainDicomTags']['PatientName'],
            'DOE^JOHN')
        self.assertTrue(study['MainDicomTags']['AccessionNumber']
            .startswith('LIST'))
        self.assertEqual(self.client.list_studies(since=len(everything)), [])

    def test_study_tree(self):
        answers = self.store(factory.study(n_series=3, n_instances=4))
        study_id = answers[0]['ParentStudy']
        before = self.client.request_count
        tree = self.client.study_tree(study_id)
        self.assertEqual(self.client.request_count - before, 3)
        self.assertEqual(tree.study['ID'], study_id)
        self.assertEqual(len(tree.series), 3)
        self.assertEqual(len(tree.instances), 12)
        self.assertEqual({i['ID'] for i in tree.instances},
            {a['ID'] for a in answers})
        series = tree.series[0]
        for key in ('ID', 'Instances', 'MainDicomTags', 'ParentStudy',
                'Status', 'LastUpdate', 'IsStable'):
            self.assertIn(key, series)
        instance = tree.instances[0]
        for key in ('ID', 'MainDicomTags', 'ParentSeries', 'IndexInSeries',
                'FileSize'):
            self.assertIn(key, instance)
        self.assertEqual({i['ParentSeries'] for i in tree.instances},
            {s['ID'] for s in tree.series})

        before = self.client.request_count
        series, instances = self.client.series_tree(series['ID'])
        self.assertEqual(self.client.request_count - before, 2)
        self.assertEqual(len(instances), 4)
        self.assertEqual(series['ParentStudy'], study_id)

    def test_missing_study(self):
        gone = 'ffffffff-ffffffff-ffffffff-ffffffff-ffffffff'
        with self.assertRaises(orthanc.NotFound) as caught:
            self.client.study_tree(gone)
        self.assertEqual(caught.exception.status, 404)
        with self.assertRaises(orthanc.NotFound):
            self.client.study(gone)
        with self.assertRaises(orthanc.NotFound):
            self.client.series_tree(gone)
        before = self.client.request_count
        with self.assertRaises(orthanc.NotFound):
            self.client.study('../system')
        self.assertEqual(self.client.request_count, before)

    def test_odd_tags(self):
        study_uid = factory.uid()
        series_uid = factory.uid()
        common = dict(study_uid=study_uid, series_uid=series_uid)
        bare = factory.image(omit=('ReferringPhysicianName',
                'InstitutionName', 'StudyDate', 'SeriesNumber',
                'InstanceNumber', 'ImagePositionPatient'), **common)
        empty = factory.image(overrides={'InstanceNumber': ''}, **common)
        decimal = factory.image(overrides={'InstanceNumber': '3.0'},
            **common)
        answers = self.store([bare, empty, decimal])
        self.assertEqual([a['Status'] for a in answers], ['Success'] * 3)
        tree = self.client.study_tree(answers[0]['ParentStudy'])
        tags = tree.study['MainDicomTags']
        self.assertNotIn('StudyDate', tags)
        self.assertNotIn('ReferringPhysicianName', tags)
        self.assertNotIn('InstitutionName', tags)
        self.assertIsNone(dicom.dicom_date(tags.get('StudyDate')))
        self.assertNotIn('SeriesNumber', tree.series[0]['MainDicomTags'])
        numbers = sorted(
            (dicom.dicom_int(i['MainDicomTags'].get('InstanceNumber'))
                for i in tree.instances), key=lambda n: (n is not None, n))
        self.assertEqual(numbers, [None, None, 3])


class PreviewTest(_OrthancTest):

    def test_preview(self):
        study_uid = factory.uid()
        answers = self.store([
                factory.image(study_uid=study_uid),
                factory.structured_report(study_uid=study_uid),
                factory.encapsulated_pdf(study_uid=study_uid)])
        image, report, pdf = (a['ID'] for a in answers)
        self.assertTrue(self.client.preview(image).startswith(
                orthanc.PNG_MAGIC))
        for instance in (report, pdf):
            with self.subTest(instance=instance):
                with self.assertRaises(orthanc.NotAnImage):
                    self.client.preview(instance)


class UploadTest(_OrthancTest):

    def forget(self, results):
        for study_id in {r.study_id for r in results if r.study_id}:
            self.addCleanup(self.client.delete_study, study_id)
        return results

    def test_upload_dicom(self):
        data = factory.image(study_uid=factory.uid())
        first, = self.forget(self.client.upload('ct.dcm', data))
        self.assertEqual(first.name, 'ct.dcm')
        self.assertEqual(first.status, 'Success')
        self.assertTrue(first.orthanc_id)
        self.assertTrue(first.study_id)
        self.assertIsNone(first.reason)
        again, = self.client.upload('ct.dcm', data)
        self.assertEqual(again.status, 'AlreadyStored')
        self.assertEqual(again.orthanc_id, first.orthanc_id)
        self.assertEqual(self.client.study(first.study_id)['ID'],
            first.study_id)

    def test_upload_zip(self):
        files = factory.study(n_series=1, n_instances=3)
        archive = factory.zip_of(
            [('DICOM/IM%d' % i, data) for i, data in enumerate(files)]
            + [('README.txt', b'not dicom')])
        results = self.forget(self.client.upload('study.zip', archive))
        self.assertEqual([r.status for r in results],
            ['Success'] * 3 + ['Rejected'])
        self.assertEqual(len({r.study_id for r in results[:3]}), 1)
        self.assertIn('1 file', results[-1].reason)
        self.assertEqual({r.name for r in results}, {'study.zip'})

    def test_upload_zip_without_dicom(self):
        results = self.client.upload('docs.zip',
            factory.zip_of([('a.txt', b'hello')]))
        self.assertEqual([r.status for r in results], ['Rejected'])

    def test_upload_not_dicom(self):
        for name, data in [('notes.txt', b'hello, not a DICOM file'),
                ('empty.dcm', b''),
                ('broken.zip', b'PK\x03\x04 truncated'),
                ('framed.bin', factory.frame_mult([factory.image()]))]:
            with self.subTest(name=name):
                result, = self.client.upload(name, data)
                self.assertEqual(result.name, name)
                self.assertEqual(result.status, 'Rejected')
                self.assertIsNone(result.orthanc_id)
                self.assertIn('Bad file format', result.reason)

    def test_upload_with_wrong_password(self):
        """Orthanc refuses a large file before reading it all: the adapter
        reports the refusal (401), not a lost connection, and the
        password is in no text."""
        wrong = 'Wr0ng-%s' % os.urandom(6).hex()
        large = factory.image(overrides={'Rows': 2048, 'Columns': 2048,
                'PixelData': bytes(2048 * 2048 * 2)})
        with CapturedLogs() as logs, orthanc.OrthancClient(self.server.url,
                self.server.user, wrong) as client:
            for data in (factory.image(), large):
                with self.assertRaises(orthanc.Unauthorized) as caught:
                    client.upload('ct.dcm', data)
                self.assertEqual(caught.exception.status, 401)
        for secret in secrets_of(self.server.user, wrong):
            self.assertNotIn(secret, str(caught.exception))
            self.assertNotIn(secret, logs.text)

    def test_upload_unreachable_raises(self):
        with orthanc.OrthancClient('http://127.0.0.1:%d' % free_port()
                ) as client:
            with self.assertRaises(orthanc.Unreachable):
                client.upload('ct.dcm', factory.image())


class DeleteTest(_OrthancTest):

    def test_delete_study(self):
        answers = upload_files(self.server, factory.study(1, 2))
        study_id = answers[0]['ParentStudy']
        self.assertTrue(self.client.delete_study(study_id))
        self.assertFalse(self.client.delete_study(study_id))
        with self.assertRaises(orthanc.NotFound):
            self.client.study(study_id)

    def test_delete_series(self):
        answers = self.store(factory.study(2, 1))
        series_id = answers[0]['ParentSeries']
        self.assertTrue(self.client.delete_series(series_id))
        self.assertFalse(self.client.delete_series(series_id))
        tree = self.client.study_tree(answers[0]['ParentStudy'])
        self.assertEqual(len(tree.series), 1)


REFUSE_SR_LUA = '''
function ReceivedInstanceFilter(dicom, origin, info)
  return dicom.Modality ~= 'SR'
end
'''


@needs_orthanc
class OwnServerTest(unittest.TestCase):
    "A private Orthanc that refuses DELETE (Lua filter) and gets restarted."

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = OrthancServer(readonly_delete=True, plugins=(),
            lua=REFUSE_SR_LUA).start()
        cls.addClassCleanup(cls.server.stop)

    def setUp(self):
        self.client = orthanc.OrthancClient(self.server.url,
            self.server.user, self.server.password, timeout=10)
        self.addCleanup(self.client.close)

    def test_readonly_delete(self):
        answers = upload_files(self.server, factory.study(1, 1))
        with self.assertRaises(orthanc.Rejected) as caught:
            self.client.delete_study(answers[0]['ParentStudy'])
        self.assertEqual(caught.exception.status, 403)
        self.assertTrue(self.client.study(answers[0]['ParentStudy']))

    def test_filtered_out_upload(self):
        # A filtered instance answers 200, Status 'FilteredOut' and IDs of
        # resources that were not stored.
        result, = self.client.upload('sr.dcm', factory.structured_report())
        self.assertEqual(result.status, 'Rejected')
        self.assertEqual(result.reason, 'filtered out by the server')
        self.assertIsNone(result.orthanc_id)
        self.assertIsNone(result.study_id)

    def test_restart_keeps_storage_and_port(self):
        answers = upload_files(self.server, factory.study(1, 1))
        study_id = answers[0]['ParentStudy']
        url, last = self.server.url, self.client.last_change()
        self.server.stop(keep=True)
        with self.assertRaises(orthanc.Unreachable):
            self.client.last_change()
        self.server.start()
        self.assertEqual(self.server.url, url)
        # The same client (and pool) works again after the restart.
        self.assertEqual(self.client.study(study_id)['ID'], study_id)
        self.assertGreaterEqual(self.client.last_change(), last)


if __name__ == '__main__':
    unittest.main()
