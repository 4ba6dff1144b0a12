"""Read any libbpf-style BPF object: every function, map, global data section, relocation.

What :class:`ObjectSpec` holds is the object as the compiler wrote it, before anything
touches the kernel: code sections as bytes (relocations per instruction), functions
(programs in ``SEC()`` sections, subprograms in ``.text``), the BTF-defined maps of
``.maps``, global data (``.rodata*``, ``.data*``, ``.bss*``) with its variables, the
``.BTF`` and ``.BTF.ext``. :mod:`ebpfwire.kernel.link` builds programs from it.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from elftools.common.exceptions import ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import (
    ENUM_ST_INFO_BIND,
    ENUM_ST_INFO_TYPE,
    ENUM_ST_SHNDX,
    ENUM_ST_VISIBILITY,
)
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.btf import Btf, BtfKind
from ebpfwire.kernel.errors import BtfError, LoaderError
from ebpfwire.kernel.sections import ProgramKind, program_kind

if TYPE_CHECKING:
    from ebpfwire.kernel.btf_ext import BtfExt

EM_BPF = 247
INSN_SIZE = 8
_DATA_SECTION = re.compile(r"\.(rodata|data|bss)(?:\.|$)")
BPF_OBJ_NAME_LEN = 16
# `__uint(name, N)` members (pointer to an array of N) and `__type(name, T)` members
_UINT_MEMBERS = {
    "type", "max_entries", "map_flags", "key_size", "value_size", "numa_node", "pinning",
    "map_extra",
}
_TYPE_MEMBERS = {"key": "key_size", "value": "value_size"}
_NO_KEY = frozenset({22, 23, syscalls.BPF_MAP_TYPE_BLOOM_FILTER})  # queue, stack, bloom filter


@dataclass
class MapSpec:
    """A map as declared in ``.maps``: what ``BPF_MAP_CREATE`` needs."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int = 0
    key_type_id: int = 0  # BTF type of the key in the object's .BTF (0: not declared)
    value_type_id: int = 0  # BTF type of the value (0: not declared)
    pinning: int = 0  # LIBBPF_PIN_BY_NAME (1): shared under a bpffs directory by name
    map_extra: int = 0  # bloom filter hashes, arena address...
    inner: MapSpec | None = None  # map-in-map: the template of the maps it holds
    values: dict[int, str] = field(default_factory=dict)  # static slot -> map or program


class Symbol(NamedTuple):
    """An ELF symbol: ``section`` is a section index, or a name such as ``SHN_UNDEF``
    (a tuple: an object has thousands, made faster than a frozen dataclass's)."""

    name: str
    section: int | str
    value: int
    size: int
    type: str
    bind: str
    visibility: str


class Function(NamedTuple):
    """A function of a code section: instructions ``start`` .. ``start + count``."""

    name: str
    section: str
    sec_index: int
    start: int
    count: int
    is_global: bool


class ProgramSpec(NamedTuple):
    """A program: its entry function and what its section says of it."""

    function: Function
    kind: ProgramKind
    attach_to: str

    @property
    def name(self) -> str:
        return self.function.name

    @property
    def section(self) -> str:
        return self.function.section

    @property
    def prog_type(self) -> int:
        return self.kind.prog_type


@dataclass
class Variable:
    """A global variable: where it lives in its data section, and its BTF type (0: none)."""

    name: str
    section: str
    offset: int
    size: int
    type_id: int


@dataclass
class DataSection:
    """A global data section, created as a one-element ARRAY map holding its bytes."""

    name: str
    index: int
    kind: str  # "rodata", "data" or "bss"
    data: bytearray
    map_name: str  # the kernel's name for it, libbpf style: object prefix + section
    btf_id: int = 0  # its DATASEC in the object's BTF
    variables: dict[str, Variable] = field(default_factory=dict)

    @property
    def readonly(self) -> bool:
        return self.kind == "rodata"


@dataclass
class ObjectSpec:
    """Everything read from one object file."""

    name: str
    origin: str
    license: str
    kern_version: int
    btf: Btf | None
    btf_ext: BtfExt | None
    maps: dict[str, MapSpec]
    data: dict[str, DataSection]
    code: dict[int, bytes]  # code section index -> instructions
    section_names: dict[int, str]
    section_sizes: dict[str, int]  # every allocated section's size (the DATASEC fix-ups)
    functions: list[Function]
    programs: dict[str, ProgramSpec]
    relocations: dict[int, dict[int, Symbol]]  # code section -> instruction -> symbol
    symbols: list[Symbol]
    map_offsets: dict[int, str]  # offset in .maps -> map name
    maps_index: int | None

    def function_at(self, sec_index: int, insn: int) -> Function | None:
        """The function of section ``sec_index`` that starts at instruction ``insn``."""
        for fn in self.functions:
            if fn.sec_index == sec_index and fn.start == insn:
                return fn
        return None

    def symbol_offset(self, name: str) -> int | None:
        """The ``st_value`` of the defined symbol ``name`` (None if absent)."""
        for sym in self.symbols:
            if sym.name == name and isinstance(sym.section, int):
                return sym.value
        return None


def map_specs(btf: Btf, symbols: dict[int, str], path: str) -> dict[str, MapSpec]:
    """The maps of the DATASEC ``.maps``; ``symbols`` (offset -> name) must all be there."""
    secs = btf.ids_named(".maps", (BtfKind.DATASEC,))
    if not secs:
        raise LoaderError(f"{path}: .BTF has no DATASEC '.maps': maps must be BTF-defined")
    maps: dict[str, MapSpec] = {}
    for var in btf.type(secs[0]).detail:
        var_rec = btf.type(var.type)
        maps[var_rec.name] = _map_def(btf, var_rec.size_or_type, var_rec.name, path, False)
    missing = set(symbols.values()) - set(maps)
    if missing:
        raise LoaderError(f"{path}: symbols {sorted(missing)} in .maps have no BTF description")
    return maps


def _map_def(btf: Btf, type_id: int, name: str, path: str, inner: bool) -> MapSpec:
    """One map definition struct; ``inner``: the template in an outer map's ``values``."""
    struct_id = btf.resolve(type_id)
    if btf.kind(struct_id) != BtfKind.STRUCT:
        raise LoaderError(f"{path}: map {name!r} is not declared as a struct in .maps")
    values: dict[str, int] = {}
    inner_spec = None
    slot_types: frozenset[int] = frozenset()  # the map types a 'values' member allows
    members = btf.type(struct_id).detail
    for i, member in enumerate(members):
        mname = btf.string(member.name_off)
        if mname == "values":
            if inner or i != len(members) - 1:
                raise LoaderError(f"{path}: map {name!r}: 'values' must be the last member of "
                                  "an outer map (no map-in-map inside an inner map)")
            inner_spec = _values_def(btf, member.type, name, path)
            slot_types = (syscalls.MAP_IN_MAP_TYPES if inner_spec is not None
                          else frozenset({syscalls.BPF_MAP_TYPE_PROG_ARRAY}))
            values["value_size"] = 4  # a map or program fd
            continue
        ptr = btf.resolve(member.type)
        if btf.kind(ptr) != BtfKind.PTR:
            raise LoaderError(f"{path}: map {name!r} member {mname!r} is not a pointer")
        target = btf.type(ptr).size_or_type
        if mname in _UINT_MEMBERS:
            arr = btf.resolve(target)
            if btf.kind(arr) != BtfKind.ARRAY:
                raise LoaderError(f"{path}: map {name!r} member {mname!r}: expected __uint")
            values[mname] = btf.type(arr).detail.nelems
        elif mname in _TYPE_MEMBERS:
            values[f"{mname}_type_id"] = target
            try:
                values[_TYPE_MEMBERS[mname]] = btf.sizeof(target)
            except BtfError as exc:
                raise LoaderError(f"{path}: map {name!r} {mname} type: {exc}") from exc
        else:
            raise LoaderError(f"{path}: map {name!r}: member {mname!r} is not supported")
    if "type" not in values:
        raise LoaderError(f"{path}: map {name!r} has no type")
    if values.get("pinning", 0) not in (0, 1):
        raise LoaderError(f"{path}: map {name!r}: pinning {values['pinning']} is not 0 (none) "
                          "or 1 (LIBBPF_PIN_BY_NAME)")
    if inner and values.get("pinning"):
        raise LoaderError(f"{path}: map {name!r}: an inner map template cannot be pinned")
    if slot_types and values["type"] not in slot_types:
        what = "inner maps" if inner_spec is not None else "programs"
        raise LoaderError(f"{path}: map {name!r} (type {values['type']}): 'values' of {what} "
                          f"needs a map of type {sorted(slot_types)}")
    return MapSpec(
        name=name,
        type=values["type"],
        key_size=values.get("key_size", 0 if values["type"] in _NO_KEY else 4),
        value_size=values.get("value_size", 4),
        max_entries=values.get("max_entries", 0),
        map_flags=values.get("map_flags", 0),
        key_type_id=values.get("key_type_id", 0),
        value_type_id=values.get("value_type_id", 0),
        pinning=values.get("pinning", 0),
        map_extra=values.get("map_extra", 0),
        inner=inner_spec,
    )


def _values_def(btf: Btf, type_id: int, name: str, path: str) -> MapSpec | None:
    """``__array(values, T)``: the inner map template when T is a map definition, None
    when T is a function prototype (a PROG_ARRAY's programs)."""
    arr = btf.resolve(type_id)
    if btf.kind(arr) != BtfKind.ARRAY or btf.type(arr).detail.nelems:
        raise LoaderError(f"{path}: map {name!r}: 'values' is not a zero-sized array "
                          "(declare it with __array(values, ...))")
    ptr = btf.resolve(btf.type(arr).detail.type)
    if btf.kind(ptr) != BtfKind.PTR:
        raise LoaderError(f"{path}: map {name!r}: 'values' is not an array of pointers")
    target = btf.resolve(btf.type(ptr).size_or_type)
    if btf.kind(target) == BtfKind.FUNC_PROTO:
        return None
    return _map_def(btf, target, f"{name}.inner", path, True)


def _enum_names(enum: dict) -> dict[int, str]:
    return {value: name for name, value in enum.items() if isinstance(value, int)}


# pyelftools' names of a symbol's section index, type, binding and visibility
_SHNDX, _STT, _STB, _STV = map(
    _enum_names, (ENUM_ST_SHNDX, ENUM_ST_INFO_TYPE, ENUM_ST_INFO_BIND, ENUM_ST_VISIBILITY)
)


def read_symbols(elf: ELFFile, symtab: SymbolTableSection, origin: str) -> list[Symbol]:
    """Every symbol of ``symtab``, unpacked at once (pyelftools parses them one by one:
    most of the time an object's read took), named as pyelftools names them."""
    if elf.elfclass != 64:
        raise LoaderError(f"{origin}: expected a 64-bit ELF object, found ELFCLASS{elf.elfclass}")
    entry = struct.Struct(("<" if elf.little_endian else ">") + "IBBHQQ")  # Elf64_Sym
    data, names = symtab.data(), symtab.stringtable.data()
    if symtab["sh_entsize"] != entry.size or len(data) % entry.size:
        raise LoaderError(f"{origin}: .symtab: expected {entry.size}-byte entries, found "
                          f"{len(data)} bytes of {symtab['sh_entsize']}-byte entries")
    symbols = []
    for name, info, other, shndx, value, size in entry.iter_unpack(data):
        end = names.find(b"\0", name)
        symbols.append(Symbol(
            names[name : end if end >= 0 else len(names)].decode("utf-8", "replace"),
            _SHNDX.get(shndx, shndx), value, size, _STT.get(info & 0xF, info & 0xF),
            _STB.get(info >> 4, info >> 4), _STV.get(other & 7, other & 7),
        ))
    return symbols


def object_name(origin: str) -> str:
    """libbpf's object name: the file's base name up to its first dot."""
    return Path(origin).name.split(".", 1)[0] or "obj"


def internal_map_name(obj_name: str, section: str) -> str:
    """libbpf's name for a data section's map: as much of the object name as fits before
    the section name in 15 bytes, other characters than ``[A-Za-z0-9_.]`` as ``_``."""
    sfx = max(7, len(section))
    pfx = min(BPF_OBJ_NAME_LEN - sfx - 1, len(obj_name))
    return re.sub(r"[^A-Za-z0-9_.]", "_", obj_name[:pfx] + section[:sfx])


def _data_kind(section: str) -> str | None:
    """"rodata", "data" or "bss" for a global data section (``.rodata.str1.1`` too)."""
    match = _DATA_SECTION.match(section)
    return match[1] if match else None


def read_spec(source: str | Path | bytes, name: str | None = None) -> ObjectSpec:
    """Parse an object file (a path, or its bytes with ``name`` for messages)."""
    if isinstance(source, bytes | bytearray):
        origin = name or "<bytes>"
        data = bytes(source)
    else:
        origin = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise LoaderError(f"cannot open BPF object {origin}: {exc.strerror}",
                              exc.errno) from exc
    try:
        elf = ELFFile(io.BytesIO(data))
        return _Reader(elf, origin, name or object_name(origin)).spec()
    except ELFError as exc:
        raise LoaderError(f"{origin}: not a readable ELF object: {exc}") from exc


class _Reader:
    def __init__(self, elf: ELFFile, origin: str, name: str) -> None:
        if elf["e_machine"] not in ("EM_BPF", EM_BPF) or elf["e_type"] != "ET_REL":
            raise LoaderError(
                f"{origin}: expected an ELF BPF relocatable object, found "
                f"{elf['e_machine']} {elf['e_type']}"
            )
        self.elf, self.origin, self.name = elf, origin, name

    def spec(self) -> ObjectSpec:
        elf, origin = self.elf, self.origin
        symtab = elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            raise LoaderError(f"{origin}: no symbol table")
        symbols = read_symbols(elf, symtab, origin)
        btf_sec = elf.get_section_by_name(".BTF")
        btf = Btf(btf_sec.data(), f"{origin} .BTF") if btf_sec is not None else None
        ext_sec = elf.get_section_by_name(".BTF.ext")
        ext = None
        if ext_sec is not None and btf is not None:
            from ebpfwire.kernel.btf_ext import BtfExt  # here: objects without one skip it

            ext = BtfExt.parse(ext_sec.data(), btf, f"{origin} .BTF.ext")
        lic = elf.get_section_by_name("license")
        if lic is None:
            raise LoaderError(f'{origin}: no \'license\' section (SEC("license"))')
        version = elf.get_section_by_name("version")
        kern_version = int.from_bytes(version.data()[:4], "little") if version else 0

        code: dict[int, bytes] = {}
        names: dict[int, str] = {}
        sizes: dict[str, int] = {}
        data: dict[str, DataSection] = {}
        maps_index = None
        for idx, sec in enumerate(elf.iter_sections()):
            names[idx] = sec.name
            if sec["sh_flags"] & SH_FLAGS.SHF_ALLOC:
                sizes[sec.name] = sec["sh_size"]
            if sec["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and sec["sh_size"]:
                code[idx] = sec.data()
            elif sec.name == ".maps":
                maps_index = idx
            elif sec["sh_flags"] & SH_FLAGS.SHF_ALLOC and sec["sh_size"] and (
                kind := _data_kind(sec.name)
            ):
                raw = bytes(sec["sh_size"]) if kind == "bss" else sec.data()
                data[sec.name] = DataSection(
                    sec.name, idx, kind, bytearray(raw), internal_map_name(self.name, sec.name)
                )

        map_offsets = {
            s.value: s.name for s in symbols
            if s.section == maps_index and s.type == "STT_OBJECT"
        }
        maps: dict[str, MapSpec] = {}
        if map_offsets:
            if btf is None:
                raise LoaderError(f"{origin}: maps in .maps need the object's .BTF")
            maps = map_specs(btf, map_offsets, origin)
        self._variables(symbols, data, btf)

        functions = sorted(
            (Function(s.name, names[s.section], s.section, s.value // INSN_SIZE,
                      s.size // INSN_SIZE, s.bind != "STB_LOCAL")
             for s in symbols if s.type == "STT_FUNC" and s.section in code),
            key=lambda f: (f.sec_index, f.start),
        )
        programs: dict[str, ProgramSpec] = {}
        for fn in functions:
            if fn.section == ".text":
                continue
            kind = program_kind(fn.section)
            if kind is None:
                raise LoaderError(
                    f"{origin}: function {fn.name!r} is in section {fn.section!r}, which names "
                    "no program type this loader knows (tp/, tracepoint/, raw_tp/, "
                    "raw_tracepoint/, tp_btf/, fentry/, fexit/, lsm/, iter/, kprobe/, ...)"
                )
            programs[fn.name] = ProgramSpec(fn, *kind)
        relocations = {idx: self._relocations(idx, symbols) for idx in code}
        if maps_index is not None:
            self._map_slots(maps, symbols, maps_index, programs, btf)
        return ObjectSpec(
            name=self.name, origin=origin,
            license=lic.data().split(b"\0", 1)[0].decode(), kern_version=kern_version,
            btf=btf, btf_ext=ext, maps=maps, data=data, code=code, section_names=names,
            section_sizes=sizes, functions=functions, programs=programs,
            relocations=relocations, symbols=symbols, map_offsets=map_offsets,
            maps_index=maps_index,
        )

    def _variables(self, symbols: list[Symbol], data: dict[str, DataSection],
                   btf: Btf | None) -> None:
        by_index = {d.index: d for d in data.values()}
        for sym in symbols:
            sec = by_index.get(sym.section) if isinstance(sym.section, int) else None
            if sec is not None and sym.type == "STT_OBJECT" and sym.name:
                sec.variables[sym.name] = Variable(sym.name, sec.name, sym.value, sym.size, 0)
        if btf is None:
            return
        for sec in data.values():
            ids = btf.ids_named(sec.name, (BtfKind.DATASEC,))
            if not ids:
                continue
            sec.btf_id = ids[0]
            for info in btf.type(ids[0]).detail:
                var = btf.type(info.type)
                if var.name in sec.variables:
                    sec.variables[var.name].type_id = var.size_or_type

    def _map_slots(self, maps: dict[str, MapSpec], symbols: list[Symbol], maps_index: int,
                   programs: dict[str, ProgramSpec], btf: Btf | None) -> None:
        """``.rel.maps``: the static ``values`` of outer maps and PROG_ARRAYs, each relocation
        a pointer in the ``values`` array: slot = its position there."""
        sec = self.elf.get_section_by_name(".rel.maps")
        if not isinstance(sec, RelocationSection) or btf is None:
            return
        where = {s.name: (s.value, s.size) for s in symbols
                 if s.section == maps_index and s.type == "STT_OBJECT" and s.name in maps}
        for rel in sec.iter_relocations():
            at, sym = rel["r_offset"], symbols[rel["r_info_sym"]]
            owner = next((n for n, (v, size) in where.items() if v <= at < v + size), None)
            if owner is None:
                raise LoaderError(f"{self.origin}: .rel.maps: a pointer to {sym.name!r} at "
                                  f"byte {at} of .maps lies in no map")
            spec = maps[owner]
            first = self._values_offset(btf, owner)
            slot, rest = divmod(at - where[owner][0] - first, 8)  # 8-byte BPF pointers
            if first < 0 or slot < 0 or rest:
                raise LoaderError(f"{self.origin}: .rel.maps: map {owner!r}: the pointer to "
                                  f"{sym.name!r} at byte {at} of .maps is not in 'values'")
            if spec.key_size != 4:
                raise LoaderError(f"{self.origin}: map {owner!r}: static 'values' need 4-byte "
                                  f"keys (the slot index), found key_size {spec.key_size}")
            if spec.inner is not None:
                ok = sym.section == maps_index and sym.name in maps
                what = "a map of .maps"
            else:
                ok = sym.name in programs and sym.type == "STT_FUNC"
                what = "a program (a function in a SEC() section)"
            if not ok:
                raise LoaderError(f"{self.origin}: map {owner!r} slot [{slot}]: "
                                  f"{sym.name!r} is not {what}")
            spec.values[slot] = sym.name

    @staticmethod
    def _values_offset(btf: Btf, name: str) -> int:
        """Byte offset of the ``values`` member in map ``name``'s definition (-1: none)."""
        for vid in btf.ids_named(name, (BtfKind.VAR,)):
            members = btf.type(btf.resolve(btf.type(vid).size_or_type)).detail
            if members and btf.string(members[-1].name_off) == "values":
                return (members[-1].offset & 0xFFFFFF) // 8
        return -1

    def _relocations(self, idx: int, symbols: list[Symbol]) -> dict[int, Symbol]:
        sec = self.elf.get_section_by_name(".rel" + self.elf.get_section(idx).name)
        if sec is None:
            return {}
        if not isinstance(sec, RelocationSection) or sec.is_RELA():
            raise LoaderError(f"{self.origin}: {sec.name}: expected SHT_REL relocations")
        return {
            rel["r_offset"] // INSN_SIZE: symbols[rel["r_info_sym"]]
            for rel in sec.iter_relocations()
        }
