"""The process tree of a capture (``ebpfwire ps``)."""

from __future__ import annotations

import os
from pathlib import Path

from test_process import Stream

from ebpfwire.capture import CaptureReader
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.process.tree import build_tree, capture_items
from ebpfwire.wire.text import escape

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture_items(name: str) -> list:
    with CaptureReader(FIXTURES / name) as reader:
        return list(capture_items(reader))


def test_real_workload_tree() -> None:
    tree = build_tree(fixture_items("real-workload.ewcap"))
    lines = tree.lines()
    assert lines[0].startswith("[sh]  (29675)  +0.000000s..")
    children = lines[1:]
    assert len(children) == 5 and children[-1].startswith("└─")
    assert all(line.startswith(("├─[sh] → ", "└─[sh] → ")) for line in children)
    cat = [line for line in children if "/bin/cat" in line][0]
    assert "(29677)" in cat and "exited with 0" in cat and "events 36 (32 openat" in cat
    assert "exited with 3" in children[-1] and "/bin/sh -c exit 3" in children[-1]
    [root] = tree.to_json()
    assert root["host_pid"] == 29675 and root["programs"][0]["source"] == "comm"
    statuses = {child["programs"][-1]["exe"]: child["exit_status"]
                for child in root["children"]}
    assert statuses["/bin/sh"] == 768 and statuses["/bin/ls"] == 0
    assert sum(child["events"] for child in root["children"]) + root["events"] == 147


def test_parent_first_seen_after_its_child() -> None:
    # unshare's only event (its do_exit) comes after its child's: still its parent
    tree = build_tree(fixture_items("real-namespaces.ewcap"))
    [root] = tree.to_json()
    assert root["host_pid"] == 29682 and root["children"][0]["host_pid"] == 29683
    assert root["children"][0]["pid"] == 1
    assert tree.lines()[1].endswith("ns 4026532178/4026532177")


def test_filter_keeps_matching_processes_and_their_ancestors() -> None:
    items = fixture_items("real-workload.ewcap")
    tree = build_tree(items, keep=lambda event: event.name == "connect")
    [root] = tree.to_json()
    assert root["events"] == 0 and len(root["children"]) == 1
    python = root["children"][0]
    assert python["programs"][-1]["exe"] == "/usr/bin/python3"
    assert python["counts"] == {"connect": 2}


def _capture_of(path: Path, items: list) -> list:
    """The items written to a capture (each (cpu, event) a sample, (cpu, n) a loss) and
    read back with capture_items."""
    from ebpfwire import encode
    from ebpfwire.capture import CaptureWriter, HostInfo

    with CaptureWriter(path, host=HostInfo("6.18.0", "test-host", 2), boot_time_ns=0) as writer:
        for item in items:
            if isinstance(item, ProcessInfo):
                writer.write_process(item)
            elif isinstance(item, ContainerInfo):
                writer.write_container(item)
            elif isinstance(item[1], int):
                writer.write_lost(*item)
            else:
                writer.write_sample(item[0], encode(item[1]))
    with CaptureReader(path) as reader:
        return list(capture_items(reader))


def test_snapshot_ancestors_containers_and_reordering(tmp_path: Path) -> None:
    s = Stream()
    cid = "d" * 64
    events = [s.openat(300, 200, "nginx", pid_id=11, mnt_id=12),
              *s.exec(400, 300, "nginx", "/usr/bin/curl", ["curl", "-s", "x"],
                      pid_id=11, mnt_id=12),
              s.exit(400, 300, "curl", status=9, pid_id=11, mnt_id=12)]
    items = _capture_of(tmp_path / "tree.ewcap", [
        ProcessInfo(1, 0, 1, 0, 5, 6, 0, "systemd", "/sbin/init", "/", ("/sbin/init",), ""),
        ProcessInfo(200, 1, 200, 0, 5, 6, 10, "containerd-shim", "/usr/bin/containerd-shim",
                    "/", ("containerd-shim",), ""),
        ProcessInfo(300, 200, 1, 0, 7, 8, 20, "nginx", "/usr/sbin/nginx", "/",
                    ("nginx", "-g", "daemon off;"), cid),
        ContainerInfo(11, 12, cid, "docker"),
        (0, events[2]), (1, events[0]), (1, events[1]), (0, 3), (0, events[3]),
        (0, events[4])])   # two CPUs' batches, out of ts order; a loss on cpu 0
    assert items[4:] == [events[0], events[1], events[2], 3, events[3], events[4]]
    tree = build_tree(items)
    lines = tree.lines()
    assert lines[0].startswith("/sbin/init  (1)  before the capture..running")
    assert lines[1].startswith("└─/usr/bin/containerd-shim  (200)")
    assert lines[2].startswith("  └─/usr/sbin/nginx -g daemon off;  (300/1)")
    assert lines[2].endswith(f"docker:{cid[:12]}")
    assert lines[3].startswith("    └─/usr/sbin/nginx → /usr/bin/curl -s x  (400)")
    assert "killed by SIGKILL" in lines[3]
    assert tree.table.lost_events == 3
    curl = tree.to_json()[0]["children"][0]["children"][0]["children"][0]
    assert [p["source"] for p in curl["programs"]] == ["fork", "exec"]
    assert curl["runtime"] == "docker" and curl["container_id"] == cid


def test_round_trip_through_a_capture_with_context_records(tmp_path: Path) -> None:
    """What `record` writes (this machine's snapshot, the resolver's container records,
    samples) read back with capture_items: this test process is named from the snapshot."""
    from ebpfwire import encode
    from ebpfwire.capture import CaptureWriter, HostInfo
    from ebpfwire.output.kubearmor import KubeArmorLogs
    from ebpfwire.process.procfs import ContainerResolver, snapshot
    from ebpfwire.process.table import ProcessTable

    processes = snapshot()
    me = next(info for info in processes if info.host_pid == os.getpid())
    s = Stream()
    s.ts = me.start_ns + 10**9
    event = s.openat(me.host_pid, me.host_ppid, me.comm, "/etc/hostname")
    path = tmp_path / "ctx.ewcap"
    resolver = ContainerResolver()
    with CaptureWriter(path, host=HostInfo("test-host", "6.18.0", 2), boot_time_ns=0) as writer:
        for info in processes:
            writer.write_process(info)
        for info in resolver.seed(processes):
            writer.write_container(info)
        data = encode(event)
        container = resolver.resolve_sample(data)
        assert container is None                # (0, 0) came with the snapshot already
        writer.write_sample(0, data)
    with CaptureReader(path) as reader:
        items = list(capture_items(reader))
    assert sum(isinstance(item, ProcessInfo) for item in items) == len(processes)
    assert ContainerInfo(0, 0, "", "host") in items
    tree = build_tree(items)
    [line] = [line for line in tree.lines() if f"({me.host_pid})" in line]
    assert escape(" ".join((me.exe, *me.argv[1:]))) in line and "events 1 (1 openat)" in line
    table = ProcessTable()
    answers = [(item, table.feed(item)) for item in items]
    [(decoded, answer)] = [(item, answer) for item, answer in answers if answer is not None]
    log = KubeArmorLogs("test-host", 0).log(decoded, answer)
    assert log["ProcessName"] == me.exe and log["Type"] == "HostLog"
    assert log["Resource"] == "/etc/hostname"


def test_a_loss_follows_its_cpus_last_sample_in_ps_as_in_decode(tmp_path: Path) -> None:
    """ps (capture_items, the tree's input) and decode place a LOST record alike: after
    the last sample of its CPU read before it, not after the newest sample of any CPU."""
    import json

    from test_cli import run

    s = Stream()
    a, b, c = (s.openat(10, 1, "x") for _ in range(3))
    items = _capture_of(tmp_path / "lost.ewcap", [(0, a), (1, c), (0, 7), (0, b)])
    assert items == [a, 7, b, c]
    status, out, _ = run("decode", "--format", "jsonl", "--raw", str(tmp_path / "lost.ewcap"))
    lines = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert [line.get("ts", line.get("lost")) for line in lines] == [a.ts, 7, b.ts, c.ts]


def test_a_container_record_that_names_no_container_shows_the_namespaces() -> None:
    """`ps` printed `unknown:?` where docs/cli.md promises `ns <pid_ns>/<mnt_ns>`."""
    s = Stream()
    items = [ContainerInfo(0, 4026532999, "", "unknown"),
             s.openat(500, 1, "ip", pid_id=0, mnt_id=4026532999)]
    [line] = build_tree(items).lines()
    assert line.endswith("ns 0/4026532999") and "unknown:?" not in line


def test_exit_status_text_reads_a_wait_status_as_strace_does():
    from ebpfwire.wire.text import exit_status_text

    assert exit_status_text(3 << 8) == "exited with 3"
    assert exit_status_text(9) == "killed by SIGKILL"
    assert exit_status_text(0x80 | 11) == "killed by SIGSEGV (core dumped)"
    assert exit_status_text(0x80 | 100) == "killed by signal 100 (core dumped)"
