"""The process tree of a capture, like ``pstree -a``: who ran what, when, and how it ended.

Built with a :class:`ProcessTable` that keeps processes over the whole capture (no expiry),
up to its bound (:data:`~ebpfwire.process.table.MAX_PROCESSES` live, as many exited, as
many lives whose exit was lost): past it the least recently seen leave the tree, counted
(``table.evicted``). Each process shows its program(s) and argv, host pid (and pid in its
own PID namespace), lifetime, exit status, event counts and container. With an event
filter (the decode command's ``--event/--pid/--comm`` test) only the matching events are
counted and only processes with matching events are shown, with their ancestors to place
them.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ebpfwire.capture import CaptureReader, CaptureStream, LostRecord, SampleRecord
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.process.table import EventContext, Process, ProcessTable
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import Event
from ebpfwire.wire.text import escape, exit_status_text

EventFilter = Callable[[Event], bool]


@dataclass(slots=True, eq=False)
class TreeNode:
    """One process in the tree, with the events of it that passed the filter; while the
    tree is fed, the parent and container its first event was answered with."""

    process: Process
    counts: dict[str, int] = field(default_factory=dict)
    children: list[TreeNode] = field(default_factory=list)
    parent: TreeNode | None = None
    first_parent: Process | None = None
    container: ContainerInfo | None = None

    @property
    def events(self) -> int:
        return sum(self.counts.values())


def _container_text(process: Process, container: ContainerInfo | None) -> str:
    if container is not None:
        if container.runtime == "host":
            return ""
        if container.container_id:
            return f"{container.runtime}:{container.container_id[:12]}"
        # a record that names no container (runtime unknown): the namespaces, as the docs say
        return f"ns {process.pid_ns}/{process.mnt_ns}"
    if process.container_id:
        return f"container:{process.container_id[:12]}"
    if process.pid_ns or process.mnt_ns:
        if process.from_snapshot and process.container_id == "":
            return ""
        return f"ns {process.pid_ns}/{process.mnt_ns}"
    return ""


def _top_of(node: TreeNode, tops: dict[int, TreeNode]) -> TreeNode:
    """The top of the tree ``node`` is linked in so far (union-find, paths halved):
    linking a node under one below it would loop; this tells it in near constant time,
    where walking up the ancestors takes time of the depth, which the capture controls."""
    while True:
        up = tops.get(id(node), node)
        if up is node:
            return node
        above = tops.get(id(up), up)
        tops[id(node)] = above
        node = above


class _Lives(NamedTuple):
    """The lives of one host pid, by start: for finding a parent's life by bisection."""

    lives: list[Process]
    starts: list[int]
    met: list[Process]     # the first two not from the snapshot


class ProcessTree:
    """Feed it a capture's records (events in ``ts`` order); ask for lines or JSON."""

    def __init__(self, keep: EventFilter | None = None, arch: str = "x86_64",
                 table: ProcessTable | None = None):
        # ``table``: one kept (no expiry) and fed by another, as the bulk path's enricher
        self.table = table or ProcessTable(retain_ns=None, arch=arch)
        self.table.on_forget = self._forget
        self.keep = keep
        self._nodes: dict[int, TreeNode] = {}         # id(process) -> node
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    # -- input (snapshot entries, containers and losses go to ``table`` directly)

    def _forget(self, process: Process) -> None:
        """The table forgot ``process`` (its bound): so does the tree."""
        self._nodes.pop(id(process), None)

    def node_of(self, answer: EventContext) -> TreeNode:
        """The node of an answer's process, made at its first event (with the parent it is
        answered with then); its container as the answer says, when it says one."""
        process = answer.process
        key = id(process)
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = TreeNode(process, first_parent=answer.parent)
        if answer.container is not None:
            node.container = answer.container
        return node

    def add_event(self, event: Event) -> None:
        node = self.node_of(self.table.update(event))
        if self.first_ts is None:
            self.first_ts = event.ts
        self.last_ts = event.ts
        if self.keep is None or self.keep(event):
            name = event.name or f"event_{event.event_id}"
            node.counts[name] = node.counts.get(name, 0) + 1

    # -- the tree

    def _parent_of(self, process: Process, lives: dict[int, _Lives]) -> Process | None:
        node = self._nodes.get(id(process))
        parent = node.first_parent if node is not None else None
        if parent is not None:
            return parent
        # not known when it was first seen (the parent's first event came later, or it is
        # a snapshot entry): the life of the parent's pid that had started by then, else
        # the first one met (a process seen only after its child was alive then)
        known = lives.get(process.host_ppid)
        if known is None:
            return None
        older = known.lives[:bisect_right(known.starts, process.start_ns)][-2:]
        older = [life for life in older if life is not process]
        if older:
            return older[-1]
        later = [life for life in known.met[:2] if life is not process]
        return later[0] if later else None

    def roots(self) -> list[TreeNode]:
        """The top processes of the tree, oldest first, children ordered by start."""
        shown: dict[int, TreeNode] = {}
        for key, node in self._nodes.items():
            if self.keep is not None and not node.counts:
                continue
            shown[key] = TreeNode(node.process, node.counts, container=node.container)
        lives: dict[int, _Lives] = {}
        for process in sorted(self.table.processes(), key=lambda p: p.start_ns):
            known = lives.get(process.host_pid)
            if known is None:
                known = lives[process.host_pid] = _Lives([], [], [])
            known.lives.append(process)
            known.starts.append(process.start_ns)
            if not process.from_snapshot and len(known.met) < 2:
                known.met.append(process)
        tops: dict[int, TreeNode] = {}   # id(node) -> a node above it (see _top_of)
        pending = list(shown.values())
        while pending:   # bring in the ancestors of every shown process
            node = pending.pop()
            parent = self._parent_of(node.process, lives)
            if parent is None:
                continue
            parent_node = shown.get(id(parent))
            if parent_node is None:
                seen = self._nodes.get(id(parent))
                parent_node = shown[id(parent)] = TreeNode(
                    parent, container=seen.container if seen is not None else None)
                pending.append(parent_node)
            top = _top_of(parent_node, tops)
            if top is not node:   # node, not linked yet, is a top; not above its parent
                node.parent = parent_node
                parent_node.children.append(node)
                tops[id(node)] = top
        for node in shown.values():
            node.children.sort(key=lambda child: (child.process.start_ns, child.process.host_pid))
        roots = [node for node in shown.values() if node.parent is None]
        return sorted(roots, key=lambda node: (node.process.start_ns, node.process.host_pid))

    # -- output

    def _offset(self, ns: int) -> str:
        return f"{(ns - (self.first_ts or 0)) / 1e9:+.6f}s"

    def describe(self, node: TreeNode) -> str:
        """One process on one line: programs, argv, pids, lifetime, exit, events, container."""
        process = node.process
        *before, program = [p.name if p.known else f"[{p.comm}]" for p in process.programs]
        text = " → ".join([*before, " ".join((program, *process.program.argv[1:]))])
        pid = str(process.host_pid)
        if process.pid and process.pid != process.host_pid:
            pid += f"/{process.pid}"
        start = ("before the capture" if process.start_ns < (self.first_ts or 0)
                 else self._offset(process.start_ns))
        end = self._offset(process.exit_ns) if process.exit_ns is not None else "running"
        status = exit_status_text(process.exit_status) if process.exit_status is not None else ""
        parts = [escape(text), f"({pid})", f"{start}..{end}"]
        if status:
            parts.append(status)
        if node.counts:
            top = sorted(node.counts.items(), key=lambda item: (-item[1], item[0]))
            shown = ", ".join(f"{count} {name}" for name, count in top[:3])
            more = ", ..." if len(top) > 3 else ""
            parts.append(f"events {node.events} ({shown}{more})")
        container = _container_text(process, node.container)
        if container:
            parts.append(escape(container))
        return "  ".join(parts)

    def lines(self) -> list[str]:
        """The tree drawn as ``pstree`` does, one process a line (depth first, without
        recursion: a capture's fork chain may be any depth)."""
        out: list[str] = []
        # (node, prefix, last child of its parent, a root, depth)
        stack = [(root, "", True, True, 0) for root in reversed(self.roots())]
        while stack:
            node, prefix, last, top, depth = stack.pop()
            branch = "" if top else ("└─" if last else "├─")
            # below INDENTED_DEPTH the drawing stops growing and says the depth: a line's
            # length (and the output's size) must not grow with a chain's depth
            deep = f"[depth {depth}] " if depth > INDENTED_DEPTH else ""
            out.append(prefix + deep + branch + self.describe(node))
            inner = prefix
            if depth < INDENTED_DEPTH:
                inner += "" if top else ("  " if last else "│ ")
            children = node.children
            stack.extend((child, inner, index == len(children) - 1, False, depth + 1)
                         for index, child in reversed(list(enumerate(children))))
        return out

    def _json(self, node: TreeNode) -> dict[str, Any]:
        """One process as :meth:`to_json` gives it, its ``children`` still the nodes."""
        process = node.process
        container = node.container
        return {
            "host_pid": process.host_pid, "host_ppid": process.host_ppid,
            "pid": process.pid, "uid": process.uid,
            "programs": [{"exe": p.exe, "argv": list(p.argv), "source": p.source,
                          "since": p.since, "comm": p.comm} for p in process.programs],
            "comms": list(process.comms), "start_ns": process.start_ns,
            "from_snapshot": process.from_snapshot, "exit_ns": process.exit_ns,
            "exit_status": process.exit_status,
            "exit": (exit_status_text(process.exit_status)
                     if process.exit_status is not None else None),
            "events": node.events, "counts": dict(node.counts),
            "pid_ns": process.pid_ns, "mnt_ns": process.mnt_ns,
            "container_id": (container.container_id if container is not None
                             else process.container_id),
            "runtime": container.runtime if container is not None else None,
            "children": node.children,
        }

    def to_json(self) -> list[dict[str, Any]]:
        """The tree as nested dicts (the same facts as :meth:`lines`, not abbreviated),
        built without recursion; :func:`json_text` writes it at any depth."""
        top: list[dict[str, Any]] = []
        stack = [(root, top) for root in reversed(self.roots())]
        while stack:
            node, siblings = stack.pop()
            made = self._json(node)
            siblings.append(made)
            made["children"] = children = []
            stack.extend((child, children) for child in reversed(node.children))
        return top

    def json_chunks(self) -> Iterator[str]:
        """:func:`json_text` of :meth:`to_json` in pieces, each process's dict made as it is
        written: what is held is the tree, not a second copy of it as dicts and text."""
        return json_chunks(self.roots(), self._json)


_END = object()
INDENTED_DEPTH = 64
"""Containers nested deeper than this are written on one line by :func:`json_text`, and
:meth:`ProcessTree.lines` draws no deeper (it names the depth instead): the indentation of a
chain of n processes would otherwise be n² bytes of output."""


def json_text(value: Any, indent: int = 2) -> str:
    """``json.dumps(value, indent=indent)`` without recursion, for dicts and lists nested
    as deep as a capture's fork chains (json's indenting encoder recurses in Python);
    below INDENTED_DEPTH as ``json.dumps(value)`` writes them, on one line."""
    return "".join(json_chunks(value, indent=indent))


def json_chunks(value: Any, node_json: Callable[[TreeNode], dict[str, Any]] | None = None,
                indent: int = 2) -> Iterator[str]:
    """:func:`json_text` in pieces; a :class:`TreeNode` met is written as ``node_json``
    makes it, when it is met."""
    open_: list[tuple[Iterator[Any], bool]] = []   # the containers being written, dict?
    item, first = value, True
    parts: list[str] = []
    while True:
        if len(parts) >= 4096:
            yield "".join(parts)
            parts.clear()
        if item is not _END:
            if node_json is not None and type(item) is TreeNode:
                item = node_json(item)
            if isinstance(item, dict) and item:
                parts.append("{")
                open_.append((iter(item.items()), True))
                first = True
            elif isinstance(item, (list, tuple)) and item:
                parts.append("[")
                open_.append((iter(item), False))
                first = True
            else:
                parts.append(json.dumps(item))
                first = False
        if not open_:
            yield "".join(parts)
            return
        depth = len(open_)
        items, is_dict = open_[-1]
        item = next(items, _END)
        if item is _END:
            open_.pop()
            end = "}" if is_dict else "]"
            parts.append(end if depth > INDENTED_DEPTH
                         else "\n" + " " * (indent * (depth - 1)) + end)
            first = False
            continue
        if depth > INDENTED_DEPTH:
            if not first:
                parts.append(", ")
        else:
            parts.append(("\n" if first else ",\n") + " " * (indent * depth))
        if is_dict:
            key, item = item
            parts.append(json.dumps(key) + ": ")


Item = Event | ProcessInfo | ContainerInfo | int


def capture_items(source: CaptureReader | CaptureStream, strict: bool = True,
                  on_damaged: Callable[[SampleRecord, Event | DecodeError], None] | None = None
                  ) -> Iterator[Item]:
    """A capture's content as the tree (and a :class:`ProcessTable`) take it: events,
    snapshot entries, container records and lost counts, in ``ts`` order (the capture
    stream's reorder window: a loss after its CPU's last sample, snapshot entries and
    container records at once, as the events need them). ``source``: a reader (decoded
    ``strict`` or not), or a stream set up by the caller.

    Samples that do not decode, and events decoded with errors, are given to ``on_damaged``;
    the former are left out, as are events whose header is cut short (nobody to place
    them on)."""
    stream = source if isinstance(source, CaptureStream) else CaptureStream(source,
                                                                            strict=strict)
    for record, decoded in stream:
        kind = type(record)
        if kind is SampleRecord:
            if isinstance(decoded, Event):
                if decoded.errors:
                    if on_damaged is not None:
                        on_damaged(record, decoded)
                    if None in (decoded.ts, decoded.host_pid, decoded.host_ppid,
                                decoded.event_id):
                        continue
                yield decoded
            elif on_damaged is not None:
                on_damaged(record, decoded)  # type: ignore[arg-type]
        elif kind is LostRecord:
            yield record.count
        else:
            yield record.info


def build_tree(items: Iterable[Item], keep: EventFilter | None = None, arch: str = "x86_64"
               ) -> ProcessTree:
    """The tree of a capture's content, taken in ``ts`` order as :func:`capture_items`
    gives it."""
    tree = ProcessTree(keep, arch)
    for item in items:
        if isinstance(item, Event):
            tree.add_event(item)
        else:
            tree.table.feed(item)
    return tree
