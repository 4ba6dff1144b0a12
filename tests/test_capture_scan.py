"""The bulk scan (CaptureReader.blocks, ebpfwire.capture.bulk) is the record-by-record
reader, record by record: the same records, resynchronisation marks, damage reports,
notes, context records at the same places, on clean, damaged and fixture captures."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebpfwire.capture import (
    SYNC,
    CaptureReader,
    CaptureWriter,
    HostInfo,
    bulk,
    split_ranges,
)
from ebpfwire.capture.bulk import Intake, RecordBlock
from ebpfwire.capture.format import _HEAD_COVERED
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HOST = HostInfo(kernel_release="6.18.0-test", hostname="scan", ncpus=4)


def raw_record(rtype: int, payload: bytes) -> bytes:
    """A version-2 record of any type, both CRCs good."""
    covered = _HEAD_COVERED.pack(len(payload), rtype, 0)
    return (SYNC + covered + zlib.crc32(covered).to_bytes(4, "little")
            + zlib.crc32(payload).to_bytes(4, "little") + payload)


def read(data: bytes, bulk: bool, chunk: int = 1 << 16, **kw) -> tuple[list, CaptureReader]:
    """Everything a reader gives, in order: records (with their resync), and the context
    records handed to on_context where they were read."""
    out: list = []

    def context(info):
        out.append(("context", info))

    reader = CaptureReader(io.BytesIO(data), on_context=context, **kw)
    reader.chunk_size = chunk
    reader.bulk_chunk_size = chunk
    items = reader.blocks() if bulk else iter(reader)
    for item in items:
        records = item.records() if type(item) is RecordBlock else [item]
        out += [(r, getattr(r, "resync", None)) for r in records]
    return out, reader


def assert_same(data: bytes, chunk: int = 1 << 16, **kw) -> list:
    want, plain = read(data, False, chunk, **kw)
    got, bulk = read(data, True, chunk, **kw)
    assert got == want
    for name in ("damage", "notes", "damage_count", "notes_count", "unanchored",
                 "tail_missing", "context_counts"):
        assert getattr(bulk, name) == getattr(plain, name), name
    return got


def capture(records: list) -> bytes:
    sink = io.BytesIO()
    sink.close = lambda: None   # keep the bytes after the writer closes
    with CaptureWriter(sink, host=HOST, boot_time_ns=1, start_time_ns=2) as writer:
        for kind, a, b in records:
            if kind == "sample":
                writer.write_sample(a, b)
            elif kind == "lost":
                writer.write_lost(a, b)
            elif kind == "process":
                writer.write_process(ProcessInfo(a, 1, a, 0, 5, 6, 500, "sh", "/bin/sh", "/",
                                                 ("sh", b.hex()), ""))
            elif kind == "container":
                writer.write_container(ContainerInfo(a, a + 1, b.hex(), "docker"))
            else:
                writer.flush()
                sink.write(raw_record(a, b))
    return sink.getvalue()


payloads = st.one_of(st.binary(max_size=300),
                     st.binary(max_size=40).map(lambda b: b + SYNC + b),   # a sync word inside
                     st.binary(min_size=8, max_size=40).map(lambda b: b * 20))
records_st = st.lists(st.one_of(
    st.tuples(st.just("sample"), st.integers(0, 3), payloads),
    st.tuples(st.just("lost"), st.integers(0, 3), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("process"), st.integers(1, 10**6), st.binary(max_size=8)),
    st.tuples(st.just("container"), st.integers(1, 10**6), st.binary(max_size=8)),
    st.tuples(st.just("raw"), st.sampled_from([1, 2, 40, 999]), payloads),
), max_size=60)
damage_st = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10**6),
              st.one_of(st.binary(max_size=40), st.just(SYNC), st.just(SYNC * 3))),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.just(b"")),
), max_size=4)


def damaged(data: bytes, damage: list, start: int) -> bytes:
    """``data`` with bytes flipped, garbage inserted or the end cut, after ``start``."""
    for kind, at, value in damage:
        if len(data) <= start:
            break
        at = start + at % (len(data) - start)
        if kind == "flip":
            data = data[:at] + bytes([data[at] ^ value]) + data[at + 1:]
        elif kind == "insert":
            data = data[:at] + value + data[at:]
        else:
            data = data[:at]
    return data


def data_start(data: bytes) -> int:
    return 12 + int.from_bytes(data[10:12], "little") + 4


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records_st, damage_st, st.sampled_from([20, 64, 333, 4096, 1 << 16]),
       st.sampled_from([1, 2, bulk._FEWEST]))
def test_bulk_scan_equals_the_reader_on_clean_and_damaged_captures(records, damage, chunk,
                                                                   fewest):
    """``fewest``: the shortest stretch taken in bulk (1: every stretch)."""
    kept, bulk._FEWEST = bulk._FEWEST, fewest
    try:
        data = capture(records)
        assert_same(data, chunk)
        assert_same(damaged(data, damage, data_start(data)), chunk)
    finally:
        bulk._FEWEST = kept


@settings(max_examples=100, deadline=None)
@given(records_st, damage_st, st.integers(1, 5))
def test_bulk_scan_equals_the_reader_over_byte_ranges(tmp_path_factory, records, damage,
                                                      parts):
    data = capture(records)
    data = data[:data_start(data)] + damaged(data[data_start(data):], damage, 0)
    path = tmp_path_factory.mktemp("ranges") / "x.ewcap"
    path.write_bytes(data)
    for start, end in split_ranges(path, parts):
        assert_same(data, 333, start=start, end=end)


def test_a_short_stretch_is_read_record_by_record():
    data = capture([("sample", 0, b"x" * 40)] * (bulk._FEWEST - 1) + [("process", 1, b"")])
    items = list(CaptureReader(io.BytesIO(data)).blocks())
    assert [type(item).__name__ for item in items] == \
        ["SampleRecord"] * (bulk._FEWEST - 1) + ["ProcessRecord"]
    data = capture([("sample", 0, b"x" * 40)] * bulk._FEWEST + [("process", 1, b"")])
    assert [type(item).__name__ for item in CaptureReader(io.BytesIO(data)).blocks()] == \
        ["RecordBlock", "ProcessRecord"]


def test_a_clean_capture_is_taken_in_blocks_without_record_objects():
    data = capture([("sample", i % 4, b"x" * (i % 50) + SYNC) for i in range(3000)]
                   + [("lost", 1, 7)] + [("sample", 0, b"y" * 30)] * 10)
    reader = CaptureReader(io.BytesIO(data))
    items = list(reader.blocks())
    assert {type(item) for item in items} == {RecordBlock}
    block = RecordBlock.join(items)
    assert len(block) == 3011 and not block.samples[3000] and block.counts[3000] == 7
    assert_same(data)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.ewcap")), ids=lambda p: p.name)
def test_bulk_scan_equals_the_reader_on_every_fixture(path):
    data = path.read_bytes()
    for chunk in (64, 1 << 16, 1 << 20):
        assert_same(data, chunk)


def test_records_found_by_scanning_are_marked_in_blocks():
    data = capture([("sample", 0, bytes([i]) * 60) for i in range(50)])
    at = data_start(data) + 10 * 84   # garbage before the 11th record: found by scanning
    data = data[:at] + b"garbage" + data[at:]
    got = assert_same(data)
    assert [resync for _, resync in got] == [None] * 10 + [at] * 40
    blocks = [item for item in CaptureReader(io.BytesIO(data)).blocks()
              if type(item) is RecordBlock]
    assert (RecordBlock.join(blocks).resync == at).sum() == 40


def test_context_records_are_given_where_they_are_read_between_blocks():
    records = [("sample", 0, b"a" * 40)] * 100 + [("process", 7, b"")] + \
              [("sample", 1, b"b" * 40)] * 100 + [("container", 9, b"\x01")]
    data = capture(records)
    seen: list = []
    reader = CaptureReader(io.BytesIO(data), on_context=lambda info: seen.append(
        (intake.got, type(info).__name__)))
    intake = Intake(reader.blocks())
    first = intake.take(150)
    second = intake.take(150)
    assert (len(first), len(second), len(intake.take(150))) == (150, 50, 0)
    # the process was read after the 100th row of the first take, the container after
    # the 50th of the second
    assert seen == [(100, "ProcessInfo"), (50, "ContainerInfo")]


def test_takes_are_bounded_in_bytes_too():
    """A take gives at most ``max_bytes`` of samples (one row at least, however big),
    blocks and records read one by one (after damage) alike; every row comes once, in
    order."""
    sizes = [40, 3000, 40, 40, 9000, 40, 500, 40] * 6
    data = capture([("sample", i % 2, bytes([i]) * size) for i, size in enumerate(sizes)]
                   + [("lost", 1, 5)])
    at = data_start(data) + sum(sizes[:3]) + 3 * 24   # garbage: the rest read loose
    for damaged in (data, data[:at] + b"garbage" + data[at:]):
        intake = Intake(CaptureReader(io.BytesIO(damaged)).blocks())
        taken = []
        while len(block := intake.take(7, max_bytes=4000)):
            spans = block.ends - block.begins
            assert len(block) <= 7 and (spans.sum() <= 4000 or len(block) == 1)
            taken += [block.data(row) for row in range(len(block))]
        got = [data for data in taken if data]
        assert [len(data) for data in got] == sizes and len(taken) == len(sizes) + 1


def test_a_payload_crc_flipped_mid_block_stops_the_block_there():
    data = bytearray(capture([("sample", 0, bytes([i]) * 60) for i in range(50)]))
    at = data_start(data) + 25 * 84 + 40   # inside the 26th record's payload
    data[at] ^= 1
    got = assert_same(bytes(data))
    assert len(got) == 49
