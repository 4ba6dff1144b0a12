"""``ebpfwire ps``: the process tree of a capture, like ``pstree -a`` (ebpfwire.process.tree)."""

from __future__ import annotations

import argparse
import sys

from ebpfwire.capture import CaptureDamage, CaptureStream, SampleRecord
from ebpfwire.cli.captures import (
    held_until_fit,
    layout_and_arch,
    open_capture,
    say_notes,
    say_order,
    source_label,
)
from ebpfwire.cli.errors import EXIT_DAMAGED, EXIT_OK, say
from ebpfwire.cli.filters import filter_of
from ebpfwire.cli.options import add_capture_filters, add_command
from ebpfwire.cli.output import wall_clock, write_stdout
from ebpfwire.process.tree import build_tree, capture_items
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import Event


class _Damage:
    """What of a capture is damaged, reported on stderr and counted (--strict-exit)."""

    def __init__(self, label: str):
        self.label = label
        self.count = 0

    def record(self, damage: CaptureDamage) -> None:
        self.count += 1
        say(f"{self.label}: damaged record at file offset {damage.offset}: {damage.message}")

    def sample(self, record: SampleRecord, decoded: Event | DecodeError) -> None:
        self.count += 1
        if isinstance(decoded, DecodeError):
            say(f"{self.label}: sample at file offset {record.offset} does not decode: "
                 f"{decoded} (--lenient shows what can be decoded)")


def cmd_ps(args: argparse.Namespace) -> int:
    keep = filter_of(args)
    label = source_label(args.file)
    damage = _Damage(label)
    with open_capture(args.file) as reader:
        layout, arch = layout_and_arch(args, reader.header, label)
        stream = CaptureStream(reader, records=held_until_fit(iter(reader), layout, arch, label),
                               layout=layout, arch=arch, strict=not args.lenient,
                               on_damage=damage.record)
        tree = build_tree(capture_items(stream, on_damaged=damage.sample), keep, arch)
        say_notes(label, reader, tree.table)
        say_order(label, stream)
        boot_time_ns = reader.header.boot_time_ns
    if args.json:
        for chunk in tree.json_chunks():
            write_stdout(sys.stdout, chunk)
        write_stdout(sys.stdout, "\n")
    else:
        lines = tree.lines()
        if args.utc and tree.first_ts is not None:  # the +seconds are from this moment
            first = wall_clock(boot_time_ns + tree.first_ts, utc=True)
            lines.insert(0, f"times are from the first event, at {first}")
        for start in range(0, len(lines), 4096):
            write_stdout(sys.stdout, "".join(line + "\n" for line in lines[start:start + 4096]))
    return EXIT_DAMAGED if args.strict_exit and damage.count else EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """The ``ps`` command's parser."""
    p = add_command(
        sub, "ps", "the process tree of a capture, like pstree -a",
        examples=(
            "ebpfwire ps run.ewcap                  every process: program, argv, pid, "
            "lifetime, exit",
            "ebpfwire ps run.ewcap --event connect  the processes that connected, and their "
            "ancestors",
            "ebpfwire ps --json run.ewcap",
        ))
    p.add_argument("file", metavar="FILE", help="capture file, - for standard input")
    add_capture_filters(p, "decode damaged samples as far as possible", utc=True)
    p.add_argument("--json", action="store_true", help="the tree as nested JSON objects")
    p.add_argument("--strict-exit", action="store_true",
                   help="exit with status 1 when anything was damaged")
    p.set_defaults(run=cmd_ps)
