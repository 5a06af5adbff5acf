# SPDX-License-Identifier: GPL-3.0-or-later
"""Bounded answers: the deadline of a request and the largest answer of
each kind of call, against the real Orthanc and, for what Orthanc never
does, against hostile loopback servers (a 1 GB answer, a trickling host).
"""
import gzip
import http.server
import threading
import time
import unittest

try:
    from .. import orthanc, orthanc_sockets, upload_frames
except ImportError:  # tests/ run as a top-level package from the repo root
    import orthanc
    import orthanc_sockets
    import upload_frames

from . import bombs
from . import dicom_factory as factory
from .orthanc_server import orthanc_available, shared_server, upload_files

# No database: tests/conftest.py runs it in the SQLite phase only.
SAME_ON_EVERY_BACKEND = True

needs_orthanc = unittest.skipUnless(orthanc_available(),
    'the Orthanc executable is not installed')
STUDY_ID = '0' * 8 + '-00000000' * 4
GIGABYTE = 1_000_000_000
MARGIN = 32_000_000  # memory above the answer limit: Python, httpx, buffers


class _HostileHandler(http.server.BaseHTTPRequestHandler):
    "Answers every GET the way server.mode says; counts bytes sent."
    protocol_version = 'HTTP/1.1'

    def do_GET(self):
        try:
            getattr(self, 'answer_' + self.server.mode)()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: what is under test
        finally:
            self.close_connection = True

    def do_POST(self):
        "An upload: the body read whole, then answered as for a GET."
        self.rfile.read(int(self.headers.get('Content-Length') or 0))
        self.server.posts += 1
        if self.server.mode == 'drop_reused':
            self.answer_drop_reused()
        else:
            self.do_GET()

    def answer_drop_reused(self):
        """The first request of a connection answered and the connection
        kept; the next one on it dropped unanswered (as a server closing an
        idle connection just as it is reused)."""
        if getattr(self, 'answered', False):
            self.close_connection = True
            return
        self.answered = True
        body = b'{"ID": "a", "ParentStudy": "b", "Status": "Success"}'
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.send(body)

    def answer_chunked(self):
        "Orthanc's answer to a stored file, in chunks."
        body = b'{"ID": "a", "ParentStudy": "b", "Status": "Success"}'
        self.send_response(200)
        self.send_header('Transfer-Encoding', 'chunked')
        self.end_headers()
        for piece in (body[:10], body[10:]):
            self.send(b'%x\r\n%s\r\n' % (len(piece), piece))
        self.send(b'0\r\n\r\n')

    def answer_until_close(self):
        "The same answer, ended by closing the connection."
        self.send_response(200)
        self.send_header('Connection', 'close')
        self.end_headers()
        self.send(b'{"ID": "a", "ParentStudy": "b", "Status": "Success"}')

    def answer_redirect(self):
        self.send_response(302)
        self.send_header('Location', 'http://127.0.0.1:9/instances')
        self.send_header('Content-Length', '0')
        self.end_headers()

    def answer_not_http(self):
        self.send(b'SSH-2.0-OpenSSH_9.2\r\n')

    def answer_hang_up(self):
        pass

    def send(self, data):
        self.wfile.write(data)
        self.wfile.flush()
        self.server.sent += len(data)

    def send_head(self, length=None):
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        if length is None:
            self.send_header('Connection', 'close')  # ends the body
        else:
            self.send_header('Content-Length', str(length))
        self.end_headers()

    def answer_gigabyte(self, length=None):
        "1 GB of JSON-looking bytes, 1 MB at a time."
        self.send_head(length)
        chunk = b' ' * 1_000_000
        self.send(b'[')
        for _ in range(GIGABYTE // len(chunk)):
            self.send(chunk)

    def answer_gigabyte_announced(self):
        self.answer_gigabyte(length=GIGABYTE + 1)

    def answer_trickle_body(self):
        "A 1,000-byte answer, one byte every half second."
        self.send_head(1000)
        self.trickle(b'{' + b' ' * 998 + b'}')

    def answer_trickle_head(self):
        "The status line and headers themselves, a byte at a time."
        self.wfile.write(b'')
        self.trickle(b'HTTP/1.1 200 OK\r\nContent-Type: application/json'
            b'\r\nContent-Length: 2\r\n\r\n{}')

    def trickle(self, data):
        for index in range(len(data)):
            self.send(data[index:index + 1])
            time.sleep(0.5)

    def log_message(self, *args):
        pass


class _HostileServer:

    def __init__(self, mode):
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
            _HostileHandler)
        self.httpd.mode = mode
        self.httpd.sent = 0
        self.httpd.posts = 0
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
            daemon=True)
        self.thread.start()

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.httpd.server_address[1]

    @property
    def sent(self):
        return self.httpd.sent

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class HostileHostTest(unittest.TestCase):
    "What Orthanc never does, a compromised or mistyped host may."

    def hostile(self, mode, **options):
        server = _HostileServer(mode)
        self.addCleanup(server.close)
        client = orthanc.OrthancClient(server.url, 'u', 'p', **options)
        self.addCleanup(client.close)
        return server, client

    def test_gigabyte_answer_is_refused_with_bounded_memory(self):
        "1 GB without Content-Length: dropped at the limit while streaming."
        server, client = self.hostile('gigabyte')
        limit = client.limits.metadata
        with bombs.PeakGrowth() as growth:
            with self.assertRaises(orthanc.TooLarge) as caught:
                client.study(STUDY_ID)
        self.assertEqual(caught.exception.kind, 'metadata')
        self.assertEqual(caught.exception.limit, limit)
        self.assertIn('larger than 64 MB', str(caught.exception))
        self.assertLess(growth.bytes, limit + MARGIN)
        self.assertLess(server.sent, GIGABYTE // 2)

    def test_announced_gigabyte_is_refused_unread(self):
        server, client = self.hostile('gigabyte_announced')
        with bombs.PeakGrowth() as growth:
            with self.assertRaises(orthanc.TooLarge):
                client.study(STUDY_ID)
        self.assertLess(growth.bytes, MARGIN)
        self.assertLess(server.sent, GIGABYTE // 2)

    def test_limits_per_kind(self):
        "The same answer fits one kind of call and not another."
        server, client = self.hostile('trickle_body',
            limits=orthanc.Limits(info=500), timeout=0.5)
        with self.assertRaises(orthanc.TooLarge) as caught:
            client.server_info()  # announced 1,000 bytes: not read
        self.assertEqual(caught.exception.kind, 'info')
        with self.assertRaises(orthanc.DeadlineExceeded):
            client.study(STUDY_ID)  # metadata: 1,000 bytes is fine

    def test_trickling_body_ends_at_the_deadline(self):
        """A byte every 0.5 s never trips a 2 s read timeout: the deadline
        ends the request (the whole answer would take 500 s)."""
        server, client = self.hostile('trickle_body', timeout=2)
        with self.assertRaises(orthanc.DeadlineExceeded) as caught:
            client.study(STUDY_ID)
        self.assertIsInstance(caught.exception, orthanc.Timeout)
        self.assertEqual(caught.exception.seconds, 2)
        self.assertIn('within 2 s', str(caught.exception))
        self.assertLess(server.sent, 1000)

    def test_trickling_headers_end_at_the_deadline(self):
        server, client = self.hostile('trickle_head', timeout=2)
        with self.assertRaises(orthanc.DeadlineExceeded):
            client.last_change()
        self.assertLess(server.sent, 60)

    def test_retry_shares_the_deadline(self):
        "A dropped keep-alive connection is retried within the same deadline."
        server, client = self.hostile('trickle_body', timeout=1)
        with self.assertRaises(orthanc.DeadlineExceeded):
            client.study(STUDY_ID)
        self.assertLessEqual(client.request_count, 2)

    def test_upload_answers_are_bounded(self):
        """Uploads go out on the adapter's own sockets (orthanc_sockets):
        the same deadline and answer limit as every other request."""
        data = factory.image()
        server, client = self.hostile('gigabyte')
        with bombs.PeakGrowth() as growth:
            with self.assertRaises(orthanc.TooLarge) as caught:
                client.upload('ct.dcm', data)
        self.assertEqual(caught.exception.kind, 'metadata')
        self.assertLess(growth.bytes, client.limits.metadata + MARGIN)
        self.assertLess(server.sent, GIGABYTE // 2)
        server, client = self.hostile('gigabyte_announced')
        with self.assertRaises(orthanc.TooLarge):
            client.upload('ct.dcm', data)
        self.assertLess(server.sent, GIGABYTE // 2)
        for mode in ('trickle_body', 'trickle_head'):
            with self.subTest(mode=mode):
                server, client = self.hostile(mode, timeout=2)
                begin = time.monotonic()
                with self.assertRaises(orthanc.DeadlineExceeded) as caught:
                    client.upload('ct.dcm', data)
                self.assertLess(time.monotonic() - begin, 3)
                self.assertIn('within 2 s', str(caught.exception))

    def test_upload_answer_forms(self):
        "Answers in chunks or ended by closing are read; others refused."
        data = factory.image()
        for mode in ('chunked', 'until_close'):
            with self.subTest(mode=mode):
                server, client = self.hostile(mode, timeout=5)
                for _ in range(2):
                    stored, = client.upload('ct.dcm', data)
                    self.assertEqual((stored.status, stored.orthanc_id,
                            stored.study_id), ('Success', 'a', 'b'))
                self.assertEqual(server.httpd.posts, 2)
        server, client = self.hostile('redirect', timeout=5)
        with self.assertRaises(orthanc.Rejected) as caught:
            client.upload('ct.dcm', data)
        self.assertIn('redirected to', str(caught.exception))
        self.assertEqual(server.httpd.posts, 1)  # not followed
        for mode in ('not_http', 'hang_up'):
            with self.subTest(mode=mode):
                server, client = self.hostile(mode, timeout=5)
                with self.assertRaises(orthanc.Unreachable):
                    client.upload('ct.dcm', data)

    def test_upload_retried_once_on_a_dropped_connection(self):
        """A kept-alive connection dropped without an answer: the file is
        sent again on a new one (a retry, counted); a body that can be read
        only once cannot be, and the upload is reported lost."""
        data = factory.image()
        server, client = self.hostile('drop_reused', timeout=5)
        for _ in range(2):
            stored, = client.upload('ct.dcm', data)
            self.assertEqual(stored.status, 'Success')
        self.assertEqual(server.httpd.posts, 3)
        self.assertEqual(client.request_count, 3)
        once = iter([memoryview(data)])
        body = type('OnePass', (), {'__len__': lambda self: len(data),
                '__iter__': lambda self: once})()
        with self.assertRaises(orthanc.Unreachable):
            client.upload('ct.dcm', body)

    def test_limits_must_be_positive(self):
        with self.assertRaises(ValueError):
            orthanc.Limits(image=0)

    def test_client_for_keys_on_limits(self):
        one = orthanc.client_for('http://127.0.0.1:9', 'u', 'p')
        same = orthanc.client_for('http://127.0.0.1:9', 'u', 'p',
            limits=orthanc.Limits())
        other = orthanc.client_for('http://127.0.0.1:9', 'u', 'p',
            limits=orthanc.Limits(info=10))
        self.assertIs(one, same)
        self.assertIsNot(one, other)
        self.assertEqual(other.limits.info, 10)


@needs_orthanc
class OrthancLimitsTest(unittest.TestCase):
    "The limits against the real Orthanc: each kind of call has its own."

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = shared_server()

    def client(self, **limits):
        client = orthanc.OrthancClient(self.server.url, self.server.user,
            self.server.password, timeout=10,
            limits=orthanc.Limits(**limits))
        self.addCleanup(client.close)
        return client

    def store(self, files):
        answers = upload_files(self.server, files)
        for study_id in dict.fromkeys(a['ParentStudy'] for a in answers):
            self.addCleanup(self.client().delete_study, study_id)
        return answers

    def test_server_info(self):
        self.assertTrue(self.client().server_info().version)
        with self.assertRaises(orthanc.TooLarge) as caught:
            self.client(info=50).server_info()
        self.assertEqual(caught.exception.kind, 'info')

    def test_changes(self):
        self.store([factory.image(study_uid=factory.uid())])
        self.client().changes_since(0, limit=10)
        with self.assertRaises(orthanc.TooLarge) as caught:
            self.client(changes=100).changes_since(0, limit=10)
        self.assertEqual(caught.exception.kind, 'changes')

    def test_metadata_and_preview(self):
        answer, = self.store([factory.image(study_uid=factory.uid())])
        client = self.client(metadata=200, image=len(orthanc.PNG_MAGIC))
        with self.assertRaises(orthanc.TooLarge):
            client.study_tree(answer['ParentStudy'])
        with self.assertRaises(orthanc.TooLarge) as caught:
            client.preview(answer['ID'])
        self.assertEqual(caught.exception.kind, 'image')
        # Other kinds are unaffected, the pooled connection still works.
        self.assertTrue(client.server_info().version)
        self.assertTrue(self.client().preview(answer['ID']).startswith(
                orthanc.PNG_MAGIC))

    def test_uploads_keep_their_connection(self):
        """Files sent one after the other share one kept-alive socket; one
        idle for longer than MAX_IDLE (Orthanc closes it at a second) or
        already closed by Orthanc is replaced before it is used, even for a
        body that can be read only once."""
        client = self.client()
        files = [factory.image(study_uid=factory.uid()) for _ in range(4)]
        for data in files[:2]:
            stored, = client.upload('ct.dcm', data)
            self.addCleanup(client.delete_study, stored.study_id)
        kept, = client._uploads._idle
        for data, idle in [(files[2], orthanc_sockets.MAX_IDLE + 0.2),
                (files[3], 2)]:
            time.sleep(idle)
            stored, = client.upload('ct.dcm', self.one_pass(data))
            self.addCleanup(client.delete_study, stored.study_id)
            self.assertEqual(stored.status, 'Success')
            self.assertEqual(kept[0].fileno(), -1)  # closed, not reused
            kept, = client._uploads._idle
        self.assertEqual(client.request_count, 4)

    @staticmethod
    def one_pass(data):
        "A body whose pieces can be read once only."
        once = iter([memoryview(data)])
        return type('OnePass', (), {'__len__': lambda self: len(data),
                '__iter__': lambda self: once})()

    def test_streamed_uploads(self):
        """A view is sent without a copy and a gzip'ed file as it inflates,
        with its Content-Length (Orthanc 1.10 stores both)."""
        client = self.client()
        plain = factory.image(study_uid=factory.uid())
        framed = memoryview(factory.frame_mult([plain]))[12:]
        stored, = client.upload('view.dcm', framed)
        self.addCleanup(client.delete_study, stored.study_id)
        self.assertEqual(stored.status, 'Success')
        packed = gzip.compress(factory.image(study_uid=factory.uid()))
        size, _ = upload_frames.inflated_size(packed)
        stored, = client.upload('packed.dcm.gz',
            upload_frames.Inflated(memoryview(packed), size))
        self.addCleanup(client.delete_study, stored.study_id)
        self.assertEqual(stored.status, 'Success')


if __name__ == '__main__':
    unittest.main()
