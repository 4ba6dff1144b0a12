"""The process context as a join (ebpfwire.columnar.rowcontext): the time order worked out
for blocks of records (Releases) is TimeOrder's, record for record; and the columns the
join gives are those of the enricher fed every sample in time order (the path the join
replaced, kept here as the reference), on generated streams of process lives: execs with
argv, forks, exits, pid reuse, reparenting, losses, PROCESS and CONTAINER records, events
out of ts order within the window, damaged samples, long quiet gaps."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_process import Stream

from ebpfwire import encode
from ebpfwire.capture import CaptureReader, CaptureStream, CaptureWriter, LostRecord, SampleRecord
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.columnar import rowcontext
from ebpfwire.columnar.arrow import batches, to_table
from ebpfwire.columnar.rowcontext import Answers, Releases, index_capture
from ebpfwire.process import enrich
from ebpfwire.process.enrich import Enricher
from ebpfwire.wire.layouts import get_layout
from ebpfwire.wire.order import TimeOrder
from ebpfwire.wire.strategies import argvs, damaged_event_bytes, wire_text

CONTEXT = ["process", "parent_process", "container_id"]
CID = "a" * 64

# --------------------------------------------------------------------------- time order


def _records(specs: list[tuple]) -> list:
    out = []
    for offset, (kind, cpu, ts, size) in enumerate(specs):
        if kind == "lost":
            out.append(LostRecord(cpu, 1, offset))
        else:
            data = ts.to_bytes(8, "little") + bytes(max(size - 8, 0)) if size >= 8 \
                else bytes(size)
            out.append(SampleRecord(cpu, data, offset))
    return out


def _time_order(records: list, order: TimeOrder) -> list[tuple[int, int]]:
    """(arrival, the arrival whose reading released it; len(records) at the end)."""
    pulled = [0]
    done = [False]

    def source():
        for record in records:
            pulled[0] += 1
            yield record
        done[0] = True

    return [(record.offset, len(records) if done[0] else pulled[0] - 1)
            for record in order(source())]


_TS = st.one_of(st.integers(0, 60), st.integers(2**64 - 40, 2**64 - 1))
_SPEC = st.one_of(
    st.tuples(st.just("sample"), st.integers(0, 2), _TS, st.integers(8, 40)),
    st.tuples(st.just("lost"), st.integers(0, 2), st.just(0), st.just(0)),
    st.tuples(st.just("short"), st.integers(0, 2), st.just(0), st.integers(0, 7)))


@settings(max_examples=400, deadline=None)
@given(specs=st.lists(_SPEC, max_size=80), window=st.integers(1, 20),
       max_records=st.integers(1, 12), max_bytes=st.integers(8, 300),
       cuts=st.lists(st.integers(1, 20), max_size=10))
def test_releases_are_the_time_orders(specs, window, max_records, max_bytes, cuts) -> None:
    """Late samples, LOST records and samples without a ts, equal and huge ts, both bounds,
    any block sizes: the same records released at the same arrivals."""
    records = _records(specs)
    order = TimeOrder(SampleRecord, LostRecord, window, max_records, max_bytes)
    expected = _time_order(records, order)
    releases = Releases(order)
    got: list[tuple[int, int]] = []
    start = 0
    for size in [*cuts, len(records)]:
        block = records[start:start + size]
        start += size
        if not block:
            continue
        data = [r.data if type(r) is SampleRecord else b"" for r in block]
        sizes = np.array([len(d) for d in data], np.int64)
        ts = np.array([int.from_bytes(d[:8], "little") if len(d) >= 8 else 0 for d in data],
                      np.uint64)
        is_sample = np.array([type(r) is SampleRecord for r in block])
        seqs, at = releases.add(ts, is_sample & (sizes >= 8),
                                np.array([r.cpu for r in block], np.int64), sizes)
        got += zip(seqs.tolist(), at.tolist(), strict=True)
    got += [(seq, len(records)) for seq in releases.end().tolist()]
    assert got == expected
    assert (releases.late, releases.early) == (order.late, order.early)


# --------------------------------------------------------------------------- the join


def reference(path: Path) -> list[tuple]:
    """The enricher given every sample in time order, as rowcontext did before the join:
    each sample's answer (as a row shows it) by file order."""
    with CaptureReader(path) as reader:
        header = reader.header
        answers = Answers()
        enricher: Enricher[int] = Enricher(get_layout(header.layout), header.arch,
                                           make=answers.make)
        by_offset = {}
        for record in CaptureStream(reader, on_context=enricher.feed).records():
            if type(record) is SampleRecord:
                by_offset[record.offset] = _row(answers.values[enricher.sample(record.data)])
            elif type(record) is LostRecord:
                enricher.lost(record.count)
    return [by_offset[offset] for offset in sorted(by_offset)]


def reference_raw(datas: list[bytes], layout: str) -> list[tuple]:
    answers = Answers()
    enricher: Enricher[int] = Enricher(get_layout(layout), "x86_64", make=answers.make)
    return [_row(answers.values[enricher.sample(data)]) for data in datas]


def _row(value: tuple) -> tuple:
    program, parent, container = value
    return (None if program is None else
            {"exe": program[0], "argv": list(program[1]), "source": program[2]},
            None if parent is None else {"exe": parent[0], "source": parent[1]}, container)


def _rows(table) -> list[tuple]:
    samples = table.filter(table["lost"].is_null()) if table.num_rows else table
    return [tuple(row[name] for name in CONTEXT) for row in samples.select(CONTEXT).to_pylist()]


def _batched(path: Path, max_rows: int) -> list[tuple]:
    return [row for batch in batches(path, max_rows=max_rows) for row in _rows(batch)]


@st.composite
def lives(draw, layout: str) -> tuple[list, list[bytes]]:
    """A capture's records as (kind, ...) items, and its samples: process lives from a
    small pool of pids (so pids are reused), each step one of exec, fork, plain event,
    exit, reparenting, a loss, a snapshot entry, a container record, a damaged sample, or
    a quiet gap past the retention of exited processes."""
    s = Stream()
    s.ts = 10**9
    comms = {1: "init"}
    parents = {1: 0}
    items: list[tuple] = []
    cwd = layout == "cwd"
    for _ in range(draw(st.integers(1, 60))):
        step = draw(st.sampled_from(["exec", "fork", "event", "event", "event", "exit",
                                     "reparent", "lost", "snapshot", "container", "damaged",
                                     "gap", "ns"]))
        pid = draw(st.sampled_from([1, 20, 21, 22, 23, 24]))
        ppid = parents.get(pid, draw(st.sampled_from([0, 1, 20, 21])))
        comm = comms.get(pid, draw(st.sampled_from(["sh", "cat", "init"])))
        kw: dict = {}
        if draw(st.integers(0, 5)) == 0:
            kw = {"pid_id": 7, "mnt_id": 8}
        if cwd:
            kw["extra"] = {"cwd": draw(st.sampled_from(["/", "/tmp", "/root"]))}
        events = []
        if step == "exec":
            argv = list(draw(argvs()))[:4]
            path = draw(st.sampled_from(["/bin/sh", "/bin/cat", "rel/prog"]))
            events = s.exec(pid, ppid, comm, path, argv,
                            retval=draw(st.sampled_from([0, 0, -2])),
                            bprm=draw(st.booleans()), **kw)
            comms[pid] = path.rsplit("/", 1)[-1][:15]
        elif step == "fork":
            child = draw(st.sampled_from([20, 21, 22, 23, 24]))
            parents[child] = pid
            comms[child] = comm
            events = [s.openat(child, pid, comm, **kw)]
        elif step in ("event", "ns"):
            events = [s.openat(pid, ppid, draw(st.sampled_from([comm, comm, "other"])),
                               draw(wire_text(12)), **kw)]
        elif step == "exit":
            events = [s.exit(pid, ppid, comm, **kw)]
            parents.pop(pid, None)
            comms.pop(pid, None)
        elif step == "reparent":
            parents[pid] = draw(st.sampled_from([1, 20, 21]))
            events = [s.openat(pid, parents[pid], comm, **kw)]
        elif step == "lost":
            items.append(("lost", draw(st.integers(1, 5))))
        elif step == "snapshot":
            items.append(("process", ProcessInfo(
                pid, ppid, pid, 0, 5, 6, s.ts - 10, comm, draw(st.sampled_from(["", "/bin/x"])),
                "/", tuple(draw(argvs()))[:3], draw(st.sampled_from(["", CID])))))
        elif step == "container":
            items.append(("container", ContainerInfo(
                draw(st.sampled_from([0, 7])), draw(st.sampled_from([0, 8])),
                draw(st.sampled_from(["", CID])), draw(st.sampled_from(["host", "docker"])))))
        elif step == "damaged":
            items.append(("sample", draw(damaged_event_bytes(layout))))
        elif step == "gap":
            s.ts += 40 * 10**9
        items += [("sample", encode(event, layout=layout)) for event in events]
    samples = [item[1] for item in items if item[0] == "sample"]
    return items, samples


def write(path: Path, items: list, layout: str, rng: random.Random) -> Path:
    """The items as a capture: samples on two CPUs, a CPU's batch now and then written
    before the other's (out of ts order within the window)."""
    with CaptureWriter(path, layout=layout, mode="replace") as writer:
        held: list = []
        for kind, item in items:
            if kind == "sample":
                held.append(item)
                if len(held) >= rng.randint(1, 6):
                    rng.shuffle(held)
                    for data in held:
                        writer.write_sample(rng.randint(0, 1), data)
                    held = []
            elif kind == "lost":
                writer.write_lost(rng.randint(0, 1), item)
            elif kind == "process":
                writer.write_process(item)
            else:
                writer.write_container(item)
        for data in held:
            writer.write_sample(0, data)
    return path


@pytest.mark.parametrize("layout", ["classic", "cwd"])
@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_the_join_answers_as_the_enricher_given_every_sample(tmp_path: Path, layout: str,
                                                             data) -> None:
    items, samples = data.draw(lives(layout))
    seed = data.draw(st.integers(0, 2**32))
    path = write(tmp_path / "lives.ewcap", items, layout, random.Random(seed))
    expected = reference(path)
    assert _rows(to_table(path)) == expected
    max_rows = data.draw(st.integers(1, 9))
    assert _batched(path, max_rows) == expected
    index = index_capture(path)
    assert [_row(index.values[i]) for i in index.ids.tolist()] == expected
    assert _rows(to_table(samples, layout=layout)) == reference_raw(samples, layout)


def test_the_join_answers_as_the_enricher_when_its_caches_are_cleared(
        tmp_path: Path, monkeypatch) -> None:
    """The enricher's kept answers cleared when full (every pid forgotten at once) and a
    stream's answers forgotten between batches: still the enricher's answers."""
    monkeypatch.setattr(enrich, "_CACHE_LIMIT", 3)
    monkeypatch.setattr(rowcontext, "KEEP_ANSWERS", 4)
    rng = random.Random(5)
    s = Stream()
    items: list = [("container", ContainerInfo(7, 8, CID, "docker"))]
    for n in range(400):
        pid = 30 + rng.randrange(12)
        kw = {"pid_id": 7, "mnt_id": 8} if pid % 3 == 0 else {}
        if n % 37 == 0:
            items += [("sample", encode(e)) for e in
                      s.exec(pid, 1, "sh", "/bin/cat", ["cat", str(n)], **kw)]
        elif n % 53 == 0:
            items.append(("sample", encode(s.exit(pid, 1, "cat", **kw))))
        elif n % 71 == 0:
            items.append(("container", ContainerInfo(7, 8, CID[::-1], "docker")))
        else:
            items.append(("sample", encode(s.openat(pid, 1, "cat", str(n), **kw))))
    path = write(tmp_path / "many.ewcap", items, "classic", rng)
    expected = reference(path)
    assert len({str(row) for row in expected}) > 10
    for max_rows in (5, 64, 1000):
        assert _batched(path, max_rows) == expected


def test_the_realistic_corpus_sample_is_answered_as_before(tmp_path: Path) -> None:
    """A slice of the benchmark's corpus (many process lives at once, every pid new)."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import realistic

    path = tmp_path / "realistic.ewcap"
    realistic.write(path, 20_000, 3)
    assert _rows(to_table(path)) == reference(path)


def test_the_time_order_looks_at_each_record_a_few_times(monkeypatch) -> None:
    """A quiet capture (samples 0.6 s apart: the window sweeps at nearly every one) and a
    LOST record after each sample: the block's work stays linear in its records, and its
    sweeps are worked out together, not one pass of numpy calls each (that made a quiet
    capture's table 15 times slower)."""
    looked, passes = _counted(monkeypatch)
    count = 20_000
    ts = np.arange(count, dtype=np.uint64) * np.uint64(600_000_000)
    has_ts = np.arange(count) % 2 == 0        # every other record a LOST one
    releases = Releases(TimeOrder(SampleRecord, LostRecord))
    released, _ = releases.add(ts, has_ts, np.zeros(count, np.int64),
                               np.where(has_ts, 80, 0))
    assert len(released) + len(releases.end()) == count
    assert looked[0] <= 4 * count
    assert passes[0] <= 20


def test_a_quiet_captures_table_takes_few_passes_of_the_time_order(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """to_table of a quiet capture (a sample every 0.6 s, a sweep at nearly every one):
    a handful of passes over the blocks read, where there was one per sample."""
    s = Stream()
    path = tmp_path / "quiet.ewcap"
    count = 3_000
    with CaptureWriter(path, layout="classic") as writer:
        for k in range(count):
            s.ts += 600_000_000
            writer.write_sample(k % 2, encode(s.openat(20 + k % 7, 1, "cat")))
    looked, passes = _counted(monkeypatch)
    table = to_table(path)
    assert table.num_rows == count
    assert _rows(table) == reference(path)
    assert passes[0] <= 20
    assert looked[0] <= 4 * count


def _counted(monkeypatch) -> tuple[list[int], list[int]]:
    """Count the records the time order looks at, and its passes over them."""
    looked, passes = [0], [0]
    segment = Releases._segment

    def counted(self, ts, *rest):
        looked[0] += len(ts)
        passes[0] += 1
        return segment(self, ts, *rest)

    monkeypatch.setattr(Releases, "_segment", counted)
    return looked, passes
