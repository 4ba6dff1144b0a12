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

from .context import ContainerInfo
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

_CACHE_LIMIT = 1 << 16   # raw comm and cwd texts kept; cleared when full


def program_json(program: Program | None) -> dict[str, Any] | None:
    """A program as the JSON lines show it: exe (null when only the comm names it), argv,
    and how it is known (``exec``, ``snapshot``, ``fork``, ``comm``)."""
    if program is None:
        return None
    return {"exe": program.exe or None, "argv": list(program.argv), "source": program.source}


def context_fields(program: Program | None, parent: Program | None,
                   container_id: str | None) -> str:
    """The fields an enriched JSON line ends with, as ``, "process": ...`` text."""
    return (', "process": ' + json.dumps(program_json(program))
            + ', "parent_process": ' + json.dumps(program_json(parent))
            + ', "container_id": ' + json.dumps(container_id))


NO_CONTEXT = context_fields(None, None, None)
"""The fields of an event the table cannot place (a damaged header)."""


def _container_id(process: Process, container: ContainerInfo | None) -> str | None:
    if container is not None:
        return container.container_id
    return process.container_id


class Enricher:
    """The process context of one capture's events, in the form each output needs."""

    def __init__(self, layout: Layout, arch: str, retain_ns: int | None = DEFAULT_RETAIN_NS):
        self.table = ProcessTable(retain_ns, arch)
        self._stateful = self.table._exec_ids | {SECURITY_BPRM_CHECK, DO_EXIT}
        has_cwd = "cwd" in layout.extra_names
        # ts, pid_id, mnt_id, host_ppid, host_pid, event_id, comm[, cwd]: the fields the
        # table reads, at the same offsets in every layout
        self._head = struct.Struct("<QIIII12xI12x16s" + ("80s" if has_cwd else "")).unpack_from
        self._size = layout.size
        self._has_cwd = has_cwd
        self._texts: dict[bytes, str] = {}
        # host pid -> (process, program, parent's program, container, fragment)
        self._fragments: dict[int, tuple[Process, Program, Program | None,
                                         ContainerInfo | None, str]] = {}

    def _text(self, raw: bytes) -> str:
        texts = self._texts
        if len(texts) >= _CACHE_LIMIT:
            texts.clear()
        text = texts[raw] = raw.partition(b"\0")[0].decode("utf-8", "surrogateescape")
        return text

    def sample_fields(self, data: bytes) -> str | None:
        """The context fields of a raw sample that changes no process state, read from its
        header; None when the sample must be decoded and given to :meth:`event_fields`
        (an exec, security_bprm_check or do_exit event, a process not met before)."""
        if len(data) < self._size:
            return None
        values = self._head(data)
        if values[5] in self._stateful:
            return None
        texts = self._texts
        comm = texts.get(values[6]) or self._text(values[6])
        cwd = (texts.get(values[7]) or self._text(values[7])) if self._has_cwd else ""
        table = self.table
        process = table.touch(values[0], values[1], values[2], values[3], values[4],
                              values[5], comm, cwd)
        if process is None:
            return None
        parent = table.parent(process)
        program = process.programs[-1]
        parent_program = parent.programs[-1] if parent is not None else None
        container = table.containers.get((values[1], values[2])) if table.containers else None
        cached = self._fragments.get(values[4])
        if (cached is not None and cached[0] is process and cached[1] is program
                and cached[2] is parent_program and cached[3] is container):
            return cached[4]
        fragment = context_fields(program, parent_program, _container_id(process, container))
        self._fragments[values[4]] = (process, program, parent_program, container, fragment)
        return fragment

    def event(self, event: Event) -> EventContext | None:
        """Apply one decoded event to the table: its context, or None for an event whose
        header was cut (lenient decoding), which the table cannot place."""
        header = event._header
        if None in header[:12]:
            return None
        answer = self.table.update(event)
        if header[8] == DO_EXIT:
            self._fragments.pop(header[4], None)
        return answer

    def event_fields(self, event: Event) -> str:
        """Apply one decoded event to the table: the context fields of its JSON line."""
        return answer_fields(self.event(event))

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
