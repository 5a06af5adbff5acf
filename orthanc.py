"""The one adapter that talks HTTP to an Orthanc PACS.

No Tryton code here: models call these functions and translate the
exceptions into user errors. Every request has a deadline and every answer
a size limit (see Limits and the bounded transport), certificates are
verified by default and no credential ever reaches an exception text or a
log line (they travel only in the Authorization header).
"""
import base64
import contextvars
import dataclasses
import io
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import httpcore
import httpx
import pyorthanc

from . import orthanc_sockets

__all__ = [
    'OrthancError', 'ServerDown', 'Unreachable', 'Timeout', 'TLSFailure',
    'Unauthorized', 'NotFound', 'Rejected', 'NotAnImage', 'NotOrthanc',
    'DeadlineExceeded', 'TooLarge',
    'Limits', 'ServerInfo', 'Change', 'ChangesPage', 'StudyTree',
    'UploadedFile',
    'OrthancClient', 'client_for', 'redact', 'megabytes',
]

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
JPEG_MAGIC = b'\xff\xd8\xff'
_MAX_REASON = 300
# Orthanc identifiers are SHA-1 digests printed as 5 groups of 8 hex digits;
# checking them keeps arbitrary text out of the request path.
_ORTHANC_ID = re.compile(r'^[0-9a-f]{8}(-[0-9a-f]{8}){4}$')
_USERINFO = re.compile(r'(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@')


# --- Exceptions ------------------------------------------------------------

class OrthancError(Exception):
    """Base class: .status is the HTTP status (or None), .reason short text."""

    def __init__(self, reason, status=None):
        self.reason = redact(str(reason))[:_MAX_REASON]
        self.status = status
        super().__init__(self.reason)

    @property
    def message_values(self):
        "Extra values for the translated message of this error."
        return {}

    def __str__(self):
        if self.status is None:
            return self.reason
        return '%s (HTTP %s)' % (self.reason, self.status)


class ServerDown(OrthancError):
    """A failure that every further request to the same server repeats
    (callers stop asking that server for the rest of a batch)."""


class Unreachable(ServerDown):
    "Connection refused, DNS failure, dropped connection."


class Timeout(ServerDown):
    "The server did not answer in time."


class DeadlineExceeded(Timeout):
    """The whole answer did not arrive within the request's deadline
    (a host trickling bytes never trips a per-read timeout)."""

    def __init__(self, reason, seconds):
        self.seconds = seconds
        super().__init__(reason)

    @property
    def message_values(self):
        return {'seconds': '%g' % self.seconds}


class TooLarge(OrthancError):
    "The answer is larger than the limit set for this kind of call."

    def __init__(self, reason, kind, limit):
        self.kind = kind
        self.limit = limit
        super().__init__(reason)

    @property
    def message_values(self):
        return {'kind': self.kind, 'limit': megabytes(self.limit)}


class TLSFailure(ServerDown):
    "Certificate verification or another TLS problem."


class Unauthorized(ServerDown):
    "HTTP 401: wrong user name or password."


class NotFound(OrthancError):
    "HTTP 404: the resource is not (or no longer) in Orthanc."


class Rejected(OrthancError):
    "Any other non-2xx answer; .reason is Orthanc's own message."


class NotAnImage(Rejected):
    "Orthanc cannot render the instance as an image (SR, PDF...)."


class NotOrthanc(ServerDown):
    "Something answers, but it is not Orthanc's REST API."


# --- Data ------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """The largest answer accepted for each kind of call, in bytes.

    An answer is read by streaming and dropped as soon as it passes its
    limit, so a hostile or broken host cannot fill the memory.
    """
    info: int = 1_000_000  # /system, /plugins, /statistics
    changes: int = 16_000_000  # one page of /changes
    metadata: int = 64_000_000  # studies, series, instances, upload answers
    image: int = 32_000_000  # a rendered preview
    file: int = 512_000_000  # a stored DICOM file read back (reconcile)

    def __post_init__(self):
        for item in dataclasses.fields(self):
            if getattr(self, item.name) <= 0:
                raise ValueError('answer limit %s must be positive'
                    % item.name)


@dataclass(frozen=True)
class ServerInfo:
    name: str
    version: str
    api_version: int
    study_count: int
    plugins: tuple

    @property
    def has_dicomweb(self):
        return 'dicom-web' in self.plugins

    @property
    def has_ohif(self):
        return 'ohif' in self.plugins

    @property
    def has_stone(self):
        return 'stone-webviewer' in self.plugins

    @property
    def has_webviewer(self):
        return 'web-viewer' in self.plugins


@dataclass(frozen=True)
class Change:
    seq: int
    change_type: str
    resource_type: str
    resource_id: str
    path: str
    date: str


@dataclass(frozen=True)
class ChangesPage:
    changes: list
    last: int
    done: bool


@dataclass(frozen=True)
class StudyTree:
    study: dict
    series: list
    instances: list


@dataclass(frozen=True)
class UploadedFile:
    name: str
    status: str  # 'Success' | 'AlreadyStored' | 'Rejected'
    orthanc_id: str = None
    study_id: str = None
    reason: str = None


# --- Helpers ---------------------------------------------------------------

def trees_of(studies, series, instances):
    """Group expanded studies, series and instances into StudyTrees.

    Resources whose parent is not listed (stored while paging) are left
    for the next sync."""
    series_by_study, instances_by_study = {}, {}
    study_of_series = {}
    for item in series:
        series_by_study.setdefault(item.get('ParentStudy'), []).append(item)
        study_of_series[item['ID']] = item.get('ParentStudy')
    for item in instances:
        study = study_of_series.get(item.get('ParentSeries'))
        instances_by_study.setdefault(study, []).append(item)
    return [StudyTree(study, series_by_study.get(study['ID'], []),
            instances_by_study.get(study['ID'], []))
        for study in studies]


def redact(text):
    "Remove the user-info part (user:password@) of every URL in text."
    if text is None:
        return text
    return _USERINFO.sub(r'\1', str(text))


def _json_count(value):
    "A count Orthanc's JSON gives as a number (or its text); 0 if none."
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


def _split_credentials(url, user, password):
    "Move credentials out of the URL so that httpx never logs them."
    parts = urllib.parse.urlsplit(url.strip())
    if parts.username is not None or parts.password is not None:
        user = user or urllib.parse.unquote(parts.username or '')
        password = password or urllib.parse.unquote(parts.password or '')
        netloc = parts.netloc.rsplit('@', 1)[1]
        parts = parts._replace(netloc=netloc)
    return urllib.parse.urlunsplit(parts).rstrip('/'), user, password


def _ssl_context(verify):
    "Map verify (True/False/CA bundle path) to what httpx 0.28 expects."
    is_path = isinstance(verify, (str, os.PathLike))
    if not is_path and not verify:
        return False
    try:
        if not is_path:
            # The system store first: hospitals install their own CA there.
            context = ssl.create_default_context()
            if not context.cert_store_stats().get('x509_ca'):
                import certifi
                context.load_verify_locations(cafile=certifi.where())
            return context
        path = os.fspath(verify)
        if os.path.isdir(path):
            return ssl.create_default_context(capath=path)
        return ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise TLSFailure('cannot load the CA certificates: %s'
            % (exc.strerror or exc.__class__.__name__)) from None


def _caused_by_ssl(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ssl.SSLError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _check_id(orthanc_id):
    if not isinstance(orthanc_id, str) or not _ORTHANC_ID.match(orthanc_id):
        raise NotFound('not an Orthanc identifier: %.60r' % (orthanc_id,))
    return orthanc_id


def _orthanc_message(response):
    "Orthanc's own explanation from its JSON error body, if any."
    return _message_in(response.content, response.reason_phrase)


def _message_in(content, fallback):
    "Orthanc's explanation in an error body (bytes), else fallback."
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get('Message') or body.get('HttpError') or ''
        details = body.get('Details') or ''
        text = ': '.join(str(t) for t in (message, details) if t)
        if text:
            return text
    return fallback or 'HTTP error'


def megabytes(size):
    "A size for people: '64 MB'."
    return '%g MB' % round(size / 1_000_000, 1)


# --- Bounded transport -----------------------------------------------------
#
# httpx's timeout applies to each socket operation: a host sending one byte
# a second never trips it.  Every socket operation of a request made by the
# adapter is therefore given what remains of the request's deadline, and
# every answer body is counted as it streams in.  The bounds of the request
# under way travel in a context variable, as pyorthanc's generated calls
# take no extra argument.

@dataclass(frozen=True)
class _Bounds:
    kind: str
    limit: int
    deadline: float  # time.monotonic() value


_request_bounds = contextvars.ContextVar('orthanc_request_bounds',
    default=None)


def _remaining(timeout, expired):
    "timeout cut to what is left of the deadline; expired() once over."
    bounds = _request_bounds.get()
    if bounds is None:
        return timeout
    left = bounds.deadline - time.monotonic()
    if left <= 0:
        raise expired('deadline reached')
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    "A socket whose every operation ends by the request's deadline."

    def __init__(self, stream):
        self._stream = stream

    def read(self, max_bytes, timeout=None):
        return self._stream.read(max_bytes,
            _remaining(timeout, httpcore.ReadTimeout))

    def write(self, buffer, timeout=None):
        self._stream.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    def close(self):
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _DeadlineStream(self._stream.start_tls(ssl_context,
                server_hostname, _remaining(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info):
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):

    def __init__(self):
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None,
            socket_options=None):
        return _DeadlineStream(self._backend.connect_tcp(host, port,
                _remaining(timeout, httpcore.ConnectTimeout), local_address,
                socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _DeadlineStream(self._backend.connect_unix_socket(path,
                _remaining(timeout, httpcore.ConnectTimeout),
                socket_options))

    def sleep(self, seconds):
        self._backend.sleep(seconds)


class _CappedStream(httpx.SyncByteStream):
    "An answer body that stops at its limit instead of filling memory."

    def __init__(self, stream, bounds, url):
        self._stream = stream
        self._bounds = bounds
        self._url = url

    def __iter__(self):
        total = 0
        for chunk in self._stream:
            total += len(chunk)
            if total > self._bounds.limit:
                raise _too_large(self._url, self._bounds)
            yield chunk

    def close(self):
        self._stream.close()


def _too_large(url, bounds):
    return TooLarge('the answer of %s to a %s request is larger than %s'
        % (url, bounds.kind, megabytes(bounds.limit)), bounds.kind,
        bounds.limit)


class _BoundedTransport(httpx.HTTPTransport):
    "httpx's transport with deadlines on sockets and capped answers."

    def __init__(self, ssl_context):
        super().__init__(verify=ssl_context, trust_env=False)
        limits = httpx.Limits()
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=ssl_context,
                trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend())

    def handle_request(self, request):
        response = super().handle_request(request)
        bounds = _request_bounds.get()
        if bounds is None:
            return response
        url = '%s://%s' % (request.url.scheme, request.url.netloc.decode())
        length = response.headers.get('Content-Length', '')
        if length.isdigit() and int(length) > bounds.limit:
            response.close()
            raise _too_large(url, bounds)
        response.stream = _CappedStream(response.stream, bounds, url)
        return response


# --- Client ----------------------------------------------------------------

class OrthancClient:
    """One Orthanc server: a pyorthanc (httpx) client, hence one pool."""

    def __init__(self, url, user=None, password=None, *, timeout=30.0,
            verify=True, limits=None, transport=None):
        """timeout: the deadline of each request, in seconds, from
        connecting to the last byte of the answer (retry included).
        limits: the largest answers accepted (Limits).
        transport: an httpx transport instead of the bounded one (the one
        fake-transport test of an error path)."""
        if not timeout or timeout <= 0:
            raise ValueError('a positive timeout is required')
        self.url, user, password = _split_credentials(url, user, password)
        self.timeout = timeout
        self.limits = limits or Limits()
        self._count = 0
        self._count_lock = threading.Lock()
        # Environment proxies are not used: httpx would mount its own
        # transports for them, without the bounds.
        # An http URL needs no certificates (redirects are not followed),
        # so the system's are not loaded (about 50 ms); a CA bundle named
        # in the settings is still read, to report a wrong path.
        tls = (_ssl_context(verify)
            if self.url.lower().startswith('https:')
            or isinstance(verify, (str, os.PathLike)) else False)
        self._api = pyorthanc.Orthanc(self.url, user, password,
            return_raw_response=True, timeout=httpx.Timeout(timeout),
            transport=transport or _BoundedTransport(tls),
            trust_env=False, event_hooks={'request': [self._counted]})
        self._uploads = orthanc_sockets.Uploads(self.url, user, password,
            tls or None, counted=self._counted)

    def _counted(self, request=None):
        with self._count_lock:
            self._count += 1

    @property
    def request_count(self):
        "Number of HTTP requests sent so far (retries included)."
        return self._count

    def close(self):
        self._api.close()
        self._uploads.close()

    @property
    def closed(self):
        "Whether the client was closed (its connections released)."
        return self._api.is_closed

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return '<OrthancClient %s>' % self.url

    # -- transport --

    def _send(self, call, *args, kind='metadata', **kwargs):
        """Run one pyorthanc call within the deadline and the answer limit
        of its kind (a field of Limits), mapping transport errors.

        A keep-alive connection that Orthanc closed just as we reused it
        (Orthanc 1.10 keeps idle connections for 1 s only) fails without an
        answer: that one case is retried once. Retrying is harmless because
        GET is safe, storing a DICOM file twice answers AlreadyStored and a
        repeated DELETE answers 404, which callers treat as "already gone".
        """
        bounds = _Bounds(kind, getattr(self.limits, kind),
            time.monotonic() + self.timeout)
        token = _request_bounds.set(bounds)
        try:
            return self._send_within(call, *args, **kwargs)
        finally:
            _request_bounds.reset(token)

    def _send_within(self, call, *args, **kwargs):
        for attempt in (1, 2):
            try:
                return call(*args, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError,
                    httpx.WriteError) as exc:
                if attempt == 2:
                    raise Unreachable('connection to %s lost: %s'
                        % (self.url, _describe(exc))) from None
            except httpx.TimeoutException:
                raise DeadlineExceeded('no complete answer from %s within '
                    '%g s' % (self.url, self.timeout), self.timeout
                    ) from None
            except httpx.ConnectError as exc:
                if _caused_by_ssl(exc):
                    raise TLSFailure('TLS failure with %s: %s'
                        % (self.url, _describe(exc))) from None
                raise Unreachable('cannot connect to %s: %s'
                    % (self.url, _describe(exc))) from None
            except (httpx.UnsupportedProtocol, httpx.InvalidURL):
                raise Unreachable('invalid server URL: %s' % self.url
                    ) from None
            except httpx.TransportError as exc:
                raise Unreachable('network error with %s: %s'
                    % (self.url, _describe(exc))) from None

    def _check(self, response):
        "Raise the exception matching a non-2xx response."
        status = response.status_code
        if 200 <= status < 300:
            return response
        if status == 401:
            raise Unauthorized('%s refused the user name or password'
                % self.url, 401)
        if status == 404:
            raise NotFound('not found on %s: %s' % (self.url,
                response.request.url.path), 404)
        if 300 <= status < 400:
            # Redirects are not followed: they would resend credentials.
            raise Rejected('redirected to %s' % (
                    response.headers.get('Location') or '?'), status)
        raise Rejected(_orthanc_message(response), status)

    def _json(self, call, *args, expect=None, kind='metadata', **kwargs):
        "The JSON body of a 2xx answer, of the expected type if given."
        response = self._check(self._send(call, *args, kind=kind, **kwargs))
        try:
            body = response.json()
        except ValueError:
            body = None
        if body is None or (expect is not None
                and not isinstance(body, expect)):
            raise NotOrthanc('%s did not answer the expected JSON'
                % self.url, response.status_code)
        return body

    # -- server --

    def server_info(self):
        try:
            system = self._json(self._api.get_system, expect=dict,
                kind='info')
        except (NotFound, Rejected) as exc:
            # Orthanc always serves GET /system: a web server that refuses
            # it (404, 405...) is something else; 403 and 5xx may be Orthanc.
            if exc.status == 403 or not 400 <= (exc.status or 0) < 500:
                raise
            raise NotOrthanc('%s has no Orthanc /system route' % self.url,
                exc.status) from None
        if 'Version' not in system or 'ApiVersion' not in system:
            raise NotOrthanc('%s is not an Orthanc server' % self.url)
        plugins = self._json(self._api.get_plugins, expect=list, kind='info')
        statistics = self._json(self._api.get_statistics, expect=dict,
            kind='info')
        return ServerInfo(
            name=str(system.get('Name') or ''),
            version=str(system['Version']),
            api_version=_json_count(system['ApiVersion']),
            study_count=_json_count(statistics.get('CountStudies')),
            # 'explorer.js' is the Explorer's extension hook, not a plugin.
            plugins=tuple(str(p) for p in plugins
                if not str(p).endswith('.js')))

    # -- changes --

    def last_change(self):
        body = self._json(self._api.get_changes, {'last': ''}, expect=dict,
            kind='changes')
        with self._parsing():
            return int(body['Last'])

    def changes_since(self, seq, limit=1000):
        """One page of the changes log after seq.

        Orthanc 1.10 records no deletion: deleting a resource removes its
        entries from the log instead.
        """
        body = self._json(self._api.get_changes,
            {'since': int(seq), 'limit': int(limit)}, expect=dict,
            kind='changes')
        with self._parsing():
            changes = [Change(
                    seq=int(c['Seq']),
                    change_type=c['ChangeType'],
                    resource_type=c['ResourceType'],
                    resource_id=c['ID'],
                    path=c['Path'],
                    date=c['Date'])
                for c in body['Changes']]
            return ChangesPage(changes=changes, last=int(body['Last']),
                done=bool(body['Done']))

    @contextmanager
    def _parsing(self):
        "A JSON answer without the expected keys is not Orthanc's."
        try:
            yield
        except (KeyError, TypeError, ValueError):
            raise NotOrthanc('unexpected answer from %s' % self.url
                ) from None

    # -- reading --

    def list_studies(self, since=0, limit=500):
        "One page of expanded studies (Orthanc pages by position)."
        return self.list_resources('studies', since, limit)

    def list_resources(self, level, since=0, limit=500):
        """One page of expanded studies, series or instances: the fewest
        calls Orthanc 1.10 allows for a whole archive (no /tools/find
        paging before 1.12)."""
        call = {
            'studies': self._api.get_studies,
            'series': self._api.get_series,
            'instances': self._api.get_instances,
            }[level]
        return self._json(call,
            {'expand': 'true', 'since': int(since), 'limit': int(limit)},
            expect=list)

    def iter_studies(self, page_size=500):
        "Yield pages of expanded studies until a short page."
        return self.iter_resources('studies', page_size)

    def iter_resources(self, level, page_size=500):
        """Yield pages of expanded resources of a level until a short page.

        Pages are offsets into Orthanc's list: a resource deleted meanwhile
        may shift a later one into an already-read page, which a later full
        pass (or the changes log) catches.
        """
        since = 0
        while True:
            page = self.list_resources(level, since, page_size)
            if page:
                yield page
            if len(page) < page_size:
                return
            since += len(page)

    def study(self, orthanc_id):
        return self._json(self._api.get_studies_id, _check_id(orthanc_id),
            expect=dict)

    def study_tree(self, orthanc_id):
        study = self.study(orthanc_id)
        series, instances = self.study_children(orthanc_id)
        return StudyTree(study=study, series=series, instances=instances)

    def study_children(self, orthanc_id, instances=True):
        """Expanded series and instances of a study: 2 requests (1 and no
        instances if not instances)."""
        _check_id(orthanc_id)
        expand = {'expand': 'true'}
        series = self._json(self._api.get_studies_id_series, orthanc_id,
            expand, expect=list)
        if not instances:
            return series, []
        instances = self._json(self._api.get_studies_id_instances,
            orthanc_id, expand, expect=list)
        return series, instances

    def all_trees(self, page_size=1000, instances=True):
        """Every study of the archive as StudyTree, read with paged
        /studies, /series and /instances (a few calls per thousand
        resources instead of two per study); no instances if not
        instances (the series still list their IDs)."""
        studies = [s for page in self.iter_resources('studies', page_size)
            for s in page]
        series = [s for page in self.iter_resources('series', page_size)
            for s in page]
        instances = [i for page in self.iter_resources('instances',
                page_size) for i in page] if instances else []
        return trees_of(studies, series, instances)

    def parent_study(self, resource_type, orthanc_id):
        "The expanded study holding a series or an instance: 1 request."
        call = {
            'Series': self._api.get_series_id_study,
            'Instance': self._api.get_instances_id_study,
            }.get(resource_type)
        if call is None:
            raise NotFound('no parent study for a %s' % resource_type)
        return self._json(call, _check_id(orthanc_id), expect=dict)

    def series_tree(self, orthanc_id):
        _check_id(orthanc_id)
        series = self._json(self._api.get_series_id, orthanc_id, expect=dict)
        instances = self._json(self._api.get_series_id_instances, orthanc_id,
            {'expand': 'true'}, expect=list)
        return series, instances

    def series_instances(self, orthanc_id):
        "Expanded instances of a series: 1 request."
        return self._json(self._api.get_series_id_instances,
            _check_id(orthanc_id), {'expand': 'true'}, expect=list)

    def preview(self, instance_id):
        """PNG rendering of the first frame.

        Orthanc answers 415 with an empty body for what it cannot decode
        (SR, encapsulated PDF...): that raises NotAnImage.
        """
        response = self._send(self._api.get_instances_id_preview,
            _check_id(instance_id), headers={'Accept': 'image/png'},
            kind='image')
        if response.status_code == 415:
            raise NotAnImage(
                'Orthanc cannot render this instance as an image', 415)
        content = self._check(response).content
        if not content.startswith(PNG_MAGIC):
            raise NotOrthanc('%s did not answer a PNG image' % self.url,
                response.status_code)
        return content

    def instance_file(self, instance_id):
        "The stored DICOM file of an instance, as bytes."
        return self._check(self._send(self._api.get_instances_id_file,
                _check_id(instance_id), kind='file')).content
    def thumbnail(self, instance_id, size):
        """JPEG of the first frame, scaled by Orthanc to fit size x size.

        What Orthanc cannot render (SR, PDF...) is Rejected(status=415).
        """
        response = self._send(self._api.get_instances_id_rendered,
            _check_id(instance_id), params={
                'width': size, 'height': size, 'smooth': 1, 'quality': 80},
            headers={'Accept': 'image/jpeg'}, kind='image')
        if response.status_code == 415:
            raise Rejected('Orthanc cannot render this instance as an image',
                415)
        content = self._check(response).content
        if not content.startswith(JPEG_MAGIC):
            raise NotOrthanc('%s did not answer a JPEG image' % self.url,
                response.status_code)
        return content

    # -- writing --

    def upload(self, name, data, zip_files=None):
        """Store one DICOM file or one ZIP archive of DICOM files.

        data: bytes, a memoryview or bytearray (sent without a copy), or
        an iterable of bytes-like pieces with a len() (sent as they are
        produced, once: not sent again if the connection is lost).  zip_files: the
        number of files of a ZIP archive when the caller has counted them.

        Orthanc's 400 means "this file is not DICOM": reported per file,
        not raised. Inside a ZIP, Orthanc silently skips what is not DICOM
        and does not name the files it stored, so stored instances are all
        reported under the archive's name and skipped entries are counted
        in one extra 'Rejected' entry.
        """
        status, content = self._post_instances(data)
        if status == 400:
            return [UploadedFile(name, 'Rejected',
                    reason=_message_in(content, 'Bad Request'))]
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if not isinstance(body, (dict, list)):
            raise NotOrthanc('%s did not answer the expected JSON'
                % self.url, status)
        if isinstance(body, dict):
            return [_uploaded(name, body)]
        result = [_uploaded(name, item) for item in body
            if isinstance(item, dict)]
        if zip_files is None:
            zip_files = _zip_file_count(data)
        skipped = zip_files - len(result)
        if skipped > 0 or not result:
            result.append(UploadedFile(name, 'Rejected', reason=(
                        '%d file(s) of the archive are not DICOM'
                        % max(skipped, 0)) if skipped > 0
                    else 'the archive holds no DICOM file'))
        return result

    def _post_instances(self, data):
        """POST data to /instances on the adapter's plain sockets
        (orthanc_sockets), within the deadline and the answer limit of an
        upload: (status, content) of a 2xx or 400 answer; the exception
        of any other, as for every request."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = memoryview(data).cast('B')
        if not self._uploads.valid:
            raise Unreachable('invalid server URL: %s' % self.url)
        limit = self.limits.metadata
        try:
            status, headers, content = self._uploads.post(data, len(data),
                time.monotonic() + self.timeout, limit)
        except orthanc_sockets.AnswerTooLarge:
            raise _too_large(self.url, _Bounds('metadata', limit, 0)
                ) from None
        except TimeoutError:
            raise DeadlineExceeded('no complete answer from %s within %g s'
                % (self.url, self.timeout), self.timeout) from None
        except ssl.SSLError as exc:
            raise TLSFailure('TLS failure with %s: %s'
                % (self.url, _describe(exc))) from None
        except (ConnectionRefusedError, socket.gaierror) as exc:
            raise Unreachable('cannot connect to %s: %s'
                % (self.url, _describe(exc))) from None
        except (OSError, orthanc_sockets.ProtocolError) as exc:
            raise Unreachable('connection to %s lost: %s'
                % (self.url, _describe(exc))) from None
        if status != 400 and not 200 <= status < 300:
            self._check(httpx.Response(status, headers=headers,
                    content=content, request=httpx.Request('POST',
                        self.url + '/instances')))
        return status, content

    def delete_study(self, orthanc_id):
        return self._delete(self._api.delete_studies_id, orthanc_id)

    def delete_series(self, orthanc_id):
        return self._delete(self._api.delete_series_id, orthanc_id)

    def _delete(self, call, orthanc_id):
        "True if deleted, False if it was already gone."
        try:
            self._check(self._send(call, _check_id(orthanc_id)))
        except NotFound:
            return False
        return True

    # -- documents (report back to the PACS) --

    def store_pdf_in_study(self, study_id, pdf, tags):
        """Store pdf (bytes) as a DICOM Encapsulated PDF in a new series of
        the study: Orthanc copies the patient and study tags from the
        parent.  tags: DICOM keywords of the new series (title, modality,
        series description...).  Returns (instance id, series id)."""
        content = 'data:application/pdf;base64,' + base64.b64encode(
            pdf).decode('ascii')
        created = self._json(self._api.post_tools_create_dicom, json={
                'Parent': _check_id(study_id), 'Tags': dict(tags),
                'Content': content}, expect=dict)
        instance_id = str(created.get('ID') or '')
        instance = self._json(self._api.get_instances_id,
            _check_id(instance_id), expect=dict)
        return instance_id, str(instance.get('ParentSeries') or '')

    def instance_pdf(self, instance_id):
        "The PDF document of an Encapsulated PDF instance."
        response = self._check(self._send(self._api.get_instances_id_pdf,
                _check_id(instance_id), kind='image'))
        if not response.content.startswith(b'%PDF'):
            raise NotOrthanc('%s did not answer a PDF document' % self.url,
                response.status_code)
        return response.content

    # -- viewer access (orthanc_side/viewer_access.py) --

    def viewer_access_proof(self, route, challenge):
        """The viewer-access script's proof of its secret for challenge;
        None when this Orthanc does not run the script."""
        try:
            status = self._json(self._api.get, self.url + route,
                params={'challenge': challenge}, expect=dict)
        except NotFound:
            return None
        return str(status.get('Proof') or '') or None

    # -- worklist (orthanc_side/worklist.py) --

    def update_worklist(self, route, put=(), remove=()):
        """Put worklist items ({'uid', 'dicom' (base64 .wl), 'date',
        'modality'}) and remove others (StudyInstanceUIDs) in one call to
        the Orthanc-side script; its answer ({'Put', 'Removed', 'Count'})."""
        return self._json(self._api.post, self.url + route,
            json={'put': list(put), 'remove': list(remove)}, expect=dict)

    def worklist_uids(self, route):
        "The StudyInstanceUIDs of the items the Orthanc-side script holds."
        answer = self._json(self._api.get, self.url + route, expect=dict)
        return [str(uid) for uid in answer.get('Items') or []]

    def answers_anonymously(self):
        "True when Orthanc serves its REST API to a request without login."
        response = self._send(self._api.get, self.url + '/system', auth=None)
        return response.status_code == 200


def _describe(exc):
    "A short text for a transport exception, without any URL user-info."
    text = str(exc) or exc.__class__.__name__
    return redact(text)[:200]


def _uploaded(name, item):
    status = item.get('Status')
    if status in ('Success', 'AlreadyStored'):
        return UploadedFile(name, status, item.get('ID'),
            item.get('ParentStudy'))
    # 'FilteredOut' (a Lua or plugin filter refused the instance) still
    # carries IDs, but nothing was stored under them.
    if status == 'FilteredOut':
        reason = 'filtered out by the server'
    else:
        reason = str(status or 'refused by Orthanc')
    return UploadedFile(name, 'Rejected', reason=reason)


def _zip_file_count(data):
    "Number of files (not folders) in a ZIP archive; 0 if unreadable."
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return 0
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return sum(1 for i in archive.infolist() if not i.is_dir())
    except (zipfile.BadZipFile, ValueError, OSError):
        return 0


# --- One client per server per process -------------------------------------

CLIENT_CACHE_SIZE = 32  # clients kept by client_for, the least used closed
_cache = OrderedDict()
_cache_lock = threading.Lock()
_cache_pid = None


def client_for(url, user, password, *, timeout=30.0, verify=True,
        limits=None):
    """A cached OrthancClient, so each server keeps one connection pool.

    Bounded LRU: evicted clients are closed. After a fork the inherited
    clients are dropped without closing (their sockets belong to the parent).
    """
    global _cache_pid
    limits = limits or Limits()
    key = (url, user, password, float(timeout),
        verify if isinstance(verify, bool) else str(verify), limits)
    with _cache_lock:
        if _cache_pid != os.getpid():
            _cache.clear()
            _cache_pid = os.getpid()
        client = _cache.get(key)
        if client is not None:
            _cache.move_to_end(key)
            return client
        client = OrthancClient(url, user, password, timeout=timeout,
            verify=verify, limits=limits)
        _cache[key] = client
        evicted = []
        while len(_cache) > CLIENT_CACHE_SIZE:
            evicted.append(_cache.popitem(last=False)[1])
    for old in evicted:
        old.close()
    return client


def close_clients():
    "Close and forget every client client_for keeps."
    with _cache_lock:
        clients = list(_cache.values())
        _cache.clear()
    for client in clients:
        client.close()
