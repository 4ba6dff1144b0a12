"""Which type the records of a ring buffer or perf array are: from BTF, DWARF, or their size.

clang puts a type into ``.BTF`` only when a map, a global or a function signature uses
it, and most tools send their event struct through ``bpf_ringbuf_reserve`` or
``bpf_perf_event_output`` without any of those. An object compiled with ``-g`` and not
stripped still describes it in DWARF: :func:`btf_from_dwarf` rebuilds it (and what it
contains) as a small BTF blob, so the one decoder and the one codec read both.

The rules of :class:`EventTypes`: a name asked for is looked up in the BTF, then in the
DWARF; without a name, the map's own value type where the object gives one (BTF-defined
``__type(value, T)``), else the one named struct whose size fits the records (BTF first,
then DWARF); several fitting structs are a question for the user, none an error that
says how to put the type into the object.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.btf import BTF_MAGIC, Btf, BtfKind
from ebpfwire.kernel.errors import LoaderError

_INT_ENC = {2: 4, 5: 1, 6: 1, 7: 0, 8: 0, 0x10: 0}  # DW_ATE_* -> BTF encoding, as clang


def anchor_hint(name: str = "event") -> str:
    return (f"add the type to the object's BTF with one line in the BPF source, "
            f"`struct {name} *unused __attribute__((unused));`, or compile with -g and "
            "do not strip it")


class _BtfWriter:
    """A BTF blob built type by type (ids from 1), strings deduplicated."""

    def __init__(self) -> None:
        self.types: list[bytes] = []
        self.strings = bytearray(b"\0")
        self._offsets: dict[str, int] = {"": 0}

    def string(self, name: str) -> int:
        off = self._offsets.get(name)
        if off is None:
            off = self._offsets[name] = len(self.strings)
            self.strings += name.encode() + b"\0"
        return off

    def add(self, name: str, kind: BtfKind, size_or_type: int, tail: bytes = b"", vlen: int = 0,
            kind_flag: int = 0) -> int:
        info = kind << 24 | vlen | kind_flag << 31
        self.types.append(struct.pack("<III", self.string(name), info, size_or_type) + tail)
        return len(self.types)

    def set(self, tid: int, record: bytes) -> None:
        self.types[tid - 1] = record

    def blob(self) -> bytes:
        types = b"".join(self.types)
        header = struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(types), len(types),
                             len(self.strings))
        return header + types + bytes(self.strings)


class _DwarfToBtf:
    def __init__(self) -> None:
        self.out = _BtfWriter()
        self.done: dict[int, int] = {}  # DIE offset -> BTF id
        self.index = self.out.add("__ARRAY_SIZE_TYPE__", BtfKind.INT, 4, struct.pack("<I", 32))

    @staticmethod
    def _name(die) -> str:
        attr = die.attributes.get("DW_AT_name")
        return attr.value.decode(errors="replace") if attr else ""

    def type_of(self, die) -> int:
        """The BTF id of a DIE's DW_AT_type (0: void)."""
        if "DW_AT_type" not in die.attributes:
            return 0
        return self.convert(die.get_DIE_from_attribute("DW_AT_type"))

    def convert(self, die) -> int:
        known = self.done.get(die.offset)
        if known is not None:
            return known
        tag, out, name = die.tag, self.out, self._name(die)
        size = die.attributes["DW_AT_byte_size"].value if "DW_AT_byte_size" in die.attributes \
            else 0
        if tag == "DW_TAG_base_type":
            enc = die.attributes["DW_AT_encoding"].value
            if enc == 4:  # DW_ATE_float
                tid = out.add(name, BtfKind.FLOAT, size)
            else:
                tid = out.add(name, BtfKind.INT, size,
                              struct.pack("<I", _INT_ENC.get(enc, 0) << 24 | size * 8))
        elif tag == "DW_TAG_pointer_type":
            tid = out.add("", BtfKind.PTR, 0)  # to void: events hold addresses, not targets
        elif tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
                     "DW_TAG_restrict_type", "DW_TAG_atomic_type"):
            tid = self.type_of(die)  # followed: the decoder sees through them anyway
        elif tag == "DW_TAG_array_type":
            tid = self._array(die)
        elif tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
            tid = self._struct(die, name, size)
        elif tag == "DW_TAG_enumeration_type":
            tid = self._enum(die, name, size)
        else:
            raise LoaderError(f"DWARF: {tag} {name!r} has no BTF counterpart here")
        self.done[die.offset] = tid
        return tid

    def _array(self, die) -> int:
        elem = self.type_of(die)
        counts = []
        for sub in die.iter_children():
            if sub.tag != "DW_TAG_subrange_type":
                continue
            if "DW_AT_count" in sub.attributes:
                counts.append(sub.attributes["DW_AT_count"].value)
            elif "DW_AT_upper_bound" in sub.attributes:
                counts.append(sub.attributes["DW_AT_upper_bound"].value + 1)
            else:
                counts.append(0)  # a flexible array
        for n in reversed(counts or [0]):
            elem = self.out.add("", BtfKind.ARRAY, 0, struct.pack("<III", elem, self.index, n))
        return elem

    def _struct(self, die, name: str, size: int) -> int:
        kind = BtfKind.UNION if die.tag == "DW_TAG_union_type" else BtfKind.STRUCT
        tid = self.out.add(name, kind, size)  # placed first: members may point back at it
        self.done[die.offset] = tid
        members = []
        for m in die.iter_children():
            if m.tag != "DW_TAG_member":
                continue
            attrs = m.attributes
            loc = attrs["DW_AT_data_member_location"].value if \
                "DW_AT_data_member_location" in attrs else 0
            bits, width = loc * 8, 0
            if "DW_AT_bit_size" in attrs:
                width = attrs["DW_AT_bit_size"].value
                if "DW_AT_data_bit_offset" in attrs:
                    bits = attrs["DW_AT_data_bit_offset"].value
                else:  # DWARF 2/3 style: counted from the storage unit's most significant bit
                    unit = attrs["DW_AT_byte_size"].value * 8
                    bits += unit - attrs["DW_AT_bit_offset"].value - width
            members.append((self.out.string(self._name(m)), self.type_of(m), width << 24 | bits))
        tail = b"".join(struct.pack("<III", *m) for m in members)
        self.out.set(tid, struct.pack("<III", self.out.string(name),
                                      kind << 24 | len(members) | 1 << 31, size) + tail)
        return tid

    def _enum(self, die, name: str, size: int) -> int:
        """Unsigned, as clang writes enums into BTF: both give the same names and values."""
        values = [(self._name(e), e.attributes["DW_AT_const_value"].value)
                  for e in die.iter_children() if e.tag == "DW_TAG_enumerator"]
        tail = b"".join(struct.pack("<Ii", self.out.string(n), (v + (1 << 31)) % (1 << 32)
                                    - (1 << 31)) for n, v in values)
        return self.out.add(name, BtfKind.ENUM, size, tail, len(values))


def _dwarf_structs(elf_bytes: bytes, origin: str):
    """(name, DIE) of each named struct/union the object's DWARF describes; [] if none."""
    try:
        elf = ELFFile(io.BytesIO(elf_bytes))
        if not elf.has_dwarf_info() or elf.get_section_by_name(".debug_info") is None:
            return []
        dwarf = elf.get_dwarf_info()
        found = []
        for cu in dwarf.iter_CUs():
            for die in cu.iter_DIEs():
                if die.tag in ("DW_TAG_structure_type", "DW_TAG_union_type") and \
                        "DW_AT_name" in die.attributes and \
                        "DW_AT_declaration" not in die.attributes:
                    found.append((die.attributes["DW_AT_name"].value.decode(errors="replace"),
                                  die))
        return found
    except (ELFError, KeyError, ValueError) as exc:
        raise LoaderError(f"{origin}: its DWARF cannot be read: {exc}") from exc


def btf_from_dwarf(die, origin: str) -> tuple[Btf, int]:
    """A BTF blob holding the struct of ``die`` and every type it contains; (Btf, its id)."""
    conv = _DwarfToBtf()
    tid = conv.convert(die)
    return Btf(conv.out.blob(), f"{origin} DWARF"), tid


@dataclass
class EventType:
    """The type of a map's records: its BTF (the object's, or rebuilt from DWARF) and id."""

    btf: Btf
    type_id: int
    source: str  # "BTF", "DWARF" or "map" (the map's value type)

    @property
    def name(self) -> str:
        return self.btf.type(self.btf.resolve(self.type_id)).name


def fits(type_size: int, record_size: int, map_type: int) -> bool:
    """Whether records of ``record_size`` bytes can be a type of ``type_size``: exactly for
    a ring buffer, padded to 8 with the perf header's u32 for a perf array."""
    if map_type == syscalls.BPF_MAP_TYPE_PERF_EVENT_ARRAY:
        return (type_size + 4 + 7) // 8 * 8 - 4 == record_size or type_size == record_size
    return type_size == record_size


class EventTypes:
    """Looks types up in one object: its BTF, then its DWARF (read once, when needed)."""

    def __init__(self, btf: Btf | None, elf_bytes: bytes, origin: str) -> None:
        self.btf, self.origin = btf, origin
        self._elf = elf_bytes
        self._dwarf: list | None = None

    def dwarf(self) -> list:
        if self._dwarf is None:
            self._dwarf = _dwarf_structs(self._elf, self.origin)
        return self._dwarf

    def _btf_structs(self) -> list[tuple[str, int]]:
        if self.btf is None:
            return []
        return [(self.btf.type(t).name, t) for t in range(1, len(self.btf))
                if self.btf.kind(t) in (BtfKind.STRUCT, BtfKind.UNION) and self.btf.type(t).name]

    def named(self, name: str) -> EventType:
        """``name`` (a struct, union or typedef) from the BTF, else the DWARF."""
        name = name.removeprefix("struct ").removeprefix("union ").strip()
        if self.btf is not None:
            ids = self.btf.ids_named(name, (BtfKind.STRUCT, BtfKind.UNION, BtfKind.TYPEDEF))
            if ids:
                return EventType(self.btf, ids[0], "BTF")
        for dname, die in self.dwarf():
            if dname == name:
                return EventType(*btf_from_dwarf(die, self.origin), "DWARF")
        where = "its DWARF" if self.dwarf() else "no DWARF (compiled without -g, or stripped)"
        raise LoaderError(f"{self.origin}: no type {name!r} in the object's BTF, and {where}: "
                          f"{anchor_hint(name)}")

    def by_size(self, record_size: int, map_type: int, map_name: str) -> EventType:
        """The one named struct whose size fits the records (BTF first, then DWARF)."""
        btf_hits = [(n, t) for n, t in self._btf_structs()
                    if fits(self.btf.sizeof(t), record_size, map_type)]
        if len(btf_hits) == 1:
            return EventType(self.btf, btf_hits[0][1], "BTF")
        hits = sorted(n for n, _ in btf_hits)
        if not hits:
            dwarf_hits = [(n, d) for n, d in self.dwarf()
                          if fits(d.attributes["DW_AT_byte_size"].value
                                  if "DW_AT_byte_size" in d.attributes else -1,
                                  record_size, map_type)]
            if len(dwarf_hits) == 1:
                return EventType(*btf_from_dwarf(dwarf_hits[0][1], self.origin), "DWARF")
            hits = sorted({n for n, _ in dwarf_hits})
        if hits:
            raise LoaderError(f"map {map_name!r}: records of {record_size} bytes fit several "
                              f"types ({', '.join(hits)}): name one with --type")
        where = "its DWARF" if self.dwarf() else "it has no DWARF (compiled without -g, or " \
            "stripped)"
        raise LoaderError(f"map {map_name!r}: records of {record_size} bytes, and no struct of "
                          f"that size in the object's BTF, and {where}: {anchor_hint()} "
                          "(your struct's name), or give --type NAME")
