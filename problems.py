# SPDX-License-Identifier: GPL-3.0-or-later
"""Sync problems: the studies of a server that the database refused.

A problem is written by the synchronisation when a study cannot be stored,
updated at each later attempt and deleted as soon as the study is stored
(or Orthanc no longer has it).  A problem without a study records that a
synchronisation was skipped because another one held the server.
"""
import datetime

from sql import Null

from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from .dicom import clean

SERVER_MODEL = 'gnuhealth.orthanc.config'
# Trees retried per run: a long list of refused studies cannot make every
# incremental sync slow; the oldest attempts go first.
RETRY_LIMIT = 100


class SyncProblem(ModelSQL, ModelView):
    "Orthanc Sync Problem"
    __name__ = 'gnuhealth.imaging_orthanc.sync_problem'

    server = fields.Many2One(SERVER_MODEL, 'Orthanc Server', required=True,
        readonly=True, ondelete='CASCADE')
    orthanc_id = fields.Char('Orthanc study', readonly=True,
        help="Orthanc ID of the study; empty for a problem of the server")
    study_instance_uid = fields.Char('Study UID', readonly=True)
    patient_id = fields.Char('Patient ID', readonly=True,
        help="DICOM PatientID of the study")
    reason = fields.Text('Reason', readonly=True)
    first_seen = fields.DateTime('First seen', readonly=True)
    last_seen = fields.DateTime('Last seen', readonly=True)
    attempts = fields.Integer('Attempts', readonly=True)
    study = fields.Function(fields.Many2One(
            'gnuhealth.imaging_orthanc.study', 'Stored study',
            help="The study as stored before the refused update, if any"),
        'get_study')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.server, Index.Equality()),
                (t.orthanc_id, Index.Equality())))
        cls._order = [('last_seen', 'DESC'), ('id', 'DESC')]

    @classmethod
    def get_study(cls, problems, name):
        Study = Pool().get('gnuhealth.imaging_orthanc.study')
        studies = {(s.server.id, s.orthanc_UID): s.id for s in Study.search([
                    # By server too: PostgreSQL's index starts with it.
                    ('server', 'in', list({p.server.id for p in problems})),
                    ('orthanc_UID', 'in',
                        [p.orthanc_id for p in problems if p.orthanc_id]),
                    ])}
        return {p.id: studies.get((p.server.id, p.orthanc_id))
            for p in problems}

    def get_rec_name(self, name):
        return ' - '.join(filter(None, [self.server.rec_name,
                    self.study_instance_uid or self.orthanc_id]))

    @classmethod
    def record(cls, server, refused):
        """Record refused studies: (orthanc_study, reason) pairs.

        orthanc_study is Orthanc's JSON of the study.  One search, one
        write and one create for the whole list.
        """
        if not refused:
            return
        now = datetime.datetime.now()
        existing = {p.orthanc_id: p for p in cls.search([
                    ('server', '=', server.id),
                    ('orthanc_id', 'in', [s['ID'] for s, _ in refused]),
                    ])}
        to_write, to_create = [], []
        for study, reason in refused:
            problem = existing.get(study['ID'])
            if problem:
                to_write.extend(([problem], {
                            'reason': reason,
                            'last_seen': now,
                            'attempts': (problem.attempts or 0) + 1,
                            }))
            else:
                to_create.append(problem_values(server, study, reason, now))
        if to_write:
            cls.write(*to_write)
        if to_create:
            cls.create(to_create)

    @classmethod
    def resolve(cls, server, orthanc_ids):
        "Delete the problems of the studies now stored or gone."
        if not orthanc_ids:
            return
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        # One statement, no read: this runs on every page of every sync.
        for sub_ids in grouped_slice(list(orthanc_ids)):
            cursor.execute(*table.delete(where=(table.server == server.id)
                    & table.orthanc_id.in_(list(sub_ids))))

    @classmethod
    def to_retry(cls, server):
        "Orthanc IDs of the refused studies to try again, oldest first."
        return [p['orthanc_id'] for p in cls.search_read([
                    ('server', '=', server.id),
                    ('orthanc_id', '!=', None),
                    ], order=[('last_seen', 'ASC')], limit=RETRY_LIMIT,
                fields_names=['orthanc_id'])]

    @classmethod
    def note_server(cls, server, reason):
        "A problem of the server itself, e.g. a skipped run."
        cls.note_servers([server], reason)

    @classmethod
    def note_servers(cls, servers, reason):
        "The same note on each server's form, e.g. a queued run."
        now = datetime.datetime.now()
        cls.create([{
                    'server': server.id,
                    'reason': reason,
                    'first_seen': now,
                    'last_seen': now,
                    'attempts': 1,
                    } for server in servers])

    @classmethod
    def clear_server_notes(cls, servers):
        "Delete the notes of skipped runs: this run is not skipped."
        if not servers:
            return
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.delete(
                where=table.server.in_([s.id for s in servers])
                & (table.orthanc_id == Null)))


def problem_values(server, study, reason, now):
    tags = study.get('MainDicomTags') or {}
    patient = study.get('PatientMainDicomTags') or {}
    return {
        'server': server.id,
        'orthanc_id': study['ID'],
        'study_instance_uid': clean(tags.get('StudyInstanceUID')),
        'patient_id': clean(patient.get('PatientID')),
        'reason': reason,
        'first_seen': now,
        'last_seen': now,
        'attempts': 1,
        }


class ProblemServer(metaclass=PoolMeta):
    __name__ = SERVER_MODEL

    sync_problems = fields.One2Many('gnuhealth.imaging_orthanc.sync_problem',
        'server', 'Sync problems', readonly=True,
        help="Studies the database refused, retried at each synchronization, "
        "synchronizations queued for the worker and not run yet, and "
        "synchronizations skipped because another one was running")


class ProblemStudy(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging_orthanc.study'

    sync_problem = fields.Function(fields.Boolean('Sync problem',
            help="The last update of this study from Orthanc was refused by "
            "the database: see the server's sync problems"),
        'get_sync_problem', searcher='search_sync_problem')

    @classmethod
    def _problem_query(cls, study=None):
        "Ids of the studies with an open problem (of study, a table)."
        Problem = Pool().get('gnuhealth.imaging_orthanc.sync_problem')
        study = study or cls.__table__()
        problem = Problem.__table__()
        return study.join(problem, condition=(problem.server == study.server)
            & (problem.orthanc_id == study.orthanc_UID)
            ).select(study.id)

    @classmethod
    def get_sync_problem(cls, studies, name):
        cursor = Transaction().connection.cursor()
        study = cls.__table__()
        query = cls._problem_query(study)
        result = {s.id: False for s in studies}
        for sub_ids in grouped_slice(list(result)):
            query.where = study.id.in_(list(sub_ids))
            cursor.execute(*query)
            for study_id, in cursor:
                result[study_id] = True
        return result

    @classmethod
    def search_sync_problem(cls, name, clause):
        _, operator, value = clause
        wanted = bool(value) if operator == '=' else not value
        return [('id', 'in' if wanted else 'not in', cls._problem_query())]
