"""Attach a loaded program where its section says: a tracepoint, a raw tracepoint, or a
tracing program (tp_btf, fentry, fexit, lsm) where its load-time BTF id says."""

from __future__ import annotations

import errno
import os
from typing import Protocol

from ebpfwire.kernel import sections, syscalls, tracefs
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.syscalls import BpfSyscallError


class Attachable(Protocol):
    name: str
    section: str
    prog_type: int
    attach_to: str


def attach_program(prog: Attachable, prog_fd: int) -> int:
    """Attach ``prog`` (loaded as ``prog_fd``); the fd whose close detaches it."""
    if prog.prog_type in (sections.RAW_TRACEPOINT, sections.RAW_TRACEPOINT_WRITABLE):
        return syscalls.raw_tracepoint_open(prog.attach_to, prog_fd)
    if prog.prog_type in (sections.TRACING, sections.LSM):
        return syscalls.raw_tracepoint_open(None, prog_fd)
    if prog.prog_type != sections.TRACEPOINT:
        raise LoaderError(
            f"program {prog.name!r}: section {prog.section!r} has no automatic attachment in "
            "this loader (tracepoint, raw tracepoint, tp_btf, fentry/fexit/lsm only)"
        )
    category, _, name = prog.attach_to.partition("/")
    tp_id = tracefs.tracepoint_id(category, name)
    fd = syscalls.perf_event_open(syscalls.PERF_TYPE_TRACEPOINT, tp_id, cpu=0)
    try:
        syscalls.perf_ioctl(fd, syscalls.PERF_EVENT_IOC_SET_BPF, prog_fd)
        syscalls.perf_ioctl(fd, syscalls.PERF_EVENT_IOC_ENABLE)
    except BpfSyscallError as exc:
        os.close(fd)
        if exc.errno != errno.EACCES:
            raise
        raise LoaderError(
            f"attaching program {prog.name!r} to tracepoint {prog.attach_to}: the program "
            "reads past the end of the tracepoint's record (see its format file under "
            "tracefs events/); the kernel refuses such a program with EACCES",
            exc.errno,
        ) from exc
    return fd
