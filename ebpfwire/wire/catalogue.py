"""Which event an id is, which arguments the system monitor writes for it, and what each means.

Syscall events carry the syscall number of the traced architecture as their id; a few
special ids (process exit, exec check, TCP and UDP hooks) are the same on every
architecture. Each event's arguments are listed by mask slot with their role (what the
argument is: the path, the fd, the flags...) and tag; the ENC_ARG_TYPE masks are derived
from that list, with file paths as STR_T as they appear on the wire. Consumers find an
argument by its role (:func:`arg_index`), never by a slot number of their own.
tests/test_catalogue_bpf.py holds all of this equal to what bpf/monitor.bpf.c writes.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

from ebpfwire.wire import names
from ebpfwire.wire.argtypes import ArgType, arg_types, argnum, make_mask

T = ArgType

#: Syscalls written as two events, an entry (its arguments) and an exit (argnum 0, the
#: result): one call, counted once, at its exit, as strace -c and `stats` count it.
PAIRED = frozenset(("execve", "execveat"))
DO_EXIT = 351
SECURITY_BPRM_CHECK = 352
TCP_CONNECT = 400
TCP_ACCEPT = 401
TCP_CONNECT_V6 = 402
TCP_ACCEPT_V6 = 403
UDP_SENDMSG = 10000
UDP_SEND_SKB = 10001

SPECIAL_EVENTS: dict[int, str] = {
    DO_EXIT: "do_exit",
    SECURITY_BPRM_CHECK: "security_bprm_check",
    TCP_CONNECT: "tcp_connect",
    TCP_ACCEPT: "tcp_accept",
    TCP_CONNECT_V6: "tcp_connect_v6",
    TCP_ACCEPT_V6: "tcp_accept_v6",
    UDP_SENDMSG: "udp_sendmsg",
    UDP_SEND_SKB: "udp_send_skb",
}


class ArgSpec(NamedTuple):
    """One argument the monitor writes: what it is (its role) and its tag on the wire."""

    role: str
    tag: ArgType


def _args(*specs: tuple[str, ArgType] | None) -> tuple[ArgSpec | None, ...]:
    return tuple(None if spec is None else ArgSpec(*spec) for spec in specs)


_SOCKADDR_CALL = _args(("fd", T.INT_T), ("address", T.SOCKADDR_T))
# the tcp hooks build their sockaddr from the socket: the remote address, with the local
# port on accept; "protocol" is the text "TCP" or "TCPv6"
_TCP = _args(("protocol", T.STR_T), ("remote", T.SOCKADDR_T))
# the udp hooks (KubeArmor since 2025-06, f12a7303): the DNS server's address (a
# sockaddr_in the program builds, its port stored in host order), the query name with a
# trailing dot, the query type; before that the query name alone (EARLIER_ARGS)
_UDP = _args(("server", T.SOCKADDR_T), ("qname", T.UDP_MSG), ("qtype", T.QTYPE))

#: Event name -> its arguments by mask slot (None: a slot left empty, as rmdir's slot 0).
EVENT_ARGS: dict[str, tuple[ArgSpec | None, ...]] = {
    "open": _args(("path", T.STR_T), ("flags", T.OPEN_FLAGS_T)),
    "close": _args(("fd", T.INT_T)),
    "socket": _args(("domain", T.SOCK_DOM_T), ("type", T.SOCK_TYPE_T), ("protocol", T.INT_T)),
    "connect": _SOCKADDR_CALL,
    "accept": _SOCKADDR_CALL,
    "accept4": _SOCKADDR_CALL,
    "bind": _SOCKADDR_CALL,
    "listen": _args(("fd", T.INT_T), ("backlog", T.INT_T)),
    "execve": _args(("path", T.STR_T), ("argv", T.STR_ARR_T)),
    "unlink": _args(("dirfd", T.INT_T), ("path", T.STR_T)),   # dirfd: always AT_FDCWD
    "chown": _args(("path", T.STR_T), ("uid", T.INT_T), ("gid", T.INT_T)),
    # path: the target's executable, as the monitor last saw it exec
    "ptrace": _args(("request", T.PTRACE_REQ_T), ("pid", T.INT_T), ("path", T.STR_T)),
    "setuid": _args(("uid", T.INT_T)),
    "setgid": _args(("gid", T.INT_T)),
    "mount": _args(("mount_source", T.STR_T), ("mount_target", T.STR_T), ("fstype", T.STR_T),
                   ("flags", T.MOUNT_FLAG_T), ("data", T.STR_T)),
    "umount2": _args(("mount_target", T.STR_T), ("flags", T.UMOUNT_FLAG_T)),
    "openat": _args(("dirfd", T.INT_T), ("path", T.STR_T), ("flags", T.OPEN_FLAGS_T)),
    "fchownat": _args(("dirfd", T.INT_T), ("path", T.STR_T), ("uid", T.INT_T), ("gid", T.INT_T),
                      ("flags", T.INT_T)),
    "unlinkat": _args(("dirfd", T.INT_T), ("path", T.STR_T), ("flags", T.UNLINKAT_FLAG_T)),
    "execveat": _args(("dirfd", T.INT_T), ("path", T.STR_T), ("argv", T.STR_ARR_T),
                      ("flags", T.EXEC_FLAGS_T)),
    "rmdir": _args(None, ("path", T.STR_T)),
    "do_exit": (),
    "security_bprm_check": _args(("path", T.STR_T)),
    "tcp_connect": _TCP,
    "tcp_accept": _TCP,
    "tcp_connect_v6": _TCP,
    "tcp_accept_v6": _TCP,
    "udp_sendmsg": _UDP,
    "udp_send_skb": _UDP,
}

#: Event name -> the arguments earlier writers wrote for it, told apart by their count
#: (argnum): the udp hooks wrote the query name alone until 2025-06.
EARLIER_ARGS: dict[str, tuple[tuple[ArgSpec | None, ...], ...]] = {
    "udp_sendmsg": (_args(("qname", T.UDP_MSG)),),
    "udp_send_skb": (_args(("qname", T.UDP_MSG)),),
}

#: Event name -> the mask of the arguments it carries (FILE_TYPE_T already as STR_T).
MASKS: dict[str, int] = {
    name: make_mask(*(T.NONE_T if spec is None else spec.tag for spec in specs))
    for name, specs in EVENT_ARGS.items()
}

#: Event name -> role -> (the argument's index in the event's arguments as decoded, its
#: tag); the empty mask slots are never written, so rmdir's path is its argument 0.
def _found(specs: tuple[ArgSpec | None, ...]) -> dict[str, tuple[int, ArgType]]:
    return {spec.role: (index, spec.tag)
            for index, spec in enumerate(spec for spec in specs if spec is not None)}


_FOUND: dict[str, dict[str, tuple[int, ArgType]]] = {
    name: _found(specs) for name, specs in EVENT_ARGS.items()}
#: (event name, argnum) -> the roles of an earlier shape with that many arguments.
_EARLIER: dict[tuple[str, int], dict[str, tuple[int, ArgType]]] = {
    (name, sum(spec is not None for spec in specs)): _found(specs)
    for name, shapes in EARLIER_ARGS.items() for specs in shapes}


def roles(name: str) -> tuple[str, ...]:
    """The roles of an event's arguments in the order they arrive; () for an unknown event."""
    return tuple(_FOUND.get(name, ()))


def find_arg(name: str, role: str, argnum: int | None = None) -> tuple[int, ArgType] | None:
    """Where the argument with ``role`` is in ``event.args`` of event ``name``, and its tag;
    None when the event has no such argument. With ``argnum``, an earlier writer's shape
    with that many arguments (:data:`EARLIER_ARGS`) is looked at first."""
    shape = _EARLIER.get((name, argnum)) if argnum is not None else None
    return (shape if shape is not None else _FOUND.get(name, {})).get(role)


def arg_index(name: str, role: str, argnum: int | None = None) -> int | None:
    """Where the argument with ``role`` is in ``event.args`` of event ``name`` (None when
    the event has no such argument); ``argnum`` as for :func:`find_arg`."""
    found = find_arg(name, role, argnum)
    return None if found is None else found[0]


def is_syscall_event(event_id: int) -> bool:
    """True unless the id is one of the special, non-syscall events."""
    return event_id not in SPECIAL_EVENTS


def failed(event_id: int | None, retval: int | None) -> bool:
    """Whether an event is a failed syscall: a syscall event (not a special one, whose
    return value is something else) that returned a negative errno."""
    return retval is not None and retval < 0 and event_id is not None and (
        event_id not in SPECIAL_EVENTS)


def failed_rows(event_ids: Any, retvals: Any) -> Any:
    """:func:`failed` for arrays (numpy) of event ids and return values, row by row."""
    special = event_ids != event_ids
    for event_id in SPECIAL_EVENTS:
        special |= event_ids == event_id
    return (retvals < 0) & ~special


@cache
def _names(arch: str) -> dict[int, str]:
    table = {nr: names.syscall_name(nr, arch) for nr in range(1024)}
    table = {nr: name for nr, name in table.items() if name}
    table.update(SPECIAL_EVENTS)
    return table


def event_name(event_id: int, arch: str = "x86_64") -> str | None:
    """The event's name on ``arch``: its syscall name or special-event name, else None."""
    return _names(arch).get(event_id)


def check_arch(arch: str) -> str:
    """Validate an architecture name (ValueError listing the known ones)."""
    if arch not in names.ARCHES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(names.ARCHES)}")
    return arch


@cache
def _expected(arch: str) -> dict[tuple[int, int], tuple[int, ...]]:
    table: dict[tuple[int, int], tuple[int, ...]] = {}
    for event_id, name in _names(arch).items():
        mask = MASKS.get(name)
        if mask is not None:
            used = tuple(t for t in arg_types(mask) if t != T.NONE_T)
            table[(event_id, argnum(mask))] = used
        for specs in EARLIER_ARGS.get(name, ()):
            tags = tuple(spec.tag for spec in specs if spec is not None)
            table.setdefault((event_id, len(tags)), tags)
    return table


def expected_tags(event_id: int, arch: str, count: int) -> tuple[int, ...] | None:
    """The tags an event of this id and argnum should carry, in order; None when unknown."""
    return _expected(arch).get((event_id, count))
