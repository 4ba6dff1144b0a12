"""Typed events: what one decoded sample is, and its stable JSON form.

The classes are deliberately small (tuples with names) because the decoder makes
hundreds of thousands of them a second. Strings are the bytes the process passed,
decoded as UTF-8 with ``surrogateescape``: undecodable bytes survive as lone
surrogates, so ``Arg.raw`` and a JSON round trip give back the exact bytes.
"""

from __future__ import annotations

import socket
from typing import Any, NamedTuple

from ebpfwire.wire import layouts, names
from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.catalogue import event_name, failed
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.text import raw

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
ARGV_LIMIT = 20          # MAX_STR_ARR_ELEM: argv elements the writer copies
ARGV_MORE = "..."        # the element the writer adds after the 20th
#: The hash kinds of the hash trailer (layout hash) and what each is the hash of.
HASH_KINDS = {30: "process", 31: "parent", 32: "resource"}
HASH_DIGEST_SIZE = 32    # a SHA-256 digest, as IMA gives it


class SockAddr(NamedTuple):
    """A socket address as the writer copied it; fields absent for a family are None."""

    family: int
    port: int | None = None
    addr: str | None = None
    path: str | None = None         # AF_UNIX: a leading "@" marks an abstract name
    flowinfo: int | None = None
    scope_id: int | None = None

    def __str__(self) -> str:
        if self.family == AF_INET:
            return f"{self.addr}:{self.port}"
        if self.family == AF_INET6:
            scope = f"%{self.scope_id}" if self.scope_id else ""
            return f"[{self.addr}{scope}]:{self.port}"
        if self.family == AF_UNIX:
            return self.path or '""'
        return names.sock_family_name(self.family) or f"family {self.family}"

    def to_dict(self) -> dict[str, Any]:
        family, port, addr, path, flowinfo, scope_id = self
        out: dict[str, Any] = {"family": names.sock_family_name(family) or family}
        if port is not None:
            out["port"] = port
        if addr is not None:
            out["addr"] = addr
        if path is not None:
            out["path"] = path
        if flowinfo is not None:
            out["flowinfo"] = flowinfo
        if scope_id is not None:
            out["scope_id"] = scope_id
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SockAddr:
        family = data["family"]
        if isinstance(family, str):
            family = _FAMILY_NUMBERS[family]
        return cls(family, data.get("port"), data.get("addr"), data.get("path"),
                   data.get("flowinfo"), data.get("scope_id"))

    @classmethod
    def inet(cls, addr: str, port: int) -> SockAddr:
        """An AF_INET address, e.g. ``SockAddr.inet("127.0.0.1", 8080)``."""
        return cls(AF_INET, port, addr)

    @classmethod
    def inet6(cls, addr: str, port: int, flowinfo: int = 0, scope_id: int = 0) -> SockAddr:
        return cls(AF_INET6, port, socket.inet_ntop(socket.AF_INET6,
                                                    socket.inet_pton(socket.AF_INET6, addr)),
                   None, flowinfo, scope_id)

    @classmethod
    def unix(cls, path: str) -> SockAddr:
        """An AF_UNIX address; start ``path`` with "@" for an abstract name."""
        return cls(AF_UNIX, path=path)


_FAMILY_NUMBERS = {names.sock_family_name(n): n for n in range(64) if names.sock_family_name(n)}


class Argv(list):
    """argv as the writer copied it; ``truncated`` when the writer cut it.

    KubeArmor's writer adds "..." after the 20th element without looking for a 21st, so
    a cut argv had 20 elements or more (ours adds it only when there is a 21st; the
    wire does not say which writer wrote it).
    """

    __slots__ = ()

    @property
    def truncated(self) -> bool:
        """20 elements and "...": the process passed 20 arguments or more."""
        return len(self) == ARGV_LIMIT + 1 and self[-1] == ARGV_MORE


class Hash(NamedTuple):
    """One hash of the hash trailer: its kind (30, 31, 32) and digest (hex; None when the
    writer looked for it and did not find it)."""

    type: int
    digest: str | None

    @property
    def kind(self) -> str:
        """What it is the hash of: "process", "parent" or "resource" (the file)."""
        return HASH_KINDS.get(self.type, str(self.type))

    def __str__(self) -> str:
        return f"{self.kind}={self.digest or 'not found'}"


_RENDER = {
    ArgType.OPEN_FLAGS_T: names.open_flags_text,
    ArgType.EXEC_FLAGS_T: names.exec_flags_text,
    ArgType.SOCK_DOM_T: names.sock_domain_text,
    ArgType.SOCK_TYPE_T: names.sock_type_text,
    ArgType.CAP_T: names.capability_text,
    ArgType.UNLINKAT_FLAG_T: names.unlinkat_flags_text,
    ArgType.PTRACE_REQ_T: names.ptrace_request_text,
    ArgType.MOUNT_FLAG_T: names.mount_flags_text,
    ArgType.UMOUNT_FLAG_T: names.umount_flags_text,
}


def _syscall_text(value: int, arch: str = "x86_64") -> str:
    return names.syscall_name(value, arch) or str(value)


class Arg(NamedTuple):
    """One argument: its wire type and value (None when the writer left the payload out)."""

    type: ArgType
    value: Any

    @property
    def text(self) -> str | None:
        """The symbolic form of a flag or enum value (O_RDONLY|O_CLOEXEC), else None."""
        if self.value is None:
            return None
        if self.type == ArgType.SYSCALL_T:
            return _syscall_text(self.value)
        render = _RENDER.get(self.type)
        return render(self.value) if render else None

    @property
    def raw(self) -> bytes | list[bytes] | None:
        """The exact bytes of a string (or of each argv element) as the process passed them."""
        if isinstance(self.value, list):
            return [raw(item) for item in self.value]
        if isinstance(self.value, str):
            return raw(self.value)
        return None

    def __str__(self) -> str:
        if self.value is None:
            return "?"
        if isinstance(self.value, list):
            inner = ", ".join(_quote(v) for v in self.value)
            return f"[{inner}]"
        if isinstance(self.value, str):
            return _quote(self.value)
        shown = self.text
        return shown if shown is not None else str(self.value)

    def to_dict(self) -> dict[str, Any]:
        arg_type = self.type   # an ArgType's name from the table; a non-type fails as ever
        name = _TAG_NAMES[arg_type] if type(arg_type) is ArgType else arg_type.name
        return arg_dict(name, arg_type, self.value)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arg:
        arg_type = ArgType[data["type"]]
        value = data["value"]
        if arg_type == ArgType.SOCKADDR_T and value is not None:
            value = SockAddr.from_dict(value)
        elif arg_type == ArgType.STR_ARR_T and value is not None:
            value = Argv(value)
        return cls(arg_type, value)


#: By tag byte: the ArgType's name, and the function giving a value's symbolic text (None
#: for a tag without one): tables, because ``ArgType.name`` is a Python-level property.
_TAG_NAMES: list = [None] * 256
_TAG_TEXTS: list = [None] * 256
for _t in ArgType:
    _TAG_NAMES[_t] = _t.name
    _TAG_TEXTS[_t] = _syscall_text if _t == ArgType.SYSCALL_T else _RENDER.get(_t)


_SHOWN: dict[tuple[int, int], str] = {}


def _show(tag: int, value: Any, text) -> str | None:
    """A flag or enum value's text; those of ints are remembered (flag sets repeat
    endlessly, and naming bits is slow); the cache is bounded."""
    shown = text(value)
    if type(value) is int and shown is not None:
        if len(_SHOWN) >= 4096:
            _SHOWN.clear()
        _SHOWN[(tag, value)] = shown
    return shown


def arg_dict(name: str, tag: int, value: Any) -> dict[str, Any]:
    """The JSON form of the argument ``(tag, value)`` (:meth:`Arg.to_dict`), from its type's
    name and its tag byte or ArgType: :meth:`Event.to_dict` makes it straight from the
    walker's flat list."""
    kind = type(value)
    if kind is not int and kind is not str:      # the common two: no sockaddr, no list
        if isinstance(value, SockAddr):
            return {"type": name, "value": value.to_dict()}
        if isinstance(value, list):
            return {"type": name, "value": list(value), "truncated": value.truncated}
    text = _TAG_TEXTS[tag]
    if text is None or value is None:
        return {"type": name, "value": value}
    shown = (_SHOWN.get((tag, value)) if kind is int else None) or _show(tag, value, text)
    if shown is None:
        return {"type": name, "value": value}
    return {"type": name, "value": value, "text": shown}


def label_of(event_id: int | None, arch: str) -> str:
    """An event's name, ``event_<id>`` for an id no table knows, ``?`` when cut off."""
    if event_id is None:
        return "?"
    return event_name(event_id, arch) or f"event_{event_id}"


def errno_of(event_id: int | None, retval: int | None) -> str | None:
    """The errno name of a syscall event's negative return value, else None."""
    if failed(event_id, retval):
        return names.errno_name(-retval)  # type: ignore[operator]
    return None


#: Tags whose values have a symbolic text (flags, enums, syscall numbers): :attr:`Arg.text`.
TEXT_TAGS = frozenset(int(t) for t in ArgType if Arg(t, 0).text is not None)


def _quote(value: str) -> str:
    shown = value.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
    return '"' + shown.replace('"', '\\"').replace("\n", "\\n") + '"'


#: Header fields in wire order, as they appear on :class:`Event` and in its JSON form.
HEADER_FIELDS = layouts.CLASSIC_NAMES
EVENT_FIELDS = HEADER_FIELDS + ("args", "extra", "arch", "errors")

_new_object = object.__new__


_new_arg = tuple.__new__
#: ArgType by tag byte (None for a byte that is no type).
_TYPES: list = [None] * 256
for _t in ArgType:
    _TYPES[_t] = ArgType(_t)


def flat_of(args: list[Arg]) -> list:
    """The walker's flat (tag, value) list of built arguments (what :attr:`Event.args`
    wraps)."""
    return [item for arg in args for item in (int(arg.type), arg.value)]


def wire_event(header: tuple, flat: list) -> Event:
    """The decoder's constructor: ``header`` as ``Event._header``, the walker's flat list."""
    event = _new_object(Event)
    event._header = header
    event._args = flat
    return event


# Event._header: the classic fields at their positions in the layouts (comm as text), then
# the dict of the appended fields (at layouts.EXTRA), the arch and the errors
_ARCH, _ERRORS = layouts.EXTRA + 1, layouts.EXTRA + 2


def _header_field(index: int):
    """Read one header field of an :class:`Event` (kept as one tuple: cheap to make)."""
    return lambda event: event._header[index]


class Event:
    """One decoded sample: the context header, the arguments and what went wrong.

    ``extra`` holds the fields of the extended layouts (cwd, tty, oid, exec_id, hash);
    ``errors`` is None in strict mode and the list of damage found in lenient mode.
    The decoder walks the whole sample at once (:mod:`ebpfwire.wire.walker`) but wraps the
    values in :class:`Arg` objects only when ``args`` is first read, so code that filters
    on the header, or a sink that reads :attr:`flat`, never pays for them.
    """

    # _header: the eleven integer fields, then comm, extra, arch and errors (one tuple is
    # the cheapest thing to make); _args: the walker's flat list (its first item is an int
    # tag) until the Arg list is built on first use, then the Arg list
    __slots__ = ("_header", "_args")

    def __init__(self, ts: int, pid_id: int, mnt_id: int, host_ppid: int, host_pid: int,
                 ppid: int, pid: int, uid: int, event_id: int, argnum: int, retval: int,
                 comm: str, args: list[Arg], extra: dict[str, Any] | None = None,
                 arch: str = "x86_64", errors: list[DecodeError] | None = None):
        self._header = (ts, pid_id, mnt_id, host_ppid, host_pid, ppid, pid, uid, event_id,
                        argnum, retval, comm, {} if extra is None else extra, arch, errors)
        self._args = args

    ts = property(_header_field(layouts.TS), doc="bpf_ktime_get_ns(): monotonic ns since boot")
    pid_id = property(_header_field(layouts.PID_ID), doc="PID namespace inode, 0 for the host")
    mnt_id = property(_header_field(layouts.MNT_ID), doc="mount namespace inode, 0 for the host")
    host_ppid = property(_header_field(layouts.HOST_PPID), doc="parent's tgid as the host sees it")
    host_pid = property(_header_field(layouts.HOST_PID), doc="tgid as the host sees it")
    ppid = property(_header_field(layouts.PPID), doc="parent's tgid in the task's PID namespace")
    pid = property(_header_field(layouts.PID), doc="tgid in the task's PID namespace")
    uid = property(_header_field(layouts.UID))
    event_id = property(_header_field(layouts.EVENT_ID))
    argnum = property(_header_field(layouts.ARGNUM), doc="arguments the writer announced")
    retval = property(_header_field(layouts.RETVAL))
    comm = property(_header_field(layouts.COMM), doc="task name (the bytes before the first NUL)")
    extra = property(_header_field(layouts.EXTRA),
                     doc="fields of the extended layouts (cwd, tty...)")
    arch = property(_header_field(_ARCH), doc="architecture the event id was read for")
    errors = property(_header_field(_ERRORS), doc="None (strict) or the damage found (lenient)")

    @property
    def args(self) -> list[Arg]:
        args = self._args
        if args and type(args[0]) is int:     # walked by the decoder, wrapped on first use
            # the Event sink of the walker, inlined as a plain loop: for two arguments, half
            # the time of a comprehension over zipped pairs in a function
            flat, args = iter(args), []
            for tag in flat:
                args.append(_new_arg(Arg, (_TYPES[tag], next(flat))))
            self._args = args
        return args

    @property
    def flat(self) -> list:
        """The arguments as the walker's flat list: tag, value, tag, value... (read-only)."""
        args = self._args
        return args if not args or type(args[0]) is int else flat_of(args)

    def _key(self) -> tuple:
        return (self._header, self.args)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in HEADER_FIELDS)
        return (f"Event({fields}, args={self.args!r}, extra={self.extra!r}, "
                f"arch={self.arch!r}, errors={self.errors!r})")

    def replace(self, **changes: Any) -> Event:
        """A copy with some fields changed (like ``dataclasses.replace``)."""
        values = {name: getattr(self, name) for name in EVENT_FIELDS}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"Event has no field(s) {sorted(unknown)}")
        values.update(changes)
        return Event(**values)

    @property
    def hashes(self) -> list[Hash] | None:
        """The hash trailer's hashes (layout hash, header hash == 1), one per kind the
        writer tried; None for an event without a trailer. In ``extra`` (and the JSON
        form) they are ``{"type", "kind", "digest"}`` objects, digest null: not found."""
        found = self.extra.get("hashes")
        if found is None:
            return None
        return [Hash(item["type"], item["digest"]) for item in found]

    @property
    def name(self) -> str | None:
        """The event's name on its architecture (``openat``, ``tcp_connect``...)."""
        return event_name(self.event_id, self.arch)

    @property
    def label(self) -> str:
        """The name commands show and filter on (:func:`label_of`)."""
        return label_of(self.event_id, self.arch)

    @property
    def errno(self) -> str | None:
        """The errno name of a negative syscall return value (``ECONNREFUSED``)."""
        return errno_of(self.event_id, self.retval)

    @property
    def complete(self) -> bool:
        """False when lenient decoding found damage or missing arguments."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape (docs/format.md), the one definition of it: the JSON
        lines (``output.render``) are built from it at import."""
        # the header read at once and the arguments from the flat list when not yet
        # wrapped: a property or an Arg per field costs more than the dict itself
        (ts, pid_id, mnt_id, host_ppid, host_pid, ppid, pid, uid, event_id, argnum, retval,
         comm, extra, arch, errors) = self._header
        args = self._args
        if args and type(args[0]) is int:
            pairs, arg_dicts = iter(args), []
            for tag in pairs:
                arg_dicts.append(arg_dict(_TAG_NAMES[tag], tag, next(pairs)))
        else:
            arg_dicts = [arg.to_dict() for arg in args]
        out: dict[str, Any] = {
            "ts": ts, "event_id": event_id, "event": event_name(event_id, arch),
            "pid_id": pid_id, "mnt_id": mnt_id, "host_ppid": host_ppid,
            "host_pid": host_pid, "ppid": ppid, "pid": pid, "uid": uid,
            "comm": comm, "retval": retval, "errno": errno_of(event_id, retval),
            "argnum": argnum, "args": arg_dicts,
        }
        if extra:
            out.update(extra)
        if errors is not None:
            out["errors"] = [error.to_dict() for error in errors]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], arch: str = "x86_64") -> Event:
        """Rebuild an event from :meth:`to_dict` output (errors are not rebuilt)."""
        known = {*JSON_KEYS, "errors"}
        extra = {key: value for key, value in data.items() if key not in known}
        header = [data[key] for key in HEADER_FIELDS]
        args = [Arg.from_dict(arg) for arg in data["args"]]
        return cls(*header, args, extra, arch)


#: The keys of an event's JSON form up to its arguments, in order, as :meth:`Event.to_dict`
#: makes them (read off a prototype); the layout's extra fields follow, then "errors" in
#: lenient mode.
JSON_KEYS = tuple(Event(*range(11), "", []).to_dict())
