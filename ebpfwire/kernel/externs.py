"""Externs: ``.kconfig`` values and ``.ksyms`` kernel symbols, resolved as libbpf does.

An extern is an undefined ELF symbol whose BTF (VAR or FUNC, extern linkage) sits in the
DATASEC ``.kconfig`` or ``.ksyms``.

- ``.kconfig``: a read-only, frozen one-element array map (libbpf's ``<obj>.kconfig``),
  laid out as libbpf lays it out (by alignment, then size, then name) and filled with
  ``LINUX_KERNEL_VERSION`` (from uname, as libbpf computes it), ``LINUX_HAS_BPF_COOKIE``
  and ``LINUX_HAS_SYSCALL_WRAPPER`` (probed the way libbpf probes them) and ``CONFIG_*``
  from ``/boot/config-<release>``, else ``/proc/config.gz`` (or a file the user names).
- ``.ksyms``: a typed variable becomes ``BPF_PSEUDO_BTF_ID`` with the kernel's VAR id (and
  its module's BTF fd), an untyped one its address from ``/proc/kallsyms``, a function
  call a kfunc call (``BPF_PSEUDO_KFUNC_CALL``, FUNC id, ``fd_array`` index of a module).

A ``__weak`` extern the kernel lacks is 0 (an unresolved kfunc's call is poisoned: the
verifier refuses it only if reachable); a strong one is an error naming it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.btf import BTF_INT_SIGNED, Btf, BtfKind, essential_name
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.kernel_btf import KernelBtf
from ebpfwire.kernel.objfile import DataSection, ObjectSpec, Variable, internal_map_name

KCONFIG_SEC = ".kconfig"
KSYMS_SEC = ".ksyms"
BTF_VAR_GLOBAL_ALLOCATED = 1
BTF_LINKAGE_EXTERN = 2  # BTF_VAR_GLOBAL_EXTERN, BTF_FUNC_EXTERN
BTF_FUNC_GLOBAL = 1
BTF_INT_BOOL = 4
POISON_CALL_KFUNC_BASE = 2002000000  # libbpf's: "invalid func unknown#2002000000 + n"
DUMMY_KSYM = "dummy_ksym"
BPF_FUNC_GET_ATTACH_COOKIE = 174
KALLSYMS = Path("/proc/kallsyms")
SYSCALL_PREFIX = {"x86_64": "x64", "aarch64": "arm64", "s390x": "s390", "ppc64le": "powerpc",
                  "riscv64": "riscv"}
TRISTATE = {"n": 0, "y": 1, "m": 2}


@dataclass
class Extern:
    """One extern and what it resolved to."""

    name: str
    btf_id: int  # its VAR or FUNC in the object's BTF
    weak: bool
    section: str  # .kconfig or .ksyms
    is_func: bool = False
    type_id: int = 0  # .ksyms: the local type (0: untyped); a function's FUNC_PROTO
    kcfg: str = ""  # .kconfig: bool, tristate, char, int or char_arr
    size: int = 0
    align: int = 0
    signed: bool = False
    offset: int = 0  # .kconfig: where its value is in the map
    index: int = 0  # in libbpf's order (the poisoned kfunc call names it)
    is_set: bool = False
    addr: int = 0  # an untyped ksym's address
    kernel_btf_id: int = 0
    btf_obj_fd: int = 0  # a typed ksym's module BTF fd (0: vmlinux)
    fd_index: int = 0  # a kfunc's module BTF fd index in fd_array (0: vmlinux)

    @property
    def kind_name(self) -> str:
        return "kconfig" if self.section == KCONFIG_SEC else (
            "kfunc" if self.is_func else "ksym")


def _align(btf: Btf, tid: int) -> int:
    """btf__align_of: what a .kconfig value is aligned to."""
    tid = btf.resolve(tid)
    kind = btf.kind(tid)
    if kind in (BtfKind.INT, BtfKind.ENUM, BtfKind.ENUM64, BtfKind.FLOAT):
        return min(btf.type(tid).size_or_type, 8)
    if kind == BtfKind.PTR:
        return 8
    if kind == BtfKind.ARRAY:
        return _align(btf, btf.type(tid).detail.type)
    if kind in (BtfKind.STRUCT, BtfKind.UNION):
        return max((_align(btf, m.type) for m in btf.type(tid).detail), default=1)
    return 0


def _kcfg_type(btf: Btf, tid: int) -> tuple[str, bool]:
    """(libbpf's kconfig value type, signed) of a C type; "" if none fits."""
    tid = btf.resolve(tid)
    kind = btf.kind(tid)
    rec = btf.type(tid) if tid else None
    if kind == BtfKind.INT:
        enc, size = rec.detail >> 24 & 0xF, rec.size_or_type
        if enc & BTF_INT_BOOL:
            return ("bool" if size == 1 else ""), False
        if size == 1:
            return "char", bool(enc & BTF_INT_SIGNED)
        if size in (2, 4, 8):
            return "int", bool(enc & BTF_INT_SIGNED)
        return "", False
    if kind in (BtfKind.ENUM, BtfKind.ENUM64):
        ok = rec.name == "libbpf_tristate" and (kind == BtfKind.ENUM64 or rec.size_or_type == 4)
        return ("tristate" if ok else ""), False
    if kind == BtfKind.ARRAY:
        arr = rec.detail
        ok = arr.nelems > 0 and _kcfg_type(btf, arr.type)[0] == "char"
        return ("char_arr" if ok else ""), False
    return "", False


def _datasec_of(btf: Btf, type_id: int) -> str | None:
    for tid in range(1, len(btf)):
        if btf.kind(tid) == BtfKind.DATASEC and any(
            info.type == type_id for info in btf.type(tid).detail
        ):
            return btf.type(tid).name
    return None


def collect(spec: ObjectSpec) -> list[Extern]:
    """The object's externs in libbpf's order, .kconfig offsets computed."""
    names = [
        (s.name, s.bind == "STB_WEAK") for s in spec.symbols
        if s.section == "SHN_UNDEF" and s.name and s.type == "STT_NOTYPE"
        and s.bind in ("STB_GLOBAL", "STB_WEAK")
    ]
    if not names:
        return []
    btf = spec.btf
    if btf is None:
        raise LoaderError(f"{spec.origin}: extern {names[0][0]!r} needs the object's .BTF")
    externs = []
    for name, weak in names:
        ids = [tid for tid in btf.ids_named(name, (BtfKind.VAR, BtfKind.FUNC))
               if btf.type(tid).detail == BTF_LINKAGE_EXTERN
               or (btf.kind(tid) == BtfKind.FUNC and btf.type(tid).vlen == BTF_LINKAGE_EXTERN)]
        if not ids:
            raise LoaderError(f"{spec.origin}: extern {name!r} has no extern VAR or FUNC in "
                              "the object's BTF")
        tid = ids[0]
        rec = btf.type(tid)
        section = _datasec_of(btf, tid)
        ext = Extern(name, tid, weak, section or "", is_func=btf.kind(tid) == BtfKind.FUNC)
        where = f"{spec.origin}: extern {name!r}"
        if section == KCONFIG_SEC:
            if ext.is_func:
                raise LoaderError(f"{where}: a function cannot be in {KCONFIG_SEC}")
            ext.kcfg, ext.signed = _kcfg_type(btf, rec.size_or_type)
            if not ext.kcfg:
                raise LoaderError(f"{where}: its C type is not one a kconfig value can have "
                                  "(bool, char, 1/2/4/8-byte integer, enum libbpf_tristate, "
                                  "char array)")
            ext.size, ext.align = btf.sizeof(rec.size_or_type), _align(btf, rec.size_or_type)
        elif section == KSYMS_SEC:
            ext.type_id = btf.resolve(rec.size_or_type)
        else:
            raise LoaderError(f"{where}: in section {section!r}, expected {KCONFIG_SEC} "
                              f"(__kconfig) or {KSYMS_SEC} (__ksym)")
        externs.append(ext)
    # libbpf's order: .kconfig ones first, by alignment (largest first), size, then name
    externs.sort(key=lambda e: (0, -e.align, e.size, e.name.encode())
                 if e.section == KCONFIG_SEC else (1, 0, 0, e.name.encode()))
    off = 0
    for i, ext in enumerate(externs):
        ext.index = i
        if ext.section == KCONFIG_SEC:
            ext.offset = -(-off // ext.align) * ext.align
            off = ext.offset + ext.size
    return externs


def kconfig_section(spec: ObjectSpec, externs: list[Extern]) -> DataSection | None:
    """The ``.kconfig`` map's data section (zeros until :func:`resolve_kconfig`)."""
    kcfg = [e for e in externs if e.section == KCONFIG_SEC]
    if not kcfg:
        return None
    size = max(e.offset + e.size for e in kcfg)
    btf = spec.btf
    sec = DataSection(KCONFIG_SEC, -1, "rodata", bytearray(size),
                      internal_map_name(spec.name, KCONFIG_SEC),
                      btf.ids_named(KCONFIG_SEC, (BtfKind.DATASEC,))[0])
    for ext in kcfg:
        sec.variables[ext.name] = Variable(ext.name, KCONFIG_SEC, ext.offset, ext.size,
                                           btf.type(ext.btf_id).size_or_type)
    return sec


# ---- .kconfig values ------------------------------------------------------------------


def kernel_version(release: str | None = None, version: str | None = None) -> int:
    """LINUX_KERNEL_VERSION as libbpf computes it: Ubuntu's /proc/version_signature, a
    Debian kernel's version string, else uname's release (major.minor.patch, patch at
    most 255); 0 if none parses."""
    def encode(text: str) -> int:
        parts = []
        for part in text.split(".")[:3]:
            digits = part[: len(part) - len(part.lstrip("0123456789"))]
            if not digits:
                return 0
            parts.append(int(digits))
            if len(digits) < len(part):
                break
        if len(parts) < 3:
            return 0
        return (parts[0] << 16) + (parts[1] << 8) + min(parts[2], 255)

    if release is None:
        try:
            fields = Path("/proc/version_signature").read_text().split()
            if len(fields) >= 3 and (kver := encode(fields[2])):
                return kver
        except OSError:
            pass
        uts = os.uname()
        release, version = uts.release, uts.version
    if version and "Debian " in version and (kver := encode(version.split("Debian ", 1)[1])):
        return kver
    return encode(release)


def has_bpf_cookie() -> bool:
    """libbpf's probe: a tracepoint program calling bpf_get_attach_cookie loads."""
    insns = struct.pack("<BBhi", 0x85, 0, 0, BPF_FUNC_GET_ATTACH_COOKIE) + \
        struct.pack("<BBhi", 0x95, 0, 0, 0)
    try:
        fd, _ = syscalls.prog_load(syscalls.BPF_PROG_TYPE_TRACEPOINT, insns, "GPL",
                                   "ebpfwire_probe")
    except syscalls.BpfSyscallError:
        return False
    os.close(fd)
    return True


def has_syscall_wrapper() -> bool:
    """libbpf's probe: a kprobe on ``__<arch>_sys_bpf`` can be made (through the kprobe PMU,
    else tracefs ``kprobe_events``); no kprobe support at all means False."""
    prefix = SYSCALL_PREFIX.get(platform.machine())
    if prefix is None:
        return False
    name = f"__{prefix}_sys_bpf"
    pmu = Path("/sys/bus/event_source/devices/kprobe/type")
    if pmu.exists():
        return _kprobe_perf_event(int(pmu.read_text()), name)
    for tracefs in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        events = Path(tracefs) / "kprobe_events"
        if events.exists():
            probe = f"ebpfwire_probe_{os.getpid()}"
            try:
                with events.open("a") as out:
                    out.write(f"p:kprobes/{probe} {name}\n")
            except OSError:
                return False
            with events.open("a") as out:
                out.write(f"-:kprobes/{probe}\n")
            return True
    return False


def _kprobe_perf_event(pmu_type: int, func: str) -> bool:
    """A kprobe perf event on ``func`` opens (and is closed again)."""
    name = ctypes.create_string_buffer(func.encode())
    attr = ctypes.create_string_buffer(112)  # PERF_ATTR_SIZE_VER5
    struct.pack_into("<II", attr, 0, pmu_type, len(attr))
    struct.pack_into("<Q", attr, 56, ctypes.addressof(name))  # config1: kprobe_func
    ret = syscalls._libc.syscall(syscalls._nr("perf_event_open"), attr, os.getpid(), -1, -1,
                                 syscalls.PERF_FLAG_FD_CLOEXEC)
    if ret < 0:
        return False
    os.close(ret)
    return True


def read_config(path: str | Path | None = None) -> tuple[str, list[str]]:
    """(where, lines) of the kernel config: ``path`` (plain or gzip), else
    ``/boot/config-<release>``, else ``/proc/config.gz``."""
    candidates = ([Path(path)] if path is not None else
                  [Path(f"/boot/config-{os.uname().release}"), Path("/proc/config.gz")])
    for cand in candidates:
        try:
            raw = cand.read_bytes()
        except OSError as exc:
            if path is not None:
                raise LoaderError(f"cannot read the kernel config {cand}: {exc.strerror}",
                                  exc.errno) from exc
            continue
        if raw[:2] == b"\x1f\x8b":
            import gzip  # here: only a compressed config needs it

            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as exc:
                raise LoaderError(f"{cand}: not a readable gzip file: {exc}") from exc
        return str(cand), raw.decode("utf-8", "replace").splitlines()
    raise LoaderError("CONFIG_* externs need the kernel config: neither "
                      f"{candidates[0]} nor {candidates[1]} is readable (give one with "
                      "Object.open(..., kconfig=PATH))", errno.ENOENT)


def _set_number(ext: Extern, data: bytearray, value: int, where: str) -> None:
    if ext.kcfg not in ("int", "char", "bool"):
        raise LoaderError(f"{where}: value {value} needs an integer, char or bool extern, "
                          f"{ext.name!r} is {ext.kcfg}")
    if ext.kcfg == "bool" and value > 1:
        raise LoaderError(f"{where}: value {value} is no bool, for {ext.name!r}")
    bits = ext.size * 8
    if ext.size < 8 and not (
        (value + (1 << (bits - 1))) & ((1 << 64) - 1) < 1 << bits if ext.signed
        else value >> bits == 0
    ):
        raise LoaderError(f"{where}: value {value} does not fit {ext.name!r} ({ext.size} "
                          "bytes)")
    data[ext.offset : ext.offset + ext.size] = (value & ((1 << bits) - 1)).to_bytes(
        ext.size, "little")
    ext.is_set = True


def _config_line(ext: Extern, data: bytearray, value: str, where: str) -> None:
    """Set ``ext`` from a config line's value, by libbpf's rules."""
    if value[0] in "ynm":
        if ext.kcfg == "bool":
            if value[0] == "m":
                raise LoaderError(f"{where}: 'm' needs a tristate or char extern, {ext.name!r} "
                                  "is a bool")
            data[ext.offset] = value[0] == "y"
        elif ext.kcfg == "tristate":
            data[ext.offset : ext.offset + ext.size] = TRISTATE[value[0]].to_bytes(
                ext.size, "little")
        elif ext.kcfg == "char":
            data[ext.offset] = ord(value[0])
        else:
            raise LoaderError(f"{where}: {value[0]!r} needs a bool, tristate or char extern, "
                              f"{ext.name!r} is {ext.kcfg}")
        ext.is_set = True
    elif value[0] == '"':
        if ext.kcfg != "char_arr":
            raise LoaderError(f"{where}: a string needs a char array extern, {ext.name!r} "
                              f"is {ext.kcfg}")
        if len(value) < 2 or value[-1] != '"':
            raise LoaderError(f"{where}: string {value} has no closing quote")
        raw = value[1:-1].encode()[: ext.size - 1]
        data[ext.offset : ext.offset + ext.size] = raw.ljust(ext.size, b"\0")
        ext.is_set = True
    else:
        number = _strtoull(value)
        if number is None:
            raise LoaderError(f"{where}: {value!r} is not an integer")
        if ext.kcfg not in ("int", "char"):
            raise LoaderError(f"{where}: {value!r} needs an integer extern, {ext.name!r} is "
                              f"{ext.kcfg}")
        _set_number(ext, data, number, where)


def _strtoull(text: str) -> int | None:
    """C's strtoull(text, &end, 0) over the whole text (0x: hex, 0: octal, '-' wraps)."""
    body = text.lstrip()
    neg = body.startswith("-")
    body = body[1:] if body[:1] in "+-" else body
    if body[:2].lower() == "0x":
        digits, base = body[2:], 16
    elif body.startswith("0") and len(body) > 1:
        digits, base = body[1:], 8
    else:
        digits, base = body, 10
    try:
        value = int(digits, base) if digits.isalnum() else None
    except ValueError:
        return None
    if value is None or value >> 64:
        return None
    return -value & ((1 << 64) - 1) if neg else value


def resolve_kconfig(externs: list[Extern], data: bytearray,
                    config: str | Path | None = None) -> None:
    """Fill ``data`` (the .kconfig map's value); a strong extern left unset is an error."""
    kcfg = [e for e in externs if e.section == KCONFIG_SEC]
    data[:] = bytes(len(data))  # nothing kept from a call that failed
    for ext in kcfg:
        ext.is_set = False
    need_config = False
    for ext in kcfg:
        where = f"extern {ext.name!r}"
        if ext.name.startswith("CONFIG_"):
            need_config = True
        elif ext.name == "LINUX_KERNEL_VERSION":
            value = kernel_version()
            if not value:
                raise LoaderError(f"{where}: cannot tell the kernel version from uname's "
                                  f"release {os.uname().release!r}")
            _set_number(ext, data, value, where)
        elif ext.name == "LINUX_HAS_BPF_COOKIE":
            _set_number(ext, data, int(has_bpf_cookie()), where)
        elif ext.name == "LINUX_HAS_SYSCALL_WRAPPER":
            _set_number(ext, data, int(has_syscall_wrapper()), where)
        elif not ext.name.startswith("LINUX_") or not ext.weak:
            raise LoaderError(f"{where}: not a value the loader knows (CONFIG_*, "
                              "LINUX_KERNEL_VERSION, LINUX_HAS_BPF_COOKIE, "
                              "LINUX_HAS_SYSCALL_WRAPPER; other LINUX_* only __weak)")
    source = "the kernel config"
    if need_config:
        source, lines = read_config(config)
        by_name = {e.name: e for e in kcfg}
        for n, line in enumerate(lines, 1):
            if not line.startswith("CONFIG_"):
                continue
            name, sep, value = line.partition("=")
            where = f"{source} line {n}"
            if not sep or not value:
                raise LoaderError(f"{where}: {line!r} has no value")
            ext = by_name.get(name)
            if ext is not None and not ext.is_set:
                _config_line(ext, data, value, where)
    for ext in kcfg:
        if not ext.is_set and not ext.weak:
            raise LoaderError(f"extern {ext.name!r} (.kconfig) is not set in {source}: "
                              "declare it __weak to let it default to 0")


# ---- .ksyms ------------------------------------------------------------------------


def read_kallsyms(externs: list[Extern], path: Path = KALLSYMS) -> None:
    """Addresses of the untyped ksyms from ``/proc/kallsyms`` (an ambiguous one is an
    error, as for libbpf)."""
    wanted = {e.name: e for e in externs
              if e.section == KSYMS_SEC and not e.is_func and not e.type_id}
    try:
        text = path.read_text()
    except OSError as exc:
        raise LoaderError(f"untyped ksyms need {path}: {exc.strerror}", exc.errno) from exc
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        name = parts[2]
        if parts[1] == "d" and ".llvm." in name:
            name = name.split(".llvm.", 1)[0]
        ext = wanted.get(name)
        if ext is None:
            continue
        addr = int(parts[0], 16)
        if ext.is_set and ext.addr != addr:
            raise LoaderError(f"extern {name!r} (.ksyms): ambiguous in {path}: 0x{ext.addr:x} "
                              f"or 0x{addr:x}")
        ext.addr, ext.is_set = addr, True


@dataclass
class Externs:
    """An object's externs, resolved once for all its programs."""

    spec: ObjectSpec
    items: list[Extern]
    fd_array: list[int] = field(default_factory=list)  # [0, module BTF fds...] for kfuncs

    def by_name(self) -> dict[str, Extern]:
        return {e.name: e for e in self.items}

    def resolve_ksyms(self, kernel: KernelBtf) -> None:
        """Typed ksyms and kfuncs from the kernel's BTF, untyped ones from kallsyms
        (again on each call: nothing is kept from a call that failed)."""
        self.fd_array.clear()
        ksyms = [e for e in self.items if e.section == KSYMS_SEC]
        for ext in ksyms:
            ext.is_set, ext.addr, ext.kernel_btf_id, ext.btf_obj_fd, ext.fd_index = (
                False, 0, 0, 0, 0)
        if any(not e.is_func and not e.type_id for e in ksyms):
            read_kallsyms(ksyms)
        modules: dict[str, int] = {}
        for ext in ksyms:
            if ext.is_func:
                self._kfunc(ext, kernel, modules)
            elif ext.type_id:
                self._typed(ext, kernel)
        for ext in ksyms:
            if not ext.is_set and not ext.weak:
                where = ("/proc/kallsyms" if not ext.is_func and not ext.type_id
                         else "the kernel's BTF (vmlinux and modules)")
                raise LoaderError(f"extern {ext.name!r} ({ext.kind_name}) is not in {where}: "
                                  "declare it __weak to let it default to 0")

    def _typed(self, ext: Extern, kernel: KernelBtf) -> None:
        from ebpfwire.kernel.core import types_compatible  # here: objects without ksyms skip it

        found = kernel.find(ext.name, (BtfKind.VAR,))
        if found is None:
            return
        local = self.spec.btf
        target = found.btf.resolve(found.btf.type(found.type_id).size_or_type)
        if not types_compatible(local, ext.type_id, found.btf, target):
            raise LoaderError(
                f"extern {ext.name!r} (ksym): its type [{ext.type_id}] "
                f"{local.kind(ext.type_id).name} {local.type(ext.type_id).name!r} does not "
                f"match the kernel's [{target}] {found.btf.kind(target).name} "
                f"{found.btf.type(target).name!r}"
            )
        ext.is_set, ext.kernel_btf_id = True, found.type_id
        ext.btf_obj_fd = kernel.module_fd(found.module) if found.module else 0

    def _kfunc(self, ext: Extern, kernel: KernelBtf, modules: dict[str, int]) -> None:
        from ebpfwire.kernel.core import types_compatible  # here: as in _typed

        found = kernel.find(essential_name(ext.name), (BtfKind.FUNC,))
        if found is None:
            return
        proto = found.btf.type(found.type_id).size_or_type
        if not types_compatible(self.spec.btf, ext.type_id, found.btf, proto):
            if ext.weak:
                return
            where = found.module.name if found.module else "vmlinux"
            raise LoaderError(f"extern {ext.name!r} (kfunc): its prototype [{ext.type_id}] "
                              f"does not match {where}'s [{proto}]")
        if found.module is not None:
            name = found.module.name
            if name not in modules:
                if not self.fd_array:
                    self.fd_array.append(0)  # index 0 is vmlinux
                modules[name] = len(self.fd_array)
                self.fd_array.append(kernel.module_fd(found.module))
            ext.fd_index = modules[name]
        ext.is_set, ext.kernel_btf_id = True, found.type_id

    def fix_btf(self, blob: bytes) -> bytes:
        """The object's BTF as the kernel takes it: extern VARs made allocated, .kconfig
        offsets set, .ksyms entries made 4-byte ints and kfunc FUNCs global behind a
        ``dummy_ksym`` VAR (their unnamed parameters named after it), as libbpf does."""
        btf = self.spec.btf
        out = bytearray(blob)
        by_name = self.by_name()
        hdr = btf.header
        types_end = hdr.hdr_len + hdr.type_off + hdr.type_len
        strings_at = hdr.hdr_len + hdr.str_off
        dummy_id, dummy_name = len(btf), hdr.str_len
        int_id = next((t for t in range(1, len(btf)) if btf.kind(t) == BtfKind.INT
                       and btf.type(t).detail & 0xFF == 32), 0)
        add_dummy = False
        for sec_name in (KCONFIG_SEC, KSYMS_SEC):
            ids = btf.ids_named(sec_name, (BtfKind.DATASEC,))
            if not ids:
                continue
            sec_at = btf.record_offset(ids[0])
            entries = btf.type(ids[0]).detail
            if sec_name == KCONFIG_SEC:  # the kernel wants them by offset
                entries = sorted(entries, key=lambda info: by_name[btf.type(info.type).name]
                                 .offset if btf.type(info.type).name in by_name else -1)
            for i, info in enumerate(entries):
                at_info = sec_at + 12 + 12 * i
                var = btf.type(info.type)
                ext = by_name.get(var.name)
                if ext is None:
                    raise LoaderError(f"{self.spec.origin}: {sec_name} lists {var.name!r}, "
                                      "which is no extern symbol")
                var_at = btf.record_offset(info.type)
                if sec_name == KCONFIG_SEC:
                    struct.pack_into("<I", out, var_at + 12, BTF_VAR_GLOBAL_ALLOCATED)
                    struct.pack_into("<III", out, at_info, info.type, ext.offset, info.size)
                elif ext.is_func:
                    add_dummy = True
                    proto = btf.type(var.size_or_type)
                    proto_at = btf.record_offset(var.size_or_type)
                    for j, param in enumerate(proto.detail):
                        if param.type and not param.name_off:
                            struct.pack_into("<I", out, proto_at + 12 + 8 * j, dummy_name)
                    info_word = (var.info & ~0xFFFF) | BTF_FUNC_GLOBAL
                    struct.pack_into("<I", out, var_at + 4, info_word)
                    struct.pack_into("<III", out, at_info, dummy_id, 4 * i, 4)
                else:
                    struct.pack_into("<I", out, var_at + 8, int_id)
                    struct.pack_into("<I", out, var_at + 12, BTF_VAR_GLOBAL_ALLOCATED)
                    struct.pack_into("<III", out, at_info, info.type, 4 * i, 4)
            size = (max(e.offset + e.size for e in self.items if e.section == KCONFIG_SEC)
                    if sec_name == KCONFIG_SEC else 4 * len(entries))
            struct.pack_into("<I", out, sec_at + 8, size)
        if not add_dummy:
            return bytes(out)
        var = struct.pack("<IIII", dummy_name, BtfKind.VAR << 24, int_id,
                          BTF_VAR_GLOBAL_ALLOCATED)
        types = bytes(out[hdr.hdr_len + hdr.type_off : types_end]) + var
        strings = bytes(out[strings_at : strings_at + hdr.str_len]) + DUMMY_KSYM.encode() + b"\0"
        header = bytearray(out[: hdr.hdr_len])
        struct.pack_into("<IIII", header, 8, 0, len(types), len(types), len(strings))
        return bytes(header) + types + strings
