# SPDX-License-Identifier: GPL-3.0-or-later
"""pytest hooks of the suite (tests/run_suite.py runs pytest once per
database backend)."""
import os

import pytest

POSTGRESQL_SKIP = ('its result cannot depend on the database backend: run '
    'in the SQLite phase only')


def same_on_every_backend(item):
    """Tests of modules that set SAME_ON_EVERY_BACKEND, or of classes or
    methods that set same_on_every_backend: those that use no database
    (the adapter against Orthanc, DICOM, the README, pure helpers) or only
    read what the module ships (its translation catalogues)."""
    return any(getattr(owner, name, False) for owner, name in [
            (item.module, 'SAME_ON_EVERY_BACKEND'),
            (item.cls, 'same_on_every_backend'),
            (getattr(item, 'obj', None), 'same_on_every_backend')])


def pytest_collection_modifyitems(config, items):
    uri = os.environ.get('TRYTOND_DATABASE_URI') or ''
    if not uri.startswith('postgresql'):
        return
    skip = pytest.mark.skip(reason=POSTGRESQL_SKIP)
    for item in items:
        if same_on_every_backend(item):
            item.add_marker(skip)
