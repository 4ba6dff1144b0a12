"""The process tree of a capture, like ``pstree -a``: who ran what, when, and how it ended.

Built with a :class:`ProcessTable` that keeps every process (no expiry) over the whole
capture. Each process shows its program(s) and argv, host pid (and pid in its own PID
namespace), lifetime, exit status, event counts and container. With an event filter (the
decode command's ``--event/--pid/--comm`` test) only the matching events are counted and
only processes with matching events are shown, with their ancestors to place them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ebpfwire.capture import CaptureReader, CaptureStream, LostRecord, SampleRecord
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.process.table import Process, ProcessTable
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import Event
from ebpfwire.wire.text import escape, exit_status_text

EventFilter = Callable[[Event], bool]


@dataclass(eq=False)
class TreeNode:
    """One process in the tree, with the events of it that passed the filter."""

    process: Process
    counts: dict[str, int] = field(default_factory=dict)
    children: list[TreeNode] = field(default_factory=list)
    parent: TreeNode | None = None

    @property
    def events(self) -> int:
        return sum(self.counts.values())


def _container_text(process: Process, container: ContainerInfo | None) -> str:
    if container is not None:
        if container.runtime == "host":
            return ""
        short = container.container_id[:12] or "?"
        return f"{container.runtime}:{short}"
    if process.container_id:
        return f"container:{process.container_id[:12]}"
    if process.pid_ns or process.mnt_ns:
        if process.from_snapshot and process.container_id == "":
            return ""
        return f"ns {process.pid_ns}/{process.mnt_ns}"
    return ""


def _above(node: TreeNode, other: TreeNode) -> bool:
    """True when ``node`` is ``other`` or one of its ancestors (linking would loop)."""
    while other is not None:
        if other is node:
            return True
        other = other.parent
    return False


class ProcessTree:
    """Feed it a capture's records (events in ``ts`` order); ask for lines or JSON."""

    def __init__(self, keep: EventFilter | None = None, arch: str = "x86_64"):
        self.table = ProcessTable(retain_ns=None, arch=arch)
        self.keep = keep
        self._nodes: dict[int, TreeNode] = {}         # id(process) -> node
        self._parents: dict[int, Process] = {}        # id(process) -> parent at first sight
        self._containers: dict[int, ContainerInfo] = {}
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    # -- input (snapshot entries, containers and losses go to ``table`` directly)

    def add_event(self, event: Event) -> None:
        answer = self.table.update(event)
        process = answer.process
        key = id(process)
        if key not in self._parents and answer.parent is not None:
            self._parents[key] = answer.parent
        if answer.container is not None:
            self._containers[key] = answer.container
        if self.first_ts is None:
            self.first_ts = event.ts
        self.last_ts = event.ts
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = TreeNode(process)
        if self.keep is None or self.keep(event):
            name = event.name or f"event_{event.event_id}"
            node.counts[name] = node.counts.get(name, 0) + 1

    # -- the tree

    def _parent_of(self, process: Process, lives: dict[int, list[Process]]) -> Process | None:
        parent = self._parents.get(id(process))
        if parent is not None:
            return parent
        # not known when it was first seen (the parent's first event came later, or it is
        # a snapshot entry): the life of the parent's pid that had started by then, else
        # the first one met (a process seen only after its child was alive then)
        candidates = [life for life in lives.get(process.host_ppid, ()) if life is not process]
        older = [life for life in candidates if life.start_ns <= process.start_ns]
        if older:
            return older[-1]
        later = [life for life in candidates if not life.from_snapshot]
        return later[0] if later else None

    def roots(self) -> list[TreeNode]:
        """The top processes of the tree, oldest first, children ordered by start."""
        shown: dict[int, TreeNode] = {}
        for key, node in self._nodes.items():
            if self.keep is not None and not node.counts:
                continue
            shown[key] = TreeNode(node.process, node.counts)
        lives: dict[int, list[Process]] = {}
        for process in sorted(self.table.processes(), key=lambda p: p.start_ns):
            lives.setdefault(process.host_pid, []).append(process)
        pending = list(shown.values())
        while pending:   # bring in the ancestors of every shown process
            node = pending.pop()
            parent = self._parent_of(node.process, lives)
            if parent is None:
                continue
            parent_node = shown.get(id(parent))
            if parent_node is None:
                parent_node = shown[id(parent)] = TreeNode(parent)
                pending.append(parent_node)
            if not _above(node, parent_node):
                node.parent = parent_node
                parent_node.children.append(node)
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
        container = _container_text(process, self._containers.get(id(process)))
        if container:
            parts.append(escape(container))
        return "  ".join(parts)

    def lines(self) -> list[str]:
        """The tree drawn as ``pstree`` does, one process a line."""
        out: list[str] = []

        def walk(node: TreeNode, prefix: str, last: bool, top: bool) -> None:
            branch = "" if top else ("└─" if last else "├─")
            out.append(prefix + branch + self.describe(node))
            inner = prefix + ("" if top else ("  " if last else "│ "))
            for index, child in enumerate(node.children):
                walk(child, inner, index == len(node.children) - 1, False)

        for root in self.roots():
            walk(root, "", True, True)
        return out

    def to_json(self) -> list[dict[str, Any]]:
        """The tree as nested dicts (the same facts as :meth:`lines`, not abbreviated)."""

        def build(node: TreeNode) -> dict[str, Any]:
            process = node.process
            container = self._containers.get(id(process))
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
                "children": [build(child) for child in node.children],
            }

        return [build(root) for root in self.roots()]


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
