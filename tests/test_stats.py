"""Syscall statistics without a kernel: the object's maps, the buckets, text and JSON."""

from __future__ import annotations

import json
import os

import pytest

from ebpfwire.kernel.objfile import read_spec
from ebpfwire.kernel.stats import (
    MAX_SYSCALLS,
    SLOTS,
    Bucket,
    StatsSnapshot,
    SyscallStat,
    SyscallStats,
    bundled_stats_object,
    errno_label,
    histogram,
    render_log2_hist,
    render_stats,
    slot_bounds,
    stats_json,
)

OBJECT = bundled_stats_object()
needs_object = pytest.mark.skipif(not OBJECT.exists(), reason=f"{OBJECT} not built (make -C bpf)")


@needs_object
def test_object_maps_match_the_python_side():
    obj = read_spec(OBJECT)
    stats = obj.maps["stats"]
    assert stats.type == 6  # BPF_MAP_TYPE_PERCPU_ARRAY
    assert (stats.max_entries, stats.value_size) == (MAX_SYSCALLS, 8 * (3 + SLOTS))
    assert obj.maps["config"].value_size == 16 and obj.maps["errnos"].key_size == 8
    assert {p.name: p.section for p in obj.programs.values()} == {
        "stats__sys_enter": "raw_tracepoint/sys_enter",
        "stats__sys_exit": "raw_tracepoint/sys_exit",
        "stats__fork": "tracepoint/sched/sched_process_fork",
        "stats__exit": "tracepoint/sched/sched_process_exit",
    }


def test_bcc_usecs_buckets():
    assert [slot_bounds(i) for i in range(1, 6)] == [(0, 1), (2, 3), (4, 7), (8, 15), (16, 31)]
    assert slot_bounds(11) == (1024, 2047)


def test_histogram_spans_first_to_last_used_slot():
    slots = [0] * SLOTS
    slots[3], slots[6] = 5, 2
    assert histogram(slots) == [Bucket(4, 7, 5), Bucket(8, 15, 0), Bucket(16, 31, 0),
                                Bucket(32, 63, 2)]
    assert histogram([0] * SLOTS) == []


HIST = """\
     usecs               : count     distribution
         0 -> 1          : 12       |****                                    |
         2 -> 3          : 0        |                                        |
         4 -> 7          : 120      |****************************************|
         8 -> 15         : 61       |********************                    |
"""


def test_render_log2_hist_exact_text_and_leading_empty_buckets_trimmed():
    buckets = [Bucket(0, 1, 12), Bucket(2, 3, 0), Bucket(4, 7, 120), Bucket(8, 15, 61)]
    assert render_log2_hist(buckets) == HIST
    assert render_log2_hist([Bucket(0, 1, 0), *buckets]) == HIST
    assert render_log2_hist([]) == "" and render_log2_hist([Bucket(0, 1, 0)]) == ""


def test_render_log2_hist_wide_rows_past_2_to_the_32():
    text = render_log2_hist([Bucket(*slot_bounds(33), 3), Bucket(*slot_bounds(34), 1)])
    assert text == (
        "               usecs                         : count     distribution\n"
        "          4294967296 -> 8589934591           : 3        |********************|\n"
        "          8589934592 -> 17179869183          : 1        |******              |\n"
    )


SNAPSHOT = StatsSnapshot("x86_64", [
    SyscallStat(3, "close", 3, 2, 4500, {"EBADF": 2}, [Bucket(0, 1, 2), Bucket(2, 3, 1)]),
    SyscallStat(35, "nanosleep", 1, 0, 1_100_000, {}, [Bucket(1024, 2047, 1)]),
], dropped_calls=0, dropped_errnos=1)


def test_render_stats_exact_text():
    assert render_stats(SNAPSHOT) == (
        "close (nr 3): 3 calls, 2 errors (EBADF 2), total 4 us\n"
        "     usecs               : count     distribution\n"
        "         0 -> 1          : 2        |****************************************|\n"
        "         2 -> 3          : 1        |********************                    |\n"
        "\n"
        "nanosleep (nr 35): 1 calls, 0 errors, total 1100 us\n"
        "     usecs               : count     distribution\n"
        "      1024 -> 2047       : 1        |****************************************|\n"
        "\n"
        "(not counted: 0 calls when the in-flight map was full, 1 errnos when the errno map "
        "was full)\n"
    )


def test_render_stats_says_when_nothing_was_counted():
    assert render_stats(StatsSnapshot("x86_64", [])) == "no syscalls counted\n"


def test_stats_json_shape():
    out = stats_json(SNAPSHOT)
    assert json.loads(json.dumps(out)) == out
    assert out == {
        "arch": "x86_64", "unit": "usecs", "dropped": {"calls": 0, "errnos": 1},
        "syscalls": [
            {"nr": 3, "name": "close", "calls": 3, "errors": 2, "errnos": {"EBADF": 2},
             "total_ns": 4500, "histogram": [{"low_us": 0, "high_us": 1, "count": 2},
                                             {"low_us": 2, "high_us": 3, "count": 1}]},
            {"nr": 35, "name": "nanosleep", "calls": 1, "errors": 0, "errnos": {},
             "total_ns": 1_100_000,
             "histogram": [{"low_us": 1024, "high_us": 2047, "count": 1}]},
        ],
    }


def test_errno_labels_include_the_kernel_restart_codes():
    assert [errno_label(n) for n in (9, 512, 516, 999)] == [
        "EBADF", "ERESTARTSYS", "ERESTART_RESTARTBLOCK", "errno_999"]


def test_bad_selection_is_refused_before_loading():
    with pytest.raises(ValueError, match="unknown syscall 'nosuchcall'"):
        SyscallStats(syscalls=["close", "nosuchcall"])
    with pytest.raises(ValueError, match="syscall number 5000: expected 0 to 1023"):
        SyscallStats(syscalls=[5000])
    gone = os.fork()
    if gone == 0:  # pragma: no cover - child process
        os._exit(0)
    os.waitpid(gone, 0)
    with pytest.raises(ValueError, match=f"pid {gone}: no such process"):
        SyscallStats(pid=gone)
