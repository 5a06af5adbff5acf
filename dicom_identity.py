# SPDX-License-Identifier: GPL-3.0-or-later
"""Import reconciliation: give a DICOM file a GNU Health patient's identity
while it streams (no Tryton import, unit-tested alone).

Only the header is parsed (pydicom, ``stop_before_pixels``): the patient
attributes are replaced, the header is encoded again in the file's own
transfer syntax, and the rest of the file (the pixel data element onwards)
follows verbatim.  Memory is the header, not the file.

What is kept of the other hospital's identity, inside the object:

* Other Patient IDs Sequence (0010,1002): the original PatientID with its
  issuer (the IHE import reconciliation profile's place for it);
* Original Attributes Sequence (0400,0561): one item whose Modified
  Attributes Sequence holds the original values of every attribute
  changed, with when, by which system and why (``COERCE``, the term PS3.3
  gives for import from another institution).

UIDs are never touched.  A file that already carries the identity is sent
as is (reconciling twice adds nothing).
"""
import copy
import datetime
import io
import unicodedata
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian

from . import upload_frames

__all__ = ['Identity', 'NotRewritable', 'Rewritten', 'rewrite_stream',
    'rewrite_bytes', 'original_patient_ids']

MODIFYING_SYSTEM = 'GNU Health health_orthanc'
REASON = 'COERCE'
# The attributes that make the identity, as (keyword, Identity field).
ATTRIBUTES = (
    ('PatientID', 'patient_id'),
    ('PatientName', 'name'),
    ('PatientBirthDate', 'birth_date'),
    ('PatientSex', 'sex'),
    )
# Replaced too, since they qualify the old PatientID.
DROPPED = ('IssuerOfPatientID', 'IssuerOfPatientIDQualifiersSequence')
READ_PIECE = 1 << 16
# GNU Health genders as DICOM PatientSex (unknown: empty).
SEXES = {'m': 'M', 'f': 'F', 'nb': 'O', 'other': 'O'}


class NotRewritable(ValueError):
    "The file cannot be given the identity (not DICOM, corrupt header)."


@dataclass(frozen=True)
class Identity:
    """A GNU Health patient as DICOM names it: PatientID (PUID), PatientName
    ('FAMILY^GIVEN'), PatientBirthDate ('YYYYMMDD' or ''), PatientSex."""
    patient_id: str
    name: str
    birth_date: str = ''
    sex: str = ''

    @classmethod
    def of(cls, puid, lastname, given, dob=None, gender=None):
        "From GNU Health's party fields (gender 'm', 'f', other...)."
        return cls(
            patient_id=puid,
            name='^'.join(p or '' for p in (lastname, given)).rstrip('^'),
            birth_date=dob.strftime('%Y%m%d') if dob else '',
            sex=SEXES.get(gender, ''))


@dataclass
class Rewritten:
    """A file's new header and where the original file resumes: send
    ``header`` then the original bytes from ``resume`` on."""
    header: bytes
    resume: int  # offset in the original file
    changed: bool


class _Recorder(upload_frames._ViewFile):
    """A file pydicom can read (and seek back in) over a one-pass stream:
    what was read is kept, so the header's bytes are at hand afterwards."""

    def __init__(self, stream, length):
        self.buffer = bytearray()
        super().__init__(self.buffer)
        self._stream = stream
        self._length = length

    def _fill(self, end):
        end = min(end, self._length)
        while len(self.buffer) < end:
            piece = self._stream.read(max(end - len(self.buffer),
                    READ_PIECE))
            if not piece:
                self._length = len(self.buffer)  # the file ended early
                return
            self.buffer += piece

    def readinto(self, target):
        self._fill(self.tell() + len(target))
        return super().readinto(target)


def _encodable(value, charsets):
    "True if one of the dataset's character sets holds value as is."
    for term in charsets:
        codec = 'ascii' if term in ('', 'ISO_IR 6', 'ISO 2022 IR 6') \
            else python_encoding.get(term)
        if not codec:
            continue
        try:
            value.encode(codec)
        except UnicodeError:
            continue
        return True
    return False


def _ascii(value):
    text = unicodedata.normalize('NFKD', value)
    return ''.join(c for c in text
        if not unicodedata.combining(c)).encode('ascii', 'replace').decode()


def _fit_charset(ds, identity):
    """The identity with a name the dataset's character set can hold: a
    dataset in the default repertoire moves to UTF-8 (ASCII is a subset of
    it); one in another character set gets the name without accents."""
    charsets = ds.get('SpecificCharacterSet') or 'ISO_IR 6'
    if isinstance(charsets, str):
        charsets = [charsets]
    charsets = list(charsets)
    if _encodable(identity.name, charsets):
        return identity
    if charsets in (['ISO_IR 6'], ['']):
        ds.SpecificCharacterSet = 'ISO_IR 192'
        return identity
    return Identity(identity.patient_id, _ascii(identity.name),
        identity.birth_date, identity.sex)


def _carries(ds, identity):
    return all(str(ds.get(keyword, '') or '') == getattr(identity, field)
        for keyword, field in ATTRIBUTES)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y%m%d%H%M%S+0000')


def _apply(ds, identity):
    "Give ds the identity, keeping what it replaces in ds."
    identity = _fit_charset(ds, identity)
    original = Dataset()
    for keyword in [k for k, _ in ATTRIBUTES] + list(DROPPED):
        if keyword in ds:
            # A copy: the element itself is about to be given a new value.
            original.add(copy.deepcopy(ds[keyword]))
    old_id = str(ds.get('PatientID', '') or '')
    issuer = str(ds.get('IssuerOfPatientID', '') or '')
    if old_id and old_id != identity.patient_id:
        other = Dataset()
        other.PatientID = old_id
        if issuer:
            other.IssuerOfPatientID = issuer
        other.TypeOfPatientID = 'TEXT'
        others = list(ds.get('OtherPatientIDsSequence', []))
        if not any(str(i.get('PatientID', '')) == old_id
                and str(i.get('IssuerOfPatientID', '') or '') == issuer
                for i in others):
            others.append(other)
        ds.OtherPatientIDsSequence = Sequence(others)
    for keyword in DROPPED:
        if keyword in ds:
            del ds[keyword]
    for keyword, field in ATTRIBUTES:
        setattr(ds, keyword, getattr(identity, field))
    item = Dataset()
    item.ModifiedAttributesSequence = Sequence([original])
    item.AttributeModificationDateTime = _now()
    item.ModifyingSystem = MODIFYING_SYSTEM
    item.ReasonForTheAttributeModification = REASON
    if issuer:
        item.SourceOfPreviousValues = issuer
    history = list(ds.get('OriginalAttributesSequence', []))
    history.append(item)
    ds.OriginalAttributesSequence = Sequence(history)


def _encode(ds):
    out = io.BytesIO()
    # enforce_file_format=False: the preamble, file meta information and
    # transfer syntax stay those of the file.
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def rewrite_stream(stream, length, identity):
    """Read the header of the DICOM file of length bytes coming from
    stream (a one-pass readable) and give it identity.

    Returns (Rewritten, the bytes read past the header): send
    Rewritten.header, those bytes, then the rest of stream.
    NotRewritable if the header cannot be read.
    """
    recorder = _Recorder(stream, length)
    try:
        ds = dcmread(recorder, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError,
            TypeError, AttributeError, NotImplementedError, OSError) as exc:
        raise NotRewritable(str(exc) or exc.__class__.__name__) from None
    if not ds.get('SOPInstanceUID'):
        # What pydicom made of a corrupt or cut file: not an object.
        raise NotRewritable('no SOP Instance UID in the header')
    resume = recorder.tell()
    read_ahead = bytes(recorder.buffer[resume:])
    syntax = ds.file_meta.get('TransferSyntaxUID') if getattr(
        ds, 'file_meta', None) else None
    if syntax == DeflatedExplicitVRLittleEndian:
        # The deflated dataset cannot be cut at its pixel data: the whole
        # file is read (it is compressed, hence small) and written anew.
        recorder._fill(length)
        ds = dcmread(io.BytesIO(bytes(recorder.buffer)))
        resume, read_ahead = len(recorder.buffer), b''
    if _carries(ds, identity):
        return Rewritten(bytes(recorder.buffer[:resume]), resume,
            False), read_ahead
    try:
        _apply(ds, identity)
        header = _encode(ds)
    except (ValueError, TypeError, KeyError, AttributeError,
            NotImplementedError) as exc:
        raise NotRewritable(str(exc) or exc.__class__.__name__) from None
    return Rewritten(header, resume, True), read_ahead


class ViewReader:
    "read() over a memoryview, without copying it whole."

    def __init__(self, view):
        self._view = view
        self._position = 0

    def read(self, size):
        piece = self._view[self._position:self._position + size]
        self._position += len(piece)
        return bytes(piece)


def rewrite_bytes(data, identity):
    """The whole file data (bytes or a buffer) with identity: a list of
    buffers to send in order (the pixel data is a view, not a copy)."""
    view = memoryview(data).cast('B')
    rewritten, _ = rewrite_stream(ViewReader(view), len(view), identity)
    return [rewritten.header, view[rewritten.resume:]]


def original_patient_ids(ds):
    "The PatientIDs kept in Other Patient IDs Sequence (for tests, reports)."
    return [str(i.get('PatientID', '')) for i in ds.get(
            'OtherPatientIDsSequence', [])]
