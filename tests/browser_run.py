#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Browser test of the upload wizard through SAO, end to end.

Starts its own Orthanc, creates a throw-away SQLite GNU Health database
with health_orthanc activated, registers the server, starts trytond
serving SAO (web/build/sao, from `make sao`), then drives Debian's
chromium with tests/browser/upload.mjs: upload 3 DICOM files and a text
file, check the result (3 stored, 1 rejected and named, the study
listed), open the new study and its Orthanc Explorer link.  Everything
it started is stopped by PID, whatever happens.

Exit code 0 when the test passed.  The screenshots are saved in
build/test-artifacts/ (browser-upload*.png), with the logs on failure.

Environment: KEEP=1 keeps the temporary folder; NODE (default node),
CHROMIUM (default /usr/bin/chromium), SAO_DIR.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.realpath(__file__))
ROOT = os.path.dirname(HERE)
ARTIFACTS = os.path.join(ROOT, 'build', 'test-artifacts')
DATABASE = 'browser_upload'
STUDY_DESCRIPTION = 'BROWSER UPLOAD'
SERVER_LABEL = 'Browser PACS'


class Skip(Exception):
    "A prerequisite is missing: a clear message, non-zero exit."


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
        raise Skip('; '.join(problems))
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


def setup_database(stack, conf, orthanc):
    "Register the Orthanc server (validated); no first-login wizard."
    stack.proteus_connect(conf, DATABASE)
    stack.mark_config_wizards_done()
    stack.register_server(orthanc, SERVER_LABEL)


def orthanc_instances(orthanc):
    import httpx
    answer = httpx.get(orthanc.url + '/statistics', auth=orthanc.auth,
        timeout=10)
    return answer.json()['CountInstances']


def run(workdir):
    os.environ.setdefault('SAO_DIR',
        os.path.join(ROOT, 'web', 'build', 'sao'))
    from trytond.modules.health_orthanc.tests import stack
    node = check_prerequisites(stack)
    os.makedirs(ARTIFACTS, exist_ok=True)
    screenshot = os.path.join(ARTIFACTS, 'browser-upload.png')
    for name in os.listdir(ARTIFACTS):
        if name.startswith('browser-upload'):
            os.remove(os.path.join(ARTIFACTS, name))
    admin_log = os.path.join(workdir, 'trytond-admin.log')
    trytond_log = os.path.join(workdir, 'trytond.log')
    orthanc = trytond = None
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
        env = dict(os.environ,
            TRYTON_URL=url, TRYTON_DB=DATABASE, TRYTON_LOGIN='admin',
            TRYTON_PASSWORD=password, DICOM_FILES=':'.join(dicom_files),
            TEXT_FILE=text_file, SCREENSHOT=screenshot,
            ORTHANC_SERVER=SERVER_LABEL, VIEWER_FIELD='explorer_link',
            STUDY_TEXT=STUDY_DESCRIPTION, SAO_DIR=stack.SAO_DIR)
        code = subprocess.run(
            [node, os.path.join(HERE, 'browser', 'upload.mjs')],
            env=env, cwd=ROOT, timeout=600).returncode
        if code:
            raise AssertionError('upload.mjs failed (exit %s)' % code)
        count = orthanc_instances(orthanc)
        if count != len(dicom_files):
            raise AssertionError('Orthanc holds %s instances, not %s'
                % (count, len(dicom_files)))
        print('Orthanc holds the %d uploaded instances' % count)
    except BaseException:
        keep_logs(stack, 'browser-upload-', orthanc, admin_log, trytond_log)
        raise
    finally:
        stack.stop_process(trytond)
        if orthanc is not None:
            orthanc.stop()
    print('Screenshot of the result form: %s' % screenshot)


def keep_logs(stack, prefix, orthanc, admin_log, trytond_log):
    "Copy the logs to the artifacts after a failure; show trytond's end."
    for log in (admin_log, trytond_log,
            orthanc.log_path if orthanc and orthanc.workdir else None):
        if log and os.path.exists(log):
            shutil.copy(log, os.path.join(ARTIFACTS,
                    prefix + os.path.basename(log)))
    print(stack.tail(trytond_log, 40), file=sys.stderr)


def main_of(run, label, workdir_prefix):
    "Run run(workdir) in a temporary folder; the exit code of the test."
    keep = os.environ.get('KEEP')
    workdir = tempfile.mkdtemp(prefix=workdir_prefix)
    try:
        run(workdir)
    except Skip as exc:
        print('%s: cannot run: %s' % (label, exc), file=sys.stderr)
        return 2
    except Exception as exc:
        if not isinstance(exc, AssertionError):
            traceback.print_exc()
        print('%s FAILED: %s (artifacts in %s)'
            % (label, exc, ARTIFACTS), file=sys.stderr)
        return 1
    finally:
        if keep:
            print('kept %s' % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print('%s passed' % label)
    return 0


def main():
    return main_of(run, 'browser test', 'health-orthanc-browser-')


if __name__ == '__main__':
    sys.exit(main())
