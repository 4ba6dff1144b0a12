"""``ebpfwire record``: live events from the bundled monitor into a capture file."""

from __future__ import annotations

import argparse
import time

from ..capture import CaptureWriter
from .common import EXIT_OK, UsageError, _open_monitor, _say, _Status, _Stop, machine_arch


def cmd_record(args: argparse.Namespace) -> int:
    arch = machine_arch()
    if args.ring_pages is not None and (args.ring_pages < 1
                                        or args.ring_pages & (args.ring_pages - 1)):
        raise UsageError(f"--ring-pages: expected a power of two, found {args.ring_pages}")
    with _Stop() as stop:
        monitor = _open_monitor(args)
        try:
            writer = CaptureWriter(args.output, layout="classic", arch=arch)
        except OSError as exc:
            monitor.close()
            raise UsageError(f"{args.output}: {exc.strerror}") from None
        events = lost = 0
        status = _Status()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            with monitor, writer:
                reader = monitor.reader
                while not stop.requested:
                    wait = 0.2
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            break
                    for record in reader.read_batch(timeout=wait):
                        if hasattr(record, "data"):
                            writer.write_sample(record.cpu, record.data)
                            events += 1
                        else:
                            writer.write_lost(record.cpu, record.count)
                            lost += record.count
                    writer.flush()  # whole records, at least once per loop (<= 0.2 s)
                    status.update(events, lost)
        finally:
            status.update(events, lost, force=True)
            status.done()
    _say(f"recorded {events} events ({lost} lost) to {args.output}")
    return EXIT_OK


