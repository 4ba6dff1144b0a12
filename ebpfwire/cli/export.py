"""``ebpfwire export``: captures to Parquet, decoded by worker processes (ebpfwire.columnar.export).

Every capture is opened and its layout checked as ``decode`` does before any work starts,
so bad input is one line and exit status 2, as is an output that exists (without
``--force``) or cannot be created. The output appears only when complete; a failure or
Ctrl-C leaves nothing behind. One line at the end says what was written.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
from typing import TYPE_CHECKING

from ebpfwire.cli.captures import held_until_fit, layout_and_arch, open_capture
from ebpfwire.cli.decode import typed_capture
from ebpfwire.cli.errors import EXIT_IO, EXIT_OK, UsageError, say
from ebpfwire.cli.filters import event_filter
from ebpfwire.cli.options import add_capture_filters, add_command, integer, names_list
from ebpfwire.cli.output import Progress

if TYPE_CHECKING:
    from ebpfwire.columnar.export import ExportSummary

JOBS_MAX = 256
#: errors of creating the output (nothing was done: exit 2); any other is an I/O error (74)
_CREATE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR,
                  errno.EISDIR, errno.EEXIST}


def jobs_type(text: str) -> int:
    """Worker processes: 1 to JOBS_MAX."""
    value = integer(text)
    if not 1 <= value <= JOBS_MAX:
        raise argparse.ArgumentTypeError(f"expected 1 to {JOBS_MAX} workers, found {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` command to the parser's subcommands."""
    p = add_command(
        sub, "export", "decode captures to Parquet in parallel, one column per field (ts, "
        "event, comm, path, addr, ..., the process context)",
        examples=(
            "ebpfwire export run.ewcap -o run.parquet",
            "ebpfwire export node-*.ewcap -o fleet --parts --jobs 8",
            "ebpfwire export --raw run.ewcap -o raw.parquet   no process context",
            "ebpfwire export --lenient damaged.ewcap -o d.parquet   damage as rows",
        ))
    p.add_argument("files", nargs="+", metavar="FILE", help="capture files (one layout)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the Parquet file to create (a directory of parts with --parts)")
    p.add_argument("--jobs", "-j", type=jobs_type, metavar="N",
                   help="worker processes (default: the CPU count; 1: no workers)")
    p.add_argument("--parts", action="store_true",
                   help="write OUT as a directory of part-NNNNN.parquet files")
    p.add_argument("--force", action="store_true",
                   help="replace what is at OUT (a link itself, never its target)")
    p.add_argument("--raw", action="store_true",
                   help="without the process context columns (process, parent_process, "
                        "container_id), which cost one more pass over each capture")
    add_capture_filters(p, "damaged samples become rows with errors (default: the first "
                        "one stops the export)")
    p.set_defaults(run=cmd_export, uses_stdout=False)  # its messages go to stderr only


def check_output(path: str, force: bool) -> None:
    """Refuse an existing OUT (a link, dangling or not, included) unless --force."""
    if force or not os.path.lexists(path):
        return
    if os.path.islink(path):
        raise UsageError(f"{path}: is a symbolic link; Parquet is never written through one "
                         "(--force replaces the link itself)")
    raise UsageError(f"{path}: already exists; --force replaces it")


def check_inputs(args: argparse.Namespace) -> None:
    """Each capture readable, its layout and arch known and fitting (decode's checks), and
    none of them the output."""
    for source in args.files:
        if source == "-":
            raise UsageError("export reads capture files (split between workers), not "
                             "standard input; save it to a file first")
        with open_capture(source) as reader:
            layout, arch = layout_and_arch(args, reader.header, source)
            next(held_until_fit(iter(reader), layout, arch, source), None)
        if os.path.exists(args.output) and os.path.samefile(source, args.output):
            raise UsageError(f"{args.output}: is the input {source}; choose another output")


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does: nothing is left behind


def summary_line(summary: ExportSummary, output: str) -> str:
    """The line printed at the end: events, lost, damaged, seconds, where."""
    files = len(summary.files)
    where = output if files == 1 and summary.files[0] == output else (
        f"{output} ({files} part{'s' if files != 1 else ''})")
    return (f"exported {summary.events:,} events ({summary.lost:,} lost, {summary.damaged:,} "
            f"damaged) in {summary.seconds:.2f} s to {where}")


def export_typed(source: str, output: str) -> int:
    """A capture of typed events (``ebpfwire run -o``): one column per field of its type;
    the events of several maps go to one file each, ``OUT`` with ``.MAP`` before its
    suffix."""
    import pyarrow.parquet as pq

    from ebpfwire.columnar.btfevents import typed_tables
    from ebpfwire.kernel.errors import BtfError

    try:
        tables = typed_tables(source)
    except (ValueError, BtfError) as exc:
        raise UsageError(str(exc)) from None
    root, ext = os.path.splitext(output)
    for name, table in tables.items():
        path = output if len(tables) == 1 else f"{root}.{name}{ext}"
        pq.write_table(table, path)
        say(f"exported {table.num_rows:,} {name} events ({table.num_columns} columns) to {path}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from ebpfwire.columnar.export import (  # pyarrow: only for this command
            ExportError,
            export_parquet,
            remove_stale_outputs,
        )
    except ImportError as exc:  # the arrow extra is not installed: say which to install
        raise UsageError(str(exc).removeprefix("ebpfwire.")) from None

    if args.pid is not None:
        raise UsageError(f"-p/--pid follows a process tree, which needs a capture read in "
                         f"order; export keeps one pid with --exact-pid {args.pid} (decode -p "
                         f"{args.pid} --format jsonl gives the tree)")
    keep = event_filter(names_list(args.event), args.exact_pid, args.comm, args.failed)
    check_output(args.output, args.force)
    if len(args.files) == 1 and typed_capture(args.files[0]):
        return export_typed(args.files[0], args.output)
    check_inputs(args)
    for path in remove_stale_outputs(args.output):
        say(f"{path}: removed: the temporary output of an export that was killed")
    progress = Progress()
    old_term = signal.signal(signal.SIGTERM, _terminated)
    try:
        summary = export_parquet(args.files, args.output, jobs=args.jobs, layout=args.layout,
                                 arch=args.arch, strict=not args.lenient, keep=keep,
                                 parts=args.parts, force=args.force,
                                 progress=progress.of_bytes,
                                 context=not args.raw)
    except ExportError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        if exc.errno in _CREATE_ERRNOS:
            raise UsageError(f"{args.output}: cannot create: {exc.strerror}") from None
        say(f"{args.output}: {exc.strerror or exc}: export stopped; nothing was written")
        return EXIT_IO
    finally:
        signal.signal(signal.SIGTERM, old_term)
        progress.done()
    say(summary_line(summary, args.output))
    return EXIT_OK
