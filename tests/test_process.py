"""The process table over synthetic event streams, and over the real fixture captures."""

from __future__ import annotations

from pathlib import Path

from ebpfwire.capture import CaptureReader
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.process.table import DO_EXIT, SECURITY_BPRM_CHECK, ProcessTable
from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.events import Arg, Argv, Event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EXECVE, OPENAT = 59, 257


class Stream:
    """Builds events with a rising ts, the way one machine would have made them."""

    def __init__(self) -> None:
        self.ts = 1_000

    def event(self, host_pid: int, host_ppid: int, comm: str, event_id: int = OPENAT,
              args: list[Arg] | None = None, retval: int = 3, pid_id: int = 0,
              mnt_id: int = 0, extra: dict | None = None) -> Event:
        self.ts += 1_000
        args = [] if args is None else args
        return Event(self.ts, pid_id, mnt_id, host_ppid, host_pid, host_ppid, host_pid, 0,
                     event_id, len(args), retval, comm, args, extra)

    def openat(self, host_pid: int, host_ppid: int, comm: str, path: str = "/etc/passwd",
               **kw) -> Event:
        return self.event(host_pid, host_ppid, comm, OPENAT,
                          [Arg(ArgType.INT_T, -100), Arg(ArgType.STR_T, path),
                           Arg(ArgType.OPEN_FLAGS_T, 0)], **kw)

    def exec(self, host_pid: int, host_ppid: int, old_comm: str, path: str, argv: list[str],
             resolved: str | None = None, retval: int = 0, bprm: bool = True,
             **kw) -> list[Event]:
        """execve entry, security_bprm_check (on success) and the exit, as the program
        emits them."""
        new_comm = path.rsplit("/", 1)[-1][:15]
        out = [self.event(host_pid, host_ppid, old_comm, EXECVE,
                          [Arg(ArgType.STR_T, path), Arg(ArgType.STR_ARR_T, Argv(argv))],
                          retval=0, **kw)]
        if retval == 0 and bprm:
            out.append(self.event(host_pid, host_ppid, new_comm, SECURITY_BPRM_CHECK,
                                  [Arg(ArgType.STR_T, resolved or path)], retval=0, **kw))
        out.append(self.event(host_pid, host_ppid, new_comm if retval == 0 else old_comm,
                              EXECVE, [], retval=retval, **kw))
        return out

    def exit(self, host_pid: int, host_ppid: int, comm: str, status: int = 0, **kw) -> Event:
        return self.event(host_pid, host_ppid, comm, DO_EXIT, [], retval=status, **kw)


def feed(table: ProcessTable, events: list[Event]):
    return [table.update(event) for event in events]


def snap(host_pid: int, host_ppid: int, exe: str, argv: tuple[str, ...], comm: str,
         start_ns: int = 500, container_id: str = "", cwd: str = "/") -> ProcessInfo:
    return ProcessInfo(host_pid, host_ppid, host_pid, 0, 4026531836, 4026531840, start_ns,
                       comm, exe, cwd, argv, container_id)


def test_exec_chain_bash_sh_cat() -> None:
    s, table = Stream(), ProcessTable()
    table.add_process(snap(100, 1, "/usr/bin/bash", ("bash",), "bash"))
    feed(table, s.exec(200, 100, "bash", "/bin/sh", ["sh", "-c", "cat /etc/passwd"]))
    feed(table, s.exec(300, 200, "sh", "/bin/cat", ["cat", "/etc/passwd"]))
    answer = table.update(s.openat(300, 200, "cat"))
    assert answer.exe == "/bin/cat" and answer.argv == ("cat", "/etc/passwd")
    assert answer.parent_exe == "/bin/sh"
    assert answer.parent_program.argv == ("sh", "-c", "cat /etc/passwd")
    grand = table.get(answer.parent.host_ppid)
    assert grand is not None and grand.program.exe == "/usr/bin/bash"
    assert grand.program.source == "snapshot"


def test_exec_entry_answers_with_the_caller_and_exit_with_the_new_program() -> None:
    s, table = Stream(), ProcessTable()
    table.add_process(snap(100, 1, "/usr/bin/bash", ("bash",), "bash"))
    entry, bprm, result = feed(table, s.exec(100, 1, "bash", "/usr/bin/env", ["env"],
                                             resolved="/usr/bin/env"))
    assert entry.exe == "/usr/bin/bash" and entry.exec_request is None
    assert bprm.exe == "/usr/bin/env"
    assert result.exe == "/usr/bin/env" and result.argv == ("env",)
    assert result.exec_request.filename == "/usr/bin/env"
    # exec without fork: same process, two programs, the old one still answerable by time
    process = table.get(100)
    assert [p.exe for p in process.programs] == ["/usr/bin/bash", "/usr/bin/env"]
    assert process.program_at(entry.program.since).exe == "/usr/bin/bash"
    assert process.program_at(s.ts).exe == "/usr/bin/env"


def test_failed_exec_keeps_the_program() -> None:
    s, table = Stream(), ProcessTable()
    table.add_process(snap(100, 1, "/usr/bin/bash", ("bash",), "bash"))
    *_, result = feed(table, s.exec(100, 1, "bash", "/nope", ["nope"], retval=-2))
    assert result.exe == "/usr/bin/bash"
    assert result.exec_request.filename == "/nope"
    assert len(table.get(100).programs) == 1


def test_exec_without_bprm_event_uses_the_filename_relative_to_cwd() -> None:
    s, table = Stream(), ProcessTable()
    extra = {"cwd": "/srv/app"}
    feed(table, s.exec(100, 1, "sh", "./run", ["./run", "-v"], bprm=False, extra=extra))
    answer = table.update(s.openat(100, 1, "run", extra=extra))
    assert answer.exe == "/srv/app/run" and answer.argv == ("./run", "-v")
    assert table.get(100).cwd == "/srv/app"


def test_pid_reuse_after_exit() -> None:
    s, table = Stream(), ProcessTable()
    feed(table, s.exec(300, 200, "sh", "/bin/cat", ["cat"]))
    table.update(s.exit(300, 200, "cat", status=256))
    first = table.get(300)
    assert first.exit_status == 256 and first.exited
    answer = table.update(s.openat(300, 400, "python3"))
    assert answer.process is not first
    assert answer.exe == "python3" and answer.program.source == "comm"
    assert table.get(300) is answer.process


def test_pid_reuse_detected_when_the_exit_was_lost() -> None:
    s, table = Stream(), ProcessTable()
    table.add_process(snap(200, 1, "/bin/sh", ("sh",), "sh"))
    table.add_process(snap(400, 1, "/usr/bin/python3", ("python3",), "python3"))
    feed(table, s.exec(300, 200, "sh", "/bin/cat", ["cat"]))
    table.lost(10)                       # cat's do_exit went here
    answer = table.update(s.openat(300, 400, "python3"))
    # a new parent while the old (200) is alive: another process with the same pid
    assert answer.program.source == "fork"       # python3's forked copy
    assert answer.exe == "/usr/bin/python3" and answer.parent_exe == "/usr/bin/python3"
    assert table.lost_events == 10


def test_reparenting_is_not_reuse() -> None:
    s, table = Stream(), ProcessTable()
    feed(table, s.exec(200, 100, "bash", "/bin/sh", ["sh"]))
    feed(table, s.exec(300, 200, "sh", "/usr/bin/sleep", ["sleep", "9"]))
    table.update(s.exit(200, 100, "sh"))
    answer = table.update(s.openat(300, 1, "sleep"))     # orphan, now init's child
    assert answer.exe == "/usr/bin/sleep" and answer.process.host_ppid == 1


def test_threads_share_their_process() -> None:
    s, table = Stream(), ProcessTable()
    table.add_process(snap(500, 1, "/usr/bin/python3", ("python3", "srv.py"), "python3"))
    for comm in ("python3", "Thread-1", "python3", "asyncio_0"):
        answer = table.update(s.openat(500, 1, comm))
        assert answer.exe == "/usr/bin/python3"
    process = table.get(500)
    assert list(process.comms) == ["python3", "Thread-1", "asyncio_0"]
    assert process.events == 4


def test_pre_existing_process_from_snapshot_and_containers() -> None:
    s, table = Stream(), ProcessTable()
    cid = "c" * 64
    table.add_process(snap(700, 600, "/usr/sbin/nginx", ("nginx", "-g", "daemon off;"),
                           "nginx", container_id=cid, cwd="/"))
    table.add_container(ContainerInfo(4026532000, 4026532001, cid, "docker"))
    answer = table.update(s.openat(700, 600, "nginx", pid_id=4026532000, mnt_id=4026532001))
    assert answer.exe == "/usr/sbin/nginx" and answer.program.source == "snapshot"
    assert answer.container.runtime == "docker" and answer.container_id == cid
    assert answer.parent is None and answer.parent_exe == ""


def test_never_seen_exec_is_named_by_comm_and_marked() -> None:
    s, table = Stream(), ProcessTable()
    answer = table.update(s.openat(800, 1, "mystery"))
    assert (answer.exe, answer.program.exe, answer.program.known) == ("mystery", "", False)
    assert answer.container is None and answer.container_id is None


def test_lost_events_in_the_middle() -> None:
    s, table = Stream(), ProcessTable()
    table.add_process(snap(100, 1, "/usr/bin/bash", ("bash",), "bash"))
    entry = s.exec(200, 100, "bash", "/bin/ls", ["ls"])
    table.update(entry[0])
    table.lost(3)                       # bprm and exit of ls were lost
    # a later exit of some other exec must not be paired with the lost entry
    table.update(s.event(200, 100, "ls", EXECVE, [], retval=0))
    answer = table.update(s.openat(200, 100, "ls"))
    assert answer.program.source in ("fork", "comm") and answer.exe != "/bin/ls"
    # the next exec is followed normally
    feed(table, s.exec(200, 100, "ls", "/bin/cat", ["cat", "x"]))
    assert table.update(s.openat(200, 100, "cat")).exe == "/bin/cat"


def test_exited_processes_are_dropped_after_the_window() -> None:
    s, table = Stream(), ProcessTable(retain_ns=10_000)
    for pid in range(1000, 1100):
        table.update(s.openat(pid, 1, "worker"))
        table.update(s.exit(pid, 1, "worker"))
    assert len(list(table.processes())) <= 11
    assert table.dropped >= 89
    keep_all = ProcessTable(retain_ns=None)
    for pid in range(1000, 1100):
        keep_all.update(s.openat(pid, 1, "worker"))
        keep_all.update(s.exit(pid, 1, "worker"))
    assert len(list(keep_all.processes())) == 100


def test_real_workload_fixture() -> None:
    table = ProcessTable()
    cat_open = None
    with CaptureReader(FIXTURES / "real-workload.ewcap") as reader:
        for _, event in reader.events():
            answer = table.update(event)
            if event.name == "openat" and event.args[1].value.endswith("beta.txt"):
                cat_open = answer
    assert cat_open is not None
    assert cat_open.exe == "/bin/cat"
    assert cat_open.argv[1:] == ("/tmp/ebpfwire-fixture/alpha.txt",
                                 "/tmp/ebpfwire-fixture/beta.txt")
    # the shell started before the recording, and this old capture has no snapshot:
    # named by its comm, never by an invented path
    assert cat_open.parent_exe == "sh" and not cat_open.parent_program.known
    shell_child = [p for p in table.processes() if p.program.exe == "/bin/sh"]
    assert [p.exit_status for p in shell_child] == [768]


def test_real_namespaces_fixture_degrades_to_namespace_ids() -> None:
    table = ProcessTable()
    with CaptureReader(FIXTURES / "real-namespaces.ewcap") as reader:
        answers = [(event, table.update(event)) for _, event in reader.events()]
    opened = [(e, a) for e, a in answers if e.name == "openat" and e.pid == 1]
    event, answer = opened[-1]
    assert answer.exe == "/bin/cat" and event.pid_id != 0
    assert answer.container is None and answer.process.pid_ns == event.pid_id


def test_snapshot_after_the_first_events_fills_in_what_they_lacked() -> None:
    s, table = Stream(), ProcessTable()
    table.update(s.openat(900, 1, "postgres"))
    table.add_process(snap(900, 1, "/usr/lib/postgresql/bin/postgres", ("postgres", "-D", "/d"),
                           "postgres", start_ns=5, cwd="/var/lib/postgresql"))
    answer = table.update(s.openat(900, 1, "postgres"))
    assert answer.exe == "/usr/lib/postgresql/bin/postgres"
    assert answer.program.source == "snapshot" and answer.process.start_ns == 5
    assert answer.process.cwd == "/var/lib/postgresql" and answer.process.events == 2
