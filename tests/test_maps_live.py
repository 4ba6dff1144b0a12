"""Maps from Python against the kernel: raw and BTF-typed, plain and per-CPU."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest
from bpf_object import LoadedObject, compile_object

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.maps import BPF_NOEXIST, Map, object_maps
from ebpfwire.kernel.syscalls import BpfSyscallError
from ebpfwire.machine import possible_cpus

pytestmark = pytest.mark.live
TYPED_LAYOUT = struct.Struct("<Qii3Hbxi4s")  # struct typed_value as clang lays it out


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    try:
        path = compile_object("ringbuf_test", tmp_path_factory.mktemp("bpf"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with LoadedObject(Path(path)) as obj:
        yield obj


@pytest.fixture
def new_map():
    fds: list[int] = []

    def make(map_type: int, key_size: int, value_size: int, max_entries: int, name: str) -> Map:
        fds.append(syscalls.map_create(map_type, key_size, value_size, max_entries, name=name))
        return Map.from_fd(fds[-1])

    yield make
    for fd in fds:
        os.close(fd)


def test_hash_lookup_update_delete_iterate_batch(new_map):
    m = new_map(syscalls.BPF_MAP_TYPE_HASH, 4, 8, 600, "t_hash")
    assert (m.type, m.key_size, m.value_size, m.max_entries, m.name) == (1, 4, 8, 600, "t_hash")
    assert m.id == syscalls.object_id(m.fd, False)
    assert m.lookup(1) is None and 1 not in m and list(m.keys()) == []
    with pytest.raises(KeyError):
        m[1]
    for k in range(500):  # more than one batch of 256
        m[k] = k * 1000
    assert m[7] == (7000).to_bytes(8, "little")  # no BTF: raw bytes
    with pytest.raises(BpfSyscallError) as exc:
        m.update(7, 1, BPF_NOEXIST)
    assert exc.value.errno == errno.EEXIST
    assert m.delete(7) is True and m.delete(7) is False
    with pytest.raises(KeyError):
        del m[7]
    expected = {k.to_bytes(4, "little"): (k * 1000).to_bytes(8, "little")
                for k in range(500) if k != 7}
    assert set(m.keys()) == set(expected)
    assert dict(m.items()) == expected
    batch = m.lookup_batch()
    assert m.batch_supported and len(batch) == len(expected) and dict(batch) == expected


def test_array_holds_every_key_and_refuses_delete(new_map):
    m = new_map(syscalls.BPF_MAP_TYPE_ARRAY, 4, 4, 5, "t_array")
    m[3] = b"abcd"
    assert list(m.items()) == [(i.to_bytes(4, "little"), b"abcd" if i == 3 else bytes(4))
                               for i in range(5)]
    assert m.lookup_batch() == list(m.items())
    with pytest.raises(BpfSyscallError) as exc:
        m.delete(3)
    assert exc.value.errno == errno.EINVAL
    assert m.lookup(5) is None  # past max_entries
    with pytest.raises(LoaderError, match=r"map 't_array' value: expected 4 bytes or an int, "
                                          r"found 3 bytes"):
        m[0] = b"abc"


def test_batch_falls_back_to_iteration_where_the_kernel_has_none(new_map):
    m = new_map(syscalls.BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 4, "t_prog_array")
    assert m.lookup_batch() == list(m.items()) == []  # empty slots are absent
    assert m.batch_supported is False


def test_percpu_values_one_per_possible_cpu(loaded):
    maps = object_maps(loaded)
    m = maps["percpu_hash"]
    ncpus = possible_cpus()
    assert m.percpu and m.ncpus == ncpus and m.value_bytes == 8 * ncpus  # u32 padded to 8
    values = [10 + cpu for cpu in range(ncpus)]
    m[5] = values
    assert m[5] == values and m.lookup_batch() == [(5, values)] and list(m.items()) == [(5, values)]
    with pytest.raises(LoaderError, match=rf"per-CPU map takes a list of {ncpus} values"):
        m[6] = 1
    del m[5]
    assert list(m.keys()) == []
    assert maps["drops"][0] == [0] * ncpus  # PERCPU_ARRAY of u64


def test_btf_typed_keys_and_values(loaded):
    maps = object_maps(loaded)
    assert set(maps) == set(loaded.map_fds) - {"ring"}  # the ring holds no keys
    typed = maps["typed"]
    value = {"count": 2**40, "where": {"x": -3, "y": 4}, "samples": [1, 2, 65535],
             "delta": -5, "colour": 2, "tag": list(b"hi\0\0")}
    typed[{"x": -1, "y": 2}] = value
    assert typed[{"x": -1, "y": 2}] == value
    assert typed.lookup_batch() == [({"x": -1, "y": 2}, value)]
    raw = Map.from_fd(typed.fd)  # the same map without BTF: the C layout
    assert raw[struct.pack("<ii", -1, 2)] == TYPED_LAYOUT.pack(2**40, -3, 4, 1, 2, 65535, -5, 2,
                                                              b"hi\0\0")
    typed[{"x": 0, "y": 0}] = {"count": 1}  # members left out are zero
    assert typed[{"x": 0, "y": 0}] == {**{k: 0 for k in value}, "count": 1,
                                       "where": {"x": 0, "y": 0}, "samples": [0, 0, 0],
                                       "tag": [0, 0, 0, 0]}
    with pytest.raises(LoaderError, match=r"map 'typed' value: no member \['colr'\] in "
                                          r"typed_value"):
        typed[{"x": 0, "y": 0}] = {"colr": 1}
    with pytest.raises(LoaderError, match=r"map 'typed' value.samples\[2\]: expected an int in "
                                          r"0..65535, found 65536"):
        typed[{"x": 0, "y": 0}] = {"samples": [0, 0, 65536]}
    with pytest.raises(LoaderError, match=r"map 'typed' key.x: expected an int, found str"):
        typed.lookup({"x": "1"})
    assert maps["config"][0] == {"tgid": 0, "mode": 0}
    assert maps["seq"][0] == 0  # __u64: an int


def test_btf_size_mismatch_is_refused(loaded):
    spec = loaded.maps["typed"]
    with pytest.raises(LoaderError, match=r"map 'seq': BTF value type \d+ is 32 bytes, the "
                                          r"map's value_size is 8"):
        Map.from_fd(loaded.map_fds["seq"], btf=loaded.spec.btf,
                    value_type_id=spec.value_type_id)
