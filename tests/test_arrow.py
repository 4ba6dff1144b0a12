"""ebpfwire.columnar.arrow: tables equal to per-event decoding, lost rows, batch bounds, bytes."""

from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ebpfwire
from ebpfwire import DecodeError, decode
from ebpfwire.capture import CaptureReader, CaptureWriter, LostRecord
from ebpfwire.columnar.arrow import batches, schema, to_table
from ebpfwire.wire import names, strategies
from ebpfwire.wire.events import Argv, SockAddr
from ebpfwire.wire.layouts import LAYOUTS, get_layout
from ebpfwire.wire.walker import (
    COLUMN_TAGS,
    STRING_TAGS,
    ArgvSpans,
    sockaddr,
    walk,
    walk_columns,
)

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures")
CAPTURES = sorted(glob.glob(os.path.join(FIXTURES, "*.ewcap")))


def clean(text: str | None) -> str | None:
    """What a string column holds for a wire string: valid UTF-8, U+FFFD for bad bytes."""
    if text is None:
        return None
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def reference(data: bytes, layout: str, arch: str) -> ebpfwire.Event:
    """Per-event decoding as to_table documents it: strict when it succeeds, else lenient."""
    try:
        return decode(data, layout=layout, arch=arch)
    except DecodeError:
        return decode(data, layout=layout, arch=arch, strict=False)


def expected_arg(arg: ebpfwire.Arg) -> dict:
    value = arg.value
    out = dict.fromkeys(("value", "text", "strings", "family", "addr", "port", "path",
                         "flowinfo", "scope_id", "flags"))
    out["type"] = arg.type.name
    if type(value) is int:
        out["value"] = value
        out["flags"] = arg.text
    elif type(value) is str:
        out["text"] = clean(value)
    elif type(value) is Argv:
        out["strings"] = [clean(item) for item in value]
    elif type(value) is SockAddr:
        out.update(family=names.sock_family_name(value.family) or str(value.family),
                   addr=value.addr, port=value.port, path=clean(value.path),
                   flowinfo=value.flowinfo, scope_id=value.scope_id)
    return out


def expected_row(event: ebpfwire.Event, data: bytes, cpu: int | None,
                 layout: str, boot_time_ns: int | None) -> dict:
    row = {name: getattr(event, name) for name in (
        "ts", "event_id", "pid_id", "mnt_id", "host_ppid", "host_pid", "ppid", "pid", "uid",
        "retval", "errno", "argnum")}
    row["comm"] = clean(event.comm)
    for name, value in event.extra.items():
        row[name] = clean(value) if isinstance(value, str) else value
    if ebpfwire.get_layout(layout).hash_at is not None:
        row.setdefault("hashes", None)      # no trailer (hash field not 1)
    row["cpu"] = cpu
    row["event"] = event.label
    row["args"] = [expected_arg(arg) for arg in event.args]
    row["errors"] = ([{"kind": e.kind, "offset": e.offset, "message": str(e)}
                      for e in event.errors] or None) if event.errors is not None else None
    row["lost"] = None
    strings = [event.comm, *(v for v in event.extra.values() if isinstance(v, str))]
    for arg in event.args:
        if isinstance(arg.value, str):
            strings.append(arg.value)
        elif isinstance(arg.value, list):
            strings.extend(arg.value)
        elif isinstance(arg.value, SockAddr) and arg.value.path is not None:
            strings.append(arg.value.path)
    not_utf8 = any(s is not None and clean(s) != s for s in strings)
    row["raw"] = data if not_utf8 or event.errors else None
    row["time_ns"] = (boot_time_ns + event.ts if boot_time_ns is not None
                      and event.ts is not None else None)
    return row


def actual_rows(table: pa.Table) -> list[dict]:
    rows = table.to_pylist()
    times = table.column("time").cast(pa.int64()).to_pylist()
    for row, time_ns in zip(rows, times, strict=True):
        row["time_ns"] = time_ns
        del row["time"]
    return rows


FLAT = ("path", "fd", "argv", "family", "addr", "port", "flags")


@pytest.mark.parametrize("path", CAPTURES, ids=os.path.basename)
def test_to_table_equals_per_event_decode_on_every_fixture(path):
    table = to_table(path)
    with CaptureReader(path) as reader:
        header = reader.header
        records = list(reader)
    assert table.schema == schema(header.layout)
    rows = actual_rows(table)
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        if isinstance(record, LostRecord):
            assert row["lost"] == record.count and row["cpu"] == record.cpu
            assert row["event"] is None and row["ts"] is None and row["args"] is None
            continue
        event = reference(record.data, header.layout, header.arch)
        want = expected_row(event, record.data, record.cpu, header.layout, header.boot_time_ns)
        got = {key: row[key] for key in want}
        assert got == want


def table_of_samples(samples: list[bytes], **kwargs) -> list[dict]:
    return actual_rows(to_table(samples, **kwargs))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(strategies.event_bytes(), strategies.damaged_event_bytes(),
                          st.binary(max_size=120)), min_size=1, max_size=12))
def test_to_table_equals_per_event_decode_on_generated_samples(samples):
    rows = table_of_samples(samples)
    for row, data in zip(rows, samples, strict=True):
        want = expected_row(reference(data, "classic", "x86_64"), data, None, "classic", None)
        assert {key: row[key] for key in want} == want


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_to_table_equals_per_event_decode_in_every_layout(layout, data):
    """Valid, damaged and random samples of each layout, in one batch."""
    samples = data.draw(st.lists(st.one_of(strategies.event_bytes(layout),
                                           strategies.damaged_event_bytes(layout),
                                           st.binary(max_size=300)), min_size=1, max_size=8))
    rows = table_of_samples(samples * 2, layout=layout)
    for row, sample_bytes in zip(rows, samples * 2, strict=True):
        want = expected_row(reference(sample_bytes, layout, "x86_64"), sample_bytes, None,
                            layout, None)
        assert {key: row[key] for key in want} == want


def test_argv_of_every_length_in_one_batch_walked_in_lock_step():
    """execve rows whose argv end at different steps, empty elements, a non-UTF-8 element,
    and a row cut inside its argv: each row as decode() gives it."""
    T = ebpfwire.ArgType
    samples = []
    for count in range(23):
        argv = [f"a{k}" * (k % 3) for k in range(count)]
        samples.append(sample(59, (T.STR_T, f"/bin/p{count}"), (T.STR_ARR_T, argv)))
    samples.append(sample(59, (T.STR_T, "/bin/x"), (T.STR_ARR_T, ["ok", "bad\udcff", ""])))
    samples.append(samples[5][:-3])
    rows = table_of_samples(samples)
    for row, data in zip(rows, samples, strict=True):
        want = expected_row(reference(data, "classic", "x86_64"), data, None, "classic", None)
        assert {key: row[key] for key in want} == want
    assert rows[4]["argv"] == ["", "a1", "a2a2", ""]
    assert rows[23]["argv"] == ["ok", "bad\ufffd", ""] and rows[23]["raw"] == samples[23]
    assert rows[24]["errors"]


@given(st.lists(strategies.damaged_event_bytes(), min_size=1, max_size=6))
def test_strict_raises_at_the_first_sample_that_does_not_decode(samples):
    failures = []
    for index, data in enumerate(samples):
        try:
            decode(data)
        except DecodeError as error:
            failures.append((index, error))
    if not failures:
        assert to_table(samples, strict=True).num_rows == len(samples)
        return
    index, first = failures[0]
    with pytest.raises(DecodeError) as info:
        to_table(samples, strict=True)
    assert (info.value.kind, info.value.offset) == (first.kind, first.offset)
    assert f"sample {index}" in str(info.value)


def test_strict_error_names_the_file_offset(tmp_path):
    path = tmp_path / "bad.ewcap"
    good = ebpfwire.encode(ebpfwire.Event(1, 0, 0, 1, 2, 1, 2, 0, 3, 1, 0, "sh",
                                          [ebpfwire.Arg(ebpfwire.ArgType.INT_T, 3)]))
    with CaptureWriter(path) as writer:
        writer.write_sample(0, good)
        writer.write_sample(1, good[:-2])
    with CaptureReader(path) as reader:
        offsets = [record.offset for record in reader]
    with pytest.raises(DecodeError, match=f"file offset {offsets[1]}"):
        to_table(str(path), strict=True)
    table = to_table(str(path))
    assert table.column("errors").to_pylist()[1][0]["kind"] == "truncated"
    assert table.column("raw").to_pylist()[1] == good[:-2]


def write_capture(path, samples, lost_every: int = 0) -> list:
    with CaptureWriter(path, boot_time_ns=1_000_000_000) as writer:
        for index, data in enumerate(samples):
            writer.write_sample(index % 2, data)
            if lost_every and index % lost_every == lost_every - 1:
                writer.write_lost(1, index + 1000)
    with CaptureReader(path) as reader:
        return list(reader)


def real_samples() -> list[bytes]:
    with CaptureReader(os.path.join(FIXTURES, "real-workload.ewcap")) as reader:
        return [record.data for record in reader]


def test_lost_records_become_rows_and_batches_are_bounded(tmp_path):
    samples = real_samples()
    path = tmp_path / "lost.ewcap"
    records = write_capture(path, samples, lost_every=10)
    parts = list(batches(str(path), max_rows=16))
    assert all(0 < len(batch) <= 16 for batch in parts)
    assert sum(len(batch) for batch in parts) == len(records)
    table = pa.Table.from_batches(parts)
    assert table.to_pylist() == to_table(str(path)).to_pylist()
    lost = [(row["cpu"], row["lost"]) for row in table.to_pylist() if row["lost"] is not None]
    assert lost == [(r.cpu, r.count) for r in records if isinstance(r, LostRecord)]
    assert len(lost) == len(samples) // 10
    for row in table.to_pylist():
        assert (row["event"] is None) == (row["lost"] is not None)
    wall = table.column("time").cast(pa.int64()).to_pylist()
    ts = table.column("ts").to_pylist()
    assert all(w == t + 1_000_000_000 for w, t in zip(wall, ts, strict=True) if t is not None)
    with pytest.raises(ValueError, match="max_rows"):
        next(batches(str(path), max_rows=0))


def test_raw_samples_and_readers_and_several_paths(tmp_path):
    samples = real_samples()[:20]
    from_bytes = to_table(samples)
    assert from_bytes.column("time").null_count == len(samples)
    assert from_bytes.column("cpu").null_count == len(samples)
    one, two = tmp_path / "a.ewcap", tmp_path / "b.ewcap"
    write_capture(one, samples[:10])
    write_capture(two, samples[10:])
    both = to_table([str(one), str(two)], context=False)
    assert both.drop(["time", "cpu"]).to_pylist() == to_table(
        samples, context=False).drop(["time", "cpu"]).to_pylist()
    # each capture has its own process table: the second's rows are answered as if alone
    context = ["process", "parent_process", "container_id"]
    assert (to_table([str(one), str(two)]).select(context).slice(10).to_pylist()
            == to_table(str(two)).select(context).to_pylist())
    with CaptureReader(str(one)) as reader:
        assert to_table(reader).num_rows == 10
    assert to_table([]).num_rows == 0
    hashed = tmp_path / "h.ewcap"
    with CaptureWriter(hashed, layout="hash") as writer:
        writer.write_sample(0, samples[0][:68] + bytes(157) + samples[0][68:])
    with pytest.raises(ValueError, match="layout"):
        to_table([str(one), str(hashed)])


def test_non_utf8_bytes_stay_reachable_exactly():
    name = b"/tmp/\xff\xfe-caf\xc3\xa9"
    event = ebpfwire.Event(5, 0, 0, 1, 77, 1, 77, 0, 257, 3, 3, "c\xffat".encode(
        "latin-1").decode("utf-8", "surrogateescape"),
        [ebpfwire.Arg(ebpfwire.ArgType.INT_T, -100),
         ebpfwire.Arg(ebpfwire.ArgType.STR_T, name.decode("utf-8", "surrogateescape")),
         ebpfwire.Arg(ebpfwire.ArgType.OPEN_FLAGS_T, 0)])
    clean_event = event.replace(comm="cat", args=[event.args[0], event.args[0]._replace(
        type=ebpfwire.ArgType.STR_T, value="/etc/hosts"), event.args[2]])
    samples = [ebpfwire.encode(event), ebpfwire.encode(clean_event)]
    table = to_table(samples)
    path = table.column("path").to_pylist()
    assert path[0] == "/tmp/\ufffd\ufffd-café" and path[1] == "/etc/hosts"
    assert table.column("comm").to_pylist()[0] == "c\ufffdat"
    raw = table.column("raw").to_pylist()
    assert raw == [samples[0], None]
    again = decode(raw[0])
    assert again.args[1].raw == name and again == event


def sample(event_id: int, *args, retval: int = 0) -> bytes:
    return ebpfwire.encode(ebpfwire.Event(
        9, 0, 0, 1, 50, 1, 50, 0, event_id, len(args), retval, "t",
        [ebpfwire.Arg(*arg) for arg in args]))


def test_flat_columns_on_known_events():
    T = ebpfwire.ArgType
    samples = [
        sample(42, (T.INT_T, 3), (T.SOCKADDR_T, SockAddr.inet("10.1.2.3", 443)), retval=-111),
        sample(257, (T.INT_T, -100), (T.STR_T, "/etc/shadow"), (T.OPEN_FLAGS_T, 0o2000000)),
        sample(59, (T.STR_T, "/bin/ls"), (T.STR_ARR_T, Argv(["ls", "-l"]))),
        sample(41, (T.SOCK_DOM_T, 10), (T.SOCK_TYPE_T, 1), (T.INT_T, 0)),
        sample(49, (T.INT_T, 4), (T.SOCKADDR_T, SockAddr.unix("/run/x.sock"))),
        sample(402, (T.STR_T, "TCPv6"), (T.SOCKADDR_T, SockAddr.inet6("::1", 8080))),
        sample(3, (T.INT_T, 7)),
        sample(42, (T.STR_T, "not an fd"), (T.INT_T, 1)),   # wrong types: no flat values
        sample(351),
    ]
    table = to_table(samples)
    flat = {name: table.column(name).to_pylist() for name in FLAT}
    assert flat["path"] == [None, "/etc/shadow", "/bin/ls", None, "/run/x.sock", None, None,
                            None, None]
    assert flat["fd"] == [3, None, None, None, 4, None, 7, None, None]
    assert flat["argv"] == [None, None, ["ls", "-l"], None, None, None, None, None, None]
    assert flat["family"] == ["AF_INET", None, None, "AF_INET6", "AF_UNIX", "AF_INET6", None,
                              None, None]
    assert flat["addr"] == ["10.1.2.3", None, None, None, None, "::1", None, None, None]
    assert flat["port"] == [443, None, None, None, None, 8080, None, None, None]
    assert flat["flags"] == [None, "O_RDONLY|O_CLOEXEC", None, "SOCK_STREAM", None, None,
                             None, None, None]
    assert table.column("errno").to_pylist()[0] == "ECONNREFUSED"
    assert table.column("event").to_pylist()[-1] == "do_exit"


def test_flat_columns_on_the_real_fixture_events():
    table = to_table(os.path.join(FIXTURES, "real-workload.ewcap"))
    rows = table.to_pylist()
    by_event: dict[str, list[dict]] = {}
    for row in rows:
        by_event.setdefault(row["event"], []).append(row)
    for row in by_event["openat"]:
        assert row["path"] == row["args"][1]["text"]
        assert row["flags"] == row["args"][2]["flags"]
    for row in by_event["connect"]:
        assert row["fd"] == row["args"][0]["value"]
        assert (row["family"], row["addr"], row["port"]) == (
            row["args"][1]["family"], row["args"][1]["addr"], row["args"][1]["port"])
    execs = [row for row in by_event["execve"] if row["argnum"] == 2]
    assert execs and all(row["argv"] == row["args"][1]["strings"] for row in execs)
    assert all(row["argv"] is None for row in by_event["execve"] if row["argnum"] == 0)


def test_short_headers_keep_the_fields_that_are_there():
    data = sample(3, (ebpfwire.ArgType.INT_T, 7))[:30]
    row = to_table([data]).to_pylist()[0]
    assert row["ts"] == 9 and row["host_pid"] == 50 and row["pid"] is None
    assert row["event"] == "?" and row["errors"][0]["kind"] == "short-header"
    assert row["raw"] == data and row["args"] == []
    assert get_layout("classic").size > len(data)
    with pytest.raises(DecodeError, match="short-header"):
        to_table([data], strict=True)


def column_walk(samples: list[bytes], tags: tuple[int, ...]) -> list:
    """walk_columns over ``samples`` with ``tags``: per sample its flat list, or None."""
    size = get_layout("classic").size
    joined = b"".join(samples)
    lengths = np.array([len(data) for data in samples], np.int64)
    ends = np.cumsum(lengths)
    ok, values = walk_columns(np.frombuffer(joined, np.uint8), ends - lengths, ends,
                              ends - lengths + size, tags)
    out = []
    for row in range(len(samples)):
        if not ok[row]:
            out.append(None)
            continue
        flat = []
        for tag, value in zip(tags, values, strict=True):
            if tag == ebpfwire.ArgType.SOCKADDR_T:
                value = sockaddr(joined[value[0][row]:value[1][row]])
            elif type(value) is ArgvSpans:
                first = int(value.counts[:row].sum())
                value = [joined[begin:end].decode("utf-8", "surrogateescape") for begin, end
                         in zip(value.begins[first:first + value.counts[row]].tolist(),
                                value.ends[first:first + value.counts[row]].tolist(),
                                strict=True)]
            elif tag in STRING_TAGS:
                value = joined[value[0][row]:value[1][row]].decode("utf-8", "surrogateescape")
            else:
                value = int(value[row])
            flat += [tag, value]
        out.append(flat)
    return out


@settings(max_examples=150, deadline=None)
@given(strategies.event_bytes(), st.integers(1, 255))
def test_the_column_walk_takes_exactly_what_the_walker_takes(valid, delta):
    """For a valid sample's tags and every sample one change away from it (a byte changed,
    the end cut, bytes added), the column walk takes exactly the samples the fast walker
    takes with those tags, with the same values."""
    size = get_layout("classic").size
    flat: list = []
    walk(valid, size, len(valid), decode(valid).argnum, flat)
    tags = tuple(flat[0::2])
    assume(all(tag in COLUMN_TAGS for tag in tags))
    samples = [valid, *(valid[:at] + bytes([(valid[at] + delta) % 256]) + valid[at + 1:]
                        for at in range(size, len(valid))),
               *(valid[:end] for end in range(size, len(valid))),
               *(valid + bytes(extra) for extra in range(1, 10)), valid + b"\1"]
    for data, got in zip(samples, column_walk(samples, tags), strict=True):
        flat = []
        taken = walk(data, size, len(data), len(tags), flat) and tuple(flat[0::2]) == tags
        assert got == (flat if taken else None)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(strategies.event_bytes(), strategies.damaged_event_bytes()),
                min_size=1, max_size=4), st.randoms())
def test_groups_mixing_column_walked_and_careful_rows_equal_per_event_decode(pairs, rnd):
    """Valid and damaged samples of the same events in one batch: the column walk takes
    some rows of a group and the careful walk the others, in their places."""
    samples = [data for pair in pairs for data in pair] * 3
    rnd.shuffle(samples)
    rows = table_of_samples(samples)
    for row, data in zip(rows, samples, strict=True):
        want = expected_row(reference(data, "classic", "x86_64"), data, None, "classic", None)
        assert {key: row[key] for key in want} == want


def test_column_walked_strings_that_are_not_utf8_stay_reachable():
    T = ebpfwire.ArgType
    bad_path = "/tmp/\udcff-x"       # the byte 0xff, kept by surrogateescape
    bad_unix = SockAddr(1, None, None, "/run/\udcfe.sock", None, None)
    samples = [sample(257, (T.INT_T, -100), (T.STR_T, bad_path), (T.OPEN_FLAGS_T, 0)),
               sample(257, (T.INT_T, -100), (T.STR_T, "/etc/hosts"), (T.OPEN_FLAGS_T, 0)),
               sample(42, (T.INT_T, 3), (T.SOCKADDR_T, bad_unix)),
               sample(42, (T.INT_T, 3), (T.SOCKADDR_T, bad_unix._replace(path="/run/ok")))]
    table = to_table(samples)
    assert table.column("path").to_pylist() == ["/tmp/\ufffd-x", "/etc/hosts",
                                                 "/run/\ufffd.sock", "/run/ok"]
    assert table.column("raw").to_pylist() == [samples[0], None, samples[2], None]
    assert decode(samples[0]).args[1].value == bad_path
    assert decode(samples[2]).args[1].value == bad_unix


@pytest.mark.parametrize("context", [True, False])
def test_an_empty_capture_gives_its_own_layouts_columns(tmp_path, context):
    from ebpfwire.arrow import schema, to_table
    from ebpfwire.capture import CaptureWriter

    path = tmp_path / "empty.ewcap"
    with CaptureWriter(path, layout="hash"):
        pass
    table = to_table(path, context=context)
    assert table.num_rows == 0 and table.schema.equals(schema("hash", context))
