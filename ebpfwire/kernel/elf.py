"""Read a BPF relocatable object: programs per section, BTF-defined maps, map relocations.

Only what the bundled object needs (libbpf conventions): maps declared in ``.maps``
through BTF, programs in ``tracepoint/...``, ``tp/...``, ``raw_tracepoint/...`` and
``raw_tp/...`` sections (several per section allowed), ``R_BPF_64_64`` relocations that
turn ``ld_imm64`` instructions into map-fd loads. Global data sections and BPF-to-BPF
calls are rejected with an error that names them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.btf import Btf, BtfKind
from ebpfwire.kernel.errors import BtfError, LoaderError

EM_BPF = 247
R_BPF_64_64 = 1
R_BPF_64_32 = 10
BPF_LD_IMM64 = 0x18
BPF_PSEUDO_MAP_FD = 1
INSN_SIZE = 8

# section prefix -> program type; the rest of the name says where to attach
PROGRAM_PREFIXES = {
    "tracepoint/": syscalls.BPF_PROG_TYPE_TRACEPOINT,
    "tp/": syscalls.BPF_PROG_TYPE_TRACEPOINT,
    "raw_tracepoint/": syscalls.BPF_PROG_TYPE_RAW_TRACEPOINT,
    "raw_tp/": syscalls.BPF_PROG_TYPE_RAW_TRACEPOINT,
}
_GLOBAL_DATA = (".data", ".bss", ".rodata")
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


@dataclass
class ProgramSpec:
    """One program: its function, section, type, attach point and map references."""

    name: str
    section: str
    prog_type: int
    attach_to: str  # "category/name" for tracepoints, "name" for raw tracepoints
    insns: bytes
    map_refs: list[tuple[int, str]] = field(default_factory=list)  # (byte offset, map name)

    @property
    def event(self) -> str:
        """The event group this program serves: its name up to ``__``."""
        return self.name.split("__", 1)[0]

    def with_map_fds(self, fds: dict[str, int]) -> bytes:
        """The instructions with every map reference patched to ``ld_imm64 rX, map_fd``."""
        code = bytearray(self.insns)
        for offset, map_name in self.map_refs:
            regs = code[offset + 1]
            code[offset + 1] = (regs & 0x0F) | (BPF_PSEUDO_MAP_FD << 4)
            struct.pack_into("<i", code, offset + 4, fds[map_name])
        return bytes(code)


@dataclass
class BpfObject:
    """Everything the loader takes from the object file."""

    path: str
    license: str
    maps: dict[str, MapSpec]
    programs: list[ProgramSpec]
    btf: Btf | None = None  # the object's .BTF: the types of map keys and values


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


def _prog_type(section: str) -> tuple[int, str] | None:
    for prefix, prog_type in PROGRAM_PREFIXES.items():
        if section.startswith(prefix):
            return prog_type, section[len(prefix) :]
    return None


def read_object(path: str | Path) -> BpfObject:
    """Parse ``path``: its license, its maps and its programs with map relocations."""
    path = str(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise LoaderError(f"cannot open BPF object {path}: {exc.strerror}", exc.errno) from exc
    with f:
        elf = ELFFile(f)
        if elf["e_machine"] not in ("EM_BPF", EM_BPF) or elf["e_type"] != "ET_REL":
            raise LoaderError(
                f"{path}: expected an ELF BPF relocatable object, found "
                f"{elf['e_machine']} {elf['e_type']}"
            )
        data_secs = [
            s.name for s in elf.iter_sections()
            if s.name.startswith(_GLOBAL_DATA) and s["sh_size"] > 0
        ]
        if data_secs:
            raise LoaderError(
                f"{path}: global data sections {data_secs} are not supported by this loader; "
                "keep constants in registers or maps (the program must not use global variables)"
            )
        symtab = elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            raise LoaderError(f"{path}: no symbol table")
        maps_sec = elf.get_section_by_name(".maps")
        btf_sec = elf.get_section_by_name(".BTF")
        if maps_sec is None or btf_sec is None:
            raise LoaderError(f"{path}: expected sections .maps and .BTF (BTF-defined maps)")
        maps_idx = elf.get_section_index(".maps")
        symbols = list(symtab.iter_symbols())  # parsed once: pyelftools parses on each walk
        map_symbols = {
            sym["st_value"]: sym.name
            for sym in symbols
            if sym["st_shndx"] == maps_idx and sym["st_info"]["type"] == "STT_OBJECT"
        }
        funcs_by_section: dict[int, list] = {}
        for sym in symbols:
            if sym["st_info"]["type"] == "STT_FUNC" and sym["st_info"]["bind"] == "STB_GLOBAL":
                funcs_by_section.setdefault(sym["st_shndx"], []).append(sym)
        btf = Btf(btf_sec.data(), f"{path} .BTF")
        maps = map_specs(btf, map_symbols, path)
        lic_sec = elf.get_section_by_name("license")
        if lic_sec is None:
            raise LoaderError(f"{path}: no 'license' section (SEC(\"license\"))")
        license = lic_sec.data().split(b"\0", 1)[0].decode()

        programs: list[ProgramSpec] = []
        for idx, sec in enumerate(elf.iter_sections()):
            if not sec["sh_flags"] & SH_FLAGS.SHF_EXECINSTR or sec["sh_size"] == 0:
                continue
            if sec.name == ".text":  # subprograms: only reachable by calls, rejected below
                continue
            kind = _prog_type(sec.name)
            if kind is None:
                raise LoaderError(
                    f"{path}: code section {sec.name!r} is not a supported program type "
                    f"(expected a prefix among {sorted(PROGRAM_PREFIXES)})"
                )
            code = sec.data()
            relocs = elf.get_section_by_name(".rel" + sec.name)
            refs = _map_refs(elf, symbols, relocs, sec.name, code, maps_idx, map_symbols, path)
            funcs = funcs_by_section.get(idx, [])
            if not funcs:
                raise LoaderError(f"{path}: section {sec.name!r} holds no global function")
            for fn in sorted(funcs, key=lambda s: s["st_value"]):
                start, size = fn["st_value"], fn["st_size"]
                programs.append(
                    ProgramSpec(
                        name=fn.name,
                        section=sec.name,
                        prog_type=kind[0],
                        attach_to=kind[1],
                        insns=code[start : start + size],
                        map_refs=[(o - start, m) for o, m in refs if start <= o < start + size],
                    )
                )
    return BpfObject(path=path, license=license, maps=maps, programs=programs, btf=btf)


def _map_refs(elf, symbols, relocs, sec_name, code, maps_idx, map_symbols, path):
    """(byte offset, map name) for each relocation of a program section."""
    if relocs is None:
        return []
    if not isinstance(relocs, RelocationSection) or relocs.is_RELA():
        raise LoaderError(f"{path}: {relocs.name}: expected SHT_REL relocations")
    refs: list[tuple[int, str]] = []
    for rel in relocs.iter_relocations():
        offset, rtype = rel["r_offset"], rel["r_info_type"]
        sym = symbols[rel["r_info_sym"]]
        target = elf.get_section(sym["st_shndx"]).name if isinstance(sym["st_shndx"], int) else (
            sym["st_shndx"]
        )
        where = f"{path}: section {sec_name!r} at byte {offset}"
        if rtype == R_BPF_64_32:
            raise LoaderError(
                f"{where}: BPF-to-BPF call to {sym.name or target!r} in {target}; this loader "
                "does not link subprograms: mark the callee __always_inline"
            )
        if rtype != R_BPF_64_64:
            raise LoaderError(f"{where}: relocation type {rtype} is not supported")
        if sym["st_shndx"] != maps_idx:
            raise LoaderError(
                f"{where}: reference to {sym.name or target!r} in section {target}; only maps "
                "in .maps can be referenced"
            )
        if code[offset] != BPF_LD_IMM64:
            raise LoaderError(
                f"{where}: map relocation on opcode 0x{code[offset]:02x}, expected ld_imm64"
            )
        map_off = sym["st_value"] + struct.unpack_from("<i", code, offset + 4)[0]
        if map_off not in map_symbols:
            raise LoaderError(f"{where}: no map at offset {map_off} of .maps")
        refs.append((offset, map_symbols[map_off]))
    return refs
