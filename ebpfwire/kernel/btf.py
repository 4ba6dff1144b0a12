"""BTF (BPF Type Format): construct schemas and a lazy type index.

Used twice: on the object's ``.BTF`` section (map definitions in ``.maps``) and on the
running kernel's ``/sys/kernel/btf/vmlinux`` (struct member offsets for the config map).
The vmlinux blob holds ~127k types, far too many to run through construct each time a
monitor opens, so a tight scan over the type section as 32-bit words records where each
type starts (a record's length follows from its kind and vlen alone, :func:`record_size`)
and the schema parses only the records actually asked for; member lookups read the member
array with ``struct`` directly. ``test_btf.py`` holds the scan and the lookups equal to
the schema's.
"""

from __future__ import annotations

import array
import enum
import re
import struct
import sys
from collections.abc import Iterable, Iterator
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

from ebpfwire.kernel.errors import BtfError

VMLINUX_PATH = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F
BTF_INT_SIGNED = 1  # an INT's encoding bit


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
# kinds whose size-or-type word is a size; kinds with (name or type, type or offset, ...)
# triples after the common words
_SIZED = frozenset({BtfKind.INT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.ENUM64,
                    BtfKind.DATASEC, BtfKind.FLOAT})
_WITH_MEMBERS = frozenset({BtfKind.STRUCT, BtfKind.UNION, BtfKind.DATASEC})
_MAX_KIND = max(BtfKind)
# the same rule in 32-bit words, indexed by kind; None for kinds 20-31 (unknown)
_FIXED_WORDS = [3 + _FIXED_TAIL.get(k, 0) // 4 if k <= _MAX_KIND else None for k in range(32)]
_VLEN_WORDS = [_VLEN_ENTRY.get(k, 0) // 4 for k in range(32)]


def essential_name(name: str) -> str:
    """``name`` without a ``___flavor`` suffix: up to the last ``X___Y`` where neither X
    nor Y is an underscore (libbpf's rule)."""
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name[i + 1 : i + 4] == "___" and name[i + 4] != "_":
            return name[: i + 1]
    return name


def record_size(kind: int, vlen: int) -> int:
    """Size in bytes of one type record, from its kind and vlen (the fast scan's rule)."""
    if kind > _MAX_KIND:
        raise BtfError(f"unknown BTF kind {kind}")
    return 12 + _FIXED_TAIL.get(kind, 0) + _VLEN_ENTRY.get(kind, 0) * vlen


class Btf:
    """A parsed BTF blob: type ids, names, sizes and struct member offsets.

    With ``base`` the blob is split BTF (a kernel module's, on top of vmlinux): its type
    ids continue after the base's and its string offsets after the base's strings, so
    every id and name offset means the same thing as in the kernel; lookups by name
    (:meth:`ids_named`, :meth:`ids_by_essential_name`) find the blob's own types only.
    """

    def __init__(self, data: bytes, origin: str = "<bytes>", base: Btf | None = None) -> None:
        self.origin = origin
        self.base = base
        # the first own type id and string offset (0 without a base: nothing delegated)
        self.first_id = len(base) if base is not None else 0
        self.str_base = len(base.strings) if base is not None else 0
        if len(data) < BtfHeader.sizeof():
            raise BtfError(f"{origin}: {len(data)} bytes, too short for a BTF header (24)")
        if struct.unpack_from("<H", data)[0] != BTF_MAGIC:
            raise BtfError(
                f"{origin}: expected BTF magic 0x{BTF_MAGIC:x} (little-endian), "
                f"found 0x{struct.unpack_from('<H', data)[0]:x}"
            )
        self.header = BtfHeader.parse(data)
        self.data = bytes(data)
        base = self.header.hdr_len
        types_start = base + self.header.type_off
        strs_start = base + self.header.str_off
        if types_start + self.header.type_len > len(data) or (
            strs_start + self.header.str_len > len(data)
        ):
            raise BtfError(f"{origin}: type or string section runs past the blob ({len(data)})")
        self._types = memoryview(data)[types_start : types_start + self.header.type_len]
        self.strings = bytes(data[strs_start : strs_start + self.header.str_len])
        # the type section as little-endian 32-bit words: every record is whole words long
        self._words = array.array("I")
        self._words.frombytes(self._types[: len(self._types) // 4 * 4])
        if sys.byteorder == "big":
            self._words.byteswap()
        # word index of each record, by type id (void and a base's types: -1)
        self._starts: list[int] = [-1] * max(1, self.first_id)
        self._kinds: list[int] = list(self.base._kinds) if self.base is not None else [0]
        self._name_offs = array.array("I", bytes(4 * len(self._starts)))
        self._scan()
        self._name_off_bytes = self._name_offs.tobytes()  # searched by _ids_at
        self._cache: dict[int, Container] = {}
        self._members: dict[int, list[tuple[int, int, int]]] = {}
        self._struct_ids: dict[str, int] = {}

    @classmethod
    def from_file(cls, path: str | Path, base: Btf | None = None) -> Btf:
        """Parse a raw BTF file such as ``/sys/kernel/btf/vmlinux`` (a module's on ``base``)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BtfError(f"cannot read BTF from {path}: {exc.strerror}", exc.errno) from exc
        return cls(data, str(path), base)

    @classmethod
    def vmlinux(cls) -> Btf:
        """The running kernel's BTF (needs CONFIG_DEBUG_INFO_BTF)."""
        return cls.from_file(VMLINUX_PATH)

    def _scan(self) -> None:
        """Index every record: one pass of word reads, its length from size tables."""
        words, pos, kind, end = self._words, 0, 0, len(self._words)
        fixed, per = _FIXED_WORDS, _VLEN_WORDS
        starts, kinds, name_offs = self._starts, self._kinds, self._name_offs
        try:
            while pos < end:
                info = words[pos + 1]
                kind = (info >> 24) & 0x1F
                size = fixed[kind] + per[kind] * (info & 0xFFFF)
                starts.append(pos)
                kinds.append(kind)
                name_offs.append(words[pos])
                pos += size
        except IndexError:  # fewer than 2 words left: not even a record's info
            raise BtfError(
                f"{self.origin}: truncated type record at type offset {pos * 4}"
            ) from None
        except TypeError:  # None in _FIXED_WORDS
            raise BtfError(
                f"{self.origin}: unknown BTF kind {kind} at type offset {pos * 4}"
            ) from None
        type_len = len(self._types)
        if pos * 4 < type_len:  # 1-3 bytes after the last whole record
            raise BtfError(f"{self.origin}: truncated type record at type offset {pos * 4}")
        if pos * 4 > type_len:
            last = starts[-1] * 4
            if last + 12 > type_len:
                raise BtfError(f"{self.origin}: truncated type record at type offset {last}")
            raise BtfError(
                f"{self.origin}: last type record (type offset {last}) runs past the type "
                f"section ({type_len} bytes)"
            )

    def __len__(self) -> int:
        """Number of type ids, void (id 0) included."""
        return len(self._starts)

    def string(self, offset: int) -> str:
        """The NUL-terminated string at ``offset`` in the string section."""
        if offset < self.str_base:
            return self.base.string(offset)
        offset -= self.str_base
        if not 0 <= offset < len(self.strings):
            raise BtfError(f"{self.origin}: string offset {offset} outside the string section")
        end = self.strings.find(b"\0", offset)
        return self.strings[offset : end if end >= 0 else None].decode("utf-8", "replace")

    def type(self, type_id: int) -> Container:
        """The parsed record of ``type_id`` (schema :data:`BtfType`), with its ``name``."""
        if not 0 < type_id < len(self._starts):
            raise BtfError(f"{self.origin}: type id {type_id} out of range 1..{len(self) - 1}")
        if type_id < self.first_id:
            return self.base.type(type_id)
        rec = self._cache.get(type_id)
        if rec is None:
            start = self._starts[type_id] * 4
            _, info, _ = _COMMON.unpack_from(self._types, start)
            end = start + record_size((info >> 24) & 0x1F, info & 0xFFFF)
            rec = BtfType.parse(bytes(self._types[start:end]))
            rec.name = self.string(rec.name_off)
            self._cache[type_id] = rec
        return rec

    def kind(self, type_id: int) -> BtfKind:
        """The kind of ``type_id`` (void is ``UNKN``)."""
        return BtfKind(self._kinds[type_id])

    def _string_matches(self, pattern: bytes) -> Iterator[tuple[str, int]]:
        """(string, offset) of each whole string matching group 1 of ``\\0(...)(?=\\0)``,
        the base's strings too (a module's types may be named by them)."""
        if self.base is not None:
            yield from self.base._string_matches(pattern)
        for match in re.finditer(pattern, self.strings):
            yield match[1].decode(), match.start() + 1 + self.str_base

    def _string_offsets(self, names: Iterable[str]) -> dict[str, list[int]]:
        """Where each name stands as a whole string: one regex pass over the section."""
        alternatives = b"|".join(re.escape(name.encode()) for name in names)
        found: dict[str, list[int]] = {}
        for name, off in self._string_matches(b"\\0(" + alternatives + b")(?=\\0)"):
            found.setdefault(name, []).append(off)
        return found

    def _ids_at(self, name_off: int) -> list[int]:
        """Type ids whose name starts at ``name_off`` (``bytes.find`` in the name offsets)."""
        target = array.array("I", [name_off]).tobytes()
        ids: list[int] = []
        hit = self._name_off_bytes.find(target)
        while hit >= 0:
            if hit % 4:  # straddles two entries
                hit = self._name_off_bytes.find(target, hit + 1)
                continue
            ids.append(hit // 4)
            hit = self._name_off_bytes.find(target, hit + 4)
        return ids

    def ids_named(self, name: str, kinds: Iterable[BtfKind] | None = None) -> list[int]:
        """All type ids called ``name``, optionally only of the given kinds.

        The name is found in the string section first, then its offset among the types'
        name offsets: no index of all the names is built.
        """
        wanted = set(kinds) if kinds is not None else None
        ids = [
            tid
            for off in self._string_offsets([name]).get(name, ())
            for tid in self._ids_at(off)
            if wanted is None or self._kinds[tid] in wanted
        ]
        return sorted(ids)

    def struct_ids(self, names: Iterable[str]) -> dict[str, int]:
        """The complete struct or union of each name that has one, found in one pass.

        What :meth:`struct_id` would give for each, remembered for it and
        :meth:`member_offset`; names without a complete struct are left out.
        """
        wanted = [name for name in dict.fromkeys(names) if name not in self._struct_ids]
        if wanted:
            for name, offs in self._string_offsets(wanted).items():
                ids = [
                    tid
                    for off in offs
                    for tid in self._ids_at(off)
                    if self._kinds[tid] in (BtfKind.STRUCT, BtfKind.UNION)
                ]
                if ids:
                    self._struct_ids[name] = min(ids)
        return {name: self._struct_ids[name] for name in names if name in self._struct_ids}

    def struct_id(self, name: str) -> int:
        """The id of the complete struct or union ``name``; a clear error if absent."""
        found = self.struct_ids([name])
        if found:
            return found[name]
        if self.ids_named(name, (BtfKind.FWD,)):
            raise BtfError(
                f"{self.origin}: struct {name} is only a forward declaration, its layout "
                "is not described"
            )
        raise BtfError(f"{self.origin}: no struct or union named {name!r}")

    def ids_by_essential_name(self, name: str) -> list[int]:
        """Type ids whose name without its ``___flavor`` suffix is ``name`` (CO-RE
        candidates)."""
        pattern = b"\\0(" + re.escape(name.encode()) + b"(?:___[^\\0]*)?)(?=\\0)"
        ids = [
            tid
            for found, off in self._string_matches(pattern)
            if essential_name(found) == name
            for tid in self._ids_at(off)
        ]
        return sorted(ids)

    def with_fixes(self, sizes: dict[int, int], var_offsets: dict[int, list[int]],
                   static_funcs: Iterable[int] = ()) -> bytes:
        """The blob with DATASEC sizes and variable offsets replaced (type id -> size, type id
        -> one offset per variable), and the FUNCs ``static_funcs`` given static linkage:
        what ``BPF_BTF_LOAD`` needs of a compiler's output."""
        out = bytearray(self.data)
        base = self.header.hdr_len + self.header.type_off
        for tid in static_funcs:  # the linkage is the FUNC's vlen bits
            at = base + self._starts[tid] * 4 + 4
            struct.pack_into("<I", out, at, struct.unpack_from("<I", out, at)[0] & ~0xFFFF)
        for tid, size in sizes.items():
            struct.pack_into("<I", out, base + self._starts[tid] * 4 + 8, size)
        for tid, offsets in var_offsets.items():
            at = base + self._starts[tid] * 4 + 12
            for i, off in enumerate(offsets):
                struct.pack_into("<I", out, at + 12 * i + 4, off)
        return bytes(out)

    def resolve(self, type_id: int) -> int:
        """Follow typedefs and qualifiers to the underlying type id."""
        for _ in range(64):
            if not 0 <= type_id < len(self._starts):
                raise BtfError(
                    f"{self.origin}: reference to type {type_id}, out of range 0..{len(self) - 1}"
                )
            if type_id < self.first_id:
                return self.base.resolve(type_id)
            if not type_id or self._kinds[type_id] not in _MODIFIERS:
                return type_id
            type_id = self._words[self._starts[type_id] + 2]
        raise BtfError(f"{self.origin}: typedef/qualifier loop at type {type_id}")

    def signed(self, type_id: int) -> bool:
        """Whether ``type_id`` (through typedefs and qualifiers) is a signed INT or ENUM."""
        tid = self.resolve(type_id)
        kind = self.kind(tid)
        if kind == BtfKind.INT:
            return bool(self.type(tid).detail >> 24 & BTF_INT_SIGNED)
        return kind in (BtfKind.ENUM, BtfKind.ENUM64) and bool(self.type(tid).kind_flag)

    def sizeof(self, type_or_name: int | str) -> int:
        """Size in bytes of a type id, or of the struct/union with that name."""
        tid = self.struct_id(type_or_name) if isinstance(type_or_name, str) else type_or_name
        tid = self.resolve(tid)
        kind = self._kinds[tid]
        if kind in _SIZED:
            return self.ref(tid)
        if kind == BtfKind.PTR:
            return 8
        if kind == BtfKind.ARRAY:
            elem, _, count = self.array(tid)
            return count * self.sizeof(elem)
        name = f" {self.type(tid).name!r}" if tid else ""
        raise BtfError(f"{self.origin}: type {tid}{name} ({BtfKind(kind).name}) has no size")

    # the words of a record read directly: what reading an object's maps needs, without
    # parsing whole records (the monitor object's .maps took 1.5 ms through type())

    def _start(self, type_id: int) -> int:
        if not 0 < type_id < len(self._starts) or type_id < self.first_id:
            raise BtfError(f"{self.origin}: type id {type_id} out of range "
                           f"{max(1, self.first_id)}..{len(self) - 1}")
        return self._starts[type_id]

    def name(self, type_id: int) -> str:
        """The record's name ("" for an anonymous one)."""
        if 0 < type_id < self.first_id:
            return self.base.name(type_id)
        return self.string(self._words[self._start(type_id)])

    def ref(self, type_id: int) -> int:
        """The record's size-or-type word: the type a PTR, TYPEDEF, qualifier, VAR or FUNC
        refers to; the size of an INT, STRUCT, UNION, ENUM, FLOAT or DATASEC."""
        if 0 < type_id < self.first_id:
            return self.base.ref(type_id)
        return self._words[self._start(type_id) + 2]

    def array(self, type_id: int) -> tuple[int, int, int]:
        """(element type, index type, element count) of an ARRAY."""
        if 0 < type_id < self.first_id:
            return self.base.array(type_id)
        start = self._start(type_id)
        if self._kinds[type_id] != BtfKind.ARRAY:
            raise BtfError(f"{self.origin}: type {type_id} is a "
                           f"{BtfKind(self._kinds[type_id]).name}, not an ARRAY")
        elem, index, count = self._words[start + 3 : start + 6]
        return elem, index, count

    def members(self, type_id: int) -> list[tuple[int, int, int]]:
        """(name offset, type id, bit offset) of each member of a STRUCT or UNION; (type id,
        byte offset, size) of each variable of a DATASEC."""
        if 0 < type_id < self.first_id:
            return self.base.members(type_id)
        self._start(type_id)
        if self._kinds[type_id] not in _WITH_MEMBERS:
            raise BtfError(f"{self.origin}: type {type_id} is a "
                           f"{BtfKind(self._kinds[type_id]).name}, not a STRUCT, UNION or DATASEC")
        return self._member_list(type_id)

    def _member_list(self, struct_tid: int) -> list[tuple[int, int, int]]:
        """(name offset, type id, bit offset) of each member, read from the words."""
        if struct_tid < self.first_id:
            return self.base._member_list(struct_tid)
        members = self._members.get(struct_tid)
        if members is None:
            start = self._starts[struct_tid]
            info = self._words[start + 1]
            raw = self._words[start + 3 : start + 3 + 3 * (info & 0xFFFF)]
            mask = 0xFFFFFF if info >> 31 else 0xFFFFFFFF  # kind_flag: bitfield size on top
            members = [(raw[i], raw[i + 1], raw[i + 2] & mask) for i in range(0, len(raw), 3)]
            self._members[struct_tid] = members
        return members

    def _find_member(self, struct_tid: int, member: bytes) -> tuple[int, int] | None:
        """(bit offset, type id) of ``member`` (its name and a NUL), looking into anonymous
        struct/union members."""
        for name_off, tid, bits in self._member_list(struct_tid):
            if name_off:
                if self._name_is(name_off, member):
                    return bits, tid
                continue
            inner = self.resolve(tid)
            if self._kinds[inner] in (BtfKind.STRUCT, BtfKind.UNION):
                hit = self._find_member(inner, member)
                if hit is not None:
                    return bits + hit[0], hit[1]
        return None

    def _name_is(self, name_off: int, name: bytes) -> bool:
        """Whether the string at ``name_off`` starts with ``name`` (a name and its NUL)."""
        if name_off < self.str_base:
            return self.base._name_is(name_off, name)
        return self.strings.startswith(name, name_off - self.str_base)

    def record_offset(self, type_id: int) -> int:
        """Where the record of own type ``type_id`` starts in :attr:`data` (for fix-ups)."""
        return self.header.hdr_len + self.header.type_off + self._starts[type_id] * 4

    def member_offset(self, struct_name: str, path: str) -> int:
        """Byte offset of ``path`` (``"member"`` or ``"a.b.c"`` through embedded structs)."""
        tid = self.struct_id(struct_name)
        total_bits = 0
        where = f"struct {struct_name}"
        parts = path.split(".")
        for depth, part in enumerate(parts, 1):
            hit = self._find_member(tid, part.encode() + b"\0")
            if hit is None:
                raise BtfError(f"{self.origin}: {where} has no member {part!r}")
            total_bits += hit[0]
            tid = self.resolve(hit[1])
            where = f"{where}.{part}"
            if depth < len(parts) and self._kinds[tid] not in (BtfKind.STRUCT, BtfKind.UNION):
                raise BtfError(f"{self.origin}: {where} is not a struct, cannot look inside")
        if total_bits % 8:
            raise BtfError(f"{self.origin}: {struct_name}.{path} is a bitfield (bit {total_bits})")
        return total_bits // 8
