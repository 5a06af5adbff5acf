# SPDX-License-Identifier: GPL-3.0-or-later
"""health_orthanc viewer access: a script for Orthanc's Python plugin.

Orthanc 1.10 has no per-user rights, so this script decides every request
(Orthanc runs with "AuthenticationEnabled": false; the README gives the
configuration):

- Basic credentials of a configured service account (GNU Health's own
  account): full access, compared in constant time;
- a viewer token issued by GNU Health (see viewer_token.py), carried by a
  cookie that /health-orthanc/open sets: GET requests for that one study
  only (REST, previews, Web Viewer plugin, DICOMweb) and the viewers' own
  static files;
- anything else: 403 (an incoming-request filter can only answer 403).

The script raises at import when its configuration is unusable, and Orthanc
then refuses to start: a configuration that lists this script fails closed.
"""
import base64
import binascii
import hmac
import json
import re
import threading
import time
from collections import OrderedDict
from urllib.parse import quote, urlencode

import orthanc

import viewer_token

SECTION = 'HealthOrthanc'
OPEN_ROUTE = viewer_token.OPEN_ROUTE
STATUS_ROUTE = viewer_token.STATUS_ROUTE
COOKIE_PREFIX = 'hov_'
DEFAULT_CACHE_SIZE = 10000
# What viewers load that holds no patient data.
STATIC_PREFIXES = ('/web-viewer/app/', '/web-viewer/libs/',
    '/stone-webviewer/', '/ohif/')
STATIC_PATHS = {'/system'}
_ID = r'([0-9a-f]{8}(?:-[0-9a-f]{8}){4})'
# Orthanc resources that belong to one study, by the kind of their ID.
_RESOURCE_ROUTES = [
    (re.compile(r'^/studies/%s(?:/|$)' % _ID), 'studies'),
    (re.compile(r'^/series/%s(?:/|$)' % _ID), 'series'),
    (re.compile(r'^/instances/%s(?:/|$)' % _ID), 'instances'),
    (re.compile(r'^/web-viewer/(?:is-stable-)?series/%s$' % _ID), 'series'),
    # e.g. /web-viewer/instances/jpeg95-<id>_0
    (re.compile(r'^/web-viewer/instances/[a-z0-9]+-%s_\d+$' % _ID),
        'instances'),
    ]
_DICOMWEB_STUDY = re.compile(r'^/dicom-web/studies/([0-9.]+)(?:/|$)')
_DICOMWEB_SEARCH = re.compile(r'^/dicom-web/(?:studies|series|instances)$')
_STUDY_UID_KEYS = ('StudyInstanceUID', '0020000D', '0020000d')


class Configuration:
    "The script's settings, read once from Orthanc's configuration."

    def __init__(self, config):
        section = config.get(SECTION)
        if not isinstance(section, dict):
            raise RuntimeError('health_orthanc: the "%s" section is missing '
                'from the Orthanc configuration' % SECTION)
        self.secret = self._secret(section)
        accounts = section.get('ServiceAccounts',
            config.get('RegisteredUsers'))
        if not isinstance(accounts, dict) or not accounts or not all(
                isinstance(v, str) and v for v in accounts.values()):
            raise RuntimeError('health_orthanc: no service account (set '
                '"%s"."ServiceAccounts" or "RegisteredUsers")' % SECTION)
        # user:password as the Basic header carries it, for one comparison.
        self.accounts = [('%s:%s' % item).encode('utf-8')
            for item in accounts.items()]
        self.secure_cookie = bool(section.get('SecureCookie',
                config.get('SslEnabled', False)))
        self.cache_size = int(section.get('CacheSize', DEFAULT_CACHE_SIZE))
        if config.get('AuthenticationEnabled', True):
            orthanc.LogWarning('health_orthanc: "AuthenticationEnabled" is '
                'true: Orthanc asks for a password before this script runs, '
                'so viewer tokens cannot work')

    @staticmethod
    def _secret(section):
        secret = section.get('ViewerSecret')
        path = section.get('ViewerSecretFile')
        if path:
            with open(path, encoding='utf-8') as stream:
                secret = stream.read().strip()
        if not isinstance(secret, str) or len(secret) < (
                viewer_token.MIN_SECRET_LENGTH):
            raise RuntimeError('health_orthanc: "%s"."ViewerSecret" (or '
                '"ViewerSecretFile") must hold at least %d characters'
                % (SECTION, viewer_token.MIN_SECRET_LENGTH))
        return secret


class StudyCache:
    "Bounded LRU of series/instance ID -> study ID, shared by all threads."

    def __init__(self, size):
        self.size = max(size, 1)
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def study_of(self, kind, orthanc_id):
        key = (kind, orthanc_id)
        with self._lock:
            study = self._items.get(key)
            if study is not None:
                self._items.move_to_end(key)
                return study
        study = self._lookup(kind, orthanc_id)
        if study is not None:
            with self._lock:
                self._items[key] = study
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return study

    @staticmethod
    def _lookup(kind, orthanc_id):
        "The study ID of a series or an instance; None if Orthanc has none."
        try:
            answer = json.loads(orthanc.RestApiGet(
                    '/%s/%s/study' % (kind, orthanc_id)))
        except (orthanc.OrthancException, ValueError):
            return None
        return answer.get('ID') if isinstance(answer, dict) else None


def _basic_credentials(headers):
    value = headers.get('authorization', '')
    if not value[:6].lower() == 'basic ':
        return None
    try:
        return base64.b64decode(value[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def is_service_account(headers):
    "Constant time: every account is compared, whatever matches."
    given = _basic_credentials(headers)
    if given is None:
        return False
    found = False
    for expected in CONFIG.accounts:
        found |= hmac.compare_digest(given, expected)
    return found


def _token_cookies(headers):
    "(name, value) of the request's viewer-token cookies."
    for part in headers.get('cookie', '').split(';'):
        name, _, value = part.strip().partition('=')
        if name.startswith(COOKIE_PREFIX) and value:
            yield name, value


def granted_studies(headers):
    "{study ID: StudyInstanceUID} of the valid tokens the request carries."
    studies = {}
    now = time.time()
    for name, token in _token_cookies(headers):
        payload = TOKENS.payload(token, now)
        if payload and name == COOKIE_PREFIX + payload[viewer_token.STUDY]:
            studies[payload[viewer_token.STUDY]] = (
                payload[viewer_token.STUDY_UID])
    return studies


class TokenCache:
    """Bounded LRU of the tokens already verified: a viewer sends the same
    cookie with each of its requests.  Expiry is checked on every use."""

    def __init__(self, size):
        self.size = max(size, 1)
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def payload(self, token, now):
        "The payload of a valid token, else None."
        with self._lock:
            payload = self._items.get(token)
            if payload is not None:
                self._items.move_to_end(token)
        if payload is None:
            try:
                payload = viewer_token.verify(CONFIG.secret, token, now)
            except viewer_token.InvalidToken:
                return None
            with self._lock:
                self._items[token] = payload
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        if payload[viewer_token.EXPIRES] <= now:
            return None
        return payload


def _study_uid_param(get):
    for key in _STUDY_UID_KEYS:
        if key in get:
            return get[key]


def is_allowed_for(uri, get, studies):
    "May a viewer holding tokens for these studies GET this URI?"
    if uri in STATIC_PATHS or uri.startswith(STATIC_PREFIXES):
        return True
    if uri.endswith('/patient'):
        return False  # the patient lists the IDs of its other studies
    for pattern, kind in _RESOURCE_ROUTES:
        match = pattern.match(uri)
        if match:
            orthanc_id = match.group(1)
            study = (orthanc_id if kind == 'studies'
                else CACHE.study_of(kind, orthanc_id))
            return study in studies
    match = _DICOMWEB_STUDY.match(uri)
    if match:
        return match.group(1) in studies.values()
    if _DICOMWEB_SEARCH.match(uri):
        return _study_uid_param(get) in studies.values()
    return False


def filter_request(uri, method=None, headers=None, get=None, **request):
    headers = headers or {}
    if is_service_account(headers):
        return True
    if method != orthanc.HttpMethod.GET:
        return False
    if uri == OPEN_ROUTE:
        return True  # the route checks its token itself
    studies = granted_studies(headers)
    return bool(studies) and is_allowed_for(uri, get or {}, studies)


def _viewer_location(payload):
    "Where the viewer opens, relative to the opening route's folder."
    study_uid = payload[viewer_token.STUDY_UID]
    viewer = payload.get(viewer_token.VIEWER)
    if viewer == 'stone':
        query = {'study': study_uid}
        if payload.get(viewer_token.SERIES_UID):
            query['series'] = payload[viewer_token.SERIES_UID]
        return '../stone-webviewer/index.html?' + urlencode(query)
    if viewer == 'ohif':
        return '../ohif/viewer?' + urlencode({'StudyInstanceUIDs': study_uid})
    series = payload.get(viewer_token.SERIES) or _first_series(
        payload[viewer_token.STUDY])
    return '../web-viewer/app/viewer.html?series=' + quote(series or '')


def _first_series(study):
    try:
        answer = json.loads(orthanc.RestApiGet('/studies/%s' % study))
    except (orthanc.OrthancException, ValueError):
        return None
    series = answer.get('Series') if isinstance(answer, dict) else None
    return series[0] if series else None


def _send_status(output, status):
    output.SetHttpHeader('Cache-Control', 'no-store')
    output.SendHttpStatusCode(status)


def open_viewer(output, uri, **request):
    "Check the token, keep it in a cookie, send the browser to the viewer."
    if request.get('method') != 'GET':
        output.SendMethodNotAllowed('GET')
        return
    token = (request.get('get') or {}).get('token')
    if not token:
        _send_status(output, 400)
        return
    try:
        payload = viewer_token.verify(CONFIG.secret, token)
    except viewer_token.InvalidToken as exc:
        orthanc.LogInfo('health_orthanc: viewer token refused: %s' % exc)
        _send_status(output, 403)
        return
    headers = request.get('headers') or {}
    secure = CONFIG.secure_cookie or (
        headers.get('x-forwarded-proto', '').lower() == 'https')
    max_age = max(int(payload[viewer_token.EXPIRES] - time.time()), 1)
    cookie = '%s%s=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax%s' % (
        COOKIE_PREFIX, payload[viewer_token.STUDY], token, max_age,
        '; Secure' if secure else '')
    orthanc.LogWarning('health_orthanc: viewer opened by %s for study %s'
        % (payload[viewer_token.USER], payload[viewer_token.STUDY]))
    output.SetHttpHeader('Set-Cookie', cookie)
    output.SetHttpHeader('Location', _viewer_location(payload))
    _send_status(output, 303)


def status(output, uri, **request):
    "For GNU Health's connection check (service accounts only, by filter)."
    challenge = (request.get('get') or {}).get('challenge', '')[:200]
    answer = {'Version': 1, 'Tokens': True,
        'Proof': viewer_token.proof(CONFIG.secret, challenge)}
    output.AnswerBuffer(json.dumps(answer), 'application/json')


CONFIG = Configuration(json.loads(orthanc.GetConfiguration()))
CACHE = StudyCache(CONFIG.cache_size)
TOKENS = TokenCache(CONFIG.cache_size)
orthanc.RegisterIncomingHttpRequestFilter(filter_request)
orthanc.RegisterRestCallback(OPEN_ROUTE, open_viewer)
orthanc.RegisterRestCallback(STATUS_ROUTE, status)
# The Modality Worklist route and C-FIND callback (its own file).
import worklist  # noqa: E402,F401
