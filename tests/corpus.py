"""Bigger captures for tests: the records of a real capture repeated, header kept."""

from __future__ import annotations

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
