"""kprobes and uprobes: planned from what this kernel offers, then opened as perf events.

A probe opens through its PMU (``/sys/bus/event_source/devices/{kprobe,uprobe}``: the
``type`` to pass, the ``retprobe`` bit of ``config``) or, where the kernel has no such PMU,
as a legacy tracefs probe event (a line written to ``kprobe_events``/``uprobe_events``,
then a tracepoint). The plan (:class:`ProbePlan`) is data read from those files, so tests
check it without the kernel attaching anything.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ebpfwire.kernel import syscalls, tracefs
from ebpfwire.kernel.errors import LoaderError

PMU_ROOT = Path("/sys/bus/event_source/devices")
KALLSYMS = Path("/proc/kallsyms")
# the arch part of the syscall wrappers' names (__x64_sys_getppid), as libbpf names it
SYSCALL_PREFIX = {"x86_64": "__x64_sys_", "aarch64": "__arm64_sys_"}
_NUMBER = r"0x[0-9a-fA-F]+|\d+"
_TARGET = re.compile(rf"([A-Za-z_.][\w.]*)(?:\+({_NUMBER}))?")
_events = itertools.count()


@dataclass(frozen=True)
class ProbePlan:
    """One kprobe or uprobe to open: through the PMU (``pmu_type``; ``config`` holds the
    retprobe bit, the function name or path goes in ``config1``, ``offset`` in ``config2``)
    or, without one, as the tracefs probe event ``event`` written to ``events_file``."""

    kind: str  # "kprobe" or "uprobe"
    target: str  # a kernel function, or a binary's path
    offset: int  # bytes past the function (kprobe), the file offset (uprobe)
    retprobe: bool
    pid: int = -1
    pmu_type: int | None = None
    config: int = 0
    events_file: Path | None = None
    event: str = ""  # group/name of the legacy event

    @property
    def where(self) -> str:
        if self.kind == "kprobe":
            return f"{self.target}+0x{self.offset:x}"
        return f"{self.target}:0x{self.offset:x}"

    @property
    def event_line(self) -> str:
        """What tracefs takes to create the legacy event."""
        return f"{'r' if self.retprobe else 'p'}:{self.event} {self.where}"

    def describe(self) -> str:
        ret = "ret" if self.retprobe else ""
        pid = f" of pid {self.pid}" if self.pid != -1 else ""
        return f"{self.kind[0]}{ret}{self.kind[1:]} {self.where}{pid}"


def split_target(text: str, what: str) -> tuple[str, int]:
    """``func``, ``func+off`` or ``off`` (decimal or 0x) as (function or "", offset)."""
    if re.fullmatch(_NUMBER, text):
        return "", int(text, 0)
    m = _TARGET.fullmatch(text)
    if m is None:
        raise LoaderError(f"{what}: expected FUNCTION, FUNCTION+OFFSET or OFFSET, found "
                          f"{text!r}")
    return m.group(1), int(m.group(2) or "0", 0)


def syscall_function(name: str, kallsyms: Path = KALLSYMS, machine: str | None = None) -> str:
    """The kernel function a ``ksyscall/name`` probes: the arch wrapper ``__x64_sys_name``
    where the kernel has syscall wrappers (``__x64_sys_bpf`` in kallsyms), else
    ``__se_sys_name`` (libbpf's choice)."""
    machine = machine or platform.machine()
    prefix = SYSCALL_PREFIX.get(machine)
    if prefix is None:
        raise LoaderError(f"ksyscall/{name}: no syscall wrapper prefix known for {machine!r} "
                          f"(known: {', '.join(SYSCALL_PREFIX)})")
    try:
        text = kallsyms.read_text()
    except OSError as exc:
        raise LoaderError(f"ksyscall/{name}: cannot read {kallsyms}: {exc.strerror}",
                          exc.errno) from exc
    wrapped = re.search(rf" {prefix}bpf$", text, re.MULTILINE) is not None
    return f"{prefix}{name}" if wrapped else f"__se_sys_{name}"


def pmu_config(kind: str, retprobe: bool, root: Path | None = None) -> tuple[int, int]:
    """(perf type, config) of the ``kind`` PMU: ``type`` from its sysfs directory, the
    retprobe bit from ``format/retprobe`` (``config:N``). OSError where it is missing."""
    base = (root or PMU_ROOT) / kind
    pmu_type = int((base / "type").read_text())
    if not retprobe:
        return pmu_type, 0
    fmt_path = base / "format" / "retprobe"
    fmt = fmt_path.read_text().strip()
    field, _, bit = fmt.partition(":")
    if field != "config" or not bit.isdigit():
        raise LoaderError(f"{fmt_path}: expected 'config:BIT', found {fmt!r}")
    return pmu_type, 1 << int(bit)


def plan_probe(kind: str, target: str, offset: int, retprobe: bool, pid: int = -1,
               *, pmu_root: Path | None = None, tracing: Path | None = None) -> ProbePlan:
    """How to open this probe here: the PMU if the kernel has it, else tracefs's
    ``{kind}_events``; neither: a LoaderError naming both places looked at and why."""
    plan = ProbePlan(kind, target, offset, retprobe, pid)
    try:
        pmu_type, config = pmu_config(kind, retprobe, pmu_root)
    except OSError as exc:
        no_pmu = f"no {kind} PMU ({exc.filename}: {exc.strerror})"
    else:
        return ProbePlan(kind, target, offset, retprobe, pid, pmu_type, config)
    try:
        root = tracing or tracefs.tracefs_root()
    except LoaderError as exc:
        no_legacy = f"no tracefs ({exc})"
    else:
        events = root / f"{kind}_events"
        if events.is_file():
            name = f"{kind}s/ebpfwire_{os.getpid()}_{next(_events)}"
            return ProbePlan(kind, target, offset, retprobe, pid, events_file=events,
                             event=name)
        no_legacy = f"no legacy {events.name} ({events}: {os.strerror(errno.ENOENT)})"
    raise LoaderError(f"cannot attach {plan.describe()}: {no_pmu}; {no_legacy}", errno.ENOENT)


def _write_event(plan: ProbePlan, line: str) -> None:
    try:
        fd = os.open(plan.events_file, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line.encode() + b"\n")
        finally:
            os.close(fd)
    except OSError as exc:
        raise LoaderError(f"writing {line!r} to {plan.events_file}: {exc.strerror}",
                          exc.errno) from exc


def open_probe(plan: ProbePlan) -> tuple[int, Callable[[], None] | None]:
    """The perf event fd of ``plan``, and for a legacy event what removes it (after the fd
    is closed)."""
    cpu = 0 if plan.pid == -1 else -1  # every process: one event serves all CPUs
    try:
        if plan.pmu_type is not None:
            name = ctypes.create_string_buffer(plan.target.encode())
            return syscalls.perf_event_open(
                plan.pmu_type, plan.config, cpu, plan.pid, config1=ctypes.addressof(name),
                config2=plan.offset,
            ), None
        _write_event(plan, plan.event_line)

        def remove() -> None:
            _write_event(plan, f"-:{plan.event}")

        try:
            group, name_ = plan.event.split("/")
            tp_id = tracefs.tracepoint_id(group, name_, plan.events_file.parent)
            return syscalls.perf_event_open(syscalls.PERF_TYPE_TRACEPOINT, tp_id, cpu,
                                            plan.pid), remove
        except BaseException:
            remove()
            raise
    except syscalls.BpfSyscallError as exc:
        raise LoaderError(f"attaching {plan.describe()}: {exc}", exc.errno) from exc
