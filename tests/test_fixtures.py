"""Golden tests: every fixtures/*.ewcap with a .jsonl beside it decodes to exactly that.

Extra command-line flags for a fixture live in a sidecar ``<name>.args`` file (for
example ``--lenient``), so captures added later (fixtures/real-*.ewcap) are picked up
without touching this file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ebpfwire.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
GOLDEN = sorted(p for p in FIXTURES.glob("*.ewcap") if p.with_suffix(".jsonl").exists())


def _args(capture: Path) -> list[str]:
    sidecar = capture.with_suffix(".args")
    return shlex.split(sidecar.read_text()) if sidecar.exists() else []


def _decode(capture: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = main(["decode", "--format", "jsonl", "--raw", *_args(capture), str(capture)])
    return status, out.getvalue()


def test_the_synthetic_fixtures_are_there():
    names = {p.stem for p in GOLDEN}
    assert {"all-types", "damaged"} | {f"layout-{n}" for n in (
        "classic", "cwd", "cwd-oid", "cwd-tty-oid", "exec-id", "hash")} <= names


@pytest.mark.parametrize("capture", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_decode_matches_golden(capture: Path):
    status, got = _decode(capture)
    assert status == 0
    expected = capture.with_suffix(".jsonl").read_text()
    assert got.splitlines() == expected.splitlines()  # a line diff on failure
    assert got == expected
    for line in got.splitlines():
        json.loads(line)  # every line is valid JSON on its own


def test_make_synthetic_is_deterministic(tmp_path: Path):
    """Regenerating the captures gives the committed bytes (fixed seeds, host, boot time)."""
    code = (
        "import sys; from pathlib import Path\n"
        f"sys.path.insert(0, {str(FIXTURES)!r})\n"
        "import make_synthetic as m\n"
        f"m.HERE = Path({str(tmp_path)!r}); m.ROOT = Path({str(tmp_path)!r})\n"
        "(m.ROOT / 'ebpfwire' / 'data').mkdir(parents=True)\n"
        "m.generate()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    made = sorted(tmp_path.glob("*.ewcap"))
    assert [p.name for p in made] == sorted(
        p.name for p in FIXTURES.glob("*.ewcap") if not p.name.startswith("real-"))
    for path in made:
        assert path.read_bytes() == (FIXTURES / path.name).read_bytes(), path.name
    # the bundled sample is not compared: it is to be replaced by a real recording


def test_console_entry_point_in_a_subprocess():
    """`python -m ebpfwire` (what the console script runs) gives the golden output too."""
    capture = FIXTURES / "all-types.ewcap"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "ebpfwire", "decode", "--format", "jsonl", "--raw", str(capture)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == capture.with_suffix(".jsonl").read_text()
