"""Reading captures: CaptureReader streams the records of a file, a pipe or a byte range,
resynchronising after damage; split_ranges cuts a file into ranges for parallel readers."""

from __future__ import annotations

import io
import os
import threading
import time
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

from construct import ConstructError

from ebpfwire.capture.format import (
    _CONTEXT,
    _CONTEXT_RECORDS,
    _EVENT_HEAD,
    _HEADER_PREFIX,
    _LOST,
    _LOST_PAYLOAD,
    _RECORD_HEAD,
    _RECORD_HEAD_V2,
    _SAMPLE,
    _U32,
    MAGIC,
    MAX_PAYLOAD,
    READABLE_VERSIONS,
    RECORD_HEADER_SIZE,
    RECORD_HEADER_SIZE_V1,
    SYNC,
    CaptureDamage,
    CaptureError,
    CaptureHeader,
    CaptureRecord,
    EventRecord,
    HeaderInfo,
    LostRecord,
    RecordType,
    SampleRecord,
    TypePayload,
    TypeRecord,
)
from ebpfwire.capture.scan import next_head_v2, scan_v1, scan_v2
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.capture.stream import CaptureStream

SCAN_CREDIT = 1 << 17
"""Bytes of payload CRC32 a version-2 reader may spend on records whose payload CRC fails
before it looks inside them for the next good record (a cut record followed by more data
holds intact records); the credit refills with the bytes read, up to this bound. A real
record is under 64 KiB (a perf sample), so a cut one is always searched; a crafted file of
headers claiming 1 MiB exhausts the credit and each such record is then skipped whole: the
CRC work stays within twice the file's size plus this bound."""

REPORTS_KEPT = 1000
"""Damage reports and notes a reader keeps (the first ones); the rest are counted only,
so a capture of damage or of unknown records is read in constant memory."""


class CaptureReader:
    """Reads a capture from a path or a binary file object, streaming, in constant memory.

    Iterating yields SampleRecord, LostRecord, ProcessRecord and ContainerRecord in file
    order. With `start`/`end` it yields the records whose first byte lies in [start, end)
    (file offsets): `start` must be a range start that split_ranges gave (a record the
    whole-file reader reaches through the chain of record headers), as the reader takes
    it for one. Damaged stretches are skipped
    and recorded in `damage` (and passed to `on_damage`); unknown record types are skipped
    and recorded in `notes`; both keep the first REPORTS_KEPT, `damage_count` and
    `notes_count` count them all. With `on_context` set, the context records (PROCESS, CONTAINER)
    are given to it, as their ``info``, when they are read, instead of being yielded: a
    process table fed so is ahead of the events, whatever reordering follows. With
    `follow=True` the reader waits for records still being
    written, polling every `poll_interval` seconds, until `close()` is called or no data has
    arrived for `idle_timeout` seconds (None: forever).
    """

    chunk_size = 1 << 16  # 64 KiB: small batches let record objects die young, less GC work
    bulk_chunk_size = 1 << 18  # blocks() frames a read at once: fewer numpy calls a record

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
        self.notes: list[CaptureDamage] = []
        self.damage_count = 0
        self.notes_count = 0
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
        self.unanchored: list[tuple[int, int]] = []
        """File offset spans [from, to) in which no byte range may start (see split_ranges):
        one per damaged stretch (overlapping ones merged), from its start to MAX_PAYLOAD bytes
        after the good record that ended it, where every reader state is again that of a
        fresh reader."""
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

    def _read_chunk(self, size: int) -> bytes:
        """The next bytes of input, waiting for them when following; b"" at the end."""
        waiting_since = time.monotonic()
        while True:
            if self._stop.is_set():
                return b""
            try:
                chunk = self._read(size)
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
            chunk = self._read_chunk(self.chunk_size)
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
            chunk = self._read_chunk(self.chunk_size)
            if not chunk:
                return
            if have + len(chunk) > offset:
                self._pending = chunk[offset - have:]
            have += len(chunk)

    @property
    def read_offset(self) -> int | None:
        """How far into the file the input has been read (what was yielded lags it by at
        most a chunk and the reorder window), for progress; None when the input cannot
        tell (a pipe)."""
        try:
            return self._file.tell()
        except (OSError, ValueError, AttributeError):
            return None

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
        self.damage_count += 1
        if len(self.damage) < REPORTS_KEPT:
            self.damage.append(damage)
        if self.on_damage is not None:
            self.on_damage(damage)

    def __iter__(self) -> Iterator[CaptureRecord]:
        if self._iterated:
            raise RuntimeError("a CaptureReader reads its input once (it may be a pipe); "
                               "open a new reader to read the capture again")
        self._iterated = True
        return self._records()

    def blocks(self) -> Iterator[Any]:
        """The records as the columnar path takes them, in file order: the clean stretches
        of a version-2 capture framed in bulk, as
        :class:`~ebpfwire.capture.bulk.RecordBlock` (columns, no object per record), and
        everything else as iterating yields it (damage, context records and their
        ``on_context``, resynchronisation, byte ranges alike). Version 1 and follow mode
        read record by record."""
        if self._iterated:
            raise RuntimeError("a CaptureReader reads its input once (it may be a pipe); "
                               "open a new reader to read the capture again")
        self._iterated = True
        return self._records(bulk=self.header.version != 1 and not self.follow)

    def _records(self, bulk: bool = False) -> Iterator[Any]:
        framer: Any = None
        if bulk:
            from ebpfwire.capture.bulk import Framer
        buf = self._pending
        self._pending = b""
        base = self.start  # file offset of buf[0]
        pos = 0
        eof = False
        bad_at: int | None = None  # file offset where the current damaged stretch began
        bad_why = ""
        bad_next = -1  # where the stretch's first record header said the next one starts
        marked = (-1, 0)  # (until, damage offset): records before `until` are resynchronised
        stop = 2**64 if self.end is None else self.end
        v1 = self.header.version == 1
        judge = self._judge_v1 if v1 else self._judge_v2
        head_crcs: dict[int, int] = {}
        credit = (SCAN_CREDIT, self.start)  # (bytes, at file offset): see SCAN_CREDIT
        while True:
            n = len(buf)
            if bulk:
                framer = Framer(buf, n, head_crcs)
            while True:
                batch: list[SampleRecord | LostRecord] = []
                start = pos
                block = None
                if framer is not None:   # a long clean stretch, else the loop below
                    block, pos = framer.take(pos, base)
                if block is not None:
                    if bad_at is not None:
                        marked = self._resynced(bad_at, bad_why, bad_next, base + start)
                        bad_at = None
                    offsets = block.offsets
                    if offsets[0] < marked[0]:
                        block.resync[offsets < marked[0]] = marked[1]
                    if offsets[-1] >= stop:
                        yield block.split(int((offsets < stop).sum()))[0]
                        return
                    yield block
                elif v1:
                    pos = scan_v1(buf, pos, n, base, batch)
                else:
                    pos = scan_v2(buf, pos, n, base, batch, head_crcs)
                if batch:
                    if bad_at is not None:
                        marked = self._resynced(bad_at, bad_why, bad_next, base + start)
                        bad_at = None
                    over = batch[-1].offset >= stop
                    if over:
                        batch = [record for record in batch if record.offset < stop]
                    if batch and batch[0].offset < marked[0]:
                        batch = [record for record in batch
                                 if self._mark(record, *marked) is not None]
                    yield from batch
                    if over:
                        return
                # pos is at the end of the data or at something the fast path does not take
                if pos == n:
                    break
                verdict, why, end, cost = judge(buf, pos, n, eof)
                if verdict == "wait":
                    break
                if verdict == "good":
                    if bad_at is not None:
                        marked = self._resynced(bad_at, bad_why, bad_next, base + pos)
                        bad_at = None
                    if base + pos >= stop:
                        return
                    record = self._framed(base + pos, buf, pos, end, v1)
                    if record is not None and base + pos < marked[0]:
                        record = self._mark(record, *marked)
                    pos = end
                    if record is None:
                        continue
                    if self.on_context is not None and type(record) in _CONTEXT_RECORDS:
                        self.on_context(record.info)
                    else:
                        yield record
                    continue
                # The bytes at pos are not a good record: start (or extend) a damaged
                # stretch and look for the next good record, from just after a header that
                # checks itself (version 2), else from the next byte. A payload CRC that
                # failed is paid from the credit; without enough, the record's extent is
                # skipped whole, so that the work stays linear in the file's size.
                if bad_at is None:
                    bad_at, bad_why, bad_next = base + pos, why, (-1 if end < 0 else base + end)
                if v1:
                    nxt = buf.find(SYNC, pos + 1)
                else:
                    if cost:
                        have = min(SCAN_CREDIT, credit[0] + base + pos - credit[1])
                        if cost > have:
                            pos = end
                            continue
                        credit = (have - cost, base + pos)
                    nxt = next_head_v2(buf, pos + (1 if end < 0 else RECORD_HEADER_SIZE), n,
                                        n if eof else 2**64)
                if nxt >= 0:
                    pos = nxt
                elif eof:
                    pos = n
                else:  # keep what may be the start of a header
                    pos = max(pos + 1, n - (len(SYNC) if v1 else RECORD_HEADER_SIZE) + 1)
                    break
            if eof:
                break
            chunk = self._read_chunk(self.bulk_chunk_size if bulk else self.chunk_size)
            if not chunk:
                eof = True
            buf = buf[pos:] + chunk
            base += pos
            pos = 0
        if bad_at is not None:
            self._unanchor(bad_at, 2**64)
            self._report(bad_at, f"{bad_why}; skipped {base + len(buf) - bad_at} bytes "
                                 "to the end of the data")

    def _unanchor(self, low: int, high: int) -> None:
        """Add a span where no range may start, merged with the last one it overlaps (spans
        come in file order): one per 1 MiB of damaged file at most, however many records."""
        spans = self.unanchored
        if spans and low <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], high))
        else:
            spans.append((low, high))

    def _resynced(self, bad_at: int, why: str, bad_next: int, found: int) -> tuple[int, int]:
        """End a damaged stretch at the good record at `found`: report it, and return the
        records to mark, (until, bad_at): none when the stretch's first header announced
        `found` (the chain of headers is unbroken), else those that start before
        found + MAX_PAYLOAD (a record whose payload could hold `found` ends there)."""
        self.tail_missing = 0
        self._unanchor(bad_at, found + MAX_PAYLOAD)
        message = f"{why}; skipped {found - bad_at} bytes to the next good record at offset {found}"
        if found == bad_next:
            self._report(bad_at, message)
            return -1, 0
        until = found + MAX_PAYLOAD
        self._report(bad_at, f"{message}, found by scanning: the records from there up to "
                             f"offset {until} are marked resynchronised")
        return until, bad_at

    def _mark(self, record: Any, until: int, bad_at: int) -> Any:
        """A record after a resynchronisation: a sample or a loss marked (see
        SampleRecord.resync); a context record, which no output could show marked, reported
        as damage and dropped (it would describe processes)."""
        if record.offset >= until:
            return record
        if type(record) in (SampleRecord, LostRecord, EventRecord):
            record.resync = bad_at
            return record
        self._report(record.offset, f"a {type(record).__name__[:-6].upper()} record found by "
                                    f"scanning after the damage at offset {bad_at} is not "
                                    "trusted (it may lie inside another record's payload); "
                                    "record skipped")
        return None

    @staticmethod
    def _judge_v1(buf: bytes, pos: int, n: int, eof: bool) -> tuple[str, str, int, int]:
        """Is there a good version-1 record at pos? ("good", "", end, 0), ("wait", "", -1,
        0) for more data, or ("bad", why, end, 0): end is where the header says the next
        record starts (-1 when it cannot say), and the reader looks for the next sync word."""
        avail = n - pos
        if avail < RECORD_HEADER_SIZE_V1:
            return _short_header(RECORD_HEADER_SIZE_V1, avail, eof)
        sync, crc, length, _, _ = _RECORD_HEAD.unpack_from(buf, pos)
        end = pos + RECORD_HEADER_SIZE_V1 + length
        if sync != SYNC:
            return "bad", f"expected record sync word {SYNC.hex()}, found {sync.hex()}", -1, 0
        if length > MAX_PAYLOAD:
            return "bad", f"expected a record length <= {MAX_PAYLOAD}, found {length}", -1, 0
        if end > n:
            if not eof:
                return "wait", "", -1, 0
            return "bad", (f"expected a {RECORD_HEADER_SIZE_V1 + length}-byte record, found "
                           f"only {avail} bytes before the end of the data (cut record)"), -1, 0
        computed = zlib.crc32(buf[pos + 8:end])
        if computed != crc:
            return "bad", (f"expected record CRC32 {crc:#010x}, found {computed:#010x} "
                           f"over its {length}-byte payload and header"), end, 0
        return "good", "", end, 0

    def _judge_v2(self, buf: bytes, pos: int, n: int, eof: bool) -> tuple[str, str, int, int]:
        """As _judge_v1 for version 2. A "bad" verdict with end >= 0 is a record whose header
        checks itself (end: where it ends); `cost` is the payload bytes whose CRC failed."""
        avail = n - pos
        if avail < RECORD_HEADER_SIZE:
            return _short_header(RECORD_HEADER_SIZE, avail, eof)
        sync, length, rtype, flags, head, crc = _RECORD_HEAD_V2.unpack_from(buf, pos)
        if sync != SYNC:
            return "bad", f"expected record sync word {SYNC.hex()}, found {sync.hex()}", -1, 0
        computed = zlib.crc32(buf[pos + 4:pos + 12])
        if computed != head:
            return "bad", (f"expected record header CRC32 {head:#010x}, found {computed:#010x} "
                           f"over its length, type and flags"), -1, 0
        if length > MAX_PAYLOAD:
            return "bad", f"expected a record length <= {MAX_PAYLOAD}, found {length}", -1, 0
        end = pos + RECORD_HEADER_SIZE + length
        if end > n:
            if not eof:
                return "wait", "", -1, 0
            self.tail_missing = end - n
            return "bad", (f"expected a {RECORD_HEADER_SIZE + length}-byte record, found "
                           f"only {avail} bytes before the end of the data (cut record)"), end, 0
        computed = zlib.crc32(buf[pos + RECORD_HEADER_SIZE:end])
        if computed != crc:
            return "bad", (f"expected payload CRC32 {crc:#010x}, found {computed:#010x} over "
                           f"its {length} bytes"), end, length
        return "good", "", end, 0

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
        if not v1 and rtype == RecordType.EVENT and length >= 6:
            return EventRecord(*_EVENT_HEAD.unpack_from(payload), payload[6:], offset)
        if not v1 and rtype == RecordType.TYPE:
            try:
                p = TypePayload.parse(payload)
            except (ConstructError, UnicodeDecodeError) as exc:
                self._report(offset, f"expected a TYPE payload, found {length} bytes that do "
                                     f"not parse ({exc}); record skipped")
                return None
            return TypeRecord(p.map, p.name, p.type_id, p.btf, offset)
        if not v1 and rtype == RecordType.EVENT:
            self._report(offset, f"expected an EVENT payload of at least 6 bytes, found "
                                 f"{length}; record skipped")
            return None
        if rtype in (_SAMPLE, _LOST):
            want = "at least 4" if rtype == _SAMPLE else "12"
            self._report(offset, f"expected a {RecordType(rtype).name} payload of {want} "
                                 f"bytes, found {length}; record skipped")
        else:
            self.notes_count += 1
            if len(self.notes) < REPORTS_KEPT:
                self.notes.append(CaptureDamage(offset, (
                    f"skipped a record of unknown type {rtype} ({length} bytes of payload); "
                    "written by a newer ebpfwire?")))
        return None

    def events(
        self, strict: bool = True, layout: str | None = None, arch: str | None = None
    ) -> Iterator[tuple[CaptureRecord, Any]]:
        """Decode each SAMPLE: yields (record, event) or (record, DecodeError); a bad sample
        does not stop the others. LOST, PROCESS and CONTAINER records come through as
        (record, None) where they are in the file. layout and arch default to the header's.
        (A :class:`~ebpfwire.capture.stream.CaptureStream` in file order.)"""
        return iter(CaptureStream(self, layout=layout, arch=arch, strict=strict,
                                  time_order=False))

    def close(self) -> None:
        """Stop following and close the file if this reader opened it."""
        self._stop.set()
        if self._owned:
            self._file.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short_header(size: int, avail: int, eof: bool) -> tuple[str, str, int, int]:
    """The verdict on fewer bytes than a record header: wait for more, or a cut record."""
    if not eof:
        return "wait", "", -1, 0
    return "bad", (f"expected a {size}-byte record header, found only {avail} bytes before "
                   "the end of the data (cut record)"), -1, 0


def split_ranges(
    path: str | os.PathLike[str], parts: int | None = None, split_bytes: int | None = None,
    *, starts: Sequence[int] | None = None,
) -> list[tuple[int, int]]:
    """Byte ranges [start, end) covering a capture's records, for CaptureReader(path,
    start=..., end=...) in parallel: `parts` ranges of about equal size, or ranges of about
    `split_bytes` bytes (default: one part per CPU). The first range starts after the file
    header, the last ends at the file's current size; every other range starts at the first
    record at or after its share's start that the whole-file reader reaches through the
    chain of record headers, outside the spans of its ``unanchored`` (never at bytes inside
    another record's payload, whatever they hold). Finding them is one pass over the
    capture, unless `starts` (sorted offsets of such records, e.g. a context index's
    samples) is given."""
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
    targets = [first + total * i // parts for i in range(1, parts)]
    if starts is None:
        found = _walk_starts(path, targets)
    else:
        found = [int(starts[at]) for at in (bisect_left(starts, target) for target in targets)
                 if at < len(starts)]
    bounds = [first] + sorted({start for start in found if first < start < size}) + [size]
    return list(zip(bounds, bounds[1:], strict=False))


def _walk_starts(path: str | os.PathLike[str], targets: list[int]) -> list[int]:
    """For each target offset, the first record at or after it where a range may start
    (split_ranges), found by reading the capture once."""
    found: list[int] = []
    if not targets:
        return found
    at = 0
    with CaptureReader(path) as reader:
        spans = reader.unanchored
        for record in reader:
            offset = record.offset
            if offset < targets[at] or (spans and offset < spans[-1][1]):
                continue
            found.append(offset)
            while at < len(targets) and targets[at] <= offset:
                at += 1
            if at == len(targets):
                break
    return found
