# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/run_suite.py's own rules: what it counts and what it repeats above
its closing lines."""
import unittest

from . import run_suite

SAME_ON_EVERY_BACKEND = True


class SuiteRunnerTestCase(unittest.TestCase):

    def test_failure_lines_repeated(self):
        "The lines each phase prints when a test fails, as they print them."
        for line in [
                'FAILED tests/test_reconcile.py::ReconcileTest::test_cd - '
                'AssertionError: 1 != 2',
                'ERROR tests/test_server.py::ServerTest::test_check',
                'FAILED at step 12: the widget did not finish streaming',
                'FAILED (doctor) at step 3: a problem dialog',
                'browser test FAILED: Orthanc holds 9 instances, not 10 '
                '(artifacts in build/artifacts)',
                ]:
            self.assertTrue(run_suite.FAILURE_LINE.search(line), line)

    def test_passing_lines_not_repeated(self):
        for line in [
                'tests/test_reconcile.py ....s.. [ 40%]',
                '    ok: wizard upload: no problem dialog, no #ERROR cell',
                'walk.mjs: 3 role(s) passed, 0 failed',
                '404 passed, 0 failed',
                'gtk test passed',
                ]:
            self.assertFalse(run_suite.FAILURE_LINE.search(line), line)

    def test_count(self):
        "Failures and errors count as failed; a crash counts one."
        self.assertEqual(run_suite.count(
                '= 3 failed, 240 passed, 1 error in 300.1s =', 1), (240, 4))
        self.assertEqual(run_suite.count('', 1), (0, 1))
        self.assertEqual(run_suite.count('= 12 passed in 3.0s =', 0),
            (12, 0))
