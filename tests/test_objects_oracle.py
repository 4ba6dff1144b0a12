"""The oracle: bpftool (libbpf) and ebpfwire load each test object; the kernel's
translated instructions of every program must be equal, map ids masked."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from test_objects import build

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.objects import Object

BPFTOOL = shutil.which("bpftool")
BPFFS = Path("/sys/fs/bpf")
OBJECTS = ["objects_globals", "objects_core", "objects_tracing", "objects_externs"]


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
    with Object.open(path) as obj:
        obj.load(list(theirs))
        ours = {n: xlated(syscalls.object_id(obj.programs[n].fd, True)) for n in theirs}
    assert theirs and ours == theirs
