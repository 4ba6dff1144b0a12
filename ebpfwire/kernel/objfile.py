"""Read any libbpf-style BPF object: every function, map, global data section, relocation.

What :class:`ObjectSpec` holds is the object as the compiler wrote it, before anything
touches the kernel: code sections as bytes (relocations per instruction), functions
(programs in ``SEC()`` sections, subprograms in ``.text``), the BTF-defined maps of
``.maps``, global data (``.rodata*``, ``.data*``, ``.bss*``) with its variables, the
``.BTF`` and ``.BTF.ext``. :mod:`ebpfwire.kernel.link` builds programs from it.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

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
    for var, _, _ in btf.members(secs[0]):
        name = btf.name(var)
        maps[name] = _map_def(btf, btf.ref(var), name, path, False)
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
    members = btf.members(struct_id)
    for i, (name_off, member_type, _) in enumerate(members):
        mname = btf.string(name_off)
        if mname == "values":
            if inner or i != len(members) - 1:
                raise LoaderError(f"{path}: map {name!r}: 'values' must be the last member of "
                                  "an outer map (no map-in-map inside an inner map)")
            inner_spec = _values_def(btf, member_type, name, path)
            slot_types = (syscalls.MAP_IN_MAP_TYPES if inner_spec is not None
                          else frozenset({syscalls.BPF_MAP_TYPE_PROG_ARRAY}))
            values["value_size"] = 4  # a map or program fd
            continue
        ptr = btf.resolve(member_type)
        if btf.kind(ptr) != BtfKind.PTR:
            raise LoaderError(f"{path}: map {name!r} member {mname!r} is not a pointer")
        target = btf.ref(ptr)
        if mname in _UINT_MEMBERS:
            arr = btf.resolve(target)
            if btf.kind(arr) != BtfKind.ARRAY:
                raise LoaderError(f"{path}: map {name!r} member {mname!r}: expected __uint")
            values[mname] = btf.array(arr)[2]
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
    if btf.kind(arr) != BtfKind.ARRAY or btf.array(arr)[2]:
        raise LoaderError(f"{path}: map {name!r}: 'values' is not a zero-sized array "
                          "(declare it with __array(values, ...))")
    ptr = btf.resolve(btf.array(arr)[0])
    if btf.kind(ptr) != BtfKind.PTR:
        raise LoaderError(f"{path}: map {name!r}: 'values' is not an array of pointers")
    target = btf.resolve(btf.ref(ptr))
    if btf.kind(target) == BtfKind.FUNC_PROTO:
        return None
    return _map_def(btf, target, f"{name}.inner", path, True)


# a symbol's section index, type, binding and visibility by the ELF specification's names
# (as pyelftools names them, which the loader's messages and tests use)
_SHNDX = {0: "SHN_UNDEF", 0xFFF1: "SHN_ABS", 0xFFF2: "SHN_COMMON"}
_STT = {0: "STT_NOTYPE", 1: "STT_OBJECT", 2: "STT_FUNC", 3: "STT_SECTION", 4: "STT_FILE",
        5: "STT_COMMON", 6: "STT_TLS", 7: "STT_NUM", 8: "STT_RELC", 9: "STT_SRELC",
        10: "STT_LOOS", 12: "STT_HIOS", 13: "STT_LOPROC", 15: "STT_HIPROC"}
_STB = {0: "STB_LOCAL", 1: "STB_GLOBAL", 2: "STB_WEAK", 3: "STB_NUM", 10: "STB_LOOS",
        12: "STB_HIOS", 13: "STB_LOPROC", 15: "STB_HIPROC"}
_STV = {0: "STV_DEFAULT", 1: "STV_INTERNAL", 2: "STV_HIDDEN", 3: "STV_PROTECTED",
        4: "STV_EXPORTED", 5: "STV_SINGLETON", 6: "STV_ELIMINATE"}
ET_REL = 1
SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_REL, SHT_DYNSYM = 2, 4, 8, 9, 11
SHF_ALLOC, SHF_EXECINSTR, SHF_COMPRESSED = 0x2, 0x4, 0x800
SHN_XINDEX = 0xFFFF
_EHDR_SIZE, _SHDR_SIZE = 64, 64  # Elf64_Ehdr, Elf64_Shdr


class Section(NamedTuple):
    """One entry of an ELF64 section header table (the fields an object's reading uses)."""

    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    entsize: int


class ElfFile:
    """The section table of an ELF64 file, unpacked with ``struct`` (pyelftools parsed
    every header through its construct: most of the time opening the monitor's object
    took, and its import another 15 ms). Malformed tables are a LoaderError saying where."""

    def __init__(self, data: bytes, origin: str) -> None:
        self.data, self.origin = data, origin
        if data[:4] != b"\x7fELF":
            raise LoaderError(f"{origin}: not a readable ELF object: expected the magic "
                              f"b'\\x7fELF' at byte 0, found {data[:4]!r}")
        if len(data) < _EHDR_SIZE or data[5] not in (1, 2):
            raise LoaderError(f"{origin}: not a readable ELF object: a {len(data)}-byte file, "
                              f"byte order {data[5] if len(data) > 5 else None} (expected 1 "
                              "or 2 at byte 5 of a 64-byte header)")
        if data[4] != 2:
            raise LoaderError(f"{origin}: expected a 64-bit ELF object, found ELFCLASS"
                              f"{ {1: 32}.get(data[4], data[4]) }")
        self.order = "<" if data[5] == 1 else ">"
        (self.type, self.machine, shoff, shentsize, shnum, shstrndx) = (
            struct.unpack_from(self.order + "HH20xQ10xHHH", data, 16))
        self.sections: list[Section] = []
        if not shoff:
            self.by_name: dict[str, Section] = {}
            return
        if shentsize != _SHDR_SIZE:
            raise LoaderError(f"{origin}: expected {_SHDR_SIZE}-byte section headers, found "
                              f"e_shentsize {shentsize} (byte 58)")
        raw = self._headers(shoff, 1)
        if not shnum:  # more than SHN_LORESERVE sections: the count is in section 0
            shnum = raw[0][5]
        if shstrndx == SHN_XINDEX:
            shstrndx = raw[0][6]
        raw = self._headers(shoff, shnum)
        if shstrndx >= shnum:
            raise LoaderError(f"{origin}: the section names are in section {shstrndx}, of "
                              f"{shnum} sections")
        strtab = raw[shstrndx]
        names = self._bytes(strtab[4], strtab[5], f"section {shstrndx} (names)")
        for idx, (name, typ, flags, _, offset, size, link, _, _, entsize) in enumerate(raw):
            end = names.find(b"\0", name)
            if name >= len(names) or end < 0:
                raise LoaderError(f"{origin}: section {idx}: its name at byte {name} of the "
                                  f"section names ({len(names)} bytes) is not NUL-terminated")
            self.sections.append(Section(idx, names[name:end].decode("latin-1"), typ, flags,
                                         offset, size, link, entsize))
        self.by_name = {sec.name: sec for sec in self.sections}  # the last of a name, as before

    def _headers(self, shoff: int, count: int) -> list[tuple]:
        end = shoff + count * _SHDR_SIZE
        if end > len(self.data):
            raise LoaderError(f"{self.origin}: {count} section headers at byte {shoff} run "
                              f"past the end of the file ({len(self.data)} bytes)")
        return list(struct.iter_unpack(self.order + "IIQQQQIIQQ", self.data[shoff:end]))

    def _bytes(self, offset: int, size: int, what: str) -> bytes:
        if offset + size > len(self.data):
            raise LoaderError(f"{self.origin}: {what}: bytes {offset}..{offset + size} run "
                              f"past the end of the file ({len(self.data)} bytes)")
        return self.data[offset : offset + size]

    def section_data(self, sec: Section) -> bytes:
        """A section's bytes (zeros for SHT_NOBITS, such as ``.bss``)."""
        if sec.type == SHT_NOBITS:
            return bytes(sec.size)
        if sec.flags & SHF_COMPRESSED:
            raise LoaderError(f"{self.origin}: section {sec.name!r} is compressed "
                              "(SHF_COMPRESSED): link the object without compressing it")
        return self._bytes(sec.offset, sec.size, f"section {sec.name!r}")

    def relocations(self, sec: Section) -> list[tuple[int, int]]:
        """(r_offset, symbol index) of each entry of an SHT_REL or SHT_RELA section."""
        size = 24 if sec.type == SHT_RELA else 16
        data = self.section_data(sec)
        if len(data) % size:
            raise LoaderError(f"{self.origin}: {sec.name}: {len(data)} bytes is not a whole "
                              f"number of {size}-byte relocations")
        return [(entry[0], entry[1] >> 32)
                for entry in struct.iter_unpack(self.order + ("QQq" if size == 24 else "QQ"),
                                                data)]


def read_symbols(elf: ElfFile, symtab: Section) -> list[Symbol]:
    """Every symbol of ``symtab``, unpacked at once."""
    entry = struct.Struct(elf.order + "IBBHQQ")  # Elf64_Sym
    data = elf.section_data(symtab)
    if symtab.link >= len(elf.sections):
        raise LoaderError(f"{elf.origin}: .symtab: its names are in section {symtab.link}, "
                          f"of {len(elf.sections)} sections")
    names = elf.section_data(elf.sections[symtab.link])
    if symtab.entsize != entry.size or len(data) % entry.size:
        raise LoaderError(f"{elf.origin}: .symtab: expected {entry.size}-byte entries, found "
                          f"{len(data)} bytes of {symtab.entsize}-byte entries")
    text, at = {}, 0   # the names that start where the one before ended: nearly all
    for piece in names.split(b"\0"):
        text[at] = piece.decode("utf-8", "replace")
        at += len(piece) + 1
    symbols = []
    make = Symbol._make
    for name, info, other, shndx, value, size in entry.iter_unpack(data):
        found = text.get(name)
        if found is None:  # a name inside another (a shared suffix)
            end = names.find(b"\0", name)
            found = names[name : end if end >= 0 else len(names)].decode("utf-8", "replace")
        symbols.append(make((found, _SHNDX.get(shndx, shndx), value, size,
                             _STT.get(info & 0xF, info & 0xF), _STB.get(info >> 4, info >> 4),
                             _STV.get(other & 7, other & 7))))
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
    return _Reader(ElfFile(data, origin), origin, name or object_name(origin)).spec()


class _Reader:
    def __init__(self, elf: ElfFile, origin: str, name: str) -> None:
        if elf.machine != EM_BPF or elf.type != ET_REL:
            raise LoaderError(
                f"{origin}: expected an ELF BPF relocatable object (e_machine {EM_BPF}, "
                f"e_type {ET_REL}), found e_machine {elf.machine}, e_type {elf.type}"
            )
        self.elf, self.origin, self.name = elf, origin, name

    def spec(self) -> ObjectSpec:
        elf, origin = self.elf, self.origin
        symtab = elf.by_name.get(".symtab")
        if symtab is None or symtab.type not in (SHT_SYMTAB, SHT_DYNSYM):
            raise LoaderError(f"{origin}: no symbol table")
        symbols = read_symbols(elf, symtab)
        btf_sec = elf.by_name.get(".BTF")
        btf = (Btf(elf.section_data(btf_sec), f"{origin} .BTF") if btf_sec is not None
               else None)
        ext_sec = elf.by_name.get(".BTF.ext")
        ext = None
        if ext_sec is not None and btf is not None:
            from ebpfwire.kernel.btf_ext import BtfExt  # here: objects without one skip it

            ext = BtfExt.parse(elf.section_data(ext_sec), btf, f"{origin} .BTF.ext")
        lic = elf.by_name.get("license")
        if lic is None:
            raise LoaderError(f'{origin}: no \'license\' section (SEC("license"))')
        version = elf.by_name.get("version")
        kern_version = (int.from_bytes(elf.section_data(version)[:4], "little")
                        if version is not None else 0)

        code: dict[int, bytes] = {}
        names: dict[int, str] = {}
        sizes: dict[str, int] = {}
        data: dict[str, DataSection] = {}
        maps_index = None
        for idx, sec in enumerate(elf.sections):
            names[idx] = sec.name
            if sec.flags & SHF_ALLOC:
                sizes[sec.name] = sec.size
            if sec.flags & SHF_EXECINSTR and sec.size:
                code[idx] = elf.section_data(sec)
            elif sec.name == ".maps":
                maps_index = idx
            elif sec.flags & SHF_ALLOC and sec.size and (kind := _data_kind(sec.name)):
                raw = bytes(sec.size) if kind == "bss" else elf.section_data(sec)
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
            license=elf.section_data(lic).split(b"\0", 1)[0].decode(),
            kern_version=kern_version,
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
            for var, _, _ in btf.members(ids[0]):
                name = btf.name(var)
                if name in sec.variables:
                    sec.variables[name].type_id = btf.ref(var)

    def _map_slots(self, maps: dict[str, MapSpec], symbols: list[Symbol], maps_index: int,
                   programs: dict[str, ProgramSpec], btf: Btf | None) -> None:
        """``.rel.maps``: the static ``values`` of outer maps and PROG_ARRAYs, each relocation
        a pointer in the ``values`` array: slot = its position there."""
        sec = self.elf.by_name.get(".rel.maps")
        if sec is None or sec.type not in (SHT_REL, SHT_RELA) or btf is None:
            return
        where = {s.name: (s.value, s.size) for s in symbols
                 if s.section == maps_index and s.type == "STT_OBJECT" and s.name in maps}
        for at, sym_index in self.elf.relocations(sec):
            sym = self._symbol(sec, symbols, sym_index)
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
            members = btf.members(btf.resolve(btf.ref(vid)))
            if members and btf.string(members[-1][0]) == "values":
                return members[-1][2] // 8
        return -1

    def _relocations(self, idx: int, symbols: list[Symbol]) -> dict[int, Symbol]:
        sec = self.elf.by_name.get(".rel" + self.elf.sections[idx].name)
        if sec is None:
            return {}
        if sec.type != SHT_REL:
            raise LoaderError(f"{self.origin}: {sec.name}: expected SHT_REL relocations")
        return {at // INSN_SIZE: self._symbol(sec, symbols, sym)
                for at, sym in self.elf.relocations(sec)}

    def _symbol(self, sec: Section, symbols: list[Symbol], index: int) -> Symbol:
        if index >= len(symbols):
            raise LoaderError(f"{self.origin}: {sec.name}: a relocation names symbol {index}, "
                              f"of {len(symbols)} in .symtab")
        return symbols[index]
