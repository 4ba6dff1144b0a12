"""The fast decoder: samples to :class:`Event` with ``struct`` and slicing.

It must give exactly what the construct schemas (``schema.parse_event``) give, or the
same error kind at the same offset; a property test holds it to that. Strict mode
raises :class:`DecodeError`; lenient mode never raises, keeps everything it could
decode and lists the damage. Every loop consumes at least one byte per turn, and
nothing is allocated beyond slices of the input.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Iterator
from types import MappingProxyType

from .argtypes import ArgType
from .catalogue import check_arch, expected_tags
from .errors import DecodeError
from .events import AF_INET, AF_INET6, AF_UNIX, Arg, Argv, Event, SockAddr, wire_event
from .layouts import LAYOUTS, Layout, get_layout
from .names import ARCHES
from .schema import MAX_PADDING, MAX_STRING_SIZE, perf_pad

_S32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U16 = struct.Struct("<H").unpack_from
_U16BE = struct.Struct(">H").unpack_from
_INET6_TAIL = struct.Struct(">HI16s").unpack_from  # port, flowinfo (network order), addr
_inet_ntop = socket.inet_ntop
_new_arg = tuple.__new__
_STR, _ARR, _SOCKADDR = int(ArgType.STR_T), int(ArgType.STR_ARR_T), int(ArgType.SOCKADDR_T)
_SOCKADDR_BODY = {AF_UNIX: 108, AF_INET: 14, AF_INET6: 26}
_PADDING_EXPECTED = "the perf ring's {} bytes of padding or at most 7 zero bytes"
_ARGV_EXPECTED = "an argv element tag (10) or the closing tag (11)"


_error = DecodeError


def _string(data: bytes, p: int, n: int) -> tuple[str, int]:
    """A STR_T payload at ``p`` (the size field); returns the text and the next offset."""
    if p + 4 > n:
        raise _error("truncated", p, "a 4-byte string size", f"{n - p} bytes")
    size = _S32(data, p)[0]
    if not 0 <= size <= MAX_STRING_SIZE:
        raise _error("bad-size", p, f"a string size in 0..{MAX_STRING_SIZE}", str(size))
    q = p + 4
    end = q + size
    if end > n:
        raise _error("truncated", q, f"{size} string bytes", f"{n - q} bytes")
    if size and data[end - 1]:
        raise _error("unterminated-string", q, "a NUL as the string's last byte",
                     f"byte 0x{data[end - 1]:02x}")
    return data[q:end - 1].decode("utf-8", "surrogateescape"), end


def _argv(data: bytes, p: int, n: int, errors: list | None) -> tuple[Argv, int]:
    """STR_ARR_T elements after the opening tag, up to and including the closing tag."""
    items = Argv()
    while True:
        if p >= n:
            error = _error("unterminated-array", p, _ARGV_EXPECTED, "end of data")
            if errors is None:
                raise error
            errors.append(error)
            return items, p
        tag = data[p]
        if tag == _ARR:
            return items, p + 1
        if tag != _STR:
            error = _error("bad-tag", p, _ARGV_EXPECTED, f"tag {tag}")
            if errors is None:
                raise error
            errors.append(error)
            return items, p
        if errors is None:
            value, p = _string(data, p + 1, n)
            items.append(value)
            continue
        try:
            value, q = _string(data, p + 1, n)
        except DecodeError as error:
            value, q, failure = None, p + 1, error
        if value is not None and (q >= n or data[q] in (_STR, _ARR)):
            items.append(value)
            p = q
        elif p + 1 < n and data[p + 1] in (_STR, _ARR):
            errors.append(_error("orphan-tag", p, "a string payload after the element tag",
                                 f"tag {data[p + 1]} (the writer's string read failed)"))
            p += 1
        elif value is not None:
            items.append(value)
            p = q
        else:
            errors.append(failure)
            return items, p


def _sockaddr(data: bytes, p: int, n: int) -> tuple[SockAddr, int]:
    if p + 2 > n:
        raise _error("truncated", p, "a 2-byte address family", f"{n - p} bytes")
    family = _U16(data, p)[0]
    q = p + 2
    if family == AF_INET:
        if q + 14 > n:
            raise _error("truncated", q, "14 bytes of sockaddr_in", f"{n - q} bytes")
        return (_new_arg(SockAddr, (family, _U16BE(data, q)[0],
                                    _inet_ntop(socket.AF_INET, data[q + 2:q + 6]),
                                    None, None, None)), q + 14)
    if family == AF_INET6:
        if q + 26 > n:
            raise _error("truncated", q, "26 bytes of sockaddr_in6", f"{n - q} bytes")
        port, flowinfo, addr = _INET6_TAIL(data, q)
        scope_id = _U32(data, q + 22)[0]
        return (_new_arg(SockAddr, (family, port, _inet_ntop(socket.AF_INET6, addr), None,
                                    flowinfo, scope_id)), q + 26)
    if family == AF_UNIX:
        if q + 108 > n:
            raise _error("truncated", q, "108 bytes of sockaddr_un", f"{n - q} bytes")
        path = data[q:q + 108]
        if path[0]:
            shown = path.partition(b"\0")[0].decode("utf-8", "surrogateescape")
        elif any(path):
            shown = "@" + path[1:].rstrip(b"\0").decode("utf-8", "surrogateescape")
        else:
            shown = ""
        return _new_arg(SockAddr, (family, None, None, shown, None, None)), q + 108
    return _new_arg(SockAddr, (family, None, None, None, None, None)), q


def _fixed_reader(unpack, width: int):
    def read(data, p, n, arg_type, errors):
        if p + width > n:
            raise _error("truncated", p, f"a {width}-byte payload", f"{n - p} bytes")
        return _new_arg(Arg, (arg_type, unpack(data, p)[0])), p + width
    return read


def _read_string(data, p, n, arg_type, errors):
    value, p = _string(data, p, n)
    return _new_arg(Arg, (arg_type, value)), p


def _read_argv(data, p, n, arg_type, errors):
    value, p = _argv(data, p, n, errors)
    return _new_arg(Arg, (arg_type, value)), p


def _read_sockaddr(data, p, n, arg_type, errors):
    value, p = _sockaddr(data, p, n)
    return _new_arg(Arg, (arg_type, value)), p


# Tables indexed by tag byte: the reader, the ArgType, and for fixed-size payloads
# their width and unpacker (which the hot loop uses without a call).
_READERS: list = [None] * 256
_TYPES: list = [None] * 256
_WIDTHS: list = [0] * 256
_UNPACK: list = [None] * 256
for _t in ArgType:
    _TYPES[_t] = ArgType(_t)
for _types, _unpack, _width in (
    ((ArgType.INT_T, ArgType.CAP_T, ArgType.SYSCALL_T), _S32, 4),
    ((ArgType.OPEN_FLAGS_T, ArgType.EXEC_FLAGS_T, ArgType.SOCK_DOM_T, ArgType.SOCK_TYPE_T,
      ArgType.UNLINKAT_FLAG_T, ArgType.PTRACE_REQ_T, ArgType.MOUNT_FLAG_T,
      ArgType.UMOUNT_FLAG_T), _U32, 4),
    ((ArgType.QTYPE,), _U16BE, 2),
):
    for _t in _types:
        _READERS[_t] = _fixed_reader(_unpack, _width)
        _WIDTHS[_t] = _width
        _UNPACK[_t] = _unpack
_READERS[ArgType.STR_T] = _READERS[ArgType.UDP_MSG] = _read_string
_READERS[ArgType.STR_ARR_T] = _read_argv
_READERS[ArgType.SOCKADDR_T] = _read_sockaddr
_KNOWN_TAGS = ", ".join(str(t) for t in range(256) if _READERS[t])


def _read_arg(data: bytes, p: int, n: int, errors: list | None) -> tuple[Arg, int]:
    tag = data[p]
    reader = _READERS[tag]
    if reader is None:
        raise _error("bad-tag", p, f"an argument tag ({_KNOWN_TAGS})", f"tag {tag}")
    return reader(data, p + 1, n, _TYPES[tag], errors)


def _is_padding(data: bytes, p: int, n: int) -> bool:
    """Do the bytes from ``p`` look like the perf ring's padding after an event that ends there?

    The ring rounds ``4 + size`` up to 8 bytes; the kernel skips the pad rather than
    zeroing it, so exactly that many bytes of any value are padding, and so are up to 7
    zero bytes (the padding the wire-format page describes).
    """
    tail = n - p
    # -(4 + p) % 8 is perf_pad(p), inlined: this runs for nearly every sample
    return tail <= MAX_PADDING and (tail == -(4 + p) % 8 or data.count(0, p, n) == tail)


def _strict_args(data: bytes, p: int, n: int, argc: int) -> list[Arg]:
    """The hot loop: the common tags are handled inline, the rest by their readers."""
    args = []
    append = args.append
    for index in range(argc):
        if p >= n:
            raise _error("missing-argument", p,
                         f"argument {index + 1} of the {argc} argnum announces", "end of data")
        tag = data[p]
        width = _WIDTHS[tag]
        if width:
            q = p + 1 + width
            if q > n:
                raise _error("truncated", p + 1, f"a {width}-byte payload", f"{n - p - 1} bytes")
            append(_new_arg(Arg, (_TYPES[tag], _UNPACK[tag](data, p + 1)[0])))
            p = q
        elif tag == _STR:
            value, p = _string(data, p + 1, n)
            append(_new_arg(Arg, (_TYPES[tag], value)))
        else:
            arg, p = _read_arg(data, p, n, None)
            append(arg)
    if p < n and not _is_padding(data, p, n):
        raise _error("trailing-bytes", p, _PADDING_EXPECTED.format(perf_pad(p)),
                     f"{n - p} more bytes")
    return args


def _certainly_valid(data: bytes, p: int, n: int, argc: int) -> bool:
    """A quick walk over the arguments: True only when ``_strict_args`` cannot fail.

    It may say False for a valid sample (the caller then builds eagerly, which raises
    the precise error or succeeds), never True for an invalid one.
    """
    for _ in range(argc):
        if p >= n:
            return False
        tag = data[p]
        width = _WIDTHS[tag]
        if width:
            p += 1 + width
        elif tag == _STR:
            p = _string_end(data, p + 1, n)
        elif tag == _SOCKADDR:
            if p + 3 > n:
                return False
            p += 3 + _SOCKADDR_BODY.get(_U16(data, p + 1)[0], 0)
        elif tag == _ARR:
            p += 1
            while p < n and data[p] == _STR:
                p = _string_end(data, p + 1, n)
            if p >= n or data[p] != _ARR:
                return False
            p += 1
        else:
            return False
    tail = n - p      # inline _is_padding: this walk runs once per event
    return tail == 0 or (0 < tail <= MAX_PADDING
                         and (tail == -(4 + p) % 8 or data.count(0, p, n) == tail))


def _string_end(data: bytes, p: int, n: int) -> int:
    """Where a well-formed string payload at ``p`` ends; past ``n`` when it is not one."""
    if p + 4 > n:
        return n + 1
    size = _S32(data, p)[0]
    end = p + 4 + size
    if size == 0:
        return end
    if 0 < size <= MAX_STRING_SIZE and end <= n and not data[end - 1]:
        return end
    return n + 1


def _plausible_next(data: bytes, q: int, n: int, index: int, argc: int,
                    expected: tuple[int, ...] | None) -> bool:
    """Does what follows ``q`` look like argument ``index`` (or the end after the last)?"""
    if index >= argc:
        return q >= n or _is_padding(data, q, n)
    if q >= n or _READERS[data[q]] is None:
        return False
    return expected is None or data[q] == expected[index]


def _lenient_args(data: bytes, p: int, n: int, argc: int, expected: tuple[int, ...] | None,
                  errors: list[DecodeError]) -> list[Arg]:
    """Decode what can be decoded; an orphan tag is recognised by what follows it."""
    args: list[Arg] = []
    for index in range(argc):
        if p >= n:
            errors.append(_error("missing-argument", p,
                                 f"argument {index + 1} of the {argc} argnum announces",
                                 "end of data"))
            return args
        try:
            arg, q = _read_arg(data, p, n, errors)
        except DecodeError as error:
            arg, q, failure = None, p, error
        if arg is not None and _plausible_next(data, q, n, index + 1, argc, expected):
            args.append(arg)
            p = q
        elif _READERS[data[p]] is not None and _plausible_next(data, p + 1, n, index + 1, argc,
                                                                 expected):
            errors.append(_error("orphan-tag", p, f"a {_TYPES[data[p]].name} payload after the tag",
                                 "the next argument's tag (the writer's read failed)"))
            args.append(_new_arg(Arg, (_TYPES[data[p]], None)))
            p += 1
        elif arg is not None:
            args.append(arg)
            p = q
        else:
            if _is_padding(data, p, n):
                failure = _error("missing-argument", p,
                                 f"argument {index + 1} of the {argc} argnum announces",
                                 "perf padding")
            errors.append(failure)
            return args
    if p < n and not _is_padding(data, p, n):
        errors.append(_error("trailing-bytes", p, _PADDING_EXPECTED.format(perf_pad(p)),
                             f"{n - p} more bytes"))
    return args


def _short_header(data: bytes, layout: Layout, arch: str) -> Event:
    """Lenient: the header fields that are wholly present; the others are None."""
    values: list = []
    offset = 0
    for field in layout.schema.subcons:
        width = field.sizeof()
        if offset + width <= len(data):
            values.append(field.parse(data[offset:offset + width]))
        else:
            values.append(None)
        offset += width
    named = dict(zip(layout.field_names, values, strict=False))
    comm = named["comm"]
    header = [named[name] for name in layout.field_names[:11]]
    extra = {name: (_text_field(named[name]) if name in layout.text_fields else named[name])
             for name in layout.extra_names}
    error = _error("short-header", 0, f"a {layout.size}-byte {layout.name} context header",
                   f"{len(data)} bytes")
    return wire_event((*header, _text_field(comm), extra, arch, [error]), [])


def _text_field(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw.partition(b"\0")[0].decode("utf-8", "surrogateescape")


_COMMS: dict[bytes, str] = {}


def _remember_comm(raw: bytes) -> str:
    """Task names repeat endlessly: decode each once (the cache is bounded)."""
    if len(_COMMS) >= 4096:
        _COMMS.clear()
    comm = _COMMS[raw] = raw.partition(b"\0")[0].decode("utf-8", "surrogateescape")
    return comm


_NO_EXTRA = MappingProxyType({})  # classic events share one read-only empty ``extra``


def _resolve(layout: str | Layout, arch: str) -> Layout:
    if arch not in ARCHES:
        check_arch(arch)
    return get_layout(layout)


def decode(data: bytes | bytearray | memoryview, *, layout: str | Layout = "classic",
           arch: str = "x86_64", strict: bool = True) -> Event:
    """Decode one sample (perf padding included or not) into an :class:`Event`.

    Strict mode raises :class:`DecodeError` at the first damage; lenient mode never
    raises and returns what it could decode, with ``event.errors`` listing the damage.
    """
    if type(data) is not bytes:
        data = bytes(data)
    resolved = layout if type(layout) is Layout else LAYOUTS.get(layout)
    if resolved is None or arch not in ARCHES:
        resolved = _resolve(layout, arch)
    n = len(data)
    size = resolved.size
    if n < size:
        if strict:
            raise _error("short-header", 0, f"a {size}-byte {resolved.name} context header",
                         f"{n} bytes")
        return _short_header(data, resolved, arch)
    values = resolved.fmt.unpack_from(data)
    if strict:
        errors = None
        argc = values[9]
        if _certainly_valid(data, size, n, argc):
            args = (_strict_args, data, size, n, argc)   # built when first read
        else:
            args = _strict_args(data, size, n, argc)
    else:
        errors = []
        expected = expected_tags(values[8], arch, values[9])
        args = _lenient_args(data, size, n, values[9], expected, errors)
    comm = _COMMS.get(values[11]) or _remember_comm(values[11])
    if resolved.extra_names:
        extra = {name: (_text_field(value) if name in resolved.text_fields else value)
                 for name, value in zip(resolved.extra_names, values[12:], strict=False)}
    else:
        extra = _NO_EXTRA
    return wire_event(values[:11] + (comm, extra, arch, errors), args)


def decode_many(samples: Iterable[bytes | bytearray | memoryview], *,
                layout: str | Layout = "classic", arch: str = "x86_64",
                strict: bool = True) -> Iterator[Event]:
    """Decode a sequence or stream of samples lazily, one :class:`Event` per sample."""
    resolved = _resolve(layout, arch)
    for data in samples:
        yield decode(data, layout=resolved, arch=arch, strict=strict)
