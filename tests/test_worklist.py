# SPDX-License-Identifier: GPL-3.0-or-later
"""Modality Worklist (issue 11): orders to the worklist, images back to the
order, with real Orthanc servers and Debian's dcmtk as the modality.

Two Orthanc servers per class: one runs the module's Orthanc-side script
(delivery 'script': REST route and C-FIND callback), the other Debian's
ModalityWorklists plugin on a folder that GNU Health writes .wl files to
(delivery 'folder').  A doctor orders, findscu -W queries the worklist as a
modality would, storescu sends images built from the answer, the sync
links them.  The same tests run with GNU Health's health_imaging_worklist
activated (its merge_id is the StudyInstanceUID) and without it.
"""
import base64
import datetime
import os
import shutil
import subprocess
import tempfile
import unittest

import pydicom

try:
    from .. import orthanc, worklist_dicom
except ImportError:  # tests/ run as a top-level package from the repo root
    import orthanc
    import worklist_dicom

from . import dicom_factory, rpc, stack
from .orthanc_server import OrthancServer, orthanc_available

REQUEST = 'gnuhealth.imaging.test.request'
ITEM = 'gnuhealth.imaging_orthanc.worklist_item'
SERVER = 'gnuhealth.orthanc.config'
STUDY = 'gnuhealth.imaging_orthanc.study'
RESULT = 'gnuhealth.imaging.test.result'
# Accented and non-Latin names must survive (ISO_IR 192).
FAMILY, GIVEN = 'Ñandú-Müller', 'Zoë 李'
MODALITY_AET = 'MODALITY1'


def dcmtk_available():
    return bool(shutil.which('findscu') and shutil.which('storescu'))


def find_worklist(orthanc, *, modality=None, date=None, timeout=30):
    """findscu -W as a modality: the worklist answers (pydicom datasets)
    for the scheduled modality and date given."""
    keys = ['SpecificCharacterSet=ISO_IR 192', 'PatientName', 'PatientID',
        'PatientBirthDate', 'PatientSex', 'AccessionNumber',
        'StudyInstanceUID', 'RequestedProcedureDescription',
        'RequestedProcedureID', 'RequestingPhysician',
        'ScheduledProcedureStepSequence[0].Modality' + (
            '=' + modality if modality else ''),
        'ScheduledProcedureStepSequence[0].ScheduledStationAETitle',
        'ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate'
        + ('=' + date if date else ''),
        'ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime',
        ]
    folder = tempfile.mkdtemp(prefix='findscu-')
    try:
        command = ['findscu', '-W', '-aet', MODALITY_AET, '-aec', 'ORTHANC',
            '-to', str(timeout), '-X', '-od', folder]
        for key in keys:
            command += ['-k', key]
        command += ['127.0.0.1', str(orthanc.dicom_port)]
        process = subprocess.run(command, capture_output=True, text=True,
            timeout=timeout + 10)
        if process.returncode:
            raise AssertionError('findscu failed: %s' % process.stderr[-2000:])
        return [pydicom.dcmread(os.path.join(folder, name))
            for name in sorted(os.listdir(folder))]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def store_images(orthanc, files):
    "storescu as the modality: C-STORE of DICOM files (bytes) to Orthanc."
    folder = tempfile.mkdtemp(prefix='storescu-')
    try:
        paths = []
        for number, data in enumerate(files, 1):
            path = os.path.join(folder, '%d.dcm' % number)
            with open(path, 'wb') as stream:
                stream.write(data)
            paths.append(path)
        process = subprocess.run(['storescu', '-aet', MODALITY_AET, '-aec',
                'ORTHANC', '127.0.0.1', str(orthanc.dicom_port), *paths],
            capture_output=True, text=True, timeout=60)
        if process.returncode:
            raise AssertionError('storescu failed: %s'
                % process.stderr[-2000:])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def images_from(answer, count=2):
    """Images a modality makes for a worklist answer: its patient and
    StudyInstanceUID, no accession number typed."""
    series_uid = dicom_factory.uid()
    return [dicom_factory.image(patient_id=answer.PatientID,
            patient_name=str(answer.PatientName),
            birth_date=answer.PatientBirthDate, sex=answer.PatientSex,
            study_uid=answer.StudyInstanceUID, series_uid=series_uid,
            modality=answer.ScheduledProcedureStepSequence[0].Modality,
            accession='', study_description='Worklist study',
            instance_number=number,
            overrides={'SpecificCharacterSet': 'ISO_IR 192'})
        for number in range(1, count + 1)]


class WorklistServer(rpc.TrytondServer):
    "A TrytondServer whose database also has extra_modules activated."
    extra_modules = ()

    def _create_database(self, admin_password):
        super()._create_database(admin_password)
        if self.extra_modules:
            subprocess.run([os.path.join(stack.BIN, 'trytond-admin'), '-c',
                    self.conf, '-d', self.database, '-u',
                    *self.extra_modules, '--activate-dependencies'],
                env=stack.clean_env(), check=True, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                timeout=1800)


@unittest.skipUnless(orthanc_available() and dcmtk_available(),
    'Orthanc and dcmtk (findscu, storescu) are needed')
class WorklistMixin:
    extra_modules = ()
    with_worklist_module = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        server = WorklistServer(rpc.ROLES)
        server.extra_modules = cls.extra_modules
        cls.server = server.start()
        cls.addClassCleanup(cls.server.stop)
        cls.sessions = cls.server.sessions
        cls.admin = cls.sessions['admin']
        cls.doctor = cls.sessions['doctor']
        cls.radiographer = cls.sessions['radiographer']
        # delivery 'script': the module's Orthanc-side script.
        cls.script_orthanc = OrthancServer(viewer_secret='w' * 24,
            dicom=True, extra_config={'DefaultEncoding': 'Utf8'}).start()
        cls.addClassCleanup(cls.script_orthanc.stop)
        # delivery 'folder': Debian's ModalityWorklists plugin.
        cls.folder = tempfile.mkdtemp(prefix='worklists-')
        cls.addClassCleanup(shutil.rmtree, cls.folder, True)
        cls.folder_orthanc = OrthancServer(worklists_folder=cls.folder,
            extra_config={'DefaultEncoding': 'Utf8'}).start()
        cls.addClassCleanup(cls.folder_orthanc.stop)
        cls.setup_records()

    @classmethod
    def setup_records(cls):
        imaging_admin = cls.sessions['imaging_admin']
        cls.script_server, = imaging_admin.create(SERVER, {
                'label': 'Worklist script PACS',
                'domain': cls.script_orthanc.url,
                'user': cls.script_orthanc.user,
                'password': cls.script_orthanc.password,
                'worklist_delivery': 'script', 'worklist_default': True})
        cls.folder_server, = imaging_admin.create(SERVER, {
                'label': 'Worklist folder PACS',
                'domain': cls.folder_orthanc.url,
                'user': cls.folder_orthanc.user,
                'password': cls.folder_orthanc.password,
                'worklist_delivery': 'folder',
                'worklist_folder': cls.folder})
        for server in (cls.script_server, cls.folder_server):
            imaging_admin.button(SERVER, 'check_connection', [server])
        admin = cls.admin
        unit, = admin.search('product.uom', [('name', '=', 'Unit')])
        cls.tests = {}
        # CT goes to the default (script) server, MR to the folder one.
        for code, name, server in [('CT', 'CT head', None),
                ('MR', 'MR knee', cls.folder_server)]:
            template, = admin.create('product.template', {
                    'name': name, 'type': 'service', 'default_uom': unit,
                    'products': [('create', [{}])]})
            product, = admin.search('product.product',
                [('template', '=', template)])
            test_type, = admin.create('gnuhealth.imaging.test.type', {
                    'code': code, 'name': code, 'worklist_server': server,
                    'worklist_station_ae': code + '_ROOM1'})
            test, = admin.create('gnuhealth.imaging.test', {
                    'code': 'WL' + code, 'name': name,
                    'test_type': test_type, 'product': product})
            cls.tests[code] = test
        cls.patient, cls.party = cls.make_patient('WLP0001', FAMILY, GIVEN)
        doctor_party, = admin.create_as_client('party.party', {
                'name': 'Grégoire', 'lastname': 'Housé', 'is_person': True,
                'is_healthprof': True, 'is_patient': False, 'gender': 'm'})
        cls.professional = cls.one_of('gnuhealth.healthprofessional',
            doctor_party)

    @classmethod
    def make_patient(cls, puid, family, given):
        party, = cls.admin.create_as_client('party.party', {
                'name': given, 'lastname': family, 'is_person': True,
                'is_patient': True, 'gender': 'f', 'ref': puid,
                'dob': datetime.date(1981, 3, 14)})
        return cls.one_of('gnuhealth.patient', party), party

    @classmethod
    def one_of(cls, model, party):
        ids = cls.admin.search(model, [('party', '=', party)])
        return ids[0] if ids else cls.admin.create(model,
            {'party': party})[0]

    # --- helpers --------------------------------------------------------
    def order(self, code, when=None, patient=None):
        "A doctor orders an imaging test and requests it: the request id."
        when = when or datetime.datetime(2031, 5, 6, 8, 30)
        request, = self.doctor.create(REQUEST, {
                'patient': patient or self.patient,
                'requested_test': self.tests[code],
                'doctor': self.professional, 'date': when})
        self.doctor.button(REQUEST, 'requested', [request])
        return request

    def read_request(self, request, fields):
        record, = self.admin.read(REQUEST, [request], fields)
        return record

    def study_uid_of(self, request):
        fields = ['worklist_uid'] + (
            ['merge_id'] if self.with_worklist_module else [])
        record = self.read_request(request, fields)
        if self.with_worklist_module:
            # health_imaging_worklist's merge_id is the StudyInstanceUID.
            self.assertTrue(record['merge_id'])
            return record['merge_id']
        self.assertTrue(record['worklist_uid'])
        return record['worklist_uid']

    def answers_for(self, orthanc, uid, **query):
        return [a for a in find_worklist(orthanc, **query)
            if a.StudyInstanceUID == uid]

    # --- tests ----------------------------------------------------------
    def test_1_item_in_both_modes_with_every_attribute(self):
        "findscu finds the item of a requested order, in UTF-8, both modes"
        for code, orthanc in [('CT', self.script_orthanc),
                ('MR', self.folder_orthanc)]:
            with self.subTest(mode=code):
                request = self.order(code)
                uid = self.study_uid_of(request)
                values = self.read_request(request,
                    ['request', 'request_line', 'worklist_delivery'])
                self.assertIn('Delivered', values['worklist_delivery'])
                answer, = self.answers_for(orthanc, uid, modality=code,
                    date='20310506')
                self.assertEqual(answer.SpecificCharacterSet, 'ISO_IR 192')
                self.assertEqual(str(answer.PatientName),
                    FAMILY + '^' + GIVEN)
                self.assertEqual(answer.PatientID, 'WLP0001')
                self.assertEqual(answer.PatientBirthDate, '19810314')
                self.assertEqual(answer.PatientSex, 'F')
                self.assertEqual(answer.AccessionNumber, values['request'])
                self.assertEqual(answer.RequestedProcedureID,
                    values['request_line'][:16])
                self.assertEqual(answer.RequestedProcedureDescription,
                    {'CT': 'CT head', 'MR': 'MR knee'}[code])
                self.assertEqual(str(answer.RequestingPhysician),
                    'Housé^Grégoire')
                step = answer.ScheduledProcedureStepSequence[0]
                self.assertEqual(step.Modality, code)
                self.assertEqual(step.ScheduledStationAETitle,
                    code + '_ROOM1')
                self.assertEqual(step.ScheduledProcedureStepStartDate,
                    '20310506')
                self.assertEqual(step.ScheduledProcedureStepStartTime,
                    '083000')
                # Another date or modality: not answered.
                self.assertEqual(self.answers_for(orthanc, uid,
                        modality=code, date='20310507'), [])
                self.assertEqual(self.answers_for(orthanc, uid,
                        modality='US'), [])

    def test_2_corrected_name_reaches_the_pending_item(self):
        "a corrected patient name reaches the pending item"
        patient, party = self.make_patient('WLP0002', 'Smtih', 'Jöhn')
        request = self.order('CT', patient=patient)
        uid = self.study_uid_of(request)
        answer, = self.answers_for(self.script_orthanc, uid)
        self.assertEqual(str(answer.PatientName), 'Smtih^Jöhn')
        self.admin.write('party.party', [party], {'lastname': 'Smith'})
        answer, = self.answers_for(self.script_orthanc, uid)
        self.assertEqual(str(answer.PatientName), 'Smith^Jöhn')
        # The folder mode too.
        request = self.order('MR', patient=patient)
        uid = self.study_uid_of(request)
        self.admin.write('party.party', [party], {'lastname': 'Smyth'})
        answer, = self.answers_for(self.folder_orthanc, uid)
        self.assertEqual(str(answer.PatientName), 'Smyth^Jöhn')

    def cancel(self, request):
        "How a cancelled order is said: deleted (or its worklist status)."
        self.admin.delete(REQUEST, [request])

    def test_3_cancelled_order_loses_its_item(self):
        "a cancelled order's item disappears from the worklist"
        for code, orthanc in [('CT', self.script_orthanc),
                ('MR', self.folder_orthanc)]:
            with self.subTest(mode=code):
                request = self.order(code)
                uid = self.study_uid_of(request)
                self.assertEqual(len(self.answers_for(orthanc, uid)), 1)
                self.cancel(request)
                self.assertEqual(self.answers_for(orthanc, uid), [])
        self.assertFalse([name for name in os.listdir(self.folder)
                if name.startswith('.tmp-')])

    def test_4_images_link_to_request_and_result(self):
        """storescu sends images built from the worklist answer; the sync
        links the study to the request and its result by StudyInstanceUID
        (no accession typed), the request is done, the item is gone"""
        request = self.order('CT', when=datetime.datetime(2031, 7, 1, 10))
        uid = self.study_uid_of(request)
        answer, = self.answers_for(self.script_orthanc, uid,
            modality='CT', date='20310701')
        store_images(self.script_orthanc, images_from(answer))
        self.radiographer.button(SERVER, 'sync_changes',
            [self.script_server])
        study, = self.admin.search_read(STUDY, [
                ('study_instance_UID', '=', uid)],
            ['imaging_request', 'imaging_test', 'patient',
                'accession_number'])
        self.assertFalse(study['accession_number'])
        self.assertEqual(study['imaging_request'], request)
        self.assertEqual(study['patient'], self.patient)
        result, = self.admin.search(RESULT, [('request', '=', request)])
        self.assertEqual(study['imaging_test'], result)
        values = self.read_request(request, ['state', 'worklist_delivery'])
        self.assertEqual(values['state'], 'done')
        self.assertIn('Off the worklist', values['worklist_delivery'])
        if self.with_worklist_module:
            self.assertEqual(self.read_request(request,
                    ['worklist_status'])['worklist_status'], 'done')
        self.assertEqual(self.answers_for(self.script_orthanc, uid), [])

    def test_5_done_request_loses_its_item(self):
        "a request done by GNU Health's Generate results loses its item"
        request = self.order('MR')
        uid = self.study_uid_of(request)
        self.assertEqual(len(self.answers_for(self.folder_orthanc, uid)), 1)
        self.admin.run_wizard('wizard.generate.result', [('open_', {})],
            model=REQUEST, ids=[request])
        self.assertEqual(self.read_request(request, ['state'])['state'],
            'done')
        self.assertEqual(self.answers_for(self.folder_orthanc, uid), [])

    def test_6_orthanc_down_then_retry(self):
        """Orthanc down: the item waits as failed (shown on the request);
        a radiographer delivers it again once Orthanc is back"""
        self.script_orthanc.stop(keep=True)
        try:
            request = self.order('CT')
        finally:
            self.script_orthanc.start()
        uid = self.study_uid_of(request)
        values = self.read_request(request, ['worklist_delivery'])
        self.assertIn('Delivery failed', values['worklist_delivery'])
        self.assertNotIn(self.script_orthanc.password,
            values['worklist_delivery'])
        item, = self.radiographer.search(ITEM, [('request', '=', request)])
        self.assertEqual(self.answers_for(self.script_orthanc, uid), [])
        self.radiographer.button(ITEM, 'deliver_now', [item])
        self.assertEqual(len(self.answers_for(self.script_orthanc, uid)), 1)
        state, = self.radiographer.read(ITEM, [item], ['state'])
        self.assertEqual(state['state'], 'delivered')

    def test_7_roles(self):
        "who may see and deliver items"
        request = self.order('CT')
        item, = self.radiographer.search(ITEM, [('request', '=', request)])
        # Doctors read the state (on the request form too), not deliver.
        self.assertTrue(self.doctor.read(ITEM, [item], ['state']))
        self.assertTrue(self.read_request(request, ['worklist_delivery']))
        self.doctor.failure('model.%s.deliver_now' % ITEM, [item])
        # Nobody sees nothing.
        nobody = self.sessions['nobody']
        nobody.failure('model.%s.read' % ITEM, [item], ['state'])
        # Items are the system's: no one writes, creates or deletes them.
        for role in ('imaging_admin', 'radiographer', 'doctor'):
            session = self.sessions[role]
            session.failure('model.%s.write' % ITEM, [item],
                {'study_uid': '1.2.3'})
            session.failure('model.%s.delete' % ITEM, [item])
        self.sessions['imaging_admin'].button(ITEM, 'deliver_now', [item])
        self.radiographer.button(ITEM, 'deliver_now', [item])

    def test_9_requests_made_together_have_their_own_items(self):
        """requests created and requested in one call each get their own
        StudyInstanceUID and item, delivered together"""
        when = datetime.datetime(2031, 9, 2, 9, 0)
        requests = self.doctor.create(REQUEST, [{
                    'patient': self.patient,
                    'requested_test': self.tests['CT'],
                    'doctor': self.professional,
                    'date': when + datetime.timedelta(minutes=n)}
                for n in range(3)])
        self.doctor.button(REQUEST, 'requested', requests)
        uids = [self.study_uid_of(r) for r in requests]
        self.assertEqual(len(set(uids)), 3)
        found = {a.StudyInstanceUID for a in find_worklist(
                self.script_orthanc, modality='CT', date='20310902')}
        self.assertEqual(found, set(uids))
        items = self.radiographer.search_read(ITEM, [
                ('request', 'in', requests)], ['state', 'attempts'])
        self.assertEqual([(i['state'], i['attempts']) for i in items],
            [('delivered', 1)] * 3)


class WorklistTestCase(WorklistMixin, unittest.TestCase):
    "Worklist without health_imaging_worklist: the module's own UIDs."


class WorklistWithGNUHealthModuleTestCase(WorklistMixin, unittest.TestCase):
    "Worklist with GNU Health's health_imaging_worklist 5.0.4 activated."
    extra_modules = ('health_imaging_worklist',)
    with_worklist_module = True

    def cancel(self, request):
        "health_imaging_worklist says it with worklist_status 'canceled'."
        self.admin.write(REQUEST, [request], {'worklist_status': 'canceled'})

    def test_8_merge_id_is_the_study_uid(self):
        "with health_imaging_worklist, its merge_id is the StudyInstanceUID"
        request = self.order('CT')
        record = self.read_request(request, ['merge_id', 'worklist_status'])
        self.assertEqual(record['worklist_status'], 'todo')
        self.assertEqual(len(self.answers_for(self.script_orthanc,
                    record['merge_id'])), 1)


@unittest.skipUnless(orthanc_available() and dcmtk_available(),
    'Orthanc and dcmtk (findscu) are needed')
class WorklistRouteTestCase(unittest.TestCase):
    """The Orthanc-side script's route on its own: many items put and
    removed in one call, the C-FIND answered from its index by date and
    modality, the index rebuilt from the files after a restart."""
    ROUTE = '/health-orthanc/worklist'

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.orthanc = OrthancServer(viewer_secret='r' * 24, dicom=True,
            extra_config={'DefaultEncoding': 'Utf8'}).start()
        cls.addClassCleanup(cls.orthanc.stop)

    def client(self):
        return orthanc.OrthancClient(self.orthanc.url, self.orthanc.user,
            self.orthanc.password)

    @staticmethod
    def entry(modality, when, uid=None):
        "An item as GNU Health puts it (worklist.WorklistItem)."
        attributes = worklist_dicom.worklist_attributes(
            study_uid=uid or dicom_factory.uid(), accession='RT' + modality,
            procedure_id='RT1', description=modality + ' exam',
            patient_id='RTP1', family='Núñez', given='Zoë 李',
            birth_date=datetime.date(1990, 1, 2), gender='f',
            requesting_physician='', scheduled=when, modality=modality,
            station_ae=modality + '_1')
        data = worklist_dicom.worklist_file(attributes)
        return {'uid': attributes['StudyInstanceUID'],
            'dicom': base64.b64encode(data).decode('ascii'),
            'date': attributes['ScheduledProcedureStepStartDate'],
            'modality': modality}

    def found(self, **query):
        return sorted(a.StudyInstanceUID
            for a in find_worklist(self.orthanc, **query))

    def test_many_items_in_one_call(self):
        """one call puts several items, one removes several; each C-FIND
        answers the items of its date and modality only"""
        day = datetime.datetime(2032, 4, 5, 9, 0)
        ct1, ct2, mr1, ct_next = entries = [self.entry('CT', day),
            self.entry('CT', day + datetime.timedelta(hours=2)),
            self.entry('MR', day),
            self.entry('CT', day + datetime.timedelta(days=1))]
        client = self.client()
        before = client.request_count
        answer = client.update_worklist(self.ROUTE, put=entries)
        self.assertEqual(client.request_count - before, 1)
        self.assertEqual(answer['Put'], 4)
        self.assertTrue(set(e['uid'] for e in entries)
            <= set(client.worklist_uids(self.ROUTE)))
        self.assertEqual(self.found(modality='CT', date='20320405'),
            sorted([ct1['uid'], ct2['uid']]))
        self.assertEqual(self.found(modality='MR', date='20320405'),
            [mr1['uid']])
        # A range of dates, open ranges, no date: the days in it.
        self.assertEqual(self.found(modality='CT',
                date='20320405-20320406'),
            sorted([ct1['uid'], ct2['uid'], ct_next['uid']]))
        self.assertEqual(self.found(modality='CT', date='20320406-'),
            [ct_next['uid']])
        self.assertEqual(self.found(modality='CT', date='-20320405'),
            sorted([ct1['uid'], ct2['uid']]))
        self.assertEqual(self.found(date='20320405'),
            sorted([ct1['uid'], ct2['uid'], mr1['uid']]))
        # Removing several at once (one never put: not counted).
        answer = client.update_worklist(self.ROUTE,
            remove=[ct1['uid'], mr1['uid'], '1.2.3.4.5.6.7'])
        self.assertEqual(answer['Removed'], 2)
        self.assertEqual(self.found(date='20320405'), [ct2['uid']])
        client.update_worklist(self.ROUTE,
            remove=[ct2['uid'], ct_next['uid']])
        self.assertEqual(self.found(modality='CT',
                date='20320405-20320406'), [])

    def test_item_put_again_moves_in_the_index(self):
        """a single item put again with another date or modality answers
        only under its new date and modality"""
        day = datetime.datetime(2032, 6, 7, 10, 0)
        first = self.entry('US', day)
        client = self.client()
        client.update_worklist(self.ROUTE, put=[first])
        self.assertEqual(self.found(modality='US', date='20320607'),
            [first['uid']])
        moved = self.entry('CR', day + datetime.timedelta(days=3),
            uid=first['uid'])
        client.update_worklist(self.ROUTE, put=[moved])
        self.assertEqual(self.found(modality='US', date='20320607'), [])
        self.assertEqual(self.found(modality='CR', date='20320610'),
            [first['uid']])
        client.update_worklist(self.ROUTE, remove=[first['uid']])
        self.assertEqual(self.found(modality='CR', date='20320610'), [])

    def test_index_survives_a_restart(self):
        "after a restart the items are read back from their files"
        day = datetime.datetime(2032, 8, 9, 11, 0)
        entries = [self.entry('DX', day), self.entry('DX', day)]
        client = self.client()
        client.update_worklist(self.ROUTE, put=entries)
        self.orthanc.restart()
        self.assertEqual(self.found(modality='DX', date='20320809'),
            sorted(e['uid'] for e in entries))
        self.client().update_worklist(self.ROUTE,
            remove=[e['uid'] for e in entries])
        self.assertEqual(self.found(modality='DX', date='20320809'), [])

    def test_bad_item_stores_nothing(self):
        "a call with one bad UID is refused whole"
        good = self.entry('XA', datetime.datetime(2032, 9, 1, 8, 0))
        bad = {**self.entry('XA', datetime.datetime(2032, 9, 1, 8, 0)),
            'uid': '../1.2'}
        with self.assertRaises(orthanc.OrthancError):
            self.client().update_worklist(self.ROUTE, put=[good, bad])
        self.assertNotIn(good['uid'], self.client().worklist_uids(
                self.ROUTE))
        self.assertEqual(self.found(modality='XA', date='20320901'), [])
