# SPDX-License-Identifier: GPL-3.0-or-later
"""The upload framing parser (upload_frames.py): no database, no server."""
import gzip
import struct
import tracemalloc
import unittest

from trytond.modules.health_orthanc import upload_frames as frames

from . import bombs
from . import dicom_factory as dicom

# No database: tests/conftest.py runs it in the SQLite phase only.
SAME_ON_EVERY_BACKEND = True


def frame(*files):
    return dicom.frame_mult(files)


class FramingTestCase(unittest.TestCase):

    def test_framed_files(self):
        files = [b'first', b'', b'third file']
        data = frame(*files)
        self.assertTrue(frames.is_framed(data))
        self.assertEqual(frames.count_frames(data), 3)
        result = list(frames.iter_files(data))
        self.assertEqual([f.index for f in result], [0, 1, 2])
        self.assertEqual([bytes(f.data) for f in result], files)
        self.assertEqual([f.error for f in result], [None] * 3)
        self.assertEqual([f.size for f in result], [5, 0, 10])

    def test_slices_are_views(self):
        "Files are views of the upload, not copies."
        big = b'x' * 5_000_000
        data = frame(big, big)
        tracemalloc.start()
        try:
            sizes = [f.size for f in frames.iter_files(data)]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(sizes, [5_000_000, 5_000_000])
        self.assertLess(peak, 100_000)
        view = next(frames.iter_files(data)).data
        self.assertIsInstance(view, memoryview)
        self.assertIs(view.obj, data)

    def test_lazy(self):
        "A truncated tail does not stop the files before it being yielded."
        data = frame(b'a', b'b') + struct.pack('<Q', 99) + b'short'
        iterator = frames.iter_files(data)
        self.assertEqual(bytes(next(iterator).data), b'a')
        self.assertEqual(bytes(next(iterator).data), b'b')
        truncated = next(iterator)
        self.assertIsNone(truncated.data)
        self.assertEqual(truncated.index, 2)
        self.assertIn('file #3 announces 99 bytes, only 5 arrived',
            truncated.error)
        self.assertRaises(StopIteration, next, iterator)
        self.assertEqual(frames.count_frames(data), 3)

    def test_truncated_length(self):
        data = frame(b'abc') + b'\x01\x02\x03'
        result = list(frames.iter_files(data))
        self.assertEqual(len(result), 2)
        self.assertEqual(bytes(result[0].data), b'abc')
        self.assertIn('length of file #2 is cut short (3 of 8 bytes)',
            result[1].error)

    def test_huge_announced_length(self):
        data = b'MULT' + struct.pack('<Q', 2 ** 64 - 1) + b'abc'
        result, = frames.iter_files(data)
        self.assertIn('file #1 announces', result.error)

    def test_only_magic(self):
        self.assertTrue(frames.is_framed(b'MULT'))
        self.assertEqual(list(frames.iter_files(b'MULT')), [])
        self.assertEqual(frames.count_frames(b'MULT'), 0)

    def test_empty(self):
        for value in (None, b'', bytearray()):
            self.assertEqual(list(frames.iter_files(value)), [])
            self.assertEqual(frames.count_frames(value), 0)
        self.assertFalse(frames.is_framed(None))

    def test_plain_dicom(self):
        data = dicom.image()
        self.assertFalse(frames.is_framed(data))
        self.assertEqual(frames.kind_of(data), 'dicom')
        result, = frames.iter_files(data)
        self.assertEqual(bytes(result.data), data)
        self.assertIs(result.data.obj, data)
        self.assertEqual(frames.count_frames(data), 1)

    def test_dicom_preamble_starting_with_magic(self):
        "A DICOM preamble beginning with MULT is still one DICOM file."
        data = b'MULT' + dicom.image()[4:]
        self.assertEqual(frames.kind_of(data), 'dicom')
        self.assertFalse(frames.is_framed(data))
        result, = frames.iter_files(data)
        self.assertEqual(bytes(result.data), data)
        # Even when the preamble reads as an exact framing of one file.
        image = dicom.image()
        exact = b'MULT' + struct.pack('<Q', len(image) - 12) + image[12:]
        self.assertEqual(frames.kind_of(exact), 'dicom')
        self.assertFalse(frames.is_framed(exact))
        checked, = frames.check_upload(exact)
        self.assertEqual((checked.kind, checked.size), ('dicom', len(image)))

    def test_zip(self):
        data = dicom.zip_of([('a.dcm', dicom.image())])
        self.assertEqual(frames.kind_of(data), 'zip')
        self.assertFalse(frames.is_framed(data))
        self.assertEqual(frames.kind_of(frame(data)[12:]), 'zip')

    def test_kinds(self):
        self.assertEqual(frames.kind_of(gzip.compress(b'x')), 'gzip')
        self.assertEqual(frames.kind_of(b'hello'), 'unknown')
        self.assertEqual(frames.kind_of(b''), 'unknown')
        self.assertEqual(frames.kind_of(memoryview(b'PK\x05\x06' + b'\0' * 18)),
            'zip')

    def test_gunzip(self):
        payload = dicom.image()
        self.assertEqual(frames.gunzip(gzip.compress(payload)), payload)
        with self.assertRaises(frames.UploadRefused) as caught:
            frames.gunzip(gzip.compress(b'\0' * 10_000), limit=1000)
        self.assertEqual(caught.exception.code, 'gzip_too_large')
        self.assertEqual(frames.gunzip(gzip.compress(b'\0' * 1000),
                limit=1000), b'\0' * 1000)
        with self.assertRaisesRegex(ValueError, 'truncated'):
            frames.gunzip(gzip.compress(payload)[:-20])
        with self.assertRaisesRegex(ValueError, 'corrupt'):
            frames.gunzip(b'\x1f\x8b' + b'\xff' * 30)

    def test_file_names(self):
        self.assertEqual(frames.file_names('a.dcm\nb.dcm', 2),
            ['a.dcm', 'b.dcm'])
        # GTK client: the total length (an int) instead of names
        self.assertEqual(frames.file_names(1234, 2), ['file #1', 'file #2'])
        self.assertEqual(frames.file_names('a.dcm', 2),
            ['file #1', 'file #2'])
        self.assertEqual(frames.file_names(None, 1), ['file #1'])
        self.assertEqual(frames.file_names('a\n\n', 3),
            ['file #1', 'file #2', 'file #3'])
        self.assertEqual(frames.file_names('', 0), [])

    def test_memoryview_and_bytearray_input(self):
        data = frame(b'abc', b'de')
        for value in (memoryview(data), bytearray(data)):
            self.assertEqual([bytes(f.data) for f in frames.iter_files(value)],
                [b'abc', b'de'])



class CheckUploadTestCase(unittest.TestCase):
    "check_upload: the whole upload against the limits, before any send."

    def refused(self, data, code, limits=None):
        with self.assertRaises(frames.UploadRefused) as caught:
            frames.check_upload(data, limits)
        self.assertEqual(caught.exception.code, code)
        return caught.exception.values

    def test_zip_entries_not_dicom_are_named(self):
        archive = dicom.zip_of([('a.dcm', dicom.image()),
                ('viewer/run.exe', b'MZ' + bytes(300)),
                ('autorun.inf', b'[autorun]')])
        checked, = frames.check_upload(archive)
        self.assertEqual(checked.zip_files, 3)
        self.assertEqual(checked.zip_not_dicom,
            ('viewer/run.exe', 'autorun.inf'))

    def test_files(self):
        archive = dicom.zip_of([('a.dcm', dicom.image()),
                ('b.dcm', dicom.image())])
        image = dicom.image()
        packed = gzip.compress(image)
        checked = frames.check_upload(frame(image, archive, packed,
                b'not DICOM'))
        self.assertEqual([c.kind for c in checked],
            ['dicom', 'zip', 'dicom', 'unknown'])
        self.assertEqual([c.zip_files for c in checked],
            [None, 2, None, None])
        self.assertEqual([c.gzipped for c in checked],
            [False, False, True, False])
        self.assertEqual(checked[2].size, len(image))
        self.assertEqual(b''.join(checked[2].body()), image)
        self.assertIs(checked[0].body().obj, checked[1].body().obj)
        self.assertEqual(frames.check_upload(b''), [])
        self.assertEqual(frames.check_upload(b'MULT'), [])

    def test_too_many_files(self):
        values = self.refused(frame(*[b'x'] * 4), 'too_many_files',
            frames.UploadLimits(files=3))
        self.assertEqual(values, {'limit': 3})
        self.assertEqual(len(frames.check_upload(frame(*[b'x'] * 3),
                    frames.UploadLimits(files=3))), 3)

    def test_million_empty_files(self):
        "Refused at the first header: nothing else is read."
        data = bombs.zero_length_frames(1_000_000)
        self.assertEqual(self.refused(data, 'empty_file'), {'index': 1})
        self.assertEqual(self.refused(frame(b'a', b'', b'c'), 'empty_file'),
            {'index': 2})
        self.refused(b'MULT' + (b'\1' + bytes(7) + b'x') * 1_000_000,
            'too_many_files')  # a million 1-byte files

    def test_truncated_file_is_not_sent(self):
        data = frame(b'abc') + struct.pack('<Q', 99) + b'short'
        first, last = frames.check_upload(data)
        self.assertIsNone(first.problem)
        self.assertEqual(last.problem[0], 'truncated')

    def test_gzip_bomb(self):
        "Counted, not held: memory stays far below what it inflates to."
        bomb = bombs.gzip_of_zeros(64 * bombs.BLOCK)  # 1 GiB
        tracemalloc.start()
        try:
            values = self.refused(frame(dicom.image(), bomb),
                'gzip_too_large')
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(values, {'limit': frames.MAX_GUNZIP, 'index': 2})
        self.assertLess(peak, 5_000_000)

    def test_gzip_inflated_total(self):
        packed = gzip.compress(bytes(1000))
        limits = frames.UploadLimits(inflated_upload=2500)
        self.assertEqual(len(frames.check_upload(frame(packed, packed),
                    limits)), 2)
        self.assertEqual(self.refused(frame(packed, packed, packed),
                'upload_too_large', limits), {'limit': 2500, 'index': 3})

    def test_corrupt_gzip_is_not_sent(self):
        checked, = frames.check_upload(b'\x1f\x8b' + b'\xff' * 30)
        self.assertEqual(checked.problem[0], 'bad_gzip')
        checked, = frames.check_upload(gzip.compress(dicom.image())[:-20])
        self.assertIn('truncated', checked.problem[1]['detail'])

    def test_zip_bomb(self):
        bomb = bombs.zip_of_zeros(179 * bombs.BLOCK)  # 3 GB in 3 MB
        values = self.refused(bomb, 'zip_entry_too_large')
        self.assertEqual(values['size'], 179 * bombs.BLOCK)
        limits = frames.UploadLimits(inflated_file=1 << 32)
        values = self.refused(bomb, 'zip_ratio', limits)
        self.assertGreater(values['ratio'], 1000)

    def test_zip_limits(self):
        archive = dicom.zip_of([('%d.dcm' % i, b'x') for i in range(5)])
        self.assertEqual(self.refused(archive, 'zip_entries',
                frames.UploadLimits(zip_entries=4)),
            {'count': 5, 'limit': 4, 'index': 1})
        # A small archive is judged as if it were 1 MB: no false alarm.
        small = dicom.zip_of([('a.dcm', bytes(5_000_000))])
        checked, = frames.check_upload(small)
        self.assertEqual(checked.zip_files, 1)
        checked, = frames.check_upload(b'PK\x03\x04 not an archive')
        self.assertEqual(checked.problem[0], 'bad_zip')

    def test_gzipped_zip_is_checked(self):
        bomb = gzip.compress(bombs.zip_of_zeros(2 * bombs.BLOCK))
        limits = frames.UploadLimits(inflated_file=bombs.BLOCK)
        self.refused(bomb, 'zip_entry_too_large', limits)
        archive = dicom.zip_of([('a.dcm', dicom.image())])
        checked, = frames.check_upload(gzip.compress(archive))
        self.assertEqual((checked.kind, checked.zip_files), ('zip', 1))
        self.assertEqual(bytes(checked.body()), archive)

    def test_inflated_chunks(self):
        data = bombs.gzip_of_zeros(2 * bombs.BLOCK)
        size, head = frames.inflated_size(data, limit=1 << 30)
        self.assertEqual((size, head), (2 * bombs.BLOCK, bytes(132)))
        inflated = frames.Inflated(memoryview(data), size)
        self.assertEqual(len(inflated), size)
        for _ in range(2):  # re-iterable: a retry inflates again
            lengths = [len(c) for c in inflated]
            self.assertEqual(sum(lengths), size)
            self.assertLessEqual(max(lengths), 1 << 20)

    def test_limits_must_be_positive(self):
        with self.assertRaises(ValueError):
            frames.UploadLimits(files=0)

    def test_file_name(self):
        self.assertEqual(frames.file_name('a\nb', 1), 'b')
        self.assertEqual(frames.file_name('a\nb', 5), 'file #6')
        self.assertEqual(frames.file_name(1234, 0), 'file #1')


if __name__ == '__main__':
    unittest.main()
