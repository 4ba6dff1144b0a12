"""Captures to Parquet, decoded in parallel by worker processes.

The captures are cut into byte ranges (:func:`ebpfwire.capture.split_ranges`); each range is
decoded to Arrow by :mod:`ebpfwire.columnar.arrow` in a worker process. Either the workers write one
part file each (``parts=True``), or they send their rows back as Arrow IPC and the parent
writes one Parquet file in capture order. At most a few ranges are in flight at a time, so
memory does not grow with the size of the captures.

Nothing is written in place: the output is built under a hidden temporary name in the
target's directory and published at the end, exclusively (an existing path is refused
unless ``force=True``, a link is never followed). A failure removes the temporary output;
one left by a run that was killed (SIGKILL: no cleanup runs) names its dead writer's pid and
is removed by the next export to the same path (:func:`remove_stale_outputs`). Workers die
with their parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from typing import Any, TypeVar

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError("ebpfwire.export needs the arrow extra (pyarrow, numpy): "
                      "pip install '.[arrow]' in a checkout of ebpfwire") from error

from ebpfwire import machine
from ebpfwire.capture import CaptureError, CaptureReader, split_ranges, unreadable_capture
from ebpfwire.collect import fewer_collections
from ebpfwire.columnar import arrow
from ebpfwire.columnar.rowcontext import ContextIndex, index_capture
from ebpfwire.errors import EbpfwireError
from ebpfwire.wire.catalogue import check_arch
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.filter import EventFilter
from ebpfwire.wire.layouts import get_layout

ROW_GROUP_ROWS = 1 << 17
"""Default upper bound of the rows in one Parquet row group."""

DECODE_ROWS = 1 << 14
"""Rows decoded at a time; :class:`_ParquetOut` gathers them into row groups. Decoding goes
through Python objects (about 1 KiB a row while a batch is built, 2 KiB with the writer's
copies), Arrow holds a row in a few hundred bytes: decoding whole row groups at once made
an export's memory grow by 2.2 KiB a row up to ROW_GROUP_ROWS (docs/benchmarks.md, "Hostile
captures")."""

SPLIT_BYTES = 8 << 20
"""Default size of the capture byte range one worker decodes at a time (about 60,000 events
of a typical workload): small enough that a few ranges in flight stay a few hundred MB."""

ARGV_VALUES_MAX = 1 << 20
"""The ``process.argv`` elements, counted row by row, that one Parquet write takes. Parquet
stores a list per row, so its writer spends some 25 bytes per element of every row's argv,
where the Arrow rows share each distinct argv (a list view): past it, rows go to the next
row group. Processes with long command lines make smaller row groups, not more memory."""

COMPRESSION = "zstd"
PART_NAME = "part-{:05d}.parquet"
_OPEN_EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_MODE, DIR_MODE = 0o600, 0o700
"""Modes of what an export creates whatever the umask, as ``record`` does: captures hold
command lines, paths and addresses."""
TEMP_SUFFIX = ".tmp"
#: the part of a temporary output's name after ".OUT.": the writer's pid, then 8 random
#: characters (:func:`_temporary`)
_TEMP_MIDDLE = re.compile(r"([1-9][0-9]*)\.[a-z0-9_]{8}")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_T = TypeVar("_T")


class ExportError(EbpfwireError, ValueError):
    """Input or output the export cannot use; the message is one line saying which and why."""


@dataclass(frozen=True)
class Split:
    """Records of one capture whose first byte lies in [start, end), with the process
    context of its samples: the capture's index cut to the range, True for the whole
    capture read in one pass (its context answered as it is read), or None for none."""

    path: str
    start: int
    end: int
    context: ContextIndex | bool | None = None

    def open(self) -> CaptureReader:
        return CaptureReader(self.path, start=self.start, end=self.end)


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: event rows, samples the kernel reported lost, damaged samples
    or skipped capture stretches, wall-clock seconds, and the Parquet files written."""

    events: int
    lost: int
    damaged: int
    seconds: float
    files: tuple[str, ...]


@dataclass(frozen=True)
class _Options:
    layout: str | None
    arch: str | None
    strict: bool
    keep: EventFilter | None
    row_group_rows: int


@dataclass
class _Counts:
    events: int = 0
    lost: int = 0
    damaged: int = 0
    bytes: int = 0

    def add(self, other: _Counts) -> None:
        self.events += other.events
        self.lost += other.lost
        self.damaged += other.damaged
        self.bytes += other.bytes


# --------------------------------------------------------------------------- planning


def check_captures(paths: Iterable[str | os.PathLike[str]], layout: str | None = None,
                   arch: str | None = None) -> tuple[list[str], str]:
    """The paths, each checked to be a readable capture whose layout and architecture (the
    header's, or `layout`/`arch`) are known; all must share one layout, as one table has
    one set of context columns. Returns the paths and that layout's name. Raises
    :class:`ExportError`."""
    checked: list[str] = []
    layouts: dict[str, str] = {}
    for path in map(os.fspath, paths):
        try:
            with CaptureReader(path) as reader:
                header = reader.header
        except (FileNotFoundError, IsADirectoryError, PermissionError, CaptureError) as exc:
            raise ExportError(unreadable_capture(path, exc)) from None
        name = layout or header.layout
        origin = "given" if layout else "from the capture header"
        try:
            layouts[path] = get_layout(name).name
            check_arch(arch or header.arch)
        except ValueError as exc:
            raise ExportError(f"{path}: {exc} ({origin})") from None
        checked.append(path)
    if not checked:
        raise ExportError("no capture to export")
    if len(set(layouts.values())) > 1:
        found = ", ".join(f"{path} ({name})" for path, name in layouts.items())
        raise ExportError(f"expected captures of one context layout, found {found}; "
                          "export each layout to its own output")
    return checked, layouts[checked[0]]


def plan_splits(paths: Iterable[str], split_bytes: int,
                indexes: Iterable[ContextIndex] | None = None) -> list[Split]:
    """The byte ranges of every capture, in file order, each about `split_bytes` long and
    starting at a record the chain of record headers reaches (:func:`split_ranges`). With
    the captures' context `indexes` (:func:`index_captures`), the range starts come from
    that pass, and each range gets the slice of its capture's index it needs: a range read
    on its own cannot know the processes started before it."""
    paths = list(paths)
    cut = list(indexes) if indexes is not None else [None] * len(paths)
    return [Split(path, start, end, None if index is None else index.within(start, end))
            for path, index in zip(paths, cut, strict=True)
            for start, end in split_ranges(path, split_bytes=split_bytes,
                                           starts=None if index is None else index.starts())]


def index_captures(paths: Iterable[str], layout: str | None = None, arch: str | None = None,
                   jobs: int = 1) -> list[ContextIndex]:
    """Each capture's process context index (:func:`ebpfwire.columnar.rowcontext.index_capture`:
    the whole capture read once, in time order; 12 bytes per sample), `jobs` captures at a
    time in worker processes (one capture is one sequential pass)."""
    return [index for _, index in _run([(_index_task, path, layout, arch) for path in paths],
                                       jobs)]


def _index_task(path: str, layout: str | None, arch: str | None) -> tuple[None, ContextIndex]:
    """Worker: one capture's context index."""
    return None, index_capture(path, layout, arch)


# --------------------------------------------------------------------------- decoding


def _decode(split: Split, options: _Options, counts: _Counts,
            on_batch: Callable[[int], None] | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of one split, filtered, in bounded batches; counts what was seen, and says
    after each batch how many of the split's bytes were read (``on_batch``)."""
    try:
        with split.open() as reader:
            for batch in arrow.batches(reader, layout=options.layout, arch=options.arch,
                                       strict=options.strict,
                                       max_rows=min(options.row_group_rows, DECODE_ROWS),
                                       context=split.context or False):
                counts.damaged += batch.num_rows - batch.column("errors").null_count
                if options.keep is not None:
                    batch = batch.filter(options.keep.mask(batch))
                lost = batch.column("lost")
                counts.lost += pc.sum(lost).as_py() or 0
                counts.events += batch.num_rows - (len(lost) - lost.null_count)
                if batch.num_rows:
                    yield batch
                if on_batch is not None:
                    offset = reader.read_offset
                    if offset is not None:
                        on_batch(max(0, min(offset, split.end) - split.start))
            counts.damaged += reader.damage_count
    except DecodeError as exc:  # its message names the file and the sample's offset
        raise ExportError(f"{exc}; a lenient export keeps damaged samples as rows with "
                          "errors") from None
    counts.bytes += split.end - split.start


@fewer_collections()
def _ipc_task(split: Split, options: _Options) -> tuple[_Counts, pa.Buffer | None]:
    """Worker: one split as an Arrow IPC stream for the parent to write."""
    counts = _Counts()
    sink = pa.BufferOutputStream()
    writer = None
    for batch in _decode(split, options, counts):
        if writer is None:
            writer = pa.ipc.new_stream(sink, batch.schema)
        writer.write_batch(batch)
    if writer is None:
        return counts, None
    writer.close()
    return counts, sink.getvalue()


@fewer_collections()
def _part_task(split: Split, options: _Options, path: str) -> tuple[_Counts, bool]:
    """Worker: one split written to its own part file; none when no row is left."""
    counts = _Counts()
    with _ParquetOut(path, options.row_group_rows, background=True) as out:
        for batch in _decode(split, options, counts):
            out.write(batch)
    if out.writer is None:
        os.unlink(path)
    return counts, out.writer is not None


class _ParquetOut:
    """A Parquet file created exclusively (never through a link), mode FILE_MODE whatever
    the umask. Opened on the first batch; empty if none came.

    Batches are gathered until they make a row group of `row_group_rows` rows (the rest at
    :meth:`close`), so that rows decoded a few at a time still make full row groups. With
    `background`, row groups are encoded and compressed by a thread (Arrow releases the
    GIL there) while the caller decodes the next rows; at most two writes wait for it.
    """

    def __init__(self, path: str, row_group_rows: int, fd: int | None = None,
                 background: bool = False):
        self.path = path
        self.row_group_rows = row_group_rows
        self.fd = os.open(path, _OPEN_EXCL, FILE_MODE) if fd is None else fd
        os.fchmod(self.fd, FILE_MODE)  # the umask took bits off at creation (000 under 777)
        self.file = _native_file(self.fd)
        self.writer: pq.ParquetWriter | None = None
        self.thread = ThreadPoolExecutor(1) if background else None
        self.pending: deque[Future] = deque()
        self.gathered: list[pa.Table] = []
        self.gathered_rows = 0

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.file, data.schema, compression=COMPRESSION)
        elif not data.schema.equals(self.writer.schema, check_metadata=False):
            data = _conform(data, self.writer.schema)
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        self.gathered.append(data)
        self.gathered_rows += data.num_rows
        if self.gathered_rows >= self.row_group_rows:
            table = pa.concat_tables(self.gathered)
            whole = table.num_rows - table.num_rows % self.row_group_rows
            rest = table.slice(whole)
            self.gathered, self.gathered_rows = [rest] if rest.num_rows else [], rest.num_rows
            self._write(table.slice(0, whole))

    def _write(self, data: pa.Table) -> None:
        for part in _argv_bounded(data):
            if self.thread is None:
                self.writer.write_table(part, row_group_size=self.row_group_rows)
                continue
            while len(self.pending) >= 2:
                self.pending.popleft().result()
            self.pending.append(self.thread.submit(self.writer.write_table, part,
                                                   row_group_size=self.row_group_rows))

    def close(self, flush: bool = True) -> None:
        """Write what is gathered (unless `flush` is False: the output is being given up),
        wait for the writes and close the file."""
        try:
            if flush and self.gathered_rows:
                self._write(pa.concat_tables(self.gathered))
            self.gathered = []
            while self.pending:
                self.pending.popleft().result()
        finally:
            if self.thread is not None:
                self.thread.shutdown(cancel_futures=True)
            if self.writer is not None:
                self.writer.close()
            self.file.close()
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def __enter__(self) -> _ParquetOut:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self.close(flush=kind is None)


def _argv_bounded(table: pa.Table) -> Iterator[pa.Table]:
    """`table` in slices (views, no copy) of at most ARGV_VALUES_MAX argv elements, each
    slice at least a row."""
    if "process" not in table.column_names or not table.num_rows:
        yield table
        return
    argv = pc.struct_field(table["process"], "argv")
    ends = np.cumsum(pc.fill_null(pc.list_value_length(argv), 0).to_numpy())
    if ends[-1] <= ARGV_VALUES_MAX:
        yield table
        return
    start = 0
    while start < table.num_rows:
        before = ends[start - 1] if start else 0
        end = max(int(np.searchsorted(ends, before + ARGV_VALUES_MAX, "right")), start + 1)
        yield table.slice(start, end - start)
        start = end


def _native_file(fd: int) -> Any:
    """A file writing to `fd` that Arrow writes to without the GIL: /proc/self/fd/N opens
    the very file `fd` is open on (no path is looked up again, no link followed). Through
    a Python file object each write of the encoder would wait for the GIL, held by the
    thread decoding the next rows. Elsewhere than Linux, a Python file on a copy of `fd`."""
    proc = f"/proc/self/fd/{fd}"
    if os.path.exists(proc):
        return pa.OSFile(proc, "wb")
    return os.fdopen(os.dup(fd), "wb")


def _conform(data: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    """`data` in the file's schema; the rows of one layout differ at most in dictionaries."""
    table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise ExportError(f"rows whose columns differ from the first rows' ({exc})") from None


def _start_method() -> str:
    """How to start the workers: fork when this process runs a single thread (a worker is
    ready in milliseconds, where a spawned one spends about a second importing pyarrow on a
    busy machine); spawn otherwise, as forking a process whose other threads may hold locks
    is unsafe. The tasks are module-level functions of picklable arguments, so both work."""
    if "fork" in get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _start_worker(parent: int) -> None:
    """A worker dies with its parent, even one killed by SIGKILL (Linux: the parent's death
    signal), and ignores Ctrl-C, the parent's to handle: it stops when the pool is shut
    down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                  ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # the parent died before the death signal was set
        os._exit(1)


# --------------------------------------------------------------------------- output


def _temp_prefix(out: str) -> str:
    """The start of `out`'s temporary output names: hidden, and naming this process, so
    that a later export can tell the leftovers of a killed one."""
    return f".{os.path.basename(out)}.{os.getpid()}."


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not: it can write nothing more)."""
    if not machine.process_exists(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def remove_stale_outputs(out: str | os.PathLike[str]) -> list[str]:
    """Remove the temporary outputs that exports to `out` killed earlier left behind; the
    paths removed.

    Only names of this module's pattern (``.OUT.<pid>.<random>.tmp`` in OUT's directory)
    whose pid is no longer running, owned by this user: a regular file (removed by name),
    or a directory of mode DIR_MODE holding only regular files (a ``parts`` output; what
    only its owner could have put there). Nothing is followed: a link, or anything else,
    is left alone, as is a directory whose content is not as expected.
    """
    out = os.fspath(out)
    parent = os.path.dirname(os.path.abspath(out))
    prefix = f".{os.path.basename(out)}."
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed = []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        match = _TEMP_MIDDLE.fullmatch(name[len(prefix):-len(TEMP_SUFFIX)])
        if match is None or _running(int(match[1])):
            continue
        path = os.path.join(parent, name)
        try:
            if _remove_ours(path):
                removed.append(path)
        except OSError:  # gone meanwhile, or not ours to remove: left as it is
            continue
    return removed


def _remove_ours(path: str) -> bool:
    """Remove `path` if it is a regular file or a parts directory this user made; never
    through a link (lstat, O_NOFOLLOW, names unlinked relative to the opened directory)."""
    info = os.lstat(path)
    if info.st_uid != os.geteuid():
        return False
    if stat.S_ISREG(info.st_mode):
        os.unlink(path)  # the name only, whatever it is by now
        return True
    if not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) != DIR_MODE:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            return False
        entries = os.listdir(fd)
        if not all(stat.S_ISREG(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode)
                   for entry in entries):
            return False
        for entry in entries:
            os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)  # only an empty directory; a link there now is refused (ENOTDIR)
    return True


def _claim(out: str, force: bool) -> None:
    """Refuse an existing output early, before any work, unless `force`."""
    if os.path.lexists(out) and not force:
        raise ExportError(f"{out}: already exists (choose another output, or force)")
    parent = os.path.dirname(out) or "."
    if not os.path.isdir(parent):
        raise ExportError(f"{out}: no such directory {parent!r}")


def _publish_file(tmp: str, out: str, force: bool) -> None:
    if force:
        if os.path.isdir(out) and not os.path.islink(out):
            raise ExportError(f"{out}: is a directory, expected a file to replace")
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)  # fails if anything, a link included, is at `out`
    except FileExistsError:
        raise ExportError(f"{out}: already exists (created during the export)") from None
    os.unlink(tmp)


def _is_parts_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path) and all(
        name.startswith("part-") and name.endswith(".parquet") for name in os.listdir(path))


def _publish_dir(tmp: str, out: str, force: bool) -> None:
    if force and os.path.lexists(out):
        if os.path.isdir(out) and not os.path.islink(out):
            if not _is_parts_dir(out):
                raise ExportError(f"{out}: a directory holding other files than "
                                  "part-*.parquet; not replaced")
            trash = tempfile.mkdtemp(dir=os.path.dirname(tmp), prefix=".trash-")
            os.rename(out, os.path.join(trash, "old"))
            os.rename(tmp, out)
            shutil.rmtree(trash)
            return
        os.unlink(out)  # a file or a link (the link itself, not its target)
    try:
        os.rename(tmp, out)  # fails on an existing file, link or non-empty directory
    except OSError as exc:
        raise ExportError(f"{out}: already exists (created during the export): "
                          f"{exc.strerror}") from None


# --------------------------------------------------------------------------- export


@fewer_collections()
def export_parquet(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    jobs: int | None = None,
    layout: str | None = None,
    arch: str | None = None,
    strict: bool = False,
    keep: EventFilter | None = None,
    parts: bool = False,
    row_group_rows: int = ROW_GROUP_ROWS,
    split_bytes: int = SPLIT_BYTES,
    force: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
    context: bool = True,
) -> ExportSummary:
    """Decode captures to Parquet (zstd, row groups of at most `row_group_rows` rows).

    The rows are those of :func:`ebpfwire.columnar.arrow.to_table` on the same captures, in the same
    order, less what `keep` filters out. `out` is one file, or with `parts=True` a directory
    of ``part-NNNNN.parquet`` files in capture order. `jobs` worker processes (default: the
    CPU count; 1 decodes in this process) decode byte ranges of about `split_bytes`.
    `progress(bytes_done, bytes_total, events)` is called as ranges complete (bytes of
    records, file headers not counted). In lenient
    mode (the default) damaged samples are rows with ``errors``; with `strict` the first
    one raises. Bad input or output raises :class:`ExportError`. With `context` (the
    default) the rows end with the process context columns, as ``to_table`` gives them:
    each capture is read once, in time order, before its ranges are decoded
    (:func:`index_captures`, `jobs` captures at a time); a single capture is then
    decoded in this process, whatever `jobs` says.
    """
    started = time.monotonic()
    sources = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out = os.fspath(out)
    if jobs is None:
        jobs = os.cpu_count() or 1
    if jobs < 1 or row_group_rows < 1 or split_bytes < 1:
        raise ExportError(f"expected jobs, row_group_rows and split_bytes >= 1, found "
                          f"{jobs}, {row_group_rows}, {split_bytes}")
    _claim(out, force)
    remove_stale_outputs(out)
    checked, layout_name = check_captures(sources, layout, arch)
    size = sum(os.path.getsize(path) for path in checked)
    if context and len(checked) == 1:
        # one pass, in this process, its context answered as it is read: an index would be
        # a pass of its own (and 12 bytes a sample), and rows with the context's columns
        # cost more to send from workers than they gain (docs/benchmarks.md)
        jobs = 1
        with CaptureReader(checked[0]) as reader:   # its records start after the header
            splits = [Split(checked[0], reader.start, size, True)]
    else:   # enough ranges to keep every worker busy, none bigger than split_bytes
        indexes = index_captures(checked, layout, arch, jobs) if context else None
        splits = plan_splits(checked, max(1 << 16, min(split_bytes, size // (4 * jobs) + 1)),
                             indexes)
    total = sum(split.end - split.start for split in splits)  # the records' bytes
    options = _Options(layout, arch, strict, keep, row_group_rows)
    parent = os.path.dirname(os.path.abspath(out))
    hidden = _temp_prefix(out)
    counts = _Counts()

    def tick(done: _Counts) -> None:
        counts.add(done)
        if progress is not None:
            progress(counts.bytes, total, counts.events)

    if parts:
        names = [PART_NAME.format(i) for i in range(len(splits))]
        with _temporary(os.path.join(parent, hidden), _new_dir,
                        lambda tmp: shutil.rmtree(tmp, ignore_errors=True)) as (tmp, _):
            _chmod_dir(tmp)
            tasks = [(_part_task, split, options, os.path.join(tmp, name))
                     for split, name in zip(splits, names, strict=True)]
            written = []
            for name, (done, wrote) in zip(names, _run(tasks, jobs), strict=True):
                tick(done)
                if wrote:
                    written.append(name)
            if not written:  # no rows at all: one empty part still gives readers the schema
                written = names[:1]
                _empty(os.path.join(tmp, written[0]), layout_name, context)
            _publish_dir(tmp, out, force)
        files = tuple(os.path.join(out, name) for name in written)
    else:
        with _temporary(os.path.join(parent, hidden), _new_file,
                        _unlink_if_there) as (tmp, fd):
            with _ParquetOut(tmp, row_group_rows, fd, background=True) as target:
                if jobs == 1:
                    for split in splits:
                        done = _Counts()

                        def read(offset: int, done: _Counts = done) -> None:
                            if progress is not None:
                                progress(counts.bytes + offset, total,
                                         counts.events + done.events)

                        for batch in _decode(split, options, done, read):
                            target.write(batch)
                        tick(done)
                else:
                    tasks = [(_ipc_task, split, options) for split in splits]
                    for done, buffer in _run(tasks, jobs):
                        if buffer is not None:
                            target.write(pa.ipc.open_stream(buffer).read_all())
                        tick(done)
            if target.writer is None:  # no rows at all: still a valid, empty file
                _empty(tmp, layout_name, context, replace=True)
            _publish_file(tmp, out, force)
        files = (out,)
    return ExportSummary(counts.events, counts.lost, counts.damaged,
                         time.monotonic() - started, files)


@contextlib.contextmanager
def _temporary(prefix: str, create: Callable[[str], _T],
               remove: Callable[[str], None]) -> Iterator[tuple[str, _T]]:
    """A new temporary output, its path and what ``create(path)`` returns; given to
    ``remove(path)`` if anything fails, its creation included. The name (``prefix``, 8
    random characters, TEMP_SUFFIX) is chosen before the output exists, so a stop landing
    anywhere, in whichever thread the signal reaches, leaves nothing behind."""
    while True:
        path = f"{prefix}{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            made = create(path)
        except FileExistsError:
            continue       # another's (a name of this pid left by no live export): untouched
        except BaseException:
            remove(path)
            raise
        break
    try:
        yield path, made
    except BaseException:
        remove(path)
        raise


def _new_file(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                   FILE_MODE)


def _new_dir(path: str) -> str:
    os.mkdir(path, DIR_MODE)
    return path


def _unlink_if_there(path: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)


def _chmod_dir(path: str) -> None:
    """DIR_MODE on the directory just made at `path` (mkdtemp's mode less the umask),
    through a descriptor opened without following a link."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, DIR_MODE)
    finally:
        os.close(fd)


def _empty(path: str, layout: str, context: bool, replace: bool = False) -> None:
    """An empty Parquet file with the columns of `layout` (and the context's)."""
    if replace:
        os.unlink(path)
    with _ParquetOut(path, 1) as out:
        out.write(arrow.schema(layout, context).empty_table())


def _run(tasks: list[tuple[Any, ...]], jobs: int) -> Iterator[tuple[_Counts, Any]]:
    """Results of `tasks` ((function, *args)) in order; in this process when jobs is 1, else
    in `jobs` worker processes with at most two tasks per worker in flight (bounded memory).
    """
    if jobs == 1 or len(tasks) == 1:
        for function, *args in tasks:
            yield function(*args)
        return
    workers = min(jobs, len(tasks))
    pool = ProcessPoolExecutor(workers, mp_context=get_context(_start_method()),
                               initializer=_start_worker, initargs=(os.getpid(),))
    pending: deque[Future] = deque()
    queue = iter(tasks)
    try:
        for function, *args in queue:
            pending.append(pool.submit(function, *args))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            for function, *args in queue:
                pending.append(pool.submit(function, *args))
                break
            yield result
    except BrokenProcessPool:
        raise ExportError("a worker process died (out of memory? killed?); "
                          "nothing was written") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
