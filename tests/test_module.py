# SPDX-License-Identifier: GPL-3.0-or-later
from lxml import etree

from trytond.config import config
from trytond.pool import Pool
from trytond.tests.test_tryton import ModuleTestCase, with_transaction

UPLOAD_START = 'gnuhealth.imaging_orthanc.upload_image_data.start'


class HealthOrthancTestCase(ModuleTestCase):
    "Test health_orthanc module"
    module = 'health_orthanc'

    @with_transaction()
    def test_bound_errors_are_translated_messages(self):
        "The adapter's bound errors become sentences naming the setting."
        from trytond.modules.health_orthanc import orthanc
        from trytond.modules.health_orthanc.server import describe_error
        text = describe_error(orthanc.TooLarge('x', 'changes', 16_000_000))
        self.assertIn('larger than 16 MB', text)
        self.assertIn('[health_orthanc] max_answer_changes', text)
        text = describe_error(orthanc.DeadlineExceeded('x', 2.5))
        self.assertIn('within 2.5 s', text)

    @with_transaction()
    def test_upload_refusals_are_translated_messages(self):
        from trytond.modules.health_orthanc import upload, upload_frames
        from trytond.modules.health_orthanc.exceptions import (
            OrthancUploadError)
        from . import bombs
        cases = [
            (bombs.zero_length_frames(3), 'a\nb', 'file "a" is empty'),
            (bombs.gzip_of_zeros(64 * bombs.BLOCK), 'z.gz',
                '"z.gz" inflates beyond 512 MB'),
            (bombs.zip_of_zeros(8 * bombs.BLOCK), None, '"file #1" '
                'uncompresses to 1027 times its size, more than 100 times'),
            (b'MULT' + (b'\1' + bytes(7) + b'x') * 10_001, None,
                'more than 10000 files'),
            (b'MULT', None, 'Nothing to upload'),
            ]
        for data, names, message in cases:
            with self.subTest(message=message):
                with self.assertRaises(OrthancUploadError) as caught:
                    upload.check_files(data, names)
                self.assertIn(message, caught.exception.message)
        checked, = upload.check_files(b'DICOM?', 'x.dcm')
        self.assertIsInstance(checked, upload_frames.CheckedFile)

    @with_transaction()
    def test_upload_widget_only_in_forms(self):
        "The upload form's clients get binary_dicom, allowed in forms only."
        def schema(type_):
            return etree.tostring(Pool().get('ir.ui.view').get_rng(type_))
        arch = Pool().get(UPLOAD_START).fields_view_get(view_type='form')[
            'arch']
        field, = etree.fromstring(arch).xpath(
            '//field[@name="data_to_upload"]')
        self.assertEqual(field.get('widget'), 'binary_dicom')
        self.assertIn(b'binary_dicom', schema('form'))
        for type_ in ['tree', 'list-form', 'graph', 'calendar']:
            self.assertNotIn(b'binary_dicom', schema(type_))

    def test_limits_from_trytond_conf(self):
        from trytond.modules.health_orthanc import limits
        self.assertEqual(limits.answer_limits().metadata, 64_000_000)
        self.assertEqual(limits.upload_limits().files, 10_000)
        self.assertEqual(limits.upload_timeout(), 600)
        added = not config.has_section(limits.SECTION)
        if added:
            config.add_section(limits.SECTION)
        try:
            config.set(limits.SECTION, 'max_answer_image', '1000')
            config.set(limits.SECTION, 'max_zip_ratio', '20')
            config.set(limits.SECTION, 'upload_timeout', '60')
            self.assertEqual(limits.answer_limits().image, 1000)
            self.assertEqual(limits.answer_limits().info, 1_000_000)
            self.assertEqual(limits.upload_limits().zip_ratio, 20)
            self.assertEqual(limits.upload_timeout(), 60)
        finally:
            for key in ('max_answer_image', 'max_zip_ratio',
                    'upload_timeout'):
                config.remove_option(limits.SECTION, key)
            if added:
                config.remove_section(limits.SECTION)


del ModuleTestCase
