# SPDX-License-Identifier: GPL-3.0-or-later
"""The names of gnuhealth-orthanc 5.0.4 keep their meaning, and a server can
be copied."""
import unittest

from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction

from . import dicom_factory as dicom
from .orthanc_server import (
    OrthancServer, orthanc_available, upload_files)


def create_server(**values):
    Server = Pool().get('gnuhealth.orthanc.config')
    values.setdefault('label', 'Main')
    values.setdefault('domain', 'http://pacs.example.org:8042')
    server, = Server.create([values])
    return server


class CompatibilityTestCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')

    @with_transaction()
    def test_server_links_as_in_504(self):
        "link and link_base_url: the public URL ending with a slash."
        plain = create_server()
        proxied = create_server(label='Proxied', domain='http://10.0.0.5',
            proxy_domain='https://pacs.example.org/orthanc/')
        self.assertEqual(plain.link_base_url, 'http://pacs.example.org:8042/')
        self.assertEqual(plain.link, 'http://pacs.example.org:8042/')
        self.assertEqual(proxied.link_base_url,
            'https://pacs.example.org/orthanc/')
        self.assertEqual(proxied.link, 'https://pacs.example.org/orthanc/')
        self.assertEqual(proxied.explorer_link,
            'https://pacs.example.org/orthanc/app/explorer.html')

    @with_transaction()
    def test_study_names_as_in_504(self):
        pool = Pool()
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        Patient = pool.get('gnuhealth.patient')
        Party = pool.get('party.party')
        server = create_server(proxy_domain='https://viewer.example.org')
        party, = Party.create([{'name': 'Ann', 'lastname': 'Lee',
                    'is_person': True, 'is_patient': True, 'gender': 'f',
                    'fed_country': None}])
        patient, = Patient.search([('party', '=', party.id)]) or \
            Patient.create([{'party': party.id}])
        linked, alone = Study.create([
                {'server': server.id, 'orthanc_UID': 'o-1',
                    'study_instance_UID': '1.2.1', 'patient': patient.id},
                {'server': server.id, 'orthanc_UID': 'o-2',
                    'study_instance_UID': '1.2.2'}])
        values = {v['id']: v for v in Study.read([linked.id, alone.id],
                ['link_base_url', 'gnuhealth_patient_name'])}
        self.assertEqual(values[linked.id]['link_base_url'],
            'https://viewer.example.org/')
        self.assertEqual(values[linked.id]['gnuhealth_patient_name'],
            patient.rec_name)
        self.assertIsNone(values[alone.id]['gnuhealth_patient_name'])

    @with_transaction()
    def test_legacy_models_keep_their_names(self):
        "4.x patients and studies: their fields, links and mirror study."
        pool = Pool()
        OldPatient = pool.get('gnuhealth.orthanc.patient')
        OldStudy = pool.get('gnuhealth.orthanc.study')
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        server = create_server()
        old_patient, = OldPatient.create([{'uuid': 'p-1', 'name': 'DOE^J',
                    'ident': 'P1', 'server': server.id}])
        old_study, = OldStudy.create([{'uuid': 'o-1', 'patient':
                    old_patient.id, 'instance_uid': '1.2.1',
                    'server': server.id}])
        mirrored, = Study.create([{'server': server.id, 'orthanc_UID': 'o-1',
                    'study_instance_UID': '1.2.1'}])
        self.assertEqual(old_patient.studies, (old_study,))
        self.assertEqual(old_study.study, mirrored)
        base = 'http://pacs.example.org:8042'
        self.assertEqual(old_patient.link,
            base + '/app/explorer.html#patient?uuid=p-1')
        self.assertEqual(old_study.orthanc_explorer_link,
            base + '/app/explorer.html#study?uuid=o-1')
        self.assertEqual(old_study.stone_viewer_link,
            base + '/stone-webviewer/index.html?study=1.2.1')
        self.assertEqual(old_study.ohif_viewer_link,
            base + '/ohif/viewer?url=../studies/o-1/ohif-dicom-json')

    @with_transaction()
    def test_copy_gives_a_usable_unchecked_server(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        server = create_server(user='orthanc', password='secret',
            validated=True, orthanc_version='1.10.1', has_ohif=True,
            last_changed_index=42)
        first, = Server.copy([server])
        second, = Server.copy([server])
        for copy, number in [(first, 1), (second, 2)]:
            self.assertEqual(copy.label, 'Main (copy %s)' % number)
            self.assertEqual(copy.domain,
                'https://copy-%s.pacs.example.org.invalid' % number)
            self.assertFalse(copy.validated)
            self.assertEqual(copy.last_changed_index, -1)
            self.assertIsNone(copy.orthanc_version)
            self.assertFalse(copy.has_ohif)
            self.assertEqual((copy.user, copy.password),
                ('orthanc', 'secret'))
        # Several at once, and a copy of a copy.
        copies = Server.copy([server, first])
        self.assertEqual(len({c.label for c in Server.search([])}), 5)
        self.assertEqual(sorted(c.label for c in copies),
            ['Main (copy 1) (copy 1)', 'Main (copy 3)'])
        # The copy takes its real URL like any server.
        Server.write([first], {'domain': 'http://pacs2.example.org'})
        self.assertEqual(first.domain, 'http://pacs2.example.org')


@unittest.skipUnless(orthanc_available(), "Orthanc is not installed")
class ImageTestCase(unittest.TestCase):
    "The instance's image is its preview: one record read asks Orthanc."

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')
        cls.orthanc = OrthancServer().start()
        cls.addClassCleanup(cls.orthanc.stop)
        upload_files(cls.orthanc, [dicom.image(instance_number=1),
                dicom.structured_report()])

    @with_transaction()
    def test_image_is_the_preview(self):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Instance = pool.get('gnuhealth.imaging_orthanc.series_instances')
        server = create_server(domain=self.orthanc.url,
            user=self.orthanc.user, password=self.orthanc.password)
        Server.synchronize([server], 'incremental')
        instances = Instance.search([])
        self.assertEqual(len(instances), 2)
        image, = [i for i in instances if i.series.modality == 'CT']
        report, = [i for i in instances if i.series.modality == 'SR']

        # A list costs no request: nothing is read.
        requests = server.client.request_count
        values = Instance.read([i.id for i in instances], ['image'])
        self.assertEqual([v['image'] for v in values], [None, None])
        self.assertEqual(server.client.request_count, requests)

        read, = Instance.read([image.id], ['image', 'preview'])
        self.assertTrue(read['image'].startswith(b'\x89PNG'))
        self.assertEqual(read['image'], read['preview'])
        self.assertEqual(Instance(image.id).get_image(), read['image'])
        self.assertIsNone(Instance(report.id).get_image())
