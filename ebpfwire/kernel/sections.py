"""Section names to program types: libbpf's ``SEC()`` conventions.

A program's section says what it is (``BPF_PROG_TYPE_*``, the expected attach type) and
where it attaches (the rest of the name). :func:`program_kind` reads it; the tracing
kinds also say which ``vmlinux`` BTF type names their attach target.
"""

from __future__ import annotations

from dataclasses import dataclass

# program types (enum bpf_prog_type)
SOCKET_FILTER = 1
KPROBE = 2
SCHED_CLS = 3
SCHED_ACT = 4
TRACEPOINT = 5
XDP = 6
PERF_EVENT = 7
CGROUP_SKB = 8
RAW_TRACEPOINT = 17
RAW_TRACEPOINT_WRITABLE = 24
TRACING = 26
LSM = 29
SYSCALL = 31
# expected attach types (enum bpf_attach_type)
BPF_TRACE_RAW_TP = 23
BPF_TRACE_FENTRY = 24
BPF_TRACE_FEXIT = 25
BPF_MODIFY_RETURN = 26
BPF_LSM_MAC = 27
BPF_TRACE_ITER = 28
BPF_XDP = 37
BPF_TRACE_KPROBE_MULTI = 42
BPF_F_SLEEPABLE = 1 << 4


@dataclass(frozen=True)
class ProgramKind:
    """What a section prefix means. ``attach`` names how :mod:`ebpfwire.kernel.attach`
    attaches it ("" = no automatic attachment); ``btf_target`` the prefix of the vmlinux
    type whose id the kernel wants at load (``"btf_trace_"`` + name for tp_btf)."""

    prefix: str
    prog_type: int
    attach: str = ""
    expected_attach_type: int = 0
    btf_target: str | None = None
    btf_kind: str = "FUNC"
    flags: int = 0


KINDS = [
    ProgramKind("tracepoint/", TRACEPOINT, "tracepoint"),
    ProgramKind("tp/", TRACEPOINT, "tracepoint"),
    ProgramKind("raw_tracepoint.w/", RAW_TRACEPOINT_WRITABLE, "raw_tracepoint"),
    ProgramKind("raw_tp.w/", RAW_TRACEPOINT_WRITABLE, "raw_tracepoint"),
    ProgramKind("raw_tracepoint/", RAW_TRACEPOINT, "raw_tracepoint"),
    ProgramKind("raw_tp/", RAW_TRACEPOINT, "raw_tracepoint"),
    ProgramKind("tp_btf/", TRACING, "tracing", BPF_TRACE_RAW_TP, "btf_trace_", "TYPEDEF"),
    ProgramKind("fentry.s/", TRACING, "tracing", BPF_TRACE_FENTRY, "", flags=BPF_F_SLEEPABLE),
    ProgramKind("fentry/", TRACING, "tracing", BPF_TRACE_FENTRY, ""),
    ProgramKind("fexit.s/", TRACING, "tracing", BPF_TRACE_FEXIT, "", flags=BPF_F_SLEEPABLE),
    ProgramKind("fexit/", TRACING, "tracing", BPF_TRACE_FEXIT, ""),
    ProgramKind("fmod_ret.s/", TRACING, "tracing", BPF_MODIFY_RETURN, "",
                flags=BPF_F_SLEEPABLE),
    ProgramKind("fmod_ret/", TRACING, "tracing", BPF_MODIFY_RETURN, ""),
    ProgramKind("lsm.s/", LSM, "tracing", BPF_LSM_MAC, "bpf_lsm_", flags=BPF_F_SLEEPABLE),
    ProgramKind("lsm/", LSM, "tracing", BPF_LSM_MAC, "bpf_lsm_"),
    ProgramKind("iter.s/", TRACING, "iter", BPF_TRACE_ITER, "bpf_iter_",
                flags=BPF_F_SLEEPABLE),
    ProgramKind("iter/", TRACING, "iter", BPF_TRACE_ITER, "bpf_iter_"),
    ProgramKind("kprobe/", KPROBE, "kprobe"),
    ProgramKind("kretprobe/", KPROBE, "kretprobe"),
    ProgramKind("ksyscall/", KPROBE, "ksyscall"),
    ProgramKind("kretsyscall/", KPROBE, "kretsyscall"),
    ProgramKind("kprobe.multi/", KPROBE, "", BPF_TRACE_KPROBE_MULTI),
    ProgramKind("kretprobe.multi/", KPROBE, "", BPF_TRACE_KPROBE_MULTI),
    ProgramKind("uprobe.s", KPROBE, "uprobe", flags=BPF_F_SLEEPABLE),
    ProgramKind("uretprobe.s", KPROBE, "uretprobe", flags=BPF_F_SLEEPABLE),
    ProgramKind("uprobe", KPROBE, "uprobe"),
    ProgramKind("uretprobe", KPROBE, "uretprobe"),
    ProgramKind("usdt", KPROBE),  # loads; attaching needs libbpf's USDT spec maps
    ProgramKind("perf_event", PERF_EVENT, "perf_event"),
    ProgramKind("socket", SOCKET_FILTER),
    ProgramKind("xdp", XDP, "", BPF_XDP),
    ProgramKind("tc", SCHED_CLS),
    ProgramKind("classifier", SCHED_CLS),
    ProgramKind("action", SCHED_ACT),
    ProgramKind("cgroup_skb/", CGROUP_SKB),
    ProgramKind("syscall", SYSCALL),
]


def program_kind(section: str) -> tuple[ProgramKind, str] | None:
    """(kind, attach target: the rest of the name) of a program section; None if unknown."""
    for kind in KINDS:
        prefix = kind.prefix
        if prefix.endswith("/"):
            if section.startswith(prefix):
                return kind, section[len(prefix) :]
        elif section == prefix or section.startswith(prefix + "/"):
            return kind, section[len(prefix) + 1 :]
    return None
