"""Bulk decoding against the per-event path, on a realistic corpus, every ratio in one run.

The corpus (``bench/realistic.py``): a recording's event mix in which no two samples are
equal, so caches keyed by bytes hit no more than on a real stream; ``--corpus repeated``
gives the old corpus instead (fixtures/real-workload.ewcap's 147 samples repeated) for
comparison. Every figure is CPU time of one process (the bench's own, or a child's read
with ``wait4``), except the ``--jobs`` rows, which are wall time; ratios are to
``decode()`` measured in the same run on the same samples, so a loaded machine moves the
figures more than the ratios.

Rows: the per-event API (``decode()``, then reading every argument, then ``to_dict()``),
``to_table`` over samples in memory and over the capture, with and without the process
context, ``export`` (default options, ``--raw``, ``--jobs 2``), ``decode --format jsonl``
(with the context and ``--raw``) and ``decode --format kubearmor``, each on the bulk path
and event by event (the capture on standard input), ``info``, ``summary`` and ``ps`` as
commands, and the peak
RSS of ``to_table`` and ``export``. ``--rss-scale 5`` adds ``export``'s peak RSS on a corpus
five times as big.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import realistic  # noqa: E402

from ebpfwire import decode  # noqa: E402
from ebpfwire.capture import CaptureReader, SampleRecord  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "real-workload.ewcap"


WARM_EVENTS = 20_000


@dataclass
class Row:
    label: str
    events: int
    seconds: float
    rss_mib: float | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def repeated(count: int) -> Path:
    """The old corpus: the real fixture's records repeated to ``count`` samples."""
    data = FIXTURE.read_bytes()
    info_length = int.from_bytes(data[10:12], "little")
    header = 12 + info_length + 4
    with CaptureReader(FIXTURE) as reader:
        per_copy = sum(1 for record in reader if type(record) is SampleRecord)
    copies = -(-count // per_copy)
    path = Path(tempfile.gettempdir()) / "ebpfwire-bench" / f"repeated-{copies}.ewcap"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.write_bytes(data[:header] + data[header:] * copies)
    return path


def samples_of(path: Path) -> list[bytes]:
    with CaptureReader(path) as reader:
        return [record.data for record in reader if type(record) is SampleRecord]


def cpu(run) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def child(argv: list[str], wall: bool = False, stdin: Path | None = None
          ) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one command: its CPU time, or wall time; ``stdin``: a
    file to read as standard input (what the commands read event by event)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    with open(stdin or os.devnull, "rb") as given:
        process = subprocess.Popen(argv, env=env, stdin=given, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({status})")
    seconds = elapsed if wall else usage.ru_utime + usage.ru_stime
    return seconds, usage.ru_maxrss / 1024


def in_child(code: str, path: Path) -> tuple[float, float, float]:
    """(CPU seconds of ``code``'s own run, peak RSS, the size of its ``table`` in MiB), run
    in a fresh interpreter."""
    script = (f"import sys, time\nsys.path.insert(0, {str(ROOT)!r})\n"
              "from ebpfwire.columnar.arrow import to_table\n"
              f"path = {str(path)!r}\nstart = time.process_time()\n{code}\n"
              "print(time.process_time() - start, table.nbytes / 2**20)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{code} failed")
    seconds, table_mib = map(float, out.split())
    return seconds, usage.ru_maxrss / 1024, table_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--corpus", choices=["realistic", "repeated"], default="realistic")
    parser.add_argument("--layout", default="classic",
                        help="the realistic corpus in this context layout (exec-id: a cwd, "
                             "tty and exec id per process, as KubeArmor's 2025 writer)")
    parser.add_argument("--rss-scale", type=int, default=0,
                        help="also export a corpus this many times as big, for peak RSS")
    parser.add_argument("--quick", action="store_true",
                        help="the in-process rows only (no commands, no RSS)")
    args = parser.parse_args()
    path = (realistic.build(args.events, layout=args.layout) if args.corpus == "realistic"
            else repeated(args.events))
    size = path.stat().st_size
    n = args.events   # the commands run first, from a small parent (a child's peak RSS
    # starts at its parent's: exec keeps the high-water mark)
    rows: list[Row] = []
    if not args.quick:
        seconds, rss, table_mib = in_child("table = to_table(path)", path)
        rows.append(Row(f"to_table(capture), peak RSS (table {table_mib:.0f} MiB)", n,
                        seconds, rss))
        with tempfile.TemporaryDirectory() as folder:
            out = os.path.join(folder, "x.parquet")
            command = [sys.executable, "-m", "ebpfwire"]
            for label, extra, wall in [("export, one job", ["--jobs", "1"], False),
                                       ("export --raw, one job", ["--jobs", "1", "--raw"],
                                        False),
                                       ("export --raw --jobs 1 (wall)", ["--jobs", "1", "--raw"],
                                        True),
                                       ("export --raw --jobs 2 (wall)", ["--jobs", "2", "--raw"],
                                        True),
                                       ("export --jobs 1 (wall)", ["--jobs", "1"], True),
                                       ("export --jobs 2 (wall)", ["--jobs", "2"], True)]:
                seconds, rss = child([*command, "export", str(path), "-o", out, "--force",
                                      *extra], wall)
                rows.append(Row(label, n, seconds, rss))
            jsonl = ["decode", "--format", "jsonl"]
            for label, argv, stdin in [
                    ("decode --format jsonl", jsonl, None),
                    ("decode --format jsonl, event by event (stdin)", jsonl, path),
                    ("decode --format jsonl --raw", [*jsonl, "--raw"], None),
                    ("decode --format jsonl --raw, event by event (stdin)", [*jsonl, "--raw"],
                     path),
                    ("decode --format kubearmor", ["decode", "--format", "kubearmor"], None),
                    ("decode --format kubearmor, event by event (stdin)",
                     ["decode", "--format", "kubearmor"], path),
                    ("info", ["info"], None), ("summary", ["summary"], None),
                    ("ps", ["ps"], None)]:
                source = "-" if stdin else str(path)
                seconds, rss = child([*command, *argv, source], stdin=stdin)
                rows.append(Row(label, n, seconds, rss))
            if args.rss_scale > 1:
                big = realistic.build(n * args.rss_scale)
                seconds, rss = child([*command, "export", str(big), "-o", out, "--force",
                                      "--jobs", "1"])
                rows.append(Row(f"export, one job, {args.rss_scale}x corpus", n * args.rss_scale,
                                seconds, rss))

    samples = samples_of(path)
    n = len(samples)
    print(f"corpus: {args.corpus} ({args.layout}), {n:,} samples, {size / n:.0f} bytes each, "
          f"{len(set(samples)):,} distinct; load average {os.getloadavg()[0]:.2f}")

    def each(function) -> None:
        for sample in samples:
            function(sample)

    # the per-event path, in the corpus's layout (the classic one: decode() as it is)
    decode_one = decode if args.layout == "classic" else partial(decode, layout=args.layout)

    each(decode_one)   # warm the caches the per-event path keeps
    from ebpfwire.columnar.arrow import to_table

    # and the bulk path's first-call costs (imports, kernels, the allocator's first pages:
    # 0.3-0.4 s), on a small corpus of its own
    warm = realistic.build(WARM_EVENTS)
    to_table(warm)
    to_table(samples_of(warm), context=False)

    base = cpu(lambda: each(decode_one))
    rows.append(Row("decode()", n, base))

    def every_value():
        for sample in samples:
            for arg in decode_one(sample).args:
                arg.value  # noqa: B018

    rows.append(Row("decode() + every args[i].value", n, cpu(every_value)))
    rows.append(Row("decode() + to_dict()", n,
                    cpu(lambda: each(lambda s: decode_one(s).to_dict()))))
    rows.append(Row("to_table(samples, context=False)", n,
                    cpu(lambda: to_table(samples, context=False, layout=args.layout))))
    rows.append(Row("to_table(capture, context=False)", n,
                    cpu(lambda: to_table(path, context=False))))
    rows.append(Row("to_table(capture)", n, cpu(lambda: to_table(path))))
    print("\n| path | events/s | x decode() | peak RSS |\n|---|---:|---:|---:|")
    for row in rows:
        rss = "" if row.rss_mib is None else f"{row.rss_mib:,.0f} MiB"
        print(f"| {row.label} | {row.rate / 1e3:,.0f}k | {base / row.seconds * row.events / n:.2f} "
              f"| {rss} |")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nthis process's peak RSS: {own:,.0f} MiB")


if __name__ == "__main__":
    main()
