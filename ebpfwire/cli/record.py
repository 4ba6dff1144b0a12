"""``ebpfwire record``: live events from the bundled monitor into a capture file.

The output is created before anything is loaded into the kernel, exclusively and never
through a symbolic link; an existing path is refused unless ``--force`` (replace) or
``--append`` is given. When a write fails (a full disk) the recording stops with one line
saying how many events the file holds; the file stays readable.
"""

from __future__ import annotations

import argparse
import io
import os
import stat
import time
from dataclasses import dataclass, field

from ..capture import CaptureError, CaptureWriter
from ..layouts import get_layout
from .common import (
    EXIT_IO,
    EXIT_OK,
    UsageError,
    _open_monitor,
    _say,
    _Status,
    _Stop,
    machine_arch,
    raw_comm_test,
)

_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_EXISTING = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_AUTO_FLUSH = {"buffer_size": 1 << 62, "flush_interval": float("inf")}  # we flush per batch


class _CountedFile(io.FileIO):
    """The capture file, counting the bytes the OS took: what the file holds after a failure."""

    written = 0

    def write(self, data) -> int | None:  # type: ignore[override]
        count = super().write(data)
        self.written += count or 0
        return count


@dataclass
class RecordOutput:
    """The writer, its file, and whether the file was made here (removed if nothing starts)."""

    writer: CaptureWriter
    file: _CountedFile
    created: bool
    path: str

    def discard(self) -> None:
        """Before recording: close, and remove the file if this run created it."""
        self.file.close()
        if self.created:
            os.unlink(self.path)


def _refusal(path: str) -> str:
    if os.path.islink(path):
        return (f"{path}: is a symbolic link; a capture is never written through one "
                "(--force replaces the link itself)")
    return (f"{path}: already exists; --force replaces it, --append adds records to a "
            "capture")


def create_output(path: str, force: bool, append: bool, arch: str) -> RecordOutput:
    """Create (or with ``append`` open) the capture ``path`` before the monitor loads.

    A new file is created with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: an existing path is a
    UsageError unless ``force``, which unlinks whatever non-directory is there first (a
    symbolic link itself, never its target). ``append`` opens an existing capture with
    O_NOFOLLOW and adds to it; its architecture must be this machine's.
    """
    if append:
        try:
            fd = os.open(path, _EXISTING)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file (--append adds to an existing capture)"
                             ) from None
        except OSError as exc:
            if os.path.islink(path):
                raise UsageError(_refusal(path)) from None
            raise UsageError(f"{path}: cannot open: {exc.strerror}") from None
        file = _CountedFile(fd, "r+b")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            file.close()
            raise UsageError(f"{path}: not a regular file; --append adds to a capture file")
        try:
            writer = CaptureWriter.append(file, **_NO_AUTO_FLUSH)
        except CaptureError as exc:
            file.close()
            raise UsageError(f"{path}: not a capture to append to: offset {exc.offset}: "
                             f"expected {exc.expected}, found {exc.found}") from None
        if writer.header.arch != arch or writer.header.layout != "classic":
            file.close()
            raise UsageError(
                f"{path}: a {writer.header.layout} capture of {writer.header.arch}; this "
                f"machine records classic {arch} (append only to a capture made here)")
        file.written = 0
        return RecordOutput(writer, file, created=False, path=path)
    if force:
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                raise UsageError(f"{path}: is a directory")
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UsageError(f"{path}: cannot replace: {exc.strerror}") from None
    try:
        fd = os.open(path, _NEW, 0o600)
    except FileExistsError:
        raise UsageError(_refusal(path)) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot create: {exc.strerror}") from None
    file = _CountedFile(fd, "wb")
    try:
        writer = CaptureWriter(file, layout="classic", arch=arch, **_NO_AUTO_FLUSH)
    except OSError as exc:  # the header did not fit: no capture at all
        file.close()
        os.unlink(path)
        raise OSError(exc.errno, exc.strerror, path) from None
    file.written = 0
    return RecordOutput(writer, file, created=True, path=path)


def _record_sizes() -> tuple[int, int]:
    """Bytes a sample record adds beyond its data, and bytes of a lost record, as written."""
    probe = io.BytesIO()
    writer = CaptureWriter(probe, buffer_size=0)
    start = probe.tell()
    writer.write_sample(0, b"")
    sample = probe.tell() - start
    writer.write_lost(0, 1)
    return sample, probe.tell() - start - sample


@dataclass
class _Tally:
    """Events and lost samples handed to the writer, and which of them reached the file."""

    events: int = 0
    lost: int = 0
    stored: int = 0           # events known to be whole in the file
    stored_bytes: int = 0     # bytes of records written so far, as of the last flush
    pending: list[tuple[int, bool]] = field(default_factory=list)  # (bytes, is a sample)

    def flushed(self, written: int) -> None:
        self.stored += sum(is_sample for _, is_sample in self.pending)
        self.stored_bytes = written
        self.pending.clear()

    def after_failure(self, written: int) -> int:
        """Events whole in the file when a flush stopped after ``written`` bytes in all."""
        room = written - self.stored_bytes
        stored = self.stored
        for size, is_sample in self.pending:
            room -= size
            if room < 0:
                break
            stored += is_sample
        return stored


class _WriteFailed(Exception):
    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def cmd_record(args: argparse.Namespace) -> int:
    arch = machine_arch()
    out = create_output(args.output, args.force, args.append, arch)
    sample_extra, lost_size = _record_sizes()
    tally = _Tally()
    with _Stop() as stop:
        try:
            monitor = _open_monitor(args)
        except BaseException:
            out.discard()
            raise
        _say(f"recording to {args.output}; Ctrl-C or SIGTERM stops")
        writer, pending = out.writer, tally.pending
        keep = raw_comm_test(args.comm, get_layout("classic"))
        status = _Status()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            with monitor:
                reader = monitor.reader
                while not stop.requested:
                    wait = 0.2
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            break
                    batch = reader.read_batch(timeout=wait)
                    try:
                        for record in batch:
                            if hasattr(record, "data"):
                                if keep is not None and not keep(record.data):
                                    continue
                                writer.write_sample(record.cpu, record.data)
                                pending.append((sample_extra + len(record.data), True))
                                tally.events += 1
                            else:
                                writer.write_lost(record.cpu, record.count)
                                pending.append((lost_size, False))
                                tally.lost += record.count
                        writer.flush()  # whole records, at least once per loop (<= 0.2 s)
                    except OSError as exc:
                        raise _WriteFailed(exc) from None
                    tally.flushed(out.file.written)
                    status.update(tally.events, tally.lost)
            try:
                writer.close()
            except OSError as exc:
                raise _WriteFailed(exc) from None
        except _WriteFailed as failed:
            # what the writer still holds is dropped with it, never written a second time
            stored = tally.after_failure(out.file.written)
            _say(f"{args.output}: {failed.error.strerror or failed.error}: recording stopped; "
                 f"the file holds {stored} of the {tally.events} events recorded"
                 f"{' in this run' if args.append else ''} and stays readable")
            return EXIT_IO
        finally:
            out.file.close()
            status.update(tally.events, tally.lost, force=True)
            status.done()
    _say(f"recorded {tally.events} events ({tally.lost} lost) to {args.output}")
    return EXIT_OK
