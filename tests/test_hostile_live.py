"""The reported attack, live: an unprivileged user writes record headers into the socket
addresses the monitor copies, while root records; every reader gives the rows decode gives.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from test_cli import ENV, _wait_for_capture

EBPFWIRE = [sys.executable, "-m", "ebpfwire"]
CONNECTS = 20_000


def _attack_as_nobody() -> int:
    """Fork a child that becomes nobody and connects 20,000 times to an abstract socket whose
    name is a capture record header claiming 1 MiB (the issue's script, without an exec: the
    interpreter under /root is not nobody's to run). Returns its pid when it is done."""
    length = 1 << 20
    head = zlib.crc32(struct.pack("<IHH", length, 1, 0))
    embedded = struct.pack("<4sIHHII", b"\xf1\xe5\x7c\xa9", length, 1, 0, head, 0)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX)
            for _ in range(CONNECTS):
                try:
                    s.connect(b"\0" + embedded + bytes(107 - len(embedded)))
                except OSError:
                    pass
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    return pid


@pytest.mark.live
def test_a_users_socket_names_forge_no_row_and_hide_none(tmp_path: Path):
    path = tmp_path / "a.ewcap"
    recorder = subprocess.Popen([*EBPFWIRE, "record", "-o", str(path), "--events",
                                 "connect,openat", "--duration", "4"],
                                stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for_capture(path, recorder)
    attacker = _attack_as_nobody()
    _, err = recorder.communicate(timeout=120)
    assert recorder.returncode == 0, err

    decoded = subprocess.run([*EBPFWIRE, "decode", "--format", "jsonl", "--raw", str(path)],
                             capture_output=True, text=True, env=ENV, check=True).stdout
    lines = [json.loads(line) for line in decoded.splitlines()]
    attacks = [e for e in lines if e.get("host_pid") == attacker and e["event"] == "connect"]
    assert len(attacks) > CONNECTS // 2   # the attack is in the capture (a loss may cut it)
    assert not any(e.get("errors") for e in lines)

    import pyarrow.parquet as pq

    from ebpfwire.arrow import to_table
    from ebpfwire.export import export_parquet

    table = to_table(path, context=False)
    assert table.num_rows == len(lines)
    for jobs in (1, 2):
        out = tmp_path / f"a{jobs}.parquet"
        summary = export_parquet(path, out, jobs=jobs, split_bytes=1 << 16)
        exported = pq.read_table(out)
        assert exported.num_rows == len(lines), jobs
        assert summary.damaged == 0
        rows = zip(exported.column("host_pid").to_pylist(), exported.column("ts").to_pylist(),
                   strict=True)
        assert sorted((pid, ts) for pid, ts in rows if ts is not None) == sorted(
            (e["host_pid"], e["ts"]) for e in lines if "lost" not in e)
