"""Attach a loaded program where its section says: a tracepoint, a raw tracepoint, a
tracing program (tp_btf, fentry, fexit, fmod_ret, lsm) where its load-time BTF id says, a
kprobe, uprobe or ksyscall, a perf_event sampler, an iterator.

Each attachment is a :class:`Link`: the fds that hold it in the kernel and, for a legacy
tracefs probe, the event to remove; closing it leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Callable, Iterable
from typing import Protocol

from ebpfwire import machine
from ebpfwire.kernel import probes, sections, syscalls, tracefs
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.syscalls import BpfSyscallError

DEFAULT_FREQUENCY = 99  # Hz: perf_event samplers, off the beat of timer ticks
_ITER_READ = 1 << 16


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
            "this loader (tracepoint, raw tracepoint, tp_btf, fentry/fexit/fmod_ret/lsm, "
            "kprobe/ksyscall, uprobe, perf_event, iter only)"
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


class Link:
    """One attachment: ``fds`` (a BPF link, perf events) and ``undo`` (run after they are
    closed: removes a legacy tracefs probe event). :meth:`close` releases it all, once."""

    def __init__(self, what: str, fds: Iterable[int], undo: Callable[[], None] | None = None
                 ) -> None:
        self.what = what
        self.fds = list(fds)
        self._undo = undo

    @property
    def fd(self) -> int:
        """The first fd: the BPF link (or the perf event) whose close detaches."""
        return self.fds[0]

    @property
    def closed(self) -> bool:
        return not self.fds

    def read(self) -> bytes:
        """One pass of an iterator link: what its program printed (``bpf_seq_printf``)."""
        fd = syscalls.iter_create(self.fd)
        try:
            chunks = []
            while chunk := os.read(fd, _ITER_READ):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()

    def __repr__(self) -> str:
        return f"Link({self.what!r}, fds={self.fds})"


def link_perf_event(prog_fd: int, perf_fd: int, what: str) -> int:
    """``BPF_LINK_CREATE(BPF_PERF_EVENT)`` of ``prog_fd`` on ``perf_fd``, then the event
    enabled; the link fd."""
    link_fd = syscalls.link_create(prog_fd, perf_fd, syscalls.BPF_PERF_EVENT,
                                   what=f"linking {what}")
    try:
        syscalls.perf_ioctl(perf_fd, syscalls.PERF_EVENT_IOC_ENABLE)
    except BaseException:
        os.close(link_fd)
        raise
    return link_fd


def attach_probe(prog_fd: int, plan: probes.ProbePlan) -> Link:
    """A kprobe or uprobe of ``plan`` with ``prog_fd`` linked to it."""
    perf_fd, undo = probes.open_probe(plan)
    try:
        link_fd = link_perf_event(prog_fd, perf_fd, plan.describe())
    except BaseException:
        os.close(perf_fd)
        if undo is not None:
            undo()
        raise
    return Link(plan.describe(), [link_fd, perf_fd], undo)


def attach_kprobe(prog_fd: int, function: str, offset: int = 0, *, retprobe: bool = False
                  ) -> Link:
    """``prog_fd`` on entry to kernel ``function`` (+ ``offset``), or on its return."""
    return attach_probe(prog_fd, probes.plan_probe("kprobe", function, offset, retprobe))


def uprobe_plan(binary: str, func_or_offset: str | int, *, retprobe: bool = False,
                pid: int = -1) -> probes.ProbePlan:
    """The plan of a uprobe on ``binary`` (a path, or a name looked up as libbpf does) at a
    function (``"name"``, ``"name+off"``) or a file offset."""
    from ebpfwire.kernel import elfsym  # here: pyelftools costs every other attach ~13 ms

    path = elfsym.resolve_binary(binary)
    if isinstance(func_or_offset, int):
        offset = func_or_offset
    else:
        func, offset = probes.split_target(func_or_offset, f"uprobe on {path}")
        if func:
            offset += elfsym.symbol_offset(path, func)
    return probes.plan_probe("uprobe", path, offset, retprobe, pid)


def attach_perf_event(prog_fd: int, *, period: int | None = None,
                      frequency: int | None = None, cpus: Iterable[int] | None = None,
                      event: tuple[int, int] = (syscalls.PERF_TYPE_SOFTWARE,
                                                syscalls.PERF_COUNT_SW_CPU_CLOCK),
                      ) -> Link:
    """A perf_event program sampling ``event`` (type, config; default the cpu-clock) on each
    of ``cpus`` (default: the online ones), every ``period`` events or ``frequency`` times a
    second (default :data:`DEFAULT_FREQUENCY`)."""
    if period is not None and frequency is not None:
        raise LoaderError("perf_event attach: give a sample period or a frequency, not both")
    freq = period is None
    rate = (frequency or DEFAULT_FREQUENCY) if freq else period
    what = f"perf_event {event[0]}:{event[1]} {'at ' if freq else 'every '}{rate}"
    link = Link(what + (" Hz" if freq else ""), [])
    try:
        for cpu in machine.online_cpus() if cpus is None else cpus:
            perf_fd = syscalls.perf_event_open(*event, cpu, period=rate, freq=freq)
            link.fds.append(perf_fd)
            link.fds.insert(0, link_perf_event(prog_fd, perf_fd, f"{link.what} on cpu {cpu}"))
    except BaseException:
        link.close()
        raise
    return link


def attach_iter(prog_fd: int, *, map_fd: int | None = None, pid: int | None = None,
                tid: int | None = None) -> Link:
    """An iterator link (``BPF_TRACE_ITER``): over ``map_fd``'s elements for
    ``iter/bpf_map_elem``, over one process (``pid``) or thread (``tid``) for the task
    iterators, else over everything; :meth:`Link.read` runs it."""
    if map_fd is not None:
        info = struct.pack("<I", map_fd)
    elif pid is not None or tid is not None:
        info = struct.pack("<III", tid or 0, pid or 0, 0)
    else:
        info = b""
    fd = syscalls.link_create(prog_fd, 0, syscalls.BPF_TRACE_ITER, info,
                              what=f"creating the iterator link of program fd {prog_fd}")
    return Link("iter", [fd])


def attach_link(prog: Attachable, prog_fd: int, kind: str) -> Link:
    """Attach by section convention (``kind``: :attr:`ProgramKind.attach`)."""
    if kind in ("kprobe", "kretprobe", "ksyscall", "kretsyscall"):
        func, offset = probes.split_target(prog.attach_to, f"section {prog.section!r}")
        if kind.endswith("syscall"):
            func = probes.syscall_function(prog.attach_to)
        return attach_kprobe(prog_fd, func, offset, retprobe=kind.startswith("kret"))
    if kind in ("uprobe", "uretprobe"):
        binary, sep, where = prog.attach_to.partition(":")
        if not sep or not binary or not where:
            raise LoaderError(f"program {prog.name!r}: section {prog.section!r} names no "
                              "BINARY:FUNCTION to attach to; use attach_uprobe()")
        return attach_probe(prog_fd, uprobe_plan(binary, where,
                                                 retprobe=kind == "uretprobe"))
    if kind == "perf_event":
        return attach_perf_event(prog_fd)
    if kind == "iter":
        return attach_iter(prog_fd)
    return Link(prog.section, [attach_program(prog, prog_fd)])
