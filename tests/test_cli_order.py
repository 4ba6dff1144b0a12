"""decode's time order: a bounded reorder window over per-CPU-sorted record streams."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from test_cli import BOOT, FIXTURES, HOST, event, jsonl, run

from ebpfwire import Arg, ArgType, encode
from ebpfwire.capture import CaptureWriter, LostRecord, SampleRecord
from ebpfwire.wire.order import WINDOW_NS, TimeOrder

W = 1000  # a small window keeps the numbers readable


@st.composite
def recordings(draw, max_delay: int):
    """Per-CPU sorted samples (and LOST records), in the order a recorder may write them.

    Each record "arrives" at its ts plus a delay below ``max_delay``, never before an earlier
    record of its CPU; the file holds records in arrival order (CPU by CPU on ties).
    """
    ncpus = draw(st.integers(1, 4))
    records = []
    for cpu in range(ncpus):
        ts = draw(st.integers(0, 5 * W))
        arrival = 0
        for _ in range(draw(st.integers(0, 30))):
            ts += draw(st.integers(0, W // 2))
            arrival = max(arrival, ts + draw(st.integers(0, max_delay - 1)))
            if draw(st.integers(0, 9)) == 0:
                records.append((arrival, cpu, LostRecord(cpu, 1, 0)))
            else:
                padding = b"\0" * draw(st.integers(0, 24))
                records.append((arrival, cpu, SampleRecord(cpu, struct.pack("<Q", ts) + padding,
                                                           0)))
    records.sort(key=lambda item: (item[0], item[1]))
    return [record for _, _, record in records]


def _ts(record) -> int:
    return struct.unpack_from("<Q", record.data)[0]


def _same_records(out: list, stream: list) -> bool:
    return sorted(map(id, out)) == sorted(map(id, stream))


@given(recordings(max_delay=W))
def test_skew_within_the_window_gives_time_order(stream):
    order = TimeOrder(SampleRecord, LostRecord, window_ns=W)
    out = list(order(stream))
    assert _same_records(out, stream) and order.late == 0
    stamps = [_ts(r) for r in out if type(r) is SampleRecord]
    assert stamps == sorted(stamps)
    for cpu in {r.cpu for r in stream}:  # each CPU's records, LOST ones too, keep their order
        mine = [id(r) for r in stream if r.cpu == cpu]  # from the CPU's first sample on
        first = next((i for i, r in enumerate(stream) if r.cpu == cpu
                      and type(r) is SampleRecord), len(stream))
        after = {id(r) for r in stream[first:] if r.cpu == cpu}
        assert [i for i in (id(r) for r in out) if i in after] == [i for i in mine if i in after]


@given(recordings(max_delay=4 * W), st.integers(1, 40))
def test_beyond_the_window_late_samples_come_at_once_and_are_counted(stream, max_records):
    order = TimeOrder(SampleRecord, LostRecord, window_ns=W, max_records=max_records)
    out = list(order(stream))
    assert _same_records(out, stream)
    newest = -1
    late = 0
    for record in out:
        if type(record) is not SampleRecord:
            continue
        ts = _ts(record)
        if ts < newest:
            late += 1  # released at once: older than one already released
        newest = max(newest, ts)
    assert late == order.late
    # the rest is in time order
    in_order = [_ts(r) for r in out if type(r) is SampleRecord]
    kept, top = [], -1
    for ts in in_order:
        if ts >= top:
            kept.append(ts)
            top = ts
    assert len(kept) == len(in_order) - order.late


def test_at_most_max_records_are_held():
    stream = [SampleRecord(0, struct.pack("<Q", 10 ** 12 - i), 0) for i in range(100)]
    consumed = 0

    def reading():
        nonlocal consumed
        for record in stream:
            consumed += 1
            yield record

    order = TimeOrder(SampleRecord, LostRecord, window_ns=WINDOW_NS, max_records=7)
    out = []
    for record in order(reading()):
        out.append(record)
        if consumed < len(stream):
            assert consumed - len(out) <= 7  # held back: never more than max_records
    assert len(out) == 100 and order.late == 100 - 8


def test_other_record_types_pass_at_once():
    """Process and container records (anything not a sample or a loss) are not held: what
    they describe is needed before the held events."""
    order = TimeOrder(SampleRecord, LostRecord)
    sample = SampleRecord(0, struct.pack("<Q", 5), 0)
    other = object()
    assert list(order([other, sample, "x"])) == [other, "x", sample] and order.late == 0


def _write(path: Path, stamps: list[tuple[int, int]]) -> None:
    with CaptureWriter(path, host=HOST, boot_time_ns=BOOT) as writer:
        for cpu, ts in stamps:
            writer.write_sample(cpu, encode(event(ts, 3, 7, "t", Arg(ArgType.INT_T, cpu))))


def test_decode_sorts_by_default_and_no_sort_keeps_file_order(tmp_path: Path):
    path = tmp_path / "skew.ewcap"
    # cpu 0's batch, then cpu 1's batch 100 ms older: what `record` writes
    stamps = [(0, 200_000_000 + i) for i in range(3)] + [(1, 100_000_000 + i) for i in range(3)]
    _write(path, stamps)
    for fmt in ("jsonl", "json", "table"):
        status, out, err = run("decode", "--format", fmt, "--utc", str(path))
        assert status == 0 and err == ""
        if fmt == "table":
            assert out.splitlines() == sorted(out.splitlines())
        else:
            events = jsonl(out) if fmt == "jsonl" else json.loads(out)
            assert [e["ts"] for e in events] == sorted(ts for _, ts in stamps)
    _, out, _ = run("decode", "--format", "jsonl", "--no-sort", str(path))
    assert [e["ts"] for e in jsonl(out)] == [ts for _, ts in stamps]


def test_decode_notes_samples_later_than_the_window(tmp_path: Path):
    path = tmp_path / "late.ewcap"
    # 1 s is released when 3 s is read; then a sample 0.5 s old comes: late, shown at once
    _write(path, [(0, WINDOW_NS), (0, 3 * WINDOW_NS), (1, WINDOW_NS // 2)])
    status, out, err = run("decode", "--format", "jsonl", str(path))
    assert status == 0
    assert [e["ts"] for e in jsonl(out)] == [WINDOW_NS, WINDOW_NS // 2, 3 * WINDOW_NS]
    assert err == (f"ebpfwire: {path}: note: 1 samples came more than 1 s after later ones in "
                   "the file and are shown out of time order (--no-sort: file order, see "
                   "decode --help)\n")


def test_the_real_workload_fixture_never_goes_back_in_time():
    status, out, _ = run("decode", "--format", "jsonl", str(FIXTURES / "real-workload.ewcap"))
    stamps = [e["ts"] for e in jsonl(out) if "ts" in e]
    assert status == 0 and stamps and stamps == sorted(stamps)


@given(st.data())
def test_reads_that_drain_every_ring_release_what_they_prove_complete(data):
    """A live reader reads every ring dry at times R and then says Drained(R - slack):
    a sample is committed less than ``slack`` after its ts, so none still to come can be
    older. Everything older is released before the next read, in time order, none late."""
    from ebpfwire.wire.order import Drained

    slack = W // 4
    pending = []   # (commit time, cpu, record)
    for cpu in range(data.draw(st.integers(1, 4))):
        ts = data.draw(st.integers(0, 5 * W))
        commit = 0
        for _ in range(data.draw(st.integers(0, 30))):
            ts += data.draw(st.integers(0, W // 2))
            commit = max(commit, ts + data.draw(st.integers(0, slack - 1)))
            pending.append((commit, cpu, SampleRecord(cpu, struct.pack("<Q", ts), 0)))
    pending.sort(key=lambda item: (item[1], item[0]))  # each ring in commit order
    reads = sorted(data.draw(st.lists(st.integers(0, 25 * W), max_size=12)))
    out: list = []

    def arrivals():
        left = pending
        for read_at in reads:
            got = [record for commit, _, record in left if commit < read_at]
            left = [item for item in left if item[0] >= read_at]
            yield from got
            yield Drained(read_at - slack)
            proven = [r for _, _, r in pending if _ts(r) < read_at - slack]
            assert sorted(map(id, proven)) == sorted(map(id, out[:len(proven)]))
        yield from (record for _, _, record in left)

    order = TimeOrder(SampleRecord, LostRecord, window_ns=100 * W)
    for record in order(arrivals()):
        out.append(record)
    stamps = [_ts(r) for r in out]
    assert stamps == sorted(stamps) and order.late == 0 and len(out) == len(pending)
