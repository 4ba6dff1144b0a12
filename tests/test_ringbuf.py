"""The ring buffer walk on a fake ring (bytearrays laid out like the kernel's mappings)."""

from __future__ import annotations

import struct

import pytest

from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.perf import PAGE_SIZE, Sample
from ebpfwire.kernel.ringbuf import (
    BPF_RINGBUF_BUSY_BIT,
    BPF_RINGBUF_DISCARD_BIT,
    BPF_RINGBUF_HDR_SZ,
    RINGBUF_CPU,
    RingBufRecordHeader,
    RingBufRing,
)

SIZE = 256


class FakeRing:
    """Consumer page, producer page + data area mapped twice, and a writer like the kernel's."""

    def __init__(self, start: int = 0) -> None:
        self.consumer = bytearray(PAGE_SIZE)
        self.producer = bytearray(PAGE_SIZE + 2 * SIZE)
        struct.pack_into("<Q", self.consumer, 0, start)
        self.prod = start
        self.publish()

    def _put(self, pos: int, data: bytes) -> None:
        for i, byte in enumerate(data):
            at = (pos + i) % SIZE
            self.producer[PAGE_SIZE + at] = byte
            self.producer[PAGE_SIZE + SIZE + at] = byte  # the second mapping of the same page

    def reserve(self, payload: bytes, flags: int = BPF_RINGBUF_BUSY_BIT) -> int:
        """Write a record header with ``flags`` and the payload; returns its position."""
        pos = self.prod
        self._put(pos, RingBufRecordHeader.build({"len": len(payload) | flags, "pg_off": 0}))
        self._put(pos + 8, payload)
        self.prod += (8 + len(payload) + 7) & ~7
        return pos

    def commit(self, pos: int, length: int, discard: bool = False) -> None:
        self._put(pos, struct.pack("<I", length | (BPF_RINGBUF_DISCARD_BIT if discard else 0)))

    def publish(self) -> None:
        struct.pack_into("<Q", self.producer, 0, self.prod)

    @property
    def consumer_pos(self) -> int:
        return struct.unpack_from("<Q", self.consumer)[0]


def ring_of(fake: FakeRing) -> RingBufRing:
    return RingBufRing(fake.consumer, fake.producer, SIZE, map_fd=7)


def test_records_in_order_then_position_published():
    fake = FakeRing()
    ring = ring_of(fake)
    payloads = [bytes([n]) * n for n in (1, 8, 13)]
    for p in payloads:
        fake.commit(fake.reserve(p), len(p))
    fake.publish()
    assert ring.read() == [Sample(RINGBUF_CPU, p) for p in payloads]
    assert fake.consumer_pos == fake.prod == 16 + 16 + 24
    assert ring.read() == []


def test_a_record_across_the_end_comes_out_whole():
    fake = FakeRing(start=SIZE * 3 - 16)  # positions grow forever; the offset is pos & mask
    ring = ring_of(fake)
    payload = bytes(range(40))
    fake.commit(fake.reserve(payload), len(payload))
    fake.publish()
    assert ring.read() == [Sample(RINGBUF_CPU, payload)]
    assert fake.consumer_pos == SIZE * 3 - 16 + 48


def test_busy_record_stops_the_walk_until_committed():
    fake = FakeRing()
    ring = ring_of(fake)
    fake.commit(fake.reserve(b"first"), 5)
    busy = fake.reserve(b"second")
    fake.commit(fake.reserve(b"third"), 5)  # committed, but behind a busy one
    fake.publish()
    assert ring.read() == [Sample(RINGBUF_CPU, b"first")]
    assert fake.consumer_pos == busy
    fake.commit(busy, 6)
    assert ring.read() == [Sample(RINGBUF_CPU, b"second"), Sample(RINGBUF_CPU, b"third")]
    assert fake.consumer_pos == fake.prod


def test_discarded_records_are_skipped_and_consumed():
    fake = FakeRing()
    ring = ring_of(fake)
    fake.commit(fake.reserve(b"gone"), 4, discard=True)
    fake.commit(fake.reserve(b"kept"), 4)
    fake.publish()
    assert ring.read() == [Sample(RINGBUF_CPU, b"kept")]
    assert fake.consumer_pos == 32


def test_nonsense_length_is_a_clear_error():
    fake = FakeRing()
    ring = ring_of(fake)
    pos = fake.reserve(b"x")
    fake.commit(pos, 4000)
    fake.publish()
    with pytest.raises(LoaderError, match=r"map fd 7: record at position 0 announces 4000 bytes, "
                                          r"the ring holds 256"):
        ring.read()
    assert fake.consumer_pos == 0  # nothing consumed


def test_record_header_schema_is_the_layout():
    raw = RingBufRecordHeader.build({"len": BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT | 77,
                                     "pg_off": 3})
    assert raw == struct.pack("<II", 0xC000004D, 3) and len(raw) == BPF_RINGBUF_HDR_SZ
