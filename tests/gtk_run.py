#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""The GNU Health GTK client (gnuhealth-client 5.0, build/venv-gtk from
`make gtk-deps`) opens every screen of health_orthanc without error.

Starts its own Orthanc, a throw-away SQLite GNU Health database with
health_orthanc (a patient, an imaging result and one uploaded study, so
forms show records), trytond, and Debian's Xvfb; then runs
tests/gtk/walk.py inside the client's Python on that display.  Fails on
any error dialog, warning dialog, uncaught exception or error the client
logs.  Screenshots: build/test-artifacts/gtk-*.png (logs on failure).
Everything it started is stopped by PID.

Exit code 0 when the test passed, 2 when the machine cannot run it.
Environment: KEEP=1 keeps the temporary folder.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(ROOT, 'build')
ARTIFACTS = os.path.join(BUILD, 'test-artifacts')
CLIENT_PYTHON = os.path.join(BUILD, 'venv-gtk', 'bin', 'python')
XVFB = shutil.which('Xvfb') or '/usr/bin/Xvfb'
DATABASE = 'gtk_walk'
SERVER_LABEL = 'GTK PACS'


def check_prerequisites(stack):
    problems = []
    if not os.access(XVFB, os.X_OK):
        problems.append('Xvfb is missing (make gtk-deps)')
    if not os.access(CLIENT_PYTHON, os.X_OK):
        problems.append('%s is missing (make gtk-deps)' % CLIENT_PYTHON)
    if not stack.orthanc_server.orthanc_available():
        problems.append('%s is missing (make apt)'
            % stack.orthanc_server.BINARY)
    if problems:
        raise stack.Skip('; '.join(problems))


def write_dicom(directory, prefix, **kwargs):
    from trytond.modules.health_orthanc.tests import dicom_factory as dicom
    paths = []
    for number, data in enumerate(dicom.study(n_series=1, n_instances=2,
                **kwargs), 1):
        path = os.path.join(directory, '%s%d.dcm' % (prefix, number))
        with open(path, 'wb') as fp:
            fp.write(data)
        paths.append(path)
    return paths


def setup_database(stack, conf, orthanc, workdir):
    """A server, a patient with an imaging result, and a study uploaded
    for that result, so every form has a record to show."""
    from proteus import Model, Wizard
    from trytond.modules.health_orthanc.tests import dicom_factory as dicom
    from trytond.modules.health_orthanc.tests import tools
    stack.proteus_connect(conf, DATABASE)
    stack.mark_config_wizards_done()
    server = stack.register_server(orthanc, SERVER_LABEL)
    patient = tools.create_patient('GTK-1', 'Walker', 'Ana', gender='f')
    # GNU Health requires the requesting user to be a health professional.
    admin, = Model.get('res.user').find([('login', '=', 'admin')])
    doctor = tools.create_health_professional(user=admin)
    request = tools.create_request(patient, tools.create_imaging_test(),
        doctor)
    result = tools.create_result(request)
    files = write_dicom(workdir, 'setup', patient_id='GTK-1',
        patient_name='WALKER^ANA', study_description='GTK SETUP')
    upload = Wizard('gnuhealth.imaging_orthanc.upload_image_data')
    upload.form.data_to_upload = dicom.frame_mult(
        [pathlib.Path(path).read_bytes() for path in files])
    upload.form.server = server
    upload.form.patient = patient
    upload.form.imaging_test = result
    upload.execute('upload')
    upload.execute('end')


def start_xvfb(log):
    "Xvfb on a display it chooses itself (-displayfd); returns (Popen, :N)."
    read, write = os.pipe()
    with open(log, 'ab') as out:
        process = subprocess.Popen([XVFB, '-displayfd', str(write),
                '-screen', '0', '1280x1024x24', '-nolisten', 'tcp'],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            pass_fds=(write,), start_new_session=True)
    os.close(write)
    with os.fdopen(read) as fp:
        number = fp.readline().strip()
    if not number:
        process.wait(5)
        raise RuntimeError('Xvfb did not start (see %s)' % log)
    return process, ':' + number


def run_walk(display, home, url, password, files, result_path, log,
        orthanc):
    env = {key: value for key, value in os.environ.items()
        if not key.startswith(('TRYTOND_', 'DB_', 'VIRTUAL_ENV',
                'PYTHON'))}
    env.update(DISPLAY=display, HOME=home, XDG_CONFIG_HOME=os.path.join(
            home, '.config'), NO_AT_BRIDGE='1', LANG='C.UTF-8',
        GTK_WALK_HOST=url, GTK_WALK_DB=DATABASE, GTK_WALK_LOGIN='admin',
        GTK_WALK_PASSWORD=password, GTK_WALK_SHOTS=ARTIFACTS,
        GTK_WALK_RESULT=result_path, GTK_WALK_FILES=':'.join(files),
        # The add-server wizard is filled with this test's own Orthanc.
        # 'localhost': the setup registered it as 127.0.0.1 already.
        GTK_WALK_ORTHANC=json.dumps({
                'domain': orthanc.url.replace('127.0.0.1', 'localhost'),
                'user': orthanc.user, 'password': orthanc.password}))
    with open(log, 'ab') as out:
        code = subprocess.run(
            [CLIENT_PYTHON, os.path.join(HERE, 'gtk', 'walk.py')],
            env=env, cwd=home, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, timeout=900).returncode
    return code


def client_stderr_problems(log):
    "Tracebacks and GTK criticals the client printed."
    problems = []
    with open(log, errors='replace') as fp:
        for line in fp:
            if ('Traceback' in line or '-CRITICAL' in line
                    or 'GTK WALK ERROR' in line):
                problems.append(line.rstrip())
    return problems


def run(workdir):
    from trytond.modules.health_orthanc.tests import stack
    check_prerequisites(stack)
    os.makedirs(ARTIFACTS, exist_ok=True)
    for name in os.listdir(ARTIFACTS):
        if name.startswith('gtk-'):
            os.remove(os.path.join(ARTIFACTS, name))
    logs = {name: os.path.join(workdir, name + '.log')
        for name in ('trytond-admin', 'trytond', 'xvfb', 'client')}
    result_path = os.path.join(workdir, 'walk.json')
    orthanc = trytond = xvfb = None
    started = time.monotonic()
    try:
        orthanc = stack.OrthancServer(name='health_orthanc gtk test',
            plugins=('dicomweb', 'webviewer')).start()
        conf, port, password = stack.throwaway_database(workdir, DATABASE,
            logs['trytond-admin'])
        setup_database(stack, conf, orthanc, workdir)
        url = 'http://127.0.0.1:%d/' % port
        trytond = stack.start_trytond(conf, url, logs['trytond'])
        xvfb, display = start_xvfb(logs['xvfb'])
        print('trytond %s, Xvfb %s, ready in %.0f s' % (
                url, display, time.monotonic() - started), flush=True)
        home = os.path.join(workdir, 'home')
        os.makedirs(home)
        files = write_dicom(workdir, 'walk', patient_id='GTK-2',
            patient_name='WALKER^BEN', study_description='GTK UPLOAD')
        code = run_walk(display, home, '127.0.0.1:%d' % port, password,
            files, result_path, logs['client'], orthanc)
        result = stack.read_json(result_path)
        if result is None:
            raise AssertionError('the client ended (exit %s) without a '
                'result:\n%s' % (code, stack.tail(logs['client'], 40)))
        check(result, code, client_stderr_problems(logs['client']),
            files, trytond_log=logs['trytond'])
    except BaseException:
        stack.keep_logs(ARTIFACTS, 'gtk-', [*logs.values(), result_path],
            orthanc)
        raise
    finally:
        stack.stop_servers(orthanc, xvfb, trytond)


def url_problems(url_widgets):
    """The study form's Orthanc Explorer link is shown and opened; no url
    widget opens anything but what it shows."""
    problems = []
    explorer = url_widgets.get('view-view_imaging_orthanc_study_form', {}
        ).get('explorer_link', {})
    if not explorer.get('shown', '').startswith('http'):
        problems.append('the study form shows no Orthanc Explorer link: %r'
            % explorer)
    for step, urls in url_widgets.items():
        for field, url in urls.items():
            if url['opened'] != ([url['shown']] if url['shown'] else []):
                problems.append('%s: the %s button opened %r, not %r'
                    % (step, field, url['opened'], url['shown']))
    return problems


def delete_problems(deleted):
    "Delete series / Delete study deleted one record each, list shown."
    problems = []
    for button in ('delete_series', 'delete_study'):
        counts = deleted.get(button)
        if not counts:
            problems.append('%s was not clicked' % button)
        elif not (counts['after'] < counts['before']
                and counts['shown'] in (None, counts['after'])):
            problems.append('%s: %r' % (button, counts))
    return problems


def check(result, code, printed, files, trytond_log):
    steps, errors = result['steps'], result['errors']
    for step in steps:
        print('  %-55s %s' % (step['name'],
                os.path.basename(step.get('screenshot', '-'))))
    with open(trytond_log, errors='replace') as fp:
        server_tracebacks = [line for line in fp if 'Traceback' in line]
    problems = []
    if errors:
        # In full (tracebacks) in gtk-walk.json of the artifacts.
        problems.append('%d error(s) in the client:\n%s' % (len(errors),
                '\n'.join('  %s [%s] %s' % (e['step'], e['kind'],
                        e['text'].strip().splitlines()[-1][:300])
                    for e in errors)))
    if printed:
        problems.append('the client printed:\n' + '\n'.join(printed[:40]))
    if server_tracebacks:
        problems.append('%d traceback(s) in the trytond log'
            % len(server_tracebacks))
    missing = [s['name'] for s in steps if not s.get('screenshot')]
    if missing:
        problems.append('no screenshot of: %s' % ', '.join(missing))
    kinds = {s['name'].split('-')[0] for s in steps}
    expected = {'menu', 'action', 'view', 'upload', 'sync', 'add',
        'delete'}
    if not expected <= kinds:
        problems.append('steps missing: %s' % sorted(expected - kinds))
    upload = result.get('upload') or {}
    problems.extend(url_problems(result.get('url_widgets') or {}))
    stored = upload.get('stored')
    if stored != str(len(files)):
        problems.append('binary_dicom upload stored %r of %d files (%s)'
            % (stored, len(files), upload.get('summary')))
    problems.extend(delete_problems(result.get('deleted') or {}))
    if code:
        problems.append('the client exited with %s' % code)
    if problems:
        raise AssertionError('\n'.join(problems))
    urls = result.get('url_widgets') or {}
    print('%d screens opened, %d url widgets clicked, binary_dicom upload '
        'stored %s files' % (len(steps),
            sum(len(u) for u in urls.values()), stored))


def main():
    from trytond.modules.health_orthanc.tests import stack
    return stack.main('gtk', run, ARTIFACTS)


if __name__ == '__main__':
    sys.exit(main())
