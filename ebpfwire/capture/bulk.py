"""A capture's records framed in bulk, for the columnar path: a whole buffer of a
version-2 capture is framed at once with numpy (record offsets, types, cpus, lengths, the
header CRCs), each payload's CRC32 checked, and the clean SAMPLE and LOST records handed
on as columns (:class:`RecordBlock`) with no record object each. Whatever is not provably
clean stops a stretch and is left to :class:`~ebpfwire.capture.reader.CaptureReader`'s
record-by-record path, so damage is reported and resynchronised exactly as it is there."""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from operator import attrgetter
from typing import Any

import numpy as np

from ebpfwire.capture.format import (
    _HEAD_CACHE_LIMIT,
    _HEAD_COVERED,
    _LOST,
    _LOST_HEAD_CRC,
    _LOST_PAYLOAD,
    _SAMPLE,
    _SYNC_INT,
    _U32,
    MAX_PAYLOAD,
    RECORD_HEADER_SIZE,
    LostRecord,
    SampleRecord,
)

_DATA, _OFFSET, _CPU, _RESYNC = (attrgetter(name) for name in ("data", "offset", "cpu",
                                                                "resync"))
_HEAD = RECORD_HEADER_SIZE + 4   # a record header and the payload's first u32 (the cpu)
_WORDS = _HEAD // 4
_GATHER = np.arange(_WORDS)


class RecordBlock:
    """SAMPLE and LOST records in file order, as columns: ``datas`` (a sample's bytes, b""
    for a LOST), ``offsets`` (file offsets), ``cpus``, ``samples`` (which rows are
    samples), ``counts`` (a LOST's count, 0 for a sample) and ``resync`` (the offset of the
    damage a record was found after by scanning, -1: reached through the chain of record
    headers; see SampleRecord.resync)."""

    __slots__ = ("datas", "offsets", "cpus", "samples", "counts", "resync")

    def __init__(self, datas: list[bytes], offsets: np.ndarray, cpus: np.ndarray,
                 samples: np.ndarray, counts: np.ndarray, resync: np.ndarray):
        self.datas, self.offsets, self.cpus = datas, offsets, cpus
        self.samples, self.counts, self.resync = samples, counts, resync

    def __len__(self) -> int:
        return len(self.datas)

    @classmethod
    def empty(cls) -> RecordBlock:
        return cls([], np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, bool),
                   np.empty(0, np.uint64), np.empty(0, np.int64))

    @classmethod
    def of(cls, records: list[SampleRecord | LostRecord]) -> RecordBlock:
        """The block of record objects (those the record-by-record path read)."""
        count = len(records)
        samples = np.fromiter(map(type, records), object, count) == SampleRecord
        if samples.all():
            datas = list(map(_DATA, records))
            counts = np.zeros(count, np.uint64)
        else:
            datas = [r.data if type(r) is SampleRecord else b"" for r in records]
            counts = np.fromiter((0 if type(r) is SampleRecord else r.count for r in records),
                                 np.uint64, count)
        resync = np.full(count, -1, np.int64)
        if any(map(_RESYNC, records)):   # a damage offset is past the file header: not 0
            resync[:] = [-1 if r.resync is None else r.resync for r in records]
        return cls(datas, np.fromiter(map(_OFFSET, records), np.int64, count),
                   np.fromiter(map(_CPU, records), np.int64, count), samples, counts, resync)

    @classmethod
    def join(cls, blocks: list[RecordBlock]) -> RecordBlock:
        if len(blocks) == 1:
            return blocks[0]
        if not blocks:
            return cls.empty()
        datas: list[bytes] = []
        for block in blocks:
            datas += block.datas
        return cls(datas, *(np.concatenate([getattr(block, name) for block in blocks])
                            for name in cls.__slots__[1:]))

    def split(self, at: int) -> tuple[RecordBlock, RecordBlock]:
        """The first ``at`` rows and the rest."""
        return (RecordBlock(self.datas[:at], *(getattr(self, name)[:at]
                                               for name in self.__slots__[1:])),
                RecordBlock(self.datas[at:], *(getattr(self, name)[at:]
                                               for name in self.__slots__[1:])))

    def records(self) -> list[SampleRecord | LostRecord]:
        """The rows as record objects (what CaptureReader yields for them)."""
        out: list[SampleRecord | LostRecord] = []
        for data, offset, cpu, sample, count, resync in zip(
                self.datas, self.offsets.tolist(), self.cpus.tolist(), self.samples.tolist(),
                self.counts.tolist(), self.resync.tolist(), strict=True):
            record = (SampleRecord(cpu, data, offset) if sample
                      else LostRecord(cpu, count, offset))
            record.resync = None if resync < 0 else resync
            out.append(record)
        return out


class Framer:
    """One buffer of a version-2 capture framed once: every sync word's header read and
    checked (sync, header CRC, type SAMPLE or LOST, length bound, whole within the
    buffer); :meth:`take` then follows the chain of record headers from any offset."""

    def __init__(self, buf: bytes, n: int, head_crcs: dict[int, int]):
        self.buf = buf
        found, rows = [], []
        for align in range(4):   # the sync word at each alignment, as u32 compares
            count = (n - align) // 4 - _WORDS + 1   # the words where a whole header starts
            if count <= 0:
                continue
            words = np.frombuffer(buf, "<u4", count + _WORDS - 1, align)
            at = np.flatnonzero(words[:count] == _SYNC_INT)
            found.append(at * 4 + align)
            rows.append(words[at[:, None] + _GATHER])   # the header's words and the cpu
        starts = np.concatenate([np.empty(0, np.int64), *found])
        order = np.argsort(starts)
        starts = starts[order]
        heads = np.concatenate([np.empty((0, _WORDS), np.uint32), *rows])[order]
        length = heads[:, 1].astype(np.int64)
        kind, head = heads[:, 2], heads[:, 3]
        self.starts = starts
        self.ends = starts + RECORD_HEADER_SIZE + length
        self.crc, self.cpu = heads[:, 4], heads[:, 5]
        self.lost = kind == _LOST
        sample = (kind == _SAMPLE) & (length >= 4) & (length <= MAX_PAYLOAD)
        expected = np.zeros(len(starts), np.uint32)
        if sample.any():
            lengths, inverse = np.unique(length[sample], return_inverse=True)
            expected[sample] = np.array([_head_crc(int(v), head_crcs) for v in lengths],
                                        np.uint32)[inverse]
        good = sample & (head == expected) | self.lost & (head == _LOST_HEAD_CRC) & (length == 12)
        good &= self.ends <= n
        # where a header is not good, or the next header is not the next sync word found
        # (a sync word inside a payload, damage, the end of the buffer): the only places
        # take() looks at one by one
        self.good = good
        self.unclean = np.flatnonzero(~good)
        self.breaks = np.flatnonzero(np.append(self.ends[:-1] != starts[1:], True))
        self._as_lists: tuple[list[int], list[int], list[int], list[int]] | None = None

    def take(self, pos: int, base: int) -> tuple[RecordBlock | None, int]:
        """The clean records chained from buf[pos] (file offset base + pos), their payload
        CRCs checked, and where they stop: at something record-by-record reading must
        judge, or the end of the buffer."""
        starts, ends, breaks, unclean = self._lists()
        i = bisect_left(starts, pos)
        if i == len(starts) or starts[i] != pos or not self._good[i]:
            return None, pos
        buf = self.buf
        pieces: list[np.ndarray] = []
        datas: list[bytes] = []
        spans: list[tuple[int, int]] = []   # rows along the chain, not checked yet
        count, piece, stop = 0, _FIRST_PIECE, -1
        while True:
            # follow the chain from break to break until a piece's worth of rows: the
            # payload CRCs are checked a piece at a time (twice as many each time) up to the
            # first that fails, so that none is computed twice however many fail
            while stop < 0 and count < piece:
                b = breaks[bisect_left(breaks, i)]
                at = bisect_left(unclean, i)
                u = unclean[at] if at < len(unclean) else len(starts)
                top = min(u, b + 1)
                spans.append((i, top))
                count += top - i
                if u <= b:
                    stop = starts[u]
                    break
                i = bisect_left(starts, ends[b])
                if i == len(starts) or starts[i] != ends[b]:
                    stop = ends[b]
            if stop >= 0 and count < _FEWEST and not datas:
                return None, pos   # a short stretch: cheaper record by record
            rows = np.concatenate([np.arange(lo, hi) for lo, hi in spans])
            cut = _checked(buf, rows, self, datas)
            pieces.append(rows[:cut])
            if cut < len(rows):   # the record-by-record path reports it
                return self._block(pieces, datas, base), starts[int(rows[cut])]
            if stop >= 0:
                return self._block(pieces, datas, base), stop
            spans, count, piece = [], 0, 2 * piece

    def _lists(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """The framing as lists, for the steps of take() from one break to the next."""
        if self._as_lists is None:
            self._as_lists = (self.starts.tolist(), self.ends.tolist(), self.breaks.tolist(),
                              self.unclean.tolist())
            self._good = self.good.tolist()
        return self._as_lists

    def _block(self, pieces: list[np.ndarray], datas: list[bytes],
               base: int) -> RecordBlock | None:
        """The block of the rows taken (None: none)."""
        if not datas:
            return None
        rows = np.concatenate(pieces)
        lost = self.lost[rows]
        counts = np.zeros(len(rows), np.uint64)
        if lost.any():
            for row in np.flatnonzero(lost).tolist():
                counts[row] = _LOST_PAYLOAD.unpack_from(self.buf, int(self.starts[rows[row]])
                                                        + RECORD_HEADER_SIZE)[1]
                datas[row] = b""
        return RecordBlock(datas, self.starts[rows] + base, self.cpu[rows].astype(np.int64),
                           ~lost, counts, np.full(len(rows), -1, np.int64))


_FIRST_PIECE = 64
_FEWEST = 16
"""A clean stretch shorter than this is left to the record-by-record path: the numpy
calls of a block cost more than its records do there (a damaged capture's short stretches
between damage)."""


def _checked(buf: bytes, rows: np.ndarray, framing: Framer, datas: list[bytes]) -> int:
    """Append the data of ``rows`` (records, in order) to ``datas`` up to the first whose
    payload CRC fails; how many passed."""
    first = (framing.starts[rows] + _HEAD).tolist()
    last = framing.ends[rows].tolist()
    got = [buf[a:b] for a, b in zip(first, last, strict=True)]
    crcs = np.fromiter(map(zlib.crc32, got, _cpu_crcs(framing.cpu[rows])), np.uint32,
                       len(got))
    wrong = np.flatnonzero(crcs != framing.crc[rows])
    cut = int(wrong[0]) if len(wrong) else len(got)
    datas += got[:cut]
    return cut


def _head_crc(length: int, cache: dict[int, int]) -> int:
    """The header CRC of a SAMPLE of this payload length (cached as the reader does)."""
    crc = cache.get(length)
    if crc is None:
        crc = zlib.crc32(_HEAD_COVERED.pack(length, _SAMPLE, 0))
        if len(cache) < _HEAD_CACHE_LIMIT:
            cache[length] = crc
    return crc


_SEEDS: dict[int, int] = {}


def _cpu_crcs(cpus: np.ndarray) -> list[int]:
    """Each record's CRC32 of its payload's first u32 (the cpu): the seed that the CRC of
    the rest continues from, so that the payload is not sliced twice."""
    values, inverse = np.unique(cpus, return_inverse=True)
    seeds = []
    for cpu in values.tolist():
        seed = _SEEDS.get(cpu)
        if seed is None:
            seed = zlib.crc32(_U32.pack(cpu))
            if len(_SEEDS) < _HEAD_CACHE_LIMIT:
                _SEEDS[cpu] = seed
        seeds.append(seed)
    return np.array(seeds, np.int64)[inverse].tolist()


class Intake:
    """Rows taken a number at a time from a reader's :meth:`~CaptureReader.blocks`
    (blocks, and the records read one by one between them): :meth:`take` gives a block of
    at most that many rows, cutting a block where it must. ``got`` counts the rows taken
    so far by the current call, so that a context record given to the reader's
    ``on_context`` while it reads is placed after exactly the rows read before it."""

    def __init__(self, items: Iterable[Any]):
        self.items: Iterator[Any] = iter(items)
        self.got = 0
        self._spill: RecordBlock | None = None

    def take(self, count: int) -> RecordBlock:
        parts: list[RecordBlock] = []
        loose: list[SampleRecord | LostRecord] = []
        self.got = 0
        item: Any = self._spill
        self._spill = None
        if item is None:
            item = next(self.items, None)
        while item is not None:
            kind = type(item)
            if kind is RecordBlock:
                if loose:
                    parts.append(RecordBlock.of(loose))
                    loose = []
                if self.got + len(item) > count:
                    item, self._spill = item.split(count - self.got)
                parts.append(item)
                self.got += len(item)
            elif kind is SampleRecord or kind is LostRecord:
                loose.append(item)
                self.got += 1
            if self.got >= count:
                break
            item = next(self.items, None)
        if loose:
            parts.append(RecordBlock.of(loose))
        return RecordBlock.join(parts)
