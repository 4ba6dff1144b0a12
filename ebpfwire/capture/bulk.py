"""A capture's records framed in bulk, for the columnar path: a whole buffer of a
version-2 capture is framed at once with numpy (record offsets, types, cpus, lengths, the
header CRCs), each payload's CRC32 checked, and the clean SAMPLE and LOST records handed
on as columns (:class:`RecordBlock`) with no record object each. Whatever is not provably
clean stops a stretch and is left to :class:`~ebpfwire.capture.reader.CaptureReader`'s
record-by-record path, so damage is reported and resynchronised exactly as it is there."""

from __future__ import annotations

import zlib
from bisect import bisect_left, bisect_right
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
    """SAMPLE and LOST records in file order, as columns: ``offsets`` (file offsets),
    ``cpus``, ``samples`` (which rows are samples), ``counts`` (a LOST's count, 0 for a
    sample) and ``resync`` (the offset of the damage a record was found after by scanning,
    -1: reached through the chain of record headers; see SampleRecord.resync).

    The samples' bytes stay where they were read, not cut one by one: row i's payload is
    ``bufs[k][begins[i]:ends[i]]`` for the k with ``cuts[k] <= i < cuts[k + 1]`` (empty
    for a LOST); within one buffer the rows' payloads are in order and do not overlap, so
    that :meth:`payloads` gives every row's bytes as one buffer and bounds."""

    __slots__ = ("bufs", "cuts", "begins", "ends", "offsets", "cpus", "samples", "counts",
                 "resync")
    _ROWS = __slots__[2:]   # the columns with one value a row

    def __init__(self, bufs: list[bytes], cuts: list[int], begins: np.ndarray,
                 ends: np.ndarray, offsets: np.ndarray, cpus: np.ndarray, samples: np.ndarray,
                 counts: np.ndarray, resync: np.ndarray):
        self.bufs, self.cuts, self.begins, self.ends = bufs, cuts, begins, ends
        self.offsets, self.cpus = offsets, cpus
        self.samples, self.counts, self.resync = samples, counts, resync

    def __len__(self) -> int:
        return len(self.offsets)

    @classmethod
    def empty(cls) -> RecordBlock:
        none = np.empty(0, np.int64)
        return cls([], [0], none, none, none, none, np.empty(0, bool), np.empty(0, np.uint64),
                   none)

    @classmethod
    def of(cls, records: list[SampleRecord | LostRecord]) -> RecordBlock:
        """The block of record objects (those the record-by-record path read): their
        samples' bytes joined once."""
        count = len(records)
        samples = np.fromiter(map(type, records), object, count) == SampleRecord
        if samples.all():
            datas = list(map(_DATA, records))
            counts = np.zeros(count, np.uint64)
        else:
            datas = [r.data if type(r) is SampleRecord else b"" for r in records]
            counts = np.fromiter((0 if type(r) is SampleRecord else r.count for r in records),
                                 np.uint64, count)
        lengths = np.fromiter(map(len, datas), np.int64, count)
        ends = np.cumsum(lengths)
        resync = np.full(count, -1, np.int64)
        if any(map(_RESYNC, records)):   # a damage offset is past the file header: not 0
            resync[:] = [-1 if r.resync is None else r.resync for r in records]
        return cls([b"".join(datas)], [0, count], ends - lengths, ends,
                   np.fromiter(map(_OFFSET, records), np.int64, count),
                   np.fromiter(map(_CPU, records), np.int64, count), samples, counts, resync)

    @classmethod
    def join(cls, blocks: list[RecordBlock]) -> RecordBlock:
        blocks = [block for block in blocks if len(block)]
        if len(blocks) == 1:
            return blocks[0]
        if not blocks:
            return cls.empty()
        bufs: list[bytes] = []
        cuts = [0]
        for block in blocks:
            bufs += block.bufs
            cuts += [cuts[-1] + cut for cut in block.cuts[1:]]
        return cls(bufs, cuts, *(np.concatenate([getattr(block, name) for block in blocks])
                                 for name in cls._ROWS))

    def split(self, at: int) -> tuple[RecordBlock, RecordBlock]:
        """The first ``at`` rows and the rest (a buffer both have rows of goes to both)."""
        cuts, at = self.cuts, min(at, len(self))
        k = bisect_right(cuts, at) - 1   # the buffer of row ``at`` (past the last: none)
        inside = cuts[k] < at
        head = self.bufs[:k + inside], cuts[:k + 1] + [at] * inside
        tail = self.bufs[k:], [cut - at for cut in [at, *cuts[k + 1:]]]
        return (RecordBlock(*head, *(getattr(self, name)[:at] for name in self._ROWS)),
                RecordBlock(*tail, *(getattr(self, name)[at:] for name in self._ROWS)))

    def payloads(self) -> tuple[bytes, np.ndarray, np.ndarray]:
        """Every row's bytes as one buffer and the bounds of each row's in it (begins,
        ends): the read buffer itself when the rows are of one, else the spans of the rows
        in each buffer copied once, one after the other."""
        if len(self.bufs) == 1:
            return self.bufs[0], self.begins, self.ends
        if not self.bufs:
            return b"", self.begins, self.ends
        firsts, lasts = self.cuts[:-1], [cut - 1 for cut in self.cuts[1:]]
        lows, highs = self.begins[firsts], self.ends[lasts]
        joined = b"".join([memoryview(buf)[low:high] for buf, low, high in zip(
            self.bufs, lows.tolist(), highs.tolist(), strict=True)])
        shift = np.repeat(np.cumsum(highs - lows) - highs, np.diff(self.cuts))
        return joined, self.begins + shift, self.ends + shift

    def segments(self) -> list[tuple[bytes, np.ndarray, np.ndarray]]:
        """The rows as (buffer, begins, ends), one for each buffer, in order: the rows'
        bytes where they were read (nothing copied)."""
        cuts = self.cuts
        return [(buf, self.begins[low:high], self.ends[low:high])
                for buf, low, high in zip(self.bufs, cuts[:-1], cuts[1:], strict=True)]

    def data(self, row: int) -> bytes:
        """Row ``row``'s bytes (b"" for a LOST)."""
        return self.bufs[bisect_right(self.cuts, row) - 1][self.begins[row]:self.ends[row]]

    def datas(self, rows: np.ndarray, max_bytes: int) -> list[bytes]:
        """The bytes of the first of ``rows`` that fit in ``max_bytes`` together (at least
        one): :meth:`data` for many rows, their buffers and bounds looked up with numpy."""
        begins, ends = self.begins[rows], self.ends[rows]
        fit = fitting(begins, ends, max_bytes)
        which = np.searchsorted(np.array(self.cuts, np.int64), rows[:fit], "right") - 1
        bufs = self.bufs
        return [bufs[k][begin:end] for k, begin, end in zip(
            which.tolist(), begins[:fit].tolist(), ends[:fit].tolist(), strict=True)]

    def records(self) -> list[SampleRecord | LostRecord]:
        """The rows as record objects (what CaptureReader yields for them)."""
        buf, begins, ends = self.payloads()
        out: list[SampleRecord | LostRecord] = []
        for begin, end, offset, cpu, sample, count, resync in zip(
                begins.tolist(), ends.tolist(), self.offsets.tolist(), self.cpus.tolist(),
                self.samples.tolist(), self.counts.tolist(), self.resync.tolist(), strict=True):
            record = (SampleRecord(cpu, buf[begin:end], offset) if sample
                      else LostRecord(cpu, count, offset))
            record.resync = None if resync < 0 else resync
            out.append(record)
        return out


def fitting(begins: np.ndarray, ends: np.ndarray, max_bytes: int) -> int:
    """How many of the first spans [begins[i], ends[i]) fit in ``max_bytes`` together (at
    least one, when there is one)."""
    return max(1, int(np.searchsorted(np.cumsum(ends - begins), max_bytes, "right")))


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
            if stop >= 0 and count < _FEWEST and not pieces:
                return None, pos   # a short stretch: cheaper record by record
            rows = np.concatenate([np.arange(lo, hi) for lo, hi in spans])
            cut = _checked(buf, rows, self)
            pieces.append(rows[:cut])
            if cut < len(rows):   # the record-by-record path reports it
                return self._block(pieces, base), starts[int(rows[cut])]
            if stop >= 0:
                return self._block(pieces, base), stop
            spans, count, piece = [], 0, 2 * piece

    def _lists(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """The framing as lists, for the steps of take() from one break to the next."""
        if self._as_lists is None:
            self._as_lists = (self.starts.tolist(), self.ends.tolist(), self.breaks.tolist(),
                              self.unclean.tolist())
            self._good = self.good.tolist()
        return self._as_lists

    def _block(self, pieces: list[np.ndarray], base: int) -> RecordBlock | None:
        """The block of the rows taken (None: none), over the buffer: a sample's bytes
        follow its cpu; a LOST has none."""
        rows = np.concatenate(pieces)
        if not len(rows):
            return None
        lost = self.lost[rows]
        starts = self.starts[rows]
        begins = starts + _HEAD
        ends = self.ends[rows]
        counts = np.zeros(len(rows), np.uint64)
        if lost.any():
            for row in np.flatnonzero(lost).tolist():
                counts[row] = _LOST_PAYLOAD.unpack_from(self.buf, int(starts[row])
                                                        + RECORD_HEADER_SIZE)[1]
            ends = np.where(lost, begins, ends)
        return RecordBlock([self.buf], [0, len(rows)], begins, ends, starts + base,
                           self.cpu[rows].astype(np.int64), ~lost, counts,
                           np.full(len(rows), -1, np.int64))


_FIRST_PIECE = 64
_FEWEST = 16
"""A clean stretch shorter than this is left to the record-by-record path: the numpy
calls of a block cost more than its records do there (a damaged capture's short stretches
between damage)."""


def _checked(buf: bytes, rows: np.ndarray, framing: Framer) -> int:
    """How many of ``rows`` (records, in order) pass their payload CRC, up to the first
    that fails. A call and a slice a record: a CRC over many records cannot stand for
    theirs (damage in two could cancel out); of the ways to call it (map over slices,
    memoryviews, binascii) this one cost least, about 210 ns a record against 240-270."""
    first = (framing.starts[rows] + RECORD_HEADER_SIZE).tolist()
    crc32 = zlib.crc32
    crcs = np.fromiter([crc32(buf[a:b]) for a, b in zip(first, framing.ends[rows].tolist(),
                                                         strict=True)], np.uint32, len(first))
    wrong = np.flatnonzero(crcs != framing.crc[rows])
    return int(wrong[0]) if len(wrong) else len(first)


def _head_crc(length: int, cache: dict[int, int]) -> int:
    """The header CRC of a SAMPLE of this payload length (cached as the reader does)."""
    crc = cache.get(length)
    if crc is None:
        crc = zlib.crc32(_HEAD_COVERED.pack(length, _SAMPLE, 0))
        if len(cache) < _HEAD_CACHE_LIMIT:
            cache[length] = crc
    return crc


TAKE_BYTES = 64 << 20
"""Bytes of samples an :meth:`Intake.take` gives at most (beyond one row)."""


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

    def take(self, count: int, max_bytes: int = TAKE_BYTES) -> RecordBlock:
        """At most ``count`` rows, and no more than ``max_bytes`` of samples (at least
        one row): what is held stays bounded whatever the samples' size."""
        parts: list[RecordBlock] = []
        loose: list[SampleRecord | LostRecord] = []
        self.got = 0
        room = max_bytes
        item: Any = self._spill
        self._spill = None
        if item is None:
            item = next(self.items, None)
        while item is not None:
            kind = type(item)
            if kind is SampleRecord or kind is LostRecord:
                item = RecordBlock.of([item]) if kind is SampleRecord and (
                    len(item.data) > room and self.got) else item
                kind = type(item)
            if kind is RecordBlock:
                sizes = np.cumsum(item.ends - item.begins)
                fit = min(count - self.got, int(np.searchsorted(sizes, room, "right")))
                if fit == 0 and not self.got:
                    fit = 1     # a row larger than the room: taken alone
                if fit < len(item):
                    if fit == 0:
                        self._spill = item
                        break
                    item, self._spill = item.split(fit)
                if loose:
                    parts.append(RecordBlock.of(loose))
                    loose = []
                parts.append(item)
                self.got += len(item)
                room -= int(sizes[len(item) - 1]) if len(item) else 0
                if self._spill is not None:
                    break
            elif kind is SampleRecord or kind is LostRecord:
                loose.append(item)
                self.got += 1
                if kind is SampleRecord:
                    room -= len(item.data)
            if self.got >= count:
                break
            item = next(self.items, None)
        if loose:
            parts.append(RecordBlock.of(loose))
        return RecordBlock.join(parts)
