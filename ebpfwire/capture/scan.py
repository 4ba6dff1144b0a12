"""The reader's hot path: good records taken from a buffer in one loop per version, and
the search for the next record header after damage (vectorised with numpy when present)."""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any

from ebpfwire.capture.format import (
    _HEAD_CACHE_LIMIT,
    _HEAD_CHECK,
    _HEAD_COVERED,
    _LOST,
    _LOST_HEAD_CRC,
    _LOST_PAYLOAD,
    _SAMPLE,
    _SAMPLE_HEAD,
    _SCAN_HEAD_V2,
    _SYNC_INT,
    MAX_PAYLOAD,
    SYNC,
    LostRecord,
    SampleRecord,
)


def scan_v1(
    buf: bytes,
    pos: int,
    n: int,
    base: int,
    out: list[SampleRecord | LostRecord],
    sample_record: type[SampleRecord] = SampleRecord,
    lost_record: type[LostRecord] = LostRecord,
) -> int:
    """The hot path (version 1): append the good SAMPLE and LOST records in buf[pos:n] to
    out and return where it stopped (the end, an incomplete record, or anything irregular)."""
    # scan_v1 and scan_v2 are two inlined loops, not one with a version switch: this is the
    # reader's hot path (bench/capture_throughput.py), and every name is bound to a local
    unpack = _SAMPLE_HEAD.unpack_from
    unpack_lost = _LOST_PAYLOAD.unpack_from
    crc32 = zlib.crc32
    append = out.append
    sync_word = _SYNC_INT
    max_payload = MAX_PAYLOAD
    sample = _SAMPLE
    lost = _LOST
    try:
        while True:
            sync, crc, length, rtype, _, cpu = unpack(buf, pos)  # struct.error near the end
            end = pos + 16 + length
            if sync != sync_word or end > n or length > max_payload:
                return pos
            region = buf[pos + 8:end]
            if crc32(region) != crc:
                return pos
            if rtype == sample and length >= 4:
                append(sample_record(cpu, region[12:], base + pos))
            elif rtype == lost and length == 12:
                append(lost_record(*unpack_lost(region, 8), base + pos))
            else:
                return pos
            pos = end
    except struct.error:
        return pos


_HEAD_CANDIDATE = re.compile(re.escape(SYNC) + rb"(?=(?s:..)[\x00-\x10]\x00)")
"""The sync word and a length that may be <= MAX_PAYLOAD: rejects most false candidates
(a run of sync words, say) at the speed of the regular expression engine."""


def next_head_v2(buf: bytes, pos: int, n: int, limit: int = 2**64) -> int:
    """The first offset >= pos of a version-2 record header that checks itself (sync word,
    header CRC32, length bound) and whose record ends by `limit` (the end of the data, once
    it is known: a record cut there is no place to resume), or -1. A resynchronising reader
    looks only there.

    Candidates are checked one by one; after many failures in a row (a hostile file packs
    one every 12 bytes) the rest are checked a window at a time with numpy when it is
    installed, so that a crafted file reads about as fast as a valid one."""
    unpack = _HEAD_CHECK.unpack_from
    crc32 = zlib.crc32
    failed = 0
    # The sync word cannot overlap itself, so non-overlapping matches are all the matches.
    for match in _HEAD_CANDIDATE.finditer(buf, pos, n):
        p = match.start()
        if p + 16 > n:
            return -1
        length, head = unpack(buf, p + 4)
        if length <= MAX_PAYLOAD and p + 20 + length <= limit \
                and crc32(buf[p + 4:p + 12]) == head:
            return p
        failed += 1
        if failed == 16 and _numpy() is not None:
            return _next_head_v2_windows(buf, p + 1, n, limit)
    return -1


_np: Any = None


def _numpy() -> Any:
    """numpy if it is installed (an optional speed-up of resynchronisation), else None."""
    global _np
    if _np is None:
        try:
            import numpy
        except ImportError:
            _np = False
        else:
            _np = numpy
    return _np or None


def _next_head_v2_windows(buf: bytes, pos: int, n: int, limit: int = 2**64) -> int:
    """next_head_v2 vectorised over windows that double in size (so the work stays
    proportional to the distance to the header found)."""
    np = _numpy()
    table = _crc_table(np)
    data = np.frombuffer(buf, dtype=np.uint8, count=n)
    last = n - 16  # the last start with a whole header before n
    window = 4096
    while pos <= last:
        hi = min(last + 1, pos + window)
        seg = data[pos:hi + 3]
        k = hi - pos
        starts = np.flatnonzero((seg[:k] == SYNC[0]) & (seg[1:k + 1] == SYNC[1])
                                & (seg[2:k + 2] == SYNC[2]) & (seg[3:k + 3] == SYNC[3]))
        if starts.size:
            starts += pos
            fields = data[starts[:, None] + np.arange(4, 16)].astype(np.uint32)
            crc = np.full(starts.size, 0xFFFFFFFF, dtype=np.uint32)
            for j in range(8):
                crc = table[(crc ^ fields[:, j]) & 0xFF] ^ (crc >> 8)
            crc ^= np.uint32(0xFFFFFFFF)
            length = fields[:, 0] | fields[:, 1] << 8 | fields[:, 2] << 16 | fields[:, 3] << 24
            head = fields[:, 8] | fields[:, 9] << 8 | fields[:, 10] << 16 | fields[:, 11] << 24
            fits = starts.astype(np.int64) + 20 + length <= min(limit, 2**62)
            good = np.flatnonzero((crc == head) & (length <= MAX_PAYLOAD) & fits)
            if good.size:
                return int(starts[good[0]])
        pos = hi
        window *= 2
    return -1


_CRC_TABLE: Any = None


def _crc_table(np: Any) -> Any:
    """The byte table of zlib's CRC32 (reflected polynomial 0xEDB88320)."""
    global _CRC_TABLE
    if _CRC_TABLE is None:
        values = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
            values.append(c)
        _CRC_TABLE = np.array(values, dtype=np.uint32)
    return _CRC_TABLE


def scan_v2(
    buf: bytes,
    pos: int,
    n: int,
    base: int,
    out: list[SampleRecord | LostRecord],
    head_crcs: dict[int, int],
    sample_record: type[SampleRecord] = SampleRecord,
    lost_record: type[LostRecord] = LostRecord,
) -> int:
    """The hot path (version 2): as scan_v1. The header CRC of a SAMPLE depends only on
    its length, so it is looked up in head_crcs (computed once per length) before the
    payload's CRC is computed: a forged header costs O(1)."""
    # the same inlined loop as scan_v1's, for the version-2 header (see there)
    unpack = _SCAN_HEAD_V2.unpack_from
    unpack_lost = _LOST_PAYLOAD.unpack_from
    crc32 = zlib.crc32
    append = out.append
    sync_word = _SYNC_INT
    sample = _SAMPLE
    lost = _LOST
    lost_head = _LOST_HEAD_CRC
    try:
        while True:
            # type and flags read as one u32: equal to SAMPLE means flags 0
            sync, length, kind, head, crc, cpu = unpack(buf, pos)  # struct.error near the end
            end = pos + 20 + length
            if sync != sync_word or end > n:
                return pos
            if kind == sample:
                try:
                    if head != head_crcs[length]:
                        return pos
                except KeyError:
                    if length < 4 or length > MAX_PAYLOAD:
                        return pos
                    expected = crc32(_HEAD_COVERED.pack(length, sample, 0))
                    if len(head_crcs) < _HEAD_CACHE_LIMIT:
                        head_crcs[length] = expected
                    if head != expected:
                        return pos
                payload = buf[pos + 20:end]
                if crc32(payload) != crc:
                    return pos
                append(sample_record(cpu, payload[4:], base + pos))
            elif kind == lost and head == lost_head and length == 12:
                payload = buf[pos + 20:end]
                if crc32(payload) != crc:
                    return pos
                append(lost_record(*unpack_lost(payload), base + pos))
            else:
                return pos
            pos = end
    except struct.error:
        return pos
