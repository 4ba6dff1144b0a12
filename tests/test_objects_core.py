"""CO-RE relocation and BTF-typed tracing programs through the object API, live."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest
from test_objects import assert_gone, build, ours

from ebpfwire.kernel.btf import Btf, essential_name
from ebpfwire.kernel.objects import Object

SEEN = struct.Struct("<8IQII")  # struct seen of objects_core.bpf.c


@pytest.fixture(scope="module")
def objdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("objects_core")


def test_essential_name_drops_the_flavor():
    assert essential_name("task_struct___mine") == "task_struct"
    assert essential_name("a___b___c") == "a___b"
    assert essential_name("task_struct") == "task_struct"
    assert essential_name("x____y") == "x____y"  # ____ is no separator


@pytest.mark.live
def test_core_reads_the_right_values_through_a_wrong_layout(objdir: Path):
    path = build(objdir, "objects_core")
    with Object.open(path) as obj:
        obj.globals["target_tgid"] = os.getpid()
        obj.load(["report"])
        obj.attach()
        reader = obj.ring_buffer("events")
        os.getppid()
        rec = reader.read(timeout=5)
        ids = ours(obj)
    assert_gone(ids)
    (pid, tgid, ppid, pid_size, has_pid, has_missing, sid, has_not_there, task_size,
     task_exists, _) = SEEN.unpack(rec.data)
    assert (pid, tgid, ppid) == (os.getpid(), os.getpid(), os.getppid())
    assert (pid_size, has_pid, has_missing) == (4, 1, 0)
    assert (sid, has_not_there) == (3, 0)  # the kernel's PIDTYPE_SID, not our 70
    assert (task_size, task_exists) == (Btf.vmlinux().sizeof("task_struct"), 1)


@pytest.mark.live
def test_a_reached_poisoned_read_is_refused_as_libbpf_poisons_it(objdir: Path):
    path = build(objdir, "objects_core")
    with Object.open(path) as obj:
        obj.load(keep_going=True)
        bad = obj.programs["reads_missing"]
        assert obj.programs["report"].fd is not None  # its poisoned read is dead code
        assert bad.fd is None and bad.error.errno == errno.EINVAL
        assert "invalid func unknown#195896080" in bad.log


def test_core_against_a_named_btf_file(objdir: Path):
    path = build(objdir, "objects_core")
    obj = Object.open(path, target_btf="/sys/kernel/btf/vmlinux")
    code, failures = obj._relocations()
    assert failures == {}
    assert code != obj.spec.code


@pytest.mark.live
def test_tp_btf_loads_with_its_attach_id_and_counts(objdir: Path):
    path = build(objdir, "objects_tracing")
    with Object.open(path) as obj:
        obj.globals["target_tgid"] = os.getpid()
        obj.load(["on_sys_enter"])
        obj.attach()
        for _ in range(3):
            os.getppid()
        assert obj.globals["seen"] == 3


@pytest.mark.live
@pytest.mark.parametrize("name", ["on_nanosleep", "on_file_open"])
def test_fentry_and_lsm_load_or_say_why_not(objdir: Path, name: str):
    path = build(objdir, "objects_tracing")
    with Object.open(path) as obj:
        obj.load([name], keep_going=True)
        prog = obj.programs[name]
        if prog.error is not None:
            assert prog.error.errno == errno.EPERM
            pytest.skip(str(prog.error))
        obj.attach([name])
