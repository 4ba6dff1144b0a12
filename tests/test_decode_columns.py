"""``decode --format jsonl/json/kubearmor`` on the bulk path (``cli.decode_columns``:
records read in blocks, time order and process context for many at once) against the
per-event path: the same stdout, stderr and exit status on every fixture, on damaged
captures, on captures the layout check holds back (the bulk path gives way), and on
Hypothesis-made ones."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
from corpus import damaged_fixture, made_capture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import run
from test_cli_kubearmor import context_capture
from test_hostile_bounds import _header, _lost, _record, _sample
from test_process import Stream

from ebpfwire import encode
from ebpfwire.cli import decode_columns
from ebpfwire.wire.strategies import damaged_event_bytes, event_bytes

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
CAPTURES = sorted(FIXTURES.glob("*.ewcap"))
OPTIONS = [["--format", "jsonl"], ["--format", "json", "--strict-exit"],
           ["--format", "jsonl", "--layout", "cwd"], ["--format", "jsonl", "--raw"],
           ["--format", "kubearmor", "--strict-exit"],
           ["--format", "kubearmor", "--kubearmor-version", "2023"]]


def both(monkeypatch: pytest.MonkeyPatch, *argv: str, rows: int = decode_columns.ROWS,
         text: int = decode_columns.TEXT_BYTES) -> tuple[tuple, tuple, list[bool]]:
    """(status, stdout, stderr) of the command with the bulk path offered whatever the
    captures' size (taking ``rows`` records at a time, making lines ``text`` bytes at a
    time), the same event by event, and whether the bulk path took each capture."""
    taken: list[bool] = []
    decode_bulk = decode_columns.decode_bulk

    def spy(*args, **kwargs):
        damaged = decode_bulk(*args, **kwargs)
        taken.append(damaged is not None)
        return damaged

    out = []
    for columns in (True, False):
        with monkeypatch.context() as patch:
            patch.setattr("ebpfwire.cli.decode.by_columns", lambda sources, on=columns: on)
            patch.setattr(decode_columns, "decode_bulk", spy)
            patch.setattr(decode_columns, "ROWS", rows)
            patch.setattr(decode_columns, "TEXT_BYTES", text)
            out.append(run("decode", *argv))
    return out[0], out[1], taken


@pytest.mark.parametrize("rows, text", [(decode_columns.ROWS, decode_columns.TEXT_BYTES),
                                        (7, decode_columns.TEXT_BYTES),
                                        (decode_columns.ROWS, 900)], ids=["", "rows", "text"])
@pytest.mark.parametrize("options", OPTIONS, ids=" ".join)
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_fixtures_decode_as_event_by_event(monkeypatch, capture: Path, options: list[str],
                                           rows: int, text: int):
    """``rows``: records taken a few at a time, so that lines wait for records before them
    in time order that later takes bring; ``text``: lines made a few at a time within a
    take (a part is shown only up to what the take's later parts hold before it)."""
    bulk, events, taken = both(monkeypatch, *options, str(capture), rows=rows, text=text)
    assert bulk == events
    if capture.name in ("real-workload.ewcap", "layout-cwd.ewcap") and bulk[0] == 0:
        assert taken == [True]


def test_the_bulk_path_takes_a_real_capture(monkeypatch):
    """It is the one taken on a clean capture with context records, and says its notes."""
    bulk, events, taken = both(monkeypatch, "--format", "jsonl",
                               str(FIXTURES / "real-workload.ewcap"))
    assert taken == [True] and bulk == events and bulk[0] == 0
    assert bulk[1].count("\n") > 100 and '"process": {"exe": "/' in bulk[1]


def test_options_it_does_not_serve_go_event_by_event(monkeypatch):
    capture = str(FIXTURES / "real-workload.ewcap")
    for options in (["--format", "table"], ["--format", "table", "--raw"],
                    ["--format", "jsonl", "--lenient"], ["--format", "jsonl", "--no-sort"],
                    ["--format", "jsonl", "--event", "openat"],
                    ["--format", "kubearmor", "--comm", "sh"]):
        bulk, events, taken = both(monkeypatch, *options, capture)
        assert bulk == events and taken == [], options


@pytest.fixture(scope="module")
def realistic() -> Path:
    sys.path.insert(0, str(FIXTURES.parent / "bench"))
    import realistic

    return realistic.build(20_000)


@pytest.mark.parametrize("options", [["jsonl"], ["jsonl", "--raw"], ["kubearmor"]],
                         ids=" ".join)
@pytest.mark.parametrize("rows", [decode_columns.ROWS, 1000])
def test_the_realistic_corpus_as_the_per_event_path(monkeypatch, realistic: Path, rows: int,
                                                    options: list[str]):
    """Many process lives, their answers forgotten and made again."""
    bulk, events, taken = both(monkeypatch, "--format", *options, str(realistic), rows=rows)
    assert taken == [True] and bulk == events
    assert bulk[1].count("\n") == (20_000 if options[0] == "jsonl" else 17_513)


@pytest.mark.parametrize("seed", range(24))
def test_damaged_captures_decode_as_event_by_event(monkeypatch, tmp_path: Path, seed: int):
    path = damaged_fixture(seed, tmp_path / "damaged.ewcap")
    for options in (["--format", "jsonl", "--strict-exit"], ["--format", "json"],
                    ["--format", "jsonl", "--raw", "--strict-exit"],
                    ["--format", "kubearmor", "--strict-exit"]):
        bulk, events, _ = both(monkeypatch, *options, str(path))
        assert bulk == events


def test_damage_and_undecodable_samples_said_in_the_per_event_order(monkeypatch,
                                                                     tmp_path: Path):
    """Damage between records, samples that do not decode, LOST records and samples out
    of time order across CPUs, after a clean first sample: the bulk path takes them."""
    s = Stream()
    cut = _record(1, b"\0\0\0\0" + encode(s.openat(5, 1, "c"), "classic")[:-3])
    records = [_sample(s.openat(5, 1, "first"))]
    for step in range(40):
        records.append(_sample(s.openat(5, step, f"f{step}")))
        if step % 7 == 3:
            records += [cut, b"junk" * (step % 3 + 1)]
        if step % 11 == 5:
            records.append(_lost(step % 2, step))
    path = tmp_path / "mixed.ewcap"
    path.write_bytes(_header() + b"".join(records) + b"tail junk")
    for rows, text in ((decode_columns.ROWS, decode_columns.TEXT_BYTES), (5, 1000),
                       (decode_columns.ROWS, 1000)):
        bulk, events, taken = both(monkeypatch, "--format", "jsonl", "--strict-exit",
                                   str(path), rows=rows, text=text)
        assert taken == [True] and bulk == events and bulk[0] == 1
    assert "does not decode" in bulk[2] and "damaged record" in bulk[2]
    assert '"lost": ' in bulk[1]


def test_what_the_layout_check_holds_goes_event_by_event(monkeypatch, tmp_path: Path):
    s = Stream()
    cut = _record(1, b"\0\0\0\0" + encode(s.openat(5, 1, "c"), "classic")[:-3])
    clean = _sample(s.openat(5, 1, "c"))
    for name, records in {"lost-first": _lost(1) * 3 + clean * 4,
                          "cut-first": cut + clean * 4, "cut-only": cut * 5}.items():
        path = tmp_path / f"{name}.ewcap"
        path.write_bytes(_header() + records)
        bulk, events, taken = both(monkeypatch, "--format", "jsonl", str(path))
        assert bulk == events and taken == [False], name


def test_several_files(monkeypatch):
    bulk, events, taken = both(monkeypatch, "--format", "jsonl",
                               str(FIXTURES / "real-workload.ewcap"), "missing.ewcap",
                               str(FIXTURES / "damaged.ewcap"))
    assert bulk == events and bulk[0] == 2 and True in taken


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(event_bytes(), damaged_event_bytes(), st.integers(1, 9)),
                max_size=30), st.sampled_from([["--format", "jsonl"],
                                               ["--format", "json", "--strict-exit"],
                                               ["--format", "jsonl", "--raw"],
                                               ["--format", "kubearmor", "--strict-exit"]]))
def test_made_captures_decode_as_event_by_event(monkeypatch, items: list, options: list):
    with tempfile.TemporaryDirectory() as where:
        path = made_capture(Path(where) / "made.ewcap", items)
        bulk, events, _ = both(monkeypatch, *options, str(path))
        assert bulk == events


def test_a_sample_that_does_not_decode_still_informs_the_context(monkeypatch, tmp_path: Path):
    """An exec's entry with bytes after its arguments does not decode (strict), but its
    header and arguments are the process's news: the exit's line names the program, on
    both paths (the per-event path used to leave the entry out of its table)."""
    s = Stream()
    entry, exit_ = s.exec(50, 1, "sh", "/usr/bin/true", ["true", "-x"], bprm=False)
    path = tmp_path / "undecodable-exec.ewcap"
    path.write_bytes(_header() + _sample(s.openat(50, 1, "sh"))
                     + _record(1, b"\0\0\0\0" + encode(entry, "classic") + b"\xff" * 9)
                     + _sample(exit_))
    bulk, events, taken = both(monkeypatch, "--format", "jsonl", str(path))
    assert taken == [True] and bulk == events
    assert "sample at file offset" in bulk[2] and "does not decode: trailing-bytes" in bulk[2]
    assert bulk[1].splitlines()[-1].endswith(
        '"process": {"exe": "/usr/bin/true", "argv": ["true", "-x"], "source": "exec"}, '
        '"parent_process": null, "container_id": null}')


@pytest.mark.parametrize("version", ["newest", "2023"])
def test_kubearmor_logs_with_containers_and_execs(monkeypatch, tmp_path: Path, version: str):
    """A snapshot, a host and a docker container record, execs (their logs name what was
    asked), a loss: every log's process context as the per-event path gives it."""
    capture = str(context_capture(tmp_path / "ctx.ewcap"))
    for rows in (decode_columns.ROWS, 2):
        bulk, events, taken = both(monkeypatch, "--format", "kubearmor", "--kubearmor-version",
                                   version, capture, rows=rows)
        assert taken == [True] and bulk == events and bulk[0] == 0
    assert '"Type": "ContainerLog"' in bulk[1] and '"Resource": "/bin/cat /etc/shadow"' in bulk[1]
