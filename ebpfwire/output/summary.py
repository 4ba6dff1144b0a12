"""An ``strace -c`` style summary of decoded events: calls, errors by errno, share.

A call is counted once: a syscall written as an entry and an exit event (execve) counts at
its exit, so the counts equal strace -c's and ``ebpfwire stats``'s.

A capture holds no syscall durations (one event per call, with its return value), so the
share column is each event's percentage of the calls, not of the time as in strace.
Pure functions over iterables, so any command or notebook can feed them events.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ebpfwire.capture import LostRecord
from ebpfwire.wire.catalogue import PAIRED, failed, failed_rows
from ebpfwire.wire.events import Event
from ebpfwire.wire.names import errno_name as errno_text
from ebpfwire.wire.text import escape

GROUPINGS = (None, "comm", "pid")


@dataclass(frozen=True)
class SummaryRow:
    """One event name's figures in a group; ``share`` is its percentage of the group's calls."""

    event: str
    calls: int
    errors: int
    errnos: dict[str, int] = field(default_factory=dict)  # errno name -> calls, most first
    share: float = 0.0


@dataclass(frozen=True)
class SummaryGroup:
    """The rows of one comm or one host pid (``key`` None when not grouped), most calls first.

    ``comms`` lists the task names a pid had, in the order first seen (exec renames).
    """

    key: str | int | None
    rows: list[SummaryRow]
    calls: int
    errors: int
    comms: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Summary:
    """The groups (largest first), and what the counts miss: lost and undecodable samples."""

    by: str | None
    groups: list[SummaryGroup]
    lost: int = 0
    undecodable: int = 0

    @property
    def calls(self) -> int:
        return sum(g.calls for g in self.groups)

    @property
    def errors(self) -> int:
        return sum(g.errors for g in self.groups)


def error_name(event: Event) -> str | None:
    """The errno name of a failed syscall event (``errno_N`` if unnamed), else None."""
    retval = event.retval
    if not failed(event.event_id, retval):
        return None
    return event.errno or f"errno_{-retval}"


class _Tally:
    __slots__ = ("calls", "errnos", "comms")

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.errnos: dict[str, Counter[str]] = {}
        self.comms: dict[str, None] = {}


def _group_key(event: Event, by: str | None) -> str | int | None:
    if by == "comm":
        return event.comm
    if by == "pid":
        return event.host_pid
    return None


def _group(key: str | int | None, tally: _Tally) -> SummaryGroup:
    total = sum(tally.calls.values())
    rows = []
    for name, calls in tally.calls.items():
        errnos = tally.errnos.get(name, Counter())
        by_errno = sorted(errnos.items(), key=lambda kv: (-kv[1], kv[0]))
        rows.append(SummaryRow(name, calls, sum(errnos.values()), dict(by_errno),
                               100.0 * calls / total))
    rows.sort(key=lambda r: (-r.calls, -r.errors, r.event))
    errors = sum(r.errors for r in rows)
    return SummaryGroup(key, rows, total, errors, list(tally.comms))


def _check_by(by: str | None) -> None:
    if by not in GROUPINGS:
        raise ValueError(f"by: expected None, 'comm' or 'pid', found {by!r}")


def summarise(
    events: Iterable[Event], lost: int = 0, by: str | None = None, undecodable: int = 0
) -> Summary:
    """Count ``events`` per event name (and per comm or host pid with ``by``).

    ``lost`` and ``undecodable`` are carried into the summary so that it can say what
    its counts miss; :func:`summarise_capture` finds them in a capture.
    """
    _check_by(by)
    tallies: dict[str | int | None, _Tally] = {}
    for event in events:
        key = _group_key(event, by)
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _Tally()
        if by == "pid":
            tally.comms[event.comm] = None
        name = event.label
        if event.argnum and name in PAIRED:
            continue  # the entry half: the exit event counts the call
        tally.calls[name] += 1
        err = error_name(event)
        if err is not None:
            tally.errnos.setdefault(name, Counter())[err] += 1
    return _summary(by, tallies, lost, undecodable)


def _summary(by: str | None, tallies: dict[str | int | None, _Tally], lost: int,
             undecodable: int) -> Summary:
    groups = [_group(key, tally) for key, tally in tallies.items() if tally.calls]
    groups.sort(key=lambda g: (-g.calls, str(g.key)))
    return Summary(by, groups, lost, undecodable)


def summarise_capture(
    decoded: Iterable[tuple[Any, Any]], by: str | None = None
) -> Summary:
    """Summarise the pairs of a :class:`~ebpfwire.capture.CaptureStream` (such as
    ``CaptureReader.events()``, one in file order): events counted, LOST records
    (``(record, None)``) summed as lost, decode errors counted as undecodable; process and
    container records (also ``(record, None)``) carry no event and are passed over."""
    lost = undecodable = 0

    def only_events() -> Iterable[Event]:
        nonlocal lost, undecodable
        for record, item in decoded:
            if item is None:
                if isinstance(record, LostRecord):
                    lost += record.count
            elif isinstance(item, Event):
                yield item
            else:
                undecodable += 1

    summary = summarise(only_events(), by=by)
    return Summary(summary.by, summary.groups, lost, undecodable)


class BatchCounts:
    """:func:`summarise`'s counts kept over Arrow record batches (the schema of
    :mod:`ebpfwire.columnar.arrow`), a batch at a time in columns: no Event is made.

    A row with a ``lost`` count adds it to the lost samples; every other row is an event,
    counted by the rules of :func:`summarise` (an exec's entry half not counted, errno
    names only for failed syscall events, a pid's comms in the order first seen).
    """

    def __init__(self, by: str | None = None):
        _check_by(by)
        self.by = by
        self.lost = 0
        self.tallies: dict[str | int | None, _Tally] = {}

    def add(self, batch: Any, comms: Mapping[int, str | None] | None = None) -> None:
        """Count the rows of ``batch``. ``comms``: the task name of rows (by index) whose
        ``comm`` column cannot show it exactly (bytes that are not UTF-8, which the column
        shows as U+FFFD): the Event's comm, decoded from the row's ``raw`` sample."""
        import numpy as np
        import pyarrow.compute as pc

        lost = batch.column("lost")
        if lost.null_count < len(lost):
            self.lost += pc.sum(lost).as_py()
        is_event = lost.is_null().to_numpy(zero_copy_only=False)
        if not is_event.any():
            return
        event = batch.column("event")
        names = event.dictionary.to_pylist()
        name = _ints(event.indices, 0)
        paired = np.array([label in PAIRED for label in names], bool)
        counted = is_event & ~((_ints(batch.column("argnum"), 0) != 0) & paired[name])
        event_ids = batch.column("event_id")
        retval = _ints(batch.column("retval"), 0)
        failure = (counted & event_ids.is_valid().to_numpy(zero_copy_only=False)
                   & failed_rows(_ints(event_ids, 0), retval))
        keys, group = self._groups(batch, comms)
        rows = np.flatnonzero(counted)
        retvals, which_retval = np.unique(np.where(failure, retval, 0)[rows],
                                          return_inverse=True)
        cells, calls = np.unique((group[rows] * len(names) + name[rows]) * len(retvals)
                                 + which_retval.reshape(-1), return_counts=True)
        for cell, count in zip(cells.tolist(), calls.tolist(), strict=True):
            rest, which = divmod(cell, len(retvals))
            at, label = divmod(rest, len(names))
            tally = self._tally(keys[at])
            tally.calls[names[label]] += count
            code = int(retvals[which])
            if code < 0:
                errno = errno_text(-code) or f"errno_{-code}"
                tally.errnos.setdefault(names[label], Counter())[errno] += count
        if self.by == "pid":
            self._comms(batch, comms, keys, group, np.flatnonzero(is_event))

    def _groups(self, batch: Any, comms: Mapping[int, str | None] | None) -> tuple[list, Any]:
        """The group keys and each row's index among them."""
        import numpy as np

        if self.by is None:
            return [None], np.zeros(len(batch), np.int64)
        if self.by == "comm":
            return _comm_codes(batch, comms)
        import pyarrow as pa
        import pyarrow.compute as pc

        pids = _ints(pc.cast(batch.column("host_pid"), pa.int64()), -1)
        unique, group = np.unique(pids, return_inverse=True)
        return [None if pid < 0 else pid for pid in unique.tolist()], group.reshape(-1)

    def _comms(self, batch: Any, comms: Mapping[int, str | None] | None, pids: list,
               group: Any, rows: Any) -> None:
        """Note each pid's comms in the order first seen."""
        import numpy as np

        names, code = _comm_codes(batch, comms)
        pairs, first = np.unique(group[rows] * len(names) + code[rows], return_index=True)
        for pair in pairs[np.argsort(first)].tolist():
            at, comm = divmod(pair, len(names))
            self._tally(pids[at]).comms[names[comm]] = None

    def _tally(self, key: str | int | None) -> _Tally:
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = _Tally()
        return tally

    def summary(self, undecodable: int = 0) -> Summary:
        """The summary of the rows counted so far; ``undecodable`` as in :func:`summarise`."""
        return _summary(self.by, self.tallies, self.lost, undecodable)


def _ints(column: Any, null: int) -> Any:
    """An integer column as numpy int64, ``null`` where it is null."""
    import numpy as np
    import pyarrow.compute as pc

    return np.asarray(pc.fill_null(column, null).to_numpy(zero_copy_only=False), np.int64)


def _comm_codes(batch: Any, comms: Mapping[int, str | None] | None) -> tuple[list, Any]:
    """The distinct comms of a batch (None for a null) and each row's index among them,
    ``comms`` overriding the column's."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(batch.column("comm"))
    names = [*encoded.dictionary.to_pylist(), None]
    code = _ints(encoded.indices, len(names) - 1)
    for row, comm in (comms or {}).items():
        code[row] = len(names)
        names.append(comm)
    return names, code


def summarise_batches(batches: Iterable[Any], by: str | None = None,
                      undecodable: int = 0) -> Summary:
    """:func:`summarise` of Arrow record batches (:func:`ebpfwire.columnar.arrow.batches`),
    counted in columns (:class:`BatchCounts`): lost rows summed, damaged rows counted
    under their names as far as they decode (as ``summary --lenient``)."""
    counts = BatchCounts(by)
    for batch in batches:
        counts.add(batch)
    return counts.summary(undecodable)


# --------------------------------------------------------------------------- rendering

_HEAD = f"{'% calls':>8} {'calls':>10} {'errors':>9} {'event':<22} errors by errno"
_RULE = f"{'-' * 8} {'-' * 10} {'-' * 9} {'-' * 22} {'-' * 15}"


def _errnos_text(errnos: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in errnos.items())


def _row(share: float, calls: int, errors: int, name: str, errnos: str) -> str:
    errors_text = str(errors) if errors else ""
    return f"{share:>8.2f} {calls:>10} {errors_text:>9} {name:<22} {errnos}".rstrip()


def _group_title(summary: Summary, group: SummaryGroup) -> str:
    if summary.by == "comm":
        return f"comm {escape(str(group.key))}"
    # a comm cut off with its sample's header (--lenient) is "?", as its event's name is
    comms = ", ".join("?" if c is None else escape(c) for c in group.comms)
    return f"pid {group.key} ({comms})"


def render_summary(summary: Summary) -> str:
    """The table: one block per group, each with its rows, a rule and a total row."""
    lines = ["% calls: each event's share of the calls (a capture has no syscall durations)"]
    for group in summary.groups:
        lines.append("")
        if summary.by is not None:
            lines.append(_group_title(summary, group))
        lines += [_HEAD, _RULE]
        for r in group.rows:
            lines.append(_row(r.share, r.calls, r.errors, r.event, _errnos_text(r.errnos)))
        lines.append(_RULE)
        lines.append(_row(100.0, group.calls, group.errors, "total", ""))
    if not summary.groups:
        lines += ["", "no events"]
    if summary.by is not None and len(summary.groups) > 1:
        lines += ["", f"all groups: {summary.calls} calls, {summary.errors} errors"]
    if summary.lost or summary.undecodable:
        lines += ["", f"not counted: {summary.lost} samples lost by the kernel, "
                      f"{summary.undecodable} samples that did not decode"]
    return "\n".join(lines) + "\n"


def summary_json(summary: Summary) -> dict[str, Any]:
    """The stable JSON form (docs/stats.md): only JSON types, every key always present."""
    return {
        "by": summary.by,
        "share_of": "calls",
        "calls": summary.calls,
        "errors": summary.errors,
        "lost": summary.lost,
        "undecodable": summary.undecodable,
        "groups": [
            {
                "key": g.key,
                "comms": g.comms,
                "calls": g.calls,
                "errors": g.errors,
                "events": [
                    {"event": r.event, "calls": r.calls, "errors": r.errors,
                     "errnos": dict(r.errnos), "share": round(r.share, 4)}
                    for r in g.rows
                ],
            }
            for g in summary.groups
        ],
    }
