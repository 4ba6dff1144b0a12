"""A BTF type compiled once into ``struct.Struct`` reads: events decoded at ring-buffer speed.

:class:`~ebpfwire.kernel.maps.BtfCodec` walks the type for every value (fine for a map
dump, 1-2k events/s for an event stream). :class:`CompiledStruct` walks it once into a flat
list of :class:`Field` (nested structs and arrays of structs flattened to dotted names,
``items[0].pid``), lays the fields out as one ``struct.Struct`` per layer of
non-overlapping fields (a union's members are the extra layers) and generates one decode
function that unpacks them and builds the dict. Fix-ups: ``char[N]`` as text cut at the
first NUL (the bytes where not UTF-8), other 1-byte arrays as bytes, enums as names,
bitfields shifted out of their bytes, a named union as its bytes plus each member, a
flexible array tail as the record's remaining bytes. The same field list gives the Arrow
batch path (:mod:`ebpfwire.columnar.btfevents`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ebpfwire.kernel.btf import Btf, BtfKind
from ebpfwire.kernel.errors import BtfError, LoaderError

BTF_INT_CHAR, BTF_INT_BOOL = 2, 4
_INT_FMT = {1: "b", 2: "h", 4: "i", 8: "q"}
_FLOAT_FMT = {2: "e", 4: "f", 8: "d"}
SCALARS = ("int", "bool", "float", "enum")


@dataclass(frozen=True)
class Field:
    """One output value of a record.

    ``kind``: ``int``, ``bool``, ``float``, ``enum`` (``fmt`` is its ``struct`` code);
    ``list`` (``count`` scalars of ``item``), ``text`` (a ``char`` array), ``bytes`` (any
    other 1-byte array, a named union, an int wider than 8 bytes: ``wide``), ``bits``
    (``width`` bits from bit ``bit`` of the record), ``tail`` (a flexible array: the
    bytes from ``offset`` to the record's end).
    """

    name: str
    kind: str
    offset: int
    size: int
    fmt: str = ""
    count: int = 1
    item: str = ""
    signed: bool = False
    bit: int = 0
    width: int = 0
    enum: tuple[tuple[int, str], ...] = ()
    wide: bool = False


def struct_fields(btf: Btf, type_id: int) -> list[Field]:
    """The flat fields of ``type_id`` (a scalar type gives one field named ``value``)."""
    out: list[Field] = []
    _walk(btf, type_id, "", 0, out, 0)
    return out


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _scalar(btf: Btf, tid: int) -> tuple[str, str, int, bool, tuple] | None:
    """(kind, struct code, size, signed, enum names) of a scalar type; None otherwise."""
    tid = btf.resolve(tid)
    kind = btf.kind(tid)
    if kind == BtfKind.PTR:
        return "int", "Q", 8, False, ()
    if not tid:
        return None
    rec = btf.type(tid)
    size = rec.size_or_type
    if kind == BtfKind.INT:
        enc = rec.detail >> 24 & 0xF
        if enc & BTF_INT_BOOL and size == 1:
            return "bool", "?", 1, False, ()
        signed = btf.signed(tid)
        fmt = _INT_FMT.get(size)
        return ("int", fmt if signed else fmt.upper(), size, signed, ()) if fmt else (
            "wide", "", size, signed, ())
    if kind == BtfKind.FLOAT and size in _FLOAT_FMT:
        return "float", _FLOAT_FMT[size], size, True, ()
    if kind in (BtfKind.ENUM, BtfKind.ENUM64) and size in _INT_FMT:
        signed = btf.signed(tid)
        if kind == BtfKind.ENUM:
            names = tuple((v.val if signed else v.val & 0xFFFFFFFF, btf.string(v.name_off))
                          for v in rec.detail)
        else:
            names = tuple(((v.val_hi32 << 32 | v.val_lo32) - ((1 << 64) if signed and
                           v.val_hi32 >> 31 else 0), btf.string(v.name_off))
                          for v in rec.detail)
        fmt = _INT_FMT[size]
        return "enum", fmt if signed else fmt.upper(), size, signed, names
    return None


def _is_char(btf: Btf, tid: int) -> bool:
    tid = btf.resolve(tid)
    if btf.kind(tid) != BtfKind.INT:
        return False
    rec = btf.type(tid)
    return rec.size_or_type == 1 and (rec.name == "char" or bool(rec.detail >> 24 & BTF_INT_CHAR))


def _walk(btf: Btf, tid: int, prefix: str, bits: int, out: list[Field], depth: int) -> None:
    if depth > 32:
        raise BtfError(f"{btf.origin}: type {tid} nests deeper than 32 levels")
    at = bits // 8
    scalar = _scalar(btf, tid)
    if scalar is not None:
        kind, fmt, size, signed, names = scalar
        if kind == "wide":
            out.append(Field(prefix or "value", "bytes", at, size, signed=signed, wide=True))
        else:
            out.append(Field(prefix or "value", kind, at, size, fmt, signed=signed, enum=names))
        return
    tid = btf.resolve(tid)
    kind = btf.kind(tid)
    rec = btf.type(tid) if tid else None
    if kind == BtfKind.ARRAY:
        elem, n = rec.detail.type, rec.detail.nelems
        if n == 0:
            out.append(Field(prefix, "tail", at, 0))
            return
        step = btf.sizeof(elem)
        if step == 1 and _scalar(btf, elem) and _scalar(btf, elem)[0] == "int":
            out.append(Field(prefix, "text" if _is_char(btf, elem) else "bytes", at, n))
            return
        item = _scalar(btf, elem)
        if item is not None and item[0] != "wide":
            ikind, fmt, size, signed, names = item
            out.append(Field(prefix, "list", at, size * n, fmt, n, ikind, signed, enum=names))
            return
        for i in range(n):
            _walk(btf, elem, f"{prefix}[{i}]", bits + i * step * 8, out, depth + 1)
        return
    if kind in (BtfKind.STRUCT, BtfKind.UNION):
        if kind == BtfKind.UNION and prefix:
            out.append(Field(prefix, "bytes", at, rec.size_or_type))
        for m in rec.detail:
            name = btf.string(m.name_off) if m.name_off else ""
            where = _join(prefix, name) if name else prefix
            if rec.kind_flag and m.offset >> 24:
                width, bit = m.offset >> 24, bits + (m.offset & 0xFFFFFF)
                member = _scalar(btf, m.type)
                out.append(Field(where, "bits", bit // 8, (bit % 8 + width + 7) // 8,
                                 signed=bool(member and member[3]), bit=bit, width=width))
            else:
                moff = m.offset & 0xFFFFFF if rec.kind_flag else m.offset
                _walk(btf, m.type, where, bits + moff, out, depth + 1)
        return
    name = f" {rec.name!r}" if rec is not None and rec.name else ""
    raise BtfError(f"{btf.origin}: type {tid}{name} ({kind.name}) cannot be decoded as an event")


def _text(raw: bytes) -> str | bytes:
    """A ``char[N]``: up to the first NUL, as text, or as bytes where not UTF-8."""
    raw = raw.partition(b"\0")[0]
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def _signed(value: int, width: int) -> int:
    return value - (1 << width) if value >> (width - 1) else value


@dataclass
class _Slot:
    offset: int
    size: int
    fmt: str
    values: int


class CompiledStruct:
    """``decode(data) -> dict`` for one BTF type, fields in declaration order.

    A record longer than the type (perf padding, a flexible tail) is fine; a shorter one
    is a ``LoaderError`` naming both sizes.
    """

    def __init__(self, btf: Btf, type_id: int) -> None:
        self.btf = btf
        self.type_id = type_id
        self.size = btf.sizeof(type_id)
        rec = btf.type(btf.resolve(type_id)) if btf.resolve(type_id) else None
        self.name = rec.name if rec is not None else ""
        self.fields = struct_fields(btf, type_id)
        self.names = [f.name for f in self.fields]
        self.decode = self._compile()

    def _compile(self):
        slots: list[_Slot] = []
        exprs: list[str] = []
        env: dict[str, Any] = {"_text": _text, "_signed": _signed, "_int": int.from_bytes}
        chunks: dict[tuple[int, int], int] = {}  # bitfield byte ranges -> slot index

        def slot(offset: int, size: int, fmt: str, values: int = 1) -> int:
            slots.append(_Slot(offset, size, fmt, values))
            return len(slots) - 1

        # bitfield bytes merged into chunks, read once each
        spans = sorted((f.offset, f.offset + f.size) for f in self.fields if f.kind == "bits")
        merged: list[list[int]] = []
        for lo, hi in spans:
            if merged and lo < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        refs: list[Any] = []
        for f in self.fields:
            if f.kind == "bits":
                lo, hi = next((lo, hi) for lo, hi in merged if lo <= f.offset < hi)
                if (lo, hi) not in chunks:
                    size = hi - lo
                    chunks[lo, hi] = slot(lo, size, {1: "B", 2: "H", 4: "I", 8: "Q"}.get(
                        size, f"{size}s"))
                refs.append((chunks[lo, hi], lo))
            elif f.kind == "tail":
                refs.append(None)
            elif f.kind == "list":
                refs.append(slot(f.offset, f.size, f"{f.count}{f.fmt}", f.count))
            elif f.kind in ("text", "bytes"):
                refs.append(slot(f.offset, f.size, f"{f.size}s"))
            else:
                refs.append(slot(f.offset, f.size, f.fmt))
        # layers: each slot in the first layer it does not overlap
        layers: list[list[int]] = []
        ends: list[int] = []
        for i in sorted(range(len(slots)), key=lambda i: slots[i].offset):
            s = slots[i]
            n = next((n for n, end in enumerate(ends) if s.offset >= end), len(ends))
            if n == len(ends):
                layers.append([])
                ends.append(0)
            layers[n].append(i)
            ends[n] = s.offset + s.size
        first_var: dict[int, int] = {}
        lines = []
        var = 0
        for n, layer in enumerate(layers):
            fmt, pos, names = "<", 0, []
            for i in layer:
                s = slots[i]
                if s.offset > pos:
                    fmt += f"{s.offset - pos}x"
                fmt += s.fmt
                pos = s.offset + s.size
                first_var[i] = var
                names += [f"v{var + k}" for k in range(s.values)]
                var += s.values
            env[f"_u{n}"] = struct.Struct(fmt).unpack_from
            lines.append(f"    {', '.join(names)}, = _u{n}(data)")
        for k, (f, ref) in enumerate(zip(self.fields, refs, strict=True)):
            if f.kind == "tail":
                exprs.append(f"data[{f.offset}:]")
                continue
            if f.kind == "bits":
                index, lo = ref
                v = f"v{first_var[index]}"
                if slots[index].fmt.endswith("s"):
                    v = f"_int({v}, 'little')"
                e = f"({v} >> {f.bit - lo * 8}) & {(1 << f.width) - 1}"
                exprs.append(f"_signed({e}, {f.width})" if f.signed else e)
                continue
            v = f"v{first_var[ref]}"
            if f.kind == "text":
                exprs.append(f"_text({v})")
            elif f.wide:
                exprs.append(f"_int({v}, 'little', signed={f.signed})")
            elif f.kind == "enum":
                env[f"_e{k}"] = dict(f.enum)
                exprs.append(f"_e{k}.get({v}, {v})")
            elif f.kind == "list":
                items = [f"v{first_var[ref] + j}" for j in range(f.count)]
                if f.item == "enum":
                    env[f"_e{k}"] = dict(f.enum)
                    items = [f"_e{k}.get({x}, {x})" for x in items]
                exprs.append(f"[{', '.join(items)}]")
            else:
                exprs.append(v)
        body = ", ".join(f"{f.name!r}: {e}" for f, e in zip(self.fields, exprs, strict=True))
        env["_short"] = self._short
        src = (f"def decode(data):\n    if len(data) < {self.size}:\n        _short(data)\n"
               + "\n".join(lines) + f"\n    return {{{body}}}\n")
        exec(compile(src, f"<btf {self.name or self.type_id}>", "exec"), env)  # noqa: S102
        return env["decode"]

    def _short(self, data: bytes) -> None:
        raise LoaderError(f"{self.name or 'type ' + str(self.type_id)}: expected a record of at "
                          f"least {self.size} bytes, found {len(data)}")
