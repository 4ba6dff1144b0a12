"""Ring buffer throughput: how many events/s the RingBufReader takes in, and what is lost.

Uses the test object tests/bpf/ringbuf_test.bpf.c (compiled with clang): a child calls
getppid() in a tight loop for a few seconds, and each call writes one record of 8 to 68
bytes (40 on average) into the BPF ring buffer, or counts a drop in a per-CPU map; the
parent reads the ring at the same time and prints what the child sent, what arrived,
what the program counted lost, and the reader's CPU time per event. Needs root and clang.
Run: python bench/ringbuf_throughput.py [--seconds 3] [--ring-size BYTES] [--pace N]
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bpf_object import LoadedObject, compile_object  # noqa: E402

from ebpfwire.kernel import syscalls  # noqa: E402
from ebpfwire.kernel.perf import Sample  # noqa: E402
from ebpfwire.kernel.ringbuf import RingBufReader  # noqa: E402

DEFAULT_RING_SIZE = 4 << 20
SEQ = struct.Struct("<I")


def flood(seconds: float, pace: int, go_fd: int, report_fd: int) -> None:
    """Child: wait for the go, getppid() until the time is up, report the call count.

    ``pace`` untraced getpid() calls follow each getppid(): a slower producer.
    """
    os.read(go_fd, 1)
    calls, end = 0, time.monotonic() + seconds
    getppid, getpid, idle = os.getppid, os.getpid, range(pace)
    while time.monotonic() < end:
        for _ in range(1000):
            getppid()
            for _ in idle:
                getpid()
        calls += 1000
    os.write(report_fd, struct.pack("<Q", calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--ring-size", type=int, default=DEFAULT_RING_SIZE,
                        help="data bytes of the ring (a power of two >= 4096)")
    parser.add_argument("--pace", type=int, default=0,
                        help="untraced getpid() calls after each traced getppid()")
    args = parser.parse_args()

    go_r, go_w = os.pipe()
    report_r, report_w = os.pipe()
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_object("ringbuf_test", Path(tmp))
        with LoadedObject(path, {"ring": args.ring_size}) as obj:
            child = os.fork()
            if child == 0:
                try:
                    flood(args.seconds, args.pace, go_r, report_w)
                finally:
                    os._exit(0)
            syscalls.map_update(obj.map_fds["config"], bytes(4), struct.pack("<II", child, 0))
            reader = RingBufReader(obj.map_fds["ring"], args.ring_size,
                                   drops_map_fd=obj.map_fds["drops"])
            with reader:
                received, out_of_order, last, batches = 0, 0, -1, 0
                start, cpu_start = time.monotonic(), time.process_time()
                os.write(go_w, b"1")
                done = False
                while True:
                    batch = reader.read_batch(timeout=0.2)
                    batches += bool(batch)
                    for rec in batch:
                        if type(rec) is Sample:
                            received += 1
                            seq = SEQ.unpack_from(rec.data)[0]
                            out_of_order += seq <= last
                            last = seq
                    if done and not batch:  # an empty read also took in the last drops
                        break
                    done = done or os.waitpid(child, os.WNOHANG)[0] != 0
                elapsed = time.monotonic() - start
                reader_cpu = time.process_time() - cpu_start
                lost = reader.lost_total
    sent = struct.unpack("<Q", os.read(report_r, 8))[0]
    print(f"ring: {args.ring_size // 1024} KiB shared by all CPUs; pace {args.pace}")
    print(f"sent:     {sent:>10,} getppid() calls in {args.seconds:.1f} s "
          f"({sent / args.seconds:,.0f}/s)")
    print(f"received: {received:>10,} records ({received / elapsed:,.0f} events/s), "
          f"{out_of_order} out of order")
    print(f"lost:     {lost:>10,} (failed outputs counted by the program)")
    print(f"missing:  {sent - received - lost:>10,}")
    print(f"reader:   {reader_cpu:.2f} s CPU in {elapsed:.2f} s "
          f"({received / max(reader_cpu, 1e-9):,.0f} events per CPU-second, "
          f"{1e6 * reader_cpu / max(received, 1):.2f} µs per event), "
          f"{received / max(batches, 1):,.0f} records per batch")


if __name__ == "__main__":
    main()
