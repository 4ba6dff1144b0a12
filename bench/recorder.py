"""The recorder against bpftrace: loss by rate per transport, traced cost, untraced tax.

In one run (each part can be skipped):

- **loss curve**: for each transport at its default size, a child calls ``close(-1)``
  (the ``close`` event) at each asked rate (``--rates``, events/s; 0 = as fast as it can)
  for ``--seconds``, while the parent reads as ``ebpfwire record`` does; a row gives what
  was made, received and reported lost, and "missing" (made - received - lost, which
  must be 0).
- **traced cost / untraced tax**: CPU time per call of a child's loop of ``close(-1)``
  (traced; a Python loop) and of ``getpid()`` (untraced; a C loop built with gcc),
  measured by the child itself (user + system, so the BPF programs are in it), with
  nothing attached, with ``ebpfwire record --events close --pid CHILD`` (its CPU while
  the loop runs and it drains, per event; the close event read at the exit alone) and
  with bpftrace printing one line per ``close`` exit of the child (to a pipe we drain), and
  "bpftrace+entry", which also keeps each close's fd at its entry tracepoint and prints it
  with the result; and our recorder with every event (per-syscall hooks, the default, and
  the raw dispatchers): what an untraced syscall pays during a whole recording; each
  tracer settles 0.3 s first; interleaved ``--runs`` times (every
  other round in reverse order), medians, the tax against the same round's bare loop.
- **start-up**: from the exec of ``ebpfwire trace --events close --pid W`` or of bpftrace
  (the same probe) to its first line about a process W that closes every millisecond,
  after one untimed start of each (bytecode compiled and cached, as installed).

bpftrace is skipped with one line when it is not installed (Debian: apt-get install
bpftrace). Needs root. Run: PYTHONPATH=. python3 bench/recorder.py [--seconds 3]
[--runs 3] [--rates 50000,...,0] [--hogs 0,2] [--skip-curve] [--skip-cost]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ebpfwire.kernel.monitor import Monitor
from ebpfwire.kernel.perf import PAGE_SIZE, Lost, Sample
from ebpfwire.wire.layouts import header_reader

HOST_PID = header_reader("host_pid")  # the header field read without decoding
# each tracer (and the untraced baseline) waits this long after it says it is attached
SETTLE_S = 0.3

def paced_closes(rate: float, seconds: float, report_fd: int) -> None:
    """Child: close(-1) at ``rate`` per second (0: flat out) for ``seconds``; reports the
    count made."""
    made, start = 0, time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        due = made + 1000 if rate == 0 else int((now - start) * rate)
        while made < due:
            try:
                os.close(-1)
            except OSError:
                pass
            made += 1
        if rate:
            time.sleep(0.0005)
    os.write(report_fd, struct.pack("<Q", made))


def hog() -> None:
    """Child: spin until killed (a CPU the reader must share)."""
    while True:
        pass


def curve_row(transport: str | None, rate: float, seconds: float, hogs: int,
              ring_bytes: int | None) -> str:
    """One rate through one transport (None: the default one); the table row."""
    report_r, report_w = os.pipe()
    kw = {} if transport is None else {"transport": transport}
    if ring_bytes:
        kw["ring_bytes"] = ring_bytes
    hog_pids = []
    for _ in range(hogs):
        pid = os.fork()
        if pid == 0:
            hog()
        hog_pids.append(pid)
    with Monitor(events=["close"], pid=os.getpid(), **kw) as mon:
        reader = mon.reader
        name = mon.transport
        size = reader.page_count * PAGE_SIZE if name == "perf" else mon.ring_bytes
        child = os.fork()
        if child == 0:
            try:
                paced_closes(rate, seconds, report_w)
            finally:
                os._exit(0)
        received = lost = 0
        start, cpu = time.monotonic(), time.process_time()
        done = False
        while True:
            batch = reader.read_batch(timeout=0.2)
            for rec in batch:
                if type(rec) is Sample:
                    received += HOST_PID.unpack_from(rec.data)[0] == child
                elif type(rec) is Lost:
                    lost += rec.count
            if not done and os.waitpid(child, os.WNOHANG)[0]:
                done = True
                mon.stop()
            elif done and not batch:
                break
        elapsed, cpu = time.monotonic() - start, time.process_time() - cpu
    for pid in hog_pids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    made = struct.unpack("<Q", os.read(report_r, 8))[0]
    os.close(report_r)
    os.close(report_w)
    ring = f"{size >> 20} MiB" + (" per CPU" if name == "perf" else " shared")
    asked = "flat out" if rate == 0 else f"{rate:,.0f}/s"
    return (f"| {name}{' (default)' if transport is None else ''} | {ring} | {asked} | "
            f"{made:,} | {made / seconds:,.0f}/s | {received:,} | {lost:,} | "
            f"{made - received - lost:,} | {1e6 * cpu / max(received, 1):.2f} µs |"
            f" {elapsed:.1f} s | {hogs} |")


ROOT = Path(__file__).resolve().parent.parent
#: The tracers' environment: this tree first, and bytecode cached (in a directory of the
#: bench's own) as an installed package has it, pip having compiled it at install, even
#: where PYTHONDONTWRITEBYTECODE is set: without it every start compiles every module.
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
       "PYTHONPATH": str(ROOT),
       "PYTHONPYCACHEPREFIX": os.path.join(tempfile.gettempdir(), "ebpfwire-bench-pyc")}
CALL = {"close": "def call():\n    try:\n        os.close(-1)\n    except OSError:\n"
                 "        pass\n"}


# the untraced loop in C: a Python loop's own ~100 ns a call and its jitter hide a tax of
# tens of ns; the traced loop stays in Python, as the figures of earlier runs were
GETPID_LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    char line[8];
    struct timespec a, b;
    if (!fgets(line, sizeof line, stdin))
        return 1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    for (long i = 0; i < n; i++)
        syscall(SYS_getpid);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    printf("%.9f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    fflush(stdout);
    return fgets(line, sizeof line, stdin) == NULL;
}
"""


def getpid_loop(tmp: Path) -> Path:
    """The C getpid loop, compiled with gcc into ``tmp``."""
    source, binary = tmp / "getpid_loop.c", tmp / "getpid_loop"
    source.write_text(GETPID_LOOP_C)
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def loop_child(call: str, n: int, tmp: Path) -> subprocess.Popen:
    """A child that waits for a line, calls ``call`` n times, prints its CPU s for them."""
    if call == "getpid":
        return subprocess.Popen([str(tmp / "getpid_loop"), str(n)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    code = ("import os, sys, time\n" + CALL[call] + "sys.stdin.readline()\n"
            "t = time.process_time()\n"
            f"for _ in range({n}):\n    call()\n"
            "print(time.process_time() - t, flush=True)\nsys.stdin.readline()\n")
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bpftrace_cmd(pid: int, entry: bool = False) -> list[str]:
    """bpftrace printing each close's result; with ``entry`` its fd too, kept at the entry
    tracepoint: what the recorder (and strace) show, so it hooks both tracepoints too."""
    if not entry:
        return ["bpftrace", "-e", f"tracepoint:syscalls:sys_exit_close /pid == {pid}/ "
                "{ printf(\"%d %d\\n\", pid, args->ret); }"]
    return ["bpftrace", "-e",
            f"tracepoint:syscalls:sys_enter_close /pid == {pid}/ {{ @fd[tid] = args->fd; }} "
            f"tracepoint:syscalls:sys_exit_close /pid == {pid}/ "
            "{ printf(\"%d %d %d\\n\", pid, @fd[tid], args->ret); delete(@fd[tid]); }"]


# our recorder's rows: the close event alone (the tools' like for like), then every event
# with each kind of hook (what an untraced syscall pays for a whole recording)
EBPFWIRE_TOOLS = {
    "ebpfwire": ["--events", "close"],
    "ebpfwire, every event": [],
    "ebpfwire, every event, raw hooks": ["--hooks", "raw"],
}


def start_tracer(tool: str, pid: int, tmp: Path) -> subprocess.Popen:
    """The tracer of ``pid``'s close calls, attached when this returns."""
    if tool.startswith("bpftrace"):
        proc = subprocess.Popen(bpftrace_cmd(pid, entry=tool == "bpftrace+entry"),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # "Attaching N probes..."
        # drained on a thread: bpftrace must never wait for us
        import threading
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        return proc
    proc = subprocess.Popen([sys.executable, "-m", "ebpfwire", "record", "-o",
                             str(tmp / "bench.ewcap"), "--force", *EBPFWIRE_TOOLS[tool],
                             "--pid", str(pid)], stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "recording to" in line, line + proc.stderr.read()
    return proc


def one_cost(tool: str, call: str, n: int, tmp: Path) -> tuple[float, float]:
    """(child CPU ns per call, tracer CPU ns per call) of one loop."""
    child = loop_child(call, n, tmp)
    assert child.stdin is not None and child.stdout is not None
    tracer = None if tool == "none" else start_tracer(tool, child.pid, tmp)
    time.sleep(SETTLE_S)  # the tax of a tracer at work, not of its last start-up steps
    try:
        before = cpu_s(tracer.pid) if tracer else 0.0
        child.stdin.write("go\n")
        child.stdin.flush()
        child_cpu = float(child.stdout.readline())
        if tracer:
            time.sleep(0.5)  # it drains what the loop made (reads at least every 0.2 s)
        tracer_cpu = cpu_s(tracer.pid) - before if tracer else 0.0
    finally:
        child.stdin.close()
        child.wait()
        if tracer:
            tracer.send_signal(signal.SIGINT)
            tracer.communicate(timeout=60)
    return 1e9 * child_cpu / n, 1e9 * tracer_cpu / n


# the untraced call is cheap: its loops are longer, so that a tax of tens of ns is not lost
# in one preemption
UNTRACED_LOOP_FACTOR = 15


def cost_table(runs: int, n: int, tools: list[str]) -> None:
    calls = {"close": n, "getpid": n * UNTRACED_LOOP_FACTOR}
    got: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        getpid_loop(Path(tmp))
        for run in range(runs):
            for call, count in calls.items():
                # every other round the other way round: a drift of the machine during a
                # round weighs on no tracer more than on another
                for tool in tools if run % 2 == 0 else tools[::-1]:
                    got.setdefault((tool, call), []).append(
                        one_cost(tool, call, count, Path(tmp)))
    print(f"\n{calls['close']:,} close and {calls['getpid']:,} getpid calls a loop, {runs} "
          "interleaved runs, medians; added = each run against the untraced loop of its round")
    print("| tracer | call | loop CPU ns/call | added ns/call (range) | tracer CPU ns/call | "
          "both, per call |")
    print("|---|---|---:|---:|---:|---:|")
    for (tool, call), rows in got.items():
        loop = statistics.median(c for c, _ in rows)
        tracer = statistics.median(t for _, t in rows)
        added = [c - base for (c, _), (base, _) in zip(rows, got[("none", call)], strict=True)]
        print(f"| {tool} | {call} | {loop:,.0f} | {statistics.median(added):+,.0f} "
              f"({min(added):+,.0f} to {max(added):+,.0f}) | {tracer:,.0f} | "
              f"{loop + tracer:,.0f} |")


def startup(tool: str) -> float:
    """Seconds from the tracer's exec to its first line about a process closing every ms."""
    work = subprocess.Popen([sys.executable, "-c", "import os, time\nwhile True:\n"
                             "    time.sleep(0.001)\n    try:\n        os.close(-1)\n"
                             "    except OSError:\n        pass\n"])
    try:
        cmd = (bpftrace_cmd(work.pid, entry=tool == "bpftrace+entry")
               if tool.startswith("bpftrace") else
               [sys.executable, "-m", "ebpfwire", "trace", "--events", "close", "--pid",
                str(work.pid), "--format", "jsonl"])
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=ENV,
                                stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            assert line, f"{tool} ended before its first event"
            if not line.startswith("Attaching"):
                break
        took = time.monotonic() - start
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        work.kill()
        work.wait()
    return took


def startup_table(runs: int, tools: list[str]) -> None:
    got: dict[str, list[float]] = {tool: [] for tool in tools}
    for tool in tools:  # a first start of each, not timed: bytecode and page cache warm
        startup(tool)
    for _ in range(runs):
        for tool in tools:
            got[tool].append(startup(tool))
    print(f"\nexec to first event, {runs} interleaved runs")
    print("| tracer | median | min | max |")
    print("|---|---:|---:|---:|")
    for tool, times in got.items():
        print(f"| {tool} | {1e3 * statistics.median(times):.0f} ms | {1e3 * min(times):.0f} ms"
              f" | {1e3 * max(times):.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rates", default="50000,100000,200000,400000,0")
    parser.add_argument("--transports", default="default,perf,ringbuf")
    parser.add_argument("--hogs", default="0,2",
                        help="busy-loop processes beside each run (comma list: one row each)")
    parser.add_argument("--ring-bytes", type=int, help="instead of each transport's default")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--skip-curve", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    tools = ["none", *EBPFWIRE_TOOLS]
    bpftraces = ["bpftrace", "bpftrace+entry"] if shutil.which("bpftrace") else []
    tools += bpftraces
    if not bpftraces:
        print("bpftrace not installed (Debian: apt-get install bpftrace): its columns skipped")
    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    if not args.skip_cost:
        cost_table(args.runs, args.calls, tools)
        startup_table(args.runs, ["ebpfwire", *bpftraces])
    if args.skip_curve:
        return
    print("\nloss by rate")
    print("| transport | ring | asked | made | made/s | received | lost | missing | "
          "reader CPU/event | wall | CPU hogs |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for hogs in (int(h) for h in args.hogs.split(",")):
        for rate in (float(r) for r in args.rates.split(",")):
            for transport in args.transports.split(","):
                print(curve_row(None if transport == "default" else transport, rate,
                                args.seconds, hogs, args.ring_bytes), flush=True)


if __name__ == "__main__":
    main()
