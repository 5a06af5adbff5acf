# SPDX-License-Identifier: GPL-3.0-or-later
"""Two trytond processes syncing one server at once (PostgreSQL only:
SQLite has no row locks, and trytond serialises its writers anyway)."""
import os
import subprocess
import sys
import unittest

import httpx

from trytond.tests.test_tryton import DB_NAME, db_exist, drop_db

from . import dicom_factory as dicom
from . import tools
from .orthanc_server import OrthancServer, upload_files
from .test_sync_safety import close_pooled_connections

SYNC_IN_ANOTHER_PROCESS = '''
import sys
from proteus import Model, config
from trytond.exceptions import UserError
config.set_trytond(sys.argv[1])
Server = Model.get('gnuhealth.orthanc.config')
server = Server(int(sys.argv[2]))
server.label  # loaded: what is left is the sync itself
print('ready', flush=True)
sys.stdin.readline()  # the barrier: both processes go together
try:
    server.click('sync_changes')
except UserError as exc:
    print(exc.message, flush=True)
    sys.exit(3)
'''
# What the process that lost the race for the server says.
ALREADY_RUNNING = 'is already being synchronized by another process'


def is_postgresql():
    return os.environ.get('TRYTOND_DATABASE_URI', '').startswith(
        'postgresql')


@unittest.skipUnless(is_postgresql(), "needs PostgreSQL row locks")
class ConcurrentSyncTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        from proteus import Model
        from trytond.tests.tools import activate_modules
        cls.orthanc = OrthancServer().start()
        for n in range(30):
            upload_files(cls.orthanc, dicom.study(n_series=2, n_instances=8,
                    patient_id='RACE-%s' % n, study_uid=dicom.uid()))
        close_pooled_connections()
        activate_modules('health_orthanc')
        cls.server = tools.register_server(cls.orthanc)
        cls.Study = Model.get('gnuhealth.imaging_orthanc.study')
        cls.Instance = Model.get(
            'gnuhealth.imaging_orthanc.series_instances')

    @classmethod
    def tearDownClass(cls):
        cls.orthanc.stop()
        if db_exist(DB_NAME):
            drop_db()

    def orthanc_ids(self, level):
        answer = httpx.get(self.orthanc.url + '/' + level,
            auth=self.orthanc.auth)
        return set(answer.json())

    def run_two_syncs(self):
        args = [sys.executable, '-c', SYNC_IN_ANOTHER_PROCESS, DB_NAME,
            str(self.server.id)]
        processes = [subprocess.Popen(args, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
        # Barrier: both have loaded trytond and the server, then both go.
        for process in processes:
            for line in process.stdout:
                if line.strip() == 'ready':
                    break
        for process in processes:
            process.stdin.write('go\n')
            process.stdin.flush()
        outcomes = []
        for process in processes:
            output, _ = process.communicate(timeout=300)
            outcomes.append((process.returncode, output))
        return outcomes

    def test_two_processes_no_duplicate_nothing_lost(self):
        outcomes = self.run_two_syncs()
        succeeded = [o for o in outcomes if o[0] == 0]
        self.assertTrue(succeeded, outcomes)
        # Released together by the barrier: one syncs, the other is told.
        self.assertEqual(sorted(code for code, _ in outcomes), [0, 3],
            outcomes)
        for code, output in outcomes:
            if code:
                self.assertIn(ALREADY_RUNNING, output, output[-2000:])

        # The skipped run is noted on the server's form.
        self.server.reload()
        self.assertIn(ALREADY_RUNNING, ' '.join(p.reason
                for p in self.server.sync_problems if not p.orthanc_id))

        instances = [i.orthanc_UID for i in self.Instance.find([])]
        self.assertEqual(len(instances), len(set(instances)))
        self.assertEqual(set(instances), self.orthanc_ids('instances'))
        studies = {s.orthanc_UID for s in self.Study.find([])}
        self.assertEqual(studies, self.orthanc_ids('studies'))

        # A later sync finds nothing new: no change was skipped.
        self.server.click('sync_changes')
        self.server.reload()
        self.assertEqual(self.server.last_sync_created, 0)
        self.assertEqual(self.server.last_sync_updated, 0)
