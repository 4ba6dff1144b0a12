"""Columnar decoding on a corpus of real kernel events: ``to_table`` against the per-event path.

Builds a temporary capture of at least ``--events`` samples by repeating the samples of
fixtures/real-workload.ewcap (real events recorded on this project's VM), then prints, in
one run: ``to_table`` events/s, per-event ``decode()`` + reading every argument events/s
(both reading the same capture with the same CaptureReader), and their ratio; and the
same two paths over the samples already in memory, which leaves out the capture reading.

``context``: the cost of the process context columns: ``to_table`` and an in-process
``export_parquet(jobs=1)`` with them (the default) and without (``context=False``, what
``export --raw`` does). ``--measure context`` runs only that. The context follows the
events in time order, so this one reads a copy of the corpus whose copies of the fixture
follow each other in time (each copy's ``ts`` moved after the previous copy's), as a
real recording's do; the plain corpus repeats the same 41 ms over and over, which makes
the reorder window sort and hold its maximum all along.

More measurements (export, JSON lines, DuckDB) are meant to be added as functions taking
the corpus ``Corpus`` and returning ``Figure`` rows, listed in ``MEASUREMENTS``.
"""

from __future__ import annotations

import argparse
import os
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ebpfwire import decode
from ebpfwire.capture import CaptureReader, CaptureWriter, SampleRecord
from ebpfwire.columnar.arrow import to_table
from ebpfwire.columnar.export import export_parquet

FIXTURE = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "real-workload.ewcap")


@dataclass
class Corpus:
    """The temporary capture and its samples (also kept in memory)."""

    path: str
    samples: list[bytes]
    layout: str
    arch: str


@dataclass
class Figure:
    label: str
    events: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_rate(self) -> float:
        """Events per CPU second of this process: steadier than wall clock on a shared box."""
        return self.events / self.cpu_seconds


def best_of(repeats: int, run: Callable[[], int]) -> tuple[int, float, float]:
    """(events, fastest wall-clock seconds, fewest CPU seconds) of ``repeats`` runs."""
    times, cpu_times, events = [], [], 0
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        events = run()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    return events, min(times), min(cpu_times)


def build_corpus(directory: str, events: int) -> Corpus:
    with CaptureReader(FIXTURE) as reader:
        header = reader.header
        records = [r for r in reader if isinstance(r, SampleRecord)]
    path = os.path.join(directory, "corpus.ewcap")
    samples = []
    with CaptureWriter(path, layout=header.layout, arch=header.arch,
                       boot_time_ns=header.boot_time_ns) as writer:
        while len(samples) < events:
            for record in records:
                writer.write_sample(record.cpu, record.data)
                samples.append(record.data)
    return Corpus(path, samples, header.layout, header.arch)


def per_event_capture(corpus: Corpus) -> int:
    layout, arch = corpus.layout, corpus.arch
    with CaptureReader(corpus.path) as reader:
        deque((decode(r.data, layout=layout, arch=arch).args for r in reader
               if type(r) is SampleRecord), maxlen=0)
    return len(corpus.samples)


def per_event_memory(corpus: Corpus) -> int:
    layout, arch = corpus.layout, corpus.arch
    deque((decode(s, layout=layout, arch=arch).args for s in corpus.samples), maxlen=0)
    return len(corpus.samples)


def measure_to_table(corpus: Corpus, repeats: int) -> list[Figure]:
    return [
        Figure("to_table(capture path)",
               *best_of(repeats, lambda: to_table(corpus.path).num_rows)),
        Figure("per event: CaptureReader + decode() + .args",
               *best_of(repeats, lambda: per_event_capture(corpus))),
        Figure("to_table(samples in memory)",
               *best_of(repeats, lambda: to_table(corpus.samples, layout=corpus.layout,
                                                  arch=corpus.arch).num_rows)),
        Figure("per event: decode() + .args, in memory",
               *best_of(repeats, lambda: per_event_memory(corpus))),
    ]


def rising(corpus: Corpus) -> str:
    """A copy of the corpus capture whose copies of the fixture follow each other in time."""
    with CaptureReader(FIXTURE) as reader:
        header = reader.header
        records = [r for r in reader if isinstance(r, SampleRecord)]
    stamps = [struct.unpack_from("<Q", r.data)[0] for r in records]
    span = max(stamps) - min(stamps) + 1_000_000
    path = os.path.join(os.path.dirname(corpus.path), "rising.ewcap")
    with CaptureWriter(path, layout=header.layout, arch=header.arch,
                       boot_time_ns=header.boot_time_ns) as writer:
        written = 0
        while written < len(corpus.samples):
            shift = span * (written // len(records))
            for record, ts in zip(records, stamps, strict=True):
                writer.write_sample(record.cpu, struct.pack("<Q", ts + shift) + record.data[8:])
            written += len(records)
    return path


def export_once(path: str, context: bool) -> int:
    out = path + ".parquet"
    summary = export_parquet(path, out, jobs=1, context=context, force=True)
    os.unlink(out)
    return summary.events


def measure_context(corpus: Corpus, repeats: int) -> list[Figure]:
    path = rising(corpus)
    return [
        Figure("to_table(capture path), context",
               *best_of(repeats, lambda: to_table(path).num_rows)),
        Figure("to_table(capture path), context=False",
               *best_of(repeats, lambda: to_table(path, context=False).num_rows)),
        Figure("export_parquet(jobs=1), context",
               *best_of(repeats, lambda: export_once(path, True))),
        Figure("export_parquet(jobs=1), context=False",
               *best_of(repeats, lambda: export_once(path, False))),
    ]


#: Each entry measures something on the corpus; append new ones here.
MEASUREMENTS: dict[str, Callable[[Corpus, int], list[Figure]]] = {
    "to_table": measure_to_table, "context": measure_context}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", choices=sorted(MEASUREMENTS), action="append",
                        help="only these measurements (repeat the option); default: all")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ebpfwire-bench-") as directory:
        corpus = build_corpus(directory, options.events)
        size = os.path.getsize(corpus.path)
        print(f"corpus: {len(corpus.samples):,} real-workload samples, {size / 2**20:.1f} MiB "
              f"capture; best of {options.repeats}; load average before: "
              f"{os.getloadavg()[0]:.2f}")
        figures: dict[str, list[Figure]] = {}
        for name in options.measure or MEASUREMENTS:
            for figure in MEASUREMENTS[name](corpus, options.repeats):
                figures.setdefault(name, []).append(figure)
                print(f"{figure.label:<48} {figure.rate:>12,.0f} events/s  "
                      f"({figure.seconds:.2f} s; {figure.cpu_rate:,.0f} per CPU second)")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        if "to_table" in figures:
            found = figures["to_table"]
            for label, (table, per_event) in {"from the capture": found[0:2],
                                              "from memory": found[2:4]}.items():
                print(f"to_table / per-event, {label + ':':<17} "
                      f"{table.rate / per_event.rate:.2f}x wall clock, "
                      f"{table.cpu_rate / per_event.cpu_rate:.2f}x CPU time (target >= 2.0x)")
        if "context" in figures:
            found = figures["context"]
            for label, (rich, raw) in {"to_table": found[0:2], "export": found[2:4]}.items():
                print(f"context cost, {label + ':':<10} {rich.seconds / raw.seconds - 1:+.0%} "
                      f"wall clock, {rich.cpu_seconds / raw.cpu_seconds - 1:+.0%} CPU time")


if __name__ == "__main__":
    main()
