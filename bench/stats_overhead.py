"""What tracing costs the traced process: ns per syscall with stats, with record, with neither.

A child process calls close(-1) N times (EBADF each time) and measures the CPU time (user +
system, so the BPF programs' time is in it) of its own loop; CPU time rather than wall time
because the shared 2-core VM's other work would otherwise show up as overhead. It runs
with nothing attached, with SyscallStats counting its syscalls (in-kernel histograms, no
event sent), with SyscallStats counting every process's syscalls, and with the monitor
recording its close events (perf rings drained by this process into a CaptureWriter on a
temp file, as `ebpfwire record` does). Each mode runs several times; the best and the
median run are printed, with the added ns per syscall and the ratio to the bare loop, and
the CPU time this (tracing) process spent per syscall from release to the child's end:
draining and writing events for record, one final snapshot for stats.
Needs root. Run: python3 bench/stats_overhead.py [--calls 200000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import tempfile
import time
from collections.abc import Callable

from ebpfwire.capture import CaptureWriter
from ebpfwire.kernel.monitor import Monitor
from ebpfwire.kernel.perf import Sample
from ebpfwire.kernel.stats import SyscallStats

_NS = struct.Struct("<Q")


def spawn(calls: int) -> tuple[int, int, int]:
    """Fork a child that waits for a byte on its go pipe, then times ``calls`` close(-1).

    Returns (pid, go write fd, report read fd); the child writes its loop's CPU ns."""
    go_r, go_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.read(go_r, 1)
            start = time.process_time_ns()
            for _ in range(calls):
                try:
                    os.close(-1)
                except OSError:
                    pass
            os.write(rep_w, _NS.pack(time.process_time_ns() - start))
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(rep_w)
    return pid, go_w, rep_r


def finish(pid: int, rep_r: int, drain: Callable[[], None] | None = None) -> int:
    """Wait for the child (draining while it runs); its loop's CPU time in ns."""
    while True:
        if drain is not None:
            drain()
        done, _ = os.waitpid(pid, 0 if drain is None else os.WNOHANG)
        if done:
            break
    if drain is not None:
        drain()
    ns = _NS.unpack(os.read(rep_r, 8))[0]
    os.close(rep_r)
    return ns


def release(go: int) -> int:
    """Let the child start; this process's CPU ns at that moment."""
    os.write(go, b"1")
    os.close(go)
    return time.process_time_ns()


def run_bare(calls: int) -> tuple[int, int]:
    pid, go, rep = spawn(calls)
    started = release(go)
    return finish(pid, rep), time.process_time_ns() - started


def run_stats(calls: int, everyone: bool) -> tuple[int, int]:
    pid, go, rep = spawn(calls)
    with SyscallStats(pid=None if everyone else pid) as stats:
        started = release(go)
        ns = finish(pid, rep)
        close = stats.snapshot().get("close")
        ours = time.process_time_ns() - started
    assert close is not None and close.calls >= calls, "stats missed the child's calls"
    return ns, ours


def run_record(calls: int) -> tuple[int, int]:
    pid, go, rep = spawn(calls)
    received = 0
    with tempfile.TemporaryDirectory() as tmp, \
            CaptureWriter(os.path.join(tmp, "bench.ewcap")) as writer, \
            Monitor(events=["close"], pid=pid) as mon:

        def drain() -> None:
            nonlocal received
            for rec in mon.reader.read_batch(timeout=0.05):
                if type(rec) is Sample:
                    writer.write_sample(rec.cpu, rec.data)
                    received += 1
                else:
                    writer.write_lost(rec.cpu, rec.count)

        started = release(go)
        ns = finish(pid, rep, drain)
        writer.flush()
        ours = time.process_time_ns() - started
        lost = mon.reader.lost_total
    assert received + lost >= calls, "the monitor missed the child's calls"
    return ns, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    modes: dict[str, Callable[[int], tuple[int, int]]] = {
        "nothing attached": run_bare,
        "stats, pid filter": lambda n: run_stats(n, everyone=False),
        "stats, all processes": lambda n: run_stats(n, everyone=True),
        "record (monitor, close)": run_record,
    }
    results: dict[str, list[float]] = {name: [] for name in modes}
    tracer: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.runs):  # interleaved, so drift on the VM hits every mode alike
        for name, run in modes.items():
            child_ns, our_ns = run(args.calls)
            results[name].append(child_ns / args.calls)
            tracer[name].append(our_ns / args.calls)
    base_best = min(results["nothing attached"])
    base_median = statistics.median(results["nothing attached"])
    print(f"{args.calls:,} close(-1) per run, {args.runs} runs per mode, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'mode':<24} {'best CPU ns/call':>16} {'median':>8} {'added ns':>9} {'ratio':>6} "
          f"{'tracer CPU ns/call':>18}")
    for name, values in results.items():
        best, median = min(values), statistics.median(values)
        print(f"{name:<24} {best:>16.0f} {median:>8.0f} {median - base_median:>9.0f} "
              f"{median / base_median:>6.2f} {statistics.median(tracer[name]):>18.0f}")
    print(f"(added ns and ratio from the medians; bare loop best {base_best:.0f} ns)")


if __name__ == "__main__":
    main()
