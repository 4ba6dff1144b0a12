"""The live commands' plumbing: this machine's architecture, a stop flag set by signals,
when a live command ends, CMD started for command mode, and the bundled monitor opened as
the options ask."""

from __future__ import annotations

import argparse
import mmap
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from ebpfwire import machine
from ebpfwire.cli.command import Command, run_as
from ebpfwire.cli.errors import UsageError, say
from ebpfwire.cli.options import RING_BYTES_MAX, names_list


def machine_arch() -> str:
    """This machine's architecture as captures name it (x86_64 or arm64)."""
    try:
        return machine.arch()
    except machine.UnsupportedMachine as exc:
        raise UsageError(str(exc)) from None


class StopSignals:
    """SIGINT/SIGTERM set a flag the live loops check, so no write is ever cut in half."""

    def __init__(self) -> None:
        self.count = 0      # stop signals received
        self.last = 0       # the last one's number
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.count > 0

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
        self.last = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


TREE_CHECK = 0.1  # s between looks at whether the traced tree still runs


class LiveEnd:
    """When a live command stops: a stop signal, ``--duration``, or the end of the traced
    tree (``tree_alive()`` false: every process of ``--pid`` or CMD has exited, as strace
    ends). With a command, the first stop signal goes on to CMD, as strace does, and the
    recording goes on to its end; a second one stops at once."""

    def __init__(self, stop: StopSignals, duration: float | None,
                 tree_alive: Callable[[], bool] | None = None, command: Command | None = None):
        self.stop = stop
        self.deadline = None if duration is None else time.monotonic() + duration
        self.tree_alive = tree_alive
        self.command = command
        self.tree_ended = False
        self._next_check = 0.0

    def done(self) -> bool:
        if self.stop.count:
            if self.command is None or self.stop.count > 1:
                return True
            self.command.forward(self.stop.last)
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            return True
        if self.tree_alive is not None and now >= self._next_check:
            self._next_check = now + TREE_CHECK
            self.tree_ended = not self.tree_alive()
        return self.tree_ended

    def wait(self, most: float) -> float:
        """Seconds to wait for events before the next look: ``most``, or less before the
        deadline."""
        if self.deadline is None:
            return most
        return max(0.0, min(most, self.deadline - time.monotonic()))


def live_batches(monitor: Any, end: LiveEnd, most: float | Callable[[], float]) -> Iterator[list]:
    """The monitor's records, a read at a time (at most ``most`` seconds apart, or what
    ``most()`` says before each read; empty when nothing came), until ``end``; then the
    programs are detached and the rings read dry, so that every event made before the end
    is given or counted as lost."""
    reader = monitor.reader
    while not end.done():
        yield reader.read_batch(timeout=end.wait(most() if callable(most) else most))
    monitor.stop()
    while batch := reader.read_batch(timeout=0):
        yield batch


def start_command(args: argparse.Namespace) -> Command | None:
    """CMD forked and held (command mode), its pid the tree to trace; None without one."""
    argv = args.cmd_argv[1:] if args.cmd_argv[:1] == ["--"] else args.cmd_argv
    if not argv:
        if args.user is not None:
            raise UsageError("-u USER runs a command as USER; give the command after --")
        return None
    if args.pid is not None:
        raise UsageError("give --pid or a command, not both")
    command = Command(argv, run_as(args.user))
    args.pid = command.pid
    return command


def finish_command(command: Command | None, end: LiveEnd, status: int) -> int:
    """The live command's exit status: CMD's when it has ended, else ``status`` (CMD
    goes on, no longer traced, after --duration or a second stop signal)."""
    if command is None:
        return status
    if end.tree_ended:
        return command.wait()
    code = command.poll()
    if code is None:
        say(f"{command.argv[0]} (pid {command.pid}) still runs, no longer traced")
        return status
    return code


def what_events(args: argparse.Namespace) -> str:
    """The events a live command asked for, as its start line names them."""
    events = names_list(args.events)
    return "every event" if not events else "events " + ",".join(events)


def started(head: str, args: argparse.Namespace, command: Command | None, of: str = " of ",
            children: str = "its descendants") -> str:
    """A live command's start line: ``head`` (what it does), whom, and what stops it."""
    if command is not None:
        return (f"{head}{of}{' '.join(command.argv)[:200]} (pid {command.pid}) and every "
                "process it starts, until they have all exited")
    if args.pid is not None:
        return (f"{head}{of}pid {args.pid} and {children}, until they have all exited (or "
                "Ctrl-C or SIGTERM)")
    return f"{head}; Ctrl-C or SIGTERM stops"


def loss_hint(monitor: Any, lost: int) -> str | None:
    """After losses, what to try: a larger ring (the size to give), fewer events, a filter."""
    if not lost:
        return None
    reader = monitor.reader
    size = (reader.page_count * mmap.PAGESIZE if monitor.transport == "perf"
            else monitor.ring_bytes)
    per = " per CPU" if monitor.transport == "perf" else ""
    larger = min(size * 4, RING_BYTES_MAX)
    if larger == size:
        return (f"{lost} events lost with the largest ring ({size}{per}); fewer --events or a "
                "--pid/--comm filter lose fewer")
    return (f"{lost} events lost: the ring ({size} bytes{per}) filled faster than it was read; "
            f"try --ring-bytes {larger}, fewer --events, or a --pid/--comm filter")


def command_options() -> argparse.ArgumentParser:
    """Command mode's options, as a parent parser: CMD and -u USER."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-u", "--user", metavar="USER",
                        help="run CMD as USER (name or uid), as strace -u does (needs root)")
    parent.add_argument("cmd_argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                        help="run CMD, trace it and every process it starts, stop when they "
                             "have all exited, and exit with CMD's exit status")
    return parent


def open_monitor(args: argparse.Namespace):
    """The bundled monitor as the live options ask: --events, --pid (the whole tree),
    --comm (both filtered in the kernel), --transport and its size."""
    from ebpfwire.kernel.errors import LoaderError
    from ebpfwire.kernel.monitor import Monitor

    if args.ring_pages is not None and args.transport == "ringbuf":
        raise UsageError("--ring-pages sizes the per-CPU perf rings; give --ring-bytes with "
                         f"--transport {args.transport}")
    events = names_list(args.events) or None
    try:
        return Monitor(events=events, pid=args.pid, page_count=args.ring_pages,
                       comm=args.comm, transport=args.transport, ring_bytes=args.ring_bytes,
                       hooks=args.hooks)
    except LoaderError as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
