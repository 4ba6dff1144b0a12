"""Render flag sets and enumerations as the ``A|B|0x...`` text strace and KubeArmor users read.

Every renderer accepts any int and never raises: bits without a name stay visible as one hex
remainder at the end, unknown enum values print as numbers, and a negative value (not a valid
flag set) prints as its signed hex, e.g. ``-0x1``.
"""

from collections.abc import Callable, Mapping

from ebpfwire.wire.names.constants import (
    CAPABILITIES,
    EXEC_FLAGS,
    MOUNT_FLAGS,
    MS_MGC_MSK,
    MS_MGC_VAL,
    O_ACCMODE,
    OPEN_ACCESS_MODES,
    OPEN_FLAGS,
    PTRACE_ARCH_REQUESTS,
    PTRACE_REQUESTS,
    SOCK_DOMAINS,
    SOCK_TYPE_FLAGS,
    SOCK_TYPE_MASK,
    SOCK_TYPES,
    UMOUNT_FLAGS,
    UNLINKAT_FLAGS,
    for_arch,
)

FlagTable = tuple[tuple[str, int], ...]


def bits_text(value: int, table: FlagTable) -> str:
    """Name the flags set in ``value``, in table order, then the unnamed bits as ``0x...``.

    A multi-bit entry is shown only when all its bits are set, and it hides the entries it
    contains (O_SYNC hides O_DSYNC), so each bit is named once.
    """
    if value < 0:
        return hex(value)
    if value == 0:
        return "0"
    present = [(name, bits) for name, bits in table if bits and value & bits == bits]
    parts: list[str] = []
    covered = 0
    for name, bits in present:
        if any(other != bits and other & bits == bits for _, other in present):
            continue
        parts.append(name)
        covered |= bits
    rest = value & ~covered
    if rest:
        parts.append(hex(rest))
    return "|".join(parts)


def enum_text(value: int, names: Mapping[int, str], unknown: Callable[[int], str] = str) -> str:
    """Name one enumerated value, or format it with ``unknown`` (decimal by default)."""
    name = names.get(value)
    return name if name is not None else unknown(value)


def _field_and_bits(value: int, mask: int, names: Mapping[int, str], flags: FlagTable) -> str:
    """Render a value whose ``mask`` bits hold an enumeration and whose other bits are flags."""
    if value < 0:
        return hex(value)
    head = enum_text(value & mask, names)
    rest = value & ~mask
    return f"{head}|{bits_text(rest, flags)}" if rest else head


def open_flags_text(v: int) -> str:
    """open(2) flags: the access mode first (mode 3 shows as O_ACCMODE), then the flags."""
    return _field_and_bits(v, O_ACCMODE, OPEN_ACCESS_MODES, OPEN_FLAGS)


def mount_flags_text(v: int) -> str:
    """mount(2) flags; the legacy MS_MGC_VAL magic in the top 16 bits is named, not split."""
    if v > 0 and v & MS_MGC_MSK == MS_MGC_VAL:
        rest = v & ~MS_MGC_MSK
        return f"MS_MGC_VAL|{bits_text(rest, MOUNT_FLAGS)}" if rest else "MS_MGC_VAL"
    return bits_text(v, MOUNT_FLAGS)


def umount_flags_text(v: int) -> str:
    """umount2(2) flags."""
    return bits_text(v, UMOUNT_FLAGS)


def exec_flags_text(v: int) -> str:
    """execveat(2) flags."""
    return bits_text(v, EXEC_FLAGS)


def unlinkat_flags_text(v: int) -> str:
    """unlinkat(2) flags."""
    return bits_text(v, UNLINKAT_FLAGS)


def sock_domain_text(v: int) -> str:
    """socket(2) domain: AF_* name, or the decimal number."""
    return enum_text(v, SOCK_DOMAINS)


def sock_family_name(v: int) -> str | None:
    """AF_* name of a sockaddr family, None when unknown (the caller decides how to show it)."""
    return SOCK_DOMAINS.get(v)


def sock_type_text(v: int) -> str:
    """socket(2) type: the SOCK_* type in the low 4 bits, then SOCK_NONBLOCK/SOCK_CLOEXEC."""
    return _field_and_bits(v, SOCK_TYPE_MASK, SOCK_TYPES, SOCK_TYPE_FLAGS)


def ptrace_request_text(v: int, arch: str = "x86_64") -> str:
    """ptrace(2) request name, or hex; a few low requests are architecture-specific."""
    name = PTRACE_REQUESTS.get(v) or for_arch(PTRACE_ARCH_REQUESTS, arch).get(v)
    return name if name is not None else hex(v)


def capability_text(v: int) -> str:
    """CAP_* name of a capability number, or the decimal number."""
    return enum_text(v, CAPABILITIES)
