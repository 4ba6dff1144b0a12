"""``ebpfwire stats``: options checked before loading, exact live counts, Ctrl-C, beside record."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ebpfwire.capture import CaptureReader, LostRecord
from ebpfwire.cli import main
from ebpfwire.kernel.stats import bundled_stats_object

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def live(test):
    """A live test: needs root and BPF (conftest), and the built stats object."""
    test = pytest.mark.skipif(not bundled_stats_object().exists(),
                              reason="stats.bpf.o not built")(test)
    return pytest.mark.live(test)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- options


def test_unknown_syscall_names_the_closest_and_exits_2():
    status, out, err = run("stats", "--events", "close,clsoe")
    assert status == 2 and out == ""
    assert err.startswith("ebpfwire: --events: unknown syscall 'clsoe'")
    assert "closest known: close" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, expected", [
    (["--pid", "0"], "expected a pid from 1 to"),
    (["--duration", "-1"], "expected seconds above 0"),
    (["--interval", "nan"], "expected seconds above 0"),
    (["--events", "4096"], "syscall number 4096: expected 0 to 1023"),
])
def test_bad_option_values_are_one_line_and_exit_2(argv, expected):
    status, out, err = run("stats", *argv)
    assert status == 2 and out == "" and expected in err and err.count("\n") == 1


def test_a_pid_that_does_not_exist_is_refused_before_loading():
    # the largest pid there can be; no process of a test machine has it
    status, _, err = run("stats", "--pid", "4194304")
    assert status == 2 and err == "ebpfwire: pid 4194304: no such process\n"


# --------------------------------------------------------------------------- live


class Child:
    """A forked child that closes a bad fd ``times`` times once released, then exits."""

    def __init__(self, times: int) -> None:
        go_r, self._go = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - child process
            try:
                os.read(go_r, 1)
                for _ in range(times):
                    try:
                        os.close(-1)
                    except OSError:
                        pass
            finally:
                os._exit(0)
        os.close(go_r)

    def run(self) -> None:
        os.write(self._go, b"1")
        os.close(self._go)
        _, status = os.waitpid(self.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def _start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ebpfwire", *argv], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_line(proc: subprocess.Popen, prefix: str, timeout: float = 60) -> None:
    """Wait for the line on stderr that says the command has attached everything."""
    got: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: got.put(proc.stderr.readline()), daemon=True).start()
    line = got.get(timeout=timeout)
    assert line.startswith(f"ebpfwire: {prefix}"), line + proc.stderr.read()


@live
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ten_thousand_bad_closes_counted_then_stopped_by_a_signal(stop):
    child = Child(10_000)
    proc = _start("stats", "--pid", str(child.pid), "--events", "close", "--json")
    try:
        _wait_line(proc, f"counting syscalls close of pid {child.pid}")
        child.run()
    finally:
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    report = json.loads(out)
    (close,) = report["syscalls"]
    assert (close["name"], close["calls"], close["errors"], close["errnos"]) == (
        "close", 10_000, 10_000, {"EBADF": 10_000})
    assert sum(bucket["count"] for bucket in close["histogram"]) == 10_000
    assert report["dropped"] == {"calls": 0, "errnos": 0}


@live
def test_text_output_has_the_histogram_after_the_duration():
    child = Child(500)
    proc = _start("stats", "--pid", str(child.pid), "--events", "close", "--duration", "3")
    _wait_line(proc, "counting syscalls close")
    child.run()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    lines = out.splitlines()
    assert lines[0].startswith("syscalls counted over ")
    assert "close (nr 3): 500 calls, 500 errors (EBADF 500), total " in out
    assert "     usecs               : count     distribution" in lines
    rows = [line for line in lines if " -> " in line]
    assert rows and sum(int(row.split(":")[1].split("|")[0]) for row in rows) == 500


@live
def test_interval_prints_a_report_per_interval_and_one_at_the_end():
    proc = _start("stats", "--events", "close", "--json", "--interval", "0.5",
                  "--duration", "1.8")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    reports = [json.loads(line) for line in out.splitlines()]
    assert len(reports) == 4  # at 0.5, 1.0, 1.5 and the end
    assert [r["seconds"] for r in reports] == sorted(r["seconds"] for r in reports)


@live
def test_stats_and_record_at_once_both_see_the_workload(tmp_path: Path):
    capture = tmp_path / "beside.ewcap"
    child = Child(2_000)
    stats = _start("stats", "--pid", str(child.pid), "--events", "close", "--json")
    record = _start("record", "-o", str(capture), "--pid", str(child.pid), "--events", "close")
    try:
        _wait_line(stats, "counting syscalls close")
        _wait_line(record, f"recording to {capture}")
        child.run()
    finally:
        for proc in (stats, record):
            proc.send_signal(signal.SIGINT)
        stats_out, stats_err = stats.communicate(timeout=60)
        _, record_err = record.communicate(timeout=60)
    assert stats.returncode == 0 and record.returncode == 0, stats_err + record_err
    (close,) = json.loads(stats_out)["syscalls"]
    assert (close["calls"], close["errnos"]) == (2_000, {"EBADF": 2_000})
    with CaptureReader(capture) as reader:
        pairs = list(reader.events())
    lost = sum(record.count for record, _ in pairs if isinstance(record, LostRecord))
    closes = [e for _, e in pairs if e is not None and e.host_pid == child.pid
              and e.event_id == 3]
    assert len(closes) + lost == 2_000 and lost == 0
    assert all(e.retval == -9 for e in closes)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="drops root's capabilities with setpriv")
def test_without_bpf_privileges_one_line_and_exit_2():
    proc = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all",
                           sys.executable, "-m", "ebpfwire", "stats", "--duration", "1"],
                          env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("ebpfwire: ") and proc.stderr.count("\n") == 1
    assert "Operation not permitted (needs root, or CAP_BPF + CAP_PERFMON)" in proc.stderr
