"""Maps of the object API: map-in-map with inner templates, static ``values`` of outer maps
and PROG_ARRAYs, tail calls, maps pinned by name, a bloom filter's ``map_extra``; nothing
of ours left in the kernel after close (PROG_ARRAYs included: see kernel/objmaps.py)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from test_objects import assert_gone, build, ours

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.objects import Object

BPFFS = Path("/sys/fs/bpf")


@pytest.fixture(scope="module")
def objdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("objects_maps")


@pytest.fixture
def maps_obj(objdir: Path) -> Path:
    return build(objdir, "objects_maps")


@pytest.fixture
def pin_dir():
    """A fresh directory on the bpffs, removed (with its pins) after the test."""
    if not any(line.split()[1:3] == [str(BPFFS), "bpf"]
               for line in Path("/proc/mounts").read_text().splitlines()):
        pytest.skip(f"no bpffs mounted on {BPFFS}: nothing to pin on")
    path = BPFFS / f"ebpfwire-test-{uuid.uuid4().hex[:12]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_inner_templates_and_static_values_are_read(maps_obj: Path):
    obj = Object.open(maps_obj)
    outer, jmp, bloom = obj.maps["outer"], obj.maps["jmp"], obj.maps["bloom"]
    assert (outer.type, outer.key_size, outer.value_size) == (12, 4, 4)
    inner = outer.inner
    assert (inner.name, inner.type, inner.key_size, inner.value_size, inner.max_entries) == (
        "outer.inner", 2, 4, 8, 2)
    assert outer.values == {0: "inner_a", 3: "inner_b"}
    assert obj.maps["outer_hash"].values == {1: "inner_c"}
    assert (jmp.type, jmp.inner, jmp.values) == (3, None, {0: "tail_a"})
    assert (bloom.type, bloom.key_size, bloom.value_size, bloom.map_extra) == (30, 0, 4, 3)
    assert obj.pin_path == BPFFS  # libbpf's default for LIBBPF_PIN_BY_NAME


def test_values_in_a_map_that_cannot_hold_them_is_refused(objdir: Path):
    path = build(objdir, "objects_maps", "BAD_VALUES")
    with pytest.raises(LoaderError, match=r"map 'bad' \(type 1\): 'values' of inner maps "
                                          r"needs a map of type \[12, 13\]"):
        Object.open(path)


@pytest.mark.live
def test_map_in_map_static_and_from_python(maps_obj: Path):
    with Object.open(maps_obj) as obj:
        obj.globals["target_tgid"] = os.getpid()
        obj.load()
        obj.attach(["use_outer"])
        outer, outer_hash = obj.map("outer"), obj.map("outer_hash")
        ids = {n: obj.map(n).id for n in ("inner_a", "inner_b", "inner_c")}
        assert dict(outer.items()) == {0: ids["inner_a"], 3: ids["inner_b"]}  # read: ids
        assert dict(outer_hash.items()) == {1: ids["inner_c"]}
        os.getppid()
        os.getppid()
        assert obj.map("inner_a")[0] == 2 * 1  # slot 0 adds 1
        assert obj.map("inner_b")[0] == 2 * 4  # slot 3 adds 4
        assert obj.map("inner_c")[1] == 2 * 10  # outer_hash key 1 adds 10
        outer[1] = "inner_c"  # by name
        outer[2] = obj.map("inner_a")  # a Map
        outer_hash[1] = obj.map_fds["inner_b"]  # an fd
        os.getppid()
        assert obj.map("inner_c")[0] == 2
        assert obj.map("inner_a")[0] == 2 + 1 + 3
        assert obj.map("inner_b")[1] == 10
        assert outer[2] == ids["inner_a"]
        with pytest.raises(LoaderError, match=r"no map 'nope'"):
            outer[0] = "nope"
        with pytest.raises(LoaderError, match=r"expected an fd, a name, a Map or a Program"):
            outer[0] = 1.5
        kept = ours(obj)
        assert len(kept[1]) == 9  # 7 maps, .rodata, .bss: the inner templates are closed
        assert not set(syscalls.loaded_maps().values()) & {"outer.inner", "outer_hash.inne"}
    assert_gone(kept)


@pytest.mark.live
def test_an_inner_template_overridden_before_load_reaches_the_kernel(maps_obj: Path):
    with Object.open(maps_obj) as obj:
        obj.maps["outer"].inner.max_entries = 8  # the inner maps keep 2 entries
        with pytest.raises(LoaderError, match=r"map 'outer': cannot set slot \[0\] to "
                                              r"'inner_a': Invalid argument"):
            obj.load()
        kept = ours(obj)
    assert_gone(kept)
    with Object.open(maps_obj) as obj:
        for name in ("inner_a", "inner_b", "inner_c"):
            obj.maps[name].max_entries = 8
        obj.maps["outer"].inner.max_entries = 8
        obj.maps["outer_hash"].inner.max_entries = 8
        obj.load(["use_outer"])
        assert syscalls.map_info(obj.map_fds["inner_a"]).max_entries == 8
        assert obj.map("outer")[0] == obj.map("inner_a").id
        kept = ours(obj)
    assert_gone(kept)


@pytest.mark.live
def test_tail_calls_static_and_from_python(maps_obj: Path):
    with Object.open(maps_obj) as obj:
        obj.globals["target_tgid"] = os.getpid()
        obj.load()
        obj.attach(["jump"])
        jmp = obj.map("jmp")
        prog_id = {n: syscalls.object_id(p.fd, True) for n, p in obj.programs.items()}
        assert dict(jmp.items()) == {0: prog_id["tail_a"]}  # filled after tail_a loaded
        os.getppid()  # slot 0, set statically
        assert (obj.globals["entry_runs"], obj.globals["tail_a_runs"],
                obj.globals["missed"]) == (1, 1, 0)
        obj.globals["slot"] = 1  # empty: the tail call falls through
        os.getppid()
        assert (obj.globals["tail_a_runs"], obj.globals["tail_b_runs"],
                obj.globals["missed"]) == (1, 0, 1)
        jmp[1] = obj.programs["tail_b"]  # a Program
        os.getppid()
        assert (obj.globals["tail_b_runs"], obj.globals["missed"]) == (1, 1)
        jmp[2] = obj.programs["tail_a"].fd  # an fd
        obj.globals["slot"] = 2
        os.getppid()
        assert obj.globals["tail_a_runs"] == 2
        jmp[3] = "tail_b"  # a name
        obj.globals["slot"] = 3
        os.getppid()
        assert obj.globals["tail_b_runs"] == 2
        assert dict(jmp.items()) == {0: prog_id["tail_a"], 1: prog_id["tail_b"],
                                     2: prog_id["tail_a"], 3: prog_id["tail_b"]}
        assert obj.globals["entry_runs"] == 5
        kept = ours(obj)
    assert_gone(kept)  # lists maps by id right after close: the leak's trigger


@pytest.mark.live
def test_a_static_slot_whose_program_is_not_loaded_fails_load(maps_obj: Path):
    with Object.open(maps_obj) as obj:
        obj.programs["tail_a"].autoload = False
        with pytest.raises(LoaderError, match=r"map 'jmp' slot \[0\] is set statically to "
                                              r"program 'tail_a', which is not loaded"):
            obj.load()
        with pytest.raises(LoaderError, match=r"program 'tail_a' is not loaded: load it first"):
            obj.map("jmp")[1] = "tail_a"
        kept = ours(obj)
    assert_gone(kept)


@pytest.mark.live
def test_bloom_filter_with_map_extra(maps_obj: Path):
    with Object.open(maps_obj) as obj:
        obj.globals["target_tgid"] = os.getpid()
        obj.load(["bloom_check"])
        obj.attach()
        bloom = obj.map("bloom")
        assert syscalls.map_info(bloom.fd).map_extra == 3  # nr_hashes reached the kernel
        bloom.push(7)
        bloom.push(42)
        obj.globals["probes"] = [7, 1000, 42, 5]
        os.getppid()
        assert obj.globals["bloom_hits"] == 0b0101  # 7 and 42 maybe there, 1000 and 5 not
        kept = ours(obj)
    assert_gone(kept)


def _pinning_object(objdir: Path, pin_dir: Path | None) -> Object:
    obj = Object.open(build(objdir, "objects_pinning"), pin_path=pin_dir)
    obj.globals["target_tgid"] = os.getpid()
    return obj


@pytest.mark.live
def test_two_loads_share_a_map_pinned_by_name(objdir: Path, pin_dir: Path):
    pin = pin_dir / "ew_pinned"
    with _pinning_object(objdir, pin_dir) as first, _pinning_object(objdir, pin_dir) as second:
        first.load()
        assert first.pins == {"ew_pinned": pin} and first.reused == set() and pin.exists()
        second.load()
        assert second.pins == {"ew_pinned": pin} and second.reused == {"ew_pinned"}
        shared_id = first.map("ew_pinned").id
        assert second.map("ew_pinned").id == shared_id
        assert second.map("local").id != first.map("local").id
        first.map("ew_pinned")[1] = 99
        assert second.map("ew_pinned")[1] == 99  # written through one, read through the other
        first.attach()
        second.attach()
        os.getppid()
        assert first.map("ew_pinned")[0] == second.map("ew_pinned")[0] == 2
        assert first.map("local")[0] == second.map("local")[0] == 1
        kept = ours(first), ours(second)
    assert pin.exists() and shared_id in syscalls.map_ids()  # close() does not unpin
    pin.unlink()
    for ids in kept:
        assert_gone(ids)


@pytest.mark.live
def test_an_incompatible_pin_is_refused_naming_the_property(objdir: Path, pin_dir: Path):
    with _pinning_object(objdir, pin_dir) as first:
        first.load()
        with _pinning_object(objdir, pin_dir) as other:
            other.maps["ew_pinned"].max_entries = 8
            with pytest.raises(LoaderError, match=rf"map 'ew_pinned': the map pinned at "
                                                  rf"{pin_dir}/ew_pinned cannot be reused: its "
                                                  r"max_entries is 4, this object's is 8"):
                other.load()
            kept = ours(other)
        assert_gone(kept)
        kept = ours(first)
    (pin_dir / "ew_pinned").unlink()
    assert_gone(kept)


@pytest.mark.live
def test_a_failed_load_removes_the_pins_it_made(objdir: Path, pin_dir: Path):
    with _pinning_object(objdir, pin_dir) as obj:
        obj.maps["local"].max_entries = 0  # created after ew_pinned, refused by the kernel
        with pytest.raises(LoaderError, match=r"creating map 'local' \(type 2\): Invalid"):
            obj.load()
        assert obj.pins == {} and not (pin_dir / "ew_pinned").exists()
        kept = ours(obj)
    assert_gone(kept)


@pytest.mark.live
def test_pinning_defaults_to_sys_fs_bpf(objdir: Path, pin_dir: Path):
    pin = BPFFS / "ew_pinned"
    if pin.exists():
        pytest.fail(f"{pin} exists already (left by an earlier run?): remove it")
    try:
        with _pinning_object(objdir, None) as obj:
            obj.load()
            assert obj.pins == {"ew_pinned": pin} and pin.exists()
            kept = ours(obj)
    finally:
        pin.unlink(missing_ok=True)
    assert_gone(kept)
