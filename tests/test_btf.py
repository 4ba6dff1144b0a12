"""BTF parsing: the kernel's vmlinux BTF, the bundled object's .BTF and a synthetic blob."""

from __future__ import annotations

import os
import platform
import struct
from pathlib import Path

import pytest
from construct import Container

from ebpfwire.kernel.btf import (
    VMLINUX_PATH,
    Btf,
    BtfError,
    BtfHeader,
    BtfKind,
    BtfType,
    record_size,
)
from ebpfwire.kernel.config import _OFFSETS, _SYSCALL_REGS

OBJECT = Path(__file__).resolve().parent.parent / "ebpfwire" / "data" / "monitor.bpf.o"

needs_vmlinux = pytest.mark.skipif(
    not os.path.exists(VMLINUX_PATH),
    reason=f"{VMLINUX_PATH} absent: kernel built without CONFIG_DEBUG_INFO_BTF",
)


@pytest.fixture(scope="module")
def vmlinux() -> Btf:
    return Btf.vmlinux()


def _info(kind: BtfKind, vlen: int = 0, kind_flag: int = 0) -> int:
    return (kind_flag << 31) | (kind << 24) | vlen


def _type(name_off: int, kind: BtfKind, size_or_type: int, detail=None, vlen: int = 0) -> dict:
    return dict(name_off=name_off, info=_info(kind, vlen), size_or_type=size_or_type, detail=detail)


def _blob(types: list[dict], strings: bytes) -> bytes:
    body = b"".join(BtfType.build(t) for t in types)
    header = BtfHeader.build(
        dict(
            version=1,
            flags=0,
            hdr_len=24,
            type_off=0,
            type_len=len(body),
            str_off=len(body),
            str_len=len(strings),
        )
    )
    return header + body + strings


def _header(type_len: int, str_len: int) -> bytes:
    return BtfHeader.build(
        dict(version=1, flags=0, hdr_len=24, type_off=0, type_len=type_len, str_off=type_len,
             str_len=str_len)
    )


def _synthetic() -> Btf:
    strings = b"\0int\0outer\0a\0b\0c\0inner_t\0u32\0arr\0"
    off = {s: strings.index(b"\0" + s.encode() + b"\0") + 1 for s in
           ("int", "outer", "a", "b", "c", "inner_t", "u32", "arr")}
    member = lambda name, tid, bits: dict(name_off=off[name] if name else 0, type=tid, offset=bits)  # noqa: E731
    types = [
        _type(off["int"], BtfKind.INT, 4, detail=(1 << 24) | 32),  # 1: signed int
        _type(off["u32"], BtfKind.TYPEDEF, 1),  # 2: u32 -> int
        # 3: anonymous struct { int b; u32 c; }
        _type(0, BtfKind.STRUCT, 8, [member("b", 1, 0), member("c", 2, 32)], vlen=2),
        _type(off["inner_t"], BtfKind.TYPEDEF, 3),  # 4: inner_t -> anon struct
        # 5: struct outer { int a; <anonymous inner_t>; int arr[3] }
        _type(off["outer"], BtfKind.STRUCT, 24, [member("a", 1, 0), member(None, 4, 64),
                                                  member("arr", 6, 128)], vlen=3),
        _type(0, BtfKind.ARRAY, 0, dict(type=2, index_type=1, nelems=3)),  # 6: u32[3]
        _type(0, BtfKind.PTR, 5),  # 7: struct outer *
    ]
    return Btf(_blob(types, strings), "synthetic")


def test_synthetic_blob_round_trips():
    btf = _synthetic()
    assert len(btf) == 8
    outer = btf.type(btf.struct_id("outer"))
    assert outer.name == "outer" and outer.kind == BtfKind.STRUCT and outer.vlen == 3
    # the anonymous member is looked into through its typedef
    assert btf.member_offset("outer", "a") == 0
    assert btf.member_offset("outer", "b") == 8
    assert btf.member_offset("outer", "c") == 12
    assert btf.member_offset("outer", "arr") == 16
    assert btf.sizeof("outer") == 24
    assert btf.sizeof(6) == 12 and btf.sizeof(7) == 8 and btf.sizeof(2) == 4
    assert btf.resolve(4) == 3
    # building the parsed records again gives the same bytes
    rebuilt = b"".join(BtfType.build(btf.type(i)) for i in range(1, len(btf)))
    assert rebuilt == bytes(btf._types)


def test_synthetic_errors_are_clear():
    btf = _synthetic()
    with pytest.raises(BtfError, match="no struct or union named 'nope'"):
        btf.member_offset("nope", "a")
    with pytest.raises(BtfError, match=r"struct outer has no member 'zz'"):
        btf.member_offset("outer", "zz")
    with pytest.raises(BtfError, match="expected BTF magic"):
        Btf(b"\x00" * 32)
    with pytest.raises(BtfError, match="too short"):
        Btf(b"\x9f\xeb")


@needs_vmlinux
def test_vmlinux_member_offsets_are_sane(vmlinux: Btf):
    assert vmlinux.member_offset("task_struct", "tgid") > 0
    assert vmlinux.member_offset("task_struct", "real_parent") > 0
    assert vmlinux.member_offset("pid", "level") == 4  # after refcount_t count
    inum = vmlinux.member_offset("mnt_namespace", "ns.inum")
    assert inum == vmlinux.member_offset("mnt_namespace", "ns") + vmlinux.member_offset(
        "ns_common", "inum"
    )
    assert vmlinux.member_offset("upid", "nr") == 0
    if platform.machine() == "x86_64":
        assert vmlinux.sizeof("upid") == 16
        assert vmlinux.member_offset("upid", "ns") == 8
    assert vmlinux.sizeof("task_struct") > vmlinux.member_offset("task_struct", "nsproxy")


@needs_vmlinux
def test_vmlinux_unknown_struct_and_member(vmlinux: Btf):
    with pytest.raises(BtfError, match="no struct or union named 'no_such_struct_xyz'"):
        vmlinux.member_offset("no_such_struct_xyz", "x")
    with pytest.raises(BtfError, match="struct task_struct has no member 'no_such_member'"):
        vmlinux.member_offset("task_struct", "no_such_member")


@needs_vmlinux
def test_fast_scan_agrees_with_schema(vmlinux: Btf):
    seen: set[int] = set()
    for tid in range(1, len(vmlinux)):
        kind = vmlinux.kind(tid)
        if kind in seen and tid > 20000:
            continue
        seen.add(kind)
        rec: Container = vmlinux.type(tid)
        assert rec.kind == kind
        assert len(BtfType.build(rec)) == record_size(kind, rec.vlen)


@pytest.mark.skipif(not OBJECT.exists(), reason=f"{OBJECT} not built yet (make -C bpf)")
def test_object_btf_has_maps_datasec():
    from elftools.elf.elffile import ELFFile

    with OBJECT.open("rb") as f:
        data = ELFFile(f).get_section_by_name(".BTF").data()
    btf = Btf(data, ".BTF")
    secs = btf.ids_named(".maps", (BtfKind.DATASEC,))
    assert len(secs) == 1
    var_names = {btf.type(v.type).name for v in btf.type(secs[0]).detail}
    assert {"events", "config"} <= var_names


# Reference implementations: one record at a time through record_size and the construct
# schema, as the loader did before the word scan. The fast paths must agree with them.


def _reference_scan(btf: Btf) -> tuple[list[int], list[int], list[int]]:
    starts, kinds, name_offs, pos = [], [], [], 0
    while pos < len(btf._types):
        name_off, info, _ = struct.unpack_from("<III", btf._types, pos)
        starts.append(pos // 4)
        kinds.append((info >> 24) & 0x1F)
        name_offs.append(name_off)
        pos += record_size((info >> 24) & 0x1F, info & 0xFFFF)
    return starts, kinds, name_offs


def _schema_resolve(btf: Btf, tid: int) -> int:
    while tid and btf.type(tid).kind in (BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST,
                                         BtfKind.RESTRICT, BtfKind.TYPE_TAG):
        tid = btf.type(tid).size_or_type
    return tid


def _schema_find(btf: Btf, tid: int, member: str) -> tuple[int, int] | None:
    rec = btf.type(tid)
    for m in rec.detail:
        bits = m.offset & 0xFFFFFF if rec.kind_flag else m.offset
        if m.name_off and btf.string(m.name_off) == member:
            return bits, m.type
        inner = _schema_resolve(btf, m.type)
        if not m.name_off and btf.type(inner).kind in (BtfKind.STRUCT, BtfKind.UNION):
            hit = _schema_find(btf, inner, member)
            if hit is not None:
                return bits + hit[0], hit[1]
    return None


def _ids_by_decoding(btf: Btf, names: set[str]) -> dict[str, list[int]]:
    """Every id of each name, found by decoding every type's name."""
    found: dict[str, list[int]] = {n: [] for n in names}
    for tid in range(1, len(btf)):
        name = btf.string(btf._name_offs[tid]) if btf._name_offs[tid] else ""
        if name in found:
            found[name].append(tid)
    return found


def _schema_member_offset(btf: Btf, struct_tid: int, path: str) -> int:
    tid, bits = struct_tid, 0
    for part in path.split("."):
        hit = _schema_find(btf, tid, part)
        assert hit is not None, f"{btf.type(struct_tid).name}.{path}"
        bits += hit[0]
        tid = _schema_resolve(btf, hit[1])
    return bits // 8


def test_synthetic_fast_paths_agree_with_the_schema():
    btf = _synthetic()
    assert (btf._starts[1:], btf._kinds[1:], list(btf._name_offs[1:])) == _reference_scan(btf)
    assert _ids_by_decoding(btf, {"outer", "u32"}) == {"outer": [5], "u32": [2]}
    assert btf.struct_ids(["nope", "outer", "int", "outer"]) == {"outer": 5}
    for path in ("a", "b", "c", "arr"):
        assert btf.member_offset("outer", path) == _schema_member_offset(btf, 5, path)


@needs_vmlinux
def test_vmlinux_word_scan_agrees_with_record_by_record_scan(vmlinux: Btf):
    starts, kinds, name_offs = _reference_scan(vmlinux)
    assert vmlinux._starts[1:] == starts
    assert vmlinux._kinds[1:] == kinds
    assert list(vmlinux._name_offs[1:]) == name_offs


@needs_vmlinux
def test_vmlinux_config_offsets_agree_with_the_schema(vmlinux: Btf):
    wanted = list(_OFFSETS.values())
    wanted += [("pt_regs", reg) for reg in _SYSCALL_REGS.get(platform.machine(), ())]
    structs = {name for name, _ in wanted}
    by_name = _ids_by_decoding(vmlinux, structs | {"ns_common", "list_head", "int"})
    assert all(by_name.values())
    assert {n: vmlinux.ids_named(n) for n in by_name} == by_name
    first_struct = {
        name: min(t for t in by_name[name] if vmlinux.kind(t) in (BtfKind.STRUCT, BtfKind.UNION))
        for name in structs
    }
    assert vmlinux.struct_ids(structs) == first_struct
    fast = {where: vmlinux.member_offset(*where) for where in wanted}
    assert fast == {(name, path): _schema_member_offset(vmlinux, first_struct[name], path)
                    for name, path in wanted}


def test_ids_named_matches_whole_name_offsets_only():
    """A name offset whose bytes appear across two entries of the index is no match."""
    strings = b"\0int\0"
    types = [
        _type(0x01000000, BtfKind.INT, 4, detail=32),  # 1: bytes 00 00 00 01 ...
        _type(0, BtfKind.PTR, 1),  # 2: ... 00 00 00 00: "01 00 00 00" (= 1) straddles
        _type(1, BtfKind.INT, 4, detail=32),  # 3: int
        _type(1, BtfKind.TYPEDEF, 3),  # 4: a second "int"
    ]
    btf = Btf(_blob(types, strings), "straddle")
    assert btf.ids_named("int") == [3, 4]
    assert btf.ids_named("int", (BtfKind.TYPEDEF,)) == [4]
    assert btf.ids_named("nothing") == []


def _damaged(body: bytes, match: str) -> None:
    strings = b"\0int\0"
    with pytest.raises(BtfError, match=match):
        Btf(_header(len(body), len(strings)) + body + strings, "damaged")


def test_damaged_type_sections_are_clear_errors():
    int_rec = BtfType.build(_type(1, BtfKind.INT, 4, detail=32))  # 16 bytes
    struct_rec = BtfType.build(
        _type(1, BtfKind.STRUCT, 4, [dict(name_off=1, type=1, offset=0)], vlen=1)
    )  # 24 bytes
    _damaged(int_rec + int_rec[:4], r"damaged: truncated type record at type offset 16")
    _damaged(int_rec + int_rec[:10], r"truncated type record at type offset 16")
    _damaged(int_rec + int_rec[:2], r"truncated type record at type offset 16")
    _damaged(int_rec + struct_rec[:20],
             r"last type record \(type offset 16\) runs past the type section \(36 bytes\)")
    unknown = struct.pack("<III", 1, 25 << 24, 0)
    _damaged(int_rec + unknown, r"unknown BTF kind 25 at type offset 16")


def test_dangling_type_references_are_clear_errors():
    strings = b"\0int\0s\0t\0m\0"
    types = [
        _type(1, BtfKind.INT, 4, detail=32),  # 1
        _type(7, BtfKind.TYPEDEF, 99),  # 2: t -> nothing
        _type(5, BtfKind.STRUCT, 4, [dict(name_off=9, type=2, offset=0)], vlen=1),  # 3: s
    ]
    btf = Btf(_blob(types, strings), "dangling")
    with pytest.raises(BtfError, match=r"dangling: reference to type 99, out of range 0\.\.3"):
        btf.resolve(2)
    with pytest.raises(BtfError, match="reference to type 99"):
        btf.member_offset("s", "m.x")
    loop = [_type(7, BtfKind.TYPEDEF, 2), _type(7, BtfKind.TYPEDEF, 1)]
    with pytest.raises(BtfError, match="typedef/qualifier loop"):
        Btf(_blob(loop, strings), "loop").resolve(1)
