# SPDX-License-Identifier: GPL-3.0-or-later
"""Study previews (thumbnail.py) against a real Orthanc: made once after the
sync, one call per new or changed study, none for a study without
pictures, and a server that stops answering stops nothing."""
import unittest

from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from .. import orthanc, thumbnail
from . import dicom_factory as factory
from .orthanc_server import OrthancServer, upload_files


def create_server(server, label='Previews'):
    Server = Pool().get('gnuhealth.orthanc.config')
    record, = Server.create([{'label': label, 'domain': server.url,
                'user': server.user, 'password': server.password}])
    Server.check_connection([record])
    return record


class ThumbnailTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')
        cls.orthanc = OrthancServer(name='health_orthanc previews').start()
        upload_files(cls.orthanc, factory.study(n_series=2, n_instances=3,
                patient_id='THUMB-1', study_description='CT CHEST'))
        sr_study = factory.uid()
        upload_files(cls.orthanc, [
                factory.structured_report(patient_id='THUMB-2',
                    study_uid=sr_study),
                factory.encapsulated_pdf(patient_id='THUMB-2',
                    study_uid=sr_study),
                ])

    @classmethod
    def tearDownClass(cls):
        cls.orthanc.stop()

    def studies(self, server):
        Study = Pool().get('gnuhealth.imaging_orthanc.study')
        return {s.patient_id: s for s in Study.search([
                    ('server', '=', server.id)])}

    @with_transaction()
    def test_sync_marks_and_the_button_renders(self):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        server = create_server(self.orthanc)
        Server.synchronize([server], 'full')
        studies = self.studies(server)
        self.assertEqual({s.thumbnail_due for s in studies.values()}, {True})
        self.assertEqual({s.thumbnail for s in studies.values()}, {None})

        client = server.client
        before = client.request_count
        Server.sync_changes([server])
        studies = self.studies(server)
        image = studies['THUMB-1'].thumbnail
        self.assertTrue(image.startswith(orthanc.JPEG_MAGIC))
        self.assertLess(len(image), 20000)
        # SR and PDF only: no picture, and not asked again
        self.assertIsNone(studies['THUMB-2'].thumbnail)
        self.assertEqual({s.thumbnail_due for s in studies.values()},
            {False})
        # changes (none) + one picture per study with pictures
        self.assertLessEqual(server.client.request_count - before, 1 + 2)

        # An unchanged study is not rendered again.
        before = server.client.request_count
        Server.sync_changes([server])
        self.assertEqual(self.studies(server)['THUMB-1'].thumbnail, image)

    @with_transaction()
    def test_picture_of_the_middle_instance_of_the_first_series(self):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        Instance = pool.get('gnuhealth.imaging_orthanc.series_instances')
        server = create_server(self.orthanc)
        Server.synchronize([server], 'full')
        study = self.studies(server)['THUMB-1']
        chosen = thumbnail.representative_instances([study])
        instance, = Instance.search([('orthanc_UID', '=', chosen[study.id])])
        self.assertEqual(instance.series.series_number, '1')
        self.assertEqual(instance.instance_number, 2)
        self.assertEqual(thumbnail.representative_instances(
                [self.studies(server)['THUMB-2']]), {})
        self.assertTrue(Study.search([('thumbnail_due', '=', True)]))

    @with_transaction()
    def test_server_down_leaves_the_pictures_due(self):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        server = create_server(self.orthanc)
        Server.synchronize([server], 'full')
        Server.write([server], {'domain': 'http://127.0.0.1:9'})
        server = Server(server.id)
        with self.assertLogs(thumbnail.logger, 'WARNING'):
            done = Study.render_thumbnails([server])
        # the SR-only study needs no call; the other waits for Orthanc
        self.assertEqual(done, 1)
        due, = Study.search([
                ('server', '=', server.id), ('thumbnail_due', '=', True)])
        self.assertEqual(due.patient_id, 'THUMB-1')
