"""The BTF value codec on the test object's types (needs clang, not the kernel)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from bpf_object import compile_object

from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.maps import BtfCodec
from ebpfwire.kernel.objfile import ObjectSpec, read_spec

# struct shapes: u32 low:3, high:5; _Bool flag (byte 1); union {u32 word; u8 bytes[4]};
# float ratio; s64 big (at 16)
SHAPES = struct.Struct("<BB2xIf4xq")


@pytest.fixture(scope="module")
def obj(tmp_path_factory: pytest.TempPathFactory) -> ObjectSpec:
    try:
        return read_spec(compile_object("ringbuf_test", Path(tmp_path_factory.mktemp("bpf"))))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def codec(obj: ObjectSpec, map_name: str, what: str = "value") -> BtfCodec:
    spec = obj.maps[map_name]
    return BtfCodec(obj.btf, spec.value_type_id if what == "value" else spec.key_type_id)


def test_bitfields_bool_anonymous_union_float(obj):
    c = codec(obj, "shaped")
    raw = SHAPES.pack(5 | 17 << 3, 1, 0x01020304, 0.5, -2)
    value = {"low": 5, "high": 17, "flag": True, "word": 0x01020304, "bytes": [4, 3, 2, 1],
             "ratio": 0.5, "big": -2}
    assert c.size == SHAPES.size
    assert c.decode(raw) == value
    assert c.encode({k: v for k, v in value.items() if k != "bytes"}) == raw
    assert c.encode({"bytes": [4, 3, 2, 1]}) == SHAPES.pack(0, 0, 0x01020304, 0.0, 0)
    assert c.encode({"high": 31}) == SHAPES.pack(31 << 3, 0, 0, 0.0, 0)  # low bits untouched
    assert c.encode(raw) == raw  # bytes of the right size pass through


def test_type_ids_follow_the_declarations(obj):
    assert obj.btf.type(obj.btf.resolve(obj.maps["typed"].value_type_id)).name == "typed_value"
    assert obj.btf.type(obj.btf.resolve(obj.maps["typed"].key_type_id)).name == "point"
    assert obj.maps["ring"].key_type_id == obj.maps["ring"].value_type_id == 0


def test_encoding_errors_say_where_and_what(obj):
    c = codec(obj, "typed")
    with pytest.raises(LoaderError, match=r"^v: expected a dict, found int$"):
        c.encode(3, "v")
    with pytest.raises(LoaderError, match=r"^v.where: expected a dict, found list$"):
        c.encode({"where": [1, 2]}, "v")
    with pytest.raises(LoaderError, match=r"^v.samples: expected a list of 3, found \[1\]$"):
        c.encode({"samples": [1]}, "v")
    with pytest.raises(LoaderError, match=r"^v.delta: expected an int in -128..127, found 200$"):
        c.encode({"delta": 200}, "v")
    with pytest.raises(LoaderError, match=r"^v: expected 32 bytes, found 3$"):
        c.encode(b"abc", "v")
