# SPDX-License-Identifier: GPL-3.0-or-later
"""The Orthanc-side viewer-access script (orthanc_side/viewer_access.py)
inside a real Orthanc 1.10 running Debian's orthanc-python, configured as
the README says."""
import contextlib
import os
import shutil
import tempfile
import unittest

import httpx

from ..orthanc_side import viewer_token
from . import dicom_factory as factory
from .orthanc_server import (
    PLUGIN_FILES, PLUGINS_DIR, OrthancServer, orthanc_available,
    upload_files)

# No database: tests/conftest.py runs it in the SQLite phase only.
SAME_ON_EVERY_BACKEND = True

SECRET = viewer_token.new_secret()
PYTHON_PLUGIN = os.path.join(PLUGINS_DIR, PLUGIN_FILES['python'])

needs_python_plugin = unittest.skipUnless(
    orthanc_available() and os.path.exists(PYTHON_PLUGIN),
    'Orthanc or Debian orthanc-python is not installed')


def start_viewer_orthanc(test_class, name):
    """A throw-away Orthanc with the viewer-access script holding SECRET,
    stopped when test_class is done."""
    orthanc = OrthancServer(viewer_secret=SECRET, name=name).start()
    test_class.addClassCleanup(orthanc.stop)
    return orthanc


class TokenFormatTestCase(unittest.TestCase):
    "The shared format, without Orthanc."

    def issue(self, secret=SECRET, **values):
        values = {'study': 's', 'study_uid': '1.2', 'user': 'doc',
            'lifetime': 60, 'viewer': 'webviewer', **values}
        return viewer_token.issue(secret, **values)

    def test_round_trip(self):
        payload = viewer_token.verify(SECRET, self.issue(series='x'))
        self.assertEqual((payload['st'], payload['su'], payload['us'],
                payload['se']), ('s', '1.2', 'doc', 'x'))

    def test_refused(self):
        token = self.issue()
        head, body, signature = token.split('.')
        tampered = '.'.join([head, body[:-2] + ('A' if body[-2] != 'A'
                    else 'B') + body[-1], signature])
        for bad in (tampered, token + 'x', 'v2.' + body + '.' + signature,
                '', 'a.b', self.issue(lifetime=-1)):
            with self.assertRaises(viewer_token.InvalidToken, msg=bad):
                viewer_token.verify(SECRET, bad)
        with self.assertRaises(viewer_token.InvalidToken):
            viewer_token.verify(viewer_token.new_secret(), token)

    def test_short_secret_refused(self):
        with self.assertRaises(ValueError):
            self.issue(secret='short')


@needs_python_plugin
class ViewerAccessTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.orthanc = start_viewer_orthanc(cls,
            'health_orthanc viewer access')
        cls.study_a = cls._store('VIEWER-A')
        cls.study_b = cls._store('VIEWER-B')

    @classmethod
    def _store(cls, patient_id):
        "Upload a study; its Orthanc IDs and StudyInstanceUID."
        files = factory.study(n_series=2, n_instances=2,
            patient_id=patient_id)
        upload_files(cls.orthanc, files)
        with cls.admin() as client:
            study_id = client.get('/studies').json()
            study_id = [s for s in study_id
                if client.get('/studies/%s' % s).json()[
                    'PatientMainDicomTags']['PatientID'] == patient_id][0]
            study = client.get('/studies/%s' % study_id).json()
            instances = client.get('/studies/%s/instances' % study_id).json()
        return {
            'id': study_id,
            'uid': study['MainDicomTags']['StudyInstanceUID'],
            'series': study['Series'],
            'instances': [i['ID'] for i in instances],
            }

    @classmethod
    def admin(cls):
        return httpx.Client(base_url=cls.orthanc.url, auth=cls.orthanc.auth,
            timeout=30)

    def anonymous(self):
        return httpx.Client(base_url=self.orthanc.url, timeout=30)

    def token(self, study=None, secret=SECRET, lifetime=60, **values):
        study = study or self.study_a
        return viewer_token.issue(secret, study=study['id'],
            study_uid=study['uid'], user='doctor1', lifetime=lifetime,
            viewer='webviewer', **values)

    @contextlib.contextmanager
    def viewer(self, token):
        "A browser-like client that went through the opening route."
        with self.anonymous() as client:
            response = client.get('/health-orthanc/open',
                params={'token': token})
            self.assertEqual(response.status_code, 303, response.text)
            yield client

    def study_urls(self, study):
        series, instance = study['series'][0], study['instances'][0]
        return [
            '/studies/%s' % study['id'],
            '/studies/%s/series' % study['id'],
            '/series/%s' % series,
            '/instances/%s/tags?simplify' % instance,
            '/instances/%s/preview' % instance,
            '/instances/%s/frames/0/preview' % instance,
            '/web-viewer/series/%s' % series,
            '/web-viewer/is-stable-series/%s' % series,
            '/web-viewer/instances/jpeg95-%s_0' % instance,
            '/dicom-web/studies/%s/series' % study['uid'],
            '/dicom-web/studies?StudyInstanceUID=%s' % study['uid'],
            ]

    def test_token_opens_its_study_only(self):
        with self.viewer(self.token()) as client:
            for url in self.study_urls(self.study_a):
                self.assertEqual(client.get(url).status_code, 200, url)
            for url in self.study_urls(self.study_b) + [
                    '/studies', '/patients', '/changes', '/dicom-web/studies',
                    '/tools/find', '/app/explorer.html', '/statistics',
                    '/studies/%s/patient' % self.study_a['id']]:
                self.assertEqual(client.get(url).status_code, 403, url)
            viewer_page = client.get('/web-viewer/app/viewer.html')
            self.assertEqual(viewer_page.status_code, 200)

    def test_opening_sets_a_cookie_and_redirects_to_the_viewer(self):
        with self.anonymous() as client:
            response = client.get('/health-orthanc/open',
                params={'token': self.token(series=self.study_a['series'][1])})
        self.assertEqual(response.status_code, 303)
        self.assertEqual(response.headers['location'],
            '../web-viewer/app/viewer.html?series=%s'
            % self.study_a['series'][1])
        cookie = response.headers['set-cookie']
        self.assertTrue(cookie.startswith('hov_%s=' % self.study_a['id']))
        for attribute in ('HttpOnly', 'SameSite=Lax', 'Path=/', 'Max-Age='):
            self.assertIn(attribute, cookie)

    def test_two_studies_in_one_browser(self):
        with self.viewer(self.token(self.study_a)) as client:
            client.get('/health-orthanc/open',
                params={'token': self.token(self.study_b)})
            for study in (self.study_a, self.study_b):
                self.assertEqual(
                    client.get('/studies/%s' % study['id']).status_code, 200)

    def test_bad_tokens_refused(self):
        expired = self.token(lifetime=-1)
        other_secret = self.token(secret=viewer_token.new_secret())
        head, body, signature = self.token().split('.')
        tampered_payload = viewer_token._b64encode(
            viewer_token._b64decode(body).replace(
                self.study_a['id'].encode(), self.study_b['id'].encode()))
        tampered = '.'.join([head, tampered_payload, signature])
        for token in (expired, other_secret, tampered, 'garbage'):
            with self.anonymous() as client:
                response = client.get('/health-orthanc/open',
                    params={'token': token})
                self.assertEqual(response.status_code, 403)
                # The same token forged straight into a cookie.
                for study in (self.study_a, self.study_b):
                    client.cookies.set('hov_' + study['id'], token)
                for study in (self.study_a, self.study_b):
                    self.assertEqual(client.get(
                            '/studies/%s' % study['id']).status_code, 403)

    def test_token_is_read_only(self):
        with self.viewer(self.token()) as client:
            study = '/studies/%s' % self.study_a['id']
            self.assertEqual(client.delete(study).status_code, 403)
            self.assertEqual(client.put(study + '/metadata/1024',
                    content=b'x').status_code, 403)
            self.assertEqual(client.post(study + '/anonymize',
                    json={}).status_code, 403)
            self.assertEqual(client.post('/instances',
                    content=factory.image()).status_code, 403)
        with self.admin() as admin:
            self.assertEqual(admin.get(study).status_code, 200)

    def test_no_credentials_refused(self):
        with self.anonymous() as client:
            for url in ['/system', '/studies', '/studies/%s'
                    % self.study_a['id'], '/app/explorer.html',
                    '/health-orthanc/status']:
                self.assertEqual(client.get(url).status_code, 403, url)
            self.assertEqual(client.get('/health-orthanc/open').status_code,
                400)
        with httpx.Client(base_url=self.orthanc.url, timeout=30,
                auth=(self.orthanc.user, 'wrong')) as client:
            self.assertEqual(client.get('/studies').status_code, 403)

    def test_service_account_has_full_access(self):
        with self.admin() as client:
            self.assertEqual(client.get('/studies').status_code, 200)
            self.assertEqual(client.get('/statistics').status_code, 200)
            answer = upload_files(self.orthanc, [factory.image(
                        patient_id='VIEWER-C')])[0]
            self.assertEqual(client.delete('/studies/%s'
                    % answer['ParentStudy']).status_code, 200)
            status = client.get('/health-orthanc/status',
                params={'challenge': 'abc'}).json()
        self.assertEqual(status['Proof'], viewer_token.proof(SECRET, 'abc'))

    def test_script_path_wrong_orthanc_does_not_start(self):
        workdir = tempfile.mkdtemp(prefix='orthanc-test-')
        server = OrthancServer(viewer_secret=SECRET, workdir=workdir,
            viewer_script=os.path.join(workdir, 'missing.py'))
        try:
            with self.assertRaises(RuntimeError) as context:
                server.start()
            self.assertIn('exited with 255', str(context.exception))
        finally:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)

    def test_script_without_secret_orthanc_does_not_start(self):
        server = OrthancServer(viewer_secret='short')
        with self.assertRaises(RuntimeError) as context:
            server.start()
        self.assertIn('exited with 255', str(context.exception))
        server.stop()


if __name__ == '__main__':
    unittest.main()
