"""KubeArmor's logs of many raw samples at once: ``decode --format kubearmor``'s bulk path.

The logs of the samples of one event id and argument count, one log type and one socket
address shape have one form: the same keys, Operation, Data's words. Such a variant is one
%-template, filled for all its rows by one ``%`` of the template repeated. The template is
cut from the per-event mapping's own output (:meth:`KubeArmorLogs.base`, the event's
:data:`~ebpfwire.output.kubearmor.SHAPES`, :meth:`KubeArmorLogs.audited`) for a prototype
event whose values are markers, so the logs are the per-event path's, byte for byte
(``tests/test_kubearmor_logs.py`` holds them equal). The values are read as columns: the
headers as the batch builder cuts them, the arguments by the column walk, each distinct
answer's context, comm and result made into text once; the extended layouts' cwd, tty and
exec id from the header too (a File or Process Resource joined to the row's cwd, as the
mapping's ``in_cwd`` joins it). What it does not take (a hash trailer, damage, an exec
whose entry is missing, an empty process name or comm, a value with whitespace where
EventData splits words) is left as None for the per-event mapping.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from itertools import chain
from operator import itemgetter
from types import SimpleNamespace
from typing import Any

import numpy as np

from ebpfwire.columnar.arrow import header_dtype
from ebpfwire.columnar.groups import taken_tags, walked, whole_heads
from ebpfwire.output import render
from ebpfwire.output.kubearmor import (
    CONVERSIONS,
    FLAGS,
    JOINED,
    NETWORK,
    PROCESS,
    SHAPES,
    KubeArmorLogs,
    LogContext,
    address_shape,
    expand,
    flags_text,
    in_cwd,
    log_type,
    result_text,
    sys_text,
)
from ebpfwire.output.render import _enc
from ebpfwire.wire import walker
from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.catalogue import arg_index, event_name
from ebpfwire.wire.events import Arg
from ebpfwire.wire.layouts import Layout
from ebpfwire.wire.walker import STRING_TAGS

_TOKEN = secrets.token_hex(8)   # markers no constant text (a host name) can hold
_HOLE = re.compile(r'"\\u0003' + _TOKEN + r'(\d+)\\u0004"|\\u0001' + _TOKEN + r'(\d+)\\u0002')
_SPACE = re.compile(r"\s")   # what str.split() splits on
_PLAIN = re.compile(r'[ !#-\[\]-~]*')   # text its JSON string holds as it is
EXECS = ("execve", "execveat")

# the holes of every log, then the arguments' (ARGS on, in the order the template meets them)
(TS, UPDATED, HOST_PPID, HOST_PID, PPID, PID, UID, PARENT, PROCESS_NAME, SOURCE, CONTAINER,
 COMM, RESULT, RESOURCE, CWD, TTY, EXEC_ID, ARGS) = range(18)
_INTS = (TS, HOST_PPID, HOST_PID, PPID, PID, UID)


def _marker(hole: int) -> str:
    """A value the template cuts out: an int's JSON is the number, a string's its text."""
    return f"\x03{_TOKEN}{hole}\x04" if hole in _INTS else f"\x01{_TOKEN}{hole}\x02"


def _escaped(text: str) -> str:
    """A string's text inside its JSON quotes."""
    return _enc(text)[1:-1]


def _picker(rows: list[int]) -> Callable[[list], tuple]:
    """What picks ``rows`` of a column, as a tuple."""
    if len(rows) > 1:
        return itemgetter(*rows)
    return lambda column, row=rows[0]: (column[row],)


class _Template:
    """One variant's lines with a hole for each value (``holes``: what fills each, in
    order); ``spaced``: the holes EventData splits into words (a row whose value there
    has whitespace is the per-event mapping's); ``args``: (role, conversion) of each
    argument hole (from ARGS on)."""

    def __init__(self, text: str, args: list[tuple[str, str]]):
        parts = _HOLE.split(text)
        literal = [part.replace("%", "%%") for part in parts[::3]]
        self.holes = [int(a or b) for a, b in zip(parts[1::3], parts[2::3], strict=True)]
        self.text = "%s".join(literal)
        self.args = args
        self.spaced: set[int] = set()


class Logs:
    """The logs of samples of one layout and arch (its templates made once)."""

    def __init__(self, layout: Layout, arch: str, logs: KubeArmorLogs):
        self.layout, self.arch, self.logs = layout, arch, logs
        # a hash trailer's fields are the per-event mapping's to show
        self.dtype = None if layout.hash_at is not None else header_dtype(layout)
        self.extras = layout.extra_names
        self._templates: dict[tuple, _Template | None] = {}
        self._fields: dict[bytes, str] = {}
        self._results: dict[tuple[int, int], str | None] = {}   # None: not written
        self._flags: dict[tuple[int, Any], str] = {}

    def joined(self, operation: str) -> bool:
        """Whether the logs of this operation have their Resource joined to the cwd."""
        return "cwd" in self.extras and self.logs.newest and operation in JOINED

    def _template(self, name: str, event_id: int, kind: str, address: Any,
                  tty: bool) -> _Template | None:
        key = (event_id, kind, address, tty)
        if key in self._templates:
            return self._templates[key]
        args: list[tuple[str, str]] = []

        def hole(piece: Any) -> str:
            if type(piece) is str:
                return piece
            if piece not in args:
                args.append(piece)
            return _marker(ARGS + args.index(piece))

        sys = sys_text(event_id, name)
        if name in EXECS:
            operation, resource, data = PROCESS, _marker(RESOURCE), sys
            source = _marker(PARENT)
        else:
            operation, resources, datas = SHAPES[name]
            data = "".join(map(hole, expand(datas, sys, lambda: address)))
            resource = (_marker(RESOURCE) if self.joined(operation)   # made row by row
                        else "".join(map(hole, expand(resources, sys, lambda: address))))
            source = _marker(SOURCE)
        extra = {"cwd": _marker(CWD), "tty": _marker(TTY) if tty else "",
                 "exec_id": _marker(EXEC_ID)}
        proto = SimpleNamespace(ts=0, ppid=_marker(PPID), host_ppid=_marker(HOST_PPID),
                                host_pid=_marker(HOST_PID), pid=_marker(PID), uid=_marker(UID),
                                extra={key: extra[key] for key in self.extras if key in extra},
                                hashes=None,
                                comm=_marker(COMM), retval=0)
        context = LogContext("", "", (), "", _marker(CONTAINER), False, None)
        log = self.logs.base(proto, context, kind, _marker(PROCESS_NAME), _marker(PARENT),
                             source, operation, resource, data)
        log["Timestamp"], log["UpdatedTime"] = _marker(TS), _marker(UPDATED)
        log["Result"] = _marker(RESULT)
        template: _Template | None = _Template(
            "\n".join(map(json.dumps, self.logs.audited(name, operation, log))), args)
        # EventData (the newest logs') is made of Data's words, a Network Resource's too
        words = ((data.split() + (resource.split() if operation == NETWORK else []))
                 if "EventData" in log else [])
        for word in words:
            if _TOKEN in word:
                if "=" not in word[:word.index(_TOKEN)]:
                    template = None    # a value would be a key: EventData from its words
                    break
                template.spaced.update(int(found) for found in re.findall(  # type: ignore
                    _TOKEN + r"(\d+)", word))
        self._templates[key] = template
        return template

    def __call__(self, buf: bytes, begins: np.ndarray, ends: np.ndarray,
                 contexts: list[LogContext | None]) -> list[str | None]:
        """Each sample's logs (``buf[begins[i]:ends[i]]``, its answer ``contexts[i]``) as
        lines, "" for none, or None where the per-event mapping is to make them."""
        count = len(begins)
        out = np.full(count, None, object)
        size = self.layout.size
        boot = self.logs.boot_time_ns
        if self.dtype is None or not count or not 0 <= boot < 1 << 62:
            return out.tolist()
        whole, _, heads = whole_heads(buf, begins, ends, size, self.dtype)
        for event_id, argnum, tags, at, rows, values in walked(
                buf, begins, ends, size, whole, heads,
                lambda event_id, argnum: taken_tags(event_id, self.arch, argnum)):
            name = event_name(event_id, self.arch)
            if not self.logs.takes(name, argnum):
                out[rows] = ""    # decoded, and no log
                continue
            out[rows] = self._group(name, event_id, argnum, tags, heads[at], values, buf,
                                    [contexts[row] for row in rows.tolist()])
        return out.tolist()

    def _group(self, name: str, event_id: int, argnum: int, tags: tuple[int, ...],
               heads: np.ndarray, values: list, buf: bytes,
               contexts: list[LogContext | None]) -> list[str | None]:
        """The logs of one event id and argument count's rows."""
        count = len(heads)
        out: list[str | None] = [None] * count
        logs = self.logs
        columns: dict[int, list] = {}
        results = [self._result(event_id, retval) for retval in heads["retval"].tolist()]
        known = render._raw_comms   # (the comm's JSON, as the JSON lines cache it)
        comms = [(known.get(raw) or render._raw_comm(raw))[1:-1]
                 for raw in heads["comm"].tolist()]
        # each answer's kind (in a namespace of its own) and texts, made once
        made: dict[int, tuple] = {}
        for context in contexts:
            if id(context) not in made:
                made[id(context)] = self._answer(name, event_id, context)
        answers = [made[id(context)] for context in contexts]
        namespaced = ((heads["pid_id"] != 0) & (heads["mnt_id"] != 0)).tolist()
        kinds = [answer[0] if inside else "HostLog"
                 for answer, inside in zip(answers, namespaced, strict=True)]
        # argument values as the decoder gives them, by role
        by_role: dict[str, list] = {}

        def role_values(role: str) -> list:
            if role not in by_role:
                index = arg_index(name, role, argnum)
                by_role[role] = (self._values(tags[index], values[index], buf)
                                 if index is not None else [None] * count)
            return by_role[role]

        addresses = ([address_shape(value) for value in role_values("address")]
                     if any(type(piece) is not str and piece[0] == "address"
                            for piece in SHAPES.get(name, ("", (), ()))[1]) else [False] * count)
        # the fields of the layouts past the classic header
        extras = self.extras
        cwds = [self._field(raw) for raw in heads["cwd"].tolist()] if "cwd" in extras else []
        ttys = ([bool(self._field(raw)) for raw in heads["tty"].tolist()] if "tty" in extras
                else [False] * count)
        variants: dict[tuple, list[int]] = {}
        for row, (kind, result, comm, answer, address, tty) in enumerate(zip(
                kinds, results, comms, answers, addresses, ttys, strict=True)):
            if result is None or kind is None:
                out[row] = ""     # not written, or a container KubeArmor cannot name
            elif comm and answer[2] is not None:
                variants.setdefault((kind, address, tty), []).append(row)
        if not variants:
            return out
        ts = heads["ts"]
        fits = ts < np.uint64(1 << 62)
        wall = np.uint64(logs.boot_time_ns) + np.where(fits, ts, np.uint64(0))
        columns[TS] = (wall // np.uint64(1_000_000_000)).tolist()
        stamps = np.datetime_as_string((wall // np.uint64(1000)).astype(np.int64).astype(
            "datetime64[us]"), unit="us")
        columns[UPDATED] = np.char.add(stamps, "Z").tolist()
        columns[HOST_PPID] = heads["host_ppid"].tolist()
        columns[HOST_PID] = heads["host_pid"].tolist()
        ppid = heads["ppid"]
        if logs.newest:   # its reader zeroes a PPID that is the host's (KubeArmorLogs.base)
            ppid = np.where(ppid == heads["host_ppid"], 0, ppid)
        columns[PPID] = ppid.tolist()
        columns[PID] = heads["pid"].tolist()
        columns[UID] = heads["uid"].tolist()
        columns[COMM] = comms
        columns[RESULT] = results
        for hole, at in ((PARENT, 1), (PROCESS_NAME, 2), (SOURCE, 3), (CONTAINER, 4),
                         (RESOURCE, 5)):
            columns[hole] = [answer[at] for answer in answers]
        if cwds:
            columns[CWD] = [_escaped(cwd.rstrip("/")) for cwd in cwds]
        if "tty" in extras:
            columns[TTY] = [_escaped(self._field(raw)) for raw in heads["tty"].tolist()]
        if "exec_id" in extras:
            columns[EXEC_ID] = list(map(str, heads["exec_id"].tolist()))
        operation = PROCESS if name in EXECS else SHAPES[name][0]
        fitting = fits.tolist()
        all_fit = bool(fits.all())
        for (kind, address, tty), rows in variants.items():
            template = self._template(name, event_id, kind, address, tty)
            if template is None:
                continue
            texts = []
            for role, conversion in template.args:
                texts.append(self._texts(role_values(role), conversion, tags,
                                         arg_index(name, role, argnum), rows))
            spaced = [texts[hole - ARGS] for hole in template.spaced
                      if _SPACE.search("".join(texts[hole - ARGS]))]
            if spaced or not all_fit:
                taken = [row for i, row in enumerate(rows) if fitting[row] and not any(
                    _SPACE.search(text[i]) for text in spaced)]
                if len(taken) < len(rows):
                    keep = {row: i for i, row in enumerate(rows)}
                    texts = [[text[keep[row]] for row in taken] for text in texts]
                    rows = taken
                if not rows:
                    continue
            fill = [column if _PLAIN.fullmatch("".join(column)) else list(map(_escaped, column))
                    for column in texts]
            own = {}   # a Resource joined to each row's cwd
            if self.joined(operation):
                own[RESOURCE] = [_escaped(in_cwd(resource, cwds[row])) for resource, row in zip(
                    self._resources(name, event_id, argnum, tags, address, answers, rows,
                                    role_values), rows, strict=True)]
            pick = _picker(rows)
            cells = [fill[hole - ARGS] if hole >= ARGS else own[hole] if hole in own
                     else pick(columns[hole]) for hole in template.holes]
            lines = ((template.text + "\0") * len(rows)) % tuple(
                chain.from_iterable(zip(*cells, strict=True)))
            for row, line in zip(rows, lines.split("\0"), strict=False):
                out[row] = line
        return out

    def _resources(self, name: str, event_id: int, argnum: int, tags: tuple[int, ...],
                   address: Any, answers: list[tuple], rows: list[int],
                   role_values: Callable[[str], list]) -> list[str]:
        """The Resource of ``rows`` as text (before the cwd's join)."""
        if name in EXECS:
            return [answers[row][6] for row in rows]
        parts = [[piece] * len(rows) if type(piece) is str else self._texts(
            role_values(piece[0]), piece[1], tags, arg_index(name, piece[0], argnum), rows)
            for piece in expand(SHAPES[name][1], sys_text(event_id, name), lambda: address)]
        return ["".join(row) for row in zip(*parts, strict=True)] if parts else [""] * len(rows)

    def _answer(self, name: str, event_id: int, context: LogContext | None) -> tuple:
        """(log type inside a namespace, ParentProcessName, ProcessName, Source, ContainerID,
        an exec's Resource, the same unescaped) as the template's texts; ProcessName None:
        the per-event mapping's (no context, or an empty name: KubeArmor falls back on
        other fields)."""
        kind = log_type(SimpleNamespace(pid_id=1, mnt_id=1), context)
        if context is None:
            return (kind, None, None, None, None, None, None)
        parent = _escaped(context.parent_exe)
        container = _escaped(context.container_id or "")
        if name in EXECS:
            if context.request is None:   # its entry is not in the capture: what the log
                return (kind, None, None, None, None, None, None)  # says depends on the result
            _, resource, _, process = KubeArmorLogs.exec_fields(
                SimpleNamespace(event_id=event_id, retval=0), context, name)
            return (kind, parent, _escaped(process) if process else None, parent, container,
                    _escaped(resource), resource)
        process = _escaped(context.exe) if context.exe else None
        return (kind, parent, process, _escaped(context.command), container, None, None)

    def _field(self, raw: bytes) -> str:
        """A text field of the header (cwd, tty) as the decoder reads it."""
        text = self._fields.get(raw)
        if text is None:
            if len(self._fields) >= 1 << 16:
                self._fields.clear()
            text = self._fields[raw] = raw.partition(b"\0")[0].decode("utf-8", "surrogateescape")
        return text

    def _result(self, event_id: int, retval: int) -> str | None:
        key = (event_id, retval)
        if key not in self._results:
            if len(self._results) >= 1 << 16:
                self._results.clear()
            self._results[key] = (_escaped(result_text(retval))
                                  if self.logs.writes(event_id, retval) else None)
        return self._results[key]

    def _values(self, tag: int, column: Any, buf: bytes) -> list:
        """An argument's values as the decoder gives them (Arg.value)."""
        if tag in STRING_TAGS:
            return [buf[begin:stop].decode("utf-8", "surrogateescape")
                    for begin, stop in zip(column[0].tolist(), column[1].tolist(), strict=True)]
        if isinstance(column, tuple):   # a socket address
            cache = walker._SOCKADDRS
            return [cache.get(raw) or walker.sockaddr(raw) for raw in (
                buf[begin:stop] for begin, stop in zip(column[0].tolist(), column[1].tolist(),
                                                        strict=True))]
        return column.tolist()

    def _texts(self, values: list, conversion: str, tags: tuple[int, ...], index: int | None,
               rows: list[int]) -> list[str]:
        """The texts of an argument hole for ``rows`` (:data:`CONVERSIONS`, or flag names)."""
        if conversion != FLAGS:
            convert = CONVERSIONS[conversion]
            return [convert(values[row]) for row in rows]
        tag = tags[index] if index is not None else None
        flags = self._flags
        out = []
        for row in rows:
            value = values[row]
            text = flags.get((tag, value))
            if text is None:
                text = flags_text(None if tag is None else Arg(ArgType(tag), value))
                if len(flags) < 1 << 16:
                    flags[(tag, value)] = text
            out.append(text)
        return out
