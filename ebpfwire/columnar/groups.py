"""Samples in groups of one shape (event id and argument count), their headers read as a
numpy record view and their arguments walked as columns: what the bulk renderers
(:mod:`~ebpfwire.columnar.jsonlines`, :mod:`~ebpfwire.columnar.kubearmorlogs`) fill one
template each for."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ebpfwire.columnar.rowcontext import heads as cut_heads
from ebpfwire.output import render
from ebpfwire.wire.catalogue import expected_tags
from ebpfwire.wire.events import TEXT_TAGS
from ebpfwire.wire.walker import STRING_TAGS, ArgvSpans, walk_columns

#: Argument types whose values the column walk gives (strings, flag words, integers, argv,
#: socket addresses)
TAKEN = frozenset((*TEXT_TAGS, *STRING_TAGS, *render._PLAIN_INT_TAGS, render._ARR,
                   render._SOCKADDR))


def taken_tags(event_id: int, arch: str, argnum: int) -> tuple[int, ...] | None:
    """The catalogue's argument types of a shape, or None where the walk does not take it."""
    tags = expected_tags(event_id, arch, argnum) if argnum else ()
    return tags if tags is not None and all(tag in TAKEN for tag in tags) else None


def whole_heads(buf: bytes, begins: np.ndarray, ends: np.ndarray, size: int,
                dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The samples with a whole header (their indices), those headers' bytes (one row
    each) and the same as records of ``dtype``."""
    whole = np.flatnonzero(ends - begins >= size)
    raw = cut_heads(buf, begins, ends, size)[whole]
    return whole, raw, raw.view(dtype).ravel()


def walked(buf: bytes, begins: np.ndarray, ends: np.ndarray, size: int, whole: np.ndarray,
           heads: np.ndarray, tags_of: Callable[[int, int], tuple[int, ...] | None]
           ) -> Iterator[tuple[int, int, tuple[int, ...], np.ndarray, np.ndarray, list]]:
    """Each shape's samples whose arguments walk clean: (event id, argnum, tags, their
    places in ``heads``, their indices, the argument columns as ``walk_columns`` gives
    them); ``tags_of(event_id, argnum)``: the shape's tags, None to leave it."""
    data = np.frombuffer(buf, np.uint8)
    keys = (heads["event_id"].astype(np.uint64) << np.uint64(32)) | heads["argnum"]
    unique, inverse = np.unique(keys, return_inverse=True)
    for number, key in enumerate(unique.tolist()):
        event_id, argnum = key >> 32, key & 0xFFFFFFFF
        tags = tags_of(event_id, argnum)
        if tags is None:
            continue
        at = np.flatnonzero(inverse == number)
        rows = whole[at]
        ok, values = walk_columns(data, begins[rows], ends[rows], begins[rows] + size, tags)
        at, rows = at[ok], rows[ok]
        if len(rows):
            yield event_id, argnum, tags, at, rows, [
                v[ok] if isinstance(v, np.ndarray) else v.rows(ok)
                if isinstance(v, ArgvSpans) else (v[0][ok], v[1][ok]) for v in values]
