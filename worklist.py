# SPDX-License-Identifier: GPL-3.0-or-later
"""Modality Worklist items from imaging test requests (issue 11).

A request in GNU Health's ``requested`` state has one item on the Orthanc
server chosen for it (its imaging test type's server, else the default
worklist server); a request done, deleted or cancelled, or whose study
arrived, has its item removed; a change to the patient or the request
updates a pending item.  Items are delivered after commit (trytond's
queue: a worker when ``[queue] worker`` is set, else right after the call
that changed them) in one of two ways, chosen per server:

- ``script``: the Orthanc-side script (orthanc_side/worklist.py) keeps the
  items and answers the modalities' C-FIND itself;
- ``folder``: .wl files written into the folder that Debian's
  ModalityWorklists plugin serves (shared with the Orthanc host).

A failed delivery (Orthanc down, folder not writable) leaves the item in
``failed`` with the reason; a cron retries the items not delivered.
"""
import base64
import datetime
import json
import logging
import os
import tempfile

from pydicom.uid import generate_uid

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access

from . import orthanc, roles, worklist_dicom
from .exceptions import describe_error

logger = logging.getLogger(__name__)

# The Orthanc-side script's route (orthanc_side/worklist.py).
WORKLIST_ROUTE = '/health-orthanc/worklist'
DELIVERY_MODES = [
    (None, 'None'),
    ('script', 'Orthanc-side script (REST route and C-FIND callback)'),
    ('folder', 'Worklist files (ModalityWorklists plugin folder)'),
    ]
# Request fields whose change alters the item.
REQUEST_FIELDS = {'state', 'patient', 'requested_test', 'doctor', 'date',
    'request', 'request_line', 'worklist_status', 'merge_id'}
# Party fields that the item carries (name, birth date, sex, PUID).
PARTY_FIELDS = {'name', 'lastname', 'dob', 'gender', 'ref'}
# Context key: the module's own writes to requests do not refresh again.
REFRESHING = '_health_orthanc_worklist'


class WorklistItem(ModelSQL, ModelView):
    "Modality Worklist Item"
    __name__ = 'gnuhealth.imaging_orthanc.worklist_item'
    _rec_name = 'accession'

    request = fields.Many2One('gnuhealth.imaging.test.request',
        'Imaging request', readonly=True, ondelete='SET NULL')
    server = fields.Many2One('gnuhealth.orthanc.config', 'Orthanc server',
        required=True, readonly=True, ondelete='CASCADE')
    study_uid = fields.Char('StudyInstanceUID', required=True,
        readonly=True)
    accession = fields.Char('Accession number', readonly=True)
    patient_id = fields.Char('Patient ID', readonly=True)
    patient_name = fields.Char('Patient name', readonly=True)
    modality = fields.Char('Modality', readonly=True)
    scheduled = fields.DateTime('Scheduled', readonly=True)
    attributes = fields.Text('DICOM attributes', readonly=True)
    wanted = fields.Selection([
            ('present', 'On the worklist'),
            ('absent', 'Off the worklist'),
            ], 'Wanted', readonly=True)
    state = fields.Selection([
            ('waiting', 'Waiting for delivery'),
            ('delivered', 'Delivered'),
            ('failed', 'Delivery failed'),
            ], 'Delivery', readonly=True)
    removal_reason = fields.Char('Removed because', readonly=True)
    error = fields.Text('Last error', readonly=True)
    attempts = fields.Integer('Attempts', readonly=True)
    delivered_at = fields.DateTime('Delivered at', readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        table = cls.__table__()
        cls._sql_constraints += [
            ('server_uid_unique', Unique(table, table.server,
                    table.study_uid),
                'health_orthanc.msg_worklist_uid_unique'),
            ]
        cls._order = [('scheduled', 'DESC'), ('id', 'DESC')]
        cls._buttons.update({
                'deliver_now': {
                    'invisible': roles.imaging_only(),
                    'readonly': Eval('state') == 'delivered',
                    'depends': ['state'],
                    },
                })

    @staticmethod
    def default_wanted():
        return 'present'

    @staticmethod
    def default_state():
        return 'waiting'

    @staticmethod
    def default_attempts():
        return 0

    def get_rec_name(self, name):
        return ' - '.join(filter(None, [self.accession, self.patient_name,
                    self.modality]))

    # --- from requests -------------------------------------------------
    @classmethod
    def refresh_requests(cls, requests):
        """Make the items of requests what the requests ask for and queue
        the delivery of those that changed (one task for them all)."""
        requests = [r for r in requests if r.id is not None and r.id >= 0]
        if not requests:
            return
        with without_check_access():
            changed = cls._refresh(requests)
        cls.queue_delivery(changed)

    @classmethod
    def _refresh(cls, requests):
        Request = Pool().get('gnuhealth.imaging.test.request')
        # What the items are made of: one read for the whole list.
        rows = Request.worklist_rows(requests)
        existing = {}
        for item in cls.search([
                    ('request', 'in', list(rows)),
                    ('wanted', '=', 'present'),
                    ]):
            existing.setdefault(item.request.id, []).append(item)
        servers = cls.servers_for(rows.values())
        Request.generate_worklist_uids([row for row in rows.values()
                if row['id'] in servers
                and not Request.worklist_removal_reason(row)])
        to_create, to_write, changed = [], [], []
        for request_id, row in rows.items():
            server = servers.get(request_id)
            items = existing.pop(request_id, [])
            reason = Request.worklist_removal_reason(row)
            if reason or server is None:
                if items:
                    to_write.extend((items, cls.absent_values(
                                reason or 'no server')))
                    changed.extend(items)
                continue
            values = Request.worklist_item_values(row)
            # Another server or another UID (merge_id edited): the old
            # item leaves its worklist, a new one is put.
            keep = [i for i in items if i.server.id == server
                and i.study_uid == values['study_uid']]
            stale = [i for i in items if i not in keep]
            if stale:
                to_write.extend((stale, cls.absent_values('item replaced')))
                changed.extend(stale)
            if not keep:
                to_create.append({**values, 'server': server,
                        'request': request_id})
            elif keep[0].attributes != values['attributes']:
                to_write.extend((keep, {**values, 'state': 'waiting',
                            'error': None}))
                changed.extend(keep)
        if to_write:
            cls.write(*to_write)
        if to_create:
            changed.extend(cls._create_or_reuse(to_create))
        return changed

    @classmethod
    def _create_or_reuse(cls, vlist):
        """Create the items; an item already removed with the same UID on
        the same server (a request back to requested) is put back."""
        removed = {(i.server.id, i.study_uid): i for i in cls.search([
                    ('study_uid', 'in', [v['study_uid'] for v in vlist]),
                    ('wanted', '=', 'absent'),
                    ])}
        reused, to_write, to_create = [], [], []
        for values in vlist:
            item = removed.get((values['server'], values['study_uid']))
            if item:
                to_write.extend(([item], {**values, 'wanted': 'present',
                            'state': 'waiting', 'removal_reason': None,
                            'error': None}))
                reused.append(item)
            else:
                to_create.append(values)
        if to_write:
            cls.write(*to_write)
        return reused + cls.create(to_create)

    @staticmethod
    def absent_values(reason):
        return {'wanted': 'absent', 'state': 'waiting', 'error': None,
            'removal_reason': reason}

    @classmethod
    def servers_for(cls, rows):
        """The worklist server (id) of each request row (by id): its
        imaging test type's, else the default one; none without delivery
        mode."""
        Server = Pool().get('gnuhealth.orthanc.config')
        defaults = Server.search([
                ('worklist_default', '=', True),
                ('worklist_delivery', '!=', None),
                ], limit=1)
        default = defaults[0].id if defaults else None
        servers = {}
        for row in rows:
            test_type = (row['requested_test.'] or {}).get('test_type.')
            server = test_type and test_type['worklist_server.']
            if not server:
                server_id = default
            elif server['worklist_delivery']:
                server_id = server['id']
            else:
                server_id = None
            if server_id:
                servers[row['id']] = server_id
        return servers

    # --- delivery ------------------------------------------------------
    @classmethod
    def queue_delivery(cls, items):
        "Deliver the items after commit (the worker, or right after)."
        if items:
            with without_check_access():
                cls.__queue__.deliver_queued([i.id for i in items])

    @classmethod
    def deliver_queued(cls, item_ids):
        "What the queue runs (as the user who changed the items)."
        with without_check_access():
            cls.deliver(cls.browse(cls.search([('id', 'in', item_ids)])))

    @classmethod
    @ModelView.button
    def deliver_now(cls, items):
        "Radiographers and administrators: deliver again at once."
        with without_check_access():
            cls.deliver(cls.browse([i.id for i in items]))

    @classmethod
    def cron_retry(cls):
        "Deliver the items not delivered yet (Orthanc was down...)."
        with without_check_access():
            cls.deliver(cls.search([('state', '!=', 'delivered')]))

    @classmethod
    def deliver(cls, items):
        """Deliver items, one call (or one folder pass) per server; each
        server's outcome is written to its items."""
        by_server = {}
        for item in items:
            if item.state != 'delivered':
                by_server.setdefault(item.server, []).append(item)
        to_write = []
        now = datetime.datetime.now()
        for server, server_items in by_server.items():
            error = server.worklist_send(
                [i for i in server_items if i.wanted == 'present'],
                [i for i in server_items if i.wanted == 'absent'])
            if error is None:
                outcome = {'state': 'delivered', 'error': None,
                    'delivered_at': now}
            else:
                outcome = {'state': 'failed', 'error': error}
            # One write per outcome and count of attempts, not per item.
            by_attempts = {}
            for item in server_items:
                by_attempts.setdefault(item.attempts or 0, []).append(item)
            for attempts, same in by_attempts.items():
                to_write.extend((same, {**outcome,
                            'attempts': attempts + 1}))
        if to_write:
            cls.write(*to_write)

    def delivery_entry(self):
        "What the Orthanc-side script stores for this item."
        attributes = json.loads(self.attributes)
        return {'uid': self.study_uid,
            'dicom': base64.b64encode(worklist_dicom.worklist_file(
                    attributes)).decode('ascii'),
            'date': attributes.get('ScheduledProcedureStepStartDate', ''),
            'modality': attributes.get('Modality', '')}


class ServerConfig(metaclass=PoolMeta):
    __name__ = 'gnuhealth.orthanc.config'

    worklist_delivery = fields.Selection(DELIVERY_MODES, 'Worklist delivery',
        help="How imaging requests reach this server's Modality Worklist: "
        "through the health_orthanc script of Orthanc's Python plugin, or "
        "as .wl files in the folder of the ModalityWorklists plugin.")
    worklist_folder = fields.Char('Worklist folder',
        states={
            'invisible': Eval('worklist_delivery') != 'folder',
            'required': Eval('worklist_delivery') == 'folder',
            },
        depends=['worklist_delivery'],
        help="The ModalityWorklists plugin's \"Database\" folder, as this "
        "GNU Health server sees it (a share of the Orthanc host).")
    worklist_default = fields.Boolean('Default worklist server',
        help="Imaging requests whose test type names no server go to "
        "this one.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._people_fields = cls._people_fields | frozenset({
                'worklist_delivery', 'worklist_folder', 'worklist_default'})

    def worklist_send(self, present, absent):
        "Deliver items; None on success, else the reason (no credentials)."
        try:
            if self.worklist_delivery == 'folder':
                self._worklist_write_folder(present, absent)
            else:
                self.client.update_worklist(WORKLIST_ROUTE,
                    put=[i.delivery_entry() for i in present],
                    remove=[i.study_uid for i in absent])
        except orthanc.OrthancError as exc:
            reason = describe_error(exc)
        except OSError as exc:
            reason = gettext('health_orthanc.msg_worklist_folder_error',
                folder=self.worklist_folder or '', reason=exc.strerror
                or exc.__class__.__name__)
        else:
            return None
        logger.warning("Worklist delivery to %s failed: %s", self.label,
            reason)
        return reason

    def _worklist_write_folder(self, present, absent):
        folder = self.worklist_folder
        if not folder or not os.path.isdir(folder):
            raise FileNotFoundError(2, 'no such folder')
        for item in present:
            data = worklist_dicom.worklist_file(json.loads(item.attributes))
            write_atomically(folder, worklist_dicom.file_name(
                    item.study_uid), data)
        for item in absent:
            try:
                os.remove(os.path.join(folder,
                        worklist_dicom.file_name(item.study_uid)))
            except FileNotFoundError:
                pass  # already gone: what was asked


def write_atomically(folder, name, data):
    """Write the file whole or not at all: the plugin reads the folder at
    each C-FIND and must never see half a file."""
    handle, temporary = tempfile.mkstemp(dir=folder, prefix='.tmp-',
        suffix='.part')
    try:
        with os.fdopen(handle, 'wb') as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, os.path.join(folder, name))
    except OSError:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


class ImagingTestType(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.type'

    worklist_server = fields.Many2One('gnuhealth.orthanc.config',
        'Worklist server', ondelete='SET NULL',
        help="The Orthanc server whose worklist gets the requests of this "
        "type (default: the default worklist server).")
    worklist_station_ae = fields.Char('Scheduled station AE title',
        help="The AE title of the modality that performs these tests "
        "(ScheduledStationAETitle of the worklist items).")


class ImagingTestRequest(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.request'

    worklist_uid = fields.Char('Worklist StudyInstanceUID', readonly=True,
        help="The StudyInstanceUID of this request's worklist item: the "
        "modality puts it in the images, which then find this request.")
    worklist_items = fields.One2Many(
        'gnuhealth.imaging_orthanc.worklist_item', 'request',
        'Worklist items', readonly=True)
    worklist_delivery = fields.Function(fields.Char('Worklist'),
        'get_worklist_delivery')

    @classmethod
    def create(cls, vlist):
        # Each request its own StudyInstanceUID from the start (no second
        # write): trytond computes a field's default once per create call.
        vlist = [v.copy() for v in vlist]
        for values in vlist:
            for name, uid in cls.new_worklist_uids().items():
                if not values.get(name):
                    values[name] = uid
        requests = super().create(vlist)
        if not Transaction().context.get(REFRESHING):
            Pool().get('gnuhealth.imaging_orthanc.worklist_item'
                ).refresh_requests(requests)
        return requests

    @classmethod
    def write(cls, *args):
        super().write(*args)
        if Transaction().context.get(REFRESHING):
            return
        actions = iter(args)
        requests = []
        for records, values in zip(actions, actions):
            if REQUEST_FIELDS & set(values):
                requests.extend(records)
        Pool().get('gnuhealth.imaging_orthanc.worklist_item'
            ).refresh_requests(cls.browse(sorted({r.id for r in requests})))

    @classmethod
    def delete(cls, requests):
        Item = Pool().get('gnuhealth.imaging_orthanc.worklist_item')
        with without_check_access():
            items = Item.search([
                    ('request', 'in', [r.id for r in requests]),
                    ('wanted', '=', 'present'),
                    ])
            if items:
                Item.write(items, Item.absent_values('request deleted'))
        Item.queue_delivery(items)
        super().delete(requests)

    @classmethod
    def copy(cls, requests, default=None):
        default = dict(default or {})
        default.setdefault('worklist_uid', None)
        default.setdefault('worklist_items', None)
        return super().copy(requests, default=default)

    @classmethod
    def new_worklist_uids(cls):
        "The values that give a new request its own StudyInstanceUID."
        return {'worklist_uid': generate_uid()}

    # --- what the item carries ----------------------------------------
    @classmethod
    def worklist_read_fields(cls):
        "What the items of requests are made of (read for a whole list)."
        return ['state', 'request', 'request_line', 'date', 'worklist_uid',
            'orthanc_studies', 'patient.puid', 'patient.party.name',
            'patient.party.lastname', 'patient.party.dob',
            'patient.party.gender', 'doctor.party.name',
            'doctor.party.lastname', 'requested_test.name',
            'requested_test.test_type.code',
            'requested_test.test_type.worklist_station_ae',
            'requested_test.test_type.worklist_server.worklist_delivery']

    @classmethod
    def worklist_rows(cls, requests):
        """{id: row} of the requests: their fields and those of their
        patients, doctors and tests, in one read."""
        return {row['id']: row for row in cls.read([r.id for r in requests],
                cls.worklist_read_fields())}

    @classmethod
    def worklist_removal_reason(cls, row):
        "Why the request of row has no item (None: it has one)."
        if row['state'] != 'requested':
            return 'request %s' % row['state']
        if row['orthanc_studies']:
            return 'study arrived'
        return None

    @classmethod
    def worklist_study_uid(cls, row):
        "The StudyInstanceUID of the item (see generate_worklist_uids)."
        return row['worklist_uid']

    @classmethod
    def generate_worklist_uids(cls, rows):
        """Give the request rows that have no StudyInstanceUID one, kept
        (requests made before this module, copies)."""
        missing = [row for row in rows if not cls.worklist_study_uid(row)]
        if not missing:
            return
        to_write = []
        for row in missing:
            uid = row['worklist_uid'] = generate_uid()
            to_write.extend(([cls(row['id'])], {'worklist_uid': uid}))
        with Transaction().set_context({REFRESHING: True}):
            cls.write(*to_write)

    @classmethod
    def worklist_station_ae(cls, row):
        test_type = (row['requested_test.'] or {}).get('test_type.') or {}
        return test_type.get('worklist_station_ae') or ''

    @classmethod
    def worklist_item_values(cls, row):
        "The values of the item of a request row (see worklist_rows)."
        party = row['patient.']['party.']
        doctor = (row['doctor.'] or {}).get('party.')
        test = row['requested_test.']
        attributes = worklist_dicom.worklist_attributes(
            study_uid=cls.worklist_study_uid(row),
            accession=row['request'], procedure_id=row['request_line'],
            description=test['name'], patient_id=row['patient.']['puid'],
            family=party['lastname'], given=party['name'],
            birth_date=party['dob'], gender=party['gender'],
            requesting_physician=worklist_dicom.person_name(
                doctor['lastname'], doctor['name']) if doctor else '',
            scheduled=row['date'], modality=test['test_type.']['code'],
            station_ae=cls.worklist_station_ae(row))
        return {
            'study_uid': attributes['StudyInstanceUID'],
            'accession': row['request'],
            'patient_id': attributes['PatientID'],
            'patient_name': attributes['PatientName'],
            'modality': attributes['Modality'],
            'scheduled': row['date'],
            'attributes': json.dumps(attributes, sort_keys=True,
                ensure_ascii=False),
            }

    @classmethod
    def get_worklist_delivery(cls, requests, name):
        "The state of each request's item, in words (no I/O)."
        Item = Pool().get('gnuhealth.imaging_orthanc.worklist_item')
        states = dict(Item.fields_get(['state'])['state']['selection'])
        wanted = dict(Item.fields_get(['wanted'])['wanted']['selection'])
        result = {r.id: None for r in requests}
        for item in Item.search([
                    ('request', 'in', [r.id for r in requests]),
                    ], order=[('id', 'ASC')]):
            text = '%s: %s (%s)' % (item.server.rec_name,
                wanted[item.wanted], states[item.state])
            if item.state == 'failed' and item.error:
                text += ' - ' + item.error
            result[item.request.id] = text
        return result

    # --- studies that arrive -------------------------------------------
    def study_uid_keys(self):
        "The StudyInstanceUIDs by which a study may name this request."
        return [self.worklist_uid] if self.worklist_uid else []

    @classmethod
    def study_uid_domain(cls, uids):
        "The domain of the requests whose StudyInstanceUID is in uids."
        return ('worklist_uid', 'in', uids)

    @classmethod
    def worklist_study_arrived(cls, requests):
        """The studies of these requests arrived: a request still
        requested that had a worklist item is performed.  Its result is
        created as GNU Health's "Generate results" does (the study is
        linked to it) and it becomes done, which removes its item."""
        pool = Pool()
        Item = pool.get('gnuhealth.imaging_orthanc.worklist_item')
        Result = pool.get('gnuhealth.imaging.test.result')
        items = Item.search([('request', 'in', [r.id for r in requests])])
        performed = cls.browse(sorted({i.request.id for i in items
                    if i.request.state == 'requested'}))
        if not performed:
            return
        have_result = {r.request.id for r in Result.search([
                    ('request', 'in', [r.id for r in performed])])}
        Result.create([{
                    'patient': r.patient.id,
                    'date': datetime.datetime.now(),
                    'request_date': r.date,
                    'requested_test': r.requested_test.id,
                    'request': r.id,
                    'order': r.request,
                    'doctor': r.doctor.id,
                    } for r in performed if r.id not in have_result])
        # Creating a result links its studies, which may have ended some
        # requests already (this method, again): only the others now.
        performed = [r for r in cls.browse([r.id for r in performed])
            if r.state == 'requested']
        if performed:
            cls.done(performed)


class Party(metaclass=PoolMeta):
    __name__ = 'party.party'

    @classmethod
    def write(cls, *args):
        super().write(*args)
        actions = iter(args)
        parties = []
        for records, values in zip(actions, actions):
            if PARTY_FIELDS & set(values):
                parties.extend(records)
        if parties:
            cls._refresh_worklist(parties)

    @classmethod
    def _refresh_worklist(cls, parties):
        "A corrected name, birth date or sex reaches the pending items."
        Request = Pool().get('gnuhealth.imaging.test.request')
        with without_check_access():
            requests = Request.search([
                    ('patient.party', 'in', [p.id for p in parties]),
                    ('state', '=', 'requested'),
                    ])
        Pool().get('gnuhealth.imaging_orthanc.worklist_item'
            ).refresh_requests(requests)
