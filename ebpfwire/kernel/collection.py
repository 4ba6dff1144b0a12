"""One BPF object in the kernel: its maps created, its programs loaded and attached.

:class:`ProgramCollection` is the lifecycle the monitor and the statistics program share
(and any other object: the tests load theirs with it): ``load()`` creates every map and
loads the chosen programs, ``attach()`` attaches them in the order given, ``close()``
releases all of it, whatever state an exception or a KeyboardInterrupt left behind.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ebpfwire import machine
from ebpfwire.kernel import syscalls
from ebpfwire.kernel.attach import attach_program
from ebpfwire.kernel.elf import BpfObject, ProgramSpec
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.syscalls import BpfSyscallError

LOAD_THREADS = min(8, max(2, os.cpu_count() or 2))
VERIFIER_LOG_SIZE = 16 * 1024 * 1024
VERIFIER_LOG_TAIL = 40  # lines shown in the error

T = TypeVar("T")


def load_program(prog: ProgramSpec, map_fds: dict[str, int], license: str) -> int:
    """Load one program with its map fds patched in; the fd."""
    return load_insns(
        prog.name, prog.section, prog.prog_type, prog.with_map_fds(map_fds), license
    )


def load_insns(
    name: str,
    section: str,
    prog_type: int,
    insns: bytes,
    license: str,
    extras: syscalls.ProgLoadExtras | None = None,
) -> int:
    """Load instructions as program ``name``; the fd.

    The first attempt runs without a verifier log (fast); on failure the load is
    retried with log level 1 so the error can show the tail of the verifier's reasoning
    (the whole log is the error's ``log``).
    """
    try:
        return syscalls.prog_load(prog_type, insns, license, name, extras=extras)[0]
    except BpfSyscallError as exc:
        if exc.errno in (errno.EPERM, errno.ENOSYS):
            raise
    try:
        fd, _ = syscalls.prog_load(
            prog_type, insns, license, name, 1, VERIFIER_LOG_SIZE, extras
        )
    except BpfSyscallError as exc:
        tail = "\n".join(exc.log.rstrip().splitlines()[-VERIFIER_LOG_TAIL:])
        err = BpfSyscallError(
            f"the kernel rejected program {name!r} (section {section!r}): "
            f"{os.strerror(exc.errno or 0)}\nverifier log (tail):\n{tail}",
            exc.errno,
        )
        err.log = exc.log
        raise err from exc
    return fd  # the first failure was transient (EAGAIN...) and did not recur


def _running(pid: int) -> bool:
    """Is process (or thread) ``pid`` here and not yet exited (a zombie has)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")


class ProgramCollection:
    """``obj``'s maps and ``programs`` (default: all of the object's) in the kernel.

    Nothing touches the kernel before :meth:`load`. ``map_fds`` and ``prog_fds`` name what
    is loaded; ``close()`` (or leaving the ``with`` block) detaches, then closes programs
    and maps, and is idempotent. ``required_maps`` are names the caller writes to: an
    object without them is refused before anything is created.
    """

    def __init__(
        self,
        obj: BpfObject,
        programs: Iterable[ProgramSpec] | None = None,
        required_maps: Iterable[str] = (),
    ) -> None:
        missing = set(required_maps) - set(obj.maps)
        if missing:
            raise LoaderError(f"{obj.path}: expected maps {sorted(missing)} in .maps")
        self.object = obj
        self.programs = list(obj.programs if programs is None else programs)
        self.map_fds: dict[str, int] = {}
        self.prog_fds: dict[str, int] = {}
        self._attach_fds: list[int] = []
        self.closed = False

    def load(
        self,
        max_entries: Mapping[str, int] | None = None,
        while_loading: Callable[[], T] | None = None,
    ) -> T | None:
        """Create every map, then load the programs; ``while_loading()``'s value.

        ``max_entries`` overrides the object's sizes by map name (a RINGBUF's is its bytes).
        The programs load on worker threads while ``while_loading()`` runs here: the
        verifier runs in the kernel with the GIL released, so the loads overlap each other
        and that Python work. A KeyboardInterrupt cancels the loads not started and waits
        only for those running, so ``close()`` then finds every fd.
        """
        self._create_maps(max_entries or {})
        return self._load_programs(while_loading)

    def _create_maps(self, max_entries: Mapping[str, int]) -> None:
        for spec in self.object.maps.values():
            sizes, entries = (spec.key_size, spec.value_size), spec.max_entries
            if spec.type == syscalls.BPF_MAP_TYPE_PERF_EVENT_ARRAY:
                entries = machine.possible_cpus()
            elif spec.type == syscalls.BPF_MAP_TYPE_RINGBUF:  # no keys or values: bytes
                sizes = (0, 0)
            self.map_fds[spec.name] = syscalls.map_create(
                spec.type, *sizes, max_entries.get(spec.name, entries), spec.map_flags,
                spec.name,
            )

    def _load_programs(self, while_loading: Callable[[], T] | None) -> T | None:
        pool = ThreadPoolExecutor(LOAD_THREADS, thread_name_prefix="ebpfwire-load")
        try:
            futures = [pool.submit(self._load, prog) for prog in self.programs]
            value = while_loading() if while_loading is not None else None
            for future in futures:
                future.result()
            return value
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _load(self, prog: ProgramSpec) -> None:
        self.prog_fds[prog.name] = load_program(prog, self.map_fds, self.object.license)

    def attach(self, programs: Iterable[ProgramSpec]) -> None:
        """Attach loaded ``programs``, in this order: they run in it on a shared hook."""
        for prog in programs:
            self._attach_fds.append(attach_program(prog, self.prog_fds[prog.name]))

    def detach(self) -> None:
        """Detach every attached program; they stay loaded until :meth:`close`."""
        for fd in self._attach_fds:
            os.close(fd)
        self._attach_fds.clear()

    def tree_alive(self, name: str = "traced") -> bool:
        """Whether a process of the pid filter's tree (the ids in map ``name``) still runs.

        The exit program removes each process as it exits; an id it never saw exit (gone
        before the program was attached) is checked in /proc, a zombie counting as gone.
        """
        fd, spec = self.map_fds[name], self.object.maps[name]
        key = None
        for _ in range(spec.max_entries):
            key = syscalls.map_get_next_key(fd, key, spec.key_size)
            if key is None:
                return False
            if _running(int.from_bytes(key, "little")):
                return True
        return False

    def close(self) -> None:
        """Detach, then close programs and maps; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.detach()
        for fds in (self.prog_fds, self.map_fds):
            for fd in fds.values():
                os.close(fd)
            fds.clear()

    def __enter__(self) -> ProgramCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
