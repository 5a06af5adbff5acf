# SPDX-License-Identifier: GPL-3.0-or-later
"""Split what an upload widget sent into files, without copying them.

No Tryton code here (unit-tested alone).  The value of a binary_dicom field
is one of:

* the GNU Health framing (GTK client widget and SAO's custom.js):
  ``b'MULT'`` then, per file, an 8-byte little-endian unsigned length and
  the file's bytes;
* one file as is: a DICOM Part 10 file, a ZIP archive of DICOM files, ...

``iter_files`` yields the files lazily as ``memoryview`` slices of the
value: a 200 MB upload is never copied as a whole.  A frame whose length
runs past the end of the value (a truncated upload) is yielded with an
error and ends the iteration: the bytes after it cannot be trusted.

``check_upload`` checks a whole upload against UploadLimits before anything
is sent: too many files, an empty file, a gzip'ed file inflating beyond its
limit, a ZIP archive with too many entries, too large or too compressed
contents refuse the whole upload (UploadRefused).  Inflation is streamed:
a gzip bomb is refused after counting, never holding, its output.
"""
import dataclasses
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass

__all__ = ['MAGIC', 'Frame', 'is_framed', 'iter_files', 'count_frames',
    'file_names', 'file_name', 'kind_of', 'gunzip', 'inflated_size',
    'Inflated', 'UploadLimits', 'UploadRefused', 'CheckedFile',
    'check_upload']

MAGIC = b'MULT'
_LENGTH = struct.Struct('<Q')
_DICM_OFFSET = 128
ZIP_MAGIC = (b'PK\x03\x04', b'PK\x05\x06')  # an archive, an empty archive
GZIP_MAGIC = b'\x1f\x8b'
# A gzip'ed DICOM file (the GTK widget offers *.gz) is inflated up to this
# size by default; more is refused rather than risking a decompression bomb.
MAX_GUNZIP = 512_000_000
# Inflation works on 64 KB of input and yields at most 1 MB at a time: zlib
# copies the unconsumed input on each call, so the input piece stays small.
_INPUT_PIECE = 1 << 16
_OUTPUT_CHUNK = 1 << 20
# Small archives are judged as if they were this large: a few well
# compressed files are not a bomb.
_RATIO_FLOOR = 1_000_000


@dataclass(frozen=True)
class UploadLimits:
    "What one upload may hold (sizes in bytes)."
    files: int = 10_000  # files in one upload
    inflated_file: int = MAX_GUNZIP  # a gzip'ed file, or a ZIP entry
    inflated_upload: int = 4_000_000_000  # all gzip'ed files and ZIPs
    zip_entries: int = 10_000  # entries of one ZIP archive
    zip_ratio: int = 100  # uncompressed / compressed size of a ZIP

    def __post_init__(self):
        for item in dataclasses.fields(self):
            if getattr(self, item.name) <= 0:
                raise ValueError('upload limit %s must be positive'
                    % item.name)


class UploadRefused(ValueError):
    """The upload breaks a limit: none of it may be sent.

    code names the limit ('too_many_files', 'empty_file', 'gzip_too_large',
    'zip_entries', 'zip_entry_too_large', 'zip_ratio', 'upload_too_large');
    values are for the message (index is the 1-based file number).
    """

    def __init__(self, code, **values):
        self.code = code
        self.values = values
        super().__init__('%s %r' % (code, values))


@dataclass(frozen=True)
class Frame:
    "One file of an upload: its position, bytes (a view) or an error."
    index: int  # 0-based position in the upload
    data: memoryview = None
    error: str = None

    @property
    def size(self):
        return len(self.data) if self.data is not None else 0


def _view(data):
    view = data if isinstance(data, memoryview) else memoryview(data)
    return view.cast('B') if view.format != 'B' or view.ndim != 1 else view


def _is_dicom(view):
    return bytes(view[_DICM_OFFSET:_DICM_OFFSET + 4]) == b'DICM'


def _walk(view):
    """(index, start, length, error) of each frame; no data is touched
    beyond the 8-byte headers."""
    position, index, size = len(MAGIC), 0, len(view)
    while position < size:
        if size - position < _LENGTH.size:
            yield index, position, 0, (
                'truncated upload: the length of file #%d is cut short '
                '(%d of %d bytes)' % (index + 1, size - position,
                    _LENGTH.size))
            return
        length, = _LENGTH.unpack_from(view, position)
        position += _LENGTH.size
        if length > size - position:
            yield index, position, 0, (
                'truncated upload: file #%d announces %d bytes, '
                'only %d arrived' % (index + 1, length, size - position))
            return
        yield index, position, length, None
        position += length
        index += 1


def is_framed(data):
    """True if data uses the MULT framing.

    A DICOM file whose 128-byte preamble happens to start with b'MULT' is
    a DICOM file: 'DICM' at offset 128 is checked first.
    """
    if data is None:
        return False
    view = _view(data)
    return bytes(view[:len(MAGIC)]) == MAGIC and not _is_dicom(view)


def count_frames(data):
    "Number of files in data (a truncated frame counts as one)."
    if not data:
        return 0
    view = _view(data)
    if not is_framed(view):
        return 1
    return sum(1 for _ in _walk(view))


def iter_files(data):
    """Yield a Frame per file of data (framed or one file), lazily.

    Empty files are yielded too (Orthanc rejects them, the user is told).
    """
    if not data:
        return
    view = _view(data)
    if not is_framed(view):
        yield Frame(0, view)
        return
    for index, start, length, error in _walk(view):
        if error:
            yield Frame(index, error=error)
        else:
            yield Frame(index, view[start:start + length])


def file_names(names, count):
    """Names of count files from the widget's file-name field.

    SAO's custom.js joins the names with '\\n' in file order; the GTK
    widget stores the total length there instead.  Any mismatch falls back
    to "file #1", "file #2"...
    """
    if isinstance(names, str):
        parts = names.split('\n')
        if len(parts) == count and all(p.strip() for p in parts):
            return [p.strip() for p in parts]
    return ['file #%d' % (i + 1) for i in range(count)]


def file_name(names, index):
    """The name of the file at index (0-based) when the files were not
    counted: its line of SAO's names if there is one, else "file #n"."""
    parts = names.split('\n') if isinstance(names, str) else []
    if index < len(parts) and parts[index].strip():
        return parts[index].strip()
    return 'file #%d' % (index + 1)


def kind_of(data):
    "'dicom', 'zip', 'gzip' or 'unknown', from the first bytes."
    view = _view(data)
    head = bytes(view[:4])
    if _is_dicom(view):
        return 'dicom'
    if head in ZIP_MAGIC:
        return 'zip'
    if head[:2] == GZIP_MAGIC:
        return 'gzip'
    return 'unknown'


def _inflate(view):
    """Yield the inflated bytes of a gzip stream (one member) in chunks of
    at most 1 MB; ValueError if it is corrupt or truncated."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        for start in range(0, len(view), _INPUT_PIECE):
            data = view[start:start + _INPUT_PIECE]
            while not inflater.eof:
                chunk = inflater.decompress(data, _OUTPUT_CHUNK)
                if chunk:
                    yield chunk
                data = inflater.unconsumed_tail
                if not data and len(chunk) < _OUTPUT_CHUNK:
                    break  # this piece is used up, nothing is pending
            if inflater.eof:
                return
    except zlib.error as exc:
        raise ValueError('corrupt gzip data: %s' % exc) from None
    raise ValueError('truncated gzip data')


def inflated_size(data, limit=MAX_GUNZIP):
    """(size, first bytes) of a gzip stream once inflated, counted without
    keeping the output; UploadRefused('gzip_too_large') beyond limit,
    ValueError if corrupt."""
    size, head = 0, b''
    for chunk in _inflate(_view(data)):
        if len(head) < _DICM_OFFSET + 4:
            head += chunk[:_DICM_OFFSET + 4 - len(head)]
        size += len(chunk)
        if size > limit:
            raise UploadRefused('gzip_too_large', limit=limit)
    return size, head


def gunzip(data, limit=MAX_GUNZIP):
    """The inflated bytes of a gzip stream, in one buffer of exactly their
    size (counted first); see inflated_size for the errors."""
    size, _ = inflated_size(data, limit)
    return Inflated(_view(data), size).to_buffer()


class Inflated:
    """A gzip'ed file streamed as its inflated bytes: a re-iterable of
    chunks with a len(), which the adapter sends as it goes (inflating
    again on a retry).  Memory: one chunk, not the file."""

    def __init__(self, view, size):
        self._view = view
        self._size = size

    def __len__(self):
        return self._size

    def __iter__(self):
        return _inflate(self._view)

    def to_buffer(self):
        """The whole inflated file, in a buffer of its exact size (not
        named read: httpx would take this object for a file)."""
        buffer = bytearray(self._size)
        position = 0
        for chunk in self:
            buffer[position:position + len(chunk)] = chunk
            position += len(chunk)
        return buffer


class _ViewFile(io.RawIOBase):
    "A read-only file over a memoryview: zipfile reads it without a copy."

    def __init__(self, view):
        self._view = view
        self._position = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._position

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position,
            io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer):
        piece = self._view[self._position:self._position + len(buffer)]
        buffer[:len(piece)] = piece
        self._position += len(piece)
        return len(piece)


def _zip_members(view):
    "The file entries of a ZIP archive; ValueError if unreadable."
    try:
        with zipfile.ZipFile(_ViewFile(view)) as archive:
            return [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError,
            EOFError) as exc:
        raise ValueError('unreadable ZIP archive: %s'
            % (str(exc) or exc.__class__.__name__)) from None


def _check_zip(view, limits):
    """(files, uncompressed size) of a ZIP archive within limits.

    Orthanc inflates each entry in memory to the size its central directory
    announces, so the announced sizes are what must be bounded.
    """
    members = _zip_members(view)
    if len(members) > limits.zip_entries:
        raise UploadRefused('zip_entries', count=len(members),
            limit=limits.zip_entries)
    largest = max((m.file_size for m in members), default=0)
    if largest > limits.inflated_file:
        raise UploadRefused('zip_entry_too_large', size=largest,
            limit=limits.inflated_file)
    total = sum(m.file_size for m in members)
    if total > limits.zip_ratio * max(len(view), _RATIO_FLOOR):
        raise UploadRefused('zip_ratio', ratio=total // max(len(view), 1),
            limit=limits.zip_ratio)
    return len(members), total


def zip_not_dicom(view):
    """Names of the entries of a checked ZIP archive that are not DICOM
    Part 10 files (no DICM at offset 128): Orthanc skips them silently.
    Only each entry's first bytes are inflated; an entry that cannot be
    read is left to Orthanc."""
    names = []
    with zipfile.ZipFile(_ViewFile(view)) as archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            try:
                with archive.open(member) as entry:
                    head = entry.read(_DICM_OFFSET + 4)
            except (zipfile.BadZipFile, zlib.error, NotImplementedError,
                    RuntimeError, EOFError, OSError):
                continue
            if not _is_dicom(memoryview(head)):
                names.append(member.filename)
    return tuple(names)


@dataclass
class CheckedFile:
    """One file of an upload, checked: what to send, or why not.

    data: the file as uploaded (a view); kind: kind_of() of what is sent
    (of the inflated bytes for a gzip'ed file); size: bytes sent;
    zip_files: files of a ZIP archive; inflates: bytes inflated to send
    it (by us for gzip, by Orthanc for a ZIP); problem: (code, values) of
    a file that is not sent (truncated, corrupt gzip, unreadable ZIP), the
    other files still are.
    """
    index: int
    data: memoryview = None
    kind: str = None
    gzipped: bool = False
    size: int = 0
    zip_files: int = None
    zip_not_dicom: tuple = ()  # entries Orthanc will skip, by name
    inflates: int = 0
    problem: tuple = None

    def body(self):
        "What to send: the view, or the inflated stream (or buffer)."
        if not self.gzipped:
            return self.data
        inflated = Inflated(self.data, self.size)
        # A ZIP is read at random: it needs its bytes at hand.
        return memoryview(inflated.to_buffer()) if self.kind == 'zip' \
            else inflated


def _check_framing(view, limits):
    "Refuse too many files or an empty file, reading only the headers."
    for index, _, length, error in _walk(view):
        if index >= limits.files:
            raise UploadRefused('too_many_files', limit=limits.files)
        if not length and not error:
            raise UploadRefused('empty_file', index=index + 1)


def _check_file(frame, limits):
    "A CheckedFile for one frame; UploadRefused beyond a limit."
    checked = CheckedFile(frame.index, frame.data)
    if frame.error:
        checked.problem = ('truncated', {'detail': frame.error})
        return checked
    checked.kind, checked.size = kind_of(frame.data), frame.size
    view, unusable = frame.data, 'bad_gzip'
    try:
        if checked.kind == 'gzip':
            checked.size, head = inflated_size(view, limits.inflated_file)
            checked.gzipped, checked.kind = True, kind_of(head)
            checked.inflates = checked.size
            if checked.kind == 'zip':
                view = checked.body()
        unusable = 'bad_zip'
        if checked.kind == 'zip':
            checked.zip_files, inflated = _check_zip(view, limits)
            checked.zip_not_dicom = zip_not_dicom(view)
            checked.inflates += inflated
    except UploadRefused:
        raise
    except ValueError as exc:  # not sent, the other files are
        checked.problem = (unusable, {'detail': str(exc)})
    return checked


def check_upload(data, limits=None):
    """A CheckedFile per file of data, all checked before any is sent:
    UploadRefused if the upload breaks one of limits (UploadLimits)."""
    limits = limits or UploadLimits()
    if not data:
        return []
    view = _view(data)
    if is_framed(view):
        _check_framing(view, limits)
    checked, inflating = [], 0
    for frame in iter_files(view):
        try:
            item = _check_file(frame, limits)
        except UploadRefused as exc:
            exc.values['index'] = frame.index + 1
            raise
        inflating += item.inflates
        if inflating > limits.inflated_upload:
            raise UploadRefused('upload_too_large',
                limit=limits.inflated_upload, index=frame.index + 1)
        checked.append(item)
    return checked
