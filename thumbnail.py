# SPDX-License-Identifier: GPL-3.0-or-later
"""A small picture of each study for the imaging timelines (patient,
result, study list).

Orthanc renders it once, after a sync stored a new or changed study: the
sync only marks the study (thumbnail_due, a one-line hook in
sync.ServerSync.store_trees), and the rendering runs after
it, one Orthanc call per study, so that the sync itself (and its bulk
first copy) makes no more calls than before.  Lists then read the stored
picture from the database, never from Orthanc.
"""
import logging

from sql import Literal

from trytond.model import Index, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction, without_check_access

from . import orthanc
from .sync import queue_worker

logger = logging.getLogger(__name__)

STUDY = 'gnuhealth.imaging_orthanc.study'
SERVER = 'gnuhealth.orthanc.config'
THUMBNAIL_SIZE = 128  # pixels, the longer side
# Studies rendered in one go: after a sync clicked in a client (the rest
# waits for the next sync), or per transaction in the worker and cron.
INLINE_LIMIT = 100
BATCH = 100
# Series of these modalities hold no picture (reports, key images, states).
NO_PICTURE = {'SR', 'DOC', 'KO', 'PR', 'REG', 'RWV', 'FID', 'PLAN',
    'RTPLAN', 'RTRECORD', 'RTSTRUCT', 'AU', 'ECG'}
# A study whose picture Orthanc cannot make gets none: the others go on.
STUDY_FAILURES = (orthanc.NotFound, orthanc.Rejected, orthanc.TooLarge)


class Study(metaclass=PoolMeta):
    __name__ = STUDY

    thumbnail = fields.Binary('Preview', readonly=True,
        help="A small picture of the study, made by Orthanc when the study "
        "arrived or changed")
    thumbnail_due = fields.Boolean('Preview to make', readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.thumbnail_due, Index.Equality()),
                where=t.thumbnail_due == Literal(True)))

    @classmethod
    def __register__(cls, module):
        table_h = cls.__table_handler__(module)
        added = not table_h.column_exist('thumbnail_due')
        super().__register__(module)
        if added:
            # Studies stored before previews existed get theirs from the
            # next syncs (in batches), not all during the upgrade.
            table = cls.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update([table.thumbnail_due], [True]))

    @staticmethod
    def default_thumbnail_due():
        return False

    @classmethod
    def mark_thumbnails_due(cls, server, orthanc_ids):
        """One UPDATE per slice: the studies a sync stored (new or
        changed) get a new picture (hook in sync.ServerSync.store_trees)."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        for sub_ids in grouped_slice(list(orthanc_ids)):
            cursor.execute(*table.update([table.thumbnail_due], [True],
                    where=(table.server == server.id)
                    & table.orthanc_UID.in_(list(sub_ids))))

    @classmethod
    @without_check_access
    def render_thumbnails(cls, servers, limit=INLINE_LIMIT):
        """Ask Orthanc for the pictures of the due studies of servers.

        Returns the number of studies done (with or without a picture).
        A server that stops answering is left for the next run.
        """
        done = 0
        for server in servers:
            studies = cls.search([
                    ('server', '=', server.id),
                    ('thumbnail_due', '=', True),
                    ], limit=limit)
            if studies:
                done += cls._render_for_server(server, studies)
        return done

    @classmethod
    def _render_for_server(cls, server, studies):
        chosen = representative_instances(studies)
        args = []
        try:
            client = server.client
            # Those needing no call first: a server going down keeps them.
            for study in sorted(studies, key=lambda s: s.id in chosen):
                values = {'thumbnail_due': False}
                instance = chosen.get(study.id)
                picture = study_picture(client, study, instance)
                if picture is not None or instance is None:
                    # a failed rendering keeps the picture it had
                    values['thumbnail'] = picture
                args.extend(([study], values))
        except orthanc.OrthancError as exc:
            logger.warning("Study previews of %s stopped: %s",
                server.label, exc)
        if args:
            cls.write(*args)
        return len(args) // 2


def study_picture(client, study, instance_id):
    "The study's picture, None when it has none (logged)."
    if instance_id is None:
        return None
    try:
        return client.thumbnail(instance_id, THUMBNAIL_SIZE)
    except STUDY_FAILURES as exc:
        logger.info("No preview for Orthanc study %s: %s",
            study.orthanc_UID, exc)
        return None


def representative_instances(studies):
    """{study id: Orthanc ID of the middle instance of its first series
    that holds pictures}, read for the whole list at once."""
    pool = Pool()
    Series = pool.get('gnuhealth.imaging_orthanc.study_series')
    Instance = pool.get('gnuhealth.imaging_orthanc.series_instances')
    series_rows = Series.search_read([
            ('study', 'in', [s.id for s in studies]),
            ('instance_count', '>', 0),
            ], fields_names=['study', 'series_number', 'modality'])
    first = {}
    for row in sorted(series_rows, key=series_order):
        if (row['modality'] or '').upper() not in NO_PICTURE:
            first.setdefault(row['study'], row['id'])
    instances = {}
    for row in instance_rows(Instance, list(first.values())):
        instances.setdefault(row['series'], []).append(row)
    result = {}
    for study_id, series_id in first.items():
        rows = sorted(instances.get(series_id, []), key=instance_order)
        if rows:
            result[study_id] = rows[len(rows) // 2]['orthanc_UID']
    return result


def instance_rows(Instance, series_ids):
    """id, series, instance_number and orthanc_UID of the instances of
    series_ids: plain queries (a series may hold thousands, read after
    every upload and sync)."""
    table = Instance.__table__()
    cursor = Transaction().connection.cursor()
    for sub_ids in grouped_slice(series_ids):
        cursor.execute(*table.select(table.id, table.series,
                table.instance_number, table.orthanc_UID,
                where=reduce_ids(table.series, sub_ids)))
        for id_, series, number, orthanc_uid in cursor:
            yield {'id': id_, 'series': series, 'instance_number': number,
                'orthanc_UID': orthanc_uid}


def series_order(row):
    number = row['series_number'] or ''
    return (not number.isdigit(), int(number) if number.isdigit() else 0,
        number, row['id'])


def instance_order(row):
    number = row['instance_number']
    return (number is None, number or 0, row['id'])


class Server(metaclass=PoolMeta):
    __name__ = SERVER

    @classmethod
    @ModelView.button
    def sync_changes(cls, servers):
        result = super().sync_changes(servers)
        if result is None:  # synchronized now, not queued
            Pool().get(STUDY).render_thumbnails(servers)
        return result

    @classmethod
    @ModelView.button
    def full_sync(cls, servers):
        result = super().full_sync(servers)
        if result is None:
            Pool().get(STUDY).render_thumbnails(servers)
        return result

    @classmethod
    def synchronize_apart(cls, kind, servers=None):
        "Cron and worker: after the sync, every due picture."
        super().synchronize_apart(kind, servers)
        cls.render_thumbnails_apart(servers)

    @classmethod
    @without_check_access
    def render_thumbnails_apart(cls, servers=None):
        "Batches in transactions of their own, until none is due."
        Study = Pool().get(STUDY)
        if servers is None:
            servers = cls.search([])
        for server_id in [s.id for s in servers]:
            while True:
                with Transaction().new_transaction():
                    if not Study.render_thumbnails([cls(server_id)],
                            limit=BATCH):
                        break
                    due = Study.search([
                            ('server', '=', server_id),
                            ('thumbnail_due', '=', True),
                            ], limit=1)
                if not due:
                    break


class SyncWizard:
    "After a sync the wizard ran itself, the pictures of what it stored."
    __slots__ = ()

    def transition_sync(self):
        pool = Pool()
        Server = pool.get(SERVER)
        Study = pool.get(STUDY)
        state = super().transition_sync()
        if not queue_worker():
            Study.render_thumbnails(
                list(self.start.servers) or Server.search([]))
        return state


class GetNewStudies(SyncWizard, metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging_orthanc.get_new_studies'


class FullSynchronize(SyncWizard, metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging_orthanc.full_synchronize'


class UploadImageData(metaclass=PoolMeta):
    "The pictures of the uploaded studies, as after a sync from a client."
    __name__ = 'gnuhealth.imaging_orthanc.upload_image_data'

    @classmethod
    def _sync_studies(cls, server, report):
        super()._sync_studies(server, report)
        if not queue_worker():
            Pool().get(STUDY).render_thumbnails([server])
