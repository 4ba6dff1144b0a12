"""``.BTF.ext``: what the compiler says about each instruction of each code section.

Three record kinds, grouped by section name: ``func_info`` (where each function starts and
its BTF ``FUNC``), ``line_info`` (the C source line of an instruction) and ``core_relo``
(a CO-RE relocation: an instruction whose immediate or offset depends on a type's layout,
see :mod:`ebpfwire.kernel.core`). Instruction positions here are byte offsets in the
section; the loader turns them into instruction indexes of the linked program.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ebpfwire.kernel.btf import BTF_MAGIC, Btf
from ebpfwire.kernel.errors import BtfError

_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, func off/len, line off/len
_CORE = struct.Struct("<II")  # core_relo off/len, present when hdr_len >= 32
FUNC_INFO = struct.Struct("<II")  # insn_off, type_id
LINE_INFO = struct.Struct("<IIII")  # insn_off, file_name_off, line_off, line_col
CORE_RELO = struct.Struct("<IIII")  # insn_off, type_id, access_str_off, kind


@dataclass(frozen=True)
class CoreRelo:
    """One CO-RE relocation: instruction ``insn`` (index in its section) of kind ``kind``
    on local type ``type_id`` along ``access`` (``"0:1:2"``)."""

    insn: int
    type_id: int
    access: str
    kind: int


@dataclass
class BtfExt:
    """Per section name: func_info (insn index, type id), line_info (insn index, file, line,
    line_col) and CO-RE relocations."""

    func_info: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    line_info: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)
    core_relos: dict[str, list[CoreRelo]] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes, btf: Btf, origin: str = ".BTF.ext") -> BtfExt:
        """Read ``data``; section names and access strings are ``btf``'s strings."""
        if len(data) < _HEADER.size:
            raise BtfError(f"{origin}: {len(data)} bytes, too short for a header ({_HEADER.size})")
        magic, _, _, hdr_len, f_off, f_len, l_off, l_len = _HEADER.unpack_from(data)
        if magic != BTF_MAGIC:
            raise BtfError(f"{origin}: expected magic 0x{BTF_MAGIC:x}, found 0x{magic:x}")
        ext = cls()
        for off, length, rec, out in (
            (f_off, f_len, FUNC_INFO, ext.func_info),
            (l_off, l_len, LINE_INFO, ext.line_info),
        ):
            for sec, records in _groups(data, hdr_len + off, length, rec, btf, origin):
                out[sec] = [(r[0] // 8, *r[1:]) for r in records]
        if hdr_len >= _HEADER.size + _CORE.size:
            c_off, c_len = _CORE.unpack_from(data, _HEADER.size)
            for sec, records in _groups(data, hdr_len + c_off, c_len, CORE_RELO, btf, origin):
                ext.core_relos[sec] = [
                    CoreRelo(off // 8, tid, btf.string(acc), kind)
                    for off, tid, acc, kind in records
                ]
        return ext


def _groups(data: bytes, start: int, length: int, rec: struct.Struct, btf: Btf, origin: str):
    """(section name, records) of one info block: a record size, then per section its name
    offset, count and records."""
    if not length:
        return
    end = start + length
    if end > len(data) or length < 4:
        raise BtfError(f"{origin}: info block at byte {start} runs past the end ({len(data)})")
    size = struct.unpack_from("<I", data, start)[0]
    if size < rec.size:
        raise BtfError(f"{origin}: record size {size} at byte {start}, expected >= {rec.size}")
    pos = start + 4
    while pos < end:
        if pos + 8 > end:
            raise BtfError(f"{origin}: truncated section header at byte {pos}")
        name_off, count = struct.unpack_from("<II", data, pos)
        pos += 8
        if pos + count * size > end:
            raise BtfError(f"{origin}: {count} records at byte {pos} run past the block")
        yield btf.string(name_off), [
            rec.unpack_from(data, pos + i * size) for i in range(count)
        ]
        pos += count * size
