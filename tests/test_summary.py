"""The strace -c style summary: fixture captures against their golden JSONL, text, JSON."""

from __future__ import annotations

import io
import json
import shlex
from collections import Counter
from pathlib import Path

import pytest

from ebpfwire.capture import CaptureReader, CaptureWriter, HostInfo
from ebpfwire.capture.snapshot import ProcessInfo
from ebpfwire.output.summary import render_summary, summarise, summarise_capture, summary_json
from ebpfwire.wire.events import Event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GOLDEN = sorted(p.with_suffix("") for p in FIXTURES.glob("*.jsonl"))


def _golden(base: Path, key: str | None) -> tuple[dict, int]:
    """(group -> (calls per event, errors per (event, errno))), lost, from the golden file."""
    groups: dict = {}
    lost = 0
    for line in base.with_suffix(".jsonl").read_text().splitlines():
        d = json.loads(line)
        if "lost" in d:
            lost += d["lost"]
            continue
        name = d["event"] or f"event_{d['event_id']}"
        if name in ("execve", "execveat") and d["argnum"]:
            continue  # an exec's entry event: its exit event counts the call, as strace -c
        group = {None: None, "comm": d["comm"], "pid": d["host_pid"]}[key]
        calls, errors = groups.setdefault(group, (Counter(), Counter()))
        calls[name] += 1
        if d["errno"] is not None:
            errors[name, d["errno"]] += 1
    return groups, lost


def _summary(base: Path, by: str | None):
    args = base.with_suffix(".args")
    lenient = args.exists() and "--lenient" in shlex.split(args.read_text())
    with CaptureReader(base.with_suffix(".ewcap")) as reader:
        return summarise_capture(reader.events(strict=not lenient), by=by)


@pytest.mark.parametrize("by", [None, "comm", "pid"])
@pytest.mark.parametrize("base", GOLDEN, ids=lambda p: p.name)
def test_summary_of_fixture_matches_golden_counts(base: Path, by: str | None):
    expected, lost = _golden(base, by)
    summary = _summary(base, by)
    assert summary.lost == lost and summary.undecodable == 0
    assert {g.key for g in summary.groups} == set(expected)
    for group in summary.groups:
        calls, errors = expected[group.key]
        assert {r.event: r.calls for r in group.rows} == dict(calls)
        got_errors = Counter({(r.event, e): n for r in group.rows for e, n in r.errnos.items()})
        assert got_errors == errors
        assert [r.errors for r in group.rows] == [sum(r.errnos.values()) for r in group.rows]
        assert group.calls == sum(calls.values()) and group.errors == sum(errors.values())
        assert sum(r.share for r in group.rows) == pytest.approx(100.0)
        assert [r.calls for r in group.rows] == sorted((r.calls for r in group.rows),
                                                       reverse=True)
    assert summary.calls == sum(sum(c.values()) for c, _ in expected.values())


def test_pid_groups_list_every_comm_of_the_process():
    summary = _summary(FIXTURES / "real-workload", "pid")
    execs = {tuple(g.comms) for g in summary.groups}
    assert ("sh", "ls") in execs and ("sh", "cat") in execs


def _event(name_id: int, retval: int, comm: str = "app", pid: int = 10) -> Event:
    return Event(1, 0, 0, 1, pid, 1, pid, 0, name_id, 0, retval, comm, [])


EVENTS = [
    _event(257, 3), _event(257, -2), _event(257, -2), _event(257, -13),
    _event(3, 0), _event(42, -111, comm="curl", pid=11), _event(351, 256),
    _event(9999, -5),
]

TEXT = """\
% calls: each event's share of the calls (a capture has no syscall durations)

 % calls      calls    errors event                  errors by errno
-------- ---------- --------- ---------------------- ---------------
   50.00          4         3 openat                 ENOENT 2, EACCES 1
   12.50          1         1 connect                ECONNREFUSED 1
   12.50          1         1 event_9999             EIO 1
   12.50          1           close
   12.50          1           do_exit
-------- ---------- --------- ---------------------- ---------------
  100.00          8         5 total

not counted: 5 samples lost by the kernel, 0 samples that did not decode
"""


def test_render_summary_exact_text():
    # do_exit's retval is an exit status, not an error; an unknown id counts as a syscall
    assert render_summary(summarise(EVENTS, lost=5)) == TEXT


def test_render_grouped_by_comm_escapes_names():
    text = render_summary(summarise([_event(3, 0, comm="a\nb"), _event(3, -9)], by="comm"))
    assert "comm a\\nb\n" in text and "comm app\n" in text
    assert text.endswith("all groups: 2 calls, 1 errors\n")


def test_summary_json_shape():
    out = summary_json(summarise(EVENTS, lost=5, by="pid"))
    assert json.loads(json.dumps(out)) == out
    assert out == {
        "by": "pid", "share_of": "calls", "calls": 8, "errors": 5, "lost": 5, "undecodable": 0,
        "groups": [
            {"key": 10, "comms": ["app"], "calls": 7, "errors": 4, "events": [
                {"event": "openat", "calls": 4, "errors": 3,
                 "errnos": {"ENOENT": 2, "EACCES": 1}, "share": 57.1429},
                {"event": "event_9999", "calls": 1, "errors": 1, "errnos": {"EIO": 1},
                 "share": 14.2857},
                {"event": "close", "calls": 1, "errors": 0, "errnos": {}, "share": 14.2857},
                {"event": "do_exit", "calls": 1, "errors": 0, "errnos": {}, "share": 14.2857},
            ]},
            {"key": 11, "comms": ["curl"], "calls": 1, "errors": 1, "events": [
                {"event": "connect", "calls": 1, "errors": 1,
                 "errnos": {"ECONNREFUSED": 1}, "share": 100.0},
            ]},
        ],
    }


def test_empty_input_and_bad_grouping():
    assert render_summary(summarise([])).endswith("\nno events\n")
    with pytest.raises(ValueError, match="by: expected None, 'comm' or 'pid', found 'uid'"):
        summarise(EVENTS, by="uid")


def test_context_records_are_passed_over_and_lost_records_summed():
    sample = FIXTURES / "all-types.ewcap"
    with CaptureReader(sample) as reader:
        data = next(r.data for r, e in reader.events()  # a call of one event, not an exec
                    if e is not None and e.label not in ("execve", "execveat"))
    buf = io.BytesIO()
    shell = ProcessInfo(host_pid=4158, host_ppid=4100, pid=12, uid=0, pid_ns=1, mnt_ns=2,
                        start_ns=3, comm="sh", exe="/bin/sh", cwd="/", argv=("sh",),
                        container_id="")
    with CaptureWriter(buf, host=HostInfo("6.18.0-test", "t", 2)) as w:
        w.write_process(shell)
        w.write_sample(0, data)
        w.write_lost(1, 5)
        w.write_process(shell)
    buf.seek(0)
    with CaptureReader(buf) as reader:
        summary = summarise_capture(reader.events())
    assert (summary.calls, summary.lost, summary.undecodable) == (1, 5, 0)


def test_failed_rows_is_failed_row_by_row():
    """The failed-syscall rule for columns (summary's counts, the errno column) is the
    per-event one: a negative return of a syscall event, never of a special event."""
    import numpy as np

    from ebpfwire.wire.catalogue import SPECIAL_EVENTS, failed, failed_rows

    ids = [0, 2, 59, 257, *SPECIAL_EVENTS, 2**31]
    pairs = [(event_id, retval) for event_id in ids for retval in (-115, -13, -1, 0, 3)]
    got = failed_rows(np.array([p[0] for p in pairs], np.int64),
                      np.array([p[1] for p in pairs], np.int64))
    assert got.tolist() == [failed(*pair) for pair in pairs]
    assert sum(got.tolist()) == 5 * 3 and not failed(None, -1) and not failed(2, None)
