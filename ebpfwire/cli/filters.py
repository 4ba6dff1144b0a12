"""The event filter of the commands that read captures: --event/--pid/--comm/--failed as the
one :class:`~ebpfwire.wire.filter.EventFilter`, its refusals as usage errors."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ebpfwire.cli.errors import UsageError
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
