"""Which event an id is, and which arguments the system monitor writes for it.

Syscall events carry the syscall number of the traced architecture as their id; a few
special ids (process exit, exec check, TCP and UDP hooks) are the same on every
architecture. The masks are the monitor's ENC_ARG_TYPE masks, with file paths written
as STR_T as they appear on the wire.
"""

from __future__ import annotations

from functools import cache

from ebpfwire.wire import names
from ebpfwire.wire.argtypes import ArgType, arg_types, argnum, make_mask

T = ArgType

SPECIAL_EVENTS: dict[int, str] = {
    351: "do_exit",
    352: "security_bprm_check",
    400: "tcp_connect",
    401: "tcp_accept",
    402: "tcp_connect_v6",
    403: "tcp_accept_v6",
    10000: "udp_sendmsg",
    10001: "udp_send_skb",
}

#: Event name -> the mask of the arguments it carries (FILE_TYPE_T already as STR_T).
MASKS: dict[str, int] = {
    "open": make_mask(T.STR_T, T.OPEN_FLAGS_T),
    "close": make_mask(T.INT_T),
    "socket": make_mask(T.SOCK_DOM_T, T.SOCK_TYPE_T, T.INT_T),
    "connect": make_mask(T.INT_T, T.SOCKADDR_T),
    "accept": make_mask(T.INT_T, T.SOCKADDR_T),
    "accept4": make_mask(T.INT_T, T.SOCKADDR_T),
    "bind": make_mask(T.INT_T, T.SOCKADDR_T),
    "listen": make_mask(T.INT_T, T.INT_T),
    "execve": make_mask(T.STR_T, T.STR_ARR_T),
    "unlink": make_mask(T.INT_T, T.STR_T),
    "chown": make_mask(T.STR_T, T.INT_T, T.INT_T),
    "ptrace": make_mask(T.PTRACE_REQ_T, T.INT_T, T.STR_T),
    "setuid": make_mask(T.INT_T),
    "setgid": make_mask(T.INT_T),
    "mount": make_mask(T.STR_T, T.STR_T, T.STR_T, T.MOUNT_FLAG_T, T.STR_T),
    "umount2": make_mask(T.STR_T, T.UMOUNT_FLAG_T),
    "openat": make_mask(T.INT_T, T.STR_T, T.OPEN_FLAGS_T),
    "fchownat": make_mask(T.INT_T, T.STR_T, T.INT_T, T.INT_T, T.INT_T),
    "unlinkat": make_mask(T.INT_T, T.STR_T, T.UNLINKAT_FLAG_T),
    "execveat": make_mask(T.INT_T, T.STR_T, T.STR_ARR_T, T.EXEC_FLAGS_T),
    "rmdir": make_mask(T.NONE_T, T.STR_T),
    "do_exit": 0,
    "security_bprm_check": make_mask(T.STR_T),
    "tcp_connect": make_mask(T.STR_T, T.SOCKADDR_T),
    "tcp_accept": make_mask(T.STR_T, T.SOCKADDR_T),
    "tcp_connect_v6": make_mask(T.STR_T, T.SOCKADDR_T),
    "tcp_accept_v6": make_mask(T.STR_T, T.SOCKADDR_T),
    "udp_sendmsg": make_mask(T.UDP_MSG, T.QTYPE),
    "udp_send_skb": make_mask(T.UDP_MSG, T.QTYPE),
}


def is_syscall_event(event_id: int) -> bool:
    """True unless the id is one of the special, non-syscall events."""
    return event_id not in SPECIAL_EVENTS


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
    return table


def expected_tags(event_id: int, arch: str, count: int) -> tuple[int, ...] | None:
    """The tags an event of this id and argnum should carry, in order; None when unknown."""
    return _expected(arch).get((event_id, count))
