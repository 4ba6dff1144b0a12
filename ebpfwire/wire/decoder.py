"""The fast decoder: samples to :class:`Event`, the Event sink of the argument walker.

The header is one ``struct`` unpack; the arguments are walked once by
:mod:`ebpfwire.wire.walker` into its flat list, which the Event keeps until ``event.args`` is
first read. The result must be exactly what the construct schemas
(``schema.parse_event``) give, or the same error kind at the same offset; a property test
holds it to that. Strict mode raises :class:`DecodeError`; lenient mode never raises,
keeps everything it could decode and lists the damage.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import MappingProxyType

from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.catalogue import check_arch, expected_tags
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import Event, wire_event
from ebpfwire.wire.layouts import ARGNUM, COMM, EVENT_ID, EXTRA, LAYOUTS, Layout, get_layout
from ebpfwire.wire.names import ARCHES
from ebpfwire.wire.walker import NULL_SOCKADDR, walk, walk_lenient, walk_strict

_error = DecodeError
_new_event = object.__new__
_SOCKADDR = ArgType.SOCKADDR_T


def walk_args(data: bytes, start: int, argc: int, event_id: int, arch: str, out: list,
              errors: list[DecodeError] | None,
              hashes: list | None = None) -> list[DecodeError] | None:
    """Append the arguments of a sample (from ``start``) to ``out`` as the walker's flat
    list (and, given ``hashes``, the hash trailer's hashes to it): the one strict ->
    lenient rule of every sink. Returns the damage list: ``errors``, or in strict mode
    None, or the missing-argument of a sockaddr the writer skipped.

    The fast walk first; where it declines, strict (``errors`` None) raises the precise
    :class:`DecodeError` unless the sample is what a writer writes for a NULL sockaddr
    (:func:`_careful`), lenient appends the damage to ``errors`` and keeps what decodes,
    the catalogue's tags for ``event_id`` guiding it. The fast walk succeeds exactly
    where the strict one would (a property test holds that), so a sample gets its strict
    arguments whenever it has them, in either mode.
    """
    mark, hashed = len(out), None if hashes is None else len(hashes)
    if walk(data, start, len(data), argc, out, hashes):
        return errors
    del out[mark:]
    if hashed is not None:
        del hashes[hashed:]
    return _careful(data, start, argc, event_id, arch, out, errors, hashes)


def _careful(data: bytes, start: int, argc: int, event_id: int, arch: str, out: list,
             errors: list[DecodeError] | None, hashes: list | None) -> list | None:
    """:func:`walk_args` after the fast walk declined: its damage list."""
    n = len(data)
    expected = expected_tags(event_id, arch, argc)
    if errors is not None:
        walk_lenient(data, start, n, argc, expected, out, errors, hashes)
        return errors
    mark = len(out)
    try:
        walk_strict(data, start, n, argc, out, hashes)
        return None
    except DecodeError as error:
        # Every writer skips a NULL sockaddr, tag and all, while argnum counts it
        # (accept4(fd, NULL, NULL)): the arguments before it, and a missing-argument.
        count = (len(out) - mark) // 2
        if not expected or count >= argc or any(t != _SOCKADDR for t in expected[count:]):
            raise
        del out[mark + 2 * count:]
        try:
            end = walk_strict(data, start, n, count, [], hashes)
        except DecodeError:
            raise error from None
        return [_error("missing-argument", end, f"argument {count + 1} of the {argc} "
                       "argnum announces", NULL_SOCKADDR)]


def short_header(layout: Layout, size: int) -> DecodeError:
    """The error of a sample of ``size`` bytes, too short for ``layout``'s header."""
    return _error("short-header", 0, f"a {layout.size}-byte {layout.name} context header",
                  f"{size} bytes")


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
    header = [named[name] for name in layout.field_names[:COMM]]
    extra = {name: (_text_field(named[name]) if name in layout.text_fields else named[name])
             for name in layout.extra_names}
    return wire_event((*header, _text_field(comm), extra, arch, [short_header(layout, len(data))]),
                      [])


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
    In strict mode ``event.errors`` is None, or lists the missing-argument of a
    sockaddr the writer skipped (a NULL pointer). ``layout="auto"`` picks the layout
    from the sample (:func:`detect_layout`).
    """
    if type(data) is not bytes:
        data = bytes(data)
    resolved = layout if type(layout) is Layout else LAYOUTS.get(layout)
    if resolved is None or arch not in ARCHES:
        resolved = detect_layout(data, arch) if layout == AUTO else _resolve(layout, arch)
    n = len(data)
    size = resolved.size
    if n < size:
        if strict:
            raise short_header(resolved, n)
        return _short_header(data, resolved, arch)
    values = resolved.fmt.unpack_from(data)
    flat: list = []
    errors = None if strict else []
    hash_at = resolved.hash_at
    hashes = None if hash_at is None or values[hash_at] != 1 else []
    if not walk(data, size, n, values[ARGNUM], flat, hashes):  # walk_args, inlined: hot
        flat = []
        if hashes:
            hashes = []
        errors = _careful(data, size, values[ARGNUM], values[EVENT_ID], arch, flat, errors,
                          hashes)
    comm = _COMMS.get(values[COMM]) or _remember_comm(values[COMM])
    if resolved.extra_names:
        extra = {name: (_text_field(value) if name in resolved.text_fields else value)
                 for name, value in zip(resolved.extra_names, values[EXTRA:], strict=False)}
        if hashes is not None:
            extra["hashes"] = hashes
    else:
        extra = _NO_EXTRA
    event = _new_event(Event)       # wire_event(), inlined: this is the hot path
    event._header = values[:COMM] + (comm, extra, arch, errors)
    event._args = flat
    return event


#: The layout name that asks :func:`decode` to pick the layout from the sample.
AUTO = "auto"


def detect_layout(data: bytes, arch: str = "x86_64") -> Layout:
    """The layout of a raw sample whose layout is not known: the registered layout, from
    the newest (largest) down, whose strict decode of the sample succeeds with no
    argument missing, else the first whose strict decode succeeds. Raises
    :class:`DecodeError` (the classic layout's) when none does.

    A header is not announced on the wire: what decides is that the arguments (and the
    hash trailer) then end exactly where the sample does, which a wrong layout's offset
    almost never gives. Samples that decode in several layouts get the largest.
    """
    failure, partial = None, None
    for layout in sorted(LAYOUTS.values(), key=lambda layout: -layout.size):
        try:
            event = decode(data, layout=layout, arch=arch)
        except DecodeError as error:
            failure = error if layout.name == "classic" else failure
            continue
        if not event.errors:
            return layout
        partial = partial or layout
    if partial is not None:
        return partial
    raise failure or short_header(LAYOUTS["classic"], len(data))


def decode_many(samples: Iterable[bytes | bytearray | memoryview], *,
                layout: str | Layout = "classic", arch: str = "x86_64",
                strict: bool = True) -> Iterator[Event]:
    """Decode a sequence or stream of samples lazily, one :class:`Event` per sample."""
    if layout == AUTO:
        for data in samples:
            yield decode(data, layout=AUTO, arch=arch, strict=strict)
        return
    resolved = _resolve(layout, arch)
    for data in samples:
        yield decode(data, layout=resolved, arch=arch, strict=strict)
