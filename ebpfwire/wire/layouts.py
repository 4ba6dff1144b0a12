"""Context header layouts: the classic 68-byte ``sys_context_t`` and its later extensions.

Each layout is one construct ``Struct`` (the specification); the fast decoder's
``struct`` format is derived from the same fields, so the two cannot drift apart.
A layout is never announced on the wire: the reader is told which one to use.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from construct import Bytes, Construct, FormatField, Int8ul, Int32ul, Int64sl, Int64ul, Renamed
from construct import Struct as CStruct

#: The classic fields, in wire order; every layout starts with them.
CLASSIC_FIELDS: tuple[Renamed, ...] = (
    "ts" / Int64ul,
    "pid_id" / Int32ul,
    "mnt_id" / Int32ul,
    "host_ppid" / Int32ul,
    "host_pid" / Int32ul,
    "ppid" / Int32ul,
    "pid" / Int32ul,
    "uid" / Int32ul,
    "event_id" / Int32ul,
    "argnum" / Int32ul,
    "retval" / Int64sl,
    "comm" / Bytes(16),
)
CLASSIC_NAMES = tuple(field.name for field in CLASSIC_FIELDS)


@dataclass(frozen=True, eq=False)
class Layout:
    """A named context layout: its schema, its size and the fast ``struct`` format."""

    name: str
    schema: CStruct
    size: int
    fmt: struct.Struct
    field_names: tuple[str, ...]
    text_fields: frozenset[str]
    extra_names: tuple[str, ...]   # fields appended after ``comm`` (none in classic)
    #: where a field named ``hash`` is in the unpacked ``fmt`` tuple (None: no such field);
    #: a sample whose hash field is 1 ends with the writer's hash trailer
    hash_at: int | None = None


def _fmt_code(field: Renamed) -> str:
    sub: Construct = field.subcon
    if isinstance(sub, FormatField):
        return sub.fmtstr[1:]
    if type(sub).__name__ == "Bytes" and isinstance(sub.length, int):
        return f"{sub.length}s"
    raise TypeError(
        f"layout field {field.name!r}: only fixed-size integers (Int*ul/sl, Int8ul) and "
        f"Bytes(N) character arrays are supported, got {sub!r}"
    )


# Positions of the classic fields in a layout's unpacked ``fmt`` tuple and in
# ``Event._header``, found by name so that they follow the field list; the fields a later
# layout appends start at EXTRA. Hot paths read them as module constants.
(TS, PID_ID, MNT_ID, HOST_PPID, HOST_PID, PPID, PID, UID, EVENT_ID, ARGNUM, RETVAL,
 COMM) = (CLASSIC_NAMES.index(name) for name in (
    "ts", "pid_id", "mnt_id", "host_ppid", "host_pid", "ppid", "pid", "uid", "event_id",
    "argnum", "retval", "comm"))
EXTRA = len(CLASSIC_NAMES)


def _offsets() -> dict[str, int]:
    offsets, at = {}, 0
    for field in CLASSIC_FIELDS:
        offsets[field.name] = at
        at += field.subcon.sizeof()
    return offsets


#: Byte offset of each classic field in a raw sample (the same in every layout).
OFFSETS: dict[str, int] = _offsets()


def header_reader(*names: str) -> struct.Struct:
    """A ``struct`` that reads the named classic fields (in wire order) from the start of a
    raw sample of any layout, skipping the bytes before and between them: for code that
    needs a few header fields of samples it does not decode (its ``size`` is the bytes a
    sample must have)."""
    fields = {field.name: field for field in CLASSIC_FIELDS}
    fmt, at = "<", 0
    for name in names:
        offset = OFFSETS[name]
        if offset < at:
            raise ValueError(f"header fields must be named in wire order: {names}")
        fmt += (f"{offset - at}x" if offset > at else "") + _fmt_code(fields[name])
        at = offset + fields[name].subcon.sizeof()
    return struct.Struct(fmt)


def make_layout(name: str, extra_fields: tuple[Renamed, ...] = ()) -> Layout:
    """Build a layout from the classic fields plus ``extra_fields`` appended after comm."""
    fields = CLASSIC_FIELDS + tuple(extra_fields)
    names = tuple(field.name for field in fields)
    if len(set(names)) != len(names) or any(not n for n in names):
        raise ValueError(f"layout {name!r}: field names must be unique and non-empty: {names}")
    fmt = struct.Struct("<" + "".join(_fmt_code(field) for field in fields))
    schema = CStruct(*fields)
    if schema.sizeof() != fmt.size:
        raise AssertionError(f"layout {name!r}: schema and struct sizes differ")
    text = frozenset(field.name for field in fields if _fmt_code(field).endswith("s"))
    return Layout(name, schema, fmt.size, fmt, names, text, names[len(CLASSIC_NAMES):],
                  names.index("hash") if "hash" in names else None)


_CWD = ("cwd" / Bytes(80),)
_TTY = ("tty" / Bytes(64),)
_OID = ("oid" / Int32ul,)
_EXEC_ID = ("exec_id" / Int64ul,)
_HASH = ("hash" / Int8ul,)

LAYOUTS: dict[str, Layout] = {}


def register_layout(name: str, extra_fields: tuple[Renamed, ...] = ()) -> Layout:
    """Make a layout of your own selectable by name (classic fields + ``extra_fields``)."""
    if name in LAYOUTS:
        raise ValueError(f"a layout named {name!r} is already registered")
    layout = make_layout(name, extra_fields)
    LAYOUTS[name] = layout
    return layout


register_layout("classic")
register_layout("cwd", _CWD)
register_layout("cwd-oid", _CWD + _OID)
register_layout("cwd-tty-oid", _CWD + _TTY + _OID)
register_layout("exec-id", _CWD + _TTY + _OID + _EXEC_ID)
register_layout("hash", _CWD + _TTY + _OID + _EXEC_ID + _HASH)


def get_layout(layout: str | Layout) -> Layout:
    """Resolve a layout name (or pass a ``Layout`` through); unknown names list the known."""
    if isinstance(layout, Layout):
        return layout
    try:
        return LAYOUTS[layout]
    except (KeyError, TypeError):
        known = ", ".join(LAYOUTS)
        raise ValueError(f"unknown context layout {layout!r}; known layouts: {known}") from None
