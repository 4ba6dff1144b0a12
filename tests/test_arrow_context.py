"""The process context columns of the Arrow tables, the Parquet export and the Dask reader:
row for row what ``decode --format jsonl`` ends each line with, whatever the batching, the
byte ranges or the workers; ``context=False`` / ``export --raw`` give the old columns."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_cli_kubearmor import CID, context_capture
from test_process import Stream

from ebpfwire import encode
from ebpfwire.capture import (
    CaptureReader,
    CaptureWriter,
    ContainerRecord,
    HostInfo,
    LostRecord,
    ProcessRecord,
    SampleRecord,
)
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.cli import main
from ebpfwire.columnar.arrow import batches, schema, to_table
from ebpfwire.columnar.export import export_parquet
from ebpfwire.columnar.rowcontext import FIELDS, index_capture
from ebpfwire.process.enrich import Enricher
from ebpfwire.wire.layouts import get_layout
from ebpfwire.wire.order import TimeOrder

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CONTEXT = [name for name, _ in FIELDS]
CLEAN = sorted(p for p in FIXTURES.glob("*.ewcap") if p.stem != "damaged")


def run(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(arg) for arg in argv])
    return status, out.getvalue(), err.getvalue()


def decoded(path: Path, *options: str) -> list[tuple]:
    """The context of each ``decode --format jsonl`` line (a LOST line: all None)."""
    status, out, err = run("decode", "--format", "jsonl", *options, path)
    assert status == 0 and (err == "" or options)
    lines = [json.loads(line) for line in out.splitlines()]
    return [(line.get("process"), line.get("parent_process"), line.get("container_id"))
            for line in lines]


def in_time_order(table: pa.Table, path: Path) -> list[tuple]:
    """The table's context columns, its rows (file order) put in decode's order."""
    with CaptureReader(path) as reader:
        records = [r for r in reader if type(r) in (SampleRecord, LostRecord)]
    assert len(records) == table.num_rows
    row_of = {record.offset: row for row, record in enumerate(records)}
    rows = table.select(CONTEXT).to_pylist()
    return [tuple(rows[row_of[record.offset]][name] for name in CONTEXT)
            for record in TimeOrder(SampleRecord, LostRecord)(records)]


def busy_capture(path: Path, rounds: int = 700, gap_ns: int = 0) -> Path:
    """A version-2 capture big enough for several byte ranges: bash (from the snapshot)
    runs sh which runs cat, round after round (``gap_ns`` apart), every third round in a
    docker container; the CPUs' batches are written out of time order and a loss now and
    then."""
    s = Stream()
    s.ts = 10**9
    events = []
    for n in range(rounds):
        s.ts += gap_ns
        ns = {"pid_id": 11, "mnt_id": 12} if n % 3 == 0 else {}
        sh, cat = 1000 + 2 * n, 1001 + 2 * n
        events += s.exec(sh, 100, "bash", "/bin/sh", ["sh", "-c", f"cat /tmp/{n}"], **ns)
        events += s.exec(cat, sh, "sh", "/bin/cat", ["cat", f"/tmp/{n}"], **ns)
        events += [s.openat(cat, sh, "cat", f"/tmp/{n}", **ns), s.openat(100, 1, "bash"),
                   s.exit(cat, sh, "cat", **ns), s.exit(sh, 100, "sh", **ns)]
    with CaptureWriter(path, host=HostInfo("6.18.0", "busy", 2),
                       boot_time_ns=1_764_000_000 * 10**9) as writer:
        writer.write_process(ProcessInfo(100, 1, 100, 0, 5, 6, 500, "bash", "/usr/bin/bash",
                                         "/root", ("-bash",), ""))
        writer.write_container(ContainerInfo(0, 0, "", "host"))
        writer.write_container(ContainerInfo(11, 12, CID, "docker"))
        for block in range(0, len(events), 32):   # cpu 1's batch written before cpu 0's
            for cpu, part in ((1, events[block + 16:block + 32]), (0, events[block:block + 16])):
                for event in part:
                    writer.write_sample(cpu, encode(event))
            if block % 1600 == 0:
                writer.write_lost(1, 3)
    return path


@pytest.fixture(scope="module")
def busy(tmp_path_factory) -> Path:
    return busy_capture(tmp_path_factory.mktemp("busy") / "busy.ewcap")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return context_capture(tmp_path_factory.mktemp("small") / "ctx.ewcap")


# --------------------------------------------------------------------------- to_table


@pytest.mark.parametrize("name", ["real-workload", "real-namespaces"])
def test_real_captures_match_the_enriched_goldens(name: str) -> None:
    path = FIXTURES / f"{name}.ewcap"
    golden = [json.loads(line) for line in
              (FIXTURES / f"{name}.enriched.jsonl").read_text().splitlines()]
    got = in_time_order(to_table(path), path)
    assert got == [(g["process"], g["parent_process"], g["container_id"]) for g in golden]
    assert any(process["source"] == "exec" for process, _, _ in got)


@pytest.mark.parametrize("capture", CLEAN, ids=lambda p: p.stem)
def test_every_clean_fixture_matches_decode(capture: Path) -> None:
    assert in_time_order(to_table(capture), capture) == decoded(capture)


def test_damaged_samples_are_answered_as_lenient_decode_answers_them() -> None:
    capture = FIXTURES / "damaged.ewcap"
    table = to_table(capture)
    assert table["errors"].null_count < table.num_rows   # damaged rows are there
    assert in_time_order(table, capture) == decoded(capture, "--lenient")


def test_a_capture_with_context_records_matches_decode(small: Path, busy: Path) -> None:
    for path in (small, busy):
        got = in_time_order(to_table(path), path)
        assert got == decoded(path)
    table = to_table(small).to_pylist()
    [shadow] = [row for row in table if row["retval"] == -13]
    assert shadow["process"] == {"exe": "/bin/cat", "argv": ["cat", "/etc/shadow"],
                                 "source": "exec"}
    assert shadow["parent_process"] == {"exe": "/bin/sh", "source": "exec"}
    assert shadow["container_id"] == CID
    [lost] = [row for row in table if row["lost"] is not None]
    assert [lost[name] for name in CONTEXT] == [None, None, None]
    busy_rows = to_table(busy).select(["host_pid", "lost", *CONTEXT]).to_pylist()
    host = [row for row in busy_rows if row["host_pid"] == 100]
    assert host and all(row["container_id"] == "" for row in host)
    assert all(row["process"]["source"] == "snapshot" for row in host)


def test_answers_are_given_in_time_order_not_file_order(busy: Path) -> None:
    """The busy capture's batches are written out of time order: answering its samples in
    file order would name other programs, so the check above can tell."""
    layout = get_layout("classic")
    enricher: Enricher[str] = Enricher(layout, "x86_64")
    with CaptureReader(busy, on_context=enricher.feed) as reader:
        file_order = [enricher.sample(r.data) for r in reader if type(r) is SampleRecord]
    table = to_table(busy)
    rows = table.filter(pa.compute.is_null(table["lost"]))
    in_file_order = [json.loads("{" + fields[2:] + "}") for fields in file_order]
    assert [{name: row[name] for name in CONTEXT} for row in rows.to_pylist()] != in_file_order


def test_a_version_1_capture_invents_nothing() -> None:
    table = to_table(FIXTURES / "real-workload.ewcap")
    assert table["container_id"].null_count == table.num_rows
    for process in table["process"].to_pylist():
        assert (process["exe"] is None) == (process["source"] == "comm")
        assert process["source"] in ("exec", "comm", "fork")
        if process["source"] == "comm":
            assert process["argv"] == []


def test_batches_of_any_size_give_the_same_columns(busy: Path) -> None:
    whole = to_table(busy).select(CONTEXT)
    for max_rows in (1, 7, 1000):
        parts = list(batches(str(busy), max_rows=max_rows))
        assert all(len(part) <= max_rows for part in parts)
        assert pa.Table.from_batches(parts).select(CONTEXT).equals(whole)


def test_a_stream_forgets_the_answers_its_rows_no_longer_need(tmp_path: Path,
                                                              monkeypatch) -> None:
    """Nearly every process life is a new answer: a stream keeps those of rows not yet built
    (the reorder window's) and of the enricher's caches only, and the columns are the same
    as when it keeps all. Rounds 0.2 s apart: the 1 s window holds about ten lives."""
    from ebpfwire.columnar import rowcontext

    busy = busy_capture(tmp_path / "slow.ewcap", gap_ns=200_000_000)
    whole = to_table(busy).select(CONTEXT)
    assert len(set(map(str, whole.column("process").to_pylist()))) > 1000
    monkeypatch.setattr(rowcontext, "KEEP_ANSWERS", 8)
    kept: list[int] = []
    forget = rowcontext.Answers.forget

    def counted(self, held):
        kept_now = forget(self, held)
        kept.append(len(self.values))
        return kept_now

    monkeypatch.setattr(rowcontext.Answers, "forget", counted)
    for max_rows in (7, 1000):
        kept.clear()
        parts = list(batches(str(busy), max_rows=max_rows))
        assert pa.Table.from_batches(parts).select(CONTEXT).equals(whole)
        assert max(kept) < 100, max(kept)


def test_the_index_answers_as_the_stream_and_cuts_into_ranges(busy: Path) -> None:
    index = index_capture(busy)
    with CaptureReader(busy) as reader:
        records = [r for r in reader if type(r) in (SampleRecord, LostRecord)]
        assert not any(type(r) in (ProcessRecord, ContainerRecord) for r in records)
    samples = [r.offset for r in records if type(r) is SampleRecord]
    assert index.offsets.tolist() == samples and index.offsets.dtype == np.uint64
    assert index.ids.dtype == np.int32 and index.ids.nbytes + index.offsets.nbytes == \
        12 * len(samples)
    whole = to_table(busy)
    assert to_table(busy, context=index).equals(whole)
    middle = samples[len(samples) // 2]
    part = index.within(samples[10], middle)
    assert part.offsets.tolist() == samples[10:len(samples) // 2]
    assert len(part.values) <= len(index.values)
    assert (part.ids_at([samples[0], middle]) == -1).all()
    with CaptureReader(busy, start=samples[10], end=middle) as reader:
        got = to_table(reader, context=part)
    rows = whole.filter(pa.compute.is_null(whole["lost"])).slice(10, len(part.offsets))
    assert got.filter(pa.compute.is_null(got["lost"])).select(CONTEXT).equals(
        rows.select(CONTEXT))


def test_raw_samples_are_answered_in_the_order_given(small: Path) -> None:
    with CaptureReader(small) as reader:
        datas = [r.data for r in reader if type(r) is SampleRecord]
    table = to_table(datas)
    processes = table["process"].to_pylist()
    # no snapshot: bash is known by its comm only, and nothing says which container
    assert processes[0] == {"exe": None, "argv": [], "source": "comm"}
    assert {"exe": "/bin/cat", "argv": ["cat", "/etc/shadow"], "source": "exec"} in processes
    assert table["container_id"].null_count == table.num_rows
    cut = to_table([datas[0][:20]])
    assert [cut[name][0].as_py() for name in CONTEXT] == [None, None, None]


OLD_CLASSIC = ["ts", "time", "cpu", "event_id", "event", "pid_id", "mnt_id", "host_ppid",
               "host_pid", "ppid", "pid", "uid", "comm", "retval", "errno", "argnum", "args",
               "path", "fd", "argv", "family", "addr", "port", "flags", "lost", "errors", "raw"]


def test_context_false_gives_the_old_columns(busy: Path) -> None:
    assert schema("classic", context=False).names == OLD_CLASSIC
    for layout in ("classic", "hash"):
        with_context, without = schema(layout), schema(layout, context=False)
        assert with_context.names == without.names + CONTEXT
        assert "process" not in without.names
    table = to_table(busy, context=False)
    assert table.schema == schema("classic", context=False)
    assert table.equals(to_table(busy).drop(CONTEXT))
    assert to_table([], context=False).schema == schema("classic", context=False)


# --------------------------------------------------------------------------- export, dask


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("parts", [False, True])
def test_export_in_ranges_gives_the_columns_of_to_table(tmp_path: Path, busy: Path,
                                                        small: Path, jobs: int,
                                                        parts: bool) -> None:
    paths = [small, busy]
    out = tmp_path / "out.parquet"
    export_parquet(paths, out, jobs=jobs, parts=parts, split_bytes=64 << 10)
    files = sorted(out.iterdir()) if parts else [out]
    assert busy.stat().st_size > 4 * (64 << 10)
    got = pa.concat_tables(pq.read_table(f) for f in files)
    want = to_table(paths)
    assert got.schema.names == want.schema.names
    assert got.select(CONTEXT).to_pylist() == want.select(CONTEXT).to_pylist()


def test_export_cli_raw_leaves_the_columns_out(tmp_path: Path, small: Path) -> None:
    status, _, err = run("export", "--jobs", "1", small, "-o", tmp_path / "ctx.parquet")
    assert status == 0, err
    status, _, err = run("export", "--raw", "--jobs", "2", small, "-o", tmp_path / "raw.parquet")
    assert status == 0, err
    rich, raw = pq.read_table(tmp_path / "ctx.parquet"), pq.read_table(tmp_path / "raw.parquet")
    assert rich.schema.names == schema("classic").names
    assert raw.schema.names == schema("classic", context=False).names
    assert rich.select(CONTEXT).to_pylist() == to_table(small).select(CONTEXT).to_pylist()


def test_duckdb_counts_per_program_are_decodes(tmp_path: Path, busy: Path) -> None:
    out = tmp_path / "busy.parquet"
    export_parquet([busy], out, jobs=2, split_bytes=64 << 10)
    rows = duckdb.sql(f"SELECT process.exe, container_id, count(*) FROM read_parquet('{out}') "
                      "WHERE lost IS NULL GROUP BY 1, 2").fetchall()
    want = Counter((process["exe"], container) for process, _, container in decoded(busy)
                   if process is not None)
    assert {(exe, container): count for exe, container, count in rows} == dict(want)
    assert want[("/bin/cat", CID)] > 0 and want[("/bin/cat", "")] > 0


def test_dask_partitions_give_the_columns_of_to_table(busy: Path) -> None:
    from ebpfwire.columnar.dask import read_captures

    frame = read_captures(busy, split_bytes=64 << 10)
    assert frame.npartitions > 4
    got = pa.Table.from_pandas(frame.compute(scheduler="sync"), preserve_index=False)
    assert got.select(CONTEXT).to_pylist() == to_table(busy).select(CONTEXT).to_pylist()
    raw = read_captures(busy, split_bytes=64 << 10, context=False)
    assert list(raw.columns) == schema("classic", context=False).names
