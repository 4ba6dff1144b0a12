"""Syscall statistics live: exact counts, buckets that move with the duration, cleanup."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.monitor import Monitor
from ebpfwire.kernel.perf import Sample
from ebpfwire.kernel.stats import SyscallStats, bundled_stats_object

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not bundled_stats_object().exists(), reason="stats.bpf.o not built"),
]


def _close_bad_fd(times: int) -> None:
    for _ in range(times):
        try:
            os.close(-1)
        except OSError:
            pass


class Child:
    """A forked child that waits for a go, runs ``work`` and exits; its pid is known first,
    so a filter on it is in place before it makes a syscall of the workload."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._go_r, self._go_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - child process
            try:
                os.read(self._go_r, 1)
                work()
            finally:
                os._exit(0)
        os.close(self._go_r)

    def run(self) -> None:
        """Release the child and wait for it to finish."""
        os.write(self._go_w, b"1")
        os.close(self._go_w)
        _, status = os.waitpid(self.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def test_ten_thousand_bad_closes_counted_exactly():
    child = Child(lambda: _close_bad_fd(10_000))
    with SyscallStats(pid=child.pid) as stats:
        child.run()
        snap = stats.snapshot()
    close = snap.get("close")
    assert close is not None and close.nr == 3
    assert (close.calls, close.errors, close.errnos) == (10_000, 10_000, {"EBADF": 10_000})
    assert sum(b.count for b in close.histogram) == 10_000
    assert snap.dropped_calls == 0 and snap.dropped_errnos == 0


def test_children_forked_by_the_traced_process_are_counted():
    def work() -> None:
        grandchild = os.fork()
        if grandchild == 0:
            _close_bad_fd(300)
            os._exit(0)
        os.waitpid(grandchild, 0)
        _close_bad_fd(200)

    child = Child(work)
    with SyscallStats(syscalls=["close"], pid=child.pid) as stats:
        child.run()
        snap = stats.snapshot()
    assert [s.name for s in snap.syscalls] == ["close"]  # the syscall filter holds
    assert (snap.syscalls[0].calls, snap.syscalls[0].errnos) == (500, {"EBADF": 500})


def _sleeps(seconds: float, times: int) -> list[int]:
    """Sleep ``times`` times; each duration as user space measured it, in us."""
    took = []
    for _ in range(times):
        start = time.monotonic_ns()
        time.sleep(seconds)
        took.append((time.monotonic_ns() - start) // 1000)
    return took


def _counts(stats: SyscallStats) -> dict[int, tuple[int, int]]:
    """low_us -> (high_us, count) of our sleep syscalls so far."""
    out: dict[int, tuple[int, int]] = {}
    for s in stats.snapshot().syscalls:
        for b in s.histogram:
            high, n = out.get(b.low_us, (b.high_us, 0))
            out[b.low_us] = (high, n + b.count)
    return out


def _used(after: dict, before: dict) -> list[tuple[int, int, int]]:
    """The buckets that grew between two snapshots, as (low, high, added)."""
    return [(low, high, n - before.get(low, (high, 0))[1])
            for low, (high, n) in sorted(after.items()) if n > before.get(low, (high, 0))[1]]


def test_sleeps_land_in_the_log2_buckets_of_their_duration():
    # our own thread sleeps: the kernel's duration lies between the request and what
    # user space measured around the call, so its bucket lies between theirs
    with SyscallStats(syscalls=["clock_nanosleep", "nanosleep"], pid=os.getpid(),
                      ignore_self=False) as stats:
        start = _counts(stats)
        short = _sleeps(0.001, 5)
        middle = _counts(stats)
        long = _sleeps(0.010, 5)
        end = _counts(stats)
    one_ms, ten_ms = _used(middle, start), _used(end, middle)
    assert sum(n for *_, n in one_ms) == 5 and sum(n for *_, n in ten_ms) == 5
    assert all(512 <= low <= max(short) for low, _, _ in one_ms)
    assert all(8192 <= low <= max(long) for low, _, _ in ten_ms)
    if max(short) < 4096:  # the usual case; a contended VM may stretch a sleep
        assert all(high < 4096 for _, high, _ in one_ms)
    assert ten_ms[0][0] > one_ms[0][1]  # the 10 ms sleeps sit above the 1 ms ones


def test_runs_beside_the_monitor():
    child = Child(lambda: _close_bad_fd(1000))
    with Monitor(events=["close"], pid=child.pid, page_count=64) as mon, \
            SyscallStats(pid=child.pid) as stats:
        child.run()
        snap = stats.snapshot()
        samples = 0
        deadline = time.monotonic() + 10
        while samples < 1000 and time.monotonic() < deadline:
            for rec in mon.reader.read_batch(timeout=0.5):
                samples += isinstance(rec, Sample) and int.from_bytes(rec.data[20:24],
                                                                      "little") == child.pid
    assert snap.get("close").calls == 1000 and samples == 1000


def _wait_gone(ids: set[int], listing) -> set[int]:
    """Ids still listed; the kernel frees objects after an RCU grace period, so wait a bit."""
    deadline = time.monotonic() + 10
    while ids & set(listing()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return ids & set(listing())


def test_close_leaves_nothing_of_ours_in_the_kernel():
    fds_before = set(os.listdir("/proc/self/fd"))
    stats = SyscallStats(pid=os.getpid())
    prog_ids = {syscalls.object_id(fd, True) for fd in stats.prog_fds.values()}
    map_ids = {syscalls.object_id(fd, False) for fd in stats.map_fds.values()}
    assert len(prog_ids) == 4 and len(map_ids) == len(stats.object.maps)
    assert prog_ids <= set(syscalls.loaded_programs())
    stats.close()
    stats.close()  # idempotent
    assert not stats.prog_fds and not stats.map_fds
    with pytest.raises(ValueError, match="closed"):
        stats.snapshot()
    assert _wait_gone(prog_ids, syscalls.loaded_programs) == set()
    assert _wait_gone(map_ids, syscalls.loaded_maps) == set()
    assert set(os.listdir("/proc/self/fd")) <= fds_before
