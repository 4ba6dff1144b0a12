"""Captures as Arrow tables: the columnar sink of the argument walker.

``to_table`` and ``batches`` turn captures (or raw samples) into ``pyarrow`` data, one row
per sample and one per lost-sample record. The fixed-size context headers of a batch are
decoded at once as a numpy structured array over their joined bytes; the arguments are
walked by :mod:`ebpfwire.wire.walker` into one flat list per batch and turned into columns
there. No Python object is made per event for the header fields, and only the walker's
flat values for the arguments. docs/arrow.md lists the columns and their types.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import islice
from typing import Any, NamedTuple

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError("ebpfwire.arrow needs the arrow extra (pyarrow, numpy): "
                      "pip install '.[arrow]' in a checkout of ebpfwire") from error

from ebpfwire.capture import CaptureReader, LostRecord, SampleRecord, resync_error
from ebpfwire.capture.bulk import Intake
from ebpfwire.collect import fewer_collections
from ebpfwire.columnar import rowcontext
from ebpfwire.columnar.arguments import (
    ARG_TYPE,
    NAME_TYPE,
    Arguments,
    distinct,
    family_name,
    safe_text,
)
from ebpfwire.columnar.rowcontext import ContextIndex, StreamContext
from ebpfwire.wire import names
from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.catalogue import (
    EVENT_ARGS,
    SPECIAL_EVENTS,
    check_arch,
    event_name,
    expected_tags,
    failed_rows,
    find_arg,
)
from ebpfwire.wire.decoder import short_header, walk_args
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import Arg, label_of
from ebpfwire.wire.layouts import Layout, get_layout
from ebpfwire.wire.walker import (
    COLUMN_TAGS,
    ArgvSpans,
    walk_columns,
)

__all__ = ["FLAT_COLUMNS", "batches", "schema", "to_table"]

_ERROR_TYPE = pa.struct([("kind", pa.string()), ("offset", pa.int64()),
                         ("message", pa.string())])
#: One hash of the hash trailer (layout hash): its kind and digest (null: not found).
_HASH_TYPE = pa.struct([("type", pa.uint32()), ("kind", pa.string()), ("digest", pa.string())])
_INT_TYPES = {"Q": pa.uint64(), "L": pa.uint32(), "I": pa.uint32(), "H": pa.uint16(),
              "B": pa.uint8(), "q": pa.int64(), "l": pa.int32(), "i": pa.int32(),
              "h": pa.int16(), "b": pa.int8()}
_NP_CODES = {"Q": "<u8", "L": "<u4", "I": "<u4", "H": "<u2", "B": "u1", "q": "<i8",
             "l": "<i4", "i": "<i4", "h": "<i2", "b": "i1"}

_TEXT_TAGS = frozenset(int(t) for t in ArgType if Arg(t, 0).text is not None)


def _fed_by(*roles: str, text: bool = False) -> dict[str, tuple[int, int]]:
    """Event name -> (argument index, tag) of its first argument with one of ``roles``
    (the catalogue's); with ``text``, only arguments whose tag has a symbolic text."""
    table = {}
    for name in EVENT_ARGS:
        found = next(filter(None, (find_arg(name, role) for role in roles)), None)
        if found is not None and (not text or found[1] in _TEXT_TAGS):
            table[name] = found
    return table


#: Flat columns: which argument feeds each, by event name: (argument index, tag it must
#: have), derived from the catalogue's roles. A row whose event is not listed, or whose
#: argument is missing or of another type, has null there.
FLAT_COLUMNS: dict[str, dict[str, tuple[int, int]]] = {
    # a file path; for socket-address calls the AF_UNIX socket path
    "path": _fed_by("path", "mount_target", "address"),
    "fd": _fed_by("fd"),   # the file descriptor the call acts on
    "argv": _fed_by("argv"),
    "sockaddr": _fed_by("address", "remote"),   # feeds family, addr and port
    "domain": _fed_by("domain"),   # socket(2)'s domain also feeds family
    # the symbolic text of the call's flags word (fchownat's is a plain INT_T: none)
    "flags": _fed_by("flags", "type", text=True),
}
_FLAT_FIELDS = [("path", pa.string()), ("fd", pa.int32()), ("argv", pa.list_(pa.string())),
                ("family", NAME_TYPE), ("addr", pa.string()), ("port", pa.uint16()),
                ("flags", NAME_TYPE)]
"""The flat columns as the schema has them (``sockaddr`` feeds family, addr and port,
``domain`` family too)."""



def _header_fields(layout: Layout) -> list[tuple[str, str, int]]:
    """(name, struct code, offset) of each header field, from the layout's format."""
    fields, offset = [], 0
    codes = []
    fmt = layout.fmt.format.lstrip("<")
    count = ""
    for char in fmt:
        if char.isdigit():
            count += char
        else:
            codes.append((char, int(count or 1)))
            count = ""
    for name, (code, count) in zip(layout.field_names, codes, strict=True):
        width = count if code == "s" else np.dtype(_NP_CODES[code]).itemsize
        fields.append((name, code if code != "s" else f"{count}s", offset))
        offset += width
    return fields


def header_dtype(layout: Layout) -> np.dtype:
    """The layout's header as a numpy record (its fields at their offsets): headers cut
    from many samples at once (:func:`~ebpfwire.columnar.rowcontext.heads`) are read
    through it."""
    fields = _header_fields(layout)
    return np.dtype({
        "names": [name for name, _, _ in fields],
        "formats": [f"S{code[:-1]}" if code.endswith("s") else _NP_CODES[code]
                    for _, code, _ in fields],
        "offsets": [offset for _, _, offset in fields],
        "itemsize": layout.size,
    })


def schema(layout: str | Layout = "classic", context: bool = True) -> pa.Schema:
    """The columns of ``to_table`` for a context layout (docs/arrow.md); with ``context``,
    ending with the process context columns."""
    layout = get_layout(layout)
    columns: list[tuple[str, pa.DataType]] = [
        ("ts", pa.uint64()), ("time", pa.timestamp("ns", tz="UTC")), ("cpu", pa.uint32()),
        ("event_id", pa.uint32()), ("event", pa.dictionary(pa.int32(), pa.string())),
    ]
    for name, code, _ in _header_fields(layout):
        if name in ("ts", "event_id", "argnum", "retval"):
            continue
        columns.append((name, pa.string() if code.endswith("s") else _INT_TYPES[code]))
    if layout.hash_at is not None:
        columns.append(("hashes", pa.list_(_HASH_TYPE)))
    columns += [
        ("retval", pa.int64()), ("errno", pa.string()), ("argnum", pa.uint32()),
        ("args", pa.list_(ARG_TYPE)), *_FLAT_FIELDS,
        ("lost", pa.uint64()), ("errors", pa.list_(_ERROR_TYPE)), ("raw", pa.binary()),
    ]
    if context:
        columns += rowcontext.FIELDS
    return pa.schema(columns)


# --------------------------------------------------------------------------- sources


class _Source:
    """One input: its layout, arch, boot time and records (capture records or raw bytes),
    and where its process context comes from (None: no context columns)."""

    def __init__(self, layout: Layout, arch: str, boot_time_ns: int | None,
                 records: Iterator[Any], name: str | None,
                 context: bool | ContextIndex, reader: CaptureReader | None = None):
        self.layout, self.arch, self.boot_time_ns = layout, arch, boot_time_ns
        self.records = records
        self.name = name     # the capture's name, None for raw samples
        self.context: StreamContext | ContextIndex | None = None
        if isinstance(context, ContextIndex):
            if name is None:
                raise ValueError("a context index answers a capture's samples by file "
                                 "offset: expected a capture, found raw samples")
            self.context = context
        elif context:
            self.context = StreamContext(layout, arch, records if name is not None else None,
                                         reader)


def _sources(source: Any, layout: str | Layout | None, arch: str | None,
             context: bool | ContextIndex) -> Iterator[_Source]:
    if arch is not None:
        check_arch(arch)
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    if isinstance(source, CaptureReader):
        header = source.header
        yield _Source(get_layout(layout or header.layout), arch or header.arch,
                      header.boot_time_ns or None, Intake(source.blocks()),
                      source.name or "a capture", context, source)
        return
    if isinstance(source, list) and source and all(
            isinstance(item, (str, os.PathLike)) for item in source):
        if isinstance(context, ContextIndex) and len(source) > 1:
            raise ValueError(f"a context index is of one capture, found {len(source)}")
        for path in source:
            with CaptureReader(path) as reader:
                yield from _sources(reader, layout, arch, context)
        return
    samples = iter(source)     # bytes-like; build() makes bytes of what is not
    yield _Source(get_layout(layout or "classic"), arch or "x86_64", None, samples, None,
                  context)


# --------------------------------------------------------------------------- batches

MAX_ROWS = 65536  # rows a batch holds by default (about 18 MiB of a realistic capture)


def batches(source: Any, *, layout: str | Layout | None = None, arch: str | None = None,
            strict: bool = False, max_rows: int = MAX_ROWS,
            context: bool | ContextIndex = True) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``max_rows`` rows, streaming through ``source``.

    ``source`` is a capture path, a list of paths, a :class:`CaptureReader`, or an
    iterable of raw sample bytes (then layout and arch default to classic and x86_64;
    for captures to the header's). Lenient (the default): a damaged sample becomes a
    row with ``errors``; strict: the first sample that does not decode raises
    :class:`DecodeError` saying where. All batches of one call share one schema, so
    several captures must share a layout.

    ``context`` (the default): the process context columns, answered as ``decode`` does
    (captures in time order; raw samples in the order given); False leaves them out. A
    :class:`~ebpfwire.columnar.rowcontext.ContextIndex` of the capture (or its slice for a byte
    range, :meth:`~ebpfwire.columnar.rowcontext.ContextIndex.within`) gives them from the index.
    """
    for batch, _ in _batches(source, layout, arch, strict, max_rows, context, []):
        yield batch


def located_batches(source: Any, *, layout: str | Layout | None = None,
                    arch: str | None = None, strict: bool = False, max_rows: int = MAX_ROWS,
                    context: bool | ContextIndex = True, arguments: bool = True
                    ) -> Iterator[tuple[pa.RecordBatch, np.ndarray | None]]:
    """:func:`batches`, each with the file offset of every row (int64; None for raw
    samples): for the commands whose messages say where a row is in its capture. Without
    ``arguments`` the ``args`` column and the flat columns are null (the arguments are
    still walked: ``errors`` is the same), for commands that only count."""
    yield from _batches(source, layout, arch, strict, max_rows, context, [], arguments)


def _batches(source: Any, layout: str | Layout | None, arch: str | None, strict: bool,
             max_rows: int, context: bool | ContextIndex, schemas: list[pa.Schema],
             arguments: bool = True) -> Iterator[tuple[pa.RecordBatch, np.ndarray | None]]:
    """:func:`located_batches`, noting each source's schema in ``schemas``: a capture
    without a row still has its layout's columns."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, found {max_rows}")
    first: Layout | None = None
    for src in _sources(source, layout, arch, context):
        if first is None:
            first = src.layout
        elif src.layout is not first:
            raise ValueError(f"captures of one table must share a context layout: expected "
                             f"{first.name}, found {src.layout.name}")
        builder = _BatchBuilder(src, strict, arguments)
        schemas.append(builder.schema)
        while True:
            chunk = _chunk(src, max_rows)
            if chunk is None:
                break
            batch = builder.build(*chunk[:-1])
            if batch is not None:
                yield batch, chunk[-1]


def _chunk(src: _Source, max_rows: int) -> tuple | None:
    """The next rows of ``src`` as (the samples as one buffer and the bounds of each in it,
    their cpus, their file offsets, lost records as (row, cpu, count), the samples' context
    answers or None, the resynchronised records as (row, error), every row's file offset or
    None); None at the end. A
    capture's rows come as a :class:`~ebpfwire.capture.bulk.RecordBlock` (columns): no
    record object and no bytes object is made per sample where the capture is clean; raw
    samples are joined once."""
    context = src.context
    if src.name is None:
        datas = list(islice(src.records, max_rows))
        if not datas:
            return None
        if not set(map(type, datas)) <= {bytes}:
            datas = [data if type(data) is bytes else bytes(data) for data in datas]
        lengths = np.fromiter(map(len, datas), np.int64, len(datas))
        ends = np.cumsum(lengths)
        payload = b"".join(datas), ends - lengths, ends
        ids = (None if context is None
               else context.answer(*payload))  # type: ignore[union-attr]
        return payload, None, None, [], ids, [], None
    block = (context.take(max_rows) if isinstance(context, StreamContext)
             else src.records.take(max_rows))
    if not len(block):
        return None
    samples = block.samples
    cpus, offsets = block.cpus, block.offsets
    rows_at = offsets
    buf, begins, ends = block.payloads()
    lost: list[tuple[int, int, int]] = []
    if not samples.all():
        rows = np.flatnonzero(~samples)
        lost = list(zip(rows.tolist(), cpus[rows].tolist(), block.counts[rows].tolist(),
                        strict=True))
        begins, ends = begins[samples], ends[samples]
        cpus, offsets = cpus[samples], offsets[samples]
    marks = [(row, resync_error((SampleRecord if block.samples[row] else LostRecord)(
        0, 0, int(block.offsets[row]), int(block.resync[row]))))
        for row in np.flatnonzero(block.resync >= 0).tolist()]
    ids = (None if context is None else context.taken_ids()
           if isinstance(context, StreamContext) else context.ids_at(offsets))
    return (buf, begins, ends), cpus, offsets, lost, ids, marks, rows_at


class Samples(NamedTuple):
    """A chunk of a capture's samples as :func:`answered_samples` gives them."""

    batch: pa.RecordBatch | None   # a row a sample, no argument columns; None: no sample
    damaged: np.ndarray     # decoded with errors (not those found by scanning after
                            # damage: the reader reports the damage)
    ids: np.ndarray         # the answers of the caller's stream
    lengths: np.ndarray     # in bytes
    lost: list              # the chunk's LOST records: (row, cpu, count), rows counted
                            # with the samples'


def answered_samples(reader: CaptureReader, stream: StreamContext, layout: Layout, arch: str,
                     max_rows: int = MAX_ROWS) -> Iterator[Samples]:
    """A capture's samples, in file order, as a caller that counts events needs them
    (lenient), with their answers from ``stream`` (made by the caller over the reader's
    blocks with its own enricher: ``ps``'s tree nodes)."""
    header = reader.header
    src = _Source(layout, arch, header.boot_time_ns or None, iter(()),
                  reader.name or "a capture", False, reader)
    builder = _BatchBuilder(src, strict=False, arguments=False)
    src.context = stream   # (after the builder: the answers are the caller's, not columns)
    while (chunk := _chunk(src, max_rows)) is not None:
        payload, _, offsets, lost, ids, _, _ = chunk
        batch = builder.build(payload, None, offsets, [], None, [])   # None: LOST records only
        damaged = (np.zeros(0, bool) if batch is None else
                   batch.column("errors").is_valid().to_numpy(zero_copy_only=False))
        yield Samples(batch, damaged, ids, payload[2] - payload[1], lost)


def to_table(source: Any, *, layout: str | Layout | None = None, arch: str | None = None,
             strict: bool = False, context: bool | ContextIndex = True) -> pa.Table:
    """The whole of ``source`` as one table (see :func:`batches` for the arguments).
    Garbage collection is tuned while it runs (:func:`ebpfwire.collect.fewer_collections`).
    A capture of typed events (``ebpfwire run -o``) gives its struct's columns instead."""
    from ebpfwire.columnar.btfevents import is_typed, typed_table

    if is_typed(source):
        return typed_table(source)
    schemas: list[pa.Schema] = []
    with fewer_collections():
        parts = [batch for batch, _ in _batches(source, layout, arch, strict, MAX_ROWS,
                                                 context, schemas)]
    if not parts:
        return (schemas[0] if schemas else
                schema(layout or "classic", context is not False)).empty_table()
    return pa.Table.from_batches(parts)


# --------------------------------------------------------------------------- one batch


class _BatchBuilder:
    """Builds record batches for one source (its layout, arch, boot time)."""

    def __init__(self, src: _Source, strict: bool, arguments: bool = True):
        self.layout, self.arch, self.strict = src.layout, src.arch, strict
        self.arguments = arguments   # False: ``args`` and the flat columns left null
        self.boot_time_ns = src.boot_time_ns
        self.name = src.name
        self.seen = 0        # samples in the batches before this one
        self.fields = _header_fields(self.layout)
        # the hash field's byte offset: samples where it is 1 end with a hash trailer,
        # read by the walker (row by row) into the hashes column
        self.hash_offset = next((offset for name, _, offset in self.fields if name == "hash"),
                                None)
        self.row_hashes: dict[int, list] = {}
        self.dtype = header_dtype(self.layout)
        self.values = None if src.context is None else src.context.values
        self.schema = schema(self.layout, self.values is not None)
        #: the catalogue's event names by id (ids past the last count as the last plus one)
        self.event_names = {event_id: event_name(event_id, self.arch)
                            for event_id in [*range(1024), *SPECIAL_EVENTS]}
        self.flat_lut = {column: self._lut(table) for column, table in FLAT_COLUMNS.items()}

    def _lut(self, table: dict[str, tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """By event id on this arch: (argument index, tag) of ``table`` (-1: none)."""
        index = np.full(max(self.event_names) + 2, -1, np.int64)
        tags = np.zeros(len(index), np.int64)
        for event_id, name in self.event_names.items():
            if name in table:
                index[event_id], tags[event_id] = table[name]
        return index, tags

    # -- the walk

    def _templates(self, event_ids: np.ndarray, argnums: np.ndarray,
                   ok: np.ndarray) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """Groups of rows whose expected tags :func:`walk_columns` reads: (tags, rows)."""
        keys = (event_ids.astype(np.int64) << 32) | argnums
        unique, inverse = distinct(np.where(ok, keys, -1))
        groups = []
        for number, key in enumerate(unique):
            if key < 0:
                continue
            event_id, argc = key >> 32, key & 0xFFFFFFFF
            tags = expected_tags(event_id, self.arch, argc) if argc else ()
            if tags is not None and all(tag in COLUMN_TAGS for tag in tags):
                groups.append((tags, np.flatnonzero(inverse == number)))
        return groups

    def _walk(self, joined: bytes, begins: np.ndarray, ends: np.ndarray, rows: np.ndarray,
              argnums: np.ndarray, event_ids: np.ndarray,
              file_offsets: list | None) -> tuple[list, list[int], list]:
        """The given rows' arguments as one flat list, each row's count, and the damage
        (each row's bytes cut from the joined samples)."""
        flat: list = []
        counts = []
        count = counts.append
        errors: list = []
        mark = 0
        for index, begin, end, argc, event_id in zip(
                rows.tolist(), begins[rows].tolist(), ends[rows].tolist(),
                argnums[rows].tolist(), event_ids[rows].tolist(), strict=True):
            damage = self._row_args(joined[begin:end], argc, event_id, flat, file_offsets,
                                    index)
            if damage:
                errors.append((index, damage))
            count((len(flat) - mark) >> 1)
            mark = len(flat)
        return flat, counts, errors

    def _row_args(self, data: bytes, argc: int, event_id: int, flat: list, file_offsets: Any,
                  index: int) -> list[DecodeError] | None:
        """A sample walk_columns did not take, by the decoder's rule (walk_args): its
        damage; strict raises, saying which sample."""
        damage = None if self.strict else []
        try:
            if len(data) < self.layout.size:
                raise short_header(self.layout, len(data))
            hashes = None if self.hash_offset is None or data[self.hash_offset] != 1 else []
            damage = walk_args(data, self.layout.size, argc, event_id, self.arch, flat,
                               damage, hashes)
            if hashes is not None:
                self.row_hashes[index] = hashes
        except DecodeError as error:
            if damage is not None:   # lenient: only a short header raises
                return [error]
            where = (f"sample {self.seen + index} of the input" if self.name is None
                     else f"the sample at file offset {file_offsets[index]} of {self.name}")
            raise DecodeError(error.kind, error.offset, error.expected,
                              f"{error.found} (in {where})") from error
        return damage

    # -- columns

    def build(self, payload: tuple[bytes, np.ndarray, np.ndarray], cpus: np.ndarray | None,
              file_offsets: np.ndarray | None, lost: list[tuple[int, int, int]],
              ids: np.ndarray | None,
              marks: list[tuple[int, DecodeError]]) -> pa.RecordBatch | None:
        """One batch from a chunk (see :func:`_chunk`): the samples are
        ``joined[begins[i]:ends[i]]`` of ``payload`` (begins in order, the samples not
        overlapping: the bytes between them are not read); None if none is a row."""
        joined, begins, ends = payload
        count = len(begins)
        if not count and not lost:
            return None
        cpu = None if cpus is None else pa.array(cpus, pa.uint32())
        size = self.layout.size
        lengths = ends - begins
        short = lengths < size
        header = np.frombuffer(rowcontext.heads(joined, begins, ends, size), self.dtype,
                               count) if count else np.zeros(0, self.dtype)
        header = {name: np.ascontiguousarray(header[name]) for name, _, _ in self.fields}
        bad_rows: set[int] = set()
        arguments, damage = self._arguments(joined, begins, ends, header, short,
                                            file_offsets, bad_rows)
        self.seen += count
        columns: dict[str, pa.Array] = {}
        valid_field = {name: lengths >= offset + (int(code[:-1]) if code.endswith("s")
                                                  else np.dtype(_NP_CODES[code]).itemsize)
                       for name, code, offset in self.fields} if short.any() else {}

        def mask(name: str) -> np.ndarray | None:
            return ~valid_field[name] if name in valid_field else None

        for name, code, _ in self.fields:
            values = header[name]
            if code.endswith("s"):
                columns[name] = self._text_column(values, mask(name), bad_rows)
            else:
                columns[name] = pa.array(values, _INT_TYPES[code], mask=mask(name))
        ts = header["ts"]
        if self.boot_time_ns is None:
            columns["time"] = pa.nulls(count, pa.timestamp("ns", tz="UTC"))
        else:
            wall = ts.astype(np.int64) + np.int64(self.boot_time_ns)
            columns["time"] = pa.array(wall, pa.timestamp("ns", tz="UTC"), mask=mask("ts"))
        columns["event"] = self._events(header["event_id"], mask("event_id"))
        columns["errno"] = self._errnos(header["event_id"], header["retval"], mask("retval"))
        if self.arguments:
            columns["args"] = pa.ListArray.from_arrays(
                pa.array(arguments.offsets.astype(np.int32)), arguments.struct())
            self._flat_columns(columns, header["event_id"], arguments, mask("event_id"))
        else:   # (counted, not read: the arguments walked for their damage alone)
            columns["args"] = pa.nulls(count, pa.list_(ARG_TYPE))
            for name, kind in _FLAT_FIELDS:
                columns[name] = pa.nulls(count, kind)
        if self.hash_offset is not None:
            columns["hashes"] = pa.array([self.row_hashes.pop(i, None) for i in range(count)],
                                         pa.list_(_HASH_TYPE))
        columns["errors"] = self._errors(damage, count)
        columns["lost"] = pa.nulls(count, pa.uint64())
        if bad_rows:
            raw: list[bytes | None] = [None] * count
            for row in bad_rows:
                raw[row] = joined[begins[row]:ends[row]]
            columns["raw"] = pa.array(raw, pa.binary())
        else:
            columns["raw"] = pa.nulls(count, pa.binary())
        columns["cpu"] = pa.nulls(count, pa.uint32()) if cpu is None else cpu
        if self.values is not None and ids is not None:
            for (name, _), column in zip(rowcontext.FIELDS, rowcontext.columns(self.values, ids),
                                         strict=True):
                columns[name] = column
        batch = pa.RecordBatch.from_arrays([columns[field.name] for field in self.schema],
                                           schema=self.schema)
        if lost:
            batch = self._with_lost(batch, lost)
        return self._marked(batch, marks) if marks else batch

    def _arguments(self, joined: bytes, starts: np.ndarray, ends: np.ndarray, header: dict,
                   short: np.ndarray, file_offsets: Any,
                   bad_rows: set[int]) -> tuple[Arguments, list]:
        """The batch's :class:`Arguments` and the damage found (sample i is
        ``joined[starts[i]:ends[i]]``, in order).

        Rows whose expected tags are fixed-size payloads and strings are walked a group at
        a time by :func:`walk_columns`; the others, and those it does not take, one by one
        by the walker.
        """
        size, count = self.layout.size, len(starts)
        buf = np.frombuffer(joined, np.uint8)
        counts = np.zeros(count, np.int64)
        fast = np.zeros(count, bool)
        groups = []
        plain = ~short if self.hash_offset is None else ~short & (header["hash"] != 1)
        for template, rows in self._templates(header["event_id"], header["argnum"], plain):
            ok, values = walk_columns(buf, starts[rows], ends[rows], starts[rows] + size,
                                      template)
            if not ok.all():
                rows = rows[ok]
                values = [(v[0][ok], v[1][ok]) if type(v) is tuple else
                          v.rows(ok) if type(v) is ArgvSpans else v[ok] for v in values]
            fast[rows] = True
            counts[rows] = len(template)
            groups.append((template, rows, values))
        slow_rows = np.flatnonzero(~fast)
        flat, slow_counts, damage = self._walk(joined, starts, ends, slow_rows,
                                               header["argnum"], header["event_id"],
                                               file_offsets)
        bad_rows.update(index for index, _ in damage)
        counts[slow_rows] = slow_counts
        offsets = np.zeros(count + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        slow_offsets = np.zeros(len(slow_rows) + 1, np.int64)
        np.cumsum(slow_counts, out=slow_offsets[1:])
        slow_at = np.repeat(offsets[slow_rows] - slow_offsets[:-1],
                            slow_counts) + np.arange(len(flat) >> 1)
        return Arguments(joined, offsets, groups, slow_at, flat, bad_rows), damage

    def _text_column(self, values: np.ndarray, null: np.ndarray | None,
                     bad_rows: set[int]) -> pa.Array:
        """A fixed char[] header field: text before the first NUL, decoded once per value."""
        if not len(values):
            return pa.array([], pa.string())
        unique, inverse = distinct(values)
        texts, bad = [], []
        for raw in unique:
            text, ok = safe_text(raw.partition(b"\0")[0].decode("utf-8", "surrogateescape"))
            texts.append(text)
            bad.append(not ok)
        if any(bad):
            bad_rows.update(np.flatnonzero(np.asarray(bad)[inverse]).tolist())
        column = pa.array(texts, pa.string()).take(pa.array(inverse))
        if null is not None:
            column = pc.if_else(pa.array(null), pa.scalar(None, pa.string()), column)
        return column

    def _events(self, event_ids: np.ndarray, null: np.ndarray | None) -> pa.Array:
        """Event names as ``Event.label`` gives them ("?" when the id was cut off)."""
        unique, inverse = distinct(event_ids)
        labels = [label_of(e, self.arch) for e in unique] + [label_of(None, self.arch)]
        indices = inverse.astype(np.int32)
        if null is not None:
            indices[null] = len(labels) - 1
        return pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(labels, pa.string()))

    def _errnos(self, event_ids: np.ndarray, retvals: np.ndarray,
                null: np.ndarray | None) -> pa.Array:
        failure = failed_rows(event_ids, retvals)
        if null is not None:
            failure &= ~null
        if not failure.any():
            return pa.nulls(len(retvals), pa.string())
        unique, inverse = distinct(np.where(failure, retvals, 0))
        texts = pa.array([names.errno_name(-r) if r < 0 else None for r in unique], pa.string())
        return texts.take(pa.array(inverse))

    def _flat_columns(self, columns: dict, event_ids: np.ndarray, arguments: Arguments,
                      null: np.ndarray | None) -> None:
        """The flat columns (``FLAT_COLUMNS``), gathered by numpy where the field is a number
        and by Arrow's take where it is a text."""
        offsets, tags, total = arguments.offsets, arguments.tags, arguments.total
        counts = np.diff(offsets)
        ids = np.minimum(event_ids, max(self.event_names) + 1)

        def pick(column: str) -> tuple[np.ndarray, np.ndarray]:
            """Each row's position of the argument feeding ``column``, and where it has one
            (elsewhere -1 or past the arguments: masked, clipped where it indexes)."""
            index, want = self.flat_lut[column]
            index, want = index[ids], want[ids]
            ok = (index >= 0) & (index < counts)
            if null is not None:
                ok &= ~null
            position = offsets[:-1] + index
            if total:
                ok &= tags[np.minimum(position, total - 1)] == want
            return position, ok

        def take(values: pa.Array, picked: tuple[np.ndarray, np.ndarray]) -> pa.Array:
            position, ok = picked
            return values.take(pa.array(position, mask=~ok))

        def number(values: np.ndarray, present: np.ndarray, picked: tuple, kind: pa.DataType):
            position, ok = picked
            if not len(values):
                return pa.nulls(len(position), kind)
            position = np.minimum(position, len(values) - 1)
            return pa.array(values[position], kind, mask=~(ok & present[position]))

        path, sock, domain = pick("path"), pick("sockaddr"), pick("domain")
        # a path is an argument's text, or its sockaddr's path: one take of the two
        position, ok = path
        in_path = arguments.is_sock[np.minimum(position, total - 1)] if total else ok
        columns["path"] = take(pa.concat_arrays([arguments.text, arguments.path]),
                               (np.where(in_path, position + total, position), ok))
        columns["fd"] = number(arguments.ints, arguments.is_int, pick("fd"), pa.int32())
        columns["argv"] = take(arguments.strings, pick("argv"))
        columns["family"] = self._family(arguments, sock, domain)
        columns["addr"] = take(arguments.addr, sock)
        columns["port"] = number(arguments.port, arguments.has_port, sock, pa.uint16())
        columns["flags"] = take(arguments.flags, pick("flags"))

    @staticmethod
    def _family(arguments: Arguments, sock: tuple, domain: tuple) -> pa.Array:
        """The flat ``family``: the sockaddr's family name, else socket(2)'s domain text;
        a dictionary of the distinct names in order of first use, as Arrow's
        ``dictionary_encode`` of the names would give it."""
        position, ok = sock
        total = len(arguments.tags)
        if not total:
            return pa.nulls(len(position), NAME_TYPE)
        in_sock = ok & arguments.is_sock[np.minimum(position, total - 1)]
        flags, flag_index, has_flag = arguments.flag_codes
        where, found = domain
        where = np.minimum(where, total - 1)
        in_text = found & has_flag[where] & ~in_sock
        # a family by its number, a domain text by 2**32 + its index in the flags' dictionary
        codes = np.where(in_sock, arguments.family[np.minimum(position, total - 1)],
                         flag_index[where].astype(np.int64) + (1 << 32))
        rows = np.flatnonzero(in_sock | in_text)
        unique, inverse = distinct(codes[rows])
        texts = flags.dictionary.to_pylist() if in_text.any() else []
        first: dict[str, int] = {}
        number = [first.setdefault(family_name(code) if code < 1 << 32
                                   else texts[code - (1 << 32)], len(first))
                  for code in unique]
        indices = np.zeros(len(position), np.int32)
        indices[rows] = np.asarray(number, np.int32)[inverse] if len(rows) else 0
        present = np.zeros(len(position), bool)
        present[rows] = True
        return pa.DictionaryArray.from_arrays(pa.array(indices, mask=~present),
                                              pa.array(list(first), pa.string()))

    @staticmethod
    def _marked(batch: pa.RecordBatch, marks: list) -> pa.RecordBatch:
        """The batch with each resynchronised record's error in its row (strict too, as
        ``decode`` shows such an event with its error)."""
        at = batch.schema.get_field_index("errors")
        errors = batch.column(at).to_pylist()
        for row, error in marks:
            errors[row] = [*(errors[row] or ()), error.to_dict()]
        field = batch.schema.field(at)
        return batch.set_column(at, field, pa.array(errors, field.type))

    @staticmethod
    def _errors(damage: list, count: int) -> pa.Array:
        if not damage:
            return pa.nulls(count, pa.list_(_ERROR_TYPE))
        out: list = [None] * count
        for index, errors in damage:
            out[index] = [{"kind": e.kind, "offset": e.offset, "message": str(e)}
                          for e in errors]
        return pa.array(out, pa.list_(_ERROR_TYPE))

    @staticmethod
    def _with_lost(batch: pa.RecordBatch, lost: list[tuple[int, int, int]]) -> pa.RecordBatch:
        """Spread the sample rows over the whole batch; lost records fill their rows."""
        total = len(batch) + len(lost)
        at = np.array([row for row, _, _ in lost], np.int64)
        is_sample = np.ones(total, bool)
        is_sample[at] = False
        index = pa.array(np.maximum(np.cumsum(is_sample) - 1, 0), mask=~is_sample)
        columns = [column.take(index) if len(batch) else pa.nulls(total, column.type)
                   for column in batch.columns]
        names_ = batch.schema.names
        counts = np.zeros(total, np.uint64)
        counts[at] = [count for _, _, count in lost]
        columns[names_.index("lost")] = pa.array(counts, mask=is_sample)
        cpus = np.zeros(total, np.uint32)
        cpus[is_sample] = batch.column(names_.index("cpu")).to_numpy(zero_copy_only=False)
        cpus[at] = [cpu for _, cpu, _ in lost]
        columns[names_.index("cpu")] = pa.array(cpus)
        return pa.RecordBatch.from_arrays(columns, schema=batch.schema)
