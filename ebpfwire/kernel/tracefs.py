"""Find (or mount) tracefs and read tracepoint ids for ``perf_event_open``."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from ebpfwire.kernel.errors import LoaderError

CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def _mount_tracefs(target: str) -> str | None:
    """Try ``mount -t tracefs nodev target``; the reason on failure, else None."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", target.encode(), b"tracefs", 0, None) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def tracefs_root(mount: bool = True) -> Path:
    """The tracefs mount point, mounting it on /sys/kernel/tracing if needed and allowed."""
    for cand in CANDIDATES:
        if os.path.isdir(os.path.join(cand, "events")):
            return Path(cand)
    reason = "mounting was not attempted"
    if mount and os.path.isdir(CANDIDATES[0]):
        reason = _mount_tracefs(CANDIDATES[0]) or ""
        if not reason and os.path.isdir(os.path.join(CANDIDATES[0], "events")):
            return Path(CANDIDATES[0])
    raise LoaderError(
        f"tracefs not found at {' or '.join(CANDIDATES)} and mounting it on {CANDIDATES[0]} "
        f"failed ({reason or 'no events directory after mount'}); tracepoint programs need "
        "it: run `mount -t tracefs nodev /sys/kernel/tracing` as root"
    )


def tracepoint_id(category: str, name: str, root: Path | None = None) -> int:
    """The id of tracepoint ``category/name`` (the ``config`` for PERF_TYPE_TRACEPOINT)."""
    base = root if root is not None else tracefs_root()
    path = base / "events" / category / name / "id"
    try:
        return int(path.read_text().strip())
    except FileNotFoundError:
        raise LoaderError(
            f"tracepoint {category}/{name} does not exist on this kernel ({path} missing)"
        ) from None
    except (OSError, ValueError) as exc:
        raise LoaderError(f"cannot read tracepoint id from {path}: {exc}") from exc
