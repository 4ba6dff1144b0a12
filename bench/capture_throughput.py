"""Raw record throughput of the capture file: write and read rates (figures, not pass/fail).

Usage: python3 bench/capture_throughput.py [records] [sample_bytes]

Samples are random bytes of the given size (default 120, a typical open/openat event with
the classic context header plus padding). The read figure is the framing layer alone
(sync, length, CRC32, record objects); decoding to JSONL is measured elsewhere.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from ebpfwire.capture import CaptureReader, CaptureWriter, HostInfo


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 120
    payloads = [os.urandom(size) for _ in range(256)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.cap")
        host = HostInfo("bench", "bench", 2)
        start = time.perf_counter()
        with CaptureWriter(path, host=host) as writer:
            write = writer.write_sample
            for i in range(count):
                write(i & 1, payloads[i & 255])
        write_s = time.perf_counter() - start
        file_size = os.path.getsize(path)

        start = time.perf_counter()
        seen = 0
        with CaptureReader(path) as reader:
            for _ in reader:
                seen += 1
        read_s = time.perf_counter() - start
        assert seen == count and not reader.damage

    mib = file_size / (1 << 20)
    print(f"{count} records of {size} sample bytes, file {mib:.1f} MiB")
    print(f"write: {count / write_s:12,.0f} records/s  {mib / write_s:8.1f} MiB/s")
    print(f"read:  {count / read_s:12,.0f} records/s  {mib / read_s:8.1f} MiB/s")


if __name__ == "__main__":
    main()
