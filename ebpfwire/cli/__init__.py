"""The ``ebpfwire`` command line: decode and inspect captures, record and trace live events.

Errors a user can cause (a missing file, a file that is not a capture, a layout that does
not fit) end in one line on stderr and exit status 2, never a traceback; damage inside a
capture is reported line by line while everything intact is still decoded (docs/cli.md).
One module per command; what they share is in small modules of one job each: ``errors``
(exit statuses, one-line errors), ``output`` (stdout, batched events, progress),
``options`` (argument types, shared option groups), ``filters`` (the event filter),
``captures`` (opening captures, choosing the layout), ``live`` (the monitor, signals, when a
live command ends) and ``command`` (command mode: ``-- CMD ARGS`` run as strace runs it).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from typing import IO, NoReturn

from ebpfwire import __version__
from ebpfwire.cli.command import EXIT_NOT_FOUND, CommandNotFound
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
from ebpfwire.cli.output import guard_stdio, write_stdout
from ebpfwire.collect import fewer_collections

__all__ = ["build_parser", "main"]

COMMANDS = ("decode", "ps", "info", "record", "trace", "stats", "summary", "export", "run")
"""The commands, in the order the help lists them; each is the module of its name."""


EPILOG = """\
examples:
  ebpfwire decode                          decode the bundled sample capture
  ebpfwire decode run.ewcap -e connect,tcp_connect -p 4242
  ebpfwire decode run.ewcap --format jsonl > run.jsonl
  ebpfwire decode run.ewcap --format kubearmor   KubeArmor's log format
  ebpfwire decode --follow run.ewcap       keep printing while `record` writes it
  ebpfwire info run.ewcap
  ebpfwire ps run.ewcap                    the process tree
  ebpfwire summary run.ewcap               calls and errors per syscall, like strace -c
  sudo ebpfwire record -o run.ewcap -- make test    run a command, record its tree
  sudo ebpfwire record -o run.ewcap --duration 10
  sudo ebpfwire trace -e execve,connect -- sh -c 'curl -s example.com'
  sudo ebpfwire stats -- ls                syscall counts and latencies, like strace -c

Each command's --help says all of its options; `-p PID` is a process and its descendants,
`-e LIST` the events, `-o FILE` the output, everywhere.
"""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one UsageError line (no usage block), like every other,
    pointing at the help of the command they are about."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, but an unknown option is the subcommand's error, not the top's."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = self._subparsers and getattr(parsed, "command", None)
            parser = self._commands().get(command, self) if command else self
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed

    def _commands(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices
        return {}

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog.removeprefix(PROG).strip() or 'usage'}: {message} "
                         f"(see {self.prog} --help)")

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        """--help and --version are output like any other: an unwritable stdout is one
        line and status 74 (argparse would drop it, or print it to stderr instead)."""
        if message:
            write_stdout(file or sys.stdout, message)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``only`` (a command's name), that command's alone:
    a live command then imports what it needs and not every other command's modules
    (the decoder of captures, Arrow, the stats programs), so it starts sooner."""
    parser = _Parser(
        prog=PROG, description="Decode, inspect and record KubeArmor-style eBPF syscall events.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"{__name__}.{name}").register(sub)
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
    stdout_closed = guard_stdio()
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            if stdout_closed:  # the help cannot be shown: say what is missing instead
                raise UsageError(f"usage: expected a command (see {PROG} --help)")
            parser.print_help()
            return EXIT_USAGE
        if stdout_closed and vars(args).get("uses_stdout", True):  # before any work
            raise OutputError(OSError(errno.EBADF, os.strerror(errno.EBADF)))
        with fewer_collections():
            status = args.run(args)
        sys.stdout.flush()  # here, not at interpreter exit, where a failure is a traceback
        return status
    except UsageError as exc:
        say(str(exc))
        return EXIT_USAGE
    except CommandNotFound as exc:
        say(str(exc))
        return EXIT_NOT_FOUND
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
