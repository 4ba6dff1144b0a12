"""Captures as a Dask DataFrame: each partition is a byte range of a capture, decoded to Arrow
by a Dask worker, so a cluster decodes a fleet's captures in parallel.

The module is named after the engine it serves (``ebpfwire.columnar.dask``); the imports below are
absolute, so ``dask`` here is always the real package, never this module.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass

try:
    import dask.dataframe as dd
    import pandas as pd
    import pyarrow as pa
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError("ebpfwire.dask needs the dask extra (dask, pandas, pyarrow): "
                      "pip install '.[dask]' in a checkout of ebpfwire") from error

from ebpfwire.columnar import arrow, btfevents
from ebpfwire.columnar.export import ExportError, Split, check_captures, index_captures, plan_splits
from ebpfwire.wire.errors import DecodeError

SPLIT_BYTES = 64 << 20
"""Default bytes of capture per partition (about 450,000 events of a typical workload)."""


@dataclass(frozen=True)
class _Decoding:
    layout: str | None
    arch: str | None
    strict: bool


def _frame(table: pa.Table) -> pd.DataFrame:
    """Arrow to pandas with every column kept in its Arrow type (lists, structs, uint64,
    dictionaries): nothing is widened or turned into Python objects, and to_parquet writes
    back the same Parquet types."""
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def read_split(split: Split, decoding: _Decoding) -> pd.DataFrame:
    """One partition: the rows of the records of `split`, as ``to_table``
    gives them (the process context from the split's slice of the capture's index)."""
    try:
        with split.open() as reader:
            table = arrow.to_table(reader, layout=decoding.layout, arch=decoding.arch,
                                   strict=decoding.strict, context=split.context or False)
    except DecodeError as exc:  # its message names the file and the sample's offset
        raise ExportError(str(exc)) from None
    return _frame(table)


def read_typed(path: str, map_name: str) -> pd.DataFrame:
    """One partition: a typed capture's events of one output map (``ebpfwire run -o``)."""
    return _frame(btfevents.typed_tables(path)[map_name])


def _typed_frame(paths: list[str], map_name: str | None) -> dd.DataFrame:
    """Typed captures (``ebpfwire run -o``), one partition each: the events of ``map_name``
    (needed when a capture has several output maps), all captures of one event type."""
    schemas = [btfevents.typed_schemas(path) for path in paths]
    names = sorted({name for found in schemas for name in found})
    if map_name is None:
        if len(names) != 1:
            raise ExportError(f"typed captures with events of {len(names)} maps "
                              f"({', '.join(names)}): name one with map=")
        map_name = names[0]
    for path, found in zip(paths, schemas, strict=True):
        if found.get(map_name) != schemas[0].get(map_name) or map_name not in found:
            raise ExportError(f"{path}: expected events of map {map_name!r} typed as in "
                              f"{paths[0]}, found {', '.join(found) or 'no event type'}")
    meta = _frame(schemas[0][map_name].empty_table())
    return dd.from_map(read_typed, paths, args=(map_name,), meta=meta,
                       label="ebpfwire-typed-captures", enforce_metadata=False)


def expand(paths_or_glob: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
           ) -> list[str]:
    """Paths, each a file or a glob pattern, expanded in sorted order."""
    items = ([paths_or_glob] if isinstance(paths_or_glob, (str, os.PathLike))
             else list(paths_or_glob))
    paths: list[str] = []
    for item in map(os.fspath, items):
        if glob.has_magic(item):
            found = sorted(glob.glob(item))
            if not found:
                raise ExportError(f"{item}: no capture matches the pattern")
            paths.extend(found)
        else:
            paths.append(item)
    return paths


def read_captures(
    paths_or_glob: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    split_bytes: int = SPLIT_BYTES,
    layout: str | None = None,
    arch: str | None = None,
    strict: bool = False,
    context: bool = True,
    map: str | None = None,
) -> dd.DataFrame:
    """A lazy DataFrame of the captures' rows (the columns of :mod:`ebpfwire.columnar.arrow`), one
    partition per byte range of about `split_bytes`, in file order.

    The captures are opened here to plan the ranges, and again by the workers that decode
    them: on a cluster they must be at the same path on every machine (shared storage).
    All must share one context layout. Bad input raises
    :class:`ebpfwire.columnar.export.ExportError`.

    With `context` (the default) the rows end with the process context columns: each
    capture is read once, in time order, here (one sequential pass), and each partition
    carries its slice of the index (12 bytes per sample of its range) in the task graph.

    Captures of typed events (``ebpfwire run -o``) give one partition each, with the columns
    of their event type; `map` names the output map when they hold several.
    """
    if split_bytes < 1:
        raise ExportError(f"expected split_bytes >= 1, found {split_bytes}")
    found = expand(paths_or_glob)
    typed = [btfevents.is_typed(path) for path in found]
    if any(typed):
        if not all(typed):
            raise ExportError("expected captures of one kind, found typed events "
                              "(ebpfwire run -o) mixed with the wire format's")
        return _typed_frame([os.path.abspath(path) for path in found], map)
    paths, layout_name = check_captures(found, layout, arch)
    paths = [os.path.abspath(path) for path in paths]
    splits = plan_splits(paths, split_bytes,
                         index_captures(paths, layout, arch) if context else None)
    meta = _frame(arrow.schema(layout_name, context).empty_table())
    return dd.from_map(read_split, splits, args=(_Decoding(layout, arch, strict),),
                       meta=meta, label="ebpfwire-captures", enforce_metadata=False)
