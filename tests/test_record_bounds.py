"""Record boundaries that payload bytes cannot forge (issue 16, items 1 and 8): every reader
(the whole-file reader and decode, to_table, byte ranges as export and Dask plan them,
export) gives exactly the records the writer wrote, whatever a traced process put in its
samples; after real damage, records found by scanning are marked resynchronised; a cut
version-2 record followed by more data keeps the intact records after it."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebpfwire import Arg, Event, SockAddr, encode
from ebpfwire.capture import (
    MAX_PAYLOAD,
    SYNC,
    CaptureReader,
    CaptureStream,
    CaptureWriter,
    HostInfo,
    Record,
    RecordType,
    SampleRecord,
    split_ranges,
)
from ebpfwire.columnar import arrow
from ebpfwire.columnar.export import export_parquet, index_captures, plan_splits
from ebpfwire.wire.argtypes import ArgType as T

HOST = HostInfo(kernel_release="6.18.0-test", hostname="bounds", ncpus=2)


def event(event_id: int, retval: int, comm: str, pid: int, *args, ts: int, uid: int = 1000,
          argnum: int | None = None) -> bytes:
    values = [Arg(*a) for a in args]
    return encode(Event(ts, 0, 0, 1, pid, 1, pid, uid, event_id,
                        len(values) if argnum is None else argnum, retval, comm, values, {}),
                  "classic")


def openat(pid: int, ts: int, comm: str = "victim") -> bytes:
    return event(257, 3, comm, pid, (T.INT_T, -100), (T.STR_T, "/etc/x"),
                 (T.OPEN_FLAGS_T, 0), ts=ts)


def connect_with(hidden: bytes, pid: int, ts: int) -> bytes:
    """connect(3, {AF_UNIX, path}) whose 108 path bytes (any local user's) are `hidden`."""
    data = event(42, -111, "attacker", pid, (T.INT_T, 3),
                 (T.SOCKADDR_T, SockAddr(1, path="X" * 107)), ts=ts)
    at = data.index(b"X" * 107)
    return data[:at] + hidden + bytes(108 - len(hidden)) + data[at + 108:]


def sample_record(data: bytes, cpu: int = 0) -> bytes:
    return Record.build({"type": RecordType.SAMPLE,
                         "payload": struct.pack("<I", cpu) + data})


def forged_header(length: int, good_crc: bool = True) -> bytes:
    covered = struct.pack("<IHH", length, RecordType.SAMPLE, 0)
    return (SYNC + covered
            + struct.pack("<II", zlib.crc32(covered) ^ (0 if good_crc else 1), 0))


FORGED = sample_record(event(257, 0, "evil", 31337, ts=5 * 10**9, uid=0, argnum=0))
SWALLOW = forged_header(MAX_PAYLOAD)


def write(path: Path, samples: list[bytes]) -> Path:
    with CaptureWriter(path, host=HOST, boot_time_ns=1, start_time_ns=2) as w:
        for i, data in enumerate(samples):
            w.write_sample(i & 1, data)
    return path


def decoded_rows(path: Path) -> list[tuple]:
    """What decode gives, in file order: (ts, pid, comm) of each event, or the error."""
    with CaptureReader(path) as reader:
        return [(e.ts, e.pid, e.comm, tuple(x.kind for x in e.errors))
                if not isinstance(e, Exception) else ("error", str(e))
                for _, e in CaptureStream(reader, strict=False, time_order=False)]


def table_rows(table: pa.Table) -> list[tuple]:
    return list(zip(table["ts"].to_pylist(), table["pid"].to_pylist(),
                    table["comm"].to_pylist(),
                    [tuple(x["kind"] for x in e or ()) for e in table["errors"].to_pylist()],
                    strict=True))


def split_rows(path: Path, split_bytes: int, context: bool) -> pa.Table:
    """The rows of every byte range as export and Dask plan and read them, concatenated."""
    indexes = index_captures([str(path)]) if context else None
    splits = plan_splits([str(path)], split_bytes, indexes)
    tables = []
    for split in splits:
        with split.open() as reader:
            tables.append(arrow.to_table(reader, context=split.context or False))
    return pa.concat_tables(tables), len(splits)


@pytest.mark.parametrize("hidden", [FORGED, SWALLOW], ids=["forge", "swallow"])
def test_payload_bytes_never_become_rows_in_any_reader(tmp_path, hidden):
    """Issue 16 item 1 (repro d1): connect() addresses holding a whole record, or a header
    claiming 1 MiB, make no row appear or vanish in export, to_table, byte ranges or Dask."""
    samples = [connect_with(hidden, 4000, 10**9 + i) if i % 2
               else openat(100, 10**9 + i) for i in range(4000)]
    path = write(tmp_path / "a.ewcap", samples)
    want = table_rows(arrow.to_table(path))
    assert want == decoded_rows(path)
    assert len(want) == 4000 and all(not errors for *_, errors in want)
    comms = [comm for _, _, comm, _ in want]
    assert comms.count("evil") == 0 and comms.count("victim") == 2000
    for context in (True, False):
        got, parts = split_rows(path, 1 << 12, context)
        assert parts > 50 and table_rows(got) == want
    for jobs, context in ((1, True), (2, False)):
        out = tmp_path / f"a-{jobs}.parquet"
        summary = export_parquet(path, out, jobs=jobs, split_bytes=1 << 16, context=context)
        assert summary.damaged == 0 and summary.events == 4000
        assert table_rows(pq.read_table(out)) == want


def test_dask_partitions_give_the_rows_of_to_table(tmp_path):
    ebpfwire_dask = pytest.importorskip("ebpfwire.columnar.dask")
    samples = [connect_with(FORGED if i % 4 == 1 else SWALLOW, 4000, 10**9 + i) if i % 2
               else openat(100, 10**9 + i) for i in range(2000)]
    path = write(tmp_path / "d.ewcap", samples)
    want = arrow.to_table(path)
    for context in (True, False):
        frame = ebpfwire_dask.read_captures(path, split_bytes=1 << 12, context=context)
        assert frame.npartitions > 20
        got = pa.Table.from_pandas(frame.compute(scheduler="synchronous"),
                                   preserve_index=False)
        assert table_rows(got) == table_rows(want)
        assert got["comm"].to_pylist().count("evil") == 0


def test_after_real_damage_records_found_by_scanning_are_marked(tmp_path):
    """A damaged header next to a payload holding a whole record: the forged record can
    only come out marked resynchronised, in decode, to_table and every range."""
    samples = [openat(100, 10**9), connect_with(FORGED, 4000, 10**9 + 1),
               openat(101, 10**9 + 2)]
    path = write(tmp_path / "m.ewcap", samples)
    data = bytearray(path.read_bytes())
    with CaptureReader(path) as reader:
        second = list(reader)[1].offset
    data[second + 5] ^= 0x40  # the length of the record that holds the forged one
    path.write_bytes(bytes(data))
    rows = decoded_rows(path)
    assert [(pid, comm) for _, pid, comm, _ in rows] == [(100, "victim"), (31337, "evil"),
                                                         (101, "victim")]
    assert rows[0][3] == () and "resynchronised" in rows[1][3] and "resynchronised" in rows[2][3]
    assert table_rows(arrow.to_table(path)) == rows
    assert table_rows(arrow.to_table(path, strict=True)) == rows
    for context in (True, False):
        assert table_rows(split_rows(path, 64, context)[0]) == rows
    with CaptureReader(path) as reader:
        list(reader)
    assert reader.damage[0].offset == second  # (the rest of the outer payload is another)
    assert "marked resynchronised" in reader.damage[0].message


def test_a_cut_record_keeps_the_intact_records_after_it(tmp_path):
    """Issue 16 item 8 (repro d8): a 2 KiB record cut after 100 bytes, then five intact
    records (a torn write, then more data): all five are read, after one damage report."""
    recs = [sample_record(openat(100 + i, 10**9 + i)) for i in range(6)]
    big = sample_record(event(59, 0, "c", 99, (T.STR_T, "/bin/" + "x" * 2000), ts=10**9))
    path = write(tmp_path / "cut.ewcap", [])
    with open(path, "ab") as f:
        f.write(recs[0] + big[:100] + b"".join(recs[1:]))
    rows = decoded_rows(path)
    assert [pid for _, pid, _, _ in rows] == [100, 101, 102, 103, 104, 105]
    with CaptureReader(path) as reader:
        list(reader)
    assert len(reader.damage) == 1 and "cut record" in reader.damage[0].message
    assert table_rows(arrow.to_table(path)) == rows
    # the same with the cut record's extent inside the file (its payload CRC fails)
    path.write_bytes(path.read_bytes() + b"\0" * 4000)
    assert [pid for _, pid, _, _ in decoded_rows(path)] == [100, 101, 102, 103, 104, 105]


def test_a_range_start_is_a_record_of_the_chain(tmp_path):
    samples = [connect_with(FORGED, 4000, 10**9 + i) for i in range(300)]
    path = write(tmp_path / "s.ewcap", samples)
    with CaptureReader(path) as reader:
        offsets = [r.offset for r in reader]
    ranges = split_ranges(path, split_bytes=100)
    assert [lo for lo, _ in ranges] == offsets  # each range one record, none forged
    [index] = index_captures([str(path)])
    assert split_ranges(path, split_bytes=100, starts=index.starts()) == ranges


adversarial = st.one_of(
    st.binary(max_size=120),
    st.just(FORGED),
    st.builds(forged_header, st.sampled_from([0, 4, 92, 4096, MAX_PAYLOAD, MAX_PAYLOAD + 1]),
              st.booleans()),
    st.builds(lambda n: SYNC * n, st.integers(1, 30)),
    st.builds(lambda d: sample_record(d), st.binary(max_size=60)),
)
payloads = st.lists(adversarial, min_size=1, max_size=4).map(b"".join)
samples_st = st.lists(st.one_of(
    st.tuples(st.just("connect"), payloads.map(lambda b: b[:108])),
    st.tuples(st.just("raw"), payloads),          # a sample as bytes (a long path, say)
    st.tuples(st.just("openat"), st.just(b"")),
), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(samples_st, st.integers(1, 400))
def test_adversarial_payloads_every_reader_gives_what_was_written(tmp_path, items,
                                                                   split_bytes):
    written = []
    for i, (kind, hidden) in enumerate(items):
        ts = 10**9 + i
        written.append(connect_with(hidden, 4000, ts) if kind == "connect"
                       else hidden if kind == "raw" else openat(100, ts))
    (tmp_path / "p.ewcap").unlink(missing_ok=True)
    path = write(tmp_path / "p.ewcap", written)
    with CaptureReader(path) as reader:
        records = list(reader)
    assert [r.data for r in records] == written and not reader.damage
    assert all(type(r) is SampleRecord and r.resync is None for r in records)
    ranged = []
    for lo, hi in split_ranges(path, split_bytes=split_bytes):
        with CaptureReader(path, start=lo, end=hi) as reader:
            ranged += list(reader)
            assert not reader.damage
    assert [(r.offset, r.data) for r in ranged] == [(r.offset, r.data) for r in records]
    rows = decoded_rows(path)
    assert not any("resynchronised" in str(row) for row in rows)
    whole = arrow.to_table(path)
    assert whole.num_rows == len(rows) == len(written)
    assert "resynchronised" not in str(whole["errors"].to_pylist())
    for context in (True, False):
        got, _ = split_rows(path, split_bytes, context)
        assert got.to_pylist() == (whole if context else whole.drop_columns(
            ["process", "parent_process", "container_id"])).to_pylist()
    out = tmp_path / "p.parquet"
    export_parquet(path, out, jobs=1, split_bytes=split_bytes, force=True)
    assert pq.read_table(out).to_pylist() == whole.to_pylist()
