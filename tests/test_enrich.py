"""The Enricher's header path and kept answers give what the table gives event by event."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_process import Stream

from ebpfwire import decode, encode
from ebpfwire.capture.snapshot import ContainerInfo
from ebpfwire.output.render import sample_json
from ebpfwire.process.enrich import Enricher
from ebpfwire.wire.layouts import get_layout

PIDS = (100, 101, 102)
COMMS = ("sh", "cat", "bash")
PATHS = ("/bin/cat", "bin/sh", "/usr/bin/bash")

step = st.one_of(
    st.tuples(st.just("openat"), st.sampled_from(PIDS), st.sampled_from(PIDS),
              st.sampled_from(COMMS), st.sampled_from(("/", "/tmp", "/srv"))),
    st.tuples(st.just("exec"), st.sampled_from(PIDS), st.sampled_from(PIDS),
              st.sampled_from(COMMS), st.sampled_from(PATHS), st.integers(-2, 0),
              st.booleans()),
    st.tuples(st.just("exit"), st.sampled_from(PIDS), st.sampled_from(PIDS),
              st.sampled_from(COMMS)),
    st.tuples(st.just("unshare"), st.sampled_from(PIDS), st.sampled_from(PIDS),
              st.sampled_from(COMMS)),
    st.tuples(st.just("container")),
    st.tuples(st.just("lost")),
    st.tuples(st.just("later")),    # event time jumps past the retention of exited ones
)


def _items(steps: list[tuple], cwd_layout: bool) -> list:
    """Events (with a cwd where the layout has one), container records and losses."""
    s, out = Stream(), []
    for kind, *rest in steps:
        if kind == "container":
            out.append(ContainerInfo(7, 8, "0123456789abcdef" * 4, "docker"))
        elif kind == "lost":
            out.append(3)
        elif kind == "later":
            s.ts += 10_000_000
        elif kind == "openat":
            pid, ppid, comm, cwd = rest
            out.append(s.openat(pid, ppid, comm,
                                extra={"cwd": cwd} if cwd_layout else None))
        elif kind == "exec":
            pid, ppid, comm, path, retval, bprm = rest
            out.extend(s.exec(pid, ppid, comm, path, [path, "-x"], retval=retval, bprm=bprm))
        elif kind == "exit":
            out.append(s.exit(*rest))
        else:   # the same process, now in other namespaces
            pid, ppid, comm = rest
            out.append(s.openat(pid, ppid, comm, pid_id=7, mnt_id=8))
    return out


@settings(max_examples=1000, deadline=None)
@given(steps=st.lists(step, max_size=40), cwd_layout=st.booleans())
def test_kept_answers_are_the_tables_answers(steps: list[tuple], cwd_layout: bool) -> None:
    _same_answers(steps, cwd_layout)


def _same_answers(steps: list[tuple], cwd_layout: bool) -> None:
    """The Enricher's answers (header path and sample_json's) are the table's, event by
    event."""
    layout = get_layout("cwd" if cwd_layout else "classic")
    retain = 5_000_000        # 5 ms of event time: "later" steps make drops happen
    by_sample, by_line, by_event = (Enricher(layout, "x86_64", retain) for _ in range(3))
    for item in _items(steps, cwd_layout):
        if isinstance(item, ContainerInfo):
            for enricher in (by_sample, by_line, by_event):
                enricher.feed(item)
            continue
        if isinstance(item, int):
            for enricher in (by_sample, by_line, by_event):
                enricher.lost(item)
            continue
        data = encode(item, layout)
        expected = by_event.answer_of(by_event.event(decode(data, layout=layout)))
        assert by_sample.sample(data) == expected
        line = sample_json(data, layout, "x86_64", by_line.sample)
        assert line is not None and line.endswith(expected + "}")


def test_a_reparenting_event_forgets_the_kept_answer() -> None:
    """Found by the property test above: an exec entry naming another parent reparents the
    process in the table; the answer kept for the old parent must not be given again, or
    the table misses the next event's pid reuse and names a younger process as parent."""
    _same_answers([("openat", 101, 100, "sh", "/"), ("exec", 101, 101, "sh", "/bin/cat", -1, False),
                   ("openat", 101, 100, "sh", "/"), ("openat", 100, 100, "sh", "/"),
                   ("openat", 101, 100, "sh", "/")], cwd_layout=False)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), layout_name=st.sampled_from(("classic", "cwd", "hash", "cwd-tty-oid")))
def test_any_bytes_get_an_answer_never_an_exception(data, layout_name: str) -> None:
    """Damaged samples (and bare random bytes) of an exec, bprm_check or do_exit go down
    the argument walk too: the answer is made, nothing raises, and it is the answer of
    the lenient decode."""
    from ebpfwire.wire import strategies as wire

    layout = get_layout(layout_name)
    enricher, by_event = Enricher(layout, "x86_64"), Enricher(layout, "x86_64")
    samples = data.draw(st.lists(st.one_of(wire.damaged_event_bytes(layout),
                                           wire.event_bytes(layout), st.binary(max_size=300)),
                                 max_size=8))
    for sample in samples:
        answer = enricher.sample(sample)
        assert answer.startswith(', "process": ')
        # the same answer as the table gives lenient decode's Event
        assert answer == by_event.answer_of(
            by_event.event(decode(sample, layout=layout, strict=False)))
