# SPDX-License-Identifier: GPL-3.0-or-later
"""A running stack: Orthanc, a GNU Health SQLite database, trytond serving
SAO.  Shared by tests/browser_run.py (throw-away) and scripts/demo.py
(persistent, reused).

Everything listens on loopback.  Processes are started by this module and
stopped by their PID only.  Executables come from the running Python's
bin folder (trytond, trytond-admin) and from Debian (Orthanc, chromium).
"""
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

from . import orthanc_server
from .orthanc_server import OrthancServer, free_port

__all__ = ['ROOT', 'SAO_DIR', 'BIN', 'OrthancServer', 'free_port',
    'port_free', 'clean_env', 'write_trytond_conf', 'database_activated',
    'create_database', 'start_trytond', 'stop_process', 'wait_http',
    'proteus_connect', 'mark_config_wizards_done', 'register_server',
    'MAX_SIZE_AUTHENTICATED', 'is_postgresql', 'postgresql_execute',
    'create_postgresql_database', 'drop_database', 'synchronize']

# Resolve the module symlink (site-packages/trytond/modules/health_orthanc)
# to the repository.
ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
SAO_DIR = os.path.abspath(os.environ.get('SAO_DIR')
    or os.path.join(ROOT, 'web', 'build', 'sao'))
BIN = os.path.dirname(sys.executable)
MODULE = 'health_orthanc'

# Request size limits of trytond 7.0 ([request] section, bytes).  The
# JSON-RPC body carries binary values in base64 (4/3 of their size):
# 500 MB lets 200 MB of DICOM through with room to spare, as nginx's
# client_max_body_size 500M does.
MAX_SIZE = 2 * 1024 * 1024  # not logged in: the trytond default
MAX_SIZE_AUTHENTICATED = 500 * 1000 * 1000


def port_free(port, host='127.0.0.1'):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def clean_env(**extra):
    "The environment without settings aimed at the test database."
    env = {key: value for key, value in os.environ.items()
        if not key.startswith(('TRYTOND_', 'DB_'))}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def write_trytond_conf(path, *, data_dir, listen, web_root=SAO_DIR,
        uri='sqlite://'):
    "A trytond.conf for a SQLite database folder, serving SAO at listen."
    text = '\n'.join([
            '# Written by health_orthanc tests/stack.py',
            '[database]',
            'uri = %s' % uri,
            'path = %s' % data_dir,
            'list = True',
            '',
            '[web]',
            'listen = %s' % listen,
            'root = %s' % web_root,
            '',
            '[request]',
            '# Uploads of 200 MB of DICOM arrive base64-encoded in JSON-RPC.',
            'max_size = %d' % MAX_SIZE,
            'max_size_authenticated = %d' % MAX_SIZE_AUTHENTICATED,
            '',
            '[session]',
            'timeout = 3600',
            '',
            ])
    with open(path, 'w') as fp:
        fp.write(text)
    return path


def sqlite_file(data_dir, name):
    return os.path.join(data_dir, name + '.sqlite')


def database_activated(data_dir, name):
    "True if the SQLite database exists with health_orthanc activated."
    path = sqlite_file(data_dir, name)
    if not os.path.exists(path):
        return False
    try:
        with contextlib.closing(sqlite3.connect(
                    'file:%s?mode=ro' % path, uri=True)) as connection:
            row = connection.execute(
                'SELECT state FROM ir_module WHERE name = ?',
                (MODULE,)).fetchone()
    except sqlite3.Error:
        return False
    return bool(row) and row[0] == 'activated'


# tests/run_suite.py sets it to the SQLite database with health_orthanc
# activated that its pytest phase cached (trytond's DB_CACHE, made from the
# current sources): the browser and GTK tests copy it rather than activate
# GNU Health again (minutes each), as tests/rpc.py's servers do.
CACHED_SQLITE = 'HEALTH_ORTHANC_CACHED_SQLITE'


def copy_cached_database(cached, data_dir, name, password, email):
    "The SQLite file name in data_dir: a copy of cached, admin's password."
    from trytond.res.user import CRYPT_CONTEXT
    path = sqlite_file(data_dir, name)
    with contextlib.closing(sqlite3.connect(cached)) as source, \
            contextlib.closing(sqlite3.connect(path)) as target:
        source.backup(target)
        target.execute('UPDATE res_user SET password_hash = ?, email = ? '
            "WHERE login = 'admin'", (CRYPT_CONTEXT.hash(password), email))
        target.commit()
    return path


def create_database(conf, data_dir, name, password, *,
        email='admin@example.org', log=None, timeout=1800, uri='sqlite://'):
    """A new database (SQLite file in data_dir, or on the PostgreSQL server
    of uri) with health_orthanc and its dependencies activated; the admin
    user gets password (via TRYTONPASSFILE).  Returns the SQLite path or
    the PostgreSQL name."""
    cached = os.environ.get(CACHED_SQLITE)
    if cached and os.path.exists(cached) and not is_postgresql(uri):
        return copy_cached_database(cached, data_dir, name, password, email)
    if is_postgresql(uri):
        create_postgresql_database(uri, name)
        path = name
    else:
        path = sqlite_file(data_dir, name)
        if os.path.exists(path):
            os.remove(path)
        open(path, 'w').close()
    passfile = os.path.join(data_dir, '.%s.password' % name)
    with open(os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                0o600), 'w') as fp:
        fp.write(password + '\n')
    try:
        # One run: trytond-admin initialises a new database before it
        # activates the module and its dependencies.
        _run([os.path.join(BIN, 'trytond-admin'), '-c', conf, '-d', name,
                '-u', MODULE, '--activate-dependencies', '--email', email],
            env=clean_env(TRYTONPASSFILE=passfile), log=log,
            timeout=timeout)
    finally:
        os.remove(passfile)
    return path


# --- PostgreSQL (uri: postgresql://user@host:port/) ------------------------

def is_postgresql(uri):
    return uri.startswith('postgresql')


def postgresql_execute(uri, statement):
    "One statement on the maintenance database, outside a transaction."
    import psycopg2
    connection = psycopg2.connect(uri.rstrip('/') + '/postgres')
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        connection.close()


def create_postgresql_database(uri, name, template=None):
    "An empty database name (dropped first), or a copy of template."
    drop_database(uri, None, name)
    postgresql_execute(uri, 'CREATE DATABASE "%s"%s' % (
            name, ' TEMPLATE "%s"' % template if template else ''))


def drop_database(uri, data_dir, name):
    "Drop database name of uri (PostgreSQL) or its SQLite file in data_dir."
    if is_postgresql(uri):
        postgresql_execute(uri,
            'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    elif data_dir:
        with contextlib.suppress(FileNotFoundError):
            os.remove(sqlite_file(data_dir, name))


def _run(command, env, log=None, timeout=None):
    started = time.monotonic()
    process = subprocess.run(command, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    output = process.stdout.decode(errors='replace')
    if log:
        with open(log, 'a') as fp:
            fp.write('$ %s\n%s' % (' '.join(command), output))
    if process.returncode:
        raise RuntimeError('%s failed (exit %s) after %.0f s:\n%s' % (
                ' '.join(command[:2]), process.returncode,
                time.monotonic() - started, output[-3000:]))
    return output


def wait_http(url, timeout=60, process=None, log=None):
    "Wait until url answers (any HTTP status) or raise."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError('%s exited with %s%s' % (
                    ' '.join(process.args[:1]), process.returncode,
                    tail(log)))
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError('%s did not answer within %d s%s'
        % (url, timeout, tail(log)))


def tail(path, lines=30):
    if not path:
        return ''
    try:
        with open(path, errors='replace') as fp:
            return '\n--- %s ---\n%s' % (path,
                ''.join(fp.readlines()[-lines:]))
    except OSError:
        return ''


def start_trytond(conf, url, log, env=None, timeout=120):
    """trytond -c conf in the background, logging to log; returns the
    Popen once url answers."""
    with open(log, 'ab') as out:
        process = subprocess.Popen(
            [os.path.join(BIN, 'trytond'), '-c', conf],
            env=env or clean_env(), stdin=subprocess.DEVNULL,
            stdout=out, stderr=out, start_new_session=True,
            preexec_fn=_pdeathsig)
    try:
        wait_http(url, timeout, process, log)
    except Exception:
        stop_process(process)
        raise
    return process


def _pdeathsig():
    # Linux: the child gets SIGTERM if its parent dies (even by SIGKILL).
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def stop_process(process, timeout=10):
    "SIGTERM by PID, SIGKILL after timeout; None and ended ones are fine."
    if process is None or process.poll() is not None:
        return
    try:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout)


def stop_servers(orthanc, *processes):
    "Stop the processes by PID, then Orthanc; None stands for not started."
    for process in processes:
        stop_process(process)
    if orthanc is not None:
        orthanc.stop()


# --- in-process proteus (setup scripts) -----------------------------------

def proteus_connect(conf, name):
    "proteus on the database through trytond in this process."
    from proteus import config
    # Settings aimed at a test database must not override conf.
    for key in [k for k in os.environ if k == 'TRYTOND_DATABASE_URI'
            or (k.startswith('TRYTOND_') and '__' in k)]:
        del os.environ[key]
    return config.set_trytond(database=name, config_file=conf)


def mark_config_wizards_done():
    "No module configuration wizard pops up at the first login."
    from proteus import Model
    Item = Model.get('ir.module.config_wizard.item')
    items = Item.find([('state', '!=', 'done')])
    for item in items:
        item.state = 'done'
    Item.save(items)


def register_server(orthanc, label, public_url=None):
    """The server record of an OrthancServer, created or pointed at its
    current URL and credentials, then checked (validated)."""
    from proteus import Model
    Server = Model.get('gnuhealth.orthanc.config')
    servers = Server.find([('label', '=', label)])
    server = servers[0] if servers else Server(label=label)
    server.domain = orthanc.url
    server.proxy_domain = public_url
    server.user = orthanc.user
    server.password = orthanc.password
    server.save()
    server.click('check_connection')
    server.reload()
    if not server.validated:
        raise RuntimeError('Orthanc server %s not validated: %s'
            % (orthanc.url, server.check_message))
    return server


def synchronize(db_name, server_ids, kind):
    """Server.synchronize as trytond's dispatcher runs it: a lock request
    (TransactionError) restarts the transaction with the lock taken.
    server_ids None: every server."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction, TransactionError
    extras = {}
    while True:
        with Transaction().start(db_name, 0, **extras) as transaction:
            Server = Pool().get('gnuhealth.orthanc.config')
            servers = None if server_ids is None else Server.browse(
                server_ids)
            try:
                stats = Server.synchronize(servers, kind)
            except TransactionError as error:
                transaction.rollback()
                error.fix(extras)
                continue
            transaction.commit()
            return stats


def read_json(path, default=None):
    try:
        with open(path) as fp:
            return json.load(fp)
    except (OSError, ValueError):
        return default


def write_json(path, value):
    tmp = path + '.tmp'
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
            'w') as fp:
        json.dump(value, fp, indent=2)
    os.replace(tmp, path)


def new_password():
    return secrets.token_urlsafe(9)


def throwaway_database(workdir, name, log):
    """A new SQLite database name with health_orthanc in workdir and the
    trytond.conf serving it on a free port: (conf, port, admin password)."""
    port = free_port()
    conf = write_trytond_conf(os.path.join(workdir, 'trytond.conf'),
        data_dir=workdir, listen='127.0.0.1:%d' % port)
    password = new_password()
    print('Creating database %s (health_orthanc activated)...' % name,
        flush=True)
    create_database(conf, workdir, name, password, log=log)
    return conf, port, password


class Skip(Exception):
    "A test script's prerequisite is missing: a clear message, exit 2."


def keep_logs(artifacts, prefix, paths, orthanc=None, tail_of=None):
    """After a failure: copy the files of paths that exist (and Orthanc's
    log) to artifacts as prefix + name; print the end of tail_of."""
    if orthanc is not None and orthanc.workdir:
        paths = [*paths, orthanc.log_path]
    for path in paths:
        if path and os.path.exists(path):
            shutil.copy(path, os.path.join(artifacts,
                    prefix + os.path.basename(path)))
    if tail_of:
        print(tail(tail_of, 40), file=sys.stderr)


def main(name, run, artifacts):
    """The main() of a test script: run(workdir) in a temporary folder
    (kept with KEEP=1); exit 0 passed, 1 failed, 2 Skip (cannot run)."""
    keep = os.environ.get('KEEP')
    workdir = tempfile.mkdtemp(
        prefix='health-orthanc-%s-' % name.replace(' ', '-'))
    try:
        run(workdir)
    except Skip as exc:
        print('%s test: cannot run: %s' % (name, exc), file=sys.stderr)
        return 2
    except Exception as exc:
        if not isinstance(exc, AssertionError):
            traceback.print_exc()
        print('%s test FAILED: %s (artifacts in %s)'
            % (name, exc, artifacts), file=sys.stderr)
        return 1
    finally:
        if keep:
            print('kept %s' % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print('%s test passed' % name)
    return 0


__all__ += ['orthanc_server', 'read_json', 'write_json', 'new_password',
    'sqlite_file', 'tail', 'throwaway_database', 'Skip', 'keep_logs', 'main',
    'stop_servers']
