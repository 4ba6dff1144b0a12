"""``ebpfwire trace``: live events printed as they happen, in time order across CPUs, with
decode's renderers (the process context, JSON, KubeArmor logs)."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from ebpfwire import machine
from ebpfwire.cli.errors import EXIT_OK, UsageError, say
from ebpfwire.cli.filters import make_filter
from ebpfwire.cli.live import (
    LiveEnd,
    StopSignals,
    command_options,
    finish_command,
    live_batches,
    loss_hint,
    machine_arch,
    open_monitor,
    start_command,
    started,
    what_events,
)
from ebpfwire.cli.options import (
    add_command,
    add_format_option,
    add_time_options,
    duration_type,
    live_options,
)
from ebpfwire.cli.output import Output, cpu_label, table_renderer
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.output.kubearmor import KubeArmorLogs
from ebpfwire.output.render import event_json
from ebpfwire.process.enrich import Enricher, table_context
from ebpfwire.process.procfs import ContainerResolver, snapshot
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import Event
from ebpfwire.wire.layouts import get_layout
from ebpfwire.wire.order import Drained, TimeOrder

HOLD_NS = 300_000_000
"""The reorder window, the bound of how long a sample waits for other CPUs' samples when
the rings' reads do not release it first (see :func:`_arrivals`)."""

POLL_S = 0.005
"""How often the rings are read when the kernel does not wake the reader (a perf ring
below its wakeup watermark) while events come, and in the first second: an event is then
shown within about this much and :data:`SLACK_NS`."""

QUIET_POLL_S = 0.05
"""How often after a second without events: an idle trace then costs about 0.5 % of a
CPU, as at 0.5 s (1.7 % at :data:`POLL_S`), and the first event after a quiet spell shows
up to this late."""

SLACK_NS = 5_000_000
"""How long a sample may be committed after its ``ts`` was taken (the program stamps it,
then writes the arguments: microseconds; this leaves room for interrupts and
preemption). A sample committed later still shows, out of order."""


def _arrivals(monitor: Any, end: LiveEnd, order: TimeOrder) -> Iterator[Any]:
    """The live records as they are read (:func:`live_batches`: to the end, the rings read
    dry), each batch followed by how far the rings were read: what is older than the read
    less :data:`SLACK_NS` can no longer be overtaken by a sample still to come, so it is
    shown then, not a window later; the next read comes when ``order``'s oldest held
    sample can be shown, if that is sooner than the pace of reads."""
    reader = monitor.reader
    busy_until = time.monotonic() + 1

    def pace() -> float:
        wait = POLL_S if time.monotonic() < busy_until else QUIET_POLL_S
        if order.oldest_held is not None:
            due = order.oldest_held + SLACK_NS - time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            wait = min(wait, max(due, 0) / 1e9)
        return wait

    for batch in live_batches(monitor, end, pace):
        if batch:
            busy_until = time.monotonic() + 1
        yield from batch
        yield Drained(reader.drained_ns - SLACK_NS)


class _Shown:
    """Live events shown as ``decode`` shows a capture's: with the process context (a
    /proc snapshot at start, then the events' own execs and exits), as KubeArmor logs, or
    raw; each event reaches the process table, the filter chooses what is printed."""

    def __init__(self, args: argparse.Namespace, out: Output, arch: str):
        self.out = out
        self.arch = arch
        self.logs = None
        self.enricher: Enricher | None = None
        self.resolve = None
        if args.raw and args.format != "kubearmor":
            return
        self.enricher = Enricher(get_layout("classic"), arch,
                                 make=table_context if args.format == "table" else None)
        processes = snapshot(pid=args.pid, comm=args.comm)
        for process in processes:
            self.enricher.feed(process)
        try:
            resolver = ContainerResolver()
        except LoaderError as exc:  # the host's namespaces are hidden: not root
            raise UsageError(f"cannot read the host's namespaces: {exc}") from None
        for container in resolver.seed(processes):
            self.enricher.feed(container)
        self.resolve = resolver.resolve_sample
        if args.format == "kubearmor":
            self.logs = KubeArmorLogs(socket.gethostname(), machine.boot_time_ns())

    def show(self, data: bytes, event: Event, keep: Callable[[Event], bool] | None) -> None:
        enricher = self.enricher
        if enricher is None:
            if keep is None or keep(event):
                self.out.event(event)
            return
        container = self.resolve(data)
        if container is not None:
            enricher.feed(container)
        if self.logs is not None:
            answer = enricher.event(event)
            if (keep is None or keep(event)) and answer is not None:
                log = self.logs.log(event, answer)
                if log is not None:
                    self.out.line(json.dumps(log))
            return
        shown = enricher.sample(data)
        if keep is None or keep(event):
            self.out.line(self.out.table.event(event, shown) if self.out.fmt == "table"
                          else event_json(event, shown))


def _output_stream(path: str | None) -> TextIO:
    if path is None:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"{path}: cannot create: {exc.strerror}") from None


def cmd_trace(args: argparse.Namespace) -> int:
    from ebpfwire.kernel.perf import Lost, Sample

    arch = machine_arch()
    if args.raw and args.format == "kubearmor":
        raise UsageError("--raw: KubeArmor logs are made of the process context; "
                         "use --format jsonl --raw for the raw events")
    stream = _output_stream(args.output)
    boot_time_ns = machine.boot_time_ns()
    out = Output(args.format, stream, boot_time_ns=boot_time_ns, utc=args.utc,
                 flush_each=True, table=table_renderer(args, boot_time_ns))
    order = TimeOrder(Sample, Lost, window_ns=HOLD_NS)
    keep = make_filter([], None, None, args.failed)  # --pid and --comm: in the kernel
    strict = not args.lenient
    lost = 0
    with StopSignals() as stop:
        command = start_command(args)
        monitor = None
        try:
            monitor = open_monitor(args)
            if command is not None:
                command.release()  # CMD runs: /proc shows it, not the child waiting to exec
            # /proc is read once the programs are attached, while the first samples wait
            # out SLACK_NS: a process that execs meanwhile is in the snapshot or its exec
            # is an event (read before the attach, its new image would never be seen)
            shown = _Shown(args, out, arch)
        except BaseException:
            if monitor is not None:
                monitor.close()
            if command is not None:
                command.abandon()
            raise
        say(started(f"tracing {what_events(args)}", args, command))
        end = LiveEnd(stop, args.duration,
                      None if args.pid is None else monitor.tree_alive, command)
        with monitor:
            for record in order(_arrivals(monitor, end, order)):
                if type(record) is Lost:
                    lost += record.count
                    if shown.logs is None:  # KubeArmor's logs have no line for a loss
                        out.lost(record.cpu, record.count)
                    continue
                try:
                    event = decode(record.data, arch=arch, strict=strict)
                except DecodeError as exc:
                    say(f"a sample from cpu {cpu_label(record.cpu)} does not decode: {exc}")
                    continue
                shown.show(record.data, event, keep)
            hint = loss_hint(monitor, lost)
    out.close()
    if stream is not sys.stdout:
        stream.close()
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
    add_format_option(p)
    p.add_argument("--raw", action="store_true",
                   help="without the process context (executable, parent, container)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the events to FILE (replaced), not to standard output: CMD's "
                        "own output stays apart")
    p.add_argument("--duration", type=duration_type, metavar="S", help="stop after S seconds")
    p.add_argument("--utc", action="store_true", help="show wall-clock times in UTC")
    add_time_options(p)
    p.add_argument("--lenient", action="store_true", help="decode damaged samples leniently")
    p.add_argument("--failed", action="store_true",
                   help="only events that failed (a negative result)")
    p.set_defaults(run=cmd_trace)
