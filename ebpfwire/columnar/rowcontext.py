"""The process context of a capture's rows, for the columnar outputs (``ebpfwire.columnar.arrow``,
``ebpfwire.columnar.export``, ``ebpfwire.columnar.dask``): the ``process``, ``parent_process`` and
``container_id`` columns, exactly what ``decode --format jsonl`` ends each line with.

One :class:`~ebpfwire.process.enrich.Enricher` sees the capture as decode does: its process and
container records as they are read, its samples and losses in ``ts`` order through
decode's stream (:class:`~ebpfwire.capture.CaptureStream`). Rows stay in file order, so
each sample's answer is matched to its row by the sample's file offset. An answer is the
id of a distinct (process, parent, container) value; columns are made by one ``take`` of a
small array of the distinct values a batch uses (no Python object per row).

Two ways to get the answers:

- :class:`StreamContext`: one pass, the reader's records flowing through both the time
  order and the batch builder; what is held is bounded by the reorder window.
- :class:`ContextIndex`: built once per capture (:func:`index_capture`), 12 bytes per
  sample (file offset, answer id), and cut into the slices of byte ranges
  (:meth:`ContextIndex.within`): a range read on its own cannot know the processes
  started before it.
"""

from __future__ import annotations

import os
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ebpfwire.capture import CaptureReader, CaptureStream, LostRecord, SampleRecord
from ebpfwire.collect import fewer_collections
from ebpfwire.process.enrich import Enricher
from ebpfwire.process.table import Program
from ebpfwire.wire.layouts import Layout, get_layout

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
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


#: Distinct answers a stream holds before it forgets those nothing refers to any more.
KEEP_ANSWERS = 1 << 12


class Answers:
    """The distinct answers of one capture, each numbered once (``make`` of the Enricher):
    ``values`` maps each number to its value.

    Answers are compared by value, as the JSON lines show them (two runs of one program
    with the same argv are one answer). A stream (:meth:`forget`) keeps only the answers
    that rows not yet built or the enricher's caches refer to: a capture makes a new one
    for nearly every process life, and would otherwise hold them all."""

    def __init__(self) -> None:
        self.values: dict[int, Value] = {}
        self._ids: dict[Value, int] = {}
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

    def make(self, program: Program | None, parent: Program | None,
             container_id: str | None) -> int:
        value: Value = (
            None if program is None else (_utf8(program.exe) if program.exe else None,
                                          tuple(map(_utf8, program.argv)), program.source),
            None if parent is None else (_utf8(parent.exe) if parent.exe else None,
                                         parent.source),
            container_id)
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


class StreamContext:
    """Answers for one capture read once: :meth:`take` gives the records in file order, and
    :meth:`ids_at` the answers of their samples once the time order has reached them.

    A capture's ``records`` (as its ``reader`` yields them) go through the enricher
    (context records), then are kept in file order for the batch builder while the capture
    stream's reorder window holds them; a sample is answered when the window releases it.
    Held: the records of one reorder window (at most its bounds) plus the batch being
    built, and the answers not yet taken. Raw samples (no capture) are answered in the
    order given, by :meth:`answer`.
    """

    def __init__(self, layout: Layout, arch: str, records: Iterable[Any] | None = None,
                 reader: CaptureReader | None = None):
        self.answers = Answers()
        self.values = self.answers.values
        self.enricher: Enricher[int] = Enricher(layout, arch, make=self.answers.make)
        self._read: deque = deque()        # records in file order, not yet taken
        self._ids: dict[int, int] = {}     # file offset -> answer of samples not yet taken
        self._released: Iterator = iter(())
        if records is not None:   # its context records reach the table as they are read
            self._released = CaptureStream(reader, records=self._kept(records),
                                           on_context=self.enricher.feed).records()

    def _kept(self, records: Iterable[Any]) -> Iterator[Any]:
        """The records for the time order, kept for the batches too."""
        keep = self._read.append
        for record in records:
            keep(record)
            yield record

    def _advance(self, need: set[int] | None, rows: int = 0) -> None:
        """Answer records in time order until every sample at a file offset of ``need`` is
        answered, or (``need`` None) ``rows`` records are kept; or the capture ends."""
        ids, read = self._ids, self._read
        sample, lost = self.enricher.sample, self.enricher.lost
        if need is None and len(read) >= rows:
            return
        for record in self._released:
            kind = type(record)
            if kind is SampleRecord:
                offset = record.offset
                ids[offset] = sample(record.data)
                if need is not None:
                    need.discard(offset)
                    if not need:
                        return
            elif kind is LostRecord:
                lost(record.count)
            if need is None and len(read) >= rows:
                return

    def _forget(self) -> None:
        """Forget the answers no row still to build needs, nor the enricher's kept answers
        (its answers made per programs go with them)."""
        kept = self.answers.forget(
            lambda: set(self._ids.values()) | self.enricher.answers_held())
        if kept is not None:
            self.enricher.keep_answers(kept)

    def take(self, max_rows: int) -> list:
        """The next records (at most ``max_rows``) in file order (the rows taken before
        are built by now: their answers may be forgotten)."""
        self._forget()
        self._advance(None, max_rows)
        read = self._read
        return [read.popleft() for _ in range(min(max_rows, len(read)))]

    def ids_at(self, offsets: Sequence[int]) -> np.ndarray:
        """The answers of the samples at these file offsets (taken: each is given once)."""
        ids = self._ids
        need = set(offsets).difference(ids)
        if need:
            self._advance(need)
        pop = ids.pop
        return np.fromiter((pop(offset, -1) for offset in offsets), np.int32, len(offsets))

    def answer(self, datas: Sequence[bytes]) -> np.ndarray:
        """The answers of raw samples, in the order given."""
        self._forget()
        sample = self.enricher.sample
        return np.fromiter(map(sample, datas), np.int32, len(datas))


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
    offsets, ids = array("Q"), array("i")
    add_offset, add_id = offsets.append, ids.append
    with CaptureReader(path) as reader:
        header = reader.header
        stream = StreamContext(get_layout(layout or header.layout), arch or header.arch)
        sample, lost = stream.enricher.sample, stream.enricher.lost
        for record in CaptureStream(reader, on_context=stream.enricher.feed).records():
            kind = type(record)
            if kind is SampleRecord:
                add_offset(record.offset)
                add_id(sample(record.data))
            elif kind is LostRecord:
                lost(record.count)
    order = np.argsort(np.frombuffer(offsets, np.uint64), kind="stable")
    return ContextIndex(np.frombuffer(offsets, np.uint64)[order],
                        np.frombuffer(ids, np.int32)[order], tuple(stream.values.values()),
                        tuple(reader.unanchored))
