"""Samples in time order across CPUs, through a bounded reorder window: the one window of
the package (captures, ``ps``, ``decode``, the columnar outputs, ``trace`` and the perf
reader's ``merge_by_ts`` all order through it, so they place records alike).

The kernel orders samples within one CPU's ring only, and ``record`` writes the rings
batch by batch, so a capture interleaves CPUs with a skew of up to a batch (one recording
went back in time by 103 ms). :class:`TimeOrder` holds records and releases them in
``ts`` order once the newest ``ts`` seen is more than the window ahead of them, or
earlier when more than ``max_records`` records or ``max_bytes`` bytes of samples are held.
``ebpfwire.columnar.rowcontext.Releases`` works out the same order for blocks of records
with numpy (tests/test_rowcontext.py holds the two equal). TimeOrder lives in the wire
layer because it needs only what every sample is on the wire (its ``ts`` first) and so
that the capture and kernel sides, peers, can both use it; each names its own record
classes (anything with ``cpu`` and ``data``, resp. ``cpu``).

Rules (docs/cli.md, "Time order"):

- A sample's ``ts`` is read from its first 8 bytes (u64 little-endian), the same for every
  layout, so ordering costs no decoding and the fast JSON path stays fast.
- A sample whose ``ts`` is older than one already released (it came later than the
  window) is released at once, out of order, and counted in ``late``.
- A LOST record (no ``ts``) keeps its place among its CPU's samples: it sorts as the last
  sample of that CPU read before it (file order breaks ties); before any sample of its
  CPU, where the file has it: as the newest sample of any CPU read before it. A sample
  too short to hold a ``ts`` is placed the same way.
- A :class:`Clock` (a live reader's "now") moves the newest ``ts`` on without records, so
  that a quiet machine's last events are released too; it is not yielded.
- A :class:`Drained` (a live reader that has just read every ring dry) says that every
  sample older than its ``ts`` has been read: those are released at once, whatever the
  window, so that a live line waits for the rings' next read and not for a window.
- Records of any other type (a capture's process and container records) pass at once:
  they describe what the events held need.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ebpfwire.wire.layouts import header_reader

#: 1 s: ten times the largest skew seen in a real recording (103 ms), five times the
#: recorder's flush period (0.2 s), while holding only about one second of events.
WINDOW_NS = 1_000_000_000
MAX_RECORDS = 100_000  # about 1 s of a busy machine; ~40 MB of records at most
MAX_BYTES = 64 << 20

_TS_FIELD = header_reader("ts")   # the first bytes of a sample in every layout
_TS, _TS_SIZE = _TS_FIELD.unpack_from, _TS_FIELD.size


@dataclass(frozen=True, slots=True)
class Clock:
    """The time now, on the clock of the samples' ``ts`` (CLOCK_MONOTONIC)."""

    ts: int


@dataclass(frozen=True, slots=True)
class Drained:
    """Every sample with a ``ts`` before this one has been read (CLOCK_MONOTONIC)."""

    ts: int


class TimeOrder:
    """Iterate records in ``ts`` order within a bounded window (see the module's rules).

    ``sample`` and ``lost`` are the record classes to order (matched by exact type, the
    cheapest test on this hot path). Records are collected in a list that is sorted
    (timsort: the per-CPU batches are already sorted runs, so a sort costs little more
    than a merge) each time the newest ``ts`` has moved half a window on, a :class:`Clock`
    arrives, or a bound is reached; what is then more than a window older than the newest
    ``ts`` is released. A record is thus held between one and one and a half windows (of
    ``ts``), or less when a bound forces it out or a clock sweeps.
    """

    def __init__(self, sample: type, lost: type, window_ns: int = WINDOW_NS,
                 max_records: int = MAX_RECORDS, max_bytes: int = MAX_BYTES):
        self.sample = sample
        self.lost = lost
        self.window_ns = window_ns
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.late = 0
        #: The ``ts`` of the oldest record held after the last sweep (None: none held): when
        #: a live reader's next :class:`Drained` can release something.
        self.oldest_held: int | None = None
        #: Records released before their window had passed because a bound was reached:
        #: past this, a sample may come late (``late``) where a wider window would have
        #: placed it; reported so that nobody mistakes a bounded order for a full one.
        self.early = 0

    def __call__(self, records: Iterable[Any]) -> Iterator[Any]:
        held: list[tuple[int, int, Any]] = []
        append = held.append
        cpu_ts: dict[int, int] = {}   # the ts of each CPU's last sample read
        newest = released = drained = -1
        held_bytes = 0
        window, max_records, max_bytes = self.window_ns, self.max_records, self.max_bytes
        sample, lost = self.sample, self.lost
        sweep_at = None  # the newest ts at which the next sweep is due
        for seq, record in enumerate(records):
            kind = type(record)
            if kind is sample:
                data = record.data
                size = len(data)
                if size >= _TS_SIZE:
                    ts = _TS(data)[0]
                    cpu_ts[record.cpu] = ts
                    if ts < released:
                        self.late += 1
                        yield record
                        continue
                else:
                    ts = max(cpu_ts.get(record.cpu, newest), released)
            elif kind is lost:
                size = 0
                ts = max(cpu_ts.get(record.cpu, newest), released)
            elif kind is Clock or kind is Drained:
                newest = max(newest, record.ts)
                if not held:
                    continue
                sweep_at = newest  # sweep now
                ts = size = -1
                if kind is Drained:
                    drained = record.ts
            else:
                yield record
                continue
            if size >= 0:
                append((ts, seq, record))
                held_bytes += size
                if ts > newest:
                    newest = ts
                    if sweep_at is None:
                        sweep_at = ts + window + window // 2
            full = len(held) > max_records or held_bytes > max_bytes
            if not full and (sweep_at is None or newest < sweep_at):
                continue
            held.sort()
            limit = max(newest - window + 1, drained)
            drained = -1
            cut = bisect_left(held, (limit,)) if not full else 0
            if full:  # release the oldest until half the bounds are free
                keep_bytes, room = held_bytes, len(held)
                while cut < room and (room - cut > max_records // 2
                                      or keep_bytes > max_bytes // 2):
                    item = held[cut][2]
                    if type(item) is sample:
                        keep_bytes -= len(item.data)
                    cut += 1
                self.early += cut - bisect_left(held, (limit,), 0, cut)
            if cut:
                for _, _, out in held[:cut]:
                    if type(out) is sample:
                        held_bytes -= len(out.data)
                    yield out
                released = held[cut - 1][0]
                del held[:cut]
            sweep_at = newest + window // 2
            self.oldest_held = held[0][0] if held else None
        held.sort()
        for _, _, out in held:
            yield out
