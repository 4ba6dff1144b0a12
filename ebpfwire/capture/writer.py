"""Writing captures: CaptureWriter, whole records only, never through a symbolic link."""

from __future__ import annotations

import errno
import os
import stat
import struct
import tempfile
import time
import zlib
from typing import BinaryIO

from ebpfwire import machine
from ebpfwire.capture.format import (
    _COVERED_SAMPLE,
    _EVENT_HEAD,
    _HEAD_CACHE_LIMIT,
    _HEAD_COVERED,
    _LOST,
    _LOST_PAYLOAD,
    _RECORD_HEAD_V2,
    _RTYPE,
    _SAMPLE,
    _SAMPLE_HEAD_V2,
    _SYNC_CRC,
    _SYNC_INT,
    _U32,
    ARCHES,
    FORMAT_VERSION,
    MAX_PAYLOAD,
    READABLE_VERSIONS,
    RECORD_HEADER_SIZE,
    RECORD_HEADER_SIZE_V1,
    SYNC,
    WRITE_MODES,
    CaptureHeader,
    FileHeader,
    HostInfo,
    RecordType,
    TypePayload,
    _CrcCovered,
)
from ebpfwire.capture.reader import CaptureReader
from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.errors import EbpfwireError


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

    def write_type(self, map_index: int, name: str, type_id: int, btf: bytes) -> None:
        """Declare the BTF type of output map ``map_index``'s events (format version 2)."""
        payload = TypePayload.build({"map": map_index, "name": name, "type_id": type_id,
                                     "btf": btf})
        self._write_context(RecordType.TYPE, payload, "write_type")

    def write_event(self, map_index: int, cpu: int, data: bytes) -> None:
        """Record one event of output map ``map_index`` as its reader gave it."""
        self._write_context(RecordType.EVENT, _EVENT_HEAD.pack(map_index, cpu) + data,
                            "write_event")

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
