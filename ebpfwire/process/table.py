"""Who did it: the processes of a capture, followed through their events in ``ts`` order.

An event names its process only by pid and comm. The table remembers, per process (keyed
by host tgid, one entry per life of a pid), the programs it ran (from execve/execveat and
security_bprm_check, or from the capture's snapshot for processes older than the
recording), its parent, start, exit status, cwd (where the layout carries it), comms and
container, so that any event can be answered with "which program, started by which".
What is not known is not made up: a process never seen exec'ing is named by its comm and
marked so; a capture without context records gives comm and namespace ids only.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.process.procfs import ARGV_BYTES_MAX, command_line
from ebpfwire.wire import names
from ebpfwire.wire.catalogue import DO_EXIT, SECURITY_BPRM_CHECK, arg_index
from ebpfwire.wire.events import Event

#: Where security_bprm_check's path is in the walker's flat (tag, value) list.
_BPRM_PATH = 2 * arg_index("security_bprm_check", "path") + 1
DEFAULT_RETAIN_NS = 30_000_000_000
"""How long (in event time) an exited process stays answerable: events of its children
and late events merged from other CPUs still find it. KubeArmor keeps 5 s."""

MAX_PROCESSES = 1 << 16
"""Processes a table keeps in each of its three sets (in the table; exited ones, within the
retention window if it has one; lives whose exit was lost, kept for a tree): past it the
least recently seen (the oldest exit, the oldest replaced life) is forgotten and counted
(``evicted``), so processes that never exit, or a storm of exits, cannot fill the memory,
whether the table answers ``decode`` or draws ``ps``'s tree. A forgotten process met again
is a new one named by its comm. (Least recently seen by the clock algorithm: a process
with events since the last look is passed over once.)"""

#: Where a program's name comes from, best first.
SOURCES = ("exec", "snapshot", "fork", "comm")

CUT = "..."
"""The last element of an argv that was cut: the wire's mark (a STR_ARR_T of 20 arguments
or more ends so), kept for the bound below so that every output shows it alike."""


def bounded_argv(argv: Sequence[str], cut: bool = False) -> tuple[str, ...]:
    """An argv as a program keeps it: at most ARGV_BYTES_MAX bytes of its command line (the
    recorder's bound, :func:`~ebpfwire.process.procfs.command_line`), then :data:`CUT` when
    it was cut here or (``cut``) by the recorder. Every answer carries its program's argv,
    so an old or crafted capture's megabytes of arguments must not reach them."""
    # a character is at most 4 bytes of UTF-8 (an escaped byte 1): most argvs stop here
    if 4 * sum(map(len, argv)) + len(argv) > ARGV_BYTES_MAX:
        argv, longer = command_line(b"".join(arg.encode("utf-8", "surrogateescape") + b"\0"
                                             for arg in argv))
        cut = cut or longer
    return (*argv, CUT) if cut else tuple(argv)


@dataclass(slots=True, eq=False)
class Program:
    """One program a process ran, from one exec to the next.

    ``source`` says how it is known: ``exec`` (seen exec'ing; ``exe`` is the path the
    kernel resolved where the capture has it, else the exec's filename), ``snapshot`` (the
    process predates the recording), ``fork`` (never seen exec'ing, but it carries its
    parent's comm: a forked copy of the parent's program) or ``comm`` (nothing known:
    ``exe`` is empty and only the comm names it).
    """

    exe: str
    argv: tuple[str, ...]
    source: str
    since: int
    comm: str
    # compared and hashed by identity: a program is one run of one process (and a key of
    # the answers kept by enrich.Enricher)

    @property
    def known(self) -> bool:
        return self.source != "comm"

    @property
    def name(self) -> str:
        """The executable's path, or the comm when the path is not known."""
        return self.exe or self.comm

    @property
    def command(self) -> str:
        """The name and the arguments after argv[0], as KubeArmor's Source shows them."""
        return " ".join((self.name, *self.argv[1:]))


@dataclass(slots=True)
class ExecRequest:
    """An execve/execveat entry waiting for its result (the exit event)."""

    filename: str
    argv: tuple[str, ...]
    ts: int
    event_id: int
    resolved: str = ""


@dataclass(slots=True, eq=False)
class Process:
    """One life of a host pid: from its first sign (snapshot or event) to its do_exit."""

    host_pid: int
    host_ppid: int
    pid: int
    uid: int
    pid_ns: int            # as the events carry it (0: the host's), or /proc's inode
    mnt_ns: int
    start_ns: int          # snapshot start time, else the first event's ts
    programs: list[Program]
    comms: tuple[str, ...] = ()    # in the order first seen (most processes have one)
    cwd: str = ""
    container_id: str | None = None    # None: not known
    exit_ns: int | None = None
    exit_status: int | None = None     # raw wait(2) status of do_exit
    events: int = 0
    from_snapshot: bool = False
    pending: ExecRequest | None = None
    checked: int = -1      # its events when the table last looked for one to forget

    @property
    def program(self) -> Program:
        """The program it runs now (the last one)."""
        return self.programs[-1]

    def program_at(self, ts: int) -> Program:
        """The program it ran at ``ts`` (its first one for a ts before all of them)."""
        index = bisect_right([p.since for p in self.programs], ts) - 1
        return self.programs[max(index, 0)]

    @property
    def exited(self) -> bool:
        return self.exit_ns is not None


class EventContext(NamedTuple):
    """The answer for one event: its process and parent, and their programs, then."""

    process: Process
    program: Program
    parent: Process | None
    parent_program: Program | None
    container: ContainerInfo | None
    exec_request: ExecRequest | None   # on an execve/execveat exit: what was exec'd

    @property
    def exe(self) -> str:
        return self.program.name

    @property
    def argv(self) -> tuple[str, ...]:
        return self.program.argv

    @property
    def parent_exe(self) -> str:
        return self.parent_program.name if self.parent_program is not None else ""

    @property
    def container_id(self) -> str | None:
        """The container id ("" for the host), None when the capture does not say."""
        if self.container is not None:
            return self.container.container_id
        return self.process.container_id


def _absolute(path: str, cwd: str) -> str:
    if not path or path.startswith("/") or not cwd.startswith("/"):
        return path
    return os.path.normpath(os.path.join(cwd, path))


class ProcessTable:
    """Process state built from a capture's records, consumed in ``ts`` order.

    Feed it the snapshot (:meth:`add_process`), the container records
    (:meth:`add_container`), every event (:meth:`update`, which answers for that event)
    and the losses (:meth:`lost`). Exited processes are dropped ``retain_ns`` of event time
    after their exit (None keeps them, for a whole-capture tree), and at most
    ``max_processes`` are kept in each set (see :data:`MAX_PROCESSES`).
    """

    def __init__(self, retain_ns: int | None = DEFAULT_RETAIN_NS, arch: str = "x86_64",
                 max_processes: int = MAX_PROCESSES):
        self.retain_ns = retain_ns
        self.max_processes = max_processes
        self._order: deque[Process] = deque()   # by arrival, for forgetting (_evict)
        self._live: dict[int, Process] = {}
        self._exited: deque[Process] = deque()
        self._replaced: deque[Process] = deque()
        self._waiting: set[Process] = set()   # those with an exec request pending
        self.containers: dict[tuple[int, int], ContainerInfo] = {}
        self.lost_events = 0
        self.dropped = 0
        self.evicted = 0   # forgotten before their time, to keep max_processes
        #: Times the live processes passed max_processes: which one goes depends on every
        #: event (the clock below), so a caller that gave only some must know.
        self.crowded = 0
        #: Called with a host pid whose answers changed (its life, parent, program, exit), or
        #: None when every answer may have (a container record): for caches of answers.
        self.on_change: Callable[[int | None], None] | None = None
        #: Called with each process the bound makes the table forget (for a tree's nodes).
        self.on_forget: Callable[[Process], None] | None = None
        #: The comms and cwds of many processes, one string each (bounded, see _shared).
        self._strings: dict[str, str] = {}
        self._exec_ids = frozenset(
            nr for nr in (names.syscall_number("execve", arch),
                          names.syscall_number("execveat", arch)) if nr is not None)

    # -- input

    def add_process(self, info: ProcessInfo) -> Process:
        """A snapshot entry: a process that was running when the recording started."""
        argv = bounded_argv(info.argv, info.cut)
        old = self._live.get(info.host_pid)
        if old is not None and not old.exited and not old.from_snapshot:
            # already met through its events: keep what they said, fill in the rest
            if not old.program.known and info.exe:
                old.programs[0] = Program(info.exe, argv, "snapshot",
                                          old.programs[0].since, info.comm)
            old.start_ns = min(old.start_ns, info.start_ns)
            old.cwd = old.cwd or info.cwd
            if old.container_id is None:
                old.container_id = info.container_id
            old.from_snapshot = True
            self._changed(old.host_pid)
            return old
        if info.exe:
            program = Program(info.exe, argv, "snapshot", info.start_ns, info.comm)
        else:  # a kernel thread or zombie: named by its comm
            program = Program("", argv, "comm", info.start_ns, info.comm)
        process = Process(info.host_pid, info.host_ppid, info.pid, info.uid, info.pid_ns,
                          info.mnt_ns, info.start_ns, [program], (self._shared(info.comm),),
                          self._shared(info.cwd), info.container_id, from_snapshot=True)
        self._insert(process)
        return process

    def add_container(self, info: ContainerInfo) -> None:
        """A container record: the container of one (pid_id, mnt_id) pair of the events."""
        self.containers[(info.pid_ns, info.mnt_ns)] = info
        self._changed(None)

    def feed(self, item: Event | ProcessInfo | ContainerInfo | int) -> EventContext | None:
        """Take one item of :func:`ebpfwire.process.tree.capture_items` (an event, a snapshot
        entry, a container record or a lost count); the answer for an event, else None."""
        if isinstance(item, Event):
            return self.update(item)
        if isinstance(item, ProcessInfo):
            self.add_process(item)
        elif isinstance(item, ContainerInfo):
            self.add_container(item)
        else:
            self.lost(item)
        return None

    def lost(self, count: int) -> None:
        """Events were lost here: exec results may never come, so pending ones are dropped."""
        self.lost_events += count
        for process in self._waiting:   # not every live process: a loss costs O(1) each
            process.pending = None
        self._waiting.clear()

    @property
    def state_event_ids(self) -> frozenset[int]:
        """The event ids that change a process's state: execve/execveat (entry and result),
        security_bprm_check and do_exit."""
        return self._exec_ids | {SECURITY_BPRM_CHECK, DO_EXIT}

    # -- lookups

    def get(self, host_pid: int) -> Process | None:
        """The latest life of a host pid still in the table."""
        return self._live.get(host_pid)

    def processes(self) -> Iterator[Process]:
        """Every process still in the table (live ones, then those kept after exit)."""
        yield from self._live.values()
        live = self._live
        for process in self._exited:
            if live.get(process.host_pid) is not process:
                yield process
        yield from self._replaced

    def container(self, pid_id: int, mnt_id: int) -> ContainerInfo | None:
        return self.containers.get((pid_id, mnt_id))

    # -- the event stream

    def _changed(self, host_pid: int | None) -> None:
        """What the table answers for ``host_pid`` (None: for every process) changed."""
        if self.on_change is not None:
            self.on_change(host_pid)

    def _shared(self, text: str) -> str:
        """One string for equal comms and cwds: thousands of processes named alike hold it
        once. The dict is cleared when full, so crafted names cannot grow it."""
        strings = self._strings
        shared = strings.get(text)
        if shared is None:
            if len(strings) >= self.max_processes:
                strings.clear()
            shared = strings[text] = text
        return shared

    def _new_process(self, ts: int, pid_id: int, mnt_id: int, host_ppid: int, host_pid: int,
                     pid: int, uid: int, comm: str, cwd: str) -> Process:
        comm = self._shared(comm)
        parent = self._live.get(host_ppid)
        program = Program("", (), "comm", ts, comm)
        if parent is not None and not parent.exited:
            inherited = parent.program
            if inherited.known and comm == inherited.comm:
                program = Program(inherited.exe, inherited.argv, "fork", ts, comm)
        process = Process(host_pid, host_ppid, pid, uid, pid_id, mnt_id, ts, [program],
                          (comm,), self._shared(cwd) if cwd else "")
        self._insert(process)
        return process

    def _insert(self, process: Process) -> None:
        live = self._live
        live[process.host_pid] = process
        self._changed(process.host_pid)
        order = self._order
        order.append(process)
        if len(live) > self.max_processes:
            self._evict()
        elif len(order) > 2 * self.max_processes:   # replaced and dropped ones: amortised
            self._order = deque(p for p in order if live.get(p.host_pid) is p)

    def _evict(self) -> None:
        """Forget the process least recently seen (the clock algorithm: one that had events
        since the last look goes round once more)."""
        live, order = self._live, self._order
        self.crowded += 1
        while True:
            process = order.popleft()
            if live.get(process.host_pid) is not process:
                continue
            if process.events != process.checked:
                process.checked = process.events
                order.append(process)
                continue
            self._forget(process)
            if self.retain_ns is not None or process.exit_ns is None:
                self._bounded(process)   # (a tree keeps an exited one among its exited)
            return

    def _bounded(self, process: Process) -> None:
        """``process`` was forgotten to keep the bound: counted, and told."""
        self.evicted += 1
        if self.on_forget is not None:
            self.on_forget(process)

    def _forget(self, process: Process) -> bool:
        """Take a process out of the table; False when it was not in it any more."""
        if self._live.get(process.host_pid) is not process:
            return False
        del self._live[process.host_pid]
        self._waiting.discard(process)
        self._changed(process.host_pid)
        return True

    def _reused(self, process: Process) -> bool:
        """For an event naming another parent: True when it cannot be from this process.

        The parent of a process changes only when that parent exits (reparenting): a new
        parent while the recorded one lives means this pid's exit was lost, and it is
        another process now.
        """
        parent = self._live.get(process.host_ppid)
        return parent is not None and not parent.exited and process.host_ppid != 0

    def _drop_expired(self, now: int) -> None:
        retain, exited = self.retain_ns, self._exited
        while exited and exited[0].exit_ns + retain < now:  # type: ignore[operator]
            self._forget(exited.popleft())
            self.dropped += 1

    def update(self, event: Event) -> EventContext:
        """Apply one decoded event (in ``ts`` order) and answer for it (:meth:`observe`)."""
        # unpacked in the order of layouts.CLASSIC_NAMES, which tests/test_header_fields.py
        # holds: one unpack costs a third of picking the fields by their named positions
        (ts, pid_id, mnt_id, host_ppid, host_pid, _, pid, uid, event_id, argnum, retval, comm,
         extra, _, _) = event._header
        cwd = extra.get("cwd") if extra else None
        return self.observe(ts, pid_id, mnt_id, host_ppid, host_pid, pid, uid, event_id,
                            argnum, retval, comm, cwd if type(cwd) is str else "", event.flat)

    def observe(self, ts: int, pid_id: int, mnt_id: int, host_ppid: int, host_pid: int,
                pid: int, uid: int, event_id: int, argnum: int, retval: int, comm: str,
                cwd: str, flat: list) -> EventContext:
        """Apply one event, given as its header fields and the walker's flat list of its
        arguments (read only for an exec's entry and security_bprm_check), and answer for it.

        The answer is the state at the event: an execve/execveat entry is answered with
        the program that called exec (it is still running), the exec's exit and the
        security_bprm_check event with the new program.
        """
        exited = self._exited
        if exited and self.retain_ns is not None and exited[0].exit_ns + self.retain_ns < ts:
            self._drop_expired(ts)
        process = self._live.get(host_pid)
        if process is None:
            process = self._new_process(ts, pid_id, mnt_id, host_ppid, host_pid, pid, uid,
                                        comm, cwd)
        elif process.exit_ns is not None or (host_ppid != process.host_ppid
                                             and self._reused(process)):
            if process.exit_ns is None and self.retain_ns is None:
                self._replaced.append(process)   # its exit was lost; keep it for the tree
                if len(self._replaced) > self.max_processes:
                    self._bounded(self._replaced.popleft())
            self._waiting.discard(process)
            process = self._new_process(ts, pid_id, mnt_id, host_ppid, host_pid, pid, uid,
                                        comm, cwd)
        else:
            if host_ppid != process.host_ppid:   # reparented: another parent answers now
                process.host_ppid = host_ppid
                self._changed(host_pid)
            process.pid_ns, process.mnt_ns = pid_id, mnt_id
        process.events += 1
        if comm not in process.comms:
            process.comms += (self._shared(comm),)
        if cwd and cwd != process.cwd:
            process.cwd = self._shared(cwd)
        answer_program = process.programs[-1]
        request = None
        if event_id in self._exec_ids:
            if argnum:      # the entry: filename and argv (the calling program answers)
                self._exec_entry(process, ts, event_id, flat)
            else:           # the exit: the result
                request = process.pending
                self.exec_result(process, ts, retval, comm)
                answer_program = process.programs[-1]
        elif event_id == SECURITY_BPRM_CHECK:
            path = flat[_BPRM_PATH] if len(flat) > _BPRM_PATH else None
            self.bprm_check(process, ts, path if type(path) is str else "", comm)
            answer_program = process.programs[-1]
        elif event_id == DO_EXIT:
            self.exit(process, ts, retval)
        parent = self.parent(process)
        parent_program = parent.programs[-1] if parent is not None else None
        container = self.containers.get((pid_id, mnt_id)) if self.containers else None
        return EventContext(process, answer_program, parent, parent_program, container, request)

    def parent(self, process: Process) -> Process | None:
        """The parent of a process in the table, as :meth:`update` answers it."""
        parent = self._live.get(process.host_ppid)
        if parent is not None and parent.start_ns > process.start_ns:
            return None           # that pid is a younger process now, not the parent
        return parent

    def _exec_entry(self, process: Process, ts: int, event_id: int, flat: list) -> None:
        filename, argv = "", ()
        for value in flat[1::2]:     # the first string is the path, the first list argv
            if type(value) is str:
                filename = filename or value
            elif isinstance(value, list) and not argv:
                argv = value
        process.pending = ExecRequest(_absolute(filename, process.cwd), bounded_argv(argv),
                                      ts, event_id)
        self._waiting.add(process)

    def bprm_check(self, process: Process, ts: int, path: str, comm: str) -> None:
        """security_bprm_check of ``path``: the kernel is running the new program now, the
        exec succeeded (the state part of :meth:`update`, for a caller without an Event)."""
        resolved = _absolute(path, process.cwd)
        request = process.pending
        if request is not None:
            request.resolved = resolved
            exe, argv = resolved or request.filename, request.argv
        else:     # its entry was not recorded (lost, or filtered out)
            exe, argv = resolved, ()
        self._start_program(process, Program(exe, argv, "exec", ts, comm))

    def exec_result(self, process: Process, ts: int, retval: int, comm: str) -> None:
        """An execve/execveat exit (the state part of :meth:`update`)."""
        request, process.pending = process.pending, None
        self._waiting.discard(process)
        if retval != 0 or request is None:
            return               # failed: the old program goes on (or nothing to say)
        current = process.program
        if current.source == "exec" and current.since >= request.ts:
            return               # security_bprm_check already started it
        self._start_program(process, Program(request.filename, request.argv, "exec",
                                             ts, comm))

    def exit(self, process: Process, ts: int, status: int) -> None:
        """do_exit with its wait(2) status (the state part of :meth:`update`)."""
        process.exit_ns, process.exit_status = ts, status
        process.pending = None
        self._waiting.discard(process)
        exited = self._exited
        exited.append(process)
        self._changed(process.host_pid)
        if len(exited) > self.max_processes:
            oldest = exited.popleft()
            if self._forget(oldest) or self.retain_ns is None:   # a tree keeps all it has
                self._bounded(oldest)

    def _start_program(self, process: Process, program: Program) -> None:
        process.programs.append(program)
        self._changed(process.host_pid)
