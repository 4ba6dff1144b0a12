"""Our monitor writes a NULL string as a size-0 string, not an orphan tag: a recording of
mounts with NULL data or type (unshare --mount, ip netns add) decodes and exports with
the default options, no event dropped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_cli import jsonl, run
from test_cli_record import record_held

pytestmark = pytest.mark.live

# mount(2) with NULL type and data (a bind mount) and with NULL source, type and data
# (a propagation change), in a mount namespace of their own; then `ip netns add`
_MOUNTS = r"""
import ctypes, os, subprocess, sys
sys.stdin.readline()
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_void_p]
assert libc.mount(None, b"/", None, 0x40000 | 0x4000, None) == 0   # MS_PRIVATE|MS_REC
assert libc.mount(b"/tmp", b"/mnt", None, 0x1000, None) == 0       # MS_BIND
subprocess.run(["ip", "netns", "add", "ebpfwire-null-test"], check=False)
subprocess.run(["ip", "netns", "delete", "ebpfwire-null-test"], check=False)
"""


def test_mounts_with_null_strings_export_with_the_defaults(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    path = tmp_path / "mounts.ewcap"
    _, out, err = record_held(path, ["unshare", "--mount", "--", "python3", "-c", _MOUNTS],
                              "mount,umount,execve", 0)
    assert "does not decode" not in err, err
    mounts = [e for e in jsonl(out) if e.get("event") == "mount"]
    private = [m for m in mounts if m["args"][1]["value"] == "/" and m["args"][3]["value"]]
    bind = [m for m in mounts if m["args"][1]["value"] == "/mnt"]
    assert private and bind, mounts
    # NULL source, type, data: size-0 strings, "" (a real "" has size 1)
    assert [private[0]["args"][i]["value"] for i in (0, 2, 4)] == ["", "", ""]
    assert [bind[0]["args"][i]["value"] for i in (0, 2, 4)] == ["/tmp", "", ""]
    assert all("errors" not in m for m in mounts)
    status, _, err = run("summary", str(path))
    assert status == 0 and "does not decode" not in err, err
    out_file = tmp_path / "mounts.parquet"
    status, _, err = run("export", str(path), "-o", str(out_file))
    assert status == 0, err
    import pyarrow.parquet as pq
    table = pq.read_table(out_file)
    assert table.num_rows == len([e for e in jsonl(out) if "ts" in e])
    assert json.dumps(table.column("errors").to_pylist()).count("orphan") == 0
