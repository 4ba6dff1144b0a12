"""``ebpfwire record``: live events from the bundled monitor into a capture file.

The output is created before anything is loaded into the kernel, exclusively and never
through a symbolic link; an existing path is refused unless ``--force`` (replace) or
``--append`` is given. Right after the header go the context records (a snapshot of the
running processes and their containers), so that a capture decoded elsewhere still names
processes and containers. When a write fails (a full disk) the recording stops with one
line saying how many events the file holds; the file stays readable.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import stat
from dataclasses import dataclass

from ebpfwire import machine
from ebpfwire.capture import CaptureError, CaptureReader, CaptureWriteError, CaptureWriter
from ebpfwire.cli.errors import EXIT_IO, EXIT_OK, UsageError, say
from ebpfwire.cli.live import (
    LiveEnd,
    StopSignals,
    command_options,
    finish_command,
    live_batches,
    loss_hint,
    machine_arch,
    open_monitor,
    start_command,
    started,
)
from ebpfwire.cli.options import add_command, duration_type, live_options
from ebpfwire.cli.output import Progress
from ebpfwire.process.procfs import ContainerResolver, snapshot
from ebpfwire.wire.text import printable

BOOT_SLACK_NS = 1_000_000_000
"""How far two readings of one boot's time may differ (clock steps between them); a
reboot moves it by far more."""


@dataclass
class RecordOutput:
    """The writer, and the file it made (removed if nothing starts; None when appending)."""

    writer: CaptureWriter
    path: str
    made: tuple[int, int] | None  # (st_dev, st_ino) of a file this run created

    def discard(self) -> None:
        """Before recording: close, and remove the file if this run created it (and it is
        still the one at the path)."""
        self.writer.close()
        if self.made is None:
            return
        try:
            there = os.lstat(self.path)
        except OSError:
            return
        if (there.st_dev, there.st_ino) == self.made:
            os.unlink(self.path)


def _refusal(path: str) -> str:
    if os.path.isdir(path) and not os.path.islink(path):
        return (f"{path}: is a directory; -o names the capture file to create, such as "
                f"{os.path.join(path, 'run.ewcap')}")
    if os.path.islink(path):
        return (f"{path}: is a symbolic link; a capture is never written through one "
                "(--force replaces the link itself)")
    return (f"{path}: already exists; --force replaces it, --append adds records to a "
            "capture")


def _not_a_capture(path: str, exc: CaptureError) -> UsageError:
    return UsageError(f"{path}: not a capture to append to: offset {exc.offset}: "
                      f"expected {exc.expected}, found {exc.found}")


def _check_appendable(path: str, arch: str) -> None:
    """Refuse, before anything is written, what --append cannot add to: no file, a link,
    not a regular file, not a capture, or a capture of another layout, machine or boot."""
    try:  # O_NONBLOCK: a FIFO at the path must not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file (--append adds to an existing capture)"
                         ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(_refusal(path)) from None
        raise UsageError(f"{path}: cannot open: {exc.strerror}") from None
    with open(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{path}: not a regular file; --append adds to a capture file")
        try:
            header = CaptureReader(file).header
        except CaptureError as exc:
            raise _not_a_capture(path, exc) from None
    if header.arch != arch or header.layout != "classic":
        raise UsageError(
            f"{path}: a {header.layout} capture of {header.arch}; this machine records "
            f"classic {arch} (append only to a capture made here)")
    host = socket.gethostname()
    if header.hostname != host:
        raise UsageError(f"{path}: a capture of host {header.hostname!r}, this is {host!r}: "
                         "append only to a capture of this host and boot")
    # the header's boot time gives every sample its wall-clock time: new samples, timed
    # from this boot, would get wrong times under another boot's
    off = abs(header.boot_time_ns - machine.boot_time_ns())
    if off > BOOT_SLACK_NS:
        raise UsageError(f"{path}: a capture of another boot of this host (its boot time is "
                         f"{off / 1e9:.0f} s from this boot's): append only to a capture of "
                         "this boot; record a new file")


def create_output(path: str, force: bool, append: bool, arch: str) -> RecordOutput:
    """Create (mode "x"), replace (``force``) or append to the capture ``path``, header
    first, before the monitor loads; what cannot be done is a UsageError.

    A link at the path is never followed: refused, or with ``force`` replaced itself.
    """
    if append:
        _check_appendable(path, arch)
        try:
            writer = CaptureWriter(path, mode="a")
        except CaptureError as exc:
            raise _not_a_capture(path, exc) from None
        except CaptureWriteError:  # completing a cut last record failed: a full disk
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UsageError(_refusal(path)) from None
            raise UsageError(f"{path}: cannot open: {exc.strerror}") from None
        return RecordOutput(writer, path, made=None)
    if force:
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                raise UsageError(_refusal(path))
        except FileNotFoundError:
            pass
    try:
        writer = CaptureWriter(path, mode="replace" if force else "x", layout="classic",
                               arch=arch)
    except FileExistsError:
        raise UsageError(_refusal(path)) from None
    except CaptureWriteError:  # the header did not fit: no file is left behind
        raise
    except OSError as exc:
        raise UsageError(f"{path}: cannot {'replace' if force else 'create'}: "
                         f"{exc.strerror}") from None
    made = os.lstat(path)
    return RecordOutput(writer, path, made=(made.st_dev, made.st_ino))


def write_context(writer: CaptureWriter, pid: int | None = None,
                  comm: str | None = None) -> ContainerResolver | None:
    """The running processes (those ``pid`` and ``comm`` ask for, and their ancestors) and
    their containers, into the capture; the resolver that names the containers of later
    samples. None for a version-1 capture (appended to), which has no context records.
    A process whose record cannot be written is left out and counted, never fatal."""
    from ebpfwire.kernel.errors import LoaderError  # the loader only when recording

    if writer.header.version == 1:
        say(f"{writer.name}: a version-1 capture holds no process or container records; "
            "appending events only")
        return None
    try:
        resolver = ContainerResolver()
    except LoaderError as exc:  # the host's namespaces are hidden: not root
        raise UsageError(f"cannot read the host's namespaces: {exc}") from None
    processes = snapshot(pid=pid, comm=comm)
    left_out = []
    for process in processes:
        try:
            writer.write_process(process)
        except ValueError as exc:
            left_out.append(f"{process.host_pid}: {exc}")
    if left_out:
        say(f"{len(left_out)} of {len(processes)} running processes left out of the "
             f"snapshot (first: {printable(left_out[0])[:200]})")
    for container in resolver.seed(processes):
        writer.write_container(container)
    writer.flush()  # a follower sees the context at once
    return resolver


def _write_batch(writer: CaptureWriter, batch: list, resolve) -> tuple[int, int]:
    """The records of one read into the capture; (events, lost) among them."""
    events = lost = 0
    for record in batch:
        data = getattr(record, "data", None)
        if data is None:
            lost += record.count
            writer.write_lost(record.cpu, record.count)
            continue
        if resolve is not None:
            container = resolve(data)  # a set lookup for a pair seen before
            if container is not None:
                writer.write_container(container)
        events += 1
        writer.write_sample(record.cpu, data)
    return events, lost


def cmd_record(args: argparse.Namespace) -> int:
    arch = machine_arch()
    status = Progress()
    out = create_output(args.output, args.force, args.append, arch)
    writer = out.writer
    events = lost = 0
    command = None
    with StopSignals() as stop:
        try:
            monitor = None
            try:
                command = start_command(args)
                monitor = open_monitor(args)
                if command is not None:
                    command.release()  # CMD runs: the snapshot shows it, not the waiting child
                # /proc is read once the programs are attached: a process that execs meanwhile
                # is in the snapshot or its exec is an event
                resolver = write_context(writer, args.pid, args.comm)
            except CaptureWriteError as exc:
                if monitor is not None:
                    monitor.close()
                if command is not None:
                    command.abandon()
                if out.made is None:
                    raise  # appending: the capture keeps what it held, and says so below
                out.discard()  # a header and part of a snapshot would block the next run
                say(f"{args.output}: {exc.strerror}: nothing recorded; the file is removed")
                return EXIT_IO
            except BaseException:
                if monitor is not None:
                    monitor.close()
                if command is not None:
                    command.abandon()
                out.discard()
                raise
            say(started(f"recording to {args.output}", args, command, of="; "))
            resolve = None if resolver is None else resolver.resolve_sample
            end = LiveEnd(stop, args.duration,
                          None if args.pid is None else monitor.tree_alive, command)
            with monitor:
                for batch in live_batches(monitor, end, 0.2):
                    new, gone = _write_batch(writer, batch, resolve)
                    events, lost = events + new, lost + gone
                    writer.flush()  # whole records, at least once per loop (<= 0.2 s)
                    status.recording(events, lost)
                hint = loss_hint(monitor, lost)
            writer.close()
        except CaptureWriteError as exc:
            # the writer wrote nothing twice and cut any partial record: what it counted is
            # what the file holds
            say(f"{args.output}: {exc.strerror}: recording stopped; the file holds "
                f"{writer.samples_written} of the {events} events recorded"
                f"{' in this run' if args.append else ''} and stays readable")
            return EXIT_IO
        finally:
            writer.close()
            status.recording(events, lost, force=True)
            status.done(keep=True)
    say(f"recorded {events} events ({lost} lost) to {args.output}")
    if hint is not None:
        say(hint)
    return finish_command(command, end, EXIT_OK)


def register(sub: argparse._SubParsersAction) -> None:
    """The ``record`` command's parser."""
    p = add_command(
        sub, "record", "record live events to a capture file (needs root)",
        parents=[live_options(), command_options()], examples=(
            "sudo ebpfwire record -o run.ewcap -- make test   run make test, record its tree",
            "sudo ebpfwire record -o run.ewcap -p 4242        pid 4242's tree, until it ends",
            "sudo ebpfwire record -o run.ewcap --duration 10",
            "sudo ebpfwire record -o run.ewcap --events execve,connect",
            "sudo ebpfwire record -o run.ewcap --force   replace run.ewcap",
        ))
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the capture to create (never an existing path, never through a link)")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--force", action="store_true",
                          help="replace what is at FILE (a link is replaced, not followed)")
    existing.add_argument("--append", action="store_true",
                          help="add records to the existing capture FILE")
    p.add_argument("--duration", type=duration_type, metavar="S", help="stop after S seconds")
    p.set_defaults(run=cmd_record, uses_stdout=False)  # its messages go to stderr only
