"""Exit statuses and the command line's two errors, each ending in one line on stderr."""

from __future__ import annotations

import sys

from ebpfwire.wire.text import printable

PROG = "ebpfwire"
#: Exit statuses (docs/cli.md): done; done but something was damaged (--strict-exit);
#: nothing could be done with the input or options; an output could not be written
#: (EX_IOERR of sysexits.h: a full disk, an I/O error); Ctrl-C.
EXIT_OK, EXIT_DAMAGED, EXIT_USAGE, EXIT_IO, EXIT_INTERRUPTED = 0, 1, 2, 74, 130


class UsageError(Exception):
    """Input the command cannot work with: one line on stderr, exit status 2."""


class OutputError(Exception):
    """Standard output could not be written (not a closed pipe): one line, exit status 74."""

    def __init__(self, exc: OSError):
        super().__init__(f"cannot write standard output: {exc.strerror or exc}")


def say(message: str) -> None:
    """One line on stderr; control characters in it (from a file name, a capture) escaped."""
    try:
        print(f"{PROG}: {printable(message)}", file=sys.stderr, flush=True)
    except OSError:  # stderr itself is gone: the exit status still tells
        pass
