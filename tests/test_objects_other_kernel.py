"""A typical libbpf tracepoint tool compiled against another kernel's vmlinux.h (Linux 6.1,
tests/bpf/linux-6.1) runs here right: `.rodata` settings, a ring buffer, and CO-RE reads
of structs laid out otherwise on the kernel the tests run on (tests/bpf/exitsnoop_61.bpf.c)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from bpf_object import compile_object, linux_61_headers
from test_objects import assert_gone, ours

from ebpfwire.kernel.btf import Btf
from ebpfwire.kernel.btfstruct import CompiledStruct
from ebpfwire.kernel.objects import Object

EXEC, EXIT = 1, 2
NOBODY = 65534


@pytest.fixture(scope="module")
def tool(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("other_kernel")
    try:
        return compile_object("exitsnoop_61", out, includes=(linux_61_headers(out),))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_the_tools_kernel_lays_its_structs_out_otherwise(tool: Path):
    """Only relocation can read them right: at the compiled offsets this kernel has
    other members."""
    theirs, here = Object.open(tool).spec.btf, Btf.vmlinux()
    for struct, member in [("task_struct", "tgid"), ("task_struct", "real_parent"),
                           ("task_struct", "start_boottime"), ("task_struct", "exit_code"),
                           ("task_struct", "nsproxy"), ("ns_common", "inum")]:
        assert theirs.member_offset(struct, member) != here.member_offset(struct, member)


def run_tool(tool: Path, settings: dict, *commands: list[str]) -> tuple[list[dict], list[int]]:
    """Load the tool with ``settings``, run each command as user nobody, child of this
    process, and return the tool's events and the children's (pid, /proc start ticks)."""
    with Object.open(tool) as obj:
        for name, value in settings.items():
            obj.globals[name] = value
        obj.load()
        obj.attach()
        reader = obj.ring_buffer("events")
        event = CompiledStruct(obj.spec.btf, obj.spec.btf.struct_id("event"))
        children = []
        for argv in commands:
            child = subprocess.Popen(argv, stdin=subprocess.PIPE, user=NOBODY)
            stat = Path(f"/proc/{child.pid}/stat").read_text()
            children.append((child.pid, int(stat.rsplit(")", 1)[1].split()[19])))
            child.communicate(b"\n")
        records = []
        while rec := reader.read(timeout=0.5):
            records.append(event.decode(rec.data))
        ids = ours(obj)
    assert_gone(ids)
    return records, children


@pytest.mark.live
def test_exec_and_exit_read_through_the_other_kernels_layout(tool: Path):
    events, [(pid, start_ticks)] = run_tool(
        tool, {"target_ppid": os.getpid()}, ["/bin/sh", "-c", "read line; exit 3"])
    assert [e["kind"] for e in events] == [EXEC, EXIT]
    mnt_ns = os.stat("/proc/self/ns/mnt").st_ino
    ticks = os.sysconf("SC_CLK_TCK")
    for e in events:
        assert (e["pid"], e["ppid"], e["uid"], e["mnt_ns"]) == (pid, os.getpid(), NOBODY, mnt_ns)
        assert e["start_boottime"] * ticks // 1_000_000_000 == start_ticks
        assert e["comm"] == "sh"
    assert events[0]["filename"] == "/bin/sh"
    assert events[1]["exit_code"] == 3 << 8  # as wait(2) gives it


@pytest.mark.live
def test_rodata_settings_choose_what_is_reported(tool: Path):
    events, [_, (failed, _)] = run_tool(
        tool, {"target_ppid": os.getpid(), "failed_only": True},
        ["/bin/sh", "-c", "read line; exit 0"], ["/bin/sh", "-c", "read line; exit 5"])
    assert [(e["kind"], e["pid"], e["exit_code"]) for e in events] == [(EXIT, failed, 5 << 8)]
