"""The columnar path reads a capture's samples where they were read (a block's buffers and
bounds, ebpfwire.capture.bulk.RecordBlock), never cut one by one where the capture is
clean: its tables are those of the samples as a list (cut record by record, joined once),
on clean, damaged and random captures, with and without the process context."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_capture_scan import damage_st, damaged, data_start, raw_record

from ebpfwire.capture import CaptureReader, CaptureWriter, HostInfo, SampleRecord, bulk
from ebpfwire.capture.bulk import RecordBlock
from ebpfwire.columnar.arrow import batches, to_table
from ebpfwire.columnar.rowcontext import heads

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HOST = HostInfo(kernel_release="6.18.0-test", hostname="joined", ncpus=4)
LAYOUTS = {"classic": "real-workload.ewcap", "hash": "layout-hash.ewcap",
           "cwd-tty-oid": "layout-cwd-tty-oid.ewcap"}


def fixture_samples(name: str) -> list[bytes]:
    with CaptureReader(FIXTURES / name) as reader:
        return [r.data for r in reader if type(r) is SampleRecord]


POOLS = {layout: fixture_samples(name) for layout, name in LAYOUTS.items()}
POOLS["classic"] += fixture_samples("all-types.ewcap") + fixture_samples("damaged.ewcap")

samples_st = st.one_of(
    st.integers(0, 10**6).map(lambda i: ("fixture", i)),
    st.tuples(st.just("cut"), st.integers(0, 10**6), st.integers(0, 120)),
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
)
records_st = st.lists(st.one_of(
    st.tuples(st.just("sample"), st.integers(0, 3), samples_st),
    st.tuples(st.just("lost"), st.integers(0, 3), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("raw"), st.sampled_from([2, 40]), st.binary(max_size=40)),
), max_size=120)


def capture(layout: str, records: list) -> bytes:
    pool = POOLS[layout]
    sink = io.BytesIO()
    sink.close = lambda: None   # keep the bytes after the writer closes
    with CaptureWriter(sink, host=HOST, boot_time_ns=1, start_time_ns=2,
                       layout=layout) as writer:
        for kind, a, b in records:
            if kind == "sample":
                if b[0] == "fixture":
                    data = pool[b[1] % len(pool)]
                elif b[0] == "cut":
                    data = pool[b[1] % len(pool)][:b[2]]
                else:
                    data = b[1]
                writer.write_sample(a, data)
            elif kind == "lost":
                writer.write_lost(a, b)
            else:
                writer.flush()
                sink.write(raw_record(a, b))
    return sink.getvalue()


def table(data: bytes, joined: bool, context: bool, max_rows: int, chunk: int) -> pa.Table:
    """The capture's table: its clean stretches as read (``joined``), or every record
    read one by one (a block's samples then joined once)."""
    kept, bulk._FEWEST = bulk._FEWEST, 1 if joined else 2**62
    try:
        reader = CaptureReader(io.BytesIO(data))
        reader.bulk_chunk_size = chunk   # small reads: a batch spans many buffers
        parts = list(batches(reader, max_rows=max_rows, context=context))
    finally:
        bulk._FEWEST = kept
    return pa.Table.from_batches(parts) if parts else None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(LAYOUTS)), records_st, damage_st, st.booleans(),
       st.sampled_from([1, 7, 64, 65536]), st.sampled_from([64, 700, 4096, 1 << 18]))
def test_tables_from_the_read_buffers_equal_those_from_samples_cut_one_by_one(
        layout, records, damage, context, max_rows, chunk):
    data = capture(layout, records)
    for case in (data, damaged(data, damage, data_start(data))):
        want = table(case, False, context, max_rows, chunk)
        got = table(case, True, context, max_rows, chunk)
        assert (got is None) == (want is None)
        if got is not None:
            assert got.equals(want), (got.to_pylist(), want.to_pylist())


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(LAYOUTS)), records_st)
def test_a_capture_table_is_the_table_of_its_samples_as_a_list(layout, records):
    """A capture of samples only (no loss, no damage) and the list of its samples give one
    table, but for what only a capture has (cpu, wall time)."""
    records = [record for record in records if record[0] == "sample"]
    data = capture(layout, records)
    with CaptureReader(io.BytesIO(data)) as reader:
        samples = [r.data for r in reader]
    got = to_table(CaptureReader(io.BytesIO(data)), context=False)
    want = to_table(samples, layout=layout, context=False)
    assert got.drop_columns(["cpu", "time"]).equals(want.drop_columns(["cpu", "time"]))


def test_a_block_of_many_buffers_gives_each_row_its_bytes():
    """payloads() joins the spans of each buffer once; split(), join(), segments() and
    data() agree with it, LOST rows empty."""
    pool = POOLS["classic"]
    blocks = []
    for first in range(0, 40, 10):
        records = [SampleRecord(1, pool[i], 100 * i) for i in range(first, first + 10)]
        block = RecordBlock.of(records)
        # the rows apart in a buffer with bytes between them, as in a read buffer
        pad = b"\xee" * 28
        buf = pad + pad.join(pool[first:first + 10]) + pad
        lengths = np.array([len(d) for d in pool[first:first + 10]], np.int64)
        begins = 28 + np.append(0, np.cumsum(lengths + 28)[:-1])
        block.bufs, block.begins, block.ends = [buf], begins, begins + lengths
        blocks.append(block)
    whole = RecordBlock.join(blocks)
    want = pool[:40]
    joined, begins, ends = whole.payloads()
    assert [joined[b:e] for b, e in zip(begins.tolist(), ends.tolist(), strict=True)] == want
    assert [whole.data(row) for row in range(40)] == want
    assert len(joined) < sum(map(len, want)) + 40 * 28   # spans, not the buffers
    for at in (0, 1, 10, 15, 39, 40):
        head, tail = whole.split(at)
        assert [r.data for r in head.records()] + [r.data for r in tail.records()] == want
        assert len(head.bufs) == -(-at // 10) and len(tail.bufs) == 4 - at // 10
        assert RecordBlock.join([head, tail]).records() == whole.records()
    assert sum(len(b) for _, b, _ in whole.segments()) == 40


def test_many_rows_cut_at_once_are_those_cut_one_by_one():
    """datas() (what the context's join cuts for the enricher) gives each row's data(),
    for rows in any order across buffers, and stops at the first row past its byte
    budget, always giving one."""
    pool = POOLS["classic"]
    blocks = [RecordBlock.of([SampleRecord(1, pool[i], i) for i in range(first, first + 10)])
              for first in range(0, 40, 10)]
    whole = RecordBlock.join(blocks)
    rows = np.array([39, 0, 12, 12, 25, 9, 31], np.int64)
    want = [whole.data(row) for row in rows.tolist()]
    assert whole.datas(rows, 1 << 20) == want
    sizes = np.cumsum([len(d) for d in want])
    for budget in (0, 1, int(sizes[0]), int(sizes[2]), int(sizes[2]) + 1, int(sizes[-1])):
        fit = max(1, int(np.searchsorted(sizes, budget, "right")))
        assert whole.datas(rows, budget) == want[:fit]


@pytest.mark.parametrize("size", [1, 8, 56])
def test_heads_pads_short_samples_and_ignores_the_bytes_between(size):
    buf = b"\xffabcdefgh\xffxy\xff\xff0123456789\xff"
    begins = np.array([1, 11, 13, 15], np.int64)
    ends = np.array([9, 13, 13, 25], np.int64)
    rows = heads(buf, begins, ends, size)
    for row, (b, e) in enumerate(zip(begins, ends, strict=True)):
        assert bytes(rows[row]) == buf[b:min(e, b + size)].ljust(size, b"\0")
