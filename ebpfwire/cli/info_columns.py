"""``ebpfwire info``'s counts from the batch decoder's columns
(:func:`ebpfwire.columnar.arrow.batches`): what counting event by event gives
(:func:`ebpfwire.cli.info.count_events`), without an Event per sample."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from ebpfwire.capture import CaptureReader
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.cli.held_blocks import hold_blocks_until_fit
from ebpfwire.cli.info import InfoCounts
from ebpfwire.columnar.arrow import located_batches
from ebpfwire.wire.layouts import Layout


def count_columns(reader: CaptureReader, layout: Layout, arch: str, label: str
                  ) -> InfoCounts:
    """The counts of a capture's batches, decoded leniently without the process context;
    the layout checked as ``held_until_fit`` checks it; container records counted as the
    reader hands them to ``on_context``."""
    counts = InfoCounts()

    def context(info: ProcessInfo | ContainerInfo) -> None:
        if type(info) is ContainerInfo:
            counts.runtimes[info.runtime] += 1

    reader.on_context = context
    hold_blocks_until_fit(reader, layout, arch, label)
    for batch, _ in located_batches(reader, layout=layout, arch=arch, strict=False,
                                    context=False, arguments=False):
        lost = batch.column("lost")
        is_lost = lost.is_valid().to_numpy(zero_copy_only=False)
        cpus = batch.column("cpu").to_numpy(zero_copy_only=False)
        if is_lost.any():
            counts.lost_records += int(is_lost.sum())
            for cpu, count in zip(cpus[is_lost].tolist(), lost.drop_null().to_pylist(),
                                  strict=True):
                counts.lost[cpu] += count
        is_sample = ~is_lost
        if not is_sample.any():
            continue
        cpu, per_cpu = np.unique(cpus[is_sample], return_counts=True)
        counts.samples.update(dict(zip(cpu.tolist(), per_cpu.tolist(), strict=True)))
        event = batch.column("event")
        labels = event.dictionary.to_pylist()
        indices = event.indices.filter(is_sample).to_numpy()
        for name, count in zip(labels, np.bincount(indices, minlength=len(labels)).tolist(),
                               strict=True):
            if count:
                counts.names[name] += count
        counts.damaged_samples += int(
            (batch.column("errors").is_valid().to_numpy(zero_copy_only=False)
             & is_sample).sum())
        span = pc.min_max(batch.column("ts")).as_py()
        if span["min"] is not None:
            counts.first = span["min"] if counts.first is None else min(counts.first,
                                                                       span["min"])
            counts.last = span["max"] if counts.last is None else max(counts.last, span["max"])
    return counts
