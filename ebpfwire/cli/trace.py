"""``ebpfwire trace``: live events printed as they happen, in time order across CPUs."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

from ebpfwire import machine
from ebpfwire.cli.errors import EXIT_OK, say
from ebpfwire.cli.filters import make_filter
from ebpfwire.cli.live import (
    LiveEnd,
    StopSignals,
    command_options,
    finish_command,
    loss_hint,
    machine_arch,
    open_monitor,
    start_command,
    started,
    what_events,
)
from ebpfwire.cli.options import add_command, duration_type, live_options
from ebpfwire.cli.output import Output, cpu_label
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.order import Clock, TimeOrder

HOLD_NS = 300_000_000
"""How long a live sample is held for the other CPUs: a quiet ring is read up to ~0.1 s
late (the reader's wake-up watermark), so 0.3 s lets every CPU's samples of a moment in."""


def _arrivals(reader: Any, end: LiveEnd) -> Iterator[Any]:
    """The live records as they are read, each batch followed by the clock their ``ts``
    comes from, so the reorder window releases what is old enough on a quiet machine too;
    when the traced tree has ended, what the rings still hold."""
    while not end.done():
        yield from reader.read_batch(timeout=end.wait(0.1))
        yield Clock(time.clock_gettime_ns(time.CLOCK_MONOTONIC))
    while end.tree_ended and (batch := reader.read_batch(timeout=0)):
        yield from batch


def cmd_trace(args: argparse.Namespace) -> int:
    from ebpfwire.kernel.perf import Lost, Sample

    arch = machine_arch()
    out = Output(args.format, sys.stdout, boot_time_ns=machine.boot_time_ns(), utc=args.utc,
                 flush_each=True)
    order = TimeOrder(Sample, Lost, window_ns=HOLD_NS)
    keep = make_filter([], None, None, args.failed)  # --pid and --comm: in the kernel
    strict = not args.lenient
    lost = 0
    with StopSignals() as stop:
        command = start_command(args)
        try:
            monitor = open_monitor(args)
        except BaseException:
            if command is not None:
                command.abandon()
            raise
        say(started(f"tracing {what_events(args)}", args, command))
        end = LiveEnd(stop, args.duration,
                      None if args.pid is None else monitor.tree_alive, command)
        with monitor:
            if command is not None:
                command.release()
            for record in order(_arrivals(monitor.reader, end)):
                if type(record) is Lost:
                    lost += record.count
                    out.lost(record.cpu, record.count)
                    continue
                try:
                    event = decode(record.data, arch=arch, strict=strict)
                except DecodeError as exc:
                    say(f"a sample from cpu {cpu_label(record.cpu)} does not decode: {exc}")
                    continue
                if keep is None or keep(event):
                    out.event(event)
            hint = loss_hint(monitor, lost)
    out.close()
    if hint is not None:
        say(hint)
    return finish_command(command, end, EXIT_OK)


def register(sub: argparse._SubParsersAction) -> None:
    """The ``trace`` command's parser."""
    p = add_command(
        sub, "trace", "print live events as they happen (needs root)",
        parents=[live_options(), command_options()], examples=(
            "sudo ebpfwire trace -- ls /tmp        run ls, print its events, exit with its status",
            "sudo ebpfwire trace",
            "sudo ebpfwire trace --events tcp --format jsonl",
        ))
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument("--duration", type=duration_type, metavar="S", help="stop after S seconds")
    p.add_argument("--utc", action="store_true", help="show wall-clock times in UTC")
    p.add_argument("--lenient", action="store_true", help="decode damaged samples leniently")
    p.add_argument("--failed", action="store_true",
                   help="only events that failed (a negative result)")
    p.set_defaults(run=cmd_trace)
