"""``ebpfwire summary``: fixture captures against counts from their golden JSONL, filters,
several files, bad input as decode reports it."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from collections import Counter
from pathlib import Path

import pytest

from ebpfwire.cli import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GOLDEN = sorted(p.with_suffix("") for p in FIXTURES.glob("*.jsonl"))
DAMAGED = FIXTURES / "damaged.ewcap"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def _args(base: Path) -> list[str]:
    args = base.with_suffix(".args")
    return shlex.split(args.read_text()) if args.exists() else []


def _golden(bases: list[Path], by: str | None, keep=lambda d: True) -> tuple[dict, int]:
    """{group key: {event: [calls, {errno: count}]}} and the lost samples, from golden files."""
    groups: dict = {}
    lost = 0
    for base in bases:
        for line in base.with_suffix(".jsonl").read_text().splitlines():
            d = json.loads(line)
            if "lost" in d:
                lost += d["lost"]
                continue
            if not keep(d) or (d["event"] in ("execve", "execveat") and d["argnum"]):
                continue  # an exec's entry event: its exit event counts the call
            key = {None: None, "comm": d["comm"], "pid": d["host_pid"]}[by]
            row = groups.setdefault(key, {}).setdefault(
                d["event"] or f"event_{d['event_id']}", [0, Counter()])
            row[0] += 1
            if d["errno"] is not None:
                row[1][d["errno"]] += 1
    return groups, lost


def _counts(report: dict) -> dict:
    return {g["key"]: {e["event"]: [e["calls"], Counter(e["errnos"])] for e in g["events"]}
            for g in report["groups"]}


def _summary(*argv: str) -> dict:
    status, out, err = run("summary", "--json", *argv)
    assert status == 0, err
    return json.loads(out)


@pytest.mark.parametrize("by", [None, "comm", "pid"])
@pytest.mark.parametrize("base", GOLDEN, ids=lambda p: p.name)
def test_fixture_counts_equal_the_golden_jsonl(base: Path, by: str | None):
    expected, lost = _golden([base], by)
    report = _summary(*_args(base), *(["--by", by] if by else []), str(base.with_suffix(".ewcap")))
    assert _counts(report) == expected
    assert report["lost"] == lost and report["undecodable"] == 0
    assert report["calls"] == sum(row[0] for g in expected.values() for row in g.values())
    assert report["errors"] == sum(sum(row[1].values()) for g in expected.values()
                                   for row in g.values())


def test_several_files_are_summed():
    bases = [FIXTURES / "real-workload", FIXTURES / "all-types"]
    expected, lost = _golden(bases, "comm")
    report = _summary("--by", "comm", *(str(b.with_suffix(".ewcap")) for b in bases))
    assert _counts(report) == expected and report["lost"] == lost


@pytest.mark.parametrize("argv, keep", [
    (["--failed"], lambda d: d["retval"] is not None and d["retval"] < 0),
    (["--event", "openat,connect"], lambda d: d["event"] in ("openat", "connect")),
    (["--comm", "ls"], lambda d: d["comm"] == "ls"),
    (["--pid", "29676"], lambda d: 29676 in (d["pid"], d["host_pid"])),
])
def test_filters_are_decodes(argv, keep):
    base = FIXTURES / "real-workload"
    expected, _ = _golden([base], "pid", keep)
    assert expected  # the filter leaves something to count
    assert _counts(_summary("--by", "pid", *argv, str(base.with_suffix(".ewcap")))) == expected


def test_strict_counts_undecodable_samples_and_reports_each():
    status, out, err = run("summary", "--json", str(DAMAGED))
    report = json.loads(out)
    # the connect whose sockaddr the writer skipped decodes (its missing-argument noted)
    assert status == 0 and report["undecodable"] == 3 and report["lost"] == 17
    assert err.count("does not decode") == 3 and err.count("damaged record at file offset") == 2
    assert "sample at file offset 203 does not decode" in err


def test_text_table_has_a_row_per_event_and_a_total():
    status, out, _ = run("summary", str(FIXTURES / "real-workload.ewcap"))
    lines = out.splitlines()
    assert status == 0
    assert lines[2].split() == ["%", "calls", "calls", "errors", "event", "errors", "by", "errno"]
    assert lines[4].split() == ["79.58", "113", "33", "openat", "ENOENT", "33"]
    assert lines[6].split() == ["3.52", "5", "execve"]  # an exec once, not entry and exit
    assert lines[-1].split() == ["100.00", "142", "34", "total"]


@pytest.mark.parametrize("argv, expected", [
    (["missing.ewcap"], "ebpfwire: missing.ewcap: no such file\n"),
    ([str(FIXTURES)], "is a directory, expected a capture file"),
    ([str(FIXTURES / "README.md")], "not a readable capture: offset 0: expected"),
    (["--layout", "hash", str(FIXTURES / "all-types.ewcap")],
     "layout 'hash' (225-byte header) does not fit"),
    (["--layout", "bogus", str(FIXTURES / "all-types.ewcap")], "unknown layout 'bogus'"),
    (["--event", "opneat", str(FIXTURES / "all-types.ewcap")], "closest known: openat"),
    (["--by", "uid", str(FIXTURES / "all-types.ewcap")], "invalid choice: 'uid'"),
])
def test_bad_input_is_one_line_and_exit_2(argv, expected):
    status, out, err = run("summary", *argv)
    assert status == 2 and out == "" and expected in err and err.count("\n") == 1


def test_an_unreadable_file_among_several_is_skipped_and_exits_2():
    good = FIXTURES / "real-workload"
    status, out, err = run("summary", "--json", "missing.ewcap", str(good.with_suffix(".ewcap")))
    assert status == 2 and err == "ebpfwire: missing.ewcap: no such file\n"
    assert _counts(json.loads(out)) == _golden([good], None)[0]
