"""The kernel's types as libbpf searches them: vmlinux first, then each module's BTF.

A module's BTF (``/sys/kernel/btf/<module>``) is split BTF on top of vmlinux: its ids
continue vmlinux's. libbpf looks in the modules only for what vmlinux lacks, in the order
the kernel numbers their BTF objects, and a module's own types only. What the kernel is
then told about a module type (a tp_btf/fentry target, a typed ksym, a kfunc) comes with
an fd of that module's BTF object, opened here on demand and closed by :meth:`close`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.btf import Btf, BtfKind
from ebpfwire.kernel.errors import LoaderError

SYSFS_BTF = Path("/sys/kernel/btf")


@dataclass
class ModuleBtf:
    """One module's BTF: its name, types (split on vmlinux) and kernel BTF object id."""

    name: str
    btf: Btf
    btf_obj_id: int | None = None  # None: not known yet (a file the user named)


@dataclass(frozen=True)
class Found:
    """A type found by name: the BTF it is in, its id, its module (None: vmlinux)."""

    btf: Btf
    type_id: int
    module: ModuleBtf | None


class KernelBtf:
    """vmlinux and module BTF; ``modules`` (name -> path or split :class:`Btf`, in search
    order) replaces the running kernel's, found on first need."""

    def __init__(self, vmlinux: Btf, modules: dict[str, str | Path | Btf] | None = None
                 ) -> None:
        self.vmlinux = vmlinux
        self._given = modules
        self._modules: list[ModuleBtf] | None = None
        self._fds: dict[str, int] = {}

    def modules(self) -> list[ModuleBtf]:
        """The module BTFs, in libbpf's search order (read once)."""
        if self._modules is None:
            if self._given is not None:
                self._modules = [
                    ModuleBtf(name, src if isinstance(src, Btf)
                              else Btf.from_file(src, base=self.vmlinux))
                    for name, src in self._given.items()
                ]
            else:
                self._modules = [
                    ModuleBtf(name, Btf.from_file(SYSFS_BTF / name, base=self.vmlinux), obj_id)
                    for obj_id, name in syscalls.kernel_btf_objects() if name != "vmlinux"
                ]
        return self._modules

    def find(self, name: str, kinds: Iterable[BtfKind]) -> Found | None:
        """The first type called ``name`` of one of ``kinds``: vmlinux's, else the first
        module's that has one (its own types only)."""
        kinds = tuple(kinds)
        ids = self.vmlinux.ids_named(name, kinds)
        if ids:
            return Found(self.vmlinux, ids[0], None)
        for mod in self.modules():
            ids = mod.btf.ids_named(name, kinds)
            if ids:
                return Found(mod.btf, ids[0], mod)
        return None

    def candidates(self, essential: str) -> list[tuple[Btf, int]]:
        """CO-RE candidates named ``essential`` (any ``___flavor``): vmlinux's; only if it
        has none, every module's."""
        ids = self.vmlinux.ids_by_essential_name(essential)
        if ids:
            return [(self.vmlinux, tid) for tid in ids]
        return [(mod.btf, tid) for mod in self.modules()
                for tid in mod.btf.ids_by_essential_name(essential)]

    def module_fd(self, module: ModuleBtf) -> int:
        """An fd of ``module``'s BTF object in the kernel (what attach_btf_obj_fd, typed
        ksyms and fd_array want)."""
        fd = self._fds.get(module.name)
        if fd is None:
            if module.btf_obj_id is None:
                ids = {name: obj_id for obj_id, name in syscalls.kernel_btf_objects()}
                if module.name not in ids:
                    raise LoaderError(
                        f"module {module.name!r}: the running kernel holds no BTF object of "
                        f"that name (its BTF came from {module.btf.origin})"
                    )
                module.btf_obj_id = ids[module.name]
            fd = self._fds[module.name] = syscalls.btf_fd_by_id(module.btf_obj_id)
        return fd

    def close(self) -> None:
        """Close the module BTF fds opened."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
