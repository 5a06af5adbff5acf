# SPDX-License-Identifier: GPL-3.0-or-later
"""Bounds of health_orthanc read from trytond.conf, section [health_orthanc].

Sizes are in bytes, times in seconds; a missing key keeps the default of
orthanc.Limits / upload_frames.UploadLimits (the README lists them).
"""
from trytond.config import config

from . import orthanc, upload_frames

SECTION = 'health_orthanc'
# The key of each answer limit is 'max_answer_' + its kind (the messages
# name the key from the kind).
ANSWER_KEYS = {name: 'max_answer_' + name
    for name in ('info', 'changes', 'metadata', 'image')}
UPLOAD_KEYS = {
    'files': 'max_upload_files',
    'inflated_file': 'max_inflated_file',
    'inflated_upload': 'max_inflated_upload',
    'zip_entries': 'max_zip_entries',
    'zip_ratio': 'max_zip_ratio',
    }
# Orthanc answers a POST only once the whole file (or archive) is stored:
# a large ZIP needs longer than a server's deadline for queries.
UPLOAD_TIMEOUT = 600.0


def _read(limits_class, keys):
    defaults = limits_class()
    return limits_class(**{name: config.getint(SECTION, key,
                default=getattr(defaults, name))
            for name, key in keys.items()})


def answer_limits():
    "orthanc.Limits: the largest answer accepted per kind of call."
    return _read(orthanc.Limits, ANSWER_KEYS)


def upload_limits():
    "upload_frames.UploadLimits: what one upload may hold."
    return _read(upload_frames.UploadLimits, UPLOAD_KEYS)


def upload_timeout():
    "The deadline of one upload request (seconds)."
    return config.getfloat(SECTION, 'upload_timeout', default=UPLOAD_TIMEOUT)
