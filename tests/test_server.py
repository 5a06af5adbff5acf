# SPDX-License-Identifier: GPL-3.0-or-later
"""Server registry helpers, with a real Orthanc where there is a network."""
import unittest

from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from .orthanc_server import free_port, orthanc_available, shared_server


class ServerTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')

    def test_url_rules(self):
        from ..server import is_valid_url, normalize_url
        self.assertEqual(normalize_url(' http://pacs:8042/ '),
            'http://pacs:8042')
        for url in ('http://pacs:8042', 'https://pacs.example.org/orthanc'):
            self.assertTrue(is_valid_url(url), url)
        for url in ('ftp://pacs', 'pacs:8042', 'http://user:pw@pacs',
                'http://pacs:99999', 'http://', 'http://pacs/?a=1'):
            self.assertFalse(is_valid_url(url), url)

    @unittest.skipUnless(orthanc_available(),
        'the Orthanc executable (Debian orthanc) is not installed')
    @with_transaction()
    def test_quick_check_never_raises(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        orthanc = shared_server()
        self.assertTrue(Server.quick_check(
                orthanc.url, orthanc.user, orthanc.password))
        self.assertFalse(Server.quick_check(
                orthanc.url, orthanc.user, 'wrong'))
        self.assertFalse(Server.quick_check(
                'http://127.0.0.1:%s' % free_port(), None, None))
        self.assertFalse(Server.quick_check('not a url', None, None))
        self.assertFalse(Server.quick_check(None, None, None))

    @with_transaction()
    def test_stored_url_has_no_trailing_slash_and_must_be_http(self):
        from ..exceptions import ServerURLError
        Server = Pool().get('gnuhealth.orthanc.config')
        server, = Server.create([{
                    'label': 'A', 'domain': 'http://pacs.example.org/ ',
                    'proxy_domain': 'https://viewer.example.org/pacs/'}])
        self.assertEqual(server.domain, 'http://pacs.example.org')
        self.assertEqual(server.public_url, 'https://viewer.example.org/pacs')
        with self.assertRaises(ServerURLError):
            Server.create([{'label': 'B', 'domain': 'pacs.example.org'}])

    @with_transaction()
    def test_new_address_needs_a_new_check(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        server, = Server.create([{'label': 'A', 'domain': 'http://a.example',
                    'validated': True}])
        Server.write([server], {'domain': 'http://b.example'})
        self.assertFalse(server.validated)

    @with_transaction()
    def test_orthanc_id_unique_per_server(self):
        from trytond.model.exceptions import SQLConstraintError
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        Series = pool.get('gnuhealth.imaging_orthanc.study_series')
        one, two = Server.create([
                {'label': 'One', 'domain': 'http://one.example'},
                {'label': 'Two', 'domain': 'http://two.example'}])
        study = {'orthanc_UID': 'o-1', 'study_instance_UID': '1.2.3'}
        first, _ = Study.create([{**study, 'server': one.id},
                {**study, 'server': two.id}])
        with self.assertRaises(SQLConstraintError):
            Study.create([{**study, 'server': one.id}])

    @with_transaction()
    def test_series_orthanc_id_unique_per_server(self):
        from trytond.model.exceptions import SQLConstraintError
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        Series = pool.get('gnuhealth.imaging_orthanc.study_series')
        server, = Server.create([{'label': 'One', 'domain': 'http://one'}])
        study, = Study.create([{'server': server.id, 'orthanc_UID': 'o-1',
                    'study_instance_UID': '1.2.3'}])
        series = {'server': server.id, 'study': study.id,
            'orthanc_UID': 's-1', 'series_UID': '1.2.3.4'}
        Series.create([series])
        with self.assertRaises(SQLConstraintError):
            Series.create([series])
