# SPDX-License-Identifier: GPL-3.0-or-later
"""Viewer tokens: the one format shared by GNU Health (which issues them)
and the Orthanc-side script (which checks them).

Standard library only: this file also runs inside Orthanc's Python plugin.

A token is ``v1.<payload>.<signature>``: the payload is URL-safe base64
(unpadded) of compact JSON, the signature HMAC-SHA256 of ``v1.<payload>``
with the secret shared by the GNU Health server record and the script's
configuration. Changing the secret invalidates every outstanding token.
"""
import base64
import hashlib
import hmac
import json
import os
import time

VERSION = 'v1'
# Routes of the Orthanc-side script, under the Orthanc root URL.
OPEN_ROUTE = '/health-orthanc/open'
STATUS_ROUTE = '/health-orthanc/status'
# Payload keys, short because the token travels in URLs and cookies.
STUDY, STUDY_UID, USER, EXPIRES, VIEWER, SERIES, SERIES_UID, NONCE = (
    'st', 'su', 'us', 'ex', 'vw', 'se', 'ss', 'n')
VIEWERS = ('webviewer', 'stone', 'ohif')
MIN_SECRET_LENGTH = 16
MAX_TOKEN_LENGTH = 2048


class InvalidToken(Exception):
    "Malformed, badly signed or expired: the reason is for logs only."


def _b64encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def _b64decode(text):
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


def _signature(secret, signed):
    key = secret.encode('utf-8') if isinstance(secret, str) else secret
    return hmac.new(key, signed.encode('ascii'), hashlib.sha256).digest()


def new_secret():
    "A fresh random secret (256 bits) for a server and its script."
    return _b64encode(os.urandom(32))


def issue(secret, *, study, study_uid, user, lifetime, viewer,
        series=None, series_uid=None, now=None):
    """A token for one study, valid lifetime seconds from now.

    study is the Orthanc ID of the study, study_uid its StudyInstanceUID;
    series/series_uid (optional) only choose what the viewer opens first:
    the token is valid for the whole study.
    """
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        raise ValueError('the shared secret is missing or too short')
    if viewer not in VIEWERS:
        raise ValueError('unknown viewer %r' % (viewer,))
    now = time.time() if now is None else now
    payload = {STUDY: study, STUDY_UID: study_uid, USER: user,
        EXPIRES: int(now + lifetime), VIEWER: viewer,
        NONCE: _b64encode(os.urandom(9))}
    if series:
        payload[SERIES] = series
    if series_uid:
        payload[SERIES_UID] = series_uid
    body = _b64encode(json.dumps(payload, separators=(',', ':'),
            sort_keys=True).encode('utf-8'))
    signed = VERSION + '.' + body
    return signed + '.' + _b64encode(_signature(secret, signed))


def verify(secret, token, now=None):
    "The payload of a valid token; InvalidToken otherwise."
    if not secret or not isinstance(token, str):
        raise InvalidToken('no secret or no token')
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken('token too long')
    parts = token.split('.')
    if len(parts) != 3 or parts[0] != VERSION:
        raise InvalidToken('not a %s token' % VERSION)
    signed = parts[0] + '.' + parts[1]
    try:
        signature = _b64decode(parts[2])
    except ValueError:
        raise InvalidToken('unreadable signature') from None
    if not hmac.compare_digest(signature, _signature(secret, signed)):
        raise InvalidToken('bad signature')
    try:
        payload = json.loads(_b64decode(parts[1]))
    except ValueError:
        raise InvalidToken('unreadable payload') from None
    if not isinstance(payload, dict) or not all(
            isinstance(payload.get(k), str) for k in (STUDY, STUDY_UID, USER)
            ) or not isinstance(payload.get(EXPIRES), int):
        raise InvalidToken('incomplete payload')
    now = time.time() if now is None else now
    if payload[EXPIRES] <= now:
        raise InvalidToken('expired')
    return payload


def proof(secret, challenge):
    """HMAC of a challenge: shows that both sides hold the same secret
    without either sending it."""
    return _b64encode(_signature(secret, 'proof.' + challenge))
