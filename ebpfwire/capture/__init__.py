"""The capture file: raw perf samples recorded on one machine, decoded anywhere later.

One module per job: ``format`` (the specification and the values exchanged), ``writer``,
``scan`` (the reader's hot path), ``reader`` and ``stream`` (one capture read as every
command reads it, through the one reorder window of ``ebpfwire.wire.order``);
``snapshot`` holds the context records' payloads. The names below are the package's
public ones (docs/capture-format.md); the rest are in their modules.
"""

from ebpfwire.capture.format import (
    ARCHES,
    FORMAT_VERSION,
    MAGIC,
    MAX_PAYLOAD,
    RECORD_HEADER_SIZE,
    SYNC,
    TYPED_LAYOUT,
    CaptureDamage,
    CaptureError,
    CaptureFile,
    CaptureFileV1,
    CaptureHeader,
    ContainerRecord,
    EventPayload,
    EventRecord,
    FileHeader,
    HeaderInfo,
    HostInfo,
    LostPayload,
    LostRecord,
    ProcessRecord,
    Record,
    RecordPayload,
    RecordType,
    RecordV1,
    SamplePayload,
    SampleRecord,
    TypePayload,
    TypeRecord,
    resync_error,
    unreadable_capture,
)
from ebpfwire.capture.reader import CaptureReader, split_ranges
from ebpfwire.capture.stream import CaptureStream
from ebpfwire.capture.writer import CaptureWriteError, CaptureWriter

__all__ = [
    "ARCHES", "FORMAT_VERSION", "MAGIC", "MAX_PAYLOAD", "RECORD_HEADER_SIZE", "SYNC",
    "TYPED_LAYOUT",
    "CaptureDamage", "CaptureError", "CaptureFile", "CaptureFileV1", "CaptureHeader",
    "CaptureReader", "CaptureStream", "CaptureWriteError", "CaptureWriter", "ContainerRecord",
    "EventPayload", "EventRecord", "TypePayload", "TypeRecord",
    "FileHeader", "HeaderInfo", "HostInfo", "LostPayload", "LostRecord", "ProcessRecord",
    "Record", "RecordPayload", "RecordType", "RecordV1", "SamplePayload", "SampleRecord",
    "resync_error", "split_ranges", "unreadable_capture",
]
