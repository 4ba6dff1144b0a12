"""``ebpfwire stats``: per-syscall calls, errors and log2 latency histograms kept in the kernel.

Loads :class:`ebpfwire.kernel.stats.SyscallStats` (its own object and maps, so it runs beside
``record``/``trace``), waits for ``--duration``, Ctrl-C or SIGTERM, then prints what was
counted: BCC-style histograms, or JSON. Ctrl-C is the usual way to stop, so it prints the
counts and exits 0, as ``record`` does.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time

from ebpfwire.cli.errors import EXIT_OK, UsageError, say
from ebpfwire.cli.live import (
    LiveEnd,
    StopSignals,
    command_options,
    finish_command,
    machine_arch,
    start_command,
    started,
)
from ebpfwire.cli.options import add_command, duration_type, names_list, names_type, pid_type
from ebpfwire.cli.output import write_stdout
from ebpfwire.kernel.stats import (
    MAX_SYSCALLS,
    StatsSnapshot,
    SyscallStats,
    render_stats,
    stats_json,
)
from ebpfwire.wire.names import syscall_name

POLL = 0.1  # s between looks at the stop flag and the clock


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``stats`` command to the parser's subcommands."""
    p = add_command(
        sub, "stats", "per-syscall calls, errors and latency histograms, counted in the kernel "
        "(needs root)",
        examples=(
            "sudo ebpfwire stats --duration 5",
            "sudo ebpfwire stats --pid 4242 --events openat,read,close",
            "sudo ebpfwire stats --json --interval 1    one JSON object per second",
            "sudo ebpfwire stats -- make test          count make test's syscalls, like strace -c",
        ), parents=[command_options()])
    p.add_argument("--duration", type=duration_type, metavar="S",
                   help="stop after S seconds (default: at Ctrl-C or SIGTERM)")
    p.add_argument("-e", "--events", "--event", action="append", type=names_type, metavar="LIST",
                   help="only these syscalls (names or numbers, comma list; default: all)")
    p.add_argument("-p", "--pid", type=pid_type,
                   help="only this process and the children it forks from now on; stops "
                        "when they have all exited")
    p.add_argument("--interval", type=duration_type, metavar="S",
                   help="also print the counts so far every S seconds")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per report instead of histograms: seconds, arch, unit, "
                        "dropped, and per syscall its nr, name, calls, errors, errnos, "
                        "total_ns and histogram")
    p.set_defaults(run=cmd_stats)


def syscall_selection(values: list[str] | None, arch: str) -> list[str | int] | None:
    """The --events syscalls (names or numbers), checked; None when not given.

    An unknown name is a UsageError naming the closest known syscalls."""
    items = names_list(values)
    if not items:
        return None
    known = {name for nr in range(MAX_SYSCALLS) if (name := syscall_name(nr, arch))}
    selection: list[str | int] = []
    for item in items:
        if item.isdigit():
            nr = int(item)
            if nr >= MAX_SYSCALLS:
                raise UsageError(f"--events: syscall number {nr}: expected 0 to "
                                 f"{MAX_SYSCALLS - 1}")
            selection.append(nr)
        elif item in known:
            selection.append(item)
        else:
            close = difflib.get_close_matches(item, sorted(known), n=5, cutoff=0.0)
            raise UsageError(f"--events: unknown syscall {item!r} on {arch}; closest known: "
                             f"{', '.join(close)}")
    return selection


def _report(snap: StatsSnapshot, seconds: float, as_json: bool) -> str:
    if as_json:
        return json.dumps({"seconds": round(seconds, 6), **stats_json(snap)}) + "\n"
    return f"syscalls counted over {seconds:.1f} s:\n\n" + render_stats(snap)


def cmd_stats(args: argparse.Namespace) -> int:
    from ebpfwire.kernel.errors import LoaderError

    arch = machine_arch()
    syscalls = syscall_selection(args.events, arch)
    with StopSignals() as stop:
        command = start_command(args)
        try:
            stats = SyscallStats(syscalls=syscalls, pid=args.pid)
        except BaseException as exc:
            if command is not None:
                command.abandon()
            if isinstance(exc, LoaderError):
                raise UsageError(str(exc).splitlines()[0]) from None
            if isinstance(exc, (ValueError, OSError)):
                raise UsageError(str(exc)) from None
            raise
        with stats:
            begun = time.monotonic()
            what = "every syscall" if syscalls is None else "syscalls " + ", ".join(
                item if isinstance(item, str) else syscall_name(item, arch) or f"syscall_{item}"
                for item in syscalls)
            say(started(f"counting {what}", args, command, children="its new children"))
            end = LiveEnd(stop, args.duration,
                          None if args.pid is None else stats.tree_alive, command)
            if command is not None:
                command.release()
            next_report = None if args.interval is None else begun + args.interval
            while not end.done():
                now = time.monotonic()
                if next_report is not None and now >= next_report:
                    write_stdout(sys.stdout, _report(stats.snapshot(), now - begun,
                                                     args.json) + ("" if args.json else "\n"))
                    next_report += args.interval
                wake = min(t for t in (now + POLL, next_report) if t is not None)
                time.sleep(end.wait(max(0.0, wake - now)))
            snap = stats.snapshot()
            seconds = time.monotonic() - begun
    write_stdout(sys.stdout, _report(snap, seconds, args.json))
    return finish_command(command, end, EXIT_OK)
