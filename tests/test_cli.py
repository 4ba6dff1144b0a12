"""The command line: every command and option, bad input, damage, follow, pipes, live runs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebpfwire import Arg, ArgType, DecodeError, Event, SockAddr, decode, encode
from ebpfwire.capture import CaptureReader, CaptureWriter, HostInfo
from ebpfwire.cli import live, main, output
from ebpfwire.output.render import TableRenderer, event_json, sample_json
from ebpfwire.wire import strategies as wire
from ebpfwire.wire.layouts import get_layout

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
ALL_TYPES = FIXTURES / "all-types.ewcap"
DAMAGED = FIXTURES / "damaged.ewcap"
SAMPLE = ROOT / "ebpfwire" / "data" / "sample.ewcap"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
HOST = HostInfo("6.18.0-test", "test-host", 2)
BOOT = 1_700_000_000_000_000_000
TABLE_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{6} \S+ \d+(/\d+)?( \[[^]]+\])? [\w<]")


def run(*argv: str, stdin: bytes | None = None, tty: bool = False) -> tuple[int, str, str]:
    """main() in-process: (status, stdout, stderr)."""
    out, err = io.StringIO(), _Stderr(tty)
    old_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(list(argv))
    finally:
        sys.stdin = old_stdin
    return status, out.getvalue(), err.getvalue()


class _Stderr(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def one_error_line(status: int, err: str) -> str:
    assert status == 2
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ebpfwire: ")
    return lines[0]


def jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def event(ts: int, event_id: int = 3, pid: int = 77, comm: str = "t", *args: Arg,
          retval: int = 0) -> Event:
    return Event(ts, 0, 0, 1, pid, 1, pid, 0, event_id, len(args), retval, comm, list(args))


def write_capture(path: Path, count: int, layout: str = "classic") -> list[int]:
    """A capture of ``count`` close(i) events; returns each record's file offset."""
    offsets = []
    with open(path, "wb") as f:
        writer = CaptureWriter(f, layout=layout, host=HOST, boot_time_ns=BOOT,
                               start_time_ns=BOOT, buffer_size=0)
        for i in range(count):
            offsets.append(f.tell())
            writer.write_sample(i % 2, encode(event(1000 + i, 3, 77, "t", Arg(ArgType.INT_T, i)),
                                              layout, perf_padding=True))
        writer.close()
    return offsets


# --------------------------------------------------------------------------- decode


def test_no_file_decodes_the_bundled_sample_as_a_table():
    status, out, err = run("decode")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines and all(TABLE_LINE.match(line) for line in lines)
    text = "\n".join(lines)
    for name in ("execve(", "openat(", "connect(", "close("):
        assert name in text


def test_table_line_reads_like_strace():
    status, out, _ = run("decode", "--utc", str(ALL_TYPES))
    assert status == 0
    lines = out.splitlines()
    assert '03:00:00.100285 "client" 104 connect(3, 192.168.1.10:53) = -111 ECONNREFUSED' in lines
    assert any('openat(AT_FDCWD, "caf\\xe9-\\xff\\xfe.txt", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC)'
               ' = -13 EACCES' in line for line in lines)
    assert any('"arg18-959", ...]) <unfinished ...>' in line for line in lines)
    assert any("<... execve resumed> = -13 EACCES" in line for line in lines)
    assert any('tcp_connect_v6("TCPv6", [2001:db8::2]:443) = 0' in line for line in lines)
    assert any("connect(7, \"@/tmp/.X11-unix/X0\") = 0" in line for line in lines)
    assert any("event_9999(CAP_SYS_ADMIN, execve, 99, 100000) = 7" in line for line in lines)
    assert any("do_exit() = killed by SIGKILL" in line for line in lines)
    assert any("do_exit() = exited with 1" in line for line in lines)
    assert any('execveat(3, "", ["prog", "--quote=\\"x\\"", "tab\\there", "nl\\nhere"], '
               "AT_EMPTY_PATH)" in line for line in lines)


def test_namespace_pid_is_shown_beside_the_host_pid():
    _, out, _ = run("decode", "--comm", "nginx", str(SAMPLE))
    assert re.search(r' "nginx" 5100/1 openat\(', out)


def test_local_time_by_default_utc_on_request(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving
    time.tzset()
    try:
        _, local, _ = run("decode", str(ALL_TYPES))
        _, utc, _ = run("decode", "--utc", str(ALL_TYPES))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert utc.splitlines()[0].startswith("03:00:00.100033 ")
    assert local.splitlines()[0].startswith("08:30:00.100033 ")


def test_jsonl_and_json_carry_the_same_events():
    status, lines, _ = run("decode", "--format", "jsonl", str(ALL_TYPES))
    status2, array, _ = run("decode", "--format", "json", str(ALL_TYPES))
    assert status == status2 == 0
    assert jsonl(lines) == json.loads(array)
    assert len(jsonl(lines)) == 35


def test_json_array_of_nothing_is_valid(tmp_path: Path):
    path = tmp_path / "empty.ewcap"
    write_capture(path, 0)
    status, out, _ = run("decode", "--format", "json", str(path))
    assert status == 0 and json.loads(out) == []


def test_jsonl_is_lossless_for_non_utf8_bytes():
    _, out, _ = run("decode", "--format", "jsonl", "--comm", "cat", str(ALL_TYPES))
    path = jsonl(out)[0]["args"][1]["value"]
    assert path.encode("utf-8", "surrogateescape") == b"caf\xe9-\xff\xfe.txt"
    assert "\\udce9" in out  # ASCII-only output keeps the escapes


def test_event_filters():
    def names(*options: str) -> list[str]:
        status, out, _ = run("decode", "--format", "jsonl", *options, str(SAMPLE))
        assert status == 0
        return [e["event"] for e in jsonl(out)]

    assert set(names("--event", "openat")) == {"openat"}
    assert set(names("--event", "connect", "--event", "tcp_connect")) == {"connect",
                                                                            "tcp_connect"}
    assert set(names("--event", "connect,do_exit")) == {"connect", "do_exit"}
    assert set(names("--comm", "ls")) >= {"openat", "close", "do_exit"}
    assert names("--comm", "l") == []  # exact match


def test_pid_filter_matches_namespace_or_host_pid():
    for pid in ("1", "5100"):
        _, out, _ = run("decode", "--format", "jsonl", "--pid", pid, str(SAMPLE))
        assert [e["comm"] for e in jsonl(out)] == ["nginx"]
    _, out, _ = run("decode", "--format", "jsonl", "--pid", "4242", str(SAMPLE))
    assert {e["host_pid"] for e in jsonl(out)} == {4242} and len(jsonl(out)) > 5


def test_unknown_ids_are_named_by_number_and_filterable():
    _, out, _ = run("decode", "--event", "event_9999", str(ALL_TYPES))
    assert len(out.splitlines()) == 1 and "event_9999(" in out


def test_arch_option_overrides_the_header():
    _, x86, _ = run("decode", "--format", "jsonl", "--event", "openat", str(SAMPLE))
    _, arm, _ = run("decode", "--format", "jsonl", "--arch", "arm64", str(SAMPLE))
    assert x86 and all(e["event_id"] == 257 for e in jsonl(x86))
    # 257 is not openat on arm64 (openat is 56 there)
    assert all(e["event"] != "openat" for e in jsonl(arm))


def test_layout_option_overrides_the_header(tmp_path: Path):
    _, default, _ = run("decode", "--format", "jsonl", str(FIXTURES / "layout-hash.ewcap"))
    _, same, _ = run("decode", "--format", "jsonl", "--layout", "hash",
                     str(FIXTURES / "layout-hash.ewcap"))
    assert default == same and jsonl(default)[1]["hash"] == 1
    line = one_error_line(*run("decode", "--layout", "cwd",
                               str(FIXTURES / "layout-hash.ewcap"))[::2])
    assert "layout 'cwd' (148-byte header) does not fit" in line
    assert "layouts that decode them: hash (5 of 5)" in line


def test_stdin_dash_reads_a_capture_stream():
    status, out, err = run("decode", "--format", "jsonl", "-", stdin=SAMPLE.read_bytes())
    assert status == 0 and err == ""
    _, from_file, _ = run("decode", "--format", "jsonl", str(SAMPLE))
    assert out == from_file


def test_several_files_in_order(tmp_path: Path):
    status, out, _ = run("decode", "--format", "jsonl", str(SAMPLE), str(ALL_TYPES))
    _, a, _ = run("decode", "--format", "jsonl", str(SAMPLE))
    _, b, _ = run("decode", "--format", "jsonl", str(ALL_TYPES))
    assert status == 0 and out == a + b


def test_one_missing_file_among_several_is_reported_and_the_rest_decoded(tmp_path: Path):
    status, out, err = run("decode", "--format", "jsonl", str(tmp_path / "gone.ewcap"),
                           str(SAMPLE))
    assert status == 2 and "gone.ewcap: no such file" in err and "Traceback" not in err
    assert len(out.splitlines()) == len(run("decode", str(SAMPLE))[1].splitlines())


# --------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path: Path):
    for fmt in ("table", "json"):
        status, out, err = run("decode", "--format", fmt, str(tmp_path / "nope.ewcap"))
        assert "nope.ewcap: no such file" in one_error_line(status, err)
        assert out == ""


def test_ring_pages_must_be_a_power_of_two(tmp_path: Path):
    line = one_error_line(*run("record", "-o", str(tmp_path / "x"), "--ring-pages", "3")[::2])
    assert "--ring-pages: expected a power of two from 1 to 65536, found 3" in line
    assert not (tmp_path / "x").exists()


def test_not_a_capture():
    line = one_error_line(*run("decode", str(ROOT / "pyproject.toml"))[::2])
    assert "not a readable capture" in line and "magic" in line and "pyproject.toml" in line


def test_empty_file_and_directory(tmp_path: Path):
    (tmp_path / "empty").write_bytes(b"")
    assert "an empty file" in one_error_line(*run("decode", str(tmp_path / "empty"))[::2])
    assert "is a directory" in one_error_line(*run("decode", str(tmp_path))[::2])


def test_cut_file_header(tmp_path: Path):
    path = tmp_path / "cut.ewcap"
    path.write_bytes(SAMPLE.read_bytes()[:20])
    line = one_error_line(*run("decode", str(path))[::2])
    assert "cut.ewcap" in line and "header" in line


def test_unknown_layout_and_arch_options():
    line = one_error_line(*run("decode", "--layout", "bogus")[::2])
    assert "unknown layout 'bogus'" in line and "classic" in line and "hash" in line
    line = one_error_line(*run("decode", "--arch", "mips")[::2])
    assert "unknown architecture 'mips'" in line and "arm64" in line


def test_unknown_layout_in_the_header(tmp_path: Path):
    path = tmp_path / "odd.ewcap"
    CaptureWriter(path, layout="future-layout", host=HOST, boot_time_ns=BOOT).close()
    line = one_error_line(*run("decode", str(path))[::2])
    assert "unknown layout 'future-layout' (from the capture header" in line
    assert "--layout" in line


def test_layout_that_does_not_fit_names_it_and_suggests_others():
    status, out, err = run("decode", "--layout", "hash", str(FIXTURES / "layout-cwd.ewcap"))
    line = one_error_line(status, err)
    assert out == ""
    assert "layout 'hash' (225-byte header) does not fit" in line
    assert "4 shorter than the header" in line
    assert "layouts that decode them: cwd (5 of 5)" in line


def test_samples_all_shorter_than_the_layout_suggest_layouts_by_size(tmp_path: Path):
    path = tmp_path / "short.ewcap"
    with CaptureWriter(path, layout="hash", host=HOST, boot_time_ns=BOOT) as writer:
        for _ in range(3):
            writer.write_sample(0, b"\x01" * 100)  # decodes with no layout
    line = one_error_line(*run("decode", str(path))[::2])
    assert "layout 'hash' (225-byte header) does not fit" in line
    assert "3 shorter than the header" in line and "layouts that fit by size: classic" in line


def test_a_layout_nothing_decodes_with_is_not_refused(tmp_path: Path):
    """Garbage that no layout decodes is damage, reported per sample, not a layout error."""
    path = tmp_path / "garbage.ewcap"
    with CaptureWriter(path, host=HOST, boot_time_ns=BOOT) as writer:
        for _ in range(3):
            writer.write_sample(0, b"\x01" * 300)
    status, out, err = run("decode", str(path))
    assert status == 0 and out == "" and err.count("does not decode") == 3


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "ebpfwire", "decode", str(tmp_path / "x")],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_info_bad_input():
    line = one_error_line(*run("info", str(ROOT / "pyproject.toml"))[::2])
    assert "not a readable capture" in line


# --------------------------------------------------------------------------- damage


@pytest.mark.parametrize("cut_into", [1, 15, 16, 40, -1])
def test_truncated_capture_prints_every_intact_record(tmp_path: Path, cut_into: int):
    path = tmp_path / "cut.ewcap"
    offsets = write_capture(path, 10)
    data = path.read_bytes()
    cut_record = 6
    end = offsets[cut_record + 1] if cut_into == -1 else offsets[cut_record] + cut_into
    if cut_into == -1:
        end -= 1  # one byte short of complete
    path.write_bytes(data[:end])
    status, out, err = run("decode", "--format", "jsonl", str(path))
    assert status == 0 and "Traceback" not in err
    assert [e["args"][0]["value"] for e in jsonl(out)] == list(range(cut_record))
    assert f"damaged record at file offset {offsets[cut_record]}:" in err
    assert "cut record" in err
    assert run("decode", "--strict-exit", str(path))[0] == 1


def test_record_overwritten_with_garbage(tmp_path: Path):
    path = tmp_path / "garbage.ewcap"
    offsets = write_capture(path, 10)
    data = bytearray(path.read_bytes())
    data[offsets[3]:offsets[4]] = bytes(range(7, 7 + offsets[4] - offsets[3]))
    path.write_bytes(bytes(data))
    status, out, err = run("decode", "--format", "jsonl", str(path))
    assert status == 0
    assert [e["args"][0]["value"] for e in jsonl(out)] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"ebpfwire: {path}: damaged record at file offset {offsets[3]}:")


def test_samples_that_do_not_decode_are_reported_and_the_rest_goes_on():
    status, out, err = run("decode", "--format", "jsonl", str(DAMAGED))
    assert status == 0
    # 2 intact events, a connect whose sockaddr the writer skipped (what a writer writes
    # for a NULL pointer: an event, its missing-argument noted), the LOST record
    lines = jsonl(out)
    assert len(lines) == 4
    [connect] = [line for line in lines if line.get("event") == "connect"]
    assert [e["kind"] for e in connect["errors"]] == ["missing-argument"]
    undecodable = [line for line in err.splitlines() if "does not decode" in line]
    assert len(undecodable) == 3
    assert all(re.search(r"sample at file offset \d+ does not decode: \S+ at byte offset \d+",
                         line) for line in undecodable)
    assert "damaged record at file offset 647" in err
    assert "damaged record at file offset 839" in err
    assert run("decode", "--strict-exit", str(DAMAGED))[0] == 1
    assert run("decode", "--strict-exit", str(SAMPLE))[0] == 0


def test_lenient_shows_damage_inline_and_in_json():
    status, out, _ = run("decode", "--lenient", "--utc", str(DAMAGED))
    assert status == 0
    assert ('openat(AT_FDCWD, ?, O_RDONLY) = -14 EFAULT <damaged: orphan-tag at 73>'
            in out)
    assert "connect(3, ?) = -111 ECONNREFUSED <damaged: missing-argument at 73>" in out
    assert "<damaged: trailing-bytes at 73>" in out
    _, lines, _ = run("decode", "--lenient", "--format", "jsonl", str(DAMAGED))
    kinds = [[e["kind"] for e in d["errors"]] for d in jsonl(lines) if "errors" in d]
    assert ["orphan-tag"] in kinds and ["missing-argument"] in kinds


def test_lost_records_in_every_format():
    _, table, _ = run("decode", str(DAMAGED))
    assert "-- lost 17 samples on cpu 1 --" in table.splitlines()
    _, lines, _ = run("decode", "--format", "jsonl", str(DAMAGED))
    assert {"lost": 17, "cpu": 1} in jsonl(lines)
    _, array, _ = run("decode", "--format", "json", str(DAMAGED))
    assert {"lost": 17, "cpu": 1} in json.loads(array)


# --------------------------------------------------------------------------- info


def test_info_text():
    status, out, err = run("info", "--utc", str(DAMAGED))
    assert status == 0 and err == ""
    for expected in ("version 1", "layout:       classic", "arch:         x86_64",
                     "synthetic-host (kernel 6.18.0-synthetic, 2 cpus)",
                     "boot time:    2025-11-22 02:00:00.000000 UTC",
                     "start time:   2025-11-22 03:00:00.000000 UTC",
                     "records:      7 (6 samples, 1 lost records)",
                     "lost:         17 samples (cpu 1: 17)", "per cpu:      cpu 0: 6",
                     "2 damaged stretches", "4 samples that do not decode cleanly",
                     "time span:    2025-11-22 03:00:00.100045 UTC .."):
        assert expected in out, expected
    assert re.search(r"^  close\s+2$", out, re.M)


def test_info_json_counts_match_decode():
    status, out, _ = run("info", "--json", str(SAMPLE))
    info = json.loads(out)
    _, lines, _ = run("decode", "--format", "jsonl", str(SAMPLE))
    events = jsonl(lines)
    assert status == 0 and info["samples"] == len(events) == sum(info["events"].values())
    assert info["events"]["openat"] == sum(e["event"] == "openat" for e in events)
    assert info["first_ts"] == min(e["ts"] for e in events)
    assert info["last_ts"] == max(e["ts"] for e in events)
    assert sum(info["samples_by_cpu"].values()) == len(events)
    assert info["lost"] == 0 and info["damaged_records"] == 0


def test_info_from_stdin():
    status, out, _ = run("info", "--json", "-", stdin=DAMAGED.read_bytes())
    assert status == 0 and json.loads(out)["lost"] == 17


# --------------------------------------------------------------------------- terminal niceties


def test_progress_only_on_a_terminal(tmp_path: Path, monkeypatch):
    path = tmp_path / "big.ewcap"
    write_capture(path, 5000)
    monkeypatch.setattr(output, "PROGRESS_EVERY", 0.0)
    status, out, err = run("decode", "--format", "jsonl", str(path), tty=True)
    assert status == 0 and len(out.splitlines()) == 5000
    assert re.search(r"\r[\d,]+ records, [\d,]+ events/s, \d+% of the file", err)
    status, _, err = run("decode", "--format", "jsonl", str(path), tty=False)
    assert status == 0 and err == ""


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("ebpfwire 0.")
    for command in ([], ["decode"], ["info"], ["record"], ["trace"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "examples:" in capsys.readouterr().out


def test_closed_stdout_pipe_exits_quietly(tmp_path: Path):
    path = tmp_path / "big.ewcap"
    write_capture(path, 20000)
    proc = subprocess.Popen([sys.executable, "-m", "ebpfwire", "decode", "--format", "jsonl",
                             str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=ENV)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert json.loads(first)["event"] == "close"
    assert err == ""


def _lines(stream, sink: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        sink.put(line)


def test_follow_prints_records_as_they_are_written_until_ctrl_c(tmp_path: Path):
    path = tmp_path / "live.ewcap"
    writer = CaptureWriter(path, host=HOST, boot_time_ns=BOOT, buffer_size=0)
    writer.write_sample(0, encode(event(1, 3, 9, "w", Arg(ArgType.INT_T, 0))))
    proc = subprocess.Popen([sys.executable, "-m", "ebpfwire", "decode", "--follow",
                             "--format", "jsonl", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    got: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, got), daemon=True).start()
    stop = threading.Event()

    def write_more() -> None:
        for i in range(1, 5):
            if stop.wait(0.2):
                return
            writer.write_sample(1, encode(event(1 + i, 3, 9, "w", Arg(ArgType.INT_T, i))))
        writer.write_lost(0, 3)

    thread = threading.Thread(target=write_more)
    thread.start()
    try:
        seen = [json.loads(got.get(timeout=30)) for _ in range(6)]
    finally:
        stop.set()
        thread.join()
        writer.close()
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=30)
    assert [e["args"][0]["value"] for e in seen[:5]] == [0, 1, 2, 3, 4]
    assert seen[5] == {"lost": 3, "cpu": 0}
    assert status == 130
    assert "Traceback" not in proc.stderr.read()


def test_follow_takes_one_file():
    line = one_error_line(*run("decode", "--follow", str(SAMPLE), str(ALL_TYPES))[::2])
    assert "--follow" in line


# --------------------------------------------------------------------------- live


def _wait_for_capture(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """The recorder says "recording to FILE" on stderr once everything is attached."""
    got: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: got.put(proc.stderr.readline()), daemon=True).start()
    line = got.get(timeout=timeout)
    assert line.startswith(f"ebpfwire: recording to {path};"), line + proc.stderr.read()
    assert path.stat().st_size > 0  # the header was written before the monitor loaded


def _decoded(path: Path) -> list[dict]:
    status, out, err = run("decode", "--format", "jsonl", str(path))
    assert status == 0, err
    return [e for e in jsonl(out) if "lost" not in e]


@pytest.mark.live
def test_record_captures_a_known_command_and_connect(tmp_path: Path):
    path = tmp_path / "rec.ewcap"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ebpfwire", "record", "-o", str(path), "--duration", "4",
         "--events", "execve,connect,tcp,do_exit"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for_capture(path, proc)
    true_pid = _spawn_true()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            pass
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "recorded" in err
    events = _decoded(path)
    execs = [e for e in events if e["event"] == "execve" and e["host_pid"] == true_pid]
    assert execs, f"no execve of pid {true_pid}"
    assert any(e["args"] and e["args"][0]["value"] == "/bin/true" for e in execs)
    assert any(e["event"] == "do_exit" and e["host_pid"] == true_pid for e in events)
    mine = [e for e in events if e["host_pid"] == os.getpid()]
    connects = [e for e in mine if e["event"] == "connect"]
    assert any(e["args"][1]["value"] == {"family": "AF_INET", "port": port,
                                         "addr": "127.0.0.1"} for e in connects)
    assert any(e["event"] == "tcp_connect" and e["args"][1]["value"]["port"] == port
               for e in mine)
    header = CaptureReader(path).header
    assert header.layout == "classic" and header.arch == live.machine_arch()


def _spawn_true() -> int:
    """Run /bin/true; its pid (the pid its execve and exit events carry)."""
    proc = subprocess.Popen(["/bin/true"])
    assert proc.wait(timeout=30) == 0
    return proc.pid


@pytest.mark.live
def test_record_ctrl_c_leaves_a_complete_file_and_nothing_in_the_kernel(tmp_path: Path):
    from ebpfwire.kernel import syscalls

    before = set(syscalls.loaded_programs())
    maps_before = set(syscalls.loaded_maps())
    path = tmp_path / "int.ewcap"
    proc = subprocess.Popen([sys.executable, "-m", "ebpfwire", "record", "-o", str(path),
                             "--events", "close,execve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for_capture(path, proc)
    ours = set(syscalls.loaded_programs()) - before
    our_maps = set(syscalls.loaded_maps()) - maps_before
    assert ours and our_maps, "the recorder's programs and maps should be loaded"
    pids = {_spawn_true() for _ in range(3)}
    time.sleep(1.5)  # at least one flush
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err
    status, out, err = run("info", "--json", str(path))
    info = json.loads(out)
    assert status == 0 and info["damaged_records"] == 0  # the capture itself is whole
    # Samples of other processes may be damaged by the kernel side (an argv in pages not
    # faulted in yields an orphan tag, docs/bpf-program.md): only ours must decode cleanly.
    with CaptureReader(path) as reader:
        ours_seen = [event for _, event in reader.events(strict=False)
                     if isinstance(event, Event) and event.host_pid in pids]
    assert {event.host_pid for event in ours_seen} == pids
    assert [event for event in ours_seen if event.errors] == []
    deadline = time.monotonic() + 10
    while (ours & set(syscalls.loaded_programs()) or our_maps & set(syscalls.loaded_maps())
           ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ours & set(syscalls.loaded_programs())
    assert not our_maps & set(syscalls.loaded_maps())


@pytest.mark.live
def test_record_sigterm_ends_cleanly(tmp_path: Path):
    path = tmp_path / "term.ewcap"
    proc = subprocess.Popen([sys.executable, "-m", "ebpfwire", "record", "-o", str(path),
                             "--events", "close"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    _wait_for_capture(path, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err
    assert run("info", "--json", str(path))[0] == 0


@pytest.mark.live
@pytest.mark.parametrize("transport", ["perf", "ringbuf"])
def test_trace_prints_live_events(transport):
    proc = subprocess.Popen([sys.executable, "-m", "ebpfwire", "trace", "--events", "execve",
                             "--format", "jsonl", "--transport", transport],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    got: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, got), daemon=True).start()
    found = None
    deadline = time.monotonic() + 60
    try:
        while found is None and time.monotonic() < deadline:
            pid = _spawn_true()
            try:
                while True:
                    line = json.loads(got.get(timeout=0.5))
                    if line.get("host_pid") == pid and line["event"] == "execve":
                        found = line
                        break
            except queue.Empty:
                continue
    finally:
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=60)
    assert found is not None
    assert status == 0 and "Traceback" not in proc.stderr.read()


@pytest.mark.live
def test_record_without_root_is_one_clear_line():
    with tempfile.TemporaryDirectory(dir="/tmp") as where:  # /tmp: nobody can reach it
        os.chmod(where, 0o777)  # nobody can create the file; the monitor is what fails
        path = Path(where) / "x.ewcap"
        code = ("import os, sys, locale, gettext, platform, importlib.readers\n"
                "from ebpfwire.cli import main\n"
                "import ebpfwire.kernel.monitor\n"  # the interpreter's files: unreadable by nobody
                "os.setgid(65534); os.setuid(65534)\n"
                f"sys.exit(main(['record', '-o', {str(path)!r}, '--duration', '1',"
                " '--events', 'close']))\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=ENV, timeout=60)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert "needs root" in done.stderr  # to read the namespaces of the process context
        assert not path.exists()  # created first, removed when nothing could start


def test_unknown_event_for_record_is_a_usage_error(tmp_path: Path):
    line = one_error_line(*run("record", "-o", str(tmp_path / "x"), "--events", "bogus")[::2])
    assert "unknown event 'bogus'" in line


def test_make_sample_event_with_sockaddr_renders():
    e = event(1, 42, 5, "c", Arg(ArgType.INT_T, 3), Arg(ArgType.SOCKADDR_T,
                                                      SockAddr.inet("1.2.3.4", 80)),
              retval=-111)
    assert TableRenderer(0, utc=True).call(e) == "connect(3, 1.2.3.4:80) = -111 ECONNREFUSED"


# --------------------------------------------------------------------------- fast JSON


LAYOUT_NAMES = ["classic", "cwd", "cwd-oid", "cwd-tty-oid", "exec-id", "hash"]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_event_json_equals_json_dumps_of_to_dict(data):
    layout = data.draw(st.sampled_from(LAYOUT_NAMES))
    arch = data.draw(st.sampled_from(["x86_64", "arm64"]))
    raw = data.draw(st.one_of(wire.event_bytes(layout, arch),
                              wire.damaged_event_bytes(layout, arch)))
    lenient = decode(raw, layout=layout, arch=arch, strict=False)
    assert event_json(lenient) == json.dumps(lenient.to_dict())
    try:
        strict = decode(raw, layout=layout, arch=arch)
    except DecodeError:
        assert sample_json(raw, get_layout(layout), arch) is None
        return
    assert event_json(strict) == json.dumps(strict.to_dict())
    fast = sample_json(raw, get_layout(layout), arch)
    assert fast is None or fast == json.dumps(strict.to_dict())


@settings(max_examples=200)
@given(wire.events(), st.sampled_from(LAYOUT_NAMES))
def test_sample_json_takes_every_valid_event(event, layout):
    raw = encode(event, layout, perf_padding=True)
    expected = json.dumps(decode(raw, layout=layout).to_dict())
    assert sample_json(raw, get_layout(layout), "x86_64") == expected


def test_lenient_short_sample_in_an_extended_layout_renders(tmp_path: Path):
    """A sample cut inside the cwd field: JSON shows the part present, the table a line."""
    path = tmp_path / "short.ewcap"
    good = encode(event(5, 3, 9, "w", Arg(ArgType.INT_T, 1)), "hash")
    with CaptureWriter(path, layout="hash", host=HOST, boot_time_ns=BOOT) as writer:
        writer.write_sample(0, good)
        writer.write_sample(0, good[:100])
    status, out, err = run("decode", "--lenient", "--format", "jsonl", str(path))
    assert status == 0 and "Traceback" not in err
    cut = jsonl(out)[1]
    assert cut["errors"][0]["kind"] == "short-header" and cut["tty"] is None
    status, out, _ = run("decode", "--lenient", str(path))
    assert status == 0 and "<damaged: short-header at 0>" in out


def test_trace_reorders_samples_across_cpus_by_ts():
    import struct as _struct

    from ebpfwire.cli.trace import HOLD_NS
    from ebpfwire.kernel.perf import Lost, Sample
    from ebpfwire.wire.order import Clock, TimeOrder

    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    old = [Sample(cpu, _struct.pack("<Q", now - 10**9 + ts)) for cpu, ts in
           ((1, 30), (0, 10), (1, 40), (0, 20))]
    fresh = Sample(0, _struct.pack("<Q", now + 10**9))
    out: list = []

    def arrivals():
        yield from old + [fresh]
        yield Clock(now)
        assert [s.cpu for s in out] == [0, 0, 1, 1]   # ts 10, 20, 30, 40
        yield Clock(now)
        assert fresh not in out                       # the fresh one is held

    for record in TimeOrder(Sample, Lost, window_ns=HOLD_NS)(arrivals()):
        out.append(record)
    assert out[-1] is fresh                           # released when the input ends


def test_main_restores_the_garbage_collector_settings():
    import gc

    before = gc.get_threshold()
    assert main(["info", str(SAMPLE)]) == 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
