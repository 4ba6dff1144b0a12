"""The ``config`` map's value (``struct monitor_config`` of ``bpf/monitor_config.h``).

The kernel side reads task and namespace fields at offsets it gets from here, so the
program needs no CO-RE: the offsets come from the running kernel's BTF at load time, or
from the cache (:mod:`ebpfwire.kernel.cache`) keyed by that BTF's content.
"""

from __future__ import annotations

import mmap
import os
import platform
from pathlib import Path

from construct import Bytes, Int32ul, Struct

from ebpfwire.kernel import cache
from ebpfwire.kernel.btf import VMLINUX_PATH, Btf
from ebpfwire.kernel.errors import BtfError, LoaderError

MonitorConfig = Struct(
    "ready" / Int32ul,
    "filter_tgid" / Int32ul,
    "ignore_tgid" / Int32ul,
    "host_pidns_inum" / Int32ul,
    "host_mntns_inum" / Int32ul,
    "task_real_parent" / Int32ul,
    "task_tgid" / Int32ul,
    "task_group_leader" / Int32ul,
    "task_nsproxy" / Int32ul,
    "task_thread_pid" / Int32ul,
    "nsproxy_mnt_ns" / Int32ul,
    "mnt_ns_inum" / Int32ul,
    "pid_ns_inum" / Int32ul,
    "pid_level" / Int32ul,
    "pid_numbers" / Int32ul,
    "upid_size" / Int32ul,
    "upid_nr" / Int32ul,
    "upid_ns" / Int32ul,
    "regs_arg0" / Int32ul,
    "regs_arg1" / Int32ul,
    "regs_arg2" / Int32ul,
    "regs_arg3" / Int32ul,
    "regs_arg4" / Int32ul,
    "regs_arg5" / Int32ul,
    "regs_nr" / Int32ul,
    "task_ti_status" / Int32ul,
    "binprm_filename" / Int32ul,
    "task_exit_code" / Int32ul,
    "sk_family" / Int32ul,
    "sk_protocol" / Int32ul,
    "sk_sport" / Int32ul,
    "sk_dport" / Int32ul,
    "sk_daddr" / Int32ul,
    "sk_v6_daddr" / Int32ul,
    "task_mm" / Int32ul,
    "mm_arg_start" / Int32ul,
    "mm_arg_end" / Int32ul,
    "filter_comm" / Int32ul,
    "comm" / Bytes(16),
)
COMM_SIZE = 16  # TASK_COMM_LEN: a task name is at most 15 bytes and a NUL

# config field -> (struct, member path) in the kernel's BTF
_OFFSETS = {
    "task_real_parent": ("task_struct", "real_parent"),
    "task_tgid": ("task_struct", "tgid"),
    "task_group_leader": ("task_struct", "group_leader"),
    "task_nsproxy": ("task_struct", "nsproxy"),
    "task_thread_pid": ("task_struct", "thread_pid"),
    "nsproxy_mnt_ns": ("nsproxy", "mnt_ns"),
    "mnt_ns_inum": ("mnt_namespace", "ns.inum"),
    "pid_ns_inum": ("pid_namespace", "ns.inum"),
    "pid_level": ("pid", "level"),
    "pid_numbers": ("pid", "numbers"),
    "upid_nr": ("upid", "nr"),
    "upid_ns": ("upid", "ns"),
    "task_ti_status": ("task_struct", "thread_info.status"),
    "binprm_filename": ("linux_binprm", "filename"),
    "task_exit_code": ("task_struct", "exit_code"),
    "sk_family": ("sock", "__sk_common.skc_family"),
    "sk_protocol": ("sock", "sk_protocol"),
    "sk_sport": ("inet_sock", "inet_sport"),
    "sk_dport": ("sock", "__sk_common.skc_dport"),
    "sk_daddr": ("sock", "__sk_common.skc_daddr"),
    "sk_v6_daddr": ("sock", "__sk_common.skc_v6_daddr"),
    "task_mm": ("task_struct", "mm"),
    "mm_arg_start": ("mm_struct", "arg_start"),
    "mm_arg_end": ("mm_struct", "arg_end"),
}
# the syscall argument registers 0-5 and the syscall number in struct pt_regs, per machine
_SYSCALL_REGS = {
    "x86_64": ("di", "si", "dx", "r10", "r8", "r9", "orig_ax"),
}


_REGS_FIELDS = ("regs_arg0", "regs_arg1", "regs_arg2", "regs_arg3", "regs_arg4", "regs_arg5",
                "regs_nr")
OFFSET_FIELDS = frozenset({*_OFFSETS, "upid_size", *_REGS_FIELDS})
CACHE_NAME = "kernel-offsets"


def _syscall_regs() -> tuple[str, ...]:
    regs = _SYSCALL_REGS.get(platform.machine())
    if regs is None:
        raise LoaderError(f"the bundled monitor is built for x86-64, not {platform.machine()}")
    return regs


def kernel_offsets(btf: Btf) -> dict[str, int]:
    """The struct offsets the program needs, from the kernel's BTF; says which is missing."""
    regs = _syscall_regs()
    btf.struct_ids([name for name, _ in _OFFSETS.values()] + ["upid", "pt_regs"])  # one pass
    try:
        values = {field: btf.member_offset(*where) for field, where in _OFFSETS.items()}
        values["upid_size"] = btf.sizeof("upid")
        for field, reg in zip(_REGS_FIELDS, regs, strict=True):
            values[field] = btf.member_offset("pt_regs", reg)
    except BtfError as exc:
        raise LoaderError(f"kernel BTF lacks a type the monitor needs: {exc}") from exc
    return values


def valid_offsets(value: object) -> dict[str, int] | None:
    """A cached :func:`kernel_offsets` answer if it has that shape (every field, each a
    32-bit unsigned int, nothing else), else None."""
    if not isinstance(value, dict) or value.keys() != OFFSET_FIELDS:
        return None
    if not all(type(v) is int and 0 <= v <= 0xFFFFFFFF for v in value.values()):
        return None
    return value


def _btf_bytes(path: str) -> mmap.mmap | bytes:
    """The BTF at ``path``, mapped where the kernel allows it (vmlinux's, read-only and
    private, since Linux 6.16): no copy and no 4 KiB read per system call (1,350 for
    vmlinux, each taking and giving back the GIL), else read whole."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise BtfError(f"cannot read BTF from {path}: {exc.strerror}", exc.errno) from exc
    try:
        try:
            return mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        except (OSError, ValueError):  # an older kernel, or an empty or special file
            with open(fd, "rb", closefd=False) as f:
                return f.read()
    except OSError as exc:
        raise BtfError(f"cannot read BTF from {path}: {exc.strerror}", exc.errno) from exc
    finally:
        os.close(fd)


def cached_kernel_offsets(path: str = VMLINUX_PATH, where: Path | None = None
                          ) -> dict[str, int]:
    """:func:`kernel_offsets` of the BTF at ``path``, from the cache when it holds the
    answer for this BTF's content (hashing it costs ~3 ms, parsing it ~45 ms), else parsed
    and kept there; ``where``: the cache directory (default :func:`cache.directory`)."""
    data = _btf_bytes(path)
    try:
        where = where or cache.directory()
        if where is None:
            return kernel_offsets(Btf(bytes(data), path))
        entry_key = cache.key(data, (CACHE_NAME, sorted(_OFFSETS.items()), _syscall_regs()))
        hit = cache.load(CACHE_NAME, entry_key, valid_offsets, where)
        if hit is None:
            hit = kernel_offsets(Btf(bytes(data), path))
            cache.store(CACHE_NAME, entry_key, hit, where)
        return hit
    finally:
        if not isinstance(data, bytes):  # mapped
            data.close()


def host_ns_inum(kind: str, proc: str = "/proc") -> int:
    """Inode of the host's ``kind`` namespace ("pid" or "mnt").

    Read from pid 1; where pid 1 hides its namespaces (a non-dumpable init), from pid 2
    when it is ``kthreadd``: kernel threads always live in the initial namespaces.
    """
    try:
        return os.stat(f"{proc}/1/ns/{kind}").st_ino
    except OSError as exc:
        first = exc
    try:
        with open(f"{proc}/2/status") as f:
            if f.readline().split() == ["Name:", "kthreadd"]:
                return os.stat(f"{proc}/2/ns/{kind}").st_ino
    except OSError:
        pass
    raise LoaderError(
        f"cannot stat {first.filename} (needs root to see pid 1's namespaces) and pid 2 is "
        f"not a readable kthreadd: {first.strerror}",
        first.errno,
    )


def comm_bytes(comm: str | bytes) -> bytes:
    """``comm`` as the kernel stores a task name: at most 15 bytes, NUL-padded to 16."""
    raw = comm.encode() if isinstance(comm, str) else bytes(comm)
    if not raw or len(raw) >= COMM_SIZE or b"\0" in raw:
        raise ValueError(
            f"comm must be 1 to {COMM_SIZE - 1} bytes without NUL (a task name), got {comm!r} "
            f"({len(raw)} bytes)"
        )
    return raw.ljust(COMM_SIZE, b"\0")


def build_config(
    offsets: dict[str, int],
    filter_tgid: int = 0,
    ignore_tgid: int = 0,
    proc: str = "/proc",
    comm: str | bytes | None = None,
) -> bytes:
    """The ``config`` value for this machine, with ``ready`` = 1.

    ``offsets``: the kernel's, from :func:`cached_kernel_offsets`; ``filter_tgid``
    non-zero switches the tree filter on (the ``traced`` map decides); ``comm`` keeps only
    tasks of that name.
    """
    return MonitorConfig.build(
        dict(
            ready=1,
            filter_tgid=filter_tgid,
            ignore_tgid=ignore_tgid,
            filter_comm=int(comm is not None),
            comm=comm_bytes(comm) if comm is not None else bytes(COMM_SIZE),
            host_pidns_inum=host_ns_inum("pid", proc),
            host_mntns_inum=host_ns_inum("mnt", proc),
            **offsets,
        )
    )
