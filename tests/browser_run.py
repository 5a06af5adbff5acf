#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Browser tests through SAO, end to end, on one trytond and one database.

Starts its own Orthanc, creates a throw-away SQLite GNU Health database
with health_orthanc activated, registers the server, starts trytond
serving SAO (web/build/sao, from `make sao`), then drives Debian's
chromium:

* tests/browser/upload.mjs: upload 3 DICOM files and a text file, check
  the result (3 stored, 1 rejected and named, the study listed), open the
  new study and its Orthanc Explorer link;
* tests/browser/walk.mjs: every menu entry, list, form, wizard and button
  of the module as an imaging administrator, a radiographer and a doctor
  (present for the roles that may use them, absent for the others), on
  data made here: a patient with a request, its result and a study, a
  study of an unknown patient whose DICOM data disagree with her, a study
  to delete.  A traceback in the trytond log fails it too.

Everything it started is stopped by PID, whatever happens.  Exit code 0
when both passed; the last line says "browser: N passed, N failed".  The
screenshots are saved in build/test-artifacts/ (browser-upload*.png,
walk-<role>-<screen>.png), with the logs on failure.

Environment: KEEP=1 keeps the temporary folder; NODE (default node),
CHROMIUM (default /usr/bin/chromium), SAO_DIR.
"""
import contextlib
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.dirname(HERE)
ARTIFACTS = os.path.join(ROOT, 'build', 'test-artifacts')
DATABASE = 'browser_upload'
STUDY_DESCRIPTION = 'BROWSER UPLOAD'
SERVER_LABEL = 'Browser PACS'
PATIENT_PUID = 'BROWSER-PUID-1'
PATIENT_LASTNAME = 'Outsider'
CD_IMAGES = 6
CANCEL_IMAGES = 6
CANCEL_AT = 3


def check_prerequisites(stack):
    node = os.environ.get('NODE') or shutil.which('node')
    problems = []
    if not node:
        problems.append('node is not installed (make browser-deps)')
    if not os.path.exists(os.path.join(stack.SAO_DIR, 'index.html')):
        problems.append('SAO is not built in %s (make sao)' % stack.SAO_DIR)
    elif not os.path.exists(os.path.join(stack.SAO_DIR, 'custom.js')):
        problems.append('%s/custom.js is missing (make sao)' % stack.SAO_DIR)
    if not os.path.isdir(os.path.join(ROOT, 'web', 'node_modules',
                'playwright-core')):
        problems.append('web/node_modules/playwright-core is missing '
            '(make browser-deps)')
    chromium = os.environ.get('CHROMIUM', '/usr/bin/chromium')
    if not os.access(chromium, os.X_OK):
        problems.append('%s is missing (make browser-deps)' % chromium)
    if not stack.orthanc_server.orthanc_available():
        problems.append('%s is missing (make apt)'
            % stack.orthanc_server.BINARY)
    for name in ('trytond', 'trytond-admin'):
        if not os.access(os.path.join(stack.BIN, name), os.X_OK):
            problems.append('%s is not in %s' % (name, stack.BIN))
    if problems:
        raise stack.Skip('; '.join(problems))
    return node


def write_files(directory):
    "3 DICOM files of one study and 1 text file."
    from trytond.modules.health_orthanc.tests import dicom_factory as dicom
    study = dicom.study(n_series=1, n_instances=3, patient_id='BROWSER-1',
        patient_name='BROWSER^TEST', study_description=STUDY_DESCRIPTION,
        accession='BROWSER-ACC')
    dicom_files = []
    for number, data in enumerate(study, 1):
        path = os.path.join(directory, 'slice%d.dcm' % number)
        with open(path, 'wb') as fp:
            fp.write(data)
        dicom_files.append(path)
    text_file = os.path.join(directory, 'notes.txt')
    with open(text_file, 'w') as fp:
        fp.write('This is not a DICOM file.\n')
    return dicom_files, text_file


def write_folder(directory, files):
    "Write (relative path, bytes) files under directory."
    for name, data in files:
        path = os.path.join(directory, *name.split('/'))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as fp:
            fp.write(data)
    return directory


def write_cd_folders(workdir):
    """A patient CD (DICOMDIR, IMAGES/..., viewer and autorun files) of an
    outside study, and a folder of images to cancel during upload."""
    from trytond.modules.health_orthanc.tests import dicom_factory as dicom
    outside = dicom.study(n_series=2, n_instances=CD_IMAGES // 2,
        patient_id='FOREIGN-77', patient_name='STRANGER^JO',
        study_description='OUTSIDE CD')
    cd = write_folder(os.path.join(workdir, 'cd'), dicom.patient_cd(outside))
    more = dicom.study(n_series=1, n_instances=CANCEL_IMAGES,
        patient_id='FOREIGN-78', study_description='CANCELLED UPLOAD')
    cancel = write_folder(os.path.join(workdir, 'cancel'),
        [('IMG%02d.dcm' % i, data) for i, data in enumerate(more)])
    return cd, cancel


def setup_database(stack, conf, orthanc):
    """Register the Orthanc server (validated) and a patient; no
    first-login wizard."""
    from trytond.modules.health_orthanc.tests import tools
    stack.proteus_connect(conf, DATABASE)
    stack.mark_config_wizards_done()
    stack.register_server(orthanc, SERVER_LABEL)
    tools.create_patient(PATIENT_PUID, PATIENT_LASTNAME, 'Ada', gender='f')


WALK_PATIENT = ('WALK-ANA', 'Lopez', 'Ana', 'f', '19750302')


def walk_study(patient_id, name, sex, birth, description, accession,
        n_series=1):
    from trytond.modules.health_orthanc.tests import dicom_factory as dicom
    return dicom.study(n_series=n_series, n_instances=2,
        patient_id=patient_id, patient_name=name, sex=sex,
        birth_date=birth, study_description=description,
        accession=accession, study_date='20240105')


def new_user(login, groups, password):
    "A user of the given groups ((module, XML id) pairs)."
    from proteus import Model
    User = Model.get('res.user')
    Group = Model.get('res.group')
    ModelData = Model.get('ir.model.data')
    user = User(name=login.title(), login=login, password=password)
    for module, xml_id in groups:
        data, = ModelData.find([('module', '=', module),
                ('fs_id', '=', xml_id)])
        user.groups.append(Group(data.db_id))
    user.save()
    return {'login': login, 'password': password}


def setup_walk(orthanc, admin_password):
    """Users of the three roles and the records walk.mjs works on."""
    import datetime
    import httpx
    from proteus import Model
    from trytond.modules.health_orthanc.tests import stack, tools
    users = {
        'admin': {'login': 'admin', 'password': admin_password},
        'radiographer': new_user('radiographer', [
                ('health_orthanc', 'group_imaging_orthanc'),
                ('health_imaging', 'group_health_imaging')],
            stack.new_password()),
        'doctor': new_user('doctor', [
                ('health', 'group_health_doctor'),
                ('health_imaging', 'group_health_imaging')],
            stack.new_password()),
        }
    puid, last, first, sex, birth = WALK_PATIENT
    patient = tools.create_patient(puid, last, first, gender=sex,
        birth_date=datetime.datetime.strptime(birth, '%Y%m%d').date())
    User = Model.get('res.user')
    admin, = User.find([('login', '=', 'admin')])
    doctor = tools.create_health_professional('Gregory', 'House', user=admin)
    test = tools.create_imaging_test('CTHEAD', 'CT head')
    request = tools.create_request(patient, test, doctor)
    tools.create_result(request)
    request.reload()
    files = [
        *walk_study(puid, '%s^%s' % (last.upper(), first.upper()),
            sex.upper(), birth, 'WALK CT HEAD', request.request, 2),
        *walk_study('WALK-UNKNOWN', 'DOE^JOHN', 'M', '19600101',
            'WALK UNKNOWN', 'WALK-ACC-2'),
        *walk_study('WALK-DEL', 'DELETE^ME', 'O', '', 'WALK DELETE ME',
            'WALK-ACC-3'),
        ]
    with httpx.Client(auth=orthanc.auth, timeout=60) as client:
        for data in files:
            client.post(orthanc.url + '/instances',
                content=data).raise_for_status()
    Server = Model.get('gnuhealth.orthanc.config')
    server, = Server.find([('label', '=', SERVER_LABEL)])
    server.click('sync_changes')
    return {
        'users': users,
        'data': {
            'patient': last,
            'linked_study': 'WALK CT HEAD',
            'unknown_study': 'WALK UNKNOWN',
            'delete_study': 'WALK DELETE ME',
            'server': SERVER_LABEL,
            },
        }


def tracebacks(log):
    "The tracebacks in a trytond log, as text."
    try:
        with open(log, errors='replace') as fp:
            text = fp.read()
    except OSError:
        return ''
    return '\n'.join(part[:3000] for part in
        text.split('Traceback (most recent call last)')[1:])


def run_node(node, script, env):
    return subprocess.run([node, os.path.join(HERE, 'browser', script)],
        env=env, cwd=ROOT, timeout=900).returncode


def cancel_sent(path):
    "The files upload.mjs saw sent before its cancel (CANCEL_AT if none)."
    try:
        with open(path) as stream:
            return int(stream.read())
    except (FileNotFoundError, ValueError):
        return CANCEL_AT


def orthanc_instances(orthanc):
    import httpx
    answer = httpx.get(orthanc.url + '/statistics', auth=orthanc.auth,
        timeout=10)
    return answer.json()['CountInstances']


def reconciliation_failures(orthanc):
    """What is wrong with the CD's images in Orthanc: stored under the
    chosen patient's PUID and name, the CD's PatientID kept in them, nothing
    left under the CD's identity (issue 14)."""
    import io

    import httpx
    from pydicom import dcmread
    failures = []
    with httpx.Client(base_url=orthanc.url, auth=orthanc.auth,
            timeout=30) as client:
        patients = client.get('/patients', params={'expand': 'true'}).json()
        by_id = {p['MainDicomTags']['PatientID']: p for p in patients}
        if 'FOREIGN-77' in by_id:
            failures.append('images left under the CD\'s PatientID')
        patient = by_id.get(PATIENT_PUID)
        if patient is None:
            return failures + ['no image under PUID %s' % PATIENT_PUID]
        instances = client.get('/patients/%s/instances' % patient['ID']
            ).json()
        if len(instances) != CD_IMAGES:
            failures.append('%d images under PUID %s, not %d' % (
                    len(instances), PATIENT_PUID, CD_IMAGES))
        for instance in instances:
            ds = dcmread(io.BytesIO(client.get(
                        '/instances/%s/file' % instance['ID']).content))
            if str(ds.PatientName) != '%s^Ada' % PATIENT_LASTNAME:
                failures.append('PatientName %s' % ds.PatientName)
            if 'FOREIGN-77' not in [i.PatientID
                    for i in ds.get('OtherPatientIDsSequence', [])]:
                failures.append('original PatientID not kept in %s'
                    % instance['ID'])
    return failures


def cd_study_linked(path):
    "True if the CD's study (under the PUID) is linked to the patient."
    import sqlite3
    with contextlib.closing(sqlite3.connect(path)) as connection:
        rows = connection.execute(
            'SELECT p.id FROM gnuhealth_imaging_orthanc_study s '
            'JOIN gnuhealth_patient p ON p.id = s.patient '
            'JOIN party_party y ON y.id = p.party '
            'WHERE s.patient_id = ? AND y.ref = ?',
            (PATIENT_PUID, PATIENT_PUID)).fetchall()
    return len(rows) == 1


def run(workdir, results):
    os.environ.setdefault('SAO_DIR',
        os.path.join(ROOT, 'web', 'build', 'sao'))
    from trytond.modules.health_orthanc.tests import stack
    node = check_prerequisites(stack)
    os.makedirs(ARTIFACTS, exist_ok=True)
    screenshot = os.path.join(ARTIFACTS, 'browser-upload.png')
    for name in os.listdir(ARTIFACTS):
        if name.startswith(('browser-upload', 'walk-')):
            os.remove(os.path.join(ARTIFACTS, name))
    admin_log = os.path.join(workdir, 'trytond-admin.log')
    trytond_log = os.path.join(workdir, 'trytond.log')
    orthanc = trytond = None
    failures = []
    started = time.monotonic()
    try:
        orthanc = stack.OrthancServer(name='health_orthanc browser test',
            plugins=('dicomweb', 'webviewer')).start()
        print('Orthanc %s (pid %s)' % (orthanc.url, orthanc.pid), flush=True)
        port = stack.free_port()
        conf = stack.write_trytond_conf(os.path.join(workdir, 'trytond.conf'),
            data_dir=workdir, listen='127.0.0.1:%d' % port)
        password = stack.new_password()
        print('Creating database %s (health_orthanc activated)...'
            % DATABASE, flush=True)
        stack.create_database(conf, workdir, DATABASE, password,
            log=admin_log)
        setup_database(stack, conf, orthanc)
        url = 'http://127.0.0.1:%d/' % port
        trytond = stack.start_trytond(conf, url, trytond_log)
        print('trytond %s (pid %s), database ready in %.0f s' % (
                url, trytond.pid, time.monotonic() - started), flush=True)
        dicom_files, text_file = write_files(workdir)
        cd_dir, cancel_dir = write_cd_folders(workdir)
        cancel_sent_file = os.path.join(workdir, 'cancel-sent')
        env = dict(os.environ,
            TRYTON_URL=url, TRYTON_DB=DATABASE, TRYTON_LOGIN='admin',
            TRYTON_PASSWORD=password, DICOM_FILES=':'.join(dicom_files),
            TEXT_FILE=text_file, SCREENSHOT=screenshot,
            ORTHANC_SERVER=SERVER_LABEL, VIEWER_FIELD='explorer_link',
            STUDY_TEXT=STUDY_DESCRIPTION, SAO_DIR=stack.SAO_DIR,
            CD_DIR=cd_dir, CD_IMAGES=str(CD_IMAGES), CANCEL_DIR=cancel_dir,
            CANCEL_AT=str(CANCEL_AT), PATIENT=PATIENT_LASTNAME,
            CANCEL_SENT_FILE=cancel_sent_file)
        code = run_node(node, 'upload.mjs', env)
        count = orthanc_instances(orthanc)
        # The first upload, the CD's images, the files sent before the
        # cancel took effect (the one in flight at Stop, maybe the next:
        # upload.mjs checks which and writes the number).
        expected = len(dicom_files) + CD_IMAGES + cancel_sent(
            cancel_sent_file)
        if code:
            failures.append('upload.mjs failed (exit %s)' % code)
        elif count != expected:
            failures.append('Orthanc holds %s instances, not %s'
                % (count, expected))
        elif reconciliation_failures(orthanc):
            failures.extend(reconciliation_failures(orthanc))
        elif not cd_study_linked(stack.sqlite_file(workdir, DATABASE)):
            failures.append('the CD study is not linked to the patient')
        else:
            print('Orthanc holds the %d uploaded instances, the CD\'s '
                'under PUID %s with the original PatientID kept'
                % (count, PATIENT_PUID))
            results['upload'] = True
        walk_config = os.path.join(workdir, 'walk.json')
        stack.write_json(walk_config, dict(setup_walk(orthanc, password),
                url=url, db=DATABASE, artifacts=ARTIFACTS))
        code = run_node(node, 'walk.mjs', dict(env, WALK_CONFIG=walk_config))
        found = tracebacks(trytond_log)
        if code:
            failures.append('walk.mjs failed (exit %s)' % code)
        elif found:
            failures.append('tracebacks in the trytond log:\n' + found)
        else:
            results['walk'] = True
        if failures:
            raise AssertionError('; '.join(failures))
    except BaseException:
        stack.keep_logs(ARTIFACTS, 'browser-upload-', [admin_log, trytond_log],
            orthanc, tail_of=trytond_log)
        raise
    finally:
        stack.stop_servers(orthanc, trytond)
    print('Screenshot of the result form: %s' % screenshot)


def main():
    from trytond.modules.health_orthanc.tests import stack
    results = {'upload': False, 'walk': False}
    try:
        code = stack.main('browser', lambda workdir: run(workdir, results),
            ARTIFACTS)
    finally:
        passed = sum(results.values())
        print('browser: %d passed, %d failed'
            % (passed, len(results) - passed), flush=True)
    return code or (0 if all(results.values()) else 1)


if __name__ == '__main__':
    sys.exit(main())
