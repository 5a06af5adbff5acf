#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the whole suite: Python tests on SQLite then PostgreSQL, then the
browser test and the GTK client test; print one closing line
`N passed, N failed`.

Activated test databases are cached (trytond's DB_CACHE) in build/ for
SQLite and as template databases on PostgreSQL, so GNU Health is activated
once per database backend rather than once per test class.
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


@contextlib.contextmanager
def postgresql_turn():
    "Hold the machine-wide PostgreSQL lock, with templates of our sources."
    with open(PG_LOCK, 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
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


def run_pytest(name, env_extra, pytest_args):
    env = {**os.environ, **env_extra}
    env.setdefault('HEALTH_ORTHANC_OLD_VENVS', BUILD)
    cmd = [sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider',
        '-W', 'ignore::UserWarning', '-p', 'no:logging',
        '--pyargs', 'trytond.modules.health_orthanc.tests', *pytest_args]
    print('==== %s: %s' % (name, ' '.join(cmd)), flush=True)
    process = subprocess.Popen(cmd, env=env, cwd=BUILD, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    summary = ''
    for line in process.stdout:
        print(line, end='', flush=True)
        if re.match(r'^=+ .*\d+ (passed|failed|error)', line):
            summary = line
    process.wait()
    return count(summary, process.returncode)


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


# Each browser test counts as one test.
BROWSER_TESTS = ['browser_run.py', 'browser_viewer_run.py']


def run_browser_script(script):
    """(passed, failed) of one browser script: from its own line
    `browser: N passed, N failed` when it prints one, else one test
    judged by its exit code."""
    process = subprocess.Popen([sys.executable, script], cwd=BUILD,
        text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    summary = None
    for line in process.stdout:
        print(line, end='', flush=True)
        found = re.match(r'^browser: (\d+) passed, (\d+) failed$', line)
        if found:
            summary = int(found.group(1)), int(found.group(2))
    process.wait()
    if summary is None:
        return (1, 0) if process.returncode == 0 else (0, 1)
    passed, failed = summary
    if process.returncode and not failed:
        failed = 1
    return passed, failed


def run_browser():
    passed = failed = 0
    for name in BROWSER_TESTS:
        script = os.path.join(ROOT, 'tests', name)
        if not os.path.exists(script):
            continue
        print('==== browser: %s' % script, flush=True)
        script_passed, script_failed = run_browser_script(script)
        passed += script_passed
        failed += script_failed
    return passed, failed


def run_gtk():
    """The GNU Health GTK client opens every screen (tests/gtk_run.py):
    one test; exit 2 means this machine cannot run it (reason printed),
    counted as skipped, not passed."""
    script = os.path.join(ROOT, 'tests', 'gtk_run.py')
    print('==== gtk: %s' % script, flush=True)
    code = subprocess.run([sys.executable, script], cwd=BUILD).returncode
    if code == 2:
        print('gtk: SKIPPED (reason above)', flush=True)
        return 0, 0
    return (1, 0) if code == 0 else (0, 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--only',
        choices=['sqlite', 'postgresql', 'browser', 'gtk'])
    parser.add_argument('pytest_args', nargs='*')
    args = parser.parse_args()
    os.makedirs(BUILD, exist_ok=True)
    invalidate_sqlite_cache()
    results = {}
    for name, env in backends().items():
        if args.only in (None, name):
            turn = (postgresql_turn() if name == 'postgresql'
                else contextlib.nullcontext())
            with turn:
                results[name] = run_pytest(name, env, args.pytest_args)
    if args.only in (None, 'browser'):
        results['browser'] = run_browser()
    if args.only in (None, 'gtk'):
        results['gtk'] = run_gtk()
    for name, (passed, failed) in results.items():
        print('%s: %d passed, %d failed' % (name, passed, failed))
    passed = sum(p for p, _ in results.values())
    failed = sum(f for _, f in results.values())
    print('%d passed, %d failed' % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == '__main__':
    sys.exit(main())
