"""Checks of the committed BPF object ``ebpfwire/data/monitor.bpf.o``.

The non-live tests read the ELF file only (pyelftools): what the pure-Python loader
relies on (no global data, tracepoint sections, ``<event>__<phase>`` program names,
the maps of the contract) must hold for the object users get without a compiler.
The live test loads it and checks real events from a child process byte for byte
through the decoder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

OBJECT = Path(__file__).resolve().parent.parent / "ebpfwire" / "data" / "monitor.bpf.o"

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_RINGBUF = 27
ALLOWED_MAP_TYPES = {
    BPF_MAP_TYPE_HASH,
    BPF_MAP_TYPE_ARRAY,
    BPF_MAP_TYPE_PERF_EVENT_ARRAY,
    BPF_MAP_TYPE_PERCPU_ARRAY,
    BPF_MAP_TYPE_LRU_HASH,
}
MAX_BUFFER_SIZE = 32768
CONFIG_SIZE = 38 * 4 + 16  # struct monitor_config (bpf/monitor_config.h): 38 u32, char comm[16]

# program group -> the raw tracepoints its programs attach to
EXPECTED_TRACEPOINTS = {
    "sys": {"sys_enter", "sys_exit"},  # the dispatchers: every syscall event's handler
    "ptrace": {"sched_process_exec", "sched_process_exit"},
    "security_bprm_check": {"sched_process_exec"},
    # an exec's entry event whose strings were not readable at entry, from the new image
    "execve": {"sched_process_exec"},
    "execveat": {"sched_process_exec"},
    "do_exit": {"sched_process_exit"},  # task->exit_code: no syscall or signal hooked
    "tcp": {"inet_sock_set_state"},
    "tree": {"sched_process_fork", "sched_process_exit"},  # the pid filter's process tree
}


@pytest.fixture(scope="module")
def elf():
    """The committed object, open for the whole module."""
    with OBJECT.open("rb") as f:
        yield ELFFile(f)


def program_sections(elf: ELFFile) -> dict[str, str]:
    """Program function name -> its ELF section, for every executable section."""
    symtab = elf.get_section_by_name(".symtab")
    out = {}
    for sym in symtab.iter_symbols():
        if sym["st_info"]["type"] != "STT_FUNC":
            continue
        section = elf.get_section(sym["st_shndx"])
        out[sym.name] = section.name
    return out


def test_is_a_relocatable_little_endian_bpf_object(elf):
    assert elf["e_machine"] == "EM_BPF"
    assert elf["e_type"] == "ET_REL"
    assert elf.little_endian and elf.elfclass == 64


def test_no_global_data_sections(elf):
    names = [s.name for s in elf.iter_sections()]
    forbidden = [n for n in names if n in (".data", ".bss") or n.startswith((".rodata", ".data."))]
    assert forbidden == [], f"the loader supports no global data; found sections {forbidden}"


def test_no_subprograms_in_text(elf):
    text = elf.get_section_by_name(".text")
    assert text is None or text.data_size == 0, "helpers must be inlined: .text holds code"


def test_only_maps_and_license_are_writable_or_allocated_data(elf):
    data_like = [
        s.name
        for s in elf.iter_sections()
        if s["sh_flags"] & SH_FLAGS.SHF_ALLOC and not s["sh_flags"] & SH_FLAGS.SHF_EXECINSTR
    ]
    assert sorted(data_like) == [".maps", "license"]


def test_license_is_gpl(elf):
    assert elf.get_section_by_name("license").data() == b"GPL\0"


def test_debug_info_stripped_btf_kept(elf):
    names = {s.name for s in elf.iter_sections()}
    assert ".BTF" in names
    assert not [n for n in names if n.startswith(".debug")]


def test_programs_are_tracepoints_named_event_phase(elf):
    progs = program_sections(elf)
    groups: dict[str, set[str]] = {}
    for name, section in progs.items():
        kind, _, attach = section.partition("/")
        if kind == "tracepoint":  # a syscall handler on its own syscalls/ tracepoint
            category, _, attach = attach.partition("/")
            assert category == "syscalls" and name.split("__")[1] == attach[4:], name
            continue
        assert kind == "raw_tracepoint", f"{name}: section {section}"
        event, sep, phase = name.partition("__")
        assert sep and event and phase, f"{name}: expected <event>__<phase>"
        groups.setdefault(event, set()).add(attach)
    assert groups == EXPECTED_TRACEPOINTS


def test_only_exec_is_read_at_entry(elf):
    """Every other syscall event is written at its exit alone (its arguments from the
    registers), so tracing it adds one tracepoint to every syscall of the machine, not two."""
    entries = {name.split("__")[0] for name, section in program_sections(elf).items()
               if section.startswith("tracepoint/syscalls/sys_enter_")}
    exits = {name.split("__")[0] for name, section in program_sections(elf).items()
             if section.startswith("tracepoint/syscalls/sys_exit_")}
    assert entries == {"execve", "execveat"}
    assert {"close", "openat", "connect", "accept", "setuid", "mount"} <= exits


def test_program_names_are_unique_per_section(elf):
    progs = program_sections(elf)
    pairs = [(s, n) for n, s in progs.items()]
    assert len(pairs) == len(set(pairs))


@pytest.fixture(scope="module")
def maps():
    """The map definitions as the pure-Python loader reads them from .maps BTF."""
    from ebpfwire.kernel.objfile import read_spec

    return read_spec(OBJECT).maps


def test_contract_maps(maps):
    events = maps["events"]
    assert events.type == BPF_MAP_TYPE_PERF_EVENT_ARRAY
    assert (events.key_size, events.value_size, events.max_entries) == (4, 4, 0)
    config = maps["config"]
    assert config.type == BPF_MAP_TYPE_ARRAY
    assert (config.key_size, config.value_size, config.max_entries) == (4, CONFIG_SIZE, 1)


def test_scratch_buffer_and_no_pairing_map(maps):
    scratch = maps["scratch"]
    assert scratch.type == BPF_MAP_TYPE_PERCPU_ARRAY
    assert scratch.value_size >= MAX_BUFFER_SIZE and scratch.max_entries == 1
    # a syscall's arguments are read from its registers at its exit: nothing kept per task
    assert "args_map" not in maps


def test_only_supported_map_types(maps):
    bad = {name: m.type for name, m in maps.items() if m.type not in ALLOWED_MAP_TYPES}
    assert bad == {}


# ---- live: real events through the decoder ------------------------------------------

WORKLOAD = textwrap.dedent(
    """
    import os, socket, subprocess, sys
    sys.stdin.readline()                      # wait until the monitor is attached
    path = sys.argv[1]
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    subprocess.run(["/bin/true"] + ["arg%d" % i for i in range(25)])
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    os.waitpid(pid, 0)
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", int(sys.argv[2])))
    finally:
        s.close()
    """
)


@pytest.mark.live
def test_live_events_have_the_classic_layout(tmp_path):
    import ebpfwire
    from ebpfwire.kernel import perf
    from ebpfwire.kernel.monitor import Monitor

    target = tmp_path / "bpf-object-test-file"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD, str(target), str(port)],
        stdin=subprocess.PIPE,
        text=True,
    )
    events = []
    try:
        with Monitor(
            events=["openat", "execve", "do_exit", "tcp"], pid=child.pid, page_count=16
        ) as mon:
            child.stdin.write("go\n")
            child.stdin.flush()
            child.wait(timeout=30)
            # drain until the reader is idle; the workload has ended
            while batch := mon.reader.read_batch(timeout=0.5):
                events += [ebpfwire.decode(r.data) for r in batch if isinstance(r, perf.Sample)]
            assert mon.reader.lost_total == 0
    finally:
        server.close()
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0

    opens = [e for e in events if e.event_id == 257 and e.args[1].value == str(target)]
    assert len(opens) == 1
    (opened,) = opens
    assert opened.argnum == 3 and opened.retval >= 0
    assert opened.args[0].value == -100  # AT_FDCWD
    assert opened.args[2].value & (os.O_CREAT | os.O_WRONLY) == os.O_CREAT | os.O_WRONLY
    assert (opened.host_pid, opened.pid, opened.pid_id, opened.mnt_id) == (child.pid,) * 2 + (0, 0)
    assert opened.host_ppid == opened.ppid == os.getpid()
    assert opened.uid == os.getuid()

    execs = [e for e in events if e.event_id == 59 and e.argnum == 2]
    assert [e.args[0].value for e in execs] == ["/bin/true"]
    argv = execs[0].args[1].value
    assert argv == ["/bin/true"] + [f"arg{i}" for i in range(19)] + ["..."]

    exits = {e.host_pid: e.retval for e in events if e.event_id == 351}
    assert exits[child.pid] == 0
    assert 3 << 8 in exits.values()  # the forked child's exit(3), wait(2) style

    connects = [e for e in events if e.event_id == 400]
    assert len(connects) == 1
    proto, addr = connects[0].args
    assert proto.value == "TCP"
    assert (addr.value.family, addr.value.addr, addr.value.port) == (2, "127.0.0.1", port)
    assert time.monotonic_ns() > opened.ts  # bpf_ktime_get_ns: CLOCK_MONOTONIC


def test_ringbuf_object_is_the_same_program_with_a_ring():
    from ebpfwire.kernel.monitor import bundled_object
    from ebpfwire.kernel.objfile import read_spec

    perf_obj, ring_obj = read_spec(OBJECT), read_spec(bundled_object("ringbuf"))
    assert [(p.name, p.section) for p in ring_obj.programs.values()] == [
        (p.name, p.section) for p in perf_obj.programs.values()]
    assert ring_obj.maps["events"].type == BPF_MAP_TYPE_RINGBUF
    for obj in (perf_obj, ring_obj):  # failed outputs, counted by the program
        drops = obj.maps["drops"]
        assert (drops.type, drops.key_size, drops.value_size, drops.max_entries) == (
            BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 1)
    assert set(ring_obj.maps) == set(perf_obj.maps)
