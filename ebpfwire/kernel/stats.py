"""Syscall latency histograms and counts kept in kernel maps (``bpf/stats.bpf.c``).

:class:`SyscallStats` loads the bundled ``stats.bpf.o`` beside (not inside) the monitor:
raw_syscalls enter/exit programs time every syscall of the selected processes from entry
to exit, per thread, and add the duration to a log2 histogram per syscall in per-CPU maps;
no event reaches user space. :meth:`SyscallStats.snapshot` sums the CPUs. The renderers
print BCC's ``print_log2_hist`` text and a stable JSON form (docs/stats.md).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from construct import Int32ul, Struct

from ebpfwire import machine
from ebpfwire.kernel import syscalls as bpfsys
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.maps import Map, pids_running
from ebpfwire.kernel.objects import Object
from ebpfwire.wire import names

MAX_SYSCALLS = 1024  # as in bpf/stats.bpf.c: syscall numbers at or above are not counted
SLOTS = 64
STAR_WIDTH = 40

# `struct stats_config` of bpf/stats.bpf.c
StatsConfig = Struct(
    "ready" / Int32ul,
    "filter_tgid" / Int32ul,
    "ignore_tgid" / Int32ul,
    "filter_syscalls" / Int32ul,
)
# `struct syscall_stats`: calls, errors, total_ns, then the slots
_STAT = struct.Struct(f"<3Q{SLOTS}Q")
_ERRNO_KEY = struct.Struct("<II")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# Kernel-internal codes (include/linux/errno.h) that raw_syscalls:sys_exit sees before a
# signal restarts the call; user space never gets them, so the UAPI table lacks them.
RESTART_ERRNOS = {
    512: "ERESTARTSYS",
    513: "ERESTARTNOINTR",
    514: "ERESTARTNOHAND",
    516: "ERESTART_RESTARTBLOCK",
}


def bundled_stats_object() -> Path:
    """Path of the pre-compiled ``stats.bpf.o`` shipped with the package."""
    return Path(str(resources.files("ebpfwire") / "data" / "stats.bpf.o"))


def errno_label(code: int) -> str:
    """The name of a positive errno as a syscall returned it, ``errno_N`` if unnamed."""
    return names.errno_name(code) or RESTART_ERRNOS.get(code) or f"errno_{code}"


def syscall_label(nr: int, arch: str) -> str:
    """The name of syscall ``nr``, ``syscall_N`` if the table has none."""
    return names.syscall_name(nr, arch) or f"syscall_{nr}"


class Bucket(NamedTuple):
    """One log2 histogram bucket: ``count`` durations from ``low_us`` to ``high_us``."""

    low_us: int
    high_us: int
    count: int


def slot_bounds(slot: int) -> tuple[int, int]:
    """The range of BCC's log2 slot ``slot`` (>= 1): 1 -> 0..1, 2 -> 2..3, 3 -> 4..7."""
    low, high = (1 << slot) >> 1, (1 << slot) - 1
    return (low - 1 if low == high else low), high


def histogram(slots: Iterable[int]) -> list[Bucket]:
    """Buckets from the first to the last non-empty slot (slot 0 is never filled)."""
    counts = list(slots)
    used = [i for i, n in enumerate(counts) if n and i > 0]
    if not used:
        return []
    return [Bucket(*slot_bounds(i), counts[i]) for i in range(used[0], used[-1] + 1)]


@dataclass(frozen=True)
class SyscallStat:
    """One syscall's figures over the snapshot: sums over every CPU."""

    nr: int
    name: str
    calls: int
    errors: int
    total_ns: int
    errnos: dict[str, int] = field(default_factory=dict)  # errno name -> calls, most first
    histogram: list[Bucket] = field(default_factory=list)


@dataclass(frozen=True)
class StatsSnapshot:
    """Every counted syscall (most calls first) and what the kernel side had to drop."""

    arch: str
    syscalls: list[SyscallStat]
    dropped_calls: int = 0   # entries not timed: the in-flight map was full
    dropped_errnos: int = 0  # (syscall, errno) pairs not counted: the errno map was full

    def get(self, name: str) -> SyscallStat | None:
        """The figures of syscall ``name``, None if it was not called."""
        return next((s for s in self.syscalls if s.name == name), None)


def _syscall_numbers(selection: Iterable[str | int], arch: str) -> set[int]:
    numbers: set[int] = set()
    for item in selection:
        nr = item if isinstance(item, int) else names.syscall_number(item, arch)
        if nr is None:
            raise ValueError(f"unknown syscall {item!r} on {arch}")
        if not 0 <= nr < MAX_SYSCALLS:
            raise ValueError(f"syscall number {nr}: expected 0 to {MAX_SYSCALLS - 1}")
        numbers.add(nr)
    return numbers


class SyscallStats:
    """The stats object loaded and attached; counting runs until :meth:`close`.

    ``syscalls`` (names or numbers; None: all) limits what is timed; ``pid`` limits it to
    that process and the children it forks from now on (threads included); ``ignore_self``
    leaves out this process's own syscalls. ``close()`` (or leaving the ``with`` block)
    removes everything from the kernel.
    """

    def __init__(
        self,
        syscalls: Iterable[str | int] | None = None,
        pid: int | None = None,
        ignore_self: bool = True,
        object_path: str | Path | None = None,
    ) -> None:
        try:
            self.arch = machine.arch()
        except machine.UnsupportedMachine as exc:
            raise LoaderError(f"syscall statistics: {exc}") from None
        wanted = None if syscalls is None else _syscall_numbers(syscalls, self.arch)
        if pid is not None:
            machine.require_process(pid)
        self.object = Object.open(object_path or bundled_stats_object())
        self.object.require_maps(("config", "syscall_set", "traced", "stats", "errnos",
                                  "dropped"))
        self.programs = [
            p for p in self.object.programs.values() if pid is not None or p.name != "stats__fork"
        ]
        self.map_fds, self.prog_fds = self.object.map_fds, self.object.prog_fds
        self.closed = False
        try:
            names = [p.name for p in self.programs]
            self.object.load(names)
            self._counters = {  # what snapshot() and tree_alive() read
                name: Map.from_fd(self.map_fds[name])
                for name in ("stats", "errnos", "dropped", "traced")
            }
            if pid is not None:
                bpfsys.map_update(self.map_fds["traced"], _U32.pack(pid), _U32.pack(1))
            for nr in wanted or ():
                bpfsys.map_update(self.map_fds["syscall_set"], _U32.pack(nr), _U32.pack(1))
            config = StatsConfig.build(dict(
                ready=1,
                filter_tgid=pid or 0,
                ignore_tgid=os.getpid() if ignore_self else 0,
                filter_syscalls=int(wanted is not None),
            ))
            bpfsys.map_update(self.map_fds["config"], bytes(4), config)
            self.object.attach(names)
        except BaseException:
            self.close()
            raise

    def tree_alive(self) -> bool:
        """Whether a process of the ``pid`` filter's tree still runs (the exit program
        removes each process as it exits)."""
        return pids_running(self._counters["traced"])

    def _percpu(self, name: str, key: bytes) -> list[bytes]:
        """One value per possible CPU of a per-CPU map; none for an absent key."""
        return self._counters[name].lookup(key) or []

    def snapshot(self) -> StatsSnapshot:
        """The counts so far, summed over the CPUs; counting goes on."""
        if self.closed:
            raise ValueError("snapshot of closed SyscallStats")
        errnos: dict[int, dict[str, int]] = {}
        for key in self._counters["errnos"].raw_keys():
            nr, err = _ERRNO_KEY.unpack(key)
            count = sum(_U64.unpack_from(v)[0] for v in self._percpu("errnos", key))
            if count:
                errnos.setdefault(nr, {})[errno_label(err)] = count
        found: list[SyscallStat] = []
        for nr in range(MAX_SYSCALLS):
            per_cpu = [_STAT.unpack_from(v) for v in self._percpu("stats", _U32.pack(nr))]
            totals = [sum(column) for column in zip(*per_cpu, strict=True)]
            if not totals or not totals[0]:
                continue
            by_errno = sorted(errnos.get(nr, {}).items(), key=lambda kv: (-kv[1], kv[0]))
            found.append(SyscallStat(
                nr=nr,
                name=syscall_label(nr, self.arch),
                calls=totals[0],
                errors=totals[1],
                total_ns=totals[2],
                errnos=dict(by_errno),
                histogram=histogram(totals[3:]),
            ))
        found.sort(key=lambda s: (-s.calls, s.name))
        dropped = [
            sum(_U64.unpack_from(v)[0] for v in self._percpu("dropped", _U32.pack(i)))
            for i in (0, 1)
        ]
        return StatsSnapshot(self.arch, found, dropped[0], dropped[1])

    def close(self) -> None:
        """Detach, then close programs and maps; idempotent."""
        self.closed = True
        self.object.close()

    def __enter__(self) -> SyscallStats:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- rendering


def _stars(count: int, largest: int, width: int) -> str:
    return "*" * min(width, width * count // largest) if largest else ""


def render_log2_hist(buckets: list[Bucket], unit: str = "usecs") -> str:
    """BCC's ``print_log2_hist`` text: a header, then one row per bucket from the first
    non-empty one, with a star bar scaled to the largest count (wider rows, half the
    stars, once a bucket's bound passes 2**32, as BCC does)."""
    while buckets and not buckets[0].count:
        buckets = buckets[1:]
    if not buckets:
        return ""
    largest = max(b.count for b in buckets)
    if buckets[-1].high_us >> 32:
        header, width = f"               {unit:<29} : count     distribution", STAR_WIDTH // 2
        row = "{:>20} -> {:<20} : {:<8} |{:<{w}}|"
    else:
        header, width = f"     {unit:<19} : count     distribution", STAR_WIDTH
        row = "{:>10} -> {:<10} : {:<8} |{:<{w}}|"
    lines = [header]
    for low, high, count in buckets:
        lines.append(row.format(low, high, count, _stars(count, largest, width), w=width))
    return "\n".join(lines) + "\n"


def _errno_text(errnos: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in errnos.items())


def render_stats(snapshot: StatsSnapshot) -> str:
    """Per syscall: a line of counts, then its latency histogram; blank lines between."""
    parts = []
    for s in snapshot.syscalls:
        line = f"{s.name} (nr {s.nr}): {s.calls} calls, {s.errors} errors"
        if s.errnos:
            line += f" ({_errno_text(s.errnos)})"
        line += f", total {s.total_ns / 1000:.0f} us\n"
        parts.append(line + render_log2_hist(s.histogram))
    text = "\n".join(parts) or "no syscalls counted\n"
    if snapshot.dropped_calls or snapshot.dropped_errnos:
        text += (f"\n(not counted: {snapshot.dropped_calls} calls when the in-flight map was "
                 f"full, {snapshot.dropped_errnos} errnos when the errno map was full)\n")
    return text


def stats_json(snapshot: StatsSnapshot) -> dict[str, Any]:
    """The stable JSON form (docs/stats.md): only JSON types, keys always present."""
    return {
        "arch": snapshot.arch,
        "unit": "usecs",
        "dropped": {"calls": snapshot.dropped_calls, "errnos": snapshot.dropped_errnos},
        "syscalls": [
            {
                "nr": s.nr,
                "name": s.name,
                "calls": s.calls,
                "errors": s.errors,
                "errnos": dict(s.errnos),
                "total_ns": s.total_ns,
                "histogram": [
                    {"low_us": b.low_us, "high_us": b.high_us, "count": b.count}
                    for b in s.histogram
                ],
            }
            for s in snapshot.syscalls
        ],
    }
