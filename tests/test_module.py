# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.tests.test_tryton import ModuleTestCase


class HealthOrthancTestCase(ModuleTestCase):
    "Test health_orthanc module"
    module = 'health_orthanc'


del ModuleTestCase
