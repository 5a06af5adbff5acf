# SPDX-License-Identifier: GPL-3.0-or-later
"""GNU Health's mirror of Orthanc: studies, their series and instances."""
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

from . import links

SERVER_MODEL = 'gnuhealth.orthanc.config'
VIEWER_PLUGINS = links.VIEWER_PLUGINS


def viewer_field(string, flag):
    "A viewer link shown only where the server has the viewer's plugin."
    return fields.Function(fields.Char(string,
            states={'invisible': ~Eval(flag)}), 'get_links')


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
        cls._sql_indexes.add(Index(t, (t.orthanc_UID, Index.Equality()),
                (t.server, Index.Equality())))
        if backend.name != 'sqlite':
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
    explorer_link = fields.Function(fields.Char('Orthanc Explorer'),
        'get_links')
    # The names and meanings of gnuhealth-orthanc 5.0.4.
    link_base_url = fields.Function(fields.Char('Link base URL',
            help="Public URL of the study's server, ending with a slash "
            "(earlier name)"),
        'get_links')
    gnuhealth_patient_name = fields.Function(fields.Char('Health Patient',
            help="Name of the linked GNU Health patient (earlier name)"),
        'get_gnuhealth_patient_name')

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
                })
        cls._order = [
            ('study_date', 'DESC NULLS LAST'),
            ('id', 'DESC'),
            ]

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

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('study', 'DESC'), ('series_number', 'ASC'),
            ('id', 'ASC')]

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

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('series', 'ASC'), ('instance_number', 'ASC NULLS LAST'),
            ('id', 'ASC')]

    def get_rec_name(self, name):
        if self.instance_number is not None:
            return '%s #%s' % (self.series.rec_name, self.instance_number)
        return self.sop_instance_UID
