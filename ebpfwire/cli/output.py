"""Output plumbing: stdout writes that fail as one line, rendered events in batches, and
the progress line on a terminal."""

from __future__ import annotations

import errno
import fcntl
import io
import os
import sys
import time
from typing import TextIO

from ebpfwire.cli.errors import OutputError
from ebpfwire.kernel.ringbuf import RINGBUF_CPU
from ebpfwire.output.render import TableRenderer, event_json, lost_json
from ebpfwire.wire.catalogue import PAIRED
from ebpfwire.wire.events import Event

# characters of output text held before one write: memory stays flat, and the joined text
# stays small enough to be made and encoded in the CPU's cache
WRITE_LIMIT = 1 << 18
PROGRESS_EVERY = 0.25  # s between progress updates on a terminal


class ClosedStdout(io.TextIOBase):
    """``sys.stdout`` of a run started with it closed (``>&-``): every write fails as a
    write to a closed descriptor does (EBADF), so it ends as any unwritable stdout."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


def guard_stdio() -> bool:
    """Make a run started with stdin, stdout or stderr closed safe; True if stdout was.

    Each closed descriptor gets /dev/null, so no file opened later takes its number (a
    capture or Parquet file on fd 2 would receive any library's messages). Messages to a
    closed stderr are then dropped, never fatal; a closed stdin reads as empty; a closed
    stdout fails every write (:class:`ClosedStdout`).
    """
    closed = set()
    for fd in (0, 1, 2):
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            closed.add(fd)
            null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdin is None or 0 in closed:
        sys.stdin = open(os.devnull)  # the process's own, open until it exits
    if sys.stderr is None or 2 in closed:
        sys.stderr = open(os.devnull, "w")
    if sys.stdout is None or 1 in closed:
        sys.stdout = ClosedStdout()
        return True
    return False


def write_stdout(stream: TextIO, text: str) -> None:
    """Write and flush; a failure other than a closed pipe becomes an OutputError."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(exc) from None


class Output:
    """Rendered events to stdout in batches, as table lines, JSON lines or one JSON array.

    Lines are joined into one write once WRITE_LIMIT characters are pending, so what is
    held is bounded by size, not by a count of lines whatever their length (a 1 MiB argv).
    """

    def __init__(self, fmt: str, stream: TextIO, boot_time_ns: int = 0, utc: bool = False,
                 flush_each: bool = False, table: TableRenderer | None = None):
        self.fmt = fmt
        self.stream = stream
        self.flush_each = flush_each
        self.table = table or TableRenderer(boot_time_ns, utc)
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

    def lines(self, lines: list[str]) -> None:
        """Many lines at once (the bulk path's)."""
        self._lines += lines
        self.pending += sum(map(len, lines))
        if self.flush_each or self.pending >= WRITE_LIMIT:
            self.flush()

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
                lines.append("")    # the last line's newline, without a copy of the text
                text = "\n".join(lines)
            lines.clear()
            self.pending = 0
            write_stdout(self.stream, text)
        else:
            write_stdout(self.stream, "")

    def close(self) -> None:
        self.flush()
        if self.fmt == "json":
            write_stdout(self.stream, "[]\n" if self._first else "\n]\n")


def wall_clock(ns: int, utc: bool) -> str:
    """Wall-clock ns as a date and time with microseconds, in UTC or local time."""
    seconds, rest = divmod(ns, 1_000_000_000)
    when = (time.gmtime if utc else time.localtime)(seconds)
    zone = "UTC" if utc else time.strftime("%Z", when)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', when)}.{rest // 1000:06d} {zone}"


class StraceTable(TableRenderer):
    """Table lines with strace's time and size habits: ``timestamps`` 1 (-t: seconds), 2
    (-tt: microseconds, the default), 3 (-ttt: seconds since the epoch); ``relative``
    (-r: since the previous line); ``durations`` (-T: an exec's time from its entry
    event to its exit event, ``<0.000123>``); ``string_limit`` (-s N)."""

    def __init__(self, boot_time_ns: int, utc: bool = False, string_limit: int | None = None,
                 timestamps: int = 2, relative: bool = False, durations: bool = False):
        super().__init__(boot_time_ns, utc, string_limit)
        self.timestamps = timestamps
        self.relative = relative
        self.durations = durations
        self._previous: int | None = None
        self._entered: dict[int, int] = {}  # host pid -> ts of its exec's entry event

    def clock(self, ts: int | None) -> str:
        if ts is None:
            return "?"
        if self.relative:
            since = 0 if self._previous is None else ts - self._previous
            self._previous = ts
            return f"{since / 1e9:+.6f}"
        if self.timestamps == 3:
            seconds, ns = divmod(self.boot_time_ns + ts, 1_000_000_000)
            return f"{seconds}.{ns // 1000:06d}"
        text = super().clock(ts)
        return text.partition(".")[0] if self.timestamps == 1 else text

    def event(self, event: Event, context: str = "") -> str:
        line = super().event(event, context)
        if not self.durations or event.label not in PAIRED or event.ts is None:
            return line
        if event.argnum:  # the entry: its exit event closes the call
            self._entered[event.host_pid] = event.ts
            return line
        entered = self._entered.pop(event.host_pid, None)
        if entered is None:
            return line
        return f"{line} <{(event.ts - entered) / 1e9:.6f}>"


def table_renderer(args, boot_time_ns: int = 0) -> StraceTable | None:
    """The table renderer the time and size options ask for; None for the default one."""
    timestamps = args.timestamps or 2
    if (timestamps, args.relative_timestamps, args.syscall_times, args.string_limit) == (
            2, False, False, None):
        return None
    return StraceTable(boot_time_ns, args.utc, args.string_limit, min(timestamps, 3),
                       args.relative_timestamps, args.syscall_times)


class Progress:
    """A status line on a terminal's stderr, a few times a second: records, events/s and
    percent of the file (decode), percent of the records' bytes, events and events/s
    (export), or events, losses and events/s (record)."""

    def __init__(self, size: int | None = None):
        self.enabled = sys.stderr.isatty()
        self.size = size
        self.started = time.monotonic()
        self.last = self.started
        self.shown = False

    def _due(self, force: bool = False) -> float | None:
        """Seconds since the start when a new line is due (or forced), else None."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < PROGRESS_EVERY):
            return None
        self.last = now
        return max(now - self.started, 1e-9)

    def _show(self, text: str) -> None:
        self.shown = _to_stderr(f"\r{text}\x1b[K")

    def update(self, records: int, events: int, offset: int) -> None:
        """Decode's line: records read, events/s, where in the file."""
        elapsed = self._due()
        if elapsed is not None:
            where = f", {100 * offset / self.size:.0f}% of the file" if self.size else ""
            self._show(f"{records:,} records, {events / elapsed:,.0f} events/s{where}")

    def of_bytes(self, done: int, total: int, events: int) -> None:
        """Export's line (its ``progress`` callback): share of the records' bytes done."""
        elapsed = self._due()
        if elapsed is not None:
            share = 100 * done / total if total else 100
            self._show(f"{share:.0f}% of the records, {events:,} events, "
                       f"{events / elapsed:,.0f} events/s")

    def recording(self, events: int, lost: int, force: bool = False) -> None:
        """Record's line: events and losses so far (``force``: now, the last one)."""
        elapsed = self._due(force)
        if elapsed is not None:
            self._show(f"{events:,} events, {lost:,} lost, {events / elapsed:,.0f} events/s")

    def done(self, keep: bool = False) -> None:
        """Erase the line, or end it (``keep``) so that it stays on the terminal."""
        if self.shown:
            _to_stderr("\n" if keep else "\r\x1b[K")


def _to_stderr(text: str) -> bool:
    """Write a progress update; a terminal gone (EIO) or a full stderr is not fatal."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except OSError:
        return False
    return True


def cpu_label(cpu: int) -> str:
    """How a record's cpu is shown: its number, or "ringbuf" for ring buffer samples,
    which do not say which CPU wrote them."""
    return "ringbuf" if cpu == RINGBUF_CPU else str(cpu)
