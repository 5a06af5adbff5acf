# SPDX-License-Identifier: GPL-3.0-or-later
"""Browser links into Orthanc and its viewer plugins.

Pure functions of a public base URL and DICOM/Orthanc identifiers, so that
models never assemble URLs themselves.
"""
from urllib.parse import quote, urlencode


def _join(base, path, **query):
    url = base.rstrip('/') + path
    if query:
        url += '?' + urlencode(query, safe='.')
    return url


def explorer(base):
    "Orthanc Explorer home."
    return _join(base, '/app/explorer.html')


def explorer_study(base, study_id):
    "Orthanc Explorer page of one study."
    return explorer(base) + '#study?uuid=' + quote(study_id, safe='-')


def ohif(base, study_uid):
    return _join(base, '/ohif/viewer', StudyInstanceUIDs=study_uid)


def stone(base, study_uid, series_uid=None):
    query = {'study': study_uid}
    if series_uid:
        query['series'] = series_uid
    return _join(base, '/stone-webviewer/index.html', **query)


def web_viewer(base, series_id):
    "Orthanc Web Viewer plugin, which opens one series by its Orthanc ID."
    return _join(base, '/web-viewer/app/viewer.html', series=series_id)


def viewer_open(base, token):
    "The viewer-access script's opening route, carrying a viewer token."
    from .orthanc_side.viewer_token import OPEN_ROUTE
    return _join(base, OPEN_ROUTE, token=token)
