"""``ebpfwire summary``: an ``strace -c`` style table (calls, errors by errno, share) from
captures, per event and optionally per comm or pid, or the same as JSON (ebpfwire.output.summary).

Captures are opened and their layout checked as ``decode`` does; with several files the
counts are summed over all of them. Big captures are counted from the batch decoder's
columns (:func:`~ebpfwire.cli.captures.by_columns`;
:class:`~ebpfwire.output.summary.BatchCounts`), giving what the per-event path
(:func:`~ebpfwire.output.summary.summarise_capture` over a CaptureStream) gives, messages
included (ebpfwire.cli.summary_columns); small ones, standard input and -p/--pid are
counted event by event (:class:`_Pairs`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ebpfwire.capture import CaptureStream, LostRecord
from ebpfwire.cli.captures import (
    by_columns,
    damaged_record,
    held_until_fit,
    layout_and_arch,
    open_capture,
    source_label,
    undecodable_sample,
)
from ebpfwire.cli.errors import EXIT_OK, EXIT_USAGE, UsageError, say
from ebpfwire.cli.filters import filter_of
from ebpfwire.cli.options import add_capture_filters, add_command
from ebpfwire.cli.output import write_stdout
from ebpfwire.output.summary import render_summary, summarise_capture, summary_json
from ebpfwire.wire.errors import DecodeError

COUNTS = "counts what can be decoded"   # what --lenient does with an undecodable sample


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``summary`` command to the parser's subcommands."""
    p = add_command(
        sub, "summary", "strace -c style table of captures: calls, errors by errno, share",
        examples=(
            "ebpfwire summary run.ewcap",
            "ebpfwire summary run.ewcap --by comm --failed",
            "ebpfwire summary --json a.ewcap b.ewcap",
        ))
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="capture files, - for standard input; counts are summed over all")
    p.add_argument("--by", choices=("comm", "pid"),
                   help="one table per task name or per host pid (default: one table)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_capture_filters(p, "count damaged samples under their name as far as they decode "
                        "(default: count them as undecodable)")
    p.set_defaults(run=cmd_summary)


class _Pairs:
    """The (record, event | DecodeError | None) pairs of every capture, as
    ``summarise_capture`` takes them, filtered; damage reported on stderr as decode does.

    -p/--pid's tree grows as events show a parent in it, in time order: a test of each
    event against the members so far, which columns do not give, so it reads event by
    event (as it does for small captures)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.keep = filter_of(args)
        self.failed = False

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        yield from each_capture(self, self._capture)

    def _capture(self, source: str) -> Iterator[tuple[Any, Any]]:
        label = source_label(source)
        keep = self.keep
        with open_capture(source) as reader:
            layout, arch = layout_and_arch(self.args, reader.header, label)
            stream = CaptureStream(
                reader, records=held_until_fit(iter(reader), layout, arch, label),
                layout=layout, arch=arch, strict=not self.args.lenient,
                time_order=self.args.pid is not None,  # a tree grows in time order
                on_damage=lambda damage: say(damaged_record(label, damage)))
            for record, decoded in stream:
                if decoded is None:
                    if type(record) is LostRecord:
                        yield record, None
                elif isinstance(decoded, DecodeError):
                    say(undecodable_sample(label, record.offset, decoded, COUNTS))
                    yield record, decoded
                elif keep is None or keep(decoded):
                    yield record, decoded


def each_capture(reader: Any, read: Callable[[str], Iterable[Any]]) -> Iterator[Any]:
    """What ``read`` gives of each of the command's captures. One that cannot be read (or
    whose layout does not fit) is a UsageError when it is the only one; among several it is
    reported, skipped and remembered in ``reader.failed``."""
    sources = reader.args.files
    for source in sources:
        try:
            yield from read(source)
        except UsageError as exc:
            if len(sources) == 1:
                raise
            say(str(exc))
            reader.failed = True


def cmd_summary(args: argparse.Namespace) -> int:
    if args.pid is None and by_columns(args.files):
        from ebpfwire.cli.summary_columns import Bulk

        counter: Bulk | _Pairs = Bulk(args)
        summary = counter.summary()
    else:
        counter = _Pairs(args)
        summary = summarise_capture(counter, by=args.by)
    failed = counter.failed
    if args.json:
        write_stdout(sys.stdout, json.dumps(summary_json(summary), indent=2) + "\n")
    else:
        write_stdout(sys.stdout, render_summary(summary))
    return EXIT_USAGE if failed else EXIT_OK
