"""Reading a capture by byte ranges: the ranges together give exactly the whole-file read."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebpfwire.capture import (
    CaptureReader,
    CaptureWriter,
    HostInfo,
    split_ranges,
)
from ebpfwire.capture.format import RECORD_HEADER_SIZE

HOST = HostInfo(kernel_release="6.18.0-test", hostname="split", ncpus=2)

records_st = st.lists(st.one_of(
    st.tuples(st.just("sample"), st.integers(0, 3), st.binary(max_size=120)),
    st.tuples(st.just("lost"), st.integers(0, 3), st.integers(0, 2**64 - 1)),
), max_size=30)

# The ways captures break (as in test_capture.py): a flipped byte, garbage inserted,
# a stretch overwritten with random bytes, a cut tail.
damage_st = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("overwrite"), st.floats(0, 1), st.binary(min_size=1, max_size=60)),
    st.tuples(st.just("cut"), st.floats(0, 1), st.just(b"")),
), max_size=3)


def build(records, version: int) -> tuple[bytes, int]:
    buf = io.BytesIO()
    with CaptureWriter(buf, host=HOST, boot_time_ns=1, start_time_ns=2, version=version) as w:
        start = buf.tell()
        for kind, cpu, value in records:
            w.write_sample(cpu, value) if kind == "sample" else w.write_lost(cpu, value)
    return buf.getvalue(), start


def damage(data: bytes, start: int, ops) -> bytes:
    out = bytearray(data)
    for kind, where, value in ops:
        at = start + int(where * (len(out) - start))
        if kind == "flip" and at < len(out):
            out[at] ^= value
        elif kind == "insert":
            out[at:at] = value
        elif kind == "overwrite":
            out[at:at + len(value)] = value
        elif kind == "cut":
            del out[at:]
    return bytes(out)


def read(path: Path, **kw) -> tuple[list, list, list]:
    with CaptureReader(path, **kw) as reader:
        records = list(reader)
    return records, reader.damage, reader.notes


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records_st, damage_st, st.integers(1, 600), st.sampled_from([1, 2]))
def test_ranges_concatenate_to_the_whole_file(tmp_path, records, ops, split_bytes, version):
    """Ranges start where split_ranges says (records the chain of headers reaches), so
    damage and resynchronisation read the same in every range as in the whole file."""
    data, start = build(records, version)
    data = damage(data, start, ops)
    path = tmp_path / "split.ewcap"
    path.write_bytes(data)
    with CaptureReader(path) as reader:
        whole = (list(reader), reader.damage, reader.notes)
        spans = reader.unanchored
    ranges = split_ranges(path, split_bytes=split_bytes)
    got: tuple[list, list, list] = ([], [], [])
    for lo, hi in ranges:
        part = read(path, start=lo, end=hi)
        assert all(lo <= r.offset < hi for r in part[0])
        for mine, theirs in zip(got, part, strict=True):
            mine.extend(theirs)
    assert got == whole
    # the same starts from the offsets of one reader pass (as a context index gives them)
    starts = [r.offset for r in whole[0] if not any(lo <= r.offset < hi for lo, hi in spans)]
    assert split_ranges(path, split_bytes=split_bytes, starts=starts) == ranges


def test_split_ranges_cover_the_data_once(tmp_path):
    data, start = build([("sample", 0, bytes(100))] * 50, 2)
    path = tmp_path / "r.ewcap"
    path.write_bytes(data)
    for kw in ({"parts": 3}, {"split_bytes": 1000}, {}):
        ranges = split_ranges(path, **kw)
        assert ranges[0][0] == start and ranges[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        records = [r for lo, hi in ranges for r in read(path, start=lo, end=hi)[0]]
        assert records == read(path)[0]
    offsets = {r.offset for r in read(path)[0]}
    ranges = split_ranges(path, split_bytes=1000)
    assert all(lo in offsets for lo, _ in ranges)  # each starts at a record, at most one
    assert all(hi - lo < 1000 + RECORD_HEADER_SIZE + 104 for lo, hi in ranges)  # past 1000
    assert len(split_ranges(path, parts=4)) == 4
    with pytest.raises(ValueError, match="parts or split_bytes"):
        split_ranges(path, parts=2, split_bytes=10)


def test_a_range_reads_from_a_pipe_too(tmp_path):
    data, start = build([("sample", i % 2, b"%d" % i) for i in range(20)], 2)
    path = tmp_path / "p.ewcap"
    path.write_bytes(data)
    whole = read(path)[0]
    with CaptureReader(io.BufferedReader(io.BytesIO(data)), start=whole[6].offset) as reader:
        assert [r.data for r in reader] == [r.data for r in whole[6:]]


def test_follow_and_a_range_end_do_not_mix(tmp_path):
    data, _ = build([], 2)
    path = tmp_path / "f.ewcap"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="does not follow"):
        CaptureReader(path, follow=True, end=100)
