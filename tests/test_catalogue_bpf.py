"""The catalogue says what the bundled BPF program writes: held equal to bpf/monitor.bpf.c.

The C source is read with regexes: its tag and event id #defines, its ENC_ARG_TYPE masks,
which writer helper each event calls for each argument, and where each written value
comes from (a syscall parameter, a constant). :func:`mismatches` compares that with
``ebpfwire.wire.catalogue`` (ids, masks, tags and roles) and with the monitor's
``SYSCALL_EVENTS``; an edit on either side that is not made on the other fails here, as
the altered copies of the source show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ebpfwire.kernel.monitor import SYSCALL_EVENTS
from ebpfwire.wire import catalogue
from ebpfwire.wire.argtypes import ArgType, arg_types, make_mask

SOURCE = Path(__file__).resolve().parent.parent / "bpf" / "monitor.bpf.c"

#: The syscall parameters the monitor reads, named as in the man pages (the kernel's
#: SYSCALL_DEFINE names differ between calls for the same thing).
PARAMS = {
    "open": ("pathname", "flags", "mode"),
    "openat": ("dirfd", "pathname", "flags", "mode"),
    "close": ("fd",),
    "unlink": ("pathname",),
    "unlinkat": ("dirfd", "pathname", "flags"),
    "rmdir": ("pathname",),
    "chown": ("pathname", "owner", "group"),
    "fchownat": ("dirfd", "pathname", "owner", "group", "flags"),
    "mount": ("source", "target", "filesystemtype", "mountflags", "data"),
    "umount": ("target", "flags"),
    "setuid": ("uid",),
    "setgid": ("gid",),
    "ptrace": ("request", "pid", "addr", "data"),
    "socket": ("domain", "type", "protocol"),
    "connect": ("sockfd", "addr", "addrlen"),
    "accept": ("sockfd", "addr", "addrlen"),
    "accept4": ("sockfd", "addr", "addrlen", "flags"),
    "bind": ("sockfd", "addr", "addrlen"),
    "listen": ("sockfd", "backlog"),
    "execve": ("pathname", "argv", "envp"),
    "execveat": ("dirfd", "pathname", "argv", "envp", "flags"),
}
#: The role of a written value, by the parameter (or C name) it comes from.
SOURCE_ROLES = {
    "pathname": "path", "filename": "path", "path": "path", "dirfd": "dirfd",
    "AT_FDCWD": "dirfd", "fd": "fd", "sockfd": "fd", "flags": "flags", "mountflags": "flags",
    "owner": "uid", "uid": "uid", "group": "gid", "gid": "gid", "source": "mount_source",
    "target": "mount_target", "filesystemtype": "fstype", "data": "data", "domain": "domain",
    "type": "type", "protocol": "protocol", "proto_name": "protocol", "request": "request",
    "pid": "pid", "addr": "address", "backlog": "backlog", "argv": "argv",
}
#: The roles a typed tag can have: the type code is the program's own word for it.
TAG_ROLES = {
    "FILE_TYPE_T": {"path"}, "SOCKADDR_T": {"address", "remote"}, "STR_ARR_T": {"argv"},
    "OPEN_FLAGS_T": {"flags"}, "EXEC_FLAGS_T": {"flags"}, "UNLINKAT_FLAG_T": {"flags"},
    "MOUNT_FLAG_T": {"flags"}, "UMOUNT_FLAG_T": {"flags"}, "SOCK_DOM_T": {"domain"},
    "SOCK_TYPE_T": {"type"}, "PTRACE_REQ_T": {"request"},
}


@dataclass
class Written:
    """One event the program writes: its id macro(s), mask and its arguments in order."""

    ids: list[str]
    mask: str
    syscall: str | None                  # whose parameters ``a->args[k]`` are
    args: list[tuple[str, str | None]] = field(default_factory=list)   # (tag, source)


@dataclass
class Monitor:
    defines: dict[str, int]
    masks: dict[str, dict[int, str]]
    events: list[Written]
    groups: dict[str, str]               # dispatcher group -> its id macro


def _body(text: str, brace: int) -> str:
    depth = 0
    for at in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[at], 0)
        if depth == 0:
            return text[brace + 1:at]
    raise ValueError("unbalanced braces")


def _writes(body: str, helpers: dict[str, str], variables: dict[str, int],
            syscall: str | None) -> list[tuple[str, str | None]]:
    """(tag, source) of each argument a body writes; a call after ``else`` is the other
    branch of the write before it (ptrace's path: the known one, or "")."""
    out: list[tuple[str, str | None]] = []
    for match in re.finditer(r"(else\s+)?\b(put_\w+)\(\s*&?w\s*(?:,\s*([^;]*))?\);", body):
        alternative, helper, rest = match.groups()
        values = [v.strip() for v in (rest or "").split(",")] if rest else []
        if helper in ("put_tag", "put_u32"):
            tag, values = values[0], values[1:]
        else:
            tag = helpers[helper]
        if alternative:
            assert out and out[-1][0] == tag, f"{helper}: another tag than its other branch"
            continue
        value = values[0] if values else ""
        param = re.fullmatch(r"a->args\[(\d)\]", value)
        names = re.findall(r"\w+", value)
        if param and syscall:
            source = PARAMS[syscall][int(param.group(1))]
        elif names and names[-1] in variables and syscall:
            source = PARAMS[syscall][variables[names[-1]]]
        else:   # a C name that says what it is, else the helper's own ("proto_name")
            known = [n for n in (*names[-1:], helper[len("put_"):]) if n in SOURCE_ROLES]
            source = known[0] if known else None
        out.append((tag, source))
    return out


SYSCALL_EXIT = r"^SYSCALL_EXIT\((\w+),\s*(\w+),\s*\d+,\s*(\w+),\s*(\d+),\s*(\w+)\)\s*\{"


def parse(source: str) -> Monitor:
    """What bpf/monitor.bpf.c writes, as far as the catalogue describes it."""
    text = re.sub(r"/\*.*?\*/", "", source, flags=re.S).replace("\\\n", " ")
    defines = {name: int(value) for name, value in
               re.findall(r"^#define\s+(\w+)\s+\(?(-?\d+)\)?\s*$", text, re.M)}
    masks = {name: {int(slot): tag for slot, tag in
                    re.findall(r"ENC_ARG_TYPE\((\d),\s*(\w+)\)", value)}
             for name, value in re.findall(r"^#define\s+(MASK_\w+)\s+(.*)$", text, re.M)}
    functions = {m.group(1): _body(text, m.end() - 1) for m in re.finditer(
        r"^(?:static __always_inline )?\w+\s+\**(\w+)\([^)]*\)\s*\{", text, re.M)}
    helpers: dict[str, str] = {}
    for name in sorted(n for n in functions if n.startswith("put_")):
        first = re.search(r"\b(put_tag|put_u32)\(w,\s*(\w+)", functions[name])
        if first and first.group(2) in defines:
            helpers[name] = first.group(2)
    for name in (n for n in functions if n.startswith("put_") and n not in helpers):
        called = re.search(r"\b(put_\w+)\(", functions[name])
        if called and called.group(1) in helpers:
            helpers[name] = helpers[called.group(1)]
    events = []
    exited = {}
    for m in re.finditer(SYSCALL_EXIT, text, re.M):
        group, tp, id_macro, _, mask = m.groups()
        exited[group] = id_macro
        events.append(Written([id_macro], mask, tp,
                              _writes(_body(text, m.end() - 1), helpers, {}, tp)))
    for name, body in functions.items():
        begin = re.search(r"begin_event\(&w,\s*(\w+),\s*argnum_of\((\w+)\)", body)
        if not begin:
            continue
        id_macro, mask = begin.groups()
        ids = [id_macro] if id_macro in defines else sorted(set(re.findall(r"\bEV_\w+", body)))
        base = re.sub(r"^(enter|exit)_", "", name.split("__")[0])  # enter_execve: execve
        syscall = base if base in PARAMS else None
        variables = {var: int(k) for var, k in
                     re.findall(r"(\w+) = syscall_arg\(cfg, ctx, rec, (\d)\)", body)}
        events.append(Written(ids, mask, syscall,
                              _writes(body[begin.end():], helpers, variables, syscall)))
    # each syscall a dispatcher serves, by the group of its own tracepoint program
    program_group = {tp: group for group, tp in re.findall(
        r"^SYSCALL_PROGRAM\((\w+),\s*(?:enter|exit),\s*(\w+)\)", text, re.M)}
    groups = {}
    for tp in re.findall(r"case \d+:\s*return native_syscall\(\) \? (?:enter|exit)_(\w+)\(",
                         text):
        group = program_group.get(tp, f"(no SYSCALL_PROGRAM for {tp})")
        groups[group] = exited.get(group, f"EV_{group.upper()}")
    return Monitor(defines, masks, events, groups)


def mismatches(source: str) -> list[str]:
    """Every way the C program and the catalogue (and the monitor's ids) disagree."""
    c = parse(source)
    found = []
    for tag in ArgType:
        if tag.name in c.defines and c.defines[tag.name] != tag:
            found.append(f"tag {tag.name}: C {c.defines[tag.name]}, catalogue {int(tag)}")
    for event_id, name in catalogue.SPECIAL_EVENTS.items():
        macros = [m for m, v in c.defines.items() if m.startswith("EV_") and v == event_id]
        if not macros and event_id < catalogue.UDP_SENDMSG:   # the monitor has no UDP hooks
            found.append(f"special event {name} ({event_id}): no EV_ define in the C")
    written: dict[str, set[int]] = {}
    for event in c.events:
        c_mask = c.masks[event.mask]
        c_tags = [tag for _, tag in sorted(c_mask.items())]
        if [tag.replace("FILE_TYPE_T", "STR_T") for tag in c_tags] != [t for t, _ in event.args]:
            found.append(f"{event.ids} {event.mask}: the C writes {event.args}, its mask "
                         f"says {c_tags}")
        for id_macro in event.ids:
            if id_macro not in c.defines:
                found.append(f"{id_macro}: not defined")
                continue
            name = catalogue.event_name(c.defines[id_macro], "x86_64")
            if name not in catalogue.EVENT_ARGS:
                found.append(f"{id_macro} = {c.defines[id_macro]}: not in the catalogue")
                continue
            if not c_mask:
                written.setdefault(name, set())
                continue         # an exec's result or do_exit: no arguments
            written.setdefault(name, set()).add(1)
            mask = sum(c.defines[tag] << 8 * slot for slot, tag in c_mask.items())
            mask = sum((ArgType.STR_T if t == ArgType.FILE_TYPE_T else t) << 8 * slot
                       for slot, t in enumerate(arg_types(mask)))
            if catalogue.MASKS[name] != mask:
                found.append(f"{name}: C mask {event.mask} {c_mask}, catalogue "
                             f"{catalogue.EVENT_ARGS[name]}")
                continue
            roles = catalogue.roles(name)
            for index, ((_, source), c_tag) in enumerate(zip(event.args, c_tags, strict=True)):
                role = roles[index]
                by_source = SOURCE_ROLES.get(source or "")
                by_tag = TAG_ROLES.get(c_tag)
                if by_source is None and by_tag is None:
                    found.append(f"{name} argument {index}: nothing in the C names its role")
                if (by_source is not None and role != by_source) or (
                        by_tag is not None and role not in by_tag):
                    found.append(f"{name} argument {index}: catalogue role {role!r}, the C "
                                 f"writes {c_tag} from {source!r}")
    # accept4 is written as accept; the monitor has no UDP hooks
    unwritten = set(catalogue.EVENT_ARGS) - set(written) - {"accept4", "udp_sendmsg",
                                                            "udp_send_skb"}
    found += [f"{name}: in the catalogue, never written by the C" for name in sorted(unwritten)]
    groups = {group: c.defines.get(id_macro) for group, id_macro in c.groups.items()}
    if groups != SYSCALL_EVENTS:
        found.append(f"monitor SYSCALL_EVENTS {SYSCALL_EVENTS}, the C dispatches {groups}")
    return found


def test_catalogue_is_what_the_bpf_program_writes():
    source = SOURCE.read_text()
    parsed = parse(source)
    assert len(parsed.events) >= 25 and len(parsed.groups) == 20   # the parser found them
    assert mismatches(source) == []


def test_each_exit_handler_reads_the_arguments_it_writes():
    """An exit handler reads its syscall's first `nargs` registers: a body using a->args[k]
    at or past nargs would write 0 where the argument was."""
    text = re.sub(r"/\*.*?\*/", "", SOURCE.read_text(), flags=re.S).replace("\\\n", " ")
    checked = 0
    for m in re.finditer(SYSCALL_EXIT, text, re.M):
        used = [int(k) for k in re.findall(r"a->args\[(\d)\]", _body(text, m.end() - 1))]
        assert max(used, default=-1) < int(m.group(4)), m.group(0)
        checked += 1
    assert checked >= 18


@pytest.mark.parametrize(("old", "new", "reported"), [
    ("ENC_ARG_TYPE(1, OPEN_FLAGS_T))", "ENC_ARG_TYPE(1, INT_T))", "open: C mask MASK_OPEN"),
    ("#define EV_TCP_ACCEPT   401", "#define EV_TCP_ACCEPT   404", "EV_TCP_ACCEPT = 404"),
    ("#define EV_BPRM         352", "#define EV_BPRM         353", "security_bprm_check (352)"),
    ("\tput_user_str(w, a->args[1]);\n\tput_u32(w, OPEN_FLAGS_T, a->args[2]);",
     "\tput_user_str(w, a->args[0]);\n\tput_u32(w, OPEN_FLAGS_T, a->args[2]);",
     "openat argument 1: catalogue role 'path'"),
    ("\tput_int(w, a->args[0]);\n\tput_int(w, a->args[1]);",
     "\tput_int(w, a->args[1]);\n\tput_int(w, a->args[0]);", "listen argument 0"),
    ("#define STR_T             10", "#define STR_T             9", "tag STR_T: C 9"),
    ("SYSCALL_EXIT(setuid, setuid, 105, EV_SETUID, 1, MASK_SETID)",
     "SYSCALL_EXIT(setuid, setuid, 105, EV_SETGID, 1, MASK_SETID)", "monitor SYSCALL_EVENTS"),
])
def test_a_changed_program_is_reported(old, new, reported):
    source = SOURCE.read_text()
    assert source.count(old) == 1
    found = mismatches(source.replace(old, new))
    assert any(reported in line for line in found), found


def test_a_changed_catalogue_is_reported(monkeypatch):
    specs = dict(catalogue.EVENT_ARGS)
    specs["chown"] = (specs["chown"][0], catalogue.ArgSpec("gid", ArgType.INT_T),
                      catalogue.ArgSpec("uid", ArgType.INT_T))
    monkeypatch.setattr(catalogue, "EVENT_ARGS", specs)
    monkeypatch.setattr(catalogue, "roles", lambda name: tuple(
        s.role for s in specs.get(name, ()) if s is not None))
    found = mismatches(SOURCE.read_text())
    assert any("chown argument 1: catalogue role 'gid'" in line for line in found), found


def test_a_changed_catalogue_mask_is_reported(monkeypatch):
    masks = dict(catalogue.MASKS)
    masks["open"] = make_mask(ArgType.STR_T, ArgType.INT_T)
    monkeypatch.setattr(catalogue, "MASKS", masks)
    found = mismatches(SOURCE.read_text())
    assert any(line.startswith("open: C mask MASK_OPEN") for line in found), found
