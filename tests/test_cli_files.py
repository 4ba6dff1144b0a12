"""The command line and files: output creation, full disks, stdout errors, option checks."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_cli import (
    BOOT,
    DAMAGED,
    ENV,
    HOST,
    SAMPLE,
    _lines,
    event,
    one_error_line,
    run,
)

from ebpfwire import Arg, ArgType, encode, machine
from ebpfwire.capture import CaptureReader, CaptureWriter
from ebpfwire.cli import record

EBPFWIRE = [sys.executable, "-m", "ebpfwire"]


def ebpfwire(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*EBPFWIRE, *argv], capture_output=True, text=True, env=ENV,
                          timeout=120, **kw)


# --------------------------------------------------------------------------- stdout errors


@pytest.mark.parametrize("argv", [
    ("decode", str(SAMPLE)), ("decode", "--format", "jsonl", str(SAMPLE)),
    ("decode", "--format", "json", str(SAMPLE)), ("decode", "--lenient", str(DAMAGED)),
    ("info", str(SAMPLE)), ("info", "--json", str(SAMPLE)),
])
def test_a_full_stdout_is_one_line_and_status_74(argv):
    with open("/dev/full", "w") as full:
        done = subprocess.run([*EBPFWIRE, *argv], stdout=full, stderr=subprocess.PIPE,
                              text=True, env=ENV, timeout=120)
    assert done.returncode == 74, done.stderr
    assert "Traceback" not in done.stderr and "Exception" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "does not decode" not in line
             and "damaged record" not in line]
    assert lines == ["ebpfwire: cannot write standard output: No space left on device"]


# --------------------------------------------------------------------------- option checks


@pytest.mark.parametrize("argv, expected", [
    (("record", "-o", "X", "--ring-pages", "4194304"),
     "--ring-pages: expected a power of two from 1 to 65536, found 4194304"),
    (("record", "-o", "X", "--ring-pages", "0"), "--ring-pages: expected a power of two"),
    (("record", "-o", "X", "--pid", "-1"), "--pid: expected a pid from 1 to 4194304, found -1"),
    (("trace", "--pid", "4294967296"), "--pid: expected a pid from 1 to 4194304"),
    (("trace", "--pid", "12x"), "--pid: expected an integer, found '12x'"),
    (("decode", "--pid", "0"), "--pid: expected a pid"),
    (("record", "-o", "X", "--duration", "-1"), "--duration: expected seconds above 0"),
    (("record", "-o", "X", "--duration", "0"), "--duration: expected seconds above 0"),
    (("record", "-o", "X", "--duration", "inf"), "--duration: expected seconds above 0"),
    (("record", "-o", "X", "--duration", "nan"), "--duration: expected seconds above 0"),
    (("record", "-o", "X", "--force", "--append"), "not allowed with argument"),
    (("record", "-o", "X", "--ring-bytes", "1000"),
     "--ring-bytes: expected a power of two from 4096 (one page) to 1073741824, found 1000"),
    (("record", "-o", "X", "--ring-bytes", "12288"), "--ring-bytes: expected a power of two"),
    (("trace", "--ring-bytes", str(1 << 31)), "--ring-bytes: expected a power of two"),
    (("trace", "--ring-bytes", "4096", "--ring-pages", "1"), "not allowed with argument"),
    (("record", "-o", "X", "--transport", "xdp"), "--transport: invalid choice: 'xdp'"),
    (("decode", "--format", "xml"), "--format: invalid choice: 'xml'"),
])
def test_numeric_and_other_options_are_checked_before_anything_runs(tmp_path, argv, expected):
    argv = tuple(str(tmp_path / "x.ewcap") if a == "X" else a for a in argv)
    line = one_error_line(*run(*argv)[::2])
    assert expected in line and "--help" in line
    assert not (tmp_path / "x.ewcap").exists()


def test_option_errors_in_a_subprocess_are_one_line():
    done = ebpfwire("record", "-o", "/nonexistent/x", "--pid", "-1")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr and "usage:" not in done.stderr


# --------------------------------------------------------------------------- output creation


@pytest.fixture
def no_monitor(monkeypatch):
    """record must decide about its output before any monitor is loaded."""
    def refuse(args):
        raise AssertionError("the monitor was loaded before the output was checked")
    monkeypatch.setattr(record, "open_monitor", refuse)


def test_record_refuses_a_symlink_and_leaves_its_target_alone(tmp_path: Path, no_monitor):
    victim = tmp_path / "victim.conf"
    victim.write_text("keep me\n")
    (tmp_path / "trace.ewcap").symlink_to("victim.conf")
    line = one_error_line(*run("record", "-o", str(tmp_path / "trace.ewcap"))[::2])
    assert "is a symbolic link" in line and "--force" in line
    dangling = tmp_path / "dangling.ewcap"
    dangling.symlink_to(tmp_path / "not-yet")
    assert "is a symbolic link" in one_error_line(*run("record", "-o", str(dangling))[::2])
    assert not (tmp_path / "not-yet").exists()
    line = one_error_line(*run("record", "-o", str(tmp_path / "trace.ewcap"), "--append")[::2])
    assert "symbolic link" in line
    assert victim.read_text() == "keep me\n" and oct(victim.stat().st_mode)[-3:] != "600"


def test_record_refuses_an_existing_capture(tmp_path: Path, no_monitor):
    path = tmp_path / "run.ewcap"
    path.write_bytes(SAMPLE.read_bytes())
    line = one_error_line(*run("record", "-o", str(path))[::2])
    assert "already exists; --force replaces it, --append adds" in line
    assert path.read_bytes() == SAMPLE.read_bytes()
    assert "is a directory" in one_error_line(*run("record", "-o", str(tmp_path),
                                                   "--force")[::2])


def test_append_needs_a_capture_of_this_machine(tmp_path: Path, no_monitor):
    assert "no such file" in one_error_line(
        *run("record", "-o", str(tmp_path / "none"), "--append")[::2])
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n")
    assert "not a capture to append to" in one_error_line(
        *run("record", "-o", str(text), "--append")[::2])
    hashed = tmp_path / "hash.ewcap"
    CaptureWriter(hashed, layout="hash", host=HOST, boot_time_ns=BOOT).close()
    assert "a hash capture" in one_error_line(*run("record", "-o", str(hashed), "--append")[::2])


def test_append_refuses_a_capture_of_another_host_or_boot(tmp_path: Path, no_monitor):
    """New samples are timed from this boot: under another boot's (or host's) header
    their wall-clock times would be wrong."""
    arch = record.machine_arch()
    other_host = tmp_path / "other-host.ewcap"
    CaptureWriter(other_host, arch=arch, host=HOST).close()
    line = one_error_line(*run("record", "-o", str(other_host), "--append")[::2])
    assert f"a capture of host {HOST.hostname!r}" in line and "this host and boot" in line
    earlier = tmp_path / "earlier-boot.ewcap"
    CaptureWriter(earlier, arch=arch, boot_time_ns=machine.boot_time_ns() - 3600 * 10**9
                  ).close()
    line = one_error_line(*run("record", "-o", str(earlier), "--append")[::2])
    assert "a capture of another boot of this host (its boot time is 3600 s from" in line
    assert other_host.stat().st_size and earlier.stat().st_size  # both left as they were


def test_monitor_failure_removes_only_the_file_this_run_created(tmp_path: Path, monkeypatch):
    def fail(args):
        raise record.UsageError("no BPF here")
    monkeypatch.setattr(record, "open_monitor", fail)
    path = tmp_path / "new.ewcap"
    assert "no BPF here" in one_error_line(*run("record", "-o", str(path))[::2])
    assert not path.exists()
    arch = record.machine_arch()
    with CaptureWriter(tmp_path / "mine.ewcap", arch=arch):  # this host and boot
        pass
    assert "no BPF here" in one_error_line(
        *run("record", "-o", str(tmp_path / "mine.ewcap"), "--append")[::2])
    assert (tmp_path / "mine.ewcap").exists()


def test_create_output_makes_a_0600_capture_header_first(tmp_path: Path):
    path = tmp_path / "x.ewcap"
    out = record.create_output(str(path), force=False, append=False, arch="x86_64")
    try:
        assert (path.stat().st_mode & 0o777) == 0o600
        assert CaptureReader(path).header.layout == "classic"  # readable before any record
    finally:
        out.writer.close()


def test_follow_waits_for_a_file_that_does_not_exist_yet(tmp_path: Path):
    path = tmp_path / "later.ewcap"
    proc = subprocess.Popen([*EBPFWIRE, "decode", "--follow", "--format", "jsonl", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    got: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, got), daemon=True).start()
    try:
        note = proc.stderr.readline()
        assert note == f"ebpfwire: {path}: waiting for the file to appear (Ctrl-C stops)\n"
        with CaptureWriter(path, host=HOST, boot_time_ns=BOOT, buffer_size=0) as writer:
            writer.write_sample(0, encode(event(1, 3, 9, "w", Arg(ArgType.INT_T, 42))))
            seen = json.loads(got.get(timeout=60))
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=60)
    assert seen["args"][0]["value"] == 42
    assert status == 130 and "Traceback" not in proc.stderr.read()


# --------------------------------------------------------------------------- live


# Closes made while a recording runs, so that it never depends on what else the machine does.
CLOSER = ("import os, time\nend = time.monotonic() + 4\nwhile time.monotonic() < end:\n"
          "    try:\n        os.close(-1)\n    except OSError:\n        time.sleep(0.001)\n")


def _record_close_events(path: Path, *extra: str) -> subprocess.CompletedProcess:
    closer = subprocess.Popen([sys.executable, "-c", CLOSER])
    try:
        return ebpfwire("record", "-o", str(path), "--events", "close", "--duration", "1",
                        *extra)
    finally:
        closer.kill()
        closer.wait()


@pytest.mark.live
def test_record_symlink_repro_force_and_append(tmp_path: Path):
    """The issue's repro: nobody plants a link in a 0777 directory; root records there."""
    where = Path(f"/tmp/ebpfwire-link-{os.getpid()}")
    where.mkdir(mode=0o777)
    where.chmod(0o777)
    try:
        victim = where / "victim.conf"
        victim.write_text("keep me\n")
        code = f"import os; os.setgid(65534); os.setuid(65534); os.symlink('victim.conf', " \
               f"{str(where / 'trace.ewcap')!r})"
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        target = where / "trace.ewcap"
        done = _record_close_events(target)
        assert done.returncode == 2 and "symbolic link" in done.stderr
        assert done.stderr.count("\n") == 1  # refused before "recording to"
        assert victim.read_text() == "keep me\n"
        done = _record_close_events(target, "--force")
        assert done.returncode == 0, done.stderr
        assert not target.is_symlink() and victim.read_text() == "keep me\n"
        assert (target.stat().st_mode & 0o777) == 0o600
        first = json.loads(run("info", "--json", str(target))[1])["samples"]
        assert first > 0
        done = _record_close_events(target)
        assert done.returncode == 2 and "already exists" in done.stderr
        done = _record_close_events(target, "--append")
        assert done.returncode == 0, done.stderr
        info = json.loads(run("info", "--json", str(target))[1])
        assert info["samples"] > first and info["damaged_records"] == 0
    finally:
        for child in where.iterdir():
            child.unlink()
        where.rmdir()


@pytest.mark.live
def test_record_on_a_full_disk_says_what_the_file_holds(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        path = mount / "x.ewcap"
        proc = subprocess.Popen([*EBPFWIRE, "record", "-o", str(path), "--events", "close",
                                 "--duration", "60"], stderr=subprocess.PIPE, text=True, env=ENV)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            for _ in range(200):  # close events of our own, until the disk is full
                os.close(os.open("/dev/null", os.O_RDONLY))
            time.sleep(0.01)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 74, err
        assert "Traceback" not in err
        last = err.splitlines()[-1]
        assert "No space left on device: recording stopped; the file holds" in last
        held = int(last.split("the file holds ")[1].split()[0])
        status, out, _ = run("info", "--json", str(path))
        info = json.loads(out)
        assert status == 0 and info["samples"] == held > 0
        assert info["damaged_samples"] == 0 and info["damaged_records"] <= 1  # a cut tail
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# --------------------------------------------------------------------------- terminal safety

HOSTILE = "\x1b[2J\nforged line\r\x07\u202e"


def _no_raw_controls(text: str, lines: int | None = None) -> None:
    assert not any(c in text for c in "\x1b\r\x07\u202e"), repr(text)
    if lines is not None:
        assert text.count("\n") == lines, text


def test_info_escapes_what_the_header_says(tmp_path: Path):
    from ebpfwire.capture import HostInfo

    path = tmp_path / "hostile.ewcap"
    with CaptureWriter(path, host=HostInfo(HOSTILE, HOSTILE, 2), boot_time_ns=BOOT) as writer:
        writer.write_sample(0, encode(event(1, 3, 9, "w", Arg(ArgType.INT_T, 1))))
    status, out, err = run("info", str(path))
    assert status == 0 and err == ""
    _no_raw_controls(out)
    host = next(line for line in out.splitlines() if line.startswith("host:"))
    assert host == ("host:         \\x1b[2J\\nforged line\\r\\x07\\u202e (kernel "
                    "\\x1b[2J\\nforged line\\r\\x07\\u202e, 2 cpus)")
    assert not any(line.startswith("forged") for line in out.splitlines())
    status, out, _ = run("info", "--json", str(path))
    assert json.loads(out)["hostname"] == HOSTILE  # JSON stays lossless


def test_table_escapes_comm_paths_and_argv(tmp_path: Path):
    path = tmp_path / "hostile.ewcap"
    execve = event(1, 59, 9, HOSTILE[:15], Arg(ArgType.STR_T, "/bin/" + HOSTILE),
                   Arg(ArgType.STR_ARR_T, ["ls", HOSTILE]))
    with CaptureWriter(path, host=HOST, boot_time_ns=BOOT) as writer:
        writer.write_sample(0, encode(execve))
    status, out, err = run("decode", "--utc", str(path))
    assert status == 0 and err == ""
    _no_raw_controls(out, lines=1)
    assert '"\\x1b[2J\\nforged lin" 9 execve("/bin/\\x1b[2J\\nforged line\\r\\x07\\u202e", ' in out


def test_error_lines_escape_file_names_and_capture_strings(tmp_path: Path):
    path = tmp_path / f"odd{HOSTILE}.ewcap"
    status, _, err = run("decode", str(path))
    line = one_error_line(status, err)
    _no_raw_controls(err, lines=1)
    assert "odd\\x1b[2J\\nforged line" in line
    with CaptureWriter(path, layout=HOSTILE, host=HOST, boot_time_ns=BOOT):
        pass
    status, _, err = run("decode", str(path))
    one_error_line(status, err)
    _no_raw_controls(err, lines=1)


# --------------------------------------------------------------------------- memory


def test_output_holds_at_most_write_limit_characters():
    from ebpfwire.cli import output

    class Sink:
        writes: list[int] = []

        def write(self, text: str) -> None:
            self.writes.append(len(text))

        def flush(self) -> None:
            pass

    sink = Sink()
    out = output.Output("jsonl", sink)  # type: ignore[arg-type]
    sizes = [10, 300_000, 5, 2_000_000, 1, 700_000, 700_000, 3] * 5
    for size in sizes:
        out.line("x" * size)
        assert out.pending < output.WRITE_LIMIT
    out.close()
    assert sum(sink.writes) == sum(sizes) + len(sizes)  # every line and its newline
    assert max(sink.writes) <= output.WRITE_LIMIT + 2_000_001


def _big_sample(ts: int) -> bytes:
    """A valid execve entry with a ~1 MiB argv (260 strings of 4,000 bytes)."""
    import struct

    from ebpfwire import Event
    from ebpfwire.wire.layouts import get_layout

    header = encode(Event(ts, 0, 0, 1, 9, 1, 9, 0, 59, 1, 0, "big", []))
    item = b"x" * 4000 + b"\0"
    one = bytes([ArgType.STR_T]) + struct.pack("<i", len(item)) + item
    return (header[:get_layout("classic").size] + bytes([ArgType.STR_ARR_T]) + one * 260
            + bytes([ArgType.STR_ARR_T]))


def _big_capture(path: Path, count: int) -> Path:
    with CaptureWriter(path, host=HOST, boot_time_ns=BOOT) as writer:
        for ts in range(count):
            writer.write_sample(ts % 2, _big_sample(ts + 1))
    return path


def _decode_peak_mib(path: Path, fmt: str, stdin: bool = False) -> float:
    """Peak RSS of ``decode --format fmt`` of ``path`` (on standard input: event by event).
    A child keeps the peak RSS of the process it was forked from (Linux carries it over
    exec), so a small wrapper process starts decode and reports the peak of decode alone,
    whatever this test process has grown to."""
    wrapper = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], "
               "stdout=subprocess.DEVNULL); _, status, usage = os.wait4(p.pid, 0); "
               "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)")
    with open(path if stdin else os.devnull, "rb") as given:
        proc = subprocess.run([sys.executable, "-c", wrapper, *EBPFWIRE, "decode", "--format",
                               fmt, "-" if stdin else str(path)], capture_output=True,
                              text=True, env=ENV, stdin=given)
    status, maxrss = map(int, proc.stdout.split())
    assert status == 0, proc.stderr
    return maxrss / 1024


@pytest.mark.parametrize("fmt", ["jsonl", "table"])
def test_decode_memory_stays_flat_with_1_mib_samples(tmp_path: Path, fmt: str):
    """Event by event (jsonl on standard input; the table always is)."""
    from ebpfwire import decode
    from ebpfwire.capture import MAX_PAYLOAD

    sample = _big_sample(1)
    assert MAX_PAYLOAD - 8192 < len(sample) < MAX_PAYLOAD and decode(sample).argnum == 1
    peak_mib = _decode_peak_mib(_big_capture(tmp_path / "big.ewcap", 200), fmt,
                                stdin=fmt == "jsonl")
    print(f"decode --format {fmt}: 200 samples of ~1 MiB, peak RSS {peak_mib:.0f} MiB")
    assert peak_mib < 120  # 626-715 MiB with the old 2,048-line buffer, 58 MiB bounded


def _big_execs(path: Path, count: int) -> Path:
    """Execs of ~1 MiB argvs (260 strings of 4,000 bytes): at each exec's result, a
    KubeArmor log whose Resource is the program and its argv (as much of it as the
    process table keeps: ~29 KB)."""
    import struct

    from test_process import Stream

    stream = Stream()
    small = bytes([ArgType.STR_ARR_T, ArgType.STR_T]) + struct.pack("<i", 4) + b"big\0"
    item = b"x" * 4000 + b"\0"
    big = bytes([ArgType.STR_ARR_T]) + (bytes([ArgType.STR_T]) + struct.pack(
        "<i", len(item)) + item) * 260
    with CaptureWriter(path, host=HOST, boot_time_ns=BOOT) as writer:
        for pid in range(100, 100 + count):
            entry, *rest = stream.exec(pid, 1, "sh", "/bin/big", ["big"])
            writer.write_sample(0, encode(entry).replace(small, big))
            for event in rest:
                writer.write_sample(0, encode(event))
    return path


def test_decode_bulk_kubearmor_memory_stays_flat_with_1_mib_samples(tmp_path: Path):
    """The bulk path's KubeArmor logs of 1 MiB exec entries: what it holds is bounded in
    bytes, whatever the capture's size."""
    small = _decode_peak_mib(_big_execs(tmp_path / "200.ewcap", 200), "kubearmor")
    large = _decode_peak_mib(_big_execs(tmp_path / "400.ewcap", 400), "kubearmor")
    print(f"decode --format kubearmor, bulk: 200 and 400 execs of ~1 MiB, peak RSS "
          f"{small:.0f} and {large:.0f} MiB")
    assert small < 260 and large < small * 1.1 + 8


def test_the_layout_check_holds_samples_bounded_in_bytes(tmp_path: Path):
    """Samples that do not decode (strings longer than the writer's 4,096 bytes) held while
    decode checks the layout: at most HOLD_BYTES of them, whatever their count (361 MiB
    for 400 such samples of 1 MiB when the hold was bounded in samples only)."""
    import struct

    from test_process import Stream

    stream = Stream()
    path = tmp_path / "long-paths.ewcap"
    with CaptureWriter(path, host=HOST, boot_time_ns=BOOT) as writer:
        for ts in range(400):
            long = b"/" + b"x" * ((1 << 20) - 200) + b"\0"
            writer.write_sample(ts % 2, encode(stream.openat(9, 1, "big", "/p")).replace(
                struct.pack("<i", 3) + b"/p\0", struct.pack("<i", len(long)) + long))
    peak = _decode_peak_mib(path, "jsonl", stdin=True)
    print(f"decode, 400 undecodable samples of 1 MiB, event by event: peak RSS {peak:.0f} MiB")
    assert peak < 160


def test_decode_bulk_memory_stays_flat_with_1_mib_samples(tmp_path: Path):
    """The bulk path (a file of 32 MiB or more): what it holds is bounded in bytes (the
    reorder window's 64 MiB, a read block, a take's lines) above its imports (~85 MiB of
    numpy and pyarrow), whatever the capture's size or its samples' (881 MiB for 200 such
    samples while its takes were bounded in records only)."""
    small = _decode_peak_mib(_big_capture(tmp_path / "200.ewcap", 200), "jsonl")
    large = _decode_peak_mib(_big_capture(tmp_path / "400.ewcap", 400), "jsonl")
    print(f"decode --format jsonl, bulk: 200 and 400 samples of ~1 MiB, peak RSS "
          f"{small:.0f} and {large:.0f} MiB")
    assert small < 220 and large < small * 1.1 + 8


@pytest.mark.live
def test_docs_example_record_and_follow_at_once(tmp_path: Path):
    """`ebpfwire record -o run.ewcap & ebpfwire decode --follow run.ewcap`, started together."""
    path = tmp_path / "run.ewcap"
    follower = subprocess.Popen([*EBPFWIRE, "decode", "--follow", "--format", "jsonl", str(path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=ENV)
    recorder = subprocess.Popen([*EBPFWIRE, "record", "-o", str(path), "--events", "execve",
                                 "--duration", "60"], stderr=subprocess.PIPE, text=True, env=ENV)
    got: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(follower.stdout, got), daemon=True).start()
    try:
        assert recorder.stderr is not None
        assert recorder.stderr.readline().startswith("ebpfwire: recording to")
        true = subprocess.Popen(["/bin/true"])
        true.wait(timeout=30)
        seen = None
        while seen is None:
            line = json.loads(got.get(timeout=30))
            if line.get("host_pid") == true.pid and line["event"] == "execve":
                seen = line
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=60)
    assert recorder.returncode == 0 and follower.returncode == 130
    assert "Traceback" not in follower.stderr.read()
