# SPDX-License-Identifier: GPL-3.0-or-later
"""JSON-RPC test harness: a real trytond, one logged-in user per role.

Security has to be tested the way the clients (SAO, the GTK client) call
trytond: over HTTP, with a session per user.  In-process calls as user 0
bypass the very checks under test.

Typical use, one trytond and one database per test class (activating
GNU Health is slow)::

    from trytond.modules.health_orthanc.tests import rpc

    class MyTestCase(rpc.RPCTestCase):

        def test_doctor_cannot_delete(self):
            doctor = self.sessions['doctor']
            error = doctor.failure('model.gnuhealth.orthanc.config.delete',
                [server_id])
            self.assertEqual(error.type, 'UserError')
            self.assertIn('not allowed', error.message)

    # or, without the base class:
    with rpc.TrytondServer() as server:
        admin = server.sessions['imaging_admin']
        ids = admin.search('gnuhealth.orthanc.config', [])

The database backend is the suite's (TRYTOND_DATABASE_URI: sqlite:// or
postgresql://...).  The database is copied from the suite's cache of the
activated module (DB_CACHE, as tests/run_suite.py sets it) when there is
one, otherwise created with trytond-admin; on PostgreSQL its name is unique
per run and it is dropped at stop().

Errors come back as RPCError with the type and message trytond sends:
'UserError' for UserError and its subclasses (AccessError,
ValidationError...: the protocol does not tell them apart, so assert the
message), 'UserWarning', 'Exception' for a crash, or the HTTP status, e.g.
'HTTP 403' for a method not exposed over RPC, 'HTTP 401' for a bad login.
"""
import contextlib
import base64
import itertools
import json
import os
import shutil
import tempfile
import unittest
import urllib.error
import urllib.request

from . import stack

__all__ = ['ROLES', 'RPCError', 'Session', 'WizardSession', 'TrytondServer',
    'RPCTestCase', 'backend_uri']

# The role table of the brief: role -> groups (XML ids).  'nobody' is a
# logged-in user in no group.
ROLES = {
    'imaging_admin': ['health_orthanc.group_imaging_orthanc_admin'],
    'radiographer': ['health_orthanc.group_imaging_orthanc'],
    'doctor': ['health.group_health_doctor',
        'health_imaging.group_health_imaging'],
    'nobody': [],
    }
MODULE = 'health_orthanc'
_counter = itertools.count(1)


def backend_uri():
    "The suite's database URI (sqlite:// unless PostgreSQL is asked for)."
    uri = os.environ.get('TRYTOND_DATABASE_URI') or 'sqlite://'
    return uri if uri.startswith('postgresql') else 'sqlite://'


class RPCError(Exception):
    """A JSON-RPC error: type ('UserError', 'UserWarning', 'Exception' or
    'HTTP <status>'), message and the full error payload."""

    def __init__(self, type_, message, payload=None):
        super().__init__('%s: %s' % (type_, message))
        self.type = type_
        self.message = message
        self.payload = payload

    @classmethod
    def from_error(cls, error):
        # trytond sends TrytonException.args: ('UserError', (message,
        # description, domain)), ('UserWarning', (name, message, ...)),
        # or (str(exception), traceback) for anything else.
        if (isinstance(error, list) and len(error) == 2
                and isinstance(error[1], list)):
            type_, args = error
            if type_ == 'UserWarning':
                return cls(type_, args[1] if len(args) > 1 else '', error)
            return cls(type_, args[0] if args else '', error)
        if isinstance(error, list) and error:
            # A crash: the server's traceback helps more than its message.
            trace = str(error[1])[-2000:] if len(error) > 1 else ''
            return cls('Exception', '%s\n%s' % (error[0], trace), error)
        return cls('Exception', str(error), error)


def _encoder():
    from trytond.protocols.jsonrpc import JSONEncoder
    return JSONEncoder


def _decoder():
    from trytond.protocols.jsonrpc import JSONDecoder
    return JSONDecoder()


def post(url, method, params, authorization=None, timeout=300):
    """One JSON-RPC call to url; the result, or RPCError.  Dates, bytes
    and Decimals travel as trytond's JSON encodes them."""
    body = json.dumps({'id': next(_counter), 'method': method,
            'params': params}, cls=_encoder()).encode()
    headers = {'Content-Type': 'application/json'}
    if authorization:
        headers['Authorization'] = authorization
    request = urllib.request.Request(url, data=body, headers=headers,
        method='POST')
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            data = json.loads(answer.read(), object_hook=_decoder())
    except urllib.error.HTTPError as error:
        raise RPCError('HTTP %s' % error.code, error.reason) from None
    if 'error' in data:
        raise RPCError.from_error(data['error'])
    return data.get('result')


class Session:
    """A logged-in user: calls methods as SAO does (Session header,
    the user's preferences as context)."""

    def __init__(self, url, login, password):
        self.url = url
        self.login = login
        self.user_id, key = post(url, 'common.db.login',
            [login, {'password': password}, 'en'])
        token = '%s:%s:%s' % (login, self.user_id, key)
        self.authorization = 'Session ' + base64.b64encode(
            token.encode()).decode()
        self.context = self.call('model.res.user.get_preferences', True, {},
            context=False)

    def call(self, method, *params, context=None):
        """method(*params, context): the result or RPCError.  context is
        merged into the user's preferences; False sends none."""
        params = list(params)
        if context is not False:
            params.append({**self.context, **(context or {})})
        return post(self.url, method, params, self.authorization)

    def failure(self, method, *params, context=None):
        "The RPCError the call raises; AssertionError if it succeeds."
        try:
            result = self.call(method, *params, context=context)
        except RPCError as error:
            return error
        raise AssertionError('%s by %s succeeded: %r'
            % (method, self.login, result))

    def allowed(self, method, *params, context=None):
        "True if the call succeeds, False if trytond refuses it."
        try:
            self.call(method, *params, context=context)
        except RPCError:
            return False
        return True

    # model.<name>.<method>
    def model(self, model, method, *params, context=None):
        return self.call('model.%s.%s' % (model, method), *params,
            context=context)

    def search(self, model, domain, offset=0, limit=None, order=None,
            context=None):
        return self.model(model, 'search', domain, offset, limit, order,
            context=context)

    def read(self, model, ids, fields, context=None):
        return self.model(model, 'read', ids, fields, context=context)

    def search_read(self, model, domain, fields, context=None):
        return self.model(model, 'search_read', domain, 0, None, None,
            fields, context=context)

    def create(self, model, values, context=None):
        "values: a dict or a list of dicts; returns the list of ids."
        if isinstance(values, dict):
            values = [values]
        return self.model(model, 'create', values, context=context)

    def create_as_client(self, model, values, context=None):
        """create() with the model's default values first, as the clients
        do (default_get); some models need them (GNU Health's party)."""
        if isinstance(values, dict):
            values = [values]
        definitions = self.model(model, 'fields_get', None, context=context)
        # Clients send what can be edited (Function fields have no setter).
        names = [n for n, d in definitions.items() if not d.get('readonly')]
        records = []
        for record_values in values:
            # One default_get per record: defaults may be unique codes.
            defaults = self.model(model, 'default_get', names, False,
                context=context)
            for name, value in defaults.items():
                # x2many defaults come as lists of values to create.
                if isinstance(value, list) and value and all(
                        isinstance(v, dict) for v in value):
                    defaults[name] = [('create', value)]
            records.append({**defaults, **record_values})
        return self.create(model, records, context=context)

    def write(self, model, ids, values, context=None):
        return self.model(model, 'write', ids, values, context=context)

    def delete(self, model, ids, context=None):
        return self.model(model, 'delete', ids, context=context)

    def button(self, model, name, ids, context=None):
        "A button of model (a @ModelView.button method) on ids."
        return self.model(model, name, ids, context=context)

    def on_change_with(self, model, values, fieldnames, context=None):
        return self.model(model, 'on_change_with', values, fieldnames,
            context=context)

    def wizard(self, name, *, model=None, ids=(), action_id=None,
            context=None):
        """A WizardSession of wizard.<name>, launched on ids of model
        (active_model/active_id(s)) or, without model, from a menu."""
        return WizardSession(self, name, model, list(ids), action_id,
            context)

    def run_wizard(self, name, steps, **kwargs):
        """Create wizard.<name>, execute each (state, data) of steps, then
        delete the session; the list of execute results."""
        with self.wizard(name, **kwargs) as wizard:
            return [wizard.execute(state, data) for state, data in steps]


class WizardSession:
    """wizard.<name> as SAO runs it: create, execute(state, data) for each
    button, delete at the end (also as a context manager)."""

    def __init__(self, session, name, model, ids, action_id, context):
        self.session = session
        self.name = name
        self.context = dict(context or {})
        if model:
            self.context.update(active_model=model,
                active_id=ids[0] if ids else None, active_ids=ids)
        else:
            self.context['active_model'] = 'ir.ui.menu'
        if action_id:
            self.context['action_id'] = action_id
        self.id = None

    def _call(self, method, *params):
        return self.session.call('wizard.%s.%s' % (self.name, method),
            *params, context=self.context)

    def create(self):
        self.id, self.start_state, self.end_state = self._call('create')
        return self.id

    def execute(self, state, data=None):
        """Execute state with data ({state_view_name: {field: value}});
        the result (view and/or actions)."""
        if self.id is None:
            self.create()
        return self._call('execute', self.id, data or {}, state)

    def delete(self):
        if self.id is not None:
            session_id, self.id = self.id, None
            return self._call('delete', session_id)

    def __enter__(self):
        self.create()
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(RPCError):
            self.delete()


class TrytondServer:
    """trytond on a fresh database of the suite's backend with
    health_orthanc activated, an admin and one user per role (ROLES).

    After start(): url, database, sessions ({role: Session}, plus 'admin'),
    passwords ({login: password}), sql(query, params) on the database.
    """

    def __init__(self, roles=ROLES, workdir=None):
        self.roles = roles
        self.uri = backend_uri()
        self.workdir = workdir
        self.own_workdir = workdir is None
        self.process = None
        self.database = None
        self.sessions = {}
        self.passwords = {}
        self.group_ids = {}

    @property
    def postgresql(self):
        return self.uri.startswith('postgresql')

    def start(self):
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix='health-orthanc-rpc-')
        self.database = 'rpc_%d_%d' % (os.getpid(), next(_counter))
        port = stack.free_port()
        self.url = 'http://127.0.0.1:%d/' % port
        self.rpc_url = self.url + self.database + '/'
        self.conf = stack.write_trytond_conf(
            os.path.join(self.workdir, 'trytond.conf'),
            data_dir=self.workdir, listen='127.0.0.1:%d' % port,
            uri=self.uri)
        self.log = os.path.join(self.workdir, 'trytond.log')
        try:
            admin_password = stack.new_password() + stack.new_password()
            self._create_database(admin_password)
            self.process = stack.start_trytond(self.conf, self.url, self.log)
            self.passwords['admin'] = admin_password
            self.sessions['admin'] = Session(self.rpc_url, 'admin',
                admin_password)
            self._create_users()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        stack.stop_process(self.process)
        self.process = None
        if self.database and self.postgresql:
            stack.drop_database(self.uri, self.workdir, self.database)
        if self.own_workdir and self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- users ------------------------------------------------------------

    def _create_users(self):
        admin = self.sessions['admin']
        for role, groups in self.roles.items():
            password = stack.new_password() + stack.new_password()
            values = {'name': 'RPC %s' % role, 'login': role,
                'password': password}
            if groups:
                values['groups'] = [
                    ('add', [self.group_id(g) for g in groups])]
            admin.create('res.user', values)
            self.passwords[role] = password
            self.sessions[role] = Session(self.rpc_url, role, password)

    def group_id(self, xml_id):
        "The id of a res.group from its XML id 'module.name'."
        if xml_id not in self.group_ids:
            self.group_ids[xml_id] = self.ref(xml_id)
        return self.group_ids[xml_id]

    def ref(self, xml_id):
        "The db id of the record of XML id 'module.name'."
        module, fs_id = xml_id.split('.', 1)
        rows = self.sessions['admin'].search_read('ir.model.data', [
                ('module', '=', module), ('fs_id', '=', fs_id)],
            ['db_id'])
        if not rows:
            raise KeyError(xml_id)
        return rows[0]['db_id']

    def action_id(self, wiz_name):
        "The id of the ir.action.wizard of wizard wiz_name (first one)."
        rows = self.sessions['admin'].search_read('ir.action.wizard',
            [('wiz_name', '=', wiz_name)], ['action'])
        if not rows:
            raise KeyError(wiz_name)
        return rows[0]['id']

    def login(self, login, password):
        "A new Session (e.g. for a user a test created)."
        return Session(self.rpc_url, login, password)

    # --- database ---------------------------------------------------------

    def _create_database(self, admin_password):
        source = _cached_database()
        if not source:
            stack.create_database(self.conf, self.workdir, self.database,
                admin_password, log=os.path.join(self.workdir, 'admin.log'),
                uri=self.uri)
            return
        if self.postgresql:
            stack.create_postgresql_database(self.uri, self.database,
                template=source)
        else:
            shutil.copy(source,
                stack.sqlite_file(self.workdir, self.database))
        self.sql('UPDATE res_user SET password_hash = %s '
            "WHERE login = 'admin'", [_hash_password(admin_password)])

    def sql(self, query, params=()):
        """Run query (%s placeholders) on the database directly (to look
        at what no user may read, e.g. ir_session_wizard); the rows."""
        if self.postgresql:
            import psycopg2
            connection = psycopg2.connect(
                self.uri.rstrip('/') + '/' + self.database)
        else:
            import sqlite3
            connection = sqlite3.connect(
                stack.sqlite_file(self.workdir, self.database))
            query = query.replace('%s', '?')
        try:
            cursor = connection.cursor()
            cursor.execute(query, list(params))
            rows = cursor.fetchall() if cursor.description else []
            connection.commit()
            return rows
        finally:
            connection.close()


def _hash_password(password):
    from trytond.res.user import CRYPT_CONTEXT
    return CRYPT_CONTEXT.hash(password)


def _cached_database():
    """The suite's cached activated database of health_orthanc: a SQLite
    file path or a PostgreSQL template name; None without DB_CACHE."""
    if not os.environ.get('DB_CACHE'):
        return None
    from trytond.tests import test_tryton
    cached = _existing_cache(test_tryton)
    if cached:
        # tests/run_suite.py drops caches made from other sources: this
        # one is current, and restoring it only to drop it costs a copy.
        return cached
    # Restores or creates the cache as ModuleTestCase does, from a fresh
    # database: one left by an earlier run may hold other sources.
    test_tryton.drop_db()
    test_tryton.activate_module(MODULE)
    # Leave no connection to the test database: the next test class
    # drops it to restore its own copy.
    test_tryton.drop_db()
    path = test_tryton._db_cache_file(test_tryton.DB_CACHE, MODULE)
    if test_tryton.DB_CACHE.startswith('postgresql://'):
        return path[len(test_tryton.DB_CACHE) + 1:]
    return path if os.path.exists(path) else None


def _existing_cache(test_tryton):
    "The cached database of MODULE if there is one already, else None."
    path = test_tryton._db_cache_file(test_tryton.DB_CACHE, MODULE)
    if test_tryton.DB_CACHE.startswith('postgresql://'):
        name = path[len(test_tryton.DB_CACHE) + 1:]
        return name if test_tryton.db_exist(name) else None
    return path if os.path.exists(path) else None


class RPCTestCase(unittest.TestCase):
    """One TrytondServer for the whole class: self.server and
    self.sessions ({role: Session}, 'admin' included)."""
    roles = ROLES

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = TrytondServer(cls.roles).start()
        cls.addClassCleanup(cls.server.stop)
        cls.sessions = cls.server.sessions

    @classmethod
    def start_orthanc(cls, label='PACS'):
        """Start a real Orthanc for the class (stopped at its end) and
        register it as a checked server by the imaging administrator
        (the class's roles must have one); the server id."""
        from .orthanc_server import OrthancServer
        cls.orthanc = OrthancServer().start()
        cls.addClassCleanup(cls.orthanc.stop)
        admin = cls.sessions['imaging_admin']
        server, = admin.create('gnuhealth.orthanc.config', {'label': label,
                'domain': cls.orthanc.url, 'user': cls.orthanc.user,
                'password': cls.orthanc.password})
        admin.button('gnuhealth.orthanc.config', 'check_connection',
            [server])
        return server
