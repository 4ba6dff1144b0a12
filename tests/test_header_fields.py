"""The named header positions and byte offsets of wire/layouts.py follow the field list."""

from __future__ import annotations

import pytest

from ebpfwire.wire import layouts
from ebpfwire.wire.catalogue import EVENT_ARGS, roles
from ebpfwire.wire.encoder import encode
from ebpfwire.wire.events import Event


def _event(layout: layouts.Layout = layouts.LAYOUTS["classic"]) -> Event:
    extra = {key: "" if key in layout.text_fields else 0 for key in layout.extra_names}
    return Event(123456789, 11, 12, 13, 14, 15, 16, 17, 257, 0, -2, "comm", [], extra)


@pytest.mark.parametrize("name", list(layouts.LAYOUTS))
def test_named_positions_read_every_layout(name):
    layout = layouts.LAYOUTS[name]
    event = _event(layout)
    values = layout.fmt.unpack_from(encode(event, layout))
    for field in layouts.CLASSIC_NAMES[:-1]:
        assert values[getattr(layouts, field.upper())] == getattr(event, field), field
    assert values[layouts.COMM].rstrip(b"\0") == b"comm"
    assert layout.field_names[layouts.EXTRA:] == layout.extra_names


def test_header_reader_reads_fields_at_their_offsets():
    data = encode(_event(), "classic")
    reader = layouts.header_reader("pid_id", "mnt_id", "host_pid")
    assert reader.unpack_from(data) == (11, 12, 14)
    assert reader.size == layouts.OFFSETS["host_pid"] + 4
    assert layouts.header_reader("ts").unpack_from(data) == (123456789,)
    with pytest.raises(ValueError):
        layouts.header_reader("mnt_id", "pid_id")


def test_every_event_names_each_role_once():
    for name in EVENT_ARGS:
        assert len(set(roles(name))) == len(roles(name)), name


def test_the_order_the_hot_paths_unpack():
    """render.sample_json, Enricher.sample and ProcessTable.update unpack the header in this
    order (faster than picking the fields by position); a reordered list must change them."""
    assert layouts.CLASSIC_NAMES == ("ts", "pid_id", "mnt_id", "host_ppid", "host_pid", "ppid",
                                     "pid", "uid", "event_id", "argnum", "retval", "comm")
