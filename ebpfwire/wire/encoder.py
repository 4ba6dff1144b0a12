"""Events to bytes, the way the kernel-side writer would write them, limits included.

Strings are cut to 4095 bytes plus the NUL, argv to 20 elements plus "...", a sockaddr
is sized by its family, and an argument the 32 KiB scratch buffer has no room for is
dropped (``argnum`` still announces it), exactly as the monitor's writer does.
"""

from __future__ import annotations

import socket
import struct

from ebpfwire.wire.argtypes import MAX_STRING_SIZE, PAYLOADS, ArgType
from ebpfwire.wire.events import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    ARGV_LIMIT,
    ARGV_MORE,
    Arg,
    Argv,
    Event,
    SockAddr,
)
from ebpfwire.wire.layouts import Layout, get_layout
from ebpfwire.wire.schema import SOCKADDR_BODIES
from ebpfwire.wire.text import raw

MAX_BUFFER_SIZE = 32768
MAX_ELEMENT_SIZE = 110  # sizeof(struct sockaddr_un), the biggest fixed-size argument
_STRING_ROOM = MAX_BUFFER_SIZE - MAX_STRING_SIZE - 4  # the last offset a string may start at

_S32 = struct.Struct("<i").pack
_U32 = struct.Struct("<I").pack
_U16 = struct.Struct("<H").pack
_U16BE = struct.Struct(">H").pack

#: The packer of every fixed-width payload, by type (from argtypes.PAYLOADS).
_PACK = {tag: struct.Struct(payload.code).pack for tag, payload in PAYLOADS.items()
         if payload.kind == "int"}


def encode_string(value: str) -> bytes:
    """A STR_T payload: s32 size (NUL included), the bytes cut to 4095, then the NUL."""
    data = raw(value)[:MAX_STRING_SIZE - 1] + b"\0"
    return _S32(len(data)) + data


def encode_sockaddr(addr: SockAddr) -> bytes:
    """The struct sockaddr_* bytes the writer copies for ``addr.family``."""
    family = _U16(addr.family)
    body = SOCKADDR_BODIES.get(addr.family)
    if addr.family == AF_INET:
        return family + body.build({"port": addr.port or 0, "zero": bytes(8),
                                    "addr": socket.inet_pton(socket.AF_INET, addr.addr)})
    if addr.family == AF_INET6:
        return family + body.build({"port": addr.port or 0, "flowinfo": addr.flowinfo or 0,
                                    "addr": socket.inet_pton(socket.AF_INET6, addr.addr),
                                    "scope_id": addr.scope_id or 0})
    if addr.family == AF_UNIX:
        path = addr.path or ""
        name = b"\0" + raw(path[1:]) if path.startswith("@") else raw(path)
        size = body.sizeof()
        return family + body.build({"path": name[:size].ljust(size, b"\0")})
    return family


def _payload(arg: Arg, offset: int) -> bytes:
    """The bytes after the tag of an argument whose tag goes at ``offset``."""
    arg_type, value = arg.type, arg.value
    if value is None:          # the writer's read failed: the tag stays, nothing follows
        return b""
    payload = PAYLOADS.get(arg_type)
    kind = payload.kind if payload is not None else None
    if kind == "int":
        return _PACK[arg_type](value)
    if kind == "string":
        return encode_string(value)
    if kind == "argv":
        return _argv_payload(value, offset)
    if kind == "sockaddr":
        return encode_sockaddr(value)
    raise ValueError(f"{arg_type!r} has no payload on the wire")


def _fits(arg: Arg, offset: int) -> bool:
    """The writer's room check before an argument (section 5 of the wire-format page)."""
    payload = PAYLOADS.get(arg.type)
    if payload is not None and payload.kind in ("string", "argv"):
        return offset <= _STRING_ROOM
    return offset <= MAX_BUFFER_SIZE - MAX_ELEMENT_SIZE


def _argv_payload(value: list[str], offset: int) -> bytes:
    """argv elements after the opening tag at ``offset``, each room-checked, then the close.

    More than 20 elements are cut to 20 plus "..." (unless already cut so); the writer
    stops adding elements when the buffer has no room for another string.
    """
    items = list(value)
    if len(items) > ARGV_LIMIT and not Argv(items).truncated:
        items = items[:ARGV_LIMIT] + [ARGV_MORE]
    out = bytearray()
    for item in items:
        if offset + 1 + len(out) > _STRING_ROOM:
            break
        out += bytes([ArgType.STR_T]) + encode_string(item)
    return bytes(out) + bytes([ArgType.STR_ARR_T])


MAX_HASH_DATA_SIZE = 36   # a kind and its digest: the room the writer checks for each


def hash_trailer_bytes(hashes, offset: int) -> bytes:
    """The hash trailer after arguments that end at ``offset``: the count of digests, then
    each kind (u32) with its digest when found; a hash without room is left out, as
    the writer does."""
    body = bytearray()
    count = 0
    for item in hashes:
        if offset + 1 + len(body) > MAX_BUFFER_SIZE - MAX_HASH_DATA_SIZE:
            continue
        body += _U32(item["type"])
        if item["digest"] is not None:
            body += bytes.fromhex(item["digest"])
            count += 1
    return bytes([count]) + bytes(body)


def encode_header(event: Event, layout: str | Layout = "classic") -> bytes:
    """The context header of ``event`` in ``layout`` (missing extra fields are zero)."""
    layout = get_layout(layout)
    values = [event.ts, event.pid_id, event.mnt_id, event.host_ppid, event.host_pid,
              event.ppid, event.pid, event.uid, event.event_id, event.argnum, event.retval,
              raw(event.comm)]
    for name in layout.extra_names:
        value = event.extra.get(name, b"" if name in layout.text_fields else 0)
        values.append(raw(value) if isinstance(value, str) else value)
    return layout.fmt.pack(*values)


def encode(event: Event, layout: str | Layout = "classic", *, perf_padding: bool = False) -> bytes:
    """The bytes the kernel writer submits for ``event``.

    With ``perf_padding`` the zeros the perf ring adds (raw size rounded so that
    4 + size is a multiple of 8) are appended, as a reader receives them.
    """
    out = bytearray(encode_header(event, layout))
    for arg in event.args:
        if not _fits(arg, len(out)):
            continue
        out += bytes([arg.type]) + _payload(arg, len(out))
    layout = get_layout(layout)
    if layout.hash_at is not None and event.extra.get("hash") == 1:
        out += hash_trailer_bytes(event.extra.get("hashes") or (), len(out))
    # the writer submits offset & (MAX_BUFFER_SIZE - 1) bytes
    data = bytes(out[:len(out) & (MAX_BUFFER_SIZE - 1)] if len(out) >= MAX_BUFFER_SIZE else out)
    if perf_padding:
        data += bytes(-(4 + len(data)) % 8)
    return data
