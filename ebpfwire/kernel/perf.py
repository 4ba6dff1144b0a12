"""Perf ring records (construct schemas) and the per-CPU ring reader.

The kernel side submits each event with ``bpf_perf_event_output`` into a
``BPF_MAP_TYPE_PERF_EVENT_ARRAY``; every CPU has its own perf event whose mmap'ed ring
holds ``PERF_RECORD_SAMPLE`` records (the raw event bytes) and ``PERF_RECORD_LOST``
records (how many samples did not fit). :class:`PerfRing` walks one ring,
:class:`PerfReader` opens one ring per CPU and multiplexes them with epoll.

Memory ordering: the kernel writes a record, then publishes it by advancing
``data_head`` (after a write barrier). We read ``data_head`` with a plain load and only
then copy the bytes below it; on x86-64 (TSO) loads are never reordered with older
loads, and the ``epoll_wait`` syscall that precedes a read is a full barrier for
everything published before the wakeup, so no explicit fence is needed. The new
``data_tail`` is stored only after the records were copied out, so the kernel never
overwrites bytes we have not read yet.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from construct import (
    Bytes,
    FixedSized,
    GreedyBytes,
    GreedyRange,
    Int16ul,
    Int32ul,
    Int64ul,
    Padding,
    Struct,
    Switch,
    this,
)

from ebpfwire import machine
from ebpfwire.kernel import syscalls
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.wire.layouts import header_reader
from ebpfwire.wire.order import TimeOrder

PAGE_SIZE = mmap.PAGESIZE
DEFAULT_PAGE_COUNT = 1024  # data pages per CPU: 4 MiB with 4 KiB pages (see docs/loader.md)
# s: how often a waiting reader looks anyway (the perf and ring buffer readers): the longest
# a record below the wakeup watermark waits, how late a ring buffer's drops are seen
DEFAULT_MAX_LATENCY = 0.1
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9

# The fields of ``struct perf_event_mmap_page`` (the ring's first page) the reader uses.
PerfMmapPage = Struct(
    Padding(1024),
    "data_head" / Int64ul,  # written by the kernel: end of the published records
    "data_tail" / Int64ul,  # written by the reader: end of the consumed records
    "data_offset" / Int64ul,  # where the data area starts in the mapping
    "data_size" / Int64ul,  # size of the data area (a power of two)
)
DATA_HEAD_AT = 1024
DATA_TAIL_AT = 1032

RecordHeader = Struct("type" / Int32ul, "misc" / Int16ul, "size" / Int16ul)

# PERF_RECORD_SAMPLE with sample_type = PERF_SAMPLE_RAW: the kernel pads 4 + raw_size to a
# multiple of 8 and reports the padded raw_size, so ``raw`` ends with 0..7 zero bytes.
SampleBody = Struct("raw_size" / Int32ul, "raw" / Bytes(this.raw_size))
LostBody = Struct("id" / Int64ul, "lost" / Int64ul)

PerfRecord = Struct(
    "header" / RecordHeader,
    "body"
    / FixedSized(
        this.header.size - RecordHeader.sizeof(),
        Switch(
            this.header.type,
            {PERF_RECORD_SAMPLE: SampleBody, PERF_RECORD_LOST: LostBody},
            default=GreedyBytes,
        ),
    ),
)
PerfRecords = GreedyRange(PerfRecord)

_HEADER = struct.Struct("<IHH")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_TS = header_reader("ts")


@dataclass(frozen=True, slots=True)
class Sample:
    """One event's raw bytes (perf padding included) as written on ``cpu``."""

    cpu: int
    data: bytes

    @property
    def ts(self) -> int:
        """The event's leading u64 ``bpf_ktime_get_ns()``; -1 for a sample shorter than 8."""
        return _TS.unpack_from(self.data)[0] if len(self.data) >= _TS.size else -1


@dataclass(frozen=True, slots=True)
class Lost:
    """``count`` samples on ``cpu`` were dropped because its ring was full."""

    cpu: int
    count: int


Record = Sample | Lost


def parse_records(chunk: bytes, cpu: int) -> list[Record]:
    """Split consumed ring bytes into records (the fast path; equal to :data:`PerfRecords`)."""
    out: list[Record] = []
    pos, end = 0, len(chunk)
    while pos < end:
        if end - pos < 8:
            raise LoaderError(f"perf ring cpu {cpu}: {end - pos} stray bytes at offset {pos}")
        rtype, _, size = _HEADER.unpack_from(chunk, pos)
        if size < 8 or pos + size > end:
            raise LoaderError(
                f"perf ring cpu {cpu}: record at offset {pos} has size {size}, "
                f"expected 8..{end - pos}"
            )
        if rtype == PERF_RECORD_SAMPLE:
            raw_size = _U32.unpack_from(chunk, pos + 8)[0]
            if 12 + raw_size > size:
                raise LoaderError(
                    f"perf ring cpu {cpu}: sample at offset {pos} announces {raw_size} raw "
                    f"bytes, record holds {size - 12}"
                )
            out.append(Sample(cpu, chunk[pos + 12 : pos + 12 + raw_size]))
        elif rtype == PERF_RECORD_LOST:
            out.append(Lost(cpu, _U64.unpack_from(chunk, pos + 16)[0]))
        pos += size
    return out


def parse_records_with_schema(chunk: bytes, cpu: int) -> list[Record]:
    """The reference path: the same split through the construct schemas (slow)."""
    out: list[Record] = []
    for rec in PerfRecords.parse(chunk):
        if rec.header.type == PERF_RECORD_SAMPLE:
            out.append(Sample(cpu, rec.body.raw))
        elif rec.header.type == PERF_RECORD_LOST:
            out.append(Lost(cpu, rec.body.lost))
    return out


def word_at(buf: RingBuffer, offset: int) -> memoryview:
    """The aligned u64 at ``offset`` of ``buf`` as a one-item native view.

    Reading or writing ``[0]`` is one 8-byte load or store, so the kernel never sees half
    of a new position: ``struct.pack_into("<Q")`` stores byte by byte, and a ring position
    crossing a 16 MiB boundary (0x00FFFFF8 -> 0x01000010) then reads, for an instant, as
    0x00000010, and a producer on another CPU found the ring full. Drop the view (or call
    ``release()``) before closing an ``mmap``.
    """
    if offset % 8:
        raise ValueError(f"a ring position is 8-byte aligned; offset {offset} is not")
    return memoryview(buf)[offset : offset + 8].cast("Q")


def ring_pages(ring_bytes: int) -> int:
    """Pages that hold ``ring_bytes``, rounded up to a power of two: what a perf ring's data
    area and a ring buffer map accept."""
    pages = max(1, -(-ring_bytes // PAGE_SIZE))
    return 1 << (pages - 1).bit_length()


class RingBuffer(Protocol):
    """What a ring needs from its memory: an ``mmap`` or, in tests, a ``bytearray``."""

    def __getitem__(self, index: slice) -> bytes: ...
    def __setitem__(self, index: slice, value: bytes) -> None: ...
    def __len__(self) -> int: ...


class PerfRing:
    """One CPU's mmap'ed ring: a metadata page, then a power-of-two data area."""

    def __init__(self, buf: RingBuffer, cpu: int) -> None:
        self.buf = buf
        self.cpu = cpu
        self.consumed = 0  # data_head at the last read_chunk(): the next data_tail
        self._head, self._tail = word_at(buf, DATA_HEAD_AT), word_at(buf, DATA_TAIL_AT)
        meta = PerfMmapPage.parse(bytes(buf[:PAGE_SIZE]))
        self.data_offset = meta.data_offset or PAGE_SIZE
        self.data_size = meta.data_size or len(buf) - PAGE_SIZE
        if self.data_size & (self.data_size - 1) or (
            self.data_offset + self.data_size > len(buf)
        ):
            raise LoaderError(
                f"perf ring cpu {cpu}: data area {self.data_offset}+{self.data_size} does not "
                f"fit a {len(buf)}-byte mapping or is not a power of two"
            )

    def read_chunk(self) -> bytes:
        """Copy out everything between data_tail and data_head, reassembling a wrap."""
        head = self._head[0]
        tail = self._tail[0]
        count = head - tail
        if count == 0:
            return b""
        if not 0 < count <= self.data_size:
            raise LoaderError(
                f"perf ring cpu {self.cpu}: head {head} and tail {tail} are {count} bytes "
                f"apart, the data area holds {self.data_size}"
            )
        start = tail & (self.data_size - 1)
        base = self.data_offset
        if start + count <= self.data_size:
            chunk = self.buf[base + start : base + start + count]
        else:
            first = self.data_size - start
            chunk = self.buf[base + start : base + self.data_size] + self.buf[
                base : base + count - first
            ]
        self.consumed = head
        return chunk

    def read(self) -> list[Record]:
        """All records published since the last read; then hands the space back."""
        chunk = self.read_chunk()
        if not chunk:
            return []
        records = parse_records(chunk, self.cpu)
        self._tail[0] = self.consumed
        return records

    def release(self) -> None:
        """Let go of the ring's memory (before its ``mmap`` is closed)."""
        self._head.release()
        self._tail.release()


class _HasEventsMap(Protocol):
    events_map_fd: int


class DropCounter:
    """Per-CPU u64 drop counters in a map; :meth:`increases` says what grew since last time."""

    def __init__(self, map_fd: int) -> None:
        info = syscalls.map_info(map_fd)
        self.map_fd = map_fd
        self.ncpus = machine.possible_cpus()
        if info.value_size != 8:
            raise LoaderError(
                f"drops map {info.name!r}: expected u64 values (value_size 8), found "
                f"value_size {info.value_size}"
            )
        if info.type == syscalls.BPF_MAP_TYPE_PERCPU_ARRAY:
            self._read = self._read_percpu
        elif info.type == syscalls.BPF_MAP_TYPE_ARRAY:
            self.ncpus = min(self.ncpus, info.max_entries)
            self._read = self._read_array
        else:
            raise LoaderError(
                f"drops map {info.name!r}: expected a PERCPU_ARRAY (type "
                f"{syscalls.BPF_MAP_TYPE_PERCPU_ARRAY}) or an ARRAY (type "
                f"{syscalls.BPF_MAP_TYPE_ARRAY}), found type {info.type}"
            )
        self._last = self._read()

    def _read_percpu(self) -> list[int]:
        raw = syscalls.map_lookup(self.map_fd, bytes(4), 8 * self.ncpus)
        return list(struct.unpack(f"<{self.ncpus}Q", raw)) if raw else [0] * self.ncpus

    def _read_array(self) -> list[int]:
        out = []
        for cpu in range(self.ncpus):
            raw = syscalls.map_lookup(self.map_fd, _U32.pack(cpu), 8)
            out.append(_U64.unpack(raw)[0] if raw else 0)
        return out

    def increases(self) -> list[Lost]:
        """One ``Lost(cpu, n)`` per CPU whose counter grew by n since the last call."""
        now = self._read()
        pairs = enumerate(zip(now, self._last, strict=True))
        lost = [Lost(cpu, n - o) for cpu, (n, o) in pairs if n > o]
        self._last = now
        return lost


class EpollReader:
    """The ways to read kernel records, shared by the perf and ring buffer readers.

    A subclass sets ``closed``, ``lost`` (per CPU), ``max_latency``, ``_pending`` (a deque),
    ``_epoll`` (registered on its fds), ``_drops`` (a :class:`DropCounter` or None) and
    implements ``_drain()`` (every record available now, without waiting) and
    ``_release()`` (what it holds besides the epoll).
    """

    closed: bool
    lost: dict[int, int]
    max_latency: float
    _pending: deque[Record]
    _epoll: select.epoll
    _drops: DropCounter | None
    _drops_due: float = 0.0
    #: CLOCK_MONOTONIC ns (the samples' ``ts`` clock) just before the last read of every
    #: ring: each sample committed before it has been returned.
    drained_ns: int = 0

    def _add_drops(self, records: list[Record]) -> list[Record]:
        """``records`` and a ``Lost`` per CPU whose drop counter grew.

        The counter costs a syscall: it is read when the walk found nothing (so a loss at
        the very end is never missed) and otherwise at most every ``max_latency`` s.
        """
        if self._drops is not None and (not records or time.monotonic() >= self._drops_due):
            self._drops_due = time.monotonic() + self.max_latency
            for rec in self._drops.increases():
                self.lost[rec.cpu] += rec.count
                records.append(rec)
        return records

    def _drain(self) -> list[Record]:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the reader holds, then the epoll; idempotent."""
        if self.closed:
            return
        self.closed = True
        self._release()
        self._epoll.close()

    @property
    def lost_total(self) -> int:
        """Samples dropped on all CPUs so far."""
        return sum(self.lost.values())

    def read_batch(self, timeout: float | None = None) -> list[Record]:
        """Every record available now, waiting up to ``timeout`` s (None: forever) for one.

        While waiting, the source is also checked every ``max_latency`` s: the kernel does
        not wake a reader for everything (a perf ring below its wakeup watermark, a ring
        buffer's failed reservations), so this bounds the delay of a lone record.
        """
        if self.closed:
            raise LoaderError(f"{type(self).__name__} is closed")
        batch = list(self._pending)
        self._pending.clear()
        self.drained_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        batch.extend(self._drain())
        deadline = None if timeout is None else time.monotonic() + timeout
        while not batch:
            wait = self.max_latency
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            self._epoll.poll(wait)
            self.drained_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            batch = self._drain()
        return batch

    def read(self, timeout: float | None = None) -> Record | None:
        """The next record, or None when ``timeout`` seconds pass without one."""
        if not self._pending:
            self._pending.extend(self.read_batch(timeout))
        return self._pending.popleft() if self._pending else None

    def poll(self, callback: Callable[[Record], object], timeout: float | None = None) -> int:
        """Call ``callback`` on each available record (waiting up to ``timeout``); the count."""
        batch = self.read_batch(timeout)
        for rec in batch:
            callback(rec)
        return len(batch)

    def __iter__(self) -> Iterator[Record]:
        """Records forever (blocking), until the reader is closed."""
        while not self.closed:
            rec = self.read(None)
            if rec is not None:
                yield rec

    def __enter__(self) -> EpollReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PerfReader(EpollReader):
    """Per-CPU perf rings feeding a ``PERF_EVENT_ARRAY`` map, read through epoll.

    ``events`` is the map fd or an object with ``events_map_fd`` (a ``Monitor``).
    ``page_count`` data pages per CPU (a power of two). The kernel wakes the reader when
    ``wakeup_bytes`` are waiting (default: a quarter of the ring; 0 = after every
    record, which costs the traced process a wakeup per event and halves throughput).
    ``lost`` counts dropped samples per CPU, exactly as the kernel reported them; but the
    kernel writes a LOST record only once the next sample fits in that CPU's ring, so a
    loss at the very end of a run is never reported. Given ``drops_map_fd`` (the program
    counts its failed ``bpf_perf_event_output`` calls there, as for the ring buffer), the
    reader reports the counter's increases instead and ignores the kernel's LOST records
    (they count the same failures, late): received + lost = made to the last event.
    """

    def __init__(
        self,
        events: int | _HasEventsMap,
        page_count: int = DEFAULT_PAGE_COUNT,
        cpus: Iterable[int] | None = None,
        wakeup_bytes: int | None = None,
        max_latency: float = DEFAULT_MAX_LATENCY,
        drops_map_fd: int | None = None,
    ) -> None:
        if page_count < 1 or page_count & (page_count - 1):
            raise ValueError(f"page_count must be a power of two >= 1, got {page_count}")
        data_size = page_count * PAGE_SIZE
        self.wakeup_bytes = data_size // 4 if wakeup_bytes is None else wakeup_bytes
        if not 0 <= self.wakeup_bytes < data_size:
            raise ValueError(f"wakeup_bytes must be in 0..{data_size - 1}, got {wakeup_bytes}")
        self.max_latency = max_latency
        self.map_fd = events if isinstance(events, int) else events.events_map_fd
        self.page_count = page_count
        self.cpus = list(cpus) if cpus is not None else machine.online_cpus()
        self._drops = DropCounter(drops_map_fd) if drops_map_fd is not None else None
        self.lost: dict[int, int] = dict.fromkeys(
            range(self._drops.ncpus) if self._drops else self.cpus, 0)
        self._rings: list[PerfRing] = []
        self._fds: list[int] = []
        self._mmaps: list[mmap.mmap] = []
        self._pending: deque[Record] = deque()
        self._epoll = select.epoll()
        self.closed = False
        try:
            for cpu in self.cpus:
                self._open_cpu(cpu)
        except BaseException:
            self.close()
            raise

    @classmethod
    def with_ring_bytes(cls, events: int | _HasEventsMap, ring_bytes: int, **kw) -> PerfReader:
        """Like the constructor, sizing each CPU's data area in bytes (rounded up)."""
        return cls(events, page_count=ring_pages(ring_bytes), **kw)

    def _open_cpu(self, cpu: int) -> None:
        fd = syscalls.perf_event_open(
            syscalls.PERF_TYPE_SOFTWARE,
            syscalls.PERF_COUNT_SW_BPF_OUTPUT,
            cpu,
            sample_type=syscalls.PERF_SAMPLE_RAW,
            wakeup=self.wakeup_bytes or 1,
            watermark=bool(self.wakeup_bytes),
        )
        self._fds.append(fd)
        try:
            mm = mmap.mmap(fd, (1 + self.page_count) * PAGE_SIZE, mmap.MAP_SHARED)
        except OSError as exc:
            raise LoaderError(
                f"mmap of the perf ring for cpu {cpu} ({self.page_count} pages): {exc.strerror}"
                " (lower page_count or raise perf_event_mlock_kb / RLIMIT_MEMLOCK)",
                exc.errno,
            ) from exc
        self._mmaps.append(mm)
        self._rings.append(PerfRing(mm, cpu))
        syscalls.map_update(self.map_fd, _U32.pack(cpu), _U32.pack(fd))
        self._epoll.register(fd, select.EPOLLIN)

    def _drain(self) -> list[Record]:
        records: list[Record] = []
        counted = self._drops is not None
        for ring in self._rings:
            got = ring.read()
            if got:
                kernel_lost = False
                for rec in got:
                    if type(rec) is Lost:
                        kernel_lost = True
                        if not counted:
                            self.lost[rec.cpu] += rec.count
                if kernel_lost and counted:  # the counter reports these failures
                    got = [rec for rec in got if type(rec) is not Lost]
                records.extend(got)
        return self._add_drops(records)

    def _release(self) -> None:
        """Detach from the map, unmap the rings and close the perf fds."""
        for ring in self._rings:
            ring.release()
            try:
                syscalls.map_delete(self.map_fd, _U32.pack(ring.cpu))
            except LoaderError:
                pass  # the map may already be gone; closing our fds frees the events anyway
        self._rings.clear()
        for mm in self._mmaps:
            mm.close()
        self._mmaps.clear()
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


def merge_by_ts(records: Iterable[Record]) -> list[Sample]:
    """The samples of a batch in global order, through the package's one reorder window
    (:class:`ebpfwire.wire.order.TimeOrder`, unbounded: a batch is ordered whole).

    Order is only kept per CPU by the kernel; the event's leading ``ts`` restores the
    global order. Lost records are left out; a sample shorter than 8 bytes keeps its place
    after its CPU's previous sample, as the window places it.
    """
    order = TimeOrder(Sample, Lost, window_ns=1 << 64, max_records=sys.maxsize,
                      max_bytes=sys.maxsize)
    return [record for record in order(records) if type(record) is Sample]
