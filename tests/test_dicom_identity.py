# SPDX-License-Identifier: GPL-3.0-or-later
"""dicom_identity: a DICOM file given a patient's identity while it
streams, in its own transfer syntax, UIDs and pixel data unchanged."""
import datetime
import io
import unittest

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian)

from .. import dicom_identity
from ..dicom_identity import (
    Identity, NotRewritable, original_patient_ids, rewrite_bytes,
    rewrite_stream)
from . import dicom_factory as dicom

# No database: tests/conftest.py runs it in the SQLite phase only.
SAME_ON_EVERY_BACKEND = True

ADA = Identity.of('PUID-7', 'Núñez', 'Ada María', datetime.date(1961, 4, 3),
    'f')


class OneByteStream:
    "A request body that hands out few bytes per read."

    def __init__(self, data):
        self._data = io.BytesIO(data)

    def read(self, size):
        return self._data.read(min(size, 7))


def rewritten(data, identity=ADA):
    return b''.join(bytes(p) for p in rewrite_bytes(data, identity))


def encoded_as(data, syntax):
    ds = dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class DicomIdentityTest(unittest.TestCase):

    def check(self, data, syntax=None):
        new = dcmread(io.BytesIO(rewritten(data)))
        old = dcmread(io.BytesIO(data))
        self.assertEqual((new.PatientID, str(new.PatientName),
                new.PatientBirthDate, new.PatientSex),
            ('PUID-7', 'Núñez^Ada María', '19610403', 'F'))
        for keyword in ('SOPInstanceUID', 'SeriesInstanceUID',
                'StudyInstanceUID'):
            self.assertEqual(new[keyword].value, old[keyword].value)
        self.assertEqual(original_patient_ids(new), [old.PatientID])
        item = new.OriginalAttributesSequence[0]
        self.assertEqual(item.ReasonForTheAttributeModification, 'COERCE')
        kept = item.ModifiedAttributesSequence[0]
        self.assertEqual((kept.PatientID, str(kept.PatientName),
                kept.PatientBirthDate, kept.PatientSex),
            (old.PatientID, str(old.PatientName), old.PatientBirthDate,
                old.PatientSex))
        if 'PixelData' in old:
            self.assertEqual(new.PixelData, old.PixelData)
        self.assertEqual(new.file_meta.TransferSyntaxUID,
            syntax or old.file_meta.TransferSyntaxUID)
        return new

    def test_explicit_little_endian(self):
        self.check(dicom.image(patient_id='EXT-1'))

    def test_other_transfer_syntaxes(self):
        for syntax in (ImplicitVRLittleEndian,
                DeflatedExplicitVRLittleEndian):
            with self.subTest(syntax=syntax.name):
                self.check(encoded_as(dicom.image(patient_id='EXT-2'),
                        syntax), syntax)

    def test_no_pixel_data(self):
        "A structured report: the whole file is the header."
        self.check(dicom.structured_report(patient_id='EXT-3'))

    def test_pixel_data_passes_verbatim(self):
        "The bytes after the header are the original's, not re-encoded."
        data = dicom.image(patient_id='EXT-4')
        header, rest = rewrite_bytes(data, ADA)
        self.assertEqual(bytes(rest), data[len(data) - len(rest):])
        self.assertTrue(bytes(rest).startswith(b'\xe0\x7f\x10\x00'))

    def test_stream_read_in_small_pieces(self):
        data = dicom.image(patient_id='EXT-5')
        result, ahead = rewrite_stream(OneByteStream(data), len(data), ADA)
        self.assertTrue(result.changed)
        self.assertEqual(data[result.resume:result.resume + len(ahead)],
            ahead)

    def test_default_character_set_becomes_utf8(self):
        data = dicom.image(patient_id='EXT-6')
        ds = dcmread(io.BytesIO(data))
        del ds.SpecificCharacterSet
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        new = self.check(out.getvalue())
        self.assertEqual(new.SpecificCharacterSet, 'ISO_IR 192')

    def test_twice_is_once(self):
        once = rewritten(dicom.image(patient_id='EXT-7'))
        result, _ = rewrite_stream(io.BytesIO(once), len(once), ADA)
        self.assertFalse(result.changed)
        self.assertEqual(rewritten(once), once)

    def test_issuer_kept(self):
        data = dicom.image(patient_id='EXT-8',
            overrides={'IssuerOfPatientID': 'OTHER HOSPITAL'})
        new = dcmread(io.BytesIO(rewritten(data)))
        self.assertNotIn('IssuerOfPatientID', new)
        other, = new.OtherPatientIDsSequence
        self.assertEqual((other.PatientID, other.IssuerOfPatientID),
            ('EXT-8', 'OTHER HOSPITAL'))
        self.assertEqual(new.OriginalAttributesSequence[0]
            .SourceOfPreviousValues, 'OTHER HOSPITAL')

    def test_unreadable_header(self):
        data = dicom.image()[:200]
        with self.assertRaises(NotRewritable):
            rewrite_bytes(b'\0' * 128 + b'DICM' + b'\xff' * 64, ADA)
        with self.assertRaises(NotRewritable):
            rewrite_bytes(data, ADA)

    def test_only_patient_elements_encoded_again(self):
        """Usual files take the element walk (explicit and implicit VR, a
        sequence of undefined length before the patient group): the same
        dataset as pydicom's whole-header rewrite, the other elements'
        bytes untouched."""
        reference = Dataset()
        reference.ReferencedSOPClassUID = '1.2.840.10008.5.1.4.1.1.2'
        reference.ReferencedSOPInstanceUID = dicom.uid()
        reference.is_undefined_length_sequence_item = True
        ds = dcmread(io.BytesIO(dicom.image(patient_id='EXT-9',
                    overrides={'IssuerOfPatientID': 'ELSEWHERE',
                        'StudyDescription': 'KEPT AS IS'})))
        ds.ReferencedStudySequence = Sequence([reference])
        ds['ReferencedStudySequence'].is_undefined_length = True
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        for syntax in (None, ImplicitVRLittleEndian):
            data = encoded_as(out.getvalue(), syntax) if syntax \
                else out.getvalue()
            with self.subTest(syntax=syntax):
                walked = self.rewrite_with(dicom_identity._splice, data)
                whole = self.rewrite_with(dicom_identity._rewrite_header,
                    data)
                self.assertIn(b'KEPT AS IS', walked.header)
                self.assertEqual(walked.resume, whole.resume)
                self.assertEqual(self.without_time(walked.header),
                    self.without_time(whole.header))

    @staticmethod
    def rewrite_with(function, data):
        recorder = dicom_identity._Recorder(io.BytesIO(data), len(data))
        return function(recorder, len(data), ADA)

    @staticmethod
    def without_time(header):
        "The header's dataset, the modification time left out."
        ds = dcmread(io.BytesIO(header), stop_before_pixels=True)
        for item in ds.OriginalAttributesSequence:
            del item.AttributeModificationDateTime
        return ds

    def test_sex_of_genders(self):
        self.assertEqual([Identity.of('x', 'a', 'b', None, g).sex
                for g in ('m', 'f', 'nb', 'other', 'u', None)],
            ['M', 'F', 'O', 'O', '', ''])


if __name__ == '__main__':
    unittest.main()
