#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node:test tests of custom.js (tests/browser/*.test.mjs: the
binary_dicom framing, the streaming batches, the widget in SAO in
chromium), as `make browser-unit` runs them, counted one by one.

The last line says "browser: N passed, N failed"; a test node skipped
(SAO or chromium missing) counts as failed, as a browser script that
cannot run does.
"""
import os
import re
import subprocess
import sys

from browser_run import HERE

COUNTS = re.compile(r'^# (pass|fail|cancelled|skipped) (\d+)$')


def main():
    node = os.environ.get('NODE', 'node')
    try:
        run = subprocess.run([node, '--test', os.path.join(HERE, 'browser')],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        print('%s is not installed (make browser-deps)' % node)
        print('browser: 0 passed, 1 failed')
        return 1
    print(run.stdout, end='')
    counts = {}
    for line in run.stdout.splitlines():
        found = COUNTS.match(line)
        if found:
            counts[found.group(1)] = int(found.group(2))
    passed = counts.get('pass', 0)
    failed = sum(counts.get(k, 0) for k in ('fail', 'cancelled', 'skipped'))
    if run.returncode and not failed:
        failed = 1
    print('browser: %d passed, %d failed' % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
