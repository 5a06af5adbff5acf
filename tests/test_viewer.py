# SPDX-License-Identifier: GPL-3.0-or-later
"""Open in viewer from GNU Health (viewer.py, viewer_log.py) against a real
Orthanc running the viewer-access script, and one without it."""
import os
import shutil
import tempfile
import unittest
from urllib.parse import parse_qs, urlsplit

import httpx

from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..orthanc_side import viewer_token
from . import dicom_factory as factory
from .orthanc_server import OrthancServer, shared_server, upload_files
from .test_viewer_access import SECRET, needs_python_plugin


def create_server(orthanc, label, secret=None):
    "A server record for orthanc, checked."
    Server = Pool().get('gnuhealth.orthanc.config')
    server, = Server.create([{'label': label, 'domain': orthanc.url,
                'user': orthanc.user, 'password': orthanc.password,
                'viewer_secret': secret}])
    Server.check_connection([server])
    return server


@needs_python_plugin
class ViewerTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')
        cls.orthanc = OrthancServer(viewer_secret=SECRET,
            name='health_orthanc viewer').start()
        upload_files(cls.orthanc, factory.study(n_series=2, n_instances=1,
                patient_id='VIEWER-GH'))

    @classmethod
    def tearDownClass(cls):
        cls.orthanc.stop()

    def synced_server(self, secret=SECRET):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        server = create_server(self.orthanc, 'Viewer PACS', secret)
        Server.synchronize([server], 'full')
        study, = Study.search([('server', '=', server.id)])
        return server, study

    @with_transaction()
    def test_check_finds_the_script_and_its_secret(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        server = create_server(self.orthanc, 'A', SECRET)
        self.assertTrue(server.validated)
        self.assertTrue(server.viewer_tokens)
        self.assertFalse(server.anonymous_access)
        self.assertIn('available (', server.check_message)
        self.assertNotIn(SECRET, server.check_message)

        # A new secret invalidates the tokens until both sides agree.
        Server.write([server], {'viewer_secret': viewer_token.new_secret()})
        self.assertFalse(server.viewer_tokens)
        Server.check_connection([server])
        self.assertFalse(server.viewer_tokens)
        self.assertIn('secret differs', server.check_message)

        from ..exceptions import ViewerSecretError
        with self.assertRaises(ViewerSecretError) as context:
            Server.write([server], {'viewer_secret': 'too short'})
        self.assertNotIn('too short', str(context.exception))

        Server.write([server], {'viewer_secret': None})
        Server.check_connection([server])
        self.assertFalse(server.viewer_tokens)
        self.assertIn('no viewer secret', server.check_message)

    @with_transaction()
    def test_open_in_viewer_reaches_the_study_and_is_logged(self):
        pool = Pool()
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        Series = pool.get('gnuhealth.imaging_orthanc.study_series')
        ViewerAccess = pool.get('gnuhealth.imaging_orthanc.viewer_access')
        server, study = self.synced_server()
        self.assertTrue(study.can_open_webviewer)
        self.assertFalse(study.can_open_stone)  # no Stone plugin in Debian
        action = Study.open_webviewer([study])
        self.assertEqual(action['type'], 'ir.action.url')
        url = urlsplit(action['url'])
        self.assertEqual(url.path, viewer_token.OPEN_ROUTE)
        token, = parse_qs(url.query)['token']
        payload = viewer_token.verify(SECRET, token)
        self.assertEqual(payload['st'], study.orthanc_UID)
        self.assertEqual(payload['us'], 'admin')

        with httpx.Client(base_url=self.orthanc.url, timeout=30) as browser:
            opened = browser.get(action['url'])
            self.assertEqual(opened.status_code, 303)
            first_series = study.series[0].orthanc_UID
            self.assertIn(first_series, opened.headers['location'])
            self.assertEqual(browser.get('/series/%s'
                    % first_series).status_code, 200)

        access, = ViewerAccess.search([('study', '=', study.id)])
        self.assertEqual((access.user.id, access.viewer, access.server),
            (Transaction().user, 'webviewer', server))
        self.assertEqual(study.viewer_accesses, (access,))

        series = study.series[1]
        action = Series.open_webviewer([series])
        payload = viewer_token.verify(SECRET,
            parse_qs(urlsplit(action['url']).query)['token'][0])
        self.assertEqual(payload['se'], series.orthanc_UID)
        self.assertEqual(ViewerAccess.search([('series', '=', series.id)],
                count=True), 1)

    @with_transaction()
    def test_lifetime(self):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        server, study = self.synced_server()
        self.assertEqual(server.viewer_token_lifetime, 10)
        Server.write([server], {'viewer_token_lifetime': 2})
        action = Study.open_webviewer([study])
        payload = viewer_token.verify(SECRET,
            parse_qs(urlsplit(action['url']).query)['token'][0])
        access = study.viewer_accesses[0]
        self.assertAlmostEqual(
            (access.expires_at - access.opened_at).total_seconds(), 120)
        self.assertAlmostEqual(payload['ex'] - access.opened_at.timestamp(),
            120, delta=5)

    @with_transaction()
    def test_server_without_the_script_keeps_plain_links(self):
        from ..exceptions import ViewerAccessError
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        plain = shared_server()
        upload_files(plain, [factory.image(patient_id='VIEWER-PLAIN')])
        server = create_server(plain, 'Plain', SECRET)
        self.assertTrue(server.validated)
        self.assertFalse(server.viewer_tokens)
        self.assertFalse(server.anonymous_access)
        self.assertIn('does not run the viewer-access script',
            server.check_message)
        Server.synchronize([server], 'full')
        study = Study.search([('server', '=', server.id)])[0]
        self.assertFalse(study.can_open_webviewer)
        self.assertTrue(study.explorer_link)
        with self.assertRaises(ViewerAccessError):
            Study.open_webviewer([study])


@needs_python_plugin
class AnonymousOrthancTestCase(unittest.TestCase):
    "Authentication off and no filter: the check warns."

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')
        cls.workdir = tempfile.mkdtemp(prefix='orthanc-test-')
        script = os.path.join(cls.workdir, 'nothing.py')
        with open(script, 'w') as stream:
            stream.write('import orthanc\n')
        cls.orthanc = OrthancServer(viewer_secret=SECRET,
            viewer_script=script, name='health_orthanc anonymous').start()

    @classmethod
    def tearDownClass(cls):
        cls.orthanc.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    @with_transaction()
    def test_anonymous_access_is_reported(self):
        server = create_server(self.orthanc, 'Open', SECRET)
        self.assertTrue(server.anonymous_access)
        self.assertFalse(server.viewer_tokens)
        self.assertIn('without any credentials', server.check_message)
