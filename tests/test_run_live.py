"""``ebpfwire run`` on tools written here: a libbpf-bootstrap style ring buffer tool
(tests/bpf/bootstrap.bpf.c) and a perf array tool with histogram maps
(tests/bpf/perf_tool.bpf.c), their event type found in BTF, in DWARF, or missing."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bpf_object import compile_object

from ebpfwire.kernel import syscalls

ROOT = Path(__file__).resolve().parent.parent
OUR_PROGRAMS = {"handle_exec", "handle_exit", "on_getppid", "on_enter", "on_exit"}
OUR_MAPS = {"exec_start", "rb", "calls", "seq_hist", "seq_log2", "start", "latency"}


@pytest.fixture(scope="module")
def objdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("run")


def build(objdir: Path, name: str, *defines: str) -> Path:
    try:
        return compile_object(name, objdir, *defines)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def ebpfwire(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "ebpfwire", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def ours_in_kernel(before: tuple[set[int], set[int]]) -> tuple[set[str], set[str]]:
    """Names of our programs and maps that appeared since ``before`` and are still there."""
    progs = {n for i, n in syscalls.loaded_programs().items() if i not in before[0]}
    maps = {n for i, n in syscalls.loaded_maps().items() if i not in before[1]}
    return progs & OUR_PROGRAMS, maps & OUR_MAPS


def assert_nothing_left(before: tuple[set[int], set[int]]) -> None:
    deadline = time.monotonic() + 10  # maps go after an RCU grace period
    while time.monotonic() < deadline and any(ours_in_kernel(before)):
        time.sleep(0.05)
    assert ours_in_kernel(before) == (set(), set())


def kernel_ids() -> tuple[set[int], set[int]]:
    return set(syscalls.loaded_programs()), set(syscalls.loaded_maps())


@pytest.mark.live
def test_bootstrap_events_from_dwarf(objdir: Path):
    obj = build(objdir, "bootstrap")  # no anchor: struct event only in DWARF
    before = kernel_ids()
    res = ebpfwire("run", str(obj), "--format", "jsonl", "--",
                   "/bin/sh", "-c", "/bin/true; ls /nonexistent-ebpfwire-run 2>/dev/null; :")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    events = [e for e in lines if "pid" in e]
    sh = next(e for e in events if e["filename"] == "/bin/sh" and not e["exit_event"]
              and e["ppid"] != 0)
    mine = [e for e in events if e["ppid"] == sh["pid"]]
    true_exec = next(e for e in mine if e["comm"] == "true" and not e["exit_event"])
    assert true_exec["filename"] == "/bin/true" and true_exec["duration_ns"] == 0
    ls_exit = next(e for e in mine if e["comm"] == "ls" and e["exit_event"])
    assert ls_exit["exit_code"] == 2 and ls_exit["duration_ns"] > 0 and ls_exit["filename"] == ""
    assert set(events[0]) == {"pid", "ppid", "exit_code", "duration_ns", "comm", "filename",
                              "exit_event"}
    assert lines[-1]["map"] == "exec_start"  # the map dump at the end
    assert_nothing_left(before)


@pytest.mark.live
def test_bootstrap_min_duration_setting_with_the_anchor(objdir: Path):
    obj = build(objdir, "bootstrap", "ANCHOR")
    before = kernel_ids()
    res = ebpfwire("run", str(obj), "--set", "min_duration_ns=100000000", "--",
                   "/bin/sh", "-c", "sleep 0.3; /bin/true")
    assert res.returncode == 0, res.stderr
    rows = [dict(kv.split("=", 1) for kv in line.split()) for line in res.stdout.splitlines()
            if line.startswith("pid=")]
    assert rows and all(r["exit_event"] == "True" for r in rows)  # no exec events
    sleep = next(r for r in rows if r["comm"] == "sleep")
    assert int(sleep["duration_ns"]) >= 100_000_000
    assert not [r for r in rows if r["comm"] == "true" and r["ppid"] == sleep["ppid"]]
    assert_nothing_left(before)


def perf_command(tmp_path: Path) -> list[str]:
    """A python named ``ewperf`` (its comm) calling getppid() 7 times."""
    exe = tmp_path / "ewperf"
    exe.symlink_to(os.path.realpath(sys.executable))
    return [str(exe), "-c", "import os; [os.getppid() for _ in range(7)]"]


@pytest.mark.live
@pytest.mark.parametrize("anchor", [True, False])
def test_perf_tool_events_and_histograms(objdir: Path, tmp_path: Path, anchor: bool):
    obj = build(objdir, "perf_tool", *(["ANCHOR"] if anchor else []))
    before = kernel_ids()
    typed = [] if anchor else ["--type", "call"]  # in BTF: found by size; else DWARF by name
    res = ebpfwire("run", str(obj), "--set", "target_comm=ewperf", "--ts", "ts", "--format",
                   "json", *typed, "--", *perf_command(tmp_path))
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [e["seq"] for e in doc["events"]] == list(range(1, 8))
    assert {e["comm"] for e in doc["events"]} == {"ewperf"}
    assert len({e["pid"] for e in doc["events"]}) == 1
    hists = {m["map"]: m["histograms"] for m in doc["maps"]}
    want = [[0, 1, 1], [2, 3, 2], [4, 7, 4]]  # seq 1 | 2-3 | 4-7
    assert hists["seq_hist"] == [{"title": "key = 0", "linear": False, "buckets": want}]
    assert hists["seq_log2"] == [{"title": "", "linear": False, "buckets": want}]
    assert_nothing_left(before)


@pytest.mark.live
def test_perf_tool_table_shows_bcc_histograms(objdir: Path, tmp_path: Path):
    obj = build(objdir, "perf_tool", "ANCHOR")
    res = ebpfwire("run", str(obj), "--set", "target_comm=ewperf", "--",
                   *perf_command(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "seq=7 comm=ewperf" in res.stdout
    assert "         4 -> 7          : 4        |*****" in res.stdout


@pytest.mark.live
def test_stripped_object_says_how_to_add_the_type(objdir: Path, tmp_path: Path):
    strip = shutil.which("llvm-strip")
    if strip is None:
        pytest.skip("llvm-strip not installed")
    obj = build(objdir, "bootstrap")
    stripped = tmp_path / "bootstrap-stripped.o"
    subprocess.run([strip, "-g", str(obj), "-o", str(stripped)], check=True)
    before = kernel_ids()
    res = ebpfwire("run", str(stripped), "--", "/bin/true")
    assert res.returncode == 2
    assert "map 'rb': records of 168 bytes, and no struct of that size in the object's BTF, " \
        "and it has no DWARF" in res.stderr
    assert "`struct event *unused __attribute__((unused));`" in res.stderr
    assert "Traceback" not in res.stderr
    res = ebpfwire("run", str(stripped), "--type", "event")
    assert res.returncode == 2
    assert "no type 'event' in the object's BTF, and no DWARF" in res.stderr
    assert_nothing_left(before)


def test_usage_errors_before_the_kernel(objdir: Path):
    obj = build(objdir, "bootstrap")
    cases = {
        ("--set", "nope=1"): "no global 'nope' in ",
        ("--set", "min_duration_ns"): "--set: expected NAME=VALUE, found 'min_duration_ns'",
        ("--map", "exec_start"): "no ring buffer or perf array ['exec_start']; it has: rb",
        ("--type", "nothing_here"): "no type 'nothing_here' in the object's BTF, and its DWARF",
        ("--ts", "x", "ls"): "unrecognized arguments: ls (a command goes after --)",
    }
    for args, message in cases.items():
        res = ebpfwire("run", str(obj), *args)
        assert res.returncode == 2 and message in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr


@pytest.mark.live
def test_duration_and_ctrl_c_leave_nothing(objdir: Path):
    obj = build(objdir, "bootstrap")
    before = kernel_ids()
    res = ebpfwire("run", str(obj), "--duration", "0.3", "--format", "json")
    assert res.returncode == 0, res.stderr
    assert set(json.loads(res.stdout)) == {"events", "maps"}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "ebpfwire", "run", str(obj)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ours_in_kernel(before)[0]:
        time.sleep(0.05)
    assert ours_in_kernel(before)[0] == {"handle_exec", "handle_exit"}  # running
    proc.send_signal(2)  # SIGINT, as Ctrl-C
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "map exec_start:" in out
    assert_nothing_left(before)


@pytest.mark.live
def test_capture_decodes_and_exports_without_the_object(objdir: Path, tmp_path: Path):
    pq = pytest.importorskip("pyarrow.parquet")
    duckdb = pytest.importorskip("duckdb")
    obj = build(objdir, "bootstrap")  # the type from DWARF: the capture carries it as BTF
    cap = tmp_path / "bootstrap.ewcap"
    res = ebpfwire("run", str(obj), "-o", str(cap), "--",
                   "/bin/sh", "-c", "/bin/true; ls /nonexistent-ebpfwire-run 2>/dev/null; :")
    assert res.returncode == 0, res.stderr
    assert "events written to" in res.stderr and "pid=" not in res.stdout
    obj.unlink()  # nothing below may need it
    dec = ebpfwire("decode", str(cap), "--format", "jsonl")
    assert dec.returncode == 0, dec.stderr
    events = [json.loads(line) for line in dec.stdout.splitlines()]
    ls_exit = next(e for e in events if e["comm"] == "ls" and e["exit_event"])
    assert ls_exit["exit_code"] == 2
    out = tmp_path / "bootstrap.parquet"
    exp = ebpfwire("export", str(cap), "-o", str(out))
    assert exp.returncode == 0, exp.stderr
    assert pq.read_schema(out).names == ["pid", "ppid", "exit_code", "duration_ns", "comm",
                                         "filename", "exit_event"]
    rows = duckdb.sql(f"select filename, exit_code from '{out}' where comm = 'ls' "
                      "order by exit_event").fetchall()
    assert rows == [("/usr/bin/ls", 0), ("", 2)]
    from ebpfwire.columnar.arrow import to_table

    table = to_table(str(cap))
    assert table.num_rows == len(events) and table.column_names[0] == "pid"
    from ebpfwire.dask import read_captures

    frame = read_captures([str(cap), str(cap)]).compute()   # one partition a capture
    assert list(frame.columns) == table.column_names and len(frame) == 2 * len(events)
    assert sorted(frame["comm"].iloc[:len(events)]) == sorted(e["comm"] for e in events)
    from ebpfwire.columnar.export import ExportError

    wire = Path(__file__).resolve().parent.parent / "fixtures" / "real-workload.ewcap"
    with pytest.raises(ExportError, match="one kind"):
        read_captures([str(cap), str(wire)])
    with pytest.raises(ExportError, match="map 'nosuch'"):
        read_captures(str(cap), map="nosuch")
    info = ebpfwire("info", str(cap))
    assert info.returncode == 0 and info.stderr == "", info.stderr
    assert "layout:       btf" in info.stdout
    assert re.search(rf"^  rb +{len(events)}$", info.stdout, re.M), info.stdout


def test_typed_records_round_trip(tmp_path: Path):
    from ebpfwire.capture import (
        TYPED_LAYOUT,
        CaptureReader,
        CaptureWriter,
        EventRecord,
        TypeRecord,
    )

    path = tmp_path / "typed.ewcap"
    with CaptureWriter(path, layout=TYPED_LAYOUT) as w:
        w.write_type(1, "events", 7, b"\x9f\xeb btf")
        w.write_event(1, 0xFFFFFFFF, b"abc")
        w.write_event(1, 3, b"")
    with CaptureReader(path) as r:
        assert r.header.layout == "btf"
        got = list(r)
    assert [type(x) for x in got] == [TypeRecord, EventRecord, EventRecord]
    assert (got[0].map, got[0].name, got[0].type_id, got[0].btf) == (1, "events", 7,
                                                                     b"\x9f\xeb btf")
    assert (got[1].map, got[1].cpu, got[1].data) == (1, 0xFFFFFFFF, b"abc")
    assert (got[2].cpu, got[2].data) == (3, b"")
    from ebpfwire.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["info", "--json", str(path)]) == 0
    summary = json.loads(out.getvalue())
    assert summary["layout"] == "btf" and summary["maps"] == {"events": 2}
    assert summary["damaged_records"] == 0


@pytest.mark.live
def test_syscall_latency_histograms_per_syscall(objdir: Path):
    if platform.machine() != "x86_64":
        pytest.skip("syscall numbers 0 and 1 are read and write on x86-64 only")
    obj = build(objdir, "syscall_latency")  # no ring buffer, no perf array: maps only
    before = kernel_ids()
    res = ebpfwire("run", str(obj), "--set", "target_comm=dd", "--format", "json", "--",
                   "dd", "if=/dev/zero", "of=/dev/null", "bs=4k", "count=500", "status=none")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["events"] == []
    hists = {h["title"]: h["buckets"] for m in doc["maps"] if m["map"] == "latency"
             for h in m["histograms"]}
    for nr in (0, 1):  # read, write (x86-64): dd's 500 of each, and a few more
        assert 500 <= sum(count for _, _, count in hists[f"key = {nr}"]) <= 520
    assert list(hists) == sorted(hists, key=lambda t: int(t.split()[-1]))
    assert_nothing_left(before)
