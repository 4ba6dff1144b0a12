"""Command mode of record, trace and stats (``-- CMD ARGS``), and --pid ending with its
tree, as strace does both."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import ENV, jsonl, run

from ebpfwire.cli.command import exit_status

EBPFWIRE = [sys.executable, "-m", "ebpfwire"]
WORKLOAD = "cat /etc/hostname; exit 3"


def _ebpfwire(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*EBPFWIRE, *argv], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _arg_values(event: dict) -> list:
    return [arg.get("value") for arg in event.get("args", ())]


@pytest.mark.live
@pytest.mark.parametrize("transport", ["perf", "ringbuf"])
def test_record_a_command_sees_its_first_event_and_exits_with_its_status(
        tmp_path: Path, transport: str):
    path = tmp_path / "x.ewcap"
    done = _ebpfwire("record", "-o", str(path), "--transport", transport, "--",
                     "sh", "-c", WORKLOAD)
    assert done.returncode == 3, done.stderr
    status, out, err = run("decode", "--format", "jsonl", str(path))
    assert status == 0, err
    events = [e for e in jsonl(out) if "lost" not in e]
    first = events[0]  # the exec of sh, by the child still holding the recorder's name
    assert first["event"] == "execve" and _arg_values(first)[1] == ["sh", "-c", WORKLOAD]
    shell = first["host_pid"]
    assert {e["host_pid"] for e in events} - {shell} == {
        e["host_pid"] for e in events if e["host_ppid"] == shell}  # nothing but the tree
    assert any(e["event"] == "openat" and e["comm"] == "cat"
               and "/etc/hostname" in _arg_values(e) for e in events)


@pytest.mark.live
def test_trace_and_stats_run_a_command_and_exit_with_its_status():
    quiet = "cat /etc/hostname >/dev/null; exit 3"  # the command shares trace's stdout
    done = _ebpfwire("trace", "-e", "openat", "--format", "jsonl", "--", "sh", "-c", quiet)
    assert done.returncode == 3, done.stderr
    assert any(e["comm"] == "cat" and "/etc/hostname" in _arg_values(e)
               for e in jsonl(done.stdout))
    assert f"tracing events openat of sh -c {quiet} (pid " in done.stderr
    done = _ebpfwire("stats", "--json", "-e", "openat", "--", "sh", "-c", quiet)
    assert done.returncode == 3, done.stderr
    counted = json.loads(done.stdout)["syscalls"]
    assert [s["name"] for s in counted] == ["openat"] and counted[0]["calls"] >= 1


@pytest.mark.live
def test_a_command_killed_by_a_signal_exits_128_plus_n_and_runs_as_the_user(tmp_path: Path):
    done = _ebpfwire("trace", "-e", "openat", "-u", "nobody", "--",
                     "sh", "-c", "id -u; kill -9 $$")
    assert done.returncode == 128 + signal.SIGKILL, done.stderr
    assert done.stdout.splitlines()[0] == str(__import__("pwd").getpwnam("nobody").pw_uid)


@pytest.mark.live
def test_a_stop_signal_goes_on_to_the_command(tmp_path: Path):
    path = tmp_path / "x.ewcap"
    proc = subprocess.Popen([*EBPFWIRE, "record", "-o", str(path), "--", "sleep", "60"],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith(f"ebpfwire: recording to {path}; sleep 60 (pid")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err  # sleep's: killed by it


@pytest.mark.live
def test_pid_recording_ends_when_its_tree_has_exited(tmp_path: Path):
    tree = subprocess.Popen(["sh", "-c", "read line; cat /etc/hostname"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    path = tmp_path / "g.ewcap"
    proc = subprocess.Popen([*EBPFWIRE, "record", "-o", str(path), "-p", str(tree.pid)],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith(f"ebpfwire: recording to {path}; pid {tree.pid} and its "
                               "descendants, until they have all exited"), line
        assert tree.stdin is not None
        tree.stdin.write("go\n")
        tree.stdin.close()
        tree.wait(timeout=60)
        _, err = proc.communicate(timeout=60)  # no signal: the recording ends by itself
    finally:
        tree.kill()
        proc.kill()
    assert proc.returncode == 0, err
    events = jsonl(run("decode", "--format", "jsonl", str(path))[1])
    assert any(e.get("comm") == "cat" and "/etc/hostname" in _arg_values(e) for e in events)


@pytest.mark.live
def test_a_missing_pid_is_refused_at_once(tmp_path: Path):
    path = tmp_path / "none.ewcap"
    for argv in (["record", "-o", str(path)], ["trace"], ["stats"]):
        done = _ebpfwire(*argv, "-p", "4194304")
        assert done.returncode == 2 and "pid 4194304: no such process" in done.stderr, argv
    assert not path.exists()


def test_a_command_not_found_is_127_and_leaves_no_file(tmp_path: Path):
    path = tmp_path / "x.ewcap"
    done = _ebpfwire("record", "-o", str(path), "--", "no-such-command-here")
    assert done.returncode == 127
    assert done.stderr == "ebpfwire: no-such-command-here: command not found\n"
    assert not path.exists()


def test_a_command_and_a_pid_are_one_too_many(tmp_path: Path):
    done = _ebpfwire("trace", "-p", "1", "--", "true")
    assert done.returncode == 2 and "give --pid or a command, not both" in done.stderr
    done = _ebpfwire("stats", "-u", "nobody")
    assert done.returncode == 2 and "-u USER runs a command as USER" in done.stderr


def test_exit_status_is_the_shells():
    assert exit_status(3 << 8) == 3
    assert exit_status(signal.SIGKILL) == 128 + signal.SIGKILL


@pytest.mark.live
def test_stats_and_summary_count_the_same_calls_of_one_workload(tmp_path: Path):
    """strace -c counts a call once: summary counts an execve's entry and exit events as
    one call, and both commands, attached to one workload, give the same counts."""
    workload = subprocess.Popen(
        ["sh", "-c", "read line; cat /etc/hostname; ls /no-such-dir; sh -c 'exec true'; "
                     "/no-such-program; exit 0"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    path = tmp_path / "w.ewcap"
    who = ["-p", str(workload.pid), "-e", "execve,openat"]
    stats = subprocess.Popen([*EBPFWIRE, "stats", "--json", *who], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV)
    record = subprocess.Popen([*EBPFWIRE, "record", "-o", str(path), *who],
                              stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        for proc in (stats, record):  # both attached before the workload goes on
            assert proc.stderr is not None
            assert f"pid {workload.pid} and its" in proc.stderr.readline()
        assert workload.stdin is not None
        workload.stdin.write("go\n")
        workload.stdin.close()
        workload.wait(timeout=60)
        counted, err = stats.communicate(timeout=60)
        assert stats.returncode == 0, err
        assert record.wait(timeout=60) == 0
    finally:
        for proc in (workload, stats, record):
            proc.kill()
    by_stats = {s["name"]: (s["calls"], s["errors"]) for s in json.loads(counted)["syscalls"]}
    summary = json.loads(run("summary", "--json", str(path))[1])
    by_summary = {r["event"]: (r["calls"], r["errors"]) for r in summary["groups"][0]["events"]}
    calls, errors = by_stats["execve"]  # cat, ls, sh, exec true (and sh's tries on PATH)
    assert calls >= 4 and errors >= 1  # /no-such-program: ENOENT
    assert by_summary == by_stats


@pytest.mark.live
def test_a_command_s_events_name_its_executable_not_the_child_that_waited(tmp_path: Path):
    """Without exec events traced, the process context comes from /proc alone: it is read
    once CMD has executed, so the events show CMD (exe, argv), not the tracer's forked copy
    that waited for the monitor (which would be a python executable)."""
    script = "import os, time\nos.close(os.open('/etc/hostname', os.O_RDONLY))\ntime.sleep(0.3)\n"
    done = _ebpfwire("trace", "-e", "close", "--format", "jsonl", "--",
                     sys.executable, "-S", "-c", script)
    assert done.returncode == 0, done.stderr
    closes = [e for e in jsonl(done.stdout) if e.get("event") == "close"]
    assert closes, done.stdout
    assert all(e["process"]["argv"] == [sys.executable, "-S", "-c", script] for e in closes)
    path = tmp_path / "x.ewcap"
    done = _ebpfwire("record", "-o", str(path), "-e", "close", "--", sys.executable, "-S",
                     "-c", script)
    assert done.returncode == 0, done.stderr
    status, out, err = run("decode", "--format", "jsonl", str(path))
    closes = [e for e in jsonl(out) if e.get("event") == "close"]
    assert status == 0 and closes, err
    assert all(e["process"]["argv"] == [sys.executable, "-S", "-c", script] for e in closes)


def test_release_returns_once_the_command_has_executed_and_abandon_then_kills_it():
    """release() waits for CMD's exec (its /proc entry then shows CMD); a command released
    that cannot be traced after all is killed, not waited for."""
    from ebpfwire.cli.command import Command

    command = Command(["sleep", "30"])
    command.release()
    assert Path(f"/proc/{command.pid}/exe").resolve() == Path(shutil.which("sleep")).resolve()
    command.abandon()
    assert command.status == 128 + signal.SIGKILL  # killed: not run to its end (status 0)
