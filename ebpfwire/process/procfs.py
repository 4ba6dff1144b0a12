"""What /proc says about running processes and their containers, read while recording.

A capture is decoded later, elsewhere, where /proc is of no use: so `record` writes down
what it found here (a snapshot of running processes, and the container of each new pair of
namespaces its events show) for the decoder to name processes and containers with.
Everything here tolerates processes that vanish mid-read, kernel threads and zombies
(no executable), and files it may not read.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Iterator
from typing import NamedTuple, TypeVar

from ebpfwire.capture.snapshot import ContainerInfo, ProcessInfo
from ebpfwire.wire.layouts import header_reader

HOST = ("host", "")
UNKNOWN = ("unknown", "")

#: The bytes of a command line the snapshot keeps: any user can run a program with megabytes
#: of arguments, and the snapshot must neither fail on it nor copy it into every answer.
ARGV_BYTES_MAX = 32 * 1024

_GONE = (errno.ENOENT, errno.ESRCH)
_PF_KTHREAD = 0x00200000      # task flag of kernel threads (stat field 9)
_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
_P = TypeVar("_P")  # a process as asked_for sees it: host_pid, host_ppid, comm

# One cgroup path component per runtime naming scheme; the id is 64 hex digits in all of
# them. systemd driver: <prefix>-<id>.scope; cgroupfs driver: a bare <id> under a
# runtime's own directory. crio-conmon-<id>.scope holds cri-o's monitor, not the container.
_ID = r"([0-9a-f]{64})"
_SCOPES = (
    (re.compile(rf"^docker-{_ID}\.scope$"), "docker"),
    (re.compile(rf"^cri-containerd-{_ID}\.scope$"), "containerd"),
    (re.compile(rf"^crio-{_ID}(?:\.scope)?$"), "cri-o"),
    (re.compile(rf"^libpod-{_ID}(?:\.scope)?$"), "podman"),
)
_BARE_ID = re.compile(rf"^{_ID}$")
# the directory above a bare id says whose it is
_BARE_PARENTS = (("docker", "docker"), ("kubepods", "containerd"), ("libpod_parent", "podman"))


def _runtime_of_path(path: str) -> tuple[str, str] | None:
    """(runtime, id) of one cgroup path, or None when no container is named in it."""
    parts = [part for part in path.split("/") if part]
    # the outermost container wins: a container's own sub-cgroups (init.scope, or the
    # cgroups of a nested runtime) come below it
    for depth, part in enumerate(parts):
        for pattern, runtime in _SCOPES:
            match = pattern.match(part)
            if match:
                return runtime, match.group(1)
        if _BARE_ID.match(part) and depth:
            top = parts[0].split(".", 1)[0]   # kubepods.slice is kubepods too
            for marker, runtime in _BARE_PARENTS:
                if marker == top:
                    return runtime, part
    return None


def container_from_cgroup(text: str) -> tuple[str, str]:
    """(runtime, container id) of a process from its /proc/PID/cgroup content.

    Reads cgroup v2 (``0::/path``) and v1 (``N:controllers:/path``) lines alike; the v2
    line is looked at first. A process in no container is ``("host", "")``.
    """
    paths: list[str] = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        _, sep, path = rest.partition(":")
        if not sep:
            continue
        if hierarchy == "0":
            paths.insert(0, path)
        else:
            paths.append(path)
    for path in paths:
        found = _runtime_of_path(path)
        if found:
            return found
    return HOST


# --------------------------------------------------------------------------- reading /proc


def _read(path: str, limit: int = -1) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def command_line(raw: bytes) -> tuple[tuple[str, ...], bool]:
    """The arguments of a command line (NUL-terminated, as /proc/PID/cmdline has them), at
    most ARGV_BYTES_MAX bytes of it, and whether it was cut there (the last element kept is
    then a prefix): the one bound of an argv, for the recorder and the process table."""
    cut = len(raw) > ARGV_BYTES_MAX
    if cut:
        raw = raw[:ARGV_BYTES_MAX] + b"\0"
    return tuple(_text(arg) for arg in raw.split(b"\0")[:-1]), cut


def _command_line(path: str) -> tuple[tuple[str, ...], bool]:
    """argv from /proc/PID/cmdline, bounded (:func:`command_line`)."""
    return command_line(_read(path, ARGV_BYTES_MAX + 1))


class _Reader:
    """Reads the optional files of one process, noting a read that says "no such file"
    (the process may have gone, or it is a zombie whose exe and cwd are gone)."""

    def __init__(self) -> None:
        self.missing = False

    def __call__(self, func, path: str, default):
        try:
            return func(path)
        except OSError as exc:
            if exc.errno in _GONE:
                self.missing = True
            return default


def _ns_inode(path: str) -> int:
    return os.stat(path).st_ino


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _readlink(path: str) -> str:
    return _text(os.readlink(os.fsencode(path)))


def _stat_fields(raw: bytes) -> tuple[str, list[bytes]]:
    """comm and the fields after it: comm is between the first "(" and the last ")"."""
    start, end = raw.index(b"("), raw.rindex(b")")
    return _text(raw[start + 1:end]), raw[end + 2:].split()


def _status_values(raw: bytes) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for line in raw.splitlines():
        key, _, value = line.partition(b":")
        out[key] = value.split()
    return out


def suspended_ns() -> int:
    """Time the machine spent suspended: CLOCK_BOOTTIME (which /proc's start times count)
    minus CLOCK_MONOTONIC (which the events' ``ts`` counts)."""
    return max(time.clock_gettime_ns(time.CLOCK_BOOTTIME)
               - time.clock_gettime_ns(time.CLOCK_MONOTONIC), 0)


def read_process(host_pid: int, proc: str = "/proc",
                 suspended: int | None = None) -> ProcessInfo | None:
    """What /proc says about one process, or None when it is not there (any more).

    ``start_ns`` is the kernel's start time (clock ticks since boot, 10 ms at CLK_TCK 100)
    in ns on the events' clock: less the time spent suspended (``suspended``, measured
    now when not given), so that it compares with an event's ``ts`` to a tick. (Exact for
    processes started after the machine's last resume; on a machine never suspended, for
    all.)
    """
    base = f"{proc}/{host_pid}"
    try:
        comm, fields = _stat_fields(_read(f"{base}/stat"))
    except (OSError, ValueError):
        return None
    optional = _Reader()
    try:
        ppid, flags, start_ticks = int(fields[1]), int(fields[6]), int(fields[19])
        status = _status_values(optional(_read, f"{base}/status", b""))
        nspid = status.get(b"NSpid") or [str(host_pid).encode()]
        uid = int((status.get(b"Uid") or [b"0"])[0])
        pid = int(nspid[-1])
    except (IndexError, ValueError):
        return None  # a stat or status line not as the kernel writes them
    if flags & _PF_KTHREAD:
        exe = cwd = ""
        argv: tuple[str, ...] = ()
        cut = False
    else:
        exe = optional(_readlink, f"{base}/exe", "")
        cwd = optional(_readlink, f"{base}/cwd", "")
        argv, cut = optional(_command_line, f"{base}/cmdline", ((), False))
    pid_ns = optional(_ns_inode, f"{base}/ns/pid", 0)
    mnt_ns = optional(_ns_inode, f"{base}/ns/mnt", 0)
    cgroup = optional(_read, f"{base}/cgroup", b"")
    if optional.missing and not _same_process(base, start_ticks):
        return None  # it exited while being read
    if suspended is None:
        suspended = suspended_ns()
    _, container_id = container_from_cgroup(_text(cgroup)) if cgroup else UNKNOWN
    return ProcessInfo(
        host_pid=host_pid, host_ppid=ppid, pid=pid, uid=uid,
        pid_ns=pid_ns, mnt_ns=mnt_ns, start_ns=max(start_ticks * _NS_PER_TICK - suspended, 0),
        comm=comm,
        exe=exe, cwd=cwd, argv=argv, container_id=container_id, cut=cut,
    )


def _same_process(base: str, start_ticks: int) -> bool:
    """True while the process read from ``base`` is still there (same start time)."""
    try:
        return int(_stat_fields(_read(f"{base}/stat"))[1][19]) == start_ticks
    except (OSError, ValueError, IndexError):
        return False


def _pids(proc: str) -> Iterator[int]:
    for name in os.listdir(proc):
        if name.isdigit():
            yield int(name)


class _Stat(NamedTuple):
    """What a process's stat file says of its place in the tree (for :func:`asked_for`)."""

    host_pid: int
    host_ppid: int
    comm: str


def _stats(proc: str) -> list[_Stat]:
    found = []
    for pid in sorted(_pids(proc)):
        try:
            comm, fields = _stat_fields(_read(f"{proc}/{pid}/stat"))
            found.append(_Stat(pid, int(fields[1]), comm))
        except (OSError, ValueError, IndexError):
            continue  # gone since the listing, or not as the kernel writes it
    return found


def snapshot(proc: str = "/proc", pid: int | None = None,
             comm: str | None = None) -> list[ProcessInfo]:
    """Every running process (thread groups, kernel threads included), by host pid; with
    ``pid`` or ``comm``, only those :func:`asked_for` keeps: then every stat file is read
    first to find them, and the other files only for them (a live command's start does
    not read a busy host's whole /proc for one process tree).

    Start times are on the events' clock, as :func:`read_process` says.
    """
    suspended = suspended_ns()
    pids = (sorted(_pids(proc)) if pid is None and comm is None else
            [stat.host_pid for stat in asked_for(_stats(proc), pid, comm)])
    found = (read_process(host_pid, proc, suspended) for host_pid in pids)
    return [info for info in found if info is not None]


def asked_for(processes: list[_P], pid: int | None = None, comm: str | None = None) -> list[_P]:
    """The processes a filtered recording is about, and their ancestors (the tree needs
    them): with ``pid``, that process and its descendants; with ``comm``, the processes of
    that name; with neither, all. Nothing else of the machine goes into the capture."""
    if pid is None and comm is None:
        return processes
    by_pid = {info.host_pid: info for info in processes}
    children: dict[int, list[int]] = {}
    for info in processes:
        children.setdefault(info.host_ppid, []).append(info.host_pid)
    wanted: set[int] = set()
    if pid is not None and pid in by_pid:
        todo = [pid]
        while todo:   # a loop, not recursion: the tree's depth is any user's to choose
            current = todo.pop()
            if current not in wanted:
                wanted.add(current)
                todo.extend(children.get(current, ()))
    if comm is not None:
        wanted.update(info.host_pid for info in processes if info.comm == comm)
    for start in list(wanted):
        parent = by_pid[start].host_ppid
        while parent in by_pid and parent not in wanted:
            wanted.add(parent)
            parent = by_pid[parent].host_ppid
    return [info for info in processes if info.host_pid in wanted]


# --------------------------------------------------------------------------- containers


def host_namespaces(proc: str = "/proc") -> tuple[int, int]:
    """Inodes of the host's PID and mount namespaces (what the BPF program reports as 0)."""
    from ebpfwire.kernel.config import host_ns_inum

    return host_ns_inum("pid", proc), host_ns_inum("mnt", proc)


_NS_IDS = header_reader("pid_id", "mnt_id", "host_pid")


class ContainerResolver:
    """Names the container of each (pid_id, mnt_id) pair that events show, once per pair.

    The pair is taken as the event header carries it: our BPF program writes 0 for a
    namespace that is the host's (so a host process in its own mount namespace is
    ``(0, mnt)``); KubeArmor's programs do the same; a writer that sends the host's real
    inodes is handled too. The ContainerInfo keeps the pair exactly as the events carry it,
    so a decoder joins events to it by equality.
    """

    def __init__(self, proc: str = "/proc", host: tuple[int, int] | None = None):
        self.proc = proc
        self.host_pid_ns, self.host_mnt_ns = host if host is not None else host_namespaces(proc)
        self._seen: set[tuple[int, int]] = set()

    def _as_wire(self, pid_ns: int, mnt_ns: int) -> tuple[int, int]:
        """A pair of real inodes as the program writes it (0 for the host's)."""
        return (0 if pid_ns == self.host_pid_ns else pid_ns,
                0 if mnt_ns == self.host_mnt_ns else mnt_ns)

    def _is_host(self, pid_id: int, mnt_id: int) -> bool:
        return pid_id in (0, self.host_pid_ns) and mnt_id in (0, self.host_mnt_ns)

    def _namespaces(self, host_pid: int) -> tuple[int, int] | None:
        base = f"{self.proc}/{host_pid}/ns"
        try:
            return self._as_wire(os.stat(f"{base}/pid").st_ino, os.stat(f"{base}/mnt").st_ino)
        except OSError:
            return None

    def _cgroup_of(self, host_pid: int) -> tuple[str, str] | None:
        try:
            text = _text(_read(f"{self.proc}/{host_pid}/cgroup"))
        except OSError:
            return None
        return container_from_cgroup(text)

    def _lookup(self, wire: tuple[int, int], host_pid: int) -> tuple[str, str]:
        candidates = [host_pid] if host_pid else []
        candidates += (pid for pid in _pids(self.proc) if pid != host_pid)
        for pid in candidates:
            # the namespaces are checked before and after the cgroup is read, so that a
            # pid reused in between cannot lend its cgroup to the wrong pair
            if self._namespaces(pid) != wire:
                continue
            found = self._cgroup_of(pid)
            if found is not None and self._namespaces(pid) == wire:
                return found
        return UNKNOWN

    def resolve(self, pid_id: int, mnt_id: int, host_pid: int = 0) -> ContainerInfo | None:
        """The container of a pair seen for the first time; None for a pair seen already.

        Read from /proc/host_pid/cgroup when that process still has those namespaces, else
        from any live process that has them; runtime "unknown" when none does.
        """
        key = (pid_id, mnt_id)
        if key in self._seen:
            return None
        self._seen.add(key)
        if self._is_host(pid_id, mnt_id):
            return ContainerInfo(pid_id, mnt_id, "", "host")
        wire = self._as_wire(pid_id, mnt_id)
        runtime, container_id = self._lookup(wire, host_pid)
        return ContainerInfo(pid_id, mnt_id, container_id, runtime)

    def resolve_sample(self, data: bytes) -> ContainerInfo | None:
        """:meth:`resolve` for a raw sample (the header's first fields, same in all layouts).

        None for a pair seen already and for a sample too short to hold a header.
        """
        if len(data) < _NS_IDS.size:
            return None
        pid_id, mnt_id, host_pid = _NS_IDS.unpack_from(data)
        if (pid_id, mnt_id) in self._seen:
            return None
        return self.resolve(pid_id, mnt_id, host_pid)

    def seed(self, processes: list[ProcessInfo]) -> list[ContainerInfo]:
        """The containers of a snapshot's processes, one per pair of namespaces, marked
        as seen (so that a recording writes them next to the snapshot, once)."""
        out = []
        for info in processes:
            if not info.pid_ns or not info.mnt_ns:
                continue  # namespaces not readable: no pair to name
            wire = self._as_wire(info.pid_ns, info.mnt_ns)
            if wire in self._seen:
                continue
            self._seen.add(wire)
            if wire == (0, 0):
                out.append(ContainerInfo(0, 0, "", "host"))
                continue
            found = self._cgroup_of(info.host_pid)
            if found is None or self._namespaces(info.host_pid) != wire:
                found = self._lookup(wire, 0)
            out.append(ContainerInfo(wire[0], wire[1], found[1], found[0]))
        return out
