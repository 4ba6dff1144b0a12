"""A realistic benchmark corpus: a recording's event mix, where no two samples are equal.

Repeating a small fixture flatters every cache keyed by bytes (the same 147 samples hit
again and again); a real stream has new pids, paths, ports and argv all the time. This
builds a version-2 capture of simulated process lives, each from exec to exit, with the mix
of a busy host: files opened and closed (most of a real stream), execs with varied argv,
sockets, connects and TCP events to varied IPv4, IPv6 and unix addresses, binds, listens,
accepts, unlinks, chowns and setuids, failed calls among them. Every pid, path, port and
argv is new. Samples carry the perf ring's padding, as a reader receives them.

``build(count)`` returns the path of a cached capture under the system's temporary
directory (built once per count and seed); ``python3 bench/realistic.py COUNT`` builds one
and prints its event mix.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
from collections import Counter
from pathlib import Path

from ebpfwire import Arg, Event, SockAddr, encode
from ebpfwire import ArgType as T
from ebpfwire.capture import CaptureWriter
from ebpfwire.wire.catalogue import SPECIAL_EVENTS
from ebpfwire.wire.layouts import get_layout
from ebpfwire.wire.names import syscall_number

ARCH = "x86_64"
BOOT_TIME_NS = 1_764_000_000_000_000_000
AT_FDCWD = -100
_PROGRAMS = ["/usr/bin/python3", "/bin/sh", "/usr/bin/curl", "/usr/bin/git", "/bin/ls",
             "/usr/bin/cat", "/usr/sbin/nginx", "/usr/bin/make", "/usr/bin/gcc", "/bin/grep"]
_DIRS = ["/etc", "/usr/lib/python3.11", "/proc/self", "/var/log", "/home/user/src",
         "/tmp", "/usr/share/locale", "/sys/fs/cgroup", "/run/user/1000", "/var/lib/dpkg"]
_WORDS = ["-c", "--verbose", "-o", "install", "status", "build", "--jobs", "-r", "main",
          "origin", "https://example.com/api", "-x", "--format=json", "test", "--", "all"]


def _ids() -> dict[str, int]:
    names = ["execve", "openat", "close", "socket", "connect", "bind", "listen", "accept",
             "unlinkat", "fchownat", "setuid", "do_exit", "security_bprm_check",
             "tcp_connect", "tcp_connect_v6", "tcp_accept"]
    special = {name: number for number, name in SPECIAL_EVENTS.items()}
    return {name: special.get(name) or syscall_number(name, ARCH) for name in names}


class _Life:
    """One simulated process, from its exec to its exit: yields (event name, retval, args,
    comm) in order."""

    def __init__(self, rng: random.Random, pid: int, ppid: int, serial: int):
        self.rng, self.pid, self.ppid, self.serial = rng, pid, ppid, serial
        self.program = rng.choice(_PROGRAMS)
        self.comm = os.path.basename(self.program)[:15]

    def argv(self) -> list[str]:
        rng = self.rng
        words = [f"{rng.choice(_WORDS)}{rng.randrange(10**6)}" for _ in range(rng.randrange(0, 7))]
        return [self.program, *words, f"job-{self.serial}"]

    def address(self) -> SockAddr:
        rng, kind = self.rng, self.rng.random()
        if kind < 0.6:
            return SockAddr(2, rng.randrange(1, 65536), f"10.{rng.randrange(256)}."
                            f"{rng.randrange(256)}.{rng.randrange(1, 255)}")
        if kind < 0.85:
            return SockAddr(10, rng.randrange(1, 65536),
                            f"2001:db8::{rng.randrange(65536):x}:{rng.randrange(65536):x}",
                            flowinfo=0, scope_id=0)
        return SockAddr(1, path=f"/run/app/{self.serial}-{rng.randrange(10**6)}.sock")

    def events(self):
        rng = self.rng
        path = self.program
        yield "execve", 0, [Arg(T.STR_T, path), Arg(T.STR_ARR_T, self.argv())], "sh"
        yield "execve", 0, [], self.comm
        yield "security_bprm_check", 0, [Arg(T.STR_T, path)], self.comm
        fd = 3
        for step in range(rng.randrange(4, 40)):
            kind = rng.random()
            if kind < 0.80:
                target = f"{rng.choice(_DIRS)}/f{self.serial}-{step}-{rng.randrange(10**6)}"
                failed = rng.random() < 0.15
                flags = rng.choice([0, 0o2000000, 0o2004000, 0o1101, 0o2200000])
                yield "openat", -2 if failed else fd, [
                    Arg(T.INT_T, AT_FDCWD), Arg(T.STR_T, target), Arg(T.OPEN_FLAGS_T, flags)
                ], self.comm
                if not failed:
                    yield "close", 0, [Arg(T.INT_T, fd)], self.comm
            elif kind < 0.92:
                address = self.address()
                domain = address.family
                yield "socket", fd, [Arg(T.SOCK_DOM_T, domain), Arg(T.SOCK_TYPE_T, 1),
                                     Arg(T.INT_T, 0)], self.comm
                retval = rng.choice([0, 0, 0, -111, -115])
                yield "connect", retval, [Arg(T.INT_T, fd), Arg(T.SOCKADDR_T, address)], self.comm
                if domain != 1 and retval == 0:
                    name = "tcp_connect" if domain == 2 else "tcp_connect_v6"
                    yield name, 0, [Arg(T.STR_T, "TCP" if domain == 2 else "TCPv6"),
                                    Arg(T.SOCKADDR_T, address)], self.comm
                yield "close", 0, [Arg(T.INT_T, fd)], self.comm
            elif kind < 0.95:
                address = self.address()
                yield "bind", 0, [Arg(T.INT_T, fd), Arg(T.SOCKADDR_T, address)], self.comm
                yield "listen", 0, [Arg(T.INT_T, fd), Arg(T.INT_T, rng.choice([5, 128, 4096]))
                                    ], self.comm
                peer = self.address()
                yield "accept", fd + 1, [Arg(T.INT_T, fd), Arg(T.SOCKADDR_T, peer)], self.comm
            elif kind < 0.98:
                yield "unlinkat", rng.choice([0, -2]), [
                    Arg(T.INT_T, AT_FDCWD), Arg(T.STR_T, f"/tmp/x{self.serial}-{step}"),
                    Arg(T.UNLINKAT_FLAG_T, rng.choice([0, 0x200]))], self.comm
            elif kind < 0.99:
                yield "fchownat", 0, [Arg(T.INT_T, AT_FDCWD),
                                      Arg(T.STR_T, f"/srv/{self.serial}/{step}"),
                                      Arg(T.INT_T, rng.randrange(1000, 2000)),
                                      Arg(T.INT_T, rng.randrange(1000, 2000)),
                                      Arg(T.INT_T, 0)], self.comm
            else:
                yield "setuid", rng.choice([0, -1]), [Arg(T.INT_T, rng.randrange(1000, 60000))
                                                      ], self.comm
        yield "do_exit", 0, [], self.comm


def _extra(serial: int, layout: str) -> dict:
    """A process's fields of an extended layout (a cwd, a tty for one in four, its exec
    id), made from its serial number: the classic corpus's random draws stay the same."""
    extra = {"cwd": ("/", f"/home/u{serial % 50}", f"/srv/app{serial % 7}/")[serial % 3],
             "tty": "" if serial % 4 else f"pts/{serial % 9}", "oid": 0, "exec_id": serial}
    return {name: extra[name] for name in get_layout(layout).extra_names}


def write(path: Path, count: int, seed: int = 1, layout: str = "classic") -> Counter:
    """Write ``count`` samples to a new capture at ``path``; returns the event mix."""
    rng = random.Random(seed)
    ids = _ids()
    mix: Counter = Counter()
    running: list = []
    serial = 0
    ts = 10**12
    written = 0
    with CaptureWriter(path, layout=layout, arch=ARCH, boot_time_ns=BOOT_TIME_NS,
                       buffer_size=1 << 20) as writer:
        while written < count:
            while len(running) < 8:
                serial += 1
                life = _Life(rng, 40_000 + serial, 1000 + serial % 50, serial)
                running.append((life, life.events()))
            slot = rng.randrange(len(running))
            life, events = running[slot]
            step = next(events, None)
            if step is None:
                running.pop(slot)
                continue
            name, retval, args, comm = step
            ts += rng.randrange(200, 5000)
            event = Event(ts, 0, 0, life.ppid, life.pid, life.ppid, life.pid,
                          rng.choice([0, 1000]), ids[name], len(args), retval, comm, args,
                          _extra(life.serial, layout))
            writer.write_sample(serial % 2, encode(event, layout, perf_padding=True))
            mix[name] += 1
            written += 1
    return mix


def build(count: int, seed: int = 1, layout: str = "classic") -> Path:
    """The cached capture of ``count`` realistic samples (built on first use) in ``layout``
    (its extended fields from :func:`_extra`)."""
    folder = Path(tempfile.gettempdir()) / "ebpfwire-bench"
    folder.mkdir(exist_ok=True)
    named = "" if layout == "classic" else f"-{layout}"
    path = folder / f"realistic-{count}-{seed}{named}.ewcap"
    if not path.exists():
        part = path.with_suffix(f".{os.getpid()}.part")
        write(part, count, seed, layout)
        os.replace(part, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    path = Path(tempfile.gettempdir()) / f"realistic-{args.count}-{args.seed}-mix.ewcap"
    mix = write(path, args.count, args.seed)
    size = path.stat().st_size
    path.unlink()
    print(f"{args.count:,} samples, {size / args.count:.0f} bytes each on average")
    for name, number in mix.most_common():
        print(f"  {name:20} {number:9,}  {100 * number / args.count:5.1f} %")


if __name__ == "__main__":
    main()
