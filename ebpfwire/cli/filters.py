"""The event filter of the commands that read captures: --event/--pid/--comm/--failed as the
one :class:`~ebpfwire.wire.filter.EventFilter`, its refusals as usage errors."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ebpfwire.cli.errors import UsageError
from ebpfwire.wire.events import Event
from ebpfwire.wire.filter import EventFilter
from ebpfwire.wire.filter import check_event_names as check_names


def check_event_names(names: Iterable[str]) -> list[str]:
    """The --event names, each a known event or ``event_<id>``; else a UsageError naming
    the closest known names."""
    names = list(names)
    try:
        check_names(names)
    except ValueError as exc:
        raise UsageError(f"--event: {exc}") from None
    return names


def make_filter(events: list[str], pid: int | None, comm: str | None, failed: bool = False
                ) -> Callable[[Event], bool] | None:
    """The --event/--pid/--comm/--failed test, or None when nothing is filtered."""
    try:
        keep = EventFilter(frozenset(events), pid, comm, failed)
    except ValueError as exc:
        raise UsageError(f"--event: {exc}") from None
    return keep.matches if keep else None
