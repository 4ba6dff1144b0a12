"""Spot checks of ebpfwire.wire.names against values fixed by the kernel ABI."""

import re
from pathlib import Path

import pytest

from ebpfwire.wire import names
from ebpfwire.wire.names import syscalls_arm64, syscalls_x86_64

X86_HEADER = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")


@pytest.mark.parametrize(
    ("nr", "arch", "name"),
    [
        (42, "x86_64", "connect"),
        (257, "x86_64", "openat"),
        (322, "x86_64", "execveat"),
        (59, "x86_64", "execve"),
        (165, "x86_64", "mount"),
        (56, "arm64", "openat"),
        (221, "arm64", "execve"),
        (281, "arm64", "execveat"),
        (57, "arm64", "close"),
        (40, "arm64", "mount"),
        (39, "arm64", "umount2"),
        (35, "arm64", "unlinkat"),
    ],
)
def test_syscall_name(nr: int, arch: str, name: str) -> None:
    assert names.syscall_name(nr, arch) == name
    assert names.syscall_number(name, arch) == nr


def test_syscall_unknowns() -> None:
    assert names.syscall_name(351) is None  # do_exit is an event id, not a syscall
    assert names.syscall_name(-1) is None
    assert names.syscall_number("open", "arm64") is None
    assert names.syscall_number("open") == 2


def test_unknown_arch_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="x86_64, arm64"):
        names.syscall_name(1, "mips")
    with pytest.raises(ValueError, match="'riscv64'"):
        names.syscall_number("read", "riscv64")
    assert names.ARCHES == ("x86_64", "arm64")


def test_x86_64_table_has_only_the_real_holes() -> None:
    numbers = set(syscalls_x86_64.SYSCALLS)
    assert max(numbers) == 469
    assert set(range(max(numbers) + 1)) - numbers == set(range(335, 424))
    assert len(numbers) == 381
    assert names.syscall_name(462) == "mseal" and names.syscall_name(457, "arm64") == "statmount"


def test_arm64_table_has_only_the_real_holes() -> None:
    numbers = set(syscalls_arm64.SYSCALLS)
    holes = set(range(max(numbers) + 1)) - numbers
    assert holes == set(range(244, 260)) | set(range(295, 424))
    assert "renameat" in syscalls_arm64.SYSCALLS.values()  # arm64 wants RENAMEAT
    assert "sync_file_range" in syscalls_arm64.SYSCALLS.values()  # not sync_file_range2


@pytest.mark.skipif(not X86_HEADER.exists(), reason=f"{X86_HEADER} not installed")
def test_x86_64_table_equals_the_header() -> None:
    found = re.findall(r"^#define __NR_(\w+) (\d+)$", X86_HEADER.read_text(), re.M)
    header = {int(nr): name for name, nr in found}
    # The header (6.1 here) may be older or newer than the table: they agree where both are.
    common = set(header) & set(syscalls_x86_64.SYSCALLS)
    assert {nr: header[nr] for nr in common} == {nr: syscalls_x86_64.SYSCALLS[nr] for nr in common}
    assert set(header) <= set(syscalls_x86_64.SYSCALLS) or max(header) > 469


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_syscall_round_trip(arch: str) -> None:
    table = {"x86_64": syscalls_x86_64, "arm64": syscalls_arm64}[arch].SYSCALLS
    assert len(set(table.values())) == len(table)
    for nr, name in table.items():
        assert names.syscall_number(name, arch) == nr
        assert names.syscall_name(nr, arch) == name


@pytest.mark.parametrize(
    ("code", "name", "message"),
    [
        (111, "ECONNREFUSED", "Connection refused"),
        (2, "ENOENT", "No such file or directory"),
        (13, "EACCES", "Permission denied"),
        (115, "EINPROGRESS", "Operation now in progress"),
        (11, "EAGAIN", "Resource temporarily unavailable"),
        (35, "EDEADLK", "Resource deadlock avoided"),
        (133, "EHWPOISON", "Memory page has hardware error"),
    ],
)
def test_errno(code: int, name: str, message: str) -> None:
    assert names.errno_name(code) == name
    assert names.errno_message(code) == message


@pytest.mark.parametrize("code", [0, -111, 41, 58, 134, 512])
def test_errno_unknown(code: int) -> None:
    assert names.errno_name(code) is None
    assert names.errno_message(code) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "O_RDONLY"),
        (0o2000000, "O_RDONLY|O_CLOEXEC"),
        (0o101, "O_WRONLY|O_CREAT"),
        (0o2101102, "O_RDWR|O_CREAT|O_TRUNC|O_LARGEFILE|O_CLOEXEC"),
        (3, "O_ACCMODE"),
        (0o10000, "O_RDONLY|O_DSYNC"),
        (0o4010001, "O_WRONLY|O_SYNC"),
        (0o4000001, "O_WRONLY|0x100000"),  # __O_SYNC without O_DSYNC has no name
        (0o20200002, "O_RDWR|O_TMPFILE"),
        (0o200000, "O_RDONLY|O_DIRECTORY"),
        (0o24210002, "O_RDWR|O_SYNC|O_TMPFILE"),
        (0x40000000 | 0o100, "O_RDONLY|O_CREAT|0x40000000"),
        (0o10000000, "O_RDONLY|O_PATH"),
    ],
)
def test_open_flags(value: int, text: str) -> None:
    assert names.open_flags_text(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (1, "MS_RDONLY"),
        (4096 | 16384, "MS_BIND|MS_REC"),
        (2 | 4 | 8 | 32, "MS_NOSUID|MS_NODEV|MS_NOEXEC|MS_REMOUNT"),
        (32768, "MS_SILENT"),
        ((1 << 18) | 16384, "MS_REC|MS_PRIVATE"),
        ((1 << 20) | (1 << 25), "MS_SHARED|MS_LAZYTIME"),
        (256 | 512, "MS_NOSYMFOLLOW|0x200"),
        (0xC0ED0000, "MS_MGC_VAL"),
        (0xC0ED0000 | 1, "MS_MGC_VAL|MS_RDONLY"),
        (1 << 31, "MS_NOUSER"),
        (1 << 32, "0x100000000"),
    ],
)
def test_mount_flags(value: int, text: str) -> None:
    assert names.mount_flags_text(value) == text


def test_small_flag_sets() -> None:
    assert names.umount_flags_text(0) == "0"
    assert names.umount_flags_text(2) == "MNT_DETACH"
    assert names.umount_flags_text(1 | 8 | 16) == "MNT_FORCE|UMOUNT_NOFOLLOW|0x10"
    assert names.exec_flags_text(0) == "0"
    assert names.exec_flags_text(0x1100) == "AT_SYMLINK_NOFOLLOW|AT_EMPTY_PATH"
    assert names.unlinkat_flags_text(0) == "0"
    assert names.unlinkat_flags_text(0x200) == "AT_REMOVEDIR"
    assert names.unlinkat_flags_text(0x201) == "AT_REMOVEDIR|0x1"


def test_socket_names() -> None:
    assert names.sock_type_text(0o4001) == "SOCK_STREAM|SOCK_NONBLOCK"
    assert names.sock_type_text(0o2004002) == "SOCK_DGRAM|SOCK_NONBLOCK|SOCK_CLOEXEC"
    assert names.sock_type_text(10) == "SOCK_PACKET"
    assert names.sock_type_text(0x10 | 3) == "SOCK_RAW|0x10"
    assert names.sock_type_text(0) == "0"
    assert names.sock_domain_text(2) == "AF_INET"
    assert names.sock_domain_text(10) == "AF_INET6"
    assert names.sock_domain_text(44) == "AF_XDP"
    assert names.sock_domain_text(45) == "AF_MCTP"
    assert names.sock_domain_text(46) == "46"
    assert names.sock_family_name(1) == "AF_UNIX"
    assert names.sock_family_name(16) == "AF_NETLINK"
    assert names.sock_family_name(99) is None


def test_ptrace_and_capabilities() -> None:
    assert names.ptrace_request_text(0) == "PTRACE_TRACEME"
    assert names.ptrace_request_text(0x4206) == "PTRACE_SEIZE"
    assert names.ptrace_request_text(0x420E) == "PTRACE_GET_SYSCALL_INFO"
    assert names.ptrace_request_text(0x4300) == "0x4300"
    assert names.ptrace_request_text(33) == "PTRACE_SINGLEBLOCK"
    assert names.ptrace_request_text(33, "arm64") == "PTRACE_PEEKMTETAGS"
    assert names.ptrace_request_text(12, "arm64") == "0xc"
    assert names.capability_text(0) == "CAP_CHOWN"
    assert names.capability_text(21) == "CAP_SYS_ADMIN"
    assert names.capability_text(40) == "CAP_CHECKPOINT_RESTORE"
    assert names.capability_text(41) == "41"


def test_bits_text_is_generic() -> None:
    table = (("A", 1), ("AB", 3), ("C", 4))
    assert names.bits_text(3, table) == "AB"
    assert names.bits_text(1 | 4 | 8, table) == "A|C|0x8"
    assert names.bits_text(0, table) == "0"


RENDERERS = [
    names.open_flags_text,
    names.mount_flags_text,
    names.umount_flags_text,
    names.exec_flags_text,
    names.unlinkat_flags_text,
    names.sock_domain_text,
    names.sock_type_text,
    names.ptrace_request_text,
    names.capability_text,
]


@pytest.mark.parametrize("render", RENDERERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("value", [-1, 0, 2**32 - 1, 2**63, -(2**70), 0xC0ED0000])
def test_renderers_total(render, value: int) -> None:
    text = render(value)
    assert isinstance(text, str) and text
    assert render(value) == text


def test_unknown_bits_stay_visible() -> None:
    assert names.open_flags_text(-1) == "-0x1"
    umount_all = "MNT_FORCE|MNT_DETACH|MNT_EXPIRE|UMOUNT_NOFOLLOW|0xfffffff0"
    assert names.umount_flags_text(2**32 - 1) == umount_all
    text = names.open_flags_text(2**32 - 1)
    assert text.startswith("O_ACCMODE|O_CREAT|") and text.endswith("|O_TMPFILE|0xff80003c")
    # bits 2-5 and 23-31 have no name on x86-64/arm64
    assert "O_DSYNC" not in text and "O_DIRECTORY" not in text
    assert names.mount_flags_text(2**63 | 1) == "MS_RDONLY|0x8000000000000000"
