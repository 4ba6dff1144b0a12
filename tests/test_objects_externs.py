""".kconfig and .ksyms externs, kfuncs and module BTF through the object API.

Live values are checked against the kernel's own answers: uname for the version,
/proc/config.gz for CONFIG_*, /proc/kallsyms for an address, the test process for what a
kfunc returns. Module BTF is tested on a split BTF file written here: this kernel has no
modules (CONFIG_MODULES is not set, /sys/kernel/btf holds vmlinux alone).
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import platform
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from test_objects import assert_gone, build, ours
from test_objects_oracle import BPFFS, BPFTOOL

from ebpfwire.kernel import externs, syscalls
from ebpfwire.kernel.btf import Btf, BtfKind
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.kernel_btf import KernelBtf
from ebpfwire.kernel.link import BPF_PSEUDO_BTF_ID, BPF_PSEUDO_KFUNC_CALL, link
from ebpfwire.kernel.objects import BPF_F_RDONLY_PROG, Object

GETPPID = "__x64_sys_getppid" if platform.machine() == "x86_64" else None
pytestmark = pytest.mark.skipif(GETPPID is None, reason="the test object names an x86-64 "
                                "syscall symbol")


@pytest.fixture(scope="module")
def objdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("objects_externs")


def kernel_config() -> dict[str, str]:
    """CONFIG_X -> value text of the running kernel, read here without the loader."""
    lines = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode().splitlines()
    return dict(line.split("=", 1) for line in lines if line.startswith("CONFIG_"))


def uname_version() -> int:
    major, minor, patch = (int(x) for x in os.uname().release.split("-")[0].split(".")[:3])
    return (major << 16) + (minor << 8) + min(patch, 255)


def kallsyms(name: str) -> int:
    addrs = [int(line.split()[0], 16) for line in Path("/proc/kallsyms").read_text()
             .splitlines() if line.split()[2] == name]
    assert len(addrs) == 1
    return addrs[0]


def insns_of(obj: Object, prog: str) -> list[tuple[int, int, int, int]]:
    """(opcode, src_reg, off, imm) of each instruction the program was linked to."""
    code = obj.programs[prog].linked.insns
    return [(code[i], code[i + 1] >> 4, *struct.unpack_from("<hi", code, i + 2))
            for i in range(0, len(code), 8)]


@pytest.mark.live
def test_kconfig_ksyms_and_kfuncs_give_the_kernels_values(objdir: Path):
    if not Path("/proc/config.gz").exists():
        pytest.skip("no /proc/config.gz to check CONFIG_* against")
    config = kernel_config()
    path = build(objdir, "objects_externs")
    with Object.open(path) as obj:
        obj.globals["target_tgid"] = os.getpid()
        obj.load(["read_externs"])
        obj.attach(["read_externs"])
        os.getppid()
        got = {name: obj.globals[name] for name in obj.globals}
        kconfig_fd = obj.map_fds[".kconfig"]
        info = syscalls.map_info(kconfig_fd)
        with pytest.raises(syscalls.BpfSyscallError) as frozen:
            syscalls.map_update(kconfig_fd, bytes(4), bytes(info.value_size))
        with pytest.raises(LoaderError, match="set from the kernel config"):
            obj.globals["CONFIG_HZ"] = 1
        ids = ours(obj)
    assert_gone(ids)
    assert got["hits"] == 1
    # the .kconfig map as libbpf makes it: read-only to programs, frozen, named as libbpf names it
    assert info.name == "objects.kconfig" and info.map_flags & BPF_F_RDONLY_PROG
    assert frozen.value.errno == errno.EPERM
    # what the map holds (obj.globals) and what the program read from it
    assert got["LINUX_KERNEL_VERSION"] == got["kernel_version"] == uname_version()
    assert got["CONFIG_HZ"] == got["hz"] == int(config["CONFIG_HZ"])
    assert got["CONFIG_NR_CPUS"] == got["nr_cpus"] == int(config["CONFIG_NR_CPUS"])
    assert config["CONFIG_BPF_SYSCALL"] == "y" and got["CONFIG_BPF_SYSCALL"] is True
    assert got["bpf_syscall"] == 1
    assert config["CONFIG_BPF_EVENTS"] == "y" and got["CONFIG_BPF_EVENTS"] == got["bpf_events"] == 1
    assert got["CONFIG_TRACEPOINTS"] == got["tracepoints"] == ord(config["CONFIG_TRACEPOINTS"])
    local = config["CONFIG_LOCALVERSION"].strip('"').encode()
    assert bytes(got["CONFIG_LOCALVERSION"]).rstrip(b"\0") == local
    assert bytes(got["localversion"]).rstrip(b"\0") == local
    modules = config.get("CONFIG_MODULES") == "y"
    assert got["CONFIG_MODULES"] is modules and got["modules"] == modules
    assert got["CONFIG_EBPFWIRE_NOT_THERE"] == got["not_there"] == 0  # __weak, absent
    assert got["LINUX_HAS_BPF_COOKIE"] is True and got["has_cookie"] == 1  # 6.18 has it
    assert got["LINUX_HAS_SYSCALL_WRAPPER"] is externs.has_syscall_wrapper()
    # ksyms: an untyped one's address, a __weak typed one the kernel lacks is 0
    assert got["getppid_addr"] == kallsyms(GETPPID)
    assert got["no_such_var_addr"] == 0
    # kfuncs: bpf_task_from_pid found this process; a __weak missing kfunc does not exist
    assert got["task_tgid"] == got["task_pid"] == os.getpid()
    assert (got["has_task_from_pid"], got["has_no_such_kfunc"]) == (1, 0)


@pytest.mark.live
def test_syscall_wrapper_is_probed_as_libbpf_does():
    kprobe_pmu = Path("/sys/bus/event_source/devices/kprobe").exists()
    kprobe_events = any(Path(t, "kprobe_events").exists()
                        for t in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"))
    if kprobe_pmu or kprobe_events:
        # x86-64 kernels since 4.17 wrap every syscall: __x64_sys_bpf exists
        assert externs.has_syscall_wrapper() is ("__x64_sys_bpf" in Path(
            "/proc/kallsyms").read_text())
    else:  # no kprobe at all: libbpf answers 0 too
        assert externs.has_syscall_wrapper() is False


def test_kernel_version_as_libbpf_computes_it():
    assert externs.kernel_version("6.18.44-fc-v1098", "#1 SMP") == (6 << 16) + (18 << 8) + 44
    assert externs.kernel_version("5.4.300", "") == (5 << 16) + (4 << 8) + 255  # patch capped
    debian = "#1 SMP Debian 4.19.260-1 (2022-09-29)"
    assert externs.kernel_version("4.19.0-22-amd64", debian) == (4 << 16) + (19 << 8) + 255
    assert externs.kernel_version("6.1", "") == 0


@pytest.mark.live
def test_kconfig_from_a_file_the_user_names(objdir: Path, tmp_path: Path):
    path = build(objdir, "objects_externs")
    config = tmp_path / "config.gz"
    config.write_bytes(gzip.compress(
        b"# a machine without /proc/config.gz\nCONFIG_HZ=0x3e8\nCONFIG_NR_CPUS=010\n"
        b"# CONFIG_BPF_SYSCALL is not set\nCONFIG_BPF_SYSCALL=n\nCONFIG_BPF_EVENTS=m\n"
        b"CONFIG_TRACEPOINTS=m\nCONFIG_LOCALVERSION=\"-a-version-longer-than-16\"\n"
        b"CONFIG_MODULES=y\n"))
    with Object.open(path, kconfig=config) as obj:  # before load: resolved on first read
        assert obj.globals["CONFIG_HZ"] == 1000
        assert obj.globals["CONFIG_NR_CPUS"] == 8  # octal, as strtoull reads it
        assert obj.globals["CONFIG_BPF_SYSCALL"] is False
        assert obj.globals["CONFIG_BPF_EVENTS"] == 2  # TRI_MODULE
        assert obj.globals["CONFIG_TRACEPOINTS"] == ord("m")
        assert bytes(obj.globals["CONFIG_LOCALVERSION"]) == b"-a-version-long\0"  # cut to 15
        assert obj.globals["CONFIG_MODULES"] is True


@pytest.mark.parametrize(("line", "message"), [
    (b"CONFIG_BPF_SYSCALL=m", "'m' needs a tristate or char extern, 'CONFIG_BPF_SYSCALL' is a "
                              "bool"),
    (b"CONFIG_HZ=1099511627776", "does not fit 'CONFIG_HZ' \\(4 bytes\\)"),
    (b"CONFIG_HZ=y", "needs a bool, tristate or char extern, 'CONFIG_HZ' is int"),
    (b"CONFIG_HZ=12ab", "'12ab' is not an integer"),
    (b"CONFIG_LOCALVERSION=12", "needs an integer extern, 'CONFIG_LOCALVERSION' is char_arr"),
    (b"CONFIG_HZ", "has no value"),
])
def test_bad_kconfig_values_are_named_with_their_line(objdir: Path, tmp_path: Path,
                                                      line: bytes, message: str):
    path = build(objdir, "objects_externs")
    config = tmp_path / "config"
    config.write_bytes(b"CONFIG_NR_CPUS=4\n" + line + b"\n")
    with Object.open(path, kconfig=config) as obj, pytest.raises(
        LoaderError, match=f"{config} line 2: .*{message}"
    ):
        obj.globals["CONFIG_HZ"]


def test_a_strong_kconfig_extern_not_set_is_an_error(objdir: Path, tmp_path: Path):
    path = build(objdir, "objects_externs", "STRONG_KCONFIG")
    config = tmp_path / "config"
    config.write_text("CONFIG_BPF_SYSCALL=y\nCONFIG_BPF_EVENTS=y\nCONFIG_TRACEPOINTS=y\n"
                      "CONFIG_HZ=100\nCONFIG_NR_CPUS=2\nCONFIG_LOCALVERSION=\"\"\n")
    with Object.open(path, kconfig=config) as obj, pytest.raises(
        LoaderError, match=f"extern 'CONFIG_EBPFWIRE_ABSENT' \\(.kconfig\\) is not set in "
                           f"{config}: declare it __weak"
    ):
        obj.load(["read_externs"])


@pytest.mark.live
def test_a_strong_ksym_the_kernel_lacks_is_an_error(objdir: Path):
    path = build(objdir, "objects_externs", "STRONG_KSYM")
    with Object.open(path) as obj, pytest.raises(
        LoaderError, match="extern 'ebpfwire_absent_var' \\(ksym\\) is not in the kernel's BTF"
    ):
        obj.load(["read_externs"])
    assert obj.map_fds == {}


@pytest.mark.live
def test_a_reached_weak_kfunc_call_is_refused_as_libbpf_poisons_it(objdir: Path):
    path = build(objdir, "objects_externs")
    with Object.open(path) as obj:
        obj.load(["calls_missing_kfunc"], keep_going=True)
        bad = obj.programs["calls_missing_kfunc"]
        index = obj.externs.by_name()["bpf_ebpfwire_no_such_kfunc"].index
        assert bad.fd is None and bad.error.errno == errno.EINVAL
        assert f"invalid func unknown#{2002000000 + index}" in bad.log
        ids = ours(obj)
    assert_gone(ids)


@pytest.mark.live
def test_typed_percpu_ksyms_get_the_kernels_var_ids(objdir: Path):
    path = build(objdir, "objects_externs")
    vmlinux = Btf.vmlinux()
    with Object.open(path) as obj:
        obj.globals["target_tgid"] = os.getpid()
        obj.load(["reads_percpu_ksyms"], keep_going=True)
        prog = obj.programs["reads_percpu_ksyms"]
        btf_ids = {imm for op, src, _, imm in insns_of(obj, "reads_percpu_ksyms")
                   if op == 0x18 and src == BPF_PSEUDO_BTF_ID}
        assert btf_ids == {vmlinux.ids_named(n, (BtfKind.VAR,))[0]
                           for n in ("bpf_prog_active", "runqueues")}
        if prog.fd is None:
            missing = "ldimm64 failed to find the address for kernel symbol 'bpf_prog_active'"
            assert prog.error.errno == errno.ENOENT and missing in prog.log
            ids = ours(obj)
            obj.close()
            assert_gone(ids)
            pytest.skip(f"the kernel refuses typed ksyms here: {missing} (ENOENT; per-CPU "
                        "variables are in kallsyms only with CONFIG_KALLSYMS_ALL)")
        obj.attach(["reads_percpu_ksyms"])
        os.getppid()
        assert obj.globals["rq_cpu"] == obj.globals["this_cpu"] >= 0
        assert obj.globals["prog_active"] >= 0
        ids = ours(obj)
    assert_gone(ids)


# ---- module BTF --------------------------------------------------------------------


def module_btf(base: Btf) -> bytes:
    """Split BTF of a made-up module on top of ``base``: ``struct ebpfwire_mod_state { int
    before; long count; }``, kfunc ``int ebpfwire_mod_kfunc(int pid)``, VAR
    ``ebpfwire_mod_var``, the tracepoint typedef ``btf_trace_ebpfwire_mod_event``."""
    int_id = base.ids_named("int", (BtfKind.INT,))[0]
    long_id = base.ids_named("long int", (BtfKind.INT,))[0]
    names = ["ebpfwire_mod_state", "before", "count", "pid", "ebpfwire_mod_kfunc",
             "ebpfwire_mod_var", "btf_trace_ebpfwire_mod_event"]
    strings, at = b"\0", {}
    for name in names:
        at[name] = len(base.strings) + len(strings)
        strings += name.encode() + b"\0"
    first = len(base)
    types = b"".join([
        struct.pack("<III", at["ebpfwire_mod_state"], BtfKind.STRUCT << 24 | 2, 16),
        struct.pack("<III", at["before"], int_id, 0),
        struct.pack("<III", at["count"], long_id, 64),
        struct.pack("<III", 0, BtfKind.FUNC_PROTO << 24 | 1, int_id),  # first + 1
        struct.pack("<II", at["pid"], int_id),
        struct.pack("<III", at["ebpfwire_mod_kfunc"], BtfKind.FUNC << 24 | 1, first + 1),
        struct.pack("<IIII", at["ebpfwire_mod_var"], BtfKind.VAR << 24, int_id, 1),
        struct.pack("<III", at["btf_trace_ebpfwire_mod_event"], BtfKind.TYPEDEF << 24, int_id),
    ])
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                       len(strings)) + types + strings


def test_split_btf_continues_vmlinux(tmp_path: Path):
    vmlinux = Btf.vmlinux()
    (tmp_path / "mod").write_bytes(module_btf(vmlinux))
    mod = Btf.from_file(tmp_path / "mod", base=vmlinux)
    first = len(vmlinux)
    assert len(mod) == first + 5
    assert mod.ids_named("ebpfwire_mod_state") == [first]
    assert mod.ids_named("task_struct") == []  # a module's own types only
    assert mod.type(first + 2).name == "ebpfwire_mod_kfunc"
    assert mod.member_offset("ebpfwire_mod_state", "count") == 8
    assert mod.sizeof(first) == 16
    assert mod.type(mod.type(first).detail[0].type).name == "int"  # a vmlinux type


def test_core_externs_and_attach_against_module_btf(objdir: Path, tmp_path: Path,
                                                    monkeypatch):
    vmlinux = Btf.vmlinux()
    (tmp_path / "ebpfwire_mod").write_bytes(module_btf(vmlinux))
    first = len(vmlinux)
    fake_fd = 1000  # no such module in this kernel: its BTF object fd stands in
    monkeypatch.setattr(KernelBtf, "module_fd", lambda self, module: fake_fd)
    path = build(objdir, "objects_externs", "MODULE_BTF")
    with Object.open(path, module_btfs={"ebpfwire_mod": tmp_path / "ebpfwire_mod"}) as obj:
        kernel = obj.kernel_btf()
        assert [m.name for m in kernel.modules()] == ["ebpfwire_mod"]
        found = kernel.find("ebpfwire_mod_kfunc", (BtfKind.FUNC,))
        assert (found.type_id, found.module.name) == (first + 2, "ebpfwire_mod")
        assert kernel.find("bpf_task_from_pid", (BtfKind.FUNC,)).module is None  # vmlinux first
        obj.externs.resolve_ksyms(kernel)
        assert obj.externs.fd_array == [0, fake_fd]
        prog = obj.programs["uses_module"]
        assert obj._attach_btf_id(prog) == (first + 4, fake_fd)  # tp_btf into the module
        prog.linked = link(obj.spec, prog.spec.function, *obj._relocations(),
                           obj.externs.by_name())
        code = insns_of(obj, "uses_module")
    # CO-RE: the member's offset in the module's layout (8, not the local 0), its type id
    alu = [imm for op, _, _, imm in code if op in (0xB7, 0xB4)]
    assert 8 in alu
    lddw = [(src, imm) for op, src, _, imm in code if op == 0x18]
    assert (0, first) in lddw  # bpf_core_type_id_kernel: the module's id
    assert (BPF_PSEUDO_BTF_ID, first + 3) in lddw  # the module's VAR
    ld_at = [i for i, (op, src, _, imm) in enumerate(code)
             if op == 0x18 and src == BPF_PSEUDO_BTF_ID][0]
    assert code[ld_at + 1][3] == fake_fd  # its module's BTF fd in the second half
    calls = [(src, off, imm) for op, src, off, imm in code if op == 0x85]
    assert (BPF_PSEUDO_KFUNC_CALL, 1, first + 2) in calls  # fd_array[1] = the module


def test_module_btf_is_searched_only_where_vmlinux_has_no_candidate(tmp_path: Path):
    vmlinux = Btf.vmlinux()
    (tmp_path / "m").write_bytes(module_btf(vmlinux))
    kernel = KernelBtf(vmlinux, {"m": tmp_path / "m"})
    assert kernel.candidates("ebpfwire_mod_state")[0][1] == len(vmlinux)
    assert all(btf is vmlinux for btf, _ in kernel.candidates("task_struct"))
    with pytest.raises(LoaderError, match="'m': the running kernel holds no BTF object"):
        kernel.module_fd(kernel.modules()[0])


@pytest.mark.live
def test_kconfig_map_holds_what_libbpf_puts_there(objdir: Path):
    """The oracle for values: bpftool (libbpf) loads the object, its .kconfig map's bytes
    equal ours (layout and every value, LINUX_HAS_* probes included)."""
    if BPFTOOL is None:
        pytest.skip("bpftool not installed: no oracle")
    if not BPFFS.is_dir():
        pytest.skip(f"no {BPFFS}: bpftool cannot pin")
    path = build(objdir, "objects_externs", "ORACLE")
    pins = BPFFS / f"ebpfwire-externs-{uuid.uuid4().hex[:12]}"
    subprocess.run([BPFTOOL, "prog", "loadall", str(path), str(pins)], capture_output=True,
                   text=True, check=True)
    try:
        prog = next(pins.iterdir())
        info = json.loads(subprocess.run([BPFTOOL, "-j", "prog", "show", "pinned", str(prog)],
                                         capture_output=True, text=True, check=True).stdout)
        theirs = None
        for map_id in info["map_ids"]:
            dump = json.loads(subprocess.run([BPFTOOL, "-j", "map", "dump", "id", str(map_id)],
                                             capture_output=True, text=True, check=True).stdout)
            shown = json.loads(subprocess.run([BPFTOOL, "-j", "map", "show", "id", str(map_id)],
                                              capture_output=True, text=True, check=True).stdout)
            if shown["name"].endswith(".kconfig"):
                theirs = (shown["name"], bytes(int(b, 16) for b in dump[0]["value"]))
    finally:
        shutil.rmtree(pins)
    with Object.open(path) as obj:
        obj.load()
        fd = obj.map_fds[".kconfig"]
        ours_ = (syscalls.map_info(fd).name, syscalls.map_lookup(fd, bytes(4),
                                                                 syscalls.map_info(fd).value_size))
    assert theirs is not None and ours_ == theirs
