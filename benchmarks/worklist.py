#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark of the Modality Worklist (issue 11).

A throw-away database (SQLite in memory, health_orthanc activated, cached
under /tmp/dbcache-bench like benchmarks/sync.py) with two real Orthanc
servers: one runs the module's Orthanc-side script (delivery 'script'),
the other Debian's ModalityWorklists plugin on a folder (delivery
'folder').  Then:

1. 5,000 requested imaging tests (4 modalities over 25 days) become
   pending worklist items, delivered to both servers;
2. a modality's C-FIND (dcmtk findscu -W) filtered by one date and one
   modality, median of 5 runs, on each server (process start of findscu
   included);
3. 1,000 new requested tests: their items made and delivered (the work of
   the queue task), with the 5,000 still pending.

References measured in the same run: the same C-FIND on each server
before any item is there (findscu's start and the association: the floor
of any worklist), and the same 1,000 requests created without their
worklist items (GNU Health's own create: numbering, validation), rolled
back.

Targets: C-FIND answered in under 0.5 s; 1,000 new items delivered in
under 10 s.  Prints progress on stderr and one JSON object on stdout whose
`targets` maps each target to {value, limit, ok}, also written to
benchmarks/results/worklist.json (the README's figures, see
benchmarks/readme.py) with the load average before and after; the exit
code is 0 even when a target is missed (it is a measurement).

    python benchmarks/worklist.py [--pending 5000] [--new 1000]
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
MODULE = 'health_orthanc'
MODALITIES = ('CT', 'MR', 'US', 'CR')
DAYS = 25
FIRST_DAY = datetime.datetime(2031, 3, 1, 8, 0)
RESULTS = os.path.join(ROOT, 'benchmarks', 'results')
FIND_LIMIT = 0.5
DELIVERY_LIMIT = 10.0


def log(text):
    print(text, file=sys.stderr, flush=True)


# The database settings and its cache (keyed by the module's sources) of
# the sync benchmark.
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import sync as sync_benchmark  # noqa: E402

os.environ.update(sync_benchmark.db_environ('sqlite', 'worklist'))

from orthanc_server import OrthancServer  # noqa: E402


def find(orthanc, modality, date):
    "findscu -W filtered by modality and date: (seconds, answers)."
    folder = tempfile.mkdtemp(prefix='bench-findscu-')
    try:
        command = ['findscu', '-W', '-aet', 'BENCH', '-aec', 'ORTHANC',
            '-X', '-od', folder,
            '-k', 'SpecificCharacterSet=ISO_IR 192', '-k', 'PatientName',
            '-k', 'PatientID', '-k', 'AccessionNumber',
            '-k', 'StudyInstanceUID',
            '-k', 'ScheduledProcedureStepSequence[0].Modality=' + modality,
            '-k', 'ScheduledProcedureStepSequence[0]'
            '.ScheduledProcedureStepStartDate=' + date,
            '127.0.0.1', str(orthanc.dicom_port)]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True,
            timeout=120)
        seconds = time.perf_counter() - start
        return seconds, len(os.listdir(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def median_find(orthanc, runs=5):
    date = (FIRST_DAY + datetime.timedelta(days=DAYS // 2)).strftime('%Y%m%d')
    find(orthanc, 'CT', date)  # warm-up (caches of the OS and Orthanc)
    timings = [find(orthanc, 'CT', date) for _ in range(runs)]
    answers = {count for _, count in timings}
    return round(statistics.median(s for s, _ in timings), 3), answers


def setup(script_orthanc, folder_orthanc, folder):
    from trytond.pool import Pool
    from trytond.tests.test_tryton import DB_NAME
    from trytond.tests.tools import activate_modules
    from trytond.transaction import Transaction
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        activate_modules(MODULE)
    with Transaction().start(DB_NAME, 0) as transaction:
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Party = pool.get('party.party')
        Patient = pool.get('gnuhealth.patient')
        Professional = pool.get('gnuhealth.healthprofessional')
        Template = pool.get('product.template')
        Uom = pool.get('product.uom')
        TestType = pool.get('gnuhealth.imaging.test.type')
        Test = pool.get('gnuhealth.imaging.test')
        script, folder_server = Server.create([
                {'label': 'Script', 'domain': script_orthanc.url,
                    'user': script_orthanc.user,
                    'password': script_orthanc.password,
                    'worklist_delivery': 'script',
                    'worklist_default': True},
                {'label': 'Folder', 'domain': folder_orthanc.url,
                    'user': folder_orthanc.user,
                    'password': folder_orthanc.password,
                    'worklist_delivery': 'folder',
                    'worklist_folder': folder}])
        unit, = Uom.search([('name', '=', 'Unit')])
        tests = []
        for code in MODALITIES:
            template, = Template.create([{'name': code + ' test',
                        'type': 'service', 'default_uom': unit.id,
                        'products': [('create', [{}])]}])
            test_type, = TestType.create([{'code': code, 'name': code,
                        'worklist_station_ae': code + '_1'}])
            test, = Test.create([{'code': 'B' + code,
                        'name': code + ' examination',
                        'test_type': test_type.id,
                        'product': template.products[0].id}])
            tests.append(test.id)
        # One at a time: GNU Health numbers parties per create call.
        parties = [Party.create([{'name': 'Zoë %d' % n,
                    'lastname': 'Núñez 李', 'is_person': True,
                    'is_patient': True, 'gender': 'f', 'ref': 'BP%05d' % n,
                    'fed_country': None,
                    'dob': datetime.date(1970, 1, 1)}])[0]
            for n in range(100)]
        # GNU Health may have made the patients of is_patient parties.
        have = {p.party.id for p in Patient.search([
                    ('party', 'in', [p.id for p in parties])])}
        Patient.create([{'party': p.id} for p in parties
                if p.id not in have])
        patients = [p.id for p in Patient.search([
                    ('party', 'in', [p.id for p in parties])])]
        doctor_party, = Party.create([{'name': 'Greg', 'lastname': 'House',
                    'is_person': True, 'is_healthprof': True,
                    'gender': 'm', 'fed_country': None}])
        doctor, = Professional.create([{'party': doctor_party.id}])
        transaction.commit()
    return {'db': DB_NAME, 'script': script.id, 'folder': folder_server.id,
        'tests': tests, 'patients': patients, 'doctor': doctor.id}


def order(context, count, offset, items=True):
    """count requested tests, spread over the modalities and days; the
    seconds to create them with their worklist items (what a doctor's
    requests do before commit).  items=False: without the items, rolled
    back (GNU Health's own part)."""
    from trytond.modules.health_orthanc.worklist import REFRESHING
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(context['db'], 0,
            context={} if items else {REFRESHING: True}) as transaction:
        Request = Pool().get('gnuhealth.imaging.test.request')
        vlist = []
        for n in range(offset, offset + count):
            vlist.append({'patient': context['patients'][
                        n % len(context['patients'])],
                    'requested_test': context['tests'][n % len(MODALITIES)],
                    'doctor': context['doctor'], 'state': 'requested',
                    'date': FIRST_DAY + datetime.timedelta(
                        days=(n // len(MODALITIES)) % DAYS,
                        minutes=n % 600)})
        start = time.perf_counter()
        requests = Request.create(vlist)
        seconds = time.perf_counter() - start
        if items:
            transaction.commit()
        else:
            transaction.rollback()
    return seconds, [r.id for r in requests]


def deliver(context, request_ids):
    "The queue task's work for the items of these requests: seconds."
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(context['db'], 0) as transaction:
        Item = Pool().get('gnuhealth.imaging_orthanc.worklist_item')
        items = Item.search([('request', 'in', request_ids)])
        start = time.perf_counter()
        Item.deliver_queued([i.id for i in items])
        seconds = time.perf_counter() - start
        failed = Item.search_count([('request', 'in', request_ids),
                ('state', '!=', 'delivered')])
        transaction.commit()
    return seconds, len(items), failed


def copy_to_folder(context, request_ids):
    "The same items as .wl files in the folder server's folder: seconds."
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    with Transaction().start(context['db'], 0):
        pool = Pool()
        Item = pool.get('gnuhealth.imaging_orthanc.worklist_item')
        Server = pool.get('gnuhealth.orthanc.config')
        items = Item.search([('request', 'in', request_ids)])
        start = time.perf_counter()
        error = Server(context['folder']).worklist_send(items, [])
        seconds = time.perf_counter() - start
    if error:
        raise RuntimeError(error)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--pending', type=int, default=5000)
    parser.add_argument('--new', type=int, default=1000)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix='bench-worklists-')
    load_before = os.getloadavg()
    script_orthanc = OrthancServer(viewer_secret='b' * 24, dicom=True,
        extra_config={'DefaultEncoding': 'Utf8'}).start()
    folder_orthanc = OrthancServer(worklists_folder=folder,
        extra_config={'DefaultEncoding': 'Utf8'}).start()
    report = {'pending': args.pending, 'new': args.new}
    try:
        log('database...')
        context = setup(script_orthanc, folder_orthanc, folder)
        log('C-FIND on empty worklists (reference)...')
        report['find_empty_s'] = {'script': median_find(script_orthanc)[0],
            'folder': median_find(folder_orthanc)[0]}
        log('%d pending requests...' % args.pending)
        seconds, pending = order(context, args.pending, 0)
        report['pending_items_made_s'] = round(seconds, 2)
        seconds, count, failed = deliver(context, pending)
        report['pending_delivered_script_s'] = round(seconds, 2)
        report['pending_failed'] = failed
        report['pending_written_folder_s'] = round(
            copy_to_folder(context, pending), 2)
        log('C-FIND...')
        script_find, script_answers = median_find(script_orthanc)
        folder_find, folder_answers = median_find(folder_orthanc)
        report['find_answers'] = {'script': sorted(script_answers),
            'folder': sorted(folder_answers)}
        report['find_s'] = {'script': script_find, 'folder': folder_find}
        log('%d new requests...' % args.new)
        report['new_requests_without_items_s'] = round(order(context,
                args.new, args.pending, items=False)[0], 2)
        made, new = order(context, args.new, args.pending)
        sent, count, failed = deliver(context, new)
        report.update({'new_items_made_s': round(made, 2),
                'new_items_sent_s': round(sent, 2), 'new_failed': failed})
        delivery = round(made + sent, 2)
        report['targets'] = {
            'cfind_script_s': {'value': script_find, 'limit': FIND_LIMIT,
                'ok': script_find < FIND_LIMIT},
            'cfind_folder_s': {'value': folder_find, 'limit': FIND_LIMIT,
                'ok': folder_find < FIND_LIMIT},
            'deliver_%d_new_s' % args.new: {'value': delivery,
                'limit': DELIVERY_LIMIT,
                'ok': delivery < DELIVERY_LIMIT and not failed},
            }
        report['all_targets_met'] = all(t['ok']
            for t in report['targets'].values())
    finally:
        script_orthanc.stop()
        folder_orthanc.stop()
        shutil.rmtree(folder, ignore_errors=True)
    report['load_average'] = {'before': load_before,
        'after': os.getloadavg()}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, 'worklist.json'), 'w') as stream:
        json.dump(report, stream, indent=2)
        stream.write('\n')
    for name, target in report['targets'].items():
        log('%-22s %s (%s, limit %s)' % (name,
                'PASS' if target['ok'] else 'MISS', target['value'],
                target['limit']))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
