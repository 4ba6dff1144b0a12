"""The capture file: raw perf samples recorded on one machine, decoded anywhere later.

A capture is a small self-checking file header (what is needed to decode the samples:
context layout, architecture, host, boot time) followed by framed records. Every record
starts with a sync word and carries its length and a CRC32, so a reader can follow a file
that is still being written, report a damaged or cut record with its offset and carry on
with the next good one. docs/capture-format.md describes the format; the construct schemas
below are its specification, and the struct-based hot path is tested equal to them.
"""

from __future__ import annotations

import errno
import io
import os
import re
import socket
import stat
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, BinaryIO

from construct import (
    Bytes,
    Check,
    Checksum,
    Const,
    Default,
    GreedyBytes,
    GreedyRange,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64sl,
    Int64ul,
    PascalString,
    Prefixed,
    RawCopy,
    Rebuild,
    Struct,
    Switch,
    this,
)

from ebpfwire import machine
from ebpfwire.capture.snapshot import ContainerInfo, ContainerPayload, ProcessInfo, ProcessPayload
from ebpfwire.errors import EbpfwireError
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.errors import DecodeError

# --------------------------------------------------------------------------- the spec

MAGIC = b"\x89EBWCAP\n"
"""File magic; the high first byte and the newline catch text-mode mangling (as PNG does)."""

FORMAT_VERSION = 2
"""The version writers write. Bumped only for changes an older reader cannot skip over
(see docs, versioning); version 2 added the record header's own CRC32."""

READABLE_VERSIONS = (1, 2)

SYNC = b"\xf1\xe5\x7c\xa9"
"""First four bytes of every record: the word a reader scans for to resynchronise."""

RECORD_HEADER_SIZE = 20
RECORD_HEADER_SIZE_V1 = 16
MAX_PAYLOAD = 1 << 20
"""Largest payload a record may announce. A perf sample is under 64 KiB; the bound keeps a
corrupted length from making a reader buffer or wait for more than this."""

ARCHES = ("x86_64", "arm64")
WRITE_MODES = ("x", "replace", "a")
"""CaptureWriter modes: create a new file, replace whatever is at the path, append."""


class RecordType(IntEnum):
    """Record types; a reader skips (with a note) the types it does not know."""

    SAMPLE = 1
    LOST = 2
    PROCESS = 3  # version 2 only
    CONTAINER = 4  # version 2 only


HeaderInfo = Struct(
    "ncpus" / Int32ul,
    "boot_time_ns" / Int64sl,
    "start_time_ns" / Int64sl,
    "layout" / PascalString(Int8ul, "utf8"),
    "arch" / PascalString(Int8ul, "utf8"),
    "kernel_release" / PascalString(Int8ul, "utf8"),
    "hostname" / PascalString(Int8ul, "utf8"),
)
"""What a decoder needs to know about the recording; later versions may append fields
(the length prefix in FileHeader lets an older reader skip them)."""

FileHeader = Struct(
    "signed" / RawCopy(Struct(
        "magic" / Const(MAGIC),
        "version" / Int16ul,
        "info" / Prefixed(Int16ul, HeaderInfo),
    )),
    "crc32" / Checksum(Int32ul, zlib.crc32, this.signed.data),
)
"""The file header: magic, version, length-prefixed info, CRC32 of all bytes before it."""

_CrcCovered = Struct("length" / Int32ul, "type" / Int16ul, "reserved" / Int16ul)


def _record_crc(ctx: Any) -> int:
    """CRC32 over the record header after the CRC field, then the payload."""
    covered = _CrcCovered.build(
        {"length": len(ctx.payload), "type": ctx.type, "reserved": ctx.get("reserved") or 0}
    )
    return zlib.crc32(ctx.payload, zlib.crc32(covered))


RecordV1 = Struct(
    "sync" / Const(SYNC),
    "crc32" / Rebuild(Int32ul, _record_crc),
    "length" / Rebuild(Int32ul, lambda ctx: len(ctx.payload)),
    "type" / Int16ul,
    "reserved" / Default(Int16ul, 0),
    Check(this.length <= MAX_PAYLOAD),
    "payload" / Bytes(this.length),
    Check(lambda ctx: ctx.crc32 == _record_crc(ctx)),
)
"""One framed record of version 1. `reserved` is written 0 and ignored by readers."""

_HeadCovered = Struct("length" / Int32ul, "type" / Int16ul, "flags" / Int16ul)


def _head_crc(ctx: Any) -> int:
    """CRC32 of the record header's length, type and flags (version 2)."""
    return zlib.crc32(_HeadCovered.build(
        {"length": ctx.length, "type": ctx.type, "flags": ctx.flags}))


Record = Struct(
    "sync" / Const(SYNC),
    "length" / Rebuild(Int32ul, lambda ctx: len(ctx.payload)),
    "type" / Int16ul,
    "flags" / Default(Int16ul, 0),
    "head_crc" / Rebuild(Int32ul, _head_crc),
    Check(lambda ctx: ctx.head_crc == _head_crc(ctx)),
    Check(this.length <= MAX_PAYLOAD),
    "crc32" / Rebuild(Int32ul, lambda ctx: zlib.crc32(ctx.payload)),
    "payload" / Bytes(this.length),
    Check(lambda ctx: ctx.crc32 == zlib.crc32(ctx.payload)),
)
"""One framed record (version 2). The header checks itself before the payload is read, so a
damaged or forged header costs O(1), and a record with a good header is skipped whole when
its payload is damaged. `flags` is written 0 and ignored by readers."""

SamplePayload = Struct("cpu" / Int32ul, "data" / GreedyBytes)
"""A perf sample's raw bytes exactly as the ring delivered them, perf padding included."""

LostPayload = Struct("cpu" / Int32ul, "count" / Int64ul)
"""The kernel dropped `count` samples on `cpu` (PERF_RECORD_LOST)."""

RecordPayload = Switch(this.type, {
    RecordType.SAMPLE: SamplePayload,
    RecordType.LOST: LostPayload,
    RecordType.PROCESS: ProcessPayload,
    RecordType.CONTAINER: ContainerPayload,
})
"""The payload of a record, by type; parse with `RecordPayload.parse(payload, type=t)`."""

CaptureFileV1 = Struct("header" / FileHeader, "records" / GreedyRange(RecordV1))
"""A whole undamaged version-1 capture."""

CaptureFile = Struct("header" / FileHeader, "records" / GreedyRange(Record))
"""A whole undamaged capture (the reader adds resynchronisation on top of this)."""

# The hot path: the same layouts as struct formats (tests hold them equal to the schemas).
_RECORD_HEAD = struct.Struct("<4sIIHH")  # version 1
_SAMPLE_HEAD = struct.Struct("<IIIHHI")  # version 1 record header (sync as an integer) + cpu
_RECORD_HEAD_V2 = struct.Struct("<4sIHHII")
_SAMPLE_HEAD_V2 = struct.Struct("<IIHHIII")  # version 2 record header + cpu
_SCAN_HEAD_V2 = struct.Struct("<IIIIII")  # the same, type and flags read as one u32
_HEAD_COVERED = struct.Struct("<IHH")
_HEAD_CHECK = struct.Struct("<I4xI")  # length, then the header CRC (type and flags skipped)
_HEAD_CACHE_LIMIT = 1 << 14
_COVERED_SAMPLE = struct.Struct("<IHHI")  # length, type, reserved, cpu
_LOST_PAYLOAD = struct.Struct("<IQ")
_SYNC_CRC = struct.Struct("<4sI")
_HEADER_PREFIX = struct.Struct("<8sHH")
_U32 = struct.Struct("<I")
_SYNC_INT = _U32.unpack(SYNC)[0]
_RTYPE = struct.Struct("<H")  # a record's type, after its length (both versions)
_SAMPLE = int(RecordType.SAMPLE)
_LOST = int(RecordType.LOST)
_LOST_HEAD_CRC = zlib.crc32(_HEAD_COVERED.pack(_LOST_PAYLOAD.size, _LOST, 0))

# --------------------------------------------------------------------------- API types


class CaptureError(EbpfwireError, ValueError):
    """A file that is not a readable capture: says where, what was expected, what was found."""

    def __init__(self, offset: int, expected: str, found: str, path: str | None = None):
        self.offset = offset
        self.expected = expected
        self.found = found
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}offset {offset}: expected {expected}, found {found}")


def unreadable_capture(label: str, exc: OSError | CaptureError) -> str:
    """The one line for a capture that cannot be opened, as the command line and export
    print it."""
    if isinstance(exc, CaptureError):
        return (f"{label}: not a readable capture: offset {exc.offset}: expected "
                f"{exc.expected}, found {exc.found}")
    if isinstance(exc, FileNotFoundError):
        return f"{label}: no such file"
    if isinstance(exc, IsADirectoryError):
        return f"{label}: is a directory, expected a capture file"
    if isinstance(exc, PermissionError):
        return f"{label}: permission denied"
    return f"{label}: {exc.strerror or exc}"


@dataclass(frozen=True)
class CaptureDamage:
    """Bytes a reader had to skip: where they start and what was expected versus found."""

    offset: int
    message: str

    def __str__(self) -> str:
        return f"offset {self.offset}: {self.message}"


@dataclass(frozen=True)
class CaptureNote:
    """A well-framed record the reader skipped because it does not know its type."""

    offset: int
    message: str

    def __str__(self) -> str:
        return f"offset {self.offset}: {self.message}"


@dataclass(frozen=True)
class HostInfo:
    """The recording machine, kept in the header so a capture explains itself."""

    kernel_release: str
    hostname: str
    ncpus: int

    @classmethod
    def current(cls) -> HostInfo:
        """This machine; ncpus counts possible CPUs, the size of a per-CPU perf map."""
        return cls(os.uname().release, socket.gethostname(), machine.possible_cpus())


@dataclass(frozen=True)
class CaptureHeader:
    """Everything the file header records."""

    version: int
    layout: str
    arch: str
    kernel_release: str
    hostname: str
    ncpus: int
    boot_time_ns: int
    start_time_ns: int

    def wall_clock_ns(self, ts: int) -> int:
        """Wall-clock ns of a sample's monotonic `ts` (valid on the recording machine's boot)."""
        return self.boot_time_ns + ts


@dataclass(slots=True)
class SampleRecord:
    """A raw perf sample; `offset` is the record's position in the file."""

    cpu: int
    data: bytes
    offset: int


@dataclass(slots=True)
class LostRecord:
    """`count` samples the kernel dropped on `cpu`; `offset` is the record's file offset."""

    cpu: int
    count: int
    offset: int


@dataclass(slots=True)
class ProcessRecord:
    """A process the recorder described (a snapshot entry); `offset` is its file offset."""

    info: ProcessInfo
    offset: int


@dataclass(slots=True)
class ContainerRecord:
    """The container of a namespace pair, as the recorder resolved it."""

    info: ContainerInfo
    offset: int


CaptureRecord = SampleRecord | LostRecord | ProcessRecord | ContainerRecord
"""What a CaptureReader yields, in file order."""
_CONTEXT_RECORDS = (ProcessRecord, ContainerRecord)

_CONTEXT: dict[int, tuple[str, Any, Callable[[bytes], Any]]] = {
    RecordType.PROCESS: ("process", ProcessRecord, ProcessInfo.from_payload),
    RecordType.CONTAINER: ("container", ContainerRecord, ContainerInfo.from_payload),
}


# --------------------------------------------------------------------------- writer


class CaptureWriteError(EbpfwireError, OSError):
    """A write to the capture failed: the file holds `records_written` whole records.

    Raised once, by the write, flush or close that met the failure; the writer then writes
    nothing more. `errno` and `strerror` are the OS error's; `str()` is one line.
    """

    def __init__(self, errno_: int | None, strerror: str, path: str | None,
                 records_written: int, bytes_written: int):
        super().__init__(errno_, strerror)
        self.filename = path
        self.records_written = records_written
        self.bytes_written = bytes_written

    def __str__(self) -> str:
        where = f"{self.filename}: " if self.filename else ""
        return (f"{where}wrote {self.records_written} records ({self.bytes_written} bytes) "
                f"before: {self.strerror}")


class CaptureWriter:
    """Writes a capture to a new file (mode 0600) or a binary file object.

    The file is never opened through a symbolic link and nothing that existed is truncated
    or chmod'ed. `mode="x"` (default) creates the path and refuses an existing one
    (FileExistsError); `mode="replace"` writes a new file beside it and renames it over the
    path once the header is written (a link there is replaced, its target untouched);
    `mode="a"` appends to an existing capture after checking its header. The header is
    written by the constructor, so a follower can open the file at once.

    Records are whole when they reach the file: they are collected in a buffer and handed to
    the OS in one write per flush, the buffer never holding a partial record. The buffer is
    flushed when it exceeds `buffer_size` bytes, when `flush_interval` seconds have passed
    since the last flush (checked on each write), on `flush()` and on `close()`. With
    `buffer_size=0` every record is written at once by its own write. With `mode="a"` the
    header arguments are not used. Not thread-safe: share
    a writer between threads behind a lock.

    No byte is written twice: a short write or EINTR continues where it stopped. A failed
    write (ENOSPC, EIO...) raises CaptureWriteError once; a file this writer opened is first
    cut back to its last whole record, and nothing more is written (close() only closes).
    `records_written`, `samples_written` (the SAMPLE records among them) and `bytes_written`
    count what reached the OS, also after a failure.
    """

    def __init__(
        self,
        path_or_fileobj: str | os.PathLike[str] | BinaryIO,
        *,
        layout: str = "classic",
        arch: str = "x86_64",
        host: HostInfo | None = None,
        boot_time_ns: int | None = None,
        start_time_ns: int | None = None,
        buffer_size: int = 64 * 1024,
        flush_interval: float = 1.0,
        mode: str = "x",
        version: int = FORMAT_VERSION,
    ):
        if version not in READABLE_VERSIONS:
            raise ValueError(f"version: expected one of {READABLE_VERSIONS}, found {version!r}")
        if mode not in WRITE_MODES:
            raise ValueError(f"mode: expected one of {', '.join(map(repr, WRITE_MODES))}, "
                             f"found {mode!r}")
        self.buffer_size = buffer_size
        self.flush_interval = flush_interval
        self.records_written = 0
        self.samples_written = 0
        self.bytes_written = 0
        self._buf = bytearray()
        self._buf_records = 0  # records in _buf
        self._buf_samples = 0  # SAMPLE records in _buf
        self._sent = 0  # bytes at the start of _buf already handed to the OS
        self._counted = 0  # end of the whole records of _buf counted in records_written
        self._counted_records = 0
        self._counted_samples = 0
        self._head_crcs: dict[int, int] = {}  # version 2 SAMPLE header CRC by length
        self._cpu_crcs: dict[int, int] = {}  # CRC32 of the 4 cpu bytes, by cpu
        self._failed: CaptureWriteError | None = None
        self._last_flush = time.monotonic()
        self._closed = False
        self._fd: int | None = None
        self._file: BinaryIO | None = None
        self._start = 0  # file offset of _buf[0] (path-opened files)
        is_path = isinstance(path_or_fileobj, (str, os.PathLike))
        self.name = os.fspath(path_or_fileobj) if is_path else None
        if mode == "a":
            if is_path:
                self._fd, self.header, missing = _open_for_append(self.name)
                self._start = os.lseek(self._fd, 0, os.SEEK_END)
            else:
                path_or_fileobj.seek(0)
                self.header, missing = _existing_capture(path_or_fileobj)
                self._file = path_or_fileobj
                self._file.seek(0, os.SEEK_END)
            self._set_version(self.header.version)
            if missing:
                # The file ends inside a record whose header is good: complete it with zeros so
                # that readers skip it whole (its CRC fails) and find the records added here.
                self._buf += bytes(missing)
                self._counted = missing
                try:
                    self._drain()
                except BaseException:
                    if self._fd is not None:
                        os.close(self._fd)
                    raise
            return
        if arch not in ARCHES:
            raise ValueError(f"arch: expected one of {', '.join(ARCHES)}, found {arch!r}")
        host = host or HostInfo.current()
        self.header = CaptureHeader(
            version=version,
            layout=layout,
            arch=arch,
            kernel_release=host.kernel_release,
            hostname=host.hostname,
            ncpus=host.ncpus,
            boot_time_ns=machine.boot_time_ns() if boot_time_ns is None else boot_time_ns,
            start_time_ns=time.time_ns() if start_time_ns is None else start_time_ns,
        )
        self._set_version(version)
        encoded = _build_header(self.header)
        created: str | None = None  # the file this writer made, removed if the header fails
        if is_path:
            if mode == "x":
                created = self.name
                self._fd = _create_exclusive(self.name)
            else:
                self._fd, created = tempfile.mkstemp(
                    dir=os.path.dirname(self.name) or ".",
                    prefix=f".{os.path.basename(self.name)}.", suffix=".tmp")
            os.fchmod(self._fd, 0o600)  # a restrictive umask must not leave it 0400 either
        else:
            self._file = path_or_fileobj
        # The header goes out like a record that is not counted: a failure leaves no header.
        self._buf += encoded
        self._counted = len(encoded)
        try:
            self._drain()
            if mode == "replace" and created is not None:
                os.replace(created, self.name)  # a link at the target is replaced, not followed
        except BaseException:
            if self._fd is not None:
                if created is not None:
                    _remove_if_same(created, self._fd)
                os.close(self._fd)
            raise

    @classmethod
    def append(
        cls,
        path_or_fileobj: str | os.PathLike[str] | BinaryIO,
        *,
        buffer_size: int = 64 * 1024,
        flush_interval: float = 1.0,
    ) -> CaptureWriter:
        """Open an existing capture to add records; its header is read, never rewritten."""
        return cls(path_or_fileobj, mode="a", buffer_size=buffer_size,
                   flush_interval=flush_interval)

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise ValueError(f"{what}: the capture writer is closed")
        if self._failed is not None:
            raise self._failed

    def _set_version(self, version: int) -> None:
        self._v1 = version == 1
        self._head_size = RECORD_HEADER_SIZE_V1 if self._v1 else RECORD_HEADER_SIZE
        self._length_at = 8 if self._v1 else 4

    def write_sample(self, cpu: int, data: bytes) -> None:
        """Record one raw perf sample exactly as received (perf padding included)."""
        length = len(data) + 4
        if length > MAX_PAYLOAD:
            raise ValueError(
                f"sample: expected at most {MAX_PAYLOAD - 4} bytes, found {len(data)}"
            )
        cpu_crc = self._cpu_crcs.get(cpu)
        if cpu_crc is None:
            cpu_crc = self._cpu_crc(cpu)
        if self._closed or self._failed is not None:
            self._check_open("write_sample")
        buf = self._buf
        if self._v1:
            covered = _COVERED_SAMPLE.pack(length, _SAMPLE, 0, cpu)
            buf += _SYNC_CRC.pack(SYNC, zlib.crc32(data, zlib.crc32(covered)))
            buf += covered
        else:
            head = self._head_crcs.get(length)
            if head is None:
                head = zlib.crc32(_HEAD_COVERED.pack(length, _SAMPLE, 0))
                if len(self._head_crcs) < _HEAD_CACHE_LIMIT:
                    self._head_crcs[length] = head
            buf += _SAMPLE_HEAD_V2.pack(
                _SYNC_INT, length, _SAMPLE, 0, head, zlib.crc32(data, cpu_crc), cpu)
        buf += data
        self._buf_records += 1
        self._buf_samples += 1
        if len(buf) > self.buffer_size or (
            time.monotonic() - self._last_flush >= self.flush_interval
        ):
            self.flush()

    def _cpu_crc(self, cpu: int) -> int:
        try:
            crc = zlib.crc32(_U32.pack(cpu))
        except struct.error:
            raise ValueError(f"cpu: expected 0..{2**32 - 1}, found {cpu!r}") from None
        if len(self._cpu_crcs) < _HEAD_CACHE_LIMIT:
            self._cpu_crcs[cpu] = crc
        return crc

    def write_lost(self, cpu: int, count: int) -> None:
        """Record that the kernel dropped `count` samples on `cpu`."""
        try:
            payload = _LOST_PAYLOAD.pack(cpu, count)
        except struct.error:
            raise ValueError(
                f"lost record: expected cpu 0..{2**32 - 1} and count 0..{2**64 - 1}, "
                f"found cpu={cpu!r} count={count!r}"
            ) from None
        self._check_open("write_lost")
        self._write_record(_LOST, payload)

    def write_process(self, info: ProcessInfo) -> None:
        """Record what is known about a process (format version 2)."""
        self._write_context(RecordType.PROCESS, info.to_payload(), "write_process")

    def write_container(self, info: ContainerInfo) -> None:
        """Record the container of a (pid_ns, mnt_ns) pair (format version 2)."""
        self._write_context(RecordType.CONTAINER, info.to_payload(), "write_container")

    def _write_context(self, rtype: int, payload: bytes, what: str) -> None:
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"{what}: expected a payload of at most {MAX_PAYLOAD} bytes, "
                             f"found {len(payload)}")
        self._check_open(what)
        if self._v1:
            raise ValueError(f"{what}: context records need format version 2, this capture "
                             "is version 1")
        self._write_record(int(rtype), payload)

    def _write_record(self, rtype: int, payload: bytes) -> None:
        """Frame one record of any type (the general, slower path)."""
        buf = self._buf
        if self._v1:
            covered = _CrcCovered.build({"length": len(payload), "type": rtype, "reserved": 0})
            buf += _SYNC_CRC.pack(SYNC, zlib.crc32(payload, zlib.crc32(covered)))
            buf += covered
        else:
            head = zlib.crc32(_HEAD_COVERED.pack(len(payload), rtype, 0))
            buf += _RECORD_HEAD_V2.pack(SYNC, len(payload), rtype, 0, head,
                                        zlib.crc32(payload))
        buf += payload
        self._buf_records += 1
        if len(buf) > self.buffer_size or (
            time.monotonic() - self._last_flush >= self.flush_interval
        ):
            self.flush()

    def flush(self) -> None:
        """Hand every buffered record to the OS (whole records only; not an fsync)."""
        self._check_open("flush")
        if self._buf:
            self._drain()
        if self._file is not None and hasattr(self._file, "flush"):
            try:
                self._file.flush()
            except OSError as exc:
                self._fail(exc)
        self._last_flush = time.monotonic()

    def _drain(self) -> None:
        """Write _buf[_sent:], continuing after short writes and EINTR, so that after any
        exception _sent says exactly what reached the file and nothing is sent twice."""
        buf = self._buf
        total = len(buf)
        try:
            with memoryview(buf) as view:
                while self._sent < total:
                    try:
                        if self._fd is not None:
                            written = os.write(self._fd, view[self._sent:])
                        else:
                            assert self._file is not None
                            written = self._file.write(view[self._sent:])
                    except InterruptedError:
                        continue
                    if not written:  # None: a non-blocking stream that took nothing
                        raise BlockingIOError(errno.EAGAIN, "the file accepted no bytes")
                    self._sent += written
                    self.bytes_written += written
        except BaseException as exc:
            # A signal handler's exception may land between the write and the count: ask
            # the OS where the file ends (our own fd only).
            if self._fd is not None:
                try:
                    sent = os.lseek(self._fd, 0, os.SEEK_CUR) - self._start
                except OSError:
                    sent = self._sent
                if 0 <= sent <= total and sent != self._sent:
                    self.bytes_written += sent - self._sent
                    self._sent = sent
            self._count_sent()
            if isinstance(exc, OSError):
                self._fail(exc)
            raise
        # All of it: count without walking the records.
        self.records_written += self._buf_records - self._counted_records
        self.samples_written += self._buf_samples - self._counted_samples
        self._start += total
        self._buf = bytearray()
        self._buf_records = self._sent = self._counted = self._counted_records = 0
        self._buf_samples = self._counted_samples = 0

    def _count_sent(self) -> None:
        """Count the whole records among the bytes sent so far (only after an exception)."""
        buf, end, sent = self._buf, self._counted, self._sent
        while end + self._head_size <= sent:
            nxt = end + self._head_size + _U32.unpack_from(buf, end + self._length_at)[0]
            if nxt > sent:
                break
            if _RTYPE.unpack_from(buf, end + self._length_at + 4)[0] == _SAMPLE:
                self._counted_samples += 1
                self.samples_written += 1
            end = nxt
            self._counted_records += 1
            self.records_written += 1
        self._counted = end

    def _fail(self, exc: OSError) -> None:
        """Stop writing for good: cut a partial record off a file we opened, keep the error."""
        whole = self._counted if self._sent >= self._counted else 0
        if self._fd is not None and self._sent > whole:
            try:
                os.ftruncate(self._fd, self._start + whole)
                self.bytes_written -= self._sent - whole
                self._sent = whole
            except OSError:
                pass  # the reader will report the partial record as a cut record
        self._buf = bytearray()
        self._buf_records = self._sent = self._counted = self._counted_records = 0
        self._buf_samples = self._counted_samples = 0
        self._failed = CaptureWriteError(
            exc.errno, exc.strerror or str(exc), self.name,
            self.records_written, self.bytes_written)
        raise self._failed from None

    def close(self) -> None:
        """Flush and close; a file object passed in is flushed but left open. After a
        CaptureWriteError, close() writes nothing and raises nothing."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.flush()
        finally:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create_exclusive(path: str) -> int:
    """A new file, never one that existed and never through a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o600)
    except FileExistsError:
        raise FileExistsError(
            errno.EEXIST, "already exists; refusing to overwrite it", path) from None


def _open_for_append(path: str) -> tuple[int, CaptureHeader, int]:
    """Open an existing capture (never through a symbolic link); its header and how many
    bytes its last record lacks."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symbolic link; refusing to append through it",
                          path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "is not a regular file; can only append to a capture "
                          "file", path)
        with open(os.dup(fd), "rb", buffering=0) as f:
            header, missing = _existing_capture(f, path)
        return fd, header, missing
    except BaseException:
        os.close(fd)
        raise


def _existing_capture(fileobj: BinaryIO, name: str | None = None) -> tuple[CaptureHeader, int]:
    """Read a whole capture to append to it: its header, and the bytes its last record
    lacks when the data ends inside a version-2 record whose header is good (else 0)."""
    reader = CaptureReader(fileobj)
    reader.name = name or reader.name
    for _ in reader:
        pass
    return reader.header, reader.tail_missing


def _remove_if_same(path: str, fd: int) -> None:
    """Unlink path if it is still the file open at fd (not something put there since)."""
    try:
        mine, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
        if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
            os.unlink(path)
    except OSError:
        pass


def _build_header(header: CaptureHeader) -> bytes:
    info = {
        "ncpus": header.ncpus,
        "boot_time_ns": header.boot_time_ns,
        "start_time_ns": header.start_time_ns,
        "layout": header.layout,
        "arch": header.arch,
        "kernel_release": header.kernel_release,
        "hostname": header.hostname,
    }
    for name in ("layout", "arch", "kernel_release", "hostname"):
        if len(info[name].encode()) > 255:
            raise ValueError(f"{name}: expected at most 255 UTF-8 bytes, found {info[name]!r}")
    return FileHeader.build({"signed": {"value": {"version": header.version, "info": info}}})


def split_ranges(
    path: str | os.PathLike[str], parts: int | None = None, split_bytes: int | None = None
) -> list[tuple[int, int]]:
    """Byte ranges [start, end) covering a capture's records, for CaptureReader(path,
    start=..., end=...) in parallel: `parts` ranges of equal size, or ranges of
    `split_bytes` bytes (default: one part per CPU). Offsets are file offsets; the first
    range starts after the file header, the last ends at the file's current size."""
    if parts is not None and split_bytes is not None:
        raise ValueError("split_ranges: expected parts or split_bytes, found both")
    with CaptureReader(path) as reader:
        first = reader.start
    size = os.stat(path).st_size
    total = max(size - first, 0)
    if split_bytes is not None:
        if split_bytes < 1:
            raise ValueError(f"split_bytes: expected a positive size, found {split_bytes}")
        parts = max(1, -(-total // split_bytes))
    elif parts is None:
        parts = os.cpu_count() or 1
    elif parts < 1:
        raise ValueError(f"parts: expected a positive count, found {parts}")
    parts = max(1, min(parts, total))
    bounds = [first + total * i // parts for i in range(parts)] + [first + total]
    return list(zip(bounds, bounds[1:], strict=False))


# --------------------------------------------------------------------------- reader


def _scan_v1(
    buf: bytes,
    pos: int,
    n: int,
    base: int,
    out: list[SampleRecord | LostRecord],
    sample_record: type[SampleRecord] = SampleRecord,
    lost_record: type[LostRecord] = LostRecord,
) -> int:
    """The hot path (version 1): append the good SAMPLE and LOST records in buf[pos:n] to
    out and return where it stopped (the end, an incomplete record, or anything irregular)."""
    unpack = _SAMPLE_HEAD.unpack_from
    unpack_lost = _LOST_PAYLOAD.unpack_from
    crc32 = zlib.crc32
    append = out.append
    sync_word = _SYNC_INT
    max_payload = MAX_PAYLOAD
    sample = _SAMPLE
    lost = _LOST
    try:
        while True:
            sync, crc, length, rtype, _, cpu = unpack(buf, pos)  # struct.error near the end
            end = pos + 16 + length
            if sync != sync_word or end > n or length > max_payload:
                return pos
            region = buf[pos + 8:end]
            if crc32(region) != crc:
                return pos
            if rtype == sample and length >= 4:
                append(sample_record(cpu, region[12:], base + pos))
            elif rtype == lost and length == 12:
                append(lost_record(*unpack_lost(region, 8), base + pos))
            else:
                return pos
            pos = end
    except struct.error:
        return pos


_HEAD_CANDIDATE = re.compile(re.escape(SYNC) + rb"(?=(?s:..)[\x00-\x10]\x00)")
"""The sync word and a length that may be <= MAX_PAYLOAD: rejects most false candidates
(a run of sync words, say) at the speed of the regular expression engine."""


def _next_head_v2(buf: bytes, pos: int, n: int) -> int:
    """The first offset >= pos of a version-2 record header that checks itself (sync word,
    header CRC32, length bound), or -1. A resynchronising reader looks only there.

    Candidates are checked one by one; after many failures in a row (a hostile file packs
    one every 12 bytes) the rest are checked a window at a time with numpy when it is
    installed, so that a crafted file reads about as fast as a valid one."""
    unpack = _HEAD_CHECK.unpack_from
    crc32 = zlib.crc32
    failed = 0
    # The sync word cannot overlap itself, so non-overlapping matches are all the matches.
    for match in _HEAD_CANDIDATE.finditer(buf, pos, n):
        p = match.start()
        if p + 16 > n:
            return -1
        length, head = unpack(buf, p + 4)
        if length <= MAX_PAYLOAD and crc32(buf[p + 4:p + 12]) == head:
            return p
        failed += 1
        if failed == 16 and _numpy() is not None:
            return _next_head_v2_windows(buf, p + 1, n)
    return -1


_np: Any = None


def _numpy() -> Any:
    """numpy if it is installed (an optional speed-up of resynchronisation), else None."""
    global _np
    if _np is None:
        try:
            import numpy
        except ImportError:
            _np = False
        else:
            _np = numpy
    return _np or None


def _next_head_v2_windows(buf: bytes, pos: int, n: int) -> int:
    """_next_head_v2 vectorised over windows that double in size (so the work stays
    proportional to the distance to the header found)."""
    np = _numpy()
    table = _crc_table(np)
    data = np.frombuffer(buf, dtype=np.uint8, count=n)
    last = n - 16  # the last start with a whole header before n
    window = 4096
    while pos <= last:
        hi = min(last + 1, pos + window)
        seg = data[pos:hi + 3]
        k = hi - pos
        starts = np.flatnonzero((seg[:k] == SYNC[0]) & (seg[1:k + 1] == SYNC[1])
                                & (seg[2:k + 2] == SYNC[2]) & (seg[3:k + 3] == SYNC[3]))
        if starts.size:
            starts += pos
            fields = data[starts[:, None] + np.arange(4, 16)].astype(np.uint32)
            crc = np.full(starts.size, 0xFFFFFFFF, dtype=np.uint32)
            for j in range(8):
                crc = table[(crc ^ fields[:, j]) & 0xFF] ^ (crc >> 8)
            crc ^= np.uint32(0xFFFFFFFF)
            length = fields[:, 0] | fields[:, 1] << 8 | fields[:, 2] << 16 | fields[:, 3] << 24
            head = fields[:, 8] | fields[:, 9] << 8 | fields[:, 10] << 16 | fields[:, 11] << 24
            good = np.flatnonzero((crc == head) & (length <= MAX_PAYLOAD))
            if good.size:
                return int(starts[good[0]])
        pos = hi
        window *= 2
    return -1


_CRC_TABLE: Any = None


def _crc_table(np: Any) -> Any:
    """The byte table of zlib's CRC32 (reflected polynomial 0xEDB88320)."""
    global _CRC_TABLE
    if _CRC_TABLE is None:
        values = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
            values.append(c)
        _CRC_TABLE = np.array(values, dtype=np.uint32)
    return _CRC_TABLE


def _scan_v2(
    buf: bytes,
    pos: int,
    n: int,
    base: int,
    out: list[SampleRecord | LostRecord],
    head_crcs: dict[int, int],
    sample_record: type[SampleRecord] = SampleRecord,
    lost_record: type[LostRecord] = LostRecord,
) -> int:
    """The hot path (version 2): as _scan_v1. The header CRC of a SAMPLE depends only on
    its length, so it is looked up in head_crcs (computed once per length) before the
    payload's CRC is computed: a forged header costs O(1)."""
    unpack = _SCAN_HEAD_V2.unpack_from
    unpack_lost = _LOST_PAYLOAD.unpack_from
    crc32 = zlib.crc32
    append = out.append
    sync_word = _SYNC_INT
    sample = _SAMPLE
    lost = _LOST
    lost_head = _LOST_HEAD_CRC
    try:
        while True:
            # type and flags read as one u32: equal to SAMPLE means flags 0
            sync, length, kind, head, crc, cpu = unpack(buf, pos)  # struct.error near the end
            end = pos + 20 + length
            if sync != sync_word or end > n:
                return pos
            if kind == sample:
                try:
                    if head != head_crcs[length]:
                        return pos
                except KeyError:
                    if length < 4 or length > MAX_PAYLOAD:
                        return pos
                    expected = crc32(_HEAD_COVERED.pack(length, sample, 0))
                    if len(head_crcs) < _HEAD_CACHE_LIMIT:
                        head_crcs[length] = expected
                    if head != expected:
                        return pos
                payload = buf[pos + 20:end]
                if crc32(payload) != crc:
                    return pos
                append(sample_record(cpu, payload[4:], base + pos))
            elif kind == lost and head == lost_head and length == 12:
                payload = buf[pos + 20:end]
                if crc32(payload) != crc:
                    return pos
                append(lost_record(*unpack_lost(payload), base + pos))
            else:
                return pos
            pos = end
    except struct.error:
        return pos


class CaptureReader:
    """Reads a capture from a path or a binary file object, streaming, in constant memory.

    Iterating yields SampleRecord, LostRecord, ProcessRecord and ContainerRecord in file
    order. With `start`/`end` it yields the records whose first byte lies in [start, end)
    (file offsets; see split_ranges). Damaged stretches are skipped
    and recorded in `damage` (and passed to `on_damage`); unknown record types are skipped
    and recorded in `notes`. With `on_context` set, the context records (PROCESS, CONTAINER)
    are given to it, as their ``info``, when they are read, instead of being yielded: a
    process table fed so is ahead of the events, whatever reordering follows. With
    `follow=True` the reader waits for records still being
    written, polling every `poll_interval` seconds, until `close()` is called or no data has
    arrived for `idle_timeout` seconds (None: forever).
    """

    chunk_size = 1 << 16  # 64 KiB: small batches let record objects die young, less GC work

    def __init__(
        self,
        path_or_fileobj: str | os.PathLike[str] | BinaryIO,
        *,
        follow: bool = False,
        on_damage: Callable[[CaptureDamage], None] | None = None,
        on_context: Callable[[ProcessInfo | ContainerInfo], None] | None = None,
        poll_interval: float = 0.05,
        idle_timeout: float | None = None,
        start: int | None = None,
        end: int | None = None,
    ):
        if follow and end is not None:
            raise ValueError("follow: a reader of a byte range [start, end) does not follow")
        self.follow = follow
        self.on_damage = on_damage
        self.on_context = on_context
        self.poll_interval = poll_interval
        self.idle_timeout = idle_timeout
        self.damage: list[CaptureDamage] = []
        self.notes: list[CaptureNote] = []
        self._stop = threading.Event()
        if isinstance(path_or_fileobj, io.TextIOBase):
            raise TypeError("expected a path or a binary file object, found a text stream "
                            "(for standard input use sys.stdin.buffer)")
        self._owned = isinstance(path_or_fileobj, (str, os.PathLike))
        if self._owned:
            self.name: str | None = os.fspath(path_or_fileobj)
            self._file: Any = open(path_or_fileobj, "rb", buffering=0)
        else:
            self.name = getattr(path_or_fileobj, "name", None)
            if not isinstance(self.name, str):
                self.name = None
            self._file = path_or_fileobj
        self._read = getattr(self._file, "read1", None) or self._file.read
        self._pending = b""
        self._iterated = False
        self.context_counts = {"process": 0, "container": 0}
        """PROCESS and CONTAINER records read so far, malformed ones included: what a
        capture's context is, known without an extra pass."""
        self.tail_missing = 0
        """After reading: the bytes the last record lacks when the data ends inside a
        version-2 record whose header is good (what an appending writer completes)."""
        try:
            self.header = self._read_header()
            self.start = max(start or 0, self._data_start)
            self.end = end
            if self.start > self._data_start:
                self._skip_to(self.start)
        except BaseException:
            self.close()
            raise

    # -- input

    def _wait_for_data(self, started_waiting: float) -> bool:
        """In follow mode, sleep a poll interval; False once following should end."""
        if not self.follow or self._stop.is_set():
            return False
        if self.idle_timeout is not None:
            if time.monotonic() - started_waiting >= self.idle_timeout:
                return False
        self._stop.wait(self.poll_interval)
        return not self._stop.is_set()

    def _read_chunk(self) -> bytes:
        """The next bytes of input, waiting for them when following; b"" at the end."""
        waiting_since = time.monotonic()
        while True:
            if self._stop.is_set():
                return b""
            try:
                chunk = self._read(self.chunk_size)
            except ValueError:  # closed by close() from another thread while following
                if self._stop.is_set():
                    return b""
                raise
            if chunk:
                return bytes(chunk)
            if not self._wait_for_data(waiting_since):
                return b""

    def _read_exact(self, n: int) -> bytes:
        while len(self._pending) < n:
            chunk = self._read_chunk()
            if not chunk:
                break
            self._pending += chunk
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def _skip_to(self, offset: int) -> None:
        """Position the input at file offset `offset` (seek, or read and drop on a pipe)."""
        have = self._data_start + len(self._pending)
        if offset <= have:
            self._pending = self._pending[offset - self._data_start:]
            return
        self._pending = b""
        if getattr(self._file, "seekable", lambda: False)():
            self._file.seek(offset)
            return
        while have < offset:
            chunk = self._read_chunk()
            if not chunk:
                return
            if have + len(chunk) > offset:
                self._pending = chunk[offset - have:]
            have += len(chunk)

    # -- header

    def _error(self, offset: int, expected: str, found: str) -> CaptureError:
        return CaptureError(offset, expected, found, self.name)

    def _read_header(self) -> CaptureHeader:
        prefix = self._read_exact(_HEADER_PREFIX.size)
        if prefix[: len(MAGIC)] != MAGIC[: len(prefix)] or not prefix:
            found = "an empty file" if not prefix else f"{prefix[:len(MAGIC)]!r}"
            raise self._error(0, f"the capture magic {MAGIC!r} (is this a capture?)", found)
        if len(prefix) < _HEADER_PREFIX.size:
            raise self._error(
                len(prefix), f"a {_HEADER_PREFIX.size}-byte header prefix",
                f"the end of the data after {len(prefix)} bytes",
            )
        _, version, info_len = _HEADER_PREFIX.unpack(prefix)
        if version not in READABLE_VERSIONS:
            raise self._error(
                len(MAGIC), "format version 1 or 2",
                f"version {version} (written by a different ebpfwire release?)",
            )
        rest = self._read_exact(info_len + 4)
        end = _HEADER_PREFIX.size + info_len + 4
        if len(rest) < info_len + 4:
            raise self._error(
                _HEADER_PREFIX.size + len(rest), f"a {end}-byte file header",
                f"the end of the data after {_HEADER_PREFIX.size + len(rest)} bytes",
            )
        stored = _U32.unpack_from(rest, info_len)[0]
        computed = zlib.crc32(rest[:info_len], zlib.crc32(prefix))
        if stored != computed:
            raise self._error(
                end - 4, f"header CRC32 {computed:#010x} (computed over bytes 0..{end - 4})",
                f"{stored:#010x}: the file header is damaged",
            )
        try:
            info = HeaderInfo.parse(rest[:info_len])
        except Exception as exc:  # construct raises many kinds; all mean a bad header
            raise self._error(
                _HEADER_PREFIX.size, "a valid header info block", f"{exc}"
            ) from None
        self._data_start = end
        return CaptureHeader(
            version=version,
            layout=info.layout,
            arch=info.arch,
            kernel_release=info.kernel_release,
            hostname=info.hostname,
            ncpus=info.ncpus,
            boot_time_ns=info.boot_time_ns,
            start_time_ns=info.start_time_ns,
        )

    # -- records

    def _report(self, offset: int, message: str) -> None:
        damage = CaptureDamage(offset, message)
        self.damage.append(damage)
        if self.on_damage is not None:
            self.on_damage(damage)

    def __iter__(self) -> Iterator[CaptureRecord]:
        if self._iterated:
            raise RuntimeError("a CaptureReader reads its input once (it may be a pipe); "
                               "open a new reader to read the capture again")
        self._iterated = True
        return self._records()

    def _records(self) -> Iterator[CaptureRecord]:
        buf = self._pending
        self._pending = b""
        base = self.start  # file offset of buf[0]
        pos = 0
        eof = False
        bad_at: int | None = None  # file offset where the current damaged stretch began
        bad_why = ""
        # A range that starts after the data's start may start inside a record: it skips,
        # without a report, to its first good record (the ranges before own what precedes).
        synced = self.start == self._data_start
        stop = 2**64 if self.end is None else self.end
        v1 = self.header.version == 1
        judge = self._judge_v1 if v1 else self._judge_v2
        head_crcs: dict[int, int] = {}
        while True:
            n = len(buf)
            while True:
                batch: list[SampleRecord | LostRecord] = []
                start = pos
                if v1:
                    pos = _scan_v1(buf, pos, n, base, batch)
                else:
                    pos = _scan_v2(buf, pos, n, base, batch, head_crcs)
                if batch:
                    synced = True
                    if bad_at is not None:
                        self._report(bad_at, f"{bad_why}; skipped {base + start - bad_at} bytes"
                                             f" to the next good record at offset {base + start}")
                        bad_at = None
                    if batch[-1].offset >= stop:
                        yield from (record for record in batch if record.offset < stop)
                        return
                    yield from batch
                # pos is at the end of the data or at something the fast path does not take
                if pos == n:
                    break
                verdict, why, end = judge(buf, pos, n, eof)
                if verdict == "wait":
                    break
                if verdict == "good":
                    synced = True
                    if bad_at is not None:
                        self._report(bad_at, f"{bad_why}; skipped {base + pos - bad_at} "
                                             f"bytes to the next good record at offset "
                                             f"{base + pos}")
                        bad_at = None
                    if base + pos >= stop:
                        return
                    record = self._framed(base + pos, buf, pos, end, v1)
                    pos = end
                    if record is None:
                        continue
                    if self.on_context is not None and type(record) in _CONTEXT_RECORDS:
                        self.on_context(record.info)
                    else:
                        yield record
                    continue
                # The bytes at pos are not a good record: start (or extend) a damaged
                # stretch; resume after the record when its header is good (end >= 0),
                # else at the next sync word.
                if not synced:
                    if base + pos >= stop:
                        return
                elif bad_at is None:
                    bad_at, bad_why = base + pos, why
                if end >= 0:
                    pos = end
                    continue
                nxt = buf.find(SYNC, pos + 1) if v1 else _next_head_v2(buf, pos + 1, n)
                if nxt >= 0:
                    pos = nxt
                elif eof:
                    pos = n
                else:  # keep what may be the start of a header
                    pos = max(pos + 1, n - (len(SYNC) if v1 else RECORD_HEADER_SIZE) + 1)
                    break
            if eof:
                break
            chunk = self._read_chunk()
            if not chunk:
                eof = True
            buf = buf[pos:] + chunk
            base += pos
            pos = 0
        if bad_at is not None:
            self._report(bad_at, f"{bad_why}; skipped {base + len(buf) - bad_at} bytes "
                                 "to the end of the data")

    @staticmethod
    def _judge_v1(buf: bytes, pos: int, n: int, eof: bool) -> tuple[str, str, int]:
        """Is there a good version-1 record at pos? ("good", "", end), ("wait", "", -1) for
        more data, or ("bad", why, -1): look for the next sync word."""
        avail = n - pos
        if avail < RECORD_HEADER_SIZE_V1:
            if not eof:
                return "wait", "", -1
            return "bad", (f"expected a {RECORD_HEADER_SIZE_V1}-byte record header, found only "
                           f"{avail} bytes before the end of the data (cut record)"), -1
        sync, crc, length, _, _ = _RECORD_HEAD.unpack_from(buf, pos)
        end = pos + RECORD_HEADER_SIZE_V1 + length
        if sync != SYNC:
            return "bad", f"expected record sync word {SYNC.hex()}, found {sync.hex()}", -1
        if length > MAX_PAYLOAD:
            return "bad", f"expected a record length <= {MAX_PAYLOAD}, found {length}", -1
        if end > n:
            if not eof:
                return "wait", "", -1
            return "bad", (f"expected a {RECORD_HEADER_SIZE_V1 + length}-byte record, found "
                           f"only {avail} bytes before the end of the data (cut record)"), -1
        computed = zlib.crc32(buf[pos + 8:end])
        if computed != crc:
            return "bad", (f"expected record CRC32 {crc:#010x}, found {computed:#010x} "
                           f"over its {length}-byte payload and header"), -1
        return "good", "", end

    def _judge_v2(self, buf: bytes, pos: int, n: int, eof: bool) -> tuple[str, str, int]:
        """As _judge_v1 for version 2; a "bad" verdict with end >= 0 means the header is
        good and the reader resumes at end (the record's extent is trusted)."""
        avail = n - pos
        if avail < RECORD_HEADER_SIZE:
            if not eof:
                return "wait", "", -1
            return "bad", (f"expected a {RECORD_HEADER_SIZE}-byte record header, found only "
                           f"{avail} bytes before the end of the data (cut record)"), -1
        sync, length, rtype, flags, head, crc = _RECORD_HEAD_V2.unpack_from(buf, pos)
        if sync != SYNC:
            return "bad", f"expected record sync word {SYNC.hex()}, found {sync.hex()}", -1
        computed = zlib.crc32(buf[pos + 4:pos + 12])
        if computed != head:
            return "bad", (f"expected record header CRC32 {head:#010x}, found {computed:#010x} "
                           f"over its length, type and flags"), -1
        if length > MAX_PAYLOAD:
            return "bad", f"expected a record length <= {MAX_PAYLOAD}, found {length}", -1
        end = pos + RECORD_HEADER_SIZE + length
        if end > n:
            if not eof:
                return "wait", "", -1
            self.tail_missing = end - n
            return "bad", (f"expected a {RECORD_HEADER_SIZE + length}-byte record, found "
                           f"only {avail} bytes before the end of the data (cut record)"), n
        computed = zlib.crc32(buf[pos + RECORD_HEADER_SIZE:end])
        if computed != crc:
            return "bad", (f"expected payload CRC32 {crc:#010x}, found {computed:#010x} over "
                           f"its {length} bytes (record skipped whole: its header is good)"), end
        return "good", "", end

    def _framed(self, offset: int, buf: bytes, pos: int, end: int, v1: bool) -> Any:
        """A good record the fast path did not take: a record, or None after a note or a
        damage report."""
        if v1:
            _, _, length, rtype, _ = _RECORD_HEAD.unpack_from(buf, pos)
            payload = buf[pos + RECORD_HEADER_SIZE_V1:end]
        else:
            _, length, rtype, _, _, _ = _RECORD_HEAD_V2.unpack_from(buf, pos)
            payload = buf[pos + RECORD_HEADER_SIZE:end]
        if rtype == _SAMPLE and length >= 4:
            return SampleRecord(_U32.unpack_from(payload)[0], payload[4:], offset)
        if rtype == _LOST and length == 12:
            return LostRecord(*_LOST_PAYLOAD.unpack(payload), offset)
        if not v1 and rtype in _CONTEXT:
            name, kind, parse = _CONTEXT[rtype]
            self.context_counts[name] += 1
            try:
                return kind(parse(payload), offset)
            except ValueError as exc:
                self._report(offset, f"expected a {RecordType(rtype).name} payload, found "
                                     f"{length} bytes that do not parse ({exc}); record skipped")
                return None
        if rtype in (_SAMPLE, _LOST):
            want = "at least 4" if rtype == _SAMPLE else "12"
            self._report(offset, f"expected a {RecordType(rtype).name} payload of {want} "
                                 f"bytes, found {length}; record skipped")
        else:
            self.notes.append(CaptureNote(offset, (
                f"skipped a record of unknown type {rtype} ({length} bytes of payload); "
                "written by a newer ebpfwire?")))
        return None

    def events(
        self, strict: bool = True, layout: str | None = None, arch: str | None = None
    ) -> Iterator[tuple[CaptureRecord, Any]]:
        """Decode each SAMPLE: yields (record, event) or (record, DecodeError); a bad sample
        does not stop the others. LOST, PROCESS and CONTAINER records come through as
        (record, None) where they are in the file. layout and arch default to the header's."""

        layout = layout or self.header.layout
        arch = arch or self.header.arch
        for record in self:
            if type(record) is not SampleRecord:
                yield record, None
                continue
            try:
                yield record, decode(record.data, layout=layout, arch=arch, strict=strict)
            except DecodeError as error:
                yield record, error

    def close(self) -> None:
        """Stop following and close the file if this reader opened it."""
        self._stop.set()
        if self._owned:
            self._file.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
