"""BTF parsing: the kernel's vmlinux BTF, the bundled object's .BTF and a synthetic blob."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
from construct import Container

from ebpfwire.loader.btf import (
    VMLINUX_PATH,
    Btf,
    BtfError,
    BtfHeader,
    BtfKind,
    BtfType,
    record_size,
)

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
