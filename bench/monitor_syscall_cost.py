"""What the attached monitor costs every syscall on the machine, traced or not.

Times a loop of ``getpid()`` (no event of the monitor) and of ``close(-1)`` (the `close`
event, sent to the reader, which drains it meanwhile) in this process: without the monitor,
then with ``Monitor()`` (every event) attached. Prints ns per call and the difference.
Needs root. Run: PYTHONPATH=. python bench/monitor_syscall_cost.py [--calls 300000]
"""

from __future__ import annotations

import argparse
import os
import threading
import time

from ebpfwire.kernel.monitor import Monitor


def ns_per_call(func, calls: int) -> float:
    """Best of 3 loops of ``calls`` calls."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter_ns()
        for _ in range(calls):
            func()
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def close_bad_fd() -> None:
    try:
        os.close(-1)
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300_000)
    args = parser.parse_args()
    loops = {"getpid (not traced)": os.getpid, "close(-1) (traced)": close_bad_fd}
    bare = {name: ns_per_call(f, args.calls) for name, f in loops.items()}
    with Monitor(pid=os.getpid(), ignore_self=False) as mon:
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set():
                mon.reader.read_batch(timeout=0.1)

        reader = threading.Thread(target=drain)
        reader.start()
        try:
            traced = {name: ns_per_call(f, args.calls) for name, f in loops.items()}
        finally:
            stop.set()
            reader.join()
    for name in loops:
        print(f"{name:22} {bare[name]:8.0f} ns bare, {traced[name]:8.0f} ns with the monitor "
              f"(+{traced[name] - bare[name]:.0f} ns)")


if __name__ == "__main__":
    main()
