# SPDX-License-Identifier: GPL-3.0-or-later
"""Security over JSON-RPC, as the clients call trytond (issue 8).

One trytond (tests/rpc.py) with a user per role, a real Orthanc and a
capture HTTP server on loopback standing for an attacker's host.  Each
reproduction of issue 8 is refused; the role table of the README holds for
every button, wizard, model and field; secrets leave no trace.
"""
import datetime
import http.server
import json
import threading
import unittest

from . import dicom_factory as dicom
from . import rpc
from .orthanc_server import OrthancServer, orthanc_available, upload_files

SERVER = 'gnuhealth.orthanc.config'
STUDY = 'gnuhealth.imaging_orthanc.study'
SERIES = 'gnuhealth.imaging_orthanc.study_series'
INSTANCE = 'gnuhealth.imaging_orthanc.series_instances'
RESULT = 'gnuhealth.imaging.test.result'
ADD_SERVER = 'gnuhealth.imaging_orthanc.wizard.orthanc_new_connect'
GET_NEW_STUDIES = 'gnuhealth.imaging_orthanc.get_new_studies'
FULL_SYNC = 'gnuhealth.imaging_orthanc.full_synchronize'
UPLOAD = 'gnuhealth.imaging_orthanc.upload_image_data'
LINK = 'gnuhealth.imaging_orthanc.study.link_patient'
ATTACH = 'gnuhealth.imaging_orthanc.series_instances.attach'

ADMIN, RADIOGRAPHER, DOCTOR, NOBODY = (
    'imaging_admin', 'radiographer', 'doctor', 'nobody')
CLINICAL = {ADMIN, RADIOGRAPHER, DOCTOR}
IMAGING = {ADMIN, RADIOGRAPHER}

# The role table (README, "Security"): who may use each button and wizard.
BUTTONS = {
    (SERVER, 'check_connection'): {ADMIN},
    (SERVER, 'sync_changes'): IMAGING,
    (SERVER, 'full_sync'): {ADMIN},
    (STUDY, 'link_patient'): IMAGING,
    (STUDY, 'unlink_patient'): IMAGING,
    (STUDY, 'delete_study'): {ADMIN},
    (STUDY, 'reconcile_patient'): {ADMIN},
    (SERIES, 'delete_series'): {ADMIN},
    (INSTANCE, 'attach_image_to_imaging_test_report'): CLINICAL,
    }
RECONCILE = 'gnuhealth.imaging_orthanc.study.reconcile'
WIZARDS = {
    ADD_SERVER: {ADMIN},
    GET_NEW_STUDIES: IMAGING,
    FULL_SYNC: {ADMIN},
    UPLOAD: IMAGING,
    LINK: IMAGING,
    ATTACH: CLINICAL,
    RECONCILE: {ADMIN},
    }
# Wizards launched on records rather than from a menu.
WIZARD_MODELS = {LINK: STUDY, ATTACH: INSTANCE, RECONCILE: STUDY}
# Fields people may write; everything else is copied from Orthanc or set by
# GNU Health itself.
PEOPLE_FIELDS = {
    STUDY: {'notes', 'merge_comment'},
    SERIES: {'notes'},
    INSTANCE: set(),
    }
# Server fields imaging administrators set; the others are its status.
SERVER_SETTINGS = {'label', 'domain', 'proxy_domain', 'user', 'password',
    'verify_tls', 'ca_bundle', 'timeout',
    # Viewer links: admin settings (tests/test_viewer_rpc.py: who reads).
    'viewer_secret', 'viewer_token_lifetime',
    # Instance mirroring (issue 15; tests/test_ondemand_rpc.py: who writes).
    'instance_mirroring',
    # Modality Worklist delivery (issue 11): admin settings of the server.
    'worklist_delivery', 'worklist_folder', 'worklist_default'}
# Written by trytond itself on every write.
TRYTON_FIELDS = {'id', 'create_uid', 'create_date', 'write_uid',
    'write_date', 'rec_name'}
# An ir.action.wizard id no action has: the wizard then finds no groups
# for it, the bypass issue 8 used.
FOREIGN_ACTION = 10 ** 7


def is_refusal(error):
    "True if error is a refusal of access (not another failure)."
    return (error.type == 'HTTP 403' or 'not allowed' in error.message
        or 'You cannot change' in error.message
        or 'are created and deleted by' in error.message)


class CaptureServer:
    """An HTTP server on loopback that answers like an Orthanc and records
    every request's path and headers: an attacker's host."""

    def __init__(self):
        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requests.append((self.path, dict(self.headers)))
                body = json.dumps({'Name': 'Attacker', 'Version': '1.10.1',
                        'ApiVersion': 18, 'DicomAet': 'X'}).encode()
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
            Handler)
        self.url = 'http://127.0.0.1:%d' % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
            daemon=True)
        self.thread.start()

    def authorizations(self):
        return [h for _, headers in self.requests for k, h in headers.items()
            if k.lower() == 'authorization']

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class RoleCheckedWizardsTestCase(unittest.TestCase):
    same_on_every_backend = True  # the pool only (tests/conftest.py)

    def test_every_wizard_of_the_module_is_role_checked(self):
        from trytond.pool import Pool
        from .. import roles
        registered = {cls.__name__
            for cls in Pool.classes['wizard'].get('health_orthanc', [])}
        self.assertEqual(registered, set(roles.WIZARDS))
        self.assertEqual(set(WIZARDS), set(roles.WIZARDS))


@unittest.skipUnless(orthanc_available(), "Debian's orthanc is not installed")
class SecurityTestCase(rpc.RPCTestCase):
    "Issue 8 over JSON-RPC, with one user per role"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.capture = CaptureServer()
        cls.addClassCleanup(cls.capture.stop)
        cls.orthanc = OrthancServer(name='health_orthanc security').start()
        cls.addClassCleanup(cls.orthanc.stop)
        cls.admin = cls.sessions['admin']
        cls.puid = 'SEC-PAT-1'
        cls.studies = {}
        for key in ('main', 'delete_study', 'delete_series', 'other'):
            cls.studies[key] = dicom.study(n_series=2, n_instances=1,
                patient_id=cls.puid if key == 'main' else 'SEC-' + key,
                study_description='SEC ' + key, accession='SEC-' + key)
            upload_files(cls.orthanc, cls.studies[key])
        imaging_admin = cls.sessions[ADMIN]
        cls.server_id, = imaging_admin.create(SERVER, {
                'label': 'Secure PACS', 'domain': cls.orthanc.url,
                'user': cls.orthanc.user, 'password': cls.orthanc.password})
        imaging_admin.button(SERVER, 'check_connection', [cls.server_id])
        cls.sessions[RADIOGRAPHER].button(SERVER, 'sync_changes',
            [cls.server_id])
        cls.study_ids = {
            key: cls.study_id('SEC ' + key) for key in cls.studies}
        cls.patient_id, cls.result_id = cls.clinical_records()
        # A radiographer links the main study to the patient and result.
        with cls.sessions[RADIOGRAPHER].wizard(LINK, model=STUDY,
                ids=[cls.study_ids['main']]) as wizard:
            wizard.execute('start')
            start = {'start': {'patient': cls.patient_id,
                    'imaging_test': cls.result_id}}
            answer = wizard.execute('link', start)
            # The DICOM patient (DOE, JOHN, M) is not Ann: confirm.
            if answer.get('view', {}).get('state') == 'confirm':
                wizard.execute('link_anyway', start)

    @classmethod
    def study_id(cls, description):
        study_id, = cls.admin.search(STUDY, [
                ('description', '=', description)])
        return study_id

    @classmethod
    def clinical_records(cls):
        "A patient and an imaging test result (GNU Health's own models)."
        admin = cls.admin
        unit, = admin.search('product.uom', [('name', '=', 'Unit')])
        template, = admin.create('product.template', {
                'name': 'CT head', 'type': 'service', 'default_uom': unit,
                'products': [('create', [{}])]})
        product, = admin.search('product.product',
            [('template', '=', template)])
        test_type, = admin.create('gnuhealth.imaging.test.type',
            {'code': 'CT', 'name': 'CT'})
        test, = admin.create('gnuhealth.imaging.test', {'code': 'SECCT',
                'name': 'CT head', 'test_type': test_type,
                'product': product})
        # One at a time: GNU Health numbers parties per create call.
        party, = admin.create_as_client('party.party', {
                'name': 'Ann', 'lastname': 'Secure', 'is_person': True,
                'is_patient': True, 'gender': 'f', 'ref': cls.puid})
        doctor_party, = admin.create_as_client('party.party', {
                'name': 'Greg', 'lastname': 'House', 'is_person': True,
                'is_healthprof': True, 'is_patient': False, 'gender': 'm'})
        patient = cls.one_of('gnuhealth.patient', party)
        professional = cls.one_of('gnuhealth.healthprofessional',
            doctor_party)
        result, = admin.create(RESULT, {'patient': patient,
                'requested_test': test, 'doctor': professional,
                'date': datetime.datetime.now()})
        return patient, result

    @classmethod
    def one_of(cls, model, party):
        "The record of model for party (GNU Health may have made it)."
        ids = cls.admin.search(model, [('party', '=', party)])
        return ids[0] if ids else cls.admin.create(model,
            {'party': party})[0]

    def read_one(self, model, record_id, fields, session=None):
        record, = (session or self.admin).read(model, [record_id], fields)
        return record

    def instance_of(self, key):
        return self.admin.search(INSTANCE, [
                ('series.study', '=', self.study_ids[key])], 0, 1)[0]

    # --- issue 8, reproduction 1: stealing the stored password -----------

    def test_on_change_with_connects_nowhere(self):
        "on_change_with with another URL: no request, no credentials"
        fields = ['validated', 'public_url', 'link']
        for role in (NOBODY, DOCTOR, RADIOGRAPHER, ADMIN):
            session = self.sessions[role]
            for name in fields:
                try:
                    changes = session.on_change_with(SERVER, {
                            'id': self.server_id,
                            'domain': self.capture.url}, [name])
                except rpc.RPCError:
                    continue
                self.assertNotEqual(changes.get('validated'), True)
        self.assertEqual(self.capture.requests, [])

    def test_credentials_readable_by_imaging_admin_only(self):
        for role in (NOBODY, DOCTOR, RADIOGRAPHER):
            for name in ('user', 'password'):
                error = self.sessions[role].failure(
                    'model.%s.read' % SERVER, [self.server_id], [name])
                self.assertTrue(is_refusal(error), (role, name, error))
        server = self.read_one(SERVER, self.server_id, ['user', 'password'],
            self.sessions[ADMIN])
        self.assertEqual(server['password'], self.orthanc.password)

    # --- reproduction 2: registering and syncing a server ---------------

    def test_add_server_refused_to_non_admins(self):
        "No server registered by a non-admin, even with a foreign action"
        before = self.admin.search(SERVER, [])
        for role in (NOBODY, DOCTOR, RADIOGRAPHER):
            session = self.sessions[role]
            error = session.failure('wizard.%s.create' % ADD_SERVER,
                context={'active_model': 'ir.ui.menu'})
            self.assertTrue(is_refusal(error), (role, error))
            # The bypass: an action_id the wizard has no groups for.
            wizard = session.wizard(ADD_SERVER, action_id=FOREIGN_ACTION)
            with self.assertRaises(rpc.RPCError) as caught:
                wizard.execute('connect', {'start': {
                            'label': 'Fake %s' % role,
                            'domain': self.capture.url,
                            'user': 'u', 'password': 'p'}})
            self.assertTrue(is_refusal(caught.exception), role)
        self.assertEqual(self.admin.search(SERVER, []), before)
        self.assertEqual(self.capture.requests, [])

    def test_sync_refused_to_users_without_imaging_role(self):
        for role in (NOBODY, DOCTOR):
            session = self.sessions[role]
            error = session.failure('model.%s.sync_changes' % SERVER,
                [self.server_id])
            self.assertTrue(is_refusal(error), (role, error))
            for name in (GET_NEW_STUDIES, FULL_SYNC):
                wizard = session.wizard(name, action_id=FOREIGN_ACTION)
                with self.assertRaises(rpc.RPCError) as caught:
                    wizard.execute('sync', {'start': {'servers': []}})
                self.assertTrue(is_refusal(caught.exception), (role, name))

    # --- reproduction 3: rewriting the mirror ---------------------------

    def test_mirror_writes_refused_to_everyone(self):
        "Doctors, radiographers and admins cannot rewrite the mirror"
        main, other = self.study_ids['main'], self.study_ids['other']
        fields = ['orthanc_UID', 'missing_on_orthanc', 'manual_link']
        before = self.admin.read(STUDY, [main, other], fields)
        for role in (DOCTOR, RADIOGRAPHER, ADMIN):
            # The swap of issue 8.
            uids = {r['id']: r['orthanc_UID'] for r in before}
            error = self.sessions[role].failure('model.%s.write' % STUDY,
                [main], {'orthanc_UID': uids[other]},
                [other], {'orthanc_UID': uids[main]})
            self.assertTrue(is_refusal(error), (role, error))
        self.assertEqual(self.admin.read(STUDY, [main, other], fields),
            before)

    def test_role_table_fields(self):
        """Every field of the mirror and of the server: written over RPC
        only if people own it, by the roles that may."""
        main = self.study_ids['main']
        records = {STUDY: main,
            SERIES: self.admin.search(SERIES, [('study', '=', main)])[0],
            INSTANCE: self.instance_of('main'), SERVER: self.server_id}
        for model, record in records.items():
            names = sorted(set(self.admin.model(model, 'fields_get', None))
                - TRYTON_FIELDS)
            if model == SERVER:
                # A new URL or account would clear the validation: label
                # stands for the settings.
                names = sorted(set(names) - (SERVER_SETTINGS - {'label'}))
            values = self.read_one(model, record, names)
            for name in names:
                writers = ({ADMIN} if model == SERVER
                    else CLINICAL if name in PEOPLE_FIELDS[model] else set())
                if model == SERVER and name != 'label':
                    writers = set()
                value = values[name]
                if isinstance(value, list):  # x2many: an empty action list
                    value = []
                for role in (DOCTOR, RADIOGRAPHER, ADMIN, NOBODY):
                    allowed = self.sessions[role].allowed(
                        'model.%s.write' % model, [record], {name: value})
                    self.assertEqual(allowed, role in writers,
                        (model, name, role))

    def test_mirror_records_not_created_nor_deleted_over_rpc(self):
        for role in (DOCTOR, RADIOGRAPHER, ADMIN):
            session = self.sessions[role]
            error = session.failure('model.%s.create' % STUDY, [{
                        'server': self.server_id, 'orthanc_UID': 'fake',
                        'study_instance_UID': '1.2.3.4'}])
            self.assertTrue(is_refusal(error), (role, error))
            for model, record in ((STUDY, self.study_ids['other']),
                    (INSTANCE, self.instance_of('other'))):
                error = session.failure('model.%s.delete' % model, [record])
                self.assertTrue(is_refusal(error), (role, model, error))
                error = session.failure('model.%s.copy' % model, [record],
                    {})
                self.assertTrue(is_refusal(error), (role, model, error))

    def test_notes_writable_by_clinical_roles(self):
        study = self.study_ids['other']
        series = self.admin.search(SERIES, [('study', '=', study)])[0]
        for role in sorted(CLINICAL):
            session = self.sessions[role]
            session.write(STUDY, [study], {'notes': 'by %s' % role,
                    'merge_comment': role})
            session.write(SERIES, [series], {'notes': 'by %s' % role})
            self.assertEqual(self.read_one(STUDY, study, ['notes'])['notes'],
                'by %s' % role)
        error = self.sessions[NOBODY].failure('model.%s.write' % STUDY,
            [study], {'notes': 'x'})
        self.assertTrue(is_refusal(error), error)
        self.admin.write(STUDY, [study], {'notes': None,
                'merge_comment': None})
        self.admin.write(SERIES, [series], {'notes': None})

    # --- the role table --------------------------------------------------

    def test_role_table_models(self):
        "Read, write, create, delete of each model by each role"
        readers = {SERVER: CLINICAL, STUDY: CLINICAL, SERIES: CLINICAL,
            INSTANCE: CLINICAL}
        records = {SERVER: self.server_id, STUDY: self.study_ids['other'],
            SERIES: self.admin.search(SERIES, [
                    ('study', '=', self.study_ids['other'])])[0],
            INSTANCE: self.instance_of('other')}
        for role in rpc.ROLES:
            session = self.sessions[role]
            for model, record in records.items():
                allowed = session.allowed('model.%s.read' % model,
                    [record], ['rec_name'])
                self.assertEqual(allowed, role in readers[model],
                    (role, model))
            label = self.read_one(SERVER, self.server_id, ['label'])['label']
            allowed = session.allowed('model.%s.write' % SERVER,
                [self.server_id], {'label': label})
            self.assertEqual(allowed, role == ADMIN, role)

    def test_role_table_buttons(self):
        "Each button refused to the roles the table does not name"
        records = {
            SERVER: self.server_id,
            STUDY: self.study_ids['other'],
            SERIES: self.admin.search(SERIES, [
                    ('study', '=', self.study_ids['other'])])[0],
            INSTANCE: self.instance_of('main'),
            }
        for (model, button), allowed in BUTTONS.items():
            for role in rpc.ROLES:
                if role in allowed and button.startswith('delete_'):
                    continue  # see test_delete_on_orthanc_by_admin
                try:
                    self.sessions[role].button(model, button,
                        [records[model]])
                except rpc.RPCError as error:
                    refused = is_refusal(error)
                else:
                    refused = False
                self.assertEqual(refused, role not in allowed,
                    (model, button, role))

    def test_role_table_wizards(self):
        "Each wizard refused to the roles the table does not name"
        ids = {STUDY: [self.study_ids['other']],
            INSTANCE: [self.instance_of('main')]}
        for name, allowed in WIZARDS.items():
            model = WIZARD_MODELS.get(name)
            action_id = self.server.action_id(name)
            for role in rpc.ROLES:
                session = self.sessions[role]
                for action in (action_id, FOREIGN_ACTION):
                    wizard = session.wizard(name, model=model,
                        ids=ids.get(model, ()), action_id=action)
                    try:
                        wizard.create()
                        wizard.execute(wizard.start_state)
                    except rpc.RPCError as error:
                        refused = is_refusal(error)
                    else:
                        refused = False
                    finally:
                        wizard.delete()
                    if action == FOREIGN_ACTION and role in allowed:
                        # trytond may refuse it for want of model access.
                        continue
                    self.assertEqual(refused, role not in allowed,
                        (name, role, action))

    def test_delete_on_orthanc_by_admin(self):
        admin = self.sessions[ADMIN]
        study = self.study_ids['delete_study']
        series = admin.search(SERIES, [
                ('study', '=', self.study_ids['delete_series'])])
        admin.button(SERIES, 'delete_series', series[:1])
        admin.button(STUDY, 'delete_study', [study])
        self.assertEqual(self.admin.search(STUDY, [('id', '=', study)]), [])
        self.assertEqual(len(self.admin.search(SERIES, [
                        ('study', '=', self.study_ids['delete_series'])])),
            len(series) - 1)
        # Both clients read the clicked records again after a button: the
        # deleted ones answer empty rows, not "records that don't exist".
        row, = admin.read(STUDY, [study], ['rec_name', 'series',
                'description', 'thumbnail'])
        self.assertEqual((row['id'], row['rec_name'], row['series'],
                row['description']), (study, 'Deleted', [], None))
        row, = admin.read(SERIES, series[:1], ['rec_name'])
        self.assertEqual(row['rec_name'], 'Deleted')
        # A record that never existed is still an error.
        self.assertIn("don't exist", admin.failure(
                'model.%s.read' % STUDY, [study + 10 ** 6], ['rec_name']
                ).message)

    # --- attaching images -------------------------------------------------

    def test_attach_only_to_results_the_user_may_edit(self):
        instance = self.instance_of('main')
        domain = [('resource', '=', '%s,%s' % (RESULT, self.result_id))]
        before = self.admin.search('ir.attachment', domain)
        # The button opens the attach wizard, which attaches.
        for role in (RADIOGRAPHER, DOCTOR):
            self.assertTrue(self.sessions[role].button(INSTANCE,
                    'attach_image_to_imaging_test_report', [instance]))
        # A radiographer has no right on GNU Health's results.
        action_id = self.server.action_id(ATTACH)
        with self.sessions[RADIOGRAPHER].wizard(ATTACH, model=INSTANCE,
                ids=[instance], action_id=action_id) as wizard:
            with self.assertRaises(rpc.RPCError) as caught:
                wizard.execute(wizard.start_state)
        self.assertIn('may not edit', caught.exception.message)
        self.assertEqual(self.admin.search('ir.attachment', domain), before)
        # A doctor may edit results.
        self.sessions[DOCTOR].run_wizard(ATTACH, [('start', None)],
            model=INSTANCE, ids=[instance], action_id=action_id)
        self.assertEqual(len(self.admin.search('ir.attachment', domain)), 1)

    # --- secrets and the model log -----------------------------------------

    def test_add_server_wizard_keeps_no_password(self):
        "The password is used, then neither in the session nor in the log"
        admin = self.sessions[ADMIN]
        password = self.orthanc.password
        wizard = admin.wizard(ADD_SERVER,
            action_id=self.server.action_id(ADD_SERVER))
        try:
            wizard.execute('start')
            # The same Orthanc under another URL (the domain is unique).
            result = wizard.execute('connect', {'start': {
                        'label': 'Added PACS', 'proxy_domain': None,
                        'domain': self.orthanc.url.replace(
                            '127.0.0.1', 'localhost'),
                        'user': self.orthanc.user, 'password': password}})
            status = result['view']['defaults']
            self.assertTrue(status['success'], status['message'])
            data, = self.server.sql('SELECT data FROM ir_session_wizard '
                'WHERE id = %s', [wizard.id])[0]
            self.assertNotIn(password, data)
        finally:
            wizard.delete()
        server_id = status['server']
        self.assertIn(('create', ADMIN), self.log_of(server_id))
        self.assertNoSecretLogged(password)
        self.admin.delete(SERVER, [server_id])

    def test_refused_account_not_in_error_text(self):
        admin = self.sessions[ADMIN]
        wrong = 'Wrong-S3cret-%s' % id(self)
        with admin.wizard(ADD_SERVER,
                action_id=self.server.action_id(ADD_SERVER)) as wizard:
            result = wizard.execute('connect', {'start': {
                        'label': 'Refused PACS', 'proxy_domain': None,
                        'domain': self.orthanc.url.replace(
                            '127.0.0.1', 'localhost'),
                        'user': self.orthanc.user, 'password': wrong}})
        status = result['view']['defaults']
        self.assertFalse(status['success'])
        self.assertIn('401', status['message'])
        self.assertNotIn(wrong, status['message'])
        self.assertNoSecretLogged(wrong)

    def test_server_changes_are_in_the_model_log(self):
        admin = self.sessions[ADMIN]
        secret = 'Log-S3cret-%s' % id(self)
        server_id, = admin.create(SERVER, {'label': 'Logged PACS',
                'domain': self.capture.url, 'user': 'gnuhealth',
                'password': secret})
        admin.write(SERVER, [server_id], {'password': secret + '2',
                'label': 'Logged PACS 2'})
        admin.delete(SERVER, [server_id])
        events = self.log_of(server_id)
        for event in ('create', 'write', 'delete'):
            self.assertIn((event, ADMIN), events)
        self.assertNoSecretLogged(secret)
        self.assertEqual(self.capture.requests, [])

    def log_of(self, server_id):
        "(event, login) of the model log entries of a server."
        rows = self.server.sql('SELECT l.event, u.login FROM ir_model_log l '
            'JOIN res_user u ON u.id = l."user" WHERE l.resource = %s',
            ['%s,%s' % (SERVER, server_id)])
        return {tuple(r) for r in rows}

    def assertNoSecretLogged(self, secret):
        for table, column in (('ir_model_log', 'target'),
                ('ir_session_wizard', 'data')):
            rows = self.server.sql('SELECT %s FROM %s WHERE %s LIKE %%s'
                % (column, table, column), ['%' + secret + '%'])
            self.assertEqual(rows, [], table)
        with open(self.server.log, errors='replace') as log:
            self.assertNotIn(secret, log.read())
