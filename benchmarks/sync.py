#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the Orthanc synchronisation against its floors.

Loads a generated data set into a throw-away Orthanc, then measures, each
in a fresh Python process with a fresh database:

- rest_floor: the same metadata read with the fewest REST calls Orthanc
  1.10 allows: paged /studies, /series and /instances with expand, no ORM;
- rest_per_study: the same read the way the sync reads it today (pages of
  /studies, then 2 calls per study), for reference;
- orm_floor: the same rows created with one batched create per model;
- write_floor: the same rows inserted with plain batched SQL (the
  database's speed, no ORM);
- incremental: a first incremental sync into an empty database, then a
  no-op incremental sync;
- full: a full sync into an empty database, then a full sync that finds
  nothing to change (checked to write nothing);
- rest_series_floor: studies and series only, with the fewest calls (what
  a server whose instances are mirrored on demand reads);
- on_demand: a first incremental sync of a server mirroring instances on
  demand, then opening one series (its instances read and stored).

Default shapes (issue 15): 200 x 3 x 10 and 20 x 4 x 250.  --archive adds
2,000 and 20,000 studies x 1 x 1 read from an Orthanc whose index is in
PostgreSQL (Debian orthanc-postgresql, its own database on the machine's
PostgreSQL), with --db postgresql.

Each measurement reports wall time, HTTP requests (the adapter's
request_count) and peak RSS.  A fresh process per scenario keeps the
database and the interpreter's heap of one scenario out of the next; inside
a process the kernel's peak-RSS counter (VmHWM) is reset before each
measurement, so a peak belongs to one measurement (it includes the
process's baseline: trytond, the pool and the loaded modules).

Prints one JSON object on stdout, progress on stderr; the exit code is 0
even when a target is missed (it is a measurement).

    python benchmarks/sync.py [--studies 200 --series 3 --instances 10]
        [--scale] [--archive] [--db sqlite|postgresql]
"""
import argparse
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import harness
from harness import log, reset_peak_rss, rss_mb, source_hash, target

MODULE = 'health_orthanc'
DB_CACHE_ROOT = os.environ.get('BENCH_DB_CACHE', '/tmp/dbcache-bench')
PG_URI = os.environ.get('PG_URI', 'postgresql://postgres@127.0.0.1:5432/')
UPLOAD_THREADS = 8
# The code a measurement runs: reported per worker to spot concurrent edits.
MEASURED_CODE = {'sync.py', 'orthanc.py', 'study.py', 'server.py'}
SCALE_SIZE = (2000, 3, 10)
SHAPES = [(200, 3, 10), (20, 4, 250)]  # issue 15: many studies; CT/MR
ARCHIVE_SIZES = [(2000, 1, 1), (20000, 1, 1)]
SCENARIOS = ['rest_floor', 'rest_per_study', 'orm_floor', 'write_floor',
    'incremental', 'full', 'rest_series_floor', 'on_demand']
# 40,000 per-study requests and a 20,000-row ORM create say nothing new.
ARCHIVE_SCENARIOS = ['rest_floor', 'write_floor', 'incremental', 'full',
    'rest_series_floor', 'on_demand']
REST_PAGE = 1000  # resources per paged call of the REST floor
SQL_BATCH = 1000  # rows per INSERT of the write floor
TARGETS = {
    'first_sync_vs_floors': 1.5,
    # Issue 15: against the fewest-call REST floor, measured in the run.
    'first_sync_vs_rest_floor': 4,
    'noop_requests_per_server': 2,
    'full_nochange_vs_rest_floor': 3,
    'requests_per_study': 4,
    'scale_peak_rss_mb': 500,
    'scale_time_growth': 12,
    # Issue 15, on demand: against reading studies and series only.
    'on_demand_first_vs_series_floor': 2,
    'open_series_seconds': 0.5,
    'archive_time_growth': 11,  # 20,000 studies against 2,000
    }


# --- Parent: data set, Orthanc, workers ------------------------------------

def main():
    args = parse_args()
    if args.worker:
        # The context (with Orthanc's password) comes on stdin, not argv.
        return run_worker(args.worker, json.load(sys.stdin))
    given = (args.studies, args.series, args.instances)
    sizes = [given] if any(given) else list(SHAPES)
    sizes = [tuple(g or d for g, d in zip(s, SHAPES[0])) for s in sizes]
    if args.scale:
        sizes.append(SCALE_SIZE)
    if args.archive_only:
        sizes = []
    report = {'db': args.db, 'runs': {}}
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        args.profile = os.path.abspath(args.profile)
    for size in sizes:
        report['runs'][size_name(size)] = run_size(size, args.db,
            args.profile, args.repeat)
    if args.scale:
        base = report['runs'][size_name(sizes[0])]
        report['scale'] = scale_targets(base,
            report['runs'][size_name(SCALE_SIZE)],
            math.prod(SCALE_SIZE) / math.prod(sizes[0]))
    if args.archive:
        for size in ARCHIVE_SIZES:
            report['runs'][size_name(size)] = run_size(size, args.db,
                args.profile, args.repeat, archive=True)
        small, big = (report['runs'][size_name(s)] for s in ARCHIVE_SIZES)
        report['archive'] = scale_targets(small, big,
            math.prod(ARCHIVE_SIZES[1]) / math.prod(ARCHIVE_SIZES[0]),
            TARGETS['archive_time_growth'], per_ten=False)
    report['targets'] = flat_targets(report)
    report['all_targets_met'] = all_met(report)
    print(json.dumps(report, indent=2, default=str))
    print_summary(report)
    return 0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--studies', type=int,
        help='one shape instead of %s' % ', '.join(map(size_name, SHAPES)))
    parser.add_argument('--series', type=int)
    parser.add_argument('--instances', type=int)
    parser.add_argument('--scale', action='store_true',
        help='also run %d x %d x %d and check linear growth' % SCALE_SIZE)
    parser.add_argument('--archive', action='store_true',
        help='also run %s from an Orthanc with its index in PostgreSQL '
        '(orthanc-postgresql; needs --db postgresql)'
        % ' and '.join(map(size_name, ARCHIVE_SIZES)))
    parser.add_argument('--archive-only', action='store_true',
        help='--archive without the other shapes')
    parser.add_argument('--db', choices=['sqlite', 'postgresql'],
        default='sqlite')
    parser.add_argument('--repeat', type=int, default=1, metavar='N',
        help='run each scenario N times, keep the fastest of each '
        'measurement (the machine may be shared)')
    parser.add_argument('--profile', metavar='DIR',
        help='write a pyinstrument profile of each measurement to DIR '
        '(times are then inflated)')
    args = harness.parse_args(parser)
    args.archive = args.archive or args.archive_only
    if args.archive and args.db != 'postgresql':
        parser.error('--archive reads its Orthanc index from PostgreSQL: '
            'use it with --db postgresql')
    return args


def size_name(size):
    return '%dx%dx%d' % tuple(size)


def run_size(size, db, profile=None, repeat=1, archive=False):
    "Load one data set into its own Orthanc and run every scenario on it."
    studies, series, instances = size
    log('=== %s (%d instances), %s%s' % (size_name(size),
            studies * series * instances, db,
            ', Orthanc index in PostgreSQL' if archive else ''))
    with orthanc_for(archive) as server, tempfile.TemporaryDirectory(
            prefix='bench-sync-') as tmp:
        load_time = load(server, size)
        context = {
            'url': server.url, 'user': server.user,
            'password': server.password, 'db': db,
            'size': list(size), 'data_file': os.path.join(tmp, 'trees.json'),
            'profile': profile,
            }
        results = {'load_seconds': round(load_time, 1)}
        # rest_floor writes the trees that orm_floor stores.
        for scenario in ARCHIVE_SCENARIOS if archive else SCENARIOS:
            results.update(fastest([spawn_worker(scenario, context)
                        for _ in range(repeat)]))
    results['targets'] = size_targets(results, studies)
    sources = {v['source'] for v in results.values()
        if isinstance(v, dict) and 'source' in v}
    # Others may edit the module meanwhile: say so if the code changed.
    results['same_code_in_all_workers'] = len(sources) == 1
    return results


@contextlib.contextmanager
def orthanc_for(archive):
    """A throw-away Orthanc; for the archive, with its index in its own
    database of the machine's PostgreSQL (dropped after)."""
    from trytond.modules.health_orthanc.tests.orthanc_server import (
        OrthancServer)
    if not archive:
        with OrthancServer() as server:
            yield server
        return
    database = 'bench_orthanc_index_%d' % os.getpid()
    psql('postgres', 'CREATE DATABASE "%s"' % database)
    try:
        with OrthancServer(plugins=(), name='health_orthanc archive',
                index_database=PG_URI.rstrip('/') + '/' + database) as server:
            yield server
    finally:
        psql('postgres', 'DROP DATABASE IF EXISTS "%s"' % database)


def fastest(runs):
    "Per measurement, the fastest run; checks must hold in every run."
    result = {}
    for name in runs[0]:
        result[name] = dict(min((r[name] for r in runs),
                key=lambda m: m['seconds']))
        for check in ['rows_ok', 'wrote_nothing']:
            if check in result[name]:
                result[name][check] = all(r[name][check] for r in runs)
        if len(runs) > 1:
            result[name]['all_seconds'] = [r[name]['seconds'] for r in runs]
    return result


def load(server, size):
    """Generate the files in a child process (pydicom is CPU-bound) and
    upload them on several connections: about twice as fast as one."""
    expected = size[0] * size[1] * size[2]
    start = time.perf_counter()
    upload_parallel(server, generated(size), expected)
    wait_stable(server, expected)
    elapsed = time.perf_counter() - start
    log('loaded %d instances in %.0f s (%.0f/s)'
        % (expected, elapsed, expected / elapsed))
    return elapsed


def generated(size, batch=50):
    "Yield dicom_factory.dataset_set(*size), generated in a child process."
    batches = multiprocessing.Queue(maxsize=64)
    producer = multiprocessing.Process(target=produce,
        args=(batches, size, batch), daemon=True)
    producer.start()
    while (files := batches.get()) is not None:
        yield from files
    producer.join()


def produce(batches, size, batch):
    from trytond.modules.health_orthanc.tests import dicom_factory
    files = dicom_factory.dataset_set(*size)
    while chunk := list(itertools.islice(files, batch)):
        batches.put(chunk)
    batches.put(None)


def upload_parallel(server, files, expected):
    import httpx
    todo = queue.Queue(maxsize=UPLOAD_THREADS * 16)
    errors = []

    def uploader():
        with httpx.Client(auth=server.auth, timeout=120) as client:
            while (data := todo.get()) is not None:
                for attempt in range(3):
                    try:
                        response = client.post(server.url + '/instances',
                            content=data)
                        response.raise_for_status()
                        break
                    except httpx.TransportError as exc:
                        # Orthanc closed an idle keep-alive connection
                        # as the upload started on it: send it again.
                        if attempt == 2:
                            errors.append(exc)
                    except httpx.HTTPError as exc:
                        errors.append(exc)
                        break

    threads = [threading.Thread(target=uploader, daemon=True)
        for _ in range(UPLOAD_THREADS)]
    for thread in threads:
        thread.start()
    step = max(expected // 10, 1)
    for count, data in enumerate(files, 1):
        todo.put(data)
        if count % step == 0:
            log('uploaded %d/%d' % (count, expected))
    for _ in threads:
        todo.put(None)
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError('%d uploads failed, first: %s'
            % (len(errors), errors[0]))


def wait_stable(server, expected, timeout=600):
    """Wait until Orthanc holds every instance and every study is stable.

    Stable events come StableAge seconds after the last instance: syncing
    earlier would leave them to the "no-op" sync.
    """
    import httpx
    deadline = time.monotonic() + timeout
    with httpx.Client(auth=server.auth, timeout=120) as client:
        while time.monotonic() < deadline:
            try:
                stats = client.get(server.url + '/statistics').json()
                if int(stats['CountInstances']) == expected:
                    studies = client.get(server.url + '/studies',
                        params={'expand': 'true'}).json()
                    if all(s.get('IsStable') for s in studies):
                        return
            except httpx.RemoteProtocolError:
                pass  # Orthanc closed the idle keep-alive connection (1 s)
            time.sleep(1)
    raise RuntimeError('Orthanc did not settle within %d s' % timeout)


def spawn_worker(scenario, context):
    "Run one scenario in a fresh interpreter; return its JSON result."
    result = harness.spawn_worker(__file__, scenario, context,
        db_environ(context['db'], scenario))
    for name, values in result.items():
        log('   %-22s %s' % (name, values))
    return result


def db_environ(db, scenario):
    """trytond's test settings: a fresh database per worker, restored from
    a cache keyed by the module's source."""
    if db == 'sqlite':
        return harness.sqlite_environ(DB_CACHE_ROOT)
    return {'TRYTOND_DATABASE_URI': PG_URI,
        'DB_CACHE': os.path.join(DB_CACHE_ROOT, source_hash()),
        'DB_NAME': 'bench_%s_%d_%s' % (MODULE, os.getpid(), scenario)}


# --- Targets --------------------------------------------------------------

def size_targets(results, studies):
    first = results['first_incremental']
    nochange = results['full_nochange']
    targets = {}
    if 'orm_floor' in results:
        floors = (results['rest_floor']['seconds']
            + results['orm_floor']['seconds'])
        targets['first_sync_vs_floors'] = target(first['seconds'] / floors,
            TARGETS['first_sync_vs_floors'])
    if 'first_on_demand' in results:
        targets.update(on_demand_targets(results))
    return dict(targets, **{
        'first_sync_vs_rest_floor': target(
            first['seconds'] / results['rest_floor']['seconds'],
            TARGETS['first_sync_vs_rest_floor']),
        'noop_requests_per_server': target(
            results['noop_incremental']['requests'],
            TARGETS['noop_requests_per_server']),
        'full_nochange_vs_rest_floor': target(
            nochange['seconds'] / results['rest_floor']['seconds'],
            TARGETS['full_nochange_vs_rest_floor'],
            ok=(nochange['seconds'] <= TARGETS['full_nochange_vs_rest_floor']
                * results['rest_floor']['seconds']
                and nochange['wrote_nothing'])),
        'full_nochange_wrote_nothing': nochange['wrote_nothing'],
        'requests_per_study': target(first['requests'] / studies,
            TARGETS['requests_per_study']),
        'rows_complete': (first['rows_ok'] and results['full_empty']['rows_ok']),
        })


def on_demand_targets(results):
    on_demand, opened = results['first_on_demand'], results['open_series']
    return {
        'on_demand_first_vs_series_floor': target(on_demand['seconds']
            / results['rest_series_floor']['seconds'],
            TARGETS['on_demand_first_vs_series_floor']),
        'open_series_seconds': target(opened['seconds'],
            TARGETS['open_series_seconds']),
        'on_demand_rows_exact': (on_demand['rows_ok']
            and opened['rows_ok']),
        }


def scale_targets(base, big, data_ratio, growth=None, per_ten=True):
    """Peak RSS and linear growth of the first and the full sync.

    The growth limit is 12 for 10 times the data (the default sizes),
    proportionally for other base sizes (or growth, as it is)."""
    growth = growth or TARGETS['scale_time_growth']
    limit = round(growth * data_ratio / 10, 2) if per_ten else growth
    result = {'data_ratio': round(data_ratio, 2)}
    for name in ['first_incremental', 'full_empty']:
        growth = big[name]['seconds'] / base[name]['seconds']
        result[name] = {
            'peak_rss_mb': target(big[name]['peak_rss_mb'],
                TARGETS['scale_peak_rss_mb'],
                ok=big[name]['peak_rss_mb'] < TARGETS['scale_peak_rss_mb']),
            'time_growth': target(growth, limit),
            }
    result['growth_all'] = {name: round(
            big[name]['seconds'] / base[name]['seconds'], 2)
        for name in ['rest_floor', 'orm_floor', 'first_incremental',
            'noop_incremental', 'full_empty', 'full_nochange']
        if name in big and name in base}
    return result


def flat_targets(report):
    "Every target of the report by 'run/name': {value, limit, ok}."
    flat = {}
    for name, run in report['runs'].items():
        for key, value in run['targets'].items():
            flat['%s/%s' % (name, key)] = (value if isinstance(value, dict)
                else {'value': value, 'limit': True, 'ok': bool(value)})
    for group in ['scale', 'archive']:
        for name, values in report.get(group, {}).items():
            if name in ('first_incremental', 'full_empty'):
                for key, value in values.items():
                    flat['%s/%s/%s' % (group, name, key)] = value
    return flat


def all_met(report):
    oks = []

    def collect(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'ok' or key.endswith(('wrote_nothing',
                            'rows_complete')):
                    oks.append(bool(value))
                else:
                    collect(value)
    for run in report['runs'].values():
        collect(run['targets'])
    collect(report.get('scale', {}))
    collect(report.get('archive', {}))
    return all(oks)


def print_summary(report):
    lines = ['', 'health_orthanc sync benchmark (%s)' % report['db']]
    for name, run in report['runs'].items():
        lines.append('%s:' % name)
        for measure in ['rest_floor', 'rest_per_study', 'orm_floor',
                'write_floor', 'first_incremental',
                'noop_incremental', 'full_empty', 'full_nochange',
                'rest_series_floor', 'first_on_demand', 'open_series']:
            if measure not in run:
                continue
            values = run[measure]
            lines.append('  %-18s %8.2f s %7d requests %7.0f MB peak'
                % (measure, values['seconds'], values['requests'],
                    values['peak_rss_mb']))
        for key, value in run['targets'].items():
            lines.append('  target %-28s %s' % (key, verdict(value)))
    for group in ['scale', 'archive']:
        for name, values in report.get(group, {}).items():
            if name in ('first_incremental', 'full_empty'):
                for key, value in values.items():
                    lines.append('  %s %s %s %s' % (group, name, key,
                            verdict(value)))
    lines.append('ALL TARGETS MET' if report['all_targets_met']
        else 'SOME TARGETS MISSED')
    print('\n'.join(lines), file=sys.stderr)


def verdict(value):
    if isinstance(value, dict):
        return '%s (%s, limit %s)' % ('PASS' if value['ok'] else 'MISS',
            value['value'], value['limit'])
    return 'PASS' if value else 'MISS'


# --- Worker: one scenario in a fresh process -------------------------------

def run_worker(scenario, context):
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if context.get('profile'):
        PROFILE.update(dir=context['profile'],
            size=size_name(context['size']))
    run = {
        'rest_floor': worker_rest_floor,
        'rest_per_study': worker_rest_per_study,
        'orm_floor': worker_orm_floor,
        'write_floor': worker_write_floor,
        'incremental': worker_incremental,
        'full': worker_full,
        'rest_series_floor': worker_rest_series_floor,
        'on_demand': worker_on_demand,
        }[scenario]
    try:
        result = run(context)
    finally:
        if not scenario.startswith('rest_'):
            drop_database(context)
    for values in result.values():
        values['source'] = source_hash(MEASURED_CODE)
        if PROFILE:
            values['profiled'] = True
    print(json.dumps(result, default=str))
    return 0


PROFILE = {}  # {'dir': ..., 'size': ...} when --profile is given


def profiled(name, function):
    "function(), under pyinstrument when profiling (slower: not a figure)."
    if not PROFILE:
        return function()
    try:
        from pyinstrument import Profiler
    except ImportError:
        return cprofiled(name, function)
    profiler = Profiler(interval=0.005)
    with profiler:
        value = function()
    path = os.path.join(PROFILE['dir'], '%s-%s.txt' % (PROFILE['size'], name))
    with open(path, 'w') as stream:
        stream.write(profiler.output_text(unicode=True, show_all=True))
    log('   profile of %s: %s' % (name, path))
    return value


def cprofiled(name, function):
    "function() under cProfile (pyinstrument not installed)."
    import cProfile
    import pstats
    profiler = cProfile.Profile()
    value = profiler.runcall(function)
    path = os.path.join(PROFILE['dir'], '%s-%s.txt' % (PROFILE['size'], name))
    with open(path, 'w') as stream:
        pstats.Stats(profiler, stream=stream).sort_stats(
            'cumulative').print_stats(60)
    log('   profile of %s: %s' % (name, path))
    return value


def measure(name, function, client=None):
    "Run function(); wall time, HTTP requests and peak RSS of the call."
    per_measure = reset_peak_rss()
    base = rss_mb('VmRSS')
    requests = client.request_count if client else 0
    start = time.perf_counter()
    value = profiled(name, function)
    seconds = time.perf_counter() - start
    result = {
        'seconds': round(seconds, 3),
        'requests': (client.request_count - requests) if client else 0,
        'peak_rss_mb': round(rss_mb('VmHWM'), 1),
        'base_rss_mb': round(base, 1),
        }
    if not per_measure:
        result['peak_rss_is_process_peak'] = True
    return result, value


def worker_rest_floor(context):
    """Fewest REST calls for the same metadata (Orthanc 1.10): paged
    /studies, /series and /instances with expand, grouped into trees."""
    from trytond.modules.health_orthanc import orthanc
    client = orthanc.OrthancClient(context['url'], context['user'],
        context['password'])
    result, trees = measure('rest_floor',
        lambda: client.all_trees(REST_PAGE), client)
    with open(context['data_file'], 'w') as stream:
        json.dump([[t.study, t.series, t.instances] for t in trees], stream)
    return {'rest_floor': result}


def worker_rest_series_floor(context):
    """Fewest REST calls for studies and series only (paged, expanded):
    what a sync of a server mirroring instances on demand reads."""
    from trytond.modules.health_orthanc import orthanc
    client = orthanc.OrthancClient(context['url'], context['user'],
        context['password'])
    result, _ = measure('rest_series_floor',
        lambda: client.all_trees(REST_PAGE, instances=False), client)
    return {'rest_series_floor': result}


def worker_on_demand(context):
    """A first incremental sync of a server mirroring instances on demand,
    then one series opened as a client opens it (a read of its
    instances, committed)."""
    db_name, server_id = setup_database(context, 'on_demand')
    client = server_client(db_name, server_id)
    dispatcher()
    first, stats = measure('first_on_demand', lambda: synchronize(
            db_name, server_id, 'incremental'), client)
    first.update(sync_details(stats, db_name, context, on_demand=True))
    series_id = any_series(db_name)
    opened, count = measure('open_series',
        lambda: open_series(db_name, series_id), client)
    opened['instances'] = count
    opened['rows_ok'] = count == context['size'][2]
    return {'first_on_demand': first, 'open_series': opened}


def any_series(db_name):
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(db_name, 0, readonly=True):
        Series = Pool().get('gnuhealth.imaging_orthanc.study_series')
        return Series.search([], limit=1, order=[('id', 'ASC')])[0].id


def open_series(db_name, series_id):
    "Series.read of its instances as a client's read runs; their number."
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(db_name, 0) as transaction:
        Series = Pool().get('gnuhealth.imaging_orthanc.study_series')
        values, = Series.read([series_id], ['instances'])
        transaction.commit()
    return len(values['instances'])


def worker_rest_per_study(context):
    "The same metadata read as the sync reads it: pages + 2 calls/study."
    from trytond.modules.health_orthanc import orthanc
    from trytond.modules.health_orthanc.sync import STUDIES_PAGE
    client = orthanc.OrthancClient(context['url'], context['user'],
        context['password'])

    def read():
        return [client.study_children(study['ID'])
            for page in client.iter_studies(STUDIES_PAGE) for study in page]
    result, _ = measure('rest_per_study', read, client)
    return {'rest_per_study': result}


def load_trees(context):
    from trytond.modules.health_orthanc import orthanc
    with open(context['data_file']) as stream:
        return [orthanc.StudyTree(*t) for t in json.load(stream)]


def worker_orm_floor(context):
    "The same rows as the sync, one batched create per model, no HTTP."
    from trytond.modules.health_orthanc import sync
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    db_name, server_id = setup_database(context)
    trees = load_trees(context)

    def store():
        with Transaction().start(db_name, 0) as transaction:
            pool = Pool()
            Server = pool.get('gnuhealth.orthanc.config')
            Study = pool.get('gnuhealth.imaging_orthanc.study')
            Series = pool.get('gnuhealth.imaging_orthanc.study_series')
            Instance = pool.get('gnuhealth.imaging_orthanc.series_instances')
            server = Server(server_id)
            studies = Study.create([sync.study_values(server, t)
                    for t in trees])
            series_values = []
            for tree, study in zip(trees, studies):
                counts = sync.count_by(tree.instances, 'ParentSeries')
                series_values.extend(sync.series_values(server, study, s,
                        counts.get(s['ID'], 0)) for s in tree.series)
            series = {s.orthanc_UID: s for s in Series.create(series_values)}
            Instance.create([sync.instance_values(server,
                        series[i['ParentSeries']], i)
                    for tree in trees for i in tree.instances])
            transaction.commit()
    result, _ = measure('orm_floor', store)
    result['rows'] = snapshot(db_name)['counts']
    return {'orm_floor': result}


def worker_write_floor(context):
    """The same rows as the sync inserted with plain batched SQL: one
    INSERT per SQL_BATCH rows, parents' ids read back with one SELECT per
    level; no ORM, no checks (the database's own speed)."""
    from types import SimpleNamespace
    from trytond.modules.health_orthanc import sync
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    db_name, server_id = setup_database(context)
    trees = load_trees(context)
    server = SimpleNamespace(id=server_id)

    def store():
        with Transaction().start(db_name, 0) as transaction:
            pool = Pool()
            cursor = transaction.connection.cursor()
            study_ids = sql_insert(cursor,
                pool.get('gnuhealth.imaging_orthanc.study'),
                [sync.study_values(server, t) for t in trees])
            series_rows = []
            for tree in trees:
                study = SimpleNamespace(id=study_ids[tree.study['ID']])
                counts = sync.count_by(tree.instances, 'ParentSeries')
                series_rows.extend(sync.series_values(server, study, s,
                        counts.get(s['ID'], 0)) for s in tree.series)
            series_ids = sql_insert(cursor,
                pool.get('gnuhealth.imaging_orthanc.study_series'),
                series_rows)
            sql_insert(cursor,
                pool.get('gnuhealth.imaging_orthanc.series_instances'),
                [sync.instance_values(server,
                        SimpleNamespace(id=series_ids[i['ParentSeries']]), i)
                    for tree in trees for i in tree.instances])
            transaction.commit()
    result, _ = measure('write_floor', store)
    result['rows'] = snapshot(db_name)['counts']
    return {'write_floor': result}


def sql_insert(cursor, Model, rows):
    "Insert rows in batches; the ids by orthanc_UID (one SELECT)."
    import datetime
    table = Model.__table__()
    names = list(rows[0]) + ['create_uid', 'create_date']
    columns = [getattr(table, n) for n in names]
    now = datetime.datetime.now()
    for start in range(0, len(rows), SQL_BATCH):
        cursor.execute(*table.insert(columns,
                [[r[n] for n in names[:-2]] + [0, now]
                    for r in rows[start:start + SQL_BATCH]]))
    cursor.execute(*table.select(table.orthanc_UID, table.id))
    return dict(cursor)


def sync_twice(context, kind, names):
    """Two syncs of kind measured under names: into a fresh, empty
    database, then again; with the database's snapshot between the two
    and after."""
    db_name, server_id = setup_database(context)
    client = server_client(db_name, server_id)
    dispatcher()

    def run():
        return synchronize(db_name, server_id, kind)
    first, stats = measure(names[0], run, client)
    first.update(sync_details(stats, db_name, context))
    before = snapshot(db_name)
    second, stats = measure(names[1], run, client)
    second.update(sync_details(stats))
    return first, second, before, snapshot(db_name)


def worker_incremental(context):
    first, noop, _, _ = sync_twice(context, 'incremental',
        ['first_incremental', 'noop_incremental'])
    return {'first_incremental': first, 'noop_incremental': noop}


def worker_full(context):
    empty, nochange, before, after = sync_twice(context, 'full',
        ['full_empty', 'full_nochange'])
    nochange['wrote_nothing'] = before == after
    if before != after:
        nochange['snapshot_before'], nochange['snapshot_after'] = (
            before, after)
    return {'full_empty': empty, 'full_nochange': nochange}


def sync_details(stats, db_name=None, context=None, on_demand=False):
    details = {'created': stats.created, 'updated': stats.updated,
        'removed': stats.removed, 'stats_requests': stats.requests}
    if db_name:
        studies, series, instances = context['size']
        counts = snapshot(db_name)['counts']
        expected = {'study': studies, 'series': studies * series,
            'instance': 0 if on_demand else studies * series * instances}
        details['rows'] = counts
        details['rows_ok'] = counts == expected
    return details


def setup_database(context, mirroring='all'):
    "A fresh database with the module (cached) and one Orthanc server."
    from trytond.pool import Pool
    from trytond.tests.test_tryton import DB_NAME
    from trytond.tests.tools import activate_modules
    from trytond.transaction import Transaction
    start = time.perf_counter()
    if context['db'] == 'postgresql' and from_template(DB_NAME):
        Pool.start()
        # The template may hold another version of the module.
        Pool(DB_NAME).init(update=[MODULE])
    else:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # SQLite's schema warnings
            activate_modules(MODULE)
        if context['db'] == 'postgresql':
            save_template(DB_NAME)
    with Transaction().start(DB_NAME, 0) as transaction:
        Server = Pool().get('gnuhealth.orthanc.config')
        server, = Server.create([{'label': 'Benchmark',
                    'domain': context['url'], 'user': context['user'],
                    'password': context['password'],
                    'instance_mirroring': mirroring}])
        server_id = server.id
        transaction.commit()
    log('   database ready in %.1f s' % (time.perf_counter() - start))
    return DB_NAME, server_id


def template_name():
    """PostgreSQL template with GNU Health and the module: a worker updates
    only the module (its schema and data change as it is edited)."""
    return 'bench_tpl_%s' % MODULE


def psql(database, sql):
    "One statement on the machine's PostgreSQL; its output."
    return subprocess.run(['psql', PG_URI.rstrip('/') + '/' + database,
            '-XAtqc', sql], check=True, stdout=subprocess.PIPE,
        text=True).stdout.strip()


def from_template(db_name):
    """Create db_name from the template: seconds, where
    trytond's DB_CACHE restore (pg_restore) fails on this machine and
    each worker would activate the module again (minutes)."""
    template = template_name()
    if not psql('postgres', "SELECT 1 FROM pg_database WHERE datname = "
            "'%s'" % template):
        return False
    psql('postgres', 'DROP DATABASE IF EXISTS "%s"' % db_name)
    psql('postgres', 'CREATE DATABASE "%s" TEMPLATE "%s"' % (
            db_name, template))
    return True


def save_template(db_name):
    from trytond import backend
    backend.Database(db_name).close()
    try:
        psql('postgres', 'CREATE DATABASE "%s" TEMPLATE "%s"' % (
                template_name(), db_name))
    except subprocess.CalledProcessError:
        log('   template not saved (another run saved it meanwhile?)')


def drop_database(context):
    "Drop the worker's PostgreSQL database (SQLite's is in memory)."
    if context['db'] != 'postgresql':
        return
    from trytond import backend
    from trytond.pool import Pool
    from trytond.tests.test_tryton import DB_NAME, db_exist
    from trytond.transaction import Transaction
    if not db_exist(DB_NAME):
        return
    Pool.stop(DB_NAME)
    backend.Database(DB_NAME).close()
    with Transaction().start(None, 0, close=True,
            autocommit=True) as transaction:
        transaction.database.drop(transaction.connection, DB_NAME)


def server_client(db_name, server_id):
    "The cached adapter client that the sync of this server uses."
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(db_name, 0):
        Server = Pool().get('gnuhealth.orthanc.config')
        return Server(server_id).client


def synchronize(db_name, server_id, kind):
    "Server.synchronize as trytond's dispatcher runs it."
    return dispatcher()(db_name, [server_id], kind)


def dispatcher():
    """The dispatcher's stand-in, imported: call it before measuring, as
    the floors import the adapter before measuring (a server process has
    its modules loaded; compiling tests/stack.py is no part of a sync)."""
    from trytond.modules.health_orthanc.tests.stack import synchronize
    return synchronize


def snapshot(db_name):
    "Row count, highest id, create and write dates of the mirror tables."
    from sql import Literal
    from sql.aggregate import Count, Max
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    models = {'study': 'gnuhealth.imaging_orthanc.study',
        'series': 'gnuhealth.imaging_orthanc.study_series',
        'instance': 'gnuhealth.imaging_orthanc.series_instances'}
    result = {'counts': {}, 'marks': {}}
    with Transaction().start(db_name, 0, readonly=True) as transaction:
        cursor = transaction.connection.cursor()
        for name, model in models.items():
            table = Pool().get(model).__table__()
            cursor.execute(*table.select(Count(Literal('*')), Max(table.id),
                    Max(table.create_date), Max(table.write_date)))
            count, *marks = cursor.fetchone()
            result['counts'][name] = count
            result['marks'][name] = [str(m) for m in marks]
    return result


if __name__ == '__main__':
    sys.exit(main())
