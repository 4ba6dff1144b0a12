"""Records of one BTF type as Arrow columns, a batch at a time.

The records are joined into one buffer and viewed through a numpy structured dtype built
from the same flat fields as :class:`~ebpfwire.kernel.btfstruct.CompiledStruct` (union
members overlap, which numpy allows); each field becomes one column without a Python step
per record: integers and floats as they are, enums dictionary-encoded by name, ``char[N]``
cut at the first NUL into a string column (a value that is not UTF-8 is kept with
``\\x..`` escapes: a column has one type), other byte arrays and named unions as
fixed-size binary, scalar arrays as fixed-size lists, bitfields shifted and masked. A
flexible array tail is a binary column of each record's remaining bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ebpfwire.capture import TYPED_LAYOUT, CaptureError, CaptureReader, EventRecord, TypeRecord
from ebpfwire.kernel.btf import Btf
from ebpfwire.kernel.btfstruct import CompiledStruct, Field

_NP = {"b": "i1", "B": "u1", "h": "<i2", "H": "<u2", "i": "<i4", "I": "<u4", "q": "<i8",
       "Q": "<u8", "?": "?", "e": "<f2", "f": "<f4", "d": "<f8"}


def _stride(compiled: CompiledStruct, records: Sequence[bytes]) -> tuple[bytes, int]:
    """One buffer of equal-sized records (each cut or zero-padded to the longest, at least
    the type's size) and that size."""
    lengths = set(map(len, records))
    size = max(compiled.size, max(lengths, default=0))
    if lengths == {size}:
        return b"".join(records), size
    return b"".join(bytes(r).ljust(size, b"\0") for r in records), size


def _text(matrix: np.ndarray) -> pa.Array:
    """Rows of ``char[N]`` as strings up to the first NUL, built from numpy masks."""
    n, width = matrix.shape
    nul = matrix == 0
    lengths = np.where(nul.any(axis=1), nul.argmax(axis=1), width).astype(np.int32)
    matrix = matrix[:, : lengths.max(initial=0)]  # the mask below only as wide as needed
    keep = np.arange(matrix.shape[1])[None, :] < lengths[:, None]
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = pa.py_buffer(matrix[keep].tobytes())
    arr = pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), data)
    try:
        arr.validate(full=True)
        return arr
    except pa.ArrowInvalid:
        raw = [bytes(matrix[i, : lengths[i]]) for i in range(n)]
        return pa.array([r.decode("utf-8", "backslashreplace") for r in raw], pa.string())


def _enum(values: np.ndarray, field: Field) -> pa.Array:
    names = dict(field.enum)
    uniques, codes = np.unique(values, return_inverse=True)
    labels = [names.get(int(u), str(int(u))) for u in uniques]
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32).ravel()),
                                          pa.array(labels, pa.string()))


def _bits(matrix: np.ndarray, field: Field) -> pa.Array:
    word = np.zeros(len(matrix), np.uint64)
    for k in range(field.size):
        word |= matrix[:, k].astype(np.uint64) << np.uint64(8 * k)
    value = (word >> np.uint64(field.bit - field.offset * 8)) & np.uint64((1 << field.width) - 1)
    if field.signed:
        signed = value.astype(np.int64)
        return pa.array(np.where(signed >> (field.width - 1), signed - (1 << field.width),
                                 signed))
    return pa.array(value)


def _fixed_binary(matrix: np.ndarray) -> pa.Array:
    n, width = matrix.shape
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(np.ascontiguousarray(matrix).tobytes())])


def to_arrow(compiled: CompiledStruct, records: Sequence[bytes]) -> pa.Table:
    """The records' fields as an Arrow table, one column per field, in field order."""
    buf, size = _stride(compiled, records)
    n = len(records)
    fields = compiled.fields
    names, formats, offsets = [], [], []
    for i, f in enumerate(fields):
        if f.kind == "tail":
            continue
        names.append(f"f{i}")
        offsets.append(f.offset)
        if f.kind in ("text", "bytes", "bits"):
            formats.append(("u1", (f.size,)))
        elif f.kind == "list":
            formats.append((_NP[f.fmt], (f.count,)))
        else:
            formats.append(_NP[f.fmt])
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": size})
    rows = np.frombuffer(buf, dtype, count=n)
    columns = []
    for i, f in enumerate(fields):
        if f.kind == "tail":
            columns.append(pa.array([bytes(r[f.offset :]) for r in records], pa.binary()))
            continue
        col = np.ascontiguousarray(rows[f"f{i}"])
        if f.kind == "text":
            columns.append(_text(col))
        elif f.kind == "bytes":
            columns.append(_fixed_binary(col))
        elif f.kind == "bits":
            columns.append(_bits(col, f))
        elif f.kind == "enum":
            columns.append(_enum(col, f))
        elif f.kind == "list" and f.item == "enum":
            flat = _enum(col.ravel(), f)
            columns.append(pa.FixedSizeListArray.from_arrays(flat, f.count))
        elif f.kind == "list":
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(col.ravel()), f.count))
        else:
            columns.append(pa.array(col))
    return pa.Table.from_arrays(columns, names=[f.name for f in fields])


def is_typed(path: Any) -> bool:
    """Whether ``path`` names a capture of typed events (``ebpfwire run -o``)."""
    if not isinstance(path, str | os.PathLike):
        return False
    try:
        with CaptureReader(path) as reader:
            return reader.header.layout == TYPED_LAYOUT
    except (OSError, CaptureError):
        return False


def _typed_records(path: str | os.PathLike[str]) -> Iterator[tuple[Any, CompiledStruct | None]]:
    """A typed capture's TYPE records, each with its type compiled, and its EVENT records
    (with None), in file order; a capture of another layout is a ValueError."""
    with CaptureReader(path) as reader:
        if reader.header.layout != TYPED_LAYOUT:
            raise ValueError(f"{path}: a capture of {reader.header.layout!r} events, not of "
                             "typed events (ebpfwire run -o)")
        for rec in reader:
            if isinstance(rec, TypeRecord):
                btf = Btf(rec.btf, f"{path} TYPE record at {rec.offset}")
                yield rec, CompiledStruct(btf, rec.type_id)
            elif isinstance(rec, EventRecord):
                yield rec, None


def typed_tables(path: str | os.PathLike[str], batch: int = 65536) -> dict[str, pa.Table]:
    """Each output map's events in a typed capture as one table (map name -> table); an
    event found by scanning after damage is left out (the reader reports the damage)."""
    types: dict[int, tuple[str, CompiledStruct]] = {}
    pending: dict[int, list[bytes]] = {}
    parts: dict[int, list[pa.Table]] = {}
    for rec, compiled in _typed_records(path):
        if compiled is not None:
            types[rec.map] = (rec.name, compiled)
        elif rec.resync is None:
            if rec.map not in types:
                raise ValueError(f"{path}: EVENT record at file offset {rec.offset} of map "
                                 f"{rec.map}, whose TYPE record is missing")
            rows = pending.setdefault(rec.map, [])
            rows.append(rec.data)
            if len(rows) >= batch:
                parts.setdefault(rec.map, []).append(to_arrow(types[rec.map][1], rows))
                pending[rec.map] = []
    for index, rows in pending.items():
        if rows:
            parts.setdefault(index, []).append(to_arrow(types[index][1], rows))
    return {name: (pa.concat_tables(parts[i]) if i in parts
                   else to_arrow(compiled, []))
            for i, (name, compiled) in types.items()}


def typed_schemas(path: str | os.PathLike[str]) -> dict[str, pa.Schema]:
    """Each output map's columns in a typed capture, from its TYPE records alone (read up
    to the first event: ``run -o`` writes them first), without decoding the events."""
    schemas: dict[str, pa.Schema] = {}
    for rec, compiled in _typed_records(path):
        if compiled is None:
            break
        schemas[rec.name] = to_arrow(compiled, []).schema
    return schemas


def typed_table(path: str | os.PathLike[str]) -> pa.Table:
    """The one output map's events of a typed capture (``to_table`` of such a capture)."""
    tables = typed_tables(path)
    if len(tables) != 1:
        raise ValueError(f"{path}: events of {len(tables)} maps ({', '.join(tables)}): "
                         "typed_tables() gives one table each")
    return next(iter(tables.values()))
