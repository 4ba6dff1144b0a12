"""The compiled BTF decoder against BtfCodec, the field by field reference, on every
event type of tests/bpf/btf_events.bpf.c (needs clang, not the kernel)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from bpf_object import compile_object
from hypothesis import given, settings
from hypothesis import strategies as st

from ebpfwire.kernel.btfstruct import CompiledStruct, Field
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.maps import BtfCodec
from ebpfwire.kernel.objfile import ObjectSpec, read_spec

TYPES = ("all_kinds", "with_tail", "event", "inner")


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> ObjectSpec:
    try:
        return read_spec(compile_object("btf_events", Path(tmp_path_factory.mktemp("bpf"))))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """BtfCodec's nested value as dotted names: dicts and lists of dicts/lists opened."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(v, f"{prefix}.{k}" if prefix else k, out)
    elif isinstance(value, list) and value and isinstance(value[0], dict | list):
        for i, v in enumerate(value):
            flatten(v, f"{prefix}[{i}]", out)
    else:
        out[prefix or "value"] = value


def expected(field: Field, ref: Any, data: bytes) -> Any:
    """What the compiled decoder must give for BtfCodec's ``ref`` of ``field``."""
    if field.kind == "text":
        raw = bytes(b & 0xFF for b in ref).partition(b"\0")[0]
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return raw
    if field.kind == "bytes" and field.wide:
        return ref
    if field.kind == "bytes":
        return data[field.offset : field.offset + field.size]
    if field.kind == "tail":
        return data[field.offset :]
    if field.kind == "enum":
        return dict(field.enum).get(ref, ref)
    if field.kind == "list" and field.item == "enum":
        return [dict(field.enum).get(x, x) for x in ref]
    return ref


def check(spec: ObjectSpec, name: str, data: bytes) -> None:
    tid = spec.btf.struct_id(name)
    compiled, codec = CompiledStruct(spec.btf, tid), BtfCodec(spec.btf, tid)
    ref: dict[str, Any] = {}
    flatten(codec.decode(data), "", ref)
    got = compiled.decode(data)
    assert list(got) == compiled.names
    for f in compiled.fields:
        if f.kind == "bytes" and f.name not in ref:  # a named union's bytes: no ref value
            assert got[f.name] == data[f.offset : f.offset + f.size]
            continue
        want = expected(f, ref[f.name], data)
        if isinstance(want, float) and want != want:
            assert got[f.name] != got[f.name]
        else:
            assert got[f.name] == want, f.name


@pytest.mark.parametrize("name", TYPES)
@settings(max_examples=150, deadline=None)
@given(seed=st.randoms(use_true_random=False))
def test_equal_to_btfcodec_on_random_bytes(spec, name, seed):
    size = spec.btf.sizeof(spec.btf.struct_id(name))
    check(spec, name, seed.randbytes(size))


@given(st.binary(min_size=208, max_size=208))
@settings(max_examples=300, deadline=None)
def test_all_kinds_any_bytes(spec, data):
    check(spec, "all_kinds", data)


def test_every_kind_is_there(spec):
    fields = {f.name: f for f in CompiledStruct(spec.btf, spec.btf.struct_id("all_kinds")).fields}
    kinds = {f.kind for f in fields.values()}
    assert kinds == {"int", "bool", "text", "bytes", "enum", "list", "bits", "float"}
    assert fields["pairs[1].tag"].offset == 71 and fields["u.halves.hi16"].kind == "int"
    assert fields["huge"].wide and fields["grid[1]"].count == 3


def test_values_by_hand(spec):
    c = CompiledStruct(spec.btf, spec.btf.struct_id("event"))
    raw = struct.pack("<iiIxxxxQ16s127s?", 42, 1, 3, 5_000, b"bash\0junk", b"/bin/\xffls", True)
    assert c.size == len(raw) == 168
    assert c.decode(raw) == {"pid": 42, "ppid": 1, "exit_code": 3, "duration_ns": 5000,
                             "comm": "bash", "filename": b"/bin/\xffls", "exit_event": True}
    k = CompiledStruct(spec.btf, spec.btf.struct_id("all_kinds"))
    data = bytearray(k.size)
    off = {f.name: f for f in k.fields}
    struct.pack_into("<i", data, off["state"].offset, -1)
    struct.pack_into("<I", data, off["lo"].offset, 5 | 300 << 3 | 7 << 12)
    data[off["sbits"].offset] = 0b11110  # -2 in 5 bits
    struct.pack_into("<I", data, off["levels"].offset, 200)
    v = k.decode(bytes(data))
    assert (v["state"], v["lo"], v["mid"], v["hi"], v["sbits"]) == ("STATE_DEAD", 5, 300, 7, -2)
    assert v["levels"] == ["LEVEL_HIGH", 0]
    codec = BtfCodec(spec.btf, spec.btf.struct_id("all_kinds"))
    assert codec.decode(bytes(data))["sbits"] == -2  # signed, as C reads it (was 30)
    assert codec.decode(codec.encode(codec.decode(bytes(data))))["sbits"] == -2


def test_tail_and_short_records(spec):
    c = CompiledStruct(spec.btf, spec.btf.struct_id("with_tail"))
    # the tail starts at offset 6, inside the struct's padding (its size is 8)
    assert c.decode(struct.pack("<IH", 3, 9) + b"abcde") == {"len": 3, "kind": 9,
                                                            "data": b"abcde"}
    with pytest.raises(LoaderError, match="with_tail: expected a record of at least 8 bytes, "
                                          "found 5"):
        c.decode(b"12345")


def arrow_value(field: Field, value: Any, data: bytes) -> Any:
    """What the Arrow column holds for the per-event ``value``."""
    if field.kind == "text" and isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if field.wide:
        return data[field.offset : field.offset + field.size]
    if field.kind == "enum" and isinstance(value, int):
        return str(value)
    if field.kind == "list" and field.item == "enum":
        return [x if isinstance(x, str) else str(x) for x in value]
    return value


@pytest.mark.parametrize("name", TYPES)
@settings(max_examples=40, deadline=None)
@given(seed=st.randoms(use_true_random=False), n=st.integers(0, 20), extra=st.integers(0, 9))
def test_arrow_columns_equal_per_event(spec, name, seed, n, extra):
    pytest.importorskip("pyarrow")
    from ebpfwire.columnar.btfevents import to_arrow

    c = CompiledStruct(spec.btf, spec.btf.struct_id(name))
    records = [seed.randbytes(c.size + seed.randrange(extra + 1)) for _ in range(n)]
    table = to_arrow(c, records)
    assert table.column_names == c.names and table.num_rows == n
    rows = table.to_pylist()
    for data, row in zip(records, rows, strict=True):
        # records shorter than the longest are zero-padded to it in the batch
        padded = data.ljust(max(map(len, records)), b"\0")
        for f, (k, v) in zip(c.fields, c.decode(padded).items(), strict=True):
            want = data[f.offset :] if f.kind == "tail" else arrow_value(f, v, padded)
            if isinstance(want, float) and want != want:
                assert row[k] != row[k]
            else:
                assert row[k] == want, k


@pytest.fixture(scope="module")
def elf_bytes(spec) -> bytes:
    return Path(spec.origin).read_bytes()


@pytest.mark.parametrize("name", TYPES)
def test_dwarf_gives_the_same_decoder(spec, elf_bytes, name):
    from ebpfwire.kernel.eventtype import EventTypes

    types = EventTypes(None, elf_bytes, spec.origin)  # no BTF: DWARF only
    found = types.named(name)
    assert found.source == "DWARF" and found.name == name
    ours = CompiledStruct(found.btf, found.type_id)
    theirs = CompiledStruct(spec.btf, spec.btf.struct_id(name))
    assert ours.fields == theirs.fields
    rnd = __import__("random").Random(name)
    for _ in range(50):
        data = rnd.randbytes(theirs.size + 3)
        assert repr(ours.decode(data)) == repr(theirs.decode(data))  # NaN-safe


def test_finding_types(spec, elf_bytes):
    from ebpfwire.kernel.eventtype import EventTypes
    from ebpfwire.kernel.syscalls import BPF_MAP_TYPE_PERF_EVENT_ARRAY, BPF_MAP_TYPE_RINGBUF

    types = EventTypes(spec.btf, elf_bytes, spec.origin)
    assert types.named("struct event").source == "BTF"
    assert types.by_size(168, BPF_MAP_TYPE_RINGBUF, "rb").name == "event"
    assert types.by_size(172, BPF_MAP_TYPE_PERF_EVENT_ARRAY, "pb").name == "event"  # padded
    assert types.by_size(208, BPF_MAP_TYPE_RINGBUF, "rb").name == "all_kinds"
    assert types.by_size(6, BPF_MAP_TYPE_RINGBUF, "rb").name == "inner"
    with pytest.raises(LoaderError, match=r"map 'rb': records of 8 bytes fit several types "
                                          r"\(pair, with_tail\): name one with --type"):
        types.by_size(8, BPF_MAP_TYPE_RINGBUF, "rb")
    with pytest.raises(LoaderError, match=r"no type 'nope' in the object's BTF, and its "
                                          r"DWARF: add the type .* `struct nope \*unused"):
        types.named("nope")
    stripped = EventTypes(None, b"", spec.origin)
    stripped._dwarf = []
    with pytest.raises(LoaderError, match=r"records of 99 bytes, and no struct of that size in "
                                          r"the object's BTF, and it has no DWARF .*`struct "
                                          r"event \*unused __attribute__\(\(unused\)\);`"):
        stripped.by_size(99, BPF_MAP_TYPE_RINGBUF, "rb")
