"""Issue 16's last bounds: what commands hold before the first sample, the reorder window's
bound reached and reported, the process tree's bound, and the comm quoted in the table."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli import run
from test_hostile_bounds import _flat, _header, _record, _sample
from test_process import Stream

from ebpfwire import encode
from ebpfwire.capture import ProcessRecord, SampleRecord
from ebpfwire.capture.snapshot import ProcessInfo
from ebpfwire.cli.captures import HOLD_LIMIT, held_until_fit
from ebpfwire.wire.layouts import get_layout

CLASSIC = get_layout("classic")


def _info(pid: int) -> ProcessInfo:
    return ProcessInfo(pid, 1, pid, 0, 0, 0, 0, "p", "/bin/p", "/", ("p",), "")


# -- context records before the first sample


def test_context_records_before_the_first_sample_pass_at_once() -> None:
    first = SampleRecord(0, encode(Stream().openat(5, 1, "c"), "classic"), 0)

    def records(n: int):
        for i in range(n):
            yield ProcessRecord(_info(10 + i), i)
        yield first

    def make(n: int) -> None:
        for _ in held_until_fit(records(n), CLASSIC, "x86_64", "t"):
            pass

    out = list(held_until_fit(records(5000), CLASSIC, "x86_64", "t"))
    assert len(out) == 5001 and out[-1] is first
    # each passes before the next is read: nothing is held for them
    source = records(5000)
    passed = held_until_fit(source, CLASSIC, "x86_64", "t")
    assert next(passed).info.host_pid == 10 and next(source).info.host_pid == 11
    _flat(make)


def test_info_counts_a_large_snapshot_before_the_first_sample(tmp_path: Path) -> None:
    path = tmp_path / "snapshot-first.ewcap"
    path.write_bytes(_header() + b"".join(_record(3, _info(10 + i).to_payload())
                                          for i in range(3000))
                     + _sample(Stream().openat(5, 1, "c")))
    status, out, _ = run("info", "--json", str(path))
    assert status == 0
    info = json.loads(out)
    assert info["context"]["processes"] == 3000 and info["samples"] == 1


def test_samples_past_the_held_ones_are_not_lost(tmp_path: Path) -> None:
    """More than HOLD_LIMIT samples that none decodes cleanly (and no other layout does):
    they and every record after them are given, not only the held ones."""
    s = Stream()
    damaged = encode(s.openat(5, 1, "c"), "classic")[:-3]   # its last argument cut
    path = tmp_path / "damaged-start.ewcap"
    n = HOLD_LIMIT + 40
    path.write_bytes(_header() + _record(1, b"\0\0\0\0" + damaged) * n
                     + b"".join(_sample(s.openat(5, 1, "c")) for _ in range(10)))
    status, out, _ = run("decode", "--lenient", str(path))
    assert len(out.splitlines()) == n + 10
