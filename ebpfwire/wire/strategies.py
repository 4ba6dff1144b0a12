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
from functools import cache

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
    SPECIAL_EVENTS,
    TCP_ACCEPT,
    TCP_ACCEPT_V6,
    TCP_CONNECT,
    TCP_CONNECT_V6,
    event_name,
)
from ebpfwire.wire.encoder import encode, encode_header
from ebpfwire.wire.events import ARGV_LIMIT, ARGV_MORE, Arg, Argv, Event, SockAddr
from ebpfwire.wire.layouts import EXTRA, OFFSETS, Layout, get_layout
from ebpfwire.wire.schema import HASH_DIGEST_SIZE, HASH_KINDS
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


def hash_trailers(kinds: tuple[int, ...] | None = None) -> st.SearchStrategy[list[dict]]:
    """A hash trailer's hashes as ``Event.extra["hashes"]`` holds them: the kinds tried
    (``kinds``, else any of 30, 31, 32 in order), each found (a digest) or not."""
    tried = (st.just(kinds) if kinds is not None else
             st.lists(st.sampled_from(sorted(HASH_KINDS)), unique=True, max_size=3).map(sorted))
    # a digest that begins with a kind's word reads as that kind (schema.hash_trailer):
    # SHA-256 digests almost never do, generated ones often would
    found = st.binary(min_size=HASH_DIGEST_SIZE, max_size=HASH_DIGEST_SIZE).filter(
        lambda raw: int.from_bytes(raw[:4], "little") not in HASH_KINDS)
    digest = st.one_of(st.none(), found.map(bytes.hex))
    return tried.flatmap(lambda types: st.tuples(*(digest for _ in types)).map(
        lambda digests: [{"type": t, "kind": HASH_KINDS[t], "digest": d}
                         for t, d in zip(types, digests, strict=True)]))


def _with_hashes(extra: dict) -> st.SearchStrategy[dict]:
    if extra.get("hash") != 1:
        return st.just(extra)
    return hash_trailers().map(lambda hashes: {**extra, "hashes": hashes})


@st.composite
def catalogue_events(draw, layout: str | Layout = "classic", arch: str = "x86_64") -> Event:
    """Valid events of the catalogue only: each id with the arguments the monitor writes."""
    layout = get_layout(layout)
    event_id, args = _catalogue_args(draw, arch)
    return Event(
        draw(st.integers(0, 2**64 - 1)), draw(U32), draw(U32), draw(U32), draw(U32), draw(U32),
        draw(U32), draw(U32), event_id, len(args), draw(st.integers(-(2**63), 2**63 - 1)),
        draw(wire_text(16)), args, draw(_extra(layout)), arch)


def _extra(layout: Layout) -> st.SearchStrategy[dict]:
    fields = {}
    for sub in layout.schema.subcons[EXTRA:]:
        if sub.name in layout.text_fields:
            fields[sub.name] = wire_text(sub.sizeof())
        elif sub.name == "hash" and layout.hash_at is not None:
            fields[sub.name] = st.one_of(st.integers(0, 1), st.integers(0, 255))
        else:
            fields[sub.name] = st.integers(0, 2 ** (8 * sub.sizeof()) - 1)
    return st.fixed_dictionaries(fields).flatmap(_with_hashes)


@st.composite
def events(draw, layout: str | Layout = "classic", arch: str = "x86_64") -> Event:
    """Valid events: catalogue events with their own argument types, or any mix of types."""
    layout = get_layout(layout)
    if draw(st.booleans()):
        return draw(catalogue_events(layout, arch))
    event_id = draw(U32)
    types = draw(st.lists(st.sampled_from(_WIRE_TYPES), max_size=6))
    args = [draw(args_of(t)) for t in types]
    return Event(
        draw(st.integers(0, 2**64 - 1)), draw(U32), draw(U32), draw(U32), draw(U32), draw(U32),
        draw(U32), draw(U32), event_id, len(args), draw(st.integers(-(2**63), 2**63 - 1)),
        draw(wire_text(16)), args, draw(_extra(layout)), arch)


#: The events whose context KubeArmor's newest writer marks hash = 1, and whether it
#: also tries the file's hash (kind 32): the file events yes, the exec exits no.
_HASHED = {"open": True, "openat": True, "close": True, "unlink": True, "unlinkat": True,
           "rmdir": True, "chown": True, "fchownat": True, "execve": False, "execveat": False}


@st.composite
def newest_writer_events(draw, arch: str = "x86_64") -> Event:
    """Events as KubeArmor's newest writer (2025-10 on) writes them, in the hash layout:
    the file events and the exec exits with a hash trailer (the kinds it tries, 30 and 31,
    and 32 for files; 0 to all of them found, none when IMA is off), the udp hooks'
    2025 shape (a sockaddr_in to port 53 stored in host order, a query name with a
    trailing dot, A or AAAA), no -2 or -115 results for syscalls (it does not write
    them), no failed string read (it leaves none)."""
    layout = get_layout("hash")
    ids = _event_ids(arch)
    name = draw(st.sampled_from(sorted(ids)))
    event_id = ids[name]
    types = [t for t in arg_types(MASKS[name]) if t != ArgType.NONE_T]
    exit_event = name in ("execve", "execveat") and draw(st.booleans())
    if exit_event:
        types = []
    if name in ("udp_sendmsg", "udp_send_skb"):
        label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
        qname = st.lists(label, min_size=1, max_size=4).map(lambda parts: ".".join(parts) + ".")
        server = st.binary(min_size=4, max_size=4).map(
            lambda a: SockAddr.inet(socket.inet_ntop(socket.AF_INET, a), 0x3500))
        args = [Arg(ArgType.SOCKADDR_T, draw(server)), Arg(ArgType.UDP_MSG, draw(qname)),
                Arg(ArgType.QTYPE, draw(st.sampled_from([1, 28])))]
    else:
        args = [draw(args_of(t)) for t in types]
    retval = draw(st.integers(-4095, 2**31 - 1).filter(lambda r: r not in (-2, -115)))
    extra = draw(_extra(layout))
    extra["hash"] = 0
    extra.pop("hashes", None)
    if name in _HASHED and (exit_event or name not in ("execve", "execveat")):
        kinds = (30, 31, 32) if _HASHED[name] else (30, 31)
        extra["hash"] = 1
        extra["hashes"] = draw(st.one_of(
            hash_trailers(kinds).map(lambda hashes: [{**h, "digest": None} for h in hashes]),
            hash_trailers(kinds)))
    return Event(
        draw(st.integers(0, 2**64 - 1)), draw(U32), draw(U32), draw(U32), draw(U32), draw(U32),
        draw(U32), draw(U32), event_id, len(args), retval, draw(wire_text(16)), args, extra,
        arch)


@cache
def _event_ids(arch: str) -> dict[str, int]:
    """The catalogue's events that have an id on ``arch``, by name."""
    ids = {}
    for event_id in (*range(1024), *SPECIAL_EVENTS):
        name = event_name(event_id, arch)
        if name in MASKS:
            ids.setdefault(name, event_id)
    return ids


def newest_writer_bytes(arch: str = "x86_64") -> st.SearchStrategy[bytes]:
    """:func:`newest_writer_events` encoded, with the ring's padding of stale bytes."""
    def padded(event: Event, stale: bytes) -> bytes:
        data = encode(event, "hash")
        return data + stale[:-(4 + len(data)) % 8]
    return st.builds(padded, newest_writer_events(arch), st.binary(min_size=7, max_size=7))


def event_bytes(layout: str | Layout = "classic", arch: str = "x86_64") -> st.SearchStrategy[bytes]:
    """Encoded valid events, with or without the perf ring's zero padding."""
    return st.tuples(events(layout, arch), st.booleans()).map(
        lambda pair: encode(pair[0], layout, perf_padding=pair[1]))


def _pieces(event: Event, layout) -> tuple[bytes, list[bytes], bytes]:
    """The header, each argument's bytes and the hash trailer (layout hash) of an event."""
    header = encode_header(event, layout)
    trailer = encode(event.replace(args=[]), layout)[len(header):]
    body = encode(event, layout)[len(header):]
    pieces, offset = [], 0
    for arg in event.args:
        size = len(encode(event.replace(args=[arg]), layout)) - len(header) - len(trailer)
        pieces.append(body[offset:offset + size])
        offset += size
    return header, pieces, body[offset:]


@st.composite
def damaged_event_bytes(draw, layout: str | Layout = "classic",
                        arch: str = "x86_64") -> bytes:
    """Valid events damaged the ways samples really break, and some ways they should not."""
    event = draw(events(layout, arch))
    header, pieces, trailer = _pieces(event, layout)
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
    data = header + b"".join(pieces) + trailer
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
