"""Issue 17's samples as test vectors: KubeArmor's newest writer (the hash trailer, the
2025 UDP shape) and a NULL sockaddr the writer skipped, strict and lenient."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from ebpfwire import Arg, ArgType, decode, encode
from ebpfwire.wire import strategies
from ebpfwire.wire.decoder import detect_layout
from ebpfwire.wire.events import Hash, SockAddr
from ebpfwire.wire.schema import parse_event

EXEC_EXIT_IMA_OFF = bytes.fromhex(
    "00ca9a3b00000000000000000000000001000000921000000100000092100000000000003b00000000"
    "0000000000000000000000626173680000000000000000000000002f726f6f74" + "00" * 75
    + "70747330" + "00" * 60 + "00000000" + "4d00000000000000" + "01"
    + "00" "1e000000" "1f000000" "0000")

UDP_2025 = bytes.fromhex(
    "05000000000000000000000000000000010000009210000001000000921000000000000011270000"
    "030000000000000000000000656467650000000000000000000000000c020000350808080800000000"
    "000000001a0d0000006578616d706c652e636f6d2e001b001c")

ACCEPT4_NULL = bytes.fromhex(
    "18a165c12c0200000000000000000000af300000c2300000af300000c2300000000000002b000000"
    "020000000600000000000000707974686f6e00000000000000000000010c000000000000")


@pytest.mark.parametrize("strict", [True, False])
def test_exec_exit_with_ima_off_has_its_hashes_not_found(strict: bool) -> None:
    event = decode(EXEC_EXIT_IMA_OFF, layout="hash", strict=strict)
    assert event.errors == (None if strict else [])
    assert (event.name, event.argnum, event.extra["exec_id"], event.extra["hash"]) == (
        "execve", 0, 77, 1)
    assert event.hashes == [Hash(30, None), Hash(31, None)]
    assert [str(h) for h in event.hashes] == ["process=not found", "parent=not found"]
    assert event.to_dict()["hashes"] == [
        {"type": 30, "kind": "process", "digest": None},
        {"type": 31, "kind": "parent", "digest": None}]
    assert parse_event(EXEC_EXIT_IMA_OFF, layout="hash") == decode(EXEC_EXIT_IMA_OFF,
                                                                   layout="hash")


def test_found_hashes_carry_their_digests() -> None:
    digest = bytes(range(32))
    sample = EXEC_EXIT_IMA_OFF[:225] + b"\x01" + (30).to_bytes(4, "little") + (
        31).to_bytes(4, "little") + digest
    event = decode(sample, layout="hash")
    assert event.hashes == [Hash(30, None), Hash(31, digest.hex())]
    assert event.hashes[1].kind == "parent"


def test_a_damaged_trailer_is_bad_hash_strict_and_lenient_keeps_the_event() -> None:
    sample = EXEC_EXIT_IMA_OFF[:225] + b"\x02" + (30).to_bytes(4, "little")
    with pytest.raises(Exception, match="bad-hash at byte offset 225"):
        decode(sample, layout="hash")
    event = decode(sample, layout="hash", strict=False)
    assert [(e.kind, e.offset) for e in event.errors] == [("bad-hash", 225)]
    assert event.name == "execve"


def test_auto_layout_picks_the_hash_layout_of_the_sample() -> None:
    assert detect_layout(EXEC_EXIT_IMA_OFF).name == "hash"
    assert decode(EXEC_EXIT_IMA_OFF, layout="auto") == decode(EXEC_EXIT_IMA_OFF, layout="hash")
    assert detect_layout(UDP_2025).name == "classic"
    assert detect_layout(ACCEPT4_NULL).name == "classic"


@pytest.mark.parametrize("strict", [True, False])
def test_udp_2025_shape(strict: bool) -> None:
    event = decode(UDP_2025, strict=strict)
    assert event.name == "udp_send_skb" and not event.errors
    assert event.args == [Arg(ArgType.SOCKADDR_T, SockAddr.inet("8.8.8.8", 53)),
                          Arg(ArgType.UDP_MSG, "example.com."), Arg(ArgType.QTYPE, 28)]


@pytest.mark.parametrize("strict", [True, False])
def test_accept4_with_a_null_sockaddr_is_its_fd_and_a_missing_argument(strict: bool) -> None:
    event = decode(ACCEPT4_NULL, strict=strict)
    assert event.args == [Arg(ArgType.INT_T, 12)]
    assert [(e.kind, e.offset) for e in event.errors] == [("missing-argument", 73)]
    assert "NULL sockaddr" in str(event.errors[0])


@settings(max_examples=400)
@given(strategies.newest_writer_bytes())
def test_the_newest_writers_stream_decodes_strictly_with_no_error(sample: bytes) -> None:
    event = decode(sample, layout="hash")
    assert event.errors is None
    assert (event.hashes is not None) == (event.extra["hash"] == 1)
    assert decode(sample, layout="hash", strict=False).errors == []
    assert parse_event(sample, layout="hash") == event


@given(strategies.newest_writer_events())
def test_the_newest_writers_events_round_trip(event) -> None:
    assert decode(encode(event, "hash"), layout="hash") == event
    if event.name in ("udp_sendmsg", "udp_send_skb"):
        assert [a.type for a in event.args] == [ArgType.SOCKADDR_T, ArgType.UDP_MSG,
                                                ArgType.QTYPE]
