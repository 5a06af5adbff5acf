#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make demo`: Orthanc + a GNU Health demo database + trytond serving SAO.

* Orthanc (DICOMweb and Web Viewer plugins) on loopback, its storage kept
  in build/demo/orthanc;
* a SQLite database build/demo/health_orthanc_demo.sqlite with
  health_orthanc activated, 3 demo patients whose PUIDs are the PatientIDs
  of their DICOM studies (2 studies each), an imaging request whose order
  code is the AccessionNumber of one study, its result with one image
  attached, the Orthanc server registered and validated, studies synced;
* trytond serving SAO (web/build/sao, from `make sao`) at
  http://localhost:8000 (DEMO_PORT to change it).

What exists is reused: running it again starts the same Orthanc storage
and database, loads nothing twice.  Ctrl-C (SIGINT) or SIGTERM stops
trytond and Orthanc.  `rm -rf build/demo` starts over.
"""
import datetime
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

# When `make demo` began (the Makefile passes it), else this script.
STARTED = float(os.environ.get('DEMO_START') or time.time())

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
DEMO_DIR = os.path.join(ROOT, 'build', 'demo')
os.environ.setdefault('SAO_DIR', os.path.join(ROOT, 'web', 'build', 'sao'))
# trytond fixes its data path (attachments) when it is imported: the
# demo's, so that what this script attaches is where its trytond looks.
os.environ['TRYTOND_DATABASE__PATH'] = DEMO_DIR

from trytond.modules.health_orthanc.tests import dicom_factory as dicom  # noqa: E402,E501
from trytond.modules.health_orthanc.tests import stack  # noqa: E402

ORTHANC_DIR = os.path.join(DEMO_DIR, 'orthanc')
STATE_FILE = os.path.join(DEMO_DIR, 'demo.json')
DATABASE = 'health_orthanc_demo'
PORT = int(os.environ.get('DEMO_PORT', 8000))
ARTIFACTS = os.path.join(ROOT, 'build', 'test-artifacts')
# DEMO_CHECK=1: once ready, check Ana's chart in the browser and go on
# serving; DEMO_CHECK=exit: check, then stop (make demo-check).
CHECK = os.environ.get('DEMO_CHECK')
LOGIN = 'admin'
SERVER_LABEL = 'Demo PACS'

# (PUID = DICOM PatientID, last name, first name, sex, birth date)
PATIENTS = [
    ('DEMO-ANA', 'Lopez', 'Ana', 'f', '19800412'),
    ('DEMO-BEN', 'Okafor', 'Ben', 'm', '19750930'),
    ('DEMO-CHIE', 'Sato', 'Chie', 'f', '19920105'),
    ]
# Per patient: (modality, description, study date, series, instances)
STUDIES = [
    ('CT', 'CT HEAD', '20240105', 2, 4),
    ('MR', 'MR KNEE', '20240312', 1, 5),
    ]


def log(message):
    print('[demo] %s' % message, flush=True)


def demo_uid(*parts):
    "A stable DICOM UID (2.25 + integer of a digest): loads are idempotent."
    digest = hashlib.sha256('/'.join(map(str, parts)).encode()).hexdigest()
    return '2.25.%d' % (int(digest[:30], 16))


def demo_files(accession):
    """The DICOM files of every demo study; Ana's CT carries the imaging
    request's order code as AccessionNumber."""
    for puid, last, first, sex, birth in PATIENTS:
        for number, (modality, description, date, n_series, n_instances) \
                in enumerate(STUDIES, 1):
            study_uid = demo_uid(puid, number)
            acc = (accession if (puid, number) == (PATIENTS[0][0], 1)
                else 'DEMO-%s-%d' % (puid[5:], number))
            for series in range(1, n_series + 1):
                series_uid = demo_uid(puid, number, series)
                for instance in range(1, n_instances + 1):
                    yield dicom.image(
                        sop_uid=demo_uid(puid, number, series, instance),
                        study_uid=study_uid, series_uid=series_uid,
                        patient_id=puid,
                        patient_name='%s^%s' % (last.upper(), first.upper()),
                        birth_date=birth, sex=sex.upper(), modality=modality,
                        study_date=date, study_description=description,
                        accession=acc, series_number=series,
                        series_description='%s SERIES %d' % (modality, series),
                        instance_number=instance,
                        image_position=(0, 0, instance))


def load_studies(orthanc, accession, state):
    "Store the demo studies in Orthanc unless done with this accession."
    import httpx
    auth = orthanc.auth
    with httpx.Client(auth=auth, timeout=60) as client:
        first_uid = demo_uid(PATIENTS[0][0], 1)
        found = client.post(orthanc.url + '/tools/lookup',
            content=first_uid).json()
        if found and state.get('loaded_accession') == accession:
            log('Orthanc already holds the demo studies')
            return False
        for item in found:
            # Stored with another accession (the database was recreated).
            if item.get('Type') == 'Study':
                client.delete(orthanc.url + item['Path'])
        count = 0
        for data in demo_files(accession):
            client.post(orthanc.url + '/instances',
                content=data).raise_for_status()
            count += 1
    state['loaded_accession'] = accession
    stack.write_json(STATE_FILE, state)
    log('loaded %d DICOM instances (%d patients x %d studies) into Orthanc'
        % (count, len(PATIENTS), len(STUDIES)))
    return True


def start_orthanc(state):
    orthanc = stack.OrthancServer(name='health_orthanc demo',
        user=state['orthanc_user'], password=state['orthanc_password'],
        plugins=('dicomweb', 'webviewer'), workdir=ORTHANC_DIR, keep=True)
    port, dicom_port = state.get('orthanc_port'), state.get('dicom_port')
    if (port and dicom_port and stack.port_free(port)
            and stack.port_free(dicom_port)):
        orthanc.port, orthanc.dicom_port = port, dicom_port
    os.makedirs(ORTHANC_DIR, exist_ok=True)
    orthanc.start()
    state['orthanc_port'], state['dicom_port'] = (
        orthanc.port, orthanc.dicom_port)
    stack.write_json(STATE_FILE, state)
    log('Orthanc %s (pid %s), storage %s' % (orthanc.url, orthanc.pid,
            orthanc.storage))
    return orthanc


def create_records():
    "Patients, imaging request and result; returns the request's code."
    from proteus import Model
    from trytond.modules.health_orthanc.tests import tools
    stack.mark_config_wizards_done()
    patients = []
    for puid, last, first, sex, birth in PATIENTS:
        patients.append(tools.create_patient(puid, last, first, gender=sex,
                birth_date=datetime.datetime.strptime(birth, '%Y%m%d').date()))
    User = Model.get('res.user')
    admin, = User.find([('login', '=', LOGIN)])
    doctor = tools.create_health_professional('Gregory', 'House', user=admin)
    test = tools.create_imaging_test('CTHEAD', 'CT head')
    request = tools.create_request(patients[0], test, doctor)
    tools.create_result(request)
    request.reload()
    return request.request


def request_code():
    from proteus import Model
    Request = Model.get('gnuhealth.imaging.test.request')
    requests = Request.find([], order=[('id', 'ASC')], limit=1)
    return requests[0].request if requests else None


def attach_image():
    """Attach one image of the request's study to its result (once)."""
    from proteus import Model
    Result = Model.get('gnuhealth.imaging.test.result')
    Study = Model.get('gnuhealth.imaging_orthanc.study')
    Instance = Model.get('gnuhealth.imaging_orthanc.series_instances')
    Attachment = Model.get('ir.attachment')
    results = Result.find([], order=[('id', 'ASC')], limit=1)
    if not results:
        return
    result, = results
    if Attachment.find([('resource', '=', str(result))]):
        return
    studies = Study.find([('imaging_test', '=', result.id)])
    if not studies:
        log('no study linked to the imaging result: nothing attached')
        return
    instances = Instance.find([('series.study', '=', studies[0].id)],
        order=[('series', 'ASC'), ('instance_number', 'ASC')], limit=1)
    instance, = instances
    # The button users click: the PNG, named and described as they get it.
    instance.click('attach_image_to_imaging_test_report')
    log('attached an image of %s to the imaging result'
        % studies[0].rec_name)


def prepare_database(conf, orthanc, state):
    "Create (once) or reuse the database; register the server and sync."
    from proteus import Model
    fresh = not (state.get('database_ready')
        and stack.database_activated(DEMO_DIR, DATABASE))
    if fresh:
        state['database_ready'] = False
        state.pop('loaded_accession', None)
        stack.write_json(STATE_FILE, state)
        log('creating the database %s (activating GNU Health and '
            'health_orthanc takes a minute)...' % DATABASE)
        stack.create_database(conf, DEMO_DIR, DATABASE, state['password'],
            log=os.path.join(DEMO_DIR, 'trytond-admin.log'))
        stack.proteus_connect(conf, DATABASE)
        accession = create_records()
    else:
        log('reusing the database %s' % DATABASE)
        stack.proteus_connect(conf, DATABASE)
        accession = request_code()
    loaded = load_studies(orthanc, accession, state)
    server = stack.register_server(orthanc, SERVER_LABEL)
    # Full: the storage may have been reloaded behind the sync cursor.
    server.click('full_sync' if (fresh or loaded) else 'sync_changes')
    Study = Model.get('gnuhealth.imaging_orthanc.study')
    log('%d studies in GNU Health, %d linked to a patient' % (
            len(Study.find([])), len(Study.find([('patient', '!=', None)]))))
    attach_image()
    state['database_ready'] = True
    stack.write_json(STATE_FILE, state)


def browser_check(url, password):
    "tests/browser/demo.mjs on the running demo: its exit code."
    node = os.environ.get('NODE') or shutil.which('node')
    if not node:
        log('node is missing: no browser check (make browser-deps)')
        return 1
    os.makedirs(ARTIFACTS, exist_ok=True)
    env = dict(os.environ, DEMO_URL=url, DEMO_DB=DATABASE, DEMO_LOGIN=LOGIN,
        DEMO_PASSWORD=password, DEMO_PATIENT=PATIENTS[0][1],
        ARTIFACTS=ARTIFACTS, SAO_DIR=stack.SAO_DIR)
    code = subprocess.call([node, os.path.join(ROOT, 'tests', 'browser',
                'demo.mjs')], env=env, stdin=subprocess.DEVNULL)
    log('browser check of %s\'s chart: %s (screenshots in %s)' % (
            PATIENTS[0][2], 'passed' if code == 0 else 'FAILED', ARTIFACTS))
    return code


def main():
    os.makedirs(DEMO_DIR, exist_ok=True)
    state = stack.read_json(STATE_FILE, {})
    for key in ('password', 'orthanc_password'):
        state.setdefault(key, stack.new_password())
    state.setdefault('orthanc_user', 'orthanc')
    stack.write_json(STATE_FILE, state)
    if not os.path.exists(os.path.join(stack.SAO_DIR, 'index.html')):
        sys.exit('SAO is not built in %s: run make sao' % stack.SAO_DIR)
    if not stack.port_free(PORT):
        sys.exit('port %d is in use: stop what uses it or set DEMO_PORT'
            % PORT)

    processes = {}
    stopping = []

    def stop(signum=None, frame=None):
        if stopping:
            return
        stopping.append(signum)
        log('stopping...')
        stack.stop_process(processes.get('trytond'))
        if processes.get('orthanc') is not None:
            processes['orthanc'].stop(keep=True)
        if signum is not None:
            log('stopped')
            sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        orthanc = processes['orthanc'] = start_orthanc(state)
        conf = stack.write_trytond_conf(
            os.path.join(DEMO_DIR, 'trytond.conf'), data_dir=DEMO_DIR,
            listen='127.0.0.1:%d' % PORT)
        prepare_database(conf, orthanc, state)
        url = 'http://localhost:%d/' % PORT
        trytond = processes['trytond'] = stack.start_trytond(conf,
            'http://127.0.0.1:%d/' % PORT,
            os.path.join(DEMO_DIR, 'trytond.log'))
        print('\n'.join([
                    '',
                    'GNU Health with Orthanc is running (trytond pid %s, '
                    'Orthanc pid %s):' % (trytond.pid, orthanc.pid),
                    '  URL:       %s#%s' % (url, DATABASE),
                    '  database:  %s' % DATABASE,
                    '  login:     %s' % LOGIN,
                    '  password:  %s' % state['password'],
                    '  Orthanc:   %s/app/explorer.html (user %s, password %s)'
                    % (orthanc.url, orthanc.user, orthanc.password),
                    '  patients:  %s' % ', '.join(p[0] for p in PATIENTS),
                    '  logs:      %s' % os.path.join(DEMO_DIR, 'trytond.log'),
                    'Press Ctrl-C to stop (or kill -TERM %d).' % os.getpid(),
                    'Time to first login: %.0f s' % (time.time() - STARTED),
                    '']), flush=True)
        if CHECK:
            code = browser_check(url, state['password'])
            if CHECK == 'exit':
                return code
        while True:
            if trytond.poll() is not None:
                raise RuntimeError('trytond exited with %s%s' % (
                        trytond.returncode, stack.tail(
                            os.path.join(DEMO_DIR, 'trytond.log'))))
            if not orthanc.running:
                raise RuntimeError('Orthanc exited%s' % stack.tail(
                        orthanc.log_path))
            time.sleep(1)
    except SystemExit:
        raise
    except BaseException as exc:
        stop()
        if isinstance(exc, KeyboardInterrupt):
            return 0
        log('failed: %s' % exc)
        return 1
    finally:
        stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
