#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the whole suite: Python tests on SQLite and on PostgreSQL, the
browser tests and the GTK client test; print one closing line
`N passed, N failed`.

Two lanes run side by side (the 2-core machine has a core for each):
SQLite, then the browser tests, then the GTK test; and PostgreSQL.  Each
line a phase prints is prefixed with its name, e.g. `[postgresql] `.
--serial runs the phases one after the other, unprefixed.

Activated test databases are cached (trytond's DB_CACHE) in build/ for
SQLite and as template databases on PostgreSQL, so GNU Health is activated
once per database backend rather than once per test class; the browser and
GTK tests start from a copy of the SQLite one.
"""
import argparse
import contextlib
import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, 'build')
PG_URI = os.environ.get('PG_URI', 'postgresql://postgres@127.0.0.1:5432/')
# trytond names PostgreSQL template databases by module name only, so every
# checkout on this machine shares them: one PostgreSQL run at a time, and a
# machine-wide record of which sources made the templates.
PG_LOCK = os.path.join('/tmp', 'health_orthanc-postgresql.lock')
PG_TEMPLATE_SOURCE = os.path.join('/tmp', 'health_orthanc-pg-template.source')


def backends():
    return {
        'sqlite': {
            'TRYTOND_DATABASE_URI': 'sqlite://',
            'DB_NAME': ':memory:',
            'DB_CACHE': os.path.join(BUILD, 'db-cache'),
            },
        'postgresql': {
            'TRYTOND_DATABASE_URI': PG_URI,
            'DB_NAME': 'test_health_orthanc',
            'DB_CACHE': PG_URI,
            # Every libpq client of the phase (the tests, their trytond
            # and trytond-admin processes, Orthanc's index plugin) commits
            # without waiting for the WAL flush: the same SQL, the same
            # visibility to other sessions, but no fsync per commit (4-10
            # ms each here). Only an OS crash could lose the last commits
            # of a throw-away test database.
            'PGOPTIONS': ' '.join(filter(None, [
                        os.environ.get('PGOPTIONS'),
                        '-c synchronous_commit=off'])),
            },
        }


def source_hash():
    "A digest of what activation reads: the module's Python and XML."
    digest = hashlib.sha256()
    patterns = ['*.py', '*.xml', 'tryton.cfg', 'view/*.xml', 'security/*.xml']
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
            with open(path, 'rb') as source:
                digest.update(path.encode() + source.read())
    return digest.hexdigest()


def refresh_marker(marker, drop):
    """trytond keys cached databases by module name only: drop them (call
    drop) when the module's sources changed since they were made."""
    current = source_hash()
    try:
        with open(marker) as fp:
            if fp.read() == current:
                return
    except FileNotFoundError:
        pass
    drop()
    with open(marker, 'w') as fp:
        fp.write(current)


def invalidate_sqlite_cache():
    refresh_marker(os.path.join(BUILD, 'db-cache.source'),
        lambda: shutil.rmtree(backends()['sqlite']['DB_CACHE'],
            ignore_errors=True))


# Seconds a phase waited for the machine-wide lock (not its duration).
LOCK_WAIT = {}


@contextlib.contextmanager
def postgresql_turn(output=None):
    "Hold the machine-wide PostgreSQL lock, with templates of our sources."
    with open(PG_LOCK, 'a') as lock:
        started = time.monotonic()
        fcntl.flock(lock, fcntl.LOCK_EX)
        LOCK_WAIT['postgresql'] = time.monotonic() - started
        if output and LOCK_WAIT['postgresql'] > 1:
            output.line('postgresql', 'waited %.0f s for the PostgreSQL '
                'lock (another run on this machine)'
                % LOCK_WAIT['postgresql'])
        try:
            refresh_marker(PG_TEMPLATE_SOURCE, drop_postgresql_caches)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def drop_postgresql_caches():
    """Drop trytond's template databases (test-<hash>) on PG_URI, and the
    test database an earlier run may have left (made from other sources)."""
    import psycopg2
    try:
        connection = psycopg2.connect(PG_URI.rstrip('/') + '/postgres')
    except psycopg2.OperationalError as exc:  # no server: nothing cached
        print('PostgreSQL cache not checked: %s' % exc)
        return
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database "
            "WHERE datname ~ '^test-[0-9a-f]{40}$' OR datname = %s",
            [backends()['postgresql']['DB_NAME']])
        for name, in cursor.fetchall():
            cursor.execute('DROP DATABASE IF EXISTS "%s"' % name)
    connection.close()


class Output:
    """Print the phases' lines whole, each prefixed with its phase's name
    when phases run side by side."""

    def __init__(self, prefixed):
        self.prefixed = prefixed
        self.lock = threading.Lock()

    def line(self, phase, text):
        if not text.endswith('\n'):
            text += '\n'
        if self.prefixed:
            text = '[%s] %s' % (phase, text)
        with self.lock:
            sys.stdout.write(text)
            sys.stdout.flush()


# Lines that say what failed (pytest's short summary, the browser and GTK
# scripts' FAILED lines), printed again above the closing lines: a CI log
# shown by its tail still names the cause.
FAILURE_LINE = re.compile(r'^ERROR |FAILED[ :]|\bnot ok\b')
FAILURE_LINES = []


def stream(output, phase, cmd, env=None):
    """Run cmd, passing each line of its output to output under phase;
    (its lines, its exit code)."""
    process = subprocess.Popen(cmd, env=env, cwd=BUILD, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, errors='replace')
    lines = []
    for line in process.stdout:
        output.line(phase, line)
        lines.append(line)
        if FAILURE_LINE.search(line):
            FAILURE_LINES.append('[%s] %s' % (phase, line.rstrip()[:600]))
    return lines, process.wait()


def run_pytest(output, name, env_extra, pytest_args):
    env = {**os.environ, **env_extra}
    env.setdefault('HEALTH_ORTHANC_OLD_VENVS', BUILD)
    cmd = [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider',
        '-W', 'ignore::UserWarning', '-p', 'no:logging',
        '--pyargs', 'trytond.modules.health_orthanc.tests', *pytest_args]
    output.line(name, '==== %s: %s' % (name, ' '.join(cmd)))
    lines, returncode = stream(output, name, cmd, env)
    summary = ''
    for line in lines:  # pytest's closing line, with or without -q
        if re.search(r'\d+ (passed|failed|errors?)\b.* in [\d.]+s', line):
            summary = line
    return count(summary, returncode)


def count(summary, returncode):
    """(passed, failed) from pytest's closing line; failures and errors
    count as failed, and a run that crashed or said nothing counts one."""
    numbers = {word: int(n) for n, word in
        re.findall(r'(\d+) (passed|failed|errors?)', summary)}
    passed = numbers.get('passed', 0)
    failed = (numbers.get('failed', 0) + numbers.get('error', 0)
        + numbers.get('errors', 0))
    if returncode and not failed:
        failed = 1
    return passed, failed


# Each browser script: its own 'browser: N passed, N failed' line, or one
# test judged by its exit code.
BROWSER_TESTS = ['browser_unit_run.py', 'browser_run.py',
    'browser_viewer_run.py']
# trytond's DB_CACHE file of the module activated on SQLite (tests/stack.py
# copies it for the browser and GTK tests).
CACHED_SQLITE_VARIABLE = 'HEALTH_ORTHANC_CACHED_SQLITE'


def cached_sqlite():
    "The SQLite phase's cached database of health_orthanc, if made."
    name = hashlib.shake_128(b'health_orthanc').hexdigest(40 // 2)
    path = os.path.join(backends()['sqlite']['DB_CACHE'],
        '%s-sqlite.dump' % name)
    return path if os.path.exists(path) else None


def script_env():
    "The browser and GTK scripts' environment: the cached database."
    env = dict(os.environ)
    cached = cached_sqlite()
    if cached:
        env[CACHED_SQLITE_VARIABLE] = cached
    return env


def run_browser_script(output, script):
    """(passed, failed) of one browser script: from its own line
    `browser: N passed, N failed` when it prints one, else one test
    judged by its exit code."""
    lines, returncode = stream(output, 'browser',
        [sys.executable, script], script_env())
    summary = None
    for line in lines:
        found = re.match(r'^browser: (\d+) passed, (\d+) failed$', line)
        if found:
            summary = int(found.group(1)), int(found.group(2))
    if summary is None:
        return (1, 0) if returncode == 0 else (0, 1)
    passed, failed = summary
    if returncode and not failed:
        failed = 1
    return passed, failed


def run_browser(output):
    passed = failed = 0
    for name in BROWSER_TESTS:
        script = os.path.join(ROOT, 'tests', name)
        if not os.path.exists(script):
            continue
        output.line('browser', '==== browser: %s' % script)
        script_passed, script_failed = run_browser_script(output, script)
        passed += script_passed
        failed += script_failed
    return passed, failed


def run_gtk(output):
    """The GNU Health GTK client opens every screen (tests/gtk_run.py):
    one test; exit 2 means this machine cannot run it (reason printed),
    counted as skipped, not passed."""
    script = os.path.join(ROOT, 'tests', 'gtk_run.py')
    output.line('gtk', '==== gtk: %s' % script)
    _, code = stream(output, 'gtk', [sys.executable, script], script_env())
    if code == 2:
        output.line('gtk', 'gtk: SKIPPED (reason above)')
        return 0, 0
    return (1, 0) if code == 0 else (0, 1)


# The phases in the order each lane runs them; the lanes run side by side.
LANES = [['sqlite', 'browser', 'gtk'], ['postgresql']]


def run_phase(output, name, pytest_args):
    if name in ('sqlite', 'postgresql'):
        turn = (postgresql_turn(output) if name == 'postgresql'
            else contextlib.nullcontext())
        with turn:
            return run_pytest(output, name, backends()[name], pytest_args)
    if name == 'browser':
        return run_browser(output)
    return run_gtk(output)


# --serial: the phases in this order.
SERIAL = ['sqlite', 'postgresql', 'browser', 'gtk']


def run_lane(output, phases, pytest_args, results, durations):
    for name in phases:
        started = time.monotonic()
        results[name] = run_phase(output, name, pytest_args)
        durations[name] = (time.monotonic() - started
            - LOCK_WAIT.get(name, 0))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--only',
        choices=['sqlite', 'postgresql', 'browser', 'gtk'])
    parser.add_argument('--serial', action='store_true',
        help='one phase after the other, output not prefixed')
    parser.add_argument('pytest_args', nargs='*')
    args = parser.parse_args()
    os.makedirs(BUILD, exist_ok=True)
    invalidate_sqlite_cache()
    if args.serial:
        lanes = [SERIAL]
    else:
        lanes = LANES
    lanes = [[p for p in lane if args.only in (None, p)] for lane in lanes]
    lanes = [lane for lane in lanes if lane]
    output = Output(prefixed=len(lanes) > 1)
    results, durations = {}, {}
    started = time.monotonic()
    threads = [threading.Thread(target=run_lane,
            args=(output, lane, args.pytest_args, results, durations))
        for lane in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in [p for p in SERIAL if any(p in lane for lane in lanes)]:
        if name not in results:  # its lane crashed (traceback above)
            results[name] = (0, 1)
            durations[name] = 0
        passed, failed = results[name]
        print('%s: %d passed, %d failed (%.0f s)'
            % (name, passed, failed, durations[name]))
    passed = sum(p for p, _ in results.values())
    failed = sum(f for _, f in results.values())
    if failed and FAILURE_LINES:
        print('what failed:')
        for line in FAILURE_LINES[-40:]:
            print('  ' + line)
    print('whole suite: %.0f s' % (time.monotonic() - started))
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == '__main__':
    sys.exit(main())
