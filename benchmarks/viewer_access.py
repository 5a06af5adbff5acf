#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the viewer-access script: what a viewer token costs.

Starts one throw-away Orthanc running Debian's orthanc-python with
orthanc_side/viewer_access.py (configured as the README says), stores
--instances single-frame images in one study, then fetches --previews
instance previews (/instances/{id}/preview, PNG), cycling over the
instances, on one keep-alive connection:

- basic: with the service account's Basic credentials (the script's
  constant-time comparison decides);
- token: with the cookie that /health-orthanc/open set for a viewer token
  of that study (the script checks the HMAC, resolves each instance to its
  study, cached);
- plain (reference, no target): the same on an Orthanc without the script,
  with Orthanc's built-in Basic authentication.

Each round fetches --previews previews per path in batches of 20, the
paths interleaved batch by batch (the machine may be busy with other work:
interleaving spreads that load over all paths); the first token round
starts with an empty study cache.  Target: token time <= 1.2 x basic
time (sum over the rounds).

Prints the figures on stderr, then one JSON object on stdout whose
`targets` maps each target to {value, limit, ok}; exit code 0 even when a
target is missed (it is a measurement).

    python benchmarks/viewer_access.py [--previews 500 --instances 100]
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
TARGETS = {'token_vs_basic': 1.2}
BATCH = 20


def log(*args):
    print('[bench]', *args, file=sys.stderr, flush=True)


def target(value, limit):
    return {'value': round(value, 3), 'limit': limit, 'ok': value <= limit}


def store_study(orthanc, count):
    "One study of count single-frame images: (study id, uid, instance ids)."
    import httpx
    from trytond.modules.health_orthanc.tests import dicom_factory as dicom
    files = dicom.study(n_series=1, n_instances=count,
        patient_id='BENCH-VIEWER')
    with httpx.Client(base_url=orthanc.url, auth=orthanc.auth,
            timeout=60) as client:
        for data in files:
            client.post('/instances', content=data).raise_for_status()
        study_id, = client.get('/studies').json()
        study = client.get('/studies/%s' % study_id).json()
        instances = client.get('/studies/%s/instances' % study_id).json()
    return (study_id, study['MainDicomTags']['StudyInstanceUID'],
        [i['ID'] for i in instances])


def fetch_previews(client, instances, count):
    "Seconds to GET count previews; every answer must be a PNG."
    started = time.perf_counter()
    for index in range(count):
        response = client.get('/instances/%s/preview'
            % instances[index % len(instances)])
        if response.status_code != 200 or not response.content.startswith(
                b'\x89PNG'):
            raise RuntimeError('preview refused: HTTP %s'
                % response.status_code)
    return time.perf_counter() - started


def token_client(orthanc, secret, study_id, study_uid):
    """A client sending the cookie that the opening route set for a viewer
    token, as a browser does (sent as a header: httpx's cookie jar costs
    the client ~0.2 ms a request, which is not Orthanc's time)."""
    import httpx
    from trytond.modules.health_orthanc.orthanc_side import viewer_token
    token = viewer_token.issue(secret, study=study_id, study_uid=study_uid,
        user='bench', lifetime=3600, viewer='webviewer')
    response = httpx.get(orthanc.url + viewer_token.OPEN_ROUTE,
        params={'token': token}, timeout=60)
    if response.status_code != 303:
        raise RuntimeError('opening refused: HTTP %s' % response.status_code)
    cookie = response.headers['set-cookie'].split(';', 1)[0]
    return httpx.Client(base_url=orthanc.url, timeout=60,
        headers={'Cookie': cookie})


def measure(args):
    import httpx
    from trytond.modules.health_orthanc.orthanc_side import viewer_token
    from trytond.modules.health_orthanc.tests.orthanc_server import (
        OrthancServer)
    secret = viewer_token.new_secret()
    results = {'basic': [], 'token': [], 'plain': []}
    with OrthancServer(viewer_secret=secret, plugins=(),
            name='viewer access bench') as scripted, OrthancServer(
            plugins=(), name='viewer access bench (plain)') as plain:
        log('Orthanc with the script %s, without %s' % (scripted.url,
                plain.url))
        study_id, study_uid, instances = store_study(scripted,
            args.instances)
        store_study(plain, args.instances)
        plain_instances = httpx.get(plain.url + '/instances',
            auth=plain.auth).json()
        clients = {
            'basic': httpx.Client(base_url=scripted.url, auth=scripted.auth,
                timeout=60),
            'token': token_client(scripted, secret, study_id, study_uid),
            'plain': httpx.Client(base_url=plain.url, auth=plain.auth,
                timeout=60),
            }
        ids = {'basic': instances, 'token': instances,
            'plain': plain_instances}
        # The machine is shared: small batches, the paths interleaved, so
        # that load from elsewhere falls on all of them alike.
        try:
            for index in range(args.rounds):
                order = ['token', 'basic', 'plain']
                seconds = dict.fromkeys(order, 0.0)
                for start in range(0, args.previews, BATCH):
                    count = min(BATCH, args.previews - start)
                    for name in order:
                        seconds[name] += fetch_previews(clients[name],
                            ids[name][start % len(ids[name]):] + ids[name],
                            count)
                    order.append(order.pop(0))
                for name in seconds:
                    results[name].append(seconds[name])
                    log('round %d %-5s %d previews in %.3f s (%.0f/s)' % (
                            index + 1, name, args.previews, seconds[name],
                            args.previews / seconds[name]))
        finally:
            for client in clients.values():
                client.close()
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--previews', type=int, default=500)
    parser.add_argument('--instances', type=int, default=100)
    parser.add_argument('--rounds', type=int, default=5)
    args = parser.parse_args()
    results = measure(args)
    totals = {name: sum(values) for name, values in results.items()}
    report = {
        'previews': args.previews,
        'instances': args.instances,
        'rounds': args.rounds,
        'seconds': {name: [round(v, 3) for v in values]
            for name, values in results.items()},
        'previews_per_second': {name: round(
                args.previews * args.rounds / total, 1)
            for name, total in totals.items()},
        'script_vs_plain': round(totals['basic'] / totals['plain'], 3),
        'targets': {
            'token_vs_basic': target(totals['token'] / totals['basic'],
                TARGETS['token_vs_basic']),
            },
        }
    report['all_targets_met'] = all(t['ok']
        for t in report['targets'].values())
    for name, rate in report['previews_per_second'].items():
        log('%-5s %.0f previews/s' % (name, rate))
    log('token / basic: %.3f (limit %s); basic with the script / plain '
        'Orthanc: %.3f' % (report['targets']['token_vs_basic']['value'],
            TARGETS['token_vs_basic'], report['script_vs_plain']))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
