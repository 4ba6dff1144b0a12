"""``ebpfwire export``: the Parquet read back equals arrow.to_table; outputs refused, replaced,
never left half-made; bad input is one line and exit status 2."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from corpus import FIXTURES, repeated

from ebpfwire.cli import main
from ebpfwire.columnar import arrow

CLEAN = [FIXTURES / "real-workload.ewcap", FIXTURES / "real-namespaces.ewcap"]
DAMAGED = FIXTURES / "damaged.ewcap"
SUMMARY = re.compile(r"ebpfwire: exported ([\d,]+) events \(([\d,]+) lost, ([\d,]+) damaged\) in "
                     r"\d+\.\d\d s to (.+)\n")


def run(*argv: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def assert_same_rows(got: pa.Table, want: pa.Table) -> None:
    assert got.schema.equals(want.schema, check_metadata=False)
    assert got.num_rows == want.num_rows and got.to_pylist() == want.to_pylist()


def export(*argv: str | Path) -> tuple[int, int, int, str]:
    """Run export, expecting success and only the summary line: (events, lost, damaged, to)."""
    status, out, err = run("export", *argv)
    assert status == 0 and out == "", err
    match = SUMMARY.fullmatch(err)  # no progress off a terminal: the summary line only
    assert match, err
    events, lost, damaged = (int(match[i].replace(",", "")) for i in (1, 2, 3))
    return events, lost, damaged, match[4]


def leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith("."))


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """real-workload's samples 60 times: enough bytes for several ranges per worker."""
    return repeated(FIXTURES / "real-workload.ewcap",
                    tmp_path_factory.mktemp("big") / "big.ewcap", 60)


def test_export_reads_back_as_to_table(tmp_path: Path):
    out = tmp_path / "run.parquet"
    events, lost, damaged, where = export(*CLEAN, "-o", out)
    want = arrow.to_table(CLEAN)
    assert_same_rows(pq.read_table(out), want)
    assert (events, lost, damaged, where) == (want.num_rows, 0, 0, str(out))
    assert os.stat(out).st_mode & 0o777 == 0o600 and leftovers(tmp_path) == []


@pytest.mark.parametrize("parts", [False, True])
def test_two_jobs_give_the_same_rows(tmp_path: Path, big: Path, parts: bool):
    out = tmp_path / "big.parquet"
    events, _, _, where = export(big, *CLEAN, "-o", out, "--jobs", "2",
                                 *(["--parts"] if parts else []))
    want = arrow.to_table([big, *CLEAN])
    if parts:
        files = sorted(out.iterdir())
        assert all(re.fullmatch(r"part-\d{5}\.parquet", f.name) for f in files)
        got = pa.concat_tables([pq.read_table(f) for f in files])
    else:
        got = pq.read_table(out)
    assert_same_rows(got, want)
    assert events == want.num_rows == 60 * 147 + 184
    assert where == (f"{out} ({len(files)} parts)" if parts else str(out))


def test_lenient_keeps_damaged_samples_as_rows_with_errors(tmp_path: Path):
    out = tmp_path / "damaged.parquet"
    events, lost, damaged, _ = export(DAMAGED, "-o", out, "--lenient")
    got = pq.read_table(out)
    assert_same_rows(got, arrow.to_table(DAMAGED))
    errors = got.column("errors")
    assert len(errors) - errors.null_count == 4  # the 4 damaged samples, each a row
    # 2 events decode cleanly, 4 with damage; 17 samples lost; 4 samples + 2 stretches
    assert (events, lost, damaged) == (6, 17, 6)


def test_strict_stops_at_damage_and_writes_nothing(tmp_path: Path):
    out = tmp_path / "damaged.parquet"
    status, _, err = run("export", DAMAGED, "-o", out)
    assert status == 2 and err.count("\n") == 1
    assert "sample at file offset 203" in err and "lenient export keeps damaged samples" in err
    assert os.listdir(tmp_path) == []


def test_filters_keep_matching_rows_and_every_lost_row(tmp_path: Path):
    out = tmp_path / "f.parquet"
    export(DAMAGED, *CLEAN, "-o", out, "--lenient", "--event", "openat,connect", "--failed")
    want = arrow.to_table([DAMAGED, *CLEAN])
    test = pc.and_(pc.is_in(pc.cast(want.column("event"), pa.string()),
                            pa.array(["openat", "connect"])),
                   pc.less(want.column("retval"), 0))
    want = want.filter(pc.or_(pc.is_valid(want.column("lost")), pc.fill_null(test, False)))
    got = pq.read_table(out)
    assert_same_rows(got, want)
    assert 0 < got.num_rows < 100 and pc.sum(got.column("lost")).as_py() == 17


def test_an_existing_output_is_refused_and_kept(tmp_path: Path):
    out = tmp_path / "run.parquet"
    out.write_bytes(b"keep me")
    status, _, err = run("export", CLEAN[0], "-o", out)
    assert status == 2 and err == f"ebpfwire: {out}: already exists; --force replaces it\n"
    assert out.read_bytes() == b"keep me" and leftovers(tmp_path) == []


def test_a_link_is_refused_and_force_replaces_the_link_not_its_target(tmp_path: Path):
    target, out = tmp_path / "target", tmp_path / "run.parquet"
    target.write_bytes(b"keep me")
    out.symlink_to(target)
    status, _, err = run("export", CLEAN[0], "-o", out)
    assert status == 2 and "is a symbolic link" in err
    export(CLEAN[0], "-o", out, "--force")
    assert not out.is_symlink() and target.read_bytes() == b"keep me"
    assert_same_rows(pq.read_table(out), arrow.to_table(CLEAN[0]))


def test_force_replaces_an_existing_file(tmp_path: Path):
    out = tmp_path / "run.parquet"
    export(CLEAN[0], "-o", out)
    export(CLEAN[1], "-o", out, "--force")
    assert_same_rows(pq.read_table(out), arrow.to_table(CLEAN[1]))
    assert leftovers(tmp_path) == []


def test_an_unwritable_directory_is_one_line_and_exit_2(tmp_path: Path):
    if os.geteuid() == 0:  # root writes anywhere a mode allows nothing: use sysfs
        out = Path("/sys/ebpfwire-export-test.parquet")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "run.parquet"
    status, _, err = run("export", CLEAN[0], "-o", out)
    assert status == 2 and err == f"ebpfwire: {out}: cannot create: Permission denied\n"
    assert not out.exists()


@pytest.mark.parametrize("argv, expected", [
    (["missing.ewcap"], "ebpfwire: missing.ewcap: no such file\n"),
    ([FIXTURES / "README.md"], "not a readable capture: offset 0: expected"),
    (["-"], "export reads capture files"),
    (["--layout", "hash", FIXTURES / "all-types.ewcap"], "layout 'hash' (225-byte header) does"),
    ([FIXTURES / "all-types.ewcap", FIXTURES / "layout-cwd.ewcap"],
     "expected captures of one context layout"),
    (["--jobs", "0", FIXTURES / "all-types.ewcap"], "expected 1 to 256 workers, found 0"),
    (["--event", "opnat", FIXTURES / "all-types.ewcap"], "closest known: openat"),
    ([FIXTURES / "all-types.ewcap", "-o", FIXTURES / "all-types.ewcap", "--force"],
     "is the input"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, argv, expected):
    out = tmp_path / "out.parquet"
    status, stdout, err = run("export", "-o", out, *argv)
    assert status == 2 and stdout == "" and expected in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_cleared_before_the_summary(tmp_path: Path, big: Path,
                                                              monkeypatch):
    monkeypatch.setattr("ebpfwire.cli.output.PROGRESS_EVERY", 0)
    err = _Terminal()
    with contextlib.redirect_stderr(err):
        status = main(["export", str(big), "-o", str(tmp_path / "p.parquet"), "--jobs", "1"])
    text = err.getvalue()
    assert status == 0
    progress, _, summary = text.rpartition("\r\x1b[K")
    assert re.search(r"\r100% of the records, 8,820 events, [\d,]+ events/s\x1b\[K$", progress)
    assert SUMMARY.fullmatch(summary)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_midway_leaves_nothing(tmp_path: Path, stop):
    capture = repeated(FIXTURES / "real-workload.ewcap", tmp_path / "in.ewcap", 1500)
    outdir = tmp_path / "out"
    outdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "ebpfwire", "export", str(capture), "-o",
                             str(outdir / "run.parquet"), "--jobs", "1"],
                            env={**os.environ, "PYTHONPATH": str(FIXTURES.parent)},
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not leftovers(outdir):  # the hidden temporary output: the export is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == ""
    assert os.listdir(outdir) == []
