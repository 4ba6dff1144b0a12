"""Issue #16 items 7, 9 and 10: closed or broken stdio, killed exports, empty event lists,
the export's file modes and the table's ``[exe]`` field."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_process import Stream

from ebpfwire import encode
from ebpfwire.capture import CaptureReader, CaptureWriteError, CaptureWriter, HostInfo
from ebpfwire.capture.snapshot import ContainerInfo
from ebpfwire.cli import main, record
from ebpfwire.cli.errors import UsageError
from ebpfwire.columnar.export import remove_stale_outputs

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
REAL = FIXTURES / "real-workload.ewcap"
DAMAGED = FIXTURES / "damaged.ewcap"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
EBPFWIRE = [sys.executable, "-m", "ebpfwire"]
CLOSED_STDOUT = "ebpfwire: cannot write standard output: Bad file descriptor\n"


def run(*argv: str | Path) -> tuple[int, str, str]:
    """main() in-process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def closing(*fds: int):
    """A preexec_fn closing `fds` in the child, as ``>&-`` / ``2>&-`` do in a shell."""
    def close() -> None:
        for fd in fds:
            os.close(fd)
    return close


def ebpfwire(*argv: str | Path, close: tuple[int, ...] = (), **kw) -> subprocess.CompletedProcess:
    """The command in a fresh process, with the standard descriptors `close` closed."""
    pipes = {1: "stdout", 2: "stderr"}
    for fd, name in pipes.items():
        if fd not in close:
            kw.setdefault(name, subprocess.PIPE)
    kw.setdefault("timeout", 120)
    return subprocess.run([*EBPFWIRE, *map(str, argv)], env=ENV, text=True,
                          preexec_fn=closing(*close), **kw)


# --------------------------------------------------------------------------- item 7

WRITERS = [  # every command whose output goes to stdout, and what it is given
    ("decode", "--format", "table", REAL), ("decode", "--format", "jsonl", REAL),
    ("decode", "--format", "json", REAL), ("decode", "--format", "kubearmor", REAL),
    ("decode", "--format", "jsonl", "--strict-exit", DAMAGED), ("decode", "--lenient", DAMAGED),
    ("info", REAL), ("info", "--json", DAMAGED), ("ps", REAL), ("ps", "--json", REAL),
    ("summary", REAL), ("summary", "--json", DAMAGED), ("--help",), ("--version",),
    ("decode", "--help"),
]


@pytest.mark.parametrize("argv", WRITERS, ids=lambda argv: " ".join(map(str, argv))[:40])
def test_a_closed_stderr_changes_nothing_on_stdout(argv):
    """Every message is dropped, never fatal: the output and the status are the usual."""
    usual = ebpfwire(*argv)
    assert "Traceback" not in usual.stderr
    closed = ebpfwire(*argv, close=(2,))
    assert closed.stdout == usual.stdout and closed.stdout
    assert closed.returncode == usual.returncode


def test_no_command_with_stderr_closed_still_prints_the_help():
    usual, closed = ebpfwire(), ebpfwire(close=(2,))
    assert closed.returncode == usual.returncode == 2
    assert closed.stdout == usual.stdout and "COMMAND" in closed.stdout


@pytest.mark.parametrize("argv", WRITERS + [("trace",), ("stats", "--duration", "0.5")],
                         ids=lambda argv: " ".join(map(str, argv))[:40])
def test_a_closed_stdout_is_status_74_and_one_line_before_any_work(argv):
    """trace and stats too: refused before anything is loaded, so no root is needed."""
    done = ebpfwire(*argv, close=(1,))
    assert done.returncode == 74 and done.stderr == CLOSED_STDOUT


def test_no_command_with_stdout_closed_is_a_usage_error():
    done = ebpfwire(close=(1,))
    assert done.returncode == 2
    assert done.stderr == "ebpfwire: usage: expected a command (see ebpfwire --help)\n"


@pytest.mark.parametrize("close", [(1,), (2,), (1, 2)])
def test_export_writes_its_output_whatever_is_closed(tmp_path: Path, close):
    out = tmp_path / "out.parquet"
    done = ebpfwire("export", REAL, "-o", out, close=close)
    assert done.returncode == 0
    if 2 not in close:
        assert done.stderr.startswith("ebpfwire: exported 147 events")
    assert pq.read_table(out).num_rows == 147
    assert os.listdir(tmp_path) == ["out.parquet"]


def test_a_closed_stdin_reads_as_empty():
    done = ebpfwire("decode", "-", close=(0,))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "<stdin>: not a readable capture" in done.stderr


@pytest.mark.parametrize("broken", ["pipe", "full"])
def test_an_unwritable_stderr_is_not_fatal(broken):
    usual = ebpfwire("decode", "--strict-exit", DAMAGED)
    assert usual.stderr.count("damaged record") == 2 and usual.returncode == 1
    if broken == "pipe":
        read, write = os.pipe()
        os.close(read)  # nobody reads: each message meets EPIPE
        try:
            done = ebpfwire("decode", "--strict-exit", DAMAGED, stderr=write)
        finally:
            os.close(write)
    else:
        with open("/dev/full", "w") as full:
            done = ebpfwire("decode", "--strict-exit", DAMAGED, stderr=full)
    assert done.stdout == usual.stdout and done.returncode == 1


def test_no_file_opened_later_takes_a_closed_descriptor():
    """With 2>&- a capture or Parquet file opened next would be fd 2, where any message
    (a library's, a warning) would be written into it."""
    read, write = os.pipe()
    code = ("import os\nfrom ebpfwire.cli.output import guard_stdio\nclosed = guard_stdio()\n"
            "fd = os.open(os.devnull, os.O_RDONLY)\n"
            f"os.write({write}, f'{{closed}} {{fd}} {{os.readlink(\"/proc/self/fd/2\")}}'"
            ".encode())\n")
    try:
        subprocess.run([sys.executable, "-c", code], env=ENV, timeout=60, pass_fds=(write,),
                       preexec_fn=closing(0, 1, 2), check=True)
    finally:
        os.close(write)
    with os.fdopen(read) as got:
        closed, fd, stderr = got.read().split()
    assert closed == "True" and int(fd) > 2 and stderr == "/dev/null"


def _fail_before_recording(monkeypatch, exc: BaseException) -> None:
    monkeypatch.setattr(record, "machine_arch", lambda: "x86_64")

    def write_context(*args, **kw):
        raise exc

    monkeypatch.setattr(record, "write_context", write_context)


def test_record_failing_before_recording_removes_its_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "r.ewcap"
    _fail_before_recording(monkeypatch, UsageError("cannot read the host's namespaces"))
    status, _, err = run("record", "-o", path)
    assert status == 2 and "namespaces" in err and not path.exists()


def test_record_on_a_full_disk_before_recording_removes_its_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "r.ewcap"
    _fail_before_recording(monkeypatch, CaptureWriteError(28, "No space left on device",
                                                          str(path), 0, 0))
    status, _, err = run("record", "-o", path)
    assert status == 74 and not path.exists()
    assert err == (f"ebpfwire: {path}: No space left on device: nothing recorded; the file "
                   "is removed\n")
    status, _, err = run("record", "-o", path)  # nothing blocks the next run
    assert status == 74 and "already exists" not in err


def test_record_appending_keeps_the_capture_on_a_full_disk(tmp_path: Path, monkeypatch):
    path = tmp_path / "r.ewcap"
    with CaptureWriter(path, arch="x86_64"):  # of this host and boot: --append takes it
        pass
    _fail_before_recording(monkeypatch, CaptureWriteError(28, "No space left on device",
                                                          str(path), 0, 0))
    status, _, err = run("record", "-o", path, "--append")
    assert status == 74 and "stays readable" in err and CaptureReader(path).header


def _short_recording(path: Path, close: tuple[int, ...], *extra: str):
    return ebpfwire("record", "-o", path, "--events", "close", "--duration", "0.5", *extra,
                    close=close)


@pytest.mark.live
@pytest.mark.parametrize("close", [(1,), (2,), (1, 2)])
def test_record_with_closed_stdio_records(tmp_path: Path, close):
    path = tmp_path / "r.ewcap"
    done = _short_recording(path, close)
    assert done.returncode == 0
    if 2 not in close:
        assert "Traceback" not in done.stderr and "recorded" in done.stderr
    info = json.loads(run("info", "--json", path)[1])
    assert info["context"]["processes"] > 0 and info["damaged_records"] == 0


@pytest.mark.live
def test_record_failing_with_stderr_closed_leaves_nothing_to_block_the_next_run(
        tmp_path: Path):
    path = tmp_path / "r.ewcap"
    done = _short_recording(path, (2,), "--events", "no_such_group")
    assert done.returncode == 2 and not path.exists()
    assert _short_recording(path, (2,)).returncode == 0 and path.exists()


@pytest.mark.live
def test_stats_and_trace_with_stderr_closed(tmp_path: Path):
    done = ebpfwire("stats", "--duration", "0.5", "--events", "close", close=(2,))
    assert done.returncode == 0 and done.stdout.startswith("syscalls counted over")
    proc = subprocess.Popen([*EBPFWIRE, "trace", "--events", "close", "--format", "jsonl"],
                            env=ENV, stdout=subprocess.PIPE, text=True,
                            preexec_fn=closing(2))
    deadline = time.monotonic() + 60
    line = ""
    os.set_blocking(proc.stdout.fileno(), False)
    while not line and time.monotonic() < deadline and proc.poll() is None:
        os.close(os.open(os.devnull, os.O_RDONLY))  # a close event of ours
        line = proc.stdout.readline()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and json.loads(line)["event"] == "close"


# --------------------------------------------------------------------------- item 9


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """real-workload's samples 1,000 times over (about 147,000 events), written anew."""
    path = tmp_path_factory.mktemp("big") / "big.ewcap"
    with CaptureReader(REAL) as reader:
        header = reader.header
        samples = [(record.cpu, record.data) for record in reader if hasattr(record, "data")]
    with CaptureWriter(path, arch=header.arch, host=HostInfo(header.kernel_release,
                       header.hostname, header.ncpus), boot_time_ns=header.boot_time_ns
                       ) as writer:
        for _ in range(1000):
            for cpu, data in samples:
                writer.write_sample(cpu, data)
    return path


def _children(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as file:
            found.update(map(int, file.read().split()))
    return found


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("parts", [False, True])
def test_a_killed_export_takes_its_workers_and_the_next_removes_its_leftover(
        tmp_path: Path, big: Path, parts: bool):
    out = tmp_path / "out.parquet"
    extra = ["--parts"] if parts else []
    proc = subprocess.Popen([*EBPFWIRE, "export", str(big), "-o", str(out), "--raw",
                             "--jobs", "2", *extra], env=ENV, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:  # under way: the temporary output exists and both workers are started
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        workers = _children(proc.pid)
        if len(workers) >= 2 and os.listdir(tmp_path):
            break
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=60)
    proc.stderr.close()
    deadline = time.monotonic() + 2
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(map(_running, workers)), "a worker outlived its killed parent"
    [left] = os.listdir(tmp_path)
    assert left.startswith(f".out.parquet.{proc.pid}.") and left.endswith(".tmp")
    done = ebpfwire("export", REAL, "-o", out, *extra)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"ebpfwire: {tmp_path / left}: removed: the temporary "
                                  "output of an export that was killed\n")
    assert os.listdir(tmp_path) == ["out.parquet"]
    assert pq.read_table(out).num_rows == 147


def _dead_pid() -> int:
    proc = subprocess.Popen(["/bin/true"])
    proc.wait(timeout=60)
    return proc.pid


def test_only_our_dead_leftovers_are_removed_and_no_link_is_followed(tmp_path: Path):
    dead, alive = _dead_pid(), os.getpid()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("keep me")

    def made(name: str, kind: str = "file", mode: int = 0o700) -> Path:
        path = tmp_path / name
        if kind == "file":
            path.write_bytes(b"PAR1")
        elif kind == "link":
            path.symlink_to(precious)
        else:
            path.mkdir()
            (path / "part-00000.parquet").write_bytes(b"PAR1")
            if kind == "dir-with-link":
                (path / "part-00001.parquet").symlink_to(precious / "keep")
            path.chmod(mode)
        return path

    removed = [made(f".out.parquet.{dead}.abcdefgh.tmp"),
               made(f".out.parquet.{dead}.ijklmnop.tmp", "dir")]
    kept = [made(f".out.parquet.{alive}.abcdefgh.tmp"),          # its writer runs
            made(f".out.parquet.{dead}.qrstuvwx.tmp", "link"),    # a link: never followed
            made(f".out.parquet.{dead}.link_dir.tmp", "dir-with-link"),
            made(f".out.parquet.{dead}.open_dir.tmp", "dir", 0o755),  # not a dir we made
            made(".out.parquet.abcdefgh.tmp"),                    # no pid
            made(f".other.parquet.{dead}.abcdefgh.tmp"),          # another output
            made(f".out.parquet.{dead}.abcdefgh.tmp.bak")]
    theirs = made(f".out.parquet.{dead}.yzabcdef.tmp")
    os.chown(theirs, 65534, 65534)  # not ours (the tests run as root where this matters)
    kept.append(theirs)
    got = remove_stale_outputs(tmp_path / "out.parquet")
    assert sorted(got) == sorted(map(str, removed))
    assert not any(path.exists() for path in removed)
    assert all(os.path.lexists(path) for path in kept)
    assert (precious / "keep").read_text() == "keep me"


# --------------------------------------------------------------------------- item 10


@pytest.mark.parametrize("argv", [
    ("record", "-o", "{tmp}/r.ewcap", "--events", ""), ("trace", "--events", " , "),
    ("stats", "--events", ""), ("decode", "--event", ""), ("ps", str(REAL), "--event", ","),
    ("summary", str(REAL), "--event", ""), ("export", str(REAL), "-o", "{tmp}/o", "--event", ""),
])
def test_an_empty_event_list_is_a_usage_error(tmp_path: Path, argv):
    """In a subprocess with a timeout: were it taken as every event, trace would run on."""
    done = ebpfwire(*(arg.format(tmp=tmp_path) for arg in argv), timeout=60)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1
    assert "expected a comma list of one or more names" in done.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("parts", [False, True])
def test_export_outputs_are_private_whatever_the_umask(tmp_path: Path, parts: bool):
    out = tmp_path / "out"
    old = os.umask(0o777)
    try:
        status, _, err = run("export", REAL, "-o", out, "--jobs", "1",
                             *(["--parts"] if parts else []))
    finally:
        os.umask(old)
    assert status == 0, err
    files = sorted(out.iterdir()) if parts else [out]
    assert files and all(path.stat().st_mode & 0o777 == 0o600 for path in files)
    if parts:
        assert out.stat().st_mode & 0o777 == 0o700


SPOOF = '/tmp/x] openat(AT_FDCWD, "/etc/shadow", O_RDONLY) = 3 [\\'


def test_the_table_quotes_the_program_and_an_odd_container_id(tmp_path: Path):
    """As strace shows strings: quoted, with quotes and backslashes escaped, so no program
    name can end its brackets and forge the rest of its line."""
    s = Stream()
    s.ts = 10**9
    ns = {"pid_id": 11, "mnt_id": 12}
    path = tmp_path / "spoof.ewcap"
    with CaptureWriter(path, host=HostInfo("6.18.0", "h", 2), boot_time_ns=0) as writer:
        writer.write_container(ContainerInfo(0, 0, "", "host"))
        writer.write_container(ContainerInfo(11, 12, "] x [", "docker"))
        for event in [*s.exec(200, 100, "bash", SPOOF, ["x"], **ns),
                      s.openat(200, 100, "x", "/etc/hosts", **ns)]:
            writer.write_sample(0, encode(event))
    status, out, _ = run("decode", "--utc", path)
    last = out.splitlines()[-1]
    assert status == 0
    assert last.endswith(' "x" 200 ["/tmp/x] openat(AT_FDCWD, \\"/etc/shadow\\", O_RDONLY) = 3 '
                         '[\\\\" container "] x ["] openat(AT_FDCWD, "/etc/hosts", '
                         'O_RDONLY) = 3')


@pytest.mark.live
@pytest.mark.parametrize("command", ["record", "trace"])
def test_a_pid_that_does_not_exist_is_refused_and_nothing_is_left(tmp_path, command):
    """record/trace --pid of a missing pid recorded nothing forever without a word."""
    out = tmp_path / "x.ewcap"
    argv = [sys.executable, "-m", "ebpfwire", command, "--pid", "4194304"]
    if command == "record":
        argv += ["-o", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ENV)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "ebpfwire: pid 4194304: no such process\n"
    assert not out.exists()
