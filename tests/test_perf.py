"""The perf ring walk on a fake ring (no kernel), and the fast path against the schemas."""

from __future__ import annotations

import random
import struct
import subprocess
import sys

import pytest

from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.perf import (
    DATA_TAIL_AT,
    PAGE_SIZE,
    PERF_RECORD_LOST,
    PERF_RECORD_SAMPLE,
    Lost,
    PerfMmapPage,
    PerfRecord,
    PerfRing,
    Sample,
    merge_by_ts,
    parse_records,
    parse_records_with_schema,
)

DATA_SIZE = 256


def sample_record(raw: bytes) -> bytes:
    """A PERF_RECORD_SAMPLE as the kernel writes it: 4 + raw padded to a multiple of 8."""
    padded = raw + b"\0" * (-(4 + len(raw)) % 8)
    body = struct.pack("<I", len(padded)) + padded
    return struct.pack("<IHH", PERF_RECORD_SAMPLE, 0, 8 + len(body)) + body


def lost_record(count: int, id_: int = 7) -> bytes:
    return struct.pack("<IHHQQ", PERF_RECORD_LOST, 0, 24, id_, count)


class FakeRing:
    """A bytearray laid out like the kernel's mapping, with a writer that wraps."""

    def __init__(self, data_size: int = DATA_SIZE, start: int = 0) -> None:
        self.buf = bytearray(PAGE_SIZE + data_size)
        self.data_size = data_size
        meta = PerfMmapPage.build(
            dict(data_head=start, data_tail=start, data_offset=PAGE_SIZE, data_size=data_size)
        )
        self.buf[: len(meta)] = meta
        self.head = start

    def write(self, record: bytes) -> None:
        for i, byte in enumerate(record):
            self.buf[PAGE_SIZE + (self.head + i) % self.data_size] = byte
        self.head += len(record)
        struct.pack_into("<Q", self.buf, 1024, self.head)

    @property
    def tail(self) -> int:
        return struct.unpack_from("<Q", self.buf, DATA_TAIL_AT)[0]


def event(ts: int, size: int) -> bytes:
    return struct.pack("<Q", ts) + bytes(range(1, 256))[: size - 8]


def test_metadata_page_schema_is_read():
    fake = FakeRing()
    ring = PerfRing(fake.buf, cpu=3)
    assert (ring.data_offset, ring.data_size) == (PAGE_SIZE, DATA_SIZE)
    assert ring.read() == []
    assert fake.tail == 0


def test_several_records_padding_and_tail():
    fake = FakeRing()
    ring = PerfRing(fake.buf, cpu=1)
    ev1, ev2 = event(10, 73), event(11, 12)  # 4 + 73 -> pad 3; 4 + 12 -> pad 0
    fake.write(sample_record(ev1))
    fake.write(sample_record(ev2))
    got = ring.read()
    assert got == [Sample(1, ev1 + b"\0\0\0"), Sample(1, ev2)]
    assert fake.tail == fake.head == 88 + 24
    assert ring.read() == []  # nothing new: tail unchanged
    assert fake.tail == 112


def test_wrapping_record_is_reassembled_and_lost_reported():
    fake = FakeRing(start=200)  # 56 bytes before the end of the 256-byte area
    ring = PerfRing(fake.buf, cpu=0)
    big = event(5, 100)  # record of 8 + 4 + 100 = 112 bytes: crosses the end
    fake.write(lost_record(42))  # 200..224
    fake.write(sample_record(big))  # 224..336 -> wraps at 256
    assert fake.head == 336
    got = ring.read()
    assert got == [Lost(0, 42), Sample(0, big)]
    assert fake.tail == 336
    # the walk goes on after the wrap
    small = event(6, 20)
    fake.write(sample_record(small))
    assert ring.read() == [Sample(0, small)]
    assert fake.tail == fake.head


def test_header_split_across_the_end():
    fake = FakeRing(start=252)  # only 4 bytes left: the record header itself wraps
    ring = PerfRing(fake.buf, cpu=2)
    ev = event(1, 28)
    fake.write(sample_record(ev))
    assert ring.read() == [Sample(2, ev)]
    assert fake.tail == 252 + 40


def test_corrupt_ring_is_a_clear_error():
    fake = FakeRing()
    ring = PerfRing(fake.buf, cpu=0)
    fake.write(struct.pack("<IHH", PERF_RECORD_SAMPLE, 0, 4) + b"\0" * 4)
    with pytest.raises(LoaderError, match="record at offset 0 has size 4"):
        ring.read()
    fake2 = FakeRing()
    struct.pack_into("<Q", fake2.buf, 1024, DATA_SIZE + 8)
    with pytest.raises(LoaderError, match="apart, the data area holds 256"):
        PerfRing(fake2.buf, cpu=0).read()


def test_fast_path_equals_schema_path():
    rng = random.Random(1234)
    for _ in range(200):
        chunk = b""
        for _ in range(rng.randint(0, 12)):
            pick = rng.random()
            if pick < 0.7:
                chunk += sample_record(rng.randbytes(rng.randint(0, 300)))
            elif pick < 0.9:
                chunk += lost_record(rng.randint(0, 2**64 - 1), rng.randint(0, 99))
            else:  # some other record type: skipped by both paths
                chunk += struct.pack("<IHH", 14, 0, 16) + rng.randbytes(8)
        assert parse_records(chunk, 1) == parse_records_with_schema(chunk, 1)


def test_schema_describes_a_sample_record():
    rec = PerfRecord.parse(sample_record(b"abc"))
    assert rec.header.type == PERF_RECORD_SAMPLE and rec.header.size == 16
    assert rec.body.raw_size == 4 and rec.body.raw == b"abc\0"


def test_merge_by_ts_orders_across_cpus():
    recs = [Sample(0, event(30, 16)), Sample(0, event(50, 16)), Lost(0, 3),
            Sample(1, event(10, 16)), Sample(1, event(40, 16)), Sample(1, b"xx")]
    merged = merge_by_ts(recs)
    # the short sample keeps its place after cpu 1's ts 40 (the one window's rule)
    assert [s.data[:8] for s in merged] == [
        struct.pack("<Q", t) for t in (10, 30, 40)
    ] + [b"xx", struct.pack("<Q", 50)]


@pytest.mark.parametrize(
    "module", ["ebpfwire.kernel.perf", "ebpfwire.kernel", "ebpfwire.kernel.monitor"]
)
def test_modules_import_first_without_cycles(module: str):
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
