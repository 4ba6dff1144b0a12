"""The wire format as construct schemas: the specification the fast decoder must equal.

Every element that can fail is wrapped in :class:`Located`, which records where the
element starts and which kind of damage its failure means; the innermost element that
fails names the offset. ``parse_event`` turns a parse into the same :class:`Event` the
fast decoder builds, so the two can be compared on any input.
"""

from __future__ import annotations

import socket
from functools import cache

from construct import (
    Array,
    Bytes,
    Check,
    ConstructError,
    ExprValidator,
    FormatField,
    GreedyBytes,
    If,
    Int8ul,
    Int16ub,
    Int16ul,
    Int32sl,
    Int32ub,
    Int32ul,
    OneOf,
    Pass,
    RepeatUntil,
    Select,
    StreamError,
    Struct,
    Subconstruct,
    Switch,
    Tell,
    len_,
    obj_,
    stream_tell,
    this,
)

from ebpfwire.wire.argtypes import MAX_STRING_SIZE, PAYLOADS, ArgType
from ebpfwire.wire.catalogue import check_arch
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import AF_INET, AF_INET6, AF_UNIX, Arg, Argv, Event, SockAddr
from ebpfwire.wire.layouts import Layout, get_layout
from ebpfwire.wire.text import text

MAX_PADDING = 7


def perf_pad(size: int) -> int:
    """Bytes the perf ring pads a raw sample of ``size`` with (4 + size rounded up to 8)."""
    return -(4 + size) % 8


class Located(Subconstruct):
    """Parse ``subcon``; if it fails, tag the error with this element's offset and kind.

    A read past the end of the sample is ``at_end`` (``truncated`` unless said), any other
    failure is ``kind``. Inner elements tag first, so the most precise place wins.
    """

    def __init__(self, kind: str, subcon, at_end: str = "truncated"):
        super().__init__(subcon)
        self.kind = kind
        self.at_end = at_end

    def _parse(self, stream, context, path):
        start = stream_tell(stream, path)
        try:
            return self.subcon._parsereport(stream, context, path)
        except ConstructError as error:
            if not hasattr(error, "wire_kind"):
                error.wire_offset = start
                error.wire_kind = self.at_end if isinstance(error, StreamError) else self.kind
            raise

    def _build(self, obj, stream, context, path):
        return self.subcon._build(obj, stream, context, path)

    def _emitparse(self, code):
        # compiled schemas (used to measure the schema path) do not locate errors
        return self.subcon._compileparse(code)


def _fixed(subcon):
    return Located("truncated", subcon)


StrPayload = Struct(
    "size" / Located("bad-size",
                     ExprValidator(Int32sl, (obj_ >= 0) & (obj_ <= MAX_STRING_SIZE))),
    "data" / Located("unterminated-string",
                     ExprValidator(Bytes(this.size), (len_(obj_) == 0) | (obj_[-1:] == b"\0"))),
)

ArgvElement = Struct(
    "tag" / Located(
        "bad-tag",
        OneOf(Int8ul, [int(ArgType.STR_T), int(ArgType.STR_ARR_T)]),
        at_end="unterminated-array",
    ),
    "string" / If(this.tag == int(ArgType.STR_T), StrPayload),
)

#: opening tag 11 (read as the argument's tag), elements, closing tag 11
StrArray = RepeatUntil(obj_.tag == int(ArgType.STR_ARR_T), ArgvElement)

#: The struct sockaddr_* body after the family word, per family the writer copies whole; the
#: walker's sizes and the encoder's bytes come from these.
SOCKADDR_BODIES = {
    AF_UNIX: Struct("path" / Bytes(108)),
    AF_INET: Struct("port" / Int16ub, "addr" / Bytes(4), "zero" / Bytes(8)),
    AF_INET6: Struct("port" / Int16ub, "flowinfo" / Int32ub, "addr" / Bytes(16),
                     "scope_id" / Int32ul),
}

SockAddrSchema = Struct(
    "family" / _fixed(Int16ul),
    "body" / Switch(this.family, {family: _fixed(body) for family, body in SOCKADDR_BODIES.items()},
                    default=Pass),
)

_KIND_SCHEMAS = {"string": StrPayload, "argv": StrArray, "sockaddr": SockAddrSchema}

#: The payload schema of every tag, from :data:`ebpfwire.wire.argtypes.PAYLOADS`.
PAYLOAD_SCHEMAS = {
    int(tag): _fixed(FormatField(*payload.code)) if payload.kind == "int"
    else _KIND_SCHEMAS[payload.kind]
    for tag, payload in PAYLOADS.items()
}

ArgSchema = Struct(
    "tag" / Located("bad-tag", OneOf(Int8ul, sorted(PAYLOAD_SCHEMAS)),
                    at_end="missing-argument"),
    "value" / Switch(this.tag, PAYLOAD_SCHEMAS),
)


@cache
def event_schema(layout: Layout) -> Struct:
    """The whole sample for ``layout``: header, argnum arguments, then 0..7 zero bytes."""
    return Struct(
        "context" / Located("short-header", layout.schema, at_end="short-header"),
        "args" / Array(this.context.argnum, ArgSchema),
        "args_end" / Tell,
        "padding" / Located("trailing-bytes", Select(
            OneOf(GreedyBytes, [bytes(size) for size in range(MAX_PADDING + 1)]),
            Struct("stale" / GreedyBytes,
                   Check(len_(this.stale) == (8 - (4 + this._.args_end) % 8) % 8)),
        )),
    )


def _string(payload) -> str:
    return text(payload.data[:-1])


def _sockaddr(value) -> SockAddr:
    family, body = value.family, value.body
    if family == AF_INET:
        return SockAddr(family, body.port, socket.inet_ntop(socket.AF_INET, body.addr))
    if family == AF_INET6:
        addr = socket.inet_ntop(socket.AF_INET6, body.addr)
        return SockAddr(family, body.port, addr, None, body.flowinfo, body.scope_id)
    if family == AF_UNIX:
        path = body.path
        if path[:1] == b"\0":
            return SockAddr(family, path=("@" + text(path[1:].rstrip(b"\0"))) if any(path) else "")
        return SockAddr(family, path=text(path.partition(b"\0")[0]))
    return SockAddr(family)


def _arg(item) -> Arg:
    tag = ArgType(item.tag)
    kind = PAYLOADS[tag].kind
    value = item.value
    if kind == "string":
        value = _string(value)
    elif kind == "argv":
        value = Argv(_string(e.string) for e in value if e.tag == ArgType.STR_T)
    elif kind == "sockaddr":
        value = _sockaddr(value)
    return Arg(tag, value)


def parse_event(data: bytes, *, layout: str | Layout = "classic", arch: str = "x86_64") -> Event:
    """Decode one sample with the construct schemas (strict): the reference decoder."""
    layout = get_layout(layout)
    check_arch(arch)
    try:
        parsed = event_schema(layout).parse(bytes(data))
    except ConstructError as error:
        kind = getattr(error, "wire_kind", "truncated")
        offset = getattr(error, "wire_offset", 0)
        raise DecodeError(kind, offset, "a well-formed event (schema path)",
                          str(error).splitlines()[-1]) from None
    ctx = parsed.context
    values = [ctx[name] for name in layout.field_names]
    header = values[:11]
    comm = text(ctx.comm.partition(b"\0")[0])
    extra = {
        name: text(ctx[name].partition(b"\0")[0]) if name in layout.text_fields else ctx[name]
        for name in layout.extra_names
    }
    return Event(*header, comm, [_arg(item) for item in parsed.args], extra, arch)
