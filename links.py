# SPDX-License-Identifier: GPL-3.0-or-later
"""Browser links into Orthanc and its viewer plugins.

Pure functions of a public base URL and DICOM/Orthanc identifiers, so that
models never assemble URLs themselves.
"""
from urllib.parse import quote, urlencode

# Viewer link fields and the server flag saying its plugin is installed.
VIEWER_PLUGINS = {
    'ohif_viewer_link': 'has_ohif',
    'stone_viewer_link': 'has_stone',
    'web_viewer_link': 'has_webviewer',
    }


def _join(base, path, **query):
    url = base.rstrip('/') + path
    if query:
        url += '?' + urlencode(query, safe='.')
    return url


def home(base):
    "Orthanc's home page (it opens Orthanc Explorer), ending with a slash."
    return base.rstrip('/') + '/'


def explorer(base):
    "Orthanc Explorer home."
    return _join(base, '/app/explorer.html')


def explorer_study(base, study_id):
    "Orthanc Explorer page of one study."
    return explorer(base) + '#study?uuid=' + quote(study_id, safe='-')


def explorer_patient(base, patient_id):
    "Orthanc Explorer page of one patient."
    return explorer(base) + '#patient?uuid=' + quote(patient_id, safe='-')


def ohif_dicom_json(base, study_id):
    "OHIF viewer opening one study by its Orthanc ID (Orthanc's JSON)."
    return (base.rstrip('/') + '/ohif/viewer?url=../studies/%s/ohif-dicom-json'
        % quote(study_id, safe='-'))


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
