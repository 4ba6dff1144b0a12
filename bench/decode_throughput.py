"""Decoder throughput on a mixed corpus: decode(), decode_many() and the construct schemas.

Prints events per second for each path, measured in one run on the same corpus
(connect, openat, execve with argv, socket, close, tcp connect), and the speed-up of
the fast path over the compiled schema path.
"""

from __future__ import annotations

import argparse
import time
from collections import deque

import ebpfwire
from ebpfwire import Arg, ArgType, Argv, Event, SockAddr, decode, decode_many, encode
from ebpfwire.wire.layouts import get_layout
from ebpfwire.wire.schema import event_schema


def corpus(size: int) -> list[bytes]:
    """``size`` samples cycling through six realistic events, with perf padding."""
    def event(event_id, retval, comm, *args):
        return Event(123456789012, 0, 0, 1, 4242, 1, 4242, 1000, event_id, len(args), retval,
                     comm, [Arg(*a) for a in args])
    kinds = [
        event(42, -111, "curl", (ArgType.INT_T, 3),
              (ArgType.SOCKADDR_T, SockAddr.inet("127.0.0.1", 8080))),
        event(257, 3, "cat", (ArgType.INT_T, -100), (ArgType.STR_T, "/etc/ld.so.cache"),
              (ArgType.OPEN_FLAGS_T, 0o2000000)),
        event(59, 0, "bash", (ArgType.STR_T, "/usr/bin/ls"),
              (ArgType.STR_ARR_T, Argv(["ls", "-l", "--color=auto", "/tmp"]))),
        event(41, 4, "curl", (ArgType.SOCK_DOM_T, 2), (ArgType.SOCK_TYPE_T, 0o2000001),
              (ArgType.INT_T, 6)),
        event(3, 0, "cat", (ArgType.INT_T, 3)),
        event(400, 0, "curl", (ArgType.STR_T, "TCP"),
              (ArgType.SOCKADDR_T, SockAddr.inet("10.0.0.2", 443))),
    ]
    samples = [encode(e, perf_padding=True) for e in kinds]
    return [samples[i % len(samples)] for i in range(size)]


def rate(label: str, count: int, seconds: float) -> float:
    per_second = count / seconds
    print(f"{label:<34} {per_second:>12,.0f} events/s  ({seconds * 1e6 / count:.2f} us/event)")
    return per_second


def drain(iterable) -> None:
    """Consume without keeping: a consumer handles each event and lets it go."""
    deque(iterable, maxlen=0)


def best_of(repeats: int, run) -> float:
    """Fastest of ``repeats`` runs: the least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--schema-events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    samples = corpus(options.events)
    small = samples[:options.schema_events]
    schema = event_schema(get_layout("classic"))
    print(f"ebpfwire {ebpfwire.__version__}: {options.events:,} samples, six event kinds, "
          f"best of {options.repeats}")

    def run_decode():
        for sample in samples:
            decode(sample)

    fast = rate("decode()", len(samples), best_of(options.repeats, run_decode))
    with_args = rate("decode() + reading event.args", len(samples), best_of(
        options.repeats, lambda: drain(decode(s).args for s in samples)))
    rate("decode() + event.to_dict()", len(samples), best_of(
        options.repeats, lambda: drain(decode(s).to_dict() for s in samples)))
    rate("decode(strict=False)", len(samples), best_of(
        options.repeats, lambda: drain(decode(s, strict=False) for s in samples)))
    rate("decode_many()", len(samples), best_of(
        options.repeats, lambda: drain(decode_many(samples))))
    compiled = schema.compile()
    slow = rate("compiled construct schema (parse)", len(small), best_of(
        options.repeats, lambda: drain(compiled.parse(s) for s in small)))
    rate("construct schema, not compiled", len(small), best_of(
        1, lambda: drain(schema.parse(s) for s in small)))
    print(f"decode() is {fast / slow:.1f}x the compiled schema path; reading every argument "
          f"costs {fast / with_args:.2f}x decode() alone (target <= 1.5x)")


if __name__ == "__main__":
    main()
