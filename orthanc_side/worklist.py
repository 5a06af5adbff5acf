# SPDX-License-Identifier: GPL-3.0-or-later
"""health_orthanc Modality Worklist: imported by viewer_access.py (Orthanc's
Python plugin runs one script).

- POST /health-orthanc/worklist {"put": [{"uid", "dicom" (base64 of the
  .wl file), "date", "modality"}], "remove": [uid]}: GNU Health puts and
  removes any number of items in one call (a single item is a list of
  one); GET lists the UIDs held.  Only GNU Health's service
  accounts reach the route: viewer_access.filter_request refuses every
  other caller (a viewer token never grants it).
- the worklist callback answers the modalities' C-FIND (Modality Worklist)
  from these items.

Items are kept as .wl files in a folder of their own ("HealthOrthanc".
"WorklistFolder", default "health-orthanc-worklist" under the storage
directory), so they survive a restart, and in memory indexed by scheduled
date and modality: a C-FIND reads only the items whose date and modality
can match (a dictionary look-up for one day, not a scan of every item),
then Orthanc's own matcher decides.
"""
import base64
import binascii
import json
import os
import re
import tempfile
import threading

import orthanc

ROUTE = '/health-orthanc/worklist'
_UID = re.compile(r'^[0-9.]{1,64}$')
DATE_TAG = '0040,0002'
MODALITY_TAG = '0008,0060'
STEP_TAG = '0040,0100'


class Worklist:
    """The items held: their .wl bytes by scheduled date, then modality,
    then StudyInstanceUID, so that a C-FIND for one day and one modality
    reads only those items (loaded once, kept up to date by put and
    remove)."""

    def __init__(self, folder):
        self.folder = folder
        self._steps = {}  # uid: (date, modality)
        self._by_date = {}  # date: {modality: {uid: .wl bytes}}
        self._lock = threading.Lock()
        os.makedirs(folder, exist_ok=True)
        self._load()

    def _path(self, uid):
        return os.path.join(self.folder, uid + '.wl')

    def _load(self):
        for name in os.listdir(self.folder):
            uid = name[:-3]
            if not name.endswith('.wl') or not _UID.match(uid):
                continue
            with open(self._path(uid), 'rb') as stream:
                data = stream.read()
            date, modality = _step_of(data)
            self._index(uid, date, modality, data)

    def _index(self, uid, date, modality, data):
        "Hold an item (the lock held, or while loading)."
        self._unindex(uid)
        self._steps[uid] = (date, modality)
        self._by_date.setdefault(date, {}).setdefault(modality, {})[
            uid] = data

    def _unindex(self, uid):
        "Forget an item (the lock held); False when it was not held."
        step = self._steps.pop(uid, None)
        if step is None:
            return False
        date, modality = step
        modalities = self._by_date[date]
        items = modalities[modality]
        del items[uid]
        if not items:
            del modalities[modality]
            if not modalities:
                del self._by_date[date]
        return True

    def put(self, items):
        """Store items [(uid, date, modality, .wl bytes)]: each file, then
        the item in memory (a failed write leaves both as they were)."""
        for uid, date, modality, data in items:
            handle, temporary = tempfile.mkstemp(dir=self.folder,
                prefix='.tmp-')
            with os.fdopen(handle, 'wb') as stream:
                stream.write(data)
            os.replace(temporary, self._path(uid))
            with self._lock:
                self._index(uid, date, modality, data)

    def remove(self, uids):
        "Remove the items of uids; how many were held."
        for uid in uids:
            try:
                os.remove(self._path(uid))
            except FileNotFoundError:
                pass
        with self._lock:
            return sum(self._unindex(uid) for uid in uids)

    def uids(self):
        with self._lock:
            return sorted(self._steps)

    def count(self):
        with self._lock:
            return len(self._steps)

    def candidates(self, dates, modality):
        """The .wl bytes of the items whose date is within dates
        ((first, last), either None) and whose modality is modality
        (None: any)."""
        first, last = dates
        with self._lock:
            if first and first == last:
                days = [self._by_date.get(first) or {}]
            else:
                days = [modalities for date, modalities
                    in self._by_date.items()
                    if not (first and date < first or last and date > last)]
            found = []
            for modalities in days:
                if modality:
                    found.extend((modalities.get(modality) or {}).values())
                else:
                    for items in modalities.values():
                        found.extend(items.values())
        return found


def _step_of(data):
    "(date, modality) of a .wl file, for the quick filter."
    try:
        tags = json.loads(orthanc.DicomBufferToJson(data,
                orthanc.DicomToJsonFormat.SHORT,
                orthanc.DicomToJsonFlags.NONE, 0))
    except (orthanc.OrthancException, ValueError):
        return '', ''
    steps = tags.get(STEP_TAG) or [{}]
    step = steps[0] if isinstance(steps, list) and steps else {}
    return str(step.get(DATE_TAG) or ''), str(step.get(MODALITY_TAG) or '')


def query_filter(query_bytes):
    """((first, last) dates, modality) that a C-FIND query asks for; None
    where it does not restrict (or in a form the quick filter leaves to
    Orthanc's matcher: lists, wildcards)."""
    try:
        tags = json.loads(orthanc.DicomBufferToJson(query_bytes,
                orthanc.DicomToJsonFormat.SHORT,
                orthanc.DicomToJsonFlags.NONE, 0))
    except (orthanc.OrthancException, ValueError):
        return (None, None), None
    steps = tags.get(STEP_TAG)
    step = steps[0] if isinstance(steps, list) and steps and isinstance(
        steps[0], dict) else {}
    modality = str(step.get(MODALITY_TAG) or '')
    if not modality or any(c in modality for c in '*?\\'):
        modality = None
    return _date_range(str(step.get(DATE_TAG) or '')), modality


def _date_range(value):
    "DICOM DA matching: 'D', 'D1-D2', 'D1-', '-D2'; else no restriction."
    if re.match(r'^\d{8}$', value):
        return value, value
    match = re.match(r'^(\d{8})?-(\d{8})?$', value)
    if match:
        return match.group(1), match.group(2)
    return None, None


def _folder(config):
    section = config.get('HealthOrthanc') or {}
    folder = section.get('WorklistFolder')
    if not folder:
        storage = config.get('StorageDirectory') or 'OrthancStorage'
        folder = os.path.join(storage, 'health-orthanc-worklist')
    return folder


def answer_find(answers, query, issuer_aet, called_aet):
    "Orthanc's worklist callback: one answer per matching item."
    dates, modality = query_filter(query.WorklistGetDicomQuery())
    for data in WORKLIST.candidates(dates, modality):
        if query.WorklistIsMatch(data):
            answers.WorklistAddAnswer(query, data)


def _bad_request(output):
    output.SetHttpHeader('Cache-Control', 'no-store')
    output.SendHttpStatusCode(400)


def route(output, uri, **request):
    "GNU Health puts and removes items (service accounts only)."
    method = request.get('method')
    if method == 'GET':
        output.AnswerBuffer(json.dumps({'Items': WORKLIST.uids()}),
            'application/json')
        return
    if method != 'POST':
        output.SendMethodNotAllowed('GET,POST')
        return
    try:
        body = json.loads(request.get('body') or b'{}')
        put = [(str(i['uid']), str(i.get('date') or ''),
                str(i.get('modality') or ''),
                base64.b64decode(i['dicom'], validate=True))
            for i in body.get('put') or []]
        remove = [str(uid) for uid in body.get('remove') or []]
    except (ValueError, KeyError, TypeError, AttributeError,
            binascii.Error):
        _bad_request(output)
        return
    if not all(_UID.match(uid) for uid in remove + [p[0] for p in put]):
        _bad_request(output)
        return
    WORKLIST.put(put)
    removed = WORKLIST.remove(remove)
    output.AnswerBuffer(json.dumps({'Put': len(put), 'Removed': removed,
                'Count': WORKLIST.count()}), 'application/json')


WORKLIST = Worklist(_folder(json.loads(orthanc.GetConfiguration())))
orthanc.RegisterRestCallback(ROUTE, route)
orthanc.RegisterWorklistCallback(answer_find)
