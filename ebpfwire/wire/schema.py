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
    Construct,
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
from ebpfwire.wire.catalogue import check_arch, expected_tags
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    HASH_DIGEST_SIZE,
    HASH_KINDS,
    Arg,
    Argv,
    Event,
    SockAddr,
)
from ebpfwire.wire.layouts import OFFSETS, Layout, get_layout
from ebpfwire.wire.text import text

MAX_PADDING = 7


def perf_pad(size: int) -> int:
    """Bytes the perf ring pads a raw sample of ``size`` with (4 + size rounded up to 8)."""
    return -(4 + size) % 8


_FIRST_KIND, _LAST_KIND = min(HASH_KINDS), max(HASH_KINDS)


def hash_trailer(data: bytes, p: int, n: int, out: list) -> int | None:
    """Read the hash trailer at ``p`` (section 7 of the wire-format page) up to the end of
    the sample (padding allowed): append one ``{"type", "kind", "digest"}`` dict per kind
    the writer tried (digest None: not found) to ``out`` and return where the trailer
    ends, or None (``out`` untouched) when the bytes do not read so.

    The count says how many digests follow; the kinds come in increasing order, each
    found one followed by its digest, each missing one bare. Where the bytes allow two
    readings, a kind word is preferred to padding and a bare kind to a digest: a bare
    kind is misread only when a digest begins with a later kind's word (2**-32 for
    SHA-256 digests), while a digest read first would swallow the next kind's word
    whenever the padding can take the last 4 bytes.
    """
    if p >= n or data[p] > len(HASH_KINDS):
        return None
    found = _kinds(data, p + 1, n, data[p], _FIRST_KIND)
    if found is None:
        return None
    end, items = found
    out.extend(reversed(items))
    return end


def _kinds(data: bytes, p: int, n: int, count: int, low: int) -> tuple[int, list] | None:
    """The rest of a trailer from ``p``: (its end, its hashes in reverse) or None."""
    if p + 4 <= n:
        kind = int.from_bytes(data[p:p + 4], "little")
        if low <= kind <= _LAST_KIND:
            q = p + 4
            rest = _kinds(data, q, n, count, kind + 1)
            if rest is not None:
                rest[1].append({"type": kind, "kind": HASH_KINDS[kind], "digest": None})
                return rest
            if count and q + HASH_DIGEST_SIZE <= n:
                rest = _kinds(data, q + HASH_DIGEST_SIZE, n, count - 1, kind + 1)
                if rest is not None:
                    digest = data[q:q + HASH_DIGEST_SIZE].hex()
                    rest[1].append({"type": kind, "kind": HASH_KINDS[kind], "digest": digest})
                    return rest
    tail = n - p
    if count == 0 and (tail == 0 or (tail <= MAX_PADDING and (
            tail == perf_pad(p) or not any(data[p:n])))):
        return p, []
    return None


class HashTrailer(Construct):
    """The hash trailer up to the end of the sample (:func:`hash_trailer`), as a list."""

    def _parse(self, stream, context, path):
        start = stream_tell(stream, path)
        rest = stream.read()
        out: list = []
        # offsets as in the sample, so that the ring's padding is computed from them
        if hash_trailer(bytes(start) + rest, start, start + len(rest), out) is None:
            raise ConstructError("the bytes after the arguments are no hash trailer")
        return out

    def _build(self, obj, stream, context, path):
        raise NotImplementedError("the encoder writes hash trailers")


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
    """The whole sample for ``layout``: header, argnum arguments, the hash trailer when
    the layout has a hash field set to 1, then the perf padding."""
    trailer = () if layout.hash_at is None else (
        "hashes" / If(this.context.hash == 1, Located("bad-hash", HashTrailer())),)
    return Struct(
        "context" / Located("short-header", layout.schema, at_end="short-header"),
        "args" / Array(this.context.argnum, ArgSchema),
        "args_end" / Tell,
        *trailer,
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
    data = bytes(data)
    errors = None
    try:
        parsed = event_schema(layout).parse(data)
    except ConstructError as error:
        parsed, errors = _skipped_sockaddr(data, layout, arch, error)
    ctx = parsed.context
    values = [ctx[name] for name in layout.field_names]
    header = values[:11]
    comm = text(ctx.comm.partition(b"\0")[0])
    extra = {
        name: text(ctx[name].partition(b"\0")[0]) if name in layout.text_fields else ctx[name]
        for name in layout.extra_names
    }
    if parsed.get("hashes") is not None:
        extra["hashes"] = list(parsed.hashes)
    return Event(*header, comm, [_arg(item) for item in parsed.args], extra, arch, errors)


def _skipped_sockaddr(data: bytes, layout: Layout, arch: str, error: ConstructError):
    """A catalogue event whose last arguments, sockaddrs, the writer skipped (NULL
    pointers): its parse and the missing-argument it notes; else the DecodeError."""
    at = OFFSETS["argnum"]
    if len(data) >= layout.size:
        context = layout.schema.parse(data[:layout.size])
        expected = expected_tags(context.event_id, arch, context.argnum) or ()
        for count in range(len(expected) - 1, -1, -1):
            if expected[count] != ArgType.SOCKADDR_T:
                break
            patched = data[:at] + count.to_bytes(4, "little") + data[at + 4:]
            try:
                parsed = event_schema(layout).parse(patched)
            except ConstructError:
                continue
            parsed.context.argnum = context.argnum
            missing = DecodeError("missing-argument", parsed.args_end,
                                  f"argument {count + 1} of the {context.argnum} argnum "
                                  "announces", "the end (a NULL sockaddr skipped)")
            return parsed, [missing]
    kind = getattr(error, "wire_kind", "truncated")
    offset = getattr(error, "wire_offset", 0)
    raise DecodeError(kind, offset, "a well-formed event (schema path)",
                      str(error).splitlines()[-1]) from None
