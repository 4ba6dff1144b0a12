"""``ebpfwire summary`` counted from the batch decoder's columns against the per-event path
(``summarise_capture`` over a CaptureStream, the command's path without the arrow extra):
the same stdout, stderr and exit status on every fixture, on damaged captures, on the
captures that make the layout check hold records back and on Hypothesis-made ones."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
from corpus import damaged_fixture, made_capture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import run
from test_hostile_bounds import _header, _lost, _record, _sample
from test_process import Stream

from ebpfwire import encode
from ebpfwire.capture import (
    CaptureReader,
    CaptureStream,
    CaptureWriter,
    HostInfo,
    LostRecord,
    SampleRecord,
)
from ebpfwire.cli.captures import HELD_LOST_LIMIT, HOLD_LIMIT
from ebpfwire.columnar.arrow import batches
from ebpfwire.output.summary import summarise_batches, summarise_capture
from ebpfwire.wire.strategies import damaged_event_bytes, event_bytes

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CAPTURES = sorted(FIXTURES.glob("*.ewcap"))
BULK = "ebpfwire.cli.summary_columns"
OPTIONS = [[], ["--lenient"], ["--by", "comm"], ["--by", "pid", "--lenient"],
           ["--json", "--by", "pid"], ["--failed", "--by", "comm"],
           ["--event", "openat,connect,execve"], ["--comm", "ls", "--by", "pid"],
           ["--exact-pid", "29676"], ["--layout", "cwd"]]


def both(monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: bytes | None = None) -> tuple:
    """(status, stdout, stderr) of the command by columns, the same event by event, whatever
    the captures' size."""
    out = []
    for columns in (True, False):
        with monkeypatch.context() as patch:
            patch.setattr("ebpfwire.cli.summary.by_columns", lambda sources, on=columns: on)
            sys.modules.pop(BULK, None)
            out.append(run(*argv, stdin=stdin))
            assert (sys.modules.get(BULK) is not None) == columns   # the path taken
    return tuple(out)


@pytest.mark.parametrize("options", OPTIONS, ids=" ".join)
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_fixtures_count_as_event_by_event(monkeypatch, capture: Path, options: list[str]):
    bulk, events = both(monkeypatch, "summary", *options, str(capture))
    assert bulk == events


def test_several_files_and_standard_input(monkeypatch):
    real, damaged = FIXTURES / "real-workload.ewcap", FIXTURES / "damaged.ewcap"
    bulk, events = both(monkeypatch, "summary", "--by", "comm", str(real), "missing.ewcap",
                        str(damaged))
    assert bulk == events and bulk[0] == 2
    bulk, events = both(monkeypatch, "summary", "-", stdin=damaged.read_bytes())
    assert bulk == events and "<stdin>: sample at file offset 203 does not decode" in bulk[2]


@pytest.mark.parametrize("seed", range(24))
def test_damaged_captures_count_as_event_by_event(monkeypatch, tmp_path: Path, seed: int):
    path = damaged_fixture(seed, tmp_path / "damaged.ewcap")
    for options in ([], ["--lenient", "--by", "pid"], ["--json", "--by", "comm"]):
        bulk, events = both(monkeypatch, "summary", *options, str(path))
        assert bulk == events


def test_losses_and_damage_before_the_first_clean_sample(monkeypatch, tmp_path: Path):
    """The held records: LOST records added together (the note), undecodable samples said
    after the damage met while they were held, the layout check past HOLD_LIMIT."""
    s = Stream()
    cut = _record(1, b"\0\0\0\0" + encode(s.openat(5, 1, "c"), "classic")[:-3])
    clean = _sample(s.openat(5, 1, "c"))
    captures = {
        "lost-first": _lost(1) * (HELD_LOST_LIMIT + 300) + _lost(1, 1) * 200 + clean,
        "cut-first": cut * 3 + b"junk" * 9 + cut + clean + b"junk" + cut + clean,
        "cut-past-the-limit": cut * (HOLD_LIMIT + 40) + clean * 10,
        "cut-only": cut * 5 + b"junk" + _lost(4),
    }
    for name, records in captures.items():
        path = tmp_path / f"{name}.ewcap"
        path.write_bytes(_header() + records)
        for options in ([], ["--lenient"], ["--layout", "cwd"]):
            bulk, events = both(monkeypatch, "summary", *options, str(path))
            assert bulk == events, name
    assert "LOST records before the first sample" in both(
        monkeypatch, "summary", str(tmp_path / "lost-first.ewcap"))[0][2]


def test_comms_that_are_not_utf8(monkeypatch, tmp_path: Path):
    """A comm the column shows as U+FFFD is grouped and filtered by the Event's name."""
    s = Stream()
    odd = _record(1, b"\0\0\0\0" + encode(s.openat(7, 1, "abcd"), "classic").replace(
        b"abcd", b"\xffbcd", 1))
    path = tmp_path / "comms.ewcap"
    path.write_bytes(_header() + _sample(s.openat(7, 1, "abcd")) + odd
                     + _sample(s.openat(8, 1, "\ufffdbcd")) + odd)
    for options in (["--by", "comm"], ["--by", "pid"], ["--comm", "\udcffbcd"],
                    ["--comm", "\ufffdbcd", "--by", "comm"]):
        bulk, events = both(monkeypatch, "summary", *options, str(path))
        assert bulk == events


@pytest.mark.parametrize("by", [None, "comm", "pid"])
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_summarise_batches_is_summarise_capture_lenient(capture: Path, by: str | None):
    with CaptureReader(capture) as reader:
        expected = summarise_capture(CaptureStream(reader, strict=False, time_order=False), by)
    assert summarise_batches(batches(capture, context=False, max_rows=7), by) == expected


@pytest.mark.parametrize("name", ["real-workload", "damaged", "layout-cwd"])
def test_version_1_captures(monkeypatch, tmp_path: Path, name: str):
    """Version 1 captures reach the batches record by record."""
    path = tmp_path / "v1.ewcap"
    with CaptureReader(FIXTURES / f"{name}.ewcap") as reader, CaptureWriter(
            str(path), host=HostInfo(kernel_release="k", hostname="h", ncpus=2),
            boot_time_ns=1, start_time_ns=2, version=1) as writer:
        options = ["--layout", reader.header.layout, "--arch", reader.header.arch]
        for record in reader:
            if isinstance(record, LostRecord):
                writer.write_lost(record.cpu, record.count)
            elif isinstance(record, SampleRecord):
                writer.write_sample(record.cpu, record.data)
    for lenient in ([], ["--lenient", "--by", "comm"]):
        bulk, events = both(monkeypatch, "summary", *options, *lenient, str(path))
        assert bulk == events


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(event_bytes(), damaged_event_bytes(), st.integers(1, 9)),
                max_size=30), st.sampled_from([[], ["--lenient", "--by", "pid"],
                                               ["--by", "comm", "--failed"]]))
def test_made_captures_count_as_event_by_event(monkeypatch, items: list, options: list):
    with tempfile.TemporaryDirectory() as where:
        path = made_capture(Path(where) / "made.ewcap", items)
        bulk, events = both(monkeypatch, "summary", *options, str(path))
        assert bulk == events


def test_a_comm_cut_off_with_the_header(monkeypatch, tmp_path: Path):
    """--lenient counts a sample cut inside its header: its pid's title shows the comm it
    lacks as "?" (the per-event path raised AttributeError there)."""
    s = Stream()
    path = tmp_path / "short.ewcap"
    path.write_bytes(_header() + _sample(s.openat(5, 1, "c"))
                     + _record(1, b"\0\0\0\0" + encode(s.openat(5, 1, "c"), "classic")[:30]))
    bulk, events = both(monkeypatch, "summary", "--lenient", "--by", "pid", str(path))
    assert bulk == events and bulk[0] == 0 and "pid 5 (c, ?)" in bulk[1]
