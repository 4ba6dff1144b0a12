"""``ebpfwire ps``: the process tree of a capture, exact on a small synthetic capture,
structural on the real ones."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli_kubearmor import CID, FIXTURES, context_capture, run
from test_process import Stream

from ebpfwire import encode
from ebpfwire.capture import CaptureWriter, HostInfo

TREE = [
    "/sbin/init  (1)  before the capture..running",
    "└─/usr/bin/bash  (100)  before the capture..running",
    "  └─/usr/bin/bash → /bin/sh -c cat /etc/shadow  (200)  +0.000000s..+0.000008s  "
    "exited with 0  events 4 (2 execve, 1 do_exit, 1 security_bprm_check)  "
    "docker:3f2a1b9c0d12",
    "    └─/bin/sh → /bin/cat /etc/shadow  (300)  +0.000003s..+0.000007s  exited with 1  "
    "events 5 (2 execve, 1 do_exit, 1 openat, ...)  docker:3f2a1b9c0d12",
]


def test_tree_of_a_capture_with_context(tmp_path: Path) -> None:
    status, out, err = run("ps", str(context_capture(tmp_path / "ctx.ewcap")))
    assert status == 0 and err == ""
    assert out.splitlines() == TREE


def test_filter_counts_matching_events_and_keeps_ancestors(tmp_path: Path) -> None:
    capture = str(context_capture(tmp_path / "ctx.ewcap"))
    status, out, _ = run("ps", "--event", "openat", capture)
    lines = out.splitlines()
    assert status == 0 and len(lines) == 4
    assert "events" not in lines[2] and lines[3].endswith(
        "exited with 1  events 1 (1 openat)  docker:3f2a1b9c0d12")
    status, out, _ = run("ps", "--failed", "--pid", "300", capture)
    assert out.splitlines()[-1].endswith("events 1 (1 openat)  docker:3f2a1b9c0d12")
    status, out, _ = run("ps", "--event", "connect", capture)
    assert status == 0 and out == ""


def test_json_tree(tmp_path: Path) -> None:
    status, out, _ = run("ps", "--json", str(context_capture(tmp_path / "ctx.ewcap")))
    [init] = json.loads(out)
    cat = init["children"][0]["children"][0]["children"][0]
    assert cat["host_pid"] == 300 and cat["container_id"] == CID
    assert cat["runtime"] == "docker" and cat["exit"] == "exited with 1"
    assert [p["exe"] for p in cat["programs"]] == ["/bin/sh", "/bin/cat"]
    assert [p["source"] for p in cat["programs"]] == ["fork", "exec"]
    assert cat["counts"] == {"execve": 2, "security_bprm_check": 1, "openat": 1, "do_exit": 1}


def test_control_characters_are_escaped(tmp_path: Path) -> None:
    s = Stream()
    events = s.exec(400, 1, "sh", "/tmp/\x1b[2Jevil", ["evil", "line\nbreak", "\x07"])
    path = tmp_path / "evil.ewcap"
    with CaptureWriter(path, host=HostInfo("6.18.0", "test-host", 2)) as writer:
        for event in events:
            writer.write_sample(0, encode(event))
    status, out, _ = run("ps", str(path))
    assert status == 0 and "\x1b" not in out and "\x07" not in out
    [line] = out.splitlines()
    assert line.startswith("[sh] → /tmp/\\x1b[2Jevil line\\nbreak \\x07  (400)")


def test_real_workload_structure() -> None:
    status, out, err = run("ps", str(FIXTURES / "real-workload.ewcap"))
    lines = out.splitlines()
    assert status == 0 and err == ""
    assert lines[0].startswith("[sh]  (29675)")          # never seen exec'ing: its comm
    children = lines[1:]
    assert len(children) == 5 and all(line.startswith(("├─[sh] → ", "└─[sh] → "))
                                      for line in children)
    assert children[-1].startswith("└─[sh] → /bin/sh -c exit 3  (29680)")
    assert "exited with 3" in children[-1]
    assert "/bin/true a1 a2" in children[3] and " ... " in children[3]
    python = children[2]
    assert "\n" not in python and "\\n" in python and "events 58 (41 openat" in python
    total = sum(int(line.split("  events ")[1].split()[0]) for line in lines)
    assert total == 147


def test_real_namespaces_structure() -> None:
    status, out, _ = run("ps", "--json", str(FIXTURES / "real-namespaces.ewcap"))
    [unshare] = json.loads(out)
    [cat] = unshare["children"]
    assert cat["pid"] == 1 and cat["host_ppid"] == unshare["host_pid"]
    assert cat["programs"][-1]["exe"] == "/bin/cat" and cat["container_id"] is None
    assert cat["pid_ns"] != 0 and cat["mnt_ns"] == unshare["mnt_ns"]


def test_errors_and_damage() -> None:
    status, out, err = run("ps", str(FIXTURES / "no-such.ewcap"))
    assert status == 2 and out == "" and "no such file" in err
    status, out, err = run("ps", "--lenient", str(FIXTURES / "damaged.ewcap"))
    assert status == 0 and "file offset 647" in err and out.startswith("[app]  (200)")
    status, _, _ = run("ps", "--lenient", "--strict-exit", str(FIXTURES / "damaged.ewcap"))
    assert status == 1
    status, out, err = run("ps", "--event", "nosuch", str(FIXTURES / "damaged.ewcap"))
    assert status == 2 and "unknown event" in err
