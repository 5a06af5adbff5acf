# SPDX-License-Identifier: GPL-3.0-or-later
"""In-place upgrade of a database created by the earlier health_orthanc
(gnuhealth-orthanc 5.0.0rc3 from PyPI, installed in its own virtual
environment by `make test`) with `trytond-admin -u health_orthanc`."""
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

OLD_VENV = os.environ.get('HEALTH_ORTHANC_OLD_VENV', '')
OLD_PYTHON = os.path.join(OLD_VENV, 'bin', 'python')
NEW_BIN = os.path.dirname(sys.executable)
DB = 'upgrade_health_orthanc'

# Written with the earlier module: its study stores the server's URL as
# text, and one URL matches no registered server.
OLD_DATA = '''
from trytond.pool import Pool
from trytond.transaction import Transaction
pool = Pool(DB)
pool.init()
with Transaction().start(DB, 0) as transaction:
    Server = pool.get('gnuhealth.orthanc.config')
    Study = pool.get('gnuhealth.imaging_orthanc.study')
    cursor = transaction.connection.cursor()
    server = Server.__table__()
    cursor.execute(*server.insert(
        [server.label, server.domain, server.user, server.password],
        [['Main PACS', 'http://pacs.example.org:8042', 'orthanc', 'secret']]))
    def study(uid, url):
        return {
            'server': url, 'patient_name': 'DOE^JOHN', 'patient_id': 'P1',
            'study_instance_UID': '1.2.' + uid, 'orthanc_UID': 'o-' + uid,
            'notes': 'kept',
            'series': [('create', [{
                'orthanc_UID': 's-' + uid, 'series_UID': '1.3.' + uid,
                'modality': 'CT',
                'instances': [('create', [{
                    'orthanc_UID': 'i-' + uid,
                    'sop_instance_UID': '1.4.' + uid}])],
                }])],
            }
    Study.create([study('1', 'http://pacs.example.org:8042/'),
        study('2', 'http://old.example.org/orthanc')])
    transaction.commit()
'''

NEW_CHECK = '''
from trytond.pool import Pool
from trytond.transaction import Transaction
pool = Pool(DB)
pool.init()
with Transaction().start(DB, 0):
    Study = pool.get('gnuhealth.imaging_orthanc.study')
    Instance = pool.get('gnuhealth.imaging_orthanc.series_instances')
    Group = pool.get('res.group')
    Menu = pool.get('ir.ui.menu')
    for study in Study.search([], order=[('orthanc_UID', 'ASC')]):
        print('STUDY', study.orthanc_UID, study.server.label,
            study.server.domain, study.notes, study.series[0].server.id
            == study.server.id)
    print('INSTANCES', len(Instance.search([('server', '!=', None)])))
    print('GROUPS', len(Group.search([('name', 'like', 'Health Imaging Orthanc%')])))
    print('MENUS', len(Menu.search([('name', '=', 'Orthanc Servers')])))
'''


def postgresql_uri():
    uri = os.environ.get('TRYTOND_DATABASE_URI', '')
    return uri if uri.startswith('postgresql') else None


@unittest.skipUnless(os.path.exists(OLD_PYTHON),
    "set HEALTH_ORTHANC_OLD_VENV to a venv with gnuhealth-orthanc 5.0.0rc3")
class UpgradeTestCase(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='health-orthanc-upgrade-')
        self.addCleanup(shutil.rmtree, self.directory)
        uri = postgresql_uri() or 'sqlite://'
        self.config = os.path.join(self.directory, 'trytond.conf')
        with open(self.config, 'w') as config:
            config.write('[database]\nuri = %s\npath = %s\n'
                % (uri, self.directory))
        password = os.path.join(self.directory, 'password')
        with open(password, 'w') as fp:
            fp.write('admin\n')
        self.env = {key: value for key, value in os.environ.items()
            if not key.startswith(('TRYTOND_', 'DB_'))}
        self.env['TRYTONPASSFILE'] = password
        self.create_database(uri)

    def create_database(self, uri):
        if uri.startswith('postgresql'):
            import psycopg2
            connection = psycopg2.connect(uri.rstrip('/') + '/postgres')
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute('DROP DATABASE IF EXISTS "%s"' % DB)
                cursor.execute('CREATE DATABASE "%s"' % DB)
            connection.close()
            self.addCleanup(self.drop_database, uri)
        else:
            open(os.path.join(self.directory, DB + '.sqlite'), 'w').close()

    def drop_database(self, uri):
        import psycopg2
        connection = psycopg2.connect(uri.rstrip('/') + '/postgres')
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute('DROP DATABASE IF EXISTS "%s"' % DB)
        connection.close()

    def admin(self, bin_dir, *args):
        self.run_checked([os.path.join(bin_dir, 'trytond-admin'),
                '-c', self.config, '-d', DB, *args])

    def python(self, python, code):
        script = 'from trytond.config import config\n' \
            'config.update_etc(%r)\nDB = %r\n' % (self.config, DB) \
            + textwrap.dedent(code)
        return self.run_checked([python, '-c', script])

    def run_checked(self, command):
        process = subprocess.run(command, env=self.env, capture_output=True,
            text=True, timeout=600)
        self.assertEqual(process.returncode, 0,
            '%s\n%s' % (' '.join(command[:2]), process.stderr[-3000:]))
        return process.stdout

    def test_upgrade_in_place(self):
        old_bin = os.path.dirname(OLD_PYTHON)
        self.admin(old_bin, '--all', '--email', 'admin@example.org')
        self.admin(old_bin, '-u', 'health_orthanc',
            '--activate-dependencies')
        self.python(OLD_PYTHON, OLD_DATA)

        self.admin(NEW_BIN, '-u', 'health_orthanc')

        lines = self.python(sys.executable, NEW_CHECK).splitlines()
        self.assertEqual(lines, [
                'STUDY o-1 Main PACS http://pacs.example.org:8042 kept True',
                'STUDY o-2 http://old.example.org/orthanc '
                'http://old.example.org/orthanc kept True',
                'INSTANCES 2',
                'GROUPS 2',
                'MENUS 1',
                ])
