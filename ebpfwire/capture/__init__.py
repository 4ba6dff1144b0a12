"""The capture file: raw perf samples recorded on one machine, decoded anywhere later.

One module per job: ``format`` (the specification and the values exchanged), ``writer``,
``scan`` (the reader's hot path), ``reader`` and ``stream`` (one capture read as every
command reads it, through the one reorder window of ``ebpfwire.wire.order``);
``snapshot`` holds the context records' payloads. The names below are the package's
public ones (docs/capture-format.md), each loaded from its module on first use; the rest
are in their modules.
"""

from ebpfwire.lazy import lazy_names

_HOMES = {
    **dict.fromkeys((
        "ARCHES", "FORMAT_VERSION", "MAGIC", "MAX_PAYLOAD", "RECORD_HEADER_SIZE", "SYNC",
        "TYPED_LAYOUT", "CaptureDamage", "CaptureError", "CaptureFile", "CaptureFileV1",
        "CaptureHeader", "ContainerRecord", "EventPayload", "EventRecord", "FileHeader",
        "HeaderInfo", "HostInfo", "LostPayload", "LostRecord", "ProcessRecord", "Record",
        "RecordPayload", "RecordType", "RecordV1", "SamplePayload", "SampleRecord",
        "TypePayload", "TypeRecord", "resync_error", "unreadable_capture",
    ), "ebpfwire.capture.format"),
    **dict.fromkeys((
        "CaptureReader", "split_ranges",
    ), "ebpfwire.capture.reader"),
    **dict.fromkeys((
        "CaptureStream",
    ), "ebpfwire.capture.stream"),
    **dict.fromkeys((
        "CaptureWriteError", "CaptureWriter",
    ), "ebpfwire.capture.writer"),
}

__all__ = sorted(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
