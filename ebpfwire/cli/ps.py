"""``ebpfwire ps``: the process tree of a capture, like ``pstree -a`` (ebpfwire.process.tree)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

from ebpfwire.capture import CaptureDamage, ContainerRecord, LostRecord, ProcessRecord, SampleRecord
from ebpfwire.cli.captures import held_until_fit, layout_and_arch, open_capture
from ebpfwire.cli.captures import source_label as _label
from ebpfwire.cli.errors import EXIT_DAMAGED, EXIT_OK
from ebpfwire.cli.errors import say as _say
from ebpfwire.cli.filters import check_event_names, make_filter
from ebpfwire.cli.options import names_list as _names_list
from ebpfwire.cli.output import write_stdout
from ebpfwire.process.tree import Item, build_tree
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.layouts import Layout


class _Items:
    """A capture's records as the tree takes them, reporting what does not decode."""

    def __init__(self, label: str, strict: bool):
        self.label = label
        self.strict = strict
        self.damaged = 0

    def report(self, damage: CaptureDamage) -> None:
        self.damaged += 1
        _say(f"{self.label}: damaged record at file offset {damage.offset}: {damage.message}")

    def __call__(self, records: Iterator, layout: Layout, arch: str) -> Iterator[Item]:
        for record in records:
            kind = type(record)
            if kind is SampleRecord:
                try:
                    event = decode(record.data, layout=layout, arch=arch, strict=self.strict)
                except DecodeError as exc:
                    self.damaged += 1
                    _say(f"{self.label}: sample at file offset {record.offset} does not "
                         f"decode: {exc} (--lenient shows what can be decoded)")
                    continue
                if event.errors:
                    self.damaged += 1
                    if None in (event.ts, event.host_pid, event.host_ppid, event.event_id):
                        continue      # a header cut short: nobody to place it on
                yield event
            elif kind is LostRecord:
                yield record.count
            elif kind is ProcessRecord or kind is ContainerRecord:
                yield record.info


def cmd_ps(args: argparse.Namespace) -> int:
    keep = make_filter(check_event_names(_names_list(args.event)), args.pid, args.comm,
                       args.failed)
    label = _label(args.file)
    items = _Items(label, strict=not args.lenient)
    reader = open_capture(args.file)
    reader.on_damage = items.report
    with reader:
        layout, arch = layout_and_arch(args, reader.header, label)
        tree = build_tree(items(held_until_fit(iter(reader), layout, arch, label), layout,
                                arch), keep, arch)
        for note in reader.notes:
            _say(f"{label}: note: {note}")
    if args.json:
        text = json.dumps(tree.to_json(), indent=2) + "\n"
    else:
        lines = tree.lines()
        text = "".join(line + "\n" for line in lines)
    write_stdout(sys.stdout, text)
    return EXIT_DAMAGED if args.strict_exit and items.damaged else EXIT_OK
