# SPDX-License-Identifier: GPL-3.0-or-later
"""The README says what the tree and the benchmarks say: its file table
lists every file of the module and nothing that is gone, and its
performance figures are what benchmarks/readme.py writes from the
benchmarks' JSON (benchmarks/results/)."""
import importlib.util
import os
import re
import subprocess
import unittest

# No database: tests/conftest.py runs it in the SQLite phase only.
SAME_ON_EVERY_BACKEND = True

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
README = os.path.join(ROOT, 'README.md')


def read_readme():
    with open(README, encoding='utf-8') as stream:
        return stream.read()


def file_table(text):
    "The paths named in the first column of the Development table."
    section = text[text.index('## Development'):]
    names = set()
    for line in section.splitlines():
        if line.startswith('| `'):
            names.update(re.findall(r'`([^`]+)`', line.split('|')[1]))
    return names


def tracked_entries():
    "The module's files and folders at its root (git's, else the disk's)."
    try:
        files = subprocess.run(['git', 'ls-files'], cwd=ROOT, text=True,
            capture_output=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        files = [f for f in os.listdir(ROOT) if not f.startswith('.')]
    return {f.split('/')[0] + ('/' if '/' in f else '') for f in files}


class ReadmeTestCase(unittest.TestCase):

    def test_file_table_matches_the_tree(self):
        listed = file_table(read_readme())
        gone = sorted(n for n in listed
            if not os.path.exists(os.path.join(ROOT, n)))
        self.assertEqual(gone, [], "README lists files that do not exist")
        unlisted = sorted(e for e in tracked_entries() if e not in listed
            and not any(n.startswith(e) for n in listed if e.endswith('/')))
        self.assertEqual(unlisted, [],
            "files of the module missing from the README's file table "
            "(section Development)")

    def test_figures_come_from_the_benchmarks(self):
        spec = importlib.util.spec_from_file_location('bench_readme',
            os.path.join(ROOT, 'benchmarks', 'readme.py'))
        readme = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(readme)
        text = read_readme()
        self.assertTrue(readme.BLOCK.search(text),
            "README has no benchmark block")
        self.assertEqual(readme.rewrite(text), text,
            "README's figures differ from benchmarks/results: run "
            "python benchmarks/readme.py")
