"""Thin ctypes wrappers for ``bpf(2)`` and ``perf_event_open(2)``.

Each wrapper packs the kernel's attribute union with ``struct``, calls ``syscall(2)``
through libc and turns a failure into :class:`BpfSyscallError`, which keeps the errno
so callers can say what is needed (EPERM => root or CAP_BPF, and so on).
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import fcntl
import os
import platform
import struct
from dataclasses import dataclass

from ebpfwire.kernel.errors import LoaderError

_NR = {
    "x86_64": {"bpf": 321, "perf_event_open": 298},
    "aarch64": {"bpf": 280, "perf_event_open": 241},
}

# bpf(2) commands
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_GET_NEXT_ID = 11
BPF_MAP_GET_NEXT_ID = 12
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_BTF_LOAD = 18
BPF_BTF_GET_FD_BY_ID = 19
BPF_MAP_FREEZE = 22
BPF_BTF_GET_NEXT_ID = 23
BPF_MAP_LOOKUP_BATCH = 24
BPF_LINK_CREATE = 28
BPF_ITER_CREATE = 33
# attach types for BPF_LINK_CREATE
BPF_TRACE_ITER = 28
BPF_PERF_EVENT = 41

BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PROG_ARRAY = 3
BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
BPF_MAP_TYPE_HASH_OF_MAPS = 13
BPF_MAP_TYPE_RINGBUF = 27
BPF_MAP_TYPE_BLOOM_FILTER = 30
MAP_IN_MAP_TYPES = frozenset({BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH_OF_MAPS})
PERCPU_MAP_TYPES = frozenset(
    {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}
)

# perf_event_open(2)
PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_ATTR_FLAG_FREQ = 1 << 10
PERF_ATTR_FLAG_WATERMARK = 1 << 14
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408

_ATTR_SIZE = 144  # larger than any attr we fill; the kernel wants the tail zeroed
_PERF_ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5
_OBJ_NAME_LEN = 16

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfSyscallError(LoaderError):
    """A bpf() or perf_event_open() call failed; ``errno`` says why.

    ``log`` holds the verifier log when a program load was retried with logging.
    """

    log: str = ""


def _nr(name: str) -> int:
    machine = platform.machine()
    try:
        return _NR[machine][name]
    except KeyError:
        raise LoaderError(f"{name}(2): unsupported architecture {machine!r}") from None


def _hint(err: int) -> str:
    if err == errno_mod.EPERM:
        return " (needs root, or CAP_BPF + CAP_PERFMON)"
    if err == errno_mod.ENOSYS:
        return " (this kernel has no bpf() syscall: CONFIG_BPF_SYSCALL is off)"
    return ""


def bpf(cmd: int, attr: ctypes.Array, what: str) -> int:
    """Call ``bpf(cmd, attr, sizeof attr)``; raise :class:`BpfSyscallError` naming ``what``."""
    ret = _libc.syscall(_nr("bpf"), cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfSyscallError(f"{what}: {os.strerror(err)}{_hint(err)}", err)
    return ret


def _attr(fmt: str, *values: object) -> ctypes.Array:
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def _addr(buf: ctypes.Array | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def _name(name: str) -> bytes:
    return name.encode()[: _OBJ_NAME_LEN - 1]


def map_create(
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    flags: int = 0,
    name: str = "",
    *,
    inner_map_fd: int = 0,
    btf_fd: int = 0,
    btf_key_type_id: int = 0,
    btf_value_type_id: int = 0,
    map_extra: int = 0,
) -> int:
    """``BPF_MAP_CREATE``; returns the map fd. BTF ids only count with a ``btf_fd``."""
    attr = _attr(
        "<IIIIIII16sIIIIIQ", map_type, key_size, value_size, max_entries, flags, inner_map_fd,
        0, _name(name), 0, btf_fd, btf_key_type_id, btf_value_type_id, 0, map_extra,
    )
    return bpf(BPF_MAP_CREATE, attr, f"creating map {name!r} (type {map_type})")


def map_freeze(map_fd: int) -> None:
    """``BPF_MAP_FREEZE``: no more writes from user space (what makes ``.rodata`` constant
    to the verifier)."""
    bpf(BPF_MAP_FREEZE, _attr("<I", map_fd), f"freezing map fd {map_fd}")


def btf_load(data: bytes, log_size: int = 0) -> int:
    """``BPF_BTF_LOAD``; the BTF fd. With ``log_size`` the kernel's log is attached to a
    failure (``exc.log``)."""
    blob = ctypes.create_string_buffer(data, len(data))
    log = ctypes.create_string_buffer(log_size) if log_size else None
    attr = _attr("<QQIII", _addr(blob), _addr(log), len(data), log_size, 1 if log_size else 0)
    try:
        return bpf(BPF_BTF_LOAD, attr, "loading the object's BTF")
    except BpfSyscallError as exc:
        exc.log = log.value.decode("utf-8", "replace") if log is not None else ""
        raise


@dataclass
class ProgLoadExtras:
    """The ``BPF_PROG_LOAD`` members past the name: attach target and the object's BTF.

    ``func_info`` holds (instruction, FUNC type id) pairs, ``line_info`` (instruction,
    file name offset, line offset, line << 10 | column) tuples, both in instruction order.
    """

    expected_attach_type: int = 0
    attach_btf_id: int = 0
    attach_btf_obj_fd: int = 0
    prog_btf_fd: int = 0
    func_info: list[tuple[int, int]] | None = None
    line_info: list[tuple[int, int, int, int]] | None = None
    kern_version: int = 0
    prog_flags: int = 0
    fd_array: list[int] | None = None  # module BTF fds of kfunc calls (insn.off indexes it)


def map_update(map_fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    """``BPF_MAP_UPDATE_ELEM``: set ``key`` to ``value`` (BPF_ANY by default). An empty
    key is passed as NULL, as maps without keys (queue, stack, bloom filter) want."""
    k = ctypes.create_string_buffer(key, len(key)) if key else None
    v = ctypes.create_string_buffer(value, len(value))
    attr = _attr("<IIQQQ", map_fd, 0, _addr(k), _addr(v), flags)
    bpf(BPF_MAP_UPDATE_ELEM, attr, f"updating map fd {map_fd}")


def _found(cmd: int, attr: ctypes.Array, what: str) -> bool:
    """``bpf()`` where ENOENT means "nothing there" (no such key, no next key or id, the last
    batch): False then."""
    try:
        bpf(cmd, attr, what)
    except BpfSyscallError as exc:
        if exc.errno == errno_mod.ENOENT:
            return False
        raise
    return True


def map_delete(map_fd: int, key: bytes) -> bool:
    """``BPF_MAP_DELETE_ELEM``: remove ``key``; False if it was absent."""
    k = ctypes.create_string_buffer(key, len(key))
    attr = _attr("<IIQ", map_fd, 0, _addr(k))
    return _found(BPF_MAP_DELETE_ELEM, attr, f"deleting from map {map_fd}")


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes | None:
    """``BPF_MAP_LOOKUP_ELEM``: the value of ``key``, or None if absent."""
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    attr = _attr("<IIQQQ", map_fd, 0, _addr(k), _addr(v), 0)
    return v.raw if _found(BPF_MAP_LOOKUP_ELEM, attr, f"looking up map fd {map_fd}") else None


def map_get_next_key(map_fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """``BPF_MAP_GET_NEXT_KEY``: the key after ``key`` (the first when None); None at the end."""
    k = ctypes.create_string_buffer(key, len(key)) if key is not None else None
    nxt = ctypes.create_string_buffer(key_size)
    attr = _attr("<IIQQ", map_fd, 0, _addr(k), _addr(nxt))
    found = _found(BPF_MAP_GET_NEXT_KEY, attr, f"walking the keys of map fd {map_fd}")
    return nxt.raw if found else None


def map_lookup_batch(
    map_fd: int, token: bytes | None, key_size: int, value_size: int, count: int
) -> tuple[bytes, bytes, int, bytes | None]:
    """``BPF_MAP_LOOKUP_BATCH``: up to ``count`` entries after ``token`` (None: from the start).

    Returns (keys, values, entries read, token for the next call or None when the map is
    exhausted). ``value_size`` is the size of one entry's value as the kernel copies it
    (all CPUs' values for a per-CPU map). Raises with errno EINVAL or ENOTSUPP (524) where
    the kernel has no batch operation for the map type, ENOSPC when ``count`` cannot hold
    one hash bucket.
    """
    token_size = max(key_size, 8)  # a bucket index for hashes, the last key for arrays
    in_batch = ctypes.create_string_buffer(token, token_size) if token is not None else None
    out_batch = ctypes.create_string_buffer(token_size)
    keys = ctypes.create_string_buffer(key_size * count)
    values = ctypes.create_string_buffer(value_size * count)
    attr = _attr(
        "<QQQQIIQQ", _addr(in_batch), _addr(out_batch), _addr(keys), _addr(values), count,
        map_fd, 0, 0,
    )
    # on the last batch (ENOENT) ``count`` still says how many entries it holds
    done = not _found(BPF_MAP_LOOKUP_BATCH, attr, f"batch lookup in map fd {map_fd}")
    got = struct.unpack_from("<I", attr, 32)[0]
    return (
        keys.raw[: key_size * got],
        values.raw[: value_size * got],
        got,
        None if done else out_batch.raw,
    )


@dataclass(frozen=True)
class MapInfo:
    """What ``BPF_OBJ_GET_INFO_BY_FD`` says about a map (``struct bpf_map_info``)."""

    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    name: str
    map_extra: int = 0


def map_info(map_fd: int) -> MapInfo:
    """Type, sizes, flags and name of the map behind ``map_fd``."""
    info = ctypes.create_string_buffer(96)
    bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("<IIQ", map_fd, len(info), _addr(info)),
        f"info of map fd {map_fd}")
    *nums, name = struct.unpack_from("<6I16s", info)
    return MapInfo(*nums, name.split(b"\0", 1)[0].decode("utf-8", "replace"),
                   struct.unpack_from("<Q", info, 80)[0])


def obj_pin(fd: int, path: str) -> None:
    """``BPF_OBJ_PIN``: ``fd``'s map or program stays at ``path`` on a bpffs after close."""
    buf = ctypes.create_string_buffer(os.fsencode(path))
    bpf(BPF_OBJ_PIN, _attr("<QI", _addr(buf), fd), f"pinning fd {fd} at {path}")


def obj_get(path: str) -> int:
    """``BPF_OBJ_GET``: a new fd of what is pinned at ``path``."""
    buf = ctypes.create_string_buffer(os.fsencode(path))
    return bpf(BPF_OBJ_GET, _attr("<QI", _addr(buf), 0), f"opening the pin {path}")


def prog_load(
    prog_type: int,
    insns: bytes,
    license: str,
    name: str,
    log_level: int = 0,
    log_size: int = 0,
    extras: ProgLoadExtras | None = None,
) -> tuple[int, str]:
    """``BPF_PROG_LOAD``; returns (prog fd, verifier log). Raises with the log attached."""
    x = extras or ProgLoadExtras()
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(log_size) if log_size else None
    funcs = b"".join(struct.pack("<II", *f) for f in x.func_info or ())
    lines = b"".join(struct.pack("<IIII", *li) for li in x.line_info or ())
    func_buf = ctypes.create_string_buffer(funcs, len(funcs)) if funcs else None
    line_buf = ctypes.create_string_buffer(lines, len(lines)) if lines else None
    fds = struct.pack(f"<{len(x.fd_array)}i", *x.fd_array) if x.fd_array else b""
    fd_buf = ctypes.create_string_buffer(fds, len(fds)) if fds else None
    attr = _attr(
        "<IIQQIIQII16sIIIIQIIQIIIIQ",
        prog_type,
        len(insns) // 8,
        _addr(code),
        _addr(lic),
        log_level,
        log_size,
        _addr(log),
        x.kern_version,
        x.prog_flags,
        _name(name),
        0,  # prog_ifindex
        x.expected_attach_type,
        x.prog_btf_fd,
        8 if funcs else 0,
        _addr(func_buf),
        len(funcs) // 8,
        16 if lines else 0,
        _addr(line_buf),
        len(lines) // 16,
        x.attach_btf_id,
        x.attach_btf_obj_fd,
        0,  # core_relo_cnt
        _addr(fd_buf),
    )
    try:
        fd = bpf(BPF_PROG_LOAD, attr, f"loading program {name!r}")
    except BpfSyscallError as exc:
        exc.log = log.value.decode("utf-8", "replace") if log is not None else ""
        raise
    return fd, log.value.decode("utf-8", "replace") if log is not None else ""


def raw_tracepoint_open(name: str | None, prog_fd: int) -> int:
    """``BPF_RAW_TRACEPOINT_OPEN``: attach ``prog_fd`` to raw tracepoint ``name``; None for a
    tracing program, which attaches where its load-time BTF id says."""
    tp = ctypes.create_string_buffer(name.encode()) if name is not None else None
    attr = _attr("<QI", _addr(tp), prog_fd)
    what = f"raw tracepoint {name!r}" if name is not None else f"tracing program fd {prog_fd}"
    return bpf(BPF_RAW_TRACEPOINT_OPEN, attr, f"attaching {what}")


def link_create(prog_fd: int, target_fd: int, attach_type: int, iter_info: bytes = b"",
                what: str = "") -> int:
    """``BPF_LINK_CREATE``: a BPF link of ``prog_fd`` to ``target_fd`` (a perf event fd for
    ``BPF_PERF_EVENT``, 0 for an iterator, whose ``iter_info`` is a
    ``union bpf_iter_link_info``); the link fd, whose close detaches."""
    info = ctypes.create_string_buffer(iter_info, len(iter_info)) if iter_info else None
    attr = _attr("<IIIIQI", prog_fd, target_fd, attach_type, 0, _addr(info), len(iter_info))
    return bpf(BPF_LINK_CREATE, attr, what or f"linking program fd {prog_fd}")


def iter_create(link_fd: int) -> int:
    """``BPF_ITER_CREATE``: a new read-only fd that runs the iterator of ``link_fd`` as it is
    read (one pass: EOF at its end)."""
    return bpf(BPF_ITER_CREATE, _attr("<II", link_fd, 0), f"opening iterator link {link_fd}")


def _next_id(cmd: int, start: int) -> int | None:
    attr = _attr("<II", start, 0)
    if not _found(cmd, attr, "listing BPF object ids"):
        return None
    return struct.unpack_from("<I", attr, 4)[0]


def _object_names(next_cmd: int, fd_cmd: int, info_size: int, name_at: int) -> dict[int, str]:
    names: dict[int, str] = {}
    obj_id = _next_id(next_cmd, 0)
    while obj_id is not None:
        try:
            fd = bpf(fd_cmd, _attr("<I", obj_id), f"opening BPF object id {obj_id}")
        except BpfSyscallError as exc:
            if exc.errno != errno_mod.ENOENT:  # freed between the two calls
                raise
        else:
            try:
                info = ctypes.create_string_buffer(info_size)
                bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("<IIQ", fd, info_size, _addr(info)), "info")
                raw = info.raw[name_at : name_at + _OBJ_NAME_LEN]
                names[obj_id] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            finally:
                os.close(fd)
        obj_id = _next_id(next_cmd, obj_id)
    return names


def map_ids() -> set[int]:
    """Every BPF map id in the kernel, without opening any (``BPF_MAP_GET_NEXT_ID`` only)."""
    ids = set()
    obj_id = _next_id(BPF_MAP_GET_NEXT_ID, 0)
    while obj_id is not None:
        ids.add(obj_id)
        obj_id = _next_id(BPF_MAP_GET_NEXT_ID, obj_id)
    return ids


def kernel_btf_objects() -> list[tuple[int, str]]:
    """(id, name) of each BTF object the kernel itself holds (vmlinux, then its modules'),
    in id order: the order libbpf searches modules in."""
    found = []
    obj_id = _next_id(BPF_BTF_GET_NEXT_ID, 0)
    while obj_id is not None:
        try:
            fd = btf_fd_by_id(obj_id)
        except BpfSyscallError as exc:
            if exc.errno != errno_mod.ENOENT:  # freed between the two calls
                raise
        else:
            try:
                name = ctypes.create_string_buffer(64)
                info = ctypes.create_string_buffer(32)
                struct.pack_into("<QI", info, 16, _addr(name), len(name))
                bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("<IIQ", fd, len(info), _addr(info)),
                    f"info of BTF id {obj_id}")
                if struct.unpack_from("<I", info, 28)[0]:  # kernel_btf
                    found.append((obj_id, name.value.decode("utf-8", "replace")))
            finally:
                os.close(fd)
        obj_id = _next_id(BPF_BTF_GET_NEXT_ID, obj_id)
    return found


def btf_fd_by_id(btf_id: int) -> int:
    """``BPF_BTF_GET_FD_BY_ID``: an fd of the BTF object ``btf_id``."""
    return bpf(BPF_BTF_GET_FD_BY_ID, _attr("<I", btf_id), f"opening BTF id {btf_id}")


def loaded_programs() -> dict[int, str]:
    """id -> name of every BPF program in the kernel (for leak checks)."""
    return _object_names(BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID, 256, 64)


def loaded_maps() -> dict[int, str]:
    """id -> name of every BPF map in the kernel (for leak checks)."""
    return _object_names(BPF_MAP_GET_NEXT_ID, BPF_MAP_GET_FD_BY_ID, 96, 24)


def object_id(fd: int, is_prog: bool) -> int:
    """The kernel id of a program or map fd."""
    info = ctypes.create_string_buffer(256 if is_prog else 96)
    bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("<IIQ", fd, len(info), _addr(info)), f"info of fd {fd}")
    return struct.unpack_from("<I", info, 4)[0]


def perf_event_open(
    type_: int,
    config: int,
    cpu: int,
    pid: int = -1,
    sample_type: int = 0,
    wakeup: int = 1,
    watermark: bool = False,
    *,
    period: int = 1,
    freq: bool = False,
    config1: int = 0,
    config2: int = 0,
) -> int:
    """``perf_event_open(attr, pid, cpu, -1, FD_CLOEXEC)``; returns the event fd.

    ``wakeup`` is ``wakeup_events`` (records) or, with ``watermark``, bytes. ``period`` is
    ``sample_period``, or ``sample_freq`` (Hz) with ``freq``; ``config1``/``config2`` are the
    PMU's own (a probe's function name or path address, and its offset).
    """
    flags = (PERF_ATTR_FLAG_WATERMARK if watermark else 0) | (PERF_ATTR_FLAG_FREQ if freq else 0)
    attr = ctypes.create_string_buffer(_PERF_ATTR_SIZE)
    struct.pack_into(
        "<IIQQQQQIIQQ", attr, 0, type_, _PERF_ATTR_SIZE, config, period, sample_type, 0, flags,
        wakeup, 0, config1, config2,
    )
    ret = _libc.syscall(_nr("perf_event_open"), attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    if ret < 0:
        err = ctypes.get_errno()
        what = f"perf_event_open(type={type_}, config={config}, cpu={cpu})"
        hint = " (needs root or CAP_PERFMON)" if err in (errno_mod.EPERM, errno_mod.EACCES) else ""
        raise BpfSyscallError(f"{what}: {os.strerror(err)}{hint}", err)
    return ret


def perf_ioctl(fd: int, request: int, arg: int = 0) -> None:
    """``ioctl`` on a perf event fd (enable, disable, set BPF program)."""
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        raise BpfSyscallError(
            f"ioctl(perf fd {fd}, 0x{request:x}): {exc.strerror}", exc.errno
        ) from exc
