"""Who did it, on every line of ``decode``: the process's executable, its parent's and the
container, from a :class:`~ebpfwire.process.table.ProcessTable` fed the whole capture.

The table sees every event (filters only choose what is printed). Events are read from
their raw header (:meth:`Enricher.sample`, no :class:`~ebpfwire.wire.events.Event` built; an
exec's arguments only where the table needs them), and most get an answer kept per
process; damaged samples go through :meth:`Enricher.event` with their decoded Event. The
JSON fields are added after the raw event's own (docs/cli.md, "Process context"), so the
raw shape is untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.process.table import (
    DEFAULT_RETAIN_NS,
    EventContext,
    ProcessTable,
    Program,
)
from ebpfwire.wire.catalogue import DO_EXIT
from ebpfwire.wire.decoder import decode, walk_args
from ebpfwire.wire.events import Event
from ebpfwire.wire.layouts import COMM, EVENT_ID, EXTRA, HOST_PID, HOST_PPID, MNT_ID, PID_ID, Layout
from ebpfwire.wire.text import quote

_CACHE_LIMIT = 1 << 16   # entries per cache (texts, programs, answers); cleared when full
_HEX = re.compile(r"[0-9a-f]+")  # a container id as runtimes write it
T = TypeVar("T")


def context_key(answer: EventContext | None) -> tuple:
    """The parts of an answer a default ``make`` is given: (program, parent's program,
    container id), all None for an event the table cannot place."""
    if answer is None:
        return (None, None, None)
    container = answer.container    # (EventContext.container_id, without its call)
    return (answer.program, answer.parent_program,
            answer.process.container_id if container is None else container.container_id)


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


class Enricher(Generic[T]):
    """The process context of one capture's events, made into what an output needs.

    ``make(program, parent_program, container_id)`` turns an answer of the table into
    the output's form: by default the JSON lines' fields (:class:`ContextJson`). ``key``
    says which parts of an answer ``make`` is given (for None too: an event the table
    cannot place); by default :func:`context_key`'s three. :meth:`sample`
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
                 make: Callable[..., T] | None = None,
                 key: Callable[[EventContext | None], tuple] | None = None):
        self.table = ProcessTable(retain_ns, arch)
        self._arch = arch
        self.table.on_change = self._forget
        self._make: Callable[..., T] = make or ContextJson()  # type: ignore[assignment]
        self._key = key or context_key
        self._layout = layout
        self._unpack = layout.fmt.unpack_from
        self._size = layout.size
        self._cwd_at = layout.field_names.index("cwd") if "cwd" in layout.extra_names else None
        stateful = self.table.state_event_ids
        self._stateful = stateful
        self._with_args = stateful - {DO_EXIT}    # exec entries and bprm_check read args
        self._texts: dict[bytes, str] = {}
        # host pid -> (host ppid, comm, pid_id, mnt_id, cwd or None, answer), the header
        # fields as the layout's struct gives them
        self._kept: dict[int, tuple] = {}
        self._children: dict[int, set[int]] = {}   # host pid -> kept pids it is parent of
        self._made: dict[tuple, T] = {}     # (program, parent's, container id) -> answer
        self._unplaced: T | None = None
        #: False: no answer is kept, every sample reaches the table (for a caller that
        #: needs the table's per-process event counts, which kept answers leave out).
        self.keeps = True
        #: Called with the host pids whose kept answers were dropped (None: all of them):
        #: what a caller that skips the samples a kept answer would take needs to know.
        self.on_forget: Callable[[list[int] | None], None] | None = None

    def answers_held(self) -> set:
        """The answers kept per process, which :meth:`sample` gives again without asking
        the table (an output that numbers its answers must keep these)."""
        held = {entry[5] for entry in self._kept.values()}
        if self._unplaced is not None:
            held.add(self._unplaced)
        return held

    def keep_answers(self, keep: set) -> None:
        """Forget the answers made per programs but not in ``keep`` (the output forgot
        them): made again when asked, they are new answers."""
        self._made = {key: made for key, made in self._made.items() if made in keep}

    def feed(self, item: ProcessInfo | ContainerInfo) -> None:
        """A snapshot entry or container record of the capture."""
        self.table.feed(item)

    def lost(self, count: int) -> None:
        """Events were lost: the table drops what it waited for (exec results)."""
        self.table.lost(count)

    def _forget(self, host_pid: int | None) -> None:
        if host_pid is None:
            self._kept.clear()
            self._children.clear()
            if self.on_forget is not None:
                self.on_forget(None)
            return
        kept, children = self._kept, self._children
        entry = kept.pop(host_pid, None)
        if entry is not None:   # out of its parent's set too: a forgotten pid leaves nothing
            siblings = children.get(entry[0])
            if siblings is not None:
                siblings.discard(host_pid)
                if not siblings:
                    del children[entry[0]]
        orphans = children.pop(host_pid, None)
        if orphans:
            for child in orphans:
                kept.pop(child, None)
        if self.on_forget is not None:
            self.on_forget([host_pid, *orphans] if orphans else [host_pid])

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
        if values is None:
            if len(data) < self._size:   # a cut header: what lenient decode makes of it
                return self.answer_of(self.event(
                    decode(data, layout=self._layout, arch=self._arch, strict=False)))
            values = self._unpack(data)
        if values[EVENT_ID] not in self._stateful:
            kept = self.kept_answer(values)
            if kept is not None:
                return kept
        # unpacked in the order of layouts.CLASSIC_NAMES (tests/test_header_fields.py holds
        # it): faster than picking each field by its named position
        (ts, pid_id, mnt_id, host_ppid, host_pid, _, pid, uid, event_id, argnum, retval,
         comm_raw) = values[:EXTRA]
        texts = self._texts
        comm = texts.get(comm_raw) or self._text(comm_raw)
        cwd, cwd_raw = "", None
        if self._cwd_at is not None:
            cwd_raw = values[self._cwd_at]
            cwd = texts.get(cwd_raw) or self._text(cwd_raw)
        if flat is None:
            flat = (self._args(data, event_id, argnum)
                    if argnum and event_id in self._with_args else [])
        answer = self.table.observe(ts, pid_id, mnt_id, host_ppid, host_pid, pid, uid,
                                    event_id, argnum, retval, comm, cwd, flat)
        result = self.answer_of(answer)
        parent = answer.parent
        if (self.keeps and event_id not in self._stateful and answer.process.exit_ns is None
                and (parent is None or parent.exit_ns is None)):
            kept, children = self._kept, self._children
            if len(kept) >= _CACHE_LIMIT:
                self._forget(None)
            kept[host_pid] = (host_ppid, comm_raw, pid_id, mnt_id, cwd_raw, result)
            siblings = children.get(host_ppid)
            if siblings is None:
                children[host_ppid] = {host_pid}
            else:
                siblings.add(host_pid)
        elif (kept := self._kept.get(host_pid)) is not None and kept[:5] != (
                host_ppid, comm_raw, pid_id, mnt_id, cwd_raw):
            # the table took this sample's namespaces and cwd: a later sample with the kept
            # answer's fields must reach it again, to set them back as it would
            self._forget(host_pid)
        return result

    def kept_answer(self, values: tuple) -> T | None:
        """The answer kept for a sample with these header fields (the layout's ``fmt``
        unpacked), given to it unless it changes state: its pid's, made for the same
        parent, comm, namespace ids and cwd; None when there is none."""
        kept = self._kept.get(values[HOST_PID])
        if (kept is not None and kept[0] == values[HOST_PPID] and kept[1] == values[COMM]
                and kept[2] == values[PID_ID] and kept[3] == values[MNT_ID]
                and (kept[4] is None or kept[4] == values[self._cwd_at])):
            return kept[5]
        return None

    def _args(self, data: bytes, event_id: int, argnum: int) -> list:
        """The walker's flat list of a sample's arguments: what can be decoded of them, as
        lenient ``decode`` walks them (the catalogue's tags guide it past damage)."""
        flat: list = []
        walk_args(data, self._size, argnum, event_id, self._arch, flat, [])
        return flat

    def unplaced(self) -> T:
        """The answer for an event the table cannot place (its header is cut)."""
        if self._unplaced is None:
            self._unplaced = self._make(*self._key(None))
        return self._unplaced

    def event(self, event: Event) -> EventContext | None:
        """Apply one decoded event to the table: its context, or None for an event whose
        header was cut (lenient decoding), which the table cannot place."""
        header = event._header
        if None in header[:EXTRA]:
            return None
        return self.table.update(event)

    def answer_of(self, answer: EventContext | None) -> T:
        """What ``make`` makes of an answer of :meth:`event` (made once per programs and
        container: many events share them)."""
        if answer is None:
            return self.unplaced()
        key = self._key(answer)
        made = self._made.get(key)
        if made is None:
            if len(self._made) >= _CACHE_LIMIT:
                self._made.clear()
            made = self._made[key] = self._make(*key)
        return made


class ContextJson:
    """The fields an enriched JSON line ends with (``, "process": ...``): the default
    ``make`` of :class:`Enricher`, and the answers of ``decode``'s bulk path. Each
    program's JSON is made once (the same command runs again and again)."""

    def __init__(self) -> None:
        # (exe, argv, source) -> (the program's JSON with argv, without)
        self._programs: dict[tuple, tuple[str, str]] = {}

    def _program(self, program: Program | None, argv: bool) -> str:
        if program is None:
            return "null"
        key = (program.exe, program.argv, program.source)
        cached = self._programs.get(key)
        if cached is None:
            if len(self._programs) >= _CACHE_LIMIT:
                self._programs.clear()
            cached = self._programs[key] = (json.dumps(program_json(program)),
                                            json.dumps(program_json(program, argv=False)))
        return cached[0] if argv else cached[1]

    def __call__(self, program: Program | None, parent: Program | None,
                 container_id: str | None) -> str:
        return (', "process": ' + self._program(program, True) + ', "parent_process": '
                + self._program(parent, False) + ', "container_id": '
                + ("null" if container_id is None else json.dumps(container_id)))


def table_context(program: Program | None, parent: Program | None,
                  container_id: str | None) -> str:
    """What a table line shows after the pid (a ``make`` of :class:`Enricher`):
    ``["exe"]`` when the program is known, and the container's short id when the process
    is not on the host; "" when neither. The path is quoted and escaped as the arguments'
    paths are, and an id that is not hex digits is too: neither can forge text of the line.
    """
    parts = []
    if program is not None and program.known:
        parts.append(quote(program.exe))
    if container_id:
        short = container_id[:12]
        parts.append("container " + (short if _HEX.fullmatch(short) else quote(short)))
    return "[" + " ".join(parts) + "]" if parts else ""
