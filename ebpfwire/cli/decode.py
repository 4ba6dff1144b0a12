"""``ebpfwire decode``: captures to an strace-like table, JSON lines or one JSON array."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources

from ebpfwire.capture import (
    TYPED_LAYOUT,
    CaptureDamage,
    CaptureStream,
    LostRecord,
    SampleRecord,
)
from ebpfwire.cli.captures import (
    by_columns,
    damaged_record,
    held_until_fit,
    layout_and_arch,
    open_capture,
    regular_size,
    say_notes,
    say_order,
    source_label,
    undecodable_sample,
)
from ebpfwire.cli.errors import EXIT_DAMAGED, EXIT_OK, EXIT_USAGE, OutputError, UsageError, say
from ebpfwire.cli.filters import filter_of
from ebpfwire.cli.options import add_capture_filters, add_command, add_time_options
from ebpfwire.cli.output import Output, Progress, table_renderer
from ebpfwire.output.kubearmor import NEWEST, VERSIONS, KubeArmorLogs, log_context, log_key
from ebpfwire.output.render import event_json, sample_json
from ebpfwire.process.enrich import Enricher, table_context
from ebpfwire.wire.errors import DecodeError


def bundled_sample() -> str:
    """The sample capture shipped with the package, decoded when no FILE is given."""
    return str(resources.files("ebpfwire") / "data" / "sample.ewcap")


class Decoding:
    """One capture decoded to an :class:`Output`, counting what was damaged on the way."""

    def __init__(self, args: argparse.Namespace, out: Output):
        self.args = args
        self.out = out
        self.strict = not args.lenient
        self.keep = filter_of(args)
        self.damaged = 0

    def run(self, source: str) -> None:
        if self._bulk(source):
            return
        label = source_label(source)
        reader = open_capture(source, follow=self.args.follow)

        def report(damage: CaptureDamage) -> None:
            self.damaged += 1
            say(damaged_record(label, damage))

        with reader:
            layout, arch = layout_and_arch(self.args, reader.header, label)
            self.out.set_boot_time(reader.header.boot_time_ns)
            enricher = None
            if self.out.fmt == "kubearmor":
                enricher = Enricher(layout, arch, make=log_context, key=log_key)
            elif not self.args.raw:
                enricher = Enricher(layout, arch,
                                    make=table_context if self.out.fmt == "table" else None)
            stream = CaptureStream(
                reader, records=held_until_fit(iter(reader), layout, arch, label),
                layout=layout, arch=arch, strict=self.strict,
                time_order=not (self.args.no_sort or self.args.follow), on_damage=report,
                on_context=enricher.feed if enricher is not None else None)  # ahead of events
            progress = Progress(regular_size(source))
            try:
                self._decode(stream, enricher, label, progress)
            finally:
                progress.done()
                self.out.flush()
            say_notes(label, reader, enricher.table if enricher is not None else None)

    def _bulk(self, source: str) -> bool:
        """Whether ``source`` was decoded on the bulk path (``cli.decode_columns``): JSON
        (with the process context or ``--raw``) or KubeArmor logs, in time order, strict,
        unfiltered, of a big regular file (``captures.by_columns``)."""
        args = self.args
        if not (self.out.fmt in ("jsonl", "json", "kubearmor") and self.strict and self.keep is None
                and not (args.follow or args.no_sort) and by_columns([source])):
            return False
        from ebpfwire.cli.decode_columns import decode_bulk

        damaged = decode_bulk(source, args, self.out)
        if damaged is None:
            return False
        self.damaged += damaged
        return True

    def _decode(self, stream: CaptureStream, enricher: Enricher | None, label: str,
                progress: Progress) -> None:
        fmt = self.out.fmt
        kubearmor = fmt == "kubearmor"
        table = self.out.table if fmt == "table" else None
        layout, arch, header = stream.layout, stream.arch, stream.header
        out_event, out_lost, keep = self.out.event, self.out.lost, self.keep
        # JSON without filters: raw samples straight to JSON lines (render.sample_json)
        fast = self.strict and keep is None and fmt in ("jsonl", "json")
        out_line = self.out.line
        logs = (KubeArmorLogs(header.hostname, header.boot_time_ns,
                              version=self.args.kubearmor_version) if kubearmor else None)
        context = enricher.sample if enricher is not None else None
        count = events = 0
        tick = progress.enabled
        for record in stream.records():
            count += 1
            kind = type(record)
            if kind is not SampleRecord:  # a newer format's record types: nothing to show
                if kind is LostRecord:
                    if enricher is not None:
                        enricher.lost(record.count)
                    if not kubearmor:  # KubeArmor's logs have no line for a loss
                        out_lost(record.cpu, record.count)
                continue
            if fast and record.resync is None:  # a resynchronised one is never clean
                line = sample_json(record.data, layout, arch, context)
                if line is not None:
                    events += 1
                    out_line(line)
                    if tick and not count & 1023:
                        progress.update(count, events, record.offset)
                    continue
            event = stream.decode(record)
            if isinstance(event, DecodeError):
                self.damaged += 1
                say(undecodable_sample(label, record.offset, event))
                if enricher is not None:   # its header is still the process's news
                    enricher.sample(record.data)
                continue
            if event.errors:
                self.damaged += 1
            # the table sees every event; the filters choose what is printed
            if context is not None:
                shown = context(record.data)
            if keep is None or keep(event):
                if logs is not None:
                    for log in logs.logs(event, shown):
                        events += 1
                        out_line(json.dumps(log))
                elif context is None:
                    events += 1
                    out_event(event)
                else:
                    events += 1
                    out_line(table.event(event, shown) if table is not None
                             else event_json(event, shown))
            if tick and not count & 1023:
                progress.update(count, events, record.offset)
        say_order(label, stream)


def typed_capture(source: str) -> bool:
    """Whether ``source`` is a capture ``ebpfwire run -o`` wrote (typed events)."""
    if source == "-":
        return False
    with open_capture(source) as reader:
        return reader.header.layout == TYPED_LAYOUT


def decode_typed(args: argparse.Namespace, source: str) -> int:
    """Typed events, printed as ``run`` prints them (the wire-format options do not apply)."""
    from ebpfwire.cli.run import print_typed

    if args.format == "kubearmor":
        raise UsageError(f"{source}: typed events (ebpfwire run) have no KubeArmor form; "
                         "use --format table, jsonl or json")
    label = source_label(source)
    with open_capture(source) as reader:
        print_typed(reader, label, args.format, sys.stdout)
        for damage in reader.damage:
            say(damaged_record(label, damage))
    return EXIT_DAMAGED if args.strict_exit and reader.damage else EXIT_OK


def cmd_decode(args: argparse.Namespace) -> int:
    sources = args.files or [bundled_sample()]
    if len(sources) == 1 and not args.follow and typed_capture(sources[0]):
        return decode_typed(args, sources[0])
    if args.follow and len(sources) > 1:
        raise UsageError("--follow reads one file; found " + str(len(sources)))
    if args.raw and args.format == "kubearmor":
        raise UsageError("--raw: KubeArmor logs are made of the process context; "
                         "use --format jsonl --raw for the raw events")
    out = Output(args.format, sys.stdout, utc=args.utc, flush_each=args.follow,
                 table=table_renderer(args))
    decoding = Decoding(args, out)
    failed = False
    try:
        for source in sources:
            try:
                decoding.run(source)
            except UsageError as exc:
                if len(sources) == 1:
                    raise  # nothing was printed: no empty table or JSON array either
                say(str(exc))
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


def register(sub: argparse._SubParsersAction) -> None:
    """The ``decode`` command's parser."""
    p = add_command(
        sub, "decode", "decode captures to a table, JSON lines or JSON",
        examples=(
            "ebpfwire decode                              the bundled sample",
            "ebpfwire decode run.ewcap --format jsonl     one JSON object per event",
            "ebpfwire decode run.ewcap --format kubearmor KubeArmor's log format",
            "ebpfwire decode run.ewcap --event openat --comm curl",
            "cat run.ewcap | ebpfwire decode -            a capture on standard input",
            "ebpfwire decode --lenient damaged.ewcap      show what damaged samples still hold",
        ))
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="capture files, - for standard input (default: the bundled sample)")
    p.add_argument("--format", choices=("table", "jsonl", "json", "kubearmor"),
                   default="table", help="strace-like table (default), JSON lines, one JSON "
                                         "array, or KubeArmor logs (one JSON object a line)")
    p.add_argument("--kubearmor-version", choices=VERSIONS, default=NEWEST,
                   help="with --format kubearmor: the logs of KubeArmor as it is now "
                        "(newest, the default) or of 2023 (docs/kubearmor-versions.md)")
    p.add_argument("--raw", action="store_true",
                   help="without the process context (executable, parent, container): "
                        "the events as the capture holds them")
    add_capture_filters(p, "decode damaged samples as far as possible and show the damage",
                        utc=True)
    add_time_options(p)
    p.add_argument("--follow", action="store_true",
                   help="keep reading a file that is being written, until Ctrl-C (tail -f)")
    p.add_argument("--no-sort", action="store_true",
                   help="keep file order (default: time order across CPUs, 1 s window)")
    p.add_argument("--strict-exit", action="store_true",
                   help="exit with status 1 when anything was damaged")
    p.set_defaults(run=cmd_decode)
