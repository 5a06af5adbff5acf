# SPDX-License-Identifier: GPL-3.0-or-later
"""Background work on the real engine: trytond-worker and trytond-cron
processes on PostgreSQL, against a real Orthanc.

The sync wizard, with `[queue] worker = True`, returns once the work is
queued; two worker processes take the queued syncs of one server (the
server's lock lets one at a time sync it: no duplicate, nothing lost); the
cron process runs the due sync job and leaves the others for later.  The
database is a copy of the suite's activated template, so what the processes
commit stays out of the other tests' database.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

from . import dicom_factory as dicom
from .orthanc_server import OrthancServer, orthanc_available, upload_files
from .test_upgrade import postgresql_uri

BIN = os.path.dirname(sys.executable)
MODULE = 'health_orthanc'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = {}
WAIT = 300  # seconds at most for the processes to do the work: a bound,
# not a measure (figures are printed, never asserted).

HEADER = '''
import time
from trytond.pool import Pool
from trytond.transaction import Transaction
pool = Pool(DB)
pool.init()
'''

ADD_SERVER = '''
with Transaction().start(DB, 0) as transaction:
    Server = pool.get('gnuhealth.orthanc.config')
    Server.create([{'label': 'PACS', 'domain': URL, 'user': USER,
                'password': PASSWORD}])
    transaction.commit()
'''

RUN_WIZARD = '''
with Transaction().start(DB, 0) as transaction:
    Wizard = pool.get('gnuhealth.imaging_orthanc.get_new_studies',
        type='wizard')
    started = time.monotonic()
    session_id, _, _ = Wizard.create()
    answer = Wizard.execute(session_id, {'start': {'servers': []}}, 'sync')
    transaction.commit()
    print('RETURNED', time.monotonic() - started)
    print('MESSAGE', answer.get('view', {}).get('defaults', {}).get('message'))
'''

QUEUE_SYNCS = '''
with Transaction().start(DB, 0) as transaction:
    Server = pool.get('gnuhealth.orthanc.config')
    servers = Server.search([])
    for kind in ['full', 'full', 'incremental', 'full']:
        Server.__queue__.run_queued_sync(servers, kind)
    transaction.commit()
'''

USERS = '''
with Transaction().start(DB, 0) as transaction:
    User = pool.get('res.user')
    Data = pool.get('ir.model.data')
    User.create([{'name': login, 'login': login, 'groups': [
                    ('add', [Data.get_id('health_orthanc', group)])]}
            for login, group in [
                ('radiographer', 'group_imaging_orthanc'),
                ('imaging_admin', 'group_imaging_orthanc_admin')]])
    transaction.commit()
'''

# Clicks a button of the server form as LOGIN, with the access checks of a
# client's call (the button's groups, ir.model.button).
CLICK = '''
from trytond.model.modelview import AccessButtonError
with Transaction().start(DB, 0):
    uid, = [u.id for u in pool.get('res.user').search([('login', '=', LOGIN)])]
with Transaction().start(DB, uid, context={'_check_access': True}) as transaction:
    Server = pool.get('gnuhealth.orthanc.config')
    started = time.monotonic()
    try:
        answer = getattr(Server, BUTTON)(Server.search([]))
    except AccessButtonError:
        print('REFUSED', uid)
    else:
        transaction.commit()
        print('RETURNED', uid, answer, time.monotonic() - started)
'''

# The upload wizard's work (upload_and_sync) as LOGIN, access checked.
UPLOAD = '''
with Transaction().start(DB, 0):
    uid, = [u.id for u in pool.get('res.user').search([('login', '=', LOGIN)])]
from trytond.transaction import TransactionError
extras, started = {}, time.monotonic()
while True:  # what trytond's dispatcher does when lock() restarts
    with Transaction().start(DB, uid, context={'_check_access': True},
            **extras) as transaction:
        Upload = pool.get('gnuhealth.imaging_orthanc.upload_image_data',
            type='wizard')
        server, = pool.get('gnuhealth.orthanc.config').search([])
        try:
            report = Upload.upload_and_sync(server, DATA, ['upload.dcm'])
        except TransactionError as exc:
            transaction.rollback()
            exc.fix(extras)
            continue
        transaction.commit()
        break
print('UPLOADED', len(report.studies), report.sync_queued,
    time.monotonic() - started)
'''

SCHEDULE = '''
import datetime
with Transaction().start(DB, 0) as transaction:
    Cron = pool.get('ir.cron')
    now = datetime.datetime.now()
    for cron in Cron.search([('method', 'like', 'gnuhealth.orthanc.config|%')]):
        due = cron.method.endswith('cron_sync_changes')
        Cron.write([cron], {'active': True, 'next_call':
                now - datetime.timedelta(minutes=1) if due
                else now + datetime.timedelta(days=1)})
        print('CRON', cron.method.split('|')[1], 'due' if due else 'later')
    transaction.commit()
'''


@unittest.skipUnless(postgresql_uri(), "trytond's worker needs PostgreSQL")
@unittest.skipUnless(orthanc_available(), "Orthanc is not installed")
class WorkerTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        import psycopg2
        from trytond.tests import test_tryton
        test_tryton.activate_module(MODULE)  # makes the cached template
        cache = os.environ.get('DB_CACHE', '')
        if not cache.startswith('postgresql'):
            raise unittest.SkipTest("no PostgreSQL template (DB_CACHE)")
        template = test_tryton._db_cache_file(cache, MODULE)[
            len(cache) + 1:]
        cls.uri = postgresql_uri()
        cls.database = 'worker_health_orthanc_%d' % os.getpid()
        server = psycopg2.connect(cls.uri.rstrip('/') + '/postgres')
        server.autocommit = True
        with server.cursor() as cursor:
            cursor.execute('DROP DATABASE IF EXISTS "%s"' % cls.database)
            cursor.execute('CREATE DATABASE "%s" TEMPLATE "%s"'
                % (cls.database, template))
        server.close()
        cls.addClassCleanup(cls.drop_database)
        cls.addClassCleanup(cls.write_figures)
        cls.directory = tempfile.mkdtemp(prefix='health-orthanc-worker-')
        cls.addClassCleanup(shutil.rmtree, cls.directory, True)
        cls.config = os.path.join(cls.directory, 'trytond.conf')
        with open(cls.config, 'w') as fp:
            fp.write('[database]\nuri = %s\npath = %s\n[queue]\nworker = True\n'
                % (cls.uri, cls.directory))
        cls.env = {k: v for k, v in os.environ.items()
            if not k.startswith(('TRYTOND_', 'DB_'))}
        cls.orthanc = OrthancServer().start()
        cls.addClassCleanup(cls.orthanc.stop)
        cls.python(ADD_SERVER)
        cls.python(USERS)

    @staticmethod
    def write_figures():
        "The timings, kept in build/ for the README (never asserted)."
        if FIGURES and os.path.isdir(os.path.join(ROOT, 'build')):
            with open(os.path.join(ROOT, 'build', 'worker-postgresql.json'),
                    'w') as fp:
                json.dump(FIGURES, fp, indent=1, sort_keys=True)

    @classmethod
    def connect(cls):
        import psycopg2
        return psycopg2.connect(cls.uri.rstrip('/') + '/' + cls.database)

    @classmethod
    def drop_database(cls):
        import psycopg2
        server = psycopg2.connect(cls.uri.rstrip('/') + '/postgres')
        server.autocommit = True
        with server.cursor() as cursor:
            cursor.execute('DROP DATABASE IF EXISTS "%s"' % cls.database)
        server.close()

    @classmethod
    def python(cls, code, **values):
        script = ('from trytond.config import config\n'
            'config.update_etc(%r)\nDB = %r\nURL = %r\nUSER = %r\n'
            'PASSWORD = %r\n' % (cls.config, cls.database, cls.orthanc.url,
                cls.orthanc.user, cls.orthanc.password)
            + ''.join('%s = %r\n' % item for item in values.items())
            + textwrap.dedent(HEADER) + textwrap.dedent(code))
        process = subprocess.run([sys.executable, '-c', script],
            env=cls.env, capture_output=True, text=True, timeout=WAIT)
        if process.returncode:
            raise AssertionError(process.stderr[-3000:])
        return process.stdout.splitlines()

    def start(self, name, *args):
        log = open(os.path.join(self.directory, name + '.log'), 'ab')
        self.addCleanup(log.close)
        process = subprocess.Popen([os.path.join(BIN, name), '-c',
                self.config, '-d', self.database, *args],
            env=self.env, stdout=log, stderr=log)
        self.addCleanup(self.stop, process)
        return process

    @staticmethod
    def stop(process):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def sql(self, query):
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(query)
                return cursor.fetchall()
        finally:
            connection.close()

    def pending_tasks(self):
        (count,), = self.sql(
            'SELECT COUNT(*) FROM ir_queue WHERE finished_at IS NULL')
        return count

    def wait_until(self, condition):
        "Seconds until condition() holds (at most WAIT)."
        started = time.monotonic()
        while not condition():
            self.assertLess(time.monotonic() - started, WAIT,
                "the background processes did not finish the work")
            time.sleep(0.2)
        return time.monotonic() - started

    def counts(self):
        "Studies, series and instances stored."
        return tuple(self.sql('SELECT COUNT(*) FROM %s' % table)[0][0]
            for table in ['gnuhealth_imaging_orthanc_study',
                'gnuhealth_imaging_orthanc_study_series',
                'gnuhealth_imaging_orthanc_series_instances'])

    def studies(self):
        return self.sql('SELECT "orthanc_UID" '
            'FROM gnuhealth_imaging_orthanc_study')

    def log(self, name):
        with open(os.path.join(self.directory, name + '.log')) as fp:
            return fp.read()

    def test_1_wizard_queues_and_worker_syncs(self):
        upload_files(self.orthanc, dicom.study(n_series=2, n_instances=3,
                patient_id='W1', accession='W1'))
        lines = self.python(RUN_WIZARD)
        returned = float(lines[0].split()[1])
        self.assertIn('MESSAGE', lines[1])
        # Nothing synchronised yet: the work waits in the queue.
        self.assertEqual(self.pending_tasks(), 1)
        self.assertEqual(self.studies(), [])

        self.start('trytond-worker', '-n', '1')
        waited = self.wait_until(lambda: self.pending_tasks() == 0)
        self.assertEqual(len(self.studies()), 1)
        FIGURES['wizard returned (s)'] = returned
        FIGURES['worker done after its start (s)'] = waited

    def test_2_two_workers_one_server(self):
        studies, series, instances = self.counts()
        upload_files(self.orthanc, [f
                for n in range(3)
                for f in dicom.study(n_series=2, n_instances=4,
                    patient_id='W2%d' % n, accession='W2%d' % n)])
        self.python(QUEUE_SYNCS)
        self.assertEqual(self.pending_tasks(), 4)
        self.start('trytond-worker', '-n', '1')
        self.start('trytond-worker', '-n', '1')
        waited = self.wait_until(lambda: self.pending_tasks() == 0)
        uids = [uid for uid, in self.studies()]
        self.assertEqual(len(set(uids)), len(uids), "no duplicate")
        self.assertEqual(self.counts(),
            (studies + 3, series + 3 * 2, instances + 3 * 2 * 4))
        FIGURES['two workers, 4 queued syncs of one server (s)'] = waited

    def test_3_cron_runs_what_is_due(self):
        studies = len(self.studies())
        upload_files(self.orthanc, dicom.study(n_series=1, n_instances=2,
                patient_id='W3', accession='W3'))
        self.assertEqual(sorted(self.python(SCHEDULE)), [
                'CRON cron_full_sync later',
                'CRON cron_sync_changes due',
                ])
        before, = self.sql('SELECT last_sync_date, last_sync_kind '
            'FROM gnuhealth_orthanc_config')
        started = time.monotonic()
        cron = self.start('trytond-cron', '--once')
        self.assertEqual(cron.wait(WAIT), 0, self.log('trytond-cron'))
        elapsed = time.monotonic() - started
        after, = self.sql('SELECT last_sync_date, last_sync_kind '
            'FROM gnuhealth_orthanc_config')
        self.assertNotEqual(after[0], before[0])
        self.assertEqual(after[1], 'incremental')
        self.assertEqual(len(self.studies()), studies + 1)
        rows = self.sql("SELECT method, next_call > NOW() FROM ir_cron "
            "WHERE method LIKE 'gnuhealth.orthanc.config|%' ORDER BY method")
        self.assertEqual(rows, [
                ('gnuhealth.orthanc.config|cron_full_sync', True),
                ('gnuhealth.orthanc.config|cron_sync_changes', True),
                ])
        FIGURES['trytond-cron --once with the due sync (s)'] = elapsed

    def click(self, login, button):
        "(user id, answer, seconds) of the click, or (user id,) if refused."
        words = self.python(CLICK, LOGIN=login, BUTTON=button)[-1].split()
        if words[0] == 'REFUSED':
            return (int(words[1]),)
        return int(words[1]), words[2], float(words[3])

    def user_id(self, login):
        (user_id,), = self.sql(
            "SELECT id FROM res_user WHERE login = '%s'" % login)
        return user_id

    def queued_users(self):
        "The user of each pending task: the worker runs it as this user."
        return [json.loads(data)['user'] if isinstance(data, str)
            else data['user'] for data, in self.sql(
                'SELECT data FROM ir_queue WHERE finished_at IS NULL '
                'ORDER BY id')]

    def server_notes(self):
        return [reason for reason, in self.sql('SELECT reason '
                'FROM gnuhealth_imaging_orthanc_sync_problem '
                'WHERE orthanc_id IS NULL ORDER BY id')]

    def test_4_buttons_queue_as_the_user(self):
        "A radiographer's sync button returns at once; the worker syncs."
        studies = len(self.studies())
        upload_files(self.orthanc, dicom.study(n_series=1, n_instances=2,
                patient_id='W4', accession='W4'))
        radiographer, answer, returned = self.click(
            'radiographer', 'sync_changes')
        self.assertEqual(answer, 'reload')  # the form shows the note
        # Full sync stays the imaging administrator's: refused, not queued.
        self.assertEqual(self.click('radiographer', 'full_sync'),
            (radiographer,))
        admin, _, returned_full = self.click('imaging_admin', 'full_sync')
        self.assertEqual(self.queued_users(), [radiographer, admin])
        self.assertEqual(len(self.studies()), studies)
        notes = self.server_notes()
        self.assertEqual(len(notes), 2)
        self.assertTrue(all('queued' in n for n in notes), notes)

        self.start('trytond-worker', '-n', '1')
        waited = self.wait_until(lambda: self.pending_tasks() == 0)
        self.assertEqual(len(self.studies()), studies + 1)
        # The runs cleared the notes of their queuing and failed nowhere.
        self.assertEqual(self.server_notes(), [])
        (error,), = self.sql('SELECT last_sync_error '
            'FROM gnuhealth_orthanc_config')
        self.assertIsNone(error)
        FIGURES['sync button returned, radiographer (s)'] = returned
        FIGURES['full sync button returned, imaging admin (s)'] = (
            returned_full)
        FIGURES['worker ran both queued syncs after its start (s)'] = waited

    def test_5_queued_sync_of_a_busy_server_ends(self):
        "A queued sync that finds the server busy is skipped with a note."
        from trytond.modules.health_orthanc.sync import sync_lock_key
        studies = len(self.studies())
        upload_files(self.orthanc, dicom.study(n_series=1, n_instances=1,
                patient_id='W5', accession='W5'))
        (server_id,), = self.sql('SELECT id FROM gnuhealth_orthanc_config')
        busy = self.connect()  # another sync's lock, held by this test
        busy.autocommit = True
        self.addCleanup(busy.close)
        with busy.cursor() as cursor:
            cursor.execute('SELECT pg_advisory_lock(%s)',
                (sync_lock_key(server_id),))
        self.click('radiographer', 'sync_changes')
        self.start('trytond-worker', '-n', '1')
        self.wait_until(lambda: self.pending_tasks() == 0)
        self.assertEqual(len(self.studies()), studies)
        self.assertTrue(any('already being synchronized' in n
                for n in self.server_notes()), self.server_notes())
        with busy.cursor() as cursor:
            cursor.execute('SELECT pg_advisory_unlock(%s)',
                (sync_lock_key(server_id),))
        # The next run, not a retry, stores what the skipped one left.
        self.click('radiographer', 'sync_changes')
        self.wait_until(lambda: self.pending_tasks() == 0)
        self.assertEqual(len(self.studies()), studies + 1)
        self.assertEqual(self.server_notes(), [])

    def test_6_upload_stores_its_studies_and_queues_the_sync(self):
        "The upload shows its study at once; the rest of the sync is queued."
        studies = len(self.studies())
        # Sent by a modality meanwhile: the queued sync stores it.
        upload_files(self.orthanc, dicom.study(n_series=1, n_instances=1,
                patient_id='W6A', accession='W6A'))
        data, = dicom.study(n_series=1, n_instances=1, patient_id='W6',
            accession='W6')
        words = self.python(UPLOAD, LOGIN='radiographer', DATA=data
            )[-1].split()
        self.assertEqual(words[:3], ['UPLOADED', '1', 'True'])
        self.assertEqual(len(self.studies()), studies + 1)
        self.assertEqual(self.queued_users(), [self.user_id('radiographer')])
        self.start('trytond-worker', '-n', '1')
        waited = self.wait_until(lambda: self.pending_tasks() == 0)
        self.assertEqual(len(self.studies()), studies + 2)
        FIGURES['upload of one file, sync queued, radiographer (s)'] = (
            float(words[3]))
        FIGURES['worker ran the upload\'s queued sync (s)'] = waited
