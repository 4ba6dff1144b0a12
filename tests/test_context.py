"""Context records: ProcessInfo / ContainerInfo payloads and their framing in captures."""

from __future__ import annotations

import io
import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ebpfwire
from ebpfwire.capture import (
    CaptureReader,
    CaptureWriter,
    ContainerRecord,
    HostInfo,
    LostRecord,
    ProcessRecord,
    Record,
    RecordType,
    SampleRecord,
)
from ebpfwire.capture.snapshot import (
    RUNTIMES,
    ContainerInfo,
    ContainerPayload,
    ProcessInfo,
    ProcessPayload,
    _process_fields,
)

HOST = HostInfo(kernel_release="6.18.0-test", hostname="context", ncpus=2)
u32 = st.integers(0, 2**32 - 1)
# any bytes a process may hold, as the str that surrogateescape makes of them
text = st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape"))
processes = st.builds(ProcessInfo, u32, u32, u32, u32, u32, u32, st.integers(0, 2**64 - 1),
                      text, text, text, st.lists(text, max_size=5).map(tuple), text)
containers = st.builds(ContainerInfo, u32, u32, text, st.sampled_from(RUNTIMES))

SHELL = ProcessInfo(host_pid=4158, host_ppid=4100, pid=12, uid=1000, pid_ns=4026531836,
                    mnt_ns=4026531841, start_ns=123_456_789, comm="python3",
                    exe="/usr/bin/python3.11", cwd="/home/u", argv=("python3", "-c", "pass"),
                    container_id="")
DOCKER = ContainerInfo(pid_ns=4026532400, mnt_ns=4026532398, container_id="a" * 64,
                       runtime="docker")


@settings(max_examples=200, deadline=None)
@given(processes)
def test_process_payload_round_trip(info):
    payload = info.to_payload()
    assert ProcessInfo.from_payload(payload) == info
    parsed = ProcessPayload.parse(payload)  # the schema is the specification
    assert parsed.exe == info.exe and tuple(parsed.argv) == info.argv


@settings(max_examples=100, deadline=None)
@given(containers)
def test_container_payload_round_trip(info):
    assert ContainerInfo.from_payload(info.to_payload()) == info
    assert ContainerPayload.parse(info.to_payload()).runtime == info.runtime


def test_bytes_that_are_not_utf8_come_back_exactly():
    raw = b"/tmp/\xff\xfe-caf\xc3\xa9"
    payload = SHELL.to_payload().replace(b"/usr/bin/python3.11", raw[:19].ljust(19, b"x"))
    info = ProcessInfo.from_payload(payload)
    assert info.exe.encode("utf-8", "surrogateescape") == raw[:19].ljust(19, b"x")
    assert info.to_payload() == payload


def test_every_truncation_is_a_value_error():
    payload = SHELL.to_payload()
    for cut in range(len(payload) - 4):   # the last 4 bytes: the optional flags word
        with pytest.raises(ValueError, match=f"process payload of {cut} bytes"):
            ProcessInfo.from_payload(payload[:cut])
    for cut in range(len(payload) - 4, len(payload)):
        assert ProcessInfo.from_payload(payload[:cut]) == SHELL


def test_a_crafted_length_cannot_allocate_beyond_the_payload():
    # the fixed fields, then a comm claiming 4 GiB, then an argv count of 2**32 - 1
    crafted = bytes(32) + struct.pack("<I", 2**32 - 1) + b"abc"
    many = bytes(32) + struct.pack("<III", 0, 0, 0) + struct.pack("<I", 2**32 - 1)
    tracemalloc.start()
    try:
        for payload in (crafted, many):
            with pytest.raises(ValueError):
                ProcessInfo.from_payload(payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_unknown_runtime_is_refused():
    with pytest.raises(ValueError, match="runtime: expected one of docker"):
        ContainerInfo(1, 2, "", "lxc")
    payload = ContainerPayload.build({"pid_ns": 1, "mnt_ns": 2, "container_id": "",
                                      "runtime": "lxc"})
    with pytest.raises(ValueError, match="found 'lxc'"):
        ContainerInfo.from_payload(payload)


def test_out_of_range_fields_are_a_value_error():
    with pytest.raises(ValueError, match="process payload: cannot encode"):
        ProcessInfo(-1, 0, 0, 0, 0, 0, 0, "", "", "", (), "").to_payload()


# ---------------------------------------------------------------- in a capture


def capture_with_context() -> bytes:
    buf = io.BytesIO()
    with CaptureWriter(buf, host=HOST, boot_time_ns=1, start_time_ns=2) as w:
        w.write_process(SHELL)
        w.write_sample(0, b"sample one")
        w.write_container(DOCKER)
        w.write_lost(1, 3)
        w.write_process(SHELL)
    return buf.getvalue()


def test_reader_yields_context_records_in_file_order():
    with CaptureReader(io.BytesIO(capture_with_context())) as reader:
        records = list(reader)
    assert [type(r) for r in records] == [ProcessRecord, SampleRecord, ContainerRecord,
                                          LostRecord, ProcessRecord]
    assert records[0].info == SHELL and records[2].info == DOCKER
    assert records[0].offset < records[1].offset < records[2].offset
    assert reader.context_counts == {"process": 2, "container": 1}
    assert reader.damage == [] and reader.notes == []


def test_on_context_takes_the_context_records_as_they_are_read():
    seen: list = []

    def record_then_count(info) -> None:
        seen.append((info, len(taken)))

    taken: list = []
    with CaptureReader(io.BytesIO(capture_with_context()), on_context=record_then_count) as reader:
        for record in reader:
            taken.append(record)
    assert [type(r) for r in taken] == [SampleRecord, LostRecord]
    # each given before the records that follow it in the file are yielded
    assert seen == [(SHELL, 0), (DOCKER, 1), (SHELL, 2)]
    assert reader.context_counts == {"process": 2, "container": 1}


def test_events_passes_context_records_through(monkeypatch):
    monkeypatch.setattr(ebpfwire.capture.stream, "decode", lambda data, **kw: ("event", data))
    with CaptureReader(io.BytesIO(capture_with_context())) as reader:
        out = list(reader.events())
    assert [(type(r).__name__, e) for r, e in out] == [
        ("ProcessRecord", None), ("SampleRecord", ("event", b"sample one")),
        ("ContainerRecord", None), ("LostRecord", None), ("ProcessRecord", None)]


@pytest.mark.parametrize("payload", [b"", b"\x01\x02", bytes(32) + b"\xff\xff\xff\xff"])
def test_a_malformed_context_payload_is_damage_not_an_exception(payload):
    data = capture_with_context()
    bad = Record.build({"type": RecordType.PROCESS, "payload": payload})
    with CaptureReader(io.BytesIO(data + bad + data[-len(bad):])) as reader:
        records = list(reader)
    assert len(records) == 5  # the good ones; the last bytes appended are not a record
    offsets = [d.offset for d in reader.damage]
    assert offsets and offsets[0] == len(data)
    assert "PROCESS payload" in reader.damage[0].message


def test_context_records_need_version_2():
    w = CaptureWriter(io.BytesIO(), host=HOST, version=1)
    with pytest.raises(ValueError, match="need format version 2"):
        w.write_process(SHELL)
    with pytest.raises(ValueError, match="need format version 2"):
        w.write_container(DOCKER)


@pytest.mark.parametrize("name", ["Text", "ProcessPayload", "ContainerPayload"])
def test_docs_quote_the_context_schemas_as_they_are(name):
    from pathlib import Path

    from test_capture import _definition

    root = Path(__file__).parent.parent
    source = (root / "ebpfwire" / "capture" / "snapshot.py").read_text()
    doc = (root / "docs" / "capture-format.md").read_text()
    assert _definition(source, name) in doc


def _by_schema(data: bytes) -> tuple | None:
    """ProcessInfo's fields as the construct schema (the specification) reads ``data``."""
    try:
        p = ProcessPayload.parse(data)
    except Exception:  # noqa: BLE001 - any refusal of the schema
        return None
    return (p.host_pid, p.host_ppid, p.pid, p.uid, p.pid_ns, p.mnt_ns, p.start_ns, p.comm,
            p.exe, p.cwd, tuple(p.argv), p.container_id, bool((p.flags or 0) & 1))


_TEXT = st.text(max_size=12) | st.binary(max_size=12).map(
    lambda raw: raw.decode("utf-8", "surrogateescape"))
_PROCESSES = st.builds(
    ProcessInfo, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), _TEXT, _TEXT, _TEXT,
    st.lists(_TEXT, max_size=5).map(tuple), _TEXT, st.booleans())


@settings(max_examples=300, deadline=None)
@given(_PROCESSES, st.data())
def test_the_fast_process_reader_equals_the_schema(info, data):
    """PROCESS records are read by a struct reader (a snapshot has one per process); it
    must give what the schema gives, on valid, cut, extended and damaged payloads."""
    payload = info.to_payload()
    assert _process_fields(payload) == _by_schema(payload) == tuple(
        getattr(info, name) for name in ProcessInfo.__slots__)
    cut = payload[:data.draw(st.integers(0, len(payload)))]
    extended = payload + data.draw(st.binary(max_size=9))
    at = data.draw(st.integers(0, len(payload) - 1))
    damaged = payload[:at] + bytes([payload[at] ^ data.draw(st.integers(1, 255))]) + \
        payload[at + 1:]
    for variant in (cut, extended, damaged, data.draw(st.binary(max_size=80))):
        fast = _process_fields(variant)
        assert fast is None or fast == _by_schema(variant)
        schema = _by_schema(variant)
        if schema is None:
            with pytest.raises(ValueError):
                ProcessInfo.from_payload(variant)
        else:
            assert tuple(getattr(ProcessInfo.from_payload(variant), name)
                         for name in ProcessInfo.__slots__) == schema
