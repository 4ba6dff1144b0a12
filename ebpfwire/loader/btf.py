"""BTF (BPF Type Format): construct schemas and a lazy type index.

Used twice: on the object's ``.BTF`` section (map definitions in ``.maps``) and on the
running kernel's ``/sys/kernel/btf/vmlinux`` (struct member offsets for the config map).
The vmlinux blob holds ~100k types, far too many to run through construct at import
time, so a quick ``struct`` scan records where each type starts and its schema parses
only the records actually asked for. ``test_btf.py`` holds the scan equal to the schema.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from pathlib import Path

from construct import (
    Array,
    Computed,
    Const,
    Container,
    Int8ul,
    Int16ul,
    Int32sl,
    Int32ul,
    Pass,
    Struct,
    Switch,
    this,
)

from ebpfwire.loader.errors import BtfError

VMLINUX_PATH = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F


class BtfKind(enum.IntEnum):
    """Type kinds (``BTF_KIND_*``)."""

    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


BtfHeader = Struct(
    "magic" / Const(BTF_MAGIC, Int16ul),
    "version" / Int8ul,
    "flags" / Int8ul,
    "hdr_len" / Int32ul,
    "type_off" / Int32ul,  # relative to the end of the header
    "type_len" / Int32ul,
    "str_off" / Int32ul,  # relative to the end of the header
    "str_len" / Int32ul,
)

BtfMember = Struct("name_off" / Int32ul, "type" / Int32ul, "offset" / Int32ul)
BtfEnumValue = Struct("name_off" / Int32ul, "val" / Int32sl)
BtfEnum64Value = Struct("name_off" / Int32ul, "val_lo32" / Int32ul, "val_hi32" / Int32ul)
BtfParam = Struct("name_off" / Int32ul, "type" / Int32ul)
BtfVarSecInfo = Struct("type" / Int32ul, "offset" / Int32ul, "size" / Int32ul)
BtfArray = Struct("type" / Int32ul, "index_type" / Int32ul, "nelems" / Int32ul)

# One type record: ``struct btf_type`` then the kind-specific tail.
BtfType = Struct(
    "name_off" / Int32ul,
    "info" / Int32ul,
    "kind" / Computed((this.info >> 24) & 0x1F),
    "vlen" / Computed(this.info & 0xFFFF),
    "kind_flag" / Computed(this.info >> 31),
    "size_or_type" / Int32ul,  # size for INT/ENUM/STRUCT/UNION/DATASEC/FLOAT, else a type id
    "detail"
    / Switch(
        this.kind,
        {
            BtfKind.INT: Int32ul,  # encoding, bit offset, bit count
            BtfKind.ARRAY: BtfArray,
            BtfKind.STRUCT: Array(this.vlen, BtfMember),
            BtfKind.UNION: Array(this.vlen, BtfMember),
            BtfKind.ENUM: Array(this.vlen, BtfEnumValue),
            BtfKind.FUNC_PROTO: Array(this.vlen, BtfParam),
            BtfKind.VAR: Int32ul,  # linkage
            BtfKind.DATASEC: Array(this.vlen, BtfVarSecInfo),
            BtfKind.DECL_TAG: Int32sl,  # component index
            BtfKind.ENUM64: Array(this.vlen, BtfEnum64Value),
        },
        default=Pass,
    ),
)

# Bytes after the 12-byte common part: fixed per kind, plus per-vlen entry size.
_FIXED_TAIL = {BtfKind.INT: 4, BtfKind.ARRAY: 12, BtfKind.VAR: 4, BtfKind.DECL_TAG: 4}
_VLEN_ENTRY = {
    BtfKind.STRUCT: 12,
    BtfKind.UNION: 12,
    BtfKind.ENUM: 8,
    BtfKind.FUNC_PROTO: 8,
    BtfKind.DATASEC: 12,
    BtfKind.ENUM64: 12,
}
_MODIFIERS = {
    BtfKind.TYPEDEF,
    BtfKind.VOLATILE,
    BtfKind.CONST,
    BtfKind.RESTRICT,
    BtfKind.TYPE_TAG,
}
_COMMON = struct.Struct("<III")


def record_size(kind: int, vlen: int) -> int:
    """Size in bytes of one type record, from its kind and vlen (the fast scan's rule)."""
    if kind > max(BtfKind):
        raise BtfError(f"unknown BTF kind {kind}")
    return 12 + _FIXED_TAIL.get(kind, 0) + _VLEN_ENTRY.get(kind, 0) * vlen


class Btf:
    """A parsed BTF blob: type ids, names, sizes and struct member offsets."""

    def __init__(self, data: bytes, origin: str = "<bytes>") -> None:
        self.origin = origin
        if len(data) < BtfHeader.sizeof():
            raise BtfError(f"{origin}: {len(data)} bytes, too short for a BTF header (24)")
        if struct.unpack_from("<H", data)[0] != BTF_MAGIC:
            raise BtfError(
                f"{origin}: expected BTF magic 0x{BTF_MAGIC:x} (little-endian), "
                f"found 0x{struct.unpack_from('<H', data)[0]:x}"
            )
        self.header = BtfHeader.parse(data)
        base = self.header.hdr_len
        types_start = base + self.header.type_off
        strs_start = base + self.header.str_off
        if types_start + self.header.type_len > len(data) or (
            strs_start + self.header.str_len > len(data)
        ):
            raise BtfError(f"{origin}: type or string section runs past the blob ({len(data)})")
        self._types = memoryview(data)[types_start : types_start + self.header.type_len]
        self.strings = bytes(data[strs_start : strs_start + self.header.str_len])
        self._offsets: list[int] = [-1]  # type id 0 is void
        self._kinds: list[int] = [0]
        self._name_offs: list[int] = [0]
        self._scan()
        self._by_name_off: dict[int, list[int]] | None = None
        self._cache: dict[int, Container] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> Btf:
        """Parse a raw BTF file such as ``/sys/kernel/btf/vmlinux``."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BtfError(f"cannot read BTF from {path}: {exc.strerror}", exc.errno) from exc
        return cls(data, str(path))

    @classmethod
    def vmlinux(cls) -> Btf:
        """The running kernel's BTF (needs CONFIG_DEBUG_INFO_BTF)."""
        return cls.from_file(VMLINUX_PATH)

    def _scan(self) -> None:
        types, pos, end = self._types, 0, len(self._types)
        while pos < end:
            if pos + 12 > end:
                raise BtfError(f"{self.origin}: truncated type record at type offset {pos}")
            name_off, info, _ = _COMMON.unpack_from(types, pos)
            kind = (info >> 24) & 0x1F
            self._offsets.append(pos)
            self._kinds.append(kind)
            self._name_offs.append(name_off)
            pos += record_size(kind, info & 0xFFFF)
        if pos != end:
            raise BtfError(f"{self.origin}: last type record runs past the type section")

    def __len__(self) -> int:
        """Number of type ids, void (id 0) included."""
        return len(self._offsets)

    def string(self, offset: int) -> str:
        """The NUL-terminated string at ``offset`` in the string section."""
        if not 0 <= offset < len(self.strings):
            raise BtfError(f"{self.origin}: string offset {offset} outside the string section")
        end = self.strings.find(b"\0", offset)
        return self.strings[offset : end if end >= 0 else None].decode("utf-8", "replace")

    def type(self, type_id: int) -> Container:
        """The parsed record of ``type_id`` (schema :data:`BtfType`), with its ``name``."""
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"{self.origin}: type id {type_id} out of range 1..{len(self) - 1}")
        rec = self._cache.get(type_id)
        if rec is None:
            start = self._offsets[type_id]
            _, info, _ = _COMMON.unpack_from(self._types, start)
            end = start + record_size((info >> 24) & 0x1F, info & 0xFFFF)
            rec = BtfType.parse(bytes(self._types[start:end]))
            rec.name = self.string(rec.name_off)
            self._cache[type_id] = rec
        return rec

    def kind(self, type_id: int) -> BtfKind:
        """The kind of ``type_id`` (void is ``UNKN``)."""
        return BtfKind(self._kinds[type_id])

    def ids_named(self, name: str, kinds: Iterable[BtfKind] | None = None) -> list[int]:
        """All type ids called ``name``, optionally only of the given kinds."""
        if self._by_name_off is None:
            index: dict[int, list[int]] = {}
            for tid, off in enumerate(self._name_offs):
                if off:
                    index.setdefault(off, []).append(tid)
            self._by_name_off = index
        wanted = set(kinds) if kinds is not None else None
        needle = b"\0" + name.encode() + b"\0"
        found: list[int] = []
        pos = self.strings.find(needle)
        while pos >= 0:
            for tid in self._by_name_off.get(pos + 1, ()):
                if wanted is None or self._kinds[tid] in wanted:
                    found.append(tid)
            pos = self.strings.find(needle, pos + 1)
        return sorted(found)

    def struct_id(self, name: str) -> int:
        """The id of the complete struct or union ``name``; a clear error if absent."""
        ids = self.ids_named(name, (BtfKind.STRUCT, BtfKind.UNION))
        if ids:
            return ids[0]
        if self.ids_named(name, (BtfKind.FWD,)):
            raise BtfError(
                f"{self.origin}: struct {name} is only a forward declaration, its layout "
                "is not described"
            )
        raise BtfError(f"{self.origin}: no struct or union named {name!r}")

    def resolve(self, type_id: int) -> int:
        """Follow typedefs and qualifiers to the underlying type id."""
        seen = 0
        while type_id and self._kinds[type_id] in _MODIFIERS:
            type_id = self.type(type_id).size_or_type
            seen += 1
            if seen > 64:
                raise BtfError(f"{self.origin}: typedef/qualifier loop at type {type_id}")
        return type_id

    def sizeof(self, type_or_name: int | str) -> int:
        """Size in bytes of a type id, or of the struct/union with that name."""
        tid = self.struct_id(type_or_name) if isinstance(type_or_name, str) else type_or_name
        tid = self.resolve(tid)
        kind = self._kinds[tid]
        rec = self.type(tid) if tid else None
        if kind in (
            BtfKind.INT,
            BtfKind.STRUCT,
            BtfKind.UNION,
            BtfKind.ENUM,
            BtfKind.ENUM64,
            BtfKind.DATASEC,
            BtfKind.FLOAT,
        ):
            return rec.size_or_type
        if kind == BtfKind.PTR:
            return 8
        if kind == BtfKind.ARRAY:
            return rec.detail.nelems * self.sizeof(rec.detail.type)
        name = f" {rec.name!r}" if rec is not None else ""
        raise BtfError(f"{self.origin}: type {tid}{name} ({BtfKind(kind).name}) has no size")

    def _find_member(self, struct_tid: int, member: str) -> tuple[int, int] | None:
        """(bit offset, type id) of ``member``, looking into anonymous struct/union members."""
        for m in self.type(struct_tid).detail:
            bits = m.offset & 0xFFFFFF if self.type(struct_tid).kind_flag else m.offset
            if m.name_off and self.string(m.name_off) == member:
                return bits, m.type
            if not m.name_off:
                inner = self.resolve(m.type)
                if self._kinds[inner] in (BtfKind.STRUCT, BtfKind.UNION):
                    hit = self._find_member(inner, member)
                    if hit is not None:
                        return bits + hit[0], hit[1]
        return None

    def member_offset(self, struct_name: str, path: str) -> int:
        """Byte offset of ``path`` (``"member"`` or ``"a.b.c"`` through embedded structs)."""
        tid = self.struct_id(struct_name)
        total_bits = 0
        where = f"struct {struct_name}"
        for part in path.split("."):
            hit = self._find_member(tid, part)
            if hit is None:
                raise BtfError(f"{self.origin}: {where} has no member {part!r}")
            total_bits += hit[0]
            nxt = self.resolve(hit[1])
            where = f"{where}.{part}"
            tid = nxt
            if part != path.split(".")[-1] and self._kinds[tid] not in (
                BtfKind.STRUCT,
                BtfKind.UNION,
            ):
                raise BtfError(f"{self.origin}: {where} is not a struct, cannot look inside")
        if total_bits % 8:
            raise BtfError(f"{self.origin}: {struct_name}.{path} is a bitfield (bit {total_bits})")
        return total_bits // 8
