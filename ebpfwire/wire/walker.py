"""The argument walker: the one parser of the argument stream, shared by every sink.

A sample's arguments are walked once into a *flat list*, two items per argument: the tag
byte (an int) and the value as a plain Python primitive:

- ``int`` for every fixed-size payload (INT_T, the flag and enum words, QTYPE);
- ``str`` for STR_T and UDP_MSG (UTF-8 with ``surrogateescape``: lossless);
- :class:`Argv` (a list of ``str``) for STR_ARR_T;
- :class:`SockAddr` (a tuple of primitives, cached by its wire bytes) for SOCKADDR_T;
- ``None`` for an orphan tag whose payload the writer never wrote, or for an argument
  the writer skipped before others it wrote (a NULL pointer; lenient only).

Samples of a layout with a ``hash`` field whose value is 1 end with the writer's hash
trailer after the arguments (:func:`hash_trailer`); each walk reads it when given a
``hashes`` list, and appends one dict per hash kind the writer tried.

Sinks read that list and nothing else: ``decoder`` wraps the pairs in :class:`Arg`
objects when ``event.args`` is first read, ``render`` turns them into JSON fragments and
``arrow`` into columns. A new output is a new sink over the flat list, never a new parser.

Three walks share the payload readers below and give the same flat list on every input
the construct schemas accept (property tests hold all of them equal to the schemas):

- :func:`walk` is the fast path: it returns False at the first thing it does not like,
  and True only when the strict walk would succeed with the same values;
- :func:`walk_strict` raises :class:`DecodeError` at the first damage, with its offset;
- :func:`walk_lenient` never raises: it records the damage and keeps everything
  decodable; given the event's catalogue tags it takes, of all the readings of the bytes
  (each argument's payload, an orphan tag, an argument skipped, arguments missing at
  the end), the one with the least damage (:func:`_explain`).

Every loop consumes at least one byte per turn; nothing is allocated beyond the input.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, NamedTuple

from ebpfwire.wire.argtypes import MAX_STRING_SIZE, PAYLOADS, S32, ArgType, Payload, tags_of
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import AF_INET, AF_INET6, AF_UNIX, Argv, SockAddr
from ebpfwire.wire.schema import MAX_PADDING, SOCKADDR_BODIES, hash_trailer, perf_pad

_S32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U16 = struct.Struct("<H").unpack_from
_U16BE = struct.Struct(">H").unpack_from
_INET6_TAIL = struct.Struct(">HI16s").unpack_from  # port, flowinfo (network order), addr
_inet_ntop = socket.inet_ntop
_new_tuple = tuple.__new__
_STR = int(ArgType.STR_T)      # the tag of each argv element
(_ARR,) = tags_of("argv")
(_SOCKADDR,) = tags_of("sockaddr")
#: Sockaddr bytes after the family, by family; any other family has none.
SOCKADDR_BODY = {family: body.sizeof() for family, body in SOCKADDR_BODIES.items()}
_PADDING_EXPECTED = "the perf ring's {} bytes of padding or at most 7 zero bytes"
_ARGV_EXPECTED = "an argv element tag (10) or the closing tag (11)"
_HASH_EXPECTED = ("the hash trailer: a u8 count, then the u32 kinds 30, 31, 32 in order, "
                  "each found one followed by its 32-byte digest")
_error = DecodeError

# The walk's per-tag tables, derived at import from argtypes.PAYLOADS: plain lists indexed
# by the tag byte, so the walk pays nothing per argument for having one definition.
#: Fixed-size payloads by tag byte: their width and unpacker (0 / None for the others).
WIDTHS: list[int] = [0] * 256
UNPACK: list = [None] * 256
for _tag, _payload in PAYLOADS.items():
    if _payload.kind == "int":
        WIDTHS[_tag] = _payload.width
        UNPACK[_tag] = struct.Struct(_payload.code).unpack_from
STRING_TAGS = tags_of("string")
#: Every tag byte the wire carries.
KNOWN = [t in PAYLOADS for t in range(256)]
_KNOWN_TAGS = ", ".join(str(t) for t in range(256) if KNOWN[t])
_TYPE_NAMES = {int(t): t.name for t in ArgType}
NULL_SOCKADDR = "the end (a NULL sockaddr skipped)"
#: Tags a writer leaves out altogether for a NULL pointer while argnum still counts them:
#: a NULL sockaddr (every writer), a failed string read (KubeArmor since 2025).
SKIPPABLE = frozenset((_SOCKADDR, _STR))


# --------------------------------------------------------------------------- payloads


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


_SOCKADDRS: dict[bytes, SockAddr] = {}


def sockaddr(raw: bytes) -> SockAddr:
    """A sockaddr from its wire bytes (family first, body as long as the family says).

    Addresses repeat (a server's peers, a resolver's port 53): each distinct byte string
    is parsed once; the cache is bounded.
    """
    value = _SOCKADDRS.get(raw)
    if value is not None:
        return value
    family = _U16(raw)[0]
    if family == AF_INET:
        fields = (family, _U16BE(raw, 2)[0], _inet_ntop(socket.AF_INET, raw[4:8]),
                  None, None, None)
    elif family == AF_INET6:
        port, flowinfo, addr = _INET6_TAIL(raw, 2)
        fields = (family, port, _inet_ntop(socket.AF_INET6, addr), None, flowinfo,
                  _U32(raw, 24)[0])
    elif family == AF_UNIX:
        path = raw[2:]
        if path[0]:
            shown = _text(path.partition(b"\0")[0])
        elif any(path):
            shown = "@" + _text(path[1:].rstrip(b"\0"))
        else:
            shown = ""
        fields = (family, None, None, shown, None, None)
    else:
        fields = (family, None, None, None, None, None)
    if len(_SOCKADDRS) >= 4096:
        _SOCKADDRS.clear()
    value = _SOCKADDRS[raw] = _new_tuple(SockAddr, fields)
    return value


def _string(data: bytes, p: int, n: int) -> tuple[str, int]:
    """A STR_T payload at ``p`` (the size field): the text and the next offset, or raise."""
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
    return _text(data[q:end - 1]), end


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
    body = SOCKADDR_BODY.get(family, 0)
    q = p + 2
    if q + body > n:
        kind = {AF_INET: "sockaddr_in", AF_INET6: "sockaddr_in6", AF_UNIX: "sockaddr_un"}[family]
        raise _error("truncated", q, f"{body} bytes of {kind}", f"{n - q} bytes")
    return sockaddr(data[p:q + body]), q + body


def _payload(data: bytes, p: int, n: int, errors: list | None) -> tuple[object, int]:
    """The argument at ``p`` (its tag): its value and the next offset, or raise."""
    tag = data[p]
    width = WIDTHS[tag]
    if width:
        if p + 1 + width > n:
            raise _error("truncated", p + 1, f"a {width}-byte payload", f"{n - p - 1} bytes")
        return UNPACK[tag](data, p + 1)[0], p + 1 + width
    if tag in STRING_TAGS:
        return _string(data, p + 1, n)
    if tag == _ARR:
        return _argv(data, p + 1, n, errors)
    if tag == _SOCKADDR:
        return _sockaddr(data, p + 1, n)
    raise _error("bad-tag", p, f"an argument tag ({_KNOWN_TAGS})", f"tag {tag}")


def is_padding(data: bytes, p: int, n: int) -> bool:
    """Do the bytes from ``p`` look like the perf ring's padding after an event that ends there?

    The ring rounds ``4 + size`` up to 8 bytes; the kernel skips the pad rather than
    zeroing it, so exactly that many bytes of any value are padding, and so are up to 7
    zero bytes (the padding the wire-format page describes).
    """
    tail = n - p
    # -(4 + p) % 8 is perf_pad(p), inlined: this runs for nearly every sample
    return tail <= MAX_PADDING and (tail == -(4 + p) % 8 or data.count(0, p, n) == tail)


# --------------------------------------------------------------------------- the walks


def walk(data: bytes, p: int, n: int, argc: int, out: list, hashes: list | None = None) -> bool:
    """The fast path: append ``argc`` (tag, value) pairs to ``out`` and say True, only when
    the sample from ``p`` to ``n`` is certainly valid (padding included; with ``hashes``,
    the hash trailer too, its hashes appended there).

    False means "take the careful walk" (which raises the precise error, or rarely
    succeeds); ``out`` may then hold a partial walk, which the caller discards.
    """
    # a while loop, not range(argc), and out.append, not a bound append: CPython (3.11)
    # specialises both: the walk of a sample takes a fifth less time
    while argc > 0:
        argc -= 1
        if p >= n:
            return False
        tag = data[p]
        width = WIDTHS[tag]
        if width:
            q = p + 1 + width
            if q > n:
                return False
            out.append(tag)
            out.append(UNPACK[tag](data, p + 1)[0])
            p = q
        elif tag == _STR:    # _string inlined here and for argv elements: the hot path
            q = p + 5
            if q > n:
                return False
            size = _S32(data, p + 1)[0]
            end = q + size
            if 0 < size <= MAX_STRING_SIZE and end <= n and not data[end - 1]:
                out.append(tag)
                out.append(data[q:end - 1].decode("utf-8", "surrogateescape"))
            elif size == 0:
                out.append(tag)
                out.append("")
            else:
                return False
            p = end
        elif tag == _SOCKADDR:
            if p + 3 > n:
                return False
            q = p + 3 + SOCKADDR_BODY.get(_U16(data, p + 1)[0], 0)
            if q > n:
                return False
            raw = data[p + 1:q]
            out.append(tag)
            out.append(_SOCKADDRS.get(raw) or sockaddr(raw))
            p = q
        elif tag == _ARR:
            p += 1
            items = Argv()
            while p < n and data[p] == _STR:
                q = p + 5
                if q > n:
                    return False
                size = _S32(data, p + 1)[0]
                end = q + size
                if 0 < size <= MAX_STRING_SIZE and end <= n and not data[end - 1]:
                    items.append(data[q:end - 1].decode("utf-8", "surrogateescape"))
                elif size == 0:
                    items.append("")
                else:
                    return False
                p = end
            if p >= n or data[p] != _ARR:
                return False
            out.append(tag)
            out.append(items)
            p += 1
        elif tag in STRING_TAGS:
            try:
                value, p = _string(data, p + 1, n)
            except DecodeError:
                return False
            out.append(tag)
            out.append(value)
        else:
            return False
    if hashes is not None:
        p = hash_trailer(data, p, n, hashes)
        if p is None:
            return False
    tail = n - p      # inline is_padding: this runs once per event
    return tail == 0 or (0 < tail <= MAX_PADDING
                         and (tail == -(4 + p) % 8 or data.count(0, p, n) == tail))


def walk_strict(data: bytes, p: int, n: int, argc: int, out: list,
                hashes: list | None = None) -> int:
    """Append ``argc`` (tag, value) pairs to ``out`` (and the hash trailer's hashes to
    ``hashes`` when given), or raise at the first damage; the offset where the arguments
    end."""
    append = out.append
    for index in range(argc):
        if p >= n:
            raise _error("missing-argument", p,
                         f"argument {index + 1} of the {argc} argnum announces", "end of data")
        tag = data[p]
        value, p = _payload(data, p, n, None)
        append(tag)
        append(value)
    _end(data, p, n, hashes)
    return p


def _end(data: bytes, p: int, n: int, hashes: list | None) -> None:
    """Raise unless the sample ends at ``p`` (after the hash trailer, when ``hashes``)."""
    if hashes is not None:
        if hash_trailer(data, p, n, hashes) is None:
            raise _error("bad-hash", p, _HASH_EXPECTED, f"{n - p} bytes that do not read so")
    elif p < n and not is_padding(data, p, n):
        raise _error("trailing-bytes", p, _PADDING_EXPECTED.format(perf_pad(p)),
                     f"{n - p} more bytes")


def _plausible_next(data: bytes, q: int, n: int, index: int, argc: int,
                    expected: tuple[int, ...] | None) -> bool:
    """Does what follows ``q`` look like argument ``index`` (or the end after the last)?"""
    if index >= argc:
        return q >= n or is_padding(data, q, n)
    if q >= n or not KNOWN[data[q]]:
        return False
    return expected is None or data[q] == expected[index]


def _missing(p: int, index: int, argc: int, found: str) -> DecodeError:
    return _error("missing-argument", p, f"argument {index + 1} of the {argc} argnum announces",
                  found)


def _orphan(p: int, tag: int) -> DecodeError:
    return _error("orphan-tag", p, f"a {_TYPE_NAMES[tag]} payload after the tag",
                  "the next argument's tag (the writer's read failed)")


def _lenient_end(data: bytes, p: int, n: int, hashes: list | None,
                 errors: list[DecodeError]) -> None:
    """The end of a lenient walk at ``p``: the hash trailer and the padding, or the damage."""
    try:
        _end(data, p, n, hashes)
    except DecodeError as error:
        errors.append(error)


def walk_lenient(data: bytes, p: int, n: int, argc: int, expected: tuple[int, ...] | None,
                 out: list, errors: list[DecodeError], hashes: list | None = None) -> None:
    """Append what can be decoded to ``out`` and the damage to ``errors``; never raise.

    With the event's catalogue tags (``expected``) the reading is :func:`_explain`'s.
    Without them an orphan tag (the writer wrote the tag, then failed to read the
    payload) is told from damage by what follows it: a known tag, or the end.
    """
    if expected is not None and len(expected) == argc:
        _explain(data, p, n, expected, out, errors, hashes)
        return
    append = out.append
    for index in range(argc):
        if p >= n:
            errors.append(_missing(p, index, argc, "end of data"))
            return
        tag = data[p]
        try:
            value, q = _payload(data, p, n, errors)
            failure = None
        except DecodeError as error:
            value, q, failure = None, p, error
        if failure is None and _plausible_next(data, q, n, index + 1, argc, None):
            p = q
        elif KNOWN[tag] and _plausible_next(data, p + 1, n, index + 1, argc, None):
            errors.append(_orphan(p, tag))
            value = None
            p += 1
        elif failure is None:
            p = q
        else:
            if is_padding(data, p, n):
                failure = _missing(p, index, argc, "perf padding")
            errors.append(failure)
            return
        append(tag)
        append(value)
    _lenient_end(data, p, n, hashes, errors)


# A reading's cost, compared as a tuple: the damage it reports, the arguments whose tag
# is not the catalogue's, whether it ends on padding that is not the ring's (some zero
# bytes), and minus the values it decodes (more is better).
def _plus(a: tuple, b: tuple) -> tuple:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def _ending(data: bytes, p: int, n: int, hashes: list | None) -> tuple[tuple, list, list]:
    """The end of a reading at ``p``: its cost, the trailer's hashes, the damage."""
    damage: list = []
    trailer: list | None = None if hashes is None else []
    _lenient_end(data, p, n, trailer, damage)
    if damage:
        return (len(damage), 0, 0, 0), trailer, damage
    end = p
    if trailer is not None:
        end = hash_trailer(data, p, n, [])
    tail = n - end
    return (0, 0, 0 if tail == 0 or tail == perf_pad(end) else 1, 0), trailer, damage


def _explain(data: bytes, start: int, n: int, expected: tuple[int, ...], out: list,
             errors: list[DecodeError], hashes: list | None) -> None:
    """The lenient walk of an event whose tags the catalogue knows (at most six).

    Every reading of the bytes is weighed: at each argument its payload, an orphan tag
    (payload unread), the argument skipped (a NULL pointer: SOCKADDR_T, STR_T), or the
    arguments missing from here on; then the end (hash trailer, padding). The reading
    with the least damage wins, then the one whose tags are the catalogue's, then the
    one that ends on the ring's padding (or on no padding) rather than on some zero
    bytes, then the one with more values; among equals the first of: the payload, the
    arguments missing from here (what strict mode reads for a NULL sockaddr), an orphan
    tag, a skip. What a writer's failure modes leave (an argument dropped, orphaned or
    skipped) is so read back exactly unless the bytes also read, at least as well, as
    something else.
    """
    argc = len(expected)
    memo: dict[tuple[int, int], tuple] = {}

    def best(p: int, index: int) -> tuple:
        # (cost, pairs to append, damage, next state) of the best reading from here
        key = (p, index)
        found = memo.get(key)
        if found is not None:
            return found
        if index == argc:
            cost, trailer, damage = _ending(data, p, n, hashes)
            found = (cost, ("hashes", trailer), damage, None)
            memo[key] = found
            return found
        want = expected[index]
        choices = []
        tag = data[p] if p < n else -1
        failure = None
        if tag >= 0 and KNOWN[tag]:
            inner: list = []
            try:
                value, q = _payload(data, p, n, inner)
            except DecodeError as error:
                failure = error
            else:
                cost = _plus(best(q, index + 1)[0], (len(inner), tag != want, 0, -1))
                choices.append((cost, (tag, value), inner, (q, index + 1)))
        elif tag >= 0:
            failure = _error("bad-tag", p, f"an argument tag ({_KNOWN_TAGS})", f"tag {tag}")
        choices.append(best_end(p, index))
        if tag >= 0 and KNOWN[tag]:
            cost = _plus(best(p + 1, index + 1)[0], (1, tag != want, 0, 0))
            choices.append((cost, (tag, None), [_orphan(p, tag)], (p + 1, index + 1)))
        if tag >= 0 and want in SKIPPABLE:
            cost = _plus(best(p, index + 1)[0], (1, 0, 0, 0))
            skipped = _missing(p, index, argc, f"tag {tag} (the writer skipped a NULL "
                                                f"{_TYPE_NAMES[want]})")
            choices.append((cost, (int(want), None), [skipped], (p, index + 1)))
        if failure is not None:
            choices.append(((1, 0, 2, 0), None, [failure], None))   # bytes unexplained
        found = min(choices, key=lambda choice: choice[0])   # the first of the least
        memo[key] = found
        return found

    def best_end(p: int, index: int) -> tuple:
        """The arguments from ``index`` on missing: the sample (or the trailer) ends here,
        or is damaged here."""
        cost, trailer, damage = _ending(data, p, n, hashes)
        if damage:
            reason = "bytes that are no argument"
        elif all(tag == _SOCKADDR for tag in expected[index:]):
            reason = NULL_SOCKADDR
        else:
            reason = "end of data" if p >= n else (
                "the hash trailer" if hashes is not None else "perf padding")
        return (_plus(cost, (1, 0, 0, 0)), ("hashes", trailer),
                [_missing(p, index, argc, reason), *damage], None)

    state: tuple[int, int] | None = (start, 0)
    while state is not None:
        _, pair, damage, state = best(*state)
        errors.extend(damage)
        if pair is None:
            continue
        if pair[0] == "hashes":
            if pair[1]:
                hashes.extend(pair[1])
            continue
        out.extend(pair)


# --------------------------------------------------------------------------- by columns


#: Tags :func:`walk_columns` reads: all but the UDP message (its payload is a string too,
#: but rare enough for the one-by-one walk).
COLUMN_TAGS = frozenset(t for t in range(256) if WIDTHS[t] or t in STRING_TAGS
                        or t in (_SOCKADDR, _ARR))


class ArgvSpans(NamedTuple):
    """The argv of many samples, for :func:`walk_columns`: each sample's element count, and
    the (begin, end) of every element's text in ``buf``, sample after sample."""

    counts: Any
    begins: Any
    ends: Any

    def rows(self, keep):
        """The argv of the samples where the bool array ``keep`` is True."""
        import numpy as np

        elements = np.repeat(keep, self.counts)
        return ArgvSpans(self.counts[keep], self.begins[elements], self.ends[elements])


def _int_column(buf, at, payload: Payload):
    """The fixed-width integer ``payload`` at offsets ``at`` of the uint8 array ``buf``
    (offsets clipped to where a whole one fits: only a payload that is not there reads
    otherwise), as its code says: its bytes in either order, sign-extended when signed.
    Read as items of a view of the buffer as numbers of that kind at every byte offset."""
    import numpy as np

    width = payload.width
    if len(buf) < width:
        return np.zeros(len(at), np.int64)
    kind = f"{payload.code[0]}{'i' if payload.bounds[0] < 0 else 'u'}{width}"
    numbers = np.ndarray((len(buf) - width + 1,), kind, buf, strides=(1,))
    return numbers[np.clip(at, 0, len(buf) - width)].astype(np.int64)


def walk_columns(buf, starts, ends, p, tags: tuple[int, ...]):
    """:func:`walk` over many samples at once, for samples whose tags should be ``tags``
    (only tags of :data:`COLUMN_TAGS`): numpy arrays in, numpy arrays out.

    ``buf`` is a uint8 array of the joined samples, sample ``i`` spanning
    ``starts[i]:ends[i]``, its arguments from ``p[i]``. Returns ``(ok, values)``: ``ok``
    is True exactly where :func:`walk` would say True with these tags; ``values`` has one
    entry per tag: an int64 array for a fixed-size payload, the (begin, end) arrays of
    the text's bytes in ``buf`` for a string, of the wire bytes for a sockaddr, or
    :class:`ArgvSpans` for an argv. Values of rows not ``ok`` are meaningless; those rows
    take :func:`walk`. An argv is walked in lock-step: element k of every sample per step.
    """
    import numpy as np

    last = len(buf) - 1
    bodies = np.zeros(1 << 16, np.int64)
    for family, body in SOCKADDR_BODY.items():
        bodies[family] = body
    ok = np.ones(len(starts), bool)
    p = np.asarray(p, np.int64)
    values: list = []

    def byte(at):
        return buf[np.clip(at, 0, last)].astype(np.int64)

    def string(at, limit):
        """The STR_T payloads whose size field is at ``at``: (good, text begin, text end,
        next offset), by walk's rule for a string."""
        size = _int_column(buf, at, S32)
        begin = at + 4
        stop = begin + size
        good = (begin <= limit) & (size >= 0) & (size <= MAX_STRING_SIZE) & (stop <= limit)
        good &= (size == 0) | (byte(stop - 1) == 0)
        return good, begin, np.maximum(stop - 1, begin), np.maximum(stop, begin)

    for tag in tags:
        ok &= (p < ends) & (byte(p) == tag)
        width = WIDTHS[tag]
        if width:
            ok &= p + 1 + width <= ends
            values.append(_int_column(buf, p + 1, PAYLOADS[tag]))
            p = p + 1 + width
        elif tag == _SOCKADDR:
            stop = p + 3 + bodies[byte(p + 1) | byte(p + 2) << 8]
            ok &= stop <= ends
            values.append((p + 1, stop))
            p = stop
        elif tag == _ARR:
            p = p + 1
            counts = np.zeros(len(p), np.int64)
            steps = []
            live = np.flatnonzero(ok)
            while len(live):
                at = p[live]
                live = live[(at < ends[live]) & (byte(at) == _STR)]
                if not len(live):
                    break
                good, begin, stop, after = string(p[live] + 1, ends[live])
                ok[live[~good]] = False
                live = live[good]
                steps.append((live, begin[good], stop[good]))
                counts[live] += 1
                p[live] = after[good]
            ok &= (p < ends) & (byte(p) == _ARR)
            p = p + 1
            first = np.zeros(len(p), np.int64)
            np.cumsum(counts[:-1], out=first[1:])
            begins = np.empty(int(counts.sum()), np.int64)
            stops = np.empty(len(begins), np.int64)
            for k, (rows, begin, stop) in enumerate(steps):
                begins[first[rows] + k] = begin
                stops[first[rows] + k] = stop
            values.append(ArgvSpans(counts, begins, stops))
        else:               # a string: size, bytes, NUL
            good, begin, stop, p = string(p + 1, ends)
            ok &= good
            values.append((begin, stop))
    tail = ends - p
    padding = (tail > 0) & (tail <= MAX_PADDING)
    zeros = padding & (tail == -(4 + p - starts) % 8)
    if (padding & ~zeros).any():   # not the ring's pad: then up to 7 zero bytes
        all_zero = np.ones(len(p), bool)
        for k in range(MAX_PADDING):
            all_zero &= (k >= tail) | (byte(p + k) == 0)
        zeros |= padding & all_zero
    ok &= (tail == 0) | zeros
    return ok, values
