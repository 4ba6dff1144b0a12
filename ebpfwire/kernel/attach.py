"""Attach a loaded program where its section says: a tracepoint or a raw tracepoint."""

from __future__ import annotations

import errno
import os

from ebpfwire.kernel import syscalls, tracefs
from ebpfwire.kernel.elf import ProgramSpec
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.syscalls import BpfSyscallError


def attach_program(prog: ProgramSpec, prog_fd: int) -> int:
    """Attach ``prog`` (loaded as ``prog_fd``); the fd whose close detaches it."""
    if prog.prog_type == syscalls.BPF_PROG_TYPE_RAW_TRACEPOINT:
        return syscalls.raw_tracepoint_open(prog.attach_to, prog_fd)
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
