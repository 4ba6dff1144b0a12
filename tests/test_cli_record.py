"""record and info: the context a capture carries (process snapshot, containers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import BOOT, DAMAGED, ENV, HOST, _wait_for_capture, run

from ebpfwire.capture import CaptureReader, CaptureWriter, ContainerRecord, ProcessRecord
from ebpfwire.cli import record
from ebpfwire.context import ContainerInfo, ProcessInfo

EBPFWIRE = [sys.executable, "-m", "ebpfwire"]
DOCKER_ID = "ab" * 32


def _process(host_pid: int) -> ProcessInfo:
    return ProcessInfo(host_pid, 1, host_pid, 0, 4026531836, 4026531841, 0, "sh", "/bin/sh",
                       "/", ("sh",), "")


def test_info_reports_the_context_a_capture_carries(tmp_path: Path):
    path = tmp_path / "ctx.ewcap"
    with CaptureWriter(path, host=HOST, boot_time_ns=BOOT) as writer:
        for pid in (1, 2, 3):
            writer.write_process(_process(pid))
        writer.write_container(ContainerInfo(0, 0, "", "host"))
        writer.write_container(ContainerInfo(7, 8, DOCKER_ID, "docker"))
    status, out, _ = run("info", str(path))
    assert status == 0
    assert ("context:      3 processes in the snapshot, 2 namespace pairs named "
            "(docker 1, host 1)") in out
    info = json.loads(run("info", "--json", str(path))[1])
    assert info["context"] == {"processes": 3, "containers": 2,
                               "containers_by_runtime": {"docker": 1, "host": 1}}


def test_info_says_a_version_1_capture_has_no_context():
    status, out, _ = run("info", str(DAMAGED))
    assert status == 0 and "context:      none (version 1 has no context records" in out
    info = json.loads(run("info", "--json", str(DAMAGED))[1])
    assert info["context"] == {"processes": 0, "containers": 0, "containers_by_runtime": {}}


def test_appending_to_a_version_1_capture_writes_no_context(tmp_path: Path, capsys):
    path = tmp_path / "v1.ewcap"
    CaptureWriter(path, host=HOST, boot_time_ns=BOOT, version=1).close()
    size = path.stat().st_size
    with CaptureWriter(path, mode="a") as writer:
        assert record.write_context(writer) is None
    assert path.stat().st_size == size
    assert "version-1 capture holds no process or container records" in capsys.readouterr().err


def test_context_goes_right_after_the_header_and_names_this_process(tmp_path: Path):
    path = tmp_path / "ctx.ewcap"
    out = record.create_output(str(path), force=False, append=False, arch="x86_64")
    with out.writer as writer:
        resolver = record.write_context(writer)
    assert resolver is not None
    with CaptureReader(path) as reader:
        records = list(reader)
    kinds = [type(r) for r in records]
    assert kinds == sorted(kinds, key=lambda kind: kind is ContainerRecord)  # processes first
    mine = [r.info for r in records if type(r) is ProcessRecord and r.info.host_pid == os.getpid()]
    assert len(mine) == 1 and mine[0].exe == os.path.realpath(sys.executable)
    pairs = [(r.info.pid_ns, r.info.mnt_ns) for r in records if type(r) is ContainerRecord]
    assert len(pairs) == len(set(pairs)) and (0, 0) in pairs  # each pair once, the host's too


@pytest.mark.live
def test_record_writes_the_snapshot_and_info_reports_it(tmp_path: Path):
    path = tmp_path / "ctx.ewcap"
    proc = subprocess.Popen([*EBPFWIRE, "record", "-o", str(path), "--events", "close",
                             "--duration", "1"], stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for_capture(path, proc)
    with CaptureReader(path) as reader:  # the context is there before any event
        early = {type(r) for r in reader}
    assert ProcessRecord in early and ContainerRecord in early
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    with CaptureReader(path) as reader:
        pids = {r.info.host_pid for r in reader if type(r) is ProcessRecord}
    assert os.getpid() in pids and proc.pid in pids
    info = json.loads(run("info", "--json", str(path))[1])
    assert info["context"]["processes"] == len(pids) and info["context"]["containers"] >= 1
    assert info["context"]["containers_by_runtime"]["host"] >= 1  # (0, 0), own mnt ns too
