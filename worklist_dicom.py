# SPDX-License-Identifier: GPL-3.0-or-later
"""Modality Worklist items as DICOM: the attributes of an imaging test
request and the worklist file (.wl) that both delivery modes carry.

No trytond here: plain values in, bytes out (tests and the benchmark build
items with it too).
"""
import struct

from pydicom.datadict import dictionary_VR, tag_for_keyword
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
    """The DICOM worklist file (part 10, explicit VR little endian) as
    bytes.

    Encoded here rather than through pydicom's writer: delivering a
    thousand items spent most of its time building and writing pydicom
    datasets, and these files only ever hold the text attributes above and
    one Scheduled Procedure Step (tests/test_worklist_dicom.py reads them
    back with pydicom)."""
    top = [(keyword, attributes.get(keyword, '')) for keyword in TOP_LEVEL]
    top.append(('SpecificCharacterSet', CHARSET))
    step = _elements([(keyword, attributes.get(keyword, ''))
            for keyword in STEP])
    item = _ITEM + struct.pack('<I', len(step)) + step
    body = _elements(top, sequence=item)
    uid = attributes['StudyInstanceUID']
    meta = _elements([('FileMetaInformationVersion', b'\x00\x01'),
            ('MediaStorageSOPClassUID', WORKLIST_SOP_CLASS),
            ('MediaStorageSOPInstanceUID', uid),
            ('TransferSyntaxUID', ExplicitVRLittleEndian),
            ('ImplementationClassUID', PYDICOM_IMPLEMENTATION_UID)])
    group_length = _element('FileMetaInformationGroupLength',
        struct.pack('<I', len(meta)))
    return b''.join([b'\x00' * 128, b'DICM', group_length, meta, body])


# Tag and VR of each keyword written, from pydicom's dictionary.
_KEYWORDS = TOP_LEVEL + STEP + ('SpecificCharacterSet',
    'ScheduledProcedureStepSequence', 'FileMetaInformationGroupLength',
    'FileMetaInformationVersion', 'MediaStorageSOPClassUID',
    'MediaStorageSOPInstanceUID', 'TransferSyntaxUID',
    'ImplementationClassUID')
_TAGS = {k: (tag_for_keyword(k), dictionary_VR(tag_for_keyword(k)))
    for k in _KEYWORDS}
# VRs with a 4-byte length (after 2 reserved bytes) in explicit VR.
_LONG_VRS = {'OB', 'OW', 'OF', 'SQ', 'UT', 'UN', 'UC', 'UR'}
# Item of a sequence: (FFFE,E000).
_ITEM = struct.pack('<HH', 0xFFFE, 0xE000)


def _element(keyword, value):
    "One data element; value: bytes, or text encoded UTF-8 and padded."
    tag, vr = _TAGS[keyword]
    if isinstance(value, str):
        value = value.encode('utf-8')
    if len(value) % 2:
        value += b'\x00' if vr in ('UI', 'OB') else b' '
    header = struct.pack('<HH2s', tag >> 16, tag & 0xFFFF, vr.encode())
    if vr in _LONG_VRS:
        header += struct.pack('<HI', 0, len(value))
    else:
        header += struct.pack('<H', len(value))
    return header + value


def _elements(pairs, sequence=None):
    """The elements of pairs [(keyword, value)] in tag order; sequence:
    the encoded item of the Scheduled Procedure Step Sequence."""
    if sequence is not None:
        pairs = pairs + [('ScheduledProcedureStepSequence', sequence)]
    return b''.join(_element(keyword, value) for keyword, value in sorted(
            pairs, key=lambda pair: _TAGS[pair[0]][0]))


def file_name(study_uid):
    "The item's file in a worklist folder (a UID is digits and dots)."
    if not study_uid or not all(c.isdigit() or c == '.' for c in study_uid):
        raise ValueError('not a DICOM UID: %r' % (study_uid,))
    return study_uid + '.wl'
