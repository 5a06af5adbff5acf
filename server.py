# SPDX-License-Identifier: GPL-3.0-or-later
"""The registry of Orthanc servers and the wizard that adds one."""
import datetime
import logging
from contextlib import contextmanager
from urllib.parse import urlsplit

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool
from trytond.pyson import Bool, Eval
from trytond.transaction import without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from . import limits, links, orthanc, roles
from .exceptions import OrthancServerError, ServerURLError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
VIEWER_FLAGS = set(links.VIEWER_PLUGINS.values())

# Most specific first: Timeout and TLSFailure are kinds of network failure.
_REASONS = [
    (orthanc.Unauthorized, 'msg_reason_unauthorized'),
    (orthanc.DeadlineExceeded, 'msg_reason_deadline'),
    (orthanc.TooLarge, 'msg_reason_too_large'),
    (orthanc.Timeout, 'msg_reason_timeout'),
    (orthanc.TLSFailure, 'msg_reason_tls'),
    (orthanc.Unreachable, 'msg_reason_unreachable'),
    (orthanc.NotOrthanc, 'msg_reason_not_orthanc'),
    (orthanc.NotFound, 'msg_reason_not_found'),
    (orthanc.Rejected, 'msg_reason_rejected'),
    ]


def describe_error(exc):
    "A translated sentence for an adapter error, free of credentials."
    detail = orthanc.redact(exc.reason or '')
    for error_class, message in _REASONS:
        if isinstance(exc, error_class):
            return gettext('health_orthanc.' + message,
                status=exc.status or '', detail=detail,
                **exc.message_values)
    return gettext('health_orthanc.msg_reason_other', detail=detail)


@contextmanager
def orthanc_errors(label, message='msg_server_error',
        error=OrthancServerError, **values):
    "Turn the adapter's errors into a UserError naming the server."
    try:
        yield
    except orthanc.OrthancError as exc:
        raise error(gettext('health_orthanc.' + message,
                server=label, reason=describe_error(exc), **values)) from exc


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
