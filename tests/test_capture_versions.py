"""Format version 2 (records whose header checks itself) and version 1 compatibility."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebpfwire.capture import (
    FORMAT_VERSION,
    MAX_PAYLOAD,
    RECORD_HEADER_SIZE,
    SYNC,
    CaptureFileV1,
    CaptureReader,
    CaptureWriter,
    HostInfo,
    Record,
    RecordPayload,
    RecordType,
    RecordV1,
    scan,
)

HOST = HostInfo(kernel_release="6.18.0-test", hostname="versions", ncpus=2)
RECORDS = [("sample", 0, b"first"), ("lost", 1, 5), ("sample", 1, b"x" * 300),
           ("sample", 0, b"")]


def build(version: int, records=RECORDS) -> bytes:
    buf = io.BytesIO()
    with CaptureWriter(buf, host=HOST, boot_time_ns=1, start_time_ns=2, version=version) as w:
        for kind, cpu, value in records:
            w.write_sample(cpu, value) if kind == "sample" else w.write_lost(cpu, value)
    return buf.getvalue()


def read(data: bytes) -> tuple[list[tuple], CaptureReader]:
    with CaptureReader(io.BytesIO(data)) as reader:
        out = [("sample", r.cpu, r.data) if hasattr(r, "data") else ("lost", r.cpu, r.count)
               for r in reader]
    return out, reader


def test_writers_write_version_2_and_the_reader_reads_both():
    assert FORMAT_VERSION == 2
    for version in (1, 2):
        data = build(version)
        got, reader = read(data)
        assert reader.header.version == version
        assert got == RECORDS and reader.damage == []


def test_version_1_writer_output_is_the_version_1_schema():
    data = build(1)
    parsed = CaptureFileV1.parse(data)
    assert [r.type for r in parsed.records] == [1, 2, 1, 1]
    header_len = len(data) - sum(len(RecordV1.build({"type": r.type, "payload": r.payload}))
                                 for r in parsed.records)
    rebuilt = b"".join(RecordV1.build({"type": r.type, "payload": r.payload})
                       for r in parsed.records)
    assert data[header_len:] == rebuilt


def test_version_2_writer_output_is_the_version_2_schema():
    data = build(2)
    rebuilt = b"".join(Record.build({"type": RecordType.SAMPLE if kind == "sample" else
                                     RecordType.LOST,
                                     "payload": RecordPayload.build(
                                         {"cpu": cpu, "data": value} if kind == "sample"
                                         else {"cpu": cpu, "count": value},
                                         type=RecordType.SAMPLE if kind == "sample"
                                         else RecordType.LOST)})
                       for kind, cpu, value in RECORDS)
    assert data.endswith(rebuilt)


def test_appending_keeps_the_file_version(tmp_path):
    for version in (1, 2):
        path = tmp_path / f"v{version}.ewcap"
        path.write_bytes(build(version))
        with CaptureWriter.append(path) as w:
            w.write_sample(3, b"appended")
        got, reader = read(path.read_bytes())
        assert reader.header.version == version
        assert got == RECORDS + [("sample", 3, b"appended")] and reader.damage == []


def test_a_record_inside_a_damaged_payload_is_found_but_marked_resynchronised():
    """A record whose payload is damaged is looked into from just after its header (it may
    be a cut record followed by intact ones): a valid-looking record inside its payload is
    found, but only ever as resynchronised, never as a clean record, and so is what follows
    it within reach of the damaged record (the rest of the outer payload is damage again)."""
    inner = Record.build({"type": RecordType.SAMPLE,
                          "payload": RecordPayload.build({"cpu": 9, "data": b"forged"},
                                                         type=RecordType.SAMPLE)})
    data = bytearray(build(2, [("sample", 0, b"a"), ("sample", 1, b"<" + inner + b">"),
                               ("sample", 0, b"b")]))
    second = data.index(b"<") - 4 - RECORD_HEADER_SIZE
    data[data.index(b"<")] ^= 0xFF  # damage the outer payload, not the inner record
    with CaptureReader(io.BytesIO(bytes(data))) as reader:
        records = list(reader)
    assert [(r.cpu, r.data, r.resync) for r in records[:2]] == [
        (0, b"a", None), (9, b"forged", second)]
    assert records[2].data == b"b" and records[2].resync is not None
    assert reader.damage[0].offset == second
    assert "payload CRC32" in reader.damage[0].message
    assert "marked resynchronised" in reader.damage[0].message


def test_a_damaged_header_resynchronises_on_the_next_header():
    data = bytearray(build(2))
    first = len(data) - sum(RECORD_HEADER_SIZE + (4 + len(v) if k == "sample" else 12)
                            for k, _, v in RECORDS)
    data[first + 5] ^= 0x01  # the length of record 0
    got, reader = read(bytes(data))
    assert got == RECORDS[1:]
    assert [d.offset for d in reader.damage] == [first]
    assert "header CRC32" in reader.damage[0].message


class CountingCrc:
    """Counts the bytes the reader's CRC32 calls go over."""

    def __init__(self):
        self.bytes = 0
        self.crc32 = zlib.crc32

    def __call__(self, data, value=0):
        self.bytes += len(data)
        return self.crc32(data, value)


@pytest.mark.parametrize("claim_valid_head", [True, False])
def test_forged_headers_cost_linear_work(monkeypatch, claim_valid_head):
    """A file of headers each claiming 1 MiB: the reader's CRC work stays within twice
    the file size (version 1 did 1 MiB of CRC per 16 bytes)."""
    covered = struct.pack("<IHH", MAX_PAYLOAD, RecordType.SAMPLE, 0)
    head = zlib.crc32(covered) ^ (0 if claim_valid_head else 1)
    unit = SYNC + covered + struct.pack("<II", head, 0)
    data = build(2, []) + unit * ((3 << 20) // len(unit))
    counter = CountingCrc()
    monkeypatch.setattr(scan.zlib, "crc32", counter)
    got, reader = read(data)
    assert got == [] and len(reader.damage) >= 1
    assert counter.bytes <= 2 * len(data)


def test_version_1_forged_headers_still_read(monkeypatch):
    """Version 1 has no header CRC: the documented bound (each candidate CRCs its claimed
    length) holds, and the result is right."""
    unit = SYNC + struct.pack("<IIHH", 0, 1000, RecordType.SAMPLE, 0)
    data = build(1, []) + unit * 200
    counter = CountingCrc()
    monkeypatch.setattr(scan.zlib, "crc32", counter)
    got, reader = read(data)
    assert got == [] and len(reader.damage) == 1
    assert counter.bytes <= 2 * 200 * (1000 + 8)  # the fast path and the careful path


def test_append_completes_a_cut_record_so_the_new_records_are_found(tmp_path):
    data = build(2)
    path = tmp_path / "cut.ewcap"
    cut = len(data) - 100  # inside the 300-byte sample
    path.write_bytes(data[:cut])
    with CaptureReader(path) as reader:
        list(reader)
    assert reader.tail_missing == len(data) - 4 - RECORD_HEADER_SIZE - cut  # the last is b""
    with CaptureWriter.append(path) as w:
        w.write_sample(7, b"after")
    got, reader = read(path.read_bytes())
    assert got == RECORDS[:2] + [("sample", 7, b"after")]
    assert len(reader.damage) == 1 and "payload CRC32" in reader.damage[0].message


def _pure_next_head(buf: bytes, pos: int, n: int) -> int:
    """The definition: first p >= pos with a sync word, a whole header before n, a length
    within the bound and a matching header CRC32."""
    for p in range(pos, n - 15):
        if buf[p:p + 4] == SYNC:
            length, head = struct.unpack_from("<I4xI", buf, p + 4)
            if length <= MAX_PAYLOAD and zlib.crc32(buf[p + 4:p + 12]) == head:
                return p
    return -1


pieces = st.one_of(
    st.binary(max_size=30),
    st.just(SYNC),
    st.builds(lambda length, t, good: SYNC + struct.pack("<IHH", length, t, 0) + struct.pack(
        "<I", zlib.crc32(struct.pack("<IHH", length, t, 0)) ^ (0 if good else 1)),
        st.sampled_from([0, 5, MAX_PAYLOAD, MAX_PAYLOAD + 1, 2**32 - 1]),
        st.integers(0, 5), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(pieces, max_size=120), st.integers(0, 40), st.integers(0, 40))
def test_resynchronisation_search_equals_its_definition(parts, pos, cut):
    buf = b"".join(parts)
    n = max(len(buf) - cut, 0)
    pos = min(pos, n)
    expected = _pure_next_head(buf, pos, n)
    assert scan.next_head_v2(buf, pos, n) == expected
    if scan._numpy() is not None:
        assert scan._next_head_v2_windows(buf, pos, n) == expected


def test_reading_without_numpy_gives_the_same_result(monkeypatch):
    covered = struct.pack("<IHH", MAX_PAYLOAD, RecordType.SAMPLE, 0)
    unit = SYNC + covered + struct.pack("<II", zlib.crc32(covered) ^ 1, 0)
    data = build(2) + unit * 500 + build(2)[len(build(2, [])):]
    with_numpy = read(data)
    monkeypatch.setattr(scan, "_np", False)
    without = read(data)
    assert with_numpy[0] == without[0] == RECORDS * 2
    assert with_numpy[1].damage == without[1].damage and len(without[1].damage) == 1


@pytest.mark.parametrize("at", [0, 4095, 4096, 12_345, 40_000])
def test_windowed_search_finds_a_header_far_away(at):
    covered = struct.pack("<IHH", 7, 1, 0)
    good = SYNC + covered + struct.pack("<I", zlib.crc32(covered))
    bad = SYNC + covered + struct.pack("<I", zlib.crc32(covered) ^ 1)
    filler = (bad * (at // len(bad) + 1))[:at]
    buf = filler + good + bad * 3
    assert _pure_next_head(buf, 0, len(buf)) == at
    assert scan.next_head_v2(buf, 0, len(buf)) == at
    if scan._numpy() is not None:
        assert scan._next_head_v2_windows(buf, 0, len(buf)) == at
        assert scan._next_head_v2_windows(buf, 0, at + 15) == -1  # header not whole
