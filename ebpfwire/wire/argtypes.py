"""Argument type codes, their payloads, and the 64-bit ENC_ARG_TYPE mask that packs six.

The kernel side describes an event's arguments with a mask holding one type byte per
slot (slot n in bits 8n..8n+7); only the tag bytes and ``argnum`` reach the wire.
These helpers mirror ENC_ARG_TYPE, DEC_ARG_TYPE and get_arg_num. :data:`PAYLOADS` says
what follows each tag: the schemas, the walker, the encoder and the strategies all
derive their per-tag choices from it, so a new tag is one line here.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

MAX_ARGS = 6


class ArgType(IntEnum):
    """Tag byte of one argument on the wire."""

    NONE_T = 0
    INT_T = 1
    STR_T = 10
    STR_ARR_T = 11
    SOCKADDR_T = 12
    OPEN_FLAGS_T = 13
    EXEC_FLAGS_T = 14
    SOCK_DOM_T = 15
    SOCK_TYPE_T = 16
    CAP_T = 17
    SYSCALL_T = 18
    UNLINKAT_FLAG_T = 19
    PTRACE_REQ_T = 23
    MOUNT_FLAG_T = 24
    UMOUNT_FLAG_T = 25
    UDP_MSG = 26
    QTYPE = 27
    # Tag 17 in the system monitor's masks: the kernel resolves the path and writes STR_T,
    # so FILE_TYPE_T never appears on the wire; on the wire 17 means CAP_T.
    FILE_TYPE_T = 17


class Payload(NamedTuple):
    """What follows a tag byte: ``kind`` is "int", "string", "argv" or "sockaddr"; an
    "int" payload is one ``struct`` field, ``code`` its byte order and format letter in
    standard sizes ("<l" is a little-endian s32), as both ``struct`` and construct's
    ``FormatField`` spell it."""

    kind: str
    code: str = ""

    @property
    def width(self) -> int:
        """Bytes of a fixed-width payload; 0 for the others (their size is on the wire)."""
        return struct.calcsize(self.code) if self.code else 0

    @property
    def bounds(self) -> tuple[int, int]:
        """The smallest and largest value of a fixed-width payload."""
        bits = 8 * self.width
        if self.code[-1].islower():
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1


S32, U32, U16_NETWORK = Payload("int", "<l"), Payload("int", "<L"), Payload("int", ">H")
STRING = Payload("string")      # s32 size (the NUL counted), the bytes, the NUL
MAX_STRING_SIZE = 4096          # the writer reads at most this many bytes, the NUL included
ARGV = Payload("argv")          # STR_T elements up to a closing STR_ARR_T tag
SOCKADDR = Payload("sockaddr")  # u16 family, then as many bytes as the family says

#: The payload of every tag the wire carries (section 4 of the wire-format page); NONE_T
#: is never written, FILE_TYPE_T is CAP_T on the wire.
PAYLOADS: dict[ArgType, Payload] = {
    ArgType.INT_T: S32,
    ArgType.STR_T: STRING,
    ArgType.STR_ARR_T: ARGV,
    ArgType.SOCKADDR_T: SOCKADDR,
    ArgType.OPEN_FLAGS_T: U32,
    ArgType.EXEC_FLAGS_T: U32,
    ArgType.SOCK_DOM_T: U32,
    ArgType.SOCK_TYPE_T: U32,
    ArgType.CAP_T: S32,
    ArgType.SYSCALL_T: S32,
    ArgType.UNLINKAT_FLAG_T: U32,
    ArgType.PTRACE_REQ_T: U32,
    ArgType.MOUNT_FLAG_T: U32,
    ArgType.UMOUNT_FLAG_T: U32,
    ArgType.UDP_MSG: STRING,
    ArgType.QTYPE: U16_NETWORK,
}


def tags_of(kind: str) -> frozenset[int]:
    """The tag bytes whose payload is of ``kind``."""
    return frozenset(int(tag) for tag, payload in PAYLOADS.items() if payload.kind == kind)


def _check_slot(slot: int) -> None:
    if not 0 <= slot < MAX_ARGS:
        raise ValueError(f"slot must be in 0..{MAX_ARGS - 1}, got {slot}")


def enc_arg_type(slot: int, arg_type: int) -> int:
    """The mask bits that put ``arg_type`` in ``slot`` (ENC_ARG_TYPE)."""
    _check_slot(slot)
    if not 0 <= arg_type <= 0xFF:
        raise ValueError(f"an argument type is one byte, got {arg_type}")
    return arg_type << (8 * slot)


def dec_arg_type(slot: int, mask: int) -> ArgType | int:
    """The type in ``slot`` of ``mask`` (DEC_ARG_TYPE); an unknown code stays an int."""
    _check_slot(slot)
    code = (mask >> (8 * slot)) & 0xFF
    try:
        return ArgType(code)
    except ValueError:
        return code


def arg_types(mask: int) -> list[ArgType | int]:
    """Every slot's type up to the last used one; empty slots in between stay NONE_T."""
    types = [dec_arg_type(slot, mask) for slot in range(MAX_ARGS)]
    while types and types[-1] == ArgType.NONE_T:
        types.pop()
    return types


def argnum(mask: int) -> int:
    """How many slots of ``mask`` are used (get_arg_num): the header's argnum."""
    return sum(1 for slot in range(MAX_ARGS) if (mask >> (8 * slot)) & 0xFF)


def make_mask(*types: int) -> int:
    """The mask with ``types`` in slots 0, 1, ...; pass NONE_T to leave a slot empty."""
    if len(types) > MAX_ARGS:
        raise ValueError(f"at most {MAX_ARGS} slots, got {len(types)}")
    mask = 0
    for slot, arg_type in enumerate(types):
        mask |= enc_arg_type(slot, arg_type)
    return mask
