# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile uploads, built in a second and small in memory, and a way to
measure a process's peak memory.

The deflate data of N zero bytes is one compressed block of 16 MiB of
zeros, ended by a full flush (so it refers to nothing before it), repeated;
the CRC-32 of N zeros is computed by squaring its linear map, not by
reading N bytes.
"""
import re
import struct
import zlib

BLOCK = 1 << 24  # 16 MiB of zeros per repeated deflate segment


def _segment():
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(bytes(BLOCK)) + compressor.flush(
        zlib.Z_FULL_FLUSH)


def _final_block():
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.flush(zlib.Z_FINISH)


def _deflated_zeros(size):
    "Raw deflate data inflating to size zero bytes (size % BLOCK == 0)."
    assert size % BLOCK == 0
    return _segment() * (size // BLOCK) + _final_block()


# CRC-32 over GF(2): reading one block of zeros maps the CRC register v to
# A v + b, an affine map; n blocks are that map composed n times.

def _affine_of_block():
    base = zlib.crc32(bytes(BLOCK), 0)
    columns = [zlib.crc32(bytes(BLOCK), 1 << i) ^ base for i in range(32)]
    return columns, base


def _apply(columns, vector):
    result = 0
    for i in range(32):
        if vector >> i & 1:
            result ^= columns[i]
    return result


def _compose(first, second):
    "second after first."
    (c1, b1), (c2, b2) = first, second
    return [_apply(c2, c) for c in c1], _apply(c2, b1) ^ b2


def crc32_of_zeros(size):
    "zlib.crc32(bytes(size)) without the bytes (size % BLOCK == 0)."
    count = size // BLOCK
    result, power = ([1 << i for i in range(32)], 0), _affine_of_block()
    while count:
        if count & 1:
            result = _compose(result, power)
        power = _compose(power, power)
        count >>= 1
    return result[1]  # the map applied to the register 0


def gzip_of_zeros(size):
    "A valid gzip file of size zero bytes (about size / 1000 bytes)."
    header = b'\x1f\x8b\x08\x00' + b'\0' * 4 + b'\x02\xff'
    return (header + _deflated_zeros(size)
        + struct.pack('<II', crc32_of_zeros(size), size & 0xffffffff))


def zip_of_zeros(size, name='bomb.dcm'):
    "A valid ZIP archive of one deflated entry of size (< 4 GiB) zeros."
    data = _deflated_zeros(size)
    crc, encoded = crc32_of_zeros(size), name.encode()
    local = struct.pack('<4s5H3I2H', b'PK\x03\x04', 20, 0, 8, 0, 0, crc,
        len(data), size, len(encoded), 0) + encoded
    central = struct.pack('<4s6H3I5H2I', b'PK\x01\x02', 20, 20, 0, 8, 0, 0,
        crc, len(data), size, len(encoded), 0, 0, 0, 0, 0, 0) + encoded
    end = struct.pack('<4s4H2IH', b'PK\x05\x06', 0, 0, 1, 1, len(central),
        len(local) + len(data), 0)
    return local + data + central + end


def zero_length_frames(count):
    "The MULT framing of count empty files."
    return b'MULT' + bytes(8 * count)


# --- Memory ------------------------------------------------------------------

def _status(pid, key):
    with open('/proc/%s/status' % pid) as status:
        return int(re.search(r'^%s:\s+(\d+) kB' % key, status.read(),
                re.M).group(1)) * 1024


def rss(pid='self'):
    "Resident memory of a process, in bytes."
    return _status(pid, 'VmRSS')


def peak(pid='self'):
    "Peak resident memory (high-water mark) of a process, in bytes."
    return _status(pid, 'VmHWM')


def reset_peak(pid='self'):
    """Make the high-water mark of a process its current resident memory
    (Linux >= 4.0), so that a later peak() measures what came after."""
    with open('/proc/%s/clear_refs' % pid, 'w') as clear_refs:
        clear_refs.write('5')


class PeakGrowth:
    """with PeakGrowth(pid) as growth: ...; growth.bytes is how far the
    process's resident memory rose above its level at the start."""

    def __init__(self, pid='self'):
        self.pid = pid
        self.bytes = None

    def __enter__(self):
        reset_peak(self.pid)
        self.start = rss(self.pid)
        return self

    def __exit__(self, *exc_info):
        self.bytes = peak(self.pid) - self.start
