"""The oracle: bpftool (libbpf) and ebpfwire load each test object; the kernel's
translated instructions of every program must be equal, map ids masked."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from bpf_object import compile_object, linux_61_headers

import ebpfwire
from ebpfwire.kernel import syscalls
from ebpfwire.kernel.objects import Object

BPFTOOL = shutil.which("bpftool")
BPFFS = Path("/sys/fs/bpf")
OBJECTS = ["objects_globals", "objects_core", "objects_tracing", "objects_probes",
           "objects_maps", "objects_pinning", "objects_externs",
           "objects_hidden", "exitsnoop_61",
           # the objects of the other tests: the bundled monitor's tools, `run`'s
           "bootstrap", "btf_events", "global_data", "perf_tool", "ringbuf_test", "subprogram",
           "syscall_latency",
           # the objects the package ships, as they are (not monitor-ringbuf.bpf.o: its ring
           # buffer is sized by the loader, libbpf refuses it as shipped)
           "monitor.bpf.o", "stats.bpf.o"]
# the objects compiled against another kernel's vmlinux.h: its directory, made in tmp_path
HEADERS = {"exitsnoop_61": linux_61_headers}
BUNDLED = Path(ebpfwire.__file__).parent / "data"


def build(tmp_path: Path, name: str, *defines: str) -> Path:
    if name.endswith(".o"):
        return BUNDLED / name
    includes = (HEADERS[name](tmp_path),) if name in HEADERS else ()
    try:
        return compile_object(name, tmp_path, *defines, includes=includes)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def xlated(prog_id: int) -> str:
    out = subprocess.run([BPFTOOL, "prog", "dump", "xlated", "id", str(prog_id)],
                         capture_output=True, text=True, check=True).stdout
    return re.sub(r"map\[id:\d+\]", "map[id:N]", out)


@pytest.mark.live
@pytest.mark.parametrize("name", OBJECTS)
def test_xlated_instructions_equal_libbpfs(tmp_path: Path, name: str):
    if BPFTOOL is None:
        pytest.skip("bpftool not installed: no oracle")
    if not BPFFS.is_dir() or not any(
        line.split()[1] == str(BPFFS) for line in Path("/proc/mounts").read_text().splitlines()
    ):
        pytest.skip("bpffs not mounted on /sys/fs/bpf: bpftool cannot pin")
    path = build(tmp_path, name)
    oracle = build(tmp_path, name, "ORACLE")  # without the programs that must fail
    pins = BPFFS / f"ebpfwire-oracle-{uuid.uuid4().hex[:12]}"
    # maps pinned by name go to libbpf's default directory: ours, by both loaders
    map_pins = [BPFFS / m.name for m in Object.open(path).maps.values() if m.pinning]
    assert not [p for p in map_pins if p.exists()], "map pins left by an earlier run"
    subprocess.run([BPFTOOL, "prog", "loadall", str(oracle), str(pins)],
                   capture_output=True, text=True, check=True)
    try:
        theirs = {}
        for pin in pins.iterdir():
            info = subprocess.run([BPFTOOL, "prog", "show", "pinned", str(pin)],
                                  capture_output=True, text=True, check=True).stdout
            theirs[pin.name] = xlated(int(info.split(":", 1)[0]))
    finally:
        shutil.rmtree(pins)
    try:
        with Object.open(path) as obj:
            obj.load(list(theirs))
            ours = {n: xlated(syscalls.object_id(obj.programs[n].fd, True)) for n in theirs}
    finally:
        for pin in map_pins:
            pin.unlink(missing_ok=True)
    assert theirs and ours == theirs
