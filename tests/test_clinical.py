# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of clinical.py's pure helpers (no database, no Orthanc)."""
import unittest
from unittest import mock

from trytond.modules.health_orthanc import clinical, orthanc

# No database: tests/conftest.py runs it in the SQLite phase only.
SAME_ON_EVERY_BACKEND = True

PNG = b'\x89PNG\r\n\x1a\n...'


class PreviewCacheTestCase(unittest.TestCase):

    def setUp(self):
        self.cache = clinical.PreviewCache(size=2, seconds=30)
        self.calls = 0

    def fetch(self, answer):
        def fetch():
            self.calls += 1
            if isinstance(answer, Exception):
                raise answer
            return answer
        return fetch

    def test_second_read_reuses_the_image(self):
        self.assertEqual(self.cache.get('a', self.fetch(PNG)), PNG)
        self.assertEqual(self.cache.get('a', self.fetch(PNG)), PNG)
        self.assertEqual(self.calls, 1)

    def test_not_an_image_is_kept(self):
        for _ in range(2):
            with self.assertRaises(orthanc.NotAnImage):
                self.cache.get('sr', self.fetch(
                        orthanc.NotAnImage('cannot render', 415)))
        self.assertEqual(self.calls, 1)

    def test_failures_are_not_kept(self):
        for error in [orthanc.Unreachable('down'),
                orthanc.Rejected('forbidden', 403)]:
            for _ in range(2):
                with self.assertRaises(type(error)):
                    self.cache.get(str(error), self.fetch(error))
        self.assertEqual(self.calls, 4)

    def test_size_bound(self):
        for key in 'abc':
            self.cache.get(key, self.fetch(PNG))
        self.cache.get('a', self.fetch(PNG))
        self.assertEqual(self.calls, 4)
        self.cache.get('c', self.fetch(PNG))
        self.assertEqual(self.calls, 4)

    def test_expiry(self):
        with mock.patch.object(clinical.time, 'monotonic', return_value=100):
            self.cache.get('a', self.fetch(PNG))
        with mock.patch.object(clinical.time, 'monotonic', return_value=129):
            self.cache.get('a', self.fetch(PNG))
        self.assertEqual(self.calls, 1)
        with mock.patch.object(clinical.time, 'monotonic', return_value=131):
            self.cache.get('a', self.fetch(PNG))
        self.assertEqual(self.calls, 2)


class HelpersTestCase(unittest.TestCase):

    def test_split_person_name(self):
        self.assertEqual(clinical.split_person_name('SMITH, ANN MARIE'),
            ('SMITH', ['ANN', 'MARIE']))
        self.assertEqual(clinical.split_person_name('SMITH'), ('SMITH', []))
        self.assertEqual(clinical.split_person_name(None), ('', []))

    def test_adapter_error_kinds(self):
        "Callers tell errors apart by their class, never by a status."
        self.assertTrue(issubclass(orthanc.NotAnImage, orthanc.Rejected))
        for error in [orthanc.Unreachable, orthanc.Timeout,
                orthanc.DeadlineExceeded, orthanc.TLSFailure,
                orthanc.Unauthorized, orthanc.NotOrthanc]:
            with self.subTest(error=error):
                self.assertTrue(issubclass(error, orthanc.ServerDown))
        for error in [orthanc.NotFound, orthanc.Rejected, orthanc.TooLarge,
                orthanc.NotAnImage]:
            with self.subTest(error=error):
                self.assertFalse(issubclass(error, orthanc.ServerDown))
