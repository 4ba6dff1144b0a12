"""The JSON lines of many raw samples at once: :func:`~ebpfwire.output.render.sample_json`'s
lines, with no Python call per sample.

Samples of one event id and argument count have one shape: the same keys, the same event
name and argument types, in the same order. Such a group is one %-template (the line's
constant text, with a hole for each value), filled for all its rows by one ``%`` of the
template repeated, its values read as columns: the headers cut as the batch builder cuts
them (:func:`~ebpfwire.columnar.rowcontext.heads`, read through
:func:`~ebpfwire.columnar.arrow.header_dtype`), the arguments by the column walk
(:func:`~ebpfwire.wire.walker.walk_columns`). The fragments are render.py's own (the head
template, the argument prefixes, the cached texts), so the lines are sample_json's, byte for
byte (``tests/test_jsonlines.py`` holds them equal). What it does not take (a layout with
fields past the classic header, damage, a shape the catalogue does not know) is left as
None for sample_json.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from ebpfwire.columnar.arrow import header_dtype
from ebpfwire.columnar.groups import taken_tags, walked, whole_heads
from ebpfwire.output import render
from ebpfwire.wire import walker
from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.events import TEXT_TAGS, Arg, Argv, SockAddr
from ebpfwire.wire.layouts import CLASSIC_NAMES, Layout
from ebpfwire.wire.walker import STRING_TAGS, ArgvSpans

_enc = render._enc
_ARR, _SOCKADDR = render._ARR, render._SOCKADDR


def _escaped(text: str) -> str:
    """Constant text of a template: its % doubled."""
    return text.replace("%", "%%")


#: The head template cut at its holes (render._HEAD: ts, event_id, event, the seven ids,
#: comm, retval, errno, argnum, args)
_PIECES = render._HEAD.replace("%s", "\0").split("\0")
#: The seven ids and comm, one hole each: filled once per distinct process in a group
_WHO = "%s" + "%s".join(map(_escaped, _PIECES[4:11])) + "%s"
_WHO_FIELDS = CLASSIC_NAMES[1:8] + ("comm",)


def _template(event_id: int, arch: str, argnum: int, tags: tuple[int, ...],
              extras: tuple[str, ...] = ()) -> str:
    """The line of a group with a hole (%s) for each value: ts, the seven ids and comm
    (one hole: :data:`_WHO` filled), retval, errno, each argument, each of the layout's
    ``extras`` (the fields past the classic header) and the end."""
    parts = []
    for tag in tags:
        if tag in TEXT_TAGS or tag == _SOCKADDR:
            parts.append("%s")      # the whole argument: cached by (tag, value)
        elif tag == _ARR:           # the list and what follows it (its truncation)
            parts.append(_escaped(render._PREFIX[tag]) + "%s")
        else:
            parts.append(_escaped(render._PREFIX[tag]) + "%s" + _escaped(render._END))
    name = render._names.get((event_id, arch)) or render._name_fragment(event_id, arch)
    p = [_escaped(piece) for piece in _PIECES]
    return (p[0] + "%s" + p[1] + str(event_id) + p[2] + _escaped(name) + p[3] + "%s" + p[11]
            + "%s" + p[12] + "%s" + p[13] + str(argnum) + p[14] + "[" + ", ".join(parts) + "]"
            + p[15] + "".join(", " + _escaped(_enc(key)) + ": %s" for key in extras) + "%s")


class Lines:
    """The lines of samples of one layout and arch (its templates made once)."""

    def __init__(self, layout: Layout, arch: str):
        self.layout, self.arch = layout, arch
        # a hash trailer's hashes are sample_json's to show
        self.dtype = None if layout.hash_at is not None else header_dtype(layout)
        self._fields: dict[bytes, str] = {}   # the extras' texts, as JSON
        if self.dtype is not None:   # the byte ranges of the who fields in a header
            fields = self.dtype.fields
            self._who = np.concatenate([
                np.arange(fields[name][1], fields[name][1] + fields[name][0].itemsize)
                for name in _WHO_FIELDS])
        self._templates: dict[tuple[int, int], tuple[tuple[int, ...], str] | None] = {}

    def _shape(self, event_id: int, argnum: int) -> tuple[tuple[int, ...], str] | None:
        key = (event_id, argnum)
        if key not in self._templates:
            tags = taken_tags(event_id, self.arch, argnum)
            self._templates[key] = (None if tags is None else
                                    (tags, _template(event_id, self.arch, argnum, tags,
                                                     self.layout.extra_names)))
        return self._templates[key]

    def __call__(self, buf: bytes, begins: np.ndarray, ends: np.ndarray,
                 tails: list[str]) -> list[str | None]:
        """The line of each sample ``buf[begins[i]:ends[i]]``, ended with ``tails[i]`` (as
        ``sample_json(..., end=tails[i])``), or None where sample_json is to make it."""
        count = len(begins)
        out = np.full(count, None, object)
        size = self.layout.size
        if self.dtype is None or not count:
            return out.tolist()
        whole, raw, heads = whole_heads(buf, begins, ends, size, self.dtype)
        whos = self._whos(heads, raw)
        ends_of = np.array(tails, object)
        for event_id, argnum, tags, at, rows, values in walked(
                buf, begins, ends, size, whole, heads,
                lambda event_id, argnum: (self._shape(event_id, argnum) or (None,))[0]):
            template = self._shape(event_id, argnum)[1]  # type: ignore[index]
            out[rows] = self._fill(template, tags, heads[at], values, buf, whos[at].tolist(),
                                   ends_of[rows].tolist())
        return out.tolist()

    def _whos(self, heads: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Each row's ids and comm as their part of the line (:data:`_WHO`), made once per
        distinct process (its events share them)."""
        who = np.ascontiguousarray(raw[:, self._who]).view(f"V{len(self._who)}").ravel()
        _, first, inverse = np.unique(who, return_index=True, return_inverse=True)
        comms = render._raw_comms
        made = np.array([_WHO % (*ids, comms.get(comm) or render._raw_comm(comm))
                         for *ids, comm in zip(*(heads[name][first].tolist()
                                                 for name in _WHO_FIELDS), strict=True)],
                        object)
        return made[inverse]

    def _fill(self, template: str, tags: tuple[int, ...], heads: np.ndarray, values: list,
              buf: bytes, whos: list[str], tails: list[str]) -> list[str]:
        """The lines of one group: its template filled for every row by one ``%``."""
        columns = [heads["ts"].tolist(), whos]
        retvals = heads["retval"].tolist()
        columns.append(retvals)
        errnos, errno_of = render._errnos, render._errno_fragment
        event_id = int(heads["event_id"][0])
        columns.append(["null" if retval >= 0 else (errnos.get((event_id, retval))
                                                    or errno_of(event_id, retval))
                        for retval in retvals])
        texts, text_of = render._texts, render._text_arg
        for tag, value in zip(tags, values, strict=True):
            if tag in TEXT_TAGS:
                columns.append([texts.get((tag, v)) or text_of(tag, v)
                                for v in value.tolist()])
            elif tag in STRING_TAGS:
                columns.append([_enc(buf[begin:stop].decode("utf-8", "surrogateescape"))
                                for begin, stop in zip(value[0].tolist(), value[1].tolist(),
                                                       strict=True)])
            elif tag == _ARR:
                columns.append(_argvs(buf, value))
            elif tag == _SOCKADDR:
                columns.append([_sockaddr(buf[begin:stop]) for begin, stop in zip(
                    value[0].tolist(), value[1].tolist(), strict=True)])
            else:
                columns.append(value.tolist())
        texts_of = self.layout.text_fields
        for key in self.layout.extra_names:   # as sample_json shows them
            column = heads[key].tolist()
            columns.append([self._field(raw) for raw in column] if key in texts_of else column)
        columns.append(tails)
        rows = len(tails)
        text = ((template + "\n") * rows) % tuple(chain.from_iterable(zip(*columns, strict=True)))
        return text.split("\n", rows)[:rows]


    def _field(self, raw: bytes) -> str:
        """A text field past the classic header as JSON (sample_json's form)."""
        shown = self._fields.get(raw)
        if shown is None:
            if len(self._fields) >= 1 << 16:
                self._fields.clear()
            shown = self._fields[raw] = _enc(raw.partition(b"\0")[0].decode(
                "utf-8", "surrogateescape"))
        return shown


def _argvs(buf: bytes, spans: ArgvSpans) -> list[str]:
    """Each row's argv as its JSON from the list on (render._args_json's form)."""
    items = iter([buf[begin:stop].decode("utf-8", "surrogateescape") for begin, stop in zip(
        spans.begins.tolist(), spans.ends.tolist(), strict=True)])
    ends = render._ARGV_END
    out = []
    for count in spans.counts.tolist():
        argv = Argv(next(items) for _ in range(count))
        out.append("[" + ", ".join(map(_enc, argv)) + "]" + ends[argv.truncated])
    return out


def _sockaddr(raw: bytes) -> str:
    """A sockaddr argument's JSON from its wire bytes, as walk and render._args_json make it."""
    value = walker._SOCKADDRS.get(raw) or walker.sockaddr(raw)
    if type(value) is SockAddr:
        return render._addrs.get(value) or render._addr_arg(value)
    return render._dumps(Arg(ArgType(_SOCKADDR), value).to_dict())
