"""Monitor start and stop: how long opening and closing the bundled monitor takes, by phase.

Opens ``Monitor()`` with every event (or ``--events``), closes it, and prints the time
spent creating maps, loading (verifying) programs, opening the perf reader, attaching,
detaching and closing the rest, then the totals; ``--runs`` repeats it. Phases are timed
by wrapping the steps of the Monitor and its Object, so the figures are what a user waits
for: "read" is parsing the object file; "loads+config" is the wall time of creating the
BTF and maps ("maps", part of it), then loading the programs on worker threads while the
config is built from the kernel's BTF. Needs root.
With ``--interrupt-after S`` it sends itself SIGINT S seconds into each open instead and
prints how long the KeyboardInterrupt took to come out with everything closed.
With ``--btf`` it times only the config's BTF work (no root needed): reading
/sys/kernel/btf/vmlinux, indexing its types, and looking up the config's offsets; then
what the open does instead: the cache's key (mapping and hashing the BTF) and the whole
cached answer (key, entry read and checked; the cache warmed first).
With ``--pid self`` (or a pid) the monitor follows that process tree, as ``trace --pid``.
Run: PYTHONPATH=. python bench/monitor_startup.py [--runs 3] [--events close,openat]
[--transport perf|ringbuf] [--pid self] [--interrupt-after 0.1] [--btf]
"""

from __future__ import annotations

import argparse
import inspect
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from ebpfwire.kernel import cache, objects
from ebpfwire.kernel.btf import VMLINUX_PATH, Btf
from ebpfwire.kernel.config import _btf_bytes, cached_kernel_offsets, kernel_offsets
from ebpfwire.kernel.monitor import Monitor
from ebpfwire.kernel.objects import Object

PHASES = {  # (owner, attribute) -> phase name
    (objects, "read_spec"): "read",
    (Object, "_prepare"): "maps",
    (Monitor, "_build_config"): "config(BTF)",
    (Object, "load"): "loads+config",
    (Monitor, "_open_reader"): "reader",
    (Object, "attach"): "attach",
    (Object, "detach"): "detach",
    (Object, "close"): "close rest",
}


def timed(spent: dict[str, float], name: str, func: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", help="comma-separated events (default: all)")
    parser.add_argument("--transport", default=None, help="perf or ringbuf (if supported)")
    parser.add_argument("--pid", help="follow this process tree ('self': this process)")
    parser.add_argument("--interrupt-after", type=float, default=None, metavar="S")
    parser.add_argument("--btf", action="store_true", help="time only the kernel BTF work")
    args = parser.parse_args()
    if args.btf:
        btf_phases(args.runs)
        return
    events = args.events.split(",") if args.events else None
    extra = {}
    if args.transport and "transport" in inspect.signature(Monitor).parameters:
        extra["transport"] = args.transport
    if args.pid:
        extra["pid"] = os.getpid() if args.pid == "self" else int(args.pid)
    if args.interrupt_after is not None:
        interrupt(args.runs, args.interrupt_after, events, extra)
        return
    print(f"{'run':>3} " + " ".join(f"{p:>13}" for p in PHASES.values())
          + f" {'open':>7} {'close':>7} {'total':>7}  (seconds)")
    for run in range(1, args.runs + 1):
        spent: dict[str, float] = defaultdict(float)
        originals = {key: getattr(*key) for key in PHASES}
        for (owner, method), phase in PHASES.items():
            setattr(owner, method, timed(spent, phase, originals[owner, method]))
        try:
            start = time.perf_counter()
            mon = Monitor(events=events, **extra)
            opened = time.perf_counter()
            programs = len(mon.programs)
            mon.close()
            closed = time.perf_counter()
        finally:
            for (owner, method), func in originals.items():
                setattr(owner, method, func)
        print(f"{run:>3} " + " ".join(f"{spent[p]:>13.3f}" for p in PHASES.values())
              + f" {opened - start:>7.3f} {closed - opened:>7.3f} {closed - start:>7.3f}"
              + f"  ({programs} programs)")


def btf_phases(runs: int) -> None:
    """The config's BTF work by step: read the blob, index its types, look up offsets;
    then the cache's key and the cached answer."""
    print(f"{'run':>3} {'read':>7} {'index':>7} {'offsets':>7} {'total':>7} {'cpu':>7} "
          f"{'key':>7} {'cached':>7}  (seconds, load average {os.getloadavg()[0]:.2f})")
    cached_kernel_offsets()  # warm
    for run in range(1, runs + 1):
        start0, cpu = time.perf_counter(), time.process_time()
        with open(VMLINUX_PATH, "rb") as f:
            data = f.read()
        read = time.perf_counter()
        btf = Btf(data, VMLINUX_PATH)
        indexed = time.perf_counter()
        kernel_offsets(btf)
        done = time.perf_counter()
        cpu = time.process_time() - cpu
        start = time.perf_counter()
        data = _btf_bytes(VMLINUX_PATH)
        cache.key(data, "question")
        keyed = time.perf_counter()
        if not isinstance(data, bytes):  # mapped
            data.close()
        cached_kernel_offsets()
        cached = time.perf_counter()
        print(f"{run:>3} {read - start0:>7.3f} {indexed - read:>7.3f} {done - indexed:>7.3f} "
              f"{done - start0:>7.3f} {cpu:>7.3f} {keyed - start:>7.3f} {cached - keyed:>7.3f}"
              f"  ({len(btf)} types)")


def send_sigint(sent: list[float]) -> None:
    sent.append(time.perf_counter())
    os.kill(os.getpid(), signal.SIGINT)


def interrupt(runs: int, after: float, events: list[str] | None, extra: dict) -> None:
    """SIGINT ``after`` s into each open: the time from the signal to the interrupt's end."""
    for run in range(1, runs + 1):
        sent: list[float] = []

        timer = threading.Timer(after, send_sigint, (sent,))
        timer.start()
        try:
            mon = Monitor(events=events, **extra)
            try:
                time.sleep(after + 5)
            finally:
                mon.close()
        except KeyboardInterrupt:
            done = time.perf_counter()
            print(f"run {run}: SIGINT {after:.3f} s into the open; KeyboardInterrupt out, "
                  f"everything closed, {done - sent[0]:.3f} s after the signal")
        finally:
            timer.cancel()


if __name__ == "__main__":
    main()
