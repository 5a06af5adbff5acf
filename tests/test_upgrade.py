# SPDX-License-Identifier: GPL-3.0-or-later
"""In-place upgrade of databases created by the released health_orthanc
(gnuhealth-orthanc 5.0.0rc3 and 5.0.4 from PyPI, each installed in its own
virtual environment by `make test`) with `trytond-admin -u health_orthanc`,
on the backend of the run (SQLite or PostgreSQL)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

from . import dicom_factory as dicom
from .orthanc_server import OrthancServer, orthanc_available, upload_files

HERE = os.path.dirname(os.path.abspath(__file__))
# The folder holding venv-old-<version> (`make old-venv` builds them).
OLD_VENVS = os.environ.get('HEALTH_ORTHANC_OLD_VENVS', '')
NEW_BIN = os.path.dirname(sys.executable)
DB = 'upgrade_health_orthanc'


def old_python(version):
    return os.path.join(OLD_VENVS, 'venv-old-' + version, 'bin', 'python')

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


class UpgradeMixin:
    "A database made by an earlier release, upgraded by this module."
    version = None

    def setUp(self):
        self.old_python = old_python(self.version)
        if not os.path.exists(self.old_python):
            self.skipTest("no virtual environment with gnuhealth-orthanc %s "
                "in HEALTH_ORTHANC_OLD_VENVS (make old-venv)" % self.version)
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
        return self.run_checked([os.path.join(bin_dir, 'trytond-admin'),
                '-c', self.config, '-d', DB, *args])

    def python(self, python, code):
        script = 'from trytond.config import config\n' \
            'config.update_etc(%r)\nDB = %r\n' % (self.config, DB) \
            + textwrap.dedent(code)
        return self.run_checked([python, '-c', script])

    def run_checked(self, command):
        process = subprocess.run(command, env=self.env, capture_output=True,
            text=True, timeout=900)
        self.assertEqual(process.returncode, 0,
            '%s\n%s' % (' '.join(command[:2]), process.stderr[-3000:]))
        self.stderr = process.stderr
        return process.stdout

    def install_old(self):
        """A database with the earlier release activated: one trytond-admin
        run initialises the empty database, then activates the module (a
        second run would load the pool and update ir and res again)."""
        old_bin = os.path.dirname(self.old_python)
        self.admin(old_bin, '-u', 'health_orthanc',
            '--activate-dependencies', '--email', 'admin@example.org')

    def upgrade(self):
        "Upgrade; trytond logs a record it could not delete as an error."
        self.admin(NEW_BIN, '-u', 'health_orthanc')
        self.assertNotIn('ERROR', self.stderr, self.stderr[-3000:])


class RC3UpgradeTestCase(UpgradeMixin, unittest.TestCase):
    version = '5.0.0rc3'

    def test_upgrade_in_place(self):
        self.install_old()
        self.python(self.old_python, OLD_DATA)

        self.upgrade()

        lines = self.python(sys.executable, NEW_CHECK).splitlines()
        self.assertEqual(lines, [
                'STUDY o-1 Main PACS http://pacs.example.org:8042 kept True',
                'STUDY o-2 http://old.example.org/orthanc '
                'http://old.example.org/orthanc kept True',
                'INSTANCES 2',
                'GROUPS 2',
                'MENUS 1',
                ])


# XML ids of 5.0.4 that this module no longer defines: the upgrade deletes
# their records (access rules and menu rights renamed or replaced by the
# role table's, the unused cron user, the server button and icon dropped).
DROPPED_504 = {
    'access_group_imaging_orthanc_series_instances',
    'access_group_imaging_orthanc_study',
    'access_group_imaging_orthanc_study_admin',
    'access_group_imaging_orthanc_study_series',
    'access_imaging_orthanc_doctor',
    'access_imaging_orthanc_series_instances',
    'access_imaging_orthanc_series_instances_admin',
    'access_imaging_orthanc_series_instances_doctor',
    'access_imaging_orthanc_study', 'access_imaging_orthanc_study_admin',
    'access_imaging_orthanc_study_series',
    'access_imaging_orthanc_study_series_admin',
    'access_imaging_orthanc_study_series_doctor',
    'access_orthanc_config_admin', 'access_orthanc_config_doctor',
    'access_orthanc_config_server', 'access_series_instances_admin',
    'access_study_series_admin', 'excute_icon',
    'group_imaging_orthanc_menu_admin', 'menu_access_orthanc_admin',
    'menu_access_orthanc_config_admin', 'menu_access_orthanc_doctor',
    'menu_group_imaging_orthanc', 'menu_group_imaging_orthanc_parent',
    'orthanc_access_config_admin', 'orthanc_access_config_default',
    'orthanc_access_config_provider', 'orthanc_user_group_health_admin',
    'remove_config_server_button',
    }

SYNC_AFTER_UPGRADE = '''
from trytond.modules.health_orthanc.tests.stack import synchronize
from trytond.pool import Pool
from trytond.transaction import Transaction
pool = Pool(DB)
pool.init()
incremental = synchronize(DB, None, 'incremental')
full = synchronize(DB, None, 'full')
with Transaction().start(DB, 0):
    Study = pool.get('gnuhealth.imaging_orthanc.study')
    Series = pool.get('gnuhealth.imaging_orthanc.study_series')
    studies = Study.search([], order=[('id', 'ASC')])
    uids = [s.orthanc_UID for s in studies]
    print('INCREMENTAL', incremental.created, incremental.removed)
    print('FULL', full.created, full.updated, full.removed)
    print('STUDIES', len(uids), len(set(uids)))
    # What people wrote, after the new sync rewrote the mirrored values.
    for study in studies:
        print('STUDY', study.id, study.patient and study.patient.id,
            study.imaging_test and study.imaging_test.id, study.notes,
            study.merge_comment)
    for series in Series.search([], order=[('id', 'ASC')]):
        print('SERIES', series.id, series.notes)
'''


def backend_name():
    return 'postgresql' if postgresql_uri() else 'sqlite'


@unittest.skipUnless(orthanc_available(), "Orthanc is not installed")
class Release504UpgradeTestCase(UpgradeMixin, unittest.TestCase):
    """5.0.4, filled by its own wizard and synchronisations against a real
    Orthanc and by people's work, upgraded and compared field by field."""
    version = '5.0.4'

    def setUp(self):
        super().setUp()
        self.orthanc = OrthancServer().start()
        self.addCleanup(self.orthanc.stop)
        upload_files(self.orthanc,
            dicom.study(n_series=2, n_instances=2, patient_id='HOSP00001',
                patient_name='LEE^ANN', accession='ACC1')
            + dicom.study(n_series=1, n_instances=1, patient_id='P2',
                patient_name='DOE^JOHN', accession='ACC2')
            + dicom.study(n_series=1, n_instances=3, patient_id='P3',
                patient_name='ROE^RICHARD', accession='ACC3')
            + [dicom.structured_report(patient_id='P3',
                    patient_name='ROE^RICHARD')])

    def script(self, python, name, *args):
        return self.run_checked([python, os.path.join(HERE, name),
                self.config, DB, *args])

    def snapshot(self, python):
        return json.loads(self.script(python, 'upgrade_snapshot.py'))

    def test_upgrade_in_place(self):
        self.install_old()
        # A hospital working in Spanish has 5.0.4's translations loaded.
        self.admin(os.path.dirname(self.old_python), '-u', 'health_orthanc',
            '-l', 'es')
        self.script(self.old_python, 'upgrade_fill_504.py',
            self.orthanc.url, self.orthanc.user, self.orthanc.password)
        before = self.snapshot(self.old_python)

        self.upgrade()

        after = self.snapshot(sys.executable)
        report = {
            'rows': self.compare_rows(before, after),
            'functions': self.compare_functions(before, after),
            'xml_ids': self.compare_xml_ids(before, after),
            'orphans': {name: [o for o in found
                    if o not in before['orphans'][name]]
                for name, found in after['orphans'].items()},
            'image': [before['image'], after['image']],
            'translations': [before['translations'], after['translations']],
            }
        self.write_report(report)
        for model, result in report['rows'].items():
            self.assertEqual(result['rows after'], result['rows before'],
                model)
            self.assertEqual(result['differences'], [], model)
        self.assertTrue(all(report['rows'][m]['rows before'] for m in (
                    'gnuhealth.orthanc.config',
                    'gnuhealth.imaging_orthanc.study',
                    'gnuhealth.imaging_orthanc.study_series',
                    'gnuhealth.imaging_orthanc.series_instances',
                    'gnuhealth.orthanc.patient', 'gnuhealth.orthanc.study')),
            "every 5.0.4 model holds rows")
        self.assertEqual(report['functions']['differences'], [])
        self.assertEqual(report['xml_ids']['moved'], [])
        self.assertEqual(set(report['xml_ids']['dropped']), DROPPED_504)
        self.assertEqual(report['orphans'],
            {name: [] for name in report['orphans']})
        # New columns of upgraded rows hold their defaults.
        server, = after['tables']['gnuhealth.orthanc.config']
        self.assertEqual((server['verify_tls'], server['timeout']),
            (True, 30.0))
        self.assertTrue(before['image']['png'])
        self.assertTrue(after['image']['png'])

        # The upgraded database goes on from 5.0.4's cursor.
        upload_files(self.orthanc, dicom.study(n_series=1, n_instances=1,
                patient_id='P4', patient_name='POE^EDGAR'))
        old_studies = before['tables']['gnuhealth.imaging_orthanc.study']
        old_series = before['tables']['gnuhealth.imaging_orthanc.study_series']
        count = len(old_studies)
        lines = self.python(sys.executable, SYNC_AFTER_UPGRADE).splitlines()
        # The full sync fills the new columns of the upgraded studies.
        self.assertEqual(lines[:3], [
                'INCREMENTAL 1 0',
                'FULL 0 %d 0' % count,
                'STUDIES %d %d' % (count + 1, count + 1),
                ])
        self.assertEqual(lines[3:3 + count], ['STUDY %s %s %s %s %s' % (
                        s['id'], s['patient'], s['imaging_test'], s['notes'],
                        s['merge_comment']) for s in old_studies])
        self.assertEqual([line for line in lines if line.startswith('SERIES')
                and int(line.split()[1]) <= max(s['id'] for s in old_series)],
            ['SERIES %s %s' % (s['id'], s['notes']) for s in old_series])

    def compare_rows(self, before, after):
        "Every stored value of 5.0.4, compared with the upgraded row."
        result = {}
        for model, old_rows in before['tables'].items():
            new_rows = {r['id']: r for r in after['tables'][model]}
            differences, compared = [], set()
            for old in old_rows:
                new = new_rows.get(old['id'])
                if new is None:
                    differences.append([old['id'], 'row lost'])
                    continue
                for column, value in old.items():
                    compared.add(column)
                    if not self.same_value(model, column, value,
                            new.get(column, '<dropped>'), after):
                        differences.append([old['id'], column, value,
                                new.get(column, '<dropped>')])
            result[model] = {
                'rows before': len(old_rows),
                'rows after': len(after['tables'][model]),
                'columns compared': sorted(compared),
                'differences': differences,
                }
        return result

    @staticmethod
    def same_value(model, column, old, new, after):
        if model == 'gnuhealth.imaging_orthanc.study' and column == 'server':
            # The URL as text became the server record with that URL.
            servers = {s['id']: s['domain']
                for s in after['tables']['gnuhealth.orthanc.config']}
            return servers.get(new) == old.strip().rstrip('/')
        return old == new

    @staticmethod
    def compare_functions(before, after):
        """5.0.4's computed names read the same, except that the 4.x
        models' links open the public URL, as every other link does."""
        servers = before['tables']['gnuhealth.orthanc.config']
        bases = [(s['domain'].rstrip('/') + '/', s['proxy_domain'])
            for s in servers if s['proxy_domain']]
        differences, compared = [], 0
        for model, records in before['functions'].items():
            for record_id, values in records.items():
                new_values = after['functions'][model].get(record_id, {})
                for name, value in values.items():
                    compared += 1
                    expected = value
                    if model.startswith('gnuhealth.orthanc.') \
                            and model != 'gnuhealth.orthanc.config' \
                            and isinstance(value, str):
                        for domain, public in bases:
                            expected = expected.replace(domain,
                                public.rstrip('/') + '/')
                    new = new_values.get(name)
                    if isinstance(value, list):  # One2Many: ids, any order
                        expected, new = sorted(value), sorted(new or [])
                    if new != expected:
                        differences.append([model, record_id, name, value,
                                new_values.get(name)])
        return {'compared': compared, 'differences': differences}

    @staticmethod
    def compare_xml_ids(before, after):
        kept, moved, dropped = [], [], []
        for fs_id, target in before['xml_ids'].items():
            if fs_id not in after['xml_ids']:
                dropped.append(fs_id)
            elif after['xml_ids'][fs_id] != target:
                moved.append([fs_id, target, after['xml_ids'][fs_id]])
            else:
                kept.append(fs_id)
        added = sorted(set(after['xml_ids']) - set(before['xml_ids']))
        return {'kept': len(kept), 'moved': moved, 'dropped': sorted(dropped),
            'added': len(added)}

    def write_report(self, report):
        "The field-by-field result, kept in build/ for the README."
        path = os.path.join(os.path.dirname(HERE), 'build',
            'upgrade-5.0.4-%s.json' % backend_name())
        if os.path.isdir(os.path.dirname(path)):
            with open(path, 'w') as fp:
                json.dump(report, fp, indent=1, sort_keys=True)
