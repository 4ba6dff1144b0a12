"""BPF maps from Python: lookup, update, delete, iteration and batch lookup on a map fd.

Keys and values are typed from the object's BTF where the map declares them
(``__type(key, T)`` / ``__type(value, T)``): integers and enums become ``int``, structs
and unions ``dict`` (member name -> value; anonymous members merged in), arrays
``list``, floats ``float``. A map without BTF types takes and gives raw ``bytes`` (an
``int`` is also accepted as a key or value and packed little-endian). A per-CPU map's
value is a list with one value per possible CPU: the kernel copies each CPU's value
padded to 8 bytes.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any

from ebpfwire import machine
from ebpfwire.kernel import syscalls
from ebpfwire.kernel.btf import Btf, BtfKind
from ebpfwire.kernel.errors import BtfError, LoaderError
from ebpfwire.kernel.syscalls import BpfSyscallError, MapInfo

if TYPE_CHECKING:
    from ebpfwire.kernel.objects import Object

BPF_ANY = 0  # update flags: create or replace
BPF_NOEXIST = 1  # create only
BPF_EXIST = 2  # replace only
BTF_INT_BOOL = 4
ENOTSUPP = 524  # the kernel's internal "operation not supported" (no name in errno)
BATCH_COUNT = 256  # entries asked for per BPF_MAP_LOOKUP_BATCH call
# maps that hold no keys and values to read from user space
NOT_KEY_VALUE = frozenset({syscalls.BPF_MAP_TYPE_PERF_EVENT_ARRAY, syscalls.BPF_MAP_TYPE_RINGBUF})
_FLOATS = {2: "<e", 4: "<f", 8: "<d"}


class BtfCodec:
    """Converts between the bytes of one BTF type and Python values."""

    def __init__(self, btf: Btf, type_id: int) -> None:
        self.btf = btf
        self.type_id = type_id
        self.size = btf.sizeof(type_id)

    def decode(self, data: bytes) -> Any:
        """The Python value of ``data`` (``self.size`` bytes)."""
        return self._decode(self.type_id, data, 0)

    def encode(self, value: Any, where: str = "value") -> bytes:
        """The bytes of ``value``; ``bytes`` of the type's size pass through unchanged."""
        if isinstance(value, bytes | bytearray):
            if len(value) != self.size:
                raise LoaderError(f"{where}: expected {self.size} bytes, found {len(value)}")
            return bytes(value)
        out = bytearray(self.size)
        self._encode(self.type_id, value, out, 0, where)
        return bytes(out)

    def _decode(self, tid: int, data: bytes, at: int) -> Any:
        btf = self.btf
        tid = btf.resolve(tid)
        kind = btf.kind(tid)
        rec = btf.type(tid) if tid else None
        if kind == BtfKind.INT:
            n = int.from_bytes(data[at : at + rec.size_or_type], "little",
                               signed=btf.signed(tid))
            return bool(n) if rec.detail >> 24 & BTF_INT_BOOL else n
        if kind in (BtfKind.ENUM, BtfKind.ENUM64):
            return int.from_bytes(data[at : at + rec.size_or_type], "little",
                                  signed=btf.signed(tid))
        if kind == BtfKind.PTR:
            return int.from_bytes(data[at : at + 8], "little")
        if kind == BtfKind.FLOAT:
            return struct.unpack_from(_FLOATS[rec.size_or_type], data, at)[0]
        if kind == BtfKind.ARRAY:
            step = btf.sizeof(rec.detail.type)
            return [self._decode(rec.detail.type, data, at + i * step)
                    for i in range(rec.detail.nelems)]
        if kind in (BtfKind.STRUCT, BtfKind.UNION):
            out: dict[str, Any] = {}
            for m in rec.detail:
                bits, width = _member_bits(rec.kind_flag, m.offset)
                if width:
                    word = int.from_bytes(data[at : at + rec.size_or_type], "little")
                    value = word >> bits & ((1 << width) - 1)
                    if btf.signed(m.type) and value >> (width - 1):
                        value -= 1 << width  # a signed bitfield, as C reads it
                    out[btf.string(m.name_off)] = value
                    continue
                value = self._decode(m.type, data, at + bits // 8)
                if m.name_off:
                    out[btf.string(m.name_off)] = value
                elif isinstance(value, dict):
                    out.update(value)
            return out
        raise BtfError(f"{btf.origin}: type {tid} ({kind.name}) cannot hold a map value")

    def _encode(self, tid: int, value: Any, out: bytearray, at: int, where: str) -> None:
        btf = self.btf
        tid = btf.resolve(tid)
        kind = btf.kind(tid)
        rec = btf.type(tid) if tid else None
        if kind in (BtfKind.INT, BtfKind.ENUM, BtfKind.ENUM64, BtfKind.PTR):
            size = 8 if kind == BtfKind.PTR else rec.size_or_type
            signed = btf.signed(tid)
            if not isinstance(value, int):
                raise LoaderError(f"{where}: expected an int, found {type(value).__name__}")
            try:
                out[at : at + size] = value.to_bytes(size, "little", signed=signed)
            except OverflowError:
                lo = -(1 << (8 * size - 1)) if signed else 0
                hi = (1 << (8 * size - signed)) - 1
                raise LoaderError(
                    f"{where}: expected an int in {lo}..{hi}, found {value}"
                ) from None
        elif kind == BtfKind.FLOAT:
            struct.pack_into(_FLOATS[rec.size_or_type], out, at, value)
        elif kind == BtfKind.ARRAY:
            nelems, step = rec.detail.nelems, btf.sizeof(rec.detail.type)
            if not isinstance(value, list | tuple) or len(value) != nelems:
                raise LoaderError(f"{where}: expected a list of {nelems}, found {value!r}")
            for i, item in enumerate(value):
                self._encode(rec.detail.type, item, out, at + i * step, f"{where}[{i}]")
        elif kind in (BtfKind.STRUCT, BtfKind.UNION):
            if not isinstance(value, Mapping):
                raise LoaderError(f"{where}: expected a dict, found {type(value).__name__}")
            unknown = set(value) - self._member_names(tid)
            if unknown:
                raise LoaderError(
                    f"{where}: no member {sorted(unknown)} in {rec.name or kind.name}"
                )
            for m in rec.detail:
                bits, width = _member_bits(rec.kind_flag, m.offset)
                name = btf.string(m.name_off) if m.name_off else ""
                if not name:  # an anonymous struct/union: its members are ours
                    inner = self._member_names(btf.resolve(m.type))
                    mine = {k: v for k, v in value.items() if k in inner}
                    if mine:
                        self._encode(m.type, mine, out, at + bits // 8, where)
                elif name not in value:
                    continue
                elif width:
                    size = rec.size_or_type
                    word = int.from_bytes(out[at : at + size], "little")
                    mask = ((1 << width) - 1) << bits
                    word = (word & ~mask) | ((value[name] << bits) & mask)
                    out[at : at + size] = word.to_bytes(size, "little")
                else:
                    self._encode(m.type, value[name], out, at + bits // 8, f"{where}.{name}")
        else:
            raise BtfError(f"{btf.origin}: type {tid} ({kind.name}) cannot hold a map value")

    def _member_names(self, tid: int) -> set[str]:
        names: set[str] = set()
        for m in self.btf.type(tid).detail:
            if m.name_off:
                names.add(self.btf.string(m.name_off))
            else:
                inner = self.btf.resolve(m.type)
                if self.btf.kind(inner) in (BtfKind.STRUCT, BtfKind.UNION):
                    names |= self._member_names(inner)
        return names


def _member_bits(kind_flag: int, offset: int) -> tuple[int, int]:
    """(bit offset, bitfield width or 0) of a struct member (BTF's two encodings)."""
    return (offset & 0xFFFFFF, offset >> 24) if kind_flag else (offset, 0)


class _RawCodec:
    """Bytes of a fixed size, with an int accepted and packed little-endian."""

    def __init__(self, size: int) -> None:
        self.size = size

    def decode(self, data: bytes) -> bytes:
        return data

    def encode(self, value: Any, where: str = "value") -> bytes:
        if isinstance(value, int):
            try:
                return value.to_bytes(self.size, "little")
            except OverflowError:
                raise LoaderError(f"{where}: {value} does not fit {self.size} bytes") from None
        if not isinstance(value, bytes | bytearray) or len(value) != self.size:
            found = f"{len(value)} bytes" if isinstance(value, bytes | bytearray) else repr(value)
            raise LoaderError(f"{where}: expected {self.size} bytes or an int, found {found}")
        return bytes(value)


class Map:
    """One BPF map behind ``fd`` (not owned: whoever created it closes it).

    ``type``, ``key_size``, ``value_size``, ``max_entries``, ``flags``, ``name`` and
    ``id`` are what the kernel says of the fd. Missing keys: ``lookup`` gives None,
    ``map[key]`` raises ``KeyError``.
    """

    def __init__(
        self,
        fd: int,
        info: MapInfo,
        btf: Btf | None = None,
        key_type_id: int = 0,
        value_type_id: int = 0,
        value_codec: Any = None,
    ) -> None:
        self.fd = fd
        self.info = info
        self.type = info.type
        self.key_size = info.key_size
        self.value_size = info.value_size
        self.max_entries = info.max_entries
        self.flags = info.map_flags
        self.name = info.name
        self.id = info.id
        self.percpu = info.type in syscalls.PERCPU_MAP_TYPES
        self.ncpus = machine.possible_cpus() if self.percpu else 1
        self._stride = (self.value_size + 7) & ~7 if self.percpu else self.value_size
        self._key = self._codec(btf, key_type_id, self.key_size, "key")
        self._value = value_codec or self._codec(btf, value_type_id, self.value_size, "value")
        self._batch = True  # until the kernel says it has no batch lookup for this map

    @classmethod
    def from_fd(
        cls,
        fd: int,
        *,
        btf: Btf | None = None,
        key_type_id: int = 0,
        value_type_id: int = 0,
        value_codec: Any = None,
    ) -> Map:
        """Wrap a map fd; keys/values typed by ``btf`` where the type ids are not 0, or
        values by ``value_codec`` (``encode(value, where)``, ``decode(data)``)."""
        return cls(fd, syscalls.map_info(fd), btf, key_type_id, value_type_id, value_codec)

    def _codec(self, btf: Btf | None, tid: int, size: int, what: str) -> BtfCodec | _RawCodec:
        if btf is None or not tid:
            return _RawCodec(size)
        codec = BtfCodec(btf, tid)
        if codec.size != size:
            raise LoaderError(
                f"map {self.name!r}: BTF {what} type {tid} is {codec.size} bytes, the map's "
                f"{what}_size is {size}"
            )
        return codec

    @property
    def value_bytes(self) -> int:
        """Bytes the kernel copies for one value (all CPUs' for a per-CPU map)."""
        return self._stride * self.ncpus

    def encode_key(self, key: Any) -> bytes:
        return self._key.encode(key, f"map {self.name!r} key")

    def decode_key(self, raw: bytes) -> Any:
        return self._key.decode(raw)

    def encode_value(self, value: Any) -> bytes:
        """One value's bytes; for a per-CPU map, a list of one value per CPU."""
        where = f"map {self.name!r} value"
        if not self.percpu:
            return self._value.encode(value, where)
        if not isinstance(value, list | tuple) or len(value) != self.ncpus:
            raise LoaderError(
                f"{where}: a per-CPU map takes a list of {self.ncpus} values (one per possible "
                f"CPU), found {value!r}"
            )
        pad = bytes(self._stride - self.value_size)
        return b"".join(self._value.encode(v, f"{where}[cpu {i}]") + pad
                        for i, v in enumerate(value))

    def decode_value(self, raw: bytes) -> Any:
        if not self.percpu:
            return self._value.decode(raw)
        size, stride = self.value_size, self._stride
        return [self._value.decode(raw[i * stride : i * stride + size])
                for i in range(self.ncpus)]

    def lookup(self, key: Any) -> Any | None:
        """The value of ``key``, or None if absent."""
        raw = syscalls.map_lookup(self.fd, self.encode_key(key), self.value_bytes)
        return None if raw is None else self.decode_value(raw)

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        """Set ``key`` to ``value`` (``BPF_ANY``, ``BPF_NOEXIST`` or ``BPF_EXIST``)."""
        syscalls.map_update(self.fd, self.encode_key(key), self.encode_value(value), flags)

    def push(self, value: Any) -> None:
        """Add ``value`` to a map without keys (bloom filter, queue, stack)."""
        syscalls.map_update(self.fd, b"", self.encode_value(value))

    def delete(self, key: Any) -> bool:
        """Remove ``key``; False if it was absent. Arrays refuse (EINVAL): they hold every key."""
        return syscalls.map_delete(self.fd, self.encode_key(key))

    def raw_keys(self) -> Iterator[bytes]:
        """Every key's bytes, in the kernel's order (``BPF_MAP_GET_NEXT_KEY``)."""
        key = syscalls.map_get_next_key(self.fd, None, self.key_size)
        while key is not None:
            yield key
            key = syscalls.map_get_next_key(self.fd, key, self.key_size)

    def keys(self) -> Iterator[Any]:
        return (self.decode_key(k) for k in self.raw_keys())

    def items(self) -> Iterator[tuple[Any, Any]]:
        """(key, value) pairs by walking the keys; a key deleted meanwhile is skipped."""
        for raw in self.raw_keys():
            value = syscalls.map_lookup(self.fd, raw, self.value_bytes)
            if value is not None:
                yield self.decode_key(raw), self.decode_value(value)

    def values(self) -> Iterator[Any]:
        return (v for _, v in self.items())

    def lookup_batch(self) -> list[tuple[Any, Any]]:
        """Every (key, value), with ``BPF_MAP_LOOKUP_BATCH`` where the kernel has it.

        Falls back to :meth:`items` where it answers EINVAL or ENOTSUPP for this map;
        ``self.batch_supported`` then says False.
        """
        if self._batch:
            try:
                return self._lookup_batch()
            except BpfSyscallError as exc:
                if exc.errno not in (errno.EINVAL, ENOTSUPP, errno.EOPNOTSUPP):
                    raise
                self._batch = False
        return list(self.items())

    @property
    def batch_supported(self) -> bool:
        """False once the kernel refused a batch lookup on this map."""
        return self._batch

    def _lookup_batch(self) -> list[tuple[Any, Any]]:
        out: list[tuple[Any, Any]] = []
        token: bytes | None = None
        count = BATCH_COUNT
        ks, vs = self.key_size, self.value_bytes
        while True:
            try:
                keys, values, got, token_next = syscalls.map_lookup_batch(
                    self.fd, token, ks, vs, count
                )
            except BpfSyscallError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                count *= 2  # one hash bucket holds more than ``count`` entries
                continue
            for i in range(got):
                out.append((self.decode_key(keys[i * ks : (i + 1) * ks]),
                            self.decode_value(values[i * vs : (i + 1) * vs])))
            if token_next is None:
                return out
            token = token_next

    def __getitem__(self, key: Any) -> Any:
        value = self.lookup(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value)

    def __delitem__(self, key: Any) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def __contains__(self, key: Any) -> bool:
        return self.lookup(key) is not None

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def __repr__(self) -> str:
        return (f"Map({self.name!r}, type={self.type}, key_size={self.key_size}, "
                f"value_size={self.value_size}, max_entries={self.max_entries}, fd={self.fd})")


def object_maps(obj: Object) -> dict[str, Map]:
    """A :class:`Map` per key/value map of a loaded object, typed from the object's BTF
    (:meth:`Object.map`); the PERF_EVENT_ARRAY and RINGBUF maps are left out (nothing to
    look up in them)."""
    return {name: obj.map(name) for name in obj.map_fds
            if obj.maps[name].type not in NOT_KEY_VALUE}


def pids_running(pids: Map) -> bool:
    """Whether a key of ``pids`` (u32 process ids: the pid filter's tree of the bundled
    programs) names a process still running; a zombie counts as gone. At most
    ``max_entries`` keys are read: the walk restarts when a key is deleted under it."""
    return any(machine.process_running(int.from_bytes(key, "little"))
               for key in islice(pids.raw_keys(), pids.max_entries))
