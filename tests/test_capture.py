"""Capture file: round trips, robustness (cuts, damage, garbage), appending, following."""

from __future__ import annotations

import io
import os
import random
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ebpfwire
from ebpfwire.capture import (
    FORMAT_VERSION,
    MAGIC,
    MAX_PAYLOAD,
    RECORD_HEADER_SIZE,
    SYNC,
    CaptureDamage,
    CaptureError,
    CaptureFile,
    CaptureHeader,
    CaptureReader,
    CaptureWriter,
    EventRecord,
    FileHeader,
    HostInfo,
    LostRecord,
    Record,
    RecordPayload,
    RecordType,
    SampleRecord,
)

HOST = HostInfo(kernel_release="6.18.0-test", hostname="capture-host", ncpus=4)
BOOT = 1_700_000_000_000_000_000
START = 1_700_000_100_000_000_000


def new_writer(target, **kw) -> CaptureWriter:
    kw.setdefault("layout", "cwd-tty-oid")
    return CaptureWriter(target, host=HOST, boot_time_ns=BOOT, start_time_ns=START, **kw)


def write_capture(path: Path, records: list[tuple]) -> None:
    with new_writer(path) as w:
        for rec in records:
            if rec[0] == "sample":
                w.write_sample(rec[1], rec[2])
            else:
                w.write_lost(rec[1], rec[2])


def plain(records) -> list[tuple]:
    """Records as comparable tuples, without offsets."""
    out = []
    for r in records:
        if isinstance(r, SampleRecord):
            out.append(("sample", r.cpu, r.data))
        else:
            out.append(("lost", r.cpu, r.count))
    return out


def read_all(target, **kw) -> tuple[list, CaptureReader]:
    reader = CaptureReader(target, **kw)
    with reader:
        records = list(reader)
    return records, reader


FIVE = [
    ("sample", 0, b"first sample \x00\x00\x00"),
    ("lost", 1, 17),
    ("sample", 1, bytes(range(40))),
    ("sample", 0, b""),
    ("sample", 3, b"last" * 9),
]


@pytest.fixture
def five(tmp_path) -> tuple[Path, bytes, list[int]]:
    """A small capture, its bytes and the offsets of its 5 records (plus the end)."""
    path = tmp_path / "five.cap"
    write_capture(path, FIVE)
    records, _ = read_all(path)
    data = path.read_bytes()
    return path, data, [r.offset for r in records] + [len(data)]


# ---------------------------------------------------------------- round trip and header


def test_round_trip_random_samples_and_lost(tmp_path):
    rng = random.Random(7)
    sizes = [0, 1, 7, 8, 68, 225, 4096, 32768, 32 * 1024 + 7]
    sizes += [rng.randrange(300) for _ in range(50)]
    expected = []
    for i, size in enumerate(sizes):
        expected.append(("sample", rng.randrange(256), rng.randbytes(size)))
        if i % 7 == 0:
            expected.append(("lost", rng.randrange(256), rng.randrange(2**64)))
    path = tmp_path / "rt.cap"
    write_capture(path, expected)
    records, reader = read_all(path)
    assert plain(records) == expected
    assert reader.damage == [] and reader.notes == []
    offsets = [r.offset for r in records]
    assert offsets == sorted(offsets) and offsets[0] == len(path.read_bytes()) - sum(
        RECORD_HEADER_SIZE + (4 + len(e[2]) if e[0] == "sample" else 12) for e in expected
    )


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("sample"), st.integers(0, 2**32 - 1), st.binary(max_size=300)),
    st.tuples(st.just("lost"), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
), max_size=20))
def test_round_trip_property(records):
    buf = io.BytesIO()
    with new_writer(buf) as w:
        for kind, cpu, value in records:
            w.write_sample(cpu, value) if kind == "sample" else w.write_lost(cpu, value)
    got, reader = read_all(io.BytesIO(buf.getvalue()))
    assert plain(got) == records and reader.damage == []


def test_header_fields(tmp_path):
    path = tmp_path / "h.cap"
    with new_writer(path, layout="hash", arch="arm64"):
        pass
    with CaptureReader(path) as r:
        assert r.header == CaptureHeader(
            version=FORMAT_VERSION, layout="hash", arch="arm64",
            kernel_release="6.18.0-test", hostname="capture-host", ncpus=4,
            boot_time_ns=BOOT, start_time_ns=START,
        )
        assert r.header.wall_clock_ns(5) == BOOT + 5
        assert list(r) == []


def test_header_defaults_come_from_this_machine(tmp_path):
    before = time.time_ns()
    with CaptureWriter(tmp_path / "d.cap") as w:
        pass
    after = time.time_ns()
    h = CaptureReader(tmp_path / "d.cap").header
    assert h.layout == "classic" and h.arch == "x86_64"
    assert h.kernel_release == os.uname().release and h.ncpus >= 1
    assert before <= h.start_time_ns <= after
    monotonic_now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    # boot + monotonic now is "now" in wall-clock terms (within a generous minute)
    assert abs(h.boot_time_ns + monotonic_now - time.time_ns()) < 60 * 10**9
    assert w.header == h


def test_writer_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="arch: expected one of x86_64, arm64, found 'mips'"):
        CaptureWriter(tmp_path / "a.cap", arch="mips")
    with new_writer(tmp_path / "b.cap") as w:
        with pytest.raises(ValueError, match="cpu: expected"):
            w.write_sample(-1, b"x")
        with pytest.raises(ValueError, match="count"):
            w.write_lost(0, 2**64)
        with pytest.raises(ValueError, match="sample: expected at most"):
            w.write_sample(0, bytes(MAX_PAYLOAD))


# ---------------------------------------------------------------- schemas = hot path


def test_schemas_parse_what_the_fast_writer_wrote(five):
    path, data, offsets = five
    parsed = CaptureFile.parse(data)
    header = CaptureReader(path).header
    info = parsed.header.signed.value.info
    assert parsed.header.signed.value.version == header.version
    assert {k: info[k] for k in ("layout", "arch", "kernel_release", "hostname", "ncpus",
                                 "boot_time_ns", "start_time_ns")} == {
        k: getattr(header, k) for k in ("layout", "arch", "kernel_release", "hostname",
                                        "ncpus", "boot_time_ns", "start_time_ns")}
    assert len(parsed.records) == len(FIVE)
    for rec, expected in zip(parsed.records, FIVE, strict=True):
        body = RecordPayload.parse(rec.payload, type=rec.type)
        kind = "sample" if rec.type == RecordType.SAMPLE else "lost"
        assert (kind, body.cpu, body.data if kind == "sample" else body.count) == expected


def test_schemas_build_what_the_fast_reader_reads():
    header = FileHeader.build({"signed": {"value": {"version": FORMAT_VERSION, "info": {
        "ncpus": 2, "boot_time_ns": 5, "start_time_ns": 6, "layout": "classic",
        "arch": "x86_64", "kernel_release": "k", "hostname": "h"}}}})
    sample = Record.build({"type": RecordType.SAMPLE,
                           "payload": RecordPayload.build({"cpu": 3, "data": b"abc"},
                                                          type=RecordType.SAMPLE)})
    lost = Record.build({"type": RecordType.LOST,
                         "payload": RecordPayload.build({"cpu": 1, "count": 9},
                                                        type=RecordType.LOST)})
    records, reader = read_all(io.BytesIO(header + sample + lost))
    assert reader.header.boot_time_ns == 5 and reader.header.hostname == "h"
    assert plain(records) == [("sample", 3, b"abc"), ("lost", 1, 9)]
    # and the fast writer produces byte-identical records
    buf = io.BytesIO()
    with CaptureWriter(buf, host=HostInfo("k", "h", 2), boot_time_ns=5, start_time_ns=6) as w:
        w.write_sample(3, b"abc")
        w.write_lost(1, 9)
    assert buf.getvalue() == header + sample + lost


frames = st.one_of(
    st.tuples(st.just(int(RecordType.SAMPLE)), st.integers(0, 2**32 - 1), st.binary(max_size=64)),
    st.tuples(st.just(int(RecordType.LOST)), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),
    st.tuples(st.just(int(RecordType.EVENT)), st.integers(0, 2**32 - 1), st.binary(max_size=64)),
    st.tuples(st.integers(7, 2**16 - 1), st.just(0), st.binary(max_size=16)),  # unknown types
    st.tuples(st.just(0), st.just(0), st.binary(min_size=1, max_size=24)),  # garbage
)


@settings(max_examples=60, deadline=None)
@given(st.lists(frames, max_size=12), st.sampled_from([7, 64, 1 << 20]))
def test_reader_agrees_with_the_schemas(items, chunk_size):
    """Every record the schema can parse comes out of the fast reader, with the same values;
    unknown types become notes; each garbage stretch becomes one damage report."""
    header = FileHeader.build({"signed": {"value": {"version": FORMAT_VERSION, "info": {
        "ncpus": 1, "boot_time_ns": 0, "start_time_ns": 0, "layout": "classic",
        "arch": "x86_64", "kernel_release": "", "hostname": ""}}}})
    data = bytearray(header)
    expected, unknown, garbage_at = [], [], []
    for rtype, cpu, value in items:
        offset = len(data)
        if rtype == 0:
            if not garbage_at or garbage_at[-1][1] != offset:
                garbage_at.append([offset, offset])
            data += value.replace(SYNC[:1], b"?")  # never a sync word in the garbage
            garbage_at[-1][1] = len(data)
            continue
        if rtype == RecordType.SAMPLE:
            payload = RecordPayload.build({"cpu": cpu, "data": value}, type=rtype)
            expected.append(SampleRecord(cpu, value, offset))
        elif rtype == RecordType.LOST:
            payload = RecordPayload.build({"cpu": cpu, "count": value}, type=rtype)
            expected.append(LostRecord(cpu, value, offset))
        elif rtype == RecordType.EVENT:
            payload = RecordPayload.build({"map": cpu >> 16, "cpu": cpu, "data": value},
                                          type=rtype)
            expected.append(EventRecord(cpu >> 16, cpu, value, offset))
        else:
            payload = value
            unknown.append(offset)
        record = Record.build({"type": rtype, "payload": payload})
        assert Record.parse(record).payload == payload
        data += record
    old = CaptureReader.chunk_size
    CaptureReader.chunk_size = chunk_size
    try:
        records, reader = read_all(io.BytesIO(bytes(data)))
    finally:
        CaptureReader.chunk_size = old
    assert records == expected
    assert [n.offset for n in reader.notes] == unknown
    assert [d.offset for d in reader.damage] == [start for start, _ in garbage_at]


# ---------------------------------------------------------------- appending and file mode


def test_append_to_existing_file(tmp_path):
    path = tmp_path / "app.cap"
    write_capture(path, FIVE[:2])
    header_before = CaptureReader(path).header
    with CaptureWriter.append(path) as w:
        assert w.header == header_before
        w.write_sample(2, b"appended")
    with CaptureWriter(path, mode="a") as w:
        w.write_lost(0, 1)
    records, reader = read_all(path)
    assert plain(records) == FIVE[:2] + [("sample", 2, b"appended"), ("lost", 0, 1)]
    assert reader.header == header_before and reader.damage == []


def test_append_after_a_cut_tail_reports_it_and_keeps_the_new_records(five, tmp_path):
    _, data, offsets = five
    path = tmp_path / "cut.cap"
    path.write_bytes(data[: offsets[4] + 10])
    with CaptureWriter.append(path) as w:
        w.write_sample(9, b"after the cut")
    records, reader = read_all(path)
    assert plain(records) == FIVE[:4] + [("sample", 9, b"after the cut")]
    assert [d.offset for d in reader.damage] == [offsets[4]]


def test_append_to_a_file_object():
    buf = io.BytesIO()
    with new_writer(buf) as w:
        w.write_sample(0, b"one")
    with CaptureWriter.append(buf) as w:
        w.write_sample(1, b"two")
    records, _ = read_all(io.BytesIO(buf.getvalue()))
    assert plain(records) == [("sample", 0, b"one"), ("sample", 1, b"two")]


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_new_capture_is_mode_0600_whatever_the_umask(tmp_path, umask):
    path = tmp_path / "m.cap"
    old = os.umask(umask)
    try:
        with new_writer(path) as w:
            w.write_sample(0, b"secret argv")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_append_leaves_the_mode_alone(tmp_path):
    path = tmp_path / "m.cap"
    write_capture(path, FIVE[:1])
    path.chmod(0o640)
    with CaptureWriter.append(path) as w:
        w.write_sample(0, b"more")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_unbuffered_writer_puts_each_record_in_the_file_at_once(tmp_path):
    path = tmp_path / "u.cap"
    with new_writer(path, buffer_size=0) as w:
        w.write_sample(0, b"a")
        records, _ = read_all(path)
        assert plain(records) == [("sample", 0, b"a")]
        w.write_lost(1, 2)
        assert plain(read_all(path)[0]) == [("sample", 0, b"a"), ("lost", 1, 2)]


def test_writing_after_close_is_an_error(tmp_path):
    w = new_writer(tmp_path / "c.cap")
    w.close()
    with pytest.raises(ValueError, match="write_sample: the capture writer is closed"):
        w.write_sample(0, b"late")
    with pytest.raises(ValueError, match="write_lost: the capture writer is closed"):
        w.write_lost(0, 1)
    w.close()  # closing twice is harmless


def test_buffered_writer_holds_records_until_flush(tmp_path):
    path = tmp_path / "b.cap"
    with new_writer(path, flush_interval=3600) as w:
        w.write_sample(0, b"a")
        assert read_all(path)[0] == []
        w.flush()
        assert plain(read_all(path)[0]) == [("sample", 0, b"a")]


# ---------------------------------------------------------------- robustness


def test_cut_at_every_byte_offset(five, tmp_path):
    _, data, offsets = five
    header_size = offsets[0]
    path = tmp_path / "cut.cap"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        if cut < header_size:
            with pytest.raises(CaptureError):
                CaptureReader(path)
            continue
        records, reader = read_all(path)
        complete = sum(1 for end in offsets[1:] if end <= cut)
        assert plain(records) == FIVE[:complete], cut
        if cut in offsets:
            assert reader.damage == [], cut
        else:
            assert len(reader.damage) == 1, cut
            damage = reader.damage[0]
            assert damage.offset == offsets[complete], cut
            assert "cut record" in damage.message and "end of the data" in damage.message


def test_garbage_over_each_record_in_turn(five, tmp_path):
    _, data, offsets = five
    rng = random.Random(3)
    path = tmp_path / "g.cap"
    for i in range(len(FIVE)):
        start, end = offsets[i], offsets[i + 1]
        path.write_bytes(data[:start] + rng.randbytes(end - start) + data[end:])
        seen: list[CaptureDamage] = []
        records, reader = read_all(path, on_damage=seen.append)
        assert plain(records) == FIVE[:i] + FIVE[i + 1:], i
        assert [d.offset for d in reader.damage] == [start], i
        assert seen == reader.damage
        assert "expected" in reader.damage[0].message and "found" in reader.damage[0].message


@pytest.mark.parametrize("where", [4, 9, 11, 13, 17, 21, -1])
# length, type, flags, header crc, payload crc, cpu, last byte
def test_one_flipped_bit_in_each_record(five, tmp_path, where):
    _, data, offsets = five
    path = tmp_path / "f.cap"
    for i in range(len(FIVE)):
        byte = offsets[i] + where if where >= 0 else offsets[i + 1] - 1
        damaged = bytearray(data)
        damaged[byte] ^= 0x04
        path.write_bytes(bytes(damaged))
        records, reader = read_all(path)
        assert plain(records) == FIVE[:i] + FIVE[i + 1:], i
        assert [d.offset for d in reader.damage] == [offsets[i]]
        assert "CRC32" in reader.damage[0].message or "cut record" in reader.damage[0].message


@pytest.mark.parametrize("garbage", [b"x", b"garbage between records" * 3, SYNC,
                                     SYNC + b"\xff" * 40, bytes(100)])
def test_garbage_inserted_between_records(five, tmp_path, garbage):
    _, data, offsets = five
    at = offsets[2]
    path = tmp_path / "ins.cap"
    path.write_bytes(data[:at] + garbage + data[at:])
    records, reader = read_all(path)
    assert plain(records) == FIVE
    assert len(reader.damage) == 1 and reader.damage[0].offset == at
    assert records[2].offset == at + len(garbage)
    assert f"skipped {len(garbage)} bytes" in reader.damage[0].message


def test_corrupted_length_in_the_middle_does_not_swallow_the_rest(five, tmp_path):
    _, data, offsets = five
    damaged = bytearray(data)
    struct.pack_into("<I", damaged, offsets[1] + 4, 10_000)  # beyond the end of the file
    path = tmp_path / "len.cap"
    path.write_bytes(bytes(damaged))
    records, reader = read_all(path)
    assert plain(records) == FIVE[:1] + FIVE[2:]
    assert [d.offset for d in reader.damage] == [offsets[1]]


def test_unknown_record_type_is_skipped_with_a_note(five, tmp_path):
    _, data, offsets = five
    future = Record.build({"type": 77, "payload": b"from the future"})
    path = tmp_path / "fut.cap"
    path.write_bytes(data[: offsets[1]] + future + data[offsets[1]:])
    records, reader = read_all(path)
    assert plain(records) == FIVE and reader.damage == []
    assert len(reader.notes) == 1 and reader.notes[0].offset == offsets[1]
    assert "unknown type 77" in reader.notes[0].message


def test_badly_sized_known_record_is_reported_and_skipped(five, tmp_path):
    _, data, offsets = five
    short_lost = Record.build({"type": RecordType.LOST, "payload": b"\x00" * 5})
    path = tmp_path / "short.cap"
    path.write_bytes(data[: offsets[1]] + short_lost + data[offsets[1]:])
    records, reader = read_all(path)
    assert plain(records) == FIVE
    assert [d.offset for d in reader.damage] == [offsets[1]]
    assert "LOST payload of 12 bytes, found 5" in reader.damage[0].message


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 16, 21])
def test_small_chunks_give_the_same_result(five, monkeypatch, chunk_size):
    _, data, offsets = five
    monkeypatch.setattr(CaptureReader, "chunk_size", chunk_size)
    for size in range(1, 40):  # puts the next sync word across every chunk boundary
        garbage = (b"garbage!" * 5)[:size]
        damaged = data[: offsets[3]] + garbage + data[offsets[3]:]
        records, reader = read_all(io.BytesIO(damaged))
        assert plain(records) == FIVE, size
        assert [d.offset for d in reader.damage] == [offsets[3]], size


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "found an empty file"),
    (b"hello, I am a text file\nnot a capture\n", "expected the capture magic"),
    (bytes(random.Random(1).randbytes(500)), "expected the capture magic"),
    (MAGIC[:5], "header prefix"),
])
def test_not_a_capture(tmp_path, content, expected):
    path = tmp_path / "x.cap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=expected) as info:
        CaptureReader(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value) and "offset" in str(info.value)


def test_a_reader_iterates_once(five):
    with CaptureReader(five[0]) as reader:
        assert len(list(reader)) == len(FIVE)
        with pytest.raises(RuntimeError, match="open a new reader"):
            iter(reader)


def test_text_stream_is_refused_with_a_hint():
    with pytest.raises(TypeError, match="sys.stdin.buffer"):
        CaptureReader(io.StringIO("text"))


def test_damaged_header_is_a_capture_error_with_offset(five, tmp_path):
    _, data, offsets = five
    path = tmp_path / "hd.cap"
    damaged = bytearray(data)
    damaged[20] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(CaptureError, match="header CRC32") as info:
        CaptureReader(path)
    assert info.value.offset == offsets[0] - 4


def test_unknown_version_is_a_capture_error(five, tmp_path):
    _, data, _ = five
    path = tmp_path / "v.cap"
    path.write_bytes(data[:8] + struct.pack("<H", 9) + data[10:])
    with pytest.raises(CaptureError, match="expected format version 1 or 2, found version 9"
                       ) as info:
        CaptureReader(path)
    assert info.value.offset == 8 and info.value.expected == "format version 1 or 2"


def test_header_crc_is_checked_over_the_whole_header(five):
    _, data, offsets = five
    end = offsets[0]
    assert struct.unpack_from("<I", data, end - 4)[0] == zlib.crc32(data[: end - 4])


# ---------------------------------------------------------------- streams and following


def test_read_from_a_non_seekable_pipe(five):
    _, data, _ = five
    data = data + data[five[2][0]:]  # the five records twice
    read_fd, write_fd = os.pipe()

    def feed():
        with os.fdopen(write_fd, "wb") as w:
            for i in range(0, len(data), 7):
                w.write(data[i:i + 7])
                w.flush()

    feeder = threading.Thread(target=feed)
    feeder.start()
    with os.fdopen(read_fd, "rb") as pipe:
        assert not pipe.seekable()
        records, reader = read_all(pipe)
    feeder.join(timeout=10)
    assert plain(records) == FIVE * 2 and reader.damage == []


def test_read_from_stdin_of_a_subprocess(five):
    path, _, _ = five
    code = ("import sys; from ebpfwire.capture import CaptureReader; "
            "r = CaptureReader(sys.stdin.buffer); print(len(list(r)), len(r.damage))")
    with open(path, "rb") as f:
        out = subprocess.run([sys.executable, "-c", code], stdin=f, capture_output=True,
                             text=True, timeout=60, check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.split() == ["5", "0"]


def test_follow_receives_records_written_while_reading(tmp_path):
    path = tmp_path / "live.cap"
    writer = new_writer(path, buffer_size=0)
    total = 40
    received: list = []

    def produce():
        for i in range(total):
            writer.write_sample(i % 2, b"event %d" % i)
            if i % 10 == 9:
                writer.write_lost(0, i)
            time.sleep(0.002)
        writer.close()

    reader = CaptureReader(path, follow=True, poll_interval=0.01, idle_timeout=10)

    def consume():
        for record in reader:
            received.append(record)
            if len(received) == total + total // 10:
                reader.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(timeout=30)
    consumer.join(timeout=30)
    assert not consumer.is_alive()
    samples = [r for r in received if isinstance(r, SampleRecord)]
    assert [r.data for r in samples] == [b"event %d" % i for i in range(total)]
    assert [r.count for r in received if isinstance(r, LostRecord)] == [9, 19, 29, 39]
    assert reader.damage == []


def test_follow_waits_for_a_partially_written_record(five, tmp_path):
    _, data, offsets = five
    path = tmp_path / "partial.cap"
    path.write_bytes(data[: offsets[2] + 5])  # record 2 half written
    reader = CaptureReader(path, follow=True, poll_interval=0.01, idle_timeout=10)
    received: list = []

    def consume():
        for record in reader:
            received.append(record)
            if len(received) == len(FIVE):
                reader.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.1)
    with open(path, "ab") as f:
        f.write(data[offsets[2] + 5:])
    consumer.join(timeout=30)
    assert not consumer.is_alive()
    assert plain(received) == FIVE and reader.damage == []


def test_follow_ends_after_idle_timeout_and_reports_a_cut_tail(five, tmp_path):
    _, data, offsets = five
    path = tmp_path / "idle.cap"
    path.write_bytes(data[: offsets[4] + 3])
    records, reader = read_all(path, follow=True, poll_interval=0.01, idle_timeout=0.1)
    assert plain(records) == FIVE[:4]
    assert [d.offset for d in reader.damage] == [offsets[4]]


def test_follow_waits_for_the_header_of_a_new_file(tmp_path):
    path = tmp_path / "new.cap"
    path.touch()
    result: list = []

    def open_reader():
        with CaptureReader(path, follow=True, poll_interval=0.01, idle_timeout=10) as r:
            result.append(r.header.layout)

    t = threading.Thread(target=open_reader)
    t.start()
    time.sleep(0.05)
    with open(path, "r+b") as f, new_writer(f):  # the file exists: write through it
        pass
    t.join(timeout=30)
    assert result == ["cwd-tty-oid"]


# ---------------------------------------------------------------- events()


def test_events_decodes_samples_and_yields_errors(five, monkeypatch):
    path, _, _ = five

    class FakeDecodeError(ValueError):
        pass

    calls = []

    def fake_decode(data, *, layout, arch, strict):
        calls.append((layout, arch, strict))
        if data == b"":
            raise FakeDecodeError("empty sample")
        return ("event", data)

    monkeypatch.setattr(ebpfwire.capture.stream, "decode", fake_decode)
    monkeypatch.setattr(ebpfwire.capture.stream, "DecodeError", FakeDecodeError)
    with CaptureReader(path) as reader:
        out = list(reader.events(strict=False, arch="arm64"))
    assert [type(r).__name__ for r, _ in out] == [
        "SampleRecord", "LostRecord", "SampleRecord", "SampleRecord", "SampleRecord"]
    assert out[0][1] == ("event", FIVE[0][2])
    assert out[1][1] is None
    assert isinstance(out[3][1], FakeDecodeError)
    assert out[4][1] == ("event", FIVE[4][2])
    assert set(calls) == {("cwd-tty-oid", "arm64", False)}


# ---------------------------------------------------------------- the spec document


def _definition(source: str, name: str) -> str:
    """The source text of a top-level `name = ...` or `def name` / `class name` block."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith((f"{name} = ", f"def {name}(", f"class {name}(")))
    end = start + 1
    if lines[start].startswith(("def ", "class ")):
        while end < len(lines) and (not lines[end] or lines[end].startswith(" ")):
            end += 1
    else:
        depth = lines[start].count("(") - lines[start].count(")")
        while depth > 0:
            depth += lines[end].count("(") - lines[end].count(")")
            end += 1
    return "\n".join(lines[start:end]).strip()


@pytest.mark.parametrize("name", ["HeaderInfo", "FileHeader", "_CrcCovered", "_record_crc",
                                  "RecordV1", "CaptureFileV1", "_HeadCovered", "_head_crc",
                                  "Record",
                                  "SamplePayload", "LostPayload", "TypePayload",
                                  "EventPayload", "RecordPayload",
                                  "CaptureFile", "MAGIC", "SYNC", "MAX_PAYLOAD"])
def test_docs_quote_the_schemas_as_they_are(name):
    root = Path(__file__).parent.parent
    source = (root / "ebpfwire" / "capture" / "format.py").read_text()
    doc = (root / "docs" / "capture-format.md").read_text()
    assert _definition(source, name) in doc


# ---------------------------------------------------------------- with the real decoder


@settings(max_examples=10, deadline=None)
@given(st.data())
def test_events_with_the_real_decoder(data):
    from ebpfwire import DecodeError, decode, encode
    from ebpfwire.wire.strategies import events

    layout = data.draw(st.sampled_from(["classic", "cwd-tty-oid", "hash"]))
    originals = data.draw(st.lists(events(layout=layout), min_size=1, max_size=4))
    samples = [encode(event, layout, perf_padding=True) for event in originals]
    buf = io.BytesIO()
    with new_writer(buf, layout=layout) as w:
        for cpu, sample in enumerate(samples):
            w.write_sample(cpu, sample)
        w.write_sample(9, b"\x01\x02\x03")  # far too short for any context header
    with CaptureReader(io.BytesIO(buf.getvalue())) as reader:
        out = list(reader.events())
    assert [record.data for record, _ in out] == samples + [b"\x01\x02\x03"]
    for (_, event), sample in zip(out, samples, strict=False):
        assert event == decode(sample, layout=layout, arch="x86_64")
    assert isinstance(out[-1][1], DecodeError)
