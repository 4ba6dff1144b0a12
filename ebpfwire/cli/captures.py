"""Opening captures (a path, standard input, a file still being written) and choosing
their layout and architecture."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ebpfwire.capture import (
    CaptureDamage,
    CaptureError,
    CaptureHeader,
    CaptureReader,
    CaptureStream,
    LostRecord,
    SampleRecord,
    unreadable_capture,
)
from ebpfwire.cli.errors import UsageError, say
from ebpfwire.columnar import has_arrow
from ebpfwire.process.table import ProcessTable
from ebpfwire.wire.catalogue import check_arch
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.layouts import LAYOUTS, Layout, get_layout

if TYPE_CHECKING:   # (the columnar path needs numpy and pyarrow: not imported for a hint)
    from ebpfwire.columnar.rowcontext import StreamContext

HOLD_LIMIT = 256       # samples held back while checking that the layout fits
HOLD_BYTES = 16 << 20  # and their bytes (a sample may be 1 MiB)
HELD_LOST_LIMIT = 1024  # LOST records held so; past it, one per CPU between held samples
FOLLOW_POLL = 0.05     # s between looks for a file --follow waits for


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


def source_label(source: str) -> str:
    """How a source is named in messages: its path, or <stdin> for ``-``."""
    return "<stdin>" if source == "-" else source


def open_capture(source: str, follow: bool = False) -> CaptureReader:
    """A reader for a path or ``-`` (standard input); unreadable input is a UsageError."""
    label = source_label(source)
    if follow and source != "-" and not os.path.lexists(source):
        say(f"{label}: waiting for the file to appear (Ctrl-C stops)")
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

    Until then samples and LOST records are held back (up to HOLD_LIMIT samples or
    HOLD_BYTES of them; past
    HELD_LOST_LIMIT LOST records, a LOST record is added to the count of the last one of
    its CPU since the last sample held, and a note says how many were). Process and
    container records pass at once, as the reorder window passes them: a snapshot of any
    size before the first sample is not held. If none decodes with the
    layout while another layout decodes some, or every sample is shorter than the layout's
    header, the layout is wrong for this capture: one UsageError naming the layout tried
    and the ones that fit, instead of an error line per sample.
    """
    held: list[SampleRecord | LostRecord] = []
    samples: list[bytes] = []
    last_lost: dict[int, LostRecord] = {}   # cpu -> its last LOST since the last sample
    merged = 0
    for record in records:
        if type(record) is not SampleRecord:
            if type(record) is not LostRecord:
                yield record
                continue
            if len(held) - len(samples) >= HELD_LOST_LIMIT and record.cpu in last_lost:
                last_lost[record.cpu].count += record.count
                merged += 1
                continue
            last_lost[record.cpu] = record
            held.append(record)
            continue
        held.append(record)
        last_lost.clear()
        if _clean(record.data, layout, arch):
            say_merged(label, merged)
            yield from held
            yield from records
            return
        samples.append(record.data)
        if held_enough(samples):
            break
    check_fit(samples, layout, arch, label)
    say_merged(label, merged)
    yield from held
    yield from records   # past HOLD_LIMIT samples that none decodes cleanly: the rest


def held_enough(samples: list[bytes]) -> bool:
    """Whether the layout check holds no more samples (HOLD_LIMIT, or HOLD_BYTES of them)."""
    return len(samples) >= HOLD_LIMIT or sum(map(len, samples)) >= HOLD_BYTES


def check_fit(samples: list[bytes], layout: Layout, arch: str, label: str) -> None:
    """The UsageError of :func:`held_until_fit` when the layout is wrong for the capture:
    ``samples`` (its first, up to HOLD_LIMIT) none of which decodes cleanly with it."""
    if not samples:
        return
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
            f"none of the {'first ' if held_enough(samples) else ''}{len(samples)} "
            f"samples ({lengths[0]}..{lengths[-1]} bytes, {short} shorter than the "
            f"header) decodes with it{hint} (choose with --layout)")


def say_merged(label: str, merged: int) -> None:
    """The note of :func:`held_until_fit` on the LOST records it added to earlier ones."""
    if merged:
        say(f"{label}: note: {merged} LOST records before the first sample that decodes "
            "were added to the counts of earlier ones of their CPU")


def say_notes(label: str, reader: CaptureReader, table: ProcessTable | None = None) -> None:
    """The reader's notes on stderr (the records of unknown type it skipped): those it
    kept, and how many more there were; and the processes ``table`` forgot to stay
    bounded."""
    for note in reader.notes:
        say(f"{label}: note: {note}")
    if reader.notes_count > len(reader.notes):
        say(f"{label}: note: and {reader.notes_count - len(reader.notes)} more records of "
            "unknown type skipped")
    if table is not None and table.evicted:
        say(f"{label}: note: {table.evicted} processes were forgotten, least recently seen "
            f"first, to keep at most {table.max_processes}; events of one met again are "
            "named by its comm")


def damaged_record(label: str, damage: CaptureDamage) -> str:
    """What stderr says of a damaged record."""
    return f"{label}: damaged record at file offset {damage.offset}: {damage.message}"


def undecodable_sample(label: str, offset: int, error: DecodeError,
                       lenient: str = "shows what can be decoded") -> str:
    """What stderr says of a sample strict decoding does not decode (``lenient``: what
    --lenient would do with it instead)."""
    return f"{label}: sample at file offset {offset} does not decode: {error} (--lenient {lenient})"


def say_order(label: str, stream: CaptureStream | StreamContext) -> None:
    """The reorder window's notes (its ``order``: a TimeOrder, or the bulk path's
    Releases, which counts alike): samples shown out of time order, and samples let out
    before their window had passed because its bound was reached (so that a bounded order
    is not taken for a full one)."""
    order = stream.order
    if order is None:
        return
    window = f"{order.window_ns / 1e9:g} s"
    if order.late:
        say(f"{label}: note: {order.late} samples came more than {window} after later ones "
            "in the file and are shown out of time order (--no-sort: file order, see "
            "decode --help)")
    if order.early:
        say(f"{label}: note: {order.early} samples were ordered within less than {window}: "
            f"more than {order.max_records:,} records or {order.max_bytes >> 20} MiB fell "
            "within one window, the bound of what it holds")


COLUMNS_FROM_BYTES = 32 << 20
"""Captures of this many bytes or more are read on the bulk paths (``info``, ``summary``,
``ps`` from the batch decoder's columns, ``decode --format jsonl`` with the columnar
context): below, importing pyarrow and building batches (0.35-0.4 s of CPU) costs more
than reading event by event saves (docs/benchmarks.md, "Counting commands by columns")."""


def by_columns(sources: Iterable[str]) -> bool:
    """Whether to count ``sources`` from columns: the ``arrow`` extra is installed and they
    are regular files of COLUMNS_FROM_BYTES or more together (standard input, of unknown
    size, is read event by event). Both ways give the same output."""
    return has_arrow() and sum(regular_size(source) or 0 for source in sources) >= (
        COLUMNS_FROM_BYTES)


def regular_size(source: str) -> int | None:
    """The size of a regular file (what a progress percentage is of), else None."""
    if source == "-":
        return None
    try:
        info = os.stat(source)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None
