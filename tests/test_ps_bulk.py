"""``ebpfwire ps`` from the capture's columns (ebpfwire.columnar.pstree) against the
per-event path it falls back to: the same stdout, stderr and status, byte for byte, on
every fixture, damaged captures, the benchmark's realistic corpus and a table past its
bound; and the bulk path taken where it should be."""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_capture_scan import damage_st, damaged, data_start
from test_hostile_cli import run
from test_process import Stream
from test_rowcontext import lives, write

from ebpfwire import encode
from ebpfwire.capture import CaptureReader, CaptureWriter, HostInfo, SampleRecord
from ebpfwire.cli import ps
from ebpfwire.columnar import pstree
from ebpfwire.process.table import MAX_PROCESSES, ProcessTable

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "fixtures").glob("*.ewcap"))
OPTIONS = [[], ["--json"], ["--utc", "--event", "openat"], ["--failed", "--json"],
           ["--strict-exit", "--comm", "sh"], ["--event", "execve", "--event", "do_exit"]]


@pytest.fixture(autouse=True)
def any_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bulk path for captures of any size (it is chosen for its speed only where it
    wins; here for what it gives)."""
    monkeypatch.setattr("ebpfwire.cli.captures.COLUMNS_FROM_BYTES", 0)


def both(monkeypatch: pytest.MonkeyPatch, *argv: str | Path) -> tuple[tuple, tuple, bool]:
    """``ps argv`` as it runs (and whether the bulk path gave the tree), and on the
    per-event path alone."""
    bulk = ps._bulk
    taken = []

    def spy(*args):
        built = bulk(*args)
        taken.append(built is not None)
        return built

    monkeypatch.setattr(ps, "_bulk", spy)
    got = run("ps", *argv)
    monkeypatch.setattr(ps, "_bulk", lambda *args: None)
    expected = run("ps", *argv)
    monkeypatch.setattr(ps, "_bulk", bulk)
    return got, expected, taken == [True]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("path", FIXTURES, ids=lambda path: path.name)
def test_every_fixture_as_the_per_event_path(monkeypatch, path: Path, strict: bool) -> None:
    for options in OPTIONS:
        argv = [*options, *([] if strict else ["--lenient"]), path]
        got, expected, taken = both(monkeypatch, *argv)
        assert got == expected, argv
        # damaged.ewcap has samples that do not decode: strict, only the per-event path
        assert taken == (not strict or path.name != "damaged.ewcap"), argv


def test_a_damaged_capture_says_the_same(monkeypatch) -> None:
    got, expected, taken = both(monkeypatch, "--lenient", "--strict-exit",
                                ROOT / "fixtures" / "damaged.ewcap")
    assert got == expected and taken and got[0] == 1 and "file offset 647" in got[2]


def _version_2(path: Path) -> bytes:
    """A version-1 capture's records (samples, losses) as a version-2 capture, whose
    clean stretches the reader frames in bulk (the fixtures are all version 1)."""
    out = io.BytesIO()
    with CaptureReader(path) as reader, CaptureWriter(
            out, layout=reader.header.layout, arch=reader.header.arch,
            boot_time_ns=reader.header.boot_time_ns) as writer:
        for record in reader:
            if type(record) is SampleRecord:
                writer.write_sample(record.cpu, record.data)
            else:
                writer.write_lost(record.cpu, record.count)
    return out.getvalue()


REAL = (ROOT / "fixtures" / "real-workload.ewcap").read_bytes()
REAL_2 = _version_2(ROOT / "fixtures" / "real-workload.ewcap")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(damage=damage_st, lenient=st.booleans(), version=st.sampled_from([1, 2]))
def test_damaged_captures_as_the_per_event_path(tmp_path, monkeypatch, damage,
                                                lenient, version) -> None:
    data = REAL if version == 1 else REAL_2
    path = tmp_path / "damaged.ewcap"
    path.write_bytes(damaged(data, damage, data_start(data)))
    for options in ([], ["--json", "--strict-exit"]):
        argv = [*options, *(["--lenient"] if lenient else []), path]
        got, expected, _ = both(monkeypatch, *argv)
        assert got == expected, argv


@pytest.fixture(scope="module")
def realistic() -> Path:
    sys.path.insert(0, str(ROOT / "bench"))
    import realistic

    return realistic.build(20_000)


@pytest.mark.parametrize("options", [[], ["--json", "--lenient"], ["--utc"],
                                     ["--event", "openat", "--json"], ["-p", "40003"]])
def test_the_realistic_corpus_as_the_per_event_path(monkeypatch, realistic: Path,
                                                    options) -> None:
    got, expected, taken = both(monkeypatch, *options, realistic)
    assert got == expected and got[1]
    assert taken == ("-p" not in options)   # -p follows every event: per-event


def _bound(monkeypatch: pytest.MonkeyPatch, bound: int) -> None:
    """Tables made from now on keep at most ``bound`` processes in each set."""
    defaults = list(ProcessTable.__init__.__defaults__)
    defaults[-1] = bound
    monkeypatch.setattr(ProcessTable.__init__, "__defaults__", tuple(defaults))


@pytest.mark.parametrize("bound", [6, 300])
def test_a_table_past_its_bound_forgets_the_same(monkeypatch, realistic: Path,
                                                 bound: int) -> None:
    """Which process a full table forgets depends on every event since the last look:
    the bulk path gives it every event from the first look on; and it merges its counts
    often, leaving out the nodes forgotten."""
    _bound(monkeypatch, bound)
    monkeypatch.setattr(pstree, "MERGE_AT", 64)
    for options in ([], ["--json", "--event", "openat"]):
        got, expected, taken = both(monkeypatch, *options, realistic)
        assert got == expected and taken and "processes were forgotten" in got[2]


def test_a_state_change_with_other_namespaces_forgets_the_kept_answer(tmp_path, monkeypatch):
    """An exec entry (given to the table, not kept) in other namespaces, then a sample in
    the first ones again: the table must see it (the namespaces ps shows are the last
    event's), not answer it from the answer kept before the exec."""
    s = Stream()
    events = [s.openat(500, 1, "sh", pid_id=7, mnt_id=8),
              s.exec(500, 1, "sh", "/bin/nope", ["nope"], retval=-2, pid_id=9, mnt_id=10)[0],
              s.openat(500, 1, "sh", pid_id=7, mnt_id=8)]
    path = tmp_path / "ns.ewcap"
    with CaptureWriter(path, host=HostInfo("6.18.0", "test-host", 2)) as writer:
        for event in events:
            writer.write_sample(0, encode(event))
    got, expected, taken = both(monkeypatch, "--json", path)
    assert got == expected and taken and '"pid_ns": 7' in got[1]


@pytest.mark.parametrize("layout", ["classic", "cwd"])
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_made_captures_as_the_per_event_path(tmp_path, monkeypatch, layout, data) -> None:
    """Process lives from a small pool of pids (execs, forks, exits, reparenting, other
    namespaces, snapshot entries, container records, losses, damaged samples), written
    on two CPUs a little out of time order; the table's bound now and then so low that
    it forgets processes."""
    items, _ = data.draw(lives(layout))
    _bound(monkeypatch, data.draw(st.sampled_from([MAX_PROCESSES, 2, 3])))
    path = write(tmp_path / "lives.ewcap", items, layout,
                 random.Random(data.draw(st.integers(0, 2**32))))
    for options in (["--json", "--lenient"], ["--json"], ["--event", "openat", "--lenient"]):
        got, expected, _ = both(monkeypatch, *options, path)
        assert got == expected, options


@pytest.mark.parametrize("lost", [5, 1100])
def test_lost_records_before_the_first_sample(tmp_path, monkeypatch, lost: int) -> None:
    """Past 1,024 of them the layout check merges their counts and says so: per-event."""
    s = Stream()
    path = tmp_path / "lost.ewcap"
    with CaptureWriter(path, host=HostInfo("6.18.0", "test-host", 2)) as writer:
        for n in range(lost):
            writer.write_lost(n % 2, 3)
        for n in range(40):
            writer.write_sample(n % 2, encode(s.openat(30 + n % 3, 1, "sh")))
    got, expected, taken = both(monkeypatch, "--json", path)
    assert got == expected and got[1] and taken == (lost < 1024)


def test_a_small_capture_is_decoded_event_by_event(monkeypatch, realistic: Path) -> None:
    monkeypatch.setattr("ebpfwire.cli.captures.COLUMNS_FROM_BYTES", realistic.stat().st_size + 1)
    got, expected, taken = both(monkeypatch, realistic)
    assert got == expected and not taken
