"""The ring buffer reader against the kernel, with tests/bpf/ringbuf_test.bpf.c.

The test object writes one record per getppid() of our process: (seq, len, payload)
with len = seq % 61 and payload[i] = (seq + i) & 0xff, so every byte is known.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest
from bpf_object import LoadedObject, compile_object

from ebpfwire.kernel import syscalls
from ebpfwire.kernel.errors import LoaderError
from ebpfwire.kernel.maps import Map
from ebpfwire.kernel.perf import PAGE_SIZE, Lost, Sample
from ebpfwire.kernel.ringbuf import (
    BPF_RINGBUF_HDR_SZ,
    RINGBUF_CPU,
    RingBufReader,
)

pytestmark = pytest.mark.live
MAX_PAYLOAD = 60


def expected(seq: int, mode: int = 0) -> bytes:
    """The record the test program writes for call number ``seq``."""
    length = seq % (MAX_PAYLOAD + 1) if mode == 0 else 8
    return struct.pack("<II", seq, length) + bytes((seq + i) & 0xFF for i in range(length))


@pytest.fixture(scope="module")
def object_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return compile_object("ringbuf_test", tmp_path_factory.mktemp("bpf"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def loaded(object_path: Path, ring_size: int = PAGE_SIZE, mode: int = 0) -> LoadedObject:
    obj = LoadedObject(object_path, {"ring": ring_size})
    syscalls.map_update(obj.map_fds["config"], bytes(4), struct.pack("<II", os.getpid(), mode))
    return obj


def read_until(reader: RingBufReader, count: int) -> list:
    """Records until ``count`` samples + lost arrived (10 s at most)."""
    records: list = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        records.extend(reader.read_batch(timeout=0.5))
        if sum(1 if type(r) is Sample else r.count for r in records) >= count:
            break
    return records


def test_every_record_in_order_with_exact_bytes_across_wraps(object_path: Path):
    ring = PAGE_SIZE
    with loaded(object_path, ring) as obj, RingBufReader(obj.map_fds["ring"], ring) as reader:
        got: list = []
        for burst in range(100):  # 20 records (< 1700 bytes) between reads: no loss
            for _ in range(20):
                os.getppid()
            got.extend(read_until(reader, 20))
            assert len(got) == 20 * (burst + 1)
    assert got == [Sample(RINGBUF_CPU, expected(seq)) for seq in range(2000)]
    # the records really ran across the end of the data area (header sizes included)
    pos, wrapped = 0, 0
    for seq in range(2000):
        size = BPF_RINGBUF_HDR_SZ + len(expected(seq))
        wrapped += pos % ring + size > ring
        pos += (size + 7) & ~7
    assert pos > 20 * ring and wrapped >= 20


@pytest.mark.parametrize("drops_map", ["drops", "drops_by_cpu"])
def test_tiny_ring_received_plus_lost_is_exact(object_path: Path, drops_map: str):
    calls = 3000
    with loaded(object_path, PAGE_SIZE) as obj:
        reader = RingBufReader(obj.map_fds["ring"], PAGE_SIZE,
                               drops_map_fd=obj.map_fds[drops_map])
        with reader:
            for _ in range(calls):  # nothing read meanwhile: the 4 KiB ring overflows
                os.getppid()
            records = read_until(reader, calls)
            assert reader.read_batch(timeout=0) == []  # nothing more comes
            samples = [r for r in records if type(r) is Sample]
            lost = [r for r in records if type(r) is Lost]
            assert sum(r.count for r in lost) == reader.lost_total
            assert all(r.cpu in reader.lost for r in lost)
            drops = Map.from_fd(obj.map_fds[drops_map])
            in_map = drops[0] if drops.percpu else [v for _, v in drops.items()]
            assert sum(int.from_bytes(v, "little") for v in in_map) == reader.lost_total
    seqs = [struct.unpack_from("<I", s.data)[0] for s in samples]
    assert seqs == sorted(set(seqs))  # in order (a short record may fit where a long did not)
    assert samples == [Sample(RINGBUF_CPU, expected(seq)) for seq in seqs]
    assert 0 < len(samples) < calls
    assert len(samples) + reader.lost_total == calls


def test_discarded_records_are_skipped(object_path: Path):
    with loaded(object_path, mode=1) as obj:
        with RingBufReader(obj.map_fds["ring"], PAGE_SIZE,
                           drops_map_fd=obj.map_fds["drops"]) as reader:
            for _ in range(101):
                os.getppid()
            got = read_until(reader, 51)
            assert reader.read_batch(timeout=0) == []
    assert got == [Sample(RINGBUF_CPU, expected(seq, 1)) for seq in range(0, 101, 2)]
    assert reader.lost_total == 0


def test_read_poll_iterate_and_timeouts(object_path: Path):
    with loaded(object_path) as obj:
        reader = RingBufReader(obj.map_fds["ring"], PAGE_SIZE, drops_map_fd=obj.map_fds["drops"])
        with reader:
            assert reader.read_batch(timeout=0) == []
            assert reader.read(timeout=0.2) is None  # nothing written: the timeout ends it
            assert reader.poll(lambda rec: None, timeout=0.1) == 0
            for _ in range(3):
                os.getppid()
            assert reader.read(timeout=5) == Sample(RINGBUF_CPU, expected(0))
            seen: list = []
            assert reader.poll(seen.append, timeout=5) == 2  # the rest, already pending
            assert seen == [Sample(RINGBUF_CPU, expected(s)) for s in (1, 2)]
            os.getppid()
            assert next(iter(reader)) == Sample(RINGBUF_CPU, expected(3))
            assert reader.lost == dict.fromkeys(reader.lost, 0) and reader.lost
    assert reader.closed
    reader.close()  # idempotent
    with pytest.raises(LoaderError, match="closed"):
        reader.read_batch(0)


def _wait_gone(ids: set[int]) -> set[int]:
    deadline = time.monotonic() + 10
    while ids & set(syscalls.loaded_maps()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return ids & set(syscalls.loaded_maps())


def test_close_leaves_nothing_in_the_kernel(object_path: Path):
    fds_before = set(os.listdir("/proc/self/fd"))
    obj = loaded(object_path)
    _, map_ids = obj.ids()
    reader = RingBufReader(obj.map_fds["ring"], PAGE_SIZE, drops_map_fd=obj.map_fds["drops"])
    os.getppid()
    assert reader.read(timeout=5) == Sample(RINGBUF_CPU, expected(0))
    with open("/proc/self/maps") as f:
        assert "anon_inode:bpf-map" in f.read()  # our two mappings hold the map
    reader.close()
    obj.close()
    with open("/proc/self/maps") as f:
        assert "anon_inode:bpf-map" not in f.read()
    assert _wait_gone(map_ids) == set()  # a mapping left behind would keep the ring alive
    assert set(os.listdir("/proc/self/fd")) <= fds_before


def test_wrong_map_or_size_is_a_clear_error(object_path: Path):
    with loaded(object_path) as obj:
        with pytest.raises(LoaderError, match=r"expected a RINGBUF map .* of 8192 bytes, found "
                                              r"type 27 with max_entries 4096"):
            RingBufReader(obj.map_fds["ring"], 2 * PAGE_SIZE)
        with pytest.raises(LoaderError, match=r"'config'.*expected a RINGBUF map.*found type 2"):
            RingBufReader(obj.map_fds["config"], PAGE_SIZE)
        with pytest.raises(LoaderError, match=r"drops map 'percpu_hash': expected u64 values "
                                              r"\(value_size 8\), found value_size 4"):
            RingBufReader(obj.map_fds["ring"], PAGE_SIZE,
                          drops_map_fd=obj.map_fds["percpu_hash"])
        hash_fd = syscalls.map_create(syscalls.BPF_MAP_TYPE_HASH, 4, 8, 4, name="not_drops")
        try:
            with pytest.raises(LoaderError, match=r"drops map 'not_drops': expected a "
                                                  r"PERCPU_ARRAY .* found type 1"):
                RingBufReader(obj.map_fds["ring"], PAGE_SIZE, drops_map_fd=hash_fd)
        finally:
            os.close(hash_fd)
    with pytest.raises(ValueError, match="power of two"):
        RingBufReader(-1, 3 * PAGE_SIZE)
    with pytest.raises(LoaderError, match="info of map fd 987654: File descriptor"):
        RingBufReader(987_654, PAGE_SIZE)

