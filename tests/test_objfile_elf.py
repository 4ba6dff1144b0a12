"""The object reader's own ELF section table (objfile.ElfFile) against pyelftools, the reader
it replaced: every section, symbol and relocation of every test object reads the same; a
malformed file is a LoaderError saying where, never a traceback."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from test_objects_oracle import OBJECTS, build

from ebpfwire.kernel.btf import BtfKind
from ebpfwire.kernel.errors import BtfError, LoaderError
from ebpfwire.kernel.objfile import ElfFile, Symbol, read_spec, read_symbols

BUNDLED = ["monitor.bpf.o", "monitor-ringbuf.bpf.o", "stats.bpf.o"]


@pytest.mark.parametrize("name", sorted(set(OBJECTS) | set(BUNDLED)))
def test_sections_symbols_relocations_equal_pyelftools(tmp_path: Path, name: str) -> None:
    path = build(tmp_path, name)
    data = path.read_bytes()
    ours = ElfFile(data, str(path))
    with open(path, "rb") as f:
        elf = ELFFile(f)
        theirs = list(elf.iter_sections())
        assert [(s.index, s.name, s.flags, s.offset, s.size, s.link, s.entsize,
                 ours.section_data(s)) for s in ours.sections] == [
            (i, s.name, s["sh_flags"], s["sh_offset"], s["sh_size"], s["sh_link"],
             s["sh_entsize"], s.data()) for i, s in enumerate(theirs)]
        assert {n: s.index for n, s in ours.by_name.items()} == {
            n: elf.get_section_index(n) for n in ours.by_name}
        symtab = elf.get_section_by_name(".symtab")
        assert read_symbols(ours, ours.by_name[".symtab"]) == [
            Symbol(s.name, s["st_shndx"], s["st_value"], s["st_size"], s["st_info"]["type"],
                   s["st_info"]["bind"], s["st_other"]["visibility"])
            for s in symtab.iter_symbols()
        ]
        relocs = [s for s in theirs if isinstance(s, RelocationSection)]
        assert relocs  # every test object has some: the comparison below compares something
        for sec in relocs:
            assert ours.relocations(ours.by_name[sec.name]) == [
                (r["r_offset"], r["r_info_sym"]) for r in sec.iter_relocations()]


def _object() -> bytes:
    return (Path(__file__).resolve().parent.parent / "ebpfwire" / "data" / "stats.bpf.o"
            ).read_bytes()


def _with(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def _section_header(data: bytes, name: str) -> int:
    """Byte offset of section ``name``'s header."""
    elf = ElfFile(data, "x")
    shoff = struct.unpack_from("<Q", data, 40)[0]
    return shoff + 64 * elf.by_name[name].index


MALFORMED = {
    "not ELF": (lambda d: b"MZ" + d[2:],
                r"not a readable ELF object: expected the magic .* at byte 0, found b'MZ"),
    "a header cut short": (lambda d: d[:40], r"a 40-byte file"),
    "32-bit": (lambda d: d[:4] + b"\1" + d[5:], r"expected a 64-bit ELF object, found ELFCLASS32"),
    "not BPF": (lambda d: _with(d, 18, "<H", 62),
                r"expected an ELF BPF relocatable object \(e_machine 247, e_type 1\), found "
                r"e_machine 62, e_type 1"),
    "section headers past the end": (lambda d: d[: struct.unpack_from("<Q", d, 40)[0] + 100],
                                     r"section headers at byte \d+ run past the end of the file"),
    "a section past the end": (
        lambda d: _with(d, _section_header(d, ".BTF") + 32, "<Q", 1 << 40),
        r"section '.BTF': bytes \d+\.\.\d+ run past the end of the file"),
    "a relocation of a symbol that is not there": (
        lambda d: _with(d, ElfFile(d, "x").by_name[".relraw_tracepoint/sys_enter"]
                        .offset + 8, "<Q", (99_999 << 32) | 1),
        r"a relocation names symbol 99999, of \d+ in .symtab"),
}


@pytest.mark.parametrize("how", MALFORMED)
def test_malformed_object_is_a_clear_error(how: str) -> None:
    damage, message = MALFORMED[how]
    with pytest.raises(LoaderError, match=message):
        read_spec(damage(_object()), "damaged.o")


@pytest.mark.parametrize("name", sorted(set(OBJECTS) | set(BUNDLED)))
def test_btf_words_read_directly_equal_parsed_records(tmp_path: Path, name: str) -> None:
    """Btf.name/ref/array/members (what reading .maps uses now) say what the parsed
    record says, for every type of every test object's .BTF."""
    btf = read_spec(build(tmp_path, name)).btf
    kinds = set()
    for tid in range(1, len(btf)):
        rec, kind = btf.type(tid), btf.kind(tid)
        kinds.add(kind)
        assert btf.name(tid) == rec.name
        assert btf.ref(tid) == rec.size_or_type
        if kind == BtfKind.ARRAY:
            assert btf.array(tid) == (rec.detail.type, rec.detail.index_type, rec.detail.nelems)
        elif kind in (BtfKind.STRUCT, BtfKind.UNION):
            mask = 0xFFFFFF if rec.kind_flag else 0xFFFFFFFF
            assert btf.members(tid) == [(m.name_off, m.type, m.offset & mask)
                                        for m in rec.detail]
        elif kind == BtfKind.DATASEC:
            assert btf.members(tid) == [(v.type, v.offset, v.size) for v in rec.detail]
        else:
            with pytest.raises(BtfError, match=rf"type {tid} is a {kind.name}, not a STRUCT"):
                btf.members(tid)
        if kind != BtfKind.ARRAY:
            with pytest.raises(BtfError, match=rf"type {tid} is a {kind.name}, not an ARRAY"):
                btf.array(tid)
    assert kinds & {BtfKind.ARRAY, BtfKind.STRUCT, BtfKind.UNION, BtfKind.DATASEC}
    for bad in (0, len(btf)):
        with pytest.raises(BtfError, match=rf"type id {bad} out of range 1\.\.{len(btf) - 1}"):
            btf.ref(bad)
