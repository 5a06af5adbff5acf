#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the upload wizard against its floor.

Generates --mb megabytes of DICOM (512x512 16-bit CT slices, ~0.5 MB each,
spread over 4 studies), then measures, each in a fresh Python process and
against its own fresh Orthanc:

- floor: the same files POSTed straight to Orthanc's /instances, one
  keep-alive connection, no GNU Health;
- wizard: the files framed as the upload widgets send them (b'MULT' + per
  file an 8-byte length and the bytes) and given to
  UploadImageData.upload_and_sync, the function the wizard's transition
  calls: lock, upload, incremental sync, studies stored (in-process trytond
  on SQLite, a database restored from a cache);
- rpc (--rpc): the same framed value sent by JSON-RPC to a trytond server
  process (as SAO sends it: base64 in JSON), wizard create + execute; the
  peak RSS is the server process's.

Sizes: payload_mb in 10^6 bytes; RSS figures (and payload_mib) in MiB.
Peak RSS is the kernel's VmHWM, reset just before the measured call; the
upload's own memory is the peak minus the RSS before the payload was read
(so it includes holding the payload, as a request does).  Targets: wizard
wall time <= 2x the floor, the upload's own memory <= 3x the payload.

Prints one JSON object on stdout, progress on stderr; exit code 0 even
when a target is missed (it is a measurement).

    python benchmarks/upload.py [--mb 50] [--rpc]     # default: 50 MB
    python benchmarks/upload.py --mb 200 --rpc        # the spec's 200 MB
"""
import argparse
import base64
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

MODULE = 'health_orthanc'
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
DB_CACHE_ROOT = os.environ.get('BENCH_DB_CACHE', '/tmp/dbcache-bench-upload')
WIZARD = 'gnuhealth.imaging_orthanc.upload_image_data'
ROWS = COLUMNS = 512
STUDIES = 4
TARGETS = {'wizard_vs_floor': 2.0, 'upload_memory_vs_payload': 3.0}


def log(*args):
    print('[bench]', *args, file=sys.stderr, flush=True)


# --- Parent -----------------------------------------------------------------

def main():
    args = parse_args()
    if args.worker:
        # The context (with Orthanc's password) comes on stdin, not argv.
        return run_worker(args.worker, json.load(sys.stdin))
    from trytond.modules.health_orthanc.tests.orthanc_server import (
        OrthancServer)
    workdir = tempfile.mkdtemp(prefix='bench-upload-')
    try:
        files, payload = generate(workdir, args.mb)
        report = {
            'payload_mb': round(payload / 1e6, 1),
            'payload_mib': round(payload / 2 ** 20, 1),
            'files': len(files),
            'studies': STUDIES,
            'file_mb': round(payload / len(files) / 1e6, 3),
            'db': 'sqlite',
            }
        context = {'workdir': workdir, 'files': files}
        for scenario in ['floor', 'wizard'] + (['rpc'] if args.rpc else []):
            with OrthancServer(name='bench upload %s' % scenario) as orthanc:
                context.update(url=orthanc.url, user=orthanc.user,
                    password=orthanc.password)
                if scenario == 'rpc':
                    report[scenario] = run_rpc(context)
                else:
                    report[scenario] = spawn_worker(scenario, context)
                report[scenario]['orthanc_instances'] = count_instances(
                    orthanc)
        report['targets'] = targets(report)
        report['all_targets_met'] = all(
            t['ok'] for t in report['targets'].values())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=2))
    print_summary(report)
    return 0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--mb', type=float, default=50,
        help='megabytes of DICOM to upload (default 50; the spec: 200)')
    parser.add_argument('--rpc', action='store_true',
        help='also upload through JSON-RPC to a trytond server process')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser.parse_args()


def generate(workdir, megabytes):
    "DICOM files of ~0.5 MB each; returns their paths and total size."
    from trytond.modules.health_orthanc.tests import dicom_factory as dicom
    pixels = bytes(range(256)) * (ROWS * COLUMNS * 2 // 256)
    one = len(slice_file(dicom, pixels, 'x', 1))
    count = max(STUDIES, round(megabytes * 1e6 / one))
    log('generating %d files of %.2f MB (%d MB)' % (count, one / 1e6,
            count * one / 1e6))
    study_uids = [dicom.uid() for _ in range(STUDIES)]
    series_uids = [dicom.uid() for _ in range(STUDIES)]
    files, total = [], 0
    for index in range(count):
        study = index % STUDIES
        data = slice_file(dicom, pixels, study, index + 1,
            study_uid=study_uids[study], series_uid=series_uids[study])
        path = os.path.join(workdir, 'slice%05d.dcm' % index)
        with open(path, 'wb') as stream:
            stream.write(data)
        files.append(path)
        total += len(data)
    return files, total


def slice_file(dicom, pixels, study, number, **uids):
    return dicom.image(patient_id='BENCH-%s' % study,
        patient_name='BENCH^UPLOAD%s' % study, instance_number=number,
        image_position=(0, 0, number), study_description='UPLOAD BENCH',
        overrides={'Rows': ROWS, 'Columns': COLUMNS, 'PixelData': pixels},
        **uids)


def frame_files(files, path):
    "Write the framed value (b'MULT' + u64 LE length + bytes per file)."
    with open(path, 'wb') as out:
        out.write(b'MULT')
        for name in files:
            with open(name, 'rb') as stream:
                data = stream.read()
            out.write(len(data).to_bytes(8, 'little'))
            out.write(data)
    return path


def spawn_worker(scenario, context):
    "Run one scenario in a fresh interpreter; return its JSON result."
    log('-- %s' % scenario)
    cache = os.path.join(DB_CACHE_ROOT, source_hash())
    env = dict(os.environ, PYTHONWARNINGS='ignore::DeprecationWarning',
        TRYTOND_DATABASE_URI='sqlite://', DB_NAME=':memory:',
        DB_CACHE=cache)
    command = [sys.executable, os.path.realpath(__file__),
        '--worker', scenario]
    process = subprocess.run(command, env=env, stdout=subprocess.PIPE,
        input=json.dumps(context), text=True)
    if process.returncode:
        raise RuntimeError('worker %s failed (exit %d)'
            % (scenario, process.returncode))
    result = json.loads(process.stdout.strip().splitlines()[-1])
    log('   %s' % result)
    return result


def source_hash():
    digest = hashlib.sha1()
    for folder, dirs, files in sorted(os.walk(ROOT)):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.')
            and d not in {'tests', 'benchmarks', 'build', 'web', 'icons',
                'scripts', 'docs'})
        for name in sorted(files):
            if name.endswith(('.py', '.xml', '.cfg')):
                path = os.path.join(folder, name)
                digest.update(path[len(ROOT):].encode())
                with open(path, 'rb') as stream:
                    digest.update(stream.read())
    return digest.hexdigest()[:16]


def count_instances(orthanc):
    import httpx
    return httpx.get(orthanc.url + '/statistics', auth=orthanc.auth,
        timeout=30).json()['CountInstances']


def targets(report):
    floor = report['floor']['seconds']
    wizard = report['wizard']
    result = {
        'wizard_vs_floor': target(wizard['seconds'] / floor,
            TARGETS['wizard_vs_floor']),
        'upload_memory_vs_payload': target(
            wizard['upload_memory_mb'] / report['payload_mib'],
            TARGETS['upload_memory_vs_payload']),
        'all_files_stored': {'value': wizard['stored'],
            'limit': report['files'],
            'ok': (wizard['stored'] == report['files']
                == wizard['orthanc_instances']
                and wizard['studies_in_gnu_health'] == STUDIES)},
        }
    if 'rpc' in report:
        result['rpc_all_files_stored'] = {
            'value': report['rpc']['orthanc_instances'],
            'limit': report['files'],
            'ok': report['rpc']['orthanc_instances'] == report['files']}
    return result


def target(value, limit):
    return {'value': round(value, 2), 'limit': limit, 'ok': value <= limit}


def print_summary(report):
    lines = ['', 'health_orthanc upload benchmark: %s MB in %d files'
        % (report['payload_mb'], report['files'])]
    for name in ['floor', 'wizard', 'rpc']:
        if name in report:
            values = report[name]
            lines.append('  %-7s %7.2f s  peak RSS %6.0f MB  (upload\'s own '
                '%6.0f MB)' % (name, values['seconds'],
                    values['peak_rss_mb'], values.get('upload_memory_mb', 0)))
    for key, value in report['targets'].items():
        lines.append('  target %-26s %s (%s, limit %s)' % (key,
                'PASS' if value['ok'] else 'MISS', value['value'],
                value['limit']))
    lines.append('ALL TARGETS MET' if report['all_targets_met']
        else 'SOME TARGETS MISSED')
    print('\n'.join(lines), file=sys.stderr)


# --- JSON-RPC through a trytond server ---------------------------------------

def run_rpc(context):
    """The framed value sent as SAO sends it, to a trytond server process
    (a database created with trytond-admin, ~30 s)."""
    import httpx
    from trytond.modules.health_orthanc.tests import stack
    log('-- rpc (creating a database with trytond-admin)')
    workdir = os.path.join(context['workdir'], 'rpc')
    os.makedirs(workdir)
    port = stack.free_port()
    conf = stack.write_trytond_conf(os.path.join(workdir, 'trytond.conf'),
        data_dir=workdir, listen='127.0.0.1:%d' % port)
    password = stack.new_password()
    database = 'bench_upload'
    stack.create_database(conf, workdir, database, password,
        log=os.path.join(workdir, 'admin.log'))
    url = 'http://127.0.0.1:%d/' % port
    trytond = stack.start_trytond(conf, url,
        os.path.join(workdir, 'trytond.log'))
    try:
        with httpx.Client(base_url=url + database + '/',
                timeout=1800) as client:
            rpc = JsonRpc(client)
            user_id, session = rpc('common.db.login',
                'admin', {'password': password}, 'en')
            token = base64.b64encode(
                ('admin:%s:%s' % (user_id, session)).encode()).decode()
            client.headers['Authorization'] = 'Session ' + token
            server_id, = rpc('model.gnuhealth.orthanc.config.create', [{
                        'label': 'Bench', 'domain': context['url'],
                        'user': context['user'],
                        'password': context['password']}], {})
            framed = frame_files(context['files'],
                os.path.join(workdir, 'upload.mult'))
            with open(framed, 'rb') as stream:
                value = stream.read()
            names = '\n'.join(os.path.basename(f) for f in context['files'])
            session_id, _, _ = rpc('wizard.%s.create' % WIZARD, {})
            encoded = base64.b64encode(value).decode()
            del value
            body = json.dumps({'id': 2, 'method':
                    'wizard.%s.execute' % WIZARD, 'params': [session_id, {
                            'start': {
                                'data_to_upload': {'__class__': 'bytes',
                                    'base64': encoded},
                                'file_names': names,
                                'server': server_id}}, 'upload', {}]}
                ).encode()
            del encoded
            log('   JSON-RPC body %.0f MB' % (len(body) / 1e6))
            reset = reset_peak_rss(trytond.pid)
            base = rss_mb('VmRSS', trytond.pid)
            start = time.perf_counter()
            response = client.post('', content=body,
                headers={'Content-Type': 'application/json'})
            seconds = time.perf_counter() - start
            del body
            answer = response.json()
            if answer.get('error'):
                raise RuntimeError('wizard error: %s' % (answer['error'],))
            values = answer['result']['view']['defaults']
            result = {
                'seconds': round(seconds, 3),
                'http_status': response.status_code,
                'stored': values.get('stored'),
                'summary': values.get('summary'),
                'peak_rss_mb': round(rss_mb('VmHWM', trytond.pid), 1),
                'base_rss_mb': round(base, 1),
                }
            result['upload_memory_mb'] = round(
                result['peak_rss_mb'] - base, 1)
            if not reset:
                result['peak_rss_is_process_peak'] = True
    finally:
        stack.stop_process(trytond)
    log('   %s' % result)
    return result


class JsonRpc:
    def __init__(self, client):
        self.client = client
        self.id = 0

    def __call__(self, method, *params):
        self.id += 1
        response = self.client.post('', json={'id': self.id,
                'method': method, 'params': list(params)})
        response.raise_for_status()
        answer = response.json()
        if answer.get('error'):
            raise RuntimeError('%s: %s' % (method, answer['error']))
        return answer['result']


# --- Workers ------------------------------------------------------------------

def run_worker(scenario, context):
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = {'floor': worker_floor, 'wizard': worker_wizard}[scenario](
        context)
    print(json.dumps(result))
    return 0


def reset_peak_rss(pid='self'):
    "Reset VmHWM (Linux >= 4.0); False where the kernel refuses."
    try:
        with open('/proc/%s/clear_refs' % pid, 'w') as stream:
            stream.write('5')
        return True
    except OSError:
        return False


def rss_mb(field, pid='self'):
    with open('/proc/%s/status' % pid) as stream:
        for line in stream:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_floor(context):
    "Each file POSTed to /instances on one keep-alive connection."
    import httpx
    base = rss_mb('VmRSS')
    files = []
    for name in context['files']:
        with open(name, 'rb') as stream:
            files.append(stream.read())
    reset_peak_rss()
    start = time.perf_counter()
    with httpx.Client(auth=(context['user'], context['password']),
            timeout=600) as client:
        for data in files:
            client.post(context['url'] + '/instances',
                content=data).raise_for_status()
    seconds = time.perf_counter() - start
    peak = rss_mb('VmHWM')
    return {'seconds': round(seconds, 3), 'peak_rss_mb': round(peak, 1),
        'upload_memory_mb': round(peak - base, 1)}


def worker_wizard(context):
    "UploadImageData.upload_and_sync on the framed value, as the wizard."
    from trytond.pool import Pool
    from trytond.tests.test_tryton import DB_NAME
    from trytond.tests.tools import activate_modules
    from trytond.transaction import Transaction, TransactionError
    from trytond.modules.health_orthanc import upload

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        activate_modules(MODULE)
    with Transaction().start(DB_NAME, 0) as transaction:
        Server = Pool().get('gnuhealth.orthanc.config')
        server, = Server.create([{'label': 'Bench', 'domain': context['url'],
                    'user': context['user'],
                    'password': context['password']}])
        server_id = server.id
        transaction.commit()
    log('   database ready in %.1f s' % (time.perf_counter() - start))
    framed = frame_files(context['files'],
        os.path.join(context['workdir'], 'upload.mult'))
    names = '\n'.join(os.path.basename(f) for f in context['files'])

    timings = {'send': 0.0}
    send_files = upload.send_files

    def timed_send(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return send_files(*args, **kwargs)
        finally:
            timings['send'] += time.perf_counter() - begin
    upload.send_files = timed_send

    base = rss_mb('VmRSS')  # pool loaded, payload not read yet
    with open(framed, 'rb') as stream:
        data = stream.read()  # what the request hands to the wizard
    reset = reset_peak_rss()
    start = time.perf_counter()
    extras = {}
    while True:  # what trytond's dispatcher does when lock() restarts
        try:
            with Transaction().start(DB_NAME, 0, **extras) as transaction:
                pool = Pool()
                Server = pool.get('gnuhealth.orthanc.config')
                Wizard = pool.get(WIZARD, type='wizard')
                report = Wizard.upload_and_sync(Server(server_id), data,
                    names)
                stored, count = report.stored, len(report.studies)
                transaction.commit()
            break
        except TransactionError as exc:
            exc.fix(extras)
    seconds = time.perf_counter() - start
    peak = rss_mb('VmHWM')
    result = {
        'seconds': round(seconds, 3),
        'send_seconds': round(timings['send'], 3),
        'sync_seconds': round(seconds - timings['send'], 3),
        'stored': stored,
        'studies_in_gnu_health': count,
        'payload_rss_mb': round(len(data) / 2 ** 20, 1),
        'base_rss_mb': round(base, 1),
        'peak_rss_mb': round(peak, 1),
        'upload_memory_mb': round(peak - base, 1),
        }
    if not reset:
        result['peak_rss_is_process_peak'] = True
    return result


if __name__ == '__main__':
    sys.exit(main())
