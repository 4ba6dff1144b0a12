"""Who did it, on every line of ``decode``: the process's executable, its parent's and the
container, from a :class:`~ebpfwire.process.ProcessTable` fed the whole capture.

The table sees every event (filters only choose what is printed). Most events change no
process state, so they are read from their raw header (:meth:`Enricher.sample_fields`, no
:class:`~ebpfwire.events.Event` built) and get a JSON fragment cached per process; exec,
security_bprm_check and do_exit events, and a process's first event, go through
:meth:`Enricher.event` with their decoded Event. The JSON fields are added after the raw
event's own (docs/cli.md, "Process context"), so the raw shape is untouched.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from .argtypes import ArgType
from .context import ContainerInfo, ProcessInfo
from .events import Event
from .layouts import Layout
from .process import (
    DEFAULT_RETAIN_NS,
    DO_EXIT,
    SECURITY_BPRM_CHECK,
    EventContext,
    Process,
    ProcessTable,
    Program,
)
from .render import printable

_CACHE_LIMIT = 1 << 16   # entries per cache (texts, programs, fragments); cleared when full
_IDS = struct.Struct("<IIII").unpack   # pid_id, mnt_id, host_ppid, host_pid
_S32 = struct.Struct("<i").unpack_from
_STR = int(ArgType.STR_T)


def program_json(program: Program | None, argv: bool = True) -> dict[str, Any] | None:
    """A program as the JSON lines show it: exe (null when only the comm names it), argv
    (the process's own; a parent's is left out, as KubeArmor's ParentProcessName does, to
    keep lines short) and how it is known (``exec``, ``snapshot``, ``fork``, ``comm``)."""
    if program is None:
        return None
    if argv:
        return {"exe": program.exe or None, "argv": list(program.argv),
                "source": program.source}
    return {"exe": program.exe or None, "source": program.source}


def context_fields(program: Program | None, parent: Program | None,
                   container_id: str | None) -> str:
    """The fields an enriched JSON line ends with, as ``, "process": ...`` text."""
    return (', "process": ' + json.dumps(program_json(program))
            + ', "parent_process": ' + json.dumps(program_json(parent, argv=False))
            + ', "container_id": ' + json.dumps(container_id))


NO_CONTEXT = context_fields(None, None, None)
"""The fields of an event the table cannot place (a damaged header)."""


def _container_id(process: Process, container: ContainerInfo | None) -> str | None:
    if container is not None:
        return container.container_id
    return process.container_id


class Enricher:
    """The process context of one capture's events, in the form each output needs.

    :meth:`sample_fields` keeps, per (pid_id, mnt_id, host_ppid, host_pid) as the header
    has them, the fragment it gave last with what it was made of, and gives it again while
    the comm (and cwd) are the same, the table holds the same process and parent for those
    pids, neither has run another program since and no container record came (give the
    capture's context records to :meth:`feed`); the table is then not touched, so its
    per-process event counts leave those events out (decode does not show them).
    """

    def __init__(self, layout: Layout, arch: str, retain_ns: int | None = DEFAULT_RETAIN_NS):
        self.table = ProcessTable(retain_ns, arch)
        self._stateful = self.table.state_event_ids
        has_cwd = "cwd" in layout.extra_names
        # ts, the four ids as bytes (a cache key), event_id, argnum, retval, and comm with
        # cwd after it where the layout has one: at the same offsets in every layout
        self._head = struct.Struct(f"<Q16s12xIIq{96 if has_cwd else 16}s").unpack_from
        self._size = layout.size
        self._texts: dict[bytes, str] = {}
        # (exe, id(argv), source) -> (argv, the program's JSON with argv, without)
        self._programs: dict[tuple, tuple[tuple[str, ...], str, str]] = {}
        # the four ids -> (containers seen, comm and cwd, host pid, host ppid, process,
        # program, the table's entry for host ppid, parent, parent's program, fragment)
        self._fragments: dict[bytes, tuple] = {}
        self._containers = 0
        self._live_get = self.table._live.get   # table.get() without a call per event

    def feed(self, item: ProcessInfo | ContainerInfo) -> None:
        """A snapshot entry or container record of the capture."""
        if isinstance(item, ContainerInfo):
            self._containers += 1
        self.table.feed(item)

    def _text(self, raw: bytes) -> str:
        texts = self._texts
        if len(texts) >= _CACHE_LIMIT:
            texts.clear()
        text = texts[raw] = raw.partition(b"\0")[0].decode("utf-8", "surrogateescape")
        return text

    def _program(self, program: Program | None, argv: bool) -> str:
        if program is None:
            return "null"
        # forks share their parent's argv tuple: one entry serves them all
        key = (program.exe, id(program.argv), program.source)
        cached = self._programs.get(key)
        if cached is None or cached[0] is not program.argv:
            if len(self._programs) >= _CACHE_LIMIT:
                self._programs.clear()
            cached = self._programs[key] = (
                program.argv, json.dumps(program_json(program)),
                json.dumps(program_json(program, argv=False)))
        return cached[1] if argv else cached[2]

    def fields(self, program: Program | None, parent: Program | None,
               container_id: str | None) -> str:
        """:func:`context_fields`, with each program's JSON made once."""
        return (', "process": ' + self._program(program, True) + ', "parent_process": '
                + self._program(parent, False) + ', "container_id": '
                + ("null" if container_id is None else json.dumps(container_id)))

    def sample_fields(self, data: bytes) -> str | None:
        """The context fields of a raw sample, from its header (and, for
        security_bprm_check, its path); None when the sample must be decoded and given to
        :meth:`event_fields` (an exec's entry, a process not met before, another parent)."""
        try:
            ts, ids, event_id, argnum, retval, names = self._head(data)
        except struct.error:
            return None
        table = self.table
        stateful = event_id in self._stateful
        if not stateful:
            kept = self._fragments.get(ids)
            if kept is not None and kept[0] == self._containers and kept[1] == names:
                process, parent, get = kept[4], kept[7], self._live_get
                if (process.exit_ns is None and process.programs[-1] is kept[5]
                        and get(kept[2]) is process and get(kept[3]) is kept[6]
                        and (parent is None or parent.programs[-1] is kept[8])):
                    return kept[9]
        elif event_id == SECURITY_BPRM_CHECK:
            path = self._first_string(data) if argnum else None
            if path is None:
                return None
        elif event_id != DO_EXIT and argnum:
            return None            # an exec's entry: its filename and argv are needed
        texts = self._texts
        comm_raw, cwd_raw = names[:16], names[16:]
        comm = texts.get(comm_raw) or self._text(comm_raw)
        cwd = (texts.get(cwd_raw) or self._text(cwd_raw)) if cwd_raw else ""
        pid_id, mnt_id, host_ppid, host_pid = _IDS(ids)
        process = table.touch(ts, pid_id, mnt_id, host_ppid, host_pid, event_id, comm, cwd)
        if process is None:
            return None
        if stateful:
            if event_id == DO_EXIT:
                table.exit(process, ts, retval)
            elif event_id == SECURITY_BPRM_CHECK:
                table.bprm_check(process, ts, path, comm)
            else:
                table.exec_result(process, ts, retval, comm)
        parent = table.parent(process)
        program = process.programs[-1]
        parent_program = parent.programs[-1] if parent is not None else None
        container = table.containers.get((pid_id, mnt_id)) if table.containers else None
        fragment = self.fields(program, parent_program, _container_id(process, container))
        if not stateful:
            fragments = self._fragments
            if len(fragments) >= _CACHE_LIMIT:
                fragments.clear()
            fragments[ids] = (self._containers, names, host_pid, host_ppid, process,
                              program, self._live_get(host_ppid), parent, parent_program,
                              fragment)
        return fragment

    def _first_string(self, data: bytes) -> str | None:
        """The first argument when it is a well-formed string, else None."""
        at = self._size
        if len(data) < at + 5 or data[at] != _STR:
            return None
        length = _S32(data, at + 1)[0]
        end = at + 5 + length
        if length <= 0 or end > len(data) or data[end - 1]:
            return None
        return data[at + 5:end - 1].decode("utf-8", "surrogateescape")

    def event(self, event: Event) -> EventContext | None:
        """Apply one decoded event to the table: its context, or None for an event whose
        header was cut (lenient decoding), which the table cannot place."""
        header = event._header
        if None in header[:12]:
            return None
        return self.table.update(event)

    def event_fields(self, event: Event) -> str:
        """Apply one decoded event to the table: the context fields of its JSON line."""
        answer = self.event(event)
        if answer is None:
            return NO_CONTEXT
        return self.fields(answer.program, answer.parent_program, answer.container_id)

    def lost(self, count: int) -> None:
        """Events were lost: the table drops what it waited for (exec results)."""
        self.table.lost(count)


def answer_fields(answer: EventContext | None) -> str:
    """The context fields of a JSON line for the table's answer about its event."""
    if answer is None:
        return NO_CONTEXT
    return context_fields(answer.program, answer.parent_program, answer.container_id)


def table_context(answer: EventContext | None) -> str:
    """What a table line shows after the pid: ``[exe]`` when the program is known, and the
    container's short id when the process is not on the host; "" when neither."""
    if answer is None:
        return ""
    parts = []
    if answer.program.known:
        parts.append(printable(answer.program.exe))
    container_id = answer.container_id
    if container_id:
        parts.append("container " + printable(container_id[:12]))
    return "[" + " ".join(parts) + "]" if parts else ""
