# SPDX-License-Identifier: GPL-3.0-or-later
"""The synchronisation against the data and incidents of a real hospital:
values the database cannot hold, studies or pages the database refuses,
several servers, an Orthanc reset or replaced, a bad CA bundle and a sync
already running.

Refusals are made by the real database: a trigger the test installs
refuses chosen rows, as a constraint of the site would.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from trytond.tests.test_tryton import DB_NAME, db_exist, drop_db
from trytond.transaction import Transaction

from . import dicom_factory as dicom
from . import tools
from .orthanc_server import OrthancServer, upload_files

REFUSED_SOP_PREFIX = '1.2.826.0.1.3680043.9.7433.999.'
INSTANCES = 'gnuhealth_imaging_orthanc_series_instances'
SERVERS = 'gnuhealth_orthanc_config'


def is_postgresql():
    return os.environ.get('TRYTOND_DATABASE_URI', '').startswith(
        'postgresql')


def in_memory_sqlite():
    return not is_postgresql() and DB_NAME == ':memory:'


def close_pooled_connections():
    """Close the connections that earlier test classes of this process left
    in trytond's pool: PostgreSQL cannot drop a database still in use."""
    from trytond import backend
    if is_postgresql() and db_exist(DB_NAME):
        backend.Database(DB_NAME).close()


def execute(*statements):
    "Run SQL in a transaction of its own, committed."
    with Transaction().start(DB_NAME, 0) as transaction:
        cursor = transaction.connection.cursor()
        for statement in statements:
            cursor.execute(statement)
        transaction.commit()


def refuse(table, event, condition):
    "A trigger refusing the rows of table matching condition (SQL)."
    if is_postgresql():
        execute('CREATE OR REPLACE FUNCTION ho_test_refuse() '
            'RETURNS trigger AS $$ BEGIN RAISE EXCEPTION '
            "'refused by the test' USING ERRCODE = 'check_violation'; "
            'END $$ LANGUAGE plpgsql',
            'CREATE TRIGGER ho_test_refuse BEFORE %s ON %s FOR EACH ROW '
            'WHEN (%s) EXECUTE FUNCTION ho_test_refuse()'
            % (event, table, condition))
    else:
        execute('CREATE TRIGGER ho_test_refuse BEFORE %s ON %s '
            "WHEN %s BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            % (event, table, condition))


def accept(table):
    if is_postgresql():
        execute('DROP TRIGGER IF EXISTS ho_test_refuse ON %s' % table)
    else:
        execute('DROP TRIGGER IF EXISTS ho_test_refuse')


def refused_image(n, **kwargs):
    return dicom.image(sop_uid=REFUSED_SOP_PREFIX + str(n), **kwargs)


@unittest.skipIf(in_memory_sqlite(), "run on a SQLite file, see below")
class SyncSafetyTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        from proteus import Model
        from trytond.modules.health_orthanc import sync
        from trytond.tests.tools import activate_modules
        cls.sync = sync
        cls.page_size = sync.CHANGES_PAGE
        sync.CHANGES_PAGE = 7  # several pages per sync
        cls.orthanc = OrthancServer().start()
        close_pooled_connections()
        activate_modules('health_orthanc')
        cls.server = tools.register_server(cls.orthanc)
        cls.Server = Model.get('gnuhealth.orthanc.config')
        cls.Study = Model.get('gnuhealth.imaging_orthanc.study')
        cls.Instance = Model.get(
            'gnuhealth.imaging_orthanc.series_instances')
        cls.Problem = Model.get('gnuhealth.imaging_orthanc.sync_problem')

    @classmethod
    def tearDownClass(cls):
        cls.sync.CHANGES_PAGE = cls.page_size
        cls.orthanc.stop()
        if db_exist(DB_NAME):
            drop_db()

    def upload_study(self, patient_id, n_series=1, n_instances=2, orthanc=None,
            **kwargs):
        return upload_files(orthanc or self.orthanc, dicom.study(
                n_series=n_series, n_instances=n_instances,
                patient_id=patient_id, study_uid=dicom.uid(), **kwargs))

    def studies_of(self, patient_id):
        return self.Study.find([('patient_id', '=', patient_id)])

    def sync_changes(self, server=None):
        server = server or self.server
        server.click('sync_changes')
        server.reload()
        return server

    def test_overflowing_instance_number_stored_empty(self):
        "InstanceNumber 99999999999: stored without number, text kept."
        for name in ('BIG-1', 'BIG-2'):
            self.upload_study(name)
        study_uid = dicom.uid()
        upload_files(self.orthanc, [dicom.image(patient_id='BIG-3',
                    study_uid=study_uid, instance_number=n)
                for n in (1, 99999999999)])
        server = self.sync_changes()
        self.assertIsNone(server.last_sync_error)
        for name in ('BIG-1', 'BIG-2', 'BIG-3'):
            self.assertEqual(len(self.studies_of(name)), 1, name)
        instances = self.Instance.find(
            [('series.study.patient_id', '=', 'BIG-3')])
        self.assertEqual(
            sorted((i.instance_number or 0, i.instance_number_text)
                for i in instances),
            [(0, '99999999999'), (1, None)])
        self.assertFalse(self.Problem.find([('patient_id', 'like', 'BIG-%')]))

    @unittest.skipUnless(is_postgresql(), "SQLite integers are 64-bit")
    def test_overflow_refused_by_postgresql_is_a_problem(self):
        "Without the range check, PostgreSQL's refusal is a problem, then fixed."
        range_checked = self.sync.INTEGER_RANGE
        self.sync.INTEGER_RANGE = range(-2 ** 63, 2 ** 63)  # as before
        try:
            self.upload_study('OVER-1')
            upload_files(self.orthanc, [dicom.image(patient_id='OVER-2',
                        study_uid=dicom.uid(), instance_number=99999999999)])
            self.upload_study('OVER-3')
            server = self.sync_changes()
        finally:
            self.sync.INTEGER_RANGE = range_checked
        self.assertIsNone(server.last_sync_error)
        self.assertEqual(len(self.studies_of('OVER-1')), 1)
        self.assertEqual(len(self.studies_of('OVER-3')), 1)
        self.assertEqual(self.studies_of('OVER-2'), [])
        problem, = self.Problem.find([('patient_id', '=', 'OVER-2')])
        self.assertIn('integer out of range', problem.reason)

        server = self.sync_changes()
        self.assertEqual(len(self.studies_of('OVER-2')), 1)
        self.assertFalse(self.Problem.find([('patient_id', '=', 'OVER-2')]))

    def test_refused_study_is_a_problem_until_it_stores(self):
        "A study the database refuses is retried, then stored once fixed."
        refuse(INSTANCES, 'INSERT',
            '''NEW."sop_instance_UID" LIKE '%s%%' ''' % REFUSED_SOP_PREFIX)
        try:
            self.upload_study('REF-OK-1')
            upload_files(self.orthanc, [refused_image(1, patient_id='REF-BAD',
                        study_uid=dicom.uid())])
            self.upload_study('REF-OK-2')
            server = self.sync_changes()

            self.assertIsNone(server.last_sync_error)
            self.assertIn('1 study(ies)', server.last_sync_notice)
            self.assertEqual(len(self.studies_of('REF-OK-1')), 1)
            self.assertEqual(len(self.studies_of('REF-OK-2')), 1)
            self.assertEqual(self.studies_of('REF-BAD'), [])
            problem, = self.Problem.find([('patient_id', '=', 'REF-BAD')])
            self.assertIn(problem, server.sync_problems)
            self.assertIn('refused by the test', problem.reason)
            self.assertEqual(problem.attempts, 1)
            self.assertTrue(problem.study_instance_uid)

            # Retried although /changes moved on.
            self.sync_changes()
            problem.reload()
            self.assertEqual(problem.attempts, 2)

            # A stored study whose update is refused: the administrators'
            # filter shows it.
            ok, = self.studies_of('REF-OK-1')
            upload_files(self.orthanc, [refused_image(2,
                        patient_id='REF-OK-1',
                        study_uid=ok.study_instance_UID)])
            self.sync_changes()
            self.assertEqual(self.Study.find([('sync_problem', '=', True)]),
                [ok])
        finally:
            accept(INSTANCES)

        server = self.sync_changes()
        self.assertFalse(server.last_sync_notice)
        self.assertEqual(len(self.studies_of('REF-BAD')), 1)
        ok.reload()
        self.assertEqual(ok.instance_count, 3)
        self.assertFalse(self.Problem.find([]))
        self.assertEqual(self.Study.find([('sync_problem', '=', True)]), [])

    def test_refused_page_keeps_earlier_pages(self):
        "The database refuses a page's cursor: earlier pages stay, error shown."
        from trytond.modules.health_orthanc.exceptions import OrthancSyncError
        server = self.sync_changes()
        start = server.last_changed_index
        for n in range(3):
            self.upload_study('PAGE-%s' % n, n_series=2)
        refuse(SERVERS, 'UPDATE',
            'NEW.last_changed_index > %d' % (start + 6))
        try:
            with self.assertRaises(OrthancSyncError) as caught:
                self.server.click('sync_changes')
        finally:
            accept(SERVERS)
        self.assertIn('database refused', caught.exception.message)
        self.assertIn('"PACS"', caught.exception.message)
        server.reload()
        self.assertIn('refused by the test', server.last_sync_error)
        self.assertTrue(start < server.last_changed_index <= start + 6)
        stored = sum(len(self.studies_of('PAGE-%s' % n)) for n in range(3))
        self.assertTrue(1 <= stored < 3, stored)

        server = self.sync_changes()
        self.assertIsNone(server.last_sync_error)
        for n in range(3):
            self.assertEqual(len(self.studies_of('PAGE-%s' % n)), 1)

    def test_cron_second_server_survives_first_failing(self):
        "The cron syncs each server apart: one failing rolls back no other."
        from proteus import Model
        Cron = Model.get('ir.cron')
        cron, = Cron.find([
                ('method', '=', 'gnuhealth.orthanc.config|cron_sync_changes')])
        with OrthancServer() as other:
            alpha = tools.register_server(other, label='ALPHA')
            self.upload_study('CRON-ALPHA', orthanc=other)
            self.upload_study('CRON-PACS')
            refuse(SERVERS, 'UPDATE',
                'NEW.id = %d AND NEW.last_changed_index > 0' % alpha.id)
            try:
                cron.click('run_once')
            finally:
                accept(SERVERS)
            alpha.reload()
            self.assertIn('"ALPHA"', alpha.last_sync_error)
            self.assertIn('refused by the test', alpha.last_sync_error)
            self.assertEqual(self.studies_of('CRON-ALPHA'), [])
            self.assertEqual(len(self.studies_of('CRON-PACS')), 1)
            self.server.reload()
            self.assertIsNone(self.server.last_sync_error)
            self.Server.delete([alpha])

    def test_orthanc_reset_then_replaced(self):
        "New storage behind the same URL: noticed, reconciled, then synced."
        with OrthancServer() as orthanc:
            server = tools.register_server(orthanc, label='RESET')
            self.upload_study('RESET-1', orthanc=orthanc, n_series=2)
            server = self.sync_changes(server)
            cursor = server.last_changed_index

            def new_storage():
                orthanc.stop(keep=True)
                shutil.rmtree(orthanc.storage)
                orthanc.start()
            new_storage()
            self.upload_study('RESET-2', orthanc=orthanc)
            server = self.sync_changes(server)
            self.assertIn('reset', server.last_sync_notice)
            self.assertIn(str(cursor), server.last_sync_notice)
            self.assertEqual(len(self.studies_of('RESET-2')), 1)
            self.assertEqual(self.studies_of('RESET-1'), [])

            # Picked up by the next incremental sync, with nothing noticed.
            self.upload_study('RESET-3', orthanc=orthanc)
            server = self.sync_changes(server)
            self.assertFalse(server.last_sync_notice)
            self.assertEqual(len(self.studies_of('RESET-3')), 1)

            # Replaced by one that logged more changes than the cursor.
            new_storage()
            for n in range(3):
                self.upload_study('RESET-4-%s' % n, orthanc=orthanc,
                    n_series=2, n_instances=3)
            server = self.sync_changes(server)
            self.assertIn('replaced', server.last_sync_notice)
            for n in range(3):
                self.assertEqual(len(self.studies_of('RESET-4-%s' % n)), 1)
            self.assertEqual(self.studies_of('RESET-3'), [])
            self.Server.delete([server])

    def test_bad_ca_bundle_names_it(self):
        "A CA bundle that cannot be read: a message naming server and path."
        from trytond.modules.health_orthanc.exceptions import OrthancSyncError
        server = self.Server(label='TLS',
            domain=self.orthanc.url.replace('127.0.0.1', 'localhost'),
            user=self.orthanc.user, password=self.orthanc.password,
            verify_tls=True, ca_bundle='/nonexistent/ca.pem')
        server.save()
        try:
            with self.assertRaises(OrthancSyncError) as caught:
                server.click('sync_changes')
            message = caught.exception.message
            self.assertIn('"TLS"', message)
            self.assertIn('CA bundle "/nonexistent/ca.pem"', message)
            server.reload()
            self.assertEqual(server.last_sync_error, message)
        finally:
            self.Server.delete([server])

    @unittest.skipUnless(is_postgresql(), "advisory locks are PostgreSQL's")
    def test_already_running(self):
        "A sync of a server another sync holds: a clear message, recorded."
        import psycopg2
        from trytond.exceptions import UserError
        from trytond.config import config
        uri = config.get('database', 'uri')
        connection = psycopg2.connect(uri.rstrip('/') + '/' + DB_NAME)
        try:
            with connection.cursor() as cursor:
                cursor.execute('SELECT pg_advisory_lock(%s)',
                    (self.sync.sync_lock_key(self.server.id),))
            with self.assertRaises(UserError) as caught:
                self.server.click('sync_changes')
            self.assertIn('"PACS" is already being synchronized',
                caught.exception.message)
            self.server.reload()
            note, = [p for p in self.server.sync_problems if not p.orthanc_id]
            self.assertEqual(note.reason, caught.exception.message)
        finally:
            connection.close()
        server = self.sync_changes()
        self.assertFalse([p for p in server.sync_problems if not p.orthanc_id])


@unittest.skipUnless(in_memory_sqlite(), "the suite's database is not memory")
class SQLiteFileTestCase(unittest.TestCase):
    """The same tests on a SQLite file.

    trytond words a refused write in a new transaction.  On the suite's
    in-memory SQLite every transaction shares one connection, so that
    transaction's rollback undoes the sync's transaction too; a SQLite file,
    as sites run it, has a connection per transaction.
    """

    def test_sync_safety_on_a_sqlite_file(self):
        with tempfile.TemporaryDirectory() as path:
            env = dict(os.environ, DB_NAME='sync_safety',
                TRYTOND_DATABASE__PATH=path)
            result = subprocess.run([sys.executable, '-m', 'pytest',
                    '-p', 'no:cacheprovider', '-p', 'no:logging', '-q',
                    '--pyargs', __name__, '-k', 'SyncSafetyTestCase'],
                env=env, capture_output=True, text=True, timeout=1800)
        self.assertEqual(result.returncode, 0,
            result.stdout[-6000:] + result.stderr[-2000:])
        self.assertIn(' passed', result.stdout)
