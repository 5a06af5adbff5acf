# SPDX-License-Identifier: GPL-3.0-or-later
"""Scenario doctests (tests/scenario_*.rst), one test method each.

pytest does not honour unittest's load_tests protocol, so each scenario is
wrapped in a TestCase method that runs its DocFileSuite the way trytond's
load_doc_tests does.
"""
import doctest
import glob
import importlib
import os
import sys
import unittest
from unittest.mock import patch

from trytond.tests.test_tryton import doctest_checker, doctest_teardown

from .orthanc_server import orthanc_available

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = 'trytond.modules.health_orthanc.'


def module_constants():
    """The upper-case globals (page sizes, limits...) of the module's code,
    by module: all scenarios run in one process."""
    importlib.import_module(PACKAGE.rstrip('.'))  # and its modules
    return {name: {key: value for key, value in vars(module).items()
            if key.isupper()}
        for name, module in list(sys.modules.items())
        if name.startswith(PACKAGE) and not name.startswith(
            PACKAGE + 'tests')}


def restore_constants(saved):
    "Put back the constants saved; the names of those changed."
    changed = []
    for name, values in saved.items():
        module = sys.modules[name]
        for key, value in values.items():
            if getattr(module, key, None) is not value:
                changed.append('%s.%s' % (name[len(PACKAGE):], key))
                setattr(module, key, value)
    return changed


# Scenarios that use instances run twice: all instances, on demand.
INSTANCE_SCENARIOS = {'scenario_clinical', 'scenario_sync',
    'scenario_sync_safety', 'scenario_upload'}


# tests/tools.py register_server reads it.
MIRRORING_VARIABLE = 'HEALTH_ORTHANC_INSTANCE_MIRRORING'


def _scenario_test(path, mirroring='all'):
    def test(self):
        saved = module_constants()
        self.addCleanup(self.assert_restored, saved)
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


@unittest.skipUnless(orthanc_available(),
    'the scenarios drive a real Orthanc: the Orthanc executable (Debian '
    'orthanc) is not installed')
class ScenarioTestCase(unittest.TestCase):
    "Scenarios driven with proteus against a real Orthanc"

    def assert_restored(self, saved):
        "A scenario restores the constants it changes (others follow it)."
        changed = restore_constants(saved)
        self.assertEqual(changed, [],
            "the scenario did not restore these module constants")


for _path in sorted(glob.glob(os.path.join(HERE, 'scenario_*.rst'))):
    _name = os.path.splitext(os.path.basename(_path))[0]
    setattr(ScenarioTestCase, 'test_' + _name, _scenario_test(_path))
    if _name in INSTANCE_SCENARIOS:
        setattr(ScenarioTestCase, 'test_%s_on_demand' % _name,
            _scenario_test(_path, 'on_demand'))
