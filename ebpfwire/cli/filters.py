"""The event filter of the commands that read captures: --event names checked, and one
test for --event/--pid/--comm/--failed."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterable

from ebpfwire.capture import ARCHES
from ebpfwire.cli.errors import UsageError
from ebpfwire.output.render import event_label
from ebpfwire.wire.catalogue import SPECIAL_EVENTS, event_name
from ebpfwire.wire.events import Event

_EVENT_ID = re.compile(r"event_\d+")


@functools.cache
def known_event_names() -> frozenset[str]:
    """Every event name decode can show, on either architecture."""
    known = set(SPECIAL_EVENTS.values())
    for arch in ARCHES:
        known.update(filter(None, (event_name(nr, arch) for nr in range(1024))))
    return frozenset(known)


def check_event_names(names: Iterable[str]) -> list[str]:
    """The --event names, each a known event or ``event_<id>``; else a UsageError naming
    the closest known names."""
    names = list(names)
    known = known_event_names()
    for name in names:
        if name in known or _EVENT_ID.fullmatch(name):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.0)
        raise UsageError(f"--event: unknown event {name!r}; closest known: {', '.join(close)} "
                         "(or event_<id> for a numbered event)")
    return names


def make_filter(events: list[str], pid: int | None, comm: str | None, failed: bool = False
                ) -> Callable[[Event], bool] | None:
    """The --event/--pid/--comm/--failed test, or None when nothing is filtered."""
    wanted = frozenset(events)
    if not wanted and pid is None and comm is None and not failed:
        return None

    def keep(event: Event) -> bool:
        if wanted and event_label(event) not in wanted:
            return False
        if pid is not None and pid not in (event.pid, event.host_pid):
            return False
        if failed and not (event.retval is not None and event.retval < 0):
            return False
        return comm is None or event.comm == comm

    return keep
