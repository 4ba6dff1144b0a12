"""The ``ebpfwire`` command line: decode and inspect captures, record and trace live events.

Errors a user can cause (a missing file, a file that is not a capture, a layout that does
not fit) end in one line on stderr and exit status 2, never a traceback; damage inside a
capture is reported line by line while everything intact is still decoded (docs/cli.md).
One module per command; what they share is in small modules of one job each: ``errors``
(exit statuses, one-line errors), ``output`` (stdout, batched events, progress),
``options`` (argument types, shared option groups), ``filters`` (the event filter),
``captures`` (opening captures, choosing the layout) and ``live`` (the monitor, signals).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from ebpfwire import __version__
from ebpfwire.cli.decode import bundled_sample, cmd_decode
from ebpfwire.cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    OutputError,
    UsageError,
    say,
)
from ebpfwire.cli.export import register as register_export
from ebpfwire.cli.info import cmd_info
from ebpfwire.cli.options import (
    add_capture_filters,
    add_decoding_options,
    duration_type,
    live_options,
)
from ebpfwire.cli.ps import cmd_ps
from ebpfwire.cli.record import cmd_record
from ebpfwire.cli.stats import register as register_stats
from ebpfwire.cli.summary import register as register_summary
from ebpfwire.cli.trace import cmd_trace
from ebpfwire.collect import fewer_collections

__all__ = ["bundled_sample", "build_parser", "main"]


EPILOG = """\
examples:
  ebpfwire decode                          decode the bundled sample capture
  ebpfwire decode run.ewcap --event connect,tcp_connect --pid 4242
  ebpfwire decode run.ewcap --format jsonl > run.jsonl
  ebpfwire decode --follow run.ewcap       keep printing while `record` writes it
  ebpfwire info run.ewcap
  ebpfwire ps run.ewcap                    the process tree
  sudo ebpfwire record -o run.ewcap --duration 10
  sudo ebpfwire trace --events execve,connect
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one UsageError line (no usage block), like every other."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog.removeprefix(PROG).strip() or 'usage'}: {message} "
                         f"(see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="Decode, inspect and record KubeArmor-style eBPF syscall events.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("decode", help="decode captures to a table, JSON lines or JSON",
                       formatter_class=raw, epilog="""\
examples:
  ebpfwire decode                              the bundled sample
  ebpfwire decode run.ewcap --format jsonl     one JSON object per event
  ebpfwire decode run.ewcap --format kubearmor KubeArmor's log format
  ebpfwire decode run.ewcap --event openat --comm curl
  cat run.ewcap | ebpfwire decode -            a capture on standard input
  ebpfwire decode --lenient damaged.ewcap      show what damaged samples still hold
""")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="capture files, - for standard input (default: the bundled sample)")
    p.add_argument("--format", choices=("table", "jsonl", "json", "kubearmor"),
                   default="table", help="strace-like table (default), JSON lines, one JSON "
                                         "array, or KubeArmor logs (one JSON object a line)")
    p.add_argument("--raw", action="store_true",
                   help="without the process context (executable, parent, container): "
                        "the events as the capture holds them")
    add_capture_filters(p, "decode damaged samples as far as possible and show the damage",
                        utc=True)
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep reading a file that is being written, until Ctrl-C")
    p.add_argument("--no-sort", action="store_true",
                   help="keep file order (default: time order across CPUs, 1 s window)")
    p.add_argument("--strict-exit", action="store_true",
                   help="exit with status 1 when anything was damaged")
    p.set_defaults(run=cmd_decode)

    p = sub.add_parser("ps", help="the process tree of a capture, like pstree -a",
                       formatter_class=raw, epilog="""\
examples:
  ebpfwire ps run.ewcap                  every process: program, argv, pid, lifetime, exit
  ebpfwire ps run.ewcap --event connect  the processes that connected, and their ancestors
  ebpfwire ps --json run.ewcap
""")
    p.add_argument("file", metavar="FILE", help="capture file, - for standard input")
    add_capture_filters(p, "decode damaged samples as far as possible", utc=True)
    p.add_argument("--json", action="store_true", help="the tree as nested JSON objects")
    p.add_argument("--strict-exit", action="store_true",
                   help="exit with status 1 when anything was damaged")
    p.set_defaults(run=cmd_ps)

    p = sub.add_parser("info", help="summarise a capture: header, counts, loss, time span",
                       formatter_class=raw, epilog="examples:\n  ebpfwire info run.ewcap\n"
                                                   "  ebpfwire info --json run.ewcap\n")
    p.add_argument("file", metavar="FILE", help="capture file, - for standard input")
    add_decoding_options(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_info)

    live = live_options()
    p = sub.add_parser("record", parents=[live], formatter_class=raw,
                       help="record live events to a capture file (needs root)",
                       epilog="examples:\n  sudo ebpfwire record -o run.ewcap --duration 10\n"
                              "  sudo ebpfwire record -o run.ewcap --events execve,connect\n"
                              "  sudo ebpfwire record -o run.ewcap --force   replace run.ewcap\n")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the capture to create (never an existing path, never through a link)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--force", action="store_true",
                          help="replace what is at FILE (a link is replaced, not followed)")
    existing.add_argument("--append", action="store_true",
                          help="add records to the existing capture FILE")
    p.add_argument("--duration", type=duration_type, metavar="S", help="stop after S seconds")
    p.set_defaults(run=cmd_record)

    p = sub.add_parser("trace", parents=[live], formatter_class=raw,
                       help="print live events as they happen (needs root)",
                       epilog="examples:\n  sudo ebpfwire trace\n"
                              "  sudo ebpfwire trace --events tcp --format jsonl\n")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument("--utc", action="store_true", help="show wall-clock times in UTC")
    p.add_argument("--lenient", action="store_true", help="decode damaged samples leniently")
    p.add_argument("--failed", action="store_true",
                   help="only events that failed (a negative result)")
    p.set_defaults(run=cmd_trace)

    # commands that add their own parsers: stats, summary, export
    for register in (register_stats, register_summary, register_export):
        register(sub)
    return parser


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the final flush cannot fail."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        with fewer_collections():
            status = args.run(args)
        sys.stdout.flush()  # here, not at interpreter exit, where a failure is a traceback
        return status
    except UsageError as exc:
        say(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except OutputError as exc:
        _quiet_stdout()
        say(str(exc))
        return EXIT_IO
    except OSError as exc:  # last resort: stdout/stderr or a file failing where not expected
        _quiet_stdout()
        where = f"{exc.filename}: " if exc.filename else ""
        say(f"{where}{exc.strerror or exc}")
        return EXIT_IO
