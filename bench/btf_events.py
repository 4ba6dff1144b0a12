"""The compiled BTF decoder on libbpf-bootstrap's 168-byte event: per event and to Arrow.

Compiles tests/bpf/btf_events.bpf.c (clang, no kernel), makes N distinct events (pids,
durations, comm and filename texts of varying length) and times three decoders: BtfCodec
(the field by field reference, on a sample), CompiledStruct.decode per event, and
to_arrow on batches. Run: python bench/btf_events.py [--events 200000] [--batch 65536]
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bpf_object import compile_object  # noqa: E402

from ebpfwire.columnar.btfevents import to_arrow  # noqa: E402
from ebpfwire.kernel.btfstruct import CompiledStruct  # noqa: E402
from ebpfwire.kernel.maps import BtfCodec  # noqa: E402
from ebpfwire.kernel.objfile import read_spec  # noqa: E402

EVENT = struct.Struct("<iiIxxxxQ16s127s?")
WORDS = ["bash", "python3", "sshd", "cron", "systemd-journal", "ls", "cat", "curl"]


def events(n: int) -> list[bytes]:
    rnd = random.Random(1)
    return [EVENT.pack(rnd.randrange(1, 1 << 22), rnd.randrange(1, 1 << 22), rnd.randrange(256),
                       rnd.randrange(1 << 40), rnd.choice(WORDS).encode(),
                       ("/usr/bin/" + rnd.choice(WORDS) * rnd.randrange(1, 6)).encode()[:126],
                       bool(rnd.randrange(2)))
            for _ in range(n)]


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} events/s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=65_536)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = read_spec(compile_object("btf_events", Path(tmp)))
    tid = spec.btf.struct_id("event")
    data = events(args.events)

    codec = BtfCodec(spec.btf, tid)
    sample = data[:2000]
    t = time.perf_counter()
    for d in sample:
        codec.decode(d)
    print(f"BtfCodec.decode:        {rate(len(sample), time.perf_counter() - t)}")

    t = time.perf_counter()
    compiled = CompiledStruct(spec.btf, tid)
    print(f"compile:                {(time.perf_counter() - t) * 1e3:.2f} ms")
    decode = compiled.decode
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for d in data:
            decode(d)
        best = max(best, len(data) / (time.perf_counter() - t))
    print(f"CompiledStruct.decode:  {best:,.0f} events/s (best of 3)")

    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for i in range(0, len(data), args.batch):
            to_arrow(compiled, data[i : i + args.batch])
        best = max(best, len(data) / (time.perf_counter() - t))
    print(f"to_arrow (batch {args.batch}): {best:,.0f} events/s (best of 3)")


if __name__ == "__main__":
    main()
