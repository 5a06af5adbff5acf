# SPDX-License-Identifier: GPL-3.0-or-later
"""What the benchmark scripts share: a fresh interpreter per measured
scenario (its context on stdin, its JSON result as the last line of its
stdout), a database cache keyed by the module's source, peak-RSS readings
and the {value, limit, ok} form of a target.

Not a benchmark: sync.py and upload.py import it (they run as scripts, so
this folder is on sys.path).
"""
import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
# Folders whose files do not change what a benchmark measures.
NOT_MEASURED = {'tests', 'benchmarks', 'build', 'web', 'icons', 'scripts',
    'docs'}


def log(*args):
    print('[bench]', *args, file=sys.stderr, flush=True)


def spawn_worker(script, scenario, context, env):
    """Run `script --worker scenario` in a fresh interpreter with env added
    to the environment; return its JSON result.

    The context (with Orthanc's password) goes on stdin, not argv.
    """
    log('-- %s' % scenario)
    env = dict(os.environ, PYTHONWARNINGS='ignore::DeprecationWarning',
        **env)
    command = [sys.executable, os.path.realpath(script), '--worker',
        scenario]
    process = subprocess.run(command, env=env, input=json.dumps(context),
        stdout=subprocess.PIPE, text=True)
    if process.returncode:
        raise RuntimeError('worker %s failed (exit %d)'
            % (scenario, process.returncode))
    return json.loads(process.stdout.strip().splitlines()[-1])


def parse_args(parser):
    "The script's arguments; --worker names the scenario a spawned worker runs."
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser.parse_args()


def source_hash(names=None):
    "Hash of the module's .py/.xml/.cfg files (or of the files names)."
    digest = hashlib.sha1()
    for folder, dirs, files in sorted(os.walk(ROOT)):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.')
            and d not in NOT_MEASURED)
        for name in sorted(files):
            if (name.endswith(('.py', '.xml', '.cfg'))
                    and (names is None or name in names)):
                path = os.path.join(folder, name)
                digest.update(path[len(ROOT):].encode())
                with open(path, 'rb') as stream:
                    digest.update(stream.read())
    return digest.hexdigest()[:16]


def sqlite_environ(cache_root):
    """trytond's test settings for an in-memory SQLite database restored
    from a cache keyed by the module's source (a stale cache would miss new
    columns)."""
    return {'TRYTOND_DATABASE_URI': 'sqlite://', 'DB_NAME': ':memory:',
        'DB_CACHE': os.path.join(cache_root, source_hash())}


def target(value, limit, ok=None, digits=3):
    "A target as the JSON reports it: the value, its limit, whether met."
    return {'value': round(value, digits), 'limit': limit,
        'ok': value <= limit if ok is None else ok}


def reset_peak_rss(pid='self'):
    "Reset VmHWM (Linux >= 4.0); False where the kernel refuses."
    try:
        with open('/proc/%s/clear_refs' % pid, 'w') as stream:
            stream.write('5')
        return True
    except OSError:
        return False


def cpu_seconds(pid='self'):
    "(user, system) CPU time the process has used so far, in seconds."
    with open('/proc/%s/stat' % pid) as stream:
        # Fields after the command name (which may hold spaces).
        fields = stream.read().rsplit(')', 1)[1].split()
    tick = os.sysconf('SC_CLK_TCK')
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_mb(field, pid='self'):
    "VmHWM or VmRSS of the process, in MiB."
    with open('/proc/%s/status' % pid) as stream:
        for line in stream:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
