"""Perf ring throughput: how many events/s the PerfReader takes in without loss.

A child process calls close(-1) in a tight loop for a few seconds (each call is one
traced `close` event, EBADF); the parent reads the per-CPU rings at the same time and
prints what the child sent, what arrived, and what the kernel reported lost. Needs
root. Run: python bench/perf_throughput.py [--seconds 3] [--page-count N]
"""

from __future__ import annotations

import argparse
import os
import struct
import time

from ebpfwire.loader import Monitor
from ebpfwire.perf import DEFAULT_PAGE_COUNT, PAGE_SIZE, Sample

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--page-count", type=int, default=DEFAULT_PAGE_COUNT)
    args = parser.parse_args()

    report_r, report_w = os.pipe()
    with Monitor(events=["close"], pid=os.getpid(), page_count=args.page_count) as mon:
        reader = mon.reader
        received = 0
        start, cpu_start = time.monotonic(), time.process_time()
        child = os.fork()
        if child == 0:
            try:
                flood(args.seconds, report_w)
            finally:
                os._exit(0)
        while True:
            for rec in reader.read_batch(timeout=0.2):
                if type(rec) is Sample and HOST_PID.unpack_from(rec.data, 20)[0] == child:
                    received += 1
            pid, _ = os.waitpid(child, os.WNOHANG)
            if pid:
                break
        for rec in reader.read_batch(timeout=0.2):  # what is left after the child ended
            if type(rec) is Sample and HOST_PID.unpack_from(rec.data, 20)[0] == child:
                received += 1
        elapsed = time.monotonic() - start
        reader_cpu = time.process_time() - cpu_start
        sent = struct.unpack("<Q", os.read(report_r, 8))[0]
        lost = reader.lost_total
    ring_kib = args.page_count * PAGE_SIZE // 1024
    print(f"ring: {args.page_count} pages ({ring_kib} KiB) per CPU, {len(reader.cpus)} CPUs")
    print(f"sent:     {sent:>10,} close(-1) calls in {args.seconds:.1f} s "
          f"({sent / args.seconds:,.0f}/s)")
    print(f"received: {received:>10,} samples ({received / elapsed:,.0f} events/s)")
    print(f"lost:     {lost:>10,} (kernel LOST records; a trailing loss shows only on the next "
          "write to that ring)")
    print(f"missing:  {sent - received - lost:>10,}")
    print(f"reader:   {reader_cpu:.2f} s CPU in {elapsed:.2f} s "
          f"({received / max(reader_cpu, 1e-9):,.0f} events per CPU-second)")


if __name__ == "__main__":
    main()
