"""Events as text: strace-like table lines and fast JSON lines.

The table is for people (wall-clock time, task, pid, the call with symbolic arguments and
its result); JSON is for programs and must be lossless. :func:`event_json` is a hand-built
serialiser that gives exactly ``json.dumps(event.to_dict())`` (a property test holds the two
equal) at a fraction of the cost, because decode-to-JSONL is the command line's hot path:
key fragments are pre-encoded, strings go through the C-accelerated JSON string encoder,
and the fragments that repeat (event names, flag texts, addresses, task names) are cached.
Both read the arguments as the walker's flat list (:mod:`ebpfwire.wire.walker`), so
:func:`sample_json` turns a raw sample that is certainly valid into its JSON line without
an Event being built at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.catalogue import arg_index, event_name
from ebpfwire.wire.events import (
    AF_INET,
    AF_INET6,
    AF_UNIX,
    ARGV_LIMIT,
    ARGV_MORE,
    JSON_KEYS,
    TEXT_TAGS,
    Arg,
    Argv,
    Event,
    SockAddr,
    errno_of,
)
from ebpfwire.wire.layouts import EXTRA, Layout
from ebpfwire.wire.text import exit_status_text, quote
from ebpfwire.wire.walker import STRING_TAGS, WIDTHS, walk

try:  # the C encoder; the pure-Python one gives the same text, slower
    from json.encoder import c_encode_basestring_ascii as _enc  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - CPython always has it
    from json.encoder import py_encode_basestring_ascii as _enc
if _enc is None:  # pragma: no cover - built without the _json accelerator
    from json.encoder import py_encode_basestring_ascii as _enc

_dumps = json.dumps
_CACHE_LIMIT = 1 << 16  # entries per fragment cache; cleared when full, so memory stays flat

# --------------------------------------------------------------------------- JSON lines
# The JSON sink of the argument walker: fragments from its flat (tag, value) list.

# The fragments below are cut at import from what Event.to_dict and Arg.to_dict make of
# prototypes, so the shape (key names, order, what a value becomes) is theirs alone.


def _around(arg: Arg, value_json: str) -> tuple[str, str]:
    """The JSON of ``arg.to_dict()`` before and after its value, whose JSON is ``value_json``."""
    before, found, after = _dumps(arg.to_dict()).partition(value_json)
    assert found, f"{value_json} is not in the JSON of {arg!r}"
    return before, after


#: '{"type": "NAME", "value": ' by tag byte, and what closes an argument with no text
_PREFIX = {int(t): _around(Arg(t, None), "null")[0] for t in ArgType}
_END = _around(Arg(ArgType.INT_T, None), "null")[1]
#: an argument whose payload the writer left out, by tag byte
_MISSING = {int(t): _dumps(Arg(t, None).to_dict()) for t in ArgType}
#: what follows an argv's list, by its ``truncated``
_ARGV_END = {flag: _around(Arg(ArgType.STR_ARR_T, argv), _dumps(argv))[1]
             for flag, argv in ((False, Argv()), (True, Argv([""] * ARGV_LIMIT + [ARGV_MORE])))}
#: The line up to its arguments as a %-template of JSON fragments, keys and order from
#: events.JSON_KEYS; :func:`_head` fills it in that order (a property test holds the
#: lines equal to json.dumps(event.to_dict())).
_HEAD = "{" + ", ".join(_enc(key) + ": %s" for key in JSON_KEYS)
_TYPES = {int(t): ArgType(t) for t in ArgType}
_PLAIN_INT_TAGS = frozenset(t for t in range(256) if WIDTHS[t] and t not in TEXT_TAGS)
_ARR, _SOCKADDR = int(ArgType.STR_ARR_T), int(ArgType.SOCKADDR_T)

_names: dict[tuple[int, str], str] = {}
_comms: dict[str, str] = {}
_texts: dict[tuple[int, int], str] = {}
_addrs: dict[SockAddr, str] = {}
_raw_comms: dict[bytes, str] = {}
_errnos: dict[tuple[int, int], str] = {}


def _name_fragment(event_id: int, arch: str) -> str:
    if len(_names) >= _CACHE_LIMIT:
        _names.clear()
    fragment = _names[(event_id, arch)] = _dumps(event_name(event_id, arch))
    return fragment


def _comm_fragment(comm: str) -> str:
    if len(_comms) >= _CACHE_LIMIT:
        _comms.clear()
    fragment = _comms[comm] = _enc(comm)
    return fragment


def _raw_comm(raw: bytes) -> str:
    if len(_raw_comms) >= _CACHE_LIMIT:
        _raw_comms.clear()
    fragment = _raw_comms[raw] = _enc(raw.partition(b"\0")[0].decode("utf-8", "surrogateescape"))
    return fragment


def _errno_fragment(event_id: int, retval: int) -> str:
    name = errno_of(event_id, retval)
    if len(_errnos) >= _CACHE_LIMIT:
        _errnos.clear()
    fragment = _errnos[(event_id, retval)] = "null" if name is None else '"' + name + '"'
    return fragment


def _text_arg(tag: int, value: int) -> str:
    """A flag or enum argument, with its symbolic text (cached by tag and value)."""
    if len(_texts) >= _CACHE_LIMIT:
        _texts.clear()
    fragment = _texts[(tag, value)] = _dumps(Arg(_TYPES[tag], value).to_dict())
    return fragment


#: (family, the type of each other field) -> the argument's JSON as a %-template with a
#: hole for each field that is there: addresses seldom repeat, json.dumps of each costs 4 us
_ADDR_SHAPES: dict[tuple, str] = {}


def _addr_shape(shape: tuple) -> str:
    """The template of a sockaddr shape, cut from the JSON of a prototype whose fields are
    sentinels (so the keys, their order and the family's name are to_dict's own)."""
    family, *kinds = shape
    sentinels = [None if kind is type(None) else 7_777_777_000 + i if kind is int
                 else f"\x01{i}\x01" for i, kind in enumerate(kinds)]
    text = _dumps(Arg(ArgType.SOCKADDR_T, SockAddr(family, *sentinels)).to_dict())
    text = text.replace("%", "%%")
    for sentinel in sentinels:
        if sentinel is not None:
            held = _dumps(sentinel)
            assert text.count(held) == 1, (shape, text)
            text = text.replace(held, "%s")
    if len(_ADDR_SHAPES) >= _CACHE_LIMIT:
        _ADDR_SHAPES.clear()
    _ADDR_SHAPES[shape] = text
    return text


def _addr_arg(value: SockAddr) -> str:
    if len(_addrs) >= _CACHE_LIMIT:
        _addrs.clear()
    shape = (value.family, *map(type, value[1:]))
    if type(value.family) is int and all(kind in (int, str, type(None)) for kind in shape[1:]):
        template = _ADDR_SHAPES.get(shape) or _addr_shape(shape)
        fragment = template % tuple(_enc(field) if type(field) is str else field
                                    for field in value[1:] if field is not None)
    else:
        fragment = _dumps(Arg(ArgType.SOCKADDR_T, value).to_dict())
    _addrs[value] = fragment
    return fragment


def _args_json(flat: list) -> str:
    """The ``args`` array of the JSON form from the walker's flat (tag, value) list."""
    parts = []
    append = parts.append
    prefix, texts, addrs, end = _PREFIX, _texts, _addrs, _END
    pairs = iter(flat)
    for tag, value in zip(pairs, pairs, strict=False):
        kind = type(value)
        if kind is str and tag in STRING_TAGS:
            append(prefix[tag] + _enc(value) + end)
        elif kind is int and tag in TEXT_TAGS:
            append(texts.get((tag, value)) or _text_arg(tag, value))
        elif kind is int and tag in _PLAIN_INT_TAGS:
            append(prefix[tag] + str(value) + end)
        elif kind is SockAddr and tag == _SOCKADDR:
            append(addrs.get(value) or _addr_arg(value))
        elif value is None and tag in _MISSING:
            append(_MISSING[tag])
        elif tag == _ARR and isinstance(value, Argv) and all(type(i) is str for i in value):
            append(prefix[tag] + "[" + ", ".join(map(_enc, value)) + "]"
                   + _ARGV_END[value.truncated])
        else:
            append(_dumps(Arg(ArgType(tag), value).to_dict()))
    return "[" + ", ".join(parts) + "]"


def _head(header: tuple, name: str, comm: str, errno: str, args: str) -> str:
    """The line up to its arguments: the integers of ``header`` (the wire order of
    ``Event._header`` and of a layout's unpacked values) and the JSON fragments of the
    other fields, put in :data:`_HEAD` in JSON_KEYS order."""
    ts, pid_id, mnt_id, host_ppid, host_pid, ppid, pid, uid, event_id, argnum, retval = (
        header[:11])
    return _HEAD % (ts, event_id, name, pid_id, mnt_id, host_ppid, host_pid, ppid, pid, uid,
                    comm, retval, errno, argnum, args)


def event_json(event: Event, context: str = "") -> str:
    """``json.dumps(event.to_dict())``, only faster (lossless: surrogates stay escaped);
    ``context`` (``", key": value`` fragments, the process context) ends the object."""
    event_id, retval, comm = event.event_id, event.retval, event.comm
    if retval is None or comm is None:  # a lenient short header: fields may be missing
        return _dumps(event.to_dict())[:-1] + context + "}"
    if retval < 0:
        errno = event.errno
        errno_json = "null" if errno is None else '"' + errno + '"'
    else:
        errno_json = "null"
    line = _head(event._header,  # the header fields in wire order, read at once
                 _names.get((event_id, event.arch)) or _name_fragment(event_id, event.arch),
                 _comms.get(comm) or _comm_fragment(comm), errno_json, _args_json(event.flat))
    extra = event.extra
    if extra:
        line += "".join(
            ", " + _enc(key) + ": " + (_enc(value) if type(value) is str else _dumps(value))
            for key, value in extra.items())
    errors = event.errors
    if errors is not None:
        line += ', "errors": ' + _dumps([error.to_dict() for error in errors])
    return line + context + "}"


def sample_json(data: bytes, layout: Layout, arch: str,
                context: Callable[[bytes, tuple, list], str] | None = None,
                end: str = "}") -> str | None:
    """The JSON line of a raw sample, without building an Event: the hot path of
    ``decode --format jsonl``. ``context(data, header values, flat arguments)`` gives
    fields to end the line with (the process context: ``enrich.Enricher.sample``); else
    the line ends with ``end`` (the bulk path's context fields, known beforehand, and
    ``}``).

    It returns a line only when the walker's fast path finds the sample certainly valid,
    and then exactly ``json.dumps(decode(data, ...).to_dict())`` (a property test holds
    it to that); anything else (damage, unusual padding) gives None and the caller decodes
    the sample the ordinary way, which raises the precise DecodeError or renders it.
    """
    n = len(data)
    size = layout.size
    if n < size:
        return None
    values = layout.fmt.unpack_from(data)
    flat: list = []
    # unpacked in the order of layouts.CLASSIC_NAMES (tests/test_header_fields.py holds it):
    # faster than picking each field by its named position
    ts, pid_id, mnt_id, host_ppid, host_pid, ppid, pid, uid, event_id, argnum, retval, comm = (
        values[:EXTRA])
    hash_at = layout.hash_at
    hashes = None if hash_at is None or values[hash_at] != 1 else []
    if not walk(data, size, n, argnum, flat, hashes):
        return None
    errno_json = "null" if retval >= 0 else (_errnos.get((event_id, retval))
                                            or _errno_fragment(event_id, retval))
    name = _names.get((event_id, arch)) or _name_fragment(event_id, arch)
    # _head inlined (the call costs 5 % of the line here); the tests hold the two equal
    line = _HEAD % (ts, event_id, name, pid_id, mnt_id, host_ppid, host_pid, ppid, pid, uid,
                    _raw_comms.get(comm) or _raw_comm(comm), retval, errno_json, argnum,
                    _args_json(flat))
    if layout.extra_names:
        text_fields = layout.text_fields
        for key, value in zip(layout.extra_names, values[EXTRA:], strict=False):
            shown = (_enc(value.partition(b"\0")[0].decode("utf-8", "surrogateescape"))
                     if key in text_fields else str(value))
            line += ", " + _enc(key) + ": " + shown
        if hashes is not None:
            line += ', "hashes": ' + _dumps(hashes)
    if context is not None:
        return f"{line}{context(data, values, flat)}}}"
    return line + end


def lost_json(cpu: int, count: int) -> str:
    """A LOST record in the JSON stream."""
    return f'{{"lost": {count}, "cpu": {cpu}}}'


# --------------------------------------------------------------------------- table

def _cut(text: str, limit: int) -> str:
    """A string as strace -s shows it: at most ``limit`` characters, ``...`` after."""
    if len(text) <= limit:
        return quote(text)
    return quote(text[:limit]) + "..."


def arg_text(arg: Arg, limit: int | None = None) -> str:
    """One argument as strace would show it; ``?`` when the writer left the payload out;
    strings cut at ``limit`` characters (strace -s)."""
    value = arg.value
    if value is None:
        return "?"
    if isinstance(value, str):
        return quote(value) if limit is None else _cut(value, limit)
    if isinstance(value, list):
        items = ([quote(item) for item in value] if limit is None
                 else [_cut(item, limit) for item in value])
        if getattr(value, "truncated", False):
            items[-1] = "..."
        return "[" + ", ".join(items) + "]"
    if isinstance(value, SockAddr):
        if value.family == AF_UNIX:
            return quote(value.path or "")
        if value.family in (AF_INET, AF_INET6):
            return str(value)
        return "{" + str(value) + "}"
    shown = arg.text
    return shown if shown is not None else str(value)


#: Where the *at calls have their directory fd, shown as AT_FDCWD when it is -100.
_DIRFD_AT = {name: arg_index(name, "dirfd") for name in ("openat", "unlinkat", "fchownat",
                                                         "execveat")}


class TableRenderer:
    """strace-like lines: ``12:00:01.123456 curl 4242 connect(3, 127.0.0.1:8080) = -111 ...``.

    ``boot_time_ns`` turns the events' monotonic ``ts`` into wall-clock time, shown in
    local time or UTC with microseconds.
    """

    def __init__(self, boot_time_ns: int, utc: bool = False, string_limit: int | None = None):
        self.boot_time_ns = boot_time_ns
        self.string_limit = string_limit
        self._convert = time.gmtime if utc else time.localtime
        self._second = -1
        self._clock = ""

    def clock(self, ts: int | None) -> str:
        if ts is None:
            return "??:??:??.??????"
        seconds, ns = divmod(self.boot_time_ns + ts, 1_000_000_000)
        if seconds != self._second:
            self._second = seconds
            try:
                self._clock = time.strftime("%H:%M:%S", self._convert(seconds))
            except (OverflowError, OSError, ValueError):  # a ts far outside the calendar
                self._clock = f"+{seconds}s"
        return f"{self._clock}.{ns // 1000:06d}"

    def call(self, event: Event) -> str:
        """The call with its arguments and result, the part after comm and pid."""
        name = event.label
        limit = self.string_limit
        args = [arg_text(arg, limit) for arg in event.args]
        dirfd = _DIRFD_AT.get(name)
        if dirfd is not None and dirfd < len(args) and args[dirfd] == "-100":
            args[dirfd] = "AT_FDCWD"
        announced = event.argnum
        if announced is not None and len(args) < announced and event.errors:
            args += ["?"] * (min(announced, 6) - len(args))  # announced but missing
        inner = ", ".join(args)
        retval = event.retval
        if retval is None:
            return f"{name}({inner}) = ?"
        if name == "do_exit":
            return f"{name}({inner}) = {exit_status_text(retval)}"
        if name in ("execve", "execveat"):
            if event.args or announced:  # the entry event; its exit event carries the result
                return f"{name}({inner}) <unfinished ...>"
            result = f"<... {name} resumed> = {retval}"
        else:
            result = f"{name}({inner}) = {retval}"
        errno = event.errno
        return f"{result} {errno}" if errno else result

    def event(self, event: Event, context: str = "") -> str:
        """One line; ``context`` (the process's program and container, already made
        printable) goes between the pid and the call."""
        pid = event.host_pid
        shown_pid = f"{pid}/{event.pid}" if event.pid != pid else f"{pid}"
        # quoted as the exe is: a comm is any 15 bytes its task chose, spaces and brackets
        # included, and must not pass for the pid or the exe of its line
        comm = quote(event.comm) if event.comm is not None else "?"
        who = f"{shown_pid} {context}" if context else shown_pid
        line = f"{self.clock(event.ts)} {comm} {who} {self.call(event)}"
        if event.errors:
            line += " <damaged: " + ", ".join(
                f"{error.kind} at {error.offset}" for error in event.errors) + ">"
        return line

    @staticmethod
    def lost(cpu: int, count: int) -> str:
        return f"-- lost {count} samples on cpu {cpu} --"

