"""Property tests: round trips, every sink of the walker equal to the schemas, lenient
never raising."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ebpfwire
from ebpfwire import DecodeError, decode, encode
from ebpfwire.output.render import event_json, sample_json
from ebpfwire.wire import strategies
from ebpfwire.wire.decoder import walk_args
from ebpfwire.wire.layouts import get_layout
from ebpfwire.wire.schema import parse_event
from ebpfwire.wire.walker import walk, walk_strict

LAYOUTS = list(ebpfwire.LAYOUTS)


def outcome(decoder, data, **kwargs):
    """An event, or the (kind, offset) of the DecodeError; any other exception escapes."""
    try:
        return decoder(data, **kwargs)
    except DecodeError as error:
        return ("error", error.kind, error.offset)


@pytest.mark.parametrize("layout", LAYOUTS)
@given(data=st.data())
def test_round_trip(layout, data):
    event = data.draw(strategies.events(layout))
    assert decode(encode(event, layout), layout=layout) == event
    assert decode(encode(event, layout, perf_padding=True), layout=layout) == event


@pytest.mark.parametrize("layout", ["classic", "hash"])
@given(data=st.data())
def test_fast_decoder_equals_schema_on_valid_events(layout, data):
    sample = data.draw(strategies.event_bytes(layout))
    assert decode(sample, layout=layout) == parse_event(sample, layout=layout)


@given(strategies.damaged_event_bytes())
def test_fast_decoder_equals_schema_on_damaged_events(sample):
    assert outcome(decode, sample) == outcome(parse_event, sample)


@given(st.binary(max_size=300))
def test_fast_decoder_equals_schema_on_random_bytes(sample):
    assert outcome(decode, sample) == outcome(parse_event, sample)


@given(st.one_of(strategies.damaged_event_bytes(), st.binary(max_size=300)))
def test_lenient_never_raises_and_strict_raises_only_decode_error(sample):
    event = decode(sample, strict=False)
    assert isinstance(event.errors, list)
    assert json.dumps(event.to_dict())
    try:
        strict = decode(sample)
    except DecodeError:
        assert event.errors, "strict mode failed where lenient mode saw no damage"
    else:   # strict lists the missing-argument of a NULL sockaddr skipped, as lenient
        assert strict.replace(errors=strict.errors or []) == event


@given(strategies.events("cwd-tty-oid"))
def test_json_round_trip_is_lossless(event):
    text = json.dumps(event.to_dict())
    back = ebpfwire.Event.from_dict(json.loads(text))
    assert back == event
    assert encode(back, "cwd-tty-oid") == encode(event, "cwd-tty-oid")


@given(data=st.data())
def test_lenient_recovers_every_argument_around_one_orphan_tag(data):
    """A failed payload read leaves a bare tag; lenient mode decodes the arguments after it."""
    event = data.draw(strategies.events())
    known = ebpfwire.wire.catalogue.expected_tags(event.event_id, event.arch, event.argnum)
    if not event.args or known is None:
        return
    index = data.draw(st.integers(0, len(event.args) - 1))
    orphaned = event.args[index]._replace(value=None)
    damaged = event.replace(args=event.args[:index] + [orphaned] + event.args[index + 1:])
    result = decode(encode(damaged), strict=False)
    orphan_at = len(encode(damaged.replace(args=damaged.args[:index])))
    if [(e.kind, e.offset) for e in result.errors] == [("orphan-tag", orphan_at)]:
        kept = [a for i, a in enumerate(result.args) if i != index]
        assert kept == [a for i, a in enumerate(event.args) if i != index]
        assert result.args[index].value is None
    else:
        # Payload bytes that happen to read as the next tag can make another reading
        # just as consistent (an orphan elsewhere); the damage is still reported.
        assert result.errors


def sinks(sample, layout="classic"):
    """What every strict sink of the walker makes of ``sample``, as comparable values:
    the Event, its JSON line, the raw-sample JSON line and the walker's own flat lists;
    or the (kind, offset) of the DecodeError each raises."""
    resolved = get_layout(layout)
    event = outcome(decode, sample, layout=layout)
    if isinstance(event, tuple):
        return event
    flat, careful = [], []
    hashed = event.hashes is not None
    fast = walk(sample, resolved.size, len(sample), event.argnum, flat, [] if hashed else None)
    if event.errors:    # a NULL sockaddr skipped: the arguments the sample holds
        careful = event.flat
    else:
        walk_strict(sample, resolved.size, len(sample), event.argnum, careful,
                    [] if hashed else None)
    line = sample_json(sample, resolved, "x86_64")
    assert line is None or line == event_json(event)
    return (event, event_json(event), flat if fast else careful, careful)


def schema_sinks(sample, layout="classic"):
    """The same, from the construct schemas alone."""
    event = outcome(parse_event, sample, layout=layout)
    if isinstance(event, tuple):
        return event
    flat = [x for arg in event.args for x in (int(arg.type), arg.value)]
    return (event, json.dumps(event.to_dict()), flat, flat)


@pytest.mark.parametrize("layout", ["classic", "hash"])
@given(data=st.data())
def test_every_sink_equals_the_schema_on_valid_events(layout, data):
    sample = data.draw(strategies.event_bytes(layout))
    assert sinks(sample, layout) == schema_sinks(sample, layout)
    assert sample_json(sample, get_layout(layout), "x86_64") == json.dumps(
        parse_event(sample, layout=layout).to_dict())


@given(st.one_of(strategies.damaged_event_bytes(), st.binary(max_size=300)))
def test_every_sink_equals_the_schema_on_damaged_events(sample):
    assert sinks(sample) == schema_sinks(sample)


@given(st.one_of(strategies.damaged_event_bytes(), strategies.event_bytes(),
                 st.binary(max_size=300)))
def test_the_fast_walk_succeeds_exactly_where_the_strict_walk_does(sample):
    """What walk_args relies on: when the fast walk declines, the strict walk raises, so a
    sample has its strict arguments in either mode."""
    if len(sample) < 68:
        return
    argc = int.from_bytes(sample[40:44], "little")
    fast, careful = [], []
    ok = walk(sample, 68, len(sample), argc, fast)
    try:
        walk_strict(sample, 68, len(sample), argc, careful)
    except DecodeError:
        assert not ok
    else:
        assert ok and fast == careful


@given(st.one_of(strategies.damaged_event_bytes(), strategies.event_bytes()))
def test_lenient_walk_is_the_lenient_decoder_and_its_json(sample):
    event = decode(sample, strict=False)
    if len(sample) < 68:
        return   # a short header: no arguments to walk
    flat, errors = [], []
    walk_args(sample, 68, event.argnum, event.event_id, "x86_64", flat, errors)
    assert flat == event.flat
    assert [(e.kind, e.offset) for e in errors] == [(e.kind, e.offset) for e in event.errors]
    assert event_json(event) == json.dumps(event.to_dict())
