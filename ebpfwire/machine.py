"""Facts of the machine we run on: its CPUs, its architecture, its boot time.

A recorder writes them into a capture's header and the kernel readers size their rings and
per-CPU values by them, so each is read in one place only.
"""

from __future__ import annotations

import os
import platform
import time

#: ``uname -m`` -> the architecture name of ebpfwire.wire.names (the event ids' table).
MACHINES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


class UnsupportedMachine(ValueError):
    """This machine's architecture has no syscall table here."""


def cpu_list(path: str = "/sys/devices/system/cpu/online") -> list[int]:
    """CPU numbers from a sysfs list such as ``0-3,6``."""
    with open(path) as f:
        text = f.read().strip()
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def online_cpus() -> list[int]:
    """The CPUs running now: one perf ring each."""
    return cpu_list("/sys/devices/system/cpu/online")


def possible_cpus() -> int:
    """CPU slots the kernel may use: the size of a PERF_EVENT_ARRAY, the values of a per-CPU
    map; ``os.cpu_count()`` where sysfs cannot say."""
    try:
        return max(cpu_list("/sys/devices/system/cpu/possible")) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def arch() -> str:
    """This machine's architecture as captures name it (x86_64 or arm64)."""
    machine = platform.machine()
    try:
        return MACHINES[machine]
    except KeyError:
        raise UnsupportedMachine(f"unsupported machine {machine!r}: ebpfwire knows the "
                                 f"syscalls of x86_64 and arm64") from None


def boot_time_ns() -> int:
    """Wall-clock ns of boot: add a bpf_ktime_get_ns() value (CLOCK_MONOTONIC) to show it
    as wall-clock time."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def process_exists(pid: int) -> bool:
    """Is there a process ``pid`` here (any user's, a zombie too)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it is there, owned by another user
        pass
    return True


def process_running(pid: int) -> bool:
    """Is process (or thread) ``pid`` here and not yet exited (a zombie has)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    end = stat.rindex(b")")
    return stat[end + 2 : end + 3] not in (b"Z", b"X")


def require_process(pid: int) -> None:
    """ValueError unless a process ``pid`` runs here: a filter on a pid that is not there
    would wait for events that never come."""
    if not process_exists(pid):
        raise ValueError(f"pid {pid}: no such process")
