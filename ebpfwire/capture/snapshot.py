"""Process and container context carried in a capture (record types PROCESS and CONTAINER).

A capture is decoded later and elsewhere, when the processes it shows are long gone: the
recorder writes what it knew about them (a snapshot at the start, each container once) as
records of their own. The construct schemas below are the specification of the payloads;
docs/capture-format.md quotes them.

Strings are UTF-8; bytes that are not (a process's argv can hold anything) travel through
the surrogateescape error handler, so ``to_payload(from_payload(b))`` gives back the exact
bytes. Every length is a prefix checked against the payload's remaining bytes, so a crafted
payload cannot make the parser allocate more than its own size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from construct import (
    ConstructError,
    ExprAdapter,
    GreedyBytes,
    Int32ul,
    Int64ul,
    Optional,
    Prefixed,
    PrefixedArray,
    Struct,
)

__all__ = ["FLAG_CUT", "RUNTIMES", "ContainerInfo", "ContainerPayload", "ProcessInfo",
           "ProcessPayload", "Text"]

RUNTIMES = ("docker", "containerd", "cri-o", "podman", "host", "unknown")
"""The container runtimes a ContainerInfo names; 'host' for the host's namespaces."""

Text = ExprAdapter(
    Prefixed(Int32ul, GreedyBytes),
    lambda data, ctx: data.decode("utf-8", "surrogateescape"),
    lambda text, ctx: text.encode("utf-8", "surrogateescape"),
)
"""A u32 byte count, then that many bytes of UTF-8 (surrogateescape for other bytes)."""

ProcessPayload = Struct(
    "host_pid" / Int32ul,
    "host_ppid" / Int32ul,
    "pid" / Int32ul,
    "uid" / Int32ul,
    "pid_ns" / Int32ul,
    "mnt_ns" / Int32ul,
    "start_ns" / Int64ul,
    "comm" / Text,
    "exe" / Text,
    "cwd" / Text,
    "argv" / PrefixedArray(Int32ul, Text),
    "container_id" / Text,
    "flags" / Optional(Int32ul),
)
"""A PROCESS record's payload. ``flags`` (bit 0: a field was cut to the recorder's bound)
was added later: a payload without it has no flag set. Bytes after it are ignored (room for
appended fields)."""

#: ProcessPayload.flags: a field (in practice argv) was longer than the recorder keeps.
FLAG_CUT = 1

ContainerPayload = Struct(
    "pid_ns" / Int32ul,
    "mnt_ns" / Int32ul,
    "container_id" / Text,
    "runtime" / Text,
)
"""A CONTAINER record's payload. Bytes after it are ignored (room for appended fields)."""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A process as the recorder saw it.

    host_pid/host_ppid are as the host sees them, pid inside the process's own PID
    namespace; pid_ns and mnt_ns are namespace inode numbers as /proc/PID/ns shows them;
    start_ns is the process start in ns since boot (comparable to an event's ts);
    container_id is '' for a host process; cut says argv (or another field) was longer than
    the recorder keeps and holds only its start.
    """

    host_pid: int
    host_ppid: int
    pid: int
    uid: int
    pid_ns: int
    mnt_ns: int
    start_ns: int
    comm: str
    exe: str
    cwd: str
    argv: tuple[str, ...]
    container_id: str
    cut: bool = False

    def to_payload(self) -> bytes:
        """The PROCESS record payload (ProcessPayload)."""
        return _build(ProcessPayload, "process", {
            "host_pid": self.host_pid, "host_ppid": self.host_ppid, "pid": self.pid,
            "uid": self.uid, "pid_ns": self.pid_ns, "mnt_ns": self.mnt_ns,
            "start_ns": self.start_ns, "comm": self.comm, "exe": self.exe, "cwd": self.cwd,
            "argv": list(self.argv), "container_id": self.container_id,
            "flags": FLAG_CUT if self.cut else 0,
        })

    @classmethod
    def from_payload(cls, data: bytes) -> ProcessInfo:
        """Parse a PROCESS payload; ValueError says what was wrong and where.

        The fast reader below parses a well-formed payload (about 10x construct's speed: a
        snapshot has a record per running process); anything it does not accept goes
        through the schema, which is the specification and words the error
        (tests/test_context.py holds the two equal)."""
        fast = _process_fields(data)
        if fast is not None:
            return cls(*fast)
        p = _parse(ProcessPayload, "process", data)
        return cls(p.host_pid, p.host_ppid, p.pid, p.uid, p.pid_ns, p.mnt_ns, p.start_ns,
                   p.comm, p.exe, p.cwd, tuple(p.argv), p.container_id,
                   bool((p.flags or 0) & FLAG_CUT))


_FIXED = struct.Struct("<IIIIIIQ")   # ProcessPayload's fields before comm
_U32 = struct.Struct("<I").unpack_from


def _process_fields(data: bytes) -> tuple | None:
    """ProcessInfo's fields of a well-formed PROCESS payload, read as ProcessPayload says;
    None for anything else (short, a length past the end), which the schema then reports."""
    n = len(data)
    if n < _FIXED.size:
        return None
    fields = list(_FIXED.unpack_from(data))
    at = _FIXED.size

    def text() -> str | None:
        nonlocal at
        if at + 4 > n:
            return None
        size = _U32(data, at)[0]
        start, at = at + 4, at + 4 + size
        return None if at > n else data[start:at].decode("utf-8", "surrogateescape")

    comm, exe, cwd = text(), text(), text()
    if cwd is None or comm is None or exe is None or at + 4 > n:
        return None
    count = _U32(data, at)[0]
    at += 4
    if count > (n - at) // 4:   # each element is at least its 4-byte length
        return None
    argv = []
    for _ in range(count):
        item = text()
        if item is None:
            return None
        argv.append(item)
    container_id = text()
    if container_id is None:
        return None
    flags = _U32(data, at)[0] if at + 4 <= n else 0
    return (*fields, comm, exe, cwd, tuple(argv), container_id, bool(flags & FLAG_CUT))


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """The container a (pid_ns, mnt_ns) pair belongs to; container_id '' for the host.
    runtime is one of RUNTIMES."""

    pid_ns: int
    mnt_ns: int
    container_id: str
    runtime: str

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime: expected one of {', '.join(RUNTIMES)}, "
                             f"found {self.runtime!r}")

    def to_payload(self) -> bytes:
        """The CONTAINER record payload (ContainerPayload)."""
        return _build(ContainerPayload, "container", {
            "pid_ns": self.pid_ns, "mnt_ns": self.mnt_ns,
            "container_id": self.container_id, "runtime": self.runtime,
        })

    @classmethod
    def from_payload(cls, data: bytes) -> ContainerInfo:
        """Parse a CONTAINER payload; ValueError says what was wrong and where."""
        p = _parse(ContainerPayload, "container", data)
        return cls(p.pid_ns, p.mnt_ns, p.container_id, p.runtime)


def _build(schema: Struct, what: str, values: dict) -> bytes:
    try:
        return schema.build(values)
    except (ConstructError, UnicodeError, TypeError) as exc:
        raise ValueError(f"{what} payload: cannot encode {values!r}: {exc}") from None


def _parse(schema: Struct, what: str, data: bytes):
    try:
        return schema.parse(data)
    except ConstructError as exc:
        raise ValueError(f"{what} payload of {len(data)} bytes: {exc}") from None
