# SPDX-License-Identifier: GPL-3.0-or-later
"""Import reconciliation: give a DICOM file a GNU Health patient's identity
while it streams (no Tryton import, unit-tested alone).

Only the patient's elements are encoded again: the top-level elements of
the header are walked (tag and length, no value decoded) up to the Original
Attributes Sequence's place; the few that make or qualify the identity
(the patient group's identity attributes, Other Patient IDs, Original
Attributes, the character set) are read with pydicom, given the identity
and encoded in the file's own transfer syntax, and every other byte of the
file follows verbatim.  A file this walk cannot take (big endian, deflated,
no file meta group length, an odd element) has its whole header parsed and
encoded again by pydicom (``stop_before_pixels``), the pixel data onwards
verbatim.  Memory is the header, not the file.

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
import functools
import io
import struct
import unicodedata
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.charset import default_encoding, python_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
    ImplicitVRLittleEndian)

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


def _apply(ds, identity, now=None):
    """Give ds the identity, keeping what it replaces in ds (now: the
    modification's DICOM date time, the current one if None)."""
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
    item.AttributeModificationDateTime = now or _now()
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
        rewritten = _splice(recorder, length, identity)
    except _NotSpliceable:
        recorder.seek(0)
        rewritten = _rewrite_header(recorder, length, identity)
    return rewritten, bytes(recorder.buffer[rewritten.resume:])


def _rewrite_header(recorder, length, identity):
    "The whole header parsed and encoded again by pydicom."
    try:
        ds = dcmread(recorder, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError,
            TypeError, AttributeError, NotImplementedError, OSError) as exc:
        raise NotRewritable(str(exc) or exc.__class__.__name__) from None
    if not ds.get('SOPInstanceUID'):
        # What pydicom made of a corrupt or cut file: not an object.
        raise NotRewritable('no SOP Instance UID in the header')
    resume = recorder.tell()
    syntax = ds.file_meta.get('TransferSyntaxUID') if getattr(
        ds, 'file_meta', None) else None
    if syntax == DeflatedExplicitVRLittleEndian:
        # The deflated dataset cannot be cut at its pixel data: the whole
        # file is read (it is compressed, hence small) and written anew.
        recorder._fill(length)
        ds = dcmread(io.BytesIO(bytes(recorder.buffer)))
        resume = len(recorder.buffer)
    if _carries(ds, identity):
        return Rewritten(bytes(recorder.buffer[:resume]), resume, False)
    try:
        _apply(ds, identity)
        header = _encode(ds)
    except (ValueError, TypeError, KeyError, AttributeError,
            NotImplementedError) as exc:
        raise NotRewritable(str(exc) or exc.__class__.__name__) from None
    return Rewritten(header, resume, True)


# --- Only the patient's elements encoded again -------------------------------

class _NotSpliceable(ValueError):
    "A file the element walk does not take: pydicom parses its header."


def _tags(*keywords):
    return frozenset(tag_for_keyword(k) for k in keywords)


# The top-level elements read, given the identity and encoded again.
_REWRITTEN = _tags('SpecificCharacterSet', 'OtherPatientIDsSequence',
    'OriginalAttributesSequence', *(k for k, _ in ATTRIBUTES), *DROPPED)
# The walk ends at the last of them: what follows is sent verbatim.
_LAST = max(_REWRITTEN)
# Retired group lengths of the groups changed: dropped (they would be
# wrong; pydicom does not write them either).
_GROUP_LENGTHS = frozenset(t & 0xFFFF0000 for t in _REWRITTEN)
_SOP_INSTANCE_UID = tag_for_keyword('SOPInstanceUID')
_TRANSFER_SYNTAX = tag_for_keyword('TransferSyntaxUID')
# Explicit VRs with a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset([b'OB', b'OD', b'OF', b'OL', b'OV', b'OW', b'SQ',
        b'SV', b'UC', b'UN', b'UR', b'UT', b'UV'])
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_MAX_DEPTH = 16
_PREAMBLE = 128


class _Walker:
    """The elements of a little endian dataset in the recorder's bytes: tag
    and where each ends, values skipped (sequences of undefined length
    followed to their delimiter)."""

    def __init__(self, recorder, implicit):
        self._recorder = recorder
        self._implicit = implicit

    def bytes(self, start, end):
        self._recorder._fill(end)
        if len(self._recorder.buffer) < end:
            raise _NotSpliceable('the file ends inside its header')
        return self._recorder.buffer[start:end]

    def tag(self, position):
        group, element = struct.unpack('<HH', self.bytes(position,
                position + 4))
        return group << 16 | element

    def end_of(self, position, depth=0):
        "Where the element at position ends."
        header = self.bytes(position, position + 8)
        if self._implicit:
            vr, value = None, position + 8
            length, = struct.unpack('<I', header[4:8])
        else:
            vr = bytes(header[4:6])
            if vr in _LONG_VRS:
                value = position + 12
                length, = struct.unpack('<I', self.bytes(position + 8,
                        value))
            elif vr.isalpha() and vr.isupper():
                value = position + 8
                length, = struct.unpack('<H', header[6:8])
            else:
                raise _NotSpliceable('no VR')
        if length != _UNDEFINED:
            return value + length
        if vr not in (None, b'SQ') or depth > _MAX_DEPTH:
            raise _NotSpliceable('undefined length')
        return self._end_of_sequence(value, depth + 1)

    def _end_of_sequence(self, position, depth):
        while True:
            tag, length = struct.unpack('<II', self._item(position))
            if tag == _SEQUENCE_END:
                return position + 8
            if tag != _ITEM:
                raise _NotSpliceable('no item')
            position += 8
            if length != _UNDEFINED:
                position += length
                continue
            while self.tag(position) != _ITEM_END:
                position = self.end_of(position, depth)
            position += 8

    def _item(self, position):
        group, element, length = struct.unpack('<HHI', self.bytes(position,
                position + 8))
        return struct.pack('<II', group << 16 | element, length)


def _dataset_start(walker):
    """(where the dataset starts, its transfer syntax UID): the file meta
    group, explicit VR little endian, skipped by its group length."""
    if walker.bytes(_PREAMBLE, _PREAMBLE + 4) != b'DICM':
        raise _NotSpliceable('no DICM')
    position = _PREAMBLE + 4
    header = walker.bytes(position, position + 12)
    if bytes(header[:6]) != b'\x02\x00\x00\x00UL':
        raise _NotSpliceable('no file meta group length')
    end = position + 12 + struct.unpack('<I', header[8:12])[0]
    position += 12
    syntax = None
    while position < end:
        tag, next_ = walker.tag(position), walker.end_of(position)
        if tag == _TRANSFER_SYNTAX:
            syntax = bytes(walker.bytes(position + 8, next_)).rstrip(
                b'\x00 ').decode('ascii', 'replace')
        position = next_
    if position != end or not syntax:
        raise _NotSpliceable('file meta group')
    return end, syntax


def _top_level(walker, start, length):
    """[(tag, start, end)] of the top-level elements up to _LAST, and where
    the file goes on verbatim."""
    elements, position = [], start
    while position < length:
        tag = walker.tag(position)
        if tag > _LAST:
            break
        end = walker.end_of(position)
        if elements and tag <= elements[-1][0]:
            raise _NotSpliceable('elements out of order')
        elements.append((tag, position, end))
        position = end
    return elements, min(position, length)


def _encode_elements(ds, implicit):
    "{tag: bytes} of each element of ds, in the file's encoding."
    encoding = ds.get('SpecificCharacterSet', default_encoding)
    encoded = {}
    for tag in ds.keys():
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, implicit
        write_data_element(out, ds[tag], encoding)
        encoded[int(tag)] = out.getvalue()
    return encoded


@functools.lru_cache(maxsize=32)
def _patient_elements(read, implicit, identity, now):
    """(whether they already carry identity, else {tag: bytes} of them
    given identity) of the patient's elements read, raw as in the file.
    Cached: the files of a study carry the same bytes there, so an upload
    decodes and encodes them again once a second (now, which the
    modification record holds), not once a file."""
    ds = read_dataset(io.BytesIO(read), implicit, True)
    if _carries(ds, identity):
        return True, None
    _apply(ds, identity, now)
    return False, _encode_elements(ds, implicit)


def _splice(recorder, length, identity):
    """Rewritten with only the elements of _REWRITTEN encoded again
    (_NotSpliceable if the walk cannot take the file)."""
    walker = _Walker(recorder, implicit=False)
    start, syntax = _dataset_start(walker)
    if syntax in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian):
        raise _NotSpliceable(syntax)
    implicit = syntax == ImplicitVRLittleEndian
    walker = _Walker(recorder, implicit)
    elements, resume = _top_level(walker, start, length)
    if _SOP_INSTANCE_UID not in {tag for tag, _, _ in elements}:
        raise _NotSpliceable('no SOP Instance UID')
    buffer = recorder.buffer
    read = b''.join(buffer[s:e] for tag, s, e in elements
        if tag in _REWRITTEN)
    try:
        carried, encoded = _patient_elements(read, implicit, identity,
            _now())
        if carried:
            return Rewritten(bytes(buffer[:resume]), resume, False)
    except (ValueError, TypeError, KeyError, AttributeError, EOFError,
            NotImplementedError) as exc:
        raise _NotSpliceable(str(exc)) from None
    kept = [(tag, buffer[s:e]) for tag, s, e in elements
        if tag not in _REWRITTEN and tag not in _GROUP_LENGTHS]
    merged = sorted(kept + list(encoded.items()), key=lambda e: e[0])
    header = b''.join([buffer[:start], *(value for _, value in merged)])
    return Rewritten(header, resume, True)


class ViewReader:
    "read() over a memoryview, without copying it whole."

    def __init__(self, view):
        self._view = view
        self._position = 0

    def read(self, size):
        return bytes(self.read_view(size))

    def read_view(self, size):
        "The next size bytes (or fewer at the end) as a view, not a copy."
        piece = self._view[self._position:self._position + size]
        self._position += len(piece)
        return piece


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
