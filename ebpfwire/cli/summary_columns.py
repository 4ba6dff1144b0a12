"""``ebpfwire summary`` counted from the batch decoder's columns
(:func:`ebpfwire.columnar.arrow.batches` into :class:`~ebpfwire.output.summary.BatchCounts`):
the per-event path's counts and stderr, without an Event per sample."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pyarrow as pa

from ebpfwire.capture import CaptureDamage, CaptureReader
from ebpfwire.cli.captures import (
    HELD_LOST_LIMIT,
    HOLD_LIMIT,
    check_fit,
    damaged_record,
    held_enough,
    layout_and_arch,
    open_capture,
    say_merged,
    source_label,
    undecodable_sample,
)
from ebpfwire.cli.errors import say
from ebpfwire.cli.filters import event_filter
from ebpfwire.cli.options import names_list
from ebpfwire.cli.summary import COUNTS, each_capture
from ebpfwire.columnar.arrow import located_batches
from ebpfwire.output.summary import BatchCounts, Summary
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import Event
from ebpfwire.wire.layouts import Layout


class Bulk:
    """Every capture counted from the batch decoder's columns into one BatchCounts.

    The batches are decoded leniently; a row with ``raw`` bytes (damaged, or a comm that is
    not UTF-8) is decoded again by itself as the per-event path decodes it: strict, an
    error is an undecodable sample, else its Event's comm and filter answer stand.
    ``held_until_fit``'s rule holds the rows until a sample decodes cleanly (the layout
    check, the note on LOST records added together), and stderr says what the per-event
    path says, in its order: damage and undecodable samples by file offset, those held
    after the damage met while holding them."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.keep = event_filter(names_list(args.event), args.exact_pid, args.comm, args.failed)
        self.counts = BatchCounts(args.by)
        self.undecodable = 0
        self.failed = False

    def summary(self) -> Summary:
        for _ in each_capture(self, self._capture):
            pass
        return self.counts.summary(self.undecodable)

    def _capture(self, source: str) -> tuple[()]:
        with open_capture(source) as reader:
            label = source_label(source)
            layout, arch = layout_and_arch(self.args, reader.header, label)
            _Capture(self, reader, layout, arch, label).count()
        return ()


class _Capture:
    """One capture's batches counted into its :class:`Bulk`, held while no sample has
    decoded cleanly yet, with its stderr messages."""

    def __init__(self, bulk: Bulk, reader: CaptureReader, layout: Layout, arch: str,
                 label: str):
        self.bulk, self.reader, self.layout, self.arch, self.label = (
            bulk, reader, layout, arch, label)
        self.strict = not bulk.args.lenient
        self.damage: list[CaptureDamage] = []   # met and not yet said
        reader.on_damage = self.damage.append
        self.held: list[tuple] | None = []      # None once a sample decoded cleanly
        self.samples: list[bytes] = []          # the held samples (none decodes cleanly)
        self.held_lost = 0
        self.cpus: set[int] = set()             # of the held LOST records since a sample
        self.merged = 0

    def count(self) -> None:
        for batch, offsets in located_batches(self.reader, layout=self.layout,
                                              arch=self.arch, strict=False, context=False,
                                              arguments=False):
            part = (batch, offsets, self._decoded(batch))
            if self.held is None:
                self._count(*part)
                continue
            self.held.append(part)
            end, fit = self._hold(*part)
            if end is not None:
                self._release(int(part[1][end]), fit)
        if self.held is not None:
            self._release(None, True)
        self._say([], None)

    def _decoded(self, batch: Any) -> dict[int, tuple[Event | DecodeError, bool]]:
        """The rows with raw bytes, decoded as the per-event path does: row -> (the Event or
        the DecodeError, whether it decodes cleanly)."""
        raw = batch.column("raw")
        out: dict[int, tuple[Event | DecodeError, bool]] = {}
        for row in np.flatnonzero(raw.is_valid().to_numpy(zero_copy_only=False)).tolist():
            data = raw[row].as_py()
            try:
                out[row] = decode(data, layout=self.layout, arch=self.arch), True
            except DecodeError as error:
                out[row] = (error if self.strict else
                            decode(data, layout=self.layout, arch=self.arch, strict=False),
                            False)
        return out

    def _hold(self, batch: Any, offsets: np.ndarray,
              decoded: dict) -> tuple[int | None, bool]:
        """Hold a batch as held_until_fit holds records: the row that ends the holding (the
        first sample that decodes cleanly, or the last one ``held_enough`` lets it hold,
        then with the fit to check) or None, and whether the fit is to be checked."""
        is_lost = batch.column("lost").is_valid().to_numpy(zero_copy_only=False)
        clean = np.ones(len(batch), bool)
        for row, (_, ok) in decoded.items():
            clean[row] = ok
        samples = np.flatnonzero(~is_lost)
        firsts = samples[clean[samples]]
        end = int(firsts[0]) if len(firsts) else len(batch)
        unclean = samples[~clean[samples] & (samples < end)]
        raw = batch.column("raw")
        fit = False
        for row in unclean[:HOLD_LIMIT - len(self.samples)].tolist():
            self.samples.append(raw[row].as_py())
            if held_enough(self.samples):   # (held_until_fit's rule, sample by sample)
                fit, end = True, row
                break
        cpus = batch.column("cpu").to_numpy(zero_copy_only=False)
        for lost, cpu in zip(is_lost[:end].tolist(), cpus[:end].tolist(), strict=True):
            if not lost:
                self.cpus.clear()
            elif self.held_lost >= HELD_LOST_LIMIT and cpu in self.cpus:
                self.merged += 1   # held_until_fit adds it to its CPU's last one
            else:
                self.cpus.add(cpu)
                self.held_lost += 1
        return (end if end < len(batch) else None), fit

    def _release(self, offset: int | None, fit: bool) -> None:
        """Stop holding at the record at ``offset`` (None: the end): the damage before it,
        the fit's check, the note on LOST records, then the held batches counted."""
        self._say([], offset, before=True)
        if fit:
            check_fit(self.samples, self.layout, self.arch, self.label)
        say_merged(self.label, self.merged)
        held, self.held = self.held or [], None
        for part in held:
            self._count(*part)

    def _count(self, batch: Any, offsets: np.ndarray, decoded: dict) -> None:
        """Count a batch, its undecodable samples said and left out, the filter applied."""
        keep = self.bulk.keep
        mask = (np.ones(len(batch), bool) if keep is None
                else keep.mask(batch).to_numpy(zero_copy_only=False))
        comms: dict[int, str | None] = {}
        messages = []
        for row, (event, _) in decoded.items():
            if isinstance(event, DecodeError):
                messages.append((int(offsets[row]),
                                 undecodable_sample(self.label, int(offsets[row]), event,
                                                    COUNTS)))
                mask[row] = False
            else:
                comms[row] = event.comm
                if keep is not None:
                    mask[row] = keep.matches(event)
        self.bulk.undecodable += len(messages)
        if not mask.all():
            rows = np.flatnonzero(mask)
            batch = batch.take(pa.array(rows))
            at = {row: index for index, row in enumerate(rows.tolist()) if row in comms}
            comms = {at[row]: comm for row, comm in comms.items() if row in at}
        self.bulk.counts.add(batch, comms)
        self._say(messages, int(offsets[-1]) if len(offsets) else None)

    def _say(self, messages: list[tuple[int, str]], upto: int | None,
             before: bool = False) -> None:
        """Say ``messages`` and the damage met up to file offset ``upto`` (before it with
        ``before``; None: all of it), in file order."""
        now, later = [], []
        for damage in self.damage:
            due = upto is None or damage.offset < upto or (not before and damage.offset == upto)
            (now if due else later).append(damage)
        self.damage = later
        lines = [(d.offset, damaged_record(self.label, d)) for d in now] + messages
        for _, line in sorted(lines, key=lambda item: item[0]):
            say(line)
