# SPDX-License-Identifier: GPL-3.0-or-later
"""Scenario doctests (tests/scenario_*.rst), one test method each.

pytest does not honour unittest's load_tests protocol, so each scenario is
wrapped in a TestCase method that runs its DocFileSuite the way trytond's
load_doc_tests does.
"""
import doctest
import glob
import os
import unittest

from trytond.tests.test_tryton import doctest_checker, doctest_teardown

HERE = os.path.dirname(os.path.abspath(__file__))


def _scenario_test(path):
    def test(self):
        suite = doctest.DocFileSuite(path, module_relative=False,
            tearDown=doctest_teardown, encoding='utf-8',
            checker=doctest_checker,
            optionflags=doctest.REPORT_ONLY_FIRST_FAILURE
            | doctest.ELLIPSIS)
        result = unittest.TestResult()
        suite.run(result)
        problems = result.failures + result.errors
        if problems:
            self.fail('\n'.join(text for _, text in problems))
    return test


class ScenarioTestCase(unittest.TestCase):
    "Scenarios driven with proteus against a real Orthanc"


for _path in sorted(glob.glob(os.path.join(HERE, 'scenario_*.rst'))):
    _name = os.path.splitext(os.path.basename(_path))[0]
    setattr(ScenarioTestCase, 'test_' + _name, _scenario_test(_path))
