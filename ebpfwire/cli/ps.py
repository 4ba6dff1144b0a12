"""``ebpfwire ps``: the process tree of a capture, like ``pstree -a`` (ebpfwire.process.tree)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ebpfwire.capture import CaptureDamage, CaptureStream, SampleRecord
from ebpfwire.cli.captures import (
    HELD_LOST_LIMIT,
    by_columns,
    damaged_record,
    held_until_fit,
    layout_and_arch,
    open_capture,
    say_notes,
    say_order,
    source_label,
    undecodable_sample,
)
from ebpfwire.cli.errors import EXIT_DAMAGED, EXIT_OK, say
from ebpfwire.cli.filters import event_filter, filter_of
from ebpfwire.cli.options import add_capture_filters, add_command, names_list
from ebpfwire.cli.output import wall_clock, write_stdout
from ebpfwire.process.tree import ProcessTree, build_tree, capture_items
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import Event


class _Damage:
    """What of a capture is damaged, reported on stderr (or to ``out``, held until the
    bulk path knows it is the one) and counted (--strict-exit)."""

    def __init__(self, label: str, out: Callable[[str], None] = say):
        self.label = label
        self.out = out
        self.count = 0

    def record(self, damage: CaptureDamage) -> None:
        self.count += 1
        self.out(damaged_record(self.label, damage))

    def sample(self, record: SampleRecord, decoded: Event | DecodeError) -> None:
        self.count += 1
        if isinstance(decoded, DecodeError):
            say(undecodable_sample(self.label, record.offset, decoded))


def _per_event(args: argparse.Namespace, label: str) -> tuple[ProcessTree, int, int]:
    """The tree, the capture's boot time and its damage count, every event decoded and
    given to the tree in time order (with the notes said)."""
    damage = _Damage(label)
    with open_capture(args.file) as reader:
        layout, arch = layout_and_arch(args, reader.header, label)
        stream = CaptureStream(reader, records=held_until_fit(iter(reader), layout, arch, label),
                               layout=layout, arch=arch, strict=not args.lenient,
                               on_damage=damage.record)
        tree = build_tree(capture_items(stream, on_damaged=damage.sample), filter_of(args),
                          arch)
        say_notes(label, reader, tree.table)
        say_order(label, stream)
        return tree, reader.header.boot_time_ns, damage.count


def _bulk(args: argparse.Namespace, label: str) -> tuple[ProcessTree, int, int] | None:
    """:func:`_per_event`'s answer from the capture's columns
    (:func:`~ebpfwire.columnar.pstree.bulk_tree`), or None where that path is the one:
    standard input or a file that is not regular (it is read once, and may have to be read
    again), a small capture (:func:`~ebpfwire.cli.captures.by_columns`: its imports and
    first calls cost about 0.4 s; where nearly every sample is a new process, as in a fork
    chain, the table is given every sample and the bulk path is 1.3-1.6x slower than the
    per-event one), -p/--pid (its tree of processes follows every event in time order),
    no numpy or pyarrow, and what bulk_tree gives up on (the layout check among them,
    held_until_fit: a first sample that does not decode, LOST records held before it)."""
    if args.pid is not None or not by_columns([args.file]):
        return None
    from ebpfwire.columnar.pstree import bulk_tree

    said: list[str] = []
    damage = _Damage(label, said.append)
    keep = event_filter(names_list(args.event), args.exact_pid, args.comm, args.failed)
    with open_capture(args.file) as reader:
        layout, arch = layout_and_arch(args, reader.header, label)
        reader.on_damage = damage.record
        built = bulk_tree(reader, layout, arch, keep, strict=not args.lenient,
                          lost_limit=HELD_LOST_LIMIT)
        if built is None:
            return None
        for message in said:
            say(message)
        say_notes(label, reader, built.tree.table)
        say_order(label, built.stream)
        return built.tree, reader.header.boot_time_ns, damage.count + built.damaged


def cmd_ps(args: argparse.Namespace) -> int:
    filter_of(args)    # (a filter's usage errors before the capture's)
    label = source_label(args.file)
    tree, boot_time_ns, damaged = _bulk(args, label) or _per_event(args, label)
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
    return EXIT_DAMAGED if args.strict_exit and damaged else EXIT_OK


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
