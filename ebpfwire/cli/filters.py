"""The event filter of the commands that read captures: --events/--exact-pid/--comm/--failed
as the one :class:`~ebpfwire.wire.filter.EventFilter`, its refusals as usage errors, and
-p/--pid's process tree, followed through the events in time order."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable

from ebpfwire.cli.errors import UsageError
from ebpfwire.cli.options import names_list
from ebpfwire.wire.events import Event
from ebpfwire.wire.filter import EventFilter


def event_filter(events: Iterable[str], pid: int | None, comm: str | None,
                 failed: bool = False) -> EventFilter | None:
    """The --event/--pid/--comm/--failed filter, its names checked once (a UsageError naming
    the closest known names); None when nothing is filtered."""
    try:
        keep = EventFilter(frozenset(events), pid, comm, failed)
    except ValueError as exc:
        raise UsageError(f"--event: {exc}") from None
    return keep or None


def make_filter(events: Iterable[str], pid: int | None, comm: str | None,
                failed: bool = False) -> Callable[[Event], bool] | None:
    """The same filter as a test of decoded events, or None when nothing is filtered."""
    keep = event_filter(events, pid, comm, failed)
    return keep.matches if keep is not None else None


def tree_filter(root: int, keep: Callable[[Event], bool] | None) -> Callable[[Event], bool]:
    """``keep`` within the tree of ``root`` (its host or namespace pid), as strace -f
    follows it: a process joins when an event shows its parent in the tree. Called on
    every event in time order, so a child's events follow its parent's."""
    members = {root}

    def in_tree(event: Event) -> bool:
        host = event.host_pid
        if host not in members:
            if event.host_ppid not in members and event.pid != root:
                return False
            members.add(host)
        return keep is None or keep(event)

    return in_tree


def filter_of(args: argparse.Namespace) -> Callable[[Event], bool] | None:
    """The capture commands' filter as their options ask (-e, -p, --exact-pid, --comm,
    --failed); None when nothing is filtered."""
    keep = make_filter(names_list(args.event), args.exact_pid, args.comm, args.failed)
    return keep if args.pid is None else tree_filter(args.pid, keep)
