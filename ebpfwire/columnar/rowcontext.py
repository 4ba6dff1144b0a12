"""The process context of a capture's rows, for the columnar outputs (``ebpfwire.columnar.arrow``,
``ebpfwire.columnar.export``, ``ebpfwire.columnar.dask``): the ``process``, ``parent_process`` and
``container_id`` columns, exactly what ``decode --format jsonl`` ends each line with.

One :class:`~ebpfwire.process.enrich.Enricher` answers as decode's does (context records
when read, samples and losses in the reorder window's ``ts`` order), but is given only
the samples whose answer it does not keep already (:class:`_Join`): every other row takes
its pid's kept answer by a forward fill. The time order of a block of records is worked
out with numpy (:class:`Releases`). Rows stay in file order. An answer is the id of a
distinct (process, parent, container) value; columns are made by one ``take`` of a small
array of the distinct values a batch uses (no Python object per row).

Two ways to get the answers:

- :class:`StreamContext`: one pass, the reader's records read in blocks for both the time
  order and the batch builder; what is held is bounded by the reorder window and a block.
- :class:`ContextIndex`: built once per capture (:func:`index_capture`), 12 bytes per
  sample (file offset, answer id), and cut into the slices of byte ranges
  (:meth:`ContextIndex.within`): a range read on its own cannot know the processes
  started before it.
"""

from __future__ import annotations

import heapq
import os
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ebpfwire.capture import CaptureDamage, CaptureReader, LostRecord, SampleRecord
from ebpfwire.capture.bulk import TAKE_BYTES, Intake, RecordBlock, fitting
from ebpfwire.collect import fewer_collections
from ebpfwire.process.enrich import Enricher
from ebpfwire.process.table import Program
from ebpfwire.wire.layouts import HOST_PID, OFFSETS, Layout, get_layout
from ebpfwire.wire.order import TimeOrder

PROCESS_TYPE = pa.struct([("exe", pa.string()), ("argv", pa.list_view(pa.string())),
                          ("source", pa.string())])
"""``argv`` is a list view: the rows of one answer share one range of its values, so a
batch holds each distinct argv once, whatever its rows (a list would copy it per row)."""
PARENT_TYPE = pa.struct([("exe", pa.string()), ("source", pa.string())])
FIELDS: list[tuple[str, pa.DataType]] = [
    ("process", PROCESS_TYPE), ("parent_process", PARENT_TYPE), ("container_id", pa.string()),
]
"""The context columns, after the event's own (as the JSON lines have them)."""

#: (exe, argv, source) or None; (exe, source) or None; container id or None
Value = tuple[tuple | None, tuple | None, str | None]


def _utf8(text: str) -> str:
    """Arrow strings are UTF-8: bytes that were not (kept as lone surrogates) become U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


#: Distinct answers a stream holds before it forgets those nothing refers to any more.
KEEP_ANSWERS = 1 << 12


def column_value(program: Program | None, parent: Program | None,
                 container_id: str | None) -> Value:
    """An answer as the context columns hold it (Arrow strings: UTF-8)."""
    return (
        None if program is None else (
            _utf8(program.exe) if program.exe else None,
            program.argv if "".join(program.argv).isascii()   # (most are: no call each)
            else tuple(map(_utf8, program.argv)), program.source),
        None if parent is None else (_utf8(parent.exe) if parent.exe else None,
                                     parent.source),
        container_id)


class Answers:
    """The distinct answers of one capture, each numbered once (``make`` of the Enricher):
    ``values`` maps each number to its value, made by ``value`` (by default
    :func:`column_value`; ``decode``'s bulk path: the JSON lines' fields).

    Answers are compared by value, as the JSON lines show them (two runs of one program
    with the same argv are one answer). A stream (:meth:`forget`) keeps only the answers
    that rows not yet built or the enricher's caches refer to: a capture makes a new one
    for nearly every process life, and would otherwise hold them all."""

    def __init__(self, value: Callable[..., Any] = column_value,
                 key: Callable[[Any], tuple] | None = None) -> None:
        self.values: dict[int, Any] = {}
        self._value = value
        self.key = key   # the Enricher's: what ``value`` is made of (by default its three)
        self._ids: dict[Any, int] = {}
        self._next = 0
        self._forget_at = KEEP_ANSWERS

    def forget(self, held: Callable[[], set[int]]) -> set[int] | None:
        """Past a bound, forget every answer whose number is not in ``held()`` and return
        what was kept (else None); the bound then doubles what was kept, so that the work
        stays linear in the answers made."""
        if len(self.values) < self._forget_at:
            return None
        keep = held()
        values, ids = self.values, self._ids
        for number in [number for number in values if number not in keep]:
            del ids[values.pop(number)]
        self._forget_at = max(KEEP_ANSWERS, 2 * len(values))
        return keep

    def make(self, *parts: Any) -> int:
        value = self._value(*parts)
        number = self._ids.get(value)
        if number is None:
            number = self._ids[value] = self._next
            self._next += 1
            self.values[number] = value
        return number


def columns(values: Mapping[int, Value] | Sequence[Value], ids: np.ndarray) -> list[pa.Array]:
    """The three context columns of rows with answer ``ids`` (-1: none, all null), made from
    the distinct values those rows use and one ``take`` each."""
    placed = ids >= 0
    used, inverse = np.unique(ids[placed], return_inverse=True)
    # the distinct values, then one more: null, for the rows without an answer
    chosen: list[Value] = [values[number] for number in used.tolist()]
    chosen.append((None, None, None))
    index = np.full(len(ids), len(chosen) - 1, np.int32)
    index[placed] = inverse
    where = pa.array(index)
    programs = [p for p, _, _ in chosen]
    argvs = [() if p is None else p[1] for p in programs]
    sizes = np.fromiter(map(len, argvs), np.int32, len(argvs))
    starts = np.cumsum(sizes, dtype=np.int32) - sizes
    argv = pa.ListViewArray.from_arrays(
        pa.array(starts[index]), pa.array(sizes[index]),
        pa.array([arg for args in argvs for arg in args], pa.string()))
    process = pa.StructArray.from_arrays(
        [pa.array([None if p is None else p[0] for p in programs], pa.string()).take(where),
         argv,
         pa.array([None if p is None else p[2] for p in programs], pa.string()).take(where)],
        fields=list(PROCESS_TYPE),
        mask=pa.array(np.array([p is None for p in programs])[index]))
    parent = pa.array([None if p is None else {"exe": p[0], "source": p[1]}
                       for _, p, _ in chosen], PARENT_TYPE)
    container = pa.array([c for _, _, c in chosen], pa.string())
    return [process, parent.take(where), container.take(where)]


class Releases:
    """The order in which :class:`~ebpfwire.wire.order.TimeOrder` releases records, worked
    out for blocks of records at once with numpy: the same window, bounds and rules (late
    samples released at once, LOST records and samples without a ``ts`` placed after their
    CPU's last sample).

    Every sweep of the window that a block makes is worked out at once: the newest ``ts``
    only grows, so the sweeps are where it passes each next threshold, and their cut-offs
    grow too; a held record goes at the first sweep at or after its arrival whose cut-off
    is past its ``ts`` (two ``searchsorted``). Only where a bound is reached does a block
    stop for a sort of what is held (the oldest go until half the bound is free).

    :meth:`add` takes the next records (file order) as arrays and returns the arrival
    numbers (0 for the first record ever added) of those released, in release order, and
    the arrival at which each was released (a record read before that arrival has been
    read when it is released); :meth:`end` releases the rest. ``late`` and ``early`` count
    as TimeOrder's do (what a command's notes on the order say).
    """

    def __init__(self, order: TimeOrder):
        self.window_ns, self.max_records, self.max_bytes = (order.window_ns, order.max_records,
                                                         order.max_bytes)
        self.arrived = 0
        self.newest = self.released = -1
        self.late = self.early = 0
        self._sweep_at: int | None = None
        self._cpu_ts: dict[int, int] = {}
        self._ahead = LOOK_AHEAD
        # the held records: ts (-1 kept as 0, with ``_neg``: only records read before any
        # ts have it, so they stay first), arrival, bytes
        self._ts = np.empty(0, np.uint64)
        self._neg = np.empty(0, bool)
        self._seq = np.empty(0, np.int64)
        self._size = np.empty(0, np.int64)
        self._bytes = 0

    @property
    def oldest_held(self) -> int:
        """The first arrival not released yet (``arrived`` when none is held)."""
        return int(self._seq.min()) if len(self._seq) else self.arrived

    def add(self, ts: np.ndarray, has_ts: np.ndarray, cpu: np.ndarray,
            size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Records in file order: ``ts`` (uint64; read where ``has_ts``), ``cpu``,
        ``size`` (a sample's bytes, 0 for a LOST record)."""
        out: list[np.ndarray] = []
        at: list[np.ndarray] = []
        count, i = len(ts), 0
        while i < count:
            # up to the next time a bound is reached, looked for in twice as many records as
            # the last stretch took: linear, however often a bound is reached
            end = min(count, i + self._ahead)
            done = self._segment(ts[i:end], has_ts[i:end], cpu[i:end], size[i:end], i, out,
                                 at)
            self._ahead = 2 * (end - i) if done == end else max(LOOK_AHEAD, 2 * (done - i))
            i = done
        self.arrived += count
        if not out:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(out), np.concatenate(at)

    def _sweeps(self, ts: np.ndarray, has_ts: np.ndarray,
                newest_at: np.ndarray) -> tuple[list[int], int | None]:
        """Where the window sweeps among these records (by the newest ts: at or past the
        threshold, then half a window past the newest at that sweep), and the threshold
        after them."""
        sweep_at, half, low = self._sweep_at, self.window_ns // 2, 0
        if self.newest < 0:   # no ts yet: no sweep before the first (it releases nothing)
            if not has_ts.any():
                return [], sweep_at
            low = int(np.argmax(has_ts))
            if sweep_at is None:
                sweep_at = int(ts[low]) + self.window_ns + half
                low += 1
        elif self.newest >= sweep_at and self.released >= 0:
            # a bound was reached with no half window to wait (a window of 1 ns): the next
            # sweep is at the next record that is not late
            late = has_ts & (ts < np.uint64(self.released))
            low = len(ts) if late.all() else int(np.argmax(~late))
        sweeps: list[int] = []
        if low < len(ts) and int(newest_at[-1]) >= sweep_at:
            newest = newest_at.tolist()
            while (j := bisect_left(newest, sweep_at, low)) < len(newest):
                sweeps.append(j)
                sweep_at, low = newest[j] + half, j + 1
        return sweeps, sweep_at

    def _segment(self, ts: np.ndarray, has_ts: np.ndarray, cpu: np.ndarray,
                 size: np.ndarray, i: int, out: list, at: list) -> int:
        """Take records up to the first at which a bound is reached (or all of them),
        releasing what their sweeps release; the index after the last taken."""
        count, held = len(ts), len(self._seq)
        released0, newest0 = self.released, self.newest
        seen = np.cumsum(has_ts)                      # records with a ts up to each
        # the newest ts after each record (a late sample's is older than the newest one)
        newest_at = np.maximum.accumulate(np.where(has_ts, ts, 0))
        if newest0 >= 0:
            np.maximum(newest_at, np.uint64(newest0), out=newest_at)
        sweeps, sweep_at = self._sweeps(ts, has_ts, newest_at)
        eff, neg = ts.copy(), np.zeros(count, bool)   # the records' ts, placed
        untimed = np.flatnonzero(~has_ts)
        if len(untimed):
            self._place(ts, has_ts, cpu, seen, newest_at, untimed, eff, neg)
        # the last released when each record is read
        known = np.full(count, released0 >= 0)
        floor = np.full(count, max(released0, 0), np.uint64)
        swept_n = len(sweeps)
        if swept_n:
            swept = np.array(sweeps, np.int64)
            # the held records, then these: ts, before any ts, sweeps before each (a
            # sweep at a record follows it)
            all_ts, all_neg = np.concatenate([self._ts, eff]), np.concatenate([self._neg, neg])
            before = np.concatenate([np.zeros(held, np.int64),
                                     np.searchsorted(swept, np.arange(count), "left")])
            goes = self._goes(swept, newest_at, all_ts, all_neg, before)
            last, any_gone = self._last_released(goes, all_ts, all_neg, swept_n)
            prior = before[held:] - 1
            after = prior >= 0
            known[after], floor[after] = any_gone[prior[after]], last[prior[after]]
        late = has_ts & known & (ts < floor)
        lifted = ~has_ts & known & (neg | (eff < floor))   # placed never before it
        eff[lifted], neg[lifted] = floor[lifted], False
        kept = ~late
        # how many records and bytes are held when each is read, for the bounds
        held_n = held + np.cumsum(kept)
        held_b = self._bytes + np.cumsum(np.where(kept, size, 0))
        if swept_n:
            all_ts[held:], all_neg[held:] = eff, neg
            all_size = np.concatenate([self._size, size])
            # the record at whose sweep each goes (count: not in these records)
            when = np.where(goes < swept_n, swept[np.minimum(goes, swept_n - 1)], count)
            when[held:][late] = count
            freed = np.bincount(when, minlength=count + 1)[:count]
            freed_bytes = np.bincount(when, all_size, minlength=count + 1)[:count]
            held_n -= np.cumsum(freed) - freed
            held_b -= (np.cumsum(freed_bytes) - freed_bytes).astype(np.int64)
        full = kept & ((held_n > self.max_records) | (held_b > self.max_bytes))
        stop = int(np.argmax(full)) if full.any() else count - 1
        is_full = bool(full[stop])
        base = self.arrived + i
        taken = np.arange(count) <= stop
        self.late += int(np.count_nonzero(late[:stop + 1]))
        if swept_n:
            done = int(np.searchsorted(swept, stop, "left")) if is_full else swept_n
            # released: the late samples at their arrival, the others at their sweep's
            seq = np.concatenate([self._seq, np.arange(base, base + count)])
            late_all = np.concatenate([np.zeros(held, bool), late])
            when[held:][late] = np.flatnonzero(late)
            go = (late_all & np.concatenate([np.zeros(held, bool), taken])) | (
                ~late_all & (goes < done))
            if go.any():
                order = np.lexsort((seq[go], all_ts[go], ~all_neg[go], when[go]))
                out.append(seq[go][order])
                at.append(when[go][order] + base)
            stay = ~go & ~late_all & np.concatenate([np.ones(held, bool), taken])
            self._ts, self._neg, self._seq = all_ts[stay], all_neg[stay], seq[stay]
            self._size = all_size[stay]
            self._bytes = int(self._size.sum())
            if done:
                self.released = int(last[done - 1]) if any_gone[done - 1] else -1
        else:
            gone = np.flatnonzero(late & taken) + base
            if len(gone):
                out.append(gone)
                at.append(gone)
            stay = kept & taken
            self._ts = np.concatenate([self._ts, eff[stay]])
            self._neg = np.concatenate([self._neg, neg[stay]])
            self._seq = np.concatenate([self._seq, np.flatnonzero(stay) + base])
            self._size = np.concatenate([self._size, size[stay]])
            self._bytes = int(held_b[stop])
        if newest0 >= 0 or seen[stop]:
            self.newest = int(newest_at[stop])
        self._sweep_at = sweep_at
        cpus = cpu[taken][has_ts[taken]]
        if len(cpus):   # each CPU's last ts
            last_of = len(cpus) - 1 - np.unique(cpus[::-1], return_index=True)[1]
            stamps = ts[taken][has_ts[taken]]
            self._cpu_ts.update(zip(cpus[last_of].tolist(), stamps[last_of].tolist(),
                                    strict=True))
        if is_full:
            self._release_oldest(base + stop, out, at)
        return i + stop + 1

    def _goes(self, swept: np.ndarray, newest_at: np.ndarray, ts: np.ndarray,
              neg: np.ndarray, before: np.ndarray) -> np.ndarray:
        """The sweep that releases each record (len(swept): none of them): the first at or
        after it whose cut-off (newest - window + 1, ascending) is past its ts (a ts before
        any: once the cut-off is >= 0)."""
        top = newest_at[swept]
        lag = np.uint64(self.window_ns - 1)
        cuts = np.where(top >= lag, top - lag, np.uint64(0))
        goes = np.where(neg, int(np.searchsorted(top, lag, "left")),
                        np.searchsorted(cuts, ts, "right"))
        return np.maximum(goes, before, out=goes)

    def _last_released(self, goes: np.ndarray, ts: np.ndarray, neg: np.ndarray,
                       swept_n: int) -> tuple[np.ndarray, np.ndarray]:
        """The last released after each sweep (uint64, where the second is true; else none
        yet): the greatest ts released by then (a late sample's, or that of a record placed
        before it, is no greater, so these may be counted whether they are or not)."""
        gone = (goes < swept_n) & ~neg
        last = np.zeros(swept_n, np.uint64)
        np.maximum.at(last, goes[gone], ts[gone])
        any_gone = np.zeros(swept_n, bool)
        any_gone[goes[gone]] = True
        if self.released >= 0:
            np.maximum(last, np.uint64(self.released), out=last)
            any_gone[:] = True
        np.maximum.accumulate(last, out=last)
        np.logical_or.accumulate(any_gone, out=any_gone)
        return last, any_gone

    def _place(self, ts: np.ndarray, has_ts: np.ndarray, cpu: np.ndarray, seen: np.ndarray,
               newest_at: np.ndarray, untimed: np.ndarray, eff: np.ndarray,
               neg: np.ndarray) -> None:
        """The ts of records without one: their CPU's last sample's, else the newest
        read, and never before the last released (before these records: the caller lifts
        them past what their sweeps release)."""
        timed = np.flatnonzero(has_ts)
        last = np.full(len(untimed), -1, np.int64)   # their CPU's last sample before them
        for one in np.unique(cpu[untimed]).tolist():
            mine = timed[cpu[timed] == one]
            these = np.flatnonzero(cpu[untimed] == one)
            if len(mine):
                before = np.searchsorted(mine, untimed[these]) - 1
                last[these] = np.where(before >= 0, mine[np.maximum(before, 0)], -1)
        for k, found in zip(untimed.tolist(), last.tolist(), strict=True):
            if found >= 0:
                value = int(ts[found])
            elif int(cpu[k]) in self._cpu_ts:
                value = self._cpu_ts[int(cpu[k])]
            elif k and seen[k - 1]:
                value = int(newest_at[k - 1])
            else:
                value = self.newest
            value = max(value, self.released)
            eff[k], neg[k] = max(value, 0), value < 0

    def _release_oldest(self, arrival: int, out: list, at: list) -> None:
        """A bound is reached: release the oldest held until half of each is free."""
        order = np.lexsort((self._seq, self._ts, ~self._neg))
        ts, neg = self._ts[order], self._neg[order]
        seq, size = self._seq[order], self._size[order]
        room = len(seq)
        sums = np.zeros(room + 1, np.int64)
        np.cumsum(size, out=sums[1:])
        cut = min(room, max(room - self.max_records // 2,
                            int(np.searchsorted(sums, sums[-1] - self.max_bytes // 2))))
        if cut:
            # let out before their window passed: at or past its cut-off (-1: before any ts)
            limit = self.newest - self.window_ns + 1
            self.early += cut if limit < 0 else int(np.count_nonzero(
                ~neg[:cut] & (ts[:cut] >= np.uint64(limit))))
            out.append(seq[:cut])
            at.append(np.full(cut, arrival, np.int64))
            self.released = -1 if neg[cut - 1] else int(ts[cut - 1])
            self._bytes = int(sums[-1] - sums[cut])
        self._ts, self._neg, self._seq, self._size = ts[cut:], neg[cut:], seq[cut:], size[cut:]
        self._sweep_at = self.newest + self.window_ns // 2

    def end(self) -> np.ndarray:
        """The records still held, in release order (the input ended)."""
        order = np.lexsort((self._seq, self._ts, ~self._neg))
        seq = self._seq[order]
        self._ts, self._neg = np.empty(0, np.uint64), np.empty(0, bool)
        self._seq, self._size = np.empty(0, np.int64), np.empty(0, np.int64)
        self._bytes = 0
        return seq


#: Samples the join cuts out of the read buffers at a time for the enricher, at most, and
#: their bytes at most (a window of big samples is not copied at once).
CUT_AT_ONCE = 256
CUT_BYTES = 1 << 16
#: Records a block's time order looks at for the next time a bound is reached, at least.
LOOK_AHEAD = 4


class _Fields:
    """The header fields the join needs, for a list of raw samples: host pid, the fields a
    kept answer is checked against (host ppid, namespace ids, comm, cwd) as one key per
    sample, and whether the sample changes state or is too short to be placed."""

    def __init__(self, layout: Layout, stateful: frozenset[int]):
        self.size = layout.size
        self.stateful = np.array(sorted(stateful), np.uint32)
        self.key_bytes = [(OFFSETS["pid_id"], OFFSETS["host_pid"]),
                          (OFFSETS["comm"], OFFSETS["comm"] + 16)]
        if "cwd" in layout.extra_names:
            fields = layout.schema.subcons
            at = layout.field_names.index("cwd")
            start = sum(field.sizeof() for field in fields[:at])
            self.key_bytes.append((start, start + fields[at].sizeof()))
        self.pid_at = OFFSETS["host_pid"]
        self.event_at = OFFSETS["event_id"]

    def __call__(self, segments: Sequence[tuple[bytes, np.ndarray, np.ndarray]]
                 ) -> tuple[np.ndarray, ...]:
        """(host pid, key, stateful, short, ts, length) of each sample, the samples given
        as (buffer, begins, ends) in order (an empty one: a LOST record's place); ts is read
        where the length is 8 or more."""
        size = self.size
        rows = np.concatenate([np.empty((0, size), np.uint8),
                               *(heads(*segment, size) for segment in segments)])
        lengths = np.concatenate([np.empty(0, np.int64),
                                  *(ends - begins for _, begins, ends in segments)])
        pid = rows[:, self.pid_at:self.pid_at + 4].copy().view("<u4")[:, 0]
        event = rows[:, self.event_at:self.event_at + 4].copy().view("<u4")[:, 0]
        key = np.concatenate([rows[:, a:b] for a, b in self.key_bytes], axis=1)
        key = np.ascontiguousarray(key).view(f"V{key.shape[1]}")[:, 0]
        ts = rows[:, :8].copy().view("<u8")[:, 0]
        return pid, key, np.isin(event, self.stateful), lengths < size, ts, lengths


def heads(buf: bytes, begins: np.ndarray, ends: np.ndarray, size: int) -> np.ndarray:
    """The first ``size`` bytes of each sample ``buf[begins[i]:ends[i]]`` (begins in order,
    the samples not overlapping), as a (samples, size) uint8 array, zero-padded where a
    sample is shorter. Cut by Arrow's ``binary_slice`` from the samples as items of one
    binary array over ``buf`` (an item runs on to the next sample: only its head is read),
    with no bytes object per sample; only the short ones are cut one by one."""
    count = len(begins)
    short = ends - begins < size
    full = np.flatnonzero(~short) if short.any() else None
    starts = begins if full is None else begins[full]
    rows = np.zeros((count, size), np.uint8)
    if len(starts):
        bounds = np.empty(len(starts) + 1, np.int64)
        bounds[:-1] = starts
        bounds[-1] = ends[-1 if full is None else full[-1]]
        items = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(starts), [
            None, pa.py_buffer(bounds), pa.py_buffer(buf)])
        got = np.frombuffer(pc.binary_slice(items, 0, size).buffers()[2], np.uint8,
                            len(starts) * size).reshape(-1, size)
        if full is None:
            return got
        rows[full] = got
    for row in np.flatnonzero(short).tolist():
        piece = buf[begins[row]:ends[row]]
        rows[row, :len(piece)] = np.frombuffer(piece, np.uint8)
    return rows


class _Join:
    """The answers of samples in time order, from the enricher over only the samples whose
    answer is not already known.

    The enricher keeps one answer per host pid with the header fields it was made for,
    and gives it to a later sample of that pid whose fields match, without asking the
    table (:class:`~ebpfwire.process.enrich.Enricher`), until the table says (its
    ``on_forget``) that the pid's answers may have changed. Such a sample changes nothing:
    so the enricher is given only the others (a sample that changes state, is too short,
    the first of its pid, one whose fields differ from the pid's previous sample's, one
    after a forget of its pid or after a sample that left the pid no kept answer), in
    time order with the losses and context records at their places; every other sample
    takes the kept answer of its pid's last sample given, by a forward fill along each
    pid's samples. The enricher sees what it would see if given every sample, less
    samples that it would answer from a kept answer, so every answer is its own.
    """

    def __init__(self, enricher: Enricher[int], layout: Layout):
        self.enricher = enricher
        self.fields = _Fields(layout, enricher.table.state_event_ids)
        self._unpack = layout.fmt.unpack_from
        self._forgotten: list[int] | None = []
        enricher.on_forget = self._forget

    def _forget(self, pids: list[int] | None) -> None:
        if pids is None:
            self._forgotten = None
        elif self._forgotten is not None:
            self._forgotten.extend(pids)

    def answer(self, data_of: Callable[[int], bytes],
               datas_of: Callable[[np.ndarray, int], list[bytes]],
               fields: Sequence[np.ndarray], steps: Sequence[tuple[int, Any]]) -> np.ndarray:
        """The answers of samples in time order, with their ``fields`` (as :class:`_Fields`
        gives them); for the samples the enricher is given, ``data_of(i)`` cuts sample i's
        bytes and ``datas_of(rows, max_bytes)`` those of the first samples of ``rows`` that
        fit in ``max_bytes`` (at least one: the samples known to be given, a few at a
        time); ``steps`` are the losses (a count) and context records between them, in
        order, each with the number of samples before it."""
        count = len(fields[0])
        ids = np.full(count, -1, np.int32)
        self._forgotten = []
        pid, key, stateful, short = fields[:4]
        placed = np.flatnonzero(~short)
        order = placed[np.argsort(pid[placed], kind="stable")]   # each pid's samples
        chain_pid = pid[order]
        heads = np.ones(len(order), bool)
        heads[1:] = chain_pid[1:] != chain_pid[:-1]
        same = np.zeros(len(order), bool)
        same[1:] = ~heads[1:] & (key[order[1:]] == key[order[:-1]])
        given = short | stateful
        given[order[~same]] = True
        firsts = np.flatnonzero(heads)     # where each pid's samples are in ``order``
        spans = dict(zip(chain_pid[firsts].tolist(),
                         zip(firsts.tolist(), np.append(firsts, len(order))[1:].tolist(),
                             strict=True), strict=True))
        fill = np.full(count, -1, np.int32)     # a given sample's kept answer, else -1
        given_rows = np.flatnonzero(given)
        queue = given_rows.tolist()
        queue.append(count)
        is_given = given.tolist()   # (lists in the loop: no numpy call per sample)
        datas: list[bytes] = []   # the bytes of queue[cut:], cut a few at a time
        cut = 0
        extra: list[int] = []        # samples given because of a forget (a heap)
        q = step = 0
        enricher, unpack, size = self.enricher, self._unpack, self.fields.size
        sample, kept = enricher.sample, enricher.kept_answer

        chains = order.tolist()

        def after(place: int) -> None:
            """The pids forgotten so far: their next sample at or after ``place`` is given."""
            forgotten, self._forgotten = self._forgotten, []
            for host_pid in spans if forgotten is None else forgotten:
                span = spans.get(host_pid)
                if span is None:
                    continue
                at = bisect_left(chains, place, *span)
                if at < span[1] and not is_given[row := chains[at]]:
                    is_given[row] = True
                    heapq.heappush(extra, row)

        while True:
            nxt = queue[q]
            if extra and extra[0] < nxt:
                nxt = extra[0]
            if step < len(steps) and steps[step][0] <= nxt:
                item = steps[step][1]
                step += 1
                if type(item) is int:
                    enricher.lost(item)
                else:
                    enricher.feed(item)
                    if self._forgotten != []:
                        after(steps[step - 1][0])
                continue
            if nxt >= count:
                break
            if extra and extra[0] == nxt:
                heapq.heappop(extra)
                data = data_of(nxt)
            else:
                if q - cut >= len(datas):
                    cut, datas = q, datas_of(given_rows[q:q + CUT_AT_ONCE], CUT_BYTES)
                data = datas[q - cut]
                q += 1
            if len(data) < size:
                ids[nxt] = sample(data)
            else:
                values = unpack(data)
                ids[nxt] = sample(data, values)
                host_pid = values[HOST_PID]
                answer = kept(values)
                forgotten = self._forgotten
                if answer is not None:
                    fill[nxt] = answer
                    if forgotten and host_pid in forgotten:   # forgotten, then kept again
                        self._forgotten = [p for p in forgotten if p != host_pid]
                elif forgotten is not None:   # nothing kept: its next is given too
                    forgotten.append(host_pid)
            if self._forgotten != []:
                after(nxt + 1)
        given = np.array(is_given, bool)
        if not given.all():   # the others: each from its pid's last given sample before it
            chain_given = given[order]
            source = np.where(chain_given, np.arange(len(order)), 0)
            np.maximum.accumulate(source, out=source)
            ids[order] = np.where(chain_given, ids[order], fill[order[source]])
        return ids


class StreamContext:
    """Answers for one capture read once: :meth:`take` gives the records in file order, and
    :meth:`taken_ids` the answers of their samples.

    A capture's ``records`` (as its ``reader`` yields them) are read in blocks; the time
    order of each block is worked out at once (:class:`Releases`) and the samples it
    releases are answered together (:class:`_Join`), the reader's context records at the
    place the time order had reached when they were read (where decode's stream gives
    them to its enricher). Held: the records of the reorder window (at most its bounds)
    plus a block and the batch being built, and the answers not yet taken. Raw samples
    (no capture) are answered in the order given, by :meth:`answer`.

    ``enricher``: one whose answers are the caller's own ints (``ps``'s tree nodes), kept
    (``keep``); by default the context columns' :class:`Answers`. :meth:`taken_ranks`: each
    taken sample's place in the time order (what a caller that needs the time order of
    the rows it gets in file order reads). ``answer=False``: the time order only (every
    answer -1, the context records dropped: ``decode --raw``).
    ``place_damage``: the reader's damage is kept in :attr:`damage`, placed in the time
    order where reading record by record meets it.
    """

    def __init__(self, layout: Layout, arch: str, records: Intake | None = None,
                 reader: CaptureReader | None = None, keep: bool = False,
                 enricher: Enricher[int] | None = None, answers: Answers | None = None,
                 place_damage: bool = False, answer: bool = True):
        self.keep = keep     # every answer kept (an index refers to them all)
        self.answering = answer
        self.answers = Answers() if answers is None else answers
        self.values = self.answers.values
        self.enricher: Enricher[int] = (
            Enricher(layout, arch, make=self.answers.make, key=self.answers.key)
            if enricher is None else enricher)
        self._released = 0    # records released so far
        self._join = _Join(self.enricher, layout)
        self._records = records
        self._read = RecordBlock.empty()   # records from arrival ``_base`` on, not yet taken
        self._base = 0
        self._ids = np.empty(0, np.int32)    # their answers (-1: a LOST record, or not yet)
        self._ranks = np.empty(0, np.int64)  # their places in the time order (as _ids)
        self._taken = np.empty(0, np.int32)
        self._taken_ranks = np.empty(0, np.int64)
        self._taken_samples = np.empty(0, bool)
        self._fields = list(self._join.fields([])[:4])   # their header fields (_Fields)
        self._feeds: list[tuple[int, Any]] = []   # (arrival it was read before, record)
        self._damage: list[tuple[int, CaptureDamage]] = []   # as _feeds
        #: (place in the time order of the first record released after it was met, damage):
        #: where decode, reading record by record, says it (the caller drains it)
        self.damage: list[tuple[int, CaptureDamage]] = []
        if records is not None:
            self.order = Releases(TimeOrder(SampleRecord, LostRecord))
            reader.on_context = self._context   # type: ignore[union-attr]
            if place_damage:
                reader.on_damage = self._damaged   # type: ignore[union-attr]

    def _arrival(self) -> int:
        """The arrival of the next record the reader gives (what it says now is before it)."""
        return self.order.arrived + self._records.got   # type: ignore[union-attr]

    def _context(self, item: Any) -> None:
        if not self.answering:
            return
        if not self._feeds and not self._records.got:   # type: ignore[union-attr]
            # read before any record of this take: every release before it is answered,
            # every one after it is still to come, so it is given now (a snapshot of any
            # size before the first sample is not held)
            self.enricher.feed(item)
        else:
            self._feeds.append((self._arrival(), item))

    def _damaged(self, damage: CaptureDamage) -> None:
        self._damage.append((self._arrival(), damage))

    def _block(self, size: int) -> bool:
        """Read the next ``size`` records and answer what the time order releases; False
        at the end."""
        block = self._records.take(size, BLOCK_BYTES)   # type: ignore[union-attr]
        count = len(block)
        order = self.order
        if count:
            fields = self._join.fields(block.segments())
            self._read = RecordBlock.join([self._read, block])
            self._ids = np.concatenate([self._ids, np.full(count, -1, np.int32)])
            self._ranks = np.concatenate([self._ranks, np.full(count, -1, np.int64)])
            self._fields = [np.concatenate(pair) for pair in zip(self._fields, fields[:4],
                                                                   strict=True)]
            lengths = fields[5]
            released, at = order.add(fields[4], block.samples & (lengths >= 8), block.cpus,
                                     lengths)
        else:
            released = order.end()
            at = np.full(len(released), order.arrived, np.int64)
        self._answer(released, at)
        if not count:   # damage met at the end of the data: after every record
            self.damage += [(self._released, damage) for _, damage in self._damage]
            self._damage = []
        return bool(count)

    def _answer(self, released: np.ndarray, at: np.ndarray) -> None:
        """Answer the released records (arrivals, in release order; ``at``: the arrival at
        which each was released), each context record read before arrival ``a`` given
        before the first record released at ``a`` or later."""
        last = int(at[-1]) if len(at) else -1
        now = [(arrival, item) for arrival, item in self._feeds if arrival <= last]
        self._feeds = [(arrival, item) for arrival, item in self._feeds if arrival > last]
        self.damage += [(self._released + int(np.searchsorted(at, arrival, "left")), damage)
                        for arrival, damage in self._damage if arrival <= last]
        self._damage = [(arrival, damage) for arrival, damage in self._damage
                        if arrival > last]
        local = released - self._base
        self._ranks[local] = np.arange(self._released, self._released + len(local))
        self._released += len(local)
        if not self.answering:
            return
        is_sample = self._read.samples[local]
        samples = local[is_sample]
        before = np.zeros(len(local) + 1, np.int64)   # samples released before each
        np.cumsum(is_sample, out=before[1:])
        steps = [(int(np.searchsorted(at, arrival, "left")), item) for arrival, item in now]
        steps += [(int(place), int(self._read.counts[local[place]]))
                  for place in np.flatnonzero(~is_sample).tolist()]
        steps.sort(key=lambda step: step[0])    # stable: feeds before a loss at one place
        steps = [(int(before[place]), item) for place, item in steps]
        read = self._read
        self._ids[samples] = self._join.answer(
            lambda i: read.data(samples[i]),
            lambda rows, max_bytes: read.datas(samples[rows], max_bytes),
            [f[samples] for f in self._fields], steps)

    def _forget(self) -> None:
        """Forget the answers no row still to build needs, nor the enricher's kept answers
        (its answers made per programs go with them)."""
        if self.keep:
            return
        kept = self.answers.forget(
            lambda: set(np.unique(self._ids).tolist()) | self.enricher.answers_held())
        if kept is not None:
            self.enricher.keep_answers(kept)

    def take(self, max_rows: int, max_bytes: int = TAKE_BYTES) -> RecordBlock:
        """The next records (at most ``max_rows``, and ``max_bytes`` of samples beyond the
        first) in file order, their samples answered (:meth:`taken_ids`); the rows taken
        before are built by now: their answers may be forgotten."""
        self._forget()
        order, end = self.order, self._base + max_rows
        # each read about what the rows still to answer need, so that few rows past them
        # are answered (and their answers held) before they are taken
        while order.oldest_held < end and self._released_bytes() < max_bytes and self._block(
                min(BLOCK, max(SMALL_BLOCK, end - order.oldest_held))):
            pass
        read = self._read
        rows = min(max_rows, len(read))
        if rows:
            rows = min(rows, fitting(read.begins[:rows], read.ends[:rows], max_bytes))
        records, self._read = read.split(rows)
        cut = len(records)
        self._taken = self._ids[:cut][records.samples]
        self._taken_ranks = self._ranks[:cut]
        self._taken_samples = records.samples
        self._ids, self._ranks = self._ids[cut:], self._ranks[cut:]
        self._fields = [f[cut:] for f in self._fields]
        self._base += cut
        return records

    def _released_bytes(self) -> int:
        """Bytes of the samples released and not yet taken."""
        read = self._read
        released = max(0, min(len(read), self.order.oldest_held - self._base))
        return int((read.ends[:released] - read.begins[:released]).sum())

    def taken_ids(self) -> np.ndarray:
        """The answers of the samples of the last :meth:`take`, in file order."""
        return self._taken

    def taken_ranks(self, samples: bool = True) -> np.ndarray:
        """The places in the time order (0: the first record released) of the samples (or
        every record) of the last :meth:`take`, in file order."""
        return self._taken_ranks[self._taken_samples] if samples else self._taken_ranks

    def placed_before(self) -> int:
        """The first place in the time order not yet taken: every record before it has
        been taken (what may be shown in time order so far)."""
        placed = self._ranks[self._ranks >= 0]
        return int(placed.min()) if len(placed) else self._released

    def answer(self, buf: bytes, begins: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The answers of raw samples, in the order given (sample i:
        ``buf[begins[i]:ends[i]]``)."""
        self._forget()

        def datas_of(rows: np.ndarray, max_bytes: int) -> list[bytes]:
            lows, highs = begins[rows], ends[rows]
            fit = fitting(lows, highs, max_bytes)
            return [buf[low:high] for low, high in zip(lows[:fit].tolist(),
                                                       highs[:fit].tolist(), strict=True)]

        return self._join.answer(lambda i: buf[begins[i]:ends[i]], datas_of,
                                 self._join.fields([(buf, begins, ends)]), [])


#: Records read at a time from a capture, at most and at least: the time order of a block
#: is worked out at once, and the samples it releases are answered together.
BLOCK = 1 << 14
SMALL_BLOCK = 64
BLOCK_BYTES = 8 << 20    # and bytes of samples, at most (beyond one)


@dataclass(frozen=True, eq=False)
class ContextIndex:
    """The answers of a capture's samples by file offset: ``offsets`` (uint64, sorted),
    ``ids`` (int32, an index into ``values``). 12 bytes per sample, plus the distinct
    values, and the reader's ``unanchored`` spans (where no byte range may start; one per
    damaged stretch). Compared and hashed by identity (it holds arrays)."""

    offsets: np.ndarray
    ids: np.ndarray
    values: tuple[Value, ...]
    unanchored: tuple[tuple[int, int], ...] = ()

    def starts(self) -> np.ndarray:
        """The samples' offsets where a byte range may start (``split_ranges(starts=...)``):
        what the planner gets from this pass instead of another."""
        offsets = self.offsets
        if not self.unanchored:
            return offsets
        keep = np.ones(len(offsets), bool)
        for low, high in self.unanchored:
            keep[np.searchsorted(offsets, low):np.searchsorted(offsets, min(high, 2**64 - 1))] \
                = False
        return offsets[keep]

    def within(self, start: int, end: int | None) -> ContextIndex:
        """The samples whose file offset lies in [start, end), with only the values they use
        (what one byte range's worker needs)."""
        low = int(np.searchsorted(self.offsets, start, "left"))
        high = len(self.offsets) if end is None else int(
            np.searchsorted(self.offsets, end, "left"))
        used, ids = np.unique(self.ids[low:high], return_inverse=True)
        return ContextIndex(self.offsets[low:high].copy(), ids.astype(np.int32),
                            tuple(self.values[i] for i in used.tolist()))

    def ids_at(self, offsets: Sequence[int]) -> np.ndarray:
        """The answers of the samples at these file offsets; -1 where the index has none."""
        wanted = np.asarray(offsets, np.uint64)
        if not len(self.offsets):
            return np.full(len(wanted), -1, np.int32)
        at = np.minimum(np.searchsorted(self.offsets, wanted), len(self.offsets) - 1)
        return np.where(self.offsets[at] == wanted, self.ids[at], -1).astype(np.int32)


@fewer_collections()
def index_capture(path: str | os.PathLike[str], layout: str | Layout | None = None,
                  arch: str | None = None) -> ContextIndex:
    """Read a whole capture once, in time order, and index its samples' answers (layout
    and arch: the header's unless given)."""
    offsets: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    with CaptureReader(path) as reader:
        header = reader.header
        stream = StreamContext(get_layout(layout or header.layout), arch or header.arch,
                               Intake(reader.blocks()), reader, keep=True)
        while len(records := stream.take(BLOCK)):
            offsets.append(records.offsets[records.samples].astype(np.uint64))
            ids.append(stream.taken_ids())
    return ContextIndex(np.concatenate([np.empty(0, np.uint64), *offsets]),
                        np.concatenate([np.empty(0, np.int32), *ids]),
                        tuple(stream.values.values()),
                        tuple(reader.unanchored))
