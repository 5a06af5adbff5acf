# SPDX-License-Identifier: GPL-3.0-or-later
"""The upload framing parser (upload_frames.py): no database, no server."""
import gzip
import struct
import tracemalloc
import unittest

from trytond.modules.health_orthanc import upload_frames as frames

from . import dicom_factory as dicom


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


if __name__ == '__main__':
    unittest.main()
