"""Issue 16's last bounds: what commands hold before the first sample, the reorder window's
bound reached and reported, the process tree's bound, and the comm quoted in the table."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from test_cli import run
from test_hostile_bounds import _flat, _header, _record, _sample
from test_process import Stream

from ebpfwire import encode
from ebpfwire.capture import LostRecord, ProcessRecord, SampleRecord
from ebpfwire.capture.snapshot import ProcessInfo
from ebpfwire.cli.captures import HOLD_LIMIT, held_until_fit, say_order
from ebpfwire.process.tree import ProcessTree, json_chunks, json_text
from ebpfwire.wire.layouts import get_layout
from ebpfwire.wire.order import WINDOW_NS, TimeOrder

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


# -- the process tree's bound


def _tree(n: int, exits: int = 0, bound: int = 100) -> ProcessTree:
    """``n`` processes that never exit under one parent, then ``exits`` short lives."""
    s, tree = Stream(), ProcessTree()
    tree.table.max_processes = bound
    tree.add_event(s.openat(1, 0, "init"))
    for i in range(n):
        tree.add_event(s.openat(10 + i, 1, "w"))
        tree.add_event(s.openat(1, 0, "init"))   # seen all along: never the least recent
    for i in range(exits):
        tree.add_event(s.openat(100_000 + i, 1, "x"))
        tree.add_event(s.exit(100_000 + i, 1, "x"))
    return tree


def test_a_tree_keeps_at_most_its_bound_and_counts_the_rest() -> None:
    tree = _tree(1000)
    assert len(tree._nodes) <= 100 and len(list(tree.table.processes())) <= 100
    # 1002 lives: the parent was forgotten once, when the clock's first look found every
    # process seen since the last, and met again as a new life
    assert tree.table.evicted == 1002 - 100
    [root] = tree.roots()
    assert root.process.host_pid == 1 and len(root.children) == 99
    assert {child.process.host_pid for child in root.children} == set(range(911, 1010))
    _flat(lambda n: _tree(n, bound=500), sizes=(1000, 4000))


def test_exited_processes_past_the_bound_leave_the_tree_oldest_first() -> None:
    tree = _tree(0, exits=1000)
    exited = [p for p in tree.table.processes() if p.exited]
    # and their parent, not seen since the first exits
    assert len(exited) == 100 and tree.table.evicted == 900 + 1
    assert {p.host_pid for p in exited} == set(range(100_900, 101_000))
    assert len(tree._nodes) == 100
    _flat(lambda n: _tree(0, exits=n, bound=500), sizes=(1000, 4000))


def test_processes_share_their_comm_and_keep_no_per_event_counts() -> None:
    tree = _tree(50)
    processes = [p for p in tree.table.processes() if p.comms == ("w",)]
    assert len(processes) == 50
    assert len({id(p.comms[0]) for p in processes}) == 1
    assert len({id(p.program.comm) for p in processes}) == 1


def test_ps_json_is_written_as_the_tree_is_walked() -> None:
    """Each process's dict is made when it is written: json_chunks of a tree holds none of
    the dicts to_json would, and gives the same text."""
    tree = _tree(300, bound=1000)
    made = []

    def node_json(node):
        made.append(node)
        return tree._json(node)

    chunks = json_chunks(tree.roots(), node_json)
    first = next(chunks)
    assert 0 < len(made) < 301
    assert first + "".join(chunks) == json_text(tree.to_json()) == "".join(tree.json_chunks())
    assert len(made) == 301


# -- the reorder window's bound


def test_records_released_before_their_window_are_counted(capsys) -> None:
    def samples(n: int, step: int):
        s = Stream()
        out = []
        for i in range(n):
            s.ts = step * i
            out.append(SampleRecord(0, encode(s.openat(5, 1, "c"), "classic"), i))
        return out

    order = TimeOrder(SampleRecord, LostRecord, max_records=100)
    out = list(order(samples(1000, 1)))            # all within one window
    assert [r.offset for r in out] == list(range(1000)) and order.late == 0
    # 51 let out each time 101 are held (down to half the bound): 18 times; 82 at the end
    assert order.early == 18 * 51
    spread = TimeOrder(SampleRecord, LostRecord, max_records=100)
    list(spread(samples(1000, WINDOW_NS // 20)))   # 20 a window: the bound is never met
    assert spread.early == 0

    say_order("t.ewcap", SimpleNamespace(order=order))
    assert ("t.ewcap: note: 918 samples were ordered within less than 1 s: more than 100 "
            "records or 64 MiB fell within one window") in capsys.readouterr().err


# -- the comm in the table


def test_the_table_quotes_the_comm(tmp_path: Path) -> None:
    """A comm is 15 bytes its task chose: quoted and escaped, it cannot pass for the pid
    and the program of its line, nor hide a quote."""
    s = Stream()
    path = tmp_path / "comm.ewcap"
    forged = 'x 1 ["/bin/su'
    path.write_bytes(_header() + _sample(s.openat(200, 1, forged))
                     + _sample(s.openat(201, 1, 'a"b')) + _sample(s.openat(202, 1, "")))
    status, out, _ = run("decode", "--utc", str(path))
    lines = out.splitlines()
    assert status == 0
    assert ' "x 1 [\\"/bin/su" 200 openat(' in lines[0]
    assert ' "a\\"b" 201 openat(' in lines[1] and ' "" 202 openat(' in lines[2]


# -- export: rows decoded a few at a time, gathered into row groups


def test_export_decodes_a_few_rows_at_a_time_into_full_row_groups(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from ebpfwire.columnar import export

    monkeypatch.setattr(export, "DECODE_ROWS", 500)
    for n in (2000, 8000):
        s = Stream()
        records = []
        for i in range(n):
            s.ts = i * (WINDOW_NS // 10)    # the reorder window holds a few at a time
            records.append(_sample(s.openat(100 + i % 50, 1, "c", path="/x" * 20)))
        (tmp_path / f"{n}.ewcap").write_bytes(_header() + b"".join(records))

    def make(n: int) -> None:
        export.export_parquet(tmp_path / f"{n}.ewcap", tmp_path / f"{n}.parquet", jobs=1,
                              row_group_rows=1500, context=False, force=True)

    _flat(make)  # both sizes fill a row group: what is held is one group, whatever n
    meta = pq.ParquetFile(tmp_path / "8000.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1500] * 5 + [500]
