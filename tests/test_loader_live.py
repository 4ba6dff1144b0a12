"""The loader: object parsing anywhere; loading, events, exact loss and cleanup live."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ebpfwire
from ebpfwire.kernel import syscalls, tracefs
from ebpfwire.kernel.config import MonitorConfig
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.link import link
from ebpfwire.kernel.monitor import (
    SYSCALL_EVENTS,
    Monitor,
    bundled_object,
    choose_hooks,
    event_group,
    select_events,
    select_programs,
)
from ebpfwire.kernel.objects import Object, load_insns
from ebpfwire.kernel.perf import Lost, PerfReader, Sample

EV_CLOSE = 3
EBADF = 9
OBJECT = bundled_object()
needs_object = pytest.mark.skipif(not OBJECT.exists(), reason=f"{OBJECT} not built (make -C bpf)")


@needs_object
def test_bundled_object_maps_and_programs():
    obj = Object.open(OBJECT)
    assert obj.spec.license == "GPL"
    assert obj.maps["events"].type == syscalls.BPF_MAP_TYPE_PERF_EVENT_ARRAY
    assert obj.maps["config"].value_size == MonitorConfig.sizeof() == 38 * 4 + 16
    assert obj.maps["config"].max_entries == 1
    dispatchers = {p.name: p.section for p in obj.programs.values() if event_group(p.name) == "sys"}
    assert dispatchers == {"sys__enter": "raw_tracepoint/sys_enter",
                           "sys__exit": "raw_tracepoint/sys_exit"}
    assert obj.maps["events_on"].max_entries > max(SYSCALL_EVENTS.values())
    for prog in obj.programs.values():
        linked = link(obj.spec, prog.spec.function)
        assert len(linked.insns) % 8 == 0 and linked.insns
        for ref in linked.map_refs:
            assert linked.insns[ref.insn * 8] == 0x18 and ref.map in obj.maps


@needs_object
def test_map_fds_are_patched_into_ld_imm64():
    obj = Object.open(OBJECT)
    prog = next(p for p in (link(obj.spec, q.spec.function) for q in obj.programs.values())
                if p.map_refs)
    fds = {name: 100 + i for i, name in enumerate(obj.maps)}
    code = prog.with_fds(fds)
    for ref in prog.map_refs:
        offset = ref.insn * 8
        assert code[offset + 1] >> 4 == 1  # BPF_PSEUDO_MAP_FD
        assert int.from_bytes(code[offset + 4 : offset + 8], "little") == fds[ref.map]


@needs_object
def test_event_selection_and_aliases():
    obj = Object.open(OBJECT)
    assert select_events(obj, ["close", "openat"]) == {"close", "openat"}
    # syscall events: the dispatchers' handlers, both read at the exit
    assert [p.name for p in select_programs(obj, {"close", "openat"})] == ["sys__exit"]
    assert select_events(obj, ["tcp_connect_v6"]) == {"tcp"}
    assert [p.name for p in select_programs(obj, {"tcp"})] == ["tcp__state"]
    everything = select_events(obj, None)
    assert everything >= set(SYSCALL_EVENTS) | {"tcp", "security_bprm_check"}
    assert not everything & {"sys", "tree"}
    progs = [p.name for p in select_programs(obj, {"close", "do_exit"}, tree=True)]
    assert progs[0] == "tree__fork" and progs[-1] == "tree__exit"
    assert progs.index("do_exit__sched") < progs.index("tree__exit")
    with pytest.raises(ValueError, match=r"unknown event 'nope'; known events: .*tcp_accept"):
        select_events(obj, ["nope"])


@needs_object
def test_hooks_per_syscall_up_to_a_few_syscalls():
    obj = Object.open(OBJECT)
    hooked = {p.name: p.section for p in select_programs(obj, {"close", "openat"},
                                                         hooks="syscalls")}
    # read at the exit alone: an untraced syscall pays for one tracepoint, not two
    assert hooked == {
        "openat__exit_openat": "tracepoint/syscalls/sys_exit_openat",
        "close__exit_close": "tracepoint/syscalls/sys_exit_close",
    }
    accept = {p.name for p in select_programs(obj, {"accept"}, hooks="syscalls")}
    assert accept == {"accept__exit_accept", "accept__exit_accept4"}
    execve = [p.name for p in select_programs(obj, {"execve"}, hooks="syscalls")]
    assert "execve__exec" in execve and "sys__enter" not in execve  # exec strings as before
    assert {"execve__enter_execve", "execve__exit_execve"} <= set(execve)
    # the raw dispatchers: the entry one only for the events read at entry
    raw = [p.name for p in select_programs(obj, {"close", "openat"}, hooks="raw")]
    assert raw == ["sys__exit"]
    raw = [p.name for p in select_programs(obj, {"close", "execve"}, hooks="raw")]
    assert raw[:2] == ["sys__enter", "sys__exit"]
    raw = [p.name for p in select_programs(obj, {"close", "do_exit"}, hooks="raw")]
    assert raw == ["sys__exit", "do_exit__sched"]  # no syscall hooked for the exit status
    # per-syscall whatever the selection: an untraced syscall pays the kernel's check alone
    assert choose_hooks(obj, {"close", "openat", "socket", "connect", "bind"}, None) == "syscalls"
    assert choose_hooks(obj, select_events(obj, None), None) == "syscalls"
    assert choose_hooks(obj, {"tcp"}, None) == "raw"  # no syscall event: nothing to hook
    assert choose_hooks(obj, select_events(obj, None), "syscalls") == "syscalls"
    # before Linux 5.15 no bpf_task_pt_regs: the dispatchers, which are handed the registers
    old = (5 << 16) + (14 << 8)
    assert choose_hooks(obj, {"close"}, None, kernel=old) == "raw"
    assert choose_hooks(obj, {"close"}, "raw", kernel=old) == "raw"
    with pytest.raises(ValueError, match=r"bpf_task_pt_regs \(Linux 5.15\); this kernel is 5.14"):
        choose_hooks(obj, {"close"}, "syscalls", kernel=old)
    assert choose_hooks(obj, {"close"}, None, kernel=(6 << 16) + (1 << 8)) == "syscalls"
    with pytest.raises(ValueError, match="hooks must be one of syscalls, raw, got 'kprobe'"):
        choose_hooks(obj, {"close"}, "kprobe")


@pytest.mark.live
def test_verifier_rejection_names_program_and_shows_log():
    exit_r0_unset = bytes([0x95, 0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(LoaderError, match=r"(?s)'bad__prog'.*verifier log.*R0 !read_ok"):
        load_insns("bad__prog", "tracepoint/x/y", syscalls.BPF_PROG_TYPE_TRACEPOINT,
                   exit_r0_unset, "GPL")


@pytest.mark.live
def test_missing_tracepoint_is_a_clear_error():
    with pytest.raises(LoaderError, match="tracepoint nope/nothing does not exist"):
        tracefs.tracepoint_id("nope", "nothing")


def _close_events(records: list, pid: int, fd: int) -> list[ebpfwire.Event]:
    events = [ebpfwire.decode(r.data) for r in records if isinstance(r, Sample)]
    return [e for e in events if e.host_pid == pid and e.event_id == EV_CLOSE
            and e.args and e.args[0].value == fd]


@pytest.mark.live
@needs_object
def test_own_close_calls_arrive_decoded():
    bad_fd = 987_654
    with Monitor(events=["close"], pid=os.getpid(), ignore_self=False, page_count=8) as mon:
        for _ in range(5):
            with pytest.raises(OSError):
                os.close(bad_fd)
        got: list = []
        deadline = time.monotonic() + 10
        while len(_close_events(got, os.getpid(), bad_fd)) < 5 and time.monotonic() < deadline:
            got.extend(mon.reader.read_batch(timeout=0.5))
    events = _close_events(got, os.getpid(), bad_fd)
    assert len(events) == 5
    for ev in events:
        assert ev.argnum == 1 and ev.retval == -EBADF
        assert ev.host_ppid == os.getppid() and ev.pid_id == 0  # a host process
        assert ev.comm and len(ev.comm) <= 16
    raw = next(r.data for r in got if isinstance(r, Sample))
    assert len(raw) % 8 == 4  # 4 + raw_size is a multiple of 8: padding is handed through
    assert [e.ts for e in events] == sorted(e.ts for e in events)


@pytest.mark.live
@needs_object
def test_loss_accounting_is_exact():
    flood = 20_000
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    # only the child's events pass: it is our child, and our own process is ignored
    with Monitor(events=["close"], pid=os.getpid(), ignore_self=True, page_count=1) as mon:
        child = os.fork()
        if child == 0:  # pragma: no cover - child process
            try:
                os.sched_setaffinity(0, {0})  # one ring, so the final event flushes the LOST
                for _ in range(flood):
                    try:
                        os.close(-1)
                    except OSError:
                        pass
                os.write(done_w, b"1")
                os.read(go_r, 1)
                try:
                    os.close(-1)
                except OSError:
                    pass
            finally:
                os._exit(0)
        assert os.read(done_r, 1) == b"1"  # flood over, nothing read during it
        records = mon.reader.read_batch(timeout=0)
        os.write(go_w, b"1")  # one more event: the kernel writes the pending LOST first
        os.waitpid(child, 0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            more = mon.reader.read_batch(timeout=0.5)
            records.extend(more)
            samples = _close_events(records, child, -1)
            if len(samples) + mon.reader.lost_total >= flood + 1 and not more:
                break
        lost = sum(r.count for r in records if isinstance(r, Lost))
        assert lost == mon.reader.lost_total == mon.reader.lost[0]
    for fd in (go_r, go_w, done_r, done_w):
        os.close(fd)
    samples = _close_events(records, child, -1)
    assert len(samples) == len([r for r in records if isinstance(r, Sample)])
    assert lost > 0
    assert len(samples) + lost == flood + 1


def _wait_gone(ids: set[int], listing) -> set[int]:
    """Ids still listed; the kernel frees objects after an RCU grace period, so wait a bit."""
    deadline = time.monotonic() + 10
    while ids & set(listing()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return ids & set(listing())


@pytest.mark.live
@needs_object
def test_close_leaves_nothing_in_the_kernel():
    sleeper = subprocess.Popen(["sleep", "30"])  # --pid needs a process that is there
    fds_before = set(os.listdir("/proc/self/fd"))
    mon = Monitor(events=["close", "tcp"], pid=sleeper.pid)
    raw = syscalls.map_lookup(mon.map_fds["config"], bytes(4), MonitorConfig.sizeof())
    config = MonitorConfig.parse(raw)
    assert (config.ready, config.filter_tgid, config.ignore_tgid) == (1, sleeper.pid, os.getpid())
    assert (config.filter_comm, config.comm) == (0, bytes(16))
    assert syscalls.map_lookup(mon.map_fds["traced"], sleeper.pid.to_bytes(4, "little"), 1) == b"\1"
    assert config.upid_size > 0 and config.task_tgid > 0
    prog_ids = {syscalls.object_id(fd, True) for fd in mon.prog_fds.values()}
    map_ids = {syscalls.object_id(fd, False) for fd in mon.map_fds.values()}
    assert len(prog_ids) == len(mon.programs) and len(map_ids) == len(mon.object.maps)
    names = syscalls.loaded_programs()
    # kernel names are cut at 15 bytes: close__exit_close is close__exit_clo
    assert prog_ids <= set(names) and {"close__exit_clo", "tcp__state"} <= set(names.values())
    events_on = syscalls.map_lookup(mon.map_fds["events_on"], (3).to_bytes(4, "little"), 4)
    assert events_on == b"\1\0\0\0"  # close (event 3) on, openat (257) off
    assert syscalls.map_lookup(mon.map_fds["events_on"], (257).to_bytes(4, "little"), 4) == bytes(4)
    assert map_ids <= set(syscalls.loaded_maps())
    mon.close()
    mon.close()  # idempotent
    assert mon.reader.closed and not mon.prog_fds and not mon.map_fds
    assert _wait_gone(prog_ids, syscalls.loaded_programs) == set()
    assert _wait_gone(map_ids, syscalls.loaded_maps) == set()
    assert set(os.listdir("/proc/self/fd")) <= fds_before | {str(fd) for fd in range(3)}
    sleeper.kill()
    sleeper.wait()


CLANG = shutil.which("clang")
TEST_BPF = Path(__file__).resolve().parent / "bpf"


def _compile(tmp_path: Path, name: str) -> Path:
    if CLANG is None:
        pytest.skip("clang not installed: cannot build the test BPF objects")
    out = tmp_path / f"{name}.o"
    arch_inc = f"/usr/include/{platform.machine()}-linux-gnu"
    subprocess.run(
        [CLANG, "-O2", "-g", "-target", "bpf", f"-I{arch_inc}", "-c",
         str(TEST_BPF / f"{name}.bpf.c"), "-o", str(out)],
        check=True,
    )
    return out


@pytest.mark.live
def test_global_data_loads_and_counts(tmp_path: Path):
    """The object the old reader refused for its .bss loads through the one loader."""
    with Object.open(_compile(tmp_path, "global_data")) as obj:
        obj.load()
        obj.attach()
        before = obj.globals["counter"]
        for _ in range(3):
            with pytest.raises(OSError):
                os.close(987_654)
        assert obj.globals["counter"] >= before + 3


@pytest.mark.live
def test_bpf_to_bpf_call_is_linked(tmp_path: Path):
    """The object the old reader refused for its call loads, its callee linked after it."""
    with Object.open(_compile(tmp_path, "subprogram")) as obj:
        obj.load()
        prog = obj.programs["close__enter"]
        assert prog.fd is not None
        assert [name for name, _ in prog.linked.layout] == ["close__enter", "helper"]


@pytest.mark.live
def test_load_hands_back_what_was_built_meanwhile_and_the_first_refusal(tmp_path: Path):
    """Programs load on worker threads while the caller's thread runs ``while_loading``."""
    path = _compile(tmp_path, "objects_globals")
    with Object.open(path) as obj:
        threads: list[bool] = []
        with pytest.raises(LoaderError, match="the kernel rejected program 'broken'"):
            obj.load(while_loading=lambda: threads.append(
                threading.current_thread() is threading.main_thread()))
        assert threads == [True]
    with Object.open(path) as obj:
        names = [name for name in obj.programs if name != "broken"]
        assert obj.load(names, while_loading=lambda: "config") == "config"
        assert set(obj.prog_fds) == set(names)
    assert not obj.prog_fds and not obj.map_fds


def test_config_schema_mirrors_the_c_header():
    header = Path(__file__).resolve().parent.parent / "bpf" / "monitor_config.h"
    if not header.exists():
        pytest.skip(f"{header} absent")
    fields = re.findall(r"^\s*(?:__u32|char)\s+(\w+)(?:\[16\])?;", header.read_text(), re.M)
    assert [sc.name for sc in MonitorConfig.subcons] == fields


def test_unknown_event_fails_before_touching_the_kernel():
    with pytest.raises(ValueError, match="unknown event 'exec'"):
        Monitor(events=["exec"])


@pytest.mark.live
@needs_object
def test_unprivileged_load_says_what_is_needed():
    code = (  # import first: the interpreter's own files may not be readable by nobody
        "import os, importlib.readers\nfrom ebpfwire.loader import LoaderError, Monitor\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n    Monitor(events=['close'])\n"
        "except LoaderError as exc:\n    print(exc)\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": root}, check=True).stdout
    assert "Operation not permitted (needs root, or CAP_BPF + CAP_PERFMON)" in out


@pytest.mark.live
@needs_object
def test_reader_api_read_poll_iterate():
    bad_fd = 876_543
    pid = os.getpid()
    with Monitor(events=["close"], pid=pid, ignore_self=False, page_count=4) as mon:
        reader = mon.reader
        assert reader.wakeup_bytes == 4 * 4096 // 4
        assert set(reader.lost) == set(reader.cpus)

        def wanted(rec) -> bool:
            return bool(_close_events([rec], pid, bad_fd))

        for _ in range(3):
            with pytest.raises(OSError):
                os.close(bad_fd)
        first = None
        deadline = time.monotonic() + 10
        while first is None and time.monotonic() < deadline:
            rec = reader.read(timeout=0.5)  # below the watermark: found by the latency poll
            if rec is not None and wanted(rec):
                first = rec
        seen: list = []
        while len([r for r in seen if wanted(r)]) < 2 and time.monotonic() < deadline:
            reader.poll(seen.append, timeout=0.5)
        assert first is not None and len([r for r in seen if wanted(r)]) == 2
        with pytest.raises(OSError):
            os.close(bad_fd)
        for rec in reader:  # blocking iteration
            if wanted(rec):
                break
        assert reader.lost_total == 0
    assert reader.closed
    with pytest.raises(LoaderError, match="closed"):
        reader.read_batch(0)


def test_page_count_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        PerfReader(-1, page_count=3)
    with pytest.raises(ValueError, match="wakeup_bytes"):
        PerfReader(-1, page_count=1, wakeup_bytes=4096)


def _drain_until(mon: Monitor, done, timeout: float = 15) -> list[ebpfwire.Event]:
    """Decode every sample until ``done(events)`` holds (or the deadline passes)."""
    events: list[ebpfwire.Event] = []
    deadline = time.monotonic() + timeout
    while not done(events) and time.monotonic() < deadline:
        for rec in mon.reader.read_batch(timeout=0.2):
            if isinstance(rec, Sample):
                events.append(ebpfwire.decode(rec.data))
    return events


# the traced root waits for a line, then forks; its child forks and execs `cat FILE`
TREE_SCRIPT = """
import os, subprocess, sys
sys.stdin.readline()
r, w = os.pipe()
level2 = os.fork()
if level2 == 0:
    os.close(r)
    cat = subprocess.Popen(["cat", sys.argv[1]], stdout=subprocess.DEVNULL)
    os.write(w, b"%d %d" % (os.getpid(), cat.pid))
    cat.wait()
    os._exit(0)
os.close(w)
print(os.read(r, 64).decode(), flush=True)
os.waitpid(level2, 0)
"""


@pytest.mark.live
@needs_object
def test_pid_filter_follows_the_whole_tree(tmp_path: Path):
    target = tmp_path / "tree-target.txt"
    target.write_text("leaf\n")
    root = subprocess.Popen([sys.executable, "-c", TREE_SCRIPT, str(target)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with Monitor(events=["openat", "execve", "do_exit"], pid=root.pid) as mon:
            other = subprocess.Popen(["cat", str(target)], stdout=subprocess.DEVNULL)
            root.stdin.write("go\n")
            root.stdin.close()
            level2, level3 = map(int, root.stdout.readline().split())
            assert root.wait(timeout=15) == 0 and other.wait(timeout=15) == 0
            tree = {root.pid, level2, level3}
            events = _drain_until(mon, lambda evs: tree <= {
                e.host_pid for e in evs if e.name == "do_exit"})
    finally:
        if root.poll() is None:
            root.kill()
            root.wait()
    assert {e.host_pid for e in events} == tree  # nothing of `other`, nor of anyone else
    assert other.pid not in {e.host_pid for e in events}
    execs = [e for e in events if e.name == "execve" and e.host_pid == level3 and e.argnum == 2]
    assert [str(a) for a in execs[0].args[1].value] == ["cat", str(target)]
    opens = [e for e in events if e.name == "openat" and e.host_pid == level3
             and e.args[1].value == str(target)]
    assert len(opens) == 1 and opens[0].comm == "cat" and opens[0].retval >= 0
    assert {e.host_pid for e in events if e.name == "do_exit"} == tree


@pytest.mark.live
@needs_object
def test_comm_filter_keeps_only_that_task_name(tmp_path: Path):
    target = tmp_path / "comm-target.txt"
    target.write_text("x\n")
    renamed = tmp_path / "ebwcomm-cat"
    shutil.copy("/bin/cat", renamed)
    with Monitor(events=["openat", "do_exit"], comm="ebwcomm-cat") as mon:
        plain = subprocess.run(["cat", str(target)], capture_output=True)
        mine = subprocess.Popen([str(renamed), str(target)], stdout=subprocess.DEVNULL)
        assert mine.wait(timeout=15) == 0 and plain.returncode == 0
        events = _drain_until(mon, lambda evs: any(
            e.name == "do_exit" and e.host_pid == mine.pid for e in evs))
    assert events and {e.comm for e in events} == {"ebwcomm-cat"}
    opens = [e for e in events if e.name == "openat" and e.args[1].value == str(target)]
    assert [e.host_pid for e in opens] == [mine.pid]


def test_comm_and_pid_are_checked_before_touching_the_kernel():
    with pytest.raises(ValueError, match="comm must be 1 to 15 bytes"):
        Monitor(comm="a-name-of-16-byt")
    with pytest.raises(ValueError, match="pid must be between 1 and 4294967295, got -1"):
        Monitor(pid=-1)


@pytest.fixture
def created_ids(monkeypatch):
    """Ids of the programs and maps created while the test runs (ours only, not those of
    other monitors on the machine), recorded as each is created."""
    made: dict[str, set[int]] = {"progs": set(), "maps": set()}
    prog_load, map_create = syscalls.prog_load, syscalls.map_create

    def recording_prog_load(*args, **kwargs):
        fd, log = prog_load(*args, **kwargs)
        made["progs"].add(syscalls.object_id(fd, True))
        return fd, log

    def recording_map_create(*args, **kwargs):
        fd = map_create(*args, **kwargs)
        made["maps"].add(syscalls.object_id(fd, False))
        return fd

    monkeypatch.setattr(syscalls, "prog_load", recording_prog_load)
    monkeypatch.setattr(syscalls, "map_create", recording_map_create)
    return made


def _assert_nothing_left(made: dict[str, set[int]], fds_before: set[str]) -> None:
    assert made["progs"] and made["maps"]
    assert _wait_gone(made["progs"], syscalls.loaded_programs) == set()
    assert _wait_gone(made["maps"], syscalls.loaded_maps) == set()
    assert set(os.listdir("/proc/self/fd")) <= fds_before


@pytest.mark.live
@needs_object
def test_keyboard_interrupt_while_programs_load_leaves_nothing(created_ids, monkeypatch):
    fds_before = set(os.listdir("/proc/self/fd"))

    def interrupted(self, *args):  # the loads run on worker threads meanwhile
        deadline = time.monotonic() + 10
        while not created_ids["progs"] and time.monotonic() < deadline:
            time.sleep(0.001)  # until a program is in the kernel
        raise KeyboardInterrupt

    monkeypatch.setattr(Monitor, "_build_config", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Monitor()
    _assert_nothing_left(created_ids, fds_before)


@pytest.mark.live
@needs_object
def test_sigint_while_waiting_for_the_loads_leaves_nothing(created_ids, monkeypatch):
    """A Ctrl-C once the config is built, while the opening thread waits for the loads
    (with the kernel offsets cached the config is ready first: the interrupt lands in that
    wait): every load begun has ended when the KeyboardInterrupt comes out, none more
    starts, and nothing stays in the kernel."""
    import signal
    import threading

    fds_before = set(os.listdir("/proc/self/fd"))
    prog_load = syscalls.prog_load
    sent = threading.Event()
    begun: list[int] = []

    def load_after_the_interrupt(*args, **kwargs):
        begun.append(1)
        sent.wait(10)
        time.sleep(0.05)  # still loading when the main thread takes the interrupt
        return prog_load(*args, **kwargs)

    def ctrl_c() -> None:
        time.sleep(0.05)  # the main thread is waiting for the loads by then
        os.kill(os.getpid(), signal.SIGINT)
        sent.set()

    def config_then_ctrl_c(self, *args):
        threading.Thread(target=ctrl_c).start()
        return b""

    monkeypatch.setattr(syscalls, "prog_load", load_after_the_interrupt)
    monkeypatch.setattr(Monitor, "_build_config", config_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        Monitor(events=["close", "openat", "socket"], hooks="syscalls")
    assert len(begun) == len(created_ids["progs"]) >= 2  # each load begun had ended
    assert len(begun) < 6  # the loads not begun were not started after the interrupt
    _assert_nothing_left(created_ids, fds_before)


@pytest.mark.live
@needs_object
def test_sigint_while_programs_load_leaves_nothing(created_ids, monkeypatch):
    import signal
    import threading

    fds_before = set(os.listdir("/proc/self/fd"))
    timers: list[threading.Timer] = []
    prog_load = syscalls.prog_load

    def first_load_sends_sigint(*args, **kwargs):
        if not timers:  # a real Ctrl-C, 10 ms after the first program load began
            timers.append(threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)))
            timers[0].start()
        return prog_load(*args, **kwargs)

    monkeypatch.setattr(syscalls, "prog_load", first_load_sends_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            mon = Monitor()
            try:
                time.sleep(5)  # only if loading was quicker: the interrupt lands here
            finally:
                mon.close()
    finally:
        timers[0].cancel()
    _assert_nothing_left(created_ids, fds_before)


# ---- the ring buffer transport --------------------------------------------------------

RING_WORKLOAD = """
import os, subprocess, sys
print("ready", flush=True)
sys.stdin.readline()
for _ in range(3):
    os.close(os.open(sys.argv[1], os.O_RDONLY))
subprocess.run(["cat", sys.argv[1]], stdout=subprocess.DEVNULL, check=True)
try:
    os.close(-1)
except OSError:
    pass
"""


@pytest.mark.live
@needs_object
def test_ringbuf_gives_the_perf_events_in_one_order(tmp_path: Path):
    target = tmp_path / "ring-target.txt"
    target.write_text("ring\n")
    child = subprocess.Popen([sys.executable, "-c", RING_WORKLOAD, str(target)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    events = ["openat", "close", "execve", "security_bprm_check", "do_exit"]
    try:
        # the child's start-up (its imports open and close files) is over before either
        # monitor attaches: under load it overlapped the two attaches, and the perf
        # monitor, attached first, saw up to 48 more of its events than the ring's
        assert child.stdout.readline() == "ready\n"
        with (Monitor(events=events, pid=child.pid, transport="perf") as perf_mon,
              Monitor(events=events, pid=child.pid, transport="ringbuf") as ring_mon):
            assert ring_mon.reader.ring_size == ring_mon.ring_bytes == 8 << 20
            child.stdin.write("go\n")
            child.stdin.close()
            assert child.wait(timeout=15) == 0

            def child_exited(mon):
                return lambda evs: any(e.name == "do_exit" and e.host_pid == child.pid
                                       for e in evs)

            via_perf = _drain_until(perf_mon, child_exited(perf_mon))
            ring_records = []
            while not any(ebpfwire.decode(r.data).name == "do_exit"
                          and ebpfwire.decode(r.data).host_pid == child.pid
                          for r in ring_records):
                batch = ring_mon.reader.read_batch(timeout=1)
                assert batch, "the ring buffer gave nothing for 1 s"
                ring_records.extend(batch)
            assert ring_mon.reader.lost_total == 0 and perf_mon.reader.lost_total == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert all(isinstance(r, Sample) and r.cpu == 0xFFFFFFFF for r in ring_records)
    via_ring = [ebpfwire.decode(r.data) for r in ring_records]
    # as they came: in time order for each task (the workload's python and its cat run on
    # two CPUs at once, and a program reads the clock before it reserves its record)
    for pid in {e.host_pid for e in via_ring}:
        times = [e.ts for e in via_ring if e.host_pid == pid]
        assert times == sorted(times), pid
    via_perf.sort(key=lambda e: e.ts)
    assert len(via_ring) == len(via_perf) > 10

    def without_ts(e: ebpfwire.Event) -> dict:  # each monitor's program reads the clock
        d = e.to_dict()
        d.pop("ts")
        return d

    def by_task(evs: list) -> dict:   # each task's events in order: what both transports keep
        tasks: dict = {}
        for e in evs:
            tasks.setdefault(e.host_pid, []).append(without_ts(e))
        return tasks

    assert by_task(via_ring) == by_task(via_perf)
    names = {e.name for e in via_ring}
    assert names == set(events) and any(e.name == "openat" and e.args[1].value == str(target)
                                        for e in via_ring)


@pytest.mark.live
@needs_object
def test_ringbuf_samples_are_the_perf_bytes():
    bad_fd = 765_432
    pid = os.getpid()
    with (Monitor(events=["close"], pid=pid, ignore_self=False, page_count=4) as perf_mon,
          Monitor(events=["close"], pid=pid, ignore_self=False, transport="ringbuf",
                  ring_bytes=64 * 1024) as ring_mon):
        for _ in range(3):
            with pytest.raises(OSError):
                os.close(bad_fd)
        got = {}
        for name, mon in (("perf", perf_mon), ("ring", ring_mon)):
            recs: list = []
            deadline = time.monotonic() + 10
            while len(_close_events(recs, pid, bad_fd)) < 3 and time.monotonic() < deadline:
                recs.extend(mon.reader.read_batch(timeout=0.5))
            got[name] = [r.data for r in recs if _close_events([r], pid, bad_fd)]
    assert len(got["perf"]) == len(got["ring"]) == 3
    for perf_bytes, ring_bytes in zip(got["perf"], got["ring"], strict=True):
        assert len(ring_bytes) == len(perf_bytes) and len(ring_bytes) % 8 == 4
        assert ring_bytes[8:] == perf_bytes[8:]  # all but ts: padding zeros included


@pytest.mark.live
@needs_object
def test_ringbuf_loss_accounting_is_exact():
    flood = 20_000
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    with Monitor(events=["close"], pid=os.getpid(), transport="ringbuf",
                 ring_bytes=4096) as mon:
        child = os.fork()
        if child == 0:  # pragma: no cover - child process
            try:
                os.read(go_r, 1)
                for _ in range(flood):
                    try:
                        os.close(-1)
                    except OSError:
                        pass
                os.write(done_w, b"1")
            finally:
                os._exit(0)
        os.write(go_w, b"1")
        assert os.read(done_r, 1) == b"1"  # flood over, nothing read during it
        os.waitpid(child, 0)
        records: list = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            more = mon.reader.read_batch(timeout=0.5)
            records.extend(more)
            if len(_close_events(records, child, -1)) + mon.reader.lost_total >= flood:
                break
        lost = sum(r.count for r in records if isinstance(r, Lost))
        assert lost == mon.reader.lost_total
    for fd in (go_r, go_w, done_r, done_w):
        os.close(fd)
    samples = _close_events(records, child, -1)
    assert len(samples) == len([r for r in records if isinstance(r, Sample)])
    assert lost > 0 and samples
    assert len(samples) + lost == flood


@pytest.mark.live
@needs_object
def test_ringbuf_close_and_interrupt_leave_nothing(created_ids, monkeypatch):
    fds_before = set(os.listdir("/proc/self/fd"))
    mon = Monitor(events=["close", "execve"], transport="ringbuf", ring_bytes=1 << 16)
    assert syscalls.map_info(mon.events_map_fd).type == syscalls.BPF_MAP_TYPE_RINGBUF
    mon.close()
    _assert_nothing_left(created_ids, fds_before)

    def interrupted(self, *args):
        deadline = time.monotonic() + 10
        while not created_ids["progs"] and time.monotonic() < deadline:
            time.sleep(0.001)
        raise KeyboardInterrupt

    created_ids["progs"].clear()
    created_ids["maps"].clear()
    monkeypatch.setattr(Monitor, "_build_config", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Monitor(transport="ringbuf")
    _assert_nothing_left(created_ids, fds_before)


def test_transport_and_ring_bytes_are_checked_before_touching_the_kernel():
    with pytest.raises(ValueError, match="transport must be one of perf, ringbuf, got 'udp'"):
        Monitor(transport="udp")
    with pytest.raises(ValueError, match="ring_bytes must be between 1 and"):
        Monitor(transport="ringbuf", ring_bytes=0)
    with pytest.raises(ValueError, match="page_count or ring_bytes, not both"):
        Monitor(page_count=8, ring_bytes=1 << 20)


# ---- per-syscall tracepoints against the raw_syscalls dispatchers ----------------------

HOOKS_WORKLOAD = r"""
import ctypes, os, socket, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
sys.stdin.readline()
d = sys.argv[1]
path = os.path.join(d, "f")
libc.syscall(2, path.encode(), os.O_CREAT | os.O_WRONLY, 0o644)   # open(2): a new fd
os.close(os.open(path, os.O_RDONLY))
os.chown(path, 0, 0)
os.chown("f", 0, 0, dir_fd=os.open(d, os.O_RDONLY))
os.unlink(path)
os.mkdir(os.path.join(d, "sub"))
os.rmdir(os.path.join(d, "sub"))
open(path, "w").close()
os.unlink("f", dir_fd=os.open(d, os.O_RDONLY))
libc.syscall(165, b"none", os.path.join(d, "nothere").encode(), b"tmpfs", 0, None)  # mount
libc.syscall(166, os.path.join(d, "nothere").encode(), 0)                           # umount2
os.setgid(os.getgid())
os.setuid(os.getuid())
libc.syscall(101, 1, 0x7FFFFFFF, 0, 0)   # ptrace(PTRACE_PEEKTEXT) of no process: ESRCH
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
client = socket.create_connection(server.getsockname())
server.accept()[0].close()
client.close()
subprocess.run(["true"], check=True)
"""


@pytest.mark.live
@needs_object
def test_per_syscall_tracepoints_give_what_the_dispatchers_give(tmp_path: Path):
    """The same child seen by a monitor on each syscall's own tracepoints and by one on the
    raw_syscalls dispatchers at once: the same events, byte for byte but the clock."""
    events = sorted(set(SYSCALL_EVENTS) - {"execveat"})
    child = subprocess.Popen([sys.executable, "-c", HOOKS_WORKLOAD, str(tmp_path)],
                             stdin=subprocess.PIPE, text=True)
    seen = {}
    try:
        with (Monitor(events=events, pid=child.pid, hooks="syscalls") as own,
              Monitor(events=events, pid=child.pid, hooks="raw") as raw):
            assert own.hooks == "syscalls" and raw.hooks == "raw"
            assert not {p.name for p in own.programs} & {"sys__enter", "sys__exit"}
            child.stdin.write("go\n")
            child.stdin.close()
            assert child.wait(timeout=15) == 0
            for name, mon in (("syscalls", own), ("raw", raw)):
                seen[name] = _drain_until(mon, lambda evs: any(
                    e.name == "do_exit" and e.host_pid == child.pid for e in evs))
                assert mon.reader.lost_total == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    def by_task(evs: list) -> dict:
        tasks: dict = {}
        for e in sorted(evs, key=lambda e: e.ts):
            d = e.to_dict()
            d.pop("ts")
            tasks.setdefault(e.host_pid, []).append(d)
        return tasks

    assert by_task(seen["syscalls"]) == by_task(seen["raw"])
    names = {e.name for e in seen["syscalls"]}
    assert names == set(events) - {"umount"} | {"umount2"}  # each syscall event once at least
