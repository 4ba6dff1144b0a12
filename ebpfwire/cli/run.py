"""``ebpfwire run OBJECT``: load any libbpf-style object, print its events and, at the end,
its maps, all decoded from the object's own types (BTF, or DWARF).

Runs until Ctrl-C or SIGTERM, ``--duration`` or the end of the command after ``--``
(whose last records are read before stopping). Whatever happens, the object is closed:
nothing it made stays in the kernel.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import IO, Any, NoReturn

from ebpfwire.cli.errors import EXIT_OK, UsageError, say
from ebpfwire.cli.live import StopSignals, machine_arch
from ebpfwire.cli.options import add_command, duration_type
from ebpfwire.cli.output import write_stdout
from ebpfwire.wire.order import Clock, TimeOrder
from ebpfwire.wire.text import escape, text

POLL = 0.1  # s: the longest wait for records before the stop flag and the clock are looked at
DRAIN_PASSES = 3  # reads after the command ended, for records still in the rings


class _Options(argparse.ArgumentParser):
    """The options alone, for those written after OBJECT (argparse gives them to CMD)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"run: {message} (a command goes after --)")


def _options() -> argparse.ArgumentParser:
    p = _Options(add_help=False, prog="ebpfwire run")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="set a global (a const volatile setting) before load: an integer, "
                   "true/false, or text")
    p.add_argument("--map", action="append", metavar="NAME",
                   help="read only this ring buffer or perf array (repeatable; default: all)")
    p.add_argument("--type", metavar="NAME",
                   help="the records' type, looked up in the object's BTF then its DWARF "
                   "(default: the map's value type, or the one struct of the records' size)")
    p.add_argument("--ts", metavar="FIELD",
                   help="a timestamp field in bpf_ktime_get_ns() time: records are printed in its "
                   "order, through a 1 s reorder window (as decode orders a capture)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the events to a capture FILE (with their types: decode, export "
                   "and to_table read it without the object) instead of printing them")
    p.add_argument("--format", choices=("table", "jsonl", "json"), default="table",
                   help="one line a record (default), one JSON object a line, or one JSON "
                   "document at the end")
    p.add_argument("--duration", type=duration_type, metavar="S", help="stop after S seconds")
    return p


OPTIONS = _options()


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``run`` command to the parser's subcommands."""
    p = add_command(
        sub, "run", "load any BPF object, print its events and maps decoded from its BTF "
        "(needs root)",
        examples=(
            "sudo ebpfwire run bootstrap.bpf.o",
            "sudo ebpfwire run bootstrap.bpf.o --set min_duration_ns=100000000 --format jsonl",
            "sudo ebpfwire run tool.bpf.o --type event --ts ts -- make -j2",
        ), parents=[OPTIONS])
    p.add_argument("object", metavar="OBJECT", help="a BPF object compiled the libbpf way")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD",
                   help="run this command, stop when it ends")
    p.set_defaults(run=cmd_run)


def split_command(args: argparse.Namespace) -> None:
    """Options written after OBJECT parsed, and ``args.cmd`` the command after them.

    argparse hands everything after OBJECT to the command, and drops a ``--`` that comes
    right after OBJECT: so words before a ``--``, or all of them when the first is an
    option, are options."""
    rest = args.cmd
    if "--" in rest:
        cut = rest.index("--")
    else:
        cut = len(rest) if rest and rest[0].startswith("-") else 0
    if cut:
        OPTIONS.parse_args(rest[:cut], namespace=args)
    args.cmd = rest[cut + 1 :] if cut < len(rest) and rest[cut] == "--" else rest[cut:]


def settings(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise UsageError(f"run: --set: expected NAME=VALUE, found {item!r}")
        out[name] = value
    return out


def cell(value: Any) -> str:
    """A value for a table line: texts quoted when they hold a space or nothing, bytes and
    unprintable characters escaped."""
    if isinstance(value, bytes):
        return '"' + "".join(f"\\x{b:02x}" for b in value) + '"'
    if isinstance(value, str):
        shown = escape(value)
        return f'"{shown}"' if not shown or " " in shown or "=" in shown else shown
    if isinstance(value, list):
        return "[" + ",".join(cell(v) for v in value) + "]"
    return str(value)


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return escape(text(value))
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


class _Printer:
    def __init__(self, out: IO[str], fmt: str, several: bool) -> None:
        self.out, self.fmt, self.several = out, fmt, several
        self.events: list[dict[str, Any]] = []

    def write(self, line: str) -> None:
        write_stdout(self.out, line)

    def event(self, name: str, fields: dict[str, Any]) -> None:
        if self.fmt == "table":
            head = f"{name}: " if self.several else ""
            self.write(head + " ".join(f"{k}={cell(v)}" for k, v in fields.items()) + "\n")
            return
        doc = {"map": name} if self.several else {}
        doc.update((k, jsonable(v)) for k, v in fields.items())
        if self.fmt == "jsonl":
            self.write(json.dumps(doc) + "\n")
        else:
            self.events.append(doc)

    def maps(self, dumps: list) -> None:
        from ebpfwire.kernel.runner import render_histogram

        docs = []
        for d in dumps:
            entries = [{"key": {k: jsonable(v) for k, v in key.items()},
                        "value": {k: jsonable(v) for k, v in value.items()}}
                       for key, value in d.entries]
            doc = {"map": d.name, "entries": entries, "more": d.more}
            doc["histograms"] = [{"title": title, "linear": linear,
                                  "buckets": [[b.low_us, b.high_us, b.count] for b in buckets]}
                                 for title, buckets, linear in d.histograms]
            docs.append(doc)
            if self.fmt == "jsonl":
                self.write(json.dumps(doc) + "\n")
            elif self.fmt == "table":
                self.write(f"\nmap {d.name}: {len(d.entries) + d.more} entries\n")
                if d.histograms:
                    for title, buckets, linear in d.histograms:
                        self.write(render_histogram(title, buckets, linear, d.name))
                    continue
                for key, value in d.entries:
                    k = " ".join(f"{n}={cell(v)}" for n, v in key.items())
                    v = " ".join(f"{n}={cell(x)}" for n, x in value.items())
                    self.write(f"  {k} => {v}\n")
                if d.more:
                    self.write(f"  ... {d.more} more\n")
        if self.fmt == "json":
            self.write(json.dumps({"events": self.events, "maps": docs}, indent=1) + "\n")


class _CaptureSink:
    """``-o FILE``: each map's type declared before its first event, then the events."""

    def __init__(self, path: str, run: Any) -> None:
        from ebpfwire.capture import TYPED_LAYOUT, CaptureWriter

        self.run, self.path, self.events = run, path, 0
        self.index = {o.name: i for i, o in enumerate(run.outputs)}
        self.declared: set[int] = set()
        try:
            self.writer = CaptureWriter(path, layout=TYPED_LAYOUT, arch=machine_arch())
        except FileExistsError:
            raise UsageError(f"run: {path}: already exists; a capture is never overwritten") \
                from None
        except OSError as exc:
            raise UsageError(f"run: {path}: cannot create: {exc.strerror}") from None

    def event(self, e: Any) -> None:
        index = self.index[e.map]
        if index not in self.declared:
            found = self.run.type_of(e.map)
            self.writer.write_type(index, e.map, found.type_id, found.btf.data)
            self.declared.add(index)
        self.writer.write_event(index, e.cpu, e.data)
        self.events += 1

    def close(self) -> None:
        self.writer.close()
        say(f"{self.events:,} events written to {self.path}")


def cmd_run(args: argparse.Namespace) -> int:
    from ebpfwire.kernel.errors import LoaderError
    from ebpfwire.kernel.runner import LostRecords, ObjectRun

    split_command(args)
    try:
        run = ObjectRun(args.object, settings=settings(args.set), maps=args.map,
                        type_name=args.type)
    except LoaderError as exc:
        raise UsageError(f"run: {str(exc).splitlines()[0]}") from None
    child = sink = None
    try:
        with run, StopSignals() as stop:
            try:
                run.start()
            except LoaderError as exc:
                raise UsageError(f"run: {str(exc).splitlines()[0]}") from None
            printer = _Printer(sys.stdout, args.format, len(run.outputs) > 1)
            if args.output:
                sink = _CaptureSink(args.output, run)
            if args.cmd:
                try:
                    child = subprocess.Popen(args.cmd)
                except OSError as exc:
                    raise UsageError(f"run: cannot start {args.cmd[0]}: {exc.strerror}") from None
            end = None if args.duration is None else time.monotonic() + args.duration

            def arrivals() -> Iterator[Any]:
                """Records as the rings give them, until a stop, the duration or the
                command's end (then a few more reads for what the rings still hold)."""
                passes = 0
                while not stop.requested and passes < DRAIN_PASSES:
                    try:
                        got = run.read(POLL)
                    except LoaderError as exc:
                        raise UsageError(f"run: {exc}") from None
                    for g in got:
                        yield g if args.ts is None or isinstance(g, LostRecords) \
                            else _Timed(g, args.ts)
                    if args.ts is not None:
                        yield Clock(time.monotonic_ns())
                    if child is not None and child.poll() is not None or (
                            end is not None and time.monotonic() >= end):
                        passes += 1  # a few more reads: records the kernel wrote meanwhile

            records = arrivals() if args.ts is None else (
                getattr(g, "event", g) for g in TimeOrder(_Timed, LostRecords)(arrivals()))
            for g in records:
                if isinstance(g, LostRecords):
                    say(f"map {g.map!r}: {g.count} records lost (cpu {g.cpu})")
                    if sink is not None:
                        sink.writer.write_lost(g.cpu, g.count)
                elif sink is not None:
                    sink.event(g)
                else:
                    printer.event(g.map, g.fields)
            printer.maps(run.map_dumps())
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            child.wait()
        if sink is not None:
            sink.close()
    return EXIT_OK


class _Timed:
    """An event for the reorder window, its ``--ts`` field as the 8 bytes the window reads
    a sample's time from."""

    __slots__ = ("event", "cpu", "data")

    def __init__(self, event: Any, name: str):
        value = event.fields.get(name)
        if type(value) is not int or value < 0:
            raise UsageError(f"run: --ts {name}: expected an unsigned integer field of map "
                             f"{event.map!r}, found "
                             + ("no such field; its fields: " + ", ".join(event.fields)
                                if name not in event.fields else repr(value)))
        self.event, self.cpu, self.data = event, event.cpu, value.to_bytes(8, "little")


def print_typed(reader: Any, label: str, fmt: str, out: IO[str]) -> int:
    """``decode`` of a capture ``run -o`` wrote: its events as ``run`` prints them, decoded
    by the types it carries; the number of events."""
    from ebpfwire.capture import EventRecord, TypeRecord
    from ebpfwire.kernel.btf import Btf
    from ebpfwire.kernel.btfstruct import CompiledStruct
    from ebpfwire.kernel.errors import BtfError

    types: dict[int, tuple[str, Any]] = {}
    printer = None
    count = 0
    for rec in reader:
        if isinstance(rec, TypeRecord):
            try:
                btf = Btf(rec.btf, f"{label}: TYPE record at file offset {rec.offset}")
                types[rec.map] = (rec.name, CompiledStruct(btf, rec.type_id))
            except BtfError as exc:
                raise UsageError(str(exc)) from None
            printer = printer or _Printer(out, fmt, False)
            printer.several = len(types) > 1
        elif isinstance(rec, EventRecord):
            if rec.resync is not None:
                say(f"{label}: EVENT record at file offset {rec.offset} found by scanning "
                    f"after the damage at offset {rec.resync}: not shown")
                continue
            if rec.map not in types:
                raise UsageError(f"{label}: EVENT record at file offset {rec.offset} of map "
                                 f"{rec.map}, whose TYPE record is missing")
            name, compiled = types[rec.map]
            printer.event(name, compiled.decode(rec.data))
            count += 1
    if fmt == "json":
        (printer or _Printer(out, fmt, False)).maps([])
    return count
