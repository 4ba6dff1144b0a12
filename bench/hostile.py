"""CPU time and peak memory of the commands on hostile captures at 1x, 2x and 4x size.

Usage: PYTHONPATH=. python3 bench/hostile.py [--scale F] [--only CLASS] [--timeout S]

Issue 16: whatever users on the traced machine do, time must grow linearly with the capture
and memory must stay flat (or bounded). Each class below is a capture an unprivileged user can
cause (or a crafted file), written byte by byte here, at three sizes. Each command runs as its
own child process (``python -m ebpfwire``, so PYTHONPATH picks the tree) under /usr/bin/time:
its CPU time (user + sys) comes from os.wait4, its peak RSS from time's %M. Export's workers
are waited for by export, so their CPU is counted and the peak is that of the largest single
process, not the sum.

Memory is bounded by design, and the bounds (the reorder window's records, the process
table's processes, export's row groups) are above a small capture: the base sizes are such
that 1x is already past the bounds its class meets, so that the three sizes show what
happens beyond them (flat memory, linear time); each row says which bounds the command
reached (from its notes on stderr, and export's row count). --scale 0.25 shows the growth
below the bounds instead.

Verdicts, per doubling of the size: "linear" when CPU grows at most 2.6x, "flat" when peak
RSS grows at most 1.3x, "bounded" when it grew from 1x to 2x but not from 2x to 4x (a bound
was reached), else GROWS. Startup costs hide growth from these ratios on small captures, so
an increment from 2x to 4x that is at least 3 times (CPU, and 1 s or more) or 1.5 times (RSS,
4 MiB or more) the one from 1x to 2x is flagged too: SUPERLINEAR, CREEPS. A command that
crashes (traceback, signal) or exceeds --timeout or --max-rss is flagged; exit statuses
0/1/2 are what damage may give.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator

from ebpfwire import Arg, ArgType, Event, SockAddr, encode
from ebpfwire.capture import SYNC, FileHeader
from ebpfwire.columnar.export import ROW_GROUP_ROWS
from ebpfwire.process.table import MAX_PROCESSES
from ebpfwire.wire.order import MAX_BYTES, MAX_RECORDS

T = ArgType
MIB = 1 << 20
TIME = "/usr/bin/time"

# ------------------------------------------------------------------ version-2 bytes by hand


def header() -> bytes:
    info = {"ncpus": 2, "boot_time_ns": 0, "start_time_ns": 0, "layout": "classic",
            "arch": "x86_64", "kernel_release": "k", "hostname": "hostile"}
    return FileHeader.build({"signed": {"value": {"version": 2, "info": info}}})


def rec(rtype: int, payload: bytes, *, head_crc_xor: int = 0, crc_xor: int = 0) -> bytes:
    """One record, written without the writer's checks (the xors damage it on purpose)."""
    head = zlib.crc32(struct.pack("<IHH", len(payload), rtype, 0)) ^ head_crc_xor
    return (struct.pack("<4sIHHII", SYNC, len(payload), rtype, 0, head,
                        zlib.crc32(payload) ^ crc_xor) + payload)


def sample(data: bytes, cpu: int = 0, **damage: int) -> bytes:
    return rec(1, struct.pack("<I", cpu) + data, **damage)


def lost(n: int, cpu: int = 0) -> bytes:
    return rec(2, struct.pack("<IQ", cpu, n))


def text(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return struct.pack("<I", len(b)) + b


def process(pid: int, ppid: int, argv: tuple[str, ...] = ("p",), exe: str = "/bin/p") -> bytes:
    """A snapshot entry (record type 3), as `record` writes one per running process."""
    p = struct.pack("<IIIIIIQ", pid, ppid, pid, 0, 0, 0, 0) + text("p") + text(exe) + text("/")
    p += struct.pack("<I", len(argv)) + b"".join(text(a) for a in argv) + text("")
    return rec(3, p)


def ev(event_id: int, retval: int, comm: str, pid: int, *args: tuple, ts: int = 10**9,
       ppid: int = 1, uid: int = 0, argnum: int | None = None) -> bytes:
    a = [Arg(*x) for x in args]
    return encode(Event(ts, 0, 0, ppid, pid, ppid, pid, uid, event_id,
                        len(a) if argnum is None else argnum, retval, comm, a, {}), "classic")


def openat(pid: int, ts: int = 10**9, ppid: int = 1, comm: str = "c") -> bytes:
    return ev(257, 3, comm, pid, (T.INT_T, -100), (T.STR_T, "/etc/x"), (T.OPEN_FLAGS_T, 0),
              ts=ts, ppid=ppid)


def connect_with(hidden: bytes, pid: int, ts: int) -> bytes:
    """connect() to an AF_UNIX address whose 108 path bytes (any local user's) are `hidden`."""
    e = ev(42, -111, "attacker", pid, (T.INT_T, 3),
           (T.SOCKADDR_T, SockAddr(1, path="X" * 107)), ts=ts, uid=1000)
    i = e.index(b"X" * 107)
    return e[:i] + hidden + bytes(108 - len(hidden)) + e[i + 108:]


# ------------------------------------------------------------------ the classes

def forged_boundaries(hidden: bytes) -> Callable[[int], Iterator[bytes]]:
    def build(n: int) -> Iterator[bytes]:
        bait = sample(connect_with(hidden, 4000, 10**9))
        for i in range(n):
            yield bait if i % 2 else sample(openat(100, 10**9 + i, comm="victim"))
    return build


FORGED_RECORD = sample(ev(257, 0, "evil", 31337, ts=5 * 10**9, uid=0, argnum=0))
CLAIM_1MIB = struct.pack("<4sIHHII", SYNC, MIB, 1, 0, zlib.crc32(struct.pack("<IHH", MIB, 1, 0)),
                         0)


def argv_amplification(n: int) -> Iterator[bytes]:
    yield process(777, 1, exe="/bin/sh", argv=("ab",) * 170_000)  # ~1 MiB, any user's
    for i in range(n):
        yield sample(openat(777, ts=10**9 + i))


def deep_chain(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield sample(openat(1000 + i, ts=10**9 + i, ppid=999 + i))


def lost_with_live_processes(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield process(10 + i, 1)
    for i in range(n):
        yield sample(openat(10 + i % 50, ts=10**9 + 10 * i)) + lost(1)


def lives_of_one_pid(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield sample(openat(100_000 + i, ts=10**9 + 10 * i, ppid=5))
    for i in range(n // 2):
        ts = 2 * 10**9 + 20 * i
        yield sample(openat(5, ts=ts)) + sample(ev(351, 0, "c", 5, ts=ts + 1))


def unknown_types(n: int) -> Iterator[bytes]:
    unknown = rec(9, b"")
    for _ in range(n):
        yield unknown
    yield sample(openat(5))


def lost_first(n: int) -> Iterator[bytes]:
    one = lost(1)
    for _ in range(n):
        yield one
    yield sample(openat(5))


def damaged(n: int) -> Iterator[bytes]:
    """Intact samples between damaged ones: a bad payload CRC, then a bad header CRC."""
    for i in range(n):
        data = openat(100 + i % 100, ts=10**9 + 2 * i)
        yield sample(data)
        yield sample(data, crc_xor=1) if i % 2 else sample(data, head_crc_xor=1)


def never_exit(n: int) -> Iterator[bytes]:
    for i in range(n):
        yield sample(openat(10 + i, ts=10**9 + i))


def cut_then_intact(n: int) -> Iterator[bytes]:
    """A 2 KiB record cut after 100 bytes (a torn write, then an append) every 5 intact ones."""
    big = sample(ev(59, 0, "c", 99, (T.STR_T, "/bin/" + "x" * 2000), ts=10**9))[:100]
    for i in range(n):
        yield sample(openat(100 + i % 100, ts=10**9 + i))
        if i % 5 == 4:
            yield big


DECODE, RAW, INFO, PS, EXPORT = ["decode"], ["decode", "--raw"], ["info"], ["ps"], ["export"]
JSONL = ["decode", "--format", "jsonl"]
PS_JSON = ["ps", "--json"]
ALL = [DECODE, INFO, PS, EXPORT]
WITH_RAW = [DECODE, RAW, INFO, PS, EXPORT]

# Every sample of these classes falls within one second (the reorder window holds them all
# up to its bound) and most name processes that never exit: base sizes put 1x past the
# window's MAX_RECORDS, the process table's MAX_PROCESSES and export's ROW_GROUP_ROWS.
CLASSES: dict[str, tuple[str, Callable[[int], Iterator[bytes]], int, list[list[str]]]] = {
    # name: (what, builder, base size, commands)
    "forge-record": ("AF_UNIX paths holding a whole record (samples)",
                     forged_boundaries(FORGED_RECORD), 140_000, ALL),
    "forge-1mib": ("AF_UNIX paths holding a header claiming 1 MiB (samples)",
                   forged_boundaries(CLAIM_1MIB), 140_000, ALL),
    "argv": ("one process with a 1 MiB argv entry (events of it)",
             argv_amplification, 250, [DECODE, JSONL, INFO, PS, EXPORT]),
    "deep-chain": ("a fork chain (depth)", deep_chain, 140_000,
                   [DECODE, INFO, PS, PS_JSON, EXPORT]),
    "lost-live": ("live processes, a LOST after each sample (processes)",
                  lost_with_live_processes, 70_000, WITH_RAW),
    "pid-lives": ("lives of one pid as parent of many (children)", lives_of_one_pid, 135_000,
                  ALL),
    "unknown-type": ("records of an unknown type", unknown_types, 200_000, WITH_RAW),
    "lost-first": ("LOST records before the first sample", lost_first, 200_000, WITH_RAW),
    "damaged": ("damaged records between intact ones (pairs)", damaged, 140_000, WITH_RAW),
    "never-exit": ("processes that never exit", never_exit, 140_000, WITH_RAW),
    "cut-record": ("a cut record every 5 intact ones (intact)", cut_then_intact, 140_000, WITH_RAW),
}
#: What a command says on stderr when it reaches a bound, and the bound's short name.
BOUND_NOTES = (("samples were ordered within less than", "window"),
               ("processes were forgotten", "table"))
FACTORS = (1, 2, 4)
CPU_RATIO, RSS_RATIO = 2.6, 1.3  # per doubling: linear time (with noise), flat memory
CPU_STEP, RSS_STEP = 1.0, 4.0  # s, MiB: the least last increment that can count as growth

# ------------------------------------------------------------------ running a command


def run(args: list[str], path: str, tmp: str, timeout: float, max_rss: int) -> dict:
    """One child: CPU s (os.wait4), peak MiB, exit status and what went wrong.

    The peak comes from /usr/bin/time, not from our own wait4: a child spawned from this
    (large) process inherits this process's high-water RSS at exec, and its ru_maxrss with it.
    """
    argv = [sys.executable, "-m", "ebpfwire", *args, path]
    if args[0] == "export":
        out = os.path.join(tmp, "out.parquet")
        if os.path.exists(out):
            os.unlink(out)
        argv += ["-o", out]
    err, peak = os.path.join(tmp, "stderr"), os.path.join(tmp, "peak")
    pid = os.posix_spawn(TIME, [TIME, "-o", peak, "-f", "%M", *argv], os.environ, setsid=True,
                         file_actions=[
                             (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                             (os.POSIX_SPAWN_OPEN, 2, err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                              0o600)])
    start, killed = time.monotonic(), ""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if not killed:
            if time.monotonic() - start > timeout:
                killed = f"timeout {timeout:g} s"
            elif rss_of_child(pid) > max_rss:
                killed = f"RSS > {max_rss // MIB} MiB"
            if killed:
                os.killpg(pid, 9)
        time.sleep(0.02)
    stderr, timed = open_text(err), open_text(peak)
    try:
        rss = int(timed.split()[-1]) / 1024
    except (ValueError, IndexError):
        rss = float("nan")
    code = os.waitstatus_to_exitcode(status)
    problem = killed
    if not problem and "Command terminated by signal" in timed:
        problem = "killed by a signal"
    if not problem and "Traceback (most recent call last)" in stderr:
        problem = "TRACEBACK: " + stderr.strip().splitlines()[-1][:80]
    if not problem and code not in (0, 1, 2):
        problem = f"exit status {code}"
    cpu = float("nan") if killed else usage.ru_utime + usage.ru_stime  # the child was not reaped
    return {"cpu": cpu, "rss": rss, "rc": code, "problem": problem, "bounds": bounds_met(stderr)}


def bounds_met(stderr: str) -> str:
    """The bounds a command says it reached: the reorder window's and the process table's
    notes, and for export a row count past a row group (it holds one while writing)."""
    met = [name for note, name in BOUND_NOTES if note in stderr]
    exported = stderr.rpartition("exported ")[2].split(" ", 1)[0].replace(",", "")
    if exported.isdigit() and int(exported) > ROW_GROUP_ROWS:
        met.append("row group")
    return "+".join(met)


def open_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def rss_of_child(pid: int) -> int:
    """Resident bytes of the command that /usr/bin/time (``pid``) runs, 0 if not yet known."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            child = int(f.read().split()[0])
        with open(f"/proc/{child}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def write_capture(path: str, records: Iterator[bytes]) -> int:
    with open(path, "wb") as f:
        f.write(header())
        chunk = []
        for r in records:
            chunk.append(r)
            if len(chunk) >= 4096:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))
        return f.tell()


def verdict(cpu: list[float], rss: list[float]) -> str:
    """The brief's ratio rules, plus the increments: startup (0.3 s, 30-150 MiB) hides the
    growth of small captures from the ratios, while an increment that doubles (or more) with
    the size is growth whatever the start costs."""
    if any(math.isnan(x) for x in cpu + rss):
        return "not measured"
    c1, c2 = cpu[1] / max(cpu[0], 1e-3), cpu[2] / max(cpu[1], 1e-3)
    r1, r2 = rss[1] / rss[0], rss[2] / rss[1]
    cd1, cd2, rd1, rd2 = cpu[1] - cpu[0], cpu[2] - cpu[1], rss[1] - rss[0], rss[2] - rss[1]
    if max(c1, c2) > CPU_RATIO:
        time_word = "GROWS (CPU)"
    elif cd2 >= CPU_STEP and cd2 >= 3 * max(cd1, 0):
        time_word = f"SUPERLINEAR (CPU +{cd1:.2f}, +{cd2:.2f} s)"
    else:
        time_word = "linear"
    if r2 > RSS_RATIO:
        mem_word = "GROWS (RSS)"
    elif rd2 >= RSS_STEP and rd2 >= 1.5 * max(rd1, 0):
        mem_word = f"CREEPS (RSS +{rd1:.1f}, +{rd2:.1f} MiB)"
    elif r1 > RSS_RATIO:
        mem_word = "bounded"
    else:
        mem_word = "flat"
    return f"{time_word}, {mem_word}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every base size")
    parser.add_argument("--only", choices=sorted(CLASSES), action="append",
                        help="only this class (repeat for more)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per command")
    parser.add_argument("--max-rss", type=int, default=4096, help="MiB per command")
    options = parser.parse_args()
    names = options.only or list(CLASSES)
    began = time.monotonic()
    print(f"hostile captures at {'/'.join(f'{f}x' for f in FACTORS)} x scale {options.scale:g}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start "
          f"({time.strftime('%H:%M:%S')})")
    print(f"bounds: reorder window {MAX_RECORDS:,} records or {MAX_BYTES >> 20} MiB; process "
          f"table {MAX_PROCESSES:,} processes (a set); export row group {ROW_GROUP_ROWS:,} rows")
    print(f"{'class':13} {'command':22} {'size':>14} {'MB':>7} {'CPU s':>7} {'peak MiB':>9} "
          f"{'rc':>3} {'bounds met':>18}  {'CPU x':>6} {'RSS x':>6}  verdict")
    flagged = 0
    with tempfile.TemporaryDirectory(prefix="ebpfwire-hostile-") as tmp:
        for name in names:
            what, build, base, commands = CLASSES[name]
            size = max(1, round(base * options.scale))
            paths = []
            for factor in FACTORS:
                path = os.path.join(tmp, f"{name}-{factor}x.ewcap")
                paths.append((size * factor, path, write_capture(path, build(size * factor))))
            print(f"-- {name}: {what}")
            for args in commands:
                results = [run(args, path, tmp, options.timeout, options.max_rss * MIB)
                           for _, path, _ in paths]
                cpu = [r["cpu"] for r in results]
                rss = [r["rss"] for r in results]
                word = verdict(cpu, rss)
                problems: dict[str, list[str]] = {}
                for factor, r in zip(FACTORS, results, strict=True):
                    if r["problem"]:
                        problems.setdefault(r["problem"], []).append(f"{factor}x")
                for problem, factors in problems.items():
                    word += f"; {','.join(factors)}: {problem}"
                if problems or any(w in word for w in ("GROWS", "SUPERLINEAR", "CREEPS")):
                    flagged += 1
                    word = "!! " + word
                for i, ((n, _, nbytes), r) in enumerate(zip(paths, results, strict=True)):
                    ratios = (f"{cpu[i] / max(cpu[i - 1], 1e-3):6.2f} "
                              f"{rss[i] / rss[i - 1]:6.2f}" if i else f"{'':6} {'':6}")
                    print(f"{name:13} {' '.join(args):22} {n:>14,} {nbytes / 1e6:7.1f} "
                          f"{r['cpu']:7.2f} {r['rss']:9.1f} {r['rc']:>3} "
                          f"{r['bounds'] or '-':>18}  {ratios}"
                          f"{'  ' + word if i == 2 else ''}")
            for _, path, _ in paths:
                os.unlink(path)
    print(f"{flagged} row(s) flagged; {time.monotonic() - began:.0f} s in all; "
          f"load average {os.getloadavg()[0]:.2f} at the end ({time.strftime('%H:%M:%S')})")
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())
