"""Kernel flag sets and enumerations that event arguments carry, as (name, value) tables.

Each table is plain data read by the renderers in ``render.py``; flag tables are ordered by
value, which is the order names appear in rendered text. Values are the x86-64 and arm64
ones (the generic Linux values); a few open(2) flags differ on other architectures.
"""

from collections.abc import Mapping
from typing import TypeVar

_Table = TypeVar("_Table")

ARCHES: tuple[str, ...] = ("x86_64", "arm64")


def for_arch(tables: Mapping[str, _Table], arch: str) -> _Table:
    """Pick an architecture's table, failing loudly: a wrong table gives plausible wrong names."""
    try:
        return tables[arch]
    except KeyError:
        raise ValueError(
            f"unknown architecture {arch!r}: expected one of {', '.join(ARCHES)}"
        ) from None


# From <asm-generic/fcntl.h> (linux-libc-dev 6.1).
O_ACCMODE = 0o3
OPEN_ACCESS_MODES: dict[int, str] = {
    0o0: "O_RDONLY",
    0o1: "O_WRONLY",
    0o2: "O_RDWR",
    0o3: "O_ACCMODE",  # both bits: no read or write, permission for both is checked
}
# O_SYNC and O_TMPFILE contain O_DSYNC and O_DIRECTORY: the renderer shows the larger one.
OPEN_FLAGS: tuple[tuple[str, int], ...] = (
    ("O_CREAT", 0o100),
    ("O_EXCL", 0o200),
    ("O_NOCTTY", 0o400),
    ("O_TRUNC", 0o1000),
    ("O_APPEND", 0o2000),
    ("O_NONBLOCK", 0o4000),
    ("O_DSYNC", 0o10000),
    ("O_ASYNC", 0o20000),
    ("O_DIRECT", 0o40000),
    ("O_LARGEFILE", 0o100000),
    ("O_DIRECTORY", 0o200000),
    ("O_NOFOLLOW", 0o400000),
    ("O_NOATIME", 0o1000000),
    ("O_CLOEXEC", 0o2000000),
    ("O_SYNC", 0o4010000),
    ("O_PATH", 0o10000000),
    ("O_TMPFILE", 0o20200000),
)

# From <linux/mount.h> (linux-libc-dev 6.1); MS_VERBOSE is the old name of MS_SILENT.
MOUNT_FLAGS: tuple[tuple[str, int], ...] = (
    ("MS_RDONLY", 1),
    ("MS_NOSUID", 2),
    ("MS_NODEV", 4),
    ("MS_NOEXEC", 8),
    ("MS_SYNCHRONOUS", 16),
    ("MS_REMOUNT", 32),
    ("MS_MANDLOCK", 64),
    ("MS_DIRSYNC", 128),
    ("MS_NOSYMFOLLOW", 256),
    ("MS_NOATIME", 1024),
    ("MS_NODIRATIME", 2048),
    ("MS_BIND", 4096),
    ("MS_MOVE", 8192),
    ("MS_REC", 16384),
    ("MS_SILENT", 32768),
    ("MS_POSIXACL", 1 << 16),
    ("MS_UNBINDABLE", 1 << 17),
    ("MS_PRIVATE", 1 << 18),
    ("MS_SLAVE", 1 << 19),
    ("MS_SHARED", 1 << 20),
    ("MS_RELATIME", 1 << 21),
    ("MS_KERNMOUNT", 1 << 22),
    ("MS_I_VERSION", 1 << 23),
    ("MS_STRICTATIME", 1 << 24),
    ("MS_LAZYTIME", 1 << 25),
    ("MS_SUBMOUNT", 1 << 26),
    ("MS_NOREMOTELOCK", 1 << 27),
    ("MS_NOSEC", 1 << 28),
    ("MS_BORN", 1 << 29),
    ("MS_ACTIVE", 1 << 30),
    ("MS_NOUSER", 1 << 31),
)
# Old callers put this magic in the top 16 bits; the kernel discards it (do_mount).
MS_MGC_MSK = 0xFFFF0000
MS_MGC_VAL = 0xC0ED0000

# From <sys/mount.h> / umount2(2).
UMOUNT_FLAGS: tuple[tuple[str, int], ...] = (
    ("MNT_FORCE", 1),
    ("MNT_DETACH", 2),
    ("MNT_EXPIRE", 4),
    ("UMOUNT_NOFOLLOW", 8),
)

# From <linux/fcntl.h> (linux-libc-dev 6.1): the AT_* flags execveat(2) accepts.
EXEC_FLAGS: tuple[tuple[str, int], ...] = (
    ("AT_SYMLINK_NOFOLLOW", 0x100),
    ("AT_EMPTY_PATH", 0x1000),
)
UNLINKAT_FLAGS: tuple[tuple[str, int], ...] = (("AT_REMOVEDIR", 0x200),)

# From glibc's <bits/socket.h> (2.36); AF_UNIX and AF_NETLINK win over AF_LOCAL and AF_ROUTE.
SOCK_DOMAINS: dict[int, str] = {
    0: "AF_UNSPEC",
    1: "AF_UNIX",
    2: "AF_INET",
    3: "AF_AX25",
    4: "AF_IPX",
    5: "AF_APPLETALK",
    6: "AF_NETROM",
    7: "AF_BRIDGE",
    8: "AF_ATMPVC",
    9: "AF_X25",
    10: "AF_INET6",
    11: "AF_ROSE",
    12: "AF_DECnet",
    13: "AF_NETBEUI",
    14: "AF_SECURITY",
    15: "AF_KEY",
    16: "AF_NETLINK",
    17: "AF_PACKET",
    18: "AF_ASH",
    19: "AF_ECONET",
    20: "AF_ATMSVC",
    21: "AF_RDS",
    22: "AF_SNA",
    23: "AF_IRDA",
    24: "AF_PPPOX",
    25: "AF_WANPIPE",
    26: "AF_LLC",
    27: "AF_IB",
    28: "AF_MPLS",
    29: "AF_CAN",
    30: "AF_TIPC",
    31: "AF_BLUETOOTH",
    32: "AF_IUCV",
    33: "AF_RXRPC",
    34: "AF_ISDN",
    35: "AF_PHONET",
    36: "AF_IEEE802154",
    37: "AF_CAIF",
    38: "AF_ALG",
    39: "AF_NFC",
    40: "AF_VSOCK",
    41: "AF_KCM",
    42: "AF_QIPCRTR",
    43: "AF_SMC",
    44: "AF_XDP",
    45: "AF_MCTP",
}

# From glibc's <bits/socket_type.h> (2.36): the low 4 bits are the type, the rest flags.
SOCK_TYPE_MASK = 0xF
SOCK_TYPES: dict[int, str] = {
    1: "SOCK_STREAM",
    2: "SOCK_DGRAM",
    3: "SOCK_RAW",
    4: "SOCK_RDM",
    5: "SOCK_SEQPACKET",
    6: "SOCK_DCCP",
    10: "SOCK_PACKET",
}
SOCK_TYPE_FLAGS: tuple[tuple[str, int], ...] = (
    ("SOCK_NONBLOCK", 0o4000),
    ("SOCK_CLOEXEC", 0o2000000),
)

# From <linux/ptrace.h> (linux-libc-dev 6.1): requests every architecture has.
PTRACE_REQUESTS: dict[int, str] = {
    0: "PTRACE_TRACEME",
    1: "PTRACE_PEEKTEXT",
    2: "PTRACE_PEEKDATA",
    3: "PTRACE_PEEKUSR",
    4: "PTRACE_POKETEXT",
    5: "PTRACE_POKEDATA",
    6: "PTRACE_POKEUSR",
    7: "PTRACE_CONT",
    8: "PTRACE_KILL",
    9: "PTRACE_SINGLESTEP",
    16: "PTRACE_ATTACH",
    17: "PTRACE_DETACH",
    24: "PTRACE_SYSCALL",
    0x4200: "PTRACE_SETOPTIONS",
    0x4201: "PTRACE_GETEVENTMSG",
    0x4202: "PTRACE_GETSIGINFO",
    0x4203: "PTRACE_SETSIGINFO",
    0x4204: "PTRACE_GETREGSET",
    0x4205: "PTRACE_SETREGSET",
    0x4206: "PTRACE_SEIZE",
    0x4207: "PTRACE_INTERRUPT",
    0x4208: "PTRACE_LISTEN",
    0x4209: "PTRACE_PEEKSIGINFO",
    0x420A: "PTRACE_GETSIGMASK",
    0x420B: "PTRACE_SETSIGMASK",
    0x420C: "PTRACE_SECCOMP_GET_FILTER",
    0x420D: "PTRACE_SECCOMP_GET_METADATA",
    0x420E: "PTRACE_GET_SYSCALL_INFO",
    0x420F: "PTRACE_GET_RSEQ_CONFIGURATION",
}
# Architecture-specific requests: x86-64 from <asm/ptrace-abi.h> (linux-libc-dev 6.1),
# arm64 from the kernel's arch/arm64/include/uapi/asm/ptrace.h. They overlap (33 differs).
PTRACE_ARCH_REQUESTS: dict[str, dict[int, str]] = {
    "x86_64": {
        12: "PTRACE_GETREGS",
        13: "PTRACE_SETREGS",
        14: "PTRACE_GETFPREGS",
        15: "PTRACE_SETFPREGS",
        18: "PTRACE_GETFPXREGS",
        19: "PTRACE_SETFPXREGS",
        21: "PTRACE_OLDSETOPTIONS",
        25: "PTRACE_GET_THREAD_AREA",
        26: "PTRACE_SET_THREAD_AREA",
        30: "PTRACE_ARCH_PRCTL",
        31: "PTRACE_SYSEMU",
        32: "PTRACE_SYSEMU_SINGLESTEP",
        33: "PTRACE_SINGLEBLOCK",
    },
    "arm64": {
        31: "PTRACE_SYSEMU",
        32: "PTRACE_SYSEMU_SINGLESTEP",
        33: "PTRACE_PEEKMTETAGS",
        34: "PTRACE_POKEMTETAGS",
    },
}

# From <linux/capability.h> (linux-libc-dev 6.1).
CAPABILITIES: dict[int, str] = {
    0: "CAP_CHOWN",
    1: "CAP_DAC_OVERRIDE",
    2: "CAP_DAC_READ_SEARCH",
    3: "CAP_FOWNER",
    4: "CAP_FSETID",
    5: "CAP_KILL",
    6: "CAP_SETGID",
    7: "CAP_SETUID",
    8: "CAP_SETPCAP",
    9: "CAP_LINUX_IMMUTABLE",
    10: "CAP_NET_BIND_SERVICE",
    11: "CAP_NET_BROADCAST",
    12: "CAP_NET_ADMIN",
    13: "CAP_NET_RAW",
    14: "CAP_IPC_LOCK",
    15: "CAP_IPC_OWNER",
    16: "CAP_SYS_MODULE",
    17: "CAP_SYS_RAWIO",
    18: "CAP_SYS_CHROOT",
    19: "CAP_SYS_PTRACE",
    20: "CAP_SYS_PACCT",
    21: "CAP_SYS_ADMIN",
    22: "CAP_SYS_BOOT",
    23: "CAP_SYS_NICE",
    24: "CAP_SYS_RESOURCE",
    25: "CAP_SYS_TIME",
    26: "CAP_SYS_TTY_CONFIG",
    27: "CAP_MKNOD",
    28: "CAP_LEASE",
    29: "CAP_AUDIT_WRITE",
    30: "CAP_AUDIT_CONTROL",
    31: "CAP_SETFCAP",
    32: "CAP_MAC_OVERRIDE",
    33: "CAP_MAC_ADMIN",
    34: "CAP_SYSLOG",
    35: "CAP_WAKE_ALARM",
    36: "CAP_BLOCK_SUSPEND",
    37: "CAP_AUDIT_READ",
    38: "CAP_PERFMON",
    39: "CAP_BPF",
    40: "CAP_CHECKPOINT_RESTORE",
}
