"""What tracing costs the traced process: ns per syscall with stats, with record, with neither.

A child process calls close(-1) N times (EBADF each time) and times its own loop; it runs
with nothing attached, with SyscallStats counting its syscalls (in-kernel histograms, no
event sent), with SyscallStats counting every process's syscalls, and with the monitor
recording its close events (perf rings drained by this process into a CaptureWriter on a
temp file, as `ebpfwire record` does). Each mode runs several times; the best and the
median run are printed, with the added ns per syscall and the ratio to the bare loop.
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
from ebpfwire.loader import Monitor
from ebpfwire.perf import Sample
from ebpfwire.stats import SyscallStats

_NS = struct.Struct("<Q")


def spawn(calls: int) -> tuple[int, int, int]:
    """Fork a child that waits for a byte on its go pipe, then times ``calls`` close(-1).

    Returns (pid, go write fd, report read fd); the child writes its loop time in ns."""
    go_r, go_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.read(go_r, 1)
            start = time.perf_counter_ns()
            for _ in range(calls):
                try:
                    os.close(-1)
                except OSError:
                    pass
            os.write(rep_w, _NS.pack(time.perf_counter_ns() - start))
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(rep_w)
    return pid, go_w, rep_r


def finish(pid: int, rep_r: int, drain: Callable[[], None] | None = None) -> int:
    """Wait for the child (draining while it runs); its loop time in ns."""
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


def run_bare(calls: int) -> int:
    pid, go, rep = spawn(calls)
    os.write(go, b"1")
    os.close(go)
    return finish(pid, rep)


def run_stats(calls: int, everyone: bool) -> int:
    pid, go, rep = spawn(calls)
    with SyscallStats(pid=None if everyone else pid) as stats:
        os.write(go, b"1")
        os.close(go)
        ns = finish(pid, rep)
        close = stats.snapshot().get("close")
    assert close is not None and close.calls >= calls, "stats missed the child's calls"
    return ns


def run_record(calls: int) -> int:
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

        os.write(go, b"1")
        os.close(go)
        ns = finish(pid, rep, drain)
        lost = mon.reader.lost_total
    assert received + lost >= calls, "the monitor missed the child's calls"
    return ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    modes: dict[str, Callable[[int], int]] = {
        "nothing attached": run_bare,
        "stats, pid filter": lambda n: run_stats(n, everyone=False),
        "stats, all processes": lambda n: run_stats(n, everyone=True),
        "record (monitor, close)": run_record,
    }
    results: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.runs):  # interleaved, so drift on the VM hits every mode alike
        for name, run in modes.items():
            results[name].append(run(args.calls) / args.calls)
    base_best = min(results["nothing attached"])
    base_median = statistics.median(results["nothing attached"])
    print(f"{args.calls:,} close(-1) per run, {args.runs} runs per mode, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'mode':<24} {'best ns/call':>12} {'median':>8} {'added ns':>9} {'ratio':>6}")
    for name, values in results.items():
        best, median = min(values), statistics.median(values)
        print(f"{name:<24} {best:>12.0f} {median:>8.0f} {median - base_median:>9.0f} "
              f"{median / base_median:>6.2f}")
    print(f"(added ns and ratio from the medians; bare loop best {base_best:.0f} ns)")


if __name__ == "__main__":
    main()
