"""Captures for tests: the records of a real capture repeated (header kept), or damaged."""

from __future__ import annotations

import random
import struct
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def repeated(source: Path, target: Path, copies: int) -> Path:
    """`target`: the header of `source`, then its records `copies` times over (records are
    self-contained, so the result is a valid capture of copies x the samples)."""
    data = source.read_bytes()
    info_length = struct.unpack_from("<H", data, 10)[0]
    header = 12 + info_length + 4
    target.write_bytes(data[:header] + data[header:] * copies)
    return target


def damaged(data: bytes, rng: random.Random, start: int, end: int) -> bytes:
    """``data`` with a few bits flipped, stretches cut out or junk put in, all within
    [start, end): damage of every kind the readers resynchronise past."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(start, min(end, len(out)))
        kind = rng.randrange(3)
        if kind == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del out[at:at + rng.randint(1, 64)]
        else:
            out[at:at] = rng.randbytes(rng.randint(1, 64))
    return bytes(out)


def damaged_fixture(seed: int, target: Path) -> Path:
    """`target`: a fixture capture chosen and damaged by ``seed`` past its header, an odd
    seed within the first 600 bytes of records (where the layout check holds records back),
    an even one anywhere."""
    from ebpfwire.capture import CaptureReader

    rng = random.Random(seed)
    source = rng.choice(sorted(FIXTURES.glob("*.ewcap")))
    with CaptureReader(source) as reader:
        begin = next(iter(reader)).offset
    data = source.read_bytes()
    target.write_bytes(damaged(data, rng, begin, begin + 600 if seed % 2 else len(data)))
    return target


def made_capture(path: Path, items: list) -> Path:
    """`path`: a capture of ``items`` (as Hypothesis makes them): a sample's bytes, or the
    count of a LOST record; item i on CPU i % 2, so that time order and file order differ."""
    from ebpfwire.capture import CaptureWriter, HostInfo

    with CaptureWriter(str(path), host=HostInfo(kernel_release="k", hostname="h", ncpus=2),
                       boot_time_ns=1, start_time_ns=2) as writer:
        for at, item in enumerate(items):
            (writer.write_lost(at % 2, item) if isinstance(item, int)
             else writer.write_sample(at % 2, item))
    return path
