"""Argument types and the option groups several commands share."""

from __future__ import annotations

import argparse
import mmap
from collections.abc import Iterable

from ebpfwire.wire.layouts import LAYOUTS

PID_MAX = 4_194_304    # PID_MAX_LIMIT on 64-bit Linux: no pid is larger
COMM_MAX = 15
RING_PAGES_MAX = 1 << 16  # 256 MiB per CPU with 4 KiB pages
RING_BYTES_MAX = 1 << 30  # the monitor's bound, for either transport
DURATION_MAX = 1e9     # s (about 31 years): a bound that keeps the deadline arithmetic exact


def integer(text: str) -> int:
    """An integer as Python writes it (42, 0x2a, 0o52): the argument type of sizes and ids."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None


def pid_type(text: str) -> int:
    """A process id: 1 to PID_MAX."""
    value = integer(text)
    if not 1 <= value <= PID_MAX:
        raise argparse.ArgumentTypeError(f"expected a pid from 1 to {PID_MAX}, found {text}")
    return value


def ring_pages_type(text: str) -> int:
    """Perf ring data pages per CPU: a power of two, 1 to RING_PAGES_MAX."""
    value = integer(text)
    if value < 1 or value & (value - 1) or value > RING_PAGES_MAX:
        raise argparse.ArgumentTypeError(
            f"expected a power of two from 1 to {RING_PAGES_MAX}, found {text}")
    return value


def ring_bytes_type(text: str) -> int:
    """Ring size in bytes: a power of two, whole pages, at most RING_BYTES_MAX."""
    value = integer(text)
    page = mmap.PAGESIZE
    if value < page or value & (value - 1) or value > RING_BYTES_MAX:
        raise argparse.ArgumentTypeError(
            f"expected a power of two from {page} (one page) to {RING_BYTES_MAX}, found {text}")
    return value


def comm_type(text: str) -> str:
    """A task name: at most 15 bytes, as the kernel keeps it (TASK_COMM_LEN 16)."""
    if not text or len(text.encode("utf-8", "surrogateescape")) > COMM_MAX:
        raise argparse.ArgumentTypeError(
            f"expected a task name of 1 to {COMM_MAX} bytes (the kernel cuts longer names), "
            f"found {text!r}")
    return text


def duration_type(text: str) -> float:
    """Seconds: a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, found {text!r}") from None
    if not 0 < value <= DURATION_MAX:  # also false for nan
        raise argparse.ArgumentTypeError(
            f"expected seconds above 0 and at most {DURATION_MAX:.0e}, found {text}")
    return value


def names_type(text: str) -> str:
    """A comma list of names, at least one: an empty list would mean every event."""
    if not any(name.strip() for name in text.split(",")):
        raise argparse.ArgumentTypeError(
            f"expected a comma list of one or more names (leave the option out for every "
            f"event), found {text!r}")
    return text


def names_list(values: Iterable[str] | None) -> list[str]:
    """The names of a repeatable comma-list option (--events a,b --events c), blanks dropped."""
    return [name.strip() for value in values or () for name in value.split(",") if name.strip()]


def follow_forks_option(p: argparse.ArgumentParser) -> None:
    """-f/--follow-forks, strace's habit: -p always follows the forks, so it asks for
    what is done anyway."""
    p.add_argument("-f", "--follow-forks", action="store_true",
                   help="follow forks (always done: -p PID is the process and its "
                        "descendants; accepted as strace -f)")


FORMATS = ("table", "jsonl", "json", "kubearmor")


def add_format_option(p: argparse.ArgumentParser) -> None:
    """--format of the commands that print events (decode, trace)."""
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table: one strace-like line per event (default); jsonl: one JSON "
                        "object per line; json: one JSON array; kubearmor: KubeArmor's log "
                        "format, one JSON object per line")


def string_limit_type(text: str) -> int:
    """strace -s: a string length, 0 or more."""
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a length of 0 or more, found {text}")
    return value


def add_time_options(p: argparse.ArgumentParser) -> None:
    """strace's time and size options, for the commands that print table lines."""
    p.add_argument("-t", dest="timestamps", action="count", default=0,
                   help="-t: time of day in seconds; -tt: with microseconds (the default); "
                        "-ttt: seconds since the epoch, with microseconds")
    p.add_argument("-r", "--relative-timestamps", action="store_true",
                   help="time since the previous line instead of the time of day")
    p.add_argument("-T", "--syscall-times", action="store_true",
                   help="an exec's duration, from its entry event to its exit event, at the "
                        "end of the exit's line (<seconds>); `stats` times every syscall")
    p.add_argument("-s", "--string-limit", type=string_limit_type, metavar="N",
                   help="show at most N characters of each string (default: all)")


def add_decoding_options(p: argparse.ArgumentParser, utc: bool = True) -> None:
    """--layout/--arch (and --utc for commands that show wall-clock times)."""
    p.add_argument("--layout", help="context layout (default: the capture header's); "
                                    f"one of {', '.join(LAYOUTS)}")
    p.add_argument("--arch", help="architecture of the event ids (default: the header's)")
    if utc:
        p.add_argument("--utc", action="store_true", help="show wall-clock times in UTC")


def add_capture_filters(p: argparse.ArgumentParser, lenient_help: str, utc: bool = False
                        ) -> None:
    """The decoding options, --lenient and the --event/--pid/--comm/--failed filters, for
    every command that reads whole captures (decode, ps, summary, export)."""
    add_decoding_options(p, utc)
    p.add_argument("--lenient", action="store_true", help=lenient_help)
    p.add_argument("-e", "--events", "--event", dest="event", action="append", type=names_type,
                   metavar="LIST", help="only these events (repeat, or a comma list: "
                                        "openat,connect)")
    p.add_argument("-p", "--pid", type=pid_type,
                   help="only this process (host or namespace pid) and its descendants, as "
                        "the events show them (strace -f)")
    p.add_argument("--exact-pid", "--tid", type=pid_type, metavar="PID",
                   help="only this one pid (host or namespace pid), not its children")
    follow_forks_option(p)
    p.add_argument("--comm", type=comm_type, help="only this task name (exact)")
    p.add_argument("--failed", action="store_true",
                   help="only events that failed (a negative result: -1 EPERM...)")


def live_options() -> argparse.ArgumentParser:
    """The options of the live commands (record, trace), as a parent parser: what to attach,
    the kernel-side filters, the transport and its size."""
    live = argparse.ArgumentParser(add_help=False)
    live.add_argument("-e", "--events", "--event", action="append", type=names_type, metavar="LIST",
                      help="event groups to attach (comma list; default: all)")
    live.add_argument("-p", "--pid", type=pid_type,
                      help="only this process and all its descendants (like strace -f -p); "
                           "stops when they have all exited")
    follow_forks_option(live)
    live.add_argument("--comm", type=comm_type, metavar="NAME",
                      help="only tasks with this name (exact, as the kernel keeps it)")
    live.add_argument("--transport", choices=("perf", "ringbuf"),
                      help="perf: per-CPU perf rings, as KubeArmor; ringbuf: one BPF ring "
                           "buffer for all CPUs (default where the kernel has it, else perf)")
    live.add_argument("--hooks", choices=("syscalls", "raw"),
                      help="syscalls: each selected syscall's own tracepoints (nothing runs "
                           "for the others; the default); raw: one program on every syscall, "
                           "quicker to detach")
    size = live.add_mutually_exclusive_group()
    size.add_argument("--ring-pages", type=ring_pages_type, metavar="N",
                      help="perf ring data pages per CPU (a power of two)")
    size.add_argument("--ring-bytes", type=ring_bytes_type, metavar="N",
                      help="ring size in bytes, a power of two (per CPU for perf, the whole "
                           "ring for ringbuf; default 4 MiB per CPU for either: one perf "
                           "ring each, or one ring buffer of at least 8 MiB)")
    return live


def add_command(sub: argparse._SubParsersAction, name: str, help: str,
                examples: tuple[str, ...], parents: list[argparse.ArgumentParser] = ()
                ) -> argparse.ArgumentParser:
    """A command's parser: its one-line help, and its examples shown after the options as
    written (one a line)."""
    return sub.add_parser(name, help=help, parents=list(parents),
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="examples:\n" + "".join(f"  {line}\n" for line in examples))
