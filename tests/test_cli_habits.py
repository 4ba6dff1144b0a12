"""One vocabulary across commands, and strace's time and size habits."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import ENV, FIXTURES, jsonl, run

WORKLOAD = str(FIXTURES / "real-workload.ewcap")
SHELL, LS = 29675, 29676  # the fixture's shell and its ls child


def _pids(*argv: str) -> set[int]:
    status, out, err = run("decode", "--format", "jsonl", *argv, WORKLOAD)
    assert status == 0, err
    return {e["host_pid"] for e in jsonl(out) if "host_pid" in e}


def test_pid_is_the_tree_and_exact_pid_one_process():
    tree = _pids("-p", str(SHELL))
    assert SHELL in tree and LS in tree and len(tree) >= 6  # the shell and its children
    assert _pids("--exact-pid", str(SHELL)) == {SHELL} == _pids("--tid", str(SHELL))
    assert _pids("--pid", str(LS)) == {LS}  # a leaf: its tree is itself


def test_the_tree_filter_is_the_same_in_summary_and_ps():
    report = json.loads(run("summary", "--json", "--by", "pid", "-p", str(SHELL), WORKLOAD)[1])
    assert {g["key"] for g in report["groups"]} == _pids("-p", str(SHELL))
    status, out, _ = run("ps", "-p", str(LS), WORKLOAD)
    assert status == 0 and f"({LS})" in out


def test_events_has_one_spelling_everywhere_and_keeps_the_old_one():
    one = run("decode", "-e", "connect", WORKLOAD)[1]
    assert one == run("decode", "--events", "connect", WORKLOAD)[1]
    assert one == run("decode", "--event", "connect", WORKLOAD)[1] and "connect(" in one
    for command in ("summary", "ps"):
        assert run(command, "-e", "connect", WORKLOAD)[0] == 0


def test_an_empty_event_list_is_a_usage_error():
    status, out, err = run("decode", "--event", "", WORKLOAD)
    assert status == 2 and out == ""
    assert "expected a comma list of one or more names" in err


@pytest.mark.parametrize("command", ["decode", "summary", "record", "trace", "stats", "ps"])
def test_usage_errors_point_at_the_commands_help(command: str):
    status, _, err = run(command, "--no-such-option")
    assert status == 2
    assert err.endswith(f"(see ebpfwire {command} --help)\n") and err.count("\n") == 1


def test_the_top_level_help_names_every_format_and_command_mode():
    out = subprocess.run([sys.executable, "-m", "ebpfwire", "--help"], capture_output=True,
                         text=True, env=ENV).stdout
    assert "--format kubearmor" in out and "record -o run.ewcap -- make test" in out


def test_record_to_a_directory_says_so_with_or_without_force(tmp_path: Path):
    for extra in ((), ("--force",)):
        status, _, err = run("record", "-o", str(tmp_path), *extra)
        assert status == 2 and f"{tmp_path}: is a directory; -o names the capture file" in err
        assert "--force replaces" not in err


def test_export_refuses_a_tree_and_names_exact_pid(tmp_path: Path):
    status, _, err = run("export", WORKLOAD, "-o", str(tmp_path / "x.parquet"), "-p", "1")
    assert status == 2 and "--exact-pid 1" in err


def test_ps_utc_says_when_the_times_start():
    status, out, _ = run("ps", "--utc", WORKLOAD)
    first = out.splitlines()[0]
    assert status == 0
    assert first == "times are from the first event, at 2026-11-22 03:13:18.270544 UTC"
    assert run("ps", WORKLOAD)[1] == out.split("\n", 1)[1]  # the tree itself unchanged


def _lines(*argv: str) -> list[str]:
    status, out, err = run("decode", "--utc", "-e", "execve", *argv, WORKLOAD)
    assert status == 0, err
    return out.splitlines()


def test_strace_time_options():
    default = _lines()[0]
    assert default.startswith("03:13:18.270795 \"sh\" 29676 execve(")
    assert _lines("-tt")[0] == default
    assert _lines("-t")[0].startswith("03:13:18 \"sh\" 29676 execve(")
    assert _lines("-ttt")[0].startswith("1795317198.270795 \"sh\" 29676 execve(")
    relative = [line.split()[0] for line in _lines("-r")]
    assert relative[:2] == ["+0.000000", "+0.000226"]  # since the line before


def test_syscall_times_close_an_exec_and_string_limit_cuts():
    lines = _lines("-T", "-s", "10")
    assert lines[0].endswith('execve("/bin/ls", ["/bin/ls", "/tmp/ebpfw"...]) <unfinished ...>')
    assert re.search(r"<\.\.\. execve resumed> = 0 <0\.000226>$", lines[1]), lines[1]
    assert _lines("-s", "0")[0].split("execve", 1)[1].startswith('(""..., [""..., ""...])')


@pytest.mark.live
def test_trace_shares_decodes_renderers_and_writes_to_a_file(tmp_path: Path):
    out = tmp_path / "events.jsonl"
    done = subprocess.run([sys.executable, "-m", "ebpfwire", "trace", "--format", "kubearmor",
                           "-o", str(out), "-e", "openat,execve", "--", "cat", "/etc/hostname"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "{" not in done.stdout  # cat's output, apart
    assert done.stderr.startswith("ebpfwire: tracing events openat,execve of cat /etc/hostname")
    logs = jsonl(out.read_text())
    assert any(log["Resource"] == "/etc/hostname" and log["ProcessName"].endswith("/cat")
               for log in logs)
    done = subprocess.run([sys.executable, "-m", "ebpfwire", "trace", "-e", "openat,execve", "--",
                           "sh", "-c", "cat /etc/hostname > /dev/null"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert re.search(r' "cat" \d+ \["/\S+/cat"\] openat\(AT_FDCWD, "/etc/hostname"', done.stdout)
