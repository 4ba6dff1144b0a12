"""``ebpfwire decode``: captures to an strace-like table, JSON lines or one JSON array."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from importlib import resources

from ..capture import CaptureDamage, CaptureReader, LostRecord, SampleRecord
from ..decoder import decode
from ..errors import DecodeError
from ..layouts import LAYOUTS, Layout
from ..render import sample_json
from .common import (
    EXIT_DAMAGED,
    EXIT_OK,
    EXIT_USAGE,
    Output,
    OutputError,
    Progress,
    UsageError,
    _label,
    _names_list,
    _regular_size,
    _say,
    layout_and_arch,
    make_filter,
    open_capture,
)
from .order import TimeOrder

HOLD_LIMIT = 256       # samples held back while checking that the layout fits


def bundled_sample() -> str:
    """The sample capture shipped with the package, decoded when no FILE is given."""
    return str(resources.files("ebpfwire") / "data" / "sample.ewcap")



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
        order = None
        if not (self.args.no_sort or self.args.follow):
            order = TimeOrder()
            records = order(records)
        out_event, out_lost, keep = self.out.event, self.out.lost, self.keep
        strict = self.strict
        # JSON without filters: raw samples straight to JSON lines (render.sample_json)
        fast = strict and keep is None and self.out.fmt != "table"
        out_line = self.out.line
        count = events = 0
        tick = progress.enabled
        for record in records:
            count += 1
            kind = type(record)
            if kind is not SampleRecord:  # a newer format's record types: nothing to show
                if kind is LostRecord:
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
        if order is not None and order.late:
            _say(f"{label}: note: {order.late} samples came more than "
                 f"{order.window_ns / 1e9:g} s after later ones in the file and are shown out "
                 "of time order (see --no-sort in docs/cli.md)")


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
    except (UsageError, OutputError):
        raise
    except BaseException:  # Ctrl-C, a closed pipe: still end a JSON array if possible
        out.close()
        raise
    out.close()
    if failed:
        return EXIT_USAGE
    return EXIT_DAMAGED if args.strict_exit and decoding.damaged else EXIT_OK


