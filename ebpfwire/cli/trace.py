"""``ebpfwire trace``: live events printed as they happen, in time order across CPUs."""

from __future__ import annotations

import argparse
import heapq
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ebpfwire import machine
from ebpfwire.cli.errors import EXIT_OK
from ebpfwire.cli.errors import say as _say
from ebpfwire.cli.filters import make_filter
from ebpfwire.cli.live import StopSignals as _Stop
from ebpfwire.cli.live import machine_arch
from ebpfwire.cli.live import open_monitor as _open_monitor
from ebpfwire.cli.output import Output, cpu_label
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.errors import DecodeError


class _Reorder:
    """Hold live samples briefly so that events from all CPUs come out in ``ts`` order.

    The kernel keeps order within one CPU's ring only, and a quiet ring is read up to
    ~0.1 s late (the reader's wake-up watermark), so a sample is released once it is
    ``delay`` older than the monotonic clock its ``ts`` comes from.
    """

    def __init__(self, delay: float = 0.3):
        self.delay_ns = int(delay * 1e9)
        self.heap: list[tuple[int, int, Any]] = []
        self.count = 0

    def push(self, samples: Iterable[Any]) -> None:
        for sample in samples:
            heapq.heappush(self.heap, (sample.ts, self.count, sample))
            self.count += 1

    def ready(self, everything: bool = False) -> Iterator[Any]:
        horizon = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - self.delay_ns
        while self.heap and (everything or self.heap[0][0] <= horizon):
            yield heapq.heappop(self.heap)[2]


def cmd_trace(args: argparse.Namespace) -> int:
    from ebpfwire.kernel.perf import Lost

    arch = machine_arch()
    out = Output(args.format, sys.stdout, boot_time_ns=machine.boot_time_ns(), utc=args.utc,
                 flush_each=True)
    pending = _Reorder()
    keep = make_filter([], None, None, args.failed)  # --pid and --comm: in the kernel

    def show(samples: Iterable[Any]) -> None:
        for record in samples:
            try:
                event = decode(record.data, arch=arch, strict=not args.lenient)
            except DecodeError as exc:
                _say(f"a sample from cpu {cpu_label(record.cpu)} does not decode: {exc}")
                continue
            if keep is None or keep(event):
                out.event(event)

    with _Stop() as stop:
        with _open_monitor(args) as monitor:
            reader = monitor.reader
            while not stop.requested:
                batch = reader.read_batch(timeout=0.1)
                for record in batch:
                    if isinstance(record, Lost):
                        out.lost(record.cpu, record.count)
                pending.push(r for r in batch if not isinstance(r, Lost))
                show(pending.ready())
            show(pending.ready(everything=True))
    out.close()
    return EXIT_OK


