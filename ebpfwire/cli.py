"""The ``ebpfwire`` command line: decode and inspect captures, record and trace live events.

Errors a user can cause (a missing file, a file that is not a capture, a layout that does
not fit) end in one line on stderr and exit status 2, never a traceback; damage inside a
capture is reported line by line while everything intact is still decoded (docs/cli.md).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import signal
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from importlib import resources
from typing import Any, TextIO

from . import __version__
from .capture import (
    CaptureDamage,
    CaptureError,
    CaptureHeader,
    CaptureReader,
    CaptureWriter,
    LostRecord,
    SampleRecord,
    current_boot_time_ns,
)
from .catalogue import check_arch
from .decoder import decode
from .errors import DecodeError
from .events import Event
from .layouts import LAYOUTS, Layout, get_layout
from .render import TableRenderer, event_json, event_label, lost_json, sample_json

PROG = "ebpfwire"
EXIT_OK, EXIT_DAMAGED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
HOLD_LIMIT = 256       # samples held back while checking that the layout fits
WRITE_BATCH = 2048     # output lines joined into one write
PROGRESS_EVERY = 0.25  # s between progress updates on a terminal
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


class UsageError(Exception):
    """Input the command cannot work with: one line on stderr, exit status 2."""


def bundled_sample() -> str:
    """The sample capture shipped with the package, decoded when no FILE is given."""
    return str(resources.files("ebpfwire") / "data" / "sample.ewcap")


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- output


class Output:
    """Rendered events to stdout in batches, as table lines, JSON lines or one JSON array."""

    def __init__(self, fmt: str, stream: TextIO, boot_time_ns: int = 0, utc: bool = False,
                 flush_each: bool = False):
        self.fmt = fmt
        self.stream = stream
        self.flush_each = flush_each
        self.table = TableRenderer(boot_time_ns, utc)
        self._lines: list[str] = []
        self._first = True  # json: the array is opened with its first element

    def set_boot_time(self, boot_time_ns: int) -> None:
        self.table.boot_time_ns = boot_time_ns

    def _add(self, line: str) -> None:
        lines = self._lines
        lines.append(line)
        if self.flush_each or len(lines) >= WRITE_BATCH:
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
            self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        self.flush()
        if self.fmt == "json":
            self.stream.write("[]\n" if self._first else "\n]\n")
            self.stream.flush()


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


# --------------------------------------------------------------------------- decode


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


def _clean(data: bytes, layout: Layout, arch: str) -> bool:
    try:
        decode(data, layout=layout, arch=arch)
    except DecodeError:
        return False
    return True


class Decoding:
    """One capture decoded to an :class:`Output`, counting what was damaged on the way."""

    def __init__(self, args: argparse.Namespace, out: Output):
        self.args = args
        self.out = out
        self.strict = not args.lenient
        self.keep = make_filter(_names_list(args.event), args.pid, args.comm)
        self.damaged = 0

    def run(self, source: str) -> None:
        label = _label(source)
        reader = open_capture(source, follow=self.args.follow)

        def report(damage: CaptureDamage) -> None:
            self.damaged += 1
            _say(f"{label}: damaged record at file offset {damage.offset}: {damage.message}")

        reader.on_damage = report
        with reader:
            layout, arch = layout_and_arch(self.args, reader.header, label)
            self.out.set_boot_time(reader.header.boot_time_ns)
            size = _regular_size(source)
            progress = Progress(size)
            try:
                self._decode(reader, layout, arch, label, progress)
            finally:
                progress.done()
                self.out.flush()
            for note in reader.notes:
                _say(f"{label}: note: {note}")

    def _decode(self, reader: CaptureReader, layout: Layout, arch: str, label: str,
                progress: Progress) -> None:
        records = _held_until_fit(iter(reader), layout, arch, label)
        out_event, out_lost, keep = self.out.event, self.out.lost, self.keep
        strict = self.strict
        # JSON without filters: raw samples straight to JSON lines (render.sample_json)
        fast = strict and keep is None and self.out.fmt != "table"
        out_line = self.out.line
        count = events = 0
        tick = progress.enabled
        for record in records:
            count += 1
            if type(record) is LostRecord:
                out_lost(record.cpu, record.count)
                continue
            if fast:
                line = sample_json(record.data, layout, arch)
                if line is not None:
                    events += 1
                    out_line(line)
                    if tick and not count & 1023:
                        progress.update(count, events, record.offset)
                    continue
            try:
                event = decode(record.data, layout=layout, arch=arch, strict=strict)
            except DecodeError as exc:
                self.damaged += 1
                _say(f"{label}: sample at file offset {record.offset} does not decode: {exc} "
                     "(--lenient shows what can be decoded)")
                continue
            if event.errors:
                self.damaged += 1
            if keep is None or keep(event):
                events += 1
                out_event(event)
            if tick and not count & 1023:
                progress.update(count, events, record.offset)


def _held_until_fit(records: Iterator[SampleRecord | LostRecord], layout: Layout, arch: str,
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
        if type(record) is LostRecord:
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


def cmd_decode(args: argparse.Namespace) -> int:
    sources = args.files or [bundled_sample()]
    if args.follow and len(sources) > 1:
        raise UsageError("--follow reads one file; found " + str(len(sources)))
    out = Output(args.format, sys.stdout, utc=args.utc, flush_each=args.follow)
    decoding = Decoding(args, out)
    failed = False
    try:
        for source in sources:
            try:
                decoding.run(source)
            except UsageError as exc:
                if len(sources) == 1:
                    raise  # nothing was printed: no empty table or JSON array either
                _say(str(exc))
                failed = True
    except UsageError:
        raise
    except BaseException:  # Ctrl-C, a closed pipe: still end a JSON array if possible
        out.close()
        raise
    out.close()
    if failed:
        return EXIT_USAGE
    return EXIT_DAMAGED if args.strict_exit and decoding.damaged else EXIT_OK


# --------------------------------------------------------------------------- info


def _wall(ns: int, utc: bool) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", (time.gmtime if utc else time.localtime)(
            seconds))
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns since the epoch"
    return f"{stamp}.{rest // 1000:06d}{' UTC' if utc else time.strftime(' %Z')}"


def collect_info(reader: CaptureReader, layout: Layout, arch: str) -> dict[str, Any]:
    """Counts over a whole capture: records, events by name, loss, time span, CPUs, damage."""
    header = reader.header
    names: Counter[str] = Counter()
    samples: Counter[int] = Counter()
    lost: Counter[int] = Counter()
    records = lost_records = damaged_samples = 0
    first = last = None
    for record in reader:
        records += 1
        if type(record) is LostRecord:
            lost_records += 1
            lost[record.cpu] += record.count
            continue
        samples[record.cpu] += 1
        event = decode(record.data, layout=layout, arch=arch, strict=False)
        if event.errors:
            damaged_samples += 1
        names[event_label(event)] += 1
        if event.ts is not None:
            first = event.ts if first is None else min(first, event.ts)
            last = event.ts if last is None else max(last, event.ts)
    return {
        "version": header.version, "layout": header.layout, "arch": header.arch,
        "hostname": header.hostname, "kernel_release": header.kernel_release,
        "ncpus": header.ncpus, "boot_time_ns": header.boot_time_ns,
        "start_time_ns": header.start_time_ns,
        "records": records, "samples": sum(samples.values()), "lost_records": lost_records,
        "events": dict(sorted(names.items(), key=lambda item: (-item[1], item[0]))),
        "lost": sum(lost.values()), "lost_by_cpu": {str(c): n for c, n in sorted(lost.items())},
        "samples_by_cpu": {str(c): n for c, n in sorted(samples.items())},
        "first_ts": first, "last_ts": last,
        "damaged_records": len(reader.damage), "damaged_samples": damaged_samples,
        "skipped_unknown_records": len(reader.notes),
    }


def format_info(info: dict[str, Any], header: CaptureHeader, utc: bool) -> str:
    lines = [
        f"file:         {info['file']}",
        f"format:       version {info['version']}",
        f"layout:       {info['layout']}",
        f"arch:         {info['arch']}",
        f"host:         {info['hostname']} (kernel {info['kernel_release']}, "
        f"{info['ncpus']} cpus)",
        f"boot time:    {_wall(info['boot_time_ns'], utc)}",
        f"start time:   {_wall(info['start_time_ns'], utc)}",
        f"records:      {info['records']} ({info['samples']} samples, "
        f"{info['lost_records']} lost records)",
    ]
    if info["first_ts"] is not None:
        span = (info["last_ts"] - info["first_ts"]) / 1e9
        lines.append(f"time span:    {_wall(header.wall_clock_ns(info['first_ts']), utc)} .. "
                     f"{_wall(header.wall_clock_ns(info['last_ts']), utc)} ({span:.6f} s)")
    lost_cpus = ", ".join(f"cpu {c}: {n}" for c, n in info["lost_by_cpu"].items())
    lines.append(f"lost:         {info['lost']} samples" + (f" ({lost_cpus})" if lost_cpus else ""))
    per_cpu = ", ".join(f"cpu {c}: {n}" for c, n in info["samples_by_cpu"].items())
    lines.append(f"per cpu:      {per_cpu or 'no samples'}")
    lines.append(f"damage:       {info['damaged_records']} damaged stretches of records, "
                 f"{info['damaged_samples']} samples that do not decode cleanly")
    if info["skipped_unknown_records"]:
        lines.append(f"skipped:      {info['skipped_unknown_records']} records of unknown type")
    lines.append("events:")
    width = max((len(name) for name in info["events"]), default=0)
    lines += [f"  {name:<{width}}  {count}" for name, count in info["events"].items()]
    return "\n".join(lines) + "\n"


def cmd_info(args: argparse.Namespace) -> int:
    source = args.file
    label = _label(source)
    with open_capture(source) as reader:
        layout, arch = layout_and_arch(args, reader.header, label)
        info = {"file": label, **collect_info(reader, layout, arch)}
        if args.json:
            sys.stdout.write(json.dumps(info, indent=2) + "\n")
        else:
            sys.stdout.write(format_info(info, reader.header, args.utc))
    return EXIT_OK


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
    from .loader.errors import LoaderError
    from .loader.monitor import Monitor

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


def cmd_record(args: argparse.Namespace) -> int:
    arch = machine_arch()
    if args.ring_pages is not None and (args.ring_pages < 1
                                        or args.ring_pages & (args.ring_pages - 1)):
        raise UsageError(f"--ring-pages: expected a power of two, found {args.ring_pages}")
    with _Stop() as stop:
        monitor = _open_monitor(args)
        try:
            writer = CaptureWriter(args.output, layout="classic", arch=arch)
        except OSError as exc:
            monitor.close()
            raise UsageError(f"{args.output}: {exc.strerror}") from None
        events = lost = 0
        status = _Status()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            with monitor, writer:
                reader = monitor.reader
                while not stop.requested:
                    wait = 0.2
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            break
                    for record in reader.read_batch(timeout=wait):
                        if hasattr(record, "data"):
                            writer.write_sample(record.cpu, record.data)
                            events += 1
                        else:
                            writer.write_lost(record.cpu, record.count)
                            lost += record.count
                    writer.flush()  # whole records, at least once per loop (<= 0.2 s)
                    status.update(events, lost)
        finally:
            status.update(events, lost, force=True)
            status.done()
    _say(f"recorded {events} events ({lost} lost) to {args.output}")
    return EXIT_OK


class _Reorder:
    """Hold live samples briefly so that events from all CPUs come out in ``ts`` order.

    The kernel keeps order within one CPU's ring only, and a quiet ring is read up to
    ~0.1 s late (the reader's wake-up watermark), so a sample is released once it is
    ``delay`` older than the monotonic clock its ``ts`` comes from.
    """

    def __init__(self, delay: float = 0.3):
        self.delay_ns = int(delay * 1e9)
        self.heap: list[tuple[int, int, Any]] = []
        self.count = 0

    def push(self, samples: Iterable[Any]) -> None:
        for sample in samples:
            heapq.heappush(self.heap, (sample.ts, self.count, sample))
            self.count += 1

    def ready(self, everything: bool = False) -> Iterator[Any]:
        horizon = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - self.delay_ns
        while self.heap and (everything or self.heap[0][0] <= horizon):
            yield heapq.heappop(self.heap)[2]


def cmd_trace(args: argparse.Namespace) -> int:
    from .perf import Lost

    arch = machine_arch()
    out = Output(args.format, sys.stdout, boot_time_ns=current_boot_time_ns(), utc=args.utc,
                 flush_each=True)
    pending = _Reorder()

    def show(samples: Iterable[Any]) -> None:
        for record in samples:
            try:
                event = decode(record.data, arch=arch, strict=not args.lenient)
            except DecodeError as exc:
                _say(f"a sample from cpu {record.cpu} does not decode: {exc}")
                continue
            out.event(event)

    with _Stop() as stop:
        with _open_monitor(args) as monitor:
            reader = monitor.reader
            while not stop.requested:
                batch = reader.read_batch(timeout=0.1)
                for record in batch:
                    if isinstance(record, Lost):
                        out.lost(record.cpu, record.count)
                pending.push(r for r in batch if not isinstance(r, Lost))
                show(pending.ready())
            show(pending.ready(everything=True))
    out.close()
    return EXIT_OK


# --------------------------------------------------------------------------- parser

EPILOG = """\
examples:
  ebpfwire decode                          decode the bundled sample capture
  ebpfwire decode run.ewcap --event connect,tcp_connect --pid 4242
  ebpfwire decode run.ewcap --format jsonl > run.jsonl
  ebpfwire decode --follow run.ewcap       keep printing while `record` writes it
  ebpfwire info run.ewcap
  sudo ebpfwire record -o run.ewcap --duration 10
  sudo ebpfwire trace --events execve,connect
"""


def _add_decoding_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", help="context layout (default: the capture header's); "
                                    f"one of {', '.join(LAYOUTS)}")
    p.add_argument("--arch", help="architecture of the event ids (default: the header's)")
    p.add_argument("--utc", action="store_true", help="show wall-clock times in UTC")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
  ebpfwire decode run.ewcap --event openat --comm curl
  cat run.ewcap | ebpfwire decode -            a capture on standard input
  ebpfwire decode --lenient damaged.ewcap      show what damaged samples still hold
""")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="capture files, - for standard input (default: the bundled sample)")
    p.add_argument("--format", choices=("table", "jsonl", "json"), default="table",
                   help="strace-like table (default), JSON lines, or one JSON array")
    _add_decoding_options(p)
    p.add_argument("--lenient", action="store_true",
                   help="decode damaged samples as far as possible and show the damage")
    p.add_argument("--event", action="append", metavar="NAME",
                   help="only these events (repeat, or a comma list: openat,connect)")
    p.add_argument("--pid", type=int, help="only this pid (namespace or host pid)")
    p.add_argument("--comm", help="only this task name (exact)")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep reading a file that is being written, until Ctrl-C")
    p.add_argument("--strict-exit", action="store_true",
                   help="exit with status 1 when anything was damaged")
    p.set_defaults(run=cmd_decode)

    p = sub.add_parser("info", help="summarise a capture: header, counts, loss, time span",
                       formatter_class=raw, epilog="examples:\n  ebpfwire info run.ewcap\n"
                                                   "  ebpfwire info --json run.ewcap\n")
    p.add_argument("file", metavar="FILE", help="capture file, - for standard input")
    _add_decoding_options(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_info)

    live = argparse.ArgumentParser(add_help=False)
    live.add_argument("--events", action="append", metavar="LIST",
                      help="event groups to attach (comma list; default: all)")
    live.add_argument("--pid", type=int, help="only this process and its children")
    live.add_argument("--ring-pages", type=int, metavar="N",
                      help="perf ring data pages per CPU (a power of two)")

    p = sub.add_parser("record", parents=[live], formatter_class=raw,
                       help="record live events to a capture file (needs root)",
                       epilog="examples:\n  sudo ebpfwire record -o run.ewcap --duration 10\n"
                              "  sudo ebpfwire record -o run.ewcap --events execve,connect\n")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.set_defaults(run=cmd_record)

    p = sub.add_parser("trace", parents=[live], formatter_class=raw,
                       help="print live events as they happen (needs root)",
                       epilog="examples:\n  sudo ebpfwire trace\n"
                              "  sudo ebpfwire trace --events tcp --format jsonl\n")
    p.add_argument("--format", choices=("table", "jsonl"), default="table")
    p.add_argument("--utc", action="store_true", help="show wall-clock times in UTC")
    p.add_argument("--lenient", action="store_true", help="decode damaged samples leniently")
    p.set_defaults(run=cmd_trace)
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
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.run(args)
    except UsageError as exc:
        _say(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK

