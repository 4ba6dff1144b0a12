"""The high-level :class:`Monitor`: the bundled object opened, loaded and attached through
the public object API (:class:`~ebpfwire.kernel.objects.Object`), events read."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from ebpfwire import machine
from ebpfwire.kernel import perf, syscalls
from ebpfwire.kernel.config import build_config, cached_kernel_offsets
from ebpfwire.kernel.externs import kernel_version
from ebpfwire.kernel.objects import Object, Program
from ebpfwire.kernel.ringbuf import RingBufReader, default_ring_bytes, kernel_has_ringbuf
from ebpfwire.wire.names import syscall_number

# user-facing event names served by one program group of the object
EVENT_ALIASES = {
    "tcp_connect": "tcp",
    "tcp_accept": "tcp",
    "tcp_connect_v6": "tcp",
    "tcp_accept_v6": "tcp",
}
# the programs that keep the `traced` map (the pid filter's process tree): not an event
TREE_GROUP = "tree"
# the raw_syscalls dispatchers sys__enter / sys__exit: not an event either
DISPATCH_GROUP = "sys"
INTERNAL_GROUPS = {TREE_GROUP, DISPATCH_GROUP}
# the events the dispatchers serve (their handlers), by the event id of the wire format
# (x86-64 syscall numbers: the bundled object traces x86-64 only); selecting one sets its
# id in the object's `events_on` map. The "umount" handlers serve umount2(2), which the
# kernel defines as SYSCALL_DEFINE2(umount, ...).
SYSCALL_EVENTS = {
    group: syscall_number("umount2" if group == "umount" else group, "x86_64")
    for group in ("open", "close", "socket", "connect", "accept", "bind", "listen", "execve",
                  "rmdir", "unlink", "chown", "ptrace", "setuid", "setgid", "mount", "umount",
                  "openat", "fchownat", "unlinkat", "execveat")
}
PID_MAX = 0xFFFFFFFF
# the package's data files (a directory: the loader reads objects by path; importlib's
# resources would cost every start ~4 ms of imports to say the same)
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


TRANSPORTS = ("perf", "ringbuf")
HOOKS = ("syscalls", "raw")
SYSCALL_TRACEPOINTS = "tracepoint/syscalls/"
SYSCALL_ENTRY_TRACEPOINTS = SYSCALL_TRACEPOINTS + "sys_enter_"
# the exit handlers on per-syscall tracepoints read the registers with bpf_task_pt_regs
# (Linux 5.15); the raw dispatchers are handed them by the kernel
TASK_PT_REGS_KERNEL = (5 << 16) + (15 << 8)


def default_transport() -> str:
    """"ringbuf" where the kernel has BPF ring buffers, else "perf": both lose nothing the
    reader can keep (docs/benchmarks.md), the ring buffer gives one global order."""
    return "ringbuf" if kernel_has_ringbuf() else "perf"


def bundled_object(transport: str = "perf") -> Path:
    """Path of the pre-compiled object shipped with the package for ``transport``:
    ``monitor.bpf.o`` (perf array) or ``monitor-ringbuf.bpf.o`` (ring buffer), built from
    the same source."""
    name = "monitor.bpf.o" if transport == "perf" else f"monitor-{transport}.bpf.o"
    return DATA_DIR / name


def event_group(program: str) -> str:
    """The event group a program of the bundled object serves: its name up to ``__``."""
    return program.split("__", 1)[0]


def select_events(obj: Object, events: Iterable[str] | None) -> set[str]:
    """The event groups named by ``events`` (all when None); unknown names are a ValueError."""
    known = {event_group(name) for name in obj.programs} | set(SYSCALL_EVENTS)
    known -= INTERNAL_GROUPS
    if events is None:
        return known
    groups: set[str] = set()
    for name in events:
        group = EVENT_ALIASES.get(name, name)
        if group not in known:
            names = ", ".join(sorted(known | set(EVENT_ALIASES)))
            raise ValueError(f"unknown event {name!r}; known events: {names}")
        groups.add(group)
    return groups


def per_syscall(program: Program) -> bool:
    """A handler on its own syscall's tracepoint (syscalls/sys_enter_NAME, sys_exit_NAME)."""
    return program.section.startswith(SYSCALL_TRACEPOINTS)


def choose_hooks(obj: Object, groups: set[str], hooks: str | None,
                 kernel: int | None = None) -> str:
    """"syscalls" (each selected syscall's own tracepoints: nothing runs for the others)
    or "raw" (the raw_syscalls dispatchers: one program on every syscall of the machine).
    By default the former, where the object has them and the kernel (``kernel``: its
    LINUX_KERNEL_VERSION, default this one's) has what their exit handlers read the
    arguments with: every syscall of the machine pays +45 ns for all 22 of them against
    +170 for the dispatchers; their price is at detach, 40-80 ms each (docs/benchmarks.md,
    "Per-syscall hooks for any selection")."""
    kernel = kernel_version() if kernel is None else kernel
    too_old = 0 < kernel < TASK_PT_REGS_KERNEL  # a version that does not parse: assume new
    hooked = [p for p in obj.programs.values() if per_syscall(p) and event_group(p.name) in groups]
    if hooks is None:
        return "syscalls" if hooked and not too_old else "raw"
    if hooks not in HOOKS:
        raise ValueError(f"hooks must be one of {', '.join(HOOKS)}, got {hooks!r}")
    if hooks == "syscalls" and too_old:
        raise ValueError("hooks='syscalls' reads each syscall's arguments at its exit with "
                         "bpf_task_pt_regs (Linux 5.15); this kernel is "
                         f"{kernel >> 16}.{(kernel >> 8) & 0xFF}: hooks='raw'")
    if hooks == "syscalls" and groups & set(SYSCALL_EVENTS) and not hooked:
        raise ValueError(f"{obj.spec.origin} has no per-syscall tracepoint programs: "
                         "hooks='raw'")
    return hooks


def select_programs(obj: Object, groups: set[str], tree: bool = False,
                    hooks: str = "raw") -> list[Program]:
    """The programs serving ``groups``, in attach order.

    Syscall events come from their per-syscall tracepoint programs (``hooks="syscalls"``)
    or from the two dispatchers (``"raw"``). With ``tree`` (a pid filter) the process-tree
    programs come too: fork first (no child is missed), exit last: the programs of a raw
    tracepoint run in attach order, and ``do_exit__sched`` must write the exit event while
    the process is still in the tree.
    """
    selected = [p for p in obj.programs.values() if event_group(p.name) in groups]
    programs = [p for p in selected if hooks == "syscalls" or not per_syscall(p)]
    internal = {p.name: p for p in obj.programs.values() if event_group(p.name) in INTERNAL_GROUPS}
    if hooks == "raw" and groups & set(SYSCALL_EVENTS):
        # most events are read at their syscall's exit alone: the entry dispatcher runs
        # only for those with an entry handler (exec), as their tracepoints would
        read_at_entry = any(p.section.startswith(SYSCALL_ENTRY_TRACEPOINTS) for p in selected)
        programs = [*([internal["sys__enter"]] if read_at_entry else []), internal["sys__exit"],
                    *programs]
    if tree:
        programs = [internal["tree__fork"], *programs, internal["tree__exit"]]
    return programs


def descendants(pid: int, proc: str = "/proc") -> set[int]:
    """``pid`` and every living process below it, from each process's ppid in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone since the listing
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class _Soon(threading.Thread):
    """``func()`` run on a thread of its own from now on, its value (or exception) taken
    by :meth:`result`."""

    def __init__(self, func: Callable[[], dict[str, int]]) -> None:
        super().__init__(name="ebpfwire-offsets", daemon=True)
        self._func = func
        self._value: dict[str, int] | None = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._value = self._func()
        except BaseException as exc:  # raised in the caller's thread by result()
            self._error = exc

    def result(self) -> dict[str, int]:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


class Monitor:
    """The bundled system monitor, loaded and attached; events come out of ``reader``.

    ``events`` selects program groups (default: all), ``pid`` keeps only events of that
    process and all its descendants (like ``strace -f``: living ones and every process
    forked below it while the monitor runs), ``comm`` only tasks whose current name
    (``comm``, at most 15 bytes) equals it, ``ignore_self`` drops our own process's events,
    ``transport`` is "perf" (the perf array of KubeArmor) or "ringbuf" (one BPF ring
    buffer for all CPUs, events in one global order), by default the ring buffer where
    the kernel has it (:func:`default_transport`); both hand the reader the same sample
    bytes. ``page_count`` sizes each CPU's perf ring (default ``perf.DEFAULT_PAGE_COUNT``;
    given without a transport, it asks for perf);
    ``ring_bytes`` sizes either transport in bytes (per CPU for perf, the whole ring for
    ringbuf, default 4 MiB per online CPU and at least 8 MiB), rounded up to a
    power-of-two number of pages. ``hooks`` is "syscalls" (each selected syscall's own
    tracepoints: an untraced syscall runs no program) or "raw" (the two raw_syscalls
    dispatchers, quicker to detach), by default per :func:`choose_hooks`.
    ``close()`` (or leaving the ``with`` block) removes everything from the kernel.
    """

    def __init__(
        self,
        events: Iterable[str] | None = None,
        pid: int | None = None,
        ignore_self: bool = True,
        page_count: int | None = None,
        object_path: str | Path | None = None,
        *,
        comm: str | bytes | None = None,
        transport: str | None = None,
        ring_bytes: int | None = None,
        hooks: str | None = None,
    ) -> None:
        if pid is not None and not 0 < pid <= PID_MAX:
            raise ValueError(f"pid must be between 1 and {PID_MAX}, got {pid}")
        if pid is not None:
            machine.require_process(pid)
        if transport is not None and transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        if ring_bytes is not None and (ring_bytes <= 0 or ring_bytes > 1 << 30):
            raise ValueError(f"ring_bytes must be between 1 and {1 << 30}, got {ring_bytes}")
        if ring_bytes is not None and page_count is not None:
            raise ValueError("give page_count or ring_bytes, not both")
        # page_count sizes perf rings: given alone, it asks for them
        transport = transport or ("perf" if page_count is not None else default_transport())
        self.transport = transport
        self.ring_bytes = perf.PAGE_SIZE * perf.ring_pages(
            ring_bytes or default_ring_bytes(len(machine.online_cpus())))
        if transport == "perf" and ring_bytes is not None:
            page_count = self.ring_bytes // perf.PAGE_SIZE
        # the kernel's offsets from here on, beside the object's parsing: reading and hashing
        # the kernel's BTF for the cache release the GIL
        self._offsets = _Soon(cached_kernel_offsets)
        self.object = Object.open(object_path or bundled_object(transport))
        self.object.require_maps(("events", "config"))
        self.events = select_events(self.object, events)
        self.hooks = choose_hooks(self.object, self.events, hooks)
        self.programs = select_programs(self.object, self.events, tree=pid is not None,
                                        hooks=self.hooks)
        for spec in self.object.maps.values():
            if spec.type == syscalls.BPF_MAP_TYPE_RINGBUF:
                spec.max_entries = self.ring_bytes
        self.map_fds, self.prog_fds = self.object.map_fds, self.object.prog_fds
        self.reader: perf.PerfReader | RingBufReader | None = None
        self._traced = None  # the pid filter's map, as tree_alive() reads it
        self.closed = False
        names = [p.name for p in self.programs]
        try:
            config = self.object.load(
                names,
                while_loading=lambda: self._build_config(
                    pid or 0, os.getpid() if ignore_self else 0, comm),
            )
            for group in self.events & set(SYSCALL_EVENTS):
                syscalls.map_update(
                    self.map_fds["events_on"], SYSCALL_EVENTS[group].to_bytes(4, "little"),
                    b"\1\0\0\0",
                )
            syscalls.map_update(self.map_fds["config"], b"\0\0\0\0", config)
            attached = 0
            if pid is not None:
                # the fork program runs before /proc is scanned: a process forked meanwhile
                # by a process already in the map is added by the kernel
                self._trace(pid)
                self.object.attach(names[:1])  # tree__fork, by select_programs
                attached = 1
                for tgid in descendants(pid):
                    self._trace(tgid)
            self.reader = self._open_reader(page_count)
            self.object.attach(names[attached:])
        except BaseException:  # KeyboardInterrupt too: nothing may stay in the kernel
            self.close()
            raise

    def _trace(self, tgid: int) -> None:
        syscalls.map_update(self.map_fds["traced"], tgid.to_bytes(4, "little"), b"\1")

    def tree_alive(self) -> bool:
        """Whether a process of the ``pid`` filter's tree still runs (its end ends a
        recording, as strace -f ends). The exit program removes each process as it exits;
        one it never saw exit (gone before the program was attached) is checked in /proc."""
        from ebpfwire.kernel.maps import Map, pids_running  # here: only a pid filter asks

        if self._traced is None:
            self._traced = Map.from_fd(self.map_fds["traced"])
        return pids_running(self._traced)

    @property
    def events_map_fd(self) -> int:
        """The map the programs write to: the PERF_EVENT_ARRAY (what :class:`PerfReader`
        fills) or the RINGBUF."""
        return self.map_fds["events"]

    def _open_reader(self, page_count: int | None) -> perf.PerfReader | RingBufReader:
        if self.transport == "ringbuf":
            return self.object.ring_buffer("events", drops="drops")
        return self.object.perf_buffer("events", page_count or perf.DEFAULT_PAGE_COUNT,
                                       drops="drops")

    def _build_config(self, filter_tgid: int, ignore_tgid: int, comm: str | bytes | None) -> bytes:
        return build_config(self._offsets.result(), filter_tgid, ignore_tgid, comm=comm)

    def stop(self) -> None:
        """Detach the programs: nothing more is written, the reader still holds what was
        (read it until a batch comes back empty for every event and loss made)."""
        self.object.detach()

    def close(self) -> None:
        """Detach, then close the reader, programs and maps; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.object.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
