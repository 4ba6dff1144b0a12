"""Test support: compile a test BPF object from tests/bpf/, create its maps, load, attach.

The bundled ``Monitor`` knows one object; the ring buffer and map tests (and
bench/ringbuf_throughput.py) need their own, loaded the same way.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from ebpfwire.kernel import syscalls, tracefs
from ebpfwire.kernel.elf import BpfObject, read_object
from ebpfwire.kernel.monitor import load_program

TEST_BPF = Path(__file__).resolve().parent / "bpf"


def compile_object(name: str, out_dir: Path) -> Path:
    """clang -target bpf tests/bpf/NAME.bpf.c into ``out_dir``; FileNotFoundError without clang."""
    clang = shutil.which("clang")
    if clang is None:
        raise FileNotFoundError("clang not installed: cannot build the test BPF objects")
    out = out_dir / f"{name}.o"
    arch_inc = f"/usr/include/{platform.machine()}-linux-gnu"
    subprocess.run(
        [clang, "-O2", "-g", "-target", "bpf", f"-I{arch_inc}", "-Wall", "-Werror", "-c",
         str(TEST_BPF / f"{name}.bpf.c"), "-o", str(out)],
        check=True,
    )
    return out


class LoadedObject:
    """Every map of the object created (``max_entries`` overridable), every program attached."""

    def __init__(self, path: Path, max_entries: dict[str, int] | None = None) -> None:
        self.object: BpfObject = read_object(path)
        self.map_fds: dict[str, int] = {}
        self.prog_fds: list[int] = []
        self.attach_fds: list[int] = []
        sizes = max_entries or {}
        try:
            for spec in self.object.maps.values():
                key_size, value_size = spec.key_size, spec.value_size
                if spec.type == syscalls.BPF_MAP_TYPE_RINGBUF:
                    key_size = value_size = 0  # the kernel wants none
                self.map_fds[spec.name] = syscalls.map_create(
                    spec.type, key_size, value_size, sizes.get(spec.name, spec.max_entries),
                    spec.map_flags, spec.name,
                )
            for prog in self.object.programs:
                fd = load_program(prog, self.map_fds, self.object.license)
                self.prog_fds.append(fd)
                category, _, name = prog.attach_to.partition("/")
                tp = syscalls.perf_event_open(
                    syscalls.PERF_TYPE_TRACEPOINT, tracefs.tracepoint_id(category, name), cpu=0
                )
                self.attach_fds.append(tp)
                syscalls.perf_ioctl(tp, syscalls.PERF_EVENT_IOC_SET_BPF, fd)
                syscalls.perf_ioctl(tp, syscalls.PERF_EVENT_IOC_ENABLE)
        except BaseException:
            self.close()
            raise

    def ids(self) -> tuple[set[int], set[int]]:
        """(program ids, map ids) in the kernel: what must be gone after close()."""
        return (
            {syscalls.object_id(fd, True) for fd in self.prog_fds},
            {syscalls.object_id(fd, False) for fd in self.map_fds.values()},
        )

    def close(self) -> None:
        for fd in [*self.attach_fds, *self.prog_fds, *self.map_fds.values()]:
            os.close(fd)
        self.attach_fds.clear()
        self.prog_fds.clear()
        self.map_fds.clear()

    def __enter__(self) -> LoadedObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
