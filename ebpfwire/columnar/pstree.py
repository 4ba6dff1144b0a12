"""``ps``'s process tree built from a capture's columns (:func:`bulk_tree`): the same tree
as :class:`~ebpfwire.process.tree.ProcessTree` fed every event, without an Event each.

The table is given only the samples that can change what it answers, as the columnar
process context does (:class:`~ebpfwire.columnar.rowcontext.StreamContext`): the first of
each pid, those that change state (exec, bprm_check, exit), those whose header key
(parent, namespaces, comm, cwd) differs from the pid's last, those after the table forgot
the pid's answer. Here an answer is a tree node, one per process life, and every other
sample takes its pid's kept node. A life cannot change at such a sample: a new life is
made (``_insert``), or ends (exit, ``_forget``, eviction), or its parent changes
(a new ppid is in the key), only where the table tells the enricher to forget the pid's
answer (``on_change``), and a container record makes it forget them all. The event
counts are then group counts, per batch in file order, of node and event name where
the filter's mask keeps the row; their order (JSON shows it) that of each name's first
event in time order (:meth:`~StreamContext.taken_ranks`).

Once the table reaches its bound on live processes, which one it forgets depends on
every event (a process with events since the clock last looked is passed over), so from
then on no answer is kept and every sample reaches the table: until then the counts it
keeps need only be right from one look to the next, and the first look passes over
every process. What it cannot tell without every Event, it gives up on (None: the caller
decodes event by event): a sample whose header is cut (today's path leaves it out of the
table), and any damaged sample in strict mode (the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ebpfwire.capture import CaptureReader
from ebpfwire.capture.bulk import Intake
from ebpfwire.columnar.arrow import answered_samples
from ebpfwire.columnar.rowcontext import StreamContext
from ebpfwire.process.enrich import Enricher
from ebpfwire.process.table import EventContext, Process
from ebpfwire.process.tree import ProcessTree, TreeNode
from ebpfwire.wire.filter import EventFilter
from ebpfwire.wire.layouts import Layout

#: Rows a batch holds: the counts need no big ones, and a batch's arguments cost memory
#: (a 1M-event capture's peak RSS: 267 MiB at this size, 306 MiB at arrow's 65,536)
BATCH_ROWS = 1 << 14
#: Rows of per-batch counts held before they are merged (and those of the nodes the tree
#: forgot left out), at least: a capture of ever new processes must not grow them.
MERGE_AT = 1 << 16


class _NodeAnswers(Enricher[int]):
    """An enricher (no expiry, as the tree's table) whose answer is the number of the tree
    node of the event's process (``nodes``, while the tree holds it: a process the table
    forgets to stay bounded leaves the tree, and its node these)."""

    def __init__(self, layout: Layout, arch: str, keep: EventFilter | None):
        super().__init__(layout, arch, retain_ns=None)
        self.tree = ProcessTree(None if keep is None else keep.matches, arch, self.table)
        self.nodes: dict[int, TreeNode] = {}   # number -> node
        self._numbers: dict[int, int] = {}     # id(process) -> its node's number
        self._next = 0
        self._tree_forgets = self.table.on_forget
        self.table.on_forget = self._forgotten

    def _forgotten(self, process: Process) -> None:
        number = self._numbers.pop(id(process), None)
        if number is not None:
            del self.nodes[number]
        self._tree_forgets(process)   # type: ignore[misc]

    def answer_of(self, answer: EventContext | None) -> int:
        if answer is None:   # a cut header: bulk_tree gives up
            return -1
        if self.keeps and self.table.crowded:
            # the table forgets the live process least recently seen (the clock: which
            # had events since it last looked): from now on every event must reach it
            self.keeps = False
            self._forget(None)
        node = self.tree.node_of(answer)
        number = self._numbers.get(id(answer.process))
        if number is None:
            number = self._numbers[id(answer.process)] = self._next
            self._next += 1
            self.nodes[number] = node
        return number


@dataclass
class BulkTree:
    """A tree built in bulk, and what ``ps`` says of the capture besides."""

    tree: ProcessTree
    stream: StreamContext   # (its ``order``: the reorder window's counts)
    damaged: int        # samples decoded with errors


def bulk_tree(reader: CaptureReader, layout: Layout, arch: str, keep: EventFilter | None,
              strict: bool, lost_limit: int) -> BulkTree | None:
    """The process tree of the capture ``reader`` opens, read once in blocks; None where
    only the event-by-event path gives today's tree (see the module's docstring), and
    where the commands' check that the layout fits holds records back (the first sample
    in file order does not decode cleanly, or ``lost_limit`` LOST records come before
    it)."""
    answers = _NodeAnswers(layout, arch, keep)
    stream = StreamContext(layout, arch, Intake(reader.blocks()), reader, keep=True,
                           enricher=answers)
    names: dict[str, int] = {}   # event name -> its number here
    # per batch, per (node, event name) kept: node, name, events, the first one's place in
    # the time order
    groups: list[tuple[np.ndarray, ...]] = []
    held, merge_at = 0, MERGE_AT
    first = last = (-1, 0)     # (place in the time order, ts) of the first and last events
    damaged = lost_first = 0
    first_clean = False   # the first sample is read, and clean
    for batch, bad, ids, lengths, lost in answered_samples(reader, stream, layout, arch,
                                                          BATCH_ROWS):
        if (lengths < layout.size).any():
            return None
        if strict and bad.any():
            return None
        if not first_clean:
            rows = {row for row, _, _ in lost}
            first_row = next(row for row in range(len(ids) + len(rows) + 1) if row not in rows)
            lost_first += sum(row < first_row for row in rows)
            if lost_first >= lost_limit or len(ids) and bad[0]:
                return None
            first_clean = bool(len(ids))
        damaged += int(np.count_nonzero(bad))
        if not len(ids):
            continue
        ranks = stream.taken_ranks()
        ts = batch.column("ts").to_numpy()
        low, high = int(np.argmin(ranks)), int(np.argmax(ranks))
        if first[0] < 0 or ranks[low] < first[0]:
            first = (int(ranks[low]), int(ts[low]))
        if ranks[high] > last[0]:
            last = (int(ranks[high]), int(ts[high]))
        event = batch.column("event")
        numbers = np.array([names.setdefault(label, len(names))
                            for label in event.dictionary.to_pylist()], np.int64)
        codes = numbers[event.indices.to_numpy()]
        if keep is not None:
            kept = keep.mask(batch).to_numpy(zero_copy_only=False)
            ids, codes, ranks = ids[kept], codes[kept], ranks[kept]
        groups.append(_grouped(ids, codes, np.ones(len(ids), np.int64), ranks))
        held += len(groups[-1][0])
        if held > merge_at:   # merged, less the nodes the tree forgot: bounded as it is
            merged = _grouped(*_joined(groups))
            alive = np.isin(merged[0], np.fromiter(answers.nodes, np.int64))
            groups = [tuple(column[alive] for column in merged)]
            held = len(groups[0][0])
            merge_at = max(MERGE_AT, 2 * held)
    nodes, labels = answers.nodes, list(names)
    ids, codes, counts, ranks = _grouped(*_joined(groups))
    by_first = np.argsort(ranks)   # a node's names in the order of their first events
    for number, code, count in zip(ids[by_first].tolist(), codes[by_first].tolist(),
                                   counts[by_first].tolist(), strict=True):
        node = nodes.get(number)
        if node is not None:
            node.counts[labels[code]] = count
    tree = answers.tree
    if first[0] >= 0:
        tree.first_ts, tree.last_ts = first[1], last[1]
    return BulkTree(tree, stream, damaged)


def _joined(groups: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """The groups' rows as one array each (int64)."""
    empty = np.empty(0, np.int64)
    return tuple(np.concatenate([empty, *(group[i] for group in groups)]) for i in range(4))


def _grouped(ids: np.ndarray, codes: np.ndarray, counts: np.ndarray, ranks: np.ndarray
             ) -> tuple[np.ndarray, ...]:
    """Rows of (node, event name, events, place in the time order) summed per node and
    name: the events, and the first place."""
    order = np.lexsort((ranks, codes, ids))
    ids, codes, counts, ranks = ids[order], codes[order], counts[order], ranks[order]
    if not len(ids):
        return ids, codes, counts, ranks
    starts = np.flatnonzero(np.r_[True, (ids[1:] != ids[:-1]) | (codes[1:] != codes[:-1])])
    return ids[starts], codes[starts], np.add.reduceat(counts, starts), ranks[starts]
