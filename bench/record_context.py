"""What the capture's context costs `record`: the snapshot at the start, and the
per-sample container lookup (resolve_sample) in the record loop, for pairs already seen.

    python3 bench/record_context.py
"""

from __future__ import annotations

import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ebpfwire import encode  # noqa: E402
from ebpfwire.process.procfs import ContainerResolver, snapshot  # noqa: E402
from ebpfwire.wire.events import Event  # noqa: E402


def main() -> None:
    started = time.perf_counter()
    processes = snapshot()
    took = time.perf_counter() - started
    print(f"snapshot: {len(processes)} processes in {took * 1e3:.1f} ms")
    resolver = ContainerResolver()
    started = time.perf_counter()
    seeded = resolver.seed(processes)
    print(f"seed: {len(seeded)} namespace pairs in {(time.perf_counter() - started) * 1e3:.1f} ms")
    data = encode(Event(ts=1, pid_id=0, mnt_id=0, host_ppid=1, host_pid=1, ppid=1, pid=1,
                        uid=0, event_id=3, argnum=0, retval=0, comm="bench", args=[]))
    assert resolver.resolve_sample(data) is None  # the host pair: seen in the seed
    runs = 1_000_000
    per_call = min(timeit.repeat(lambda: resolver.resolve_sample(data), number=runs,
                                 repeat=5)) / runs
    empty = min(timeit.repeat(lambda: None, number=runs, repeat=5)) / runs
    print(f"resolve_sample, pair seen: {per_call * 1e9:.0f} ns per sample "
          f"({(per_call - empty) * 1e9:.0f} ns beyond an empty call)")


if __name__ == "__main__":
    main()
