"""Hypothesis strategies for valid and damaged events: fuzz your consumer of the format.

    from hypothesis import given
    from ebpfwire.wire import strategies as wire

    @given(wire.damaged_event_bytes())
    def test_my_consumer_survives(data): my_consumer(data)

Valid events round-trip: ``decode(encode(e), layout=...) == e``. Damaged byte strings
apply the writer's failure modes (section 5 of the wire-format page) and plain
corruption to valid events.
"""

from __future__ import annotations

import socket
import struct

try:
    from hypothesis import strategies as st
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError("ebpfwire.wire.strategies needs the fuzz extra (hypothesis): "
                      "pip install '.[fuzz]' in a checkout of ebpfwire") from error

from ebpfwire.wire.argtypes import MAX_STRING_SIZE, PAYLOADS, ArgType, arg_types, tags_of
from ebpfwire.wire.catalogue import (
    DO_EXIT,
    MASKS,
    SECURITY_BPRM_CHECK,
    TCP_ACCEPT,
    TCP_ACCEPT_V6,
    TCP_CONNECT,
    TCP_CONNECT_V6,
    event_name,
)
from ebpfwire.wire.encoder import encode, encode_header
from ebpfwire.wire.events import ARGV_LIMIT, ARGV_MORE, Arg, Argv, Event, SockAddr
from ebpfwire.wire.layouts import EXTRA, OFFSETS, Layout, get_layout
from ebpfwire.wire.walker import SOCKADDR_BODY

U32 = st.integers(0, 2**32 - 1)


def wire_text(max_size: int = 64) -> st.SearchStrategy[str]:
    """Strings as the writer reads them: any bytes but NUL, UTF-8 or not."""
    raw = st.binary(max_size=max_size).map(lambda b: b.replace(b"\0", b"\x01"))
    return raw.map(lambda b: b.decode("utf-8", "surrogateescape"))


def sockaddrs() -> st.SearchStrategy[SockAddr]:
    """Addresses of every family the writer sizes, and of unknown families."""
    inet = st.builds(lambda a, p: SockAddr.inet(socket.inet_ntop(socket.AF_INET, a), p),
                     st.binary(min_size=4, max_size=4), st.integers(0, 65535))
    inet6 = st.builds(
        lambda a, p, f, s: SockAddr.inet6(socket.inet_ntop(socket.AF_INET6, a), p, f, s),
        st.binary(min_size=16, max_size=16), st.integers(0, 65535), U32, U32)
    path = wire_text(107).filter(lambda s: not s.startswith("@"))
    abstract = wire_text(106).filter(bool).map(lambda s: "@" + s)
    unix = st.one_of(path, abstract).map(SockAddr.unix)
    other = st.integers(0, 65535).filter(lambda f: f not in SOCKADDR_BODY)
    return st.one_of(inet, inet6, unix, other.map(SockAddr))


def argvs() -> st.SearchStrategy[Argv]:
    """argv lists, sometimes cut by the writer (20 elements plus "...")."""
    short = st.lists(wire_text(40), max_size=ARGV_LIMIT)
    cut = st.lists(wire_text(16), min_size=ARGV_LIMIT, max_size=ARGV_LIMIT).map(
        lambda items: items + [ARGV_MORE])
    return st.one_of(short, cut).map(Argv)


_KIND_VALUES = {
    "string": st.one_of(wire_text(), wire_text(MAX_STRING_SIZE - 1)),
    "argv": argvs(),
    "sockaddr": sockaddrs(),
}
#: Values by type, from argtypes.PAYLOADS: an integer payload's whole range, or its kind's.
_VALUES = {
    tag: st.integers(*payload.bounds) if payload.kind == "int" else _KIND_VALUES[payload.kind]
    for tag, payload in PAYLOADS.items()
}


def args_of(arg_type: ArgType) -> st.SearchStrategy[Arg]:
    """One argument of ``arg_type`` with a value the writer could have written."""
    return _VALUES[arg_type].map(lambda value: Arg(arg_type, value))


_WIRE_TYPES = [t for t in ArgType if t in PAYLOADS]
_STRING_TAGS, _ARGV_TAGS = tags_of("string"), tags_of("argv")


def _catalogue_args(draw, arch: str) -> tuple[int, list[Arg]]:
    special = [DO_EXIT, SECURITY_BPRM_CHECK, TCP_CONNECT, TCP_ACCEPT, TCP_CONNECT_V6,
               TCP_ACCEPT_V6]
    known = [(eid, name) for eid in list(range(0, 460)) + special
             if (name := event_name(eid, arch)) in MASKS]
    event_id, name = draw(st.sampled_from(known))
    types = [t for t in arg_types(MASKS[name]) if t != ArgType.NONE_T]
    return event_id, [draw(args_of(t)) for t in types]


def _extra(layout: Layout) -> st.SearchStrategy[dict]:
    fields = {}
    for sub in layout.schema.subcons[EXTRA:]:
        if sub.name in layout.text_fields:
            fields[sub.name] = wire_text(sub.sizeof())
        else:
            fields[sub.name] = st.integers(0, 2 ** (8 * sub.sizeof()) - 1)
    return st.fixed_dictionaries(fields)


@st.composite
def events(draw, layout: str | Layout = "classic", arch: str = "x86_64") -> Event:
    """Valid events: catalogue events with their own argument types, or any mix of types."""
    layout = get_layout(layout)
    if draw(st.booleans()):
        event_id, args = _catalogue_args(draw, arch)
    else:
        event_id = draw(U32)
        types = draw(st.lists(st.sampled_from(_WIRE_TYPES), max_size=6))
        args = [draw(args_of(t)) for t in types]
    return Event(
        draw(st.integers(0, 2**64 - 1)), draw(U32), draw(U32), draw(U32), draw(U32), draw(U32),
        draw(U32), draw(U32), event_id, len(args), draw(st.integers(-(2**63), 2**63 - 1)),
        draw(wire_text(16)), args, draw(_extra(layout)), arch)


def event_bytes(layout: str | Layout = "classic", arch: str = "x86_64") -> st.SearchStrategy[bytes]:
    """Encoded valid events, with or without the perf ring's zero padding."""
    return st.tuples(events(layout, arch), st.booleans()).map(
        lambda pair: encode(pair[0], layout, perf_padding=pair[1]))


def _pieces(event: Event, layout) -> tuple[bytes, list[bytes]]:
    header = encode_header(event, layout)
    body = encode(event, layout)[len(header):]
    pieces, offset = [], 0
    for arg in event.args:
        size = len(encode(event.replace(args=[arg]), layout)) - len(header)
        pieces.append(body[offset:offset + size])
        offset += size
    return header, pieces


@st.composite
def damaged_event_bytes(draw, layout: str | Layout = "classic",
                        arch: str = "x86_64") -> bytes:
    """Valid events damaged the ways samples really break, and some ways they should not."""
    event = draw(events(layout, arch))
    header, pieces = _pieces(event, layout)
    damage = draw(st.sampled_from(["truncate", "orphan", "drop-last", "bad-size", "flip",
                                   "trailing", "argnum", "unclosed-argv", "garbage"]))
    if damage == "orphan" and pieces:
        index = draw(st.integers(0, len(pieces) - 1))
        pieces[index] = pieces[index][:1]
    elif damage == "drop-last" and pieces:
        pieces.pop()
    elif damage == "bad-size":
        strings = [i for i, p in enumerate(pieces) if p[0] in _STRING_TAGS]
        if strings:
            index = draw(st.sampled_from(strings))
            size = draw(st.one_of(st.integers(-(2**31), -1), st.integers(4097, 2**31 - 1),
                                  st.integers(len(pieces[index]), 8192)))
            pieces[index] = pieces[index][:1] + struct.pack("<i", size) + pieces[index][5:]
    elif damage == "unclosed-argv":
        arrays = [i for i, p in enumerate(pieces) if p[0] in _ARGV_TAGS]
        if arrays:
            index = draw(st.sampled_from(arrays))
            pieces[index] = pieces[index][:-1]
    elif damage == "argnum":
        count = draw(st.integers(0, 2**32 - 1))
        at = OFFSETS["argnum"]
        header = header[:at] + struct.pack("<I", count) + header[at + 4:]
    data = header + b"".join(pieces)
    if damage == "truncate":
        data = data[:draw(st.integers(0, max(len(data) - 1, 0)))]
    elif damage == "flip" and data:
        position = draw(st.integers(0, len(data) - 1))
        data = data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) \
            + data[position + 1:]
    elif damage == "trailing":
        data += draw(st.binary(min_size=1, max_size=16))
    elif damage == "garbage":
        data = draw(st.binary(max_size=400))
    if draw(st.booleans()):
        data += bytes(-(4 + len(data)) % 8)
    return data
