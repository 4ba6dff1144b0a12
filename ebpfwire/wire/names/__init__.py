"""Symbolic names for the numbers in syscall events: syscalls, errnos, flags and enums.

Pure data generated once from the Linux UAPI headers, plus small renderers, so decoding a
capture gives the same names on any platform (nothing is asked of the running OS).
"""

from ebpfwire.wire.names import syscalls_arm64, syscalls_x86_64
from ebpfwire.wire.names.constants import ARCHES, for_arch
from ebpfwire.wire.names.errnos import ERRNOS
from ebpfwire.wire.names.render import (
    bits_text,
    capability_text,
    enum_text,
    exec_flags_text,
    mount_flags_text,
    open_flags_text,
    ptrace_request_text,
    sock_domain_text,
    sock_family_name,
    sock_type_text,
    umount_flags_text,
    unlinkat_flags_text,
)

__all__ = [
    "ARCHES",
    "bits_text",
    "capability_text",
    "enum_text",
    "errno_message",
    "errno_name",
    "exec_flags_text",
    "mount_flags_text",
    "open_flags_text",
    "ptrace_request_text",
    "sock_domain_text",
    "sock_family_name",
    "sock_type_text",
    "syscall_name",
    "syscall_number",
    "umount_flags_text",
    "unlinkat_flags_text",
]

_NAMES_BY_ARCH: dict[str, dict[int, str]] = {
    "x86_64": syscalls_x86_64.SYSCALLS,
    "arm64": syscalls_arm64.SYSCALLS,
}
_NUMBERS_BY_ARCH: dict[str, dict[str, int]] = {
    arch: {name: nr for nr, name in table.items()} for arch, table in _NAMES_BY_ARCH.items()
}


def syscall_name(nr: int, arch: str = "x86_64") -> str | None:
    """Name of syscall ``nr`` on ``arch`` ("x86_64" or "arm64"), None if it has none."""
    return for_arch(_NAMES_BY_ARCH, arch).get(nr)


def syscall_number(name: str, arch: str = "x86_64") -> int | None:
    """Number of syscall ``name`` on ``arch``, None if that architecture lacks it (arm64: open)."""
    return for_arch(_NUMBERS_BY_ARCH, arch).get(name)


def errno_name(code: int) -> str | None:
    """Name of a positive errno (111 -> "ECONNREFUSED"); pass ``-retval`` for a failed call."""
    entry = ERRNOS.get(code)
    return entry[0] if entry else None


def errno_message(code: int) -> str | None:
    """Linux (glibc) message of a positive errno (111 -> "Connection refused")."""
    entry = ERRNOS.get(code)
    return entry[1] if entry else None
