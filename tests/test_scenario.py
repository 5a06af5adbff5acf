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
from unittest.mock import patch

from trytond.tests.test_tryton import doctest_checker, doctest_teardown

HERE = os.path.dirname(os.path.abspath(__file__))


# Scenarios that use instances run twice: all instances, on demand.
INSTANCE_SCENARIOS = {'scenario_clinical', 'scenario_sync',
    'scenario_sync_safety', 'scenario_upload'}


# tests/tools.py register_server reads it.
MIRRORING_VARIABLE = 'HEALTH_ORTHANC_INSTANCE_MIRRORING'


def _scenario_test(path, mirroring='all'):
    def test(self):
        with patch.dict(os.environ, {MIRRORING_VARIABLE: mirroring}):
            problems = run_scenario(path)
        if problems:
            self.fail('\n'.join(text for _, text in problems))
    return test


def run_scenario(path):
    "Failures and errors of the scenario's doctest."
    suite = doctest.DocFileSuite(path, module_relative=False,
        tearDown=doctest_teardown, encoding='utf-8',
        checker=doctest_checker,
        optionflags=doctest.REPORT_ONLY_FIRST_FAILURE | doctest.ELLIPSIS)
    result = unittest.TestResult()
    suite.run(result)
    return result.failures + result.errors


class ScenarioTestCase(unittest.TestCase):
    "Scenarios driven with proteus against a real Orthanc"


for _path in sorted(glob.glob(os.path.join(HERE, 'scenario_*.rst'))):
    _name = os.path.splitext(os.path.basename(_path))[0]
    setattr(ScenarioTestCase, 'test_' + _name, _scenario_test(_path))
    if _name in INSTANCE_SCENARIOS:
        setattr(ScenarioTestCase, 'test_%s_on_demand' % _name,
            _scenario_test(_path, 'on_demand'))
