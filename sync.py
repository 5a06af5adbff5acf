# SPDX-License-Identifier: GPL-3.0-or-later
"""The synchronisation engine: GNU Health's study mirror kept up with Orthanc.

The data path goes one way: an entry point of the server model (button,
cron, queued task, wizard: server.py) runs ``ServerSync(server).run(kind)``;
the engine asks the adapter (orthanc.py) and stores rows of the models
(study.py) with batched ORM calls.

Incremental sync reads Orthanc's /changes from the server's cursor; full
sync pages through /studies and reconciles.  Both fetch a study's series and
instances in two expanded requests, fetch nothing for a study whose Orthanc
LastUpdate is unchanged, and store each page with batched ORM calls.  The
cursor moves in the same transaction as the rows of the page it covers.
Linking stored studies to patients, requests and results is here too.
"""
import logging
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field

from sql.functions import CurrentTimestamp

from trytond import backend
from trytond.config import config
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model.exceptions import ValidationError
from trytond.pool import Pool
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from . import ondemand, orthanc
from .dicom import clean, dicom_date, dicom_int, person_name
from .bulk import bulk_create
from .exceptions import OrthancSyncError, describe_error
from .study import LINK_REVIEW_CLEARED, study_summary

logger = logging.getLogger(__name__)

STUDY = 'gnuhealth.imaging_orthanc.study'
SERIES = 'gnuhealth.imaging_orthanc.study_series'
INSTANCE = 'gnuhealth.imaging_orthanc.series_instances'
PROBLEM = 'gnuhealth.imaging_orthanc.sync_problem'

CHANGES_PAGE = 1000  # Orthanc 1.10 does not cap `limit`: keep pages small
STUDIES_PAGE = 200
BULK_PAGE = 1000  # resources per call of a first sync in bulk
# Changes that can alter what GNU Health mirrors (attachments and metadata
# updates, patient-level events and jobs do not).
STUDY_CHANGES = {'NewStudy', 'StableStudy', 'ModifiedStudy'}
CHILD_CHANGES = {'NewSeries', 'StableSeries', 'ModifiedSeries',
    'NewInstance', 'NewChildInstance'}
# What the database says when it refuses rows: the study is recorded as a
# sync problem.  Operational errors (lock, serialisation, connection) are
# not about the rows: they go up so that trytond retries the transaction.
REFUSALS = (backend.DatabaseDataError, backend.DatabaseIntegrityError,
    ValidationError)
# PostgreSQL's integer column (int4): larger DICOM numbers are kept as text.
INTEGER_RANGE = range(-2 ** 31, 2 ** 31)
# Advisory lock namespace of the synchronisation, combined with a server id.
SYNC_LOCK_NAMESPACE = zlib.crc32(b'health_orthanc.sync') << 31

__all__ = ['ServerSync', 'SyncStats', 'LINK_REVIEW_CLEARED', 'link_studies',
    'link_results']


def queue_worker():
    "Whether long actions are left to trytond-worker ([queue] worker)."
    return config.getboolean('queue', 'worker', default=False)


def sync_lock_key(server_id):
    "The advisory lock key that a sync of the server holds (PostgreSQL)."
    return SYNC_LOCK_NAMESPACE + server_id


@dataclass
class SyncStats:
    created: int = 0
    updated: int = 0
    removed: int = 0
    kept_missing: int = 0
    requests: int = 0
    problems: int = 0
    notice: str = None
    studies: set = field(default_factory=set)

    def add(self, other):
        self.created += other.created
        self.updated += other.updated
        self.removed += other.removed
        self.kept_missing += other.kept_missing
        self.requests += other.requests
        self.problems += other.problems
        self.notice = other.notice or self.notice
        self.studies |= other.studies


@contextmanager
def savepoint(name):
    """Undo what the block wrote when the database refuses it.

    The transaction stays usable after the refusal (PostgreSQL aborts it
    otherwise) and keeps what was written before the block.
    """
    transaction = Transaction()
    connection = transaction.connection
    cursor = connection.cursor()
    if backend.name == 'sqlite' and not connection.in_transaction:
        # Else SQLite's RELEASE of the outermost savepoint commits.
        cursor.execute('BEGIN IMMEDIATE')
    cursor.execute('SAVEPOINT %s' % name)
    try:
        yield
    except (*REFUSALS, backend.DatabaseOperationalError):
        cursor.execute('ROLLBACK TO SAVEPOINT %s' % name)
        cursor.execute('RELEASE SAVEPOINT %s' % name)
        # Records read or written in the block may hold undone values.
        for cache in transaction.cache.values():
            cache.clear()
        raise
    cursor.execute('RELEASE SAVEPOINT %s' % name)


def refusal_reason(exc):
    "The database's (or trytond's) one-line reason for a refusal."
    if isinstance(exc, UserError):
        return exc.message
    text = str(exc).strip().splitlines()
    return orthanc.redact(text[0] if text else exc.__class__.__name__)


class ServerSync:
    """One synchronisation of one server: adapter calls and stored rows.

    Not a model: the server model's entry points (server.py) claim the
    server, run this and record its outcome on the server's form.
    """

    def __init__(self, server):
        pool = Pool()
        self.server = server
        self.Server = server.__class__
        self.Study = pool.get(STUDY)
        self.Series = pool.get(SERIES)
        self.Instance = pool.get(INSTANCE)
        self.Problem = pool.get(PROBLEM)
        self._client = None

    def run(self, kind):
        "Run the sync of kind ('incremental' or 'full'); its SyncStats."
        if kind == 'incremental':
            return self.sync_changes()
        return self.full_sync()

    @property
    def client(self):
        "The server's client; a CA bundle that cannot be read is named."
        if self._client is None:
            server = self.server
            try:
                self._client = server.client
            except orthanc.TLSFailure as exc:
                reason = (gettext('health_orthanc.msg_reason_ca_bundle',
                        path=server.ca_bundle, detail=exc.reason)
                    if server.verify_tls and server.ca_bundle
                    else describe_error(exc))
                raise OrthancSyncError(gettext(
                        'health_orthanc.msg_sync_failed',
                        server=server.label, reason=reason)) from exc
        return self._client

    def _errors(self):
        "Adapter errors become a sync error naming the server."
        return self.server.errors('msg_sync_failed', OrthancSyncError)

    @contextmanager
    def _page(self):
        """Store a page, or undo it and stop with a message.

        The studies the database refuses one by one are sync problems (see
        store_trees); this is for what is left: the cursor, the problems.
        The pages stored before stay.
        """
        try:
            with savepoint('health_orthanc_page'):
                yield
        except REFUSALS as exc:
            raise OrthancSyncError(gettext('health_orthanc.msg_sync_database',
                    server=self.server.label,
                    reason=refusal_reason(exc))) from exc

    def _move_cursor(self, seq, mark=None):
        """One UPDATE, no read: it runs on every page of every sync, and
        the cursor is the system's (no access check, validation or log).
        The database's own refusal still undoes the page (see _page)."""
        server, transaction = self.server, Transaction()
        table = self.Server.__table__()
        transaction.connection.cursor().execute(*table.update(
                [table.last_changed_index, table.last_change_mark,
                    table.write_uid, table.write_date],
                [seq, mark, transaction.user, CurrentTimestamp()],
                where=table.id == server.id))
        # As ModelSQL.write does after its check: the client's timestamp of
        # the server (sent with the sync button) is used up, so the outcome's
        # write later in this transaction does not take the cursor's move for
        # someone else's edit (ConcurrencyException).
        if transaction.timestamp:
            transaction.timestamp.pop(
                '%s,%s' % (self.Server.__name__, server.id), None)
        # As ModelStorage.write does: the record is read again when used.
        transaction.counter += 1
        server._local_cache.pop(server.id, None)
        for cache in transaction.cache.values():
            cache.get(self.Server.__name__, {}).pop(server.id, None)

    # --- incremental ----------------------------------------------------
    def sync_changes(self):
        "Store what changed on Orthanc since the server's cursor."
        client = self.client
        start_requests = client.request_count
        seq = max(self.server.last_changed_index or 0, 0)
        if not seq and self._mirror_empty():
            return self.first_sync_in_bulk()
        with self._errors():
            # From the change at the cursor, to check it is still ours.
            page = client.changes_since(max(seq - 1, 0), CHANGES_PAGE)
        notice = self._orthanc_reset(seq, page)
        if notice:
            stats = self.full_sync()
            stats.notice = notice
            return stats
        covered = set()  # Orthanc IDs stored by this run, at every level
        stats = self._retry_problems(covered)
        while True:
            changes = [c for c in page.changes if c.seq > seq]
            with self._errors():
                trees = self._trees_for_changes(changes, covered)
            with self._page():
                stats.add(self.store_trees(trees))
                seq = max(seq, page.last)
                self._move_cursor(seq, change_mark(page.changes, seq))
            if page.done or not changes:
                break
            with self._errors():
                page = client.changes_since(seq, CHANGES_PAGE)
        stats.requests = client.request_count - start_requests
        return stats

    def _orthanc_reset(self, seq, page):
        """A notice when Orthanc's change log is not the one synchronised.

        Orthanc's log starts again from 0 on new storage: its last change
        is then below the cursor.  A replaced Orthanc that already logged
        more changes has another change at the cursor's position.
        """
        server = self.server
        if not seq:
            return None
        if page.last < seq:
            return gettext('health_orthanc.msg_sync_orthanc_reset',
                server=server.label, cursor=seq, last=page.last)
        at_cursor = [c for c in page.changes if c.seq == seq]
        if (at_cursor and server.last_change_mark
                and change_mark(at_cursor, seq) != server.last_change_mark):
            return gettext('health_orthanc.msg_sync_orthanc_replaced',
                server=server.label, cursor=seq)
        return None

    def _retry_problems(self, covered):
        "Try again the studies the database refused before."
        stats = SyncStats()
        orthanc_ids = self.Problem.to_retry(self.server)
        if not orthanc_ids:
            return stats
        with self._errors():
            found = {i: self._study_or_none(i) for i in orthanc_ids}
            trees = self._fetch_trees(filter(None, found.values()), covered)
        with self._page():
            self.Problem.resolve(self.server,
                [i for i, s in found.items() if s is None])
            stats.add(self.store_trees(trees))
        return stats

    def _trees_for_changes(self, changes, covered):
        "Fetch the trees of the studies touched by a page of changes."
        study_ids, child_changes = [], []
        for change in changes:
            if change.resource_id in covered:
                continue
            if change.change_type in STUDY_CHANGES:
                if change.resource_id not in study_ids:
                    study_ids.append(change.resource_id)
            elif change.change_type in CHILD_CHANGES:
                child_changes.append(change)
        known = self.known_orthanc_ids(
            [c.resource_id for c in child_changes])
        studies = list(filter(None, map(self._study_or_none, study_ids)))
        covered.update(study_ids)
        trees = self._fetch_trees(self.needs_update(studies), covered)
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
            series, instances = self.client.study_children(study['ID'],
                instances=not ondemand.on_demand(self.server))
        except orthanc.NotFound:
            return None
        return orthanc.StudyTree(study, series, instances)

    def known_orthanc_ids(self, orthanc_ids):
        "The series and instance IDs among orthanc_ids already stored."
        known = set()
        if not orthanc_ids:
            return known
        for Model in (self.Series, self.Instance):
            for values in Model.search_read([
                        ('server', '=', self.server.id),
                        ('orthanc_UID', 'in', list(orthanc_ids)),
                        ], fields_names=['orthanc_UID']):
                known.add(values['orthanc_UID'])
        return known

    def needs_update(self, studies):
        "The Orthanc studies whose stored copy is missing or out of date."
        stored = {v['orthanc_UID']: v for v in self.Study.search_read([
                    ('server', '=', self.server.id),
                    ('orthanc_UID', 'in', [s['ID'] for s in studies]),
                    ], fields_names=['orthanc_UID', 'last_update',
                    'series_count', 'missing_on_orthanc'])}
        return [s for s in studies
            if s['ID'] not in stored
            or stored[s['ID']]['last_update'] != s.get('LastUpdate')
            or stored[s['ID']]['series_count'] != len(s.get('Series', []))
            or stored[s['ID']]['missing_on_orthanc']]

    # --- full -----------------------------------------------------------
    def _mirror_empty(self):
        return not self.Study.search([('server', '=', self.server.id)],
            limit=1)

    def first_sync_in_bulk(self):
        """Copy the whole archive into an empty mirror with paged /studies,
        /series and /instances (a few calls per thousand resources instead
        of two per study); stored by pages of studies, each page isolated
        as an incremental page is."""
        Problem = self.Problem
        client = self.client
        start_requests = client.request_count
        stats = SyncStats()
        with self._errors():
            # Changes logged while we read are replayed by the next
            # incremental sync: take the cursor before reading.
            last = client.last_change()
            trees = client.all_trees(BULK_PAGE,
                instances=not ondemand.on_demand(self.server))
        pages = [list(p) for p in grouped_slice(trees, STUDIES_PAGE)] or [[]]
        seen = {t.study['ID'] for t in trees}
        for number, page in enumerate(pages, 1):
            with self._page():
                stats.add(self.store_trees(page))
                if number == len(pages):
                    # With the last page, as an incremental page does.
                    Problem.resolve(self.server,
                        set(Problem.to_retry(self.server)) - seen)
                    self._move_cursor(last)
        stats.requests = client.request_count - start_requests
        return stats

    def full_sync(self):
        "Reconcile every study of the server with Orthanc."
        Problem = self.Problem
        if self._mirror_empty():
            return self.first_sync_in_bulk()
        client = self.client
        start_requests = client.request_count
        stats = SyncStats()
        seen = set()
        with self._errors():
            # Changes logged while we page are replayed by the next
            # incremental sync: take the cursor before reading.
            last = client.last_change()
            for studies in client.iter_studies(STUDIES_PAGE):
                seen.update(s['ID'] for s in studies)
                changed = self.needs_update(studies)
                trees = list(filter(None, map(self._fetch_tree, changed)))
                with self._page():
                    stats.add(self.store_trees(trees))
        with self._page():
            stats.add(self.remove_missing(seen))
            Problem.resolve(self.server,
                set(Problem.to_retry(self.server)) - seen)
            self._move_cursor(last)
        stats.requests = client.request_count - start_requests
        return stats

    def remove_missing(self, seen):
        """Remove the studies Orthanc no longer has (seen: the Orthanc IDs
        it listed).

        A study carrying what a person wrote or decided is kept with its
        series and instances, flagged missing_on_orthanc, so that nothing
        written by a person disappears and the same records are reused if
        Orthanc gets the study back.
        """
        Study = self.Study
        stats = SyncStats()
        stored = Study.search_read([('server', '=', self.server.id)],
            fields_names=['orthanc_UID'])
        gone = Study.browse([s['id'] for s in stored
                if s['orthanc_UID'] not in seen])
        keep = Study.written_by_people(gone)
        drop = [s for s in gone if s not in keep]
        to_flag = [s for s in keep if not s.missing_on_orthanc]
        if to_flag:
            Study.write(to_flag, {'missing_on_orthanc': True})
        if drop:
            Study.delete(drop)
        stats.removed, stats.kept_missing = len(drop), len(keep)
        return stats

    # --- storing --------------------------------------------------------
    def store_trees(self, trees):
        """Create or update the studies, series and instances of trees.

        The whole list is stored in batch.  When the database refuses it,
        each study is stored on its own: those still refused are recorded
        as sync problems of the server and the others are stored.
        """
        if not trees:
            return SyncStats()
        try:
            with savepoint('health_orthanc_batch'):
                stats = self._store_batch(trees)
        except REFUSALS:
            stats = self._store_one_by_one(trees)
        self.Problem.resolve(self.server, stats.studies)
        self.Study.mark_thumbnails_due(self.server, stats.studies)
        return stats

    def _store_one_by_one(self, trees):
        stats, refused = SyncStats(), []
        for tree in trees:
            try:
                with savepoint('health_orthanc_study'):
                    stats.add(self._store_batch([tree]))
            except REFUSALS as exc:
                reason = gettext('health_orthanc.msg_sync_problem_refused',
                    reason=refusal_reason(exc))
                refused.append((tree.study, reason))
                logger.warning("Orthanc study %s of %s not stored: %s",
                    tree.study['ID'], self.server.label, reason)
        self.Problem.record(self.server, refused)
        stats.problems += len(refused)
        return stats

    def _store_batch(self, trees):
        stats = SyncStats()
        studies = self._store_studies(trees, stats)
        series = self._store_series(trees, studies, stats)
        if not ondemand.on_demand(self.server):
            self._store_instances(trees, series)
        link_studies(list(studies.values()))
        stats.studies.update(studies)
        return stats

    def _store_studies(self, trees, stats):
        server = self.server
        values = {t.study['ID']: study_values(server, t) for t in trees}
        existing = self.Study.search([
                ('server', '=', server.id),
                ('orthanc_UID', 'in', list(values)),
                ])
        records, _ = upsert(self.Study, existing, values, stats)
        return records

    def _store_series(self, trees, studies, stats):
        "Series of the trees; those Orthanc no longer lists are deleted."
        Series = self.Series
        values = {}
        for tree in trees:
            study = studies[tree.study['ID']]
            counts = ondemand.series_instance_counts(tree, self.server)
            for series in tree.series:
                values[series['ID']] = series_values(
                    self.server, study, series, counts.get(series['ID'], 0))
        existing = Series.search([
                ('study', 'in', [s.id for s in studies.values()])])
        records, stale = upsert(Series, existing, values)
        kept = Series.written_by_people(stale)
        Series.delete([s for s in stale if s not in kept])
        Series.flag_missing(kept)
        for series in kept:  # their instances are kept too
            del records[series.orthanc_UID]
        return records

    def _store_instances(self, trees, series):
        "Instances of the trees; those Orthanc no longer lists are deleted."
        Instance = self.Instance
        values = {}
        for tree in trees:
            for instance in tree.instances:
                parent = series.get(instance.get('ParentSeries'))
                if parent:
                    values[instance['ID']] = instance_values(
                        self.server, parent, instance)
        existing = Instance.search([
                ('series', 'in', [s.id for s in series.values()])])
        _, stale = upsert(Instance, existing, values, records=False)
        Instance.delete(stale)


def change_mark(changes, seq):
    "Date and resource of the change numbered seq among changes, or None."
    for change in changes:
        if change.seq == seq:
            return '%s %s' % (change.date, change.resource_id)
    return None


def orthanc_ids_of(tree):
    yield tree.study['ID']
    for series in tree.series:
        yield series['ID']
        # On demand, the instances are not read: their IDs are listed.
        yield from series.get('Instances') or []
    for instance in tree.instances:
        yield instance['ID']


# --- linking ------------------------------------------------------------
def link_studies(studies):
    "Link studies to their patient, imaging request and result."
    studies = [s for s in studies if not s.manual_link]
    _link_patients([s for s in studies if not s.patient])
    _link_requests([s for s in studies
            if not s.imaging_request or not s.imaging_test])


def link_results(results):
    "Attach stored studies to imaging results created after them."
    Study = Pool().get(STUDY)
    results = [r for r in results if r.request]
    by_key = {key: r.request for r in results
        for key in request_keys(r.request)}
    if not by_key:
        return
    studies = Study.search([
            ('imaging_test', '=', None),
            ('manual_link', '!=', True),
            ['OR',
                ('study_instance_UID', 'in',
                    [v for k, v in by_key if k == 'uid']),
                ('accession_number', 'in',
                    [v for k, v in by_key if k == 'acc']),
                ],
            ])
    _write_request_links(studies, by_key, {r.request.id: r for r in results})


def patients_by_identifier(codes):
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


def _link_patients(studies):
    Study = Pool().get(STUDY)
    owners = patients_by_identifier(s.patient_id for s in studies)
    to_write = []
    for study in studies:
        patient = owners.get(study.patient_id)
        if patient:
            to_write.extend(([study], {'patient': patient.id}))
    if to_write:
        Study.write(*to_write)


def _link_requests(studies):
    Result = Pool().get('gnuhealth.imaging.test.result')
    if not studies:
        return
    by_key = requests_by_key(studies)
    if not by_key:
        return
    results = {r.request.id: r for r in Result.search([
                ('request', 'in', [r.id for r in set(by_key.values())]),
                ])}
    _write_request_links(studies, by_key, results)


def request_keys(request):
    "The keys by which a request names its study (see study_keys)."
    # The worklist's StudyInstanceUID (merge_id with
    # health_imaging_worklist, else the module's own: worklist.py).
    keys = [('uid', uid) for uid in request.study_uid_keys()]
    if request.request:
        keys.append(('acc', request.request))
    return keys


def study_keys(study):
    "The keys by which a study names its request, the surest first."
    keys = [('uid', study.study_instance_UID)]
    if study.accession_number:
        keys.append(('acc', study.accession_number))
    return keys


def requests_by_key(studies):
    "Requests matching the studies, keyed by ('uid'|'acc', value)."
    Request = Pool().get('gnuhealth.imaging.test.request')
    clauses = [Request.study_uid_domain(
            [s.study_instance_UID for s in studies])]
    accessions = [s.accession_number for s in studies if s.accession_number]
    if accessions:
        clauses.append(('request', 'in', accessions))
    if not clauses:
        return {}
    wanted = {key for s in studies for key in study_keys(s)}
    return {key: request for request in Request.search(['OR'] + clauses)
        for key in request_keys(request) if key in wanted}


def _write_request_links(studies, by_key, results):
    """Link each study to the request its keys name that is safe.

    by_key: the requests by study key (see study_keys); results: the
    result of each request, by request id.  The study's patient
    (its link, or the patient its PatientID names) must be the
    request's: a request of another patient is a conflict and is not
    linked.  A study whose patient nobody knows takes the request's
    patient, flagged to reconcile until a person confirms it.
    """
    pool = Pool()
    Study = pool.get(STUDY)
    Request = pool.get('gnuhealth.imaging.test.request')
    candidates = {}
    for study in studies:
        found = [(key, by_key[key]) for key in study_keys(study)
            if key in by_key]
        if found:
            candidates[study] = found
    owners = patients_by_identifier(s.patient_id for s in candidates)
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
        Study.write(*to_write)
    if conflicts:
        logger.info("%s Orthanc studies not linked to the imaging "
            "request of another patient (link review: conflict)",
            conflicts)
    if linked:
        Request.worklist_study_arrived(list(linked))
    if 'worklist_status' in Request._fields:
        done = [r for r in linked if r.worklist_status != 'done']
        if done:
            Request.write(done, {'worklist_status': 'done'})


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


# --- rows from Orthanc's answers ----------------------------------------
def count_by(items, key):
    counts = {}
    for item in items:
        counts[item.get(key)] = counts.get(item.get(key), 0) + 1
    return counts


def upsert(Model, existing, values_by_uid, stats=None, records=True):
    """Create or update records keyed by Orthanc ID.

    existing: the stored records that may match (one search by the caller).
    One create and one write call for the whole batch; records whose
    values are unchanged are not written.  Returns the records by Orthanc
    ID (the new ones as ids if not records) and the existing records that
    values_by_uid no longer has.
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
    created = bulk_create(Model, to_create, records)
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
    date = dicom_date(tags.get('StudyDate'))
    uid = clean(tags.get('StudyInstanceUID')) or tree.study['ID']
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
        'referring_physician_name': clean(person_name(
                tags.get('ReferringPhysicianName'))),
        'performing_physician_name': clean(person_name(performing)),
        'patient_name': clean(person_name(patient.get('PatientName'))),
        'patient_id': clean(patient.get('PatientID')),
        'patient_birth_date': dicom_date(
            patient.get('PatientBirthDate')),
        'patient_sex': clean(patient.get('PatientSex')),
        **study_summary(
            [s.get('MainDicomTags', {}).get('Modality') for s in tree.series],
            len(tree.series), ondemand.study_instance_count(tree, server)),
        'last_update': tree.study.get('LastUpdate'),
        'missing_on_orthanc': False,
        }


def series_values(server, study, series, instance_count):
    tags = series.get('MainDicomTags', {})
    number = dicom_int(tags.get('SeriesNumber'))
    return {
        'server': server.id,
        'study': study.id,
        'orthanc_UID': series['ID'],
        'series_UID': clean(tags.get('SeriesInstanceUID')) or series['ID'],
        'series_number': str(number) if number is not None else None,
        'series_description': clean(tags.get('SeriesDescription')),
        'modality': clean(tags.get('Modality')),
        'body_part': clean(tags.get('BodyPartExamined')),
        'instance_count': instance_count,
        'missing_on_orthanc': False,
        **ondemand.series_mirror_values(server, series),
        }


def instance_values(server, series, instance):
    tags = instance.get('MainDicomTags', {})
    number = dicom_int(tags.get('InstanceNumber'))
    fits = number is None or number in INTEGER_RANGE
    return {
        'server': server.id,
        'series': series.id,
        'orthanc_UID': instance['ID'],
        'sop_instance_UID': clean(tags.get('SOPInstanceUID'))
        or instance['ID'],
        'instance_number': number if fits else None,
        # Only a number the column cannot hold is kept as text.
        'instance_number_text': None if fits else str(number),
        'image_position_patient': clean(tags.get('ImagePositionPatient')),
        }
