"""The recorder against bpftrace: loss by rate per transport, traced cost, untraced tax.

In one run:

- **loss curve**: for each transport at its default size, a child calls ``close(-1)``
  (the ``close`` event) at each asked rate (``--rates``, events/s; 0 = as fast as it can)
  for ``--seconds``, while the parent reads as ``ebpfwire record`` does; a row gives what
  was made, received and reported lost, and "missing" (made - received - lost, which
  must be 0).
- **traced cost / untraced tax**: CPU time per call of a child's loop of ``close(-1)``
  (traced) and of ``getpid()`` (untraced) with nothing attached, with our monitor
  recording ``close`` (reader draining in this process) and with bpftrace tracing
  ``close`` (``tracepoint:syscalls:sys_enter_close``/``sys_exit_close`` printing one
  line per event to /dev/null); interleaved ``--runs`` times, medians. bpftrace is
  skipped with one line when it is not installed.

Needs root. Run: PYTHONPATH=. python3 bench/recorder.py [--seconds 3] [--runs 3]
[--rates 50000,100000,200000,0] [--skip-curve] [--skip-cost]
"""

from __future__ import annotations

import argparse
import os
import struct
import time

from ebpfwire.kernel.monitor import Monitor
from ebpfwire.kernel.perf import PAGE_SIZE, Lost, Sample

HOST_PID = struct.Struct("<I")  # classic header: host_pid at byte 20


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
                    received += HOST_PID.unpack_from(rec.data, 20)[0] == child
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rates", default="50000,100000,200000,400000,0")
    parser.add_argument("--transports", default="default,perf,ringbuf")
    parser.add_argument("--hogs", default="0,2",
                        help="busy-loop processes beside each run (comma list: one row each)")
    parser.add_argument("--ring-bytes", type=int, help="instead of each transport's default")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
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
