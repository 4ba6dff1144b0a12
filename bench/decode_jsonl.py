"""Decode-to-JSONL speed of the command line, and that its memory does not grow with the file.

Builds captures of 200,000 and 1,000,000 events (the bundled sample's events, cycled, each
with its own timestamp), then runs ``ebpfwire decode --format jsonl --raw FILE > /dev/null`` in a
fresh process per run and prints events/s (best of N) and the process's peak RSS
(``resource.getrusage``). Equal peak RSS at both sizes shows memory does not grow with the
file. The load average is printed too: other work on the machine slows the figures.

    python bench/decode_jsonl.py [--sizes 200000 1000000] [--runs 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ebpfwire.capture import CaptureReader, CaptureWriter, HostInfo, SampleRecord  # noqa: E402
from ebpfwire.cli import main  # noqa: E402
from ebpfwire.cli.decode import bundled_sample  # noqa: E402

_TS = struct.Struct("<Q")


def build(path: Path, count: int) -> None:
    """A capture of ``count`` events: the bundled sample's, cycled, timestamps increasing."""
    with CaptureReader(bundled_sample()) as reader:
        header = reader.header
        samples = [(r.cpu, r.data) for r in reader if isinstance(r, SampleRecord)]
    host = HostInfo(header.kernel_release, header.hostname, header.ncpus)
    with CaptureWriter(path, layout=header.layout, arch=header.arch, host=host,
                       boot_time_ns=header.boot_time_ns, start_time_ns=header.start_time_ns,
                       buffer_size=1 << 20) as writer:
        ts = 3_600_000_000_000
        for i in range(count):
            cpu, data = samples[i % len(samples)]
            ts += 1_000 + i % 7
            writer.write_sample(cpu, _TS.pack(ts) + data[8:])


def child(path: str) -> None:
    """One run: decode to /dev/null; print seconds and peak RSS (KiB) for the parent."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        started = time.perf_counter()
        status = main(["decode", "--format", "jsonl", "--raw", path])
        elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{elapsed} {peak} {status}")


def measure(path: Path, runs: int) -> tuple[float, int]:
    best, peak = float("inf"), 0
    for _ in range(runs):
        out = subprocess.run([sys.executable, __file__, "--child", str(path)],
                             capture_output=True, text=True, check=True).stdout.split()
        elapsed, rss, status = float(out[0]), int(out[1]), int(out[2])
        if status != 0:
            raise SystemExit(f"decode of {path} exited with {status}")
        best, peak = min(best, elapsed), max(peak, rss)
    return best, peak


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"ebpfwire decode --format jsonl --raw > /dev/null, best of {args.runs}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for size in args.sizes:
        path = args.dir / f"ebpfwire-bench-{size}.ewcap"
        if not path.exists():
            build(path, size)
        seconds, peak_kib = measure(path, args.runs)
        print(f"{size:>9,} events  {path.stat().st_size / 1e6:7.1f} MB  "
              f"{size / seconds:>10,.0f} events/s  ({seconds * 1e6 / size:.2f} us/event)  "
              f"peak RSS {peak_kib / 1024:.1f} MiB")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main_bench()
