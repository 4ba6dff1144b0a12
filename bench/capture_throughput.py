"""Raw record throughput of the capture file: write and read rates (figures, not pass/fail).

Usage: PYTHONPATH=. python3 bench/capture_throughput.py [records] [sample_bytes] [runs]

Samples are random bytes of the given size (default 120, about an openat event in the
classic layout with its perf padding). The read figure is the framing layer alone (sync
word, length, CRC32, record objects); decoding to JSONL is measured elsewhere. Each figure
is the best of `runs` runs (default 3), since the machine may be shared.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from ebpfwire.capture import CaptureReader, CaptureWriter, HostInfo


def write(path: str, payloads: list[bytes], count: int) -> float:
    start = time.perf_counter()
    with CaptureWriter(path, host=HostInfo("bench", "bench", 2), mode="replace") as writer:
        write_sample = writer.write_sample
        for i in range(count):
            write_sample(i & 1, payloads[i & 255])
    return time.perf_counter() - start


def read(path: str, count: int) -> float:
    start = time.perf_counter()
    seen = 0
    with CaptureReader(path) as reader:
        for _ in reader:
            seen += 1
    elapsed = time.perf_counter() - start
    if seen != count or reader.damage:
        raise SystemExit(f"read {seen} records of {count}, damage: {reader.damage}")
    return elapsed


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 120
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    payloads = [os.urandom(size) for _ in range(256)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.cap")
        write_s = min(write(path, payloads, count) for _ in range(runs))
        read_s = min(read(path, count) for _ in range(runs))
        mib = os.path.getsize(path) / (1 << 20)
    print(f"{count} records of {size} sample bytes, file {mib:.1f} MiB, best of {runs}")
    print(f"write: {count / write_s:12,.0f} records/s  {mib / write_s:8.1f} MiB/s")
    print(f"read:  {count / read_s:12,.0f} records/s  {mib / read_s:8.1f} MiB/s")


if __name__ == "__main__":
    main()
