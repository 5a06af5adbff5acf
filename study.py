# SPDX-License-Identifier: GPL-3.0-or-later
"""GNU Health's mirror of Orthanc: studies, their series and instances.

Each model's fields and behaviour in one place: what synchronisation
stores (its engine is sync.py), viewer links, previews, images attached to
imaging results, deletion on Orthanc and linking studies to patients by
hand (the helpers and wizards of that clinical work are in clinical.py).
"""
import logging
from collections import Counter, defaultdict

from sql import Literal, Null, Table
from sql.aggregate import Count
from sql.functions import CurrentTimestamp, Trim

from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.model.exceptions import SQLConstraintError
from trytond.pool import Pool
from trytond.pyson import Bool, Eval, If
from trytond.tools import grouped_slice
from trytond.transaction import Transaction

from . import links, orthanc, roles
from .clinical import (
    MAX_CANDIDATES, _previews, delete_on_orthanc, log_deletion,
    raise_delete_errors, split_person_name)
from .exceptions import ImagingLinkError, OrthancServerError, describe_error

logger = logging.getLogger(__name__)

SERVER_MODEL = 'gnuhealth.orthanc.config'
STUDY = 'gnuhealth.imaging_orthanc.study'
SERIES = 'gnuhealth.imaging_orthanc.study_series'
INSTANCE = 'gnuhealth.imaging_orthanc.series_instances'
VIEWER_PLUGINS = links.VIEWER_PLUGINS
# Written when a person links, confirms or unlinks a study by hand.
LINK_REVIEW_CLEARED = {'link_review': None, 'link_review_reason': None}


def study_summary(modalities, series_count, instance_count):
    """A study's values that sum up its series (modalities: theirs, with
    repeats and blanks): from Orthanc's answer, or what is left after a
    deletion."""
    return {
        'modalities': ', '.join(sorted(set(modalities) - {None, ''}))
        or None,
        'series_count': series_count,
        'instance_count': instance_count,
        }


def link_field(string, **kwargs):
    "A browser link computed, for a whole list at once, by get_links."
    return fields.Function(fields.Char(string, **kwargs), 'get_links')


def viewer_field(string, flag):
    "A viewer link shown only where the server has the viewer's plugin."
    return link_field(string, states={'invisible': ~Eval(flag)})


def search_any(clause, names):
    "A rec_name clause applied to any of the fields names (all, if '!')."
    _, operator, value = clause
    bool_op = 'AND' if operator.startswith('!') else 'OR'
    return [bool_op] + [(name, operator, value) for name in names]


def installed_viewer_flags():
    "The VIEWER_PLUGINS flags that at least one server has."
    Server = Pool().get(SERVER_MODEL)
    flags = sorted(set(VIEWER_PLUGINS.values()))
    with Transaction().set_context(_check_access=False):
        rows = Server.search_read([], fields_names=flags)
    return {f for f in flags if any(row[f] for row in rows)}


class ViewerPlugins:
    """Viewer links of a list: a column only for viewers some server has,
    a cell only where the record's server has it (no network I/O)."""
    __slots__ = ()
    has_ohif = fields.Function(fields.Boolean('OHIF viewer'),
        'get_viewer_flags')
    has_stone = fields.Function(fields.Boolean('Stone Web Viewer'),
        'get_viewer_flags')
    has_webviewer = fields.Function(fields.Boolean('Orthanc Web Viewer'),
        'get_viewer_flags')

    @classmethod
    def get_viewer_flags(cls, records, names):
        return {name: {r.id: bool(r.server and getattr(r.server, name))
                for r in records} for name in names}

    @classmethod
    def view_attributes(cls):
        # fields_view_get caches this: the server clears that cache when
        # a check finds other plugins.
        installed = installed_viewer_flags()
        return super().view_attributes() + [
            ('/tree/field[@name="%s"]' % name, 'tree_invisible', 1)
            for name, flag in VIEWER_PLUGINS.items()
            if name in cls._fields and flag not in installed]


def viewer_links(records, names, build):
    """Compute link fields for a whole list of records at once.

    build(record, base) returns {name: url-or-None}; base is the server's
    public URL.  Reading record.server goes through Tryton's cache, so a
    list of records costs one read of their servers.
    """
    result = {name: {r.id: None for r in records} for name in names}
    for record in records:
        server = record.server
        if not server or not server.public_url:
            continue
        for name, url in build(record, server).items():
            if name in result:
                result[name][record.id] = url
    return result


class UniqueOrthancId:
    """Unique per server on the Orthanc ID, looked up through an index.

    SQLite cannot hold the constraint and trytond 7.0 then checks it with
    one OR of equalities per record that SQLite answers by scanning the
    table (measured: a 3,000-row batch took 4.6 s at 36,000 rows, growing
    with the table).  There we check it with one indexed, grouped query.
    """
    __slots__ = ()
    _unique_message = None

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        if backend.name == 'sqlite':
            cls._sql_indexes.add(Index(t, (t.orthanc_UID, Index.Equality()),
                    (t.server, Index.Equality())))
        else:
            # The constraint's index serves the lookups by server and
            # Orthanc ID: a second index on the same columns only slowed
            # every insert (measured: a third of a bulk INSERT's time).
            cls._sql_constraints += [
                ('orthanc_uid_server_unique',
                    Unique(t, t.server, t.orthanc_UID), cls._unique_message),
                ]

    @classmethod
    def validate(cls, records):
        super().validate(records)
        if backend.name == 'sqlite':
            cls._check_orthanc_ids_unique(records)

    @classmethod
    def _check_orthanc_ids_unique(cls, records):
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        for sub_records in map(list, grouped_slice(records)):
            uids = [r.orthanc_UID for r in sub_records]
            servers = list({r.server.id for r in sub_records})
            cursor.execute(*table.select(table.orthanc_UID,
                    where=table.orthanc_UID.in_(uids)
                    & table.server.in_(servers),
                    group_by=[table.server, table.orthanc_UID],
                    having=Count(Literal('*')) > 1, limit=1))
            if cursor.fetchone():
                raise SQLConstraintError(gettext(cls._unique_message))


class PatientOrthancStudy(ViewerPlugins, UniqueOrthancId, ModelSQL,
        ModelView):
    "Orthanc Study"
    __name__ = 'gnuhealth.imaging_orthanc.study'
    _unique_message = 'health_orthanc.msg_study_unique'

    server = fields.Many2One(SERVER_MODEL, 'Orthanc Server', required=True,
        readonly=True, ondelete='CASCADE')
    # Links are set by synchronization and by the link wizard only.
    patient = fields.Many2One('gnuhealth.patient', 'Patient',
        ondelete='SET NULL', readonly=True,
        help="GNU Health patient this study belongs to")
    imaging_test = fields.Many2One('gnuhealth.imaging.test.result', 'Result',
        ondelete='SET NULL', readonly=True,
        domain=[If(Bool(Eval('patient')),
                ('patient', '=', Eval('patient', -1)), ())])
    imaging_request = fields.Many2One('gnuhealth.imaging.test.request',
        'Request', ondelete='SET NULL', readonly=True,
        domain=[If(Bool(Eval('patient')),
                ('patient', '=', Eval('patient', -1)), ())])
    date = fields.Char('Date', readonly=True,
        help="Study date as Orthanc has it (YYYY-MM-DD)")
    study_date = fields.Date('Study date', readonly=True)
    description = fields.Char('Description', readonly=True)
    accession_number = fields.Char('Accession number', readonly=True)
    patient_name = fields.Char('Orthanc Patient', readonly=True)
    patient_id = fields.Char('Patient ID', readonly=True,
        help="DICOM PatientID")
    patient_birth_date = fields.Date('Patient birth date', readonly=True)
    patient_sex = fields.Char('Patient sex', readonly=True)
    study_instance_UID = fields.Char('Study UID', readonly=True,
        required=True)
    orthanc_UID = fields.Char('Orthanc UID', readonly=True, required=True)
    merge_id = fields.Char('Merge ID', readonly=True,
        help="Identifier shared with the imaging test request "
        "(DICOM StudyInstanceUID set by the worklist)")
    merge_comment = fields.Char('Merge comment')
    institution = fields.Char('Institution', readonly=True)
    performing_physician_name = fields.Char('Physician', readonly=True)
    referring_physician_name = fields.Char('Referring physician',
        readonly=True)
    modalities = fields.Char('Modalities', readonly=True)
    series_count = fields.Integer('Series', readonly=True)
    instance_count = fields.Integer('Instances', readonly=True)
    last_update = fields.Char('Orthanc last update', readonly=True,
        help="Orthanc's LastUpdate of the study, to skip unchanged studies")
    series = fields.One2Many('gnuhealth.imaging_orthanc.study_series',
        'study', 'Series', readonly=True)
    notes = fields.Text('Study notes')
    ohif_viewer_link = viewer_field('OHIF Viewer', 'has_ohif')
    stone_viewer_link = viewer_field('Stone Viewer', 'has_stone')
    explorer_link = link_field('Orthanc Explorer')
    # The names and meanings of gnuhealth-orthanc 5.0.4.
    link_base_url = link_field('Link base URL',
        help="Public URL of the study's server, ending with a slash "
        "(earlier name)")
    gnuhealth_patient_name = fields.Function(fields.Char('Health Patient',
            help="Name of the linked GNU Health patient (earlier name)"),
        'get_gnuhealth_patient_name')
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
        cls._sql_indexes.update({
                # Linking looks studies up by these.
                Index(t, (t.study_instance_UID, Index.Equality())),
                Index(t, (t.accession_number, Index.Equality()),
                    where=t.accession_number != Null),
                Index(t, (t.patient_id, Index.Equality())),
                # The 'To review' and 'Missing on Orthanc' lists count these.
                Index(t, (t.link_review, Index.Equality()),
                    where=t.link_review != Null),
                Index(t, (t.missing_on_orthanc, Index.Equality()),
                    where=t.missing_on_orthanc == Literal(True)),
                })
        cls._order = [
            ('study_date', 'DESC NULLS LAST'),
            ('id', 'DESC'),
            ]
        cls._buttons.update({
                'link_patient': {
                    'invisible': roles.imaging_only(),
                    'icon': 'tryton-link',
                    },
                'unlink_patient': {
                    'invisible': (roles.imaging_only()
                        | (~Eval('patient') & ~Eval('imaging_test')
                            & ~Eval('imaging_request'))),
                    'depends': ['patient', 'imaging_test', 'imaging_request'],
                    'icon': 'tryton-clear',
                    },
                'delete_study': {
                    'invisible': roles.admin_only(),
                    'icon': 'tryton-delete',
                    },
                })

    @classmethod
    def __register__(cls, module):
        table_h = cls.__table_handler__(module)
        # The earlier health_orthanc stored the server's URL as text.
        migrate_server = (table_h.column_exist('server')
            and table_h.column_is_type('server', 'VARCHAR'))
        if migrate_server:
            table_h.column_rename('server', 'server_url')
        super().__register__(module)
        table_h = cls.__table_handler__(module)
        # One StudyInstanceUID may exist under several PatientIDs.
        table_h.drop_constraint('studyUID_unique')
        if migrate_server:
            cls._migrate_server_url(module)
            table_h.drop_column('server_url')

    @classmethod
    def _migrate_server_url(cls, module):
        "Point each study to the server whose URL it stored as text."
        cursor = Transaction().connection.cursor()
        study = cls.__table__()
        server = Table('gnuhealth_orthanc_config')
        cursor.execute(*server.select(server.id, server.domain))
        by_url = {(d or '').strip().rstrip('/'): i for i, d in cursor}
        cursor.execute(*study.select(study.server_url,
                where=study.server_url != Null, group_by=[study.server_url]))
        for url, in cursor.fetchall():
            server_id = by_url.get(url.strip().rstrip('/'))
            if server_id is None:
                server_id = cls._create_unknown_server(url)
                by_url[url.strip().rstrip('/')] = server_id
            cursor.execute(*study.update([study.server], [server_id],
                    where=Trim(study.server_url) == url.strip()))

    @classmethod
    def _create_unknown_server(cls, url):
        "Register a server, left unvalidated, for a URL no record has."
        cursor = Transaction().connection.cursor()
        server = Table('gnuhealth_orthanc_config')
        url = url.strip().rstrip('/')
        cursor.execute(*server.insert(
                [server.label, server.domain, server.validated,
                    server.last_changed_index, server.timeout,
                    server.verify_tls, server.create_uid, server.create_date],
                [[url, url, False, -1, 30.0, True, 0, CurrentTimestamp()]]))
        cursor.execute(*server.select(server.id,
                where=server.domain == url))
        server_id, = cursor.fetchone()
        return server_id

    @classmethod
    def get_links(cls, studies, names):
        def build(study, server):
            base = server.public_url
            return {
                'ohif_viewer_link': (links.ohif(base, study.study_instance_UID)
                    if server.has_ohif else None),
                'stone_viewer_link': (
                    links.stone(base, study.study_instance_UID)
                    if server.has_stone else None),
                'explorer_link': links.explorer_study(base, study.orthanc_UID),
                'link_base_url': server.link_base_url,
                }
        return viewer_links(studies, names, build)

    @classmethod
    def get_gnuhealth_patient_name(cls, studies, name):
        return {s.id: s.patient.rec_name if s.patient else None
            for s in studies}

    def get_rec_name(self, name):
        parts = [self.date, self.description or self.modalities,
            self.patient_name]
        return ' - '.join(p for p in parts if p) or self.study_instance_UID

    @classmethod
    def search_rec_name(cls, name, clause):
        return search_any(clause, ['description', 'patient_name',
                'patient_id', 'accession_number', 'study_instance_UID'])

    # --- synchronisation (its engine is sync.py) ------------------------
    @classmethod
    def get_new_studies(cls):
        "Incremental sync of every server (name kept from the spec)."
        Server = Pool().get(SERVER_MODEL)
        return Server.synchronize(None, 'incremental')

    @classmethod
    def full_synchronize(cls):
        "Full reconciliation of every server (name kept from the spec)."
        Server = Pool().get(SERVER_MODEL)
        return Server.synchronize(None, 'full')

    @classmethod
    def written_by_people(cls, studies):
        """The studies among studies that carry what a person wrote or
        decided: notes (on the study or one of its series), a merge
        comment, a link by hand, a link to a request or a result, images
        attached from it to a result, Tryton notes or attachments on it or
        its series.  A few searches for the whole list."""
        Series = Pool().get(SERIES)
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

    # --- deletion -------------------------------------------------------
    @classmethod
    @ModelView.button
    def delete_study(cls, studies):
        "Delete studies on Orthanc, then in GNU Health."
        done, errors = delete_on_orthanc(studies,
            lambda client, uid: client.delete_study(uid),
            'msg_delete_study_failed',
            lambda s: {'study': s.rec_name})
        if done:
            log_deletion(cls, done)
            cls.delete(done)
        raise_delete_errors(errors, done)
        # Lists search again; custom.js drops the deleted records in SAO.
        return 'reload'

    @classmethod
    def remove_series(cls, studies):
        """Bring studies up to date after some of their series were deleted.

        A study left without series is deleted, as Orthanc does.
        """
        Series = Pool().get(SERIES)
        studies = list(set(studies))
        if not studies:
            return
        remaining = defaultdict(list)
        for series in Series.search([
                    ('study', 'in', [s.id for s in studies]),
                    ]):
            remaining[series.study.id].append(series)
        empty = [s for s in studies if not remaining[s.id]]
        to_write = []
        for study in studies:
            series_list = remaining[study.id]
            if not series_list:
                continue
            to_write.extend(([study], study_summary(
                        [s.modality for s in series_list], len(series_list),
                        sum(s.instance_count or 0 for s in series_list))))
        if to_write:
            cls.write(*to_write)
        if empty:
            log_deletion(cls, empty)
            cls.delete(empty)

    # --- manual linking -------------------------------------------------
    @classmethod
    @ModelView.button_action('health_orthanc.act_study_link_patient')
    def link_patient(cls, studies):
        pass

    @classmethod
    @ModelView.button
    def unlink_patient(cls, studies):
        "Detach studies from their patient, request and result for good."
        cls.write(list(studies), {
                'patient': None,
                'imaging_request': None,
                'imaging_test': None,
                'manual_link': True,
                **LINK_REVIEW_CLEARED,
                })

    @classmethod
    def link_to_patient(cls, studies, patient, result=None):
        """Link studies by hand to patient and optionally to a result.

        A request of another patient is dropped; synchronisation leaves the
        links alone from now on, and the study no longer needs review.
        """
        to_write = []
        for study in studies:
            values = {
                'patient': patient.id,
                'imaging_test': result.id if result else None,
                'manual_link': True,
                **LINK_REVIEW_CLEARED,
                }
            if result:
                values['imaging_request'] = (
                    result.request.id if result.request else None)
            elif (study.imaging_request
                    and study.imaging_request.patient != patient):
                values['imaging_request'] = None
            to_write.extend(([study], values))
        if to_write:
            cls.write(*to_write)

    @classmethod
    def patient_candidates(cls, studies, limit=MAX_CANDIDATES):
        """Patients who may be the person of studies, best first.

        Found by PatientID (PUID or an alternative identifier), family name
        and birth date, in one search; scored 4, 2 (+1 for a given name)
        and 1.  Returns [(score, patient)].
        """
        Patient = Pool().get('gnuhealth.patient')
        ids = {s.patient_id for s in studies if s.patient_id}
        names = [split_person_name(s.patient_name) for s in studies]
        families = {f.lower() for f, _ in names if f}
        given = {g.lower() for _, gs in names for g in gs}
        dobs = {s.patient_birth_date for s in studies if s.patient_birth_date}
        clauses = []
        if ids:
            clauses.append(('puid', 'in', sorted(ids)))
            clauses.append(('party.alternative_ids.code', 'in', sorted(ids)))
        for family in sorted(families):
            clauses.append(('party.lastname', 'ilike', family))
        if dobs:
            clauses.append(('party.dob', 'in', sorted(dobs)))
        if not clauses:
            return []
        scored = []
        for patient in Patient.search(['OR'] + clauses, limit=10 * limit):
            party = patient.party
            codes = {a.code for a in party.alternative_ids} | {party.ref}
            score = 0
            if codes & ids:
                score += 4
            if (party.lastname or '').lower() in families:
                score += 2
                if {n.lower() for n in (party.name or '').split()} & given:
                    score += 1
            if party.dob and party.dob in dobs:
                score += 1
            scored.append((score, patient))
        scored.sort(key=lambda s: (-s[0], s[1].rec_name, s[1].id))
        return scored[:limit]


class MirroredChild(UniqueOrthancId):
    """A series or an instance, whose server is copied from its parent in
    databases of the earlier module, which stored it on studies only."""
    __slots__ = ()
    _parent_field = None
    _parent_model = None

    @classmethod
    def __register__(cls, module):
        had_server = cls.__table_handler__(module).column_exist('server')
        super().__register__(module)
        if not had_server:
            cls._server_from_parent()

    @classmethod
    def _server_from_parent(cls):
        Parent = Pool().get(cls._parent_model)
        cursor = Transaction().connection.cursor()
        child, parent = cls.__table__(), Parent.__table__()
        cursor.execute(*child.update([child.server], parent.select(
                    parent.server,
                    where=parent.id == getattr(child, cls._parent_field))))


class StudySeries(ViewerPlugins, MirroredChild, ModelSQL, ModelView):
    "Orthanc Series"
    __name__ = 'gnuhealth.imaging_orthanc.study_series'
    _parent_field = 'study'
    _parent_model = 'gnuhealth.imaging_orthanc.study'
    _unique_message = 'health_orthanc.msg_series_unique'

    study = fields.Many2One('gnuhealth.imaging_orthanc.study', 'Study',
        required=True, readonly=True, ondelete='CASCADE')
    server = fields.Many2One(SERVER_MODEL, 'Orthanc Server', required=True,
        readonly=True, ondelete='CASCADE')
    orthanc_UID = fields.Char('Orthanc UID', readonly=True, required=True)
    series_number = fields.Char('Series No.', readonly=True)
    series_description = fields.Char('Description', readonly=True)
    series_UID = fields.Char('Series UID', readonly=True, required=True)
    modality = fields.Char('Modality', readonly=True)
    body_part = fields.Char('Body part', readonly=True)
    instance_count = fields.Integer('Instances', readonly=True)
    notes = fields.Text('Series notes')
    instances = fields.One2Many('gnuhealth.imaging_orthanc.series_instances',
        'series', 'Instances', readonly=True)
    stone_viewer_link = viewer_field('Stone Viewer', 'has_stone')
    web_viewer_link = viewer_field('Orthanc Web Viewer', 'has_webviewer')
    missing_on_orthanc = fields.Boolean('Missing on Orthanc', readonly=True,
        help="Orthanc no longer lists this series; it is kept because it "
        "carries notes")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('study', 'DESC'), ('series_number', 'ASC'),
            ('id', 'ASC')]
        cls._buttons.update({
                'delete_series': {
                    'invisible': roles.admin_only(),
                    'icon': 'tryton-delete',
                    },
                })

    @classmethod
    def get_links(cls, series_list, names):
        def build(series, server):
            base = server.public_url
            return {
                'stone_viewer_link': (links.stone(base,
                        series.study.study_instance_UID, series.series_UID)
                    if server.has_stone else None),
                'web_viewer_link': (links.web_viewer(base, series.orthanc_UID)
                    if server.has_webviewer else None),
                }
        return viewer_links(series_list, names, build)

    def get_rec_name(self, name):
        parts = [self.modality, self.series_number, self.series_description]
        return ' '.join(p for p in parts if p) or self.series_UID

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

    @classmethod
    @ModelView.button
    def delete_series(cls, series_list):
        """Delete series on Orthanc, then in GNU Health.

        A study whose last series is deleted is deleted too.
        """
        Study = Pool().get(STUDY)
        done, errors = delete_on_orthanc(series_list,
            lambda client, uid: client.delete_series(uid),
            'msg_delete_series_failed',
            lambda s: {'series': s.rec_name, 'study': s.study.rec_name})
        if done:
            studies = [s.study for s in done]
            log_deletion(cls, done)
            cls.delete(done)
            Study.remove_series(studies)
        raise_delete_errors(errors, done)
        return 'reload'


class SeriesInstances(MirroredChild, ModelSQL, ModelView):
    "Orthanc Instance"
    __name__ = 'gnuhealth.imaging_orthanc.series_instances'
    _parent_field = 'series'
    _parent_model = 'gnuhealth.imaging_orthanc.study_series'
    _unique_message = 'health_orthanc.msg_instance_unique'

    series = fields.Many2One('gnuhealth.imaging_orthanc.study_series',
        'Series', required=True, readonly=True, ondelete='CASCADE')
    server = fields.Many2One(SERVER_MODEL, 'Orthanc Server', required=True,
        readonly=True, ondelete='CASCADE')
    sop_instance_UID = fields.Char('SOP Instance UID', readonly=True,
        required=True)
    orthanc_UID = fields.Char('Orthanc UID', readonly=True, required=True)
    instance_number = fields.Integer('Instance number', readonly=True)
    image_position_patient = fields.Char('Image position (patient)',
        readonly=True)
    instance_number_text = fields.Char('Instance number (text)',
        readonly=True,
        help="DICOM InstanceNumber too large for the number field")
    preview = fields.Function(fields.Binary('Preview'), 'get_preview')
    preview_message = fields.Function(fields.Char('Preview status'),
        'get_preview')
    # gnuhealth-orthanc 5.0.4's name for the preview.
    image = fields.Function(fields.Binary('Image',
            help="The preview (earlier name)"), 'get_preview')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('series', 'ASC'), ('instance_number', 'ASC NULLS LAST'),
            ('id', 'ASC')]
        cls._buttons.update({
                'attach_image_to_imaging_test_report': {
                    'icon': 'tryton-attach',
                    },
                })

    def get_rec_name(self, name):
        if self.instance_number is not None:
            return '%s #%s' % (self.series.rec_name, self.instance_number)
        return self.sop_instance_UID

    # --- preview --------------------------------------------------------
    @classmethod
    def get_preview(cls, instances, names):
        """The PNG preview and why there is none.

        Orthanc is asked only when exactly one instance is read, as a form
        does: lists get None without any request.
        """
        result = {n: {i.id: None for i in instances} for n in names}
        if len(instances) != 1:
            return result
        instance, = instances
        image, message = instance._preview()
        values = {'preview': image, 'image': image,
            'preview_message': message}
        for name in names:
            result[name][instance.id] = values[name]
        return result

    def get_image(self, name=None):
        "The PNG preview or None, as gnuhealth-orthanc 5.0.4's get_image."
        return self._preview()[0]

    def _preview(self):
        "(PNG, None) or (None, why there is no preview)."
        server = self.server
        try:
            image = self._fetch_preview()
        except orthanc.NotAnImage:
            return None, gettext('health_orthanc.msg_preview_not_image')
        except orthanc.OrthancError as exc:
            logger.info("No preview of %s from %s: %s",
                self.orthanc_UID, server.label, exc)
            return None, gettext('health_orthanc.msg_preview_failed',
                server=server.label, reason=describe_error(exc))
        return image, None

    # --- attaching to imaging results -----------------------------------
    @classmethod
    @ModelView.button_action('health_orthanc.act_attach_to_imaging_test')
    def attach_image_to_imaging_test_report(cls, instances):
        """Open the attach wizard (the one path that attaches, also in the
        list's actions); the name is gnuhealth-orthanc 5.0.4's."""

    @classmethod
    def attach_to_imaging_test(cls, instances):
        """Attach the PNG of each instance to its study's imaging result.

        All or nothing: an instance whose study has no result, or that
        Orthanc cannot render, stops it before anything is stored.  An
        instance attached before has its attachment updated.
        """
        Attachment = Pool().get('ir.attachment')
        instances = list(dict.fromkeys(instances))
        if not instances:
            return
        for instance in instances:
            study = instance.series.study
            if not study.imaging_test:
                raise ImagingLinkError(gettext(
                        'health_orthanc.msg_attach_no_result',
                        study=study.rec_name, uid=study.study_instance_UID))
        results = {i.series.study.imaging_test for i in instances}
        refused = results - set(roles.writable(results))
        if refused:
            raise ImagingLinkError(gettext(
                    'health_orthanc.msg_attach_result_not_writable',
                    result=', '.join(sorted(r.rec_name for r in refused))))
        names = cls.attachment_names(instances)
        existing = {(str(a.resource), a.name): a for a in Attachment.search([
                    ('resource', 'in', list({
                                str(i.series.study.imaging_test)
                                for i in instances})),
                    ('name', 'in', list(set(names.values()))),
                    ])}
        to_create, to_write = [], []
        for instance in instances:
            values = {
                'name': names[instance],
                'type': 'data',
                'data': instance._image_to_attach(),
                'description': instance.attachment_description,
                }
            resource = str(instance.series.study.imaging_test)
            attachment = existing.get((resource, names[instance]))
            if attachment:
                to_write.extend(([attachment], values))
            else:
                values['resource'] = resource
                to_create.append(values)
        if to_write:
            Attachment.write(*to_write)
        if to_create:
            Attachment.create(to_create)

    def _image_to_attach(self):
        with self.server.errors('msg_attach_failed', OrthancServerError,
                instance=self.rec_name):
            try:
                return self._fetch_preview()
            except orthanc.NotAnImage as exc:
                raise ImagingLinkError(gettext(
                        'health_orthanc.msg_attach_not_image',
                        instance=self.rec_name)) from exc

    def _fetch_preview(self):
        "The instance's PNG through the short-lived preview cache."
        server = self.server
        key = (Transaction().database.name, server.id, self.orthanc_UID)
        return _previews.get(key,
            lambda: server.client.preview(self.orthanc_UID))

    @classmethod
    def attachment_names(cls, instances):
        """Deterministic attachment names by instance.

        <StudyInstanceUID>-<SeriesNumber>-<InstanceNumber>.png; a missing
        number, or an instance number shared by several instances of the
        series, is replaced by the series or SOP instance UID.
        """
        series_ids = list({i.series.id for i in instances})
        numbers = Counter((v['series'], v['instance_number'])
            for v in cls.search_read([('series', 'in', series_ids)],
                fields_names=['series', 'instance_number']))
        names = {}
        for instance in instances:
            series = instance.series
            number = instance.instance_number
            if number is None or numbers[(series.id, number)] > 1:
                number = instance.sop_instance_UID
            names[instance] = '%s-%s-%s.png' % (
                series.study.study_instance_UID,
                series.series_number or series.series_UID, number)
        return names

    @property
    def attachment_description(self):
        return gettext('health_orthanc.msg_attachment_description',
            number=('-' if self.instance_number is None
                else self.instance_number),
            position=(self.image_position_patient or '-').replace('\\', ', '),
            series=self.series.rec_name,
            study=self.series.study.rec_name)


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
