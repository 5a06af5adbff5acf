# SPDX-License-Identifier: GPL-3.0-or-later
"""Instance mirroring per server: all instances, or on demand (issue 15).

On demand, the sync stores studies and series (with exact instance
counts, from the series' lists of instance IDs) and a series' instances
are read from Orthanc in one request and stored when someone opens the
series: Series.fetch_instances, for a list of series, is the one place
that does it.  A series' stored instances are refreshed when Orthanc's
LastUpdate of the series, or its instance count, is no longer the one they
were stored with.
"""
import logging

from sql import Literal
from sql.aggregate import Count

from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.rpc import RPC
from trytond.transaction import Transaction

from . import orthanc

logger = logging.getLogger(__name__)

SERVER = 'gnuhealth.orthanc.config'
SERIES = 'gnuhealth.imaging_orthanc.study_series'
INSTANCE = 'gnuhealth.imaging_orthanc.series_instances'
MODES = [
    ('all', 'All instances'),
    ('on_demand', 'On demand'),
    ]
# A read of the instances of more series than this is a list, not a series
# being opened: it gets what is stored, without asking Orthanc.
FETCH_ON_READ = 10


class Server(metaclass=PoolMeta):
    __name__ = SERVER
    instance_mirroring = fields.Selection(MODES, 'Instances mirrored',
        required=True, sort=False,
        help="All instances: the sync stores every instance of every "
        "series.\nOn demand: the sync stores studies and series only; the "
        "instances of a series are read from Orthanc and stored when the "
        "series is opened (for archives with many images).")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        # An imaging administrator's setting (roles.Server, model log).
        cls._people_fields = cls._people_fields | {'instance_mirroring'}

    @classmethod
    def default_instance_mirroring(cls):
        return 'all'  # the behaviour of the earlier versions

    @property
    def instances_on_demand(self):
        return self.instance_mirroring == 'on_demand'


class Series(metaclass=PoolMeta):
    __name__ = SERIES
    last_update = fields.Char('Orthanc last update', readonly=True,
        help="Orthanc's LastUpdate of the series")
    instances_update = fields.Char('Instances stored at', readonly=True,
        help="Orthanc's LastUpdate of the series when its instances were "
        "stored")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        # Opening a series may store its instances (on-demand servers).
        cls.__rpc__['read'] = RPC(readonly=False)

    @classmethod
    def read(cls, ids, fields_names):
        if 'instances' in fields_names and len(ids) <= FETCH_ON_READ:
            cls.fetch_instances(cls.browse(ids))
        return super().read(ids, fields_names)

    @classmethod
    def fetch_instances(cls, series_list):
        """Store the instances of the series whose stored instances are
        not Orthanc's: one request per such series.  Orthanc unreachable
        or the series gone: what is stored stays (logged)."""
        if Transaction().readonly:
            return
        ids = [s.id for s in series_list]
        with Transaction().set_context(_check_access=False), \
                Transaction().set_user(0):
            for series in cls.stale_instances(cls.browse(ids)):
                cls._fetch_series_instances(series)

    @classmethod
    def stale_instances(cls, series_list):
        """The series whose stored instances are missing or out of date:
        stored with another LastUpdate of the series, or not as many as
        the series has (one query for the list)."""
        # A series Orthanc no longer has keeps what it had.
        series_list = [s for s in series_list
            if s.server and not s.missing_on_orthanc]
        if not series_list:
            return []
        stored = stored_instance_counts([s.id for s in series_list])
        return [s for s in series_list
            if s.instances_update != s.last_update
            or stored.get(s.id, 0) != (s.instance_count or 0)]

    @classmethod
    def _fetch_series_instances(cls, series):
        from .sync import instance_values, upsert
        Instance = Pool().get(INSTANCE)
        server = series.server
        try:
            found = server.client.series_instances(series.orthanc_UID)
        except orthanc.OrthancError as exc:
            logger.info("Instances of series %s not read from %s: %s",
                series.orthanc_UID, server.label, exc)
            return
        values = {i['ID']: instance_values(server, series, i) for i in found}
        existing = Instance.search([('series', '=', series.id)])
        _, stale = upsert(Instance, existing, values, records=False)
        Instance.delete(stale)
        cls.write([series], {'instances_update': series.last_update})


def stored_instance_counts(series_ids):
    "Number of stored instances by series id."
    Instance = Pool().get(INSTANCE)
    table = Instance.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(table.series, Count(Literal('*')),
            where=table.series.in_(series_ids), group_by=[table.series]))
    return dict(cursor)


def on_demand(server):
    "True if the sync leaves the instances of server to be fetched."
    return getattr(server, 'instance_mirroring', 'all') == 'on_demand'


def series_instance_counts(tree, server):
    """Instance count by series ID: the stored instances when they are
    mirrored, the series' own lists of instance IDs on demand."""
    if not on_demand(server):
        counts = {}
        for item in tree.instances:
            key = item.get('ParentSeries')
            counts[key] = counts.get(key, 0) + 1
        return counts
    return {s['ID']: len(s.get('Instances') or []) for s in tree.series}


def study_instance_count(tree, server):
    "Instances of a study: those read, or those its series list."
    if not on_demand(server):
        return len(tree.instances)
    return sum(series_instance_counts(tree, server).values())


def series_mirror_values(server, series):
    """Values of a series for the choice of its server: its LastUpdate, and
    with all instances the mark that they are stored with it."""
    values = {'last_update': series.get('LastUpdate')}
    if not on_demand(server):
        values['instances_update'] = series.get('LastUpdate')
    return values
