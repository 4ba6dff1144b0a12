"""Build one program's instructions: its function, the subprograms it calls, its map
references, and its func_info/line_info at their new positions.

Subprograms are appended the way libbpf appends them (depth first, each the first time a
call reaches it), so the instructions equal libbpf's: a call's immediate is then the
distance to the callee's copy. ``ld_imm64`` of a ``.maps`` symbol becomes a map fd, of a
global data symbol the address of its value (``BPF_PSEUDO_MAP_VALUE`` + offset), of a
function (``BPF_PSEUDO_FUNC``, a callback) that function's position; externs become what
:mod:`ebpfwire.kernel.externs` resolved them to.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.externs import KCONFIG_SEC, POISON_CALL_KFUNC_BASE, Extern
from ebpfwire.kernel.objfile import INSN_SIZE, Function, ObjectSpec

BPF_LD_IMM64 = 0x18
BPF_CALL = 0x85
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
BPF_PSEUDO_CALL = 1
BPF_PSEUDO_FUNC = 4
BPF_PSEUDO_BTF_ID = 3
BPF_PSEUDO_KFUNC_CALL = 2


class MapRef(NamedTuple):
    """An ``ld_imm64`` at ``insn`` that loads map ``map`` (its fd when ``value_offset`` is
    None, else the address of its value + ``value_offset``)."""

    insn: int
    map: str
    value_offset: int | None = None


@dataclass
class LinkedProgram:
    """Instructions ready to load once map fds are patched in."""

    insns: bytearray
    map_refs: list[MapRef] = field(default_factory=list)
    func_info: list[tuple[int, int]] = field(default_factory=list)
    line_info: list[tuple[int, int, int, int]] = field(default_factory=list)
    layout: list[tuple[str, int]] = field(default_factory=list)  # (function, first insn)

    def with_fds(self, fds: dict[str, int]) -> bytes:
        """The instructions with every map reference given its map's fd."""
        code = bytearray(self.insns)
        for ref in self.map_refs:
            at = ref.insn * INSN_SIZE
            src = BPF_PSEUDO_MAP_FD if ref.value_offset is None else BPF_PSEUDO_MAP_VALUE
            code[at + 1] = (code[at + 1] & 0x0F) | (src << 4)
            struct.pack_into("<i", code, at + 4, fds[ref.map])
            if ref.value_offset is not None:
                struct.pack_into("<i", code, at + 12, ref.value_offset)
        return bytes(code)


def link(
    spec: ObjectSpec,
    entry: Function,
    code: dict[int, bytes] | None = None,
    failures: dict[tuple[int, int], str] | None = None,
    externs: dict[str, Extern] | None = None,
) -> LinkedProgram:
    """``entry`` and every function it reaches, from ``code`` (default: the object's; the
    CO-RE-relocated sections at load). An instruction in ``failures`` (section, index:
    a relocation that could not be applied) fails the link with its message; ``externs``
    are the object's, resolved."""
    return _Linker(spec, code or spec.code, failures or {}, externs or {}).run(entry)


class _Linker:
    def __init__(self, spec: ObjectSpec, code: dict[int, bytes],
                 failures: dict[tuple[int, int], str], externs: dict[str, Extern]) -> None:
        self.spec, self.code, self.failures, self.externs = spec, code, failures, externs
        self.out = LinkedProgram(bytearray())
        self.placed: dict[tuple[int, int], int] = {}
        self.entry = ""

    def run(self, entry: Function) -> LinkedProgram:
        self.entry = entry.name
        self._place(entry)
        return self.out

    def _place(self, fn: Function) -> int:
        base = len(self.out.insns) // INSN_SIZE
        self.placed[(fn.sec_index, fn.start)] = base
        self.out.layout.append((fn.name, base))
        start, end = fn.start * INSN_SIZE, (fn.start + fn.count) * INSN_SIZE
        self.out.insns += self.code[fn.sec_index][start:end]
        ext = self.spec.btf_ext
        if ext is not None:
            for insn, *rest in ext.func_info.get(fn.section, ()):
                if fn.start <= insn < fn.start + fn.count:
                    self.out.func_info.append((insn - fn.start + base, *rest))
            for insn, *rest in ext.line_info.get(fn.section, ()):
                if fn.start <= insn < fn.start + fn.count:
                    self.out.line_info.append((insn - fn.start + base, *rest))
        self._relocate(fn, base)
        return base

    def _where(self, fn: Function, i: int) -> str:
        return (f"{self.spec.origin}: program {self.entry!r}: instruction {i} of "
                f"{fn.name!r} (section {fn.section!r})")

    def _relocate(self, fn: Function, base: int) -> None:
        relocs = self.spec.relocations.get(fn.sec_index, {})
        insns = self.out.insns
        for i in range(fn.count):
            sec_insn = fn.start + i
            failure = self.failures.get((fn.sec_index, sec_insn))
            if failure is not None:
                raise LoaderError(f"{self._where(fn, i)}: {failure}")
            at = (base + i) * INSN_SIZE
            opcode, src = insns[at], insns[at + 1] >> 4
            sym = relocs.get(sec_insn)
            if sym is not None and sym.section == "SHN_UNDEF":
                self._extern_ref(fn, i, at, sym.name)
                continue
            is_call = opcode == BPF_CALL and src == BPF_PSEUDO_CALL
            if opcode == BPF_LD_IMM64 and sym is not None and sym.section in self.code:
                insns[at + 1] = (insns[at + 1] & 0x0F) | (BPF_PSEUDO_FUNC << 4)  # a callback
                src = BPF_PSEUDO_FUNC
            if is_call or (opcode == BPF_LD_IMM64 and src == BPF_PSEUDO_FUNC):
                imm = struct.unpack_from("<i", insns, at + 4)[0]
                if sym is None:
                    target = (fn.sec_index, sec_insn + imm + 1)
                elif isinstance(sym.section, int):
                    off = sym.value // INSN_SIZE + imm + 1 if is_call else (
                        (sym.value + imm) // INSN_SIZE)
                    target = (sym.section, off)
                else:
                    raise LoaderError(
                        f"{self._where(fn, i)}: call to {sym.name!r} ({sym.section}), which "
                        "is not defined in the object"
                    )
                callee = self.spec.function_at(*target)
                if callee is None:
                    raise LoaderError(
                        f"{self._where(fn, i)}: call target instruction {target[1]} of section "
                        f"{self.spec.section_names[target[0]]!r} starts no function"
                    )
                pos = self.placed.get(target)
                if pos is None:
                    pos = self._place(callee)
                struct.pack_into("<i", insns, at + 4, pos - (base + i) - 1)
            elif sym is not None:
                self._data_ref(fn, i, at, sym)

    def _extern_ref(self, fn: Function, i: int, at: int, name: str) -> None:
        """A kfunc call, or an ``ld_imm64`` of a .kconfig value or a ksym, as libbpf
        relocates it."""
        ext = self.externs.get(name)
        insns = self.out.insns
        if ext is None:
            raise LoaderError(f"{self._where(fn, i)}: reference to {name!r}, which is neither "
                              "defined in the object nor an extern in .kconfig or .ksyms")
        if insns[at] == BPF_CALL:
            if ext.is_set:
                insns[at + 1] = (insns[at + 1] & 0x0F) | (BPF_PSEUDO_KFUNC_CALL << 4)
                struct.pack_into("<hi", insns, at + 2, ext.fd_index, ext.kernel_btf_id)
            else:  # a __weak kfunc the kernel lacks: a call the verifier names if reached
                struct.pack_into("<BBhi", insns, at, BPF_CALL, 0, 0,
                                 POISON_CALL_KFUNC_BASE + ext.index)
            return
        if insns[at] != BPF_LD_IMM64:
            raise LoaderError(f"{self._where(fn, i)}: extern {name!r} on opcode "
                              f"0x{insns[at]:02x}, expected ld_imm64 (0x18) or call (0x85)")
        if ext.section == KCONFIG_SEC:
            self.out.map_refs.append(MapRef(at // INSN_SIZE, KCONFIG_SEC, ext.offset))
        elif ext.type_id and ext.is_set:  # typed ksym, or a kfunc's address
            insns[at + 1] = (insns[at + 1] & 0x0F) | (BPF_PSEUDO_BTF_ID << 4)
            struct.pack_into("<i", insns, at + 4, ext.kernel_btf_id)
            struct.pack_into("<i", insns, at + 12, ext.btf_obj_fd)
        else:  # untyped ksym's address; 0 for a missing __weak one
            struct.pack_into("<I", insns, at + 4, ext.addr & 0xFFFFFFFF)
            struct.pack_into("<I", insns, at + 12, ext.addr >> 32)

    def _data_ref(self, fn: Function, i: int, at: int, sym) -> None:
        spec, insns = self.spec, self.out.insns
        if insns[at] != BPF_LD_IMM64:
            raise LoaderError(
                f"{self._where(fn, i)}: relocation against {sym.name!r} on opcode "
                f"0x{insns[at]:02x}, expected ld_imm64 (0x18)"
            )
        imm = struct.unpack_from("<i", insns, at + 4)[0]
        insn = at // INSN_SIZE
        if spec.maps_index is not None and sym.section == spec.maps_index:
            name = spec.map_offsets.get(sym.value + imm)
            if name is None:
                raise LoaderError(f"{self._where(fn, i)}: no map at offset "
                                  f"{sym.value + imm} of .maps")
            self.out.map_refs.append(MapRef(insn, name))
            return
        sec_name = spec.section_names.get(sym.section) if isinstance(sym.section, int) else None
        if sec_name in spec.data:
            self.out.map_refs.append(MapRef(insn, sec_name, sym.value + imm))
            return
        raise LoaderError(
            f"{self._where(fn, i)}: reference to {sym.name or sec_name!r} "
            f"({sec_name or sym.section}): only maps, global data and functions can be "
            "referenced (externs such as .kconfig are not supported yet)"
        )
