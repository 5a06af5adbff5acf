# SPDX-License-Identifier: GPL-3.0-or-later
"""Synchronisation of GNU Health's study mirror with Orthanc.

Incremental sync reads Orthanc's /changes from the server's cursor; full
sync pages through /studies and reconciles.  Both fetch a study's series and
instances in two expanded requests, fetch nothing for a study whose Orthanc
LastUpdate is unchanged, and store each page with batched ORM calls.  The
cursor moves in the same transaction as the rows of the page it covers.
"""
import datetime
import logging
from dataclasses import dataclass, field

from sql import Literal, Null

from trytond.config import config
from trytond.i18n import gettext
from trytond.model import Index, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from . import orthanc, roles
from .exceptions import OrthancSyncError

logger = logging.getLogger(__name__)

CHANGES_PAGE = 1000  # Orthanc 1.10 does not cap `limit`: keep pages small
STUDIES_PAGE = 200
# Changes that can alter what GNU Health mirrors (attachments and metadata
# updates, patient-level events and jobs do not).
STUDY_CHANGES = {'NewStudy', 'StableStudy', 'ModifiedStudy'}
CHILD_CHANGES = {'NewSeries', 'StableSeries', 'ModifiedSeries',
    'NewInstance', 'NewChildInstance'}


@dataclass
class SyncStats:
    created: int = 0
    updated: int = 0
    removed: int = 0
    kept_missing: int = 0
    requests: int = 0
    studies: set = field(default_factory=set)

    def add(self, other):
        self.created += other.created
        self.updated += other.updated
        self.removed += other.removed
        self.kept_missing += other.kept_missing
        self.requests += other.requests
        self.studies |= other.studies


class SyncServer(metaclass=PoolMeta):
    __name__ = 'gnuhealth.orthanc.config'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'sync_changes': {'invisible': roles.imaging_only()},
                'full_sync': {'invisible': roles.admin_only()},
                })

    # --- entry points: buttons, cron, wizards --------------------------
    @classmethod
    @ModelView.button
    def sync_changes(cls, servers):
        "Store what changed on Orthanc since each server's cursor."
        cls.synchronize(servers, 'incremental')

    @classmethod
    @ModelView.button
    def full_sync(cls, servers):
        "Reconcile every study of each server with Orthanc."
        cls.synchronize(servers, 'full')

    @classmethod
    def cron_sync_changes(cls):
        cls.synchronize(None, 'incremental', raise_errors=False)

    @classmethod
    def cron_full_sync(cls):
        cls.synchronize(None, 'full', raise_errors=False)

    @classmethod
    @without_check_access
    def synchronize(cls, servers, kind, raise_errors=True):
        "Sync servers (all when None); return the SyncStats of the run."
        if servers is None:
            servers = cls.search([])
        if not servers:
            return SyncStats()
        # lock() restarts the transaction: it comes before any side effect.
        cls.lock(servers)
        totals, failures = SyncStats(), []
        for server in cls.browse(servers):
            try:
                stats = (server._sync_changes() if kind == 'incremental'
                    else server._full_sync())
            except OrthancSyncError as exc:
                failures.append(exc)
                cls.write([server], server._sync_status(kind, error=exc))
                logger.warning("Orthanc %s sync of %s failed: %s",
                    kind, server.label, exc.message)
            else:
                totals.add(stats)
                cls.write([server], server._sync_status(kind, stats=stats))
                logger.info("Orthanc %s sync of %s: %s created, %s updated, "
                    "%s removed", kind, server.label, stats.created,
                    stats.updated, stats.removed)
        if failures and raise_errors:
            # Keep the pages stored before the failure and the error shown
            # on the server form: both are consistent with the cursor.
            Transaction().commit()
            raise failures[0]
        return totals

    def _sync_status(self, kind, stats=None, error=None):
        values = {
            'last_sync_date': datetime.datetime.now(),
            'last_sync_kind': kind,
            'last_sync_error': error.message if error else None,
            }
        if stats:
            values.update({
                    'last_sync_created': stats.created,
                    'last_sync_updated': stats.updated,
                    'last_sync_removed': stats.removed,
                    })
        return values

    def _sync_errors(self):
        return self.errors('msg_sync_failed', OrthancSyncError)

    # --- incremental ----------------------------------------------------
    def _sync_changes(self):
        Study = Pool().get('gnuhealth.imaging_orthanc.study')
        client = self.client
        start_requests = client.request_count
        stats = SyncStats()
        seq = max(self.last_changed_index or 0, 0)
        covered = set()  # Orthanc IDs stored by this run, at every level
        while True:
            with self._sync_errors():
                page = client.changes_since(seq, CHANGES_PAGE)
                trees = self._trees_for_changes(page.changes, covered)
            stats.add(Study.store_trees(self, trees))
            seq = max(seq, page.last)
            self.__class__.write([self], {'last_changed_index': seq})
            if page.done or not page.changes:
                break
        stats.requests = client.request_count - start_requests
        return stats

    def _trees_for_changes(self, changes, covered):
        "Fetch the trees of the studies touched by a page of changes."
        Study = Pool().get('gnuhealth.imaging_orthanc.study')
        study_ids, child_changes = [], []
        for change in changes:
            if change.resource_id in covered:
                continue
            if change.change_type in STUDY_CHANGES:
                if change.resource_id not in study_ids:
                    study_ids.append(change.resource_id)
            elif change.change_type in CHILD_CHANGES:
                child_changes.append(change)
        known = Study.known_orthanc_ids(self,
            [c.resource_id for c in child_changes])
        studies = list(filter(None, map(self._study_or_none, study_ids)))
        covered.update(study_ids)
        trees = self._fetch_trees(Study.needs_update(self, studies), covered)
        for change in child_changes:
            if change.resource_id in covered or change.resource_id in known:
                continue
            study = self._parent_study(change)
            if study is not None:
                trees.extend(self._fetch_trees([study], covered))
        return trees

    def _fetch_trees(self, studies, covered):
        "Trees of studies, whose Orthanc IDs are then covered."
        trees = []
        for study in studies:
            covered.add(study['ID'])
            tree = self._fetch_tree(study)
            if tree:
                trees.append(tree)
                covered.update(orthanc_ids_of(tree))
        return trees

    def _study_or_none(self, study_id):
        try:
            return self.client.study(study_id)
        except orthanc.NotFound:
            return None

    def _parent_study(self, change):
        "The parent study of a series or instance; None if it is gone."
        try:
            return self.client.parent_study(
                change.resource_type, change.resource_id)
        except orthanc.NotFound:
            return None

    def _fetch_tree(self, study):
        try:
            series, instances = self.client.study_children(study['ID'])
        except orthanc.NotFound:
            return None
        return orthanc.StudyTree(study, series, instances)

    # --- full -----------------------------------------------------------
    def _full_sync(self):
        Study = Pool().get('gnuhealth.imaging_orthanc.study')
        client = self.client
        start_requests = client.request_count
        stats = SyncStats()
        seen = set()
        with self._sync_errors():
            # Changes logged while we page are replayed by the next
            # incremental sync: take the cursor before reading.
            last = client.last_change()
            for studies in client.iter_studies(STUDIES_PAGE):
                seen.update(s['ID'] for s in studies)
                changed = Study.needs_update(self, studies)
                trees = list(filter(None, map(self._fetch_tree, changed)))
                stats.add(Study.store_trees(self, trees))
        stats.add(Study.remove_missing(self, seen))
        self.__class__.write([self], {'last_changed_index': last})
        stats.requests = client.request_count - start_requests
        return stats


def orthanc_ids_of(tree):
    yield tree.study['ID']
    for series in tree.series:
        yield series['ID']
    for instance in tree.instances:
        yield instance['ID']


class SyncStudy(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging_orthanc.study'

    missing_on_orthanc = fields.Boolean('Missing on Orthanc', readonly=True,
        help="Orthanc no longer has this study; it is kept because it "
        "carries what a person wrote or decided (notes, a comment, links, "
        "attached images), and reused if Orthanc gets it back")
    manual_link = fields.Boolean('Linked by hand', readonly=True,
        help="The patient and result links were set by hand: "
        "synchronisation leaves them alone")
    link_review = fields.Selection([
            (None, ''),
            ('conflict', 'Conflict'),
            ('reconcile', 'To reconcile'),
            ], 'Link review', readonly=True, sort=False,
        help="Conflict: the study's accession number or UID names an imaging "
        "request of another patient, so it was not linked to it.\n"
        "To reconcile: linked to an imaging request although its PatientID "
        "is nobody's; confirm or undo it with Link to patient or Unlink.")
    link_review_reason = fields.Text('Review reason', readonly=True,
        states={'invisible': ~Eval('link_review')})

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        # The 'To review' and 'Missing on Orthanc' lists count these.
        cls._sql_indexes.update({
                Index(t, (t.link_review, Index.Equality()),
                    where=t.link_review != Null),
                Index(t, (t.missing_on_orthanc, Index.Equality()),
                    where=t.missing_on_orthanc == Literal(True)),
                })

    @classmethod
    def get_new_studies(cls):
        "Incremental sync of every server (name kept from the spec)."
        Server = Pool().get('gnuhealth.orthanc.config')
        return Server.synchronize(None, 'incremental')

    @classmethod
    def full_synchronize(cls):
        "Full reconciliation of every server (name kept from the spec)."
        Server = Pool().get('gnuhealth.orthanc.config')
        return Server.synchronize(None, 'full')

    @classmethod
    def known_orthanc_ids(cls, server, orthanc_ids):
        "The series and instance IDs among orthanc_ids already stored."
        pool = Pool()
        known = set()
        if not orthanc_ids:
            return known
        for model in ('gnuhealth.imaging_orthanc.study_series',
                'gnuhealth.imaging_orthanc.series_instances'):
            Model = pool.get(model)
            for values in Model.search_read([
                        ('server', '=', server.id),
                        ('orthanc_UID', 'in', list(orthanc_ids)),
                        ], fields_names=['orthanc_UID']):
                known.add(values['orthanc_UID'])
        return known

    @classmethod
    def needs_update(cls, server, studies):
        "The Orthanc studies whose stored copy is missing or out of date."
        stored = {v['orthanc_UID']: v for v in cls.search_read([
                    ('server', '=', server.id),
                    ('orthanc_UID', 'in', [s['ID'] for s in studies]),
                    ], fields_names=['orthanc_UID', 'last_update',
                    'series_count', 'missing_on_orthanc'])}
        return [s for s in studies
            if s['ID'] not in stored
            or stored[s['ID']]['last_update'] != s.get('LastUpdate')
            or stored[s['ID']]['series_count'] != len(s.get('Series', []))
            or stored[s['ID']]['missing_on_orthanc']]

    @classmethod
    def store_trees(cls, server, trees):
        "Create or update the studies, series and instances of trees."
        stats = SyncStats()
        if not trees:
            return stats
        studies = cls._store_studies(server, trees, stats)
        series = cls._store_series(server, trees, studies, stats)
        cls._store_instances(server, trees, series)
        cls.link_records(list(studies.values()))
        stats.studies.update(studies)
        return stats

    @classmethod
    def _store_studies(cls, server, trees, stats):
        values = {t.study['ID']: study_values(server, t) for t in trees}
        existing = cls.search([
                ('server', '=', server.id),
                ('orthanc_UID', 'in', list(values)),
                ])
        records, _ = upsert(cls, existing, values, stats)
        return records

    @classmethod
    def _store_series(cls, server, trees, studies, stats):
        "Series of the trees; those Orthanc no longer lists are deleted."
        Series = Pool().get('gnuhealth.imaging_orthanc.study_series')
        values = {}
        for tree in trees:
            study = studies[tree.study['ID']]
            counts = count_by(tree.instances, 'ParentSeries')
            for series in tree.series:
                values[series['ID']] = series_values(
                    server, study, series, counts.get(series['ID'], 0))
        existing = Series.search([
                ('study', 'in', [s.id for s in studies.values()])])
        records, stale = upsert(Series, existing, values)
        kept = Series.written_by_people(stale)
        Series.delete([s for s in stale if s not in kept])
        Series.flag_missing(kept)
        for series in kept:  # their instances are kept too
            del records[series.orthanc_UID]
        return records

    @classmethod
    def _store_instances(cls, server, trees, series):
        "Instances of the trees; those Orthanc no longer lists are deleted."
        Instance = Pool().get('gnuhealth.imaging_orthanc.series_instances')
        values = {}
        for tree in trees:
            for instance in tree.instances:
                parent = series.get(instance.get('ParentSeries'))
                if parent:
                    values[instance['ID']] = instance_values(
                        server, parent, instance)
        existing = Instance.search([
                ('series', 'in', [s.id for s in series.values()])])
        _, stale = upsert(Instance, existing, values)
        Instance.delete(stale)

    @classmethod
    def remove_missing(cls, server, seen):
        """Remove the studies Orthanc no longer has.

        A study carrying what a person wrote or decided is kept with its
        series and instances, flagged missing_on_orthanc, so that nothing
        written by a person disappears and the same records are reused if
        Orthanc gets the study back.
        """
        stats = SyncStats()
        stored = cls.search_read([('server', '=', server.id)],
            fields_names=['orthanc_UID'])
        gone = cls.browse([s['id'] for s in stored
                if s['orthanc_UID'] not in seen])
        keep = cls.written_by_people(gone)
        drop = [s for s in gone if s not in keep]
        to_flag = [s for s in keep if not s.missing_on_orthanc]
        if to_flag:
            cls.write(to_flag, {'missing_on_orthanc': True})
        if drop:
            cls.delete(drop)
        stats.removed, stats.kept_missing = len(drop), len(keep)
        return stats

    @classmethod
    def written_by_people(cls, studies):
        """The studies among studies that carry what a person wrote or
        decided: notes (on the study or one of its series), a merge
        comment, a link by hand, a link to a request or a result, images
        attached from it to a result, Tryton notes or attachments on it or
        its series.  A few searches for the whole list."""
        Series = Pool().get('gnuhealth.imaging_orthanc.study_series')
        kept = {s for s in studies if s.notes or s.merge_comment
            or s.manual_link or s.imaging_request or s.imaging_test}
        rest = [s for s in studies if s not in kept]
        if rest:
            series = []
            for sub in grouped_slice([s.id for s in rest]):
                series.extend(Series.search([('study', 'in', list(sub))]))
            kept.update(s.study for s in Series.written_by_people(series))
            kept |= with_notes_or_attachments(rest)
        rest = [s for s in rest if s not in kept]
        if rest:
            attached = studies_with_attached_images()
            kept.update(s for s in rest if s.study_instance_UID in attached)
        return kept

    # --- linking --------------------------------------------------------
    @classmethod
    def link_records(cls, studies):
        "Link studies to their patient, imaging request and result."
        studies = [s for s in studies if not s.manual_link]
        cls._link_patients([s for s in studies if not s.patient])
        cls._link_requests([s for s in studies
                if not s.imaging_request or not s.imaging_test])

    @classmethod
    def patients_by_identifier(cls, codes):
        """The patients whose PUID, or else an alternative identifier, is
        one of codes, by code: two searches for the whole list."""
        Patient = Pool().get('gnuhealth.patient')
        codes = set(filter(None, codes))
        by_code = {}
        if not codes:
            return by_code
        for patient in Patient.search([('puid', 'in', list(codes))]):
            by_code.setdefault(patient.puid, patient)
        missing = codes - set(by_code)
        if missing:
            for patient in Patient.search([
                        ('party.alternative_ids.code', 'in', list(missing)),
                        ]):
                for alt in patient.party.alternative_ids:
                    if alt.code in missing:
                        by_code.setdefault(alt.code, patient)
        return by_code

    @classmethod
    def _link_patients(cls, studies):
        owners = cls.patients_by_identifier(s.patient_id for s in studies)
        to_write = []
        for study in studies:
            patient = owners.get(study.patient_id)
            if patient:
                to_write.extend(([study], {'patient': patient.id}))
        if to_write:
            cls.write(*to_write)

    @classmethod
    def _link_requests(cls, studies):
        Result = Pool().get('gnuhealth.imaging.test.result')
        if not studies:
            return
        by_key = cls._requests_by_key(studies)
        if not by_key:
            return
        results = {r.request.id: r for r in Result.search([
                    ('request', 'in', [r.id for r in set(by_key.values())]),
                    ])}
        cls._write_request_links(studies, by_key, results)

    @classmethod
    def _requests_by_key(cls, studies):
        "Requests matching the studies, keyed by ('uid'|'acc', value)."
        Request = Pool().get('gnuhealth.imaging.test.request')
        by_key = {}
        uids = [s.study_instance_UID for s in studies]
        if 'merge_id' in Request._fields:
            for request in Request.search([('merge_id', 'in', uids)]):
                by_key[('uid', request.merge_id)] = request
        accessions = [s.accession_number for s in studies
            if s.accession_number]
        if accessions:
            for request in Request.search([('request', 'in', accessions)]):
                by_key[('acc', request.request)] = request
        return by_key

    @classmethod
    def _write_request_links(cls, studies, by_key, results):
        """Link each study to the request its keys name that is safe.

        by_key: the requests by study key (see study_keys); results: the
        result of each request, by request id.  The study's patient
        (its link, or the patient its PatientID names) must be the
        request's: a request of another patient is a conflict and is not
        linked.  A study whose patient nobody knows takes the request's
        patient, flagged to reconcile until a person confirms it.
        """
        Request = Pool().get('gnuhealth.imaging.test.request')
        candidates = {}
        for study in studies:
            found = [(key, by_key[key]) for key in study_keys(study)
                if key in by_key]
            if found:
                candidates[study] = found
        owners = cls.patients_by_identifier(
            s.patient_id for s in candidates)
        to_write, linked, conflicts = [], set(), 0
        for study, found in candidates.items():
            owner = owners.get(study.patient_id)
            values, request = link_values(study, found, owner, results)
            if request:
                linked.add(request)
            else:
                conflicts += 1
            changed = changed_values(study, values)
            if changed:
                to_write.extend(([study], changed))
        if to_write:
            cls.write(*to_write)
        if conflicts:
            logger.info("%s Orthanc studies not linked to the imaging "
                "request of another patient (link review: conflict)",
                conflicts)
        if 'worklist_status' in Request._fields:
            done = [r for r in linked if r.worklist_status != 'done']
            if done:
                Request.write(done, {'worklist_status': 'done'})

    @classmethod
    def link_results(cls, results):
        "Attach stored studies to results created after them."
        results = [r for r in results if r.request]
        by_key = {}
        for result in results:
            request = result.request
            merge_id = getattr(request, 'merge_id', None)
            if merge_id:
                by_key[('uid', merge_id)] = request
            if request.request:
                by_key[('acc', request.request)] = request
        if not by_key:
            return
        studies = cls.search([
                ('imaging_test', '=', None),
                ('manual_link', '!=', True),
                ['OR',
                    ('study_instance_UID', 'in',
                        [v for k, v in by_key if k == 'uid']),
                    ('accession_number', 'in',
                        [v for k, v in by_key if k == 'acc']),
                    ],
                ])
        cls._write_request_links(studies, by_key,
            {r.request.id: r for r in results})


# Written when a person links, confirms or unlinks a study by hand.
LINK_REVIEW_CLEARED = {'link_review': None, 'link_review_reason': None}


def study_keys(study):
    "The keys by which a study names its request, the surest first."
    keys = [('uid', study.study_instance_UID)]
    if study.accession_number:
        keys.append(('acc', study.accession_number))
    return keys


def link_values(study, found, owner, results):
    """The link values of study for its candidate requests found, and the
    request linked (None for a conflict).

    owner is the patient whose PUID or alternative identifier is the
    study's PatientID, None if nobody's.
    """
    patient = study.patient or owner
    for key, request in found:
        if patient is None or request.patient == patient:
            break
    else:
        key, request = found[0]
        return {
            'link_review': 'conflict',
            'link_review_reason': gettext(
                'health_orthanc.msg_link_conflict', **link_reason_values(
                    study, key, request, patient)),
            }, None
    values = {'imaging_request': request.id}
    if study.patient is None:
        values['patient'] = request.patient.id
    result = results.get(request.id)
    if result and not study.imaging_test:
        values['imaging_test'] = result.id
    if owner == request.patient:
        values.update(LINK_REVIEW_CLEARED)
    else:
        values['link_review'] = 'reconcile'
        values['link_review_reason'] = gettext(
            'health_orthanc.msg_link_reconcile', **link_reason_values(
                study, key, request, None))
    return values, request


def link_reason_values(study, key, request, patient):
    kind, value = key
    return {
        'tag': 'StudyInstanceUID' if kind == 'uid' else 'AccessionNumber',
        'value': value,
        # GNU Health names a request by its doctor only: use its order.
        'request': '%s (%s)' % (request.request or request.id,
            request.requested_test.rec_name if request.requested_test
            else '-'),
        'request_patient': request.patient.rec_name,
        'patient_id': study.patient_id or '-',
        'patient': patient.rec_name if patient else '-',
        }


class SyncSeries(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging_orthanc.study_series'

    missing_on_orthanc = fields.Boolean('Missing on Orthanc', readonly=True,
        help="Orthanc no longer lists this series; it is kept because it "
        "carries notes")

    @classmethod
    def written_by_people(cls, series_list):
        "The series among series_list with notes, Tryton's or their own."
        kept = {s for s in series_list if s.notes}
        return kept | with_notes_or_attachments(
            [s for s in series_list if s not in kept])

    @classmethod
    def flag_missing(cls, series_list):
        to_flag = [s for s in series_list if not s.missing_on_orthanc]
        if to_flag:
            cls.write(to_flag, {'missing_on_orthanc': True})


def with_notes_or_attachments(records):
    "The records among records that have Tryton notes or attachments."
    pool = Pool()
    found = set()
    if not records:
        return found
    by_ref = {str(r): r for r in records}
    for model in ('ir.note', 'ir.attachment'):
        Model = pool.get(model)
        for sub in grouped_slice(list(by_ref)):
            for values in Model.search_read([('resource', 'in', list(sub))],
                    fields_names=['resource']):
                found.add(by_ref[values['resource']])
    return found


def studies_with_attached_images():
    """StudyInstanceUIDs of the images attached to imaging results.

    The attach action names them <StudyInstanceUID>-<series>-<instance>.png
    (UIDs hold no dash): one search reading only names.
    """
    Attachment = Pool().get('ir.attachment')
    return {v['name'].split('-', 1)[0] for v in Attachment.search_read([
                ('resource', 'like', 'gnuhealth.imaging.test.result,%'),
                ('name', 'like', '%-%-%.png'),
                ], fields_names=['name'])}


def count_by(items, key):
    counts = {}
    for item in items:
        counts[item.get(key)] = counts.get(item.get(key), 0) + 1
    return counts


def upsert(Model, existing, values_by_uid, stats=None):
    """Create or update records keyed by Orthanc ID.

    existing: the stored records that may match (one search by the caller).
    One create and one write call for the whole batch; records whose
    values are unchanged are not written.  Returns the records by Orthanc
    ID and the existing records that values_by_uid no longer has.
    """
    by_uid = {r.orthanc_UID: r for r in existing}
    to_create, create_uids, to_write = [], [], []
    for uid, values in values_by_uid.items():
        record = by_uid.get(uid)
        if record is None:
            to_create.append(values)
            create_uids.append(uid)
            continue
        changed = changed_values(record, values)
        if changed:
            to_write.extend(([record], changed))
    if to_write:
        Model.write(*to_write)
    created = Model.create(to_create) if to_create else []
    if stats is not None:
        stats.created += len(created)
        stats.updated += len(to_write) // 2
    stale = [r for uid, r in by_uid.items() if uid not in values_by_uid]
    # create() returns records in the order of its values: no read-back.
    by_uid.update(zip(create_uids, created))
    return by_uid, stale


def changed_values(record, values):
    changed = {}
    for name, value in values.items():
        current = getattr(record, name)
        if hasattr(current, 'id'):
            current = current.id
        if current != value:
            changed[name] = value
    return changed


def study_values(server, tree):
    tags = tree.study.get('MainDicomTags', {})
    patient = tree.study.get('PatientMainDicomTags', {})
    date = orthanc.dicom_date(tags.get('StudyDate'))
    uid = tags.get('StudyInstanceUID') or tree.study['ID']
    modalities = sorted({s.get('MainDicomTags', {}).get('Modality')
            for s in tree.series} - {None, ''})
    performing = next(filter(None, (
                s.get('MainDicomTags', {}).get(tag)
                for s in tree.series
                for tag in ('PerformingPhysicianName', 'OperatorsName'))),
        None)
    return {
        'server': server.id,
        'orthanc_UID': tree.study['ID'],
        'study_instance_UID': uid,
        'merge_id': uid,
        'date': date.isoformat() if date else None,
        'study_date': date,
        'description': clean(tags.get('StudyDescription')),
        'accession_number': clean(tags.get('AccessionNumber')),
        'institution': clean(tags.get('InstitutionName')),
        'referring_physician_name': orthanc.person_name(
            tags.get('ReferringPhysicianName')) or None,
        'performing_physician_name': orthanc.person_name(performing) or None,
        'patient_name': orthanc.person_name(patient.get('PatientName'))
        or None,
        'patient_id': clean(patient.get('PatientID')),
        'patient_birth_date': orthanc.dicom_date(
            patient.get('PatientBirthDate')),
        'patient_sex': clean(patient.get('PatientSex')),
        'modalities': ', '.join(modalities) or None,
        'series_count': len(tree.series),
        'instance_count': len(tree.instances),
        'last_update': tree.study.get('LastUpdate'),
        'missing_on_orthanc': False,
        }


def series_values(server, study, series, instance_count):
    tags = series.get('MainDicomTags', {})
    number = orthanc.dicom_int(tags.get('SeriesNumber'))
    return {
        'server': server.id,
        'study': study.id,
        'orthanc_UID': series['ID'],
        'series_UID': tags.get('SeriesInstanceUID') or series['ID'],
        'series_number': str(number) if number is not None else None,
        'series_description': clean(tags.get('SeriesDescription')),
        'modality': clean(tags.get('Modality')),
        'body_part': clean(tags.get('BodyPartExamined')),
        'instance_count': instance_count,
        'missing_on_orthanc': False,
        }


def instance_values(server, series, instance):
    tags = instance.get('MainDicomTags', {})
    return {
        'server': server.id,
        'series': series.id,
        'orthanc_UID': instance['ID'],
        'sop_instance_UID': tags.get('SOPInstanceUID') or instance['ID'],
        'instance_number': orthanc.dicom_int(tags.get('InstanceNumber')),
        'image_position_patient': clean(tags.get('ImagePositionPatient')),
        }


def clean(value):
    "Orthanc's text for a tag, None when empty."
    if value is None:
        return None
    value = str(value).strip()
    return value or None


# --- wizards ------------------------------------------------------------
class GetNewStudiesStart(ModelView):
    "Get new studies"
    __name__ = 'gnuhealth.imaging_orthanc.get_new_studies.start'

    servers = fields.Many2Many('gnuhealth.orthanc.config', None, None,
        'Servers', help="Leave empty for all servers")


class FullSynchronizeStart(ModelView):
    "Full synchronisation"
    __name__ = 'gnuhealth.imaging_orthanc.full_synchronize.start'

    servers = fields.Many2Many('gnuhealth.orthanc.config', None, None,
        'Servers', help="Leave empty for all servers")


class SyncResult(ModelView):
    "Synchronisation result"
    __name__ = 'gnuhealth.imaging_orthanc.sync.result'

    message = fields.Text('Result', readonly=True)


class _SyncWizard(Wizard):
    kind = None

    sync = StateTransition()
    result = StateView('gnuhealth.imaging_orthanc.sync.result',
        'health_orthanc.sync_result_view_form', [
            Button('Close', 'end', 'tryton-close', default=True),
            ])

    def transition_sync(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        servers = list(self.start.servers) or Server.search([])
        if config.getboolean('queue', 'worker', default=False):
            # A worker runs it: the client does not wait for a large sync.
            Server.__queue__.synchronize(servers, self.kind)
            self.result.message = gettext('health_orthanc.msg_sync_queued')
        else:
            stats = Server.synchronize(servers, self.kind)
            self.result.message = gettext('health_orthanc.msg_sync_done',
                created=stats.created, updated=stats.updated,
                removed=stats.removed, kept=stats.kept_missing)
        return 'result'

    def default_result(self, fields):
        return {'message': self.result.message}


class GetNewStudies(_SyncWizard):
    "Get new studies from Orthanc"
    __name__ = 'gnuhealth.imaging_orthanc.get_new_studies'
    kind = 'incremental'

    start = StateView('gnuhealth.imaging_orthanc.get_new_studies.start',
        'health_orthanc.get_new_studies_start_form', [
            Button('Cancel', 'end', 'tryton-cancel'),
            Button('Synchronize', 'sync', 'tryton-ok', default=True),
            ])


class FullSynchronize(_SyncWizard):
    "Fully synchronize studies with Orthanc"
    __name__ = 'gnuhealth.imaging_orthanc.full_synchronize'
    kind = 'full'

    start = StateView('gnuhealth.imaging_orthanc.full_synchronize.start',
        'health_orthanc.full_synchronize_start_form', [
            Button('Cancel', 'end', 'tryton-cancel'),
            Button('Synchronize', 'sync', 'tryton-ok', default=True),
            ])
