"""Captures crafted to exhaust a reader: no recursion that their depth controls, no work per
record that grows with the processes alive, no memory that grows with the file in streaming
commands (issue: hostile hosts, 3 to 6)."""

from __future__ import annotations

import json
import struct
import sys
import tracemalloc
import zlib
from pathlib import Path

from test_cli import run
from test_process import Stream

from ebpfwire import encode
from ebpfwire.capture import CaptureReader, LostRecord, SampleRecord
from ebpfwire.capture.format import SYNC, FileHeader
from ebpfwire.capture.reader import REPORTS_KEPT
from ebpfwire.cli.captures import HELD_LOST_LIMIT, held_until_fit
from ebpfwire.process import enrich
from ebpfwire.process.enrich import Enricher
from ebpfwire.process.table import ProcessTable
from ebpfwire.process.tree import INDENTED_DEPTH, build_tree, json_text
from ebpfwire.wire.layouts import get_layout


def _header() -> bytes:
    info = {"ncpus": 2, "boot_time_ns": 0, "start_time_ns": 0, "layout": "classic",
            "arch": "x86_64", "kernel_release": "k", "hostname": "h"}
    return FileHeader.build({"signed": {"value": {"version": 2, "info": info}}})


def _record(rtype: int, payload: bytes) -> bytes:
    """A version-2 record written by hand (no writer checks: any type, any order)."""
    head = zlib.crc32(struct.pack("<IHH", len(payload), rtype, 0))
    return struct.pack("<4sIHHII", SYNC, len(payload), rtype, 0, head,
                       zlib.crc32(payload)) + payload


def _sample(event, cpu: int = 0) -> bytes:
    return _record(1, struct.pack("<I", cpu) + encode(event, "classic"))


def _lost(count: int, cpu: int = 0) -> bytes:
    return _record(2, struct.pack("<IQ", cpu, count))


# -- 4: depth


def _chain(path: Path, depth: int) -> Path:
    s = Stream()
    path.write_bytes(_header() + b"".join(_sample(s.openat(1000 + i, 999 + i, "c"))
                                          for i in range(depth)))
    return path


def test_ps_draws_a_fork_chain_of_any_depth(tmp_path: Path) -> None:
    status, out, err = run("ps", str(_chain(tmp_path / "chain.ewcap", 5000)))
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 5000 and lines[0].startswith("[c]  (1000)")
    assert lines[64].startswith("  " * 63 + "└─[c]  (1064)")
    # deeper, the drawing stops growing and names the depth: no line grows with the chain
    assert lines[65].startswith("  " * 63 + "[depth 65] └─[c]  (1065)")
    assert lines[-1].startswith("  " * 63 + "[depth 4999] └─[c]  (5999)")
    assert max(map(len, lines)) < 300


def test_ps_json_nests_a_fork_chain_of_any_depth(tmp_path: Path) -> None:
    status, out, err = run("ps", "--json", str(_chain(tmp_path / "chain.ewcap", 5000)))
    assert status == 0 and err == ""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)   # json.loads counts its (C) recursion against it
    try:
        [node] = json.loads(out)
    finally:
        sys.setrecursionlimit(limit)
    depth = 1
    while node["children"]:
        [node] = node["children"]
        depth += 1
    assert depth == 5000 and node["host_pid"] == 5999
    assert len(out) < 5000 * 1000   # deep levels on one line: not 5000² bytes of indent


def test_json_text_is_json_dumps_indented() -> None:
    values = [[], {}, 0, None, "é\n\0", [1, [], {}, [[2]], {"a": {"b": [True, False, 1.5]}}],
              {"x": (1, 2), "y": {"z": []}, "ü": "\udcff"}]
    for value in values:
        assert json_text(value) == json.dumps(value, indent=2)
    tree = build_tree(_chain_items(30))
    assert json_text(tree.to_json()) == json.dumps(tree.to_json(), indent=2)
    inner = [{"a": [1, {}]}, 2]
    deep: list = inner
    for _ in range(INDENTED_DEPTH):
        deep = [deep]
    lines = json_text(deep).splitlines()
    assert lines[INDENTED_DEPTH] == " " * 2 * INDENTED_DEPTH + json.dumps(inner)
    assert json.loads(json_text(deep)) == deep


def _chain_items(depth: int) -> list:
    s = Stream()
    return [s.openat(1000 + i, 999 + i, "c") for i in range(depth)]


def test_a_tree_that_would_loop_is_cut_once() -> None:
    # pid reuse makes 2's first parent 1 and 1's parent 2: one link is left out
    s = Stream()
    tree = build_tree([s.openat(2, 1, "a"), s.openat(1, 2, "b")])
    [root] = tree.to_json()
    assert [root["host_pid"], root["children"][0]["host_pid"]] in ([1, 2], [2, 1])
    assert root["children"][0]["children"] == []


# -- 5: work per record


def _lines_run(call, *modules: str) -> int:
    """Python lines executed in ``modules`` by ``call()``: work, counted without a clock
    (a loop over n items runs its body's lines n times)."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename.endswith(modules):
            if event == "line":
                count += 1
            return tracer
        return None

    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(None)
    return count


def _losses(n: int) -> list:
    """d5's first capture as the table takes it: n live processes, then n events of 50 of
    them, each followed by a loss."""
    s = Stream()
    items: list = [s.openat(10 + i, 1, "c") for i in range(n)]
    for i in range(n):
        items += [s.openat(10 + i % 50, 1, "c"), 1]
    return items


def _lives(n: int) -> list:
    """d5's second capture: n children of pid 5 seen before it, then n/2 lives of pid 5."""
    s = Stream()
    items = [s.openat(100000 + i, 5, "c") for i in range(n)]
    for _ in range(n // 2):
        items += [s.openat(5, 1, "c"), s.exit(5, 1, "c")]
    return items


def test_a_loss_costs_the_same_however_many_processes_live() -> None:
    def work(n: int) -> int:
        table = ProcessTable()
        items = _losses(n)
        return _lines_run(lambda: [table.feed(item) for item in items], "process/table.py")

    small, large = work(500), work(1000)
    assert large < 2.2 * small, (small, large)


def test_ps_finds_a_parent_among_many_lives_of_its_pid_in_log_time() -> None:
    def work(n: int) -> int:
        items = _lives(n)
        return _lines_run(lambda: build_tree(items).lines(), "process/tree.py",
                          "process/table.py")

    small, large = work(500), work(1000)
    assert large < 2.2 * small, (small, large)
    tree = build_tree(_lives(100))
    [first, *later] = tree.to_json()
    assert first["host_pid"] == 5 and len(first["children"]) == 100 and len(later) == 49


def test_a_loss_drops_the_exec_requests_pending_and_only_them() -> None:
    s, table = Stream(), ProcessTable()
    table.update(s.openat(300, 1, "sh"))
    entry = s.exec(200, 1, "sh", "/bin/cat", ["cat"], bprm=False)
    table.update(entry[0])
    table.lost(1)
    assert table.update(entry[-1]).exe == "sh"   # the exec's result without its request
    again = s.exec(200, 1, "sh", "/bin/ls", ["ls"], bprm=False)
    for event in again:
        answer = table.update(event)
    assert answer.exe == "/bin/ls" and table.get(300).pending is None


# -- 6: memory


def _peak(call) -> int:
    """The most bytes Python held at once during ``call()`` (no clock involved)."""
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _read_all(path: Path) -> CaptureReader:
    with CaptureReader(path) as reader:
        for _ in reader:
            pass
    return reader


def _flat(make, sizes=(2000, 8000)) -> None:
    """The peak of ``make(n)`` is the same (within 30 %) for n and 4n."""
    small, large = (_peak(lambda n=n: make(n)) for n in sizes)
    assert large < 1.3 * small, (small, large)


def test_unknown_records_are_counted_past_the_first_notes(tmp_path: Path) -> None:
    for n in (2000, 3000, 8000):
        (tmp_path / f"unknown-{n}.ewcap").write_bytes(
            _header() + _record(9, b"") * n + _sample(Stream().openat(5, 1, "c")))
    reader = _read_all(tmp_path / "unknown-3000.ewcap")
    assert len(reader.notes) == REPORTS_KEPT and reader.notes_count == 3000
    _flat(lambda n: _read_all(tmp_path / f"unknown-{n}.ewcap"))
    status, out, err = run("decode", "--raw", str(tmp_path / "unknown-8000.ewcap"))
    assert status == 0 and len(out.splitlines()) == 1
    notes = err.splitlines()
    assert len(notes) == REPORTS_KEPT + 1
    assert notes[-1].endswith(f"note: and {8000 - REPORTS_KEPT} more records of unknown "
                              "type skipped")
    status, out, _ = run("info", "--json", str(tmp_path / "unknown-8000.ewcap"))
    assert status == 0 and json.loads(out)["skipped_unknown_records"] == 8000


def test_damaged_records_are_counted_past_the_first_reports(tmp_path: Path) -> None:
    good = _sample(Stream().openat(5, 1, "c"))
    bad = good[:-1] + bytes([good[-1] ^ 1])   # its payload CRC no longer holds

    for n in (2000, 3000, 8000):
        (tmp_path / f"damaged-{n}.ewcap").write_bytes(_header() + (bad + good) * n)
    reader = _read_all(tmp_path / "damaged-3000.ewcap")
    assert len(reader.damage) == REPORTS_KEPT and reader.damage_count == 3000
    _flat(lambda n: _read_all(tmp_path / f"damaged-{n}.ewcap"))
    status, out, _ = run("info", "--json", str(tmp_path / "damaged-8000.ewcap"))
    info = json.loads(out)
    assert info["damaged_records"] == 8000 and len(info["damage"]) == REPORTS_KEPT
    status, out, _ = run("info", str(tmp_path / "damaged-8000.ewcap"))
    assert f"... and 7990 more (--json lists the first {REPORTS_KEPT})" in out


def test_losses_before_the_first_sample_are_held_as_counts(tmp_path: Path) -> None:
    first = Stream().openat(5, 1, "c")
    sample = SampleRecord(0, encode(first, "classic"), 0)
    layout = get_layout("classic")

    def records(n: int):
        for i in range(n):
            yield LostRecord(i % 2, 1, i)
        yield sample

    def make(n: int) -> list:
        return list(held_until_fit(records(n), layout, "x86_64", "t"))

    out = make(8000)
    assert len(out) == HELD_LOST_LIMIT + 1 and out[-1] is sample
    assert [r.cpu for r in out[:-1]] == [i % 2 for i in range(HELD_LOST_LIMIT)]
    assert sum(r.count for r in out[:-1]) == 8000
    assert make(HELD_LOST_LIMIT)[:-1] == list(records(HELD_LOST_LIMIT))[:-1]   # untouched
    _flat(make)
    path = tmp_path / "lost-first.ewcap"
    path.write_bytes(_header() + _lost(1) * 5000 + _sample(first))
    status, out, err = run("info", "--json", str(path))
    assert status == 0 and json.loads(out)["lost"] == 5000
    assert f"note: {5000 - HELD_LOST_LIMIT} LOST records before the first sample" in err


def test_processes_that_never_exit_are_forgotten_least_recently_seen_first() -> None:
    def make(n: int) -> ProcessTable:
        s, table = Stream(), ProcessTable(max_processes=1000)
        table.update(s.openat(7, 1, "busy"))
        for i in range(n):
            table.update(s.openat(10 + i, 1, "c"))
            table.update(s.openat(7, 1, "busy"))
        return table

    table = make(3000)
    assert len(list(table.processes())) == 1000 and table.evicted >= 2001
    # seen all along: kept (once forgotten at most, when the first look found every
    # process seen), with the newest others
    assert table.get(7).events >= 2000 and table.evicted <= 2002
    assert {p.host_pid for p in table.processes()} == {7, *range(3010 - 999, 3010)}
    _flat(make)
    tree = ProcessTable(retain_ns=None, max_processes=10)   # a tree's table is bounded too
    s = Stream()
    for i in range(100):
        tree.update(s.openat(10 + i, 1, "c"))
    assert len(list(tree.processes())) == 10 and tree.evicted == 90


def test_the_enricher_forgets_what_it_kept_of_a_forgotten_process(monkeypatch) -> None:
    layout = get_layout("classic")
    monkeypatch.setattr(enrich, "_CACHE_LIMIT", 1000)   # its answers' bound, met sooner

    def make(n: int) -> Enricher:
        s, enricher = Stream(), Enricher(layout, "x86_64")
        enricher.table.max_processes = 1000
        for i in range(n):
            enricher.sample(encode(s.openat(10 + i, 1, "c"), "classic"))
        return enricher

    enricher = make(3000)
    assert len(enricher._kept) <= 1000 and len(enricher._children[1]) <= 1000
    _flat(make)


def test_exits_past_the_bound_are_forgotten_before_their_window() -> None:
    s, table = Stream(), ProcessTable(max_processes=100)
    for pid in range(1000, 1500):
        table.update(s.openat(pid, 1, "w"))
        table.update(s.exit(pid, 1, "w"))
    assert len(table._exited) == 100 and table.evicted == 400
