"""An Event read straight from the walker's flat list (``to_dict`` before ``args``, the
cached flag texts) equals what its :class:`Arg` objects give, and the JSON shape spelled
out here from the public fields, on every fixture sample (damaged ones included, strict
and lenient) and on made events, valid and damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebpfwire import DecodeError, decode
from ebpfwire.capture import CaptureReader, SampleRecord
from ebpfwire.wire import names, strategies
from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.events import Arg, SockAddr

FIXTURES = sorted((Path(__file__).resolve().parent.parent / "fixtures").glob("*.ewcap"))


def reference_arg(arg: Arg) -> dict:
    """An argument's JSON shape from its fields and ``Arg.text`` (docs/format.md)."""
    out: dict = {"type": arg.type.name}
    value = arg.value
    if isinstance(value, SockAddr):
        out["value"] = {"family": names.sock_family_name(value.family) or value.family,
                        **{key: field for key, field in value._asdict().items()
                           if key != "family" and field is not None}}
    elif isinstance(value, list):
        out["value"] = list(value)
        out["truncated"] = value.truncated
    else:
        out["value"] = value
        if arg.text is not None:
            out["text"] = arg.text
    return out


def reference(event) -> dict:
    """An event's JSON shape from its public properties."""
    out = {"ts": event.ts, "event_id": event.event_id, "event": event.name,
           "pid_id": event.pid_id, "mnt_id": event.mnt_id, "host_ppid": event.host_ppid,
           "host_pid": event.host_pid, "ppid": event.ppid, "pid": event.pid,
           "uid": event.uid, "comm": event.comm, "retval": event.retval,
           "errno": event.errno, "argnum": event.argnum,
           "args": [reference_arg(arg) for arg in event.args]}
    out.update(event.extra)
    if event.errors is not None:
        out["errors"] = [error.to_dict() for error in event.errors]
    return out


def check(data: bytes, **kwargs) -> None:
    """The flat and the Arg paths of one sample agree, in JSON text (key order too)."""
    try:
        event = decode(data, **kwargs)
    except DecodeError:
        return
    flat = event.flat
    from_flat = json.dumps(event.to_dict())            # before event.args is first read
    assert json.dumps(event.to_dict()) == from_flat    # the flag texts, now cached
    pairs = list(zip(flat[::2], flat[1::2], strict=True))
    assert event.args == [Arg(ArgType(tag), value) for tag, value in pairs]
    assert all(type(arg) is Arg and type(arg.type) is ArgType for arg in event.args)
    assert event.flat == flat
    assert json.dumps(event.to_dict()) == from_flat    # from the Arg objects
    assert json.dumps(reference(event)) == from_flat


@pytest.mark.parametrize("capture", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_flat_and_arg_paths_agree_on_the_fixtures(capture: Path):
    with CaptureReader(capture) as reader:
        layout, arch = reader.header.layout, reader.header.arch
        samples = [record.data for record in reader if type(record) is SampleRecord]
    assert samples
    for data in samples:
        for strict in (True, False):
            check(data, layout=layout, arch=arch, strict=strict)
            # cut and flipped: the damage the lenient walk reads around
            check(data[:len(data) - 3], layout=layout, arch=arch, strict=strict)
            check(data[:70] + bytes([data[70] ^ 0x0b]) + data[71:] if len(data) > 70 else data,
                  layout=layout, arch=arch, strict=strict)


@given(st.one_of(strategies.event_bytes(), strategies.damaged_event_bytes(),
                 strategies.event_bytes("hash")),
       st.booleans())
def test_flat_and_arg_paths_agree_on_made_events(sample, strict):
    check(sample, strict=strict)
    check(sample, layout="hash", strict=strict)


def test_an_arg_whose_type_is_no_argtype_fails_to_dict_as_before():
    with pytest.raises(AttributeError):
        Arg(int(ArgType.OPEN_FLAGS_T), 0).to_dict()
