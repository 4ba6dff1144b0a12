"""The capture file's format: record types, the construct schemas (the specification),
the struct layouts of the hot path derived from the same facts, and the values a reader
and a writer exchange (header, records, damage, errors).

A capture is a small self-checking file header (what is needed to decode the samples:
context layout, architecture, host, boot time) followed by framed records. Every record
starts with a sync word and carries its length and a CRC32, so a reader can follow a file
that is still being written, report a damaged or cut record with its offset and carry on
with the next good one. docs/capture-format.md describes the format; the construct schemas
below are its specification, and the struct-based hot path is tested equal to them.
"""

from __future__ import annotations

import os
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

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
from ebpfwire.wire.errors import DecodeError

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
TYPED_LAYOUT = "btf"
"""The header layout of a capture of typed events (`ebpfwire run -o`): TYPE and EVENT
records, decoded by the BTF they carry, not by the wire format."""
WRITE_MODES = ("x", "replace", "a")
"""CaptureWriter modes: create a new file, replace whatever is at the path, append."""


class RecordType(IntEnum):
    """Record types; a reader skips (with a note) the types it does not know."""

    SAMPLE = 1
    LOST = 2
    PROCESS = 3  # version 2 only
    CONTAINER = 4  # version 2 only
    TYPE = 5  # version 2 only: a BTF type of `ebpfwire run`'s events (layout "btf")
    EVENT = 6  # version 2 only: one record of such a type


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

TypePayload = Struct(
    "map" / Int16ul,
    "name" / PascalString(Int16ul, "utf8"),
    "type_id" / Int32ul,
    "btf" / GreedyBytes,
)
"""The type of map number `map` (named `name`, a ring buffer or perf array of the object
`ebpfwire run` ran): type `type_id` of the BTF blob `btf` (the object's, or one rebuilt from
its DWARF), so the events decode without the object."""

EventPayload = Struct("map" / Int16ul, "cpu" / Int32ul, "data" / GreedyBytes)
"""One record of map number `map` as its reader gave it (perf padding included); `cpu` is
0xFFFFFFFF for a ring buffer."""

RecordPayload = Switch(this.type, {
    RecordType.SAMPLE: SamplePayload,
    RecordType.LOST: LostPayload,
    RecordType.PROCESS: ProcessPayload,
    RecordType.CONTAINER: ContainerPayload,
    RecordType.TYPE: TypePayload,
    RecordType.EVENT: EventPayload,
})
"""The payload of a record, by type; parse with `RecordPayload.parse(payload, type=t)`."""

CaptureFileV1 = Struct("header" / FileHeader, "records" / GreedyRange(RecordV1))
"""A whole undamaged version-1 capture."""

CaptureFile = Struct("header" / FileHeader, "records" / GreedyRange(Record))
"""A whole undamaged capture (the reader adds resynchronisation on top of this)."""

# The hot path: the same layouts as struct formats (tests hold them equal to the schemas).
_EVENT_HEAD = struct.Struct("<HI")  # EventPayload's map and cpu
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
    """Bytes a reader skipped: where they start and why (what was expected versus found, or
    a well-framed record of a type it does not know: the reader's ``notes``)."""

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
    """A raw perf sample; `offset` is the record's position in the file. `resync` is None
    for a record reached through the chain of record headers; after damage, for a record
    found by scanning (its bytes may lie inside another record's payload), the file offset
    of that damage (see :func:`resync_error`)."""

    cpu: int
    data: bytes
    offset: int
    resync: int | None = field(default=None, compare=False)


def resync_error(record: SampleRecord | LostRecord) -> DecodeError:
    """What every output says of a resynchronised record (``record.resync`` set): it may be
    bytes a traced process wrote into another record's payload, so it never passes as clean.
    (Not part of a record's value: records compare equal however they were reached.)"""
    return DecodeError(
        "resynchronised", 0, "a record reached through the chain of record headers",
        f"the record at file offset {record.offset}, found by scanning after the damage at "
        f"file offset {record.resync} (it may lie inside another record's payload)")


@dataclass(slots=True)
class LostRecord:
    """`count` samples the kernel dropped on `cpu`; `offset` is the record's file offset;
    `resync` as for a SampleRecord."""

    cpu: int
    count: int
    offset: int
    resync: int | None = field(default=None, compare=False)


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


@dataclass(slots=True)
class TypeRecord:
    """The BTF type of the events of output map number `map` (see TypePayload)."""

    map: int
    name: str
    type_id: int
    btf: bytes
    offset: int


@dataclass(slots=True)
class EventRecord:
    """One typed event of output map number `map`; `resync` as for a SampleRecord (such
    an event is left out by the typed readers: it may lie inside another record)."""

    map: int
    cpu: int
    data: bytes
    offset: int
    resync: int | None = field(default=None, compare=False)


CaptureRecord = (SampleRecord | LostRecord | ProcessRecord | ContainerRecord | TypeRecord
                 | EventRecord)
"""What a CaptureReader yields, in file order."""
_CONTEXT_RECORDS = (ProcessRecord, ContainerRecord)

_CONTEXT: dict[int, tuple[str, Any, Callable[[bytes], Any]]] = {
    RecordType.PROCESS: ("process", ProcessRecord, ProcessInfo.from_payload),
    RecordType.CONTAINER: ("container", ContainerRecord, ContainerInfo.from_payload),
}
