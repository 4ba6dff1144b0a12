"""Kernel-to-user throughput: how many events/s the monitor's reader takes in without loss.

A child process calls close(-1) in a tight loop for a few seconds (each call is one
traced `close` event, EBADF); the parent reads the per-CPU rings at the same time and
prints what the child sent, what arrived, what was reported lost, the reader's CPU and its
memory. Both transports run the same workload, one after the other, in one run. Needs root.
Run: python bench/perf_throughput.py [--seconds 3] [--transport perf|ringbuf|both]
"""

from __future__ import annotations

import argparse
import os
import resource
import struct
import time

from ebpfwire.kernel.monitor import Monitor
from ebpfwire.kernel.perf import DEFAULT_PAGE_COUNT, PAGE_SIZE, Sample

HOST_PID = struct.Struct("<I")  # classic header: host_pid at byte 20


def flood(seconds: float, report_fd: int) -> None:
    """Child: close(-1) until the time is up, then report how many calls were made."""
    calls, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(1000):
            try:
                os.close(-1)
            except OSError:
                pass
        calls += 1000
    os.write(report_fd, struct.pack("<Q", calls))


def measure(transport: str, seconds: float) -> None:
    """One run of the flood through ``transport`` at its default ring size; prints a row."""
    report_r, report_w = os.pipe()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with Monitor(events=["close"], pid=os.getpid(), transport=transport) as mon:
        reader = mon.reader
        received = 0
        start, cpu_start = time.monotonic(), time.process_time()
        child = os.fork()
        if child == 0:
            try:
                flood(seconds, report_w)
            finally:
                os._exit(0)
        while True:
            for rec in reader.read_batch(timeout=0.2):
                if type(rec) is Sample and HOST_PID.unpack_from(rec.data, 20)[0] == child:
                    received += 1
            pid, _ = os.waitpid(child, os.WNOHANG)
            if pid:
                break
        while batch := reader.read_batch(timeout=0.2):  # what is left after the child ended
            received += sum(type(rec) is Sample and HOST_PID.unpack_from(rec.data, 20)[0]
                            == child for rec in batch)
        elapsed = time.monotonic() - start
        reader_cpu = time.process_time() - cpu_start
        sent = struct.unpack("<Q", os.read(report_r, 8))[0]
        lost = reader.lost_total
        ring_mib = (mon.ring_bytes if transport == "ringbuf"
                    else DEFAULT_PAGE_COUNT * PAGE_SIZE) / 2**20
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ring = f"{ring_mib:g} MiB" + (" per CPU" if transport == "perf" else " shared")
    print(f"{transport:8} {ring:>16} {sent:>10,} {received:>10,} {lost:>8,} "
          f"{sent - received - lost:>8,} {received / elapsed:>12,.0f} "
          f"{1e6 * reader_cpu / max(received, 1):>10.2f} {rss_mib:>8.0f} "
          f"(+{(rss_mib - rss_before / 1024):.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--transport", choices=("perf", "ringbuf", "both"), default="both")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; close(-1) flood for {args.seconds:g} s")
    print(f"{'transport':8} {'ring':>16} {'sent':>10} {'received':>10} {'lost':>8} "
          f"{'missing':>8} {'events/s':>12} {'us CPU/ev':>10} {'RSS MiB':>8}")
    for transport in ("perf", "ringbuf") if args.transport == "both" else (args.transport,):
        measure(transport, args.seconds)


if __name__ == "__main__":
    main()
