# SPDX-License-Identifier: GPL-3.0-or-later
"""Instances mirrored on demand (issue 15), over JSON-RPC as clients call:
only imaging administrators choose the mode; a clinician opening a series
stores its instances, with exact counts before and after."""
import time

from . import dicom_factory as factory
from . import rpc
from .orthanc_server import OrthancServer, upload_files

SERVER = 'gnuhealth.orthanc.config'
STUDY = 'gnuhealth.imaging_orthanc.study'
SERIES = 'gnuhealth.imaging_orthanc.study_series'
INSTANCE = 'gnuhealth.imaging_orthanc.series_instances'


class OnDemandRPCTestCase(rpc.RPCTestCase):

    @classmethod
    def setUpClass(cls):
        cls.orthanc = OrthancServer(name='health_orthanc on demand').start()
        cls.addClassCleanup(cls.orthanc.stop)
        super().setUpClass()
        upload_files(cls.orthanc, factory.study(n_series=2, n_instances=3,
                patient_id='ON-DEMAND'))
        admin = cls.sessions['imaging_admin']
        cls.server_id, = admin.create(SERVER, {'label': 'On demand PACS',
                'domain': cls.orthanc.url, 'user': cls.orthanc.user,
                'password': cls.orthanc.password,
                'instance_mirroring': 'on_demand'})
        admin.button(SERVER, 'check_connection', [cls.server_id])
        admin.button(SERVER, 'sync_changes', [cls.server_id])

    def test_sync_button_with_the_forms_timestamp(self):
        """The first sync of a server, clicked as SAO and the GTK client
        click it: with the timestamp of the server form they read.  The
        sync's own cursor move is not taken for someone else's edit (no
        ConcurrencyException)."""
        orthanc = OrthancServer(name='health_orthanc timestamp').start()
        self.addCleanup(orthanc.stop)
        upload_files(orthanc, factory.study(n_series=1, n_instances=1,
                patient_id='TIMESTAMP'))
        admin = self.sessions['imaging_admin']
        server_id, = admin.create(SERVER, {'label': 'Timestamp PACS',
                'domain': orthanc.url, 'user': orthanc.user,
                'password': orthanc.password})
        self.addCleanup(admin.model, SERVER, 'delete', [server_id])
        admin.button(SERVER, 'check_connection', [server_id])
        record, = admin.read(SERVER, [server_id], ['_timestamp'])
        # SQLite's timestamps count whole seconds: the cursor's move must
        # fall in another second than the form's read to be seen.
        time.sleep(1.1)
        admin.button(SERVER, 'sync_changes', [server_id], context={
                '_timestamp': {'%s,%s' % (SERVER, server_id):
                    record['_timestamp']}})
        self.assertTrue(admin.search(STUDY, [('server', '=', server_id)]))

    def test_only_imaging_administrators_choose_the_mode(self):
        for role in ('doctor', 'radiographer', 'nobody'):
            self.sessions[role].failure('model.%s.write' % SERVER,
                [self.server_id], {'instance_mirroring': 'all'})
        admin = self.sessions['imaging_admin']
        admin.write(SERVER, [self.server_id],
            {'instance_mirroring': 'on_demand'})
        record, = self.sessions['doctor'].read(SERVER, [self.server_id],
            ['instance_mirroring'])
        self.assertEqual(record['instance_mirroring'], 'on_demand')

    def test_opening_a_series_stores_its_instances(self):
        doctor = self.sessions['doctor']
        study, = doctor.search_read(STUDY, [('server', '=', self.server_id)],
            ['series_count', 'instance_count', 'modalities'])
        self.assertEqual((study['series_count'], study['instance_count'],
                study['modalities']), (2, 6, 'CT'))
        series_ids = doctor.search(SERIES, [('study', '=', study['id'])])
        # The sync stored studies and series, no instance.
        self.assertEqual(doctor.search(INSTANCE,
                [('series', 'in', series_ids)]), [])
        first, = doctor.read(SERIES, series_ids[:1],
            ['instances', 'instance_count'])
        self.assertEqual(len(first['instances']), 3)
        self.assertEqual(first['instance_count'], 3)
        instances = doctor.read(INSTANCE, first['instances'],
            ['series', 'sop_instance_UID'])
        self.assertEqual({i['series'] for i in instances}, {series_ids[0]})
        # Opened again: the same records, nothing asked again.
        again, = doctor.read(SERIES, series_ids[:1], ['instances'])
        self.assertEqual(again['instances'], first['instances'])
        # Clients still cannot write instances themselves.
        doctor.failure('model.%s.create' % INSTANCE,
            [{'series': series_ids[0], 'server': self.server_id,
                    'orthanc_UID': 'x', 'sop_instance_UID': 'y'}], {})
