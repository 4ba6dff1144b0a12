"""``ebpfwire info`` counted from the batch decoder's columns against counting event by event
(``count_events``, the command's path without the arrow extra): the same stdout, stderr and
exit status on every fixture, from standard input, on damaged captures, on captures that the
layout check holds back or refuses, on context records, and on Hypothesis-made captures."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
from corpus import damaged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_arrow_context import busy_capture
from test_cli import run
from test_hostile_bounds import _header, _lost, _record, _sample
from test_process import Stream

from ebpfwire import encode
from ebpfwire.capture import CaptureReader, CaptureWriter, HostInfo, LostRecord, SampleRecord
from ebpfwire.capture.snapshot import ContainerInfo
from ebpfwire.cli.captures import HELD_LOST_LIMIT, HOLD_LIMIT, by_columns
from ebpfwire.cli.errors import UsageError
from ebpfwire.cli.info import count_events
from ebpfwire.cli.info_columns import count_columns
from ebpfwire.wire.layouts import get_layout
from ebpfwire.wire.strategies import damaged_event_bytes, event_bytes

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CAPTURES = sorted(FIXTURES.glob("*.ewcap"))
OPTIONS = [[], ["--json"], ["--utc"], ["--layout", "cwd"], ["--layout", "hash", "--json"],
           ["--arch", "arm64", "--json"]]


def both(monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: bytes | None = None) -> tuple:
    """(status, stdout, stderr) of ``info`` by columns, and event by event, whatever the
    capture's size."""
    out = []
    for columns in (True, False):
        with monkeypatch.context() as patch:
            patch.setattr("ebpfwire.cli.info.by_columns", lambda sources, on=columns: on)
            if not columns:
                patch.setattr("ebpfwire.cli.info_columns.count_columns", None)  # not called
            out.append(run("info", *argv, stdin=stdin))
    return tuple(out)


def same_counts(path: Path, layout: str | None = None) -> None:
    """count_columns and count_events agree on one capture, reader state included."""
    got = []
    for count in (count_columns, count_events):
        with CaptureReader(path) as reader:
            header = reader.header
            try:
                counts = count(reader, get_layout(layout or header.layout), header.arch, "x")
            except UsageError as refused:   # the layout does not fit
                counts = str(refused)
            got.append((counts, reader.damage, reader.damage_count, reader.notes_count,
                        reader.context_counts))
    assert got[0] == got[1]


@pytest.mark.parametrize("options", OPTIONS, ids=" ".join)
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_fixtures_count_as_event_by_event(monkeypatch, capture: Path, options: list[str]):
    bulk, events = both(monkeypatch, *options, str(capture))
    assert bulk == events


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_fixtures_from_standard_input(monkeypatch, capture: Path):
    bulk, events = both(monkeypatch, "--json", "-", stdin=capture.read_bytes())
    assert bulk == events and bulk[0] == 0
    same_counts(capture)


def test_the_columns_counted(monkeypatch):
    """The columns are what counted (a guard on the test's switch between the paths)."""
    calls = []
    monkeypatch.setattr("ebpfwire.cli.info.by_columns", lambda sources: True)
    monkeypatch.setattr("ebpfwire.cli.info_columns.located_batches",
                        lambda *a, **kw: calls.append(1) or iter(()))
    run("info", str(FIXTURES / "real-workload.ewcap"))
    assert calls


@pytest.mark.parametrize("seed", range(20))
def test_damaged_captures_count_as_event_by_event(monkeypatch, tmp_path: Path, seed: int):
    rng = random.Random(seed)
    source = rng.choice(CAPTURES)
    with CaptureReader(source) as reader:
        begin = next(iter(reader)).offset   # the first record, past the file header
    data = source.read_bytes()
    path = tmp_path / "damaged.ewcap"
    # every other one damaged near its start, where the layout check holds records
    path.write_bytes(damaged(data, rng, begin, begin + 500 if seed % 2 else len(data)))
    for options in ([], ["--json"], ["--layout", "cwd", "--json"]):
        bulk, events = both(monkeypatch, *options, str(path))
        assert bulk == events
    same_counts(path)


def test_records_held_by_the_layout_check(monkeypatch, tmp_path: Path):
    """LOST records added together before the first clean sample (records and lost
    records fewer, the note), samples that do not decode before it, and a layout refused
    after HOLD_LIMIT of them or at the end."""
    s = Stream()
    cut = _record(1, b"\0\0\0\0" + encode(s.openat(5, 1, "c"), "classic")[:-3])
    clean = _sample(s.openat(5, 1, "c"))
    captures = {
        "lost-first": _lost(2) * (HELD_LOST_LIMIT + 300) + _lost(1, 1) * 200 + clean * 50
        + _lost(1) * 5,
        "cut-first": cut * 3 + b"junk" * 9 + cut + clean + b"junk" + cut + clean,
        "cut-past-the-limit": cut * (HOLD_LIMIT + 40) + _lost(3) + clean * 10,
        "cut-only": cut * 5 + b"junk" + _lost(4),
        "lost-only": _lost(7, 1) * (HELD_LOST_LIMIT + 10) + _lost(1, 0) * 3,
        "empty": b"",
    }
    for name, records in captures.items():
        path = tmp_path / f"{name}.ewcap"
        path.write_bytes(_header() + records)
        for options in ([], ["--json"], ["--layout", "cwd"], ["--layout", "hash"]):
            bulk, events = both(monkeypatch, *options, str(path))
            assert bulk == events, (name, options)
    status, _, err = run("info", str(tmp_path / "lost-first.ewcap"))
    assert status == 0 and "LOST records before the first sample" in err
    assert run("info", "--layout", "hash", str(tmp_path / "cut-only.ewcap"))[0] != 0


def test_context_records_and_losses(monkeypatch, tmp_path: Path):
    """Process and container records (containers by runtime), LOST records, samples out
    of time order and over several batches."""
    path = busy_capture(tmp_path / "busy.ewcap")
    bulk, events = both(monkeypatch, "--json", str(path))
    assert bulk == events and '"docker": 1' in bulk[1]
    same_counts(path)


@pytest.mark.parametrize("name", ["real-workload", "damaged"])
def test_version_1_captures(monkeypatch, tmp_path: Path, name: str):
    """Version 1 captures reach the batches record by record."""
    path = tmp_path / "v1.ewcap"
    with CaptureReader(FIXTURES / f"{name}.ewcap") as reader, CaptureWriter(
            str(path), host=HostInfo(kernel_release="k", hostname="h", ncpus=2),
            boot_time_ns=1, start_time_ns=2, version=1) as writer:
        for record in reader:
            if isinstance(record, LostRecord):
                writer.write_lost(record.cpu, record.count)
            elif isinstance(record, SampleRecord):
                writer.write_sample(record.cpu, record.data)
    bulk, events = both(monkeypatch, "--json", "--layout", "classic", "--arch", "x86_64",
                        str(path))
    assert bulk == events


_RECORDS = st.lists(st.one_of(
    st.tuples(st.just("sample"), st.integers(0, 3), event_bytes()),
    st.tuples(st.just("sample"), st.integers(0, 3), damaged_event_bytes()),
    st.tuples(st.just("lost"), st.integers(0, 3), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("container"), st.integers(0, 3), st.sampled_from(["docker", "cri-o"])),
), max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_RECORDS)
def test_made_captures_count_as_event_by_event(records):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "made.ewcap"
        with CaptureWriter(str(path), host=HostInfo(kernel_release="k", hostname="h",
                                                    ncpus=4)) as writer:
            for kind, cpu, value in records:
                if kind == "sample":
                    writer.write_sample(cpu, value)
                elif kind == "lost":
                    writer.write_lost(cpu, value)
                else:
                    writer.write_container(ContainerInfo(cpu, cpu + 1, "ab" * 32, value))
        same_counts(path)


def test_only_big_captures_by_columns(monkeypatch):
    """Below COLUMNS_FROM_BYTES (and for standard input, of unknown size) the commands
    count event by event: their start costs less than pyarrow's import."""
    small = FIXTURES / "real-workload.ewcap"
    assert not by_columns([str(small)]) and not by_columns(["-"])
    monkeypatch.setattr("ebpfwire.cli.captures.COLUMNS_FROM_BYTES", small.stat().st_size)
    assert by_columns([str(small)]) and by_columns([str(small), "-", "missing.ewcap"])
    assert not by_columns(["-"])
    monkeypatch.setattr("ebpfwire.cli.captures.has_arrow", lambda: False)
    assert not by_columns([str(small)])
