# SPDX-License-Identifier: GPL-3.0-or-later
"""The registry of Orthanc servers, the wizard that adds one, and the
entry points of their synchronisation (buttons, cron, queued task, wizards),
which run the engine of sync.py."""
import datetime
import logging
from urllib.parse import urlsplit

from sql import Select

from trytond import backend
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool
from trytond.pyson import Bool, Eval
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from . import limits, links, orthanc, roles
from .exceptions import (
    OrthancServerError, OrthancSyncBusy, OrthancSyncError, ServerURLError,
    describe_error, orthanc_errors)
from .sync import (
    REFUSALS, ServerSync, SyncStats, queue_worker, refusal_reason,
    sync_lock_key)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
VIEWER_FLAGS = set(links.VIEWER_PLUGINS.values())

def presence(found):
    return gettext('health_orthanc.msg_present' if found
        else 'health_orthanc.msg_absent')


def normalize_url(value):
    "The URL without surrounding blanks nor trailing slash."
    return (value or '').strip().rstrip('/')


def is_valid_url(value):
    "An absolute http(s) URL carrying no credentials."
    try:
        parts = urlsplit(value)
        parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    return (parts.scheme in {'http', 'https'} and bool(parts.hostname)
        and not parts.username and not parts.password
        and not parts.query and not parts.fragment)


def copy_url(url, number):
    """A placeholder URL for the copy number of url's server.

    Under .invalid (RFC 6761), a name that never resolves: the copy cannot
    reach, nor be mistaken for, any real Orthanc until its URL is entered.
    """
    host = urlsplit(url or '').hostname or 'orthanc'
    return 'https://copy-%d.%s.invalid' % (number, host.strip('.'))


# What a check or a sync recorded about the server copied.
COPY_RESET = ['check_message', 'checked_at', 'orthanc_name',
    'orthanc_version', 'has_dicomweb', 'has_ohif', 'has_stone',
    'has_webviewer', 'last_sync_date', 'last_sync_kind', 'last_sync_created',
    'last_sync_updated', 'last_sync_removed', 'last_sync_error']


class ServerConfig(ModelSQL, ModelView):
    "Orthanc Server"
    __name__ = 'gnuhealth.orthanc.config'
    _rec_name = 'label'

    label = fields.Char('Label', required=True,
        help="Name shown to users for this Orthanc server")
    domain = fields.Char('URL', required=True,
        help="Full URL of the Orthanc REST API as GNU Health reaches it, "
        "e.g. https://pacs.example.org/orthanc")
    proxy_domain = fields.Char('Public URL',
        help="URL that users' browsers open for viewers and previews "
        "(e.g. through a reverse proxy). Empty: the URL above.")
    public_url = fields.Function(fields.Char('Public URL in use'),
        'on_change_with_public_url')
    user = fields.Char('User')
    password = fields.Char('Password', strip=False)
    verify_tls = fields.Boolean('Verify TLS certificate',
        help="Check the server's certificate (strongly recommended)")
    ca_bundle = fields.Char('CA bundle',
        states={'invisible': ~Eval('verify_tls')},
        help="Path on the GNU Health server of a CA bundle (PEM) to trust "
        "instead of the system's certificates")
    timeout = fields.Float('Timeout (s)', required=True,
        domain=[('timeout', '>', 0)])
    validated = fields.Boolean('Validated', readonly=True,
        help="The last connection check succeeded")
    last_changed_index = fields.Integer('Last change index', readonly=True,
        help="Sequence number of the last Orthanc change synchronised")
    check_message = fields.Text('Connection status', readonly=True)
    checked_at = fields.DateTime('Checked at', readonly=True)
    orthanc_name = fields.Char('Orthanc name', readonly=True)
    orthanc_version = fields.Char('Orthanc version', readonly=True)
    has_dicomweb = fields.Boolean('DICOMweb', readonly=True)
    has_ohif = fields.Boolean('OHIF viewer', readonly=True)
    has_stone = fields.Boolean('Stone Web Viewer', readonly=True)
    has_webviewer = fields.Boolean('Orthanc Web Viewer', readonly=True)
    last_sync_date = fields.DateTime('Last sync', readonly=True)
    last_sync_kind = fields.Selection([
            (None, ''),
            ('incremental', 'Incremental'),
            ('full', 'Full'),
            ], 'Last sync kind', readonly=True)
    last_sync_created = fields.Integer('Created', readonly=True)
    last_sync_updated = fields.Integer('Updated', readonly=True)
    last_sync_removed = fields.Integer('Removed', readonly=True)
    last_sync_error = fields.Text('Last sync error', readonly=True)
    last_change_mark = fields.Char('Change at the cursor', readonly=True,
        help="Date and resource of Orthanc's change at the stored cursor: "
        "another change there means that Orthanc was replaced")
    last_sync_notice = fields.Text('Last sync notice', readonly=True,
        help="What the last synchronization noticed: an Orthanc reset, "
        "studies the database refused")
    explorer_link = fields.Function(fields.Char('Orthanc Explorer'),
        'on_change_with_explorer_link')
    # The names and meanings of gnuhealth-orthanc 5.0.4 (its views,
    # reports and scripts use them): the public URL ending with a slash.
    link_base_url = fields.Function(fields.Char('Link base URL',
            help="Public URL ending with a slash (earlier name)"),
        'on_change_with_link_base_url')
    link = fields.Function(fields.Char('Link',
            help="Orthanc's public home page (earlier name)"),
        'on_change_with_link_base_url')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('label_unique', Unique(t, t.label),
                'health_orthanc.msg_label_unique'),
            ('domain_unique', Unique(t, t.domain),
                'health_orthanc.msg_domain_unique'),
            ]
        cls._order = [('label', 'ASC')]
        cls._buttons.update({
                'check_connection': {'invisible': roles.admin_only()},
                'sync_changes': {'invisible': roles.imaging_only()},
                'full_sync': {'invisible': roles.admin_only()},
                })

    @staticmethod
    def default_verify_tls():
        return True

    @staticmethod
    def default_timeout():
        return DEFAULT_TIMEOUT

    @staticmethod
    def default_validated():
        return False

    @staticmethod
    def default_last_changed_index():
        return -1

    @fields.depends('domain', 'proxy_domain')
    def on_change_with_public_url(self, name=None):
        return normalize_url(self.proxy_domain or self.domain) or None

    @fields.depends('domain', 'proxy_domain')
    def on_change_with_explorer_link(self, name=None):
        base = self.on_change_with_public_url()
        return links.explorer(base) if base else None

    @fields.depends('domain', 'proxy_domain')
    def on_change_with_link_base_url(self, name=None):
        base = self.on_change_with_public_url()
        return links.home(base) if base else None

    @classmethod
    def quick_check(cls, domain, user, password):
        """True when an Orthanc answers at domain with these credentials.
        Not for on_change methods: any user can call them with any values
        (issue 8), so they do no network I/O."""
        if not is_valid_url(normalize_url(domain)):
            return False
        client = orthanc.OrthancClient(normalize_url(domain), user, password,
            timeout=min(DEFAULT_TIMEOUT, 10), limits=limits.answer_limits())
        try:
            client.server_info()
        except orthanc.OrthancError as exc:
            logger.info("Orthanc check of %s failed: %s",
                orthanc.redact(normalize_url(domain)), describe_error(exc))
            return False
        finally:
            client.close()
        return True

    @staticmethod
    def _normalized(values):
        "Values with URLs stripped of blanks and trailing slashes."
        values = dict(values)
        for name in ('domain', 'proxy_domain'):
            if values.get(name) is not None:
                values[name] = normalize_url(values[name]) or None
        return values

    @classmethod
    def create(cls, vlist):
        servers = super().create([cls._normalized(v) for v in vlist])
        cls._viewers_changed()
        return servers

    @classmethod
    def delete(cls, servers):
        super().delete(servers)
        cls._viewers_changed()

    @staticmethod
    def _viewers_changed():
        "Views list a viewer column only if a server has its plugin."
        ModelView._fields_view_get_cache.clear()

    @classmethod
    def validate_fields(cls, servers, field_names):
        super().validate_fields(servers, field_names)
        if field_names & {'domain', 'proxy_domain'}:
            cls.check_urls(servers)

    @classmethod
    def check_urls(cls, servers):
        for server in servers:
            for name in ('domain', 'proxy_domain'):
                value = getattr(server, name)
                if value and not is_valid_url(value):
                    raise ServerURLError(gettext(
                            'health_orthanc.msg_invalid_url',
                            url=orthanc.redact(value), server=server.label))

    @classmethod
    def write(cls, *args):
        # A new address or account needs a new check before it is trusted.
        actions = iter(args)
        args = []
        for servers, values in zip(actions, actions):
            values = cls._normalized(values)
            if values.keys() & {'domain', 'user', 'password', 'verify_tls',
                    'ca_bundle'} and 'validated' not in values:
                values = {**values, 'validated': False}
            args.extend((servers, values))
        super().write(*args)
        if any(VIEWER_FLAGS & v.keys() for v in args[1::2]):
            cls._viewers_changed()

    @classmethod
    def copy(cls, servers, default=None):
        """A copy is a new, unchecked server: a label of its own and an URL
        that can never be reached until someone enters the real one."""
        default = dict(default or {})
        for name in COPY_RESET:
            default.setdefault(name, None)
        default.setdefault('last_changed_index', -1)
        default.setdefault('validated', False)
        labels, urls = cls._copy_placeholders(servers)
        default.setdefault('label', lambda data: labels[data['id']])
        default.setdefault('domain', lambda data: urls[data['id']])
        return super().copy(servers, default=default)

    @classmethod
    def _copy_placeholders(cls, servers):
        "Free labels and URLs for copies, by id of the server copied."
        existing = cls.search([])
        labels_taken = {s.label for s in existing}
        urls_taken = {s.domain for s in existing}
        labels, urls = {}, {}
        for server in servers:
            number = 1
            while True:
                label = gettext('health_orthanc.msg_copy_label',
                    label=server.label, number=number)
                url = copy_url(server.domain, number)
                if label not in labels_taken and url not in urls_taken:
                    break
                number += 1
            labels_taken.add(label)
            urls_taken.add(url)
            labels[server.id], urls[server.id] = label, url
        return labels, urls

    @property
    @without_check_access
    def client(self):
        "The shared adapter client of this server (one pool per server)."
        verify = (self.ca_bundle or True) if self.verify_tls else False
        return orthanc.client_for(self.domain, self.user, self.password,
            timeout=self.timeout or DEFAULT_TIMEOUT, verify=verify,
            limits=limits.answer_limits())

    def errors(self, message='msg_server_error', error=OrthancServerError,
            **values):
        return orthanc_errors(self.label, message, error, **values)

    @classmethod
    def info_values(cls, info):
        "Field values recording what a successful check found."
        return {
            'validated': True,
            'checked_at': datetime.datetime.now(),
            'orthanc_name': info.name,
            'orthanc_version': info.version,
            'has_dicomweb': info.has_dicomweb,
            'has_ohif': info.has_ohif,
            'has_stone': info.has_stone,
            'has_webviewer': info.has_webviewer,
            'check_message': gettext('health_orthanc.msg_check_ok',
                name=info.name, version=info.version,
                studies=info.study_count,
                dicomweb=presence(info.has_dicomweb),
                ohif=presence(info.has_ohif),
                stone=presence(info.has_stone),
                webviewer=presence(info.has_webviewer),
                plugins=', '.join(info.plugins) or '-'),
            }

    @classmethod
    @ModelView.button
    def check_connection(cls, servers):
        for server in servers:
            try:
                info = server.client.server_info()
            except orthanc.OrthancError as exc:
                values = {
                    'validated': False,
                    'checked_at': datetime.datetime.now(),
                    'check_message': describe_error(exc),
                    }
            else:
                values = cls.info_values(info)
            cls.write([server], values)

    # --- synchronisation: entry points ---------------------------------
    @classmethod
    @ModelView.button
    def sync_changes(cls, servers):
        "Store what changed on Orthanc since each server's cursor."
        return cls.sync_now_or_queue(servers, 'incremental')

    @classmethod
    @ModelView.button
    def full_sync(cls, servers):
        "Reconcile every study of each server with Orthanc."
        return cls.sync_now_or_queue(servers, 'full')

    @classmethod
    def sync_now_or_queue(cls, servers, kind):
        "Sync servers here, or leave it to trytond's worker if there is one."
        if queue_worker():
            return cls.queue_sync(servers, kind)
        cls.synchronize(servers, kind)

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
        """Sync servers (all when None) with the engine (sync.ServerSync);
        return the SyncStats of the run."""
        if servers is None:
            servers = cls.search([])
        if not servers:
            return SyncStats()
        servers = cls._claim(cls.browse(servers), raise_errors)
        totals, failures = SyncStats(), []
        for server in servers:
            try:
                stats = ServerSync(server).run(kind)
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


class AddOrthancInitData(ModelView):
    "Add an Orthanc server"
    __name__ = 'gnuhealth.imaging_orthanc.orthanc_add_init_data'

    label = fields.Char('Label', required=True)
    domain = fields.Char('URL', required=True,
        help="Full URL of the Orthanc REST API")
    proxy_domain = fields.Char('Public URL',
        help="URL that users' browsers open; empty: the URL above")
    user = fields.Char('User')
    password = fields.Char('Password', strip=False)


class AddOrthancStatus(ModelView):
    "Orthanc connection status"
    __name__ = 'gnuhealth.imaging_orthanc.orthanc_add_status'

    success = fields.Boolean('Connected', readonly=True)
    message = fields.Text('Status', readonly=True)
    server = fields.Many2One('gnuhealth.orthanc.config', 'Server',
        readonly=True, states={'invisible': ~Bool(Eval('server'))})


class ConnectNewOrthancServer(Wizard):
    "Connect a new Orthanc server"
    __name__ = 'gnuhealth.imaging_orthanc.wizard.orthanc_new_connect'

    start = StateView('gnuhealth.imaging_orthanc.orthanc_add_init_data',
        'health_orthanc.view_orthanc_add_init_data', [
            Button('Cancel', 'end', 'tryton-cancel'),
            Button('Begin', 'connect', 'tryton-ok', default=True),
            ])
    connect = StateTransition()
    status = StateView('gnuhealth.imaging_orthanc.orthanc_add_status',
        'health_orthanc.view_orthanc_add_status', [
            Button('Close', 'end', 'tryton-close', default=True),
            ])

    def transition_connect(self):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        domain = normalize_url(self.start.domain)
        proxy = normalize_url(self.start.proxy_domain) or None
        problem = self._registration_problem(Server, domain, proxy)
        if problem:
            self.status.success, self.status.message = False, problem
            return 'status'
        client = orthanc.OrthancClient(domain, self.start.user,
            self.start.password, timeout=DEFAULT_TIMEOUT,
            limits=limits.answer_limits())
        try:
            info = client.server_info()
        except orthanc.OrthancError as exc:
            self.status.success = False
            self.status.message = gettext(
                'health_orthanc.msg_connect_failed', url=domain,
                reason=describe_error(exc))
            logger.info("Adding Orthanc server %s failed: %s",
                domain, describe_error(exc))
            return 'status'
        finally:
            client.close()
        server, = Server.create([{
                    'label': self.start.label.strip(),
                    'domain': domain,
                    'proxy_domain': proxy,
                    'user': self.start.user,
                    'password': self.start.password,
                    **Server.info_values(info),
                    }])
        self.status.success = True
        self.status.server = server
        self.status.message = server.check_message
        logger.info("Orthanc server %s added (%s %s)",
            domain, info.name, info.version)
        return 'status'

    def _registration_problem(self, Server, domain, proxy):
        "The reason the server cannot be registered, or None."
        for url in filter(None, [domain, proxy]):
            if not is_valid_url(url):
                return gettext('health_orthanc.msg_invalid_url',
                    url=orthanc.redact(url), server=self.start.label)
        label = (self.start.label or '').strip()
        if Server.search([('label', '=', label)], limit=1):
            return gettext('health_orthanc.msg_label_unique')
        if Server.search([('domain', '=', domain)], limit=1):
            return gettext('health_orthanc.msg_domain_unique')

    def _save(self):
        # ir.session.wizard stores every state's values: the password was
        # used by transition_connect (or not yet typed), never keep it.
        self.start.password = None
        super()._save()

    def default_status(self, fields):
        server = getattr(self.status, 'server', None)
        return {
            'success': bool(getattr(self.status, 'success', False)),
            'message': getattr(self.status, 'message', None),
            'server': server.id if server else None,
            }


# --- synchronisation wizards --------------------------------------------
class SyncStart(ModelView):
    "Synchronize studies"
    # The start of both sync wizards (the name of the earlier module's
    # incremental one; the full one had a start model of its own, dropped).
    __name__ = 'gnuhealth.imaging_orthanc.get_new_studies.start'

    servers = fields.Many2Many('gnuhealth.orthanc.config', None, None,
        'Servers', help="Leave empty for all servers")


class SyncResult(ModelView):
    "Synchronisation result"
    __name__ = 'gnuhealth.imaging_orthanc.sync.result'

    message = fields.Text('Result', readonly=True)


def sync_start(view):
    "The start state of a sync wizard; view: its XML id (both kept)."
    return StateView('gnuhealth.imaging_orthanc.get_new_studies.start', view,
        [
            Button('Cancel', 'end', 'tryton-cancel'),
            Button('Synchronize', 'sync', 'tryton-ok', default=True),
            ])


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

    start = sync_start('health_orthanc.get_new_studies_start_form')


class FullSynchronize(_SyncWizard):
    "Fully synchronize studies with Orthanc"
    __name__ = 'gnuhealth.imaging_orthanc.full_synchronize'
    kind = 'full'

    start = sync_start('health_orthanc.full_synchronize_start_form')
