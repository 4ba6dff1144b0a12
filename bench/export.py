"""Export to Parquet against decode --format jsonl, as whole processes; prints figures.

Builds captures of N and 5N events from fixtures/real-workload.ewcap (real kernel samples,
repeated), then measures, each in its own process started from a fresh wrapper:

- ``python3 -m ebpfwire export FILE -o OUT --jobs 1`` and ``--jobs 2`` (wall-clock seconds,
  events/s, peak RSS);
- ``python3 -m ebpfwire decode --format jsonl FILE > /dev/null``;
- peak RSS of the export at N and 5N events (the largest process of the run);
- "failing connects by process" on the N-event capture: export + a DuckDB query, against
  ``decode --format jsonl | jq ... | sort | uniq -c``.

    python3 bench/export.py [--events 1000000] [--repeat 3] [--workdir DIR]

Timings are the best of --repeat runs. Run it from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "fixtures" / "real-workload.ewcap"
SAMPLES = 147  # records in the source capture

QUERY = ("import duckdb, sys; print(duckdb.execute(\"SELECT comm, host_pid, errno, count(*) "
         "FROM read_parquet($1) WHERE event = 'connect' AND retval < 0 GROUP BY ALL "
         "ORDER BY 4 DESC\", [sys.argv[1]]).fetchall())")
JQ = ("{python} -m ebpfwire decode --format jsonl {capture} | jq -c 'select(.event == "
      "\"connect\" and .retval < 0) | [.comm, .host_pid, .errno]' | sort | uniq -c")
# a wrapper that runs one command (an argument list, or a shell line) and reports its wall
# time and the peak RSS of its largest process
WRAP = ("import json, resource, subprocess, sys, time; cmd = json.loads(sys.argv[1]); "
        "t = time.perf_counter(); subprocess.run(cmd, shell=isinstance(cmd, str), check=True, "
        "stdout=subprocess.DEVNULL); u = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(time.perf_counter() - t, u.ru_maxrss, u.ru_utime + u.ru_stime)")


def build(target: Path, events: int) -> Path:
    """A capture of about `events` samples: the source's records repeated."""
    data = SOURCE.read_bytes()
    header = 12 + struct.unpack_from("<H", data, 10)[0] + 4
    copies = -(-events // SAMPLES)
    with open(target, "wb") as f:
        f.write(data[:header])
        for _ in range(copies):
            f.write(data[header:])
    return target


CPU: dict[str, float] = {}  # least CPU seconds (user + system, all processes) by command


def measure(command: list[str] | str, repeat: int) -> tuple[float, int]:
    """Best wall-clock seconds of `command` (argument list or shell line), peak RSS in KiB;
    its least CPU time goes to CPU."""
    best, rss, cpu = float("inf"), 0, float("inf")
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", WRAP, json.dumps(command)], check=True,
                             cwd=ROOT, capture_output=True, text=True).stdout.split()
        best, rss = min(best, float(out[0])), max(rss, int(out[1]))
        cpu = min(cpu, float(out[2]))
    CPU[json.dumps(command)] = cpu
    return best, rss


def cpu_of(command: list[str] | str) -> float:
    return CPU[json.dumps(command)]


def export_command(capture: Path, out: Path, jobs: int) -> list[str]:
    return [sys.executable, "-m", "ebpfwire", "export", str(capture), "-o", str(out),
            "--jobs", str(jobs), "--force"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ebpfwire-bench-", dir=args.workdir))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work)


def run(args: argparse.Namespace, work: Path) -> None:
    n = -(-args.events // SAMPLES) * SAMPLES
    small = build(work / "small.ewcap", n)
    big = build(work / "big.ewcap", 5 * n)
    out, out_big = work / "small.parquet", work / "big.parquet"
    print(f"captures: {n:,} events ({small.stat().st_size / 2**20:.0f} MiB), "
          f"{5 * n:,} events ({big.stat().st_size / 2**20:.0f} MiB); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")

    decode = [sys.executable, "-m", "ebpfwire", "decode", "--format", "jsonl", str(small)]
    jsonl, _ = measure(decode, args.repeat)
    one, rss_small = measure(export_command(small, out, 1), args.repeat)
    two, rss_two = measure(export_command(small, out, 2), args.repeat)
    _, rss_big = measure(export_command(big, out_big, 1), 1)
    cpus = [cpu_of(decode), cpu_of(export_command(small, out, 1)),
            cpu_of(export_command(small, out, 2))]
    print("wall-clock seconds; CPU seconds (user + system of every process of the run)")
    print(f"decode --format jsonl > /dev/null : {jsonl:6.2f} s  {n / jsonl:>10,.0f} events/s  "
          f"CPU {cpus[0]:6.2f} s")
    print(f"export --jobs 1                   : {one:6.2f} s  {n / one:>10,.0f} events/s  "
          f"CPU {cpus[1]:6.2f} s  {jsonl / one:.2f}x jsonl (target >= 2.0x), "
          f"{cpus[0] / cpus[1]:.2f}x in CPU time")
    print(f"export --jobs 2                   : {two:6.2f} s  {n / two:>10,.0f} events/s  "
          f"CPU {cpus[2]:6.2f} s  {one / two:.2f}x --jobs 1 (target >= 1.6x); on 2 idle "
          f"CPUs at most {2 * cpus[1] / cpus[2]:.2f}x (CPU time of --jobs 1 x 2 / --jobs 2)")
    print(f"peak RSS export --jobs 1: {n:,} events {rss_small / 1024:.0f} MiB, {5 * n:,} "
          f"events {rss_big / 1024:.0f} MiB: {rss_big / rss_small:.2f}x (target <= 1.2x); "
          f"--jobs 2 at {n:,}: {rss_two / 1024:.0f} MiB (largest process)")

    query, _ = measure([sys.executable, "-c", QUERY, str(out)], args.repeat)
    export = min(one, two)
    jobs = 1 if one <= two else 2
    if shutil.which("jq") is None:
        print("failing connects: jq is not installed (apt-get install -y jq); "
              f"export --jobs {jobs} + DuckDB: {export:.2f} s + {query:.2f} s")
    else:
        jq, _ = measure(JQ.format(python=sys.executable, capture=small), args.repeat)
        print(f"failing connects by process on {n:,} events: export --jobs {jobs} "
              f"{export:.2f} s + DuckDB query {query:.2f} s = {export + query:.2f} s; "
              f"decode --format jsonl | jq | sort | uniq -c {jq:.2f} s "
              f"({jq / (export + query):.1f}x longer); the query alone on the Parquet: "
              f"{jq / query:.0f}x faster")
    print(f"load average {os.getloadavg()[0]:.2f} at the end ({time.strftime('%H:%M:%S')})")


if __name__ == "__main__":
    main()
