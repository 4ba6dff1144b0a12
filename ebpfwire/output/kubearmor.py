"""Events as KubeArmor logs: the same field names and meanings, so its consumers read ours.

KubeArmor's system monitor turns each event into one log (``tp.Log`` in its Go code) whose
``Operation`` (Process, File, Network, Syscall...) says what kind of thing was done,
``Resource`` to what, ``Data`` how (``syscall=SYS_OPENAT fd=-100 flags=O_RDONLY``) and
``Result`` whether it worked ("Passed", or the errno's message). This module is our own
mapping of the events of this format onto those fields, with the process context of
:mod:`ebpfwire.process.table`; docs/kubearmor-logs.md has the table and an example per event.
As KubeArmor does, an exec gives one log, at its result; the exec's entry, the
security_bprm_check event and do_exit only feed the process table and give no log.

Two versions of KubeArmor's logs (``version``): "newest" (KubeArmor's main branch of 2026:
ExecEvent, EventData, the IMA hashes, the 2025 UDP events, PPID 0 when it is the host's,
no log for a -2/-115 result, which its writer no longer writes) and "2023" (the classic
layout's era). docs/kubearmor-logs.md and docs/kubearmor-versions.md say what differs.
"""

from __future__ import annotations

import posixpath
import socket
import string
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ebpfwire.process.table import EventContext, Program
from ebpfwire.wire import names
from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.catalogue import arg_index, is_syscall_event
from ebpfwire.wire.events import AF_INET, AF_INET6, AF_UNIX, Arg, Event, SockAddr

#: IP protocol numbers by name, as socket(2)'s third argument gives them (0: the default).
_PROTOCOLS = {value: key[len("IPPROTO_"):] for key, value in vars(socket).items()
              if key.startswith("IPPROTO_") and isinstance(value, int)}
_PROTOCOLS[0] = "0"
_QTYPES = {1: "A", 28: "AAAA"}

FILE, PROCESS, NETWORK, SYSCALL = "File", "Process", "Network", "Syscall"
NEWEST, V2023 = "newest", "2023"
VERSIONS = (NEWEST, V2023)
#: The arguments KubeArmor requires of each event it logs (it drops an event with any
#: other count), by event name; the events it has no case for it never logs.
_ARGC = {"open": 2, "openat": 3, "unlink": 2, "unlinkat": 3, "rmdir": 1, "chown": 3,
         "fchownat": 5, "setuid": 1, "setgid": 1, "mount": 5, "umount2": 2, "close": 1,
         "ptrace": 3, "socket": 3, "connect": 2, "accept": 2, "bind": 2, "listen": 2,
         "tcp_connect": 2, "tcp_accept": 2, "tcp_connect_v6": 2, "tcp_accept_v6": 2,
         "udp_sendmsg": 3, "udp_send_skb": 3, "execve": 0, "execveat": 0}
#: Syscalls KubeArmor logs twice when their Operation is not Syscall: the second time as
#: Operation Syscall, Action Audit (for its syscall policies).
_AUDITED = frozenset(("rmdir", "unlink", "chown", "setuid", "setgid", "fchownat", "unlinkat",
                      "ptrace", "mount", "umount2"))
#: Results KubeArmor's newest writer does not write for a syscall (ENOENT, EINPROGRESS).
_UNWRITTEN = (-2, -115)
_HASH_FIELDS = {30: "ProcessHash", 31: "ParentHash", 32: "ResourceHash"}


def _address_text(field: str) -> Callable[[Any], str]:
    def text(value: Any) -> str:
        if not isinstance(value, SockAddr):
            return ""
        if field == "family":
            return names.sock_family_name(value.family) or str(value.family)
        part = getattr(value, field)
        return "" if part is None else str(part)
    return text


#: How an argument's value becomes text in a log (KubeArmor's own conversions).
CONVERSIONS: dict[str, Callable[[Any], str]] = {
    "str": lambda value: value if isinstance(value, str) else "",
    "num": lambda value: "" if value is None else str(value),
    # KubeArmor names AT_REMOVEDIR alone, any other value ""
    "removedir": lambda value: "AT_REMOVEDIR" if value == 0x200 else "",
    "protocol": lambda value: (_PROTOCOLS.get(value, str(value)) if isinstance(value, int)
                               else ""),
    "qtype": lambda value: _QTYPES.get(value, "") if isinstance(value, int) else "",
    # the query's name without its last character (the trailing dot), as KubeArmor cuts it
    "dotless": lambda value: value[:-1] if isinstance(value, str) else "",
    **{field: _address_text(field) for field in ("family", "port", "addr", "path")},
}
#: The flag names of an argument (its text), else its number: the one conversion of the
#: Arg rather than of its value (:func:`flags_text`).
FLAGS = "flags"


def flags_text(arg: Arg | None) -> str:
    """An argument's flag names (its text), else its number; "" when it is absent."""
    if arg is None or arg.value is None:
        return ""
    text = arg.text
    return text if text is not None else str(arg.value)


def _pieces(template: str) -> tuple:
    """A Resource or Data template as pieces: text, or (role, conversion) of an argument
    ("sys": Data's ``syscall=SYS_NAME``; conversion "address": a socket address's form)."""
    out: list = []
    for text, role, conversion, _ in string.Formatter().parse(template):
        if text:
            out.append(text)
        if role is not None:
            out.append((role, conversion or "str"))
    return tuple(out)


#: The Resource of a socket address by its family (KubeArmor writes sin_* for IPv6 too).
ADDRESSES = {
    AF_UNIX: _pieces("sa_family={address:family} sun_path={address:path}"),
    AF_INET: _pieces("sa_family={address:family} sin_port={address:port} "
                     "sin_addr={address:addr}"),
    None: _pieces("sa_family={address:family}"),   # any other family
}
ADDRESSES[AF_INET6] = ADDRESSES[AF_INET]


def address_shape(value: Any) -> int | None | bool:
    """Which of :data:`ADDRESSES` a socket address takes; False: not an address ("")."""
    if not isinstance(value, SockAddr):
        return False
    return value.family if value.family in ADDRESSES else None


_TCP_RESOURCE = "remoteip={remote:addr} port={remote:port} protocol={protocol}"
_UDP = ("sa_family={server:family} sin_port=53",   # KubeArmor writes port 53 whatever
        " domain={qname:dotless} daddr={server:addr} qtype={qtype:qtype}")  # the writer does
#: Operation, Resource and Data of each event KubeArmor logs but an exec (:data:`SHAPES`:
#: as pieces, which the per-event path fills and the bulk path makes templates of), from the
#: arguments with these roles (the catalogue's). "{role}" is a string argument ("" if it
#: is not one), "{role:num}" a number, "{role:flags}" its flag names; the others are
#: :data:`CONVERSIONS`; "{address:address}" a socket address, as :data:`ADDRESSES`.
_TEMPLATES = {
    "open": (FILE, "{path}", "{sys} flags={flags:flags}"),
    "openat": (FILE, "{path}", "{sys} fd={dirfd:num} flags={flags:flags}"),
    "unlinkat": (FILE, "{path}", "{sys} flags={flags:removedir}"),
    "chown": (FILE, "{path}", "{sys} userid={uid:num} group={gid:num}"),
    "fchownat": (FILE, "{path}", "{sys} userid={uid:num} group={gid:num} mode={flags:num}"),
    "close": (FILE, "", "{sys} fd={fd:num}"),
    "unlink": (FILE, "{path}", "{sys}"),
    "rmdir": (FILE, "{path}", "{sys}"),
    "socket": (NETWORK, "domain={domain:flags} type={type:flags} protocol={protocol:protocol}",
               "{sys}"),
    "listen": (NETWORK, "", "{sys} fd={fd:num}"),
    **dict.fromkeys(("connect", "accept", "bind"),
                    (NETWORK, "{address:address}", "{sys} fd={fd:num}")),
    **dict.fromkeys(("tcp_connect", "tcp_connect_v6"), (
        NETWORK, _TCP_RESOURCE, "kprobe=tcp_connect domain={remote:family}")),
    **dict.fromkeys(("tcp_accept", "tcp_accept_v6"), (
        NETWORK, _TCP_RESOURCE, "kprobe=tcp_accept domain={remote:family}")),
    "udp_sendmsg": (NETWORK, _UDP[0], "kfunc=UDP_SENDMSG" + _UDP[1]),
    "udp_send_skb": (NETWORK, _UDP[0], "kfunc=UDP_SENDSKB" + _UDP[1]),
    "setuid": (SYSCALL, "", "{sys} userid={uid:num}"),
    "setgid": (SYSCALL, "", "{sys} userid={gid:num}"),
    # KubeArmor's mount and umount logs read their flags as a number where its parser
    # gave a name: always 0
    "mount": (SYSCALL, "", "{sys} source={mount_source} target={mount_target} "
                           "filesystem={fstype} mountflag=0 data={data}"),
    "umount2": (SYSCALL, "", "{sys} target={mount_target} flag=0"),
    "ptrace": (PROCESS, "{path}", "{sys} request={request:flags} pid={pid:num} "
                                  "process={path}"),
}
SHAPES: dict[str, tuple[str, tuple, tuple]] = {
    name: (operation, _pieces(resource), _pieces(data))
    for name, (operation, resource, data) in _TEMPLATES.items()}


def sys_text(event_id: int, name: str | None) -> str:
    """Data's first word: ``syscall=SYS_OPENAT`` (the number for an id no table names)."""
    return "syscall=SYS_" + (name or str(event_id)).upper()


def expand(pieces: tuple, sys: str, address: Callable[[], int | None | bool]) -> tuple:
    """``pieces`` with "sys" as text and a socket address as the pieces of its shape
    (``address()``: :func:`address_shape` of the event's)."""
    out: list = []
    for piece in pieces:
        if type(piece) is str:
            out.append(piece)
        elif piece[0] == "sys":
            out.append(sys)
        elif piece[1] == "address":
            shape = address()
            out.extend(() if shape is False else ADDRESSES[shape])
        else:
            out.append(piece)
    return tuple(out)


def _arg(args: list[Arg], name: str, role: str) -> Arg | None:
    """The event's argument with ``role`` (the catalogue's), None if absent."""
    index = arg_index(name, role, len(args))
    return args[index] if index is not None and index < len(args) else None


def fields(event: Event, name: str) -> tuple[str, str, str]:
    """Operation, Resource and Data of an event KubeArmor logs (not an exec)."""
    operation, resource, data = SHAPES[name]
    args = event.args

    def arg_of(role: str) -> Arg | None:
        return _arg(args, name, role)

    def address() -> int | None | bool:
        arg = arg_of("address")
        return address_shape(None if arg is None else arg.value)

    sys = sys_text(event.event_id, name)
    return (operation, fill(expand(resource, sys, address), arg_of),
            fill(expand(data, sys, address), arg_of))


def fill(pieces: tuple, arg_of: Callable[[str], Arg | None]) -> str:
    """Expanded pieces filled with the arguments ``arg_of(role)`` gives (None: absent)."""
    out = []
    for piece in pieces:
        if type(piece) is str:
            out.append(piece)
            continue
        role, conversion = piece
        arg = arg_of(role)
        out.append(flags_text(arg) if conversion == FLAGS else
                   CONVERSIONS[conversion](None if arg is None else arg.value))
    return "".join(out)


def sockaddr_resource(addr: SockAddr | None) -> str:
    """A socket address the way KubeArmor's Resource writes one (sin_* for IPv6 too)."""
    arg = Arg(ArgType.SOCKADDR_T, addr)
    return fill(expand((("address", "address"),), "", lambda: address_shape(addr)),
                lambda role: arg)


def result_text(retval: int) -> str:
    """KubeArmor's Result: "Passed", or the message of the negative errno returned."""
    if retval >= 0:
        return "Passed"
    return names.errno_message(-retval) or f"Unknown ({retval})"


def updated_time(wall_ns: int) -> str:
    """KubeArmor's UpdatedTime: UTC, microseconds, a trailing Z."""
    seconds, ns = divmod(wall_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns // 1000:06d}Z"


class LogContext(NamedTuple):
    """What a log takes of an event's process context (:class:`EventContext`): few
    distinct values in a capture, so the bulk path makes each once and numbers it."""

    exe: str                  # the program's path, or its comm (ProcessName)
    command: str              # with its arguments after argv[0] (Source)
    argv: tuple[str, ...]
    parent_exe: str           # ParentProcessName
    container_id: str | None  # "" for the host, None when the capture does not say
    host: bool                # a container record says the namespaces are the host's
    request: tuple[str, tuple[str, ...]] | None   # an exec's exit: what was asked, argv


def log_key(answer: EventContext | None) -> tuple:
    """The parts of an answer a :class:`LogContext` is made of (an Enricher's ``key``)."""
    if answer is None:
        return (None, None, None, False, None)
    container, request = answer.container, answer.exec_request
    return (answer.program, answer.parent_program, answer.container_id,
            container is not None and container.runtime == "host",
            None if request is None else (request.resolved or request.filename, request.argv))


def log_context(program: Program | None, parent: Program | None, container_id: str | None,
                host: bool, request: tuple | None) -> LogContext | None:
    """A :class:`LogContext` from :func:`log_key`'s parts (an Enricher's ``make``); None
    for an event the table cannot place."""
    if program is None:
        return None
    return LogContext(program.name, program.command, program.argv,
                      parent.name if parent is not None else "", container_id, host, request)


#: Operations whose Resource the newest KubeArmor joins to the cwd (:func:`in_cwd`)
JOINED = (FILE, PROCESS)


def in_cwd(resource: str, cwd: str) -> str:
    """As KubeArmor: a Resource not starting with a path, joined to the cwd (an empty one
    too: close's Resource is its cwd), unless the cwd is / or unknown."""
    if resource.split(" ")[0].startswith("/") or not cwd.rstrip("/"):
        return resource
    return posixpath.normpath(posixpath.join(cwd.rstrip("/") + "/", resource))


def log_type(event: Event, context: LogContext | None) -> str | None:
    """HostLog or ContainerLog as KubeArmor decides, or None where it logs nothing.

    KubeArmor's writer gives a process in the host's PID namespace pid_id = mnt_id = 0,
    and its reader looks a container up only when both are non-zero: anything else is
    the host (a process in a mount or network namespace of its own on the host, ``ip
    netns exec``, ``unshare --mount``, is HostLog). With both non-zero, a container the
    capture names (a container record with an id) gives ContainerLog; one it says is the
    host's gives HostLog; one it cannot name KubeArmor drops (it retries the lookup,
    then gives up): None.
    """
    if not (event.pid_id and event.mnt_id):
        return "HostLog"
    if context is not None and context.host:
        return "HostLog"
    return "ContainerLog" if context is not None and context.container_id else None


class KubeArmorLogs:
    """Turns events with their process context into KubeArmor log dicts.

    ``hostname`` and ``boot_time_ns`` come from the capture header (HostName, and the
    wall clock of Timestamp/UpdatedTime); ``cluster`` fills ClusterName when given;
    ``version`` is "newest" or "2023" (:data:`VERSIONS`).
    """

    def __init__(self, hostname: str, boot_time_ns: int, cluster: str = "",
                 version: str = NEWEST):
        if version not in VERSIONS:
            raise ValueError(f"unknown KubeArmor log version {version!r}; known: "
                             f"{', '.join(VERSIONS)}")
        self.hostname = hostname
        self.boot_time_ns = boot_time_ns
        self.cluster = cluster
        self.newest = version == NEWEST

    def log(self, event: Event, context: EventContext | LogContext | None
            ) -> dict[str, Any] | None:
        """The (first) log of one event, or None where KubeArmor logs none."""
        logs = self.logs(event, context)
        return logs[0] if logs else None

    def logs(self, event: Event, context: EventContext | LogContext | None
             ) -> list[dict[str, Any]]:
        """KubeArmor's logs of one event: none (an exec's entry, security_bprm_check and
        do_exit only feed the process table; an event KubeArmor has no case for, or
        whose arguments it would not take; a container it cannot name), one, or two (the
        audited syscalls: the log, then the same as Operation Syscall, Action Audit)."""
        name = event.name
        if (event.errors or not self.takes(name, len(event.args))
                or not self.writes(event.event_id, event.retval)):
            return []
        if isinstance(context, EventContext):
            context = log_context(*log_key(context))
        kind = log_type(event, context)
        if kind is None:
            return []
        parent_exe = context.parent_exe if context is not None else ""
        if name in ("execve", "execveat"):
            operation, resource, data, process_name = self.exec_fields(event, context, name)
            source = parent_exe
        else:
            operation, resource, data = fields(event, name)
            process_name = context.exe if context is not None else event.comm
            source = context.command if context is not None else event.comm
        cwd = event.extra.get("cwd")
        if operation in JOINED and isinstance(cwd, str) and self.newest:
            resource = in_cwd(resource, cwd)
        if not process_name and self.newest:  # KubeArmor's fallback (2025), else no log
            process_name = (resource if operation == PROCESS else source).split(" ")[0]
            if not process_name and operation in (PROCESS, FILE, NETWORK):
                return []
        return self.audited(name, operation, self.base(
            event, context, kind, process_name, parent_exe, source, operation, resource, data))

    def takes(self, name: str | None, argnum: int) -> bool:
        """Whether KubeArmor logs event ``name`` with ``argnum`` arguments."""
        if name not in _ARGC or argnum != _ARGC[name]:
            return False
        # KubeArmor had no UDP events before 2025
        return self.newest or name not in ("udp_sendmsg", "udp_send_skb")

    def writes(self, event_id: int, retval: int) -> bool:
        """Whether KubeArmor's writer writes an event with this result (its newest one
        skips ENOENT and EINPROGRESS of syscalls)."""
        return not (self.newest and retval in _UNWRITTEN and is_syscall_event(event_id))

    @staticmethod
    def audited(name: str, operation: str, log: dict[str, Any]) -> list[dict[str, Any]]:
        """The log, and for the audited syscalls the same as Operation Syscall, Action
        Audit (KubeArmor's syscall policies read that one)."""
        if name in _AUDITED and operation != SYSCALL:
            return [log, {**log, "Operation": SYSCALL, "Action": "Audit"}]
        return [log]

    @staticmethod
    def exec_fields(event: Event, context: LogContext | None,
                    name: str | None) -> tuple[str, str, str, str]:
        """Operation, Resource, Data and ProcessName of an exec's log."""
        data = sys_text(event.event_id, name)
        request = context.request if context is not None else None
        if request is not None:
            exe, argv = request
        elif context is not None and event.retval == 0:
            # its entry is not in the capture: what the table knows of the new program
            exe, argv = context.exe, context.argv
        else:
            exe, argv = "", ()
        # KubeArmor names the process by the program it was asked to run, failed or not
        return PROCESS, " ".join((exe, *argv[1:])) if exe else "", data, exe

    def base(self, event: Event, context: LogContext | None, kind: str,
             process_name: str, parent_name: str, source: str, operation: str,
             resource: str, data: str) -> dict[str, Any]:
        """The log's fields in KubeArmor's order (the bulk path's templates are made of
        its output for a prototype event)."""
        wall = self.boot_time_ns + event.ts
        out: dict[str, Any] = {"Timestamp": wall // 1_000_000_000,
                               "UpdatedTime": updated_time(wall)}
        if self.cluster:
            out["ClusterName"] = self.cluster
        out["HostName"] = self.hostname
        if kind == "ContainerLog":
            out["NamespaceName"] = ""
            out["PodName"] = ""
            out["ContainerID"] = context.container_id if context is not None else ""
            out["ContainerName"] = ""
        ppid = event.ppid
        if self.newest and ppid == event.host_ppid:
            ppid = 0        # its reader zeroes a PPID that is the host's
        out.update({
            "HostPPID": event.host_ppid, "HostPID": event.host_pid, "PPID": ppid,
            "PID": event.pid, "UID": event.uid, "ParentProcessName": parent_name,
            "ProcessName": process_name,
        })
        extra = event.extra
        if self.newest:
            if isinstance(extra.get("cwd"), str):
                out["Cwd"] = extra["cwd"].rstrip("/") + "/"
            if isinstance(extra.get("tty"), str) and extra["tty"]:
                out["TTY"] = extra["tty"]
        out.update({"Source": source, "Operation": operation, "Resource": resource,
                    "Data": data})
        if self.newest:
            fields = _event_data(data)
            if operation == NETWORK:
                fields.update(_event_data(resource))
            if fields:
                out["EventData"] = fields
            found = {_HASH_FIELDS[h.type]: h.digest for h in event.hashes or ()
                     if h.digest is not None and h.type in _HASH_FIELDS}
            out.update(found)
            if found:
                out["HashAlgo"] = "sha256"
            exec_event = {"ExecID": str(extra.get("exec_id", 0))}
            if event.comm:
                exec_event["ExecutableName"] = event.comm
            out["ExecEvent"] = exec_event
        out.update({"Result": result_text(event.retval), "Type": kind})
        return out


def _event_data(text: str) -> dict[str, str]:
    """KubeArmor's EventData of a Data (or a Network Resource): its key=value words, each
    key with a capital first letter."""
    fields = {}
    for word in text.split():
        key, equals, value = word.partition("=")
        if equals:
            fields[key[:1].upper() + key[1:]] = value
    return fields
