"""The public object API on objects written here: global data, subprograms, callbacks,
the object's BTF with line info, each program loaded on its own, nothing left after close."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
from bpf_object import compile_object

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.objects import Object


@pytest.fixture(scope="module")
def objdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("objects")


def build(objdir: Path, name: str, *defines: str) -> Path:
    try:
        return compile_object(name, objdir, *defines)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def ours(obj: Object) -> tuple[set[int], set[int]]:
    """(program ids, map ids) of what ``obj`` holds in the kernel."""
    progs = {syscalls.object_id(p.fd, True) for p in obj.programs.values() if p.fd is not None}
    return progs, {syscalls.object_id(fd, False) for fd in obj.map_fds.values()}


def assert_gone(ids: tuple[set[int], set[int]]) -> None:
    """Nothing of ``ids`` left; the kernel frees maps after an RCU grace period."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        ids[0] & set(syscalls.loaded_programs()) or ids[1] & set(syscalls.loaded_maps())
    ):
        time.sleep(0.05)
    assert not ids[0] & set(syscalls.loaded_programs())
    assert not ids[1] & set(syscalls.loaded_maps())


def test_open_lists_programs_maps_and_globals(objdir: Path):
    path = build(objdir, "objects_globals")
    obj = Object.open(path.read_bytes(), name="objects_globals")
    assert {n: p.section for n, p in obj.programs.items()} == {
        "count_getppid": "tp/syscalls/sys_enter_getppid",
        "broken": "tp/syscalls/sys_enter_getpid",
    }
    sizes = {n: (m.value_size, m.map_flags) for n, m in obj.maps.items()}
    assert sizes == {".rodata": (8, 0x80), ".data": (8, 0), ".bss": (32, 0),
                     ".rodata.str1.1": (6, 0x80)}
    assert obj.spec.data[".rodata"].map_name == "objects_.rodata"  # libbpf's naming
    assert dict(obj.globals) == {"target_tgid": 0, "loops": 4, "step": 1, "calls": 0,
                                 "total": 0, "looped": 0, "greeting": [0] * 8}
    obj.globals["loops"] = 9
    assert obj.globals["loops"] == 9
    with pytest.raises(LoaderError, match=r"global 'loops': expected an int in 0..4294967295"):
        obj.globals["loops"] = -1
    with pytest.raises(KeyError):
        obj.globals["nope"]


@pytest.mark.live
def test_globals_subprograms_and_callback_run_right(objdir: Path):
    path = build(objdir, "objects_globals")
    with Object.open(path) as obj:
        obj.globals["target_tgid"] = os.getpid()
        obj.globals["loops"] = 5
        obj.load(["count_getppid"])
        assert obj.btf_fd is not None and obj.btf_error is None
        linked = obj.programs["count_getppid"].linked
        assert [name for name, _ in linked.layout] == ["count_getppid", "add", "twice",
                                                        "sum_index"]
        assert [insn for insn, _ in linked.func_info] == [pos for _, pos in linked.layout]
        obj.attach()
        for _ in range(7):
            os.getppid()
        assert obj.globals["calls"] == 7
        assert obj.globals["total"] == 7
        assert obj.globals["looped"] == 0 + 1 + 2 + 3 + 4
        assert bytes(obj.globals["greeting"]) == b"hello\0\0\0"
        obj.globals["step"] = 10  # .data: written into the live map
        os.getppid()
        assert obj.globals["total"] == 17
        with pytest.raises(LoaderError, match=r"'target_tgid' is in \.rodata, frozen"):
            obj.globals["target_tgid"] = 1
        with pytest.raises(syscalls.BpfSyscallError) as frozen:
            syscalls.map_update(obj.map_fds[".rodata"], bytes(4), bytes(8))
        assert frozen.value.errno == errno.EPERM
        ids = ours(obj)
        assert len(ids[0]) == 1 and len(ids[1]) == 4
    assert_gone(ids)


@pytest.mark.live
def test_each_program_loads_on_its_own_with_its_source_lines(objdir: Path):
    path = build(objdir, "objects_globals")
    with Object.open(path) as obj:
        obj.load(keep_going=True)
        good, bad = obj.programs["count_getppid"], obj.programs["broken"]
        assert good.fd is not None and good.error is None
        assert bad.fd is None and bad.error.errno == errno.EACCES
        assert "invalid unbounded variable-offset read from stack" in bad.log
        assert "; return buf[i]; @ objects_globals.bpf.c:" in bad.log  # line_info
        with pytest.raises(LoaderError, match="the kernel rejected program 'broken'"):
            obj.load(["broken"])
        ids = ours(obj)
    assert_gone(ids)


@pytest.mark.live
def test_an_exception_inside_the_block_leaves_nothing(objdir: Path):
    path = build(objdir, "objects_globals")
    with pytest.raises(RuntimeError, match="boom"), Object.open(path) as obj:
        obj.load(["count_getppid"])
        obj.attach()
        ids = ours(obj)
        raise RuntimeError("boom")
    assert_gone(ids)
    with pytest.raises(LoaderError, match="the object is closed"):
        obj.load()


@pytest.mark.live
def test_a_hidden_global_function_is_verified_as_static(objdir: Path):
    """Checked on its own, ``store_pid`` would write through a pointer that may be NULL
    (the kernel refuses that); libbpf makes hidden functions static, and so do we."""
    with Object.open(build(objdir, "objects_hidden")) as obj:
        obj.globals["seen_pid"] = os.getpid()
        obj.load()
        obj.attach()
        os.getppid()
        assert obj.globals["calls"] > 0
        ids = ours(obj)
    assert_gone(ids)
