"""``decode --format kubearmor`` and the process context of the table and JSON lines
(``--raw`` turns it off): goldens on the real captures, old captures without context, and a
version-2 capture with a snapshot, a container record and a loss."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from test_process import Stream

from ebpfwire import encode
from ebpfwire.capture import CaptureWriter, HostInfo
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.cli import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REAL = ["real-workload", "real-namespaces"]
CID = "3f2a1b9c0d12" + "e" * 52
CONTEXT_KEYS = ["process", "parent_process", "container_id"]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", REAL)
@pytest.mark.parametrize("fmt,suffix", [("kubearmor", "kubearmor"), ("jsonl", "enriched")])
def test_real_captures_match_their_goldens(name: str, fmt: str, suffix: str) -> None:
    status, out, err = run("decode", "--format", fmt, str(FIXTURES / f"{name}.ewcap"))
    assert status == 0 and err == ""
    expected = (FIXTURES / f"{name}.{suffix}.jsonl").read_text()
    assert out.splitlines() == expected.splitlines()
    assert out == expected


@pytest.mark.parametrize("name", [*REAL, "all-types", "kubearmor-kinds"])
@pytest.mark.parametrize("version,suffix", [("newest", "kubearmor"), ("2023", "kubearmor-2023")])
def test_kubearmor_goldens_of_both_versions(name: str, version: str, suffix: str) -> None:
    status, out, err = run("decode", "--format", "kubearmor", "--kubearmor-version", version,
                           str(FIXTURES / f"{name}.ewcap"))
    assert status == 0 and err == ""
    expected = (FIXTURES / f"{name}.{suffix}.jsonl").read_text()
    assert out.splitlines() == expected.splitlines()


def test_the_kubearmor_goldens_hold_every_event_kind_of_the_catalogue() -> None:
    """kubearmor-kinds.ewcap has an event of every kind the catalogue knows; each logs in
    both versions unless KubeArmor logs none for it (said in docs/kubearmor-logs.md)."""
    from ebpfwire.capture import CaptureReader
    from ebpfwire.wire.catalogue import EVENT_ARGS

    with CaptureReader(FIXTURES / "kubearmor-kinds.ewcap") as reader:
        names = {event.name for _, event in reader.events()}
    assert names >= set(EVENT_ARGS)
    silent = {"accept4", "do_exit", "security_bprm_check"}
    for version, suffix in (("newest", "kubearmor"), ("2023", "kubearmor-2023")):
        logs = [json.loads(line) for line in
                (FIXTURES / f"kubearmor-kinds.{suffix}.jsonl").read_text().splitlines()]
        data = " ".join(log["Data"] for log in logs).upper()
        logged = {name for name in EVENT_ARGS
                  if f"SYS_{name.upper()}" in data or name.split("_v6")[0].upper() in data
                  or name.replace("_send_skb", "_sendskb").upper() in data}
        udp = {"udp_sendmsg", "udp_send_skb"} if version == "2023" else set()
        assert logged == set(EVENT_ARGS) - silent - udp, version


def test_kubearmor_names_programs_from_the_execs() -> None:
    status, out, _ = run("decode", "--format", "kubearmor",
                         str(FIXTURES / "real-workload.ewcap"))
    logs = [json.loads(line) for line in out.splitlines()]
    assert {log["Type"] for log in logs} == {"HostLog"}
    [refused] = [log for log in logs if log["Result"] == "Connection refused"]
    assert refused["ProcessName"] == "/usr/bin/python3"
    assert refused["ParentProcessName"] == "sh"   # started before the capture: its comm
    assert refused["Operation"] == "Network" and refused["Data"].startswith("syscall=SYS_CONNECT")
    execs = [log for log in logs if log["Operation"] == "Process"]
    assert [log["ProcessName"] for log in execs][:2] == ["/bin/ls", "/bin/cat"]
    # one log per exec (its result); bprm_check, do_exit and exec entries give none, nor
    # do the -2 results KubeArmor's newest writer does not write (33 of them)
    assert len(execs) == 5 and len(logs) == 147 - 6 - 5 - 5 - 33
    status, out, _ = run("decode", "--format", "kubearmor", "--kubearmor-version", "2023",
                         str(FIXTURES / "real-workload.ewcap"))
    assert len(out.splitlines()) == 147 - 6 - 5 - 5


def test_filters_choose_lines_but_the_table_sees_every_event() -> None:
    capture = str(FIXTURES / "real-workload.ewcap")
    status, out, _ = run("decode", "--format", "kubearmor", "--event", "openat",
                         "--comm", "cat", capture)
    logs = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and logs
    # the exec that named it was filtered out, yet it is named
    assert {(log["ProcessName"], log["Operation"]) for log in logs} == {("/bin/cat", "File")}
    status, out, _ = run("decode", "--format", "jsonl", "--event", "openat", "--comm", "cat",
                         capture)
    assert {json.loads(line)["process"]["exe"] for line in out.splitlines()} == {"/bin/cat"}


def test_a_namespaced_process_no_container_names_gives_no_log() -> None:
    """KubeArmor looks the container of (pid_id, mnt_id) up, retries, then drops the
    event: no ContainerLog with an empty ContainerID."""
    for version in ("newest", "2023"):
        status, out, _ = run("decode", "--format", "kubearmor", "--kubearmor-version", version,
                             "--pid", "1", str(FIXTURES / "real-namespaces.ewcap"))
        assert status == 0 and out == ""


def test_old_capture_gives_comms_and_no_invented_names() -> None:
    """The bundled sample is version 1: no snapshot, no container records."""
    status, out, err = run("decode", "--format", "kubearmor")
    assert status == 0 and err == ""
    logs = [json.loads(line) for line in out.splitlines()]
    names = {log["ProcessName"] for log in logs}
    assert "/usr/bin/curl" in names                     # seen exec'ing
    # nginx runs in namespaces of its own that no container record names: KubeArmor
    # drops its events (no ContainerLog with an empty ContainerID)
    assert "nginx" not in names and {log["Type"] for log in logs} == {"HostLog"}
    assert {log["ParentProcessName"] for log in logs} == {""}   # no parent in the capture
    status, out, _ = run("decode", "--format", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert all(line["container_id"] is None for line in lines if "lost" not in line)
    bash = [line for line in lines if line.get("event") == "execve" and line["argnum"]]
    assert bash and all(line["process"] == {"exe": None, "argv": [], "source": "comm"}
                        for line in bash)


@pytest.mark.parametrize("capture", sorted(FIXTURES.glob("*.ewcap")), ids=lambda p: p.stem)
def test_enrichment_only_adds_fields_and_raw_is_the_raw_shape(capture: Path) -> None:
    extra = ["--lenient"] if capture.stem == "damaged" else []
    _, raw, _ = run("decode", "--format", "jsonl", "--raw", *extra, str(capture))
    _, enriched, _ = run("decode", "--format", "jsonl", *extra, str(capture))
    if capture.with_suffix(".jsonl").exists():
        assert raw == capture.with_suffix(".jsonl").read_text()
    raw_lines, lines = raw.splitlines(), enriched.splitlines()
    assert len(raw_lines) == len(lines)
    for plain, rich in zip(raw_lines, lines, strict=True):
        if plain.startswith('{"lost"'):
            assert rich == plain
            continue
        assert rich.startswith(plain[:-1] + ", ")
        assert list(json.loads(rich))[-3:] == CONTEXT_KEYS


CLEAN = sorted(p for p in FIXTURES.glob("*.ewcap") if p.stem != "damaged")


@pytest.mark.parametrize("capture", CLEAN, ids=lambda p: p.stem)
def test_header_fast_path_answers_as_the_decoded_path(capture: Path) -> None:
    """Without filters most lines take the raw header path; --lenient decodes every event
    and gives each to the table: the context must be the same."""
    _, fast, _ = run("decode", "--format", "jsonl", str(capture))
    _, slow, _ = run("decode", "--format", "jsonl", "--lenient", str(capture))
    slow_rows = [json.loads(line) for line in slow.splitlines()]
    for row in slow_rows:
        assert row.pop("errors", []) == []
    assert [json.loads(line) for line in fast.splitlines()] == slow_rows


def test_raw_refused_with_kubearmor() -> None:
    status, out, err = run("decode", "--format", "kubearmor", "--raw")
    assert status == 2 and out == "" and "--raw" in err


def context_capture(path: Path) -> Path:
    """A version-2 capture: bash from the snapshot runs sh, sh runs cat in a docker
    container (its own namespaces), cat is refused /etc/shadow; a loss; cat exits."""
    s = Stream()
    s.ts = 10**9
    snapshot = [ProcessInfo(1, 0, 1, 0, 5, 6, 0, "systemd", "/sbin/init", "/", ("/sbin/init",),
                            ""),
                ProcessInfo(100, 1, 100, 0, 5, 6, 500, "bash", "/usr/bin/bash", "/root",
                            ("-bash",), "")]
    ns = {"pid_id": 11, "mnt_id": 12}
    events = [*s.exec(200, 100, "bash", "/bin/sh", ["sh", "-c", "cat /etc/shadow"], **ns),
              *s.exec(300, 200, "sh", "/bin/cat", ["cat", "/etc/shadow"], **ns),
              s.openat(300, 200, "cat", "/etc/shadow", **ns)]
    events[-1] = events[-1].replace(retval=-13)
    exits = [s.exit(300, 200, "cat", status=256, **ns), s.exit(200, 100, "sh", **ns)]
    with CaptureWriter(path, host=HostInfo("6.18.0", "test-host", 2),
                       boot_time_ns=1_764_000_000 * 10**9) as writer:
        for info in snapshot:
            writer.write_process(info)
        writer.write_container(ContainerInfo(0, 0, "", "host"))
        writer.write_container(ContainerInfo(11, 12, CID, "docker"))
        for event in events:
            writer.write_sample(0, encode(event))
        writer.write_lost(1, 4)
        for event in exits:
            writer.write_sample(0, encode(event))
    return path


def test_context_capture_kubearmor(tmp_path: Path) -> None:
    capture = str(context_capture(tmp_path / "ctx.ewcap"))
    status, out, err = run("decode", "--format", "kubearmor", capture)
    assert status == 0 and err == ""
    logs = [json.loads(line) for line in out.splitlines()]
    assert [log["Operation"] for log in logs] == ["Process", "Process", "File"]
    sh, cat, shadow = logs
    assert sh["ProcessName"] == "/bin/sh" and sh["ParentProcessName"] == "/usr/bin/bash"
    assert cat["Resource"] == "/bin/cat /etc/shadow" and cat["Source"] == "/bin/sh"
    assert shadow == {**shadow, "Type": "ContainerLog", "ContainerID": CID,
                      "ProcessName": "/bin/cat", "ParentProcessName": "/bin/sh",
                      "Source": "/bin/cat /etc/shadow", "Resource": "/etc/shadow",
                      "Result": "Permission denied", "HostName": "test-host"}


def test_context_capture_table_and_jsonl(tmp_path: Path) -> None:
    capture = str(context_capture(tmp_path / "ctx.ewcap"))
    status, out, _ = run("decode", "--utc", capture)
    lines = out.splitlines()
    assert status == 0
    assert lines[0].endswith(' 200 ["/usr/bin/bash" container 3f2a1b9c0d12] execve("/bin/sh", '
                             '["sh", "-c", "cat /etc/shadow"]) <unfinished ...>')
    assert " 300 [\"/bin/cat\" container 3f2a1b9c0d12] openat(AT_FDCWD, \"/etc/shadow\"" in out
    assert "-- lost 4 samples on cpu 1 --" in lines
    status, out, _ = run("decode", "--format", "jsonl", capture)
    rows = [json.loads(line) for line in out.splitlines()]
    [shadow] = [row for row in rows if row.get("retval") == -13]
    assert shadow["process"] == {"exe": "/bin/cat", "argv": ["cat", "/etc/shadow"],
                                 "source": "exec"}
    assert shadow["parent_process"] == {"exe": "/bin/sh", "source": "exec"}
    assert shadow["container_id"] == CID
    status, out, _ = run("decode", "--raw", "--utc", capture)
    assert "[" not in out.splitlines()[0].split(" execve")[0]


@pytest.mark.parametrize("doc", ["README.md", "docs/cli.md"])
def test_the_documented_kubearmor_line_is_what_decode_prints(doc: str) -> None:
    text = (FIXTURES.parent / doc).read_text()
    [line] = [line for line in text.splitlines() if line.startswith('{"Timestamp"')]
    _, out, _ = run("decode", "--format", "kubearmor", "--event", "openat", "--comm", "cat",
                    str(FIXTURES / "real-workload.ewcap"))
    assert line in out.splitlines()


def test_header_path_follows_state_changes_of_parents_and_pids() -> None:
    """The fragments kept per process are not given again once the parent runs another
    program, exits and is dropped, the pid is reused, or a container record arrives."""
    from ebpfwire.process.enrich import Enricher
    from ebpfwire.wire.decoder import decode
    from ebpfwire.wire.layouts import get_layout

    s = Stream()
    stream = [
        s.openat(200, 100, "sh"), s.openat(300, 200, "sh"), s.openat(300, 200, "sh"),
        *s.exec(200, 100, "sh", "/usr/bin/bash", ["bash"]),      # the parent execs
        s.openat(300, 200, "sh"),
        s.exit(300, 200, "sh"), s.openat(300, 200, "sh"),         # pid 300 reused
        s.openat(300, 1, "sh"),                                   # reparented to init
        ContainerInfo(0, 0, "", "host"),                          # a container record
        s.openat(300, 1, "sh"), s.openat(200, 100, "bash"),
    ]
    layout = get_layout("classic")
    fast, slow = Enricher(layout, "x86_64"), Enricher(layout, "x86_64")
    got, expected = [], []
    for item in stream:
        if isinstance(item, ContainerInfo):
            fast.feed(item)
            slow.feed(item)
            continue
        data = encode(item)
        got.append(fast.sample(data))
        expected.append(slow.answer_of(slow.event(decode(data))))
    assert got == expected
    rows = [json.loads("{" + text[2:] + "}") for text in got]
    assert rows[2]["parent_process"] == {"exe": None, "source": "comm"}   # sh, by its comm
    assert rows[6]["parent_process"] == {"exe": "/usr/bin/bash", "source": "exec"}
    assert rows[8]["process"]["source"] == "comm"       # the new life of 300
    assert rows[9]["parent_process"] is None            # pid 1 is not in the table
    assert rows[9]["container_id"] is None and rows[10]["container_id"] == ""
