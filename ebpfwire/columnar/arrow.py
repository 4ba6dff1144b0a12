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
from typing import Any

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError("ebpfwire.arrow needs the arrow extra (pyarrow, numpy): "
                      "pip install '.[arrow]' in a checkout of ebpfwire") from error

from ebpfwire.capture import CaptureReader, LostRecord, SampleRecord, resync_error
from ebpfwire.collect import fewer_collections
from ebpfwire.columnar import rowcontext
from ebpfwire.columnar.rowcontext import ContextIndex, StreamContext
from ebpfwire.wire import names
from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.catalogue import (
    EVENT_ARGS,
    SPECIAL_EVENTS,
    check_arch,
    event_name,
    expected_tags,
    find_arg,
)
from ebpfwire.wire.decoder import short_header, walk_args
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.events import TEXT_TAGS, Arg, SockAddr, label_of
from ebpfwire.wire.layouts import Layout, get_layout
from ebpfwire.wire.walker import (
    COLUMN_TAGS,
    STRING_TAGS,
    WIDTHS,
    sockaddr,
    walk_columns,
)

__all__ = ["FLAT_COLUMNS", "batches", "schema", "to_table"]

_ARG_TYPE = pa.struct([
    ("type", pa.string()),
    ("value", pa.int64()),
    ("text", pa.string()),
    ("strings", pa.list_(pa.string())),
    ("family", pa.string()),
    ("addr", pa.string()),
    ("port", pa.uint16()),
    ("path", pa.string()),
    ("flowinfo", pa.uint32()),
    ("scope_id", pa.uint32()),
    ("flags", pa.string()),
])
_ERROR_TYPE = pa.struct([("kind", pa.string()), ("offset", pa.int64()),
                         ("message", pa.string())])
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

_TYPE_NAMES = pa.array([ArgType(t).name if t in ArgType._value2member_map_ else f"tag_{t}"
                        for t in range(256)])
_TYPES = {int(t): ArgType(t) for t in ArgType}
#: By tag byte: an integer payload, a string payload, an integer with a symbolic text.
_IS_INT = np.array([bool(WIDTHS[t]) for t in range(256)])
_IS_STR = np.array([t in STRING_TAGS for t in range(256)])
_HAS_TEXT = np.array([t in TEXT_TAGS for t in range(256)])


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
    columns += [
        ("retval", pa.int64()), ("errno", pa.string()), ("argnum", pa.uint32()),
        ("args", pa.list_(_ARG_TYPE)),
        ("path", pa.string()), ("fd", pa.int32()), ("argv", pa.list_(pa.string())),
        ("family", pa.string()), ("addr", pa.string()), ("port", pa.uint16()),
        ("flags", pa.string()),
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
                      header.boot_time_ns or None, iter(source), source.name or "a capture",
                      context, source)
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


def batches(source: Any, *, layout: str | Layout | None = None, arch: str | None = None,
            strict: bool = False, max_rows: int = 65536,
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
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, found {max_rows}")
    first: Layout | None = None
    for src in _sources(source, layout, arch, context):
        if first is None:
            first = src.layout
        elif src.layout is not first:
            raise ValueError(f"captures of one table must share a context layout: expected "
                             f"{first.name}, found {src.layout.name}")
        builder = _BatchBuilder(src, strict)
        while True:
            chunk = _chunk(src, max_rows)
            if chunk is None:
                break
            batch = builder.build(*chunk)
            if batch is not None:
                yield batch


def _chunk(src: _Source, max_rows: int) -> tuple | None:
    """The next rows of ``src`` as (sample bytes, their cpus, their file offsets, lost
    records as (row, cpu, count), the samples' context answers or None, the resynchronised
    records as (row, error)); None at the end.
    Record objects are dropped at once: a batch of them kept alive makes the garbage
    collector walk them again and again."""
    context = src.context
    if src.name is None:
        datas = list(islice(src.records, max_rows))
        if not datas:
            return None
        if not set(map(type, datas)) <= {bytes}:
            datas = [data if type(data) is bytes else bytes(data) for data in datas]
        ids = None if context is None else context.answer(datas)  # type: ignore[union-attr]
        return datas, None, None, [], ids, []
    datas, cpus, offsets, lost, marks = [], [], [], [], []
    data, cpu, offset = datas.append, cpus.append, offsets.append
    seen = False
    records = (context.take(max_rows) if isinstance(context, StreamContext)
               else islice(src.records, max_rows))
    for record in records:   # at most max_rows rows
        seen = True
        kind = type(record)
        if kind is SampleRecord:
            data(record.data)
            cpu(record.cpu)
            offset(record.offset)
            if record.resync is not None:  # found by scanning after damage: never clean
                marks.append((len(datas) + len(lost) - 1, resync_error(record)))
        elif kind is LostRecord:
            lost.append((len(datas) + len(lost), record.cpu, record.count))
            if record.resync is not None:
                marks.append((len(datas) + len(lost) - 1, resync_error(record)))
    if not seen:
        return None
    return (datas, cpus, offsets, lost, None if context is None else context.ids_at(offsets),
            marks)


def to_table(source: Any, *, layout: str | Layout | None = None, arch: str | None = None,
             strict: bool = False, context: bool | ContextIndex = True) -> pa.Table:
    """The whole of ``source`` as one table (see :func:`batches` for the arguments).
    Garbage collection is tuned while it runs (:func:`ebpfwire.collect.fewer_collections`)."""
    with fewer_collections():
        parts = list(batches(source, layout=layout, arch=arch, strict=strict,
                             context=context))
    if not parts:
        return schema(layout or "classic", context is not False).empty_table()
    return pa.Table.from_batches(parts)


# --------------------------------------------------------------------------- one batch


def _safe_text(value: str) -> tuple[str, bool]:
    """(valid UTF-8 text, True) or, for bytes that were not UTF-8, (text with U+FFFD, False)."""
    try:
        value.encode("utf-8")
        return value, True
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), False


def _distinct(values: np.ndarray) -> tuple[list, np.ndarray]:
    """The distinct values (as Python values, first seen first) and each item's index among
    them: Arrow's hash table, cheaper than numpy's sort for a batch of a few distinct values."""
    if values.dtype.kind == "S":
        width = values.dtype.itemsize
        array = pa.Array.from_buffers(pa.binary(width), len(values),
                                      [None, pa.py_buffer(np.ascontiguousarray(values))])
    else:
        array = pa.array(values)
    encoded = pc.dictionary_encode(array)
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy()


def _spread(values: pa.Array, where: np.ndarray) -> pa.Array:
    """``values`` placed at the True positions of ``where``, null elsewhere."""
    index = np.cumsum(where) - 1
    return values.take(pa.array(np.maximum(index, 0), mask=~where))


def _strings(values: list, bad_rows: set, rows_of: Any) -> pa.Array:
    """A string array; items that were not UTF-8 get U+FFFD and mark their row in bad_rows."""
    try:
        return pa.array(values, pa.string())
    except (UnicodeEncodeError, pa.ArrowInvalid):
        cleaned = []
        for index, value in enumerate(values):
            if value is not None:
                value, ok = _safe_text(value)
                if not ok:
                    bad_rows.add(rows_of(index))
            cleaned.append(value)
        return pa.array(cleaned, pa.string())


def _gather_texts(joined: bytes, spans: list[tuple[np.ndarray, np.ndarray]], bad_rows: set,
                  rows_of: Any) -> pa.Array:
    """The strings at ``joined[begin:stop]`` for each (begins, stops) of ``spans``, copied
    by Arrow: spans of one argument of one group follow each other in ``joined``, so they
    and the gaps between them are the items of one binary array over it, and a take of
    every other item copies out the strings."""
    pieces = []
    whole = pa.py_buffer(joined)
    for begins, stops in spans:
        if len(begins):
            bounds = np.empty(2 * len(begins) + 1, np.int32)
            bounds[0:-1:2] = begins
            bounds[1::2] = stops
            bounds[-1] = stops[-1]
            items = pa.BinaryArray.from_buffers(pa.binary(), len(bounds) - 1,
                                                [None, pa.py_buffer(bounds), whole])
            pieces.append(items.take(pa.array(np.arange(0, len(bounds) - 1, 2))))
    texts = pa.concat_arrays(pieces) if pieces else pa.array([], pa.binary())
    try:
        return texts.cast(pa.string())
    except pa.ArrowInvalid:   # bytes that are not UTF-8: the careful way
        return _strings([item.decode("utf-8", "surrogateescape")
                         for item in texts.to_pylist()], bad_rows, rows_of)


def _sockaddr_fields(joined: bytes, spans: list[tuple[np.ndarray, np.ndarray]],
                     bad_rows: set, rows_of: Any) -> dict[str, pa.Array]:
    """The argument fields of the sockaddrs at ``joined[begin:stop]``, parsed once per
    distinct address by the walker's :func:`~ebpfwire.wire.walker.sockaddr`."""
    values = [sockaddr(joined[begin:stop]) for begins, stops in spans
              for begin, stop in zip(begins.tolist(), stops.tolist(), strict=True)]
    return _sockaddr_columns(values, bad_rows, rows_of)


def _sockaddr_columns(values: list, bad_rows: set, rows_of: Any) -> dict[str, pa.Array]:
    """The argument fields of sockaddr values (None: not a sockaddr)."""
    family_name = names.sock_family_name
    return {
        "family": pa.array([None if v is None else family_name(v.family) or str(v.family)
                            for v in values], pa.string()),
        "addr": pa.array([None if v is None else v.addr for v in values], pa.string()),
        "port": pa.array([None if v is None else v.port for v in values], pa.uint16()),
        "path": _strings([None if v is None else v.path for v in values], bad_rows, rows_of),
        "flowinfo": pa.array([None if v is None else v.flowinfo for v in values], pa.uint32()),
        "scope_id": pa.array([None if v is None else v.scope_id for v in values], pa.uint32()),
    }


class _BatchBuilder:
    """Builds record batches for one source (its layout, arch, boot time)."""

    def __init__(self, src: _Source, strict: bool):
        self.layout, self.arch, self.strict = src.layout, src.arch, strict
        self.boot_time_ns = src.boot_time_ns
        self.name = src.name
        self.seen = 0        # samples in the batches before this one
        self.fields = _header_fields(self.layout)
        self.dtype = np.dtype({
            "names": [name for name, _, _ in self.fields],
            "formats": [f"S{code[:-1]}" if code.endswith("s") else _NP_CODES[code]
                        for _, code, _ in self.fields],
            "offsets": [offset for _, _, offset in self.fields],
            "itemsize": self.layout.size,
        })
        self.values = None if src.context is None else src.context.values
        self.schema = schema(self.layout, self.values is not None)
        self.flat_lut = {column: self._lut(table) for column, table in FLAT_COLUMNS.items()}

    def _lut(self, table: dict[str, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """event id -> (argument index, tag) on this arch."""
        out = {}
        for event_id in list(range(1024)) + list(SPECIAL_EVENTS):
            name = event_name(event_id, self.arch)
            if name in table:
                out[event_id] = table[name]
        return out

    # -- the walk

    def _templates(self, event_ids: np.ndarray, argnums: np.ndarray,
                   ok: np.ndarray) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """Groups of rows whose expected tags :func:`walk_columns` reads: (tags, rows)."""
        keys = (event_ids.astype(np.int64) << 32) | argnums
        unique, inverse = _distinct(np.where(ok, keys, -1))
        groups = []
        for number, key in enumerate(unique):
            if key < 0:
                continue
            event_id, argc = key >> 32, key & 0xFFFFFFFF
            tags = expected_tags(event_id, self.arch, argc) if argc else ()
            if tags is not None and all(tag in COLUMN_TAGS for tag in tags):
                groups.append((tags, np.flatnonzero(inverse == number)))
        return groups

    def _walk(self, datas: list[bytes], rows: list[int], argnums: list[int],
              event_ids: list[int], file_offsets: list | None) -> tuple[list, list[int], list]:
        """The given rows' arguments as one flat list, each row's count, and the damage."""
        flat: list = []
        counts = []
        count = counts.append
        errors: list = []
        mark = 0
        for index in rows:
            damage = self._row_args(datas[index], argnums[index], event_ids[index], flat,
                                    file_offsets, index)
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
            walk_args(data, self.layout.size, argc, event_id, self.arch, flat, damage)
        except DecodeError as error:
            if damage is not None:   # lenient: only a short header raises
                return [error]
            where = (f"sample {self.seen + index} of the input" if self.name is None
                     else f"the sample at file offset {file_offsets[index]} of {self.name}")
            raise DecodeError(error.kind, error.offset, error.expected,
                              f"{error.found} (in {where})") from error
        return damage

    # -- columns

    def build(self, datas: list[bytes], cpus: list[int] | None, file_offsets: list[int] | None,
              lost: list[tuple[int, int, int]], ids: np.ndarray | None,
              marks: list[tuple[int, DecodeError]]) -> pa.RecordBatch | None:
        """One batch from a chunk (see :func:`_chunk`); None if none is a row."""
        if not datas and not lost:
            return None
        cpu = None if cpus is None else pa.array(cpus, pa.uint32())
        count = len(datas)
        size = self.layout.size
        lengths = np.fromiter(map(len, datas), np.int64, count)
        short = lengths < size
        if short.any():
            joined = b"".join(d[:size] if len(d) >= size else d + bytes(size - len(d))
                              for d in datas)
        else:
            heads = pc.binary_slice(pa.array(datas, pa.binary()), 0, size)
            joined = heads.buffers()[2]
        header = np.frombuffer(joined, self.dtype, count) if count else np.zeros(0, self.dtype)
        header = {name: np.ascontiguousarray(header[name]) for name, _, _ in self.fields}
        bad_rows: set[int] = set()
        args, offsets, tags, damage = self._arguments(datas, lengths, header, short, file_offsets,
                                                      bad_rows)
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
        columns["args"] = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), args)
        self._flat_columns(columns, header["event_id"], offsets, tags, args, mask("event_id"))
        columns["errors"] = self._errors(damage, count)
        columns["lost"] = pa.nulls(count, pa.uint64())
        if bad_rows:
            keep = np.zeros(count, bool)
            keep[list(bad_rows)] = True
            columns["raw"] = pa.array([d if k else None for d, k in zip(datas, keep.tolist(),
                                                                         strict=True)],
                                      pa.binary())
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

    def _arguments(self, datas: list[bytes], lengths: np.ndarray, header: dict,
                   short: np.ndarray, file_offsets: Any, bad_rows: set[int]) -> tuple:
        """The batch's arguments as a struct array, with each row's offset into it, their
        tags and the damage found.

        Rows whose expected tags are fixed-size payloads and strings are walked a group at
        a time by :func:`walk_columns`; the others, and those it does not take, one by one
        by the walker.
        """
        size, count = self.layout.size, len(datas)
        joined = b"".join(datas)
        buf = np.frombuffer(joined, np.uint8)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        counts = np.zeros(count, np.int64)
        fast = np.zeros(count, bool)
        groups = []
        for template, rows in self._templates(header["event_id"], header["argnum"], ~short):
            ok, values = walk_columns(buf, starts[rows], ends[rows], starts[rows] + size,
                                      template)
            if not ok.all():
                rows = rows[ok]
                values = [(v[0][ok], v[1][ok]) if type(v) is tuple else v[ok] for v in values]
            fast[rows] = True
            counts[rows] = len(template)
            groups.append((template, rows, values))
        slow_rows = np.flatnonzero(~fast)
        flat, slow_counts, damage = self._walk(datas, slow_rows.tolist(),
                                               header["argnum"].tolist(),
                                               header["event_id"].tolist(), file_offsets)
        bad_rows.update(index for index, _ in damage)
        counts[slow_rows] = slow_counts
        offsets = np.zeros(count + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        total = int(offsets[-1])

        def row_of(position: int) -> int:
            return int(np.searchsorted(offsets, position, "right") - 1)

        tags = np.zeros(total, np.uint8)
        ints = np.zeros(total, np.int64)
        is_int = np.zeros(total, bool)
        text_at, spans, sock_at, sock_spans = [], [], [], []
        for template, rows, values in groups:
            base = offsets[rows]
            for index, (tag, value) in enumerate(zip(template, values, strict=True)):
                at = base + index
                tags[at] = tag
                if WIDTHS[tag]:
                    ints[at] = value
                    is_int[at] = True
                elif tag == ArgType.SOCKADDR_T:
                    sock_at.append(at)
                    sock_spans.append(value)
                else:
                    text_at.append(at)
                    spans.append(value)
        slow_count = len(flat) >> 1
        slow_offsets = np.zeros(len(slow_rows) + 1, np.int64)
        np.cumsum(slow_counts, out=slow_offsets[1:])
        slow_at = np.repeat(offsets[slow_rows] - slow_offsets[:-1],
                            slow_counts) + np.arange(slow_count)
        slow_tags = np.asarray(flat[0::2], np.uint8)
        tags[slow_at] = slow_tags
        slow = self._args(slow_tags, flat[1::2], bad_rows,
                          lambda index: row_of(int(slow_at[index])))
        ints[slow_at] = slow.pop("ints")
        is_int[slow_at] = slow.pop("is_int")
        text_at = np.concatenate(text_at) if text_at else np.zeros(0, np.int64)
        texts = _gather_texts(joined, spans, bad_rows,
                              lambda index: row_of(int(text_at[index])))
        source = np.full(total, -1, np.int64)    # where each argument's text comes from
        source[text_at] = np.arange(len(text_at))
        source[slow_at] = len(text_at) + np.arange(slow_count)
        fields = {"type": _TYPE_NAMES.take(pa.array(tags)),
                  "value": pa.array(ints, mask=~is_int),
                  "text": pa.concat_arrays([texts, slow.pop("text")]).take(
                      pa.array(source, mask=source < 0)),
                  "flags": self._flags(tags, ints, is_int)}
        sock_at = np.concatenate(sock_at) if sock_at else np.zeros(0, np.int64)
        sock = _sockaddr_fields(joined, sock_spans, bad_rows,
                                lambda index: row_of(int(sock_at[index])))
        source = np.full(total, -1, np.int64)    # where each argument's other fields come from
        source[sock_at] = np.arange(len(sock_at))
        source[slow_at] = len(sock_at) + np.arange(slow_count)
        source = pa.array(source, mask=source < 0)
        for field in _ARG_TYPE:
            if field.name not in fields:
                column = pa.concat_arrays([sock[field.name] if field.name in sock else
                                           pa.nulls(len(sock_at), field.type),
                                           slow[field.name]])
                fields[field.name] = (pa.nulls(total, field.type) if column.null_count ==
                                      len(column) else column.take(source))
        args = pa.StructArray.from_arrays([fields[f.name] for f in _ARG_TYPE],
                                          fields=list(_ARG_TYPE))
        return args, offsets, tags, damage

    def _text_column(self, values: np.ndarray, null: np.ndarray | None,
                     bad_rows: set[int]) -> pa.Array:
        """A fixed char[] header field: text before the first NUL, decoded once per value."""
        if not len(values):
            return pa.array([], pa.string())
        unique, inverse = _distinct(values)
        texts, bad = [], []
        for raw in unique:
            text, ok = _safe_text(raw.partition(b"\0")[0].decode("utf-8", "surrogateescape"))
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
        unique, inverse = _distinct(event_ids)
        labels = [label_of(e, self.arch) for e in unique] + [label_of(None, self.arch)]
        indices = inverse.astype(np.int32)
        if null is not None:
            indices[null] = len(labels) - 1
        return pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(labels, pa.string()))

    def _errnos(self, event_ids: np.ndarray, retvals: np.ndarray,
                null: np.ndarray | None) -> pa.Array:
        special = np.isin(event_ids, np.asarray(list(SPECIAL_EVENTS), event_ids.dtype))
        failed = (retvals < 0) & ~special
        if null is not None:
            failed &= ~null
        if not failed.any():
            return pa.nulls(len(retvals), pa.string())
        unique, inverse = _distinct(np.where(failed, retvals, 0))
        texts = pa.array([names.errno_name(-r) if r < 0 else None for r in unique], pa.string())
        return texts.take(pa.array(inverse))

    def _args(self, tags: np.ndarray, values: list, bad_rows: set, row_of: Any) -> dict:
        """The fields of the arguments the walker took one by one, from its flat values
        (``ints`` and ``is_int`` as numpy, the others as arrays).

        Values are sorted into columns by their tags with numpy masks; Python touches
        only the rarer argv and sockaddr values one by one.
        """
        n = len(values)
        held = np.empty(n, object)
        held[:] = values
        present = np.not_equal(held, None)
        is_int = _IS_INT[tags] & present
        is_str = _IS_STR[tags] & present
        ints = np.zeros(n, np.int64)
        ints[is_int] = held[is_int].astype(np.int64)
        where_str = np.flatnonzero(is_str)
        texts = _strings(held[is_str].tolist(), bad_rows,
                         lambda index: row_of(int(where_str[index])))
        fields = {"ints": ints, "is_int": is_int, "text": _spread(texts, is_str)}
        argvs = np.flatnonzero(tags == ArgType.STR_ARR_T)
        if len(argvs):
            lists: list = [None] * n
            for index in argvs.tolist():
                items = values[index]
                if items is not None:
                    if not all(item.isascii() for item in items):
                        items = [_safe_text(item)[0] for item in items]
                        if items != list(values[index]):
                            bad_rows.add(row_of(index))
                    lists[index] = items
            fields["strings"] = pa.array(lists, pa.list_(pa.string()))
        else:
            fields["strings"] = pa.nulls(n, pa.list_(pa.string()))
        fields.update(_sockaddr_columns([value if type(value) is SockAddr else None
                                         for value in values], bad_rows, row_of))
        return fields

    @staticmethod
    def _flags(tags: np.ndarray, ints: np.ndarray, is_int: np.ndarray) -> pa.Array:
        """Symbolic text of flag and enum values, made once per distinct (tag, value)."""
        has_text = _HAS_TEXT[tags] & is_int
        if not has_text.any():
            return pa.nulls(len(ints), pa.string())
        values = ints[has_text]
        keys = (tags[has_text].astype(np.int64) << 32) | (values & 0xFFFFFFFF)
        unique, inverse = _distinct(keys)
        first = np.zeros(len(unique), np.int64)
        first[inverse[::-1]] = np.arange(len(inverse))[::-1]    # each key's first row
        texts = pa.array([Arg(_TYPES[tag], value).text for tag, value in
                          zip(tags[has_text][first].tolist(), values[first].tolist(),
                              strict=True)], pa.string())
        return _spread(texts.take(pa.array(inverse)), has_text)

    def _flat_columns(self, columns: dict, event_ids: np.ndarray, offsets: np.ndarray,
                      tags: np.ndarray, args: pa.StructArray, null: np.ndarray | None) -> None:
        counts = np.diff(offsets)
        unique, inverse = _distinct(event_ids)

        def pick(column: str) -> pa.Array:
            """Indices into the batch's arguments of the argument feeding ``column``."""
            lut = self.flat_lut[column]
            found = [lut.get(event_id, (-1, 0)) for event_id in unique]
            index = np.array([i for i, _ in found] or [0], np.int64)[inverse]
            want = np.array([t for _, t in found] or [0], np.int64)[inverse]
            ok = (index >= 0) & (index < counts)
            if null is not None:
                ok &= ~null
            position = np.where(ok, offsets[:-1] + index, 0)
            if len(tags):
                ok &= tags[np.minimum(position, len(tags) - 1)] == want
            return pa.array(position, pa.int64(), mask=~ok)

        sockaddr = pick("sockaddr")
        columns["path"] = pc.coalesce(args.field("text").take(pick("path")),
                                      args.field("path").take(pick("path")))
        columns["fd"] = args.field("value").take(pick("fd")).cast(pa.int32())
        columns["argv"] = args.field("strings").take(pick("argv"))
        columns["family"] = pc.coalesce(args.field("family").take(sockaddr),
                                        args.field("flags").take(pick("domain")))
        columns["addr"] = args.field("addr").take(sockaddr)
        columns["port"] = args.field("port").take(sockaddr)
        columns["flags"] = args.field("flags").take(pick("flags"))

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
