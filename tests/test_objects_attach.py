"""Attaching what the section (or the caller) says: kprobes and ksyscalls, uprobes (PMU and
legacy tracefs), perf_event samplers, iterators, fexit/fmod_ret; every attachment a link
the program owns, nothing left in the kernel (or in tracefs) after close."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from test_objects import assert_gone, build, ours

from ebpfwire import machine
from ebpfwire.kernel import elfsym, probes, sections, syscalls, tracefs
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.objects import Object

PROBED_C = r"""
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline, noipa)) int add_them(int a, int b)
{
	return a * 10 + b;
}

int main(int argc, char **argv)
{
	if (argc > 3)
		getchar(); /* held until the test has attached */
	printf("%d\n", add_them(atoi(argv[1]), atoi(argv[2])));
	return 0;
}
"""


@pytest.fixture(scope="module")
def objdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("objects_attach")


@pytest.fixture(scope="module")
def probed(objdir: Path) -> Path:
    """A small C program whose ``add_them(a, b)`` the uprobes watch."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed: cannot build the probed program")
    src = objdir / "probed.c"
    src.write_text(PROBED_C)
    out = objdir / "probed"
    subprocess.run([gcc, "-O2", "-o", str(out), str(src)], check=True)
    return out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fake_pmu(root: Path, kind: str, pmu_type: int, retprobe: str) -> None:
    (root / kind / "format").mkdir(parents=True)
    (root / kind / "type").write_text(f"{pmu_type}\n")
    (root / kind / "format" / "retprobe").write_text(f"{retprobe}\n")


# ---- plans, without the kernel ------------------------------------------------------------


def test_a_probe_plan_through_the_pmu_takes_its_type_and_retprobe_bit(tmp_path: Path):
    fake_pmu(tmp_path, "kprobe", 6, "config:0")
    fake_pmu(tmp_path, "uprobe", 7, "config:3")
    entry = probes.plan_probe("kprobe", "do_nanosleep", 0, False, pmu_root=tmp_path)
    ret = probes.plan_probe("kprobe", "do_nanosleep", 0, True, pmu_root=tmp_path)
    uret = probes.plan_probe("uprobe", "/bin/true", 0x1139, True, 42, pmu_root=tmp_path)
    assert (entry.pmu_type, entry.config, entry.events_file) == (6, 0, None)
    assert (ret.pmu_type, ret.config) == (6, 1)
    assert (uret.pmu_type, uret.config, uret.pid, uret.offset) == (7, 1 << 3, 42, 0x1139)
    assert uret.describe() == "uretprobe /bin/true:0x1139 of pid 42"


def test_a_pmu_retprobe_format_it_cannot_read_is_named(tmp_path: Path):
    fake_pmu(tmp_path, "kprobe", 6, "config1:0")
    with pytest.raises(LoaderError, match=r"retprobe: expected 'config:BIT', found 'config1:0'"):
        probes.plan_probe("kprobe", "f", 0, True, pmu_root=tmp_path)


def test_without_a_pmu_the_plan_is_a_legacy_tracefs_event(tmp_path: Path):
    tracing = tmp_path / "tracing"
    tracing.mkdir()
    (tracing / "kprobe_events").write_text("")
    (tracing / "uprobe_events").write_text("")
    kret = probes.plan_probe("kprobe", "do_nanosleep", 0x10, True, pmu_root=tmp_path,
                             tracing=tracing)
    up = probes.plan_probe("uprobe", "/bin/true", 0x1139, False, pmu_root=tmp_path,
                           tracing=tracing)
    assert kret.pmu_type is None and kret.events_file == tracing / "kprobe_events"
    assert kret.event.startswith(f"kprobes/ebpfwire_{os.getpid()}_")
    assert kret.event_line == f"r:{kret.event} do_nanosleep+0x10"
    assert up.event_line == f"p:{up.event} /bin/true:0x1139"
    assert up.event != kret.event.replace("kprobes", "uprobes")  # each event its own name


def test_with_neither_the_error_says_what_was_looked_for(tmp_path: Path):
    with pytest.raises(LoaderError) as exc:
        probes.plan_probe("kprobe", "do_nanosleep", 0, False, pmu_root=tmp_path,
                          tracing=tmp_path)
    assert str(exc.value) == (
        f"cannot attach kprobe do_nanosleep+0x0: no kprobe PMU ({tmp_path}/kprobe/type: No "
        f"such file or directory); no legacy kprobe_events ({tmp_path}/kprobe_events: No "
        "such file or directory)"
    )
    assert exc.value.errno == errno.ENOENT


@pytest.mark.parametrize(("text", "expected"), [
    ("do_nanosleep", ("do_nanosleep", 0)),
    ("do_nanosleep+16", ("do_nanosleep", 16)),
    ("add_them+0x1c", ("add_them", 0x1c)),
    ("0x1139", ("", 0x1139)),
    ("4409", ("", 4409)),
])
def test_probe_targets_split_into_function_and_offset(text: str, expected: tuple[str, int]):
    assert probes.split_target(text, "t") == expected


def test_a_malformed_probe_target_is_refused():
    with pytest.raises(LoaderError, match=r"s: expected FUNCTION, FUNCTION\+OFFSET or OFFSET, "
                                          r"found 'f\+x'"):
        probes.split_target("f+x", "s")


def test_ksyscall_names_the_arch_wrapper_where_the_kernel_has_one(tmp_path: Path):
    wrapped = tmp_path / "wrapped"
    wrapped.write_text("ffffffff814f1d10 T __x64_sys_bpf\nffffffff813828f0 T sys_ni\n")
    bare = tmp_path / "bare"
    bare.write_text("ffffffff814f1d10 T __se_sys_bpf\n")
    assert probes.syscall_function("getppid", wrapped, "x86_64") == "__x64_sys_getppid"
    assert probes.syscall_function("getppid", bare, "x86_64") == "__se_sys_getppid"
    with pytest.raises(LoaderError, match="no syscall wrapper prefix known for 'mips'"):
        probes.syscall_function("getppid", wrapped, "mips")


def test_sections_say_how_each_kind_attaches():
    kinds = {s: sections.program_kind(s) for s in (
        "kprobe/do_nanosleep", "kretprobe/do_nanosleep", "ksyscall/getppid",
        "kretsyscall/getppid", "uprobe", "uretprobe/libc.so.6:getppid", "perf_event",
        "iter/task", "uprobe.s/libc.so.6:getppid", "usdt/libc.so.6:libc:setjmp",
        "kprobe.multi/do_*",
    )}
    assert {s: (k.attach, target) for s, (k, target) in kinds.items()} == {
        "kprobe/do_nanosleep": ("kprobe", "do_nanosleep"),
        "kretprobe/do_nanosleep": ("kretprobe", "do_nanosleep"),
        "ksyscall/getppid": ("ksyscall", "getppid"),
        "kretsyscall/getppid": ("kretsyscall", "getppid"),
        "uprobe": ("uprobe", ""),
        "uretprobe/libc.so.6:getppid": ("uretprobe", "libc.so.6:getppid"),
        "perf_event": ("perf_event", ""),
        "iter/task": ("iter", "task"),
        "uprobe.s/libc.so.6:getppid": ("uprobe", "libc.so.6:getppid"),
        "usdt/libc.so.6:libc:setjmp": ("", "libc.so.6:libc:setjmp"),  # loaded, not attached
        "kprobe.multi/do_*": ("", "do_*"),
    }
    assert kinds["uprobe.s/libc.so.6:getppid"][0].flags == sections.BPF_F_SLEEPABLE
    assert kinds["kprobe.multi/do_*"][0].expected_attach_type == sections.BPF_TRACE_KPROBE_MULTI


def test_a_bare_uprobe_waits_for_attach_uprobe(objdir: Path):
    obj = Object.open(build(objdir, "objects_probes"))
    assert not obj.programs["on_add"].auto_attach
    assert obj.programs["on_libc_getppid"].auto_attach
    assert obj.programs["list_tasks"].auto_attach


def test_a_function_maps_to_its_file_offset(probed: Path):
    from elftools.elf.elffile import ELFFile

    offset = elfsym.symbol_offset(probed, "add_them")
    with open(probed, "rb") as f:  # the same bytes found through the section headers
        elf = ELFFile(f)
        sym = elf.get_section_by_name(".symtab").get_symbol_by_name("add_them")[0]
        text = elf.get_section_by_name(".text")
        start = sym["st_value"] - text["sh_addr"]
        body = text.data()[start : start + sym["st_size"]]
    assert probed.read_bytes()[offset : offset + len(body)] == body
    with pytest.raises(LoaderError, match=r"probed: no function 'nope' defined in \.symtab"):
        elfsym.symbol_offset(probed, "nope")
    with pytest.raises(LoaderError, match=r"probed.c: not an ELF file"):
        elfsym.symbol_offset(probed.with_suffix(".c"), "add_them")
    assert elfsym.resolve_binary("libc.so.6").endswith("/libc.so.6")
    with pytest.raises(LoaderError, match=r"uprobe target 'libnope.so': not found"):
        elfsym.resolve_binary("libnope.so")


# ---- live -------------------------------------------------------------------------------


@pytest.mark.live
def test_kprobes_and_ksyscalls_load_and_attach_or_say_why_not(objdir: Path):
    names = ["on_nanosleep", "on_nanosleep_ret", "on_getppid_syscall", "on_getppid_syscall_ret"]
    fds = open_fds()
    with Object.open(build(objdir, "objects_probes")) as obj:
        obj.globals["target_tgid"] = os.getpid()
        obj.load(names)
        ids = ours(obj)
        try:
            obj.attach(names)
        except LoaderError as exc:
            reason = exc
        else:
            reason = None
            time.sleep(0.001)
            os.getppid()
            assert obj.globals["kprobe_calls"] >= 1
            assert obj.globals["kretprobe_calls"] >= 1
            assert obj.globals["ksyscall_calls"] == 101
    assert_gone(ids)
    assert open_fds() == fds
    if reason is not None:
        assert "no kprobe PMU (/sys/bus/event_source/devices/kprobe/type: " in str(reason)
        assert "kprobe_events" in str(reason)
        pytest.skip(f"loaded; attach refused here: {reason}")


def run_probed(probed: Path, a: int, b: int, hold: bool = False) -> subprocess.Popen:
    args = [str(probed), str(a), str(b)] + (["hold"] if hold else [])
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


@pytest.mark.live
def test_uprobe_and_uretprobe_see_the_argument_and_the_return_value(objdir: Path,
                                                                   probed: Path):
    fds = open_fds()
    held = run_probed(probed, 4, 2, hold=True)
    try:
        with Object.open(build(objdir, "objects_probes")) as obj:
            obj.globals["target_tgid"] = held.pid
            obj.load(["on_add", "on_add_ret"])
            entry = obj.programs["on_add"].attach_uprobe(str(probed), "add_them", pid=held.pid)
            ret = obj.programs["on_add_ret"].attach_uprobe(str(probed), "add_them",
                                                           pid=held.pid)
            assert obj.programs["on_add"].links == [entry]
            assert "uretprobe" in ret.what
            other = run_probed(probed, 7, 7)  # another process: the pid filter leaves it out
            assert other.communicate(timeout=30)[0] == "77\n"
            assert obj.globals["add_any"] == 0
            assert held.communicate("\n", timeout=30)[0] == "42\n"
            assert obj.globals["add_any"] == 1
            assert (obj.globals["add_calls"], obj.globals["add_a"], obj.globals["add_b"]) == (
                1, 4, 2)
            assert (obj.globals["add_ret_calls"], obj.globals["add_ret"]) == (1, 42)
            ids = ours(obj)
    finally:
        held.kill()
        held.wait()
    assert_gone(ids)
    assert open_fds() == fds


@pytest.mark.live
def test_a_uprobe_section_attaches_to_the_library_it_names(objdir: Path):
    fds = open_fds()
    with Object.open(build(objdir, "objects_probes")) as obj:
        obj.globals["target_tgid"] = os.getpid()
        names = ["on_libc_getppid", "on_libc_getppid_ret"]
        obj.load(names)
        obj.attach(names)
        ppids = {os.getppid() for _ in range(3)}
        assert obj.globals["getppid_calls"] == 3
        assert {obj.globals["getppid_ret"]} == ppids
        obj.programs["on_libc_getppid"].detach()  # detached, still loaded
        assert obj.programs["on_libc_getppid"].links == []
        os.getppid()
        assert obj.globals["getppid_calls"] == 3
        ids = ours(obj)
    assert_gone(ids)
    assert open_fds() == fds


@pytest.mark.live
def test_a_legacy_tracefs_uprobe_event_works_and_is_removed(objdir: Path, probed: Path,
                                                           monkeypatch, tmp_path: Path):
    monkeypatch.setattr(probes, "PMU_ROOT", tmp_path)  # as on a kernel without the PMU
    events = tracefs.tracefs_root() / "uprobe_events"
    if not events.is_file():
        pytest.skip(f"{events} missing: this kernel has no legacy uprobe events")
    fds = open_fds()
    with Object.open(build(objdir, "objects_probes")) as obj:
        obj.load(["on_add"])
        link = obj.programs["on_add"].attach_uprobe(str(probed), "add_them")
        (event,) = [line for line in events.read_text().splitlines()
                    if f"ebpfwire_{os.getpid()}_" in line]
        assert event.startswith("p:uprobes/ebpfwire_") and str(probed) in event
        assert run_probed(probed, 1, 2).communicate(timeout=30)[0] == "12\n"
        assert obj.globals["add_any"] >= 1
        link.close()
        assert link.closed
        ids = ours(obj)
    assert f"ebpfwire_{os.getpid()}_" not in events.read_text()
    assert_gone(ids)
    assert open_fds() == fds


@pytest.mark.live
def test_a_perf_event_program_samples_every_cpu(objdir: Path):
    fds = open_fds()
    with Object.open(build(objdir, "objects_probes")) as obj:
        obj.globals["target_tgid"] = os.getpid()
        obj.load(["on_sample"])
        link = obj.programs["on_sample"].attach_perf_event(period=1_000_000)  # 1 ms of cpu
        assert len(link.fds) == 2 * len(machine.online_cpus())  # a link + an event per CPU
        deadline = time.monotonic() + 30
        while obj.globals["samples_mine"] < 5 and time.monotonic() < deadline:
            pass  # spin: the cpu-clock samples whoever runs
        assert obj.globals["samples_mine"] >= 5
        assert obj.globals["samples"] >= obj.globals["samples_mine"]
        obj.programs["on_sample"].detach()
        stopped = obj.globals["samples"]
        for _ in range(200_000):
            pass
        assert obj.globals["samples"] == stopped
        with pytest.raises(LoaderError, match="a sample period or a frequency, not both"):
            obj.programs["on_sample"].attach_perf_event(period=1, frequency=1)
        ids = ours(obj)
    assert_gone(ids)
    assert open_fds() == fds


def load_iterator(obj: Object, name: str) -> None:
    obj.load([name], keep_going=True)
    error = obj.programs[name].error
    if error is not None:
        assert error.errno == errno.EPERM
        pytest.skip(f"this kernel refuses the iterator: {error}")


@pytest.mark.live
def test_a_task_iterator_lists_this_process(objdir: Path):
    fds = open_fds()
    with Object.open(build(objdir, "objects_probes")) as obj:
        load_iterator(obj, "list_tasks")
        prog = obj.programs["list_tasks"]
        everyone = [tuple(map(int, line.split())) for line in prog.iterate().splitlines()]
        assert (os.getpid(), os.getpid()) in everyone
        assert len({tgid for tgid, _ in everyone}) > 1
        mine = prog.attach_iter(pid=os.getpid())
        threads = [tuple(map(int, line.split())) for line in mine.read().decode().splitlines()]
        assert (os.getpid(), os.getpid()) in threads
        assert {tgid for tgid, _ in threads} == {os.getpid()}
        assert f"{os.getpid()} {os.getpid()}\n".encode() in mine.read()  # each read a pass
        ids = ours(obj)
    assert_gone(ids)
    assert open_fds() == fds


@pytest.mark.live
def test_a_map_iterator_lists_the_objects_maps(objdir: Path):
    with Object.open(build(objdir, "objects_probes")) as obj:
        load_iterator(obj, "list_maps")
        obj.attach(["list_maps"])
        (link,) = obj.programs["list_maps"].links
        listed = {int(w[1]): int(w[2]) for w in map(str.split, link.read().decode().splitlines())}
        ids = ours(obj)
        for name, fd in obj.map_fds.items():
            assert listed[syscalls.object_id(fd, False)] == obj.maps[name].max_entries
    assert_gone(ids)


@pytest.mark.live
def test_a_map_element_iterator_walks_the_map_it_is_given(objdir: Path):
    with Object.open(build(objdir, "objects_probes")) as obj:
        obj.globals["target_tgid"] = 77  # the first word of .rodata
        load_iterator(obj, "list_elements")
        link = obj.programs["list_elements"].attach_iter(map=".rodata")
        assert link.read() == b"0 77\n"
        with pytest.raises(syscalls.BpfSyscallError) as exc:  # a map element iterator
            obj.programs["list_elements"].attach_iter()      # needs its map
        assert exc.value.errno == errno.EBADF
        ids = ours(obj)
    assert_gone(ids)


@pytest.mark.live
@pytest.mark.parametrize("name", ["on_nanosleep_exit", "on_file_open_modify"])
def test_fexit_and_fmod_ret_load_and_attach_or_say_why_not(objdir: Path, name: str):
    with Object.open(build(objdir, "objects_tracing")) as obj:
        obj.globals["target_tgid"] = os.getpid()
        obj.load([name], keep_going=True)
        prog = obj.programs[name]
        if prog.error is not None:
            assert prog.error.errno == errno.EPERM
            assert "the kernel answers EPERM (Operation not permitted)" in str(prog.error)
            pytest.skip(str(prog.error))
        obj.attach([name])
        time.sleep(0.001)
        assert Path("/proc/self/stat").read_text()  # fmod_ret returning 0: the open works
        if name == "on_nanosleep_exit":
            assert obj.globals["seen"] >= 1000
        ids = ours(obj)
    assert_gone(ids)
