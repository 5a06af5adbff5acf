#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Figures of the bomb uploads and hostile hosts that the tests refuse.

Uploads (tests/test_upload_bombs.py's set-up: JSON-RPC to a trytond
process, tests/rpc.py, with a radiographer's session; its own Orthanc):
per bomb, the wall time of the wizard's 'upload' call, the growth of
trytond's and Orthanc's peak RSS (VmHWM reset just before), and the
error.  Answers
(tests/test_answer_bounds.py's loopback hosts, in this process): a 1 GB
answer and hosts trickling one byte every half second, with the default
limits and a 10 s deadline.

Each case runs in a fresh Python process (and its own trytond): a process
keeps the heap it freed, which would hide the growth of the next case.
Prints one JSON object on stdout.

    python benchmarks/bombs.py

Run it as the suite runs tests (SQLite, database cache in build/):
    TRYTOND_DATABASE_URI=sqlite:// DB_NAME=:memory: \\
        DB_CACHE=build/db-cache python benchmarks/bombs.py
"""
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, ROOT)

from tests import bombs, dicom_factory as dicom  # noqa: E402
from tests import test_answer_bounds as answers  # noqa: E402
from tests import test_upload_bombs as uploads  # noqa: E402

import orthanc  # noqa: E402

UPLOADS = {
    'gzip_10GB': lambda: (bombs.gzip_of_zeros(640 * bombs.BLOCK),
        'zeros.dcm.gz'),
    'gzip_1GB': lambda: (bombs.gzip_of_zeros(64 * bombs.BLOCK),
        'zeros.dcm.gz'),
    'zip_3GB': lambda: (bombs.zip_of_zeros(179 * bombs.BLOCK), 'study.zip'),
    'frames_1M_empty': lambda: (bombs.zero_length_frames(1_000_000), None),
    'one_dicom_file': lambda: (dicom.image(), 'ct.dcm'),
    }
HOSTS = {
    'answer_1GB': ('gigabyte', 'study'),
    'answer_1GB_announced': ('gigabyte_announced', 'study'),
    'trickling_body': ('trickle_body', 'study'),
    'trickling_headers': ('trickle_head', 'last_change'),
    }


def mb(size):
    return round(size / 1e6, 1)


def measure_upload(name):
    "One upload against a fresh trytond (its freed heap would hide growth)."
    case = uploads.UploadBombsOverRpcTest('test_upload_still_works')
    case.setUpClass()
    try:
        data, names = UPLOADS[name]()
        started = time.monotonic()
        error, growth, orthanc_growth = case.upload(data, names)
        return {
            'upload_mb': mb(len(data)),
            'seconds': round(time.monotonic() - started, 2),
            'trytond_peak_growth_mb': mb(growth),
            'orthanc_peak_growth_mb': mb(orthanc_growth),
            'orthanc_instances_after': len(case.orthanc_instances()),
            'error': error and error.message,
            }
    finally:
        type(case).doClassCleanups()


def measure_host(name):
    "One hostile host, answering this process."
    mode, call = HOSTS[name]
    server = answers._HostileServer(mode)
    client = orthanc.OrthancClient(server.url, 'u', 'p', timeout=10)
    args = [answers.STUDY_ID] if call == 'study' else []
    started = time.monotonic()
    with bombs.PeakGrowth() as growth:
        try:
            getattr(client, call)(*args)
            error = None
        except orthanc.OrthancError as exc:
            error = '%s: %s' % (exc.__class__.__name__, exc)
    client.close()
    server.close()
    return {
        'seconds': round(time.monotonic() - started, 2),
        'peak_growth_mb': mb(growth.bytes),
        'host_sent_mb': mb(server.sent),
        'error': error,
        }


def in_child(kind, name):
    "The figures of one case, measured in a fresh Python process."
    output = subprocess.run([sys.executable, __file__, kind, name],
        check=True, stdout=subprocess.PIPE).stdout
    return json.loads(output)


def main():
    if len(sys.argv) == 3:  # one case, in this (child) process
        kind, name = sys.argv[1:]
        measure = measure_upload if kind == 'upload' else measure_host
        print(json.dumps(measure(name)))
        return
    print(json.dumps({
                'uploads': {n: in_child('upload', n) for n in UPLOADS},
                'answers': {n: in_child('host', n) for n in HOSTS},
                }, indent=2))


if __name__ == '__main__':
    main()
