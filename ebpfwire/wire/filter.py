"""Which events to keep: the one meaning of --event, --pid, --comm and --failed.

``decode``, ``ps``, ``summary`` and ``trace`` test Events (:meth:`EventFilter.matches`);
``export`` tests Arrow record batches (:meth:`EventFilter.mask`). The two tests sit side
by side, criterion by criterion, and a test holds them equal on every fixture capture.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ebpfwire.wire.catalogue import SPECIAL_EVENTS, event_name
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.events import Event
from ebpfwire.wire.names import ARCHES

_EVENT_ID = re.compile(r"event_\d+")


@functools.cache
def known_event_names() -> frozenset[str]:
    """Every event name decode can show, on either architecture."""
    known = set(SPECIAL_EVENTS.values())
    for arch in ARCHES:
        known.update(filter(None, (event_name(nr, arch) for nr in range(1024))))
    return frozenset(known)


def check_event_names(names: Iterable[str]) -> None:
    """Raise ValueError naming the closest known names unless each of ``names`` is a known
    event or ``event_<id>``."""
    known = known_event_names()
    for name in names:
        if name in known or _EVENT_ID.fullmatch(name):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.0)
        raise ValueError(f"unknown event {name!r}; closest known: {', '.join(close)} "
                         "(or event_<id> for a numbered event)")


@dataclass(frozen=True)
class EventFilter:
    """Which events to keep; every criterion given must hold, an unset one keeps any.

    ``events``: names as :attr:`Event.label` gives them (checked when made); ``pid``: the
    namespace or the host pid; ``comm``: the exact task name; ``failed``: only events
    whose return value is negative.
    """

    events: frozenset[str] = frozenset()
    pid: int | None = None
    comm: str | None = None
    failed: bool = False

    def __post_init__(self) -> None:
        check_event_names(self.events)

    def __bool__(self) -> bool:
        """False when it keeps every event."""
        return bool(self.events) or self.pid is not None or self.comm is not None or self.failed

    def matches(self, event: Event) -> bool:
        """Keep ``event``?"""
        if self.events and event.label not in self.events:
            return False
        if self.pid is not None and self.pid not in (event.pid, event.host_pid):
            return False
        if self.failed and not (event.retval is not None and event.retval < 0):
            return False
        return self.comm is None or event.comm == self.comm

    def mask(self, batch: Any) -> Any:
        """True for the rows of an Arrow record batch (``columnar.arrow``'s schema) to keep:
        the events :meth:`matches` keeps, and every row of lost samples, so that losses
        stay visible. A null field fails its criterion, as None does in :meth:`matches`."""
        import pyarrow as pa
        import pyarrow.compute as pc

        def holds(test: Any) -> Any:  # a null field fails, as None does in matches
            return pc.fill_null(test, False)

        keep = pc.is_valid(batch.column("lost"))  # a lost-samples row
        tests = []
        if self.events:
            tests.append(pc.is_in(pc.cast(batch.column("event"), pa.string()),
                                  pa.array(sorted(self.events), pa.string())))
        if self.pid is not None:
            tests.append(pc.or_(holds(pc.equal(batch.column("pid"), self.pid)),
                                holds(pc.equal(batch.column("host_pid"), self.pid))))
        if self.failed:
            tests.append(holds(pc.less(batch.column("retval"), 0)))
        if self.comm is not None:
            tests.append(holds(pc.equal(batch.column("comm"), self.comm))
                         if _shown_as_is(self.comm) else self._exact_comm_mask(batch))
        return pc.or_(keep, functools.reduce(pc.and_, tests, pa.scalar(True)))

    def _exact_comm_mask(self, batch: Any) -> Any:
        """The comm test row by row, for a name the ``comm`` column cannot tell apart: it
        shows bytes that are not UTF-8 as U+FFFD, but such a row keeps its sample in
        ``raw``, whose decoded comm is the Event's."""
        import pyarrow as pa

        return pa.array([
            (comm if raw is None else decode(raw, strict=False).comm) == self.comm
            for comm, raw in zip(batch.column("comm").to_pylist(),
                                 batch.column("raw").to_pylist(), strict=True)], pa.bool_())


def _shown_as_is(text: str) -> bool:
    """Does the ``comm`` column hold exactly ``text`` for a task of that name, and only then?"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\ufffd" not in text
