"""What every command shares: exit statuses, one-line errors, output, progress, filters,
opening captures and choosing their layout, and the pieces of the live commands."""

from __future__ import annotations

import argparse
import mmap
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from ebpfwire import machine
from ebpfwire.capture import (
    CaptureError,
    CaptureHeader,
    CaptureReader,
    LostRecord,
    SampleRecord,
    unreadable_capture,
)
from ebpfwire.kernel.ringbuf import RINGBUF_CPU
from ebpfwire.output.render import TableRenderer, event_json, lost_json
from ebpfwire.wire.catalogue import check_arch
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import Event
from ebpfwire.wire.filter import EventFilter
from ebpfwire.wire.filter import check_event_names as check_names
from ebpfwire.wire.layouts import LAYOUTS, Layout, get_layout
from ebpfwire.wire.text import printable

PROG = "ebpfwire"
#: Exit statuses (docs/cli.md): done; done but something was damaged (--strict-exit);
#: nothing could be done with the input or options; an output could not be written
#: (EX_IOERR of sysexits.h: a full disk, an I/O error); Ctrl-C.
EXIT_OK, EXIT_DAMAGED, EXIT_USAGE, EXIT_IO, EXIT_INTERRUPTED = 0, 1, 2, 74, 130
PID_MAX = 4_194_304    # PID_MAX_LIMIT on 64-bit Linux: no pid is larger
COMM_MAX = 15
RING_PAGES_MAX = 1 << 16  # 256 MiB per CPU with 4 KiB pages
RING_BYTES_MAX = 1 << 30  # the monitor's bound, for either transport
DURATION_MAX = 1e9     # s (about 31 years): a bound that keeps the deadline arithmetic exact
HOLD_LIMIT = 256       # samples held back while checking that the layout fits
# characters of output text held before one write: memory stays flat, and the joined text
# stays small enough to be made and encoded in the CPU's cache
WRITE_LIMIT = 1 << 18
FOLLOW_POLL = 0.05     # s between looks for a file --follow waits for
PROGRESS_EVERY = 0.25  # s between progress updates on a terminal


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


def ring_bytes_type(text: str) -> int:
    """Ring size in bytes: a power of two, whole pages, at most RING_BYTES_MAX."""
    value = _integer(text)
    page = mmap.PAGESIZE
    if value < page or value & (value - 1) or value > RING_BYTES_MAX:
        raise argparse.ArgumentTypeError(
            f"expected a power of two from {page} (one page) to {RING_BYTES_MAX}, found {text}")
    return value


def comm_type(text: str) -> str:
    """A task name: at most 15 bytes, as the kernel keeps it (TASK_COMM_LEN 16)."""
    if not text or len(text.encode("utf-8", "surrogateescape")) > COMM_MAX:
        raise argparse.ArgumentTypeError(
            f"expected a task name of 1 to {COMM_MAX} bytes (the kernel cuts longer names), "
            f"found {text!r}")
    return text


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
        sys.stderr.write(f"\r{text}\x1b[K")
        sys.stderr.flush()
        self.shown = True

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
            sys.stderr.write("\n" if keep else "\r\x1b[K")
            sys.stderr.flush()


# --------------------------------------------------------------------------- filters


def _names_list(values: Iterable[str] | None) -> list[str]:
    return [name.strip() for value in values or () for name in value.split(",") if name.strip()]


def check_event_names(names: Iterable[str]) -> list[str]:
    """The --event names, each a known event or ``event_<id>``; else a UsageError naming
    the closest known names."""
    names = list(names)
    try:
        check_names(names)
    except ValueError as exc:
        raise UsageError(f"--event: {exc}") from None
    return names


def make_filter(events: list[str], pid: int | None, comm: str | None, failed: bool = False
                ) -> Callable[[Event], bool] | None:
    """The --event/--pid/--comm/--failed test, or None when nothing is filtered."""
    try:
        keep = EventFilter(frozenset(events), pid, comm, failed)
    except ValueError as exc:
        raise UsageError(f"--event: {exc}") from None
    return keep.matches if keep else None


def add_decoding_options(p: argparse.ArgumentParser, utc: bool = True) -> None:
    """--layout/--arch (and --utc for commands that show wall-clock times)."""
    p.add_argument("--layout", help="context layout (default: the capture header's); "
                                    f"one of {', '.join(LAYOUTS)}")
    p.add_argument("--arch", help="architecture of the event ids (default: the header's)")
    if utc:
        p.add_argument("--utc", action="store_true", help="show wall-clock times in UTC")


def add_capture_filters(p: argparse.ArgumentParser, lenient_help: str, utc: bool = False
                        ) -> None:
    """The decoding options, --lenient and the --event/--pid/--comm/--failed filters, for
    every command that reads whole captures (decode, ps, summary, export)."""
    add_decoding_options(p, utc)
    p.add_argument("--lenient", action="store_true", help=lenient_help)
    p.add_argument("--event", action="append", metavar="NAME",
                   help="only these events (repeat, or a comma list: openat,connect)")
    p.add_argument("--pid", type=pid_type, help="only this pid (namespace or host pid)")
    p.add_argument("--comm", type=comm_type, help="only this task name (exact)")
    p.add_argument("--failed", action="store_true",
                   help="only events that failed (a negative result: -1 EPERM...)")


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
    except (FileNotFoundError, IsADirectoryError, PermissionError, CaptureError) as exc:
        raise UsageError(unreadable_capture(label, exc)) from None


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


def _clean(data: bytes, layout: Layout, arch: str) -> bool:
    try:
        decode(data, layout=layout, arch=arch)
    except DecodeError:
        return False
    return True


def held_until_fit(records: Iterator[SampleRecord | LostRecord], layout: Layout, arch: str,
                    label: str) -> Iterator[SampleRecord | LostRecord]:
    """The records, unchanged, once one sample decodes cleanly with the layout.

    Until then records are held back (up to HOLD_LIMIT samples). If none decodes with the
    layout while another layout decodes some, or every sample is shorter than the layout's
    header, the layout is wrong for this capture: one UsageError naming the layout tried
    and the ones that fit, instead of an error line per sample.
    """
    held: list[SampleRecord | LostRecord] = []
    samples: list[bytes] = []
    for record in records:
        held.append(record)
        if type(record) is not SampleRecord:
            continue
        if _clean(record.data, layout, arch):
            yield from held
            yield from records
            return
        samples.append(record.data)
        if len(samples) >= HOLD_LIMIT:
            break
    if samples:
        fits = {name: sum(_clean(data, other, arch) for data in samples)
                for name, other in LAYOUTS.items() if other is not layout}
        fits = {name: count for name, count in fits.items() if count}
        short = sum(len(data) < layout.size for data in samples)
        if fits or short == len(samples):
            lengths = sorted(len(data) for data in samples)
            if fits:
                hint = "; layouts that decode them: " + ", ".join(
                    f"{name} ({count} of {len(samples)})"
                    for name, count in sorted(fits.items(), key=lambda item: -item[1]))
            else:
                by_size = [name for name, other in LAYOUTS.items() if other.size <= lengths[0]]
                hint = f"; layouts that fit by size: {', '.join(by_size) or 'none'}"
            raise UsageError(
                f"{label}: layout {layout.name!r} ({layout.size}-byte header) does not fit: "
                f"none of the {'first ' if len(samples) >= HOLD_LIMIT else ''}{len(samples)} "
                f"samples ({lengths[0]}..{lengths[-1]} bytes, {short} shorter than the "
                f"header) decodes with it{hint} (choose with --layout)")
    yield from held



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
    try:
        return machine.arch()
    except machine.UnsupportedMachine as exc:
        raise UsageError(str(exc)) from None


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
    """The bundled monitor as the live options ask: --events, --pid (the whole tree),
    --comm (both filtered in the kernel), --transport and its size."""
    from ebpfwire.kernel.errors import LoaderError
    from ebpfwire.kernel.monitor import Monitor

    if args.ring_pages is not None and args.transport != "perf":
        raise UsageError("--ring-pages sizes the per-CPU perf rings; give --ring-bytes with "
                         f"--transport {args.transport}")
    events = _names_list(args.events) or None
    try:
        return Monitor(events=events, pid=args.pid, page_count=args.ring_pages,
                       comm=args.comm, transport=args.transport, ring_bytes=args.ring_bytes)
    except LoaderError as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def cpu_label(cpu: int) -> str:
    """How a record's cpu is shown: its number, or "ringbuf" for ring buffer samples,
    which do not say which CPU wrote them."""
    return "ringbuf" if cpu == RINGBUF_CPU else str(cpu)


