"""Test support: compile a test BPF object from tests/bpf/, create its maps, load, attach.

The bundled ``Monitor`` knows one object; the ring buffer and map tests (and
bench/ringbuf_throughput.py) need their own, loaded through the same public ``Object``.
"""

from __future__ import annotations

import lzma
import platform
import shutil
import subprocess
from pathlib import Path

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.objects import Object
from ebpfwire.kernel.objfile import read_spec

TEST_BPF = Path(__file__).resolve().parent / "bpf"
# bpf_tracing.h's names of the machine (PT_REGS_PARM1 and the like need one)
TARGET_ARCH = {"x86_64": "x86", "aarch64": "arm64"}


def compile_object(name: str, out_dir: Path, *defines: str, includes: tuple[Path, ...] = ()
                   ) -> Path:
    """clang -target bpf tests/bpf/NAME.bpf.c into ``out_dir`` (``-D`` each of ``defines``,
    ``-I`` each of ``includes`` first); FileNotFoundError without clang."""
    clang = shutil.which("clang")
    if clang is None:
        raise FileNotFoundError("clang not installed: cannot build the test BPF objects")
    out = out_dir / f"{name}{''.join('-' + d for d in defines)}.o"
    arch_inc = f"/usr/include/{platform.machine()}-linux-gnu"
    target_arch = TARGET_ARCH.get(platform.machine(), platform.machine())
    subprocess.run(
        [clang, "-O2", "-g", "-target", "bpf", *(f"-I{d}" for d in includes),
         f"-I{arch_inc}", f"-D__TARGET_ARCH_{target_arch}", "-Wall", "-Werror",
         *(f"-D{d}" for d in defines), "-c",
         str(TEST_BPF / f"{name}.bpf.c"), "-o", str(out)],
        check=True,
    )
    return out


def linux_61_headers(out_dir: Path) -> Path:
    """A directory holding Linux 6.1's vmlinux.h (tests/bpf/linux-6.1: another kernel than
    the one the tests run on), unpacked into ``out_dir``."""
    header = out_dir / "linux-6.1" / "vmlinux.h"
    if not header.exists():
        header.parent.mkdir(parents=True, exist_ok=True)
        header.write_bytes(lzma.decompress((TEST_BPF / "linux-6.1" / "vmlinux.h.xz").read_bytes()))
    return header.parent


class LoadedObject(Object):
    """Every map of the object created (``max_entries`` overridable), every program attached."""

    def __init__(self, path: Path, max_entries: dict[str, int] | None = None) -> None:
        super().__init__(read_spec(path))
        for name, entries in (max_entries or {}).items():
            self.maps[name].max_entries = entries
        try:
            self.load()
            self.attach()
        except BaseException:
            self.close()
            raise

    def ids(self) -> tuple[set[int], set[int]]:
        """(program ids, map ids) in the kernel: what must be gone after close()."""
        return (
            {syscalls.object_id(fd, True) for fd in self.prog_fds.values()},
            {syscalls.object_id(fd, False) for fd in self.map_fds.values()},
        )
