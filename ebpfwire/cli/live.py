"""The live commands' plumbing: this machine's architecture, a stop flag set by signals,
and the bundled monitor opened as the options ask."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from ebpfwire import machine
from ebpfwire.cli.errors import UsageError
from ebpfwire.cli.options import names_list


def machine_arch() -> str:
    """This machine's architecture as captures name it (x86_64 or arm64)."""
    try:
        return machine.arch()
    except machine.UnsupportedMachine as exc:
        raise UsageError(str(exc)) from None


class StopSignals:
    """SIGINT/SIGTERM set a flag the live loops check, so no write is ever cut in half."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def open_monitor(args: argparse.Namespace):
    """The bundled monitor as the live options ask: --events, --pid (the whole tree),
    --comm (both filtered in the kernel), --transport and its size."""
    from ebpfwire.kernel.errors import LoaderError
    from ebpfwire.kernel.monitor import Monitor

    if args.ring_pages is not None and args.transport == "ringbuf":
        raise UsageError("--ring-pages sizes the per-CPU perf rings; give --ring-bytes with "
                         f"--transport {args.transport}")
    events = names_list(args.events) or None
    try:
        return Monitor(events=events, pid=args.pid, page_count=args.ring_pages,
                       comm=args.comm, transport=args.transport, ring_bytes=args.ring_bytes)
    except LoaderError as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
