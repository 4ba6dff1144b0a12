"""The decoder on bytes written out by hand, and on every failure mode of the writer."""

import json
import struct

import pytest

import ebpfwire
from ebpfwire import Arg, ArgType, DecodeError, decode, decode_many
from ebpfwire.wire.schema import parse_event


def h(text: str) -> bytes:
    """Hex with spaces and comments (after #) allowed, so samples read like diagrams."""
    return bytes.fromhex("".join(line.split("#")[0] for line in text.splitlines()))


CONNECT = h("""
    00ca9a3b00000000          # ts = 1_000_000_000
    00000000 00000000         # pid_id, mnt_id: host process
    01000000 92100000         # host_ppid 1, host_pid 4242
    01000000 92100000         # ppid 1, pid 4242
    e8030000                  # uid 1000
    2a000000 02000000         # event_id 42 (connect), argnum 2
    91ffffffffffffff          # retval -111
    6375726c000000000000000000000000  # comm "curl"
    01 03000000               # INT_T 3
    0c 0200 1f90 7f000001 0000000000000000  # SOCKADDR_T AF_INET port 8080 127.0.0.1
""")

OPENAT = h("""
    0100000000000000 00000000 00000000 01000000 39300000 01000000 39300000 00000000
    01010000 03000000         # event_id 257 (openat), argnum 3
    0300000000000000          # retval 3
    63617400000000000000000000000000  # comm "cat"
    01 9cffffff               # INT_T -100 (AT_FDCWD)
    0a 0b000000 2f6574632f686f73747300  # STR_T size 11 "/etc/hosts\\0"
    0d 00000800               # OPEN_FLAGS_T 0o2000000
    000000000000              # perf padding: 4 + 94 rounded up to 104
""")

EXECVE = h("""
    0200000000000000 00000000 00000000 01000000 d2040000 01000000 d2040000 00000000
    3b000000 02000000         # event_id 59 (execve), argnum 2
    0000000000000000          # retval 0: the entry event
    62617368000000000000000000000000  # comm "bash"
    0a 0a000000 2f62696e2f6563686f00  # STR_T "/bin/echo"
    0b                        # STR_ARR_T opens
    0a 05000000 6563686f00    #   "echo"
    0a 03000000 686900        #   "hi"
    0b                        # STR_ARR_T closes
""")

HEADER = {"pid_id": 0, "mnt_id": 0, "host_ppid": 1, "ppid": 1, "uid": 0}


def test_connect_decodes_to_the_expected_json():
    assert decode(CONNECT).to_dict() == {
        "ts": 1_000_000_000, "event_id": 42, "event": "connect", "pid_id": 0, "mnt_id": 0,
        "host_ppid": 1, "host_pid": 4242, "ppid": 1, "pid": 4242, "uid": 1000, "comm": "curl",
        "retval": -111, "errno": "ECONNREFUSED", "argnum": 2,
        "args": [{"type": "INT_T", "value": 3},
                 {"type": "SOCKADDR_T",
                  "value": {"family": "AF_INET", "port": 8080, "addr": "127.0.0.1"}}],
    }


def test_openat_decodes_to_the_expected_json():
    assert decode(OPENAT).to_dict() == {
        "ts": 1, "event_id": 257, "event": "openat", **HEADER, "host_pid": 12345,
        "pid": 12345, "comm": "cat", "retval": 3, "errno": None, "argnum": 3,
        "args": [{"type": "INT_T", "value": -100},
                 {"type": "STR_T", "value": "/etc/hosts"},
                 {"type": "OPEN_FLAGS_T", "value": 524288, "text": "O_RDONLY|O_CLOEXEC"}],
    }


def test_execve_entry_decodes_to_the_expected_json():
    assert decode(EXECVE).to_dict() == {
        "ts": 2, "event_id": 59, "event": "execve", **HEADER, "host_pid": 1234, "pid": 1234,
        "comm": "bash", "retval": 0, "errno": None, "argnum": 2,
        "args": [{"type": "STR_T", "value": "/bin/echo"},
                 {"type": "STR_ARR_T", "value": ["echo", "hi"], "truncated": False}],
    }


def test_hand_samples_decode_the_same_on_the_schema_path_and_re_encode_exactly():
    for sample in (CONNECT, OPENAT, EXECVE):
        event = decode(sample)
        assert parse_event(sample) == event
        assert ebpfwire.encode(event, perf_padding=sample is OPENAT) == sample


def test_decode_many_and_arm64_names():
    events = list(decode_many([CONNECT, OPENAT]))
    assert [e.name for e in events] == ["connect", "openat"]
    arm = OPENAT[:36] + struct.pack("<I", 56) + OPENAT[40:]
    assert decode(arm, arch="arm64").name == "openat"
    with pytest.raises(ValueError, match="arm64"):
        decode(OPENAT, arch="sparc")
    with pytest.raises(ValueError, match="classic"):
        decode(OPENAT, layout="nope")


def test_a_connect_whose_sockaddr_the_writer_skipped_is_an_event_in_both_modes():
    """A NULL sockaddr pointer: the writer writes neither tag nor payload, argnum still
    counts it; strict and lenient alike give the fd and say what is missing."""
    for strict in (True, False):
        event = decode(CONNECT[:73], strict=strict)
        assert event.args == [Arg(ArgType.INT_T, 3)]
        assert [(e.kind, e.offset) for e in event.errors] == [("missing-argument", 73)]
    assert parse_event(CONNECT[:73]) == decode(CONNECT[:73])


def error_of(sample, **kwargs) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(sample, **kwargs)
    return info.value


@pytest.mark.parametrize("sample, kind, offset", [
    (b"", "short-header", 0),
    (CONNECT[:67], "short-header", 0),
    (OPENAT[:73], "missing-argument", 73),                    # argnum 3, one argument
    (CONNECT[:72], "truncated", 69),                          # INT_T payload cut
    (CONNECT[:75], "truncated", 74),                          # sockaddr family cut
    (CONNECT[:80], "truncated", 76),                          # sockaddr_in body cut
    (CONNECT + b"\x01", "trailing-bytes", 90),
    (CONNECT + bytes(8), "trailing-bytes", 90),               # 8 zeros is not perf padding
    (CONNECT[:73] + b"\x63" + CONNECT[74:], "bad-tag", 73),
    (OPENAT[:74] + struct.pack("<i", -5) + OPENAT[78:], "bad-size", 74),
    (OPENAT[:74] + struct.pack("<i", 5000) + OPENAT[78:], "bad-size", 74),
    (OPENAT[:74] + struct.pack("<i", 40) + OPENAT[78:], "truncated", 78),
    (OPENAT[:88] + b"x" + OPENAT[89:], "unterminated-string", 78),
    (EXECVE[:-1], "unterminated-array", len(EXECVE) - 1),
    (EXECVE[:-1] + b"\x01", "bad-tag", len(EXECVE) - 1),
])
def test_strict_errors_say_what_where(sample, kind, offset):
    error = error_of(sample)
    assert (error.kind, error.offset) == (kind, offset)
    assert f"offset {offset}" in str(error) and "expected" in str(error)
    assert isinstance(error, ValueError)
    schema_error = pytest.raises(DecodeError, parse_event, sample).value
    assert (schema_error.kind, schema_error.offset) == (kind, offset)


def test_perf_padding_is_accepted_silently():
    for pad in range(8):
        assert decode(CONNECT + bytes(pad)) == decode(CONNECT)


def test_lenient_resynchronises_after_an_orphan_tag():
    # the string read failed: tag 10 stays, no size and no bytes, then the flags follow
    orphan = OPENAT[:74] + OPENAT[89:]
    event = decode(orphan, strict=False)
    assert [e.kind for e in event.errors] == ["orphan-tag"]
    assert event.errors[0].offset == 73
    assert event.args[0].value == -100
    assert event.args[1] == (ArgType.STR_T, None)
    assert event.args[2].text == "O_RDONLY|O_CLOEXEC"
    assert not event.complete
    assert event.to_dict()["errors"][0]["kind"] == "orphan-tag"


def test_lenient_gives_a_valid_sample_its_strict_arguments():
    """An openat whose arguments are not the catalogue's (INT 10, INT 5, INT 7): the
    payload byte 10 reads as the STR_T the catalogue expects next, which once made lenient
    mode see an orphan tag in a sample strict mode decodes; the arrow and enrichment paths
    gave the strict reading. One rule (walk_args) now: strict when it succeeds."""
    args = [ebpfwire.Arg(ArgType.INT_T, value) for value in (10, 5, 7)]
    sample = ebpfwire.encode(ebpfwire.Event(1, 0, 0, 1, 2, 1, 2, 0, 257, 3, 0, "x", args))
    strict = decode(sample)
    assert strict.args == args
    assert decode(sample, strict=False) == strict.replace(errors=[])


def test_lenient_reports_fewer_arguments_than_argnum_and_keeps_the_rest():
    event = decode(CONNECT[:73], strict=False)
    assert event.args == [(ArgType.INT_T, 3)]
    assert [(e.kind, e.offset) for e in event.errors] == [("missing-argument", 73)]


def test_lenient_reports_trailing_bytes_and_short_headers():
    event = decode(CONNECT + b"junk", strict=False)
    assert len(event.args) == 2 and event.errors[0].kind == "trailing-bytes"
    short = decode(CONNECT[:30], strict=False)
    assert short.ts == 1_000_000_000 and short.host_pid == 4242 and short.pid is None
    assert short.errors[0].kind == "short-header"
    json.dumps(short.to_dict())


def test_lenient_keeps_the_argv_elements_before_an_orphan_element():
    sample = EXECVE[:-9] + b"\x0a" + EXECVE[-1:]       # "hi" lost its payload
    event = decode(sample, strict=False)
    assert event.args[1].value == ["echo"]
    assert [e.kind for e in event.errors] == ["orphan-tag"]


def test_non_utf8_strings_keep_their_exact_bytes_through_json():
    name = b"/tmp/\xff\xfe.txt"
    sample = OPENAT[:74] + struct.pack("<i", len(name) + 1) + name + b"\0" + OPENAT[89:]
    event = decode(sample)
    assert event.args[1].raw == name
    again = ebpfwire.Event.from_dict(json.loads(json.dumps(event.to_dict())))
    assert again.args[1].raw == name and again == event


def test_sockaddr_variants():
    def one(family_bytes: bytes):
        sample = CONNECT[:40] + struct.pack("<I", 1) + CONNECT[44:68] + b"\x0c" + family_bytes
        return decode(sample).args[0].value

    un = one(b"\x01\x00" + b"/run/x.sock".ljust(108, b"\0"))
    assert (un.path, str(un)) == ("/run/x.sock", "/run/x.sock")
    abstract = one(b"\x01\x00" + b"\0name".ljust(108, b"\0"))
    assert abstract.path == "@name"
    six = one(struct.pack("<H", 10) + struct.pack(">HI", 443, 7) + bytes(15) + b"\x01"
              + struct.pack("<I", 2))
    assert (six.addr, six.port, six.flowinfo, six.scope_id) == ("::1", 443, 7, 2)
    assert str(six) == "[::1%2]:443"
    other = one(struct.pack("<H", 16))
    assert other.to_dict() == {"family": "AF_NETLINK"}


def test_argv_of_more_than_twenty_is_cut_and_flagged():
    argv = ebpfwire.Argv(f"a{i}" for i in range(25))
    event = decode(EXECVE).replace(args=[(ArgType.STR_T, "/bin/x"), (ArgType.STR_ARR_T, argv)])
    event = event.replace(args=[ebpfwire.Arg(*a) for a in event.args])
    back = decode(ebpfwire.encode(event))
    assert back.args[1].value == [f"a{i}" for i in range(20)] + ["..."]
    assert back.args[1].value.truncated
    assert back.to_dict()["args"][1]["truncated"] is True


def test_encoder_keeps_the_writer_limits():
    long = "x" * 5000
    event = decode(OPENAT)
    event = event.replace(args=[event.args[0], ebpfwire.Arg(ArgType.STR_T, long), event.args[2]])
    assert decode(ebpfwire.encode(event)).args[1].value == "x" * 4095
    # 20 elements of 4000 bytes overflow the 32 KiB buffer: argv is cut where room ends
    # and the argument after it is dropped, though argnum still announces it
    huge = ebpfwire.Argv(["y" * 4000] * 20)
    full = event.replace(args=[event.args[1], ebpfwire.Arg(ArgType.STR_ARR_T, huge),
                                event.args[1]])
    sample = ebpfwire.encode(full)
    assert len(sample) <= 32768
    lenient = decode(sample, strict=False)
    assert 0 < len(lenient.args[1].value) < 20
    assert len(lenient.args) == 2 and lenient.errors[0].kind == "missing-argument"


def test_extended_layouts_carry_their_extra_fields():
    event = decode(CONNECT).replace(extra={"cwd": "/home/u", "tty": "pts/1", "oid": 1000,
                                            "exec_id": 77, "hash": 5})
    sample = ebpfwire.encode(event, "hash")
    assert len(sample) == 225 + 22
    back = decode(sample, layout="hash")
    assert back == event and back.to_dict()["cwd"] == "/home/u"
    with pytest.raises(DecodeError):
        decode(sample, layout="exec-id")   # one byte too many for that layout


def test_register_a_layout_of_your_own():
    from construct import Int32ul
    layout = ebpfwire.register_layout("test-own", ("cgroup_id" / Int32ul,))
    event = decode(CONNECT).replace(extra={"cgroup_id": 9})
    assert decode(ebpfwire.encode(event, layout), layout="test-own").extra == {"cgroup_id": 9}
    with pytest.raises(ValueError, match="already"):
        ebpfwire.register_layout("test-own")


def test_arg_type_mask_helpers():
    from ebpfwire import arg_types, argnum, dec_arg_type, enc_arg_type, make_mask
    mask = enc_arg_type(1, ArgType.STR_T)                 # rmdir: slot 1 only
    assert mask == 10 << 8 and argnum(mask) == 1
    assert arg_types(mask) == [ArgType.NONE_T, ArgType.STR_T]
    assert dec_arg_type(1, mask) == ArgType.STR_T and dec_arg_type(5, mask) == ArgType.NONE_T
    assert dec_arg_type(0, 0xEE) == 0xEE
    assert make_mask(ArgType.INT_T, ArgType.SOCKADDR_T) == 0x0C01
    with pytest.raises(ValueError):
        enc_arg_type(6, ArgType.INT_T)


def test_stale_perf_padding_of_the_exact_size_is_accepted():
    """The kernel skips the pad rather than zeroing it: 4 + 90 rounds to 96, 2 stale bytes."""
    assert decode(CONNECT + b"\xaa\xbb") == decode(CONNECT)
    assert decode(CONNECT + b"\xaa\xbb", strict=False).errors == []
    for tail in (b"\xaa", b"\xaa\xbb\xcc"):
        assert error_of(CONNECT + tail).kind == "trailing-bytes"
        assert pytest.raises(DecodeError, parse_event, CONNECT + tail).value.offset == 90


def test_arguments_are_walked_before_decode_returns_and_wrapped_on_first_use():
    event = decode(EXECVE)
    assert type(event._args[0]) is int         # no Arg objects yet...
    assert event.flat == [10, "/bin/echo", 11, ["echo", "hi"]]
    assert event.args[1].value == ["echo", "hi"]
    assert type(event._args) is list           # ...built once, on first use
    assert event.flat == [10, "/bin/echo", 11, ["echo", "hi"]]
    assert event == parse_event(EXECVE)
