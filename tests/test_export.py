"""export_parquet: the Parquet it writes is arrow.to_table of the same captures, row for row,
whatever the number of workers, one file or parts, damaged input or filters."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from corpus import FIXTURES, repeated

from ebpfwire.capture import CaptureReader
from ebpfwire.columnar import arrow
from ebpfwire.columnar.export import ExportError, export_parquet
from ebpfwire.wire.filter import EventFilter

CLEAN = [FIXTURES / "real-workload.ewcap", FIXTURES / "real-namespaces.ewcap"]
DAMAGED = [FIXTURES / "damaged.ewcap", *CLEAN]


def read_back(out: Path, parts: bool) -> pa.Table:
    if not parts:
        return pq.read_table(out)
    files = sorted(out.iterdir())
    assert all(re.fullmatch(r"part-\d{5}\.parquet", f.name) for f in files)
    return pa.concat_tables([pq.read_table(f) for f in files])


def assert_same_rows(got: pa.Table, want: pa.Table) -> None:
    assert got.schema.equals(want.schema, check_metadata=False)
    assert got.num_rows == want.num_rows
    assert got.to_pylist() == want.to_pylist()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """real-workload's samples 40 times: enough bytes for several ranges."""
    return repeated(FIXTURES / "real-workload.ewcap",
                    tmp_path_factory.mktemp("big") / "big.ewcap", 40)


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("parts", [False, True])
@pytest.mark.parametrize("inputs", ["clean", "damaged"])
def test_export_equals_to_table(tmp_path, big, jobs, parts, inputs):
    paths = (CLEAN if inputs == "clean" else DAMAGED) + [big]
    out = tmp_path / "out.parquet"
    summary = export_parquet(paths, out, jobs=jobs, parts=parts, split_bytes=64 << 10,
                             row_group_rows=1000)
    want = arrow.to_table(paths)
    assert_same_rows(read_back(out, parts), want)
    lost = want.column("lost")
    assert summary.lost == (pc.sum(lost).as_py() or 0)
    assert summary.events == want.num_rows - (len(lost) - lost.null_count)
    skipped = 0
    for path in paths:
        with CaptureReader(path) as reader:
            list(reader)
            skipped += len(reader.damage)
    errors = want.column("errors")
    assert summary.damaged == len(errors) - errors.null_count + skipped
    if inputs == "damaged":
        assert summary.lost == 17 and summary.damaged > 0
    assert list(summary.files) == ([str(out)] if not parts
                                   else [str(f) for f in sorted(out.iterdir())])
    assert [p for p in os.listdir(tmp_path) if p != "out.parquet"] == []  # no temporaries


def test_row_groups_are_bounded_and_zstd(tmp_path, big):
    out = tmp_path / "out.parquet"
    export_parquet([big], out, jobs=1, row_group_rows=500)
    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == 40 * 147
    assert meta.num_row_groups >= 40 * 147 // 500
    assert all(meta.row_group(i).num_rows <= 500 for i in range(meta.num_row_groups))
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def expected_filtered(table: pa.Table, keep) -> list[dict]:
    return [row for row in table.to_pylist() if row["lost"] is not None or keep(row)]


@pytest.mark.parametrize(("keep", "test", "jobs"), [
    (EventFilter(events=frozenset({"openat", "connect"})),
     lambda r: r["event"] in ("openat", "connect"), 1),
    (EventFilter(failed=True), lambda r: r["retval"] is not None and r["retval"] < 0, 1),
    (EventFilter(comm="cat"), lambda r: r["comm"] == "cat", 1),
    (EventFilter(pid=1), lambda r: 1 in (r["pid"], r["host_pid"]), 1),
    (EventFilter(events=frozenset({"openat"}), failed=True, comm="python3"),
     lambda r: r["event"] == "openat" and r["retval"] < 0 and r["comm"] == "python3", 2),
])
def test_filters_keep_the_rows_they_name_and_every_lost_row(tmp_path, keep, test, jobs):
    out = tmp_path / "out.parquet"
    summary = export_parquet(DAMAGED, out, jobs=jobs, keep=keep)
    got = pq.read_table(out).to_pylist()
    want = expected_filtered(arrow.to_table(DAMAGED), test)
    assert got == want
    assert any(row["lost"] is None for row in got)  # the filter kept some events
    assert summary.events == sum(row["lost"] is None for row in got)
    assert summary.lost == 17


def test_existing_output_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "out.parquet"
    out.write_bytes(b"keep me")
    with pytest.raises(ExportError, match="already exists"):
        export_parquet(CLEAN, out, jobs=1)
    assert out.read_bytes() == b"keep me"
    export_parquet(CLEAN, out, jobs=1, force=True)
    assert pq.read_table(out).num_rows == arrow.to_table(CLEAN).num_rows


def test_a_link_at_the_output_is_never_followed(tmp_path):
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    link = tmp_path / "out.parquet"
    link.symlink_to(target)
    with pytest.raises(ExportError, match="already exists"):
        export_parquet(CLEAN, link, jobs=1)
    export_parquet(CLEAN, link, jobs=1, force=True)  # replaces the link, not its target
    assert target.read_bytes() == b"keep me"
    assert not link.is_symlink() and pq.read_table(link).num_rows > 0


def test_parts_directory_is_refused_then_replaced_with_force(tmp_path):
    out = tmp_path / "parts"
    export_parquet(CLEAN, out, jobs=1, parts=True)
    first = sorted(os.listdir(out))
    with pytest.raises(ExportError, match="already exists"):
        export_parquet(CLEAN, out, jobs=1, parts=True)
    export_parquet(CLEAN[:1], out, jobs=1, parts=True, force=True)
    assert len(os.listdir(out)) < len(first)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="other files"):
        export_parquet(CLEAN, out, jobs=1, parts=True, force=True)
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("parts", [False, True])
def test_strict_failure_leaves_nothing_behind(tmp_path, jobs, parts):
    out = tmp_path / "out.parquet"
    with pytest.raises(ExportError, match="damaged.ewcap"):
        export_parquet(DAMAGED, out, jobs=jobs, parts=parts, strict=True)
    assert os.listdir(tmp_path) == []


def test_bad_inputs_raise_one_clear_error(tmp_path):
    out = tmp_path / "out.parquet"
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    cases = [
        ([tmp_path / "missing.ewcap"], "missing.ewcap: no such file"),
        ([text], "notes.txt: not a readable capture: offset 0"),
        ([tmp_path], "is a directory"),
        ([FIXTURES / "real-workload.ewcap", FIXTURES / "layout-cwd.ewcap"],
         "one context layout.*classic.*cwd"),
        ([], "no capture"),
    ]
    for paths, message in cases:
        with pytest.raises(ExportError, match=message):
            export_parquet(paths, out, jobs=1)
    with pytest.raises(ExportError, match="unknown layout|layout"):
        export_parquet(CLEAN, out, jobs=1, layout="no-such-layout")
    with pytest.raises(ExportError, match="no such directory"):
        export_parquet(CLEAN, tmp_path / "nowhere" / "out.parquet", jobs=1)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_progress_reaches_the_total(tmp_path, big):
    seen: list[tuple[int, int, int]] = []
    export_parquet([big], tmp_path / "out.parquet", jobs=2, split_bytes=64 << 10,
                   progress=lambda done, total, events: seen.append((done, total, events)))
    with CaptureReader(big) as reader:
        records = os.path.getsize(big) - reader.start  # the bytes after the file header
    assert seen[-1] == (records, records, 40 * 147)
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)


@pytest.mark.parametrize("parts", [False, True])
def test_spawned_workers_give_the_same_rows(tmp_path, big, monkeypatch, parts):
    """The start method is fork only in a single-threaded caller; spawn must work as well."""
    from ebpfwire.columnar import export

    monkeypatch.setattr(export, "_start_method", lambda: "spawn")
    out = tmp_path / "out.parquet"
    export_parquet([big, *DAMAGED], out, jobs=2, parts=parts, split_bytes=64 << 10)
    assert_same_rows(read_back(out, parts), arrow.to_table([big, *DAMAGED]))


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize("parts", [False, True])
def test_nothing_kept_still_gives_valid_parquet_with_the_columns(tmp_path, big, jobs, parts):
    out = tmp_path / "out.parquet"
    summary = export_parquet([big, *CLEAN], out, jobs=jobs, parts=parts,
                             split_bytes=64 << 10, keep=EventFilter(comm="no-such-task"))
    table = read_back(out, parts)
    assert table.num_rows == 0 and summary.events == 0
    assert {"event", "comm", "errors", "lost"} <= set(table.column_names)
    assert len(summary.files) == 1


@pytest.mark.parametrize("parts", [False, True])
def test_a_stop_while_the_temporary_output_is_made_leaves_nothing(tmp_path, monkeypatch, parts):
    """A signal can reach the interpreter between the output's creation and the line that
    takes its name (another thread took it): the name is chosen first, so it is removed."""
    from ebpfwire.columnar import export

    made = export._new_dir if parts else export._new_file

    def interrupted(path):
        made(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_new_dir" if parts else "_new_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_parquet([FIXTURES / "real-workload.ewcap"], tmp_path / "out.parquet", jobs=1,
                       parts=parts)
    assert os.listdir(tmp_path) == []
