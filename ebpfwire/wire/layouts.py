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
    return Layout(name, schema, fmt.size, fmt, names, text, names[len(CLASSIC_NAMES):])


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
