"""Shared test setup: tests marked ``live`` run only where BPF really works.

A live test needs root (or CAP_BPF + CAP_PERFMON), a working ``bpf()`` syscall and
tracefs; elsewhere it is skipped with the precise reason, found once per session.
"""

from __future__ import annotations

import errno
import functools
import os

import pytest
from hypothesis import HealthCheck, settings

# Property tests: a bounded default keeps the suite fast; HYPOTHESIS_PROFILE=thorough digs.
settings.register_profile("default", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@functools.cache
def live_skip_reason() -> str | None:
    """Why live BPF tests cannot run here, or None when they can."""
    from ebpfwire.kernel import syscalls, tracefs
    from ebpfwire.kernel.errors import LoaderError

    if os.geteuid() != 0:
        return f"live BPF test: needs root (running as uid {os.geteuid()})"
    try:
        fd = syscalls.map_create(2, 4, 4, 1, name="ebpfwire_probe")
    except syscalls.BpfSyscallError as exc:
        if exc.errno == errno.EPERM:
            return "live BPF test: bpf() returns EPERM (no CAP_BPF, or unprivileged BPF locked)"
        if exc.errno == errno.ENOSYS:
            return "live BPF test: bpf() returns ENOSYS (kernel without CONFIG_BPF_SYSCALL)"
        return f"live BPF test: bpf(BPF_MAP_CREATE) fails: {exc}"
    except LoaderError as exc:
        return f"live BPF test: {exc}"
    os.close(fd)
    try:
        tracefs.tracefs_root()
    except LoaderError as exc:
        return f"live BPF test: tracefs unavailable: {exc}"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``@pytest.mark.live`` tests with the reason when BPF is unavailable.

    With EBPFWIRE_REQUIRE_LIVE=1 (CI sets it) the reason fails the test instead: on a
    machine where BPF must work, a silent skip would hide a broken kernel side.
    """
    if item.get_closest_marker("live") is not None:
        reason = live_skip_reason()
        if reason is not None:
            if os.environ.get("EBPFWIRE_REQUIRE_LIVE") == "1":
                pytest.fail(f"{reason} (EBPFWIRE_REQUIRE_LIVE=1: live tests must run here)")
            pytest.skip(reason)


@pytest.fixture
def live() -> None:
    """Request this fixture (or mark the test ``live``) to need a working BPF setup."""
    reason = live_skip_reason()
    if reason is not None:
        pytest.skip(reason)
