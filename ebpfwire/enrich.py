"""Who did it, on every line of ``decode``: the process's executable, its parent's and the
container, from a :class:`~ebpfwire.process.ProcessTable` fed the whole capture.

The table sees every event (filters only choose what is printed). Events are read from
their raw header (:meth:`Enricher.sample`, no :class:`~ebpfwire.events.Event` built; an
exec's arguments only where the table needs them), and most get an answer kept per
process; damaged samples go through :meth:`Enricher.event` with their decoded Event. The
JSON fields are added after the raw event's own (docs/cli.md, "Process context"), so the
raw shape is untouched.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from .capture import ContainerRecord, ProcessRecord
from .context import ContainerInfo, ProcessInfo
from .events import Event
from .layouts import Layout
from .process import DEFAULT_RETAIN_NS, DO_EXIT, EventContext, ProcessTable, Program
from .render import printable
from .walker import walk, walk_lenient

_CACHE_LIMIT = 1 << 16   # entries per cache (texts, programs, answers); cleared when full
_COMM_AT = 52            # the comm's offset in every layout's header (the cwd follows it)
_EVENT_ID = slice(36, 40)
_IDS = slice(8, 24)      # pid_id, mnt_id, host_ppid, host_pid: the key of a kept answer
_U32 = struct.Struct("<I").pack
T = TypeVar("T")


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


class Enricher(Generic[T]):
    """The process context of one capture's events, made into what an output needs.

    ``make(program, parent_program, container_id)`` turns an answer of the table into
    the output's form: by default the JSON lines' fields (:meth:`fields`). :meth:`sample`
    answers a raw sample; :meth:`event` a decoded :class:`Event` (damaged or filtered
    samples). Both feed one :class:`ProcessTable`, so they may be mixed in one stream.

    Most events change no process state, and a process's answer stays the same until
    its process or parent runs another program, exits or is replaced, or a container
    record comes: :meth:`sample` keeps the answer per (pid_id, mnt_id, host_ppid,
    host_pid) as the header has them, checked against the comm (and cwd) bytes, and the
    table tells (``on_change``) which to forget. An event given a kept answer does not
    reach the table, so its per-process event counts leave those events out (decode
    does not show them; ``ps`` uses the table directly).
    """

    def __init__(self, layout: Layout, arch: str, retain_ns: int | None = DEFAULT_RETAIN_NS,
                 make: Callable[[Program | None, Program | None, str | None], T] | None = None):
        self.table = ProcessTable(retain_ns, arch)
        self.table.on_change = self._forget
        self._make: Callable[[Program | None, Program | None, str | None], T] = (
            make or self.fields)  # type: ignore[assignment]
        self._layout = layout
        self._unpack = layout.fmt.unpack_from
        self._size = layout.size
        self._cwd_at = 12 + layout.extra_names.index("cwd") if "cwd" in layout.extra_names \
            else None
        self._names = slice(_COMM_AT, _COMM_AT + 16 + (80 if self._cwd_at else 0))
        stateful = self.table.state_event_ids
        self._stateful = stateful
        self._stateful_raw = frozenset(_U32(event_id) for event_id in stateful)
        self._with_args = stateful - {DO_EXIT}    # exec entries and bprm_check read args
        self._texts: dict[bytes, str] = {}
        # (exe, id(argv), source) -> (argv, the program's JSON with argv, without)
        self._programs: dict[tuple, tuple[tuple[str, ...], str, str]] = {}
        self._kept: dict[bytes, tuple[bytes, T]] = {}     # ids -> (comm and cwd, answer)
        self._keys_of: dict[int, set[bytes]] = {}        # host pid -> ids that name it
        self._made: dict[tuple, T] = {}     # (program, parent's, container id) -> answer
        self._unplaced: T | None = None

    def feed(self, item: ProcessInfo | ContainerInfo) -> None:
        """A snapshot entry or container record of the capture."""
        self.table.feed(item)

    def lost(self, count: int) -> None:
        """Events were lost: the table drops what it waited for (exec results)."""
        self.table.lost(count)

    def _forget(self, host_pid: int | None) -> None:
        if host_pid is None:
            self._kept.clear()
            self._keys_of.clear()
            return
        kept = self._kept
        for key in self._keys_of.pop(host_pid, ()):
            kept.pop(key, None)

    def _text(self, raw: bytes) -> str:
        texts = self._texts
        if len(texts) >= _CACHE_LIMIT:
            texts.clear()
        text = texts[raw] = raw.partition(b"\0")[0].decode("utf-8", "surrogateescape")
        return text

    def sample(self, data: bytes, values: tuple | None = None, flat: list | None = None) -> T:
        """The answer for a raw sample, from its header (and, for an exec's entry or
        security_bprm_check, its arguments). ``values`` (the layout's ``fmt`` unpacked) and
        ``flat`` (the walker's list) are used when the caller has them already."""
        kept = self._kept.get(data[_IDS])
        if (kept is not None and data[self._names] == kept[0]
                and data[_EVENT_ID] not in self._stateful_raw):
            return kept[1]
        if values is None:
            if len(data) < self._size:
                return self.unplaced()
            values = self._unpack(data)
        (ts, pid_id, mnt_id, host_ppid, host_pid, _, pid, uid, event_id, argnum, retval,
         comm_raw) = values[:12]
        texts = self._texts
        comm = texts.get(comm_raw) or self._text(comm_raw)
        cwd = ""
        if self._cwd_at is not None:
            cwd_raw = values[self._cwd_at]
            cwd = texts.get(cwd_raw) or self._text(cwd_raw)
        if flat is None:
            flat = self._args(data, argnum) if argnum and event_id in self._with_args else []
        answer = self.table.observe(ts, pid_id, mnt_id, host_ppid, host_pid, pid, uid,
                                    event_id, argnum, retval, comm, cwd, flat)
        result = self.answer_of(answer)
        parent = answer.parent
        if (event_id not in self._stateful and answer.process.exit_ns is None
                and (parent is None or parent.exit_ns is None)):
            self._keep(data, host_pid, host_ppid, result)
        return result

    def _keep(self, data: bytes, host_pid: int, host_ppid: int, result: T) -> None:
        kept, keys_of = self._kept, self._keys_of
        if len(kept) >= _CACHE_LIMIT:
            kept.clear()
            keys_of.clear()
        key = data[_IDS]
        kept[key] = (data[self._names], result)
        for pid in (host_pid, host_ppid):
            keys = keys_of.get(pid)
            if keys is None:
                keys_of[pid] = {key}
            else:
                keys.add(key)

    def _args(self, data: bytes, argnum: int) -> list:
        """The walker's flat list of a sample's arguments: what can be decoded of them."""
        flat: list = []
        if not walk(data, self._size, len(data), argnum, flat):
            flat.clear()
            walk_lenient(data, self._size, len(data), argnum, None, flat, [])
        return flat

    def unplaced(self) -> T:
        """The answer for an event the table cannot place (its header is cut)."""
        if self._unplaced is None:
            self._unplaced = self._make(None, None, None)
        return self._unplaced

    def event(self, event: Event) -> EventContext | None:
        """Apply one decoded event to the table: its context, or None for an event whose
        header was cut (lenient decoding), which the table cannot place."""
        header = event._header
        if None in header[:12]:
            return None
        return self.table.update(event)

    def answer_of(self, answer: EventContext | None) -> T:
        """What ``make`` makes of an answer of :meth:`event` (made once per programs and
        container: many events share them)."""
        if answer is None:
            return self.unplaced()
        key = (answer.program, answer.parent_program, answer.container_id)
        made = self._made.get(key)
        if made is None:
            if len(self._made) >= _CACHE_LIMIT:
                self._made.clear()
            made = self._made[key] = self._make(*key)
        return made

    # -- the JSON lines' fields, the default ``make``

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


def context_taken(enricher: Enricher, records: Iterable) -> Iterator:
    """The records, with the capture's process and container records taken out into the
    enricher's table as they are read (ahead of the events they describe, which a reorder
    window may hold back)."""
    feed = enricher.feed
    for record in records:
        kind = type(record)
        if kind is ProcessRecord or kind is ContainerRecord:
            feed(record.info)
        else:
            yield record


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
