"""ebpfwire's object loader against libbpf (through bpftool) on a corpus of BPF objects.

For each ``*.o`` under the directories given: libbpf loads the whole object
(``bpftool prog loadall``); ebpfwire loads the whole object, then each program on its own
(``load(keep_going=True)``); where both load the whole object, the kernel's translated
instructions of every program are compared (``bpftool prog dump xlated``, map ids masked),
as tests/test_objects_oracle.py does for the test objects. Prints the counts, the objects
where the two differ, and ebpfwire's refusals grouped by their first words.

The corpus is not part of the repository: build it from the sources you want to try (for
instance bcc's libbpf-tools and libbpf-bootstrap's examples against this kernel's
``bpftool btf dump file /sys/kernel/btf/vmlinux format c``). Needs root, bpftool and bpffs
on /sys/fs/bpf. Run: sudo PYTHONPATH=. python3 bench/objects_corpus.py DIR [DIR ...]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.objects import Object

BPFFS = Path("/sys/fs/bpf")


def bpftool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bpftool", *args], capture_output=True, text=True)


def xlated(prog_id: int) -> str:
    out = bpftool("prog", "dump", "xlated", "id", str(prog_id)).stdout
    return re.sub(r"map\[id:\d+\]", "map[id:N]", out)


def libbpf_whole(path: Path) -> dict[str, str] | str:
    """Program name -> xlated text, or libbpf's last error line."""
    pins = BPFFS / f"ebpfwire-corpus-{uuid.uuid4().hex[:12]}"
    done = bpftool("prog", "loadall", str(path), str(pins))
    try:
        if done.returncode:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            return lines[-1] if lines else f"bpftool exit {done.returncode}"
        got = {}
        for pin in pins.iterdir():
            info = bpftool("prog", "show", "pinned", str(pin)).stdout
            got[pin.name] = xlated(int(info.split(":", 1)[0]))
        return got
    finally:
        shutil.rmtree(pins, ignore_errors=True)


def reason(exc: BaseException) -> str:
    """The first words of an error, names and numbers left out, to group refusals by."""
    text = str(exc).splitlines()[0].split(".o: ", 1)[-1]  # without the object's path
    text = re.sub(r"'[^'\s]*'|\d+", "_", text)
    return " ".join(text.split()[:12])


def ours_whole(path: Path, names: list[str]) -> dict[str, str] | str:
    try:
        with Object.open(path) as obj:
            obj.load(names or None)
            return {n: xlated(syscalls.object_id(obj.programs[n].fd, True)) for n in names}
    except (LoaderError, OSError, ValueError) as exc:
        return reason(exc)


def ours_each(path: Path, refusals: Counter) -> tuple[int, int]:
    """(programs loaded, programs) with every program tried on its own."""
    try:
        obj = Object.open(path)
    except (LoaderError, OSError, ValueError) as exc:
        refusals[f"open: {reason(exc)}"] += 1
        return 0, 0
    with obj:
        try:
            obj.load(keep_going=True)
        except (LoaderError, OSError, ValueError) as exc:  # before any program: maps, BTF
            refusals[f"maps: {reason(exc)}"] += 1
            return 0, len(obj.programs)
        for prog in obj.programs.values():
            if prog.fd is None and prog.error is not None:
                refusals[reason(prog.error)] += 1
        return sum(p.fd is not None for p in obj.programs.values()), len(obj.programs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    args = parser.parse_args()
    objects = sorted(p for d in args.dirs for p in d.rglob("*.o"))
    if not objects:
        sys.exit("no *.o under " + " ".join(map(str, args.dirs)))
    counts: Counter = Counter()
    refusals: Counter = Counter()
    differ = []
    for path in objects:
        theirs = libbpf_whole(path)
        names = sorted(theirs) if isinstance(theirs, dict) else []
        ours = ours_whole(path, names)
        loaded, total = ours_each(path, refusals)
        counts["objects"] += 1
        counts["programs"] += total
        counts["ours each"] += loaded
        counts["libbpf whole"] += isinstance(theirs, dict)
        counts["ours whole"] += isinstance(ours, dict)
        if isinstance(theirs, dict) and isinstance(ours, dict):
            counts["both whole"] += 1
            counts["programs compared"] += len(names)
            same = sum(ours[n] == theirs[n] for n in names)
            counts["xlated equal"] += same
            if same != len(names):
                differ.append(f"{path.name}: {len(names) - same} of {len(names)} programs")
        elif isinstance(theirs, dict):
            differ.append(f"{path.name}: libbpf loads it, ebpfwire: {ours}")
        elif isinstance(ours, dict):
            counts["ours only"] += 1
        print(f"{path.name:40} libbpf {'ok' if isinstance(theirs, dict) else 'no':3} "
              f"ebpfwire {'ok' if isinstance(ours, dict) else 'no':3} each {loaded}/{total}",
              flush=True)
    print(f"\n{counts['objects']} objects, {counts['programs']} programs")
    print(f"whole objects loaded: libbpf {counts['libbpf whole']}, ebpfwire {counts['ours whole']}"
          f" (ebpfwire where libbpf could not: {counts['ours only']})")
    print(f"programs loaded one by one (ebpfwire): {counts['ours each']} of {counts['programs']}")
    print(f"xlated instructions equal to libbpf's: {counts['xlated equal']} of "
          f"{counts['programs compared']} programs of the {counts['both whole']} objects both load")
    for line in differ:
        print("  differs:", line)
    print("\nebpfwire's refusals (program, or the object before any program):")
    for text, n in refusals.most_common():
        print(f"  {n:4}  {text}")


if __name__ == "__main__":
    main()
