"""Command mode of the live commands (``ebpfwire record -o x.ewcap -- CMD ARGS``), as
strace runs a command: CMD is forked first, held on a pipe until the monitor is attached
with the child's pid in its traced set, and only then executes, so its first event is seen;
the live command then exits with CMD's exit status (a signal N: 128 + N, as a shell does).
"""

from __future__ import annotations

import os
import pwd
import select
import shutil
import signal
import sys
from dataclasses import dataclass

from ebpfwire.cli.errors import UsageError

EXIT_NOT_FOUND = 127  # a shell's status for a command it cannot find or run
EXEC_WAIT_S = 2.0  # the longest a live command waits for CMD's exec before it reads /proc


@dataclass(frozen=True)
class RunAs:
    """The user ``-u USER`` runs CMD as: its uid, gid and groups."""

    name: str
    uid: int
    gid: int
    groups: list[int]


def run_as(user: str | None) -> RunAs | None:
    """``-u USER`` checked: a known user (name or uid), and root to switch to it."""
    if user is None:
        return None
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise UsageError(f"-u: no such user {user!r}") from None
    if os.geteuid() != 0:
        raise UsageError(f"-u {user}: running a command as another user needs root")
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid,
                 os.getgrouplist(entry.pw_name, entry.pw_gid))


class CommandNotFound(Exception):
    """CMD cannot be run: one line, exit status 127 (nothing is loaded)."""


def resolve(name: str) -> str:
    """The executable CMD names, found on PATH here, once: the child then makes one execve
    (execvp's tries along PATH would each be an event)."""
    path = name if "/" in name else shutil.which(name)
    if path is None or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise CommandNotFound(f"{name}: command not found" if path is None else
                              f"{name}: not an executable file")
    return path


def exit_status(wait_status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


class Command:
    """CMD forked and held: the child waits on a pipe (as ``user``, privileges dropped
    before it waits) until :meth:`release`; :meth:`abandon` ends it unexecuted."""

    def __init__(self, argv: list[str], user: RunAs | None = None):
        self.argv = argv
        self.path = resolve(argv[0])
        self.status: int | None = None
        self.forwarded = False
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, self._go = os.pipe()  # both close-on-exec: CMD inherits neither
        # the child holds `ran`'s write end until its exec closes it (or it exits)
        self._ran, ran = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            self._child(read_end, user)
        os.close(read_end)
        os.close(ran)

    def _child(self, read_end: int, user: RunAs | None) -> None:
        """In the forked child: wait for the go, then become CMD; never returns."""
        try:
            os.close(self._go)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):  # Python's own
                signal.signal(sig, signal.SIG_DFL)
            if user is not None:
                os.setgroups(user.groups)
                os.setgid(user.gid)
                os.setuid(user.uid)
            if os.read(read_end, 1) == b"\1":
                os.execv(self.path, self.argv)
            os._exit(EXIT_NOT_FOUND)
        except BaseException as exc:  # noqa: BLE001 - the child must never return
            try:
                os.write(2, f"ebpfwire: {self.argv[0]}: {exc}\n".encode(errors="replace"))
            finally:
                os._exit(EXIT_NOT_FOUND)

    def release(self, timeout: float = EXEC_WAIT_S) -> None:
        """The monitor is attached: let CMD run, and return once the child has executed it
        (or failed to), so that /proc read now shows CMD, not the waiting child (at most
        ``timeout`` seconds: an exec from a slow file system is not waited for longer)."""
        os.write(self._go, b"\1")
        os.close(self._go)
        self._go = -1
        select.select([self._ran], [], [], timeout)
        os.close(self._ran)
        self._ran = -1

    def abandon(self) -> None:
        """Nothing could be attached (or, once released, nothing could be shown): the child
        exits without running CMD, or CMD is killed, and is reaped."""
        if self._go >= 0:
            os.close(self._go)
            self._go = -1
        else:
            self.kill()
        if self._ran >= 0:
            os.close(self._ran)
            self._ran = -1
        self.wait()

    def kill(self) -> None:
        """CMD ended at once (SIGKILL), if it still runs."""
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def forward(self, signum: int) -> None:
        """Pass a stop signal on to CMD, once (strace does so to a command it started)."""
        if not self.forwarded and self.status is None:
            self.forwarded = True
            os.kill(self.pid, signum)

    def poll(self) -> int | None:
        """CMD's exit status if it has ended (reaping it), else None."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = exit_status(status)
        return self.status

    def wait(self) -> int:
        """CMD's exit status, waiting for it."""
        if self.status is None:
            self.status = exit_status(os.waitpid(self.pid, 0)[1])
        return self.status
