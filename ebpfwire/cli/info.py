"""``ebpfwire info``: a capture's header, counts, loss, time span and damage."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ebpfwire.capture import (
    TYPED_LAYOUT,
    CaptureHeader,
    CaptureReader,
    CaptureStream,
    ContainerRecord,
    EventRecord,
    LostRecord,
    SampleRecord,
    TypeRecord,
)
from ebpfwire.cli.captures import (
    by_columns,
    held_until_fit,
    layout_and_arch,
    open_capture,
    source_label,
)
from ebpfwire.cli.errors import EXIT_OK
from ebpfwire.cli.options import add_command, add_decoding_options
from ebpfwire.cli.output import cpu_label, write_stdout
from ebpfwire.wire.layouts import Layout
from ebpfwire.wire.text import printable

DAMAGE_SHOWN = 10  # damaged stretches listed by offset in the text summary


def _wall(ns: int, utc: bool) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    try:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", (time.gmtime if utc else time.localtime)(
            seconds))
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns since the epoch"
    return f"{stamp}.{rest // 1000:06d}{' UTC' if utc else time.strftime(' %Z')}"


@dataclass
class InfoCounts:
    """What ``info`` counts over a capture's records, however they were read."""

    names: Counter[str] = field(default_factory=Counter)      # samples by event label
    samples: Counter[int] = field(default_factory=Counter)    # samples by cpu
    lost: Counter[int] = field(default_factory=Counter)       # lost samples by cpu
    runtimes: Counter[str] = field(default_factory=Counter)   # container records
    lost_records: int = 0
    damaged_samples: int = 0
    first: int | None = None
    last: int | None = None


def count_events(reader: CaptureReader, layout: Layout, arch: str, label: str
                 ) -> InfoCounts:
    """The counts read event by event (small captures, or no arrow extra): every sample
    decoded into an Event, after ``held_until_fit``'s check."""
    counts = InfoCounts()
    stream = CaptureStream(reader, records=held_until_fit(iter(reader), layout, arch, label),
                           layout=layout, arch=arch, strict=False, time_order=False)
    for record, event in stream:
        kind = type(record)
        if kind is not SampleRecord:
            if kind is LostRecord:
                counts.lost_records += 1
                counts.lost[record.cpu] += record.count
            elif kind is ContainerRecord:
                counts.runtimes[record.info.runtime] += 1
            continue
        counts.samples[record.cpu] += 1
        if event.errors:
            counts.damaged_samples += 1
        counts.names[event.label] += 1
        if event.ts is not None:
            counts.first = event.ts if counts.first is None else min(counts.first, event.ts)
            counts.last = event.ts if counts.last is None else max(counts.last, event.ts)
    return counts


def collect_info(reader: CaptureReader, layout: Layout, arch: str, label: str,
                 columns: bool = False) -> dict[str, Any]:
    """Counts over a whole capture: records, events by name, loss, time span, CPUs, damage,
    and the context it carries (process snapshot, containers by runtime).

    The layout is checked as decode checks it (a UsageError when it does not fit). The
    counts come from the batch decoder's columns with ``columns`` (ebpfwire.cli.info_columns:
    no Event per sample), else event by event: the same counts."""
    if columns:
        from ebpfwire.cli.info_columns import count_columns

        counts = count_columns(reader, layout, arch, label)
    else:
        counts = count_events(reader, layout, arch, label)
    header = reader.header
    return {
        "version": header.version, "layout": header.layout, "arch": header.arch,
        "decoded_as": {"layout": layout.name, "arch": arch},
        "hostname": header.hostname, "kernel_release": header.kernel_release,
        "ncpus": header.ncpus, "boot_time_ns": header.boot_time_ns,
        "start_time_ns": header.start_time_ns,
        "records": counts.samples.total() + counts.lost_records,
        "samples": counts.samples.total(), "lost_records": counts.lost_records,
        "events": dict(sorted(counts.names.items(), key=lambda item: (-item[1], item[0]))),
        "lost": counts.lost.total(),
        "lost_by_cpu": {cpu_label(c): n for c, n in sorted(counts.lost.items())},
        "samples_by_cpu": {cpu_label(c): n for c, n in sorted(counts.samples.items())},
        "first_ts": counts.first, "last_ts": counts.last,
        "damaged_records": reader.damage_count, "damaged_samples": counts.damaged_samples,
        "damage": [{"offset": d.offset, "message": d.message} for d in reader.damage],
        "skipped_unknown_records": reader.notes_count,
        "context": {"processes": reader.context_counts["process"],
                    "containers": reader.context_counts["container"],
                    "containers_by_runtime": dict(sorted(counts.runtimes.items()))},
    }


def _decoded_as(info: dict[str, Any], key: str) -> str:
    used = info["decoded_as"][key]
    return "" if used == info[key] else f" (decoded as {used}, from --{key})"


def _cpu(label: str) -> str:
    return label if label == "ringbuf" else f"cpu {label}"


def _context(info: dict[str, Any]) -> str:
    context = info["context"]
    if not context["processes"] and not context["containers"]:
        why = "version 1 has no context records" if info["version"] == 1 else "none recorded"
        return f"none ({why}; events name processes by comm only)"
    runtimes = ", ".join(f"{name} {count}" for name, count
                         in context["containers_by_runtime"].items())
    return (f"{context['processes']} processes in the snapshot, {context['containers']} "
            f"namespace pairs named" + (f" ({runtimes})" if runtimes else ""))


def format_info(info: dict[str, Any], header: CaptureHeader, utc: bool) -> str:
    """The summary for a terminal: every text from the header or a file name made printable."""
    info = {key: printable(value) if isinstance(value, str) else value
            for key, value in info.items()}
    lines = [
        f"file:         {info['file']}",
        f"format:       version {info['version']}",
        f"layout:       {info['layout']}{_decoded_as(info, 'layout')}",
        f"arch:         {info['arch']}{_decoded_as(info, 'arch')}",
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
    lost_cpus = ", ".join(f"{_cpu(c)}: {n}" for c, n in info["lost_by_cpu"].items())
    lines.append(f"lost:         {info['lost']} samples" + (f" ({lost_cpus})" if lost_cpus else ""))
    per_cpu = ", ".join(f"{_cpu(c)}: {n}" for c, n in info["samples_by_cpu"].items())
    lines.append(f"per cpu:      {per_cpu or 'no samples'}")
    lines.append(f"damage:       {info['damaged_records']} damaged stretches of records, "
                 f"{info['damaged_samples']} samples that do not decode cleanly")
    shown = info["damage"][:DAMAGE_SHOWN]
    lines += [f"  at file offset {d['offset']}: {printable(d['message'])}" for d in shown]
    if info["damaged_records"] > len(shown):
        listed = len(info["damage"])
        lines.append(f"  ... and {info['damaged_records'] - len(shown)} more (--json lists "
                     + ("all)" if listed == info["damaged_records"] else f"the first {listed})"))
    lines.append(f"context:      {_context(info)}")
    if info["skipped_unknown_records"]:
        lines.append(f"skipped:      {info['skipped_unknown_records']} records of unknown type")
    lines.append("events:")
    width = max((len(name) for name in info["events"]), default=0)
    lines += [f"  {printable(name):<{width}}  {count}" for name, count in info["events"].items()]
    return "\n".join(lines) + "\n"


def collect_typed_info(reader: CaptureReader) -> dict[str, Any]:
    """A capture of typed events (``ebpfwire run -o``): its header, its output maps with
    their types and event counts, and the damage; no wire layout applies."""
    header = reader.header
    maps: dict[int, dict[str, Any]] = {}
    for record in reader:
        if isinstance(record, TypeRecord):
            maps.setdefault(record.map, {"events": 0})["name"] = record.name
        elif isinstance(record, EventRecord):
            found = maps.setdefault(record.map, {"events": 0})
            found["events"] += 1
    return {
        "version": header.version, "layout": header.layout, "arch": header.arch,
        "hostname": header.hostname, "kernel_release": header.kernel_release,
        "ncpus": header.ncpus, "boot_time_ns": header.boot_time_ns,
        "start_time_ns": header.start_time_ns,
        "maps": {entry.get("name", f"map {index} (no TYPE record)"): entry["events"]
                 for index, entry in sorted(maps.items())},
        "damaged_records": reader.damage_count,
        "damage": [{"offset": d.offset, "message": d.message} for d in reader.damage],
        "skipped_unknown_records": reader.notes_count,
    }


def format_typed_info(info: dict[str, Any], utc: bool) -> str:
    """The typed capture's summary for a terminal."""
    maps = {printable(name): count for name, count in info["maps"].items()}
    width = max(map(len, maps), default=0)
    lines = [
        f"file:         {printable(info['file'])}",
        f"format:       version {info['version']}",
        "layout:       btf (typed events of a BPF object: ebpfwire run -o)",
        f"arch:         {printable(info['arch'])}",
        f"host:         {printable(info['hostname'])} (kernel "
        f"{printable(info['kernel_release'])}, {info['ncpus']} cpus)",
        f"boot time:    {_wall(info['boot_time_ns'], utc)}",
        f"start time:   {_wall(info['start_time_ns'], utc)}",
        f"damage:       {info['damaged_records']} damaged stretches of records",
        "events:",
        *(f"  {name:<{width}}  {count}" for name, count in maps.items()),
    ]
    return "\n".join(lines) + "\n"


def cmd_info(args: argparse.Namespace) -> int:
    source = args.file
    label = source_label(source)
    with open_capture(source) as reader:
        if reader.header.layout == TYPED_LAYOUT:
            info = {"file": label, **collect_typed_info(reader)}
            write_stdout(sys.stdout, json.dumps(info, indent=2) + "\n" if args.json
                         else format_typed_info(info, args.utc))
            return EXIT_OK
        layout, arch = layout_and_arch(args, reader.header, label)
        info = {"file": label, **collect_info(reader, layout, arch, label,
                                              by_columns([source]))}
        if args.json:
            write_stdout(sys.stdout, json.dumps(info, indent=2) + "\n")
        else:
            write_stdout(sys.stdout, format_info(info, reader.header, args.utc))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """The ``info`` command's parser."""
    p = add_command(
        sub, "info", "summarise a capture: header, counts, loss, time span",
        examples=(
            "ebpfwire info run.ewcap",
            "ebpfwire info --json run.ewcap",
        ))
    p.add_argument("file", metavar="FILE", help="capture file, - for standard input")
    add_decoding_options(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_info)
