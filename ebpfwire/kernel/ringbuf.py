"""The BPF ring buffer (``BPF_MAP_TYPE_RINGBUF``) reader, beside :mod:`ebpfwire.kernel.perf`.

One ring shared by all CPUs holds the events in one global order. The map fd is mmap'ed
in two parts: the consumer page (our position, read-write), then the producer page and
the data area read-only, the data area mapped twice in a row so that a record running
past its end is still contiguous in our mapping. Each record starts with an 8-byte
header (:data:`RingBufRecordHeader`): the length, with the busy bit set while the
producer still writes it and the discard bit set when it was thrown away, and the page
offset the kernel uses to find the ring. Records are 8-byte aligned.

The ring has no lost records: a program whose reservation fails must count it itself.
Given ``drops_map_fd`` (a PERCPU_ARRAY whose key 0 holds a u64 per CPU, or an ARRAY of
u64 indexed by CPU), the reader reports each increase as :class:`~ebpfwire.kernel.perf.Lost`.

Memory ordering: as in :mod:`ebpfwire.kernel.perf`, the producer position and each header are
read with plain loads before the bytes they publish; x86-64 keeps loads in order and the
``epoll_wait`` before a read is a full barrier. The consumer position is stored only
after the records were copied out, so the kernel never overwrites bytes we have not read.
"""

from __future__ import annotations

import functools
import mmap
import os
import select
import struct
from collections import deque

from construct import Int32ul, Struct

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.perf import (
    DEFAULT_MAX_LATENCY,
    PAGE_SIZE,
    DropCounter,
    EpollReader,
    Record,
    RingBuffer,
    Sample,
    word_at,
)

RINGBUF_CPU = 0xFFFFFFFF  # the cpu of every Sample: ring records do not say who wrote them
BPF_RINGBUF_BUSY_BIT = 1 << 31
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8

# ``struct bpf_ringbuf_hdr``: the header in front of every record.
RingBufRecordHeader = Struct(
    "len" / Int32ul,  # record length, plus BPF_RINGBUF_BUSY_BIT / BPF_RINGBUF_DISCARD_BIT
    "pg_off" / Int32ul,  # pages from the ring's start to the header (kernel bookkeeping)
)

# the ring buffer's size per online CPU: one ring takes what every CPU produces, so it holds
# what the perf transport's per-CPU rings hold together (4 MiB each); 8 MiB at least
RINGBUF_BYTES_PER_CPU = 4 << 20
RINGBUF_BYTES_MIN = 8 << 20

_U32 = struct.Struct("<I")
_LEN_MASK = ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT) & 0xFFFFFFFF


@functools.cache
def kernel_has_ringbuf() -> bool:
    """Whether this kernel creates ``BPF_MAP_TYPE_RINGBUF`` maps (Linux 5.8 and later): a
    one-page ring is created and closed."""
    try:
        fd = syscalls.map_create(syscalls.BPF_MAP_TYPE_RINGBUF, 0, 0, PAGE_SIZE,
                                 name="ebpfwire_probe")
    except syscalls.BpfSyscallError:
        return False
    os.close(fd)
    return True


def default_ring_bytes(cpus: int) -> int:
    """The ring buffer's default size for ``cpus`` online CPUs: 4 MiB each, at least 8 MiB,
    rounded up to a power of two (what the map accepts)."""
    want = max(RINGBUF_BYTES_MIN, RINGBUF_BYTES_PER_CPU * cpus)
    return 1 << (want - 1).bit_length()


class RingBufRing:
    """The walk over one ring's mappings (``mmap`` objects, or ``bytearray`` in tests).

    ``consumer`` is the consumer page; ``producer`` the producer page followed by the data
    area twice (``PAGE_SIZE + 2 * size`` bytes).
    """

    def __init__(self, consumer: RingBuffer, producer: RingBuffer, size: int, map_fd: int):
        self.consumer = consumer
        self.producer = producer
        self.size = size
        self.map_fd = map_fd
        self._cons, self._prod = word_at(consumer, 0), word_at(producer, 0)
        self.pos = self._cons[0]

    def read(self) -> list[Record]:
        """Copy out the committed records up to the producer position; publish our position.

        Stops at a record still being written (busy); skips discarded ones. One pass, at
        most a ring's worth: records committed meanwhile are left for the next call, which
        the reader makes before it waits (the kernel wakes only a reader that caught up).
        """
        prod_mm = self.producer
        mask, limit, base = self.size - 1, self.size - BPF_RINGBUF_HDR_SZ, PAGE_SIZE
        unpack_u32 = _U32.unpack_from
        cons = self.pos
        out: list[Record] = []
        append = out.append
        prod = self._prod[0]
        while cons < prod:
            at = base + (cons & mask)
            # read byte by byte, but a commit or a discard changes only the top byte
            length = unpack_u32(prod_mm, at)[0]
            size = length & _LEN_MASK
            if length == size:  # committed, not discarded: the common case
                append(Sample(RINGBUF_CPU, prod_mm[at + 8 : at + 8 + size]))
            elif length & BPF_RINGBUF_BUSY_BIT:
                break  # still being written; its commit wakes us (we are caught up)
            if size > limit:
                raise LoaderError(
                    f"ring buffer map fd {self.map_fd}: record at position {cons} announces "
                    f"{size} bytes, the ring holds {self.size}"
                )
            cons += (size + 15) & ~7  # the 8-byte header, then 8-byte alignment
        if cons > prod:
            raise LoaderError(
                f"ring buffer map fd {self.map_fd}: records from position {self.pos} run to "
                f"{cons}, past the producer position {prod}"
            )
        if cons != self.pos:
            self._cons[0] = cons  # one store (word_at): a torn one made producers drop
            self.pos = cons
        return out

    def release(self) -> None:
        """Let go of the mappings (before they are closed)."""
        self._cons.release()
        self._prod.release()


class RingBufReader(EpollReader):
    """Records of one BPF ring buffer map, read through epoll; drops from a counter map.

    ``ring_size`` is the map's ``max_entries`` (data bytes: a power-of-two number of
    pages). Samples carry ``cpu`` = :data:`RINGBUF_CPU` and the record's exact bytes.
    """

    def __init__(
        self,
        ring_map_fd: int,
        ring_size: int,
        *,
        drops_map_fd: int | None = None,
        max_latency: float = DEFAULT_MAX_LATENCY,
    ) -> None:
        if ring_size < PAGE_SIZE or ring_size & (ring_size - 1):
            raise ValueError(
                f"ring_size must be a power of two >= {PAGE_SIZE} (the map's max_entries), "
                f"got {ring_size}"
            )
        self.map_fd = ring_map_fd
        self.ring_size = ring_size
        self.max_latency = max_latency
        self.closed = False
        self._consumer: mmap.mmap | None = None
        self._producer: mmap.mmap | None = None
        self._ring: RingBufRing | None = None
        self._epoll = select.epoll()
        self._pending: deque[Record] = deque()
        try:
            info = syscalls.map_info(ring_map_fd)
            if info.type != syscalls.BPF_MAP_TYPE_RINGBUF or info.max_entries != ring_size:
                raise LoaderError(
                    f"map fd {ring_map_fd} ({info.name!r}): expected a RINGBUF map (type "
                    f"{syscalls.BPF_MAP_TYPE_RINGBUF}) of {ring_size} bytes, found type "
                    f"{info.type} with max_entries {info.max_entries}"
                )
            self._drops = DropCounter(drops_map_fd) if drops_map_fd is not None else None
            self.lost: dict[int, int] = (
                dict.fromkeys(range(self._drops.ncpus), 0) if self._drops else {}
            )
            self._consumer = self._map(PAGE_SIZE, mmap.PROT_READ | mmap.PROT_WRITE, 0)
            self._producer = self._map(PAGE_SIZE + 2 * ring_size, mmap.PROT_READ, PAGE_SIZE)
            self._ring = RingBufRing(self._consumer, self._producer, ring_size, ring_map_fd)
            self._epoll.register(ring_map_fd, select.EPOLLIN)
        except BaseException:
            self.close()
            raise

    def _map(self, length: int, prot: int, offset: int) -> mmap.mmap:
        try:
            return mmap.mmap(self.map_fd, length, mmap.MAP_SHARED, prot, offset=offset)
        except OSError as exc:
            raise LoaderError(
                f"mmap of ring buffer map fd {self.map_fd} ({length} bytes at offset {offset}):"
                f" {exc.strerror}",
                exc.errno,
            ) from exc

    def _drain(self) -> list[Record]:
        return self._add_drops(self._ring.read())

    def _release(self) -> None:
        """Unmap the ring; the map fds stay with their owner."""
        if self._ring is not None:
            self._ring.release()
        for mm in (self._producer, self._consumer):
            if mm is not None:
                mm.close()
        self._producer = self._consumer = None

