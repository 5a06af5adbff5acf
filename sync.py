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
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field

from sql import Literal, Null, Select

from trytond import backend
from trytond.config import config
from trytond.exceptions import UserError
from trytond.i18n import gettext
from trytond.model import Index, ModelView, fields
from trytond.model.exceptions import ValidationError
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from . import orthanc, roles
from .bulk import bulk_create
from .exceptions import OrthancSyncBusy, OrthancSyncError
from .server import describe_error

logger = logging.getLogger(__name__)

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


class SyncServer(metaclass=PoolMeta):
    __name__ = 'gnuhealth.orthanc.config'

    last_change_mark = fields.Char('Change at the cursor', readonly=True,
        help="Date and resource of Orthanc's change at the stored cursor: "
        "another change there means that Orthanc was replaced")
    last_sync_notice = fields.Text('Last sync notice', readonly=True,
        help="What the last synchronization noticed: an Orthanc reset, "
        "studies the database refused")

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
        if queue_worker():
            return cls.queue_sync(servers, 'incremental')
        cls.synchronize(servers, 'incremental')

    @classmethod
    @ModelView.button
    def full_sync(cls, servers):
        "Reconcile every study of each server with Orthanc."
        if queue_worker():
            return cls.queue_sync(servers, 'full')
        cls.synchronize(servers, 'full')

    @classmethod
    def queue_sync(cls, servers, kind):
        """Leave the sync of servers to trytond's worker and say so.

        The note goes on each server's form (the sync that runs clears it);
        a problem row, not the server's row, so that a running sync, which
        holds that row, does not make the client wait.
        """
        Problem = Pool().get('gnuhealth.imaging_orthanc.sync_problem')
        cls.__queue__.run_queued_sync(servers, kind)
        with without_check_access():
            Problem.note_servers(servers, gettext(
                    'health_orthanc.msg_sync_queued_note', kind=kind))
        return 'reload'

    @classmethod
    def run_queued_sync(cls, servers, kind):
        """What the worker runs, as the user who queued it.

        A server already being synchronized is skipped with a note on its
        form and the task ends: the running sync stores the changes, and
        retrying would only queue up behind it.  A failure is recorded on
        the form too: the task ends cleanly either way.
        """
        cls.synchronize_apart(kind, servers)

    @classmethod
    def cron_sync_changes(cls):
        cls.synchronize_apart('incremental')

    @classmethod
    def cron_full_sync(cls):
        cls.synchronize_apart('full')

    @classmethod
    @without_check_access
    def synchronize_apart(cls, kind, servers=None):
        """Sync each server (all when None) in a transaction of its own.

        A server that fails, whatever the reason, rolls back no other one;
        its failure is recorded on its form.
        """
        if servers is None:
            servers = cls.search([])
        for server_id in [s.id for s in servers]:
            with Transaction().new_transaction() as transaction:
                try:
                    cls.synchronize([server_id], kind, raise_errors=False)
                except (*REFUSALS, backend.DatabaseOperationalError) as exc:
                    transaction.rollback()
                    cls(server_id)._record_database_failure(kind, exc)

    def _record_database_failure(self, kind, exc):
        error = OrthancSyncError(gettext(
                'health_orthanc.msg_sync_database_failed',
                server=self.label, reason=refusal_reason(exc)))
        self.__class__.write([self], self._sync_status(kind, error=error))
        logger.warning("Orthanc %s sync of %s failed in the database: %s",
            kind, self.label, refusal_reason(exc))

    @classmethod
    @without_check_access
    def synchronize(cls, servers, kind, raise_errors=True):
        "Sync servers (all when None); return the SyncStats of the run."
        if servers is None:
            servers = cls.search([])
        if not servers:
            return SyncStats()
        servers = cls._claim(cls.browse(servers), raise_errors)
        totals, failures = SyncStats(), []
        for server in servers:
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
                    "%s removed, %s refused", kind, server.label,
                    stats.created, stats.updated, stats.removed,
                    stats.problems)
        if failures and raise_errors:
            # Keep the pages stored before the failure and the error shown
            # on the server form: both are consistent with the cursor.
            Transaction().commit()
            raise failures[0]
        return totals

    @classmethod
    def _claim(cls, servers, raise_errors):
        """The servers this sync holds until the transaction ends.

        A non-blocking advisory lock (PostgreSQL) tells a second sync that
        one is running: it raises, or skips the server when raise_errors
        is off.  Then the rows are locked: under PostgreSQL's repeatable
        read this fails, and trytond retries with fresh data, when a sync
        that ended after this transaction began moved the cursor.
        trytond's lock() is not used: it restarts the transaction and its
        lock error could not be caught here.
        """
        Problem = Pool().get('gnuhealth.imaging_orthanc.sync_problem')
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        claimed = []
        for server in servers:
            cursor.execute(*Select([
                        transaction.database.lock_id(
                            sync_lock_key(server.id))]))
            held, = cursor.fetchone()
            if held:
                claimed.append(server)
            else:
                cls._skip_busy(server, raise_errors)
        if claimed and backend.name == 'postgresql':
            # NO KEY UPDATE (python-sql knows only UPDATE and SHARE) lets a
            # skipped sync still insert its note referencing the server.
            cursor.execute('SELECT 1 FROM "%s" WHERE id IN (%s) '
                'FOR NO KEY UPDATE' % (cls._table,
                    ', '.join(str(int(s.id)) for s in claimed)))
        Problem.clear_server_notes(claimed)
        return claimed

    @classmethod
    def _skip_busy(cls, server, raise_errors):
        "Record on the server's form that this run was skipped, and say so."
        Problem = Pool().get('gnuhealth.imaging_orthanc.sync_problem')
        message = gettext('health_orthanc.msg_sync_already_running',
            server=server.label)
        logger.info("Orthanc sync skipped: %s", message)
        # The running sync holds the server's row: a problem row of its own,
        # in a transaction of its own, is what can be written meanwhile.
        try:
            with Transaction().new_transaction():
                Problem.note_server(server, message)
        except backend.DatabaseOperationalError:
            # The running sync ended meanwhile: its outcome is on the form.
            logger.info("Skipped sync of %s not noted", server.label)
        if raise_errors:
            raise OrthancSyncBusy(message)

    def _sync_status(self, kind, stats=None, error=None):
        values = {
            'last_sync_date': datetime.datetime.now(),
            'last_sync_kind': kind,
            'last_sync_error': error.message if error else None,
            }
        if stats:
            notices = [stats.notice] if stats.notice else []
            if stats.problems:
                notices.append(gettext('health_orthanc.msg_sync_problems',
                        server=self.label, count=stats.problems))
            values.update({
                    'last_sync_created': stats.created,
                    'last_sync_updated': stats.updated,
                    'last_sync_removed': stats.removed,
                    'last_sync_notice': '\n'.join(notices) or None,
                    })
        return values

    def _sync_errors(self):
        return self.errors('msg_sync_failed', OrthancSyncError)

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
                    server=self.label, reason=refusal_reason(exc))) from exc

    def _sync_client(self):
        "The server's client; a CA bundle that cannot be read is named."
        try:
            return self.client
        except orthanc.TLSFailure as exc:
            reason = (gettext('health_orthanc.msg_reason_ca_bundle',
                    path=self.ca_bundle, detail=exc.reason)
                if self.verify_tls and self.ca_bundle
                else describe_error(exc))
            raise OrthancSyncError(gettext('health_orthanc.msg_sync_failed',
                    server=self.label, reason=reason)) from exc

    # --- incremental ----------------------------------------------------
    def _sync_changes(self):
        Study = Pool().get('gnuhealth.imaging_orthanc.study')
        client = self._sync_client()
        start_requests = client.request_count
        seq = max(self.last_changed_index or 0, 0)
        if not seq and self._mirror_empty():
            return self._first_sync_in_bulk()
        with self._sync_errors():
            # From the change at the cursor, to check it is still ours.
            page = client.changes_since(max(seq - 1, 0), CHANGES_PAGE)
        notice = self._orthanc_reset(seq, page)
        if notice:
            stats = self._full_sync()
            stats.notice = notice
            return stats
        covered = set()  # Orthanc IDs stored by this run, at every level
        stats = self._retry_problems(covered)
        while True:
            changes = [c for c in page.changes if c.seq > seq]
            with self._sync_errors():
                trees = self._trees_for_changes(changes, covered)
            with self._page():
                stats.add(Study.store_trees(self, trees))
                seq = max(seq, page.last)
                self.__class__.write([self], {
                        'last_changed_index': seq,
                        'last_change_mark': change_mark(page.changes, seq),
                        })
            if page.done or not changes:
                break
            with self._sync_errors():
                page = client.changes_since(seq, CHANGES_PAGE)
        stats.requests = client.request_count - start_requests
        return stats

    def _orthanc_reset(self, seq, page):
        """A notice when Orthanc's change log is not the one synchronised.

        Orthanc's log starts again from 0 on new storage: its last change
        is then below the cursor.  A replaced Orthanc that already logged
        more changes has another change at the cursor's position.
        """
        if not seq:
            return None
        if page.last < seq:
            return gettext('health_orthanc.msg_sync_orthanc_reset',
                server=self.label, cursor=seq, last=page.last)
        at_cursor = [c for c in page.changes if c.seq == seq]
        if (at_cursor and self.last_change_mark
                and change_mark(at_cursor, seq) != self.last_change_mark):
            return gettext('health_orthanc.msg_sync_orthanc_replaced',
                server=self.label, cursor=seq)
        return None

    def _retry_problems(self, covered):
        "Try again the studies the database refused before."
        pool = Pool()
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        Problem = pool.get('gnuhealth.imaging_orthanc.sync_problem')
        stats = SyncStats()
        orthanc_ids = Problem.to_retry(self)
        if not orthanc_ids:
            return stats
        with self._sync_errors():
            found = {i: self._study_or_none(i) for i in orthanc_ids}
            trees = self._fetch_trees(filter(None, found.values()), covered)
        with self._page():
            Problem.resolve(self, [i for i, s in found.items() if s is None])
            stats.add(Study.store_trees(self, trees))
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
    def _mirror_empty(self):
        Study = Pool().get('gnuhealth.imaging_orthanc.study')
        return not Study.search([('server', '=', self.id)], limit=1)

    def _first_sync_in_bulk(self):
        """Copy the whole archive into an empty mirror with paged /studies,
        /series and /instances (a few calls per thousand resources instead
        of two per study); stored by pages of studies, each page isolated
        as an incremental page is."""
        Study = Pool().get('gnuhealth.imaging_orthanc.study')
        Problem = Pool().get('gnuhealth.imaging_orthanc.sync_problem')
        client = self._sync_client()
        start_requests = client.request_count
        stats = SyncStats()
        with self._sync_errors():
            # Changes logged while we read are replayed by the next
            # incremental sync: take the cursor before reading.
            last = client.last_change()
            trees = client.all_trees(BULK_PAGE)
        pages = [list(p) for p in grouped_slice(trees, STUDIES_PAGE)] or [[]]
        seen = {t.study['ID'] for t in trees}
        for number, page in enumerate(pages, 1):
            with self._page():
                stats.add(Study.store_trees(self, page))
                if number == len(pages):
                    # With the last page, as an incremental page does.
                    Problem.resolve(self,
                        set(Problem.to_retry(self)) - seen)
                    self.__class__.write([self], {
                            'last_changed_index': last,
                            'last_change_mark': None,
                            })
        stats.requests = client.request_count - start_requests
        return stats

    def _full_sync(self):
        pool = Pool()
        Study = pool.get('gnuhealth.imaging_orthanc.study')
        Problem = pool.get('gnuhealth.imaging_orthanc.sync_problem')
        if self._mirror_empty():
            return self._first_sync_in_bulk()
        client = self._sync_client()
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
                with self._page():
                    stats.add(Study.store_trees(self, trees))
        with self._page():
            stats.add(Study.remove_missing(self, seen))
            Problem.resolve(self, set(Problem.to_retry(self)) - seen)
            self.__class__.write([self], {
                    'last_changed_index': last,
                    'last_change_mark': None,
                    })
        stats.requests = client.request_count - start_requests
        return stats


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
        """Create or update the studies, series and instances of trees.

        The whole list is stored in batch.  When the database refuses it,
        each study is stored on its own: those still refused are recorded
        as sync problems of the server and the others are stored.
        """
        Problem = Pool().get('gnuhealth.imaging_orthanc.sync_problem')
        if not trees:
            return SyncStats()
        try:
            with savepoint('health_orthanc_batch'):
                stats = cls._store_batch(server, trees)
        except REFUSALS:
            stats = cls._store_one_by_one(server, trees)
        Problem.resolve(server, stats.studies)
        return stats

    @classmethod
    def _store_one_by_one(cls, server, trees):
        Problem = Pool().get('gnuhealth.imaging_orthanc.sync_problem')
        stats, refused = SyncStats(), []
        for tree in trees:
            try:
                with savepoint('health_orthanc_study'):
                    stats.add(cls._store_batch(server, [tree]))
            except REFUSALS as exc:
                reason = gettext('health_orthanc.msg_sync_problem_refused',
                    reason=refusal_reason(exc))
                refused.append((tree.study, reason))
                logger.warning("Orthanc study %s of %s not stored: %s",
                    tree.study['ID'], server.label, reason)
        Problem.record(server, refused)
        stats.problems += len(refused)
        return stats

    @classmethod
    def _store_batch(cls, server, trees):
        stats = SyncStats()
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
        _, stale = upsert(Instance, existing, values, records=False)
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
        # The worklist's StudyInstanceUID (merge_id with
        # health_imaging_worklist, else the module's own: worklist.py).
        for uid, request in Request.by_study_uids(uids).items():
            by_key[('uid', uid)] = request
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
        if linked:
            Request.worklist_study_arrived(list(linked))
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
            for uid in request.study_uid_keys():
                by_key[('uid', uid)] = request
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


class SyncInstance(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging_orthanc.series_instances'

    instance_number_text = fields.Char('Instance number (text)',
        readonly=True,
        help="DICOM InstanceNumber too large for the number field")


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
    date = orthanc.dicom_date(tags.get('StudyDate'))
    uid = clean(tags.get('StudyInstanceUID')) or tree.study['ID']
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
        'referring_physician_name': clean(orthanc.person_name(
                tags.get('ReferringPhysicianName'))),
        'performing_physician_name': clean(orthanc.person_name(performing)),
        'patient_name': clean(orthanc.person_name(patient.get('PatientName'))),
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
        'series_UID': clean(tags.get('SeriesInstanceUID')) or series['ID'],
        'series_number': str(number) if number is not None else None,
        'series_description': clean(tags.get('SeriesDescription')),
        'modality': clean(tags.get('Modality')),
        'body_part': clean(tags.get('BodyPartExamined')),
        'instance_count': instance_count,
        'missing_on_orthanc': False,
        }


def instance_values(server, series, instance):
    tags = instance.get('MainDicomTags', {})
    number = orthanc.dicom_int(tags.get('InstanceNumber'))
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


def clean(value):
    "Orthanc's text for a tag, None when empty; no NUL (PostgreSQL refuses)."
    if value is None:
        return None
    value = str(value).replace('\x00', '').strip()
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
        if queue_worker():
            # A worker runs it: the client does not wait for a large sync.
            Server.queue_sync(servers, self.kind)
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
