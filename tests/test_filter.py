"""ebpfwire.wire.filter: one meaning of the event filter, on Events and on Arrow rows."""

from __future__ import annotations

import glob
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebpfwire import DecodeError, Event, decode, encode
from ebpfwire.capture import CaptureReader, LostRecord
from ebpfwire.columnar.arrow import to_table
from ebpfwire.wire import strategies
from ebpfwire.wire.filter import EventFilter

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures")
CAPTURES = sorted(glob.glob(os.path.join(FIXTURES, "*.ewcap")))


def reference(data: bytes, layout: str, arch: str):
    """The Event the table's row is: strict when it decodes, else lenient."""
    try:
        return decode(data, layout=layout, arch=arch)
    except DecodeError:
        return decode(data, layout=layout, arch=arch, strict=False)


def filters_for(events) -> list[EventFilter]:
    """Filters on the values the events hold (and one that matches none)."""
    present = [e for e in events if e.event_id is not None]
    labels = sorted({e.label for e in present})
    pids = sorted({p for e in events for p in (e.pid, e.host_pid) if p is not None})
    comms = sorted({e.comm for e in events if e.comm is not None})
    out = [EventFilter(), EventFilter(failed=True), EventFilter(pid=4_194_304),
           EventFilter(comm="no-such-task")]
    out += [EventFilter(events=frozenset(labels[i::3])) for i in range(min(3, len(labels)))]
    out += [EventFilter(pid=pid) for pid in pids[:4]]
    out += [EventFilter(comm=comm) for comm in comms[:4]]
    if labels and comms and pids:
        out.append(EventFilter(events=frozenset(labels[:2]), comm=comms[0], failed=True))
        out.append(EventFilter(events=frozenset(labels[-2:]), pid=pids[-1]))
    return out


def assert_mask_is_matches(table, events) -> None:
    """``events`` holds the Event of each row, None for a lost row."""
    for keep in filters_for([e for e in events if e is not None]):
        mask = keep.mask(table).to_pylist()
        assert mask == [event is None or keep.matches(event) for event in events], keep


@pytest.mark.parametrize("path", CAPTURES, ids=os.path.basename)
def test_the_arrow_mask_keeps_the_rows_of_the_events_matches_keeps(path):
    table = to_table(path, context=False)
    with CaptureReader(path) as reader:
        header = reader.header
        events = [None if isinstance(record, LostRecord)
                  else reference(record.data, header.layout, header.arch) for record in reader]
    assert_mask_is_matches(table, events)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(strategies.event_bytes(), strategies.damaged_event_bytes(),
                          st.binary(min_size=24, max_size=40)), min_size=1, max_size=12))
def test_the_arrow_mask_is_matches_on_generated_and_cut_samples(samples):
    """Cut headers too: a sample of 24 to 31 bytes has a host pid but no pid."""
    table = to_table(samples, context=False)
    assert_mask_is_matches(table, [reference(data, "classic", "x86_64") for data in samples])


def test_a_cut_header_matches_on_its_host_pid_on_both_paths():
    sample = struct.pack("<QIIII", 1, 0, 0, 1, 4242)
    event = reference(sample, "classic", "x86_64")
    assert event.host_pid == 4242 and event.pid is None
    keep = EventFilter(pid=4242)
    assert keep.matches(event)
    assert keep.mask(to_table([sample], context=False)).to_pylist() == [True]


def test_task_names_that_are_not_utf8_match_their_own_bytes_only():
    """The comm column shows bytes that are not UTF-8 as U+FFFD; the filter does not."""
    events = [Event(1, 0, 0, 1, 2, 1, 2, 0, 3, 0, 0, comm, [])
              for comm in ("a\udc80", "a\udc81", "a\ufffd", "a")]
    table = to_table([encode(event) for event in events], context=False)
    for comm in ("a\udc80", "a\ufffd", "a"):
        keep = EventFilter(comm=comm)
        assert keep.mask(table).to_pylist() == [e.comm == comm for e in events]
        assert [keep.matches(e) for e in events] == [e.comm == comm for e in events]


def test_names_are_checked_when_a_filter_is_made():
    with pytest.raises(ValueError, match=r"unknown event 'opnat'; closest known: openat"):
        EventFilter(events=frozenset({"opnat"}))
    assert EventFilter(events=frozenset({"event_9999", "openat"}))
    assert not EventFilter()
