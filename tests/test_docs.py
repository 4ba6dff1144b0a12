"""Docs that run: every code block of README.md and docs/*.md that is meant to run is run.

A ``python`` block runs as a script, a ``sh`` block as a shell script, and a block whose
lines start with ``$ `` runs each command and compares what it prints with the lines
shown (a line ``...`` stands for any lines, ``...`` inside a line for any text). They run
in a scratch directory holding ``fixtures/`` and the captures the examples name, with
``ebpfwire`` on PATH running this tree's code. A block that is not meant to run says so
on the line before it: ``<!-- not run: why -->``; ``<!-- continues -->`` runs a python
block after the one before it; ``<!-- sql: ... -->`` and ``<!-- pandas: ... -->`` blocks
are the answers tests/test_analysis.py checks.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
MARK = re.compile(r"<!-- (not run: .+|continues|sql: [\w-]+|pandas: [\w-]+) -->\n$")
# the captures the examples name, as copies of the fixtures
CAPTURES = {
    "trace.ewcap": "real-workload.ewcap", "run.ewcap": "real-workload.ewcap",
    "capture.ewcap": "real-workload.ewcap", "node1.ewcap": "real-workload.ewcap",
    "node2.ewcap": "real-namespaces.ewcap", "a.ewcap": "real-workload.ewcap",
    "b.ewcap": "real-namespaces.ewcap", "big.ewcap": "real-workload.ewcap",
    "run-1.ewcap": "real-workload.ewcap", "run-2.ewcap": "real-namespaces.ewcap",
}


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str
    mark: str | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.mark is None or self.mark == "continues"

    @property
    def commands(self) -> bool:
        return self.lang == "" and self.code.startswith("$ ")


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            before = text[:match.start()]
            mark = MARK.search(before[-200:])
            found.append(Block(page, before.count("\n") + 1, match.group(1), match.group(2),
                               mark.group(1) if mark else None))
    return found


BLOCKS = blocks()
RUN = [b for b in BLOCKS if b.lang in ("python", "sh") or b.commands]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A directory to run examples in, and their environment."""
    where = tmp_path_factory.mktemp("docs")
    (where / "fixtures").symlink_to(ROOT / "fixtures")
    bin_dir = where / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "ebpfwire"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m ebpfwire \"$@\"\n")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "TZ": "UTC", "EBPFWIRE_FIXTURES": str(ROOT / "fixtures")}
    return where, env


def _fresh(where: Path) -> None:
    """The captures the examples name, as the fixtures; what an example made, removed."""
    for entry in where.iterdir():
        if entry.name not in ("fixtures", ".bin"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for name, fixture in CAPTURES.items():
        shutil.copyfile(ROOT / "fixtures" / fixture, where / name)


def _python(block: Block) -> str:
    """The block's code, after the python blocks it continues."""
    if block.mark != "continues":
        return block.code
    earlier = [b for b in BLOCKS if b.page == block.page and b.lang == "python"
               and b.line < block.line]
    return _python(earlier[-1]) + block.code


def _matches(expected: list[str], got: list[str]) -> bool:
    """Do the printed lines match the shown ones (``...``: any lines, or any text)?"""
    if not expected:
        return not got
    first, rest = expected[0], expected[1:]
    if first == "...":
        return any(_matches(rest, got[i:]) for i in range(len(got) + 1))
    pattern = ".*".join(re.escape(part) for part in first.split("..."))
    return bool(got) and re.fullmatch(pattern, got[0]) is not None and _matches(rest, got[1:])


def _commands(block: Block) -> list[tuple[str, list[str]]]:
    """Each ``$ command`` of the block with the lines shown after it."""
    pairs: list[tuple[str, list[str]]] = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            pairs[-1][1].append(line)
    return pairs


def test_every_runnable_looking_block_runs_or_says_why_not():
    """A python or sh block, or a ``$`` block, is run unless its page says why not."""
    unmarked = [b.id for b in BLOCKS if b.lang in ("python", "sh") and b.mark is None]
    assert len(unmarked) >= 10  # most examples run
    assert all(b.mark.startswith(("not run: ", "sql: ", "pandas: ", "continues"))
               for b in BLOCKS if b.mark)


@pytest.mark.parametrize("block", [b for b in RUN if b.runs], ids=lambda b: b.id)
def test_the_example_runs(block: Block, scratch):
    where, env = scratch
    _fresh(where)
    if block.lang == "python":
        done = subprocess.run([sys.executable, "-c", _python(block)], cwd=where, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{block.id}:\n{done.stderr[-3000:]}"
    elif block.lang == "sh":
        done = subprocess.run(["sh", "-ec", block.code], cwd=where, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{block.id}:\n{done.stderr[-3000:]}"
    else:
        for command, shown in _commands(block):
            done = subprocess.run(["sh", "-c", command], cwd=where, env=env,
                                  capture_output=True, text=True, timeout=300)
            got = (done.stdout + done.stderr).splitlines()
            assert _matches(shown, got), (f"{block.id}: $ {command}\nshown:\n"
                                          + "\n".join(shown) + "\ngot:\n" + "\n".join(got))


def test_the_line_matcher():
    assert _matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert _matches(["x ... z"], ["x 0.18 s z"]) and not _matches(["x ... z"], ["x y"])
    assert not _matches(["a"], ["a", "b"]) and _matches(["..."], [])
