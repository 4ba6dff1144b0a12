"""The JSON lines of many samples at once (``columnar.jsonlines.Lines``) are sample_json's:
on every fixture, the realistic corpus and Hypothesis-made valid and damaged samples, each
line is sample_json's own, and a sample sample_json does not take is left to it (None)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebpfwire.capture import CaptureReader, SampleRecord
from ebpfwire.columnar.jsonlines import Lines
from ebpfwire.output.render import sample_json
from ebpfwire.wire.layouts import get_layout
from ebpfwire.wire.strategies import catalogue_events, damaged_event_bytes, event_bytes

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = sorted((ROOT / "fixtures").glob("*.ewcap"))
#: ends of lines: a % in them must stay text, not a hole of the template
TAILS = ["}", ', "process": null}', ', "note": "100% %s %d %%"}']


def lines_of(datas: list[bytes], layout, arch: str, tails: list[str]) -> list[str | None]:
    """The Lines of samples joined into one buffer with a gap between them (as a capture's
    records are: the bytes between the samples are never read)."""
    gap = b"\xa5" * 3
    buf = gap + gap.join(datas) + gap
    sizes = np.array([len(data) for data in datas], np.int64)
    begins = np.cumsum(sizes + len(gap)) - sizes
    return Lines(get_layout(layout), arch)(buf, begins, begins + sizes, tails)


def assert_as_sample_json(datas: list[bytes], layout: str, arch: str) -> list[str | None]:
    tails = [TAILS[i % len(TAILS)] for i in range(len(datas))]
    got = lines_of(datas, layout, arch, tails)
    for data, tail, line in zip(datas, tails, got, strict=True):
        if line is not None:
            assert line == sample_json(data, get_layout(layout), arch, None, tail)
    return got


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_fixtures(capture: Path):
    with CaptureReader(capture) as reader:
        layout, arch = reader.header.layout, reader.header.arch
        datas = [record.data for record in reader if type(record) is SampleRecord]
    got = assert_as_sample_json(datas, layout, arch)
    if capture.name == "real-workload.ewcap":
        assert None not in got     # every sample of a real capture taken


def test_the_realistic_corpus():
    sys.path.insert(0, str(ROOT / "bench"))
    import realistic

    with CaptureReader(realistic.build(20_000)) as reader:
        datas = [record.data for record in reader if type(record) is SampleRecord]
    got = assert_as_sample_json(datas, "classic", "x86_64")
    assert None not in got


@pytest.mark.parametrize("layout", ["cwd", "cwd-oid", "cwd-tty-oid", "exec-id"])
def test_layouts_with_more_fields_are_taken(layout: str):
    with CaptureReader(ROOT / "fixtures" / f"layout-{layout}.ewcap") as reader:
        datas = [record.data for record in reader if type(record) is SampleRecord]
    got = assert_as_sample_json(datas, layout, "x86_64")
    assert None not in got


def test_a_hash_trailer_is_left_to_sample_json():
    with CaptureReader(ROOT / "fixtures" / "layout-hash.ewcap") as reader:
        datas = [record.data for record in reader if type(record) is SampleRecord]
    assert lines_of(datas, "hash", "x86_64", ["}"] * len(datas)) == [None] * len(datas)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["cwd", "cwd-oid", "cwd-tty-oid", "exec-id"]), st.data())
def test_made_samples_of_the_layouts_with_more_fields(layout: str, data):
    datas = data.draw(st.lists(st.one_of(event_bytes(layout), damaged_event_bytes(layout)),
                               min_size=1, max_size=30))
    taken = assert_as_sample_json(datas, layout, "x86_64")
    for sample, line in zip(datas, taken, strict=True):
        if sample_json(sample, get_layout(layout), "x86_64") is None:
            assert line is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(catalogue_events().map(lambda e: __import__("ebpfwire").encode(
    e, "classic")), event_bytes(), damaged_event_bytes()), min_size=1, max_size=40),
       st.sampled_from(["x86_64", "arm64"]))
def test_made_samples(datas: list[bytes], arch: str):
    taken = assert_as_sample_json(datas, "classic", arch)
    for data, line in zip(datas, taken, strict=True):
        if sample_json(data, get_layout("classic"), arch) is None:
            assert line is None


@settings(max_examples=60, deadline=None)
@given(st.lists(catalogue_events(), min_size=1, max_size=30))
def test_catalogue_events_are_taken(events: list):
    """Events of the catalogue's own shapes (without a hash trailer) are all taken."""
    from ebpfwire import encode

    datas = [encode(event, "classic") for event in events]
    got = assert_as_sample_json(datas, "classic", "x86_64")
    assert None not in got


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["cwd", "cwd-oid", "cwd-tty-oid", "exec-id"]), st.data())
def test_one_shape_with_many_values_of_the_fields_past_the_header(layout: str, data):
    """Rows of one template, each with its own cwd, tty, oid and exec id."""
    from ebpfwire import encode
    from ebpfwire.wire.events import Event

    event = data.draw(catalogue_events(layout))
    names = get_layout(layout).extra_names
    datas = []
    for cwd, tty, oid, exec_id in data.draw(st.lists(st.tuples(
            st.text(max_size=20), st.text(max_size=10), st.integers(0, 2**32 - 1),
            st.integers(0, 2**64 - 1)), min_size=2, max_size=12)):
        extra = {"cwd": cwd.replace("\0", ""), "tty": tty.replace("\0", ""), "oid": oid,
                 "exec_id": exec_id}
        datas.append(encode(Event(*(getattr(event, name) for name in (
            "ts", "pid_id", "mnt_id", "host_ppid", "host_pid", "ppid", "pid", "uid",
            "event_id", "argnum", "retval", "comm")), event.args,
            {name: extra[name] for name in names}, event.arch), layout))
    assert_as_sample_json(datas, layout, "x86_64")
