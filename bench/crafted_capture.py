"""Read time of crafted captures next to a valid capture of the same size (figures only).

Usage: PYTHONPATH=. python3 bench/crafted_capture.py [mib] [runs]

Crafted files (issue 7 item 4) are a valid header followed by hostile bytes:
  forged-1mib   version-2 record headers with a good header CRC, each claiming 1 MiB,
                with a wrong payload CRC (every one costs a 1 MiB CRC if not skipped whole)
  bad-head      the same headers with a wrong header CRC, one every 20 bytes
  bad-head-12   headers overlapping, one every 12 bytes (the densest that pass the
                reader's length prefilter)
  sync-only     the sync word repeated (a candidate every 4 bytes)
  v1-1mib       version-1 headers claiming 1 MiB (no header CRC: quadratic, read at a
                smaller size and scaled, see docs/capture-format.md)
The valid capture holds 120-byte samples. Each figure is the best of `runs`.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import tempfile
import time
import zlib

from ebpfwire.capture import (
    MAX_PAYLOAD,
    SYNC,
    CaptureReader,
    CaptureWriter,
    HostInfo,
    RecordType,
)

HOST = HostInfo("bench", "bench", 2)


def header(version: int) -> bytes:
    buf = io.BytesIO()
    CaptureWriter(buf, host=HOST, version=version).close()
    return buf.getvalue()


def forged_v2(good_head: bool) -> bytes:
    covered = struct.pack("<IHH", MAX_PAYLOAD, RecordType.SAMPLE, 0)
    head = zlib.crc32(covered) ^ (0 if good_head else 1)
    return SYNC + covered + struct.pack("<II", head, 0)


def forged_v1() -> bytes:
    return SYNC + struct.pack("<IIHH", 0, MAX_PAYLOAD, RecordType.SAMPLE, 0)


def valid(size: int) -> bytes:
    buf = io.BytesIO()
    payloads = [os.urandom(120) for _ in range(256)]
    with CaptureWriter(buf, host=HOST) as w:
        i = 0
        while buf.tell() + len(w._buf) < size:
            w.write_sample(i & 1, payloads[i & 255])
            i += 1
    return buf.getvalue()


def fill(version: int, unit: bytes, size: int) -> bytes:
    head = header(version)
    return head + unit * ((size - len(head)) // len(unit))


def read_time(path: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        with CaptureReader(path) as reader:
            for _ in reader:
                pass
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    mib = float(sys.argv[1]) if len(sys.argv) > 1 else 4
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    size = int(mib * (1 << 20))
    v1_size = (1 << 20) + 16 * 1024  # headers in the first 16 KiB each CRC 1 MiB
    cases = {
        "valid": valid(size),
        "forged-1mib": fill(2, forged_v2(True), size),
        "bad-head": fill(2, forged_v2(False), size),
        "bad-head-12": fill(2, forged_v2(False)[:12], size),
        "sync-only": fill(2, SYNC, size),
    }
    with tempfile.TemporaryDirectory() as tmp:
        times = {}
        for name, data in cases.items():
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(data)
            times[name] = read_time(path, runs)
        path = os.path.join(tmp, "v1")
        with open(path, "wb") as f:
            f.write(fill(1, forged_v1(), v1_size))
        v1_time = read_time(path, 1)
    base = times["valid"]
    print(f"{mib:g} MiB files, best of {runs}")
    for name, seconds in times.items():
        print(f"{name:12} {seconds * 1000:9.1f} ms  {mib / seconds:8.1f} MiB/s  "
              f"ratio {seconds / base:5.2f}")
    print(f"{'v1-1mib':12} {v1_time * 1000:9.1f} ms for a {v1_size // 1024} KiB file "
          f"(version 1 has no header CRC: {v1_time * 64:.1f} s per MiB of such headers)")


if __name__ == "__main__":
    main()
