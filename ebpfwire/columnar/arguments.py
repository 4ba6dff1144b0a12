"""A batch's arguments as Arrow columns, from the column walk and the walker's flat list.

An argument has a *position* in the batch (row after row, argument after argument). The
column walk (:func:`ebpfwire.wire.walker.walk_columns`) gives the arguments of groups of
rows with one tag template as numpy arrays of values and of byte spans in the joined
samples; the walker gives the rest as its flat list. Each field is made once for the whole
batch: integers and sockaddr numbers scattered by numpy to their positions, texts copied out
of the joined samples by Arrow, names (tag, flag text, address family) dictionary-encoded,
so that a flag word's text or a family's name is made once per distinct value. Only the
walker's rarer values, sockaddrs of a family without a fixed text form (unix paths,
unknown families) and distinct IPv6 addresses touch Python one by one.
"""

from __future__ import annotations

import functools
import socket
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ebpfwire.wire import names
from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.events import AF_INET, AF_INET6, AF_UNIX, TEXT_TAGS, Arg, SockAddr
from ebpfwire.wire.walker import STRING_TAGS, WIDTHS, ArgvSpans, sockaddr

NAME_TYPE = pa.dictionary(pa.int32(), pa.string())
ARG_TYPE = pa.struct([
    ("type", NAME_TYPE),
    ("value", pa.int64()),
    ("text", pa.string()),
    ("strings", pa.list_(pa.string())),
    ("family", NAME_TYPE),
    ("addr", pa.string()),
    ("port", pa.uint16()),
    ("path", pa.string()),
    ("flowinfo", pa.uint32()),
    ("scope_id", pa.uint32()),
    ("flags", NAME_TYPE),
])
_TYPE_NAMES = pa.array([ArgType(t).name if t in ArgType._value2member_map_ else f"tag_{t}"
                        for t in range(256)])
_TYPES = {int(t): ArgType(t) for t in ArgType}
#: By tag byte: an integer payload, a string payload, an integer with a symbolic text.
_IS_INT = np.array([bool(WIDTHS[t]) for t in range(256)])
_IS_STR = np.array([t in STRING_TAGS for t in range(256)])
_HAS_TEXT = np.array([t in TEXT_TAGS for t in range(256)])
_UNIX_PATH = 108   # bytes of an AF_UNIX sockaddr's path on the wire


# --------------------------------------------------------------------------- helpers


def safe_text(value: str) -> tuple[str, bool]:
    """(valid UTF-8 text, True) or, for bytes that were not UTF-8, (text with U+FFFD, False)."""
    try:
        value.encode("utf-8")
        return value, True
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), False


def distinct(values: np.ndarray) -> tuple[list, np.ndarray]:
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


def strings(values: list, bad_rows: set, rows_of: Any) -> pa.Array:
    """A string array; items that were not UTF-8 get U+FFFD and mark their row in bad_rows."""
    try:
        return pa.array(values, pa.string())
    except (UnicodeEncodeError, pa.ArrowInvalid):
        cleaned = []
        for index, value in enumerate(values):
            if value is not None:
                value, ok = safe_text(value)
                if not ok:
                    bad_rows.add(rows_of(index))
            cleaned.append(value)
        return pa.array(cleaned, pa.string())


def gather_texts(joined: bytes, begins: np.ndarray, stops: np.ndarray, bad_rows: set,
                 rows_of: Any) -> pa.Array:
    """The strings at ``joined[begins[i]:stops[i]]``, copied by one Arrow take: the spans
    follow each other in ``joined`` (they come in position order), so they and the gaps
    between them are the items of one binary array over it, and a take of every other item
    copies out the strings."""
    if len(begins):
        bounds = np.empty(2 * len(begins) + 1, np.int32)
        bounds[0:-1:2] = begins
        bounds[1::2] = stops
        bounds[-1] = stops[-1]
        items = pa.BinaryArray.from_buffers(pa.binary(), len(bounds) - 1,
                                            [None, pa.py_buffer(bounds), pa.py_buffer(joined)])
        texts = items.take(pa.array(np.arange(0, len(bounds) - 1, 2)))
    else:
        texts = pa.array([], pa.binary())
    try:
        return texts.cast(pa.string())
    except pa.ArrowInvalid:   # bytes that are not UTF-8: the careful way
        return strings([item.decode("utf-8", "surrogateescape")
                        for item in texts.to_pylist()], bad_rows, rows_of)


def _spread(total: int, at: np.ndarray, values: pa.Array) -> pa.Array:
    """An array of ``total`` items with ``values`` (strings or lists) at the increasing
    positions ``at`` and null elsewhere: new offsets and validity over the values' own
    buffers, so no item is copied."""
    valid = np.zeros(total, bool)
    valid[at] = True if not values.null_count else values.is_valid().to_numpy(
        zero_copy_only=False)
    given = np.frombuffer(values.buffers()[1], np.int32)[values.offset:
                                                          values.offset + len(values) + 1]
    lengths = np.zeros(total, np.int32)
    lengths[at] = np.diff(given)
    offsets = np.empty(total + 1, np.int32)
    offsets[0] = given[0]
    np.cumsum(lengths, out=offsets[1:])
    offsets[1:] += given[0]
    nulls = total - int(np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    if isinstance(values, pa.ListArray):
        return pa.Array.from_buffers(values.type, total, [bitmap, pa.py_buffer(offsets)],
                                     nulls, children=[values.values])
    return pa.Array.from_buffers(values.type, total,
                                 [bitmap, pa.py_buffer(offsets), values.buffers()[2]], nulls)


def _placed(total: int, parts: list[tuple[np.ndarray, pa.Array]], kind: pa.DataType) -> pa.Array:
    """An array of ``total`` items: each part's values at its positions, null elsewhere. The
    parts' values are put in position order by a take only when their positions are not in
    order already (several parts, or one out of order), then spread."""
    parts = [(at, values) for at, values in parts if len(at)]
    if not parts:
        return pa.nulls(total, kind)
    at = np.concatenate([at for at, _ in parts]) if len(parts) > 1 else parts[0][0]
    values = (pa.concat_arrays([values for _, values in parts]) if len(parts) > 1
              else parts[0][1])
    if len(at) > 1 and not (at[1:] > at[:-1]).all():
        order = np.argsort(at, kind="stable")
        at, values = at[order], values.take(pa.array(order))
    return _spread(total, at, values)


def _windows(buf: np.ndarray, begins: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` bytes from each of ``begins`` as the rows of one array (bytes past the
    buffer read as its last; those past a shorter body are not used)."""
    if len(buf) >= width and (not len(begins) or begins.max() <= len(buf) - width):
        windows = np.lib.stride_tricks.as_strided(buf, (len(buf) - width + 1, width), (1, 1))
        return windows[begins]
    return buf[np.minimum(begins[:, None] + np.arange(width), len(buf) - 1)]


def _in_order(at: list[np.ndarray], spans: list[tuple[np.ndarray, np.ndarray]]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positions and (begin, stop) spans of several groups as three arrays in position
    order (which is their order in the joined samples too)."""
    if not at:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    positions = np.concatenate(at)
    begins = np.concatenate([begin for begin, _ in spans])
    stops = np.concatenate([stop for _, stop in spans])
    if len(positions) > 1 and not (positions[1:] > positions[:-1]).all():
        order = np.argsort(positions, kind="stable")
        positions, begins, stops = positions[order], begins[order], stops[order]
    return positions, begins, stops


def _names(keys: np.ndarray, present: np.ndarray,
           name_of: Any) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """A dictionary array of the present items' names: ``name_of(i)`` gives the name of the
    item at ``i``, called once per distinct key, at its first item (None: no name); with
    each item's index in the dictionary and where it has a name, as numpy arrays."""
    if not present.any():
        return pa.nulls(len(keys), NAME_TYPE), np.zeros(len(keys), np.int32), present
    where = np.flatnonzero(present)
    unique, inverse = distinct(keys[where])
    first = np.zeros(len(unique), np.int64)
    first[inverse[::-1]] = where[::-1]        # each key's first item
    texts = [name_of(int(index)) for index in first]
    known = np.array([text is not None for text in texts])
    indices = np.zeros(len(keys), np.int32)
    indices[where] = inverse
    present = present.copy()
    present[where] = known[inverse]
    return pa.DictionaryArray.from_arrays(pa.array(indices, mask=~present),
                                          pa.array(texts, pa.string())), indices, present


def family_name(family: int) -> str:
    """A sockaddr family's name (its number when it has none)."""
    return names.sock_family_name(family) or str(family)


# --------------------------------------------------------------------------- the batch


class Arguments:
    """The arguments of one batch, field by field (see the module's docstring).

    ``offsets`` (count + 1) bound each row's arguments; ``tags``, ``ints`` (with
    ``is_int``), ``family`` (with ``is_sock``) and ``port`` are numpy arrays by position;
    ``text``, ``strings``, ``addr`` and ``path`` Arrow arrays by position.
    """

    def __init__(self, joined: bytes, offsets: np.ndarray, groups: list, slow_at: np.ndarray,
                 flat: list, bad_rows: set):
        self.offsets = offsets
        total = int(offsets[-1])
        self.total = total
        buf = np.frombuffer(joined, np.uint8)

        def row_of(position: int) -> int:
            return int(np.searchsorted(offsets, position, "right") - 1)

        self.tags = tags = np.zeros(total, np.uint8)
        self.ints = ints = np.zeros(total, np.int64)
        self.is_int = is_int = np.zeros(total, bool)
        text_at, text_spans, sock_at, sock_spans, argv_at, argvs = [], [], [], [], [], []
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
                elif tag == ArgType.STR_ARR_T:
                    argv_at.append(at)
                    argvs.append(value)
                else:
                    text_at.append(at)
                    text_spans.append(value)
        slow_tags = np.asarray(flat[0::2], np.uint8)
        slow_values = flat[1::2]
        tags[slow_at] = slow_tags
        held = np.empty(len(slow_values), object)
        held[:] = slow_values
        present = np.not_equal(held, None)
        slow_int = _IS_INT[slow_tags] & present
        ints[slow_at[slow_int]] = held[slow_int].astype(np.int64)
        is_int[slow_at[slow_int]] = True

        # texts: the column walk's spans, then the walker's strings
        text_at, text_begins, text_stops = _in_order(text_at, text_spans)
        fast_texts = gather_texts(joined, text_begins, text_stops, bad_rows,
                                  lambda index: row_of(int(text_at[index])))
        slow_str = np.flatnonzero(_IS_STR[slow_tags] & present)
        slow_texts = strings(held[slow_str].tolist(), bad_rows,
                             lambda index: row_of(int(slow_at[slow_str[index]])))
        self.text = _placed(total, [(text_at, fast_texts), (slow_at[slow_str], slow_texts)],
                            pa.string())

        # argv: the column walk's element spans, then the walker's lists
        self.strings = self._argv(joined, total, argv_at, argvs, slow_at, slow_tags,
                                  slow_values, bad_rows, row_of)

        # sockaddrs: numbers by numpy, texts once per distinct address
        self.family = np.zeros(total, np.int64)
        self.is_sock = np.zeros(total, bool)
        self.port = np.zeros(total, np.int64)
        self.has_port = np.zeros(total, bool)
        self.flowinfo = np.zeros(total, np.int64)
        self.scope_id = np.zeros(total, np.int64)
        self.is_inet6 = np.zeros(total, bool)
        sock_at = np.concatenate(sock_at) if sock_at else np.zeros(0, np.int64)
        addr_parts, path_parts = self._fast_sockaddrs(buf, joined, sock_at, sock_spans,
                                                      bad_rows, row_of)
        slow_sock = [(int(slow_at[index]), value) for index, value in enumerate(slow_values)
                     if type(value) is SockAddr]
        if slow_sock:
            addr_parts.append(self._sockaddr_objects(slow_sock, path_parts, bad_rows, row_of))
        self.addr = _placed(total, addr_parts, pa.string())
        self.path = _placed(total, path_parts, pa.string())

    # -- argv

    @staticmethod
    def _argv(joined: bytes, total: int, argv_at: list, argvs: list[ArgvSpans],
              slow_at: np.ndarray, slow_tags: np.ndarray, slow_values: list, bad_rows: set,
              row_of: Any) -> pa.Array:
        at = np.concatenate(argv_at) if argv_at else np.zeros(0, np.int64)
        counts = np.concatenate([spans.counts for spans in argvs] or [np.zeros(0, np.int64)])
        begins = np.concatenate([spans.begins for spans in argvs] or [np.zeros(0, np.int64)])
        stops = np.concatenate([spans.ends for spans in argvs] or [np.zeros(0, np.int64)])
        if len(at) > 1 and not (at[1:] > at[:-1]).all():   # groups: into position order
            order = np.argsort(at, kind="stable")
            first = np.zeros(len(at), np.int64)
            np.cumsum(counts[:-1], out=first[1:])
            at, counts, first = at[order], counts[order], first[order]
            starts = np.zeros(len(at), np.int64)
            np.cumsum(counts[:-1], out=starts[1:])
            elements = np.repeat(first - starts, counts) + np.arange(len(begins))
            begins, stops = begins[elements], stops[elements]
        owner = np.repeat(at, counts)      # each element's argument position
        texts = gather_texts(joined, begins, stops, bad_rows,
                             lambda index: row_of(int(owner[index])))
        bounds = np.zeros(len(counts) + 1, np.int32)
        np.cumsum(counts, out=bounds[1:])
        parts = [(at, pa.ListArray.from_arrays(pa.array(bounds), texts))]
        lists, where = [], []
        for index in np.flatnonzero(slow_tags == ArgType.STR_ARR_T).tolist():
            items = slow_values[index]
            if items is not None:
                if not all(item.isascii() for item in items):
                    items = [safe_text(item)[0] for item in items]
                    if items != list(slow_values[index]):
                        bad_rows.add(row_of(int(slow_at[index])))
                lists.append(items)
                where.append(slow_at[index])
        if lists:
            parts.append((np.asarray(where, np.int64), pa.array(lists, pa.list_(pa.string()))))
        return _placed(total, parts, pa.list_(pa.string()))

    # -- sockaddrs

    def _fast_sockaddrs(self, buf: np.ndarray, joined: bytes, at: np.ndarray, spans: list,
                        bad_rows: set, row_of: Any) -> tuple[list, list]:
        """The column walk's sockaddrs (wire bytes at ``spans``): their numbers into the
        position arrays; their address and path texts as (positions, array) parts."""
        if not len(at):
            return [], []
        begins = np.concatenate([begin for begin, _ in spans])
        stops = np.concatenate([stop for _, stop in spans])
        window = _windows(buf, begins, 28)   # up to an inet6 body's end
        wide = window[:, :8].astype(np.int64)
        family = wide[:, 0] | wide[:, 1] << 8
        self.family[at] = family
        self.is_sock[at] = True
        inet = family == AF_INET
        inet6 = family == AF_INET6
        ported = inet | inet6
        self.port[at] = np.where(ported, wide[:, 2] << 8 | wide[:, 3], 0)
        self.has_port[at] = ported
        self.is_inet6[at] = inet6
        if inet6.any():
            self.flowinfo[at[inet6]] = np.ascontiguousarray(window[inet6, 4:8]).view(">u4")[:, 0]
            self.scope_id[at[inet6]] = np.ascontiguousarray(window[inet6, 24:28]).view("<u4")[:, 0]
        addr_parts, path_parts = [], []
        if inet.any():
            octets = [pa.array(window[inet, k]).cast(pa.string()) for k in range(4, 8)]
            addr_parts.append((at[inet], pc.binary_join_element_wise(*octets, ".")))
        if inet6.any():
            raw = np.ascontiguousarray(window[inet6, 8:24])
            unique, inverse = distinct(raw.view("S16").ravel())
            texts = pa.array([socket.inet_ntop(socket.AF_INET6, value.ljust(16, b"\0"))
                              for value in unique], pa.string())
            addr_parts.append((at[inet6], texts.take(pa.array(inverse))))
        # a unix socket's path (named: its first byte not NUL) is the text before the first
        # NUL of its 108 bytes; no address
        unix = (family == AF_UNIX) & (window[:, 2] != 0)
        if unix.any():
            rows = np.flatnonzero(unix)
            rows = rows[np.argsort(at[rows], kind="stable")]
            first = begins[rows] + 2
            body = _windows(buf, first, _UNIX_PATH)
            nul = body == 0
            stop = first + np.where(nul.any(axis=1), nul.argmax(axis=1), _UNIX_PATH)
            path_parts.append((at[rows], gather_texts(
                joined, first, stop, bad_rows, lambda index: row_of(int(at[rows[index]])))))
        other = np.flatnonzero(~ported & ~unix)
        if len(other):   # abstract unix paths, families without a body: by the walker's parser
            values = [(int(at[index]), sockaddr(joined[begin:stop])) for index, begin, stop
                      in zip(other.tolist(), begins[other].tolist(), stops[other].tolist(),
                             strict=True)]
            found = self._sockaddr_objects(values, path_parts, bad_rows, row_of)
            addr_parts.append(found)
        return addr_parts, path_parts

    def _sockaddr_objects(self, values: list[tuple[int, SockAddr]], path_parts: list,
                          bad_rows: set, row_of: Any) -> tuple[np.ndarray, pa.Array]:
        """SockAddr values at their positions: numbers into the position arrays, the path
        part appended to ``path_parts``; returns the address part."""
        at = np.array([position for position, _ in values], np.int64)
        self.family[at] = [value.family for _, value in values]
        self.is_sock[at] = True
        for field, name, present in (("port", "port", "has_port"),
                                     ("flowinfo", "flowinfo", "is_inet6"),
                                     ("scope_id", "scope_id", None)):
            numbers = [getattr(value, name) for _, value in values]
            getattr(self, field)[at] = [number or 0 for number in numbers]
            if present:
                getattr(self, present)[at] = [number is not None for number in numbers]
        paths = [value.path for _, value in values]
        path_parts.append((at, strings(paths, bad_rows,
                                       lambda index: row_of(int(at[index])))))
        return at, pa.array([value.addr for _, value in values], pa.string())

    # -- fields

    def type_names(self) -> pa.Array:
        return pa.DictionaryArray.from_arrays(pa.array(self.tags.astype(np.int32)), _TYPE_NAMES)

    @functools.cached_property
    def flag_codes(self) -> tuple[pa.Array, np.ndarray, np.ndarray]:
        """Symbolic text of flag and enum values, made once per distinct (tag, value); with
        each position's index in its dictionary and where it has a text (see ``_names``)."""
        has_text = _HAS_TEXT[self.tags] & self.is_int
        keys = (self.tags.astype(np.int64) << 32) | (self.ints & 0xFFFFFFFF)
        tags, ints = self.tags, self.ints
        return _names(keys, has_text,
                      lambda at: Arg(_TYPES[int(tags[at])], int(ints[at])).text)

    @property
    def flags(self) -> pa.Array:
        return self.flag_codes[0]

    @functools.cached_property
    def family_names(self) -> pa.Array:
        """Each sockaddr's family name, made once per distinct family (the ``args`` field and
        the flat ``family`` column both use it)."""
        family = self.family
        return _names(family, self.is_sock, lambda at: family_name(int(family[at])))[0]

    def struct(self) -> pa.StructArray:
        """The ``args`` items: one struct per argument (docs/arrow.md)."""
        inet6 = self.is_inet6
        fields = [
            self.type_names(),
            pa.array(self.ints, mask=~self.is_int),
            self.text,
            self.strings,
            self.family_names,
            self.addr,
            pa.array(self.port, pa.uint16(), mask=~self.has_port),
            self.path,
            pa.array(self.flowinfo, pa.uint32(), mask=~inet6),
            pa.array(self.scope_id, pa.uint32(), mask=~inet6),
            self.flags,
        ]
        return pa.StructArray.from_arrays(fields, fields=list(ARG_TYPE))

