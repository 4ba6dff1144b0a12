"""The cost of the process context: ``decode --format jsonl`` with it (the default) and
without it (``--raw``), over a capture of real processes.

Builds a capture of ``--events`` events (default 205,800) from fixtures/real-workload.ewcap
repeated whole, each repetition with its own pids (host and namespace pids shifted) and later
timestamps, so every repetition is new processes running their execs, opens, connects and
exits. Each run is a fresh process decoding to /dev/null; the two forms alternate, best of
``--runs`` each, and the median. Prints µs/event for both and the cost of the context as a
share of the raw JSON lines path (target: at most 25 %), from the best runs and from the
medians: on a shared VM a run now and then takes half as long again, whichever form it is.

    python bench/enrichment.py [--events 205800] [--runs 11] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ebpfwire.capture import CaptureReader, CaptureWriter, HostInfo, SampleRecord  # noqa: E402
from ebpfwire.cli import main  # noqa: E402

SOURCE = ROOT / "fixtures" / "real-workload.ewcap"
_TS = struct.Struct("<Q")
_PIDS = struct.Struct("<IIII")   # host_ppid, host_pid, ppid, pid at offset 16


def build(path: Path, count: int) -> None:
    """``count`` events: the real capture's samples, repeated with shifted pids and ts."""
    with CaptureReader(SOURCE) as reader:
        header = reader.header
        samples = [(r.cpu, r.data) for r in reader if isinstance(r, SampleRecord)]
    first = min(_TS.unpack_from(data)[0] for _, data in samples)
    span = max(_TS.unpack_from(data)[0] for _, data in samples) - first + 1_000_000
    pids = {value for _, data in samples for value in _PIDS.unpack_from(data, 16) if value > 1}
    low, width = min(pids), max(pids) - min(pids) + 1
    host = HostInfo(header.kernel_release, header.hostname, header.ncpus)
    with CaptureWriter(path, layout=header.layout, arch=header.arch, host=host,
                       boot_time_ns=header.boot_time_ns, start_time_ns=header.start_time_ns,
                       buffer_size=1 << 20) as writer:
        written, round_ = 0, 0
        while written < count:
            shift = (round_ * width) % (4_000_000 - low - width)
            for cpu, data in samples:
                if written == count:
                    break
                ts = _TS.unpack_from(data)[0] + round_ * span
                ids = [value + shift if value in pids else value
                       for value in _PIDS.unpack_from(data, 16)]
                writer.write_sample(cpu, _TS.pack(ts) + data[8:16] + _PIDS.pack(*ids)
                                    + data[32:])
                written += 1
            round_ += 1


def child(path: str, raw: bool) -> None:
    """One run: decode to /dev/null; print the seconds for the parent."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        started = time.perf_counter()
        status = main(["decode", "--format", "jsonl", *(["--raw"] if raw else []), path])
        elapsed = time.perf_counter() - started
    print(f"{elapsed} {status}")


def run_once(path: Path, raw: bool) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", str(path),
                          *(["--raw"] if raw else [])],
                         capture_output=True, text=True, check=True).stdout.split()
    if int(out[1]) != 0:
        raise SystemExit(f"decode of {path} exited with {out[1]}")
    return float(out[0])


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=205_800)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.raw)
        return
    path = args.dir / f"ebpfwire-enrichment-{args.events}.ewcap"
    if not path.exists():
        build(path, args.events)
    print(f"ebpfwire decode --format jsonl [--raw] > /dev/null, {args.events:,} events "
          f"({path.stat().st_size / 1e6:.1f} MB), {args.runs} runs each, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.runs):
        for raw in (True, False):
            times[raw].append(run_once(path, raw) * 1e6 / args.events)
    for label, pick in (("best", min), ("median", statistics.median)):
        raw_us, rich_us = pick(times[True]), pick(times[False])
        print(f"{label} of {args.runs}:")
        print(f"  raw (--raw):         {raw_us:6.2f} us/event  {1e6 / raw_us:>9,.0f} events/s")
        print(f"  with the context:    {rich_us:6.2f} us/event  {1e6 / rich_us:>9,.0f} events/s")
        print(f"  cost of the context: {rich_us - raw_us:6.2f} us/event  "
              f"{100 * (rich_us - raw_us) / raw_us:.1f} % of the raw path (target: <= 25 %)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main_bench()
