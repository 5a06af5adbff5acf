#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Browser test of "Open in viewer" without the PACS password, end to end.

Starts an Orthanc running Debian's orthanc-python with the module's
viewer-access script (orthanc_side/viewer_access.py, configured as the
README says) and the Web Viewer plugin, stores a study of 2 series,
creates a throw-away SQLite GNU Health database, registers the server with
the shared secret, synchronises, creates a doctor (login user in the
doctor and imaging groups), starts trytond serving SAO, then drives
Debian's chromium with tests/browser/viewer.mjs: the doctor opens the study
and clicks "Open in Orthanc Web Viewer"; the viewer must draw the series
with no password asked.  Afterwards: the screenshot is not blank and the
opening is in the study's access log.  Everything it started is stopped by
PID, whatever happens.

Exit code 0 when the test passed.  Screenshots in build/test-artifacts/
(browser-viewer*.png), with the logs on failure.
Environment: KEEP=1 keeps the temporary folder; NODE, CHROMIUM, SAO_DIR.
"""
import os
import subprocess
import sys
import time

from browser_run import ARTIFACTS, HERE, ROOT, check_prerequisites

DATABASE = 'browser_viewer'
STUDY_DESCRIPTION = 'BROWSER VIEWER'
SERVER_LABEL = 'Viewer PACS'
DOCTOR = 'doctor'
DOCTOR_GROUPS = [('health', 'group_health_doctor'),
    ('health_imaging', 'group_health_imaging')]
ARTIFACT_PREFIX = 'browser-viewer'


def store_study(orthanc):
    from trytond.modules.health_orthanc.tests import dicom_factory as dicom
    from trytond.modules.health_orthanc.tests.orthanc_server import (
        upload_files)
    upload_files(orthanc, dicom.study(n_series=2, n_instances=3,
            patient_id='BROWSER-V', patient_name='BROWSER^VIEWER',
            study_description=STUDY_DESCRIPTION))


def setup_database(stack, conf, orthanc, secret, doctor_password):
    "Server with the secret, checked and synchronised; the doctor user."
    from proteus import Model
    stack.proteus_connect(conf, DATABASE)
    stack.mark_config_wizards_done()
    server = stack.register_server(orthanc, SERVER_LABEL)
    server.viewer_secret = secret
    server.save()
    server.click('check_connection')
    server.reload()
    if not server.viewer_tokens:
        raise AssertionError('no viewer tokens after the check: %s'
            % server.check_message)
    server.click('full_sync')
    ModelData = Model.get('ir.model.data')
    Group = Model.get('res.group')
    User = Model.get('res.user')
    groups = [Group(ModelData.find([('module', '=', module),
                    ('fs_id', '=', fs_id)])[0].db_id)
        for module, fs_id in DOCTOR_GROUPS]
    user = User(name='Doctor Viewer', login=DOCTOR,
        password=doctor_password)
    user.groups.extend(groups)
    user.save()
    Study = Model.get('gnuhealth.imaging_orthanc.study')
    study, = Study.find([('description', '=', STUDY_DESCRIPTION)])
    return study.id


def openings():
    "(login, viewer, study description) of the access log, newest first."
    from proteus import Model
    ViewerAccess = Model.get('gnuhealth.imaging_orthanc.viewer_access')
    return [(a.user.login, a.viewer, a.study.description)
        for a in ViewerAccess.find([])]


def check_not_blank(path):
    "The screenshot shows an image: many colours, not one flat area."
    from PIL import Image, ImageStat
    with Image.open(path) as image:
        gray = image.convert('L')
        colours = len(image.convert('RGB').getcolors(1 << 24) or [])
        deviation = ImageStat.Stat(gray).stddev[0]
    print('Screenshot %s: %d colours, grey standard deviation %.1f'
        % (path, colours, deviation))
    if colours < 16 or deviation < 5:
        raise AssertionError('the viewer screenshot looks blank')


def run(workdir):
    os.environ.setdefault('SAO_DIR',
        os.path.join(ROOT, 'web', 'build', 'sao'))
    from trytond.modules.health_orthanc.orthanc_side import viewer_token
    from trytond.modules.health_orthanc.tests import stack
    node = check_prerequisites(stack)
    os.makedirs(ARTIFACTS, exist_ok=True)
    screenshot = os.path.join(ARTIFACTS, ARTIFACT_PREFIX + '.png')
    for name in os.listdir(ARTIFACTS):
        if name.startswith(ARTIFACT_PREFIX):
            os.remove(os.path.join(ARTIFACTS, name))
    admin_log = os.path.join(workdir, 'trytond-admin.log')
    trytond_log = os.path.join(workdir, 'trytond.log')
    orthanc = trytond = None
    started = time.monotonic()
    secret = viewer_token.new_secret()
    try:
        orthanc = stack.OrthancServer(name='health_orthanc viewer browser',
            plugins=('dicomweb', 'webviewer'), viewer_secret=secret).start()
        print('Orthanc %s with the viewer-access script (pid %s)'
            % (orthanc.url, orthanc.pid), flush=True)
        store_study(orthanc)
        port = stack.free_port()
        conf = stack.write_trytond_conf(os.path.join(workdir, 'trytond.conf'),
            data_dir=workdir, listen='127.0.0.1:%d' % port)
        password, doctor_password = stack.new_password(), stack.new_password()
        print('Creating database %s (health_orthanc activated)...'
            % DATABASE, flush=True)
        stack.create_database(conf, workdir, DATABASE, password,
            log=admin_log)
        study_id = setup_database(stack, conf, orthanc, secret,
            doctor_password)
        url = 'http://127.0.0.1:%d/' % port
        trytond = stack.start_trytond(conf, url, trytond_log)
        print('trytond %s (pid %s), database ready in %.0f s' % (
                url, trytond.pid, time.monotonic() - started), flush=True)
        env = dict(os.environ, TRYTON_URL=url, TRYTON_DB=DATABASE,
            TRYTON_LOGIN=DOCTOR, TRYTON_PASSWORD=doctor_password,
            ORTHANC_URL=orthanc.url, SCREENSHOT=screenshot,
            STUDY_ID=str(study_id),
            STUDY_TEXT=STUDY_DESCRIPTION, SAO_DIR=stack.SAO_DIR)
        code = subprocess.run(
            [node, os.path.join(HERE, 'browser', 'viewer.mjs')],
            env=env, cwd=ROOT, timeout=600).returncode
        if code:
            raise AssertionError('viewer.mjs failed (exit %s)' % code)
        check_not_blank(screenshot)
        logged = openings()
        print('Access log: %s' % logged)
        if (DOCTOR, 'webviewer', STUDY_DESCRIPTION) not in logged:
            raise AssertionError('the opening is not in the access log')
    except BaseException:
        stack.keep_logs(ARTIFACTS, ARTIFACT_PREFIX + '-',
            [admin_log, trytond_log], orthanc, tail_of=trytond_log)
        raise
    finally:
        stack.stop_servers(orthanc, trytond)
    print('Screenshot of the viewer: %s' % screenshot)


def main():
    from trytond.modules.health_orthanc.tests import stack
    return stack.main('viewer browser', run, ARTIFACTS)


if __name__ == '__main__':
    sys.exit(main())
