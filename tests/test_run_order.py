"""`ebpfwire run --ts FIELD`: typed events in the order of a timestamp field, across reads
and CPUs, through the reorder window decode orders captures with."""

from __future__ import annotations

import pytest

from ebpfwire.cli.errors import UsageError
from ebpfwire.cli.run import _Timed
from ebpfwire.kernel.runner import Event, LostRecords
from ebpfwire.wire.order import WINDOW_NS, Clock, TimeOrder


def event(ts: int, cpu: int, seq: int) -> Event:
    return Event("events", {"ts": ts, "seq": seq}, cpu, b"")


def ordered(arrivals: list) -> list:
    timed = (g if isinstance(g, (LostRecords, Clock)) else _Timed(g, "ts") for g in arrivals)
    return [getattr(g, "event", g) for g in TimeOrder(_Timed, LostRecords)(timed)]


def test_events_of_two_cpus_read_apart_come_out_in_ts_order():
    # cpu 1's batch is read before cpu 0's, and a later read holds an earlier event
    first_read = [event(300, 1, 3), event(400, 1, 4)]
    second_read = [event(100, 0, 1), event(200, 0, 2), event(500, 0, 5)]
    got = ordered([*first_read, Clock(0), *second_read])
    assert [e.fields["seq"] for e in got] == [1, 2, 3, 4, 5]


def test_a_clock_a_window_ahead_releases_what_is_held_before_the_end():
    def arrivals():
        yield event(100, 0, 1)
        yield Clock(100 + 2 * WINDOW_NS)
        released.append("clock passed")
        yield event(50 + 3 * WINDOW_NS, 0, 2)

    released: list = []
    seen = []
    timed = (g if isinstance(g, Clock) else _Timed(g, "ts") for g in arrivals())
    for out in TimeOrder(_Timed, LostRecords)(timed):
        seen.append((out.event.fields["seq"], list(released)))
    assert seen[0] == (1, [])   # given out when the clock swept, not at the end


def test_a_loss_keeps_its_place_among_its_cpus_events():
    got = ordered([event(100, 0, 1), LostRecords("events", 0, 7), event(300, 1, 3),
                   event(200, 0, 2)])
    assert [g.count if isinstance(g, LostRecords) else g.fields["seq"] for g in got] == \
        [1, 7, 2, 3]


@pytest.mark.parametrize(("fields", "found"), [({"seq": 1}, "no such field; its fields: seq"),
                                               ({"ts": "x"}, "'x'"), ({"ts": -1}, "-1")])
def test_a_ts_field_that_is_no_time_is_a_usage_error(fields, found):
    with pytest.raises(UsageError, match="expected an unsigned integer field") as caught:
        _Timed(Event("events", fields, 0, b""), "ts")
    assert found in str(caught.value)
