# SPDX-License-Identifier: GPL-3.0-or-later
"""Modality Worklist items as DICOM: the attributes of an imaging test
request and the worklist file (.wl) that both delivery modes carry.

No trytond here: plain values in, bytes out (tests and the benchmark build
items with it too).
"""
import io

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

# Modality Worklist Information Model - FIND: the SOP class of the files
# that Orthanc's ModalityWorklists plugin and dcmtk's wlmscpfs serve.
WORKLIST_SOP_CLASS = '1.2.840.10008.5.1.4.31'
# UTF-8: accented and non-Latin names survive.
CHARSET = 'ISO_IR 192'
# Top-level attributes, then those of the Scheduled Procedure Step item.
TOP_LEVEL = ('AccessionNumber', 'PatientName', 'PatientID',
    'PatientBirthDate', 'PatientSex', 'StudyInstanceUID',
    'RequestedProcedureDescription', 'RequestedProcedureID',
    'RequestingPhysician', 'ReferringPhysicianName',
    'TimezoneOffsetFromUTC')
STEP = ('Modality', 'ScheduledStationAETitle',
    'ScheduledProcedureStepStartDate', 'ScheduledProcedureStepStartTime',
    'ScheduledProcedureStepDescription', 'ScheduledProcedureStepID')
SEX = {'m': 'M', 'f': 'F'}
# Value lengths of the VRs that would make a file invalid when exceeded.
MAX_LENGTH = {'ScheduledStationAETitle': 16, 'Modality': 16,
    'ScheduledProcedureStepID': 16, 'RequestedProcedureID': 16}


def person_name(family, given):
    "DICOM PN: Family^Given, without trailing separators."
    return '^'.join([family or '', given or '']).rstrip('^')


def dicom_sex(gender):
    "GNU Health's gender as DICOM PatientSex (M, F or O)."
    return SEX.get(gender, 'O') if gender else ''


def worklist_attributes(*, study_uid, accession, procedure_id,
        description, patient_id, family, given, birth_date, gender,
        requesting_physician, scheduled, modality, station_ae):
    """The item's attributes ({keyword: text}, the step's attributes
    flattened): what is stored on the item and compared to see a change.
    scheduled is a naive UTC datetime (Tryton stores UTC)."""
    values = {
        'AccessionNumber': accession or '',
        'PatientName': person_name(family, given),
        'PatientID': patient_id or '',
        'PatientBirthDate': birth_date.strftime('%Y%m%d')
        if birth_date else '',
        'PatientSex': dicom_sex(gender),
        'StudyInstanceUID': study_uid,
        'RequestedProcedureDescription': description or '',
        'RequestedProcedureID': procedure_id or '',
        'RequestingPhysician': requesting_physician or '',
        'ReferringPhysicianName': requesting_physician or '',
        'TimezoneOffsetFromUTC': '+0000',
        'Modality': modality or '',
        'ScheduledStationAETitle': station_ae or '',
        'ScheduledProcedureStepStartDate': scheduled.strftime('%Y%m%d')
        if scheduled else '',
        'ScheduledProcedureStepStartTime': scheduled.strftime('%H%M%S')
        if scheduled else '',
        'ScheduledProcedureStepDescription': description or '',
        'ScheduledProcedureStepID': procedure_id or '',
        }
    return {key: value[:MAX_LENGTH[key]] if key in MAX_LENGTH else value
        for key, value in values.items()}


def worklist_file(attributes):
    "The DICOM worklist file (part 10, explicit little endian) as bytes."
    dataset = Dataset()
    dataset.SpecificCharacterSet = CHARSET
    for keyword in TOP_LEVEL:
        setattr(dataset, keyword, attributes.get(keyword, ''))
    step = Dataset()
    for keyword in STEP:
        setattr(step, keyword, attributes.get(keyword, ''))
    dataset.ScheduledProcedureStepSequence = [step]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = WORKLIST_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = attributes['StudyInstanceUID']
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    dataset.file_meta = meta
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def file_name(study_uid):
    "The item's file in a worklist folder (a UID is digits and dots)."
    if not study_uid or not all(c.isdigit() or c == '.' for c in study_uid):
        raise ValueError('not a DICOM UID: %r' % (study_uid,))
    return study_uid + '.wl'
