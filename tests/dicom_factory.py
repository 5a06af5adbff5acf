"""Synthetic DICOM Part 10 files for tests and benchmarks.

Everything is built in memory with pydicom: nothing is read from disk or
fetched from the network. Files use Explicit VR Little Endian so that any
Orthanc can decode them without a transcoder.
"""
import functools
import io
import struct
import zipfile

from pydicom import config
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage, CTImageStorage, EncapsulatedPDFStorage,
    ExplicitVRLittleEndian, MRImageStorage, SecondaryCaptureImageStorage,
    generate_uid)

__all__ = [
    'uid', 'image', 'structured_report', 'encapsulated_pdf', 'study',
    'dataset_set', 'zip_of', 'frame_mult', 'dicomdir', 'patient_cd']

_IMAGE_CLASSES = {'CT': CTImageStorage, 'MR': MRImageStorage}
_SIZE = 16

# A tiny but well-formed PDF (valid xref offsets) with one empty page.
_PDF = None


def uid():
    return generate_uid()


def _tiny_pdf():
    global _PDF
    if _PDF is None:
        objects = [
            b'<< /Type /Catalog /Pages 2 0 R >>',
            b'<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
            b'<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] >>',
        ]
        out = io.BytesIO()
        out.write(b'%PDF-1.4\n')
        offsets = []
        for number, body in enumerate(objects, 1):
            offsets.append(out.tell())
            out.write(b'%d 0 obj\n%s\nendobj\n' % (number, body))
        xref = out.tell()
        out.write(b'xref\n0 %d\n0000000000 65535 f \n' % (len(objects) + 1))
        for offset in offsets:
            out.write(b'%010d 00000 n \n' % offset)
        out.write(b'trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n'
            b'%%%%EOF\n' % (len(objects) + 1, xref))
        _PDF = out.getvalue()
    return _PDF


@functools.lru_cache(maxsize=64)
def _pixels(seed):
    # A diagonal gradient, shifted by the instance number so that frames
    # differ; 12 bits stored in 16-bit words (the pattern repeats every 64).
    values = ((x + y + seed) * 64 % 4096
        for y in range(_SIZE) for x in range(_SIZE))
    return struct.pack('<%dH' % (_SIZE * _SIZE), *values)


def _base(sop_class, sop_uid, *, patient_id, patient_name, birth_date, sex,
        study_uid, series_uid, modality, study_date, study_description,
        accession, institution, referring, performing, series_number,
        series_description, instance_number):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b'\0' * 128)
    ds.SpecificCharacterSet = 'ISO_IR 100'
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = '1'
    ds.StudyDate = study_date
    ds.StudyTime = '101500'
    ds.StudyDescription = study_description
    ds.AccessionNumber = accession
    ds.InstitutionName = institution
    ds.ReferringPhysicianName = referring
    if performing is not None:
        ds.PerformingPhysicianName = performing
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.InstanceNumber = instance_number
    ds.Manufacturer = 'health_orthanc tests'
    return ds


def _finish(ds, omit, overrides):
    for keyword in omit:
        if keyword in ds:
            delattr(ds, keyword)
    # Overrides set deliberately odd values (InstanceNumber '3.0'...): a
    # new element is needed, an existing one keeps its validation mode.
    with config.disable_value_validation():
        for keyword, value in (overrides or {}).items():
            if keyword in ds:
                delattr(ds, keyword)
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=False,
        little_endian=True)
    return buffer.getvalue()


def _common(kwargs, *, modality, series_description, study_description):
    """Fill the defaults shared by every kind of object."""
    values = dict(
        patient_id='P1', patient_name='DOE^JOHN', birth_date='19700101',
        sex='M', study_uid=None, series_uid=None, modality=modality,
        study_date='20240102', study_description=study_description,
        accession='ACC1', institution='General Hospital',
        referring='SMITH^ANNA', performing=None, series_number=1,
        series_description=series_description, instance_number=1)
    unknown = set(kwargs) - set(values)
    if unknown:
        raise TypeError('unexpected arguments: %s'
            % ', '.join(sorted(unknown)))
    values.update(kwargs)
    values['study_uid'] = values['study_uid'] or uid()
    values['series_uid'] = values['series_uid'] or uid()
    return values


def image(*, sop_uid=None, image_position=(0, 0, 0), omit=(), overrides=None,
        **kwargs):
    """A 16x16 MONOCHROME2 image that Orthanc's /preview can render."""
    values = _common(kwargs, modality='CT', series_description='AXIAL',
        study_description='CT HEAD')
    sop_class = _IMAGE_CLASSES.get(values['modality'],
        SecondaryCaptureImageStorage)
    ds = _base(sop_class, sop_uid or uid(), **values)
    ds.ImagePositionPatient = list(image_position)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SliceThickness = 1
    ds.FrameOfReferenceUID = uid()
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = 'MONOCHROME2'
    ds.Rows = _SIZE
    ds.Columns = _SIZE
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    seed = values['instance_number'] if isinstance(
        values['instance_number'], int) else 0
    ds.PixelData = _pixels(seed % 64)
    return _finish(ds, omit, overrides)


def structured_report(*, sop_uid=None, text='No acute findings.', omit=(),
        overrides=None, **kwargs):
    """A Basic Text SR (no pixel data): Orthanc cannot preview it."""
    values = _common(kwargs, modality='SR', series_description='REPORT',
        study_description='CT HEAD')
    ds = _base(BasicTextSRStorage, sop_uid or uid(), **values)
    ds.ValueType = 'CONTAINER'
    ds.ContinuityOfContent = 'SEPARATE'
    ds.CompletionFlag = 'COMPLETE'
    ds.VerificationFlag = 'UNVERIFIED'
    ds.ConceptNameCodeSequence = Sequence([_code('18782-3', 'LN',
        'Radiology Study observation')])
    item = Dataset()
    item.RelationshipType = 'CONTAINS'
    item.ValueType = 'TEXT'
    item.ConceptNameCodeSequence = Sequence([_code('121071', 'DCM',
        'Finding')])
    item.TextValue = text
    ds.ContentSequence = Sequence([item])
    ds.ContentDate = values['study_date']
    ds.ContentTime = '110000'
    return _finish(ds, omit, overrides)


def encapsulated_pdf(*, sop_uid=None, pdf=None, omit=(), overrides=None,
        **kwargs):
    """An Encapsulated PDF (modality DOC): Orthanc cannot preview it."""
    values = _common(kwargs, modality='DOC', series_description='PDF',
        study_description='CT HEAD')
    ds = _base(EncapsulatedPDFStorage, sop_uid or uid(), **values)
    document = pdf if pdf is not None else _tiny_pdf()
    if len(document) % 2:
        document += b'\0'  # OB values have an even length
    ds.BurnedInAnnotation = 'NO'
    ds.DocumentTitle = 'Report'
    ds.MIMETypeOfEncapsulatedDocument = 'application/pdf'
    ds.ConceptNameCodeSequence = Sequence()
    ds.EncapsulatedDocument = document
    ds.ContentDate = values['study_date']
    ds.ContentTime = '110000'
    ds.AcquisitionDateTime = values['study_date'] + '110000'
    return _finish(ds, omit, overrides)


def _code(value, scheme, meaning):
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code


def study(n_series=3, n_instances=10, **kwargs):
    """All instances of one study (consistent UIDs), as a list of bytes."""
    return list(_study(n_series, n_instances, **kwargs))


def _study(n_series, n_instances, **kwargs):
    kwargs.setdefault('study_uid', uid())
    kwargs.pop('series_uid', None)
    for series_number in range(1, n_series + 1):
        series_uid = uid()
        for number in range(1, n_instances + 1):
            yield image(series_uid=series_uid, series_number=series_number,
                series_description='SERIES %d' % series_number,
                instance_number=number, image_position=(0, 0, number),
                **kwargs)


def dataset_set(n_studies, n_series, n_instances, patients=None):
    """Yield the files of n_studies studies lazily (for benchmarks).

    patients: None (one patient per study), an int (studies spread over that
    many patients) or a sequence of (patient_id, patient_name) pairs.
    """
    if patients is None:
        patients = n_studies
    if isinstance(patients, int):
        patients = [('BP%06d' % i, 'BENCH^PATIENT%d' % i)
            for i in range(max(patients, 1))]
    for index in range(n_studies):
        patient_id, patient_name = patients[index % len(patients)]
        yield from _study(n_series, n_instances, patient_id=patient_id,
            patient_name=patient_name, accession='BA%06d' % index,
            study_description='BENCH STUDY %d' % index)


def zip_of(files):
    """A ZIP archive of (name, bytes) pairs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()


def frame_mult(files):
    """GNU Health GTK client framing: b'MULT' + (u64 LE length + bytes)*."""
    parts = [b'MULT']
    for data in files:
        parts.append(struct.pack('<Q', len(data)))
        parts.append(data)
    return b''.join(parts)


# Media Storage Directory Storage: the SOP class of a DICOMDIR.
MEDIA_STORAGE_DIRECTORY = '1.2.840.10008.1.3.10'


def dicomdir():
    """A minimal DICOMDIR (File-set ID, no directory records): a DICOM
    file that is the index of a CD, not an image."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MEDIA_STORAGE_DIRECTORY
    meta.MediaStorageSOPInstanceUID = uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b'\0' * 128)
    ds.FileSetID = 'OUTSIDE'
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = Sequence()
    return _finish(ds, (), None)


def patient_cd(images):
    """(path, bytes) of a CD as hospitals burn them: DICOMDIR, images in
    IMAGES/ sub-folders, a viewer program and autorun files."""
    files = [('DICOMDIR', dicomdir())]
    files += [('IMAGES/S%02d/I%04d' % (index // 10, index), data)
        for index, data in enumerate(images)]
    files += [
        ('VIEWER/viewer.exe', b'MZ\x90\x00' + bytes(4096)),
        ('AUTORUN.INF', b'[autorun]\r\nopen=VIEWER\\viewer.exe\r\n'),
        ('README.TXT', b'Images of an outside hospital.\r\n'),
        ]
    return files
