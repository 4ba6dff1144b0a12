"""CO-RE: rewrite the instructions that depend on a type's layout for the running kernel.

The compiler records, for each such instruction (``.BTF.ext`` core_relo), the local type,
an access string (``0:1:2``: array index, then member or element indexes) and what the
instruction needs: a field's byte offset, size, existence, signedness or bitfield shifts;
a type's id, existence, size or structural match; an enumerator's existence or value.
Following libbpf's rules (``relo_core.c``), the target types are every type of the
kernel's BTF of the same kind whose name equals the local one without its ``___flavor``
suffix; the access is replayed on each by member *name*; all matching candidates must
agree. What cannot be relocated is poisoned: the instruction becomes a call of helper
195896080 (0xbad2310), which the verifier rejects only if the program can reach it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ebpfwire.kernel.btf import BTF_INT_SIGNED, Btf, BtfKind, essential_name
from ebpfwire.kernel.btf_ext import CoreRelo
from ebpfwire.kernel.errors import BtfError, LoaderError
from ebpfwire.kernel.kernel_btf import KernelBtf

FIELD_BYTE_OFFSET = 0
FIELD_BYTE_SIZE = 1
FIELD_EXISTS = 2
FIELD_SIGNED = 3
FIELD_LSHIFT_U64 = 4
FIELD_RSHIFT_U64 = 5
TYPE_ID_LOCAL = 6
TYPE_ID_TARGET = 7
TYPE_EXISTS = 8
TYPE_SIZE = 9
ENUMVAL_EXISTS = 10
ENUMVAL_VALUE = 11
TYPE_MATCHES = 12
KIND_NAMES = [
    "byte_off", "byte_sz", "field_exists", "signed", "lshift_u64", "rshift_u64",
    "local_type_id", "target_type_id", "type_exists", "type_size", "enumval_exists",
    "enumval_value", "type_matches",
]
POISON_IMM = 195896080  # 0xbad2310: "bad relo", as libbpf writes it
SPEC_MAX_LEN = 64
_U64 = (1 << 64) - 1
_COMPOSITE = (BtfKind.STRUCT, BtfKind.UNION)
_ENUMS = (BtfKind.ENUM, BtfKind.ENUM64)


class CoreError(LoaderError):
    """A relocation that cannot be applied (not poisoned: the object is wrong)."""


class _Poison(Exception):
    """The relocation resolves to 'cannot': poison the instruction."""


@dataclass
class Accessor:
    type_id: int
    idx: int
    name: str | None  # None: an array index


@dataclass
class Spec:
    """An access replayed on one BTF: the named points of it and the bit offset reached."""

    btf: Btf
    root: int
    kind: int
    raw: list[int] = field(default_factory=list)
    acc: list[Accessor] = field(default_factory=list)
    bit_offset: int = 0


@dataclass
class Result:
    orig: int = 0
    new: int = 0
    poison: bool = False
    validate: bool = True
    orig_sz: int = 0
    new_sz: int = 0
    orig_type: int = 0
    new_type: int = 0
    fail_memsz_adjust: bool = False


def _field_based(kind: int) -> bool:
    return kind <= FIELD_RSHIFT_U64


def _type_based(kind: int) -> bool:
    return kind in (TYPE_ID_LOCAL, TYPE_ID_TARGET, TYPE_EXISTS, TYPE_SIZE, TYPE_MATCHES)


def _enum_based(kind: int) -> bool:
    return kind in (ENUMVAL_EXISTS, ENUMVAL_VALUE)


def _kind_compat(a: int, b: int) -> bool:
    return a == b or (a in _ENUMS and b in _ENUMS)


def _skip(btf: Btf, tid: int) -> tuple[int, int]:
    """(id, kind) after typedefs and qualifiers."""
    tid = btf.resolve(tid)
    return tid, btf.kind(tid)


def _members(btf: Btf, tid: int) -> list[tuple[str, int, int, int]]:
    """(name, type, bit offset, bitfield size) of each member of a struct or union."""
    rec = btf.type(tid)
    out = []
    for m in rec.detail:
        bits, size = (m.offset & 0xFFFFFF, m.offset >> 24) if rec.kind_flag else (m.offset, 0)
        out.append((btf.string(m.name_off), m.type, bits, size))
    return out


def _enumerators(btf: Btf, tid: int) -> list[tuple[str, int]]:
    """(name, value) of an enum; a 32-bit one's values sign-extended as libbpf reads them."""
    rec = btf.type(tid)
    if btf.kind(tid) == BtfKind.ENUM:
        return [(btf.string(e.name_off), e.val) for e in rec.detail]
    return [(btf.string(e.name_off), e.val_lo32 | e.val_hi32 << 32) for e in rec.detail]


def _int_encoding(btf: Btf, tid: int) -> tuple[int, int]:
    """(encoding, bit offset) of an INT."""
    word = btf.type(tid).detail
    return word >> 24 & 0xF, word >> 16 & 0xFF


def _size(btf: Btf, tid: int) -> int:
    try:
        return btf.sizeof(tid)
    except BtfError as exc:
        raise CoreError(str(exc)) from None


def _names_match(local: str, targ: str) -> bool:
    if not targ:
        return not local
    return essential_name(local) == essential_name(targ)


def _is_flex(btf: Btf, acc: Accessor | None, nelems: int) -> bool:
    """An array of no elements as the last member of its struct."""
    if acc is None or acc.name is None or nelems > 0:
        return False
    return acc.idx == len(btf.type(acc.type_id).detail) - 1


def parse_spec(btf: Btf, relo: CoreRelo) -> Spec:
    """The local side: the access string walked through the object's own types."""
    spec = Spec(btf, relo.type_id, relo.kind)
    text = relo.access
    if not text or text.startswith(":"):
        raise CoreError(f"access string {text!r} is malformed")
    if _type_based(relo.kind):
        if text != "0":
            raise CoreError(f"type relocation with access string {text!r}, expected '0'")
        return spec
    try:
        spec.raw = [int(part) for part in text.split(":")]
    except ValueError:
        raise CoreError(f"access string {text!r} is malformed") from None
    if any(i < 0 for i in spec.raw) or len(spec.raw) > SPEC_MAX_LEN:
        raise CoreError(f"access string {text!r} is malformed")
    tid, kind = _skip(btf, relo.type_id)
    if _enum_based(relo.kind):
        values = _enumerators(btf, tid) if kind in _ENUMS else []
        if not values or spec.raw[0] >= len(values):
            raise CoreError(f"enumerator {spec.raw[0]} of type {tid} does not exist")
        spec.acc.append(Accessor(tid, spec.raw[0], values[spec.raw[0]][0]))
        return spec
    spec.bit_offset = spec.raw[0] * _size(btf, tid) * 8
    spec.acc.append(Accessor(tid, spec.raw[0], None))
    for idx in spec.raw[1:]:
        tid, kind = _skip(btf, tid)
        if kind in _COMPOSITE:
            members = _members(btf, tid)
            if idx >= len(members):
                raise CoreError(f"member {idx} of type {tid} does not exist")
            name, mtype, bits, _ = members[idx]
            spec.bit_offset += bits
            if name:
                spec.acc.append(Accessor(tid, idx, name))
            tid = mtype
        elif kind == BtfKind.ARRAY:
            arr = btf.type(tid).detail
            tid, _ = _skip(btf, arr.type)
            if not _is_flex(btf, spec.acc[-1], arr.nelems) and idx >= arr.nelems:
                raise CoreError(f"index {idx} past the array's {arr.nelems} elements")
            spec.acc.append(Accessor(tid, idx, None))
            spec.bit_offset += idx * _size(btf, tid) * 8
        else:
            raise CoreError(f"access into type {tid} ({kind.name}), not a struct or array")
    return spec


def types_compatible(lb: Btf, lid: int, tb: Btf, tid: int, depth: int = 32) -> bool:
    """libbpf's 'compatible' relation of two types (names already matched at the root)."""
    if not _kind_compat(lb.kind(lid), tb.kind(tid)):
        return False
    while True:
        depth -= 1
        if depth < 0:
            raise CoreError("type nesting too deep")
        lid, lk = _skip(lb, lid)
        tid, tk = _skip(tb, tid)
        if not _kind_compat(lk, tk):
            return False
        if lk in (BtfKind.UNKN, BtfKind.STRUCT, BtfKind.UNION, BtfKind.FWD, *_ENUMS):
            return True
        if lk == BtfKind.INT:
            return _int_encoding(lb, lid)[1] == 0 and _int_encoding(tb, tid)[1] == 0
        if lk == BtfKind.PTR:
            lid, tid = lb.type(lid).size_or_type, tb.type(tid).size_or_type
        elif lk == BtfKind.ARRAY:
            lid, tid = lb.type(lid).detail.type, tb.type(tid).detail.type
        elif lk == BtfKind.FUNC_PROTO:
            lrec, trec = lb.type(lid), tb.type(tid)
            if len(lrec.detail) != len(trec.detail):
                return False
            for lp, tp in zip(lrec.detail, trec.detail, strict=True):
                if not types_compatible(lb, lb.resolve(lp.type), tb, tb.resolve(tp.type),
                                        depth):
                    return False
            lid, tid = lrec.size_or_type, trec.size_or_type
        else:
            return False


def types_match(lb: Btf, lid: int, tb: Btf, tid: int, behind_ptr: bool = False,
                level: int = 32) -> bool:
    """libbpf's stricter 'match' relation (``bpf_core_type_matches``)."""
    if level <= 0:
        raise CoreError("type nesting too deep")
    for _ in range(32):
        lid, lk = _skip(lb, lid)
        tid, tk = _skip(tb, tid)
        lrec = lb.type(lid) if lid else None
        trec = tb.type(tid) if tid else None
        if not _names_match(lrec.name if lrec else "", trec.name if trec else ""):
            return False
        if lk == BtfKind.UNKN:
            return tk == lk
        if lk == BtfKind.FWD:
            if behind_ptr and tk != lk:
                return (tk == BtfKind.STRUCT and not lrec.kind_flag) or (
                    tk == BtfKind.UNION and bool(lrec.kind_flag))
            return tk == lk and lrec.kind_flag == trec.kind_flag
        if lk in _ENUMS:
            if tk not in _ENUMS or lrec.size_or_type != trec.size_or_type:
                return False
            targ_names = [n for n, _ in _enumerators(tb, tid)]
            return all(any(_names_match(n, t) for t in targ_names)
                       for n, _ in _enumerators(lb, lid))
        if lk in _COMPOSITE:
            if behind_ptr:
                if lk == tk:
                    return True
                return tk == BtfKind.FWD and (lk == BtfKind.UNION) == bool(trec.kind_flag)
            if lk != tk:
                return False
            tmembers = _members(tb, tid)
            for name, mtype, _, _ in _members(lb, lid):
                if not any(_names_match(name, tname)
                           and types_match(lb, mtype, tb, ttype, behind_ptr, level - 1)
                           for tname, ttype, _, _ in tmembers):
                    return False
            return True
        if lk != tk:
            return False
        if lk == BtfKind.INT:
            return lrec.size_or_type == trec.size_or_type and (
                _int_encoding(lb, lid)[0] & BTF_INT_SIGNED
            ) == (_int_encoding(tb, tid)[0] & BTF_INT_SIGNED)
        if lk == BtfKind.PTR:
            behind_ptr = True
            lid, tid = lrec.size_or_type, trec.size_or_type
        elif lk == BtfKind.ARRAY:
            if lrec.detail.nelems != trec.detail.nelems:
                return False
            lid, tid = lrec.detail.type, trec.detail.type
        elif lk == BtfKind.FUNC_PROTO:
            if len(lrec.detail) != len(trec.detail):
                return False
            for lp, tp in zip(lrec.detail, trec.detail, strict=True):
                if not types_match(lb, lp.type, tb, tp.type, behind_ptr, level - 1):
                    return False
            lid, tid = lrec.size_or_type, trec.size_or_type
        else:
            return False
    raise CoreError("type nesting too deep")


def _fields_compatible(lb: Btf, lid: int, tb: Btf, tid: int) -> bool:
    while True:
        lid, lk = _skip(lb, lid)
        tid, tk = _skip(tb, tid)
        if lk in _COMPOSITE and tk in _COMPOSITE:
            return True
        if not _kind_compat(lk, tk):
            return False
        if lk in (BtfKind.PTR, BtfKind.FLOAT):
            return True
        if lk in (BtfKind.FWD, *_ENUMS):
            return _names_match(lb.type(lid).name, tb.type(tid).name)
        if lk == BtfKind.INT:
            return _int_encoding(lb, lid)[1] == 0 and _int_encoding(tb, tid)[1] == 0
        if lk != BtfKind.ARRAY:
            return False
        lid, tid = lb.type(lid).detail.type, tb.type(tid).detail.type


def _match_member(local: Spec, acc: Accessor, tb: Btf, tid: int, spec: Spec) -> int | None:
    """Find ``acc``'s member by name in ``tid`` (through anonymous members); the member's
    type id, with ``spec`` extended, or None."""
    lname = acc.name
    ltype = _members(local.btf, acc.type_id)[acc.idx][1]
    tid, tk = _skip(tb, tid)
    if tk not in _COMPOSITE:
        return None
    for i, (name, mtype, bits, _) in enumerate(_members(tb, tid)):
        if len(spec.raw) == SPEC_MAX_LEN:
            raise CoreError("access too deep")
        spec.bit_offset += bits
        spec.raw.append(i)
        if not name:
            found = _match_member(local, acc, tb, mtype, spec)
            if found is not None:
                return found
        elif name == lname:
            if not _fields_compatible(local.btf, ltype, tb, mtype):
                return None
            spec.acc.append(Accessor(tid, i, name))
            return mtype
        spec.bit_offset -= bits
        spec.raw.pop()
    return None


def match_spec(local: Spec, tb: Btf, cand: int) -> Spec | None:
    """The local access replayed on candidate ``cand`` of the target; None if it fails."""
    spec = Spec(tb, cand, local.kind)
    if _type_based(local.kind):
        if local.kind == TYPE_MATCHES:
            return spec if types_match(local.btf, local.root, tb, cand) else None
        return spec if types_compatible(local.btf, local.root, tb, cand) else None
    if _enum_based(local.kind):
        tid, tk = _skip(tb, cand)
        if tk not in _ENUMS:
            return None
        want = essential_name(local.acc[0].name or "")
        for i, (name, _) in enumerate(_enumerators(tb, tid)):
            if essential_name(name) == want:
                spec.acc.append(Accessor(tid, i, name))
                spec.raw.append(i)
                return spec
        return None
    tid = cand
    for i, acc in enumerate(local.acc):
        tid, tk = _skip(tb, tid)
        if acc.name is not None:
            tid = _match_member(local, acc, tb, tid, spec)
            if tid is None:
                return None
            continue
        if i > 0:
            if tk != BtfKind.ARRAY:
                return None
            arr = tb.type(tid).detail
            if not _is_flex(tb, spec.acc[-1] if spec.acc else None, arr.nelems) and (
                acc.idx >= arr.nelems
            ):
                return None
            tid, _ = _skip(tb, arr.type)
        if len(spec.raw) == SPEC_MAX_LEN:
            raise CoreError("access too deep")
        spec.acc.append(Accessor(tid, acc.idx, None))
        spec.raw.append(acc.idx)
        spec.bit_offset += acc.idx * _size(tb, tid) * 8
    return spec


def _field_value(kind: int, spec: Spec | None) -> tuple[int, int, int, bool]:
    """(value, memory size, field type, validate) of a field relocation on ``spec``."""
    if kind == FIELD_EXISTS:
        return (1 if spec else 0), 0, 0, True
    if spec is None:
        raise _Poison
    btf, acc = spec.btf, spec.acc[-1]
    if acc.name is None:
        if kind == FIELD_BYTE_OFFSET:
            elem, ek = _skip(btf, acc.type_id)
            while ek == BtfKind.ARRAY:
                elem, ek = _skip(btf, btf.type(elem).detail.type)
            return spec.bit_offset // 8, _size(btf, elem), acc.type_id, True
        if kind == FIELD_BYTE_SIZE:
            return _size(btf, acc.type_id), 0, 0, True
        raise CoreError(f"relocation {KIND_NAMES[kind]} cannot apply to an array access")
    _, mtype, _, bit_sz = _members(btf, acc.type_id)[acc.idx]
    field_id, fk = _skip(btf, mtype)
    bit_off = spec.bit_offset
    bitfield = bit_sz > 0
    if bitfield:
        byte_sz = btf.type(field_id).size_or_type
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise CoreError("bitfield cannot be read with a 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = _size(btf, field_id)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    validate = not bitfield
    mem_sz, mem_type = 0, 0
    if kind == FIELD_BYTE_OFFSET:
        value = byte_off
        if not bitfield:
            elem, ek = field_id, fk
            while ek == BtfKind.ARRAY:
                elem, ek = _skip(btf, btf.type(elem).detail.type)
            mem_sz, mem_type = _size(btf, elem), field_id
    elif kind == FIELD_BYTE_SIZE:
        value = byte_sz
    elif kind == FIELD_SIGNED:
        rec = btf.type(field_id)
        value = int((fk in _ENUMS and bool(rec.kind_flag)) or (
            fk == BtfKind.INT and bool(_int_encoding(btf, field_id)[0] & BTF_INT_SIGNED)))
        validate = True
    elif kind == FIELD_LSHIFT_U64:
        value = 64 - (bit_off + bit_sz - byte_off * 8)
    else:  # FIELD_RSHIFT_U64
        value = 64 - bit_sz
        validate = True
    return value, mem_sz, mem_type, validate


def _other_value(kind: int, spec: Spec | None) -> int:
    if _type_based(kind):
        if spec is None:
            return 0
        if kind == TYPE_ID_TARGET:
            return spec.root
        if kind == TYPE_SIZE:
            return _size(spec.btf, spec.root)
        return 1  # TYPE_EXISTS, TYPE_MATCHES
    if kind == ENUMVAL_EXISTS:
        return 1 if spec else 0
    if spec is None:
        raise _Poison
    return _enumerators(spec.btf, spec.acc[0].type_id)[spec.acc[0].idx][1]


def calc(kind: int, local: Spec, targ: Spec | None) -> Result:
    """What the instruction held (``orig``) and must hold (``new``), or poison."""
    res = Result()
    try:
        if _field_based(kind):
            res.orig, res.orig_sz, res.orig_type, res.validate = _field_value(kind, local)
            res.new, res.new_sz, res.new_type, _ = _field_value(kind, targ)
            if res.orig_sz != res.new_sz:
                lk = local.btf.kind(res.orig_type)
                tk = targ.btf.kind(res.new_type)
                unsigned = (
                    lk == tk == BtfKind.INT
                    and not _int_encoding(local.btf, res.orig_type)[0] & BTF_INT_SIGNED
                    and not _int_encoding(targ.btf, res.new_type)[0] & BTF_INT_SIGNED
                )
                res.fail_memsz_adjust = not (lk == tk == BtfKind.PTR or unsigned)
        else:
            res.orig = _other_value(kind, local)
            res.new = _other_value(kind, targ)
            res.validate = kind == TYPE_ID_TARGET
    except _Poison:
        res.poison = True
    return res


class Relocator:
    """Relocates instructions against one target BTF, or the kernel's (vmlinux, then its
    modules if vmlinux has no candidate); candidates cached per local type and narrowed as
    relocations rule some out, as libbpf does."""

    def __init__(self, local: Btf, target: Btf, kernel: KernelBtf | None = None) -> None:
        self.local, self.target, self.kernel = local, target, kernel
        self._cands: dict[int, list[tuple[Btf, int]]] = {}

    def _candidates(self, type_id: int) -> list[tuple[Btf, int]]:
        cands = self._cands.get(type_id)
        if cands is None:
            rec = self.local.type(type_id)
            if not rec.name:
                raise CoreError(f"type {type_id} is anonymous: no candidate search")
            kind = self.local.kind(type_id)
            name = essential_name(rec.name)
            found = (self.kernel.candidates(name) if self.kernel is not None
                     else [(self.target, tid) for tid in self.target.ids_by_essential_name(name)])
            cands = [(btf, tid) for btf, tid in found if _kind_compat(kind, btf.kind(tid))]
            self._cands[type_id] = cands
        return cands

    def resolve(self, relo: CoreRelo) -> Result:
        """The relocation's result (raises :class:`CoreError` for a malformed one)."""
        local = parse_spec(self.local, relo)
        if relo.kind == TYPE_ID_LOCAL:
            return Result(relo.type_id, relo.type_id, validate=False)
        cands = self._candidates(relo.type_id)
        best: Result | None = None
        best_spec: Spec | None = None
        kept = []
        for cand in cands:
            spec = match_spec(local, *cand)
            if spec is None:
                continue
            res = calc(relo.kind, local, spec)
            if best is None:
                best, best_spec = res, spec
            elif spec.bit_offset != best_spec.bit_offset:
                raise CoreError(
                    f"field offset ambiguity: {spec.bit_offset} != {best_spec.bit_offset}")
            elif (res.poison, res.new) != (best.poison, best.new):
                raise CoreError(f"relocation decision ambiguity: {res.new} != {best.new}")
            kept.append(cand)
        if kept:
            self._cands[relo.type_id] = kept
            return best
        return calc(relo.kind, local, None)

    def apply(self, code: bytearray, relo: CoreRelo) -> None:
        """Relocate instruction ``relo.insn`` of ``code`` in place."""
        patch(code, relo.insn, self.resolve(relo))


def _poison(code: bytearray, insn: int) -> None:
    at = insn * 8
    if code[at] == 0x18:  # ld_imm64: its second half too
        code[at + 8 : at + 16] = (0x85).to_bytes(1, "little") + bytes(3) + \
            POISON_IMM.to_bytes(4, "little")
    code[at : at + 8] = bytes([0x85, 0, 0, 0]) + POISON_IMM.to_bytes(4, "little")


_SIZE_BYTES = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}
_BYTES_SIZE = {v: k for k, v in _SIZE_BYTES.items()}


def patch(code: bytearray, insn: int, res: Result) -> None:
    """Write ``res`` into instruction ``insn`` (libbpf's checks of what it held first)."""
    at = insn * 8
    if at + 8 > len(code):
        raise CoreError(f"instruction {insn} is past the end of the section")
    if res.poison:
        _poison(code, insn)
        return
    op = code[at]
    cls = op & 7
    orig, new = res.orig & _U64, res.new & _U64
    if cls in (4, 7):  # ALU, ALU64
        if op & 0x08:
            raise CoreError(f"instruction {insn}: ALU with a register source, expected imm")
        imm = int.from_bytes(code[at + 4 : at + 8], "little", signed=True)
        if res.validate and imm & _U64 != orig:
            raise CoreError(f"instruction {insn}: immediate {imm}, expected {res.orig}")
        code[at + 4 : at + 8] = (new & 0xFFFFFFFF).to_bytes(4, "little")
    elif cls in (1, 2, 3):  # LDX, ST, STX
        off = int.from_bytes(code[at + 2 : at + 4], "little", signed=True)
        if res.validate and off & _U64 != orig:
            raise CoreError(f"instruction {insn}: offset {off}, expected {res.orig}")
        if new > 0x7FFF:
            raise CoreError(f"instruction {insn}: offset {new} too big")
        if res.fail_memsz_adjust:
            _poison(code, insn)
            return
        code[at + 2 : at + 4] = new.to_bytes(2, "little")
        if res.new_sz != res.orig_sz:
            if _SIZE_BYTES[op & 0x18] != res.orig_sz:
                raise CoreError(f"instruction {insn}: accesses {_SIZE_BYTES[op & 0x18]} "
                                f"bytes, expected {res.orig_sz}")
            if res.new_sz not in _BYTES_SIZE:
                raise CoreError(f"instruction {insn}: no load of {res.new_sz} bytes")
            code[at] = (op & ~0x18) | _BYTES_SIZE[res.new_sz]
    elif op == 0x18:  # ld_imm64
        if (code[at + 1] >> 4 or code[at + 2 : at + 4] != b"\0\0"
                or code[at + 8 : at + 12] != bytes(4)):
            raise CoreError(f"instruction {insn}: ld_imm64 of an unexpected form")
        imm = int.from_bytes(code[at + 4 : at + 8], "little") | (
            int.from_bytes(code[at + 12 : at + 16], "little") << 32)
        if res.validate and imm != orig:
            raise CoreError(f"instruction {insn}: ld_imm64 value {imm}, expected {res.orig}")
        code[at + 4 : at + 8] = (new & 0xFFFFFFFF).to_bytes(4, "little")
        code[at + 12 : at + 16] = (new >> 32).to_bytes(4, "little")
    else:
        raise CoreError(f"instruction {insn}: opcode 0x{op:02x} cannot be relocated")


def relocate_sections(
    code: dict[int, bytes], names: dict[int, str], relos: dict[str, list[CoreRelo]],
    local: Btf, target: Btf, kernel: KernelBtf | None = None,
) -> tuple[dict[int, bytes], dict[tuple[int, int], str]]:
    """Every section's instructions relocated (against ``kernel``'s vmlinux and modules
    when given, else ``target`` alone); failures by (section, instruction) with their
    reason, left for the programs that reach them to report."""
    relocator = Relocator(local, target, kernel)
    out = dict(code)
    failures: dict[tuple[int, int], str] = {}
    by_name = {name: idx for idx, name in names.items() if idx in code}
    for sec_name, sec_relos in relos.items():
        idx = by_name.get(sec_name)
        if idx is None:
            continue
        buf = bytearray(code[idx])
        for n, relo in enumerate(sec_relos):
            try:
                relocator.apply(buf, relo)
            except (CoreError, BtfError) as exc:
                local_name = local.type(relo.type_id).name if relo.type_id else "void"
                failures[(idx, relo.insn)] = (
                    f"CO-RE relocation #{n} ({KIND_NAMES[relo.kind]} of "
                    f"{local_name or '<anon>'} access {relo.access}): {exc}"
                )
        out[idx] = bytes(buf)
    return out, failures
