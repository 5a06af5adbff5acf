# SPDX-License-Identifier: GPL-3.0-or-later
"""The DICOM form of worklist items (worklist_dicom.py), without Orthanc:
the file dcmtk and Orthanc read back, its character set, its bounds."""
import datetime
import io
import unittest

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from trytond.modules.health_orthanc import worklist_dicom

# No database: tests/conftest.py runs it in the SQLite phase only.
SAME_ON_EVERY_BACKEND = True


def attributes(**values):
    arguments = dict(study_uid='1.2.826.0.1.3680043.8.498.1',
        accession='IMG0001', procedure_id='IMG0001-01-01',
        description='CT head', patient_id='ESP-123', family='Ñandú',
        given='Zoë 李', birth_date=datetime.date(1981, 3, 14), gender='f',
        requesting_physician='Housé^Grégoire',
        scheduled=datetime.datetime(2031, 5, 6, 8, 30), modality='CT',
        station_ae='CT_ROOM1')
    arguments.update(values)
    return worklist_dicom.worklist_attributes(**arguments)


def pydicom_file(values):
    "The same worklist file written by pydicom (the reference)."
    dataset = Dataset()
    dataset.SpecificCharacterSet = worklist_dicom.CHARSET
    for keyword in worklist_dicom.TOP_LEVEL:
        setattr(dataset, keyword, values[keyword])
    step = Dataset()
    for keyword in worklist_dicom.STEP:
        setattr(step, keyword, values[keyword])
    dataset.ScheduledProcedureStepSequence = [step]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = worklist_dicom.WORKLIST_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = values['StudyInstanceUID']
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta = meta
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class WorklistDicomTestCase(unittest.TestCase):

    def test_file_round_trip(self):
        "the .wl file reads back with every attribute, in UTF-8"
        data = worklist_dicom.worklist_file(attributes())
        dataset = pydicom.dcmread(io.BytesIO(data))
        self.assertEqual(dataset.file_meta.MediaStorageSOPClassUID,
            worklist_dicom.WORKLIST_SOP_CLASS)
        self.assertEqual(dataset.SpecificCharacterSet, 'ISO_IR 192')
        self.assertEqual(str(dataset.PatientName), 'Ñandú^Zoë 李')
        self.assertEqual(dataset.PatientSex, 'F')
        self.assertEqual(dataset.PatientBirthDate, '19810314')
        self.assertEqual(dataset.AccessionNumber, 'IMG0001')
        self.assertEqual(dataset.StudyInstanceUID,
            '1.2.826.0.1.3680043.8.498.1')
        step = dataset.ScheduledProcedureStepSequence[0]
        self.assertEqual((step.Modality, step.ScheduledStationAETitle,
                step.ScheduledProcedureStepStartDate,
                step.ScheduledProcedureStepStartTime),
            ('CT', 'CT_ROOM1', '20310506', '083000'))

    def test_same_dataset_as_pydicom_writes(self):
        """the module's own encoding holds what pydicom's writer makes of
        the same attributes (odd lengths padded, UTF-8, the step item)"""
        for values in (attributes(), attributes(given='Zoë 李x',
                    birth_date=None, station_ae=None, scheduled=None)):
            data = worklist_dicom.worklist_file(values)
            self.assertEqual(data[128:132], b'DICM')
            self.assertEqual(len(data) % 2, 0)
            ours = pydicom.dcmread(io.BytesIO(data), force=False)
            reference = pydicom.dcmread(io.BytesIO(pydicom_file(values)))
            self.assertEqual(ours, reference)
            for keyword in ('MediaStorageSOPClassUID',
                    'MediaStorageSOPInstanceUID', 'TransferSyntaxUID',
                    'ImplementationClassUID'):
                self.assertEqual(ours.file_meta[keyword].value,
                    reference.file_meta[keyword].value)
            # The group length ends the meta group where group 8 begins.
            end = 144 + ours.file_meta.FileMetaInformationGroupLength
            self.assertEqual(data[end:end + 2], b'\x08\x00')

    def test_sex_and_missing_values(self):
        "GNU Health's genders map to M, F or O; missing values stay empty"
        for gender, sex in [('m', 'M'), ('f', 'F'), ('nb', 'O'),
                ('u', 'O'), (None, '')]:
            self.assertEqual(worklist_dicom.dicom_sex(gender), sex)
        values = attributes(birth_date=None, family=None, given='Ann',
            station_ae=None)
        self.assertEqual(values['PatientBirthDate'], '')
        self.assertEqual(values['PatientName'], '^Ann')
        worklist_dicom.worklist_file(values)

    def test_short_values_are_bounded(self):
        "AE titles and step IDs longer than DICOM allows are cut"
        values = attributes(station_ae='A' * 30, procedure_id='B' * 30)
        self.assertEqual(len(values['ScheduledStationAETitle']), 16)
        self.assertEqual(len(values['ScheduledProcedureStepID']), 16)

    def test_file_name_is_a_uid(self):
        "only a DICOM UID names a file in the worklist folder"
        self.assertEqual(worklist_dicom.file_name('1.2.3'), '1.2.3.wl')
        for bad in ('', '../etc/passwd', '1.2/3', None):
            with self.assertRaises(ValueError):
                worklist_dicom.file_name(bad)
