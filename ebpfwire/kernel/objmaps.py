"""What maps of an object need beyond ``BPF_MAP_CREATE``: pins shared by name, the fds
that map-in-map and PROG_ARRAY slots hold, and closing a PROG_ARRAY without leaking it.

When a PROG_ARRAY's last user fd closes, the kernel takes a reference and queues work that
empties the array and drops it. If the map is opened by id and closed again before that
work runs (``bpftool map``, any id listing such as ``syscalls.loaded_maps()``), the second
close takes a second reference but finds the work already queued: one reference is never
dropped and the map stays in the kernel for good (seen on this 6.18 kernel: 5 of 30 maps
listed right after close). So ``close()`` empties each PROG_ARRAY first (a leak then holds
no program) and waits until the kernel has freed it, watching ids without opening any
(about 20 ms here: the programs' RCU grace period). Another process listing maps in that
window can still cause the leak; nothing in user space can prevent that.
"""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.syscalls import BpfSyscallError

PIN_ROOT = Path("/sys/fs/bpf")  # libbpf's default directory for LIBBPF_PIN_BY_NAME
LIBBPF_PIN_BY_NAME = 1
FREE_WAIT = 2.0  # seconds close() waits for a closed PROG_ARRAY to be freed
# what must agree between a pinned map and the definition that would reuse it (libbpf's list)
_COMPARED = ("type", "key_size", "value_size", "max_entries", "map_flags", "map_extra")


def reuse_pinned(name: str, path: Path, want: dict[str, int]) -> int | None:
    """An fd of the map pinned at ``path`` if it matches ``want`` (``_COMPARED`` -> value),
    None if nothing is pinned there; a clear error naming the first property that differs."""
    try:
        fd = syscalls.obj_get(str(path))
    except BpfSyscallError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise LoaderError(f"map {name!r}: cannot open the pin {path}: "
                          f"{os.strerror(exc.errno)}", exc.errno) from exc
    try:
        info = syscalls.map_info(fd)
        for prop in _COMPARED:
            there = getattr(info, prop)
            if there != want[prop]:
                raise LoaderError(
                    f"map {name!r}: the map pinned at {path} cannot be reused: its {prop} is "
                    f"{there}, this object's is {want[prop]} (unpin it, or make them agree)"
                )
    except BaseException:
        os.close(fd)
        raise
    return fd


def pin(name: str, fd: int, path: Path) -> None:
    """Pin map ``fd`` at ``path``, making its directory if needed (as libbpf does)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        syscalls.obj_pin(fd, str(path))
    except OSError as exc:
        raise LoaderError(f"map {name!r}: cannot pin at {path}: {exc.strerror} "
                          "(is its directory on a bpffs?)", exc.errno) from exc
    except BpfSyscallError as exc:
        raise LoaderError(f"map {name!r}: cannot pin at {path}: {os.strerror(exc.errno)} "
                          "(is its directory on a bpffs?)", exc.errno) from exc


def set_slot(map_name: str, map_fd: int, slot: int, target: str, target_fd: int) -> None:
    """Put ``target``'s fd (a map's or a program's) at index ``slot`` of ``map_name``."""
    try:
        syscalls.map_update(map_fd, slot.to_bytes(4, "little"), target_fd.to_bytes(4, "little"))
    except BpfSyscallError as exc:
        raise LoaderError(f"map {map_name!r}: cannot set slot [{slot}] to {target!r}: "
                          f"{os.strerror(exc.errno)}", exc.errno) from exc


def empty_prog_arrays(fds: list[int]) -> set[int]:
    """Delete every slot of these PROG_ARRAYs before their close; their ids, for
    :func:`wait_freed` (see the module's docstring for why)."""
    for fd in fds:
        for i in range(syscalls.map_info(fd).max_entries):
            syscalls.map_delete(fd, i.to_bytes(4, "little"))
    return {syscalls.object_id(fd, False) for fd in fds}


def wait_freed(ids: set[int], timeout: float = FREE_WAIT) -> None:
    """Return once the kernel has freed the maps ``ids`` (listing ids only, which opens
    none), or after ``timeout`` seconds if something else still holds one."""
    deadline = time.monotonic() + timeout
    while ids & syscalls.map_ids() and time.monotonic() < deadline:
        time.sleep(0.002)


class FdCodec:
    """Values of a map of maps or of programs: written as an fd (an int, something with an
    ``fd``, or a name ``resolve`` turns into one), read as the id the kernel gives back."""

    size = 4

    def __init__(self, resolve: Any) -> None:
        self._resolve = resolve

    def encode(self, value: Any, where: str = "value") -> bytes:
        if isinstance(value, str):
            value = self._resolve(value)
        fd = getattr(value, "fd", value)
        if not isinstance(fd, int) or isinstance(fd, bool) or fd < 0:
            raise LoaderError(f"{where}: expected an fd, a name, a Map or a Program, found "
                              f"{value!r}")
        return fd.to_bytes(4, "little")

    def decode(self, data: bytes) -> int:
        return int.from_bytes(data, "little")
