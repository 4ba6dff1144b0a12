"""What every command shares: exit statuses, one-line errors, output, progress, filters,
opening captures and choosing their layout, and the pieces of the live commands."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from ..capture import CaptureError, CaptureHeader, CaptureReader
from ..catalogue import check_arch
from ..events import Event
from ..layouts import LAYOUTS, Layout, get_layout
from ..render import TableRenderer, event_json, event_label, lost_json, printable

PROG = "ebpfwire"
#: Exit statuses (docs/cli.md): done; done but something was damaged (--strict-exit);
#: nothing could be done with the input or options; an output could not be written
#: (EX_IOERR of sysexits.h: a full disk, an I/O error); Ctrl-C.
EXIT_OK, EXIT_DAMAGED, EXIT_USAGE, EXIT_IO, EXIT_INTERRUPTED = 0, 1, 2, 74, 130
PID_MAX = 4_194_304    # PID_MAX_LIMIT on 64-bit Linux: no pid is larger
RING_PAGES_MAX = 1 << 16  # 256 MiB per CPU with 4 KiB pages
DURATION_MAX = 1e9     # s (about 31 years): a bound that keeps the deadline arithmetic exact
WRITE_LIMIT = 1 << 20  # characters of output text held before one write (memory stays flat)
FOLLOW_POLL = 0.05     # s between looks for a file --follow waits for
PROGRESS_EVERY = 0.25  # s between progress updates on a terminal
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


class UsageError(Exception):
    """Input the command cannot work with: one line on stderr, exit status 2."""


class OutputError(Exception):
    """Standard output could not be written (not a closed pipe): one line, exit status 74."""

    def __init__(self, exc: OSError):
        super().__init__(f"cannot write standard output: {exc.strerror or exc}")


def _say(message: str) -> None:
    """One line on stderr; control characters in it (from a file name, a capture) escaped."""
    try:
        print(f"{PROG}: {printable(message)}", file=sys.stderr, flush=True)
    except OSError:  # stderr itself is gone: the exit status still tells
        pass


def write_stdout(stream: TextIO, text: str) -> None:
    """Write and flush; a failure other than a closed pipe becomes an OutputError."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(exc) from None


# --------------------------------------------------------------------------- option types


def _integer(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None


def pid_type(text: str) -> int:
    """A process id: 1 to PID_MAX."""
    value = _integer(text)
    if not 1 <= value <= PID_MAX:
        raise argparse.ArgumentTypeError(f"expected a pid from 1 to {PID_MAX}, found {text}")
    return value


def ring_pages_type(text: str) -> int:
    """Perf ring data pages per CPU: a power of two, 1 to RING_PAGES_MAX."""
    value = _integer(text)
    if value < 1 or value & (value - 1) or value > RING_PAGES_MAX:
        raise argparse.ArgumentTypeError(
            f"expected a power of two from 1 to {RING_PAGES_MAX}, found {text}")
    return value


def duration_type(text: str) -> float:
    """Seconds: a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, found {text!r}") from None
    if not 0 < value <= DURATION_MAX:  # also false for nan
        raise argparse.ArgumentTypeError(
            f"expected seconds above 0 and at most {DURATION_MAX:.0e}, found {text}")
    return value


# --------------------------------------------------------------------------- output


class Output:
    """Rendered events to stdout in batches, as table lines, JSON lines or one JSON array.

    Lines are joined into one write once WRITE_LIMIT characters are pending, so what is
    held is bounded by size, not by a count of lines whatever their length (a 1 MiB argv).
    """

    def __init__(self, fmt: str, stream: TextIO, boot_time_ns: int = 0, utc: bool = False,
                 flush_each: bool = False):
        self.fmt = fmt
        self.stream = stream
        self.flush_each = flush_each
        self.table = TableRenderer(boot_time_ns, utc)
        self._lines: list[str] = []
        self.pending = 0  # characters in _lines
        self._first = True  # json: the array is opened with its first element

    def set_boot_time(self, boot_time_ns: int) -> None:
        self.table.boot_time_ns = boot_time_ns

    def _add(self, line: str) -> None:
        self._lines.append(line)
        self.pending += len(line)
        if self.flush_each or self.pending >= WRITE_LIMIT:
            self.flush()

    line = _add

    def event(self, event: Event) -> None:
        self._add(self.table.event(event) if self.fmt == "table" else event_json(event))

    def lost(self, cpu: int, count: int) -> None:
        self._add(self.table.lost(cpu, count) if self.fmt == "table" else lost_json(cpu, count))

    def flush(self) -> None:
        lines = self._lines
        if lines:
            if self.fmt == "json":
                text = ("[\n" if self._first else ",\n") + ",\n".join(lines)
                self._first = False
            else:
                text = "\n".join(lines) + "\n"
            lines.clear()
            self.pending = 0
            write_stdout(self.stream, text)
        else:
            write_stdout(self.stream, "")

    def close(self) -> None:
        self.flush()
        if self.fmt == "json":
            write_stdout(self.stream, "[]\n" if self._first else "\n]\n")


class Progress:
    """Records, events/s and percent of the file on a terminal's stderr, a few times a second."""

    def __init__(self, size: int | None):
        self.enabled = sys.stderr.isatty()
        self.size = size
        self.started = time.monotonic()
        self.last = self.started
        self.shown = False

    def update(self, records: int, events: int, offset: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        rate = events / max(now - self.started, 1e-9)
        where = f", {100 * offset / self.size:.0f}% of the file" if self.size else ""
        sys.stderr.write(f"\r{records:,} records, {rate:,.0f} events/s{where}\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


# --------------------------------------------------------------------------- filters


def _names_list(values: Iterable[str] | None) -> list[str]:
    return [name.strip() for value in values or () for name in value.split(",") if name.strip()]


def make_filter(events: list[str], pid: int | None, comm: str | None
                ) -> Callable[[Event], bool] | None:
    """The --event/--pid/--comm test, or None when nothing is filtered."""
    wanted = frozenset(events)
    if not wanted and pid is None and comm is None:
        return None

    def keep(event: Event) -> bool:
        if wanted and event_label(event) not in wanted:
            return False
        if pid is not None and pid not in (event.pid, event.host_pid):
            return False
        return comm is None or event.comm == comm

    return keep


def _resolve_layout(name: str, origin: str, where: str) -> Layout:
    try:
        return get_layout(name)
    except ValueError:
        known = ", ".join(LAYOUTS)
        raise UsageError(f"{where}unknown layout {name!r} ({origin}); known layouts: {known}"
                         ) from None


def _resolve_arch(name: str, origin: str, where: str) -> str:
    try:
        return check_arch(name)
    except ValueError as exc:
        raise UsageError(f"{where}{exc} ({origin})") from None


def _label(source: str) -> str:
    return "<stdin>" if source == "-" else source


def open_capture(source: str, follow: bool = False) -> CaptureReader:
    """A reader for a path or ``-`` (standard input); unreadable input is a UsageError."""
    label = _label(source)
    if follow and source != "-" and not os.path.lexists(source):
        _say(f"{label}: waiting for the file to appear (Ctrl-C stops)")
        while not os.path.lexists(source):
            time.sleep(FOLLOW_POLL)
    try:
        if source == "-":
            return CaptureReader(sys.stdin.buffer, follow=follow)
        return CaptureReader(source, follow=follow)
    except FileNotFoundError:
        raise UsageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{label}: is a directory, expected a capture file") from None
    except PermissionError:
        raise UsageError(f"{label}: permission denied") from None
    except CaptureError as exc:
        raise UsageError(f"{label}: not a readable capture: offset {exc.offset}: expected "
                         f"{exc.expected}, found {exc.found}") from None


def layout_and_arch(args: argparse.Namespace, header: CaptureHeader, label: str
                    ) -> tuple[Layout, str]:
    """--layout/--arch when given, else what the capture header says; checked."""
    where = f"{label}: "
    if args.layout:
        layout = _resolve_layout(args.layout, "from --layout", where)
    else:
        layout = _resolve_layout(header.layout, "from the capture header; choose one with "
                                                "--layout", where)
    if args.arch:
        return layout, _resolve_arch(args.arch, "from --arch", where)
    return layout, _resolve_arch(header.arch, "from the capture header; choose one with --arch",
                                 where)


def _regular_size(source: str) -> int | None:
    if source == "-":
        return None
    try:
        info = os.stat(source)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None



# --------------------------------------------------------------------------- live


def machine_arch() -> str:
    """This machine's architecture as captures name it (x86_64 or arm64)."""
    machine = platform.machine()
    try:
        return MACHINES[machine]
    except KeyError:
        raise UsageError(f"unsupported machine {machine!r}: the bundled monitor is built for "
                         "x86_64 and arm64") from None


class _Stop:
    """SIGINT/SIGTERM set a flag the live loops check, so no write is ever cut in half."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _open_monitor(args: argparse.Namespace):
    from ..loader.errors import LoaderError
    from ..loader.monitor import Monitor

    events = _names_list(args.events) or None
    try:
        return Monitor(events=events, pid=args.pid, page_count=args.ring_pages)
    except LoaderError as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


class _Status:
    """A live status line on a terminal's stderr: events, lost, rate."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.started = self.last = time.monotonic()

    def update(self, events: int, lost: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < PROGRESS_EVERY):
            return
        self.last = now
        rate = events / max(now - self.started, 1e-9)
        sys.stderr.write(f"\r{events:,} events, {lost:,} lost, {rate:,.0f} events/s\x1b[K")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


