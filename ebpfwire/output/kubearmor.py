"""Events as KubeArmor logs: the same field names and meanings, so its consumers read ours.

KubeArmor's system monitor turns each event into one log (``tp.Log`` in its Go code) whose
``Operation`` (Process, File, Network, Syscall...) says what kind of thing was done,
``Resource`` to what, ``Data`` how (``syscall=SYS_OPENAT fd=-100 flags=O_RDONLY``) and
``Result`` whether it worked ("Passed", or the errno's message). This module is our own
mapping of the events of this format onto those fields, with the process context of
:mod:`ebpfwire.process.table`; docs/kubearmor-logs.md has the table and an example per event.
As KubeArmor does, an exec gives one log, at its result; the exec's entry, the
security_bprm_check event and do_exit only feed the process table and give no log.
"""

from __future__ import annotations

import posixpath
import socket
import time
from typing import Any

from ebpfwire.process.table import EventContext
from ebpfwire.wire import names
from ebpfwire.wire.catalogue import (
    DO_EXIT,
    SECURITY_BPRM_CHECK,
    TCP_ACCEPT,
    TCP_ACCEPT_V6,
    TCP_CONNECT,
    TCP_CONNECT_V6,
    arg_index,
)
from ebpfwire.wire.events import AF_INET, AF_INET6, AF_UNIX, Arg, Event, SockAddr

#: IP protocol numbers by name, as socket(2)'s third argument gives them (0: the default).
_PROTOCOLS = {value: key[len("IPPROTO_"):] for key, value in vars(socket).items()
              if key.startswith("IPPROTO_") and isinstance(value, int)}
_PROTOCOLS[0] = "0"
_QTYPES = {1: "A", 28: "AAAA"}
_TCP = {TCP_CONNECT: "tcp_connect", TCP_ACCEPT: "tcp_accept", TCP_CONNECT_V6: "tcp_connect",
        TCP_ACCEPT_V6: "tcp_accept"}

FILE, PROCESS, NETWORK, SYSCALL = "File", "Process", "Network", "Syscall"


def _value(args: list[Arg], name: str, role: str) -> Any:
    """The value of the event's argument with ``role`` (the catalogue's), None if absent."""
    index = arg_index(name, role)
    return args[index].value if index is not None and index < len(args) else None


def _str(args: list[Arg], name: str, role: str) -> str:
    value = _value(args, name, role)
    return value if isinstance(value, str) else ""


def _num(args: list[Arg], name: str, role: str) -> str:
    value = _value(args, name, role)
    return "" if value is None else str(value)


def _flags(args: list[Arg], name: str, role: str) -> str:
    index = arg_index(name, role)
    if index is None or index >= len(args) or args[index].value is None:
        return ""
    text = args[index].text
    return text if text is not None else str(args[index].value)


def sockaddr_resource(addr: SockAddr | None) -> str:
    """A socket address the way KubeArmor's Resource writes one (sin_* for IPv6 too)."""
    if addr is None:
        return ""
    family = names.sock_family_name(addr.family) or str(addr.family)
    if addr.family == AF_UNIX:
        return f"sa_family={family} sun_path={addr.path or ''}"
    if addr.family in (AF_INET, AF_INET6):
        return f"sa_family={family} sin_port={addr.port} sin_addr={addr.addr}"
    return f"sa_family={family}"


def _syscall(event: Event, name: str | None) -> str:
    """Data's first word: ``syscall=SYS_OPENAT`` (the number for an id no table names)."""
    return "syscall=SYS_" + (name or str(event.event_id)).upper()


def _file(event: Event, args: list[Arg], name: str) -> tuple[str, str, str]:
    sys = _syscall(event, name)
    path = _str(args, name, "path")
    if name == "open":
        return FILE, path, f"{sys} flags={_flags(args, name, 'flags')}"
    if name == "openat":
        return FILE, path, (f"{sys} fd={_num(args, name, 'dirfd')} "
                            f"flags={_flags(args, name, 'flags')}")
    if name == "unlinkat":
        return FILE, path, f"{sys} flags={_flags(args, name, 'flags')}"
    if name == "chown":
        return FILE, path, (f"{sys} userid={_num(args, name, 'uid')} "
                            f"group={_num(args, name, 'gid')}")
    if name == "fchownat":
        return FILE, path, (f"{sys} userid={_num(args, name, 'uid')} "
                            f"group={_num(args, name, 'gid')} mode={_num(args, name, 'flags')}")
    if name == "close":
        return FILE, "", f"{sys} fd={_num(args, name, 'fd')}"
    return FILE, path, sys   # unlink, rmdir


def _network(event: Event, args: list[Arg], name: str) -> tuple[str, str, str]:
    sys = _syscall(event, name)
    if name == "socket":
        protocol = _value(args, name, "protocol")
        proto = _PROTOCOLS.get(protocol, str(protocol)) if isinstance(protocol, int) else ""
        return NETWORK, (f"domain={_flags(args, name, 'domain')} "
                         f"type={_flags(args, name, 'type')} protocol={proto}"), sys
    if name == "listen":
        return NETWORK, "", f"{sys} fd={_num(args, name, 'fd')}"
    if event.event_id in _TCP:
        addr = _value(args, name, "remote")
        family = names.sock_family_name(addr.family) if isinstance(addr, SockAddr) else ""
        port = addr.port if isinstance(addr, SockAddr) else ""
        ip = addr.addr if isinstance(addr, SockAddr) else ""
        return NETWORK, f"remoteip={ip} port={port} protocol={_str(args, name, 'protocol')}", (
            f"kprobe={_TCP[event.event_id]} domain={family}")
    if name in ("udp_sendmsg", "udp_send_skb"):
        qtype = _value(args, name, "qtype")
        shown = _QTYPES.get(qtype, str(qtype)) if isinstance(qtype, int) else ""
        return NETWORK, "", (f"kfunc={name.upper()},"
                             f"domain={_str(args, name, 'qname').rstrip('.')},qtype={shown}")
    # connect, accept, bind: fd and a socket address
    addr = _value(args, name, "address")
    return NETWORK, sockaddr_resource(addr if isinstance(addr, SockAddr) else None), (
        f"{sys} fd={_num(args, name, 'fd')}")


def _syscall_op(event: Event, args: list[Arg], name: str | None) -> tuple[str, str, str]:
    sys = _syscall(event, name)
    if name == "setuid":
        return SYSCALL, "", f"{sys} userid={_num(args, name, 'uid')}"
    if name == "setgid":
        return SYSCALL, "", f"{sys} userid={_num(args, name, 'gid')}"
    if name == "mount":
        return SYSCALL, "", (f"{sys} source={_str(args, name, 'mount_source')} "
                             f"target={_str(args, name, 'mount_target')} "
                             f"filesystem={_str(args, name, 'fstype')} "
                             f"mountflag={_num(args, name, 'flags')} "
                             f"data={_str(args, name, 'data')}")
    if name == "umount2":
        return SYSCALL, "", (f"{sys} target={_str(args, name, 'mount_target')} "
                             f"flag={_num(args, name, 'flags')}")
    return SYSCALL, "", sys


def _ptrace(event: Event, args: list[Arg], name: str) -> tuple[str, str, str]:
    target = _str(args, name, "path")
    return PROCESS, target, (f"{_syscall(event, name)} request={_flags(args, name, 'request')} "
                             f"pid={_num(args, name, 'pid')} process={target}")


_OPERATIONS = {
    **dict.fromkeys(("open", "openat", "close", "unlink", "unlinkat", "rmdir", "chown",
                     "fchownat"), _file),
    **dict.fromkeys(("socket", "connect", "accept", "accept4", "bind", "listen",
                     "tcp_connect", "tcp_accept", "tcp_connect_v6", "tcp_accept_v6",
                     "udp_sendmsg", "udp_send_skb"), _network),
    "ptrace": _ptrace,
}


def result_text(retval: int) -> str:
    """KubeArmor's Result: "Passed", or the message of the negative errno returned."""
    if retval >= 0:
        return "Passed"
    return names.errno_message(-retval) or f"Unknown ({retval})"


def updated_time(wall_ns: int) -> str:
    """KubeArmor's UpdatedTime: UTC, microseconds, a trailing Z."""
    seconds, ns = divmod(wall_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns // 1000:06d}Z"


def log_type(event: Event, context: EventContext | None) -> str:
    """HostLog or ContainerLog: from the capture's container record where there is one,
    else KubeArmor's own rule (both namespace ids non-zero: a container)."""
    container = context.container if context is not None else None
    if container is not None:
        return "HostLog" if container.runtime == "host" else "ContainerLog"
    return "ContainerLog" if event.pid_id and event.mnt_id else "HostLog"


class KubeArmorLogs:
    """Turns events with their process context into KubeArmor log dicts.

    ``hostname`` and ``boot_time_ns`` come from the capture header (HostName, and the
    wall clock of Timestamp/UpdatedTime); ``cluster`` fills ClusterName when given.
    """

    def __init__(self, hostname: str, boot_time_ns: int, cluster: str = ""):
        self.hostname = hostname
        self.boot_time_ns = boot_time_ns
        self.cluster = cluster

    def log(self, event: Event, context: EventContext | None) -> dict[str, Any] | None:
        """The log of one event, or None for the events KubeArmor logs none for (an exec's
        entry and security_bprm_check, folded into the exec's log, and do_exit)."""
        name = event.name
        if event.event_id in (DO_EXIT, SECURITY_BPRM_CHECK):
            return None
        args = event.args
        parent_exe = context.parent_exe if context is not None else ""
        if name in ("execve", "execveat"):
            if event.argnum:
                return None
            operation, resource, data, process_name = self._exec(event, context, name)
            source = parent_exe
        else:
            handler = _OPERATIONS.get(name or "", _syscall_op)
            operation, resource, data = handler(event, args, name)
            process_name = context.exe if context is not None else event.comm
            source = context.program.command if context is not None else event.comm
        cwd = event.extra.get("cwd")
        if (operation in (FILE, PROCESS) and resource and not resource.startswith("/")
                and isinstance(cwd, str) and cwd.startswith("/")):
            resource = posixpath.normpath(posixpath.join(cwd, resource))  # as KubeArmor
        return self._base(event, context, process_name, parent_exe, source, operation,
                          resource, data)

    @staticmethod
    def _exec(event: Event, context: EventContext | None,
              name: str | None) -> tuple[str, str, str, str]:
        data = _syscall(event, name)
        request = context.exec_request if context is not None else None
        if request is None:
            # its entry is not in the capture: what the table knows of the new program
            program = context.program if context is not None and event.retval == 0 else None
            exe = program.name if program is not None else ""
            argv = program.argv if program is not None else ()
        else:
            exe, argv = request.resolved or request.filename, request.argv
        return PROCESS, " ".join((exe, *argv[1:])) if exe else "", data, exe

    def _base(self, event: Event, context: EventContext | None, process_name: str,
              parent_name: str, source: str, operation: str, resource: str,
              data: str) -> dict[str, Any]:
        wall = self.boot_time_ns + event.ts
        kind = log_type(event, context)
        out: dict[str, Any] = {"Timestamp": wall // 1_000_000_000,
                               "UpdatedTime": updated_time(wall)}
        if self.cluster:
            out["ClusterName"] = self.cluster
        out["HostName"] = self.hostname
        if kind == "ContainerLog":
            container_id = context.container_id if context is not None else None
            out["NamespaceName"] = ""
            out["PodName"] = ""
            out["ContainerID"] = container_id or ""
            out["ContainerName"] = ""
        out.update({
            "HostPPID": event.host_ppid, "HostPID": event.host_pid, "PPID": event.ppid,
            "PID": event.pid, "UID": event.uid, "ParentProcessName": parent_name,
            "ProcessName": process_name,
        })
        extra = event.extra
        if isinstance(extra.get("cwd"), str):
            out["Cwd"] = extra["cwd"].rstrip("/") + "/"
        if isinstance(extra.get("tty"), str) and extra["tty"]:
            out["TTY"] = extra["tty"]
        out.update({"Source": source, "Operation": operation, "Resource": resource,
                    "Data": data,
                    "Result": result_text(event.retval), "Type": kind})
        return out
