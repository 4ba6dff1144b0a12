"""Lenient decoding against ground truth: catalogue events with a known argument list,
then each writer failure mode applied (last argument dropped, first orphaned, a NULL
pointer skipped); lenient must give back every argument the bytes still hold and say
what is missing, on every example."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ebpfwire import DecodeError, decode, encode
from ebpfwire.wire import strategies
from ebpfwire.wire.argtypes import ArgType
from ebpfwire.wire.catalogue import expected_tags
from ebpfwire.wire.events import Arg
from ebpfwire.wire.walker import KNOWN, SKIPPABLE, _ending, _payload

#: Payloads the writer reads from the process's memory, the reads that can fail and leave
#: an orphan tag (fixed-size arguments are copied from the kernel's saved registers).
USER_MEMORY = (ArgType.STR_T, ArgType.SOCKADDR_T, ArgType.STR_ARR_T)


def readings(data: bytes, p: int, index: int, expected: tuple) -> list[tuple]:
    """Every reading of the arguments from ``p`` by exhaustive enumeration (the oracle):
    (cost, flat pairs, damage as (kind, offset)), cost as walker._explain weighs it."""
    n = len(data)
    if index == len(expected):
        cost, _, damage = _ending(data, p, n, None)
        return [(cost, (), tuple((e.kind, e.offset) for e in damage))]
    out = []
    cost, _, damage = _ending(data, p, n, None)
    out.append(((cost[0] + 1, *cost[1:]), (), (("missing-argument", p),)
                + tuple((e.kind, e.offset) for e in damage)))
    want = expected[index]
    tag = data[p] if p < n else None
    if tag is not None and KNOWN[tag]:
        inner: list = []
        try:
            value, q = _payload(data, p, n, inner)
        except DecodeError as error:
            out.append(((1, 0, 2, 0), (), ((error.kind, error.offset),)))
        else:
            for c, flat, damage in readings(data, q, index + 1, expected):
                out.append(((c[0] + len(inner), c[1] + (tag != want), c[2], c[3] - 1),
                            (tag, value, *flat),
                            tuple((e.kind, e.offset) for e in inner) + damage))
        for c, flat, damage in readings(data, p + 1, index + 1, expected):
            out.append(((c[0] + 1, c[1] + (tag != want), c[2], c[3]), (tag, None, *flat),
                        (("orphan-tag", p),) + damage))
    elif tag is not None:
        out.append(((1, 0, 2, 0), (), (("bad-tag", p),)))
    if tag is not None and want in SKIPPABLE:
        for c, flat, damage in readings(data, p, index + 1, expected):
            out.append(((c[0] + 1, *c[1:]), (int(want), None, *flat),
                        (("missing-argument", p),) + damage))
    return out


def damaged(event, mode: str, index: int) -> tuple[bytes, list[Arg], list[tuple[str, int]]]:
    """The sample a writer leaves, the arguments lenient must give back and the damage it
    must report (kind, offset)."""
    header = len(encode(event.replace(args=[])))
    pieces = [encode(event.replace(args=[arg]))[header:] for arg in event.args]
    at = header + sum(len(piece) for piece in pieces[:index])
    if mode == "drop-last" or (mode == "skip" and index == len(pieces) - 1):
        return (encode(event)[:at], event.args[:index],
                [("missing-argument", at)])
    if mode == "orphan-first":
        pieces[0] = pieces[0][:1]
        args = [event.args[0]._replace(value=None), *event.args[1:]]
        return encode(event)[:header] + b"".join(pieces), args, [("orphan-tag", header)]
    del pieces[index]           # skipped: neither tag nor payload
    args = [*event.args[:index], event.args[index]._replace(value=None), *event.args[index + 1:]]
    return encode(event)[:header] + b"".join(pieces), args, [("missing-argument", at)]


@st.composite
def cases(draw):
    event = draw(strategies.catalogue_events().filter(lambda e: e.args))
    modes = ["drop-last"]
    if event.args[0].type in USER_MEMORY:
        modes.append("orphan-first")
    skippable = [i for i, arg in enumerate(event.args) if arg.type in SKIPPABLE]
    if skippable:
        modes.append("skip")
    mode = draw(st.sampled_from(modes))
    index = (len(event.args) - 1 if mode == "drop-last" else 0 if mode == "orphan-first"
             else draw(st.sampled_from(skippable)))
    padding = draw(st.sampled_from(["none", "zeros", "stale"]))
    sample, args, errors = damaged(event, mode, index)
    pad = -(4 + len(sample)) % 8
    if padding == "zeros":
        sample += bytes(pad)
    elif padding == "stale":
        sample += draw(st.binary(min_size=pad, max_size=pad))
    return event, mode, sample, args, errors


@settings(max_examples=600)
@given(cases())
def test_lenient_gives_back_what_the_bytes_hold(case):
    event, mode, sample, args, errors = case
    result = decode(sample, strict=False)
    try:
        decode(sample)
    except DecodeError:
        valid = False
    else:
        valid = not result.errors
    if valid:
        return   # the damaged bytes are themselves a valid event: nothing tells them apart
    expected = expected_tags(event.event_id, event.arch, event.argnum)
    everything = readings(sample, 68, 0, expected)
    least = min(cost for cost, _, _ in everything)
    best = [(flat, damage) for cost, flat, damage in everything if cost == least]
    got = ([(e.kind, e.offset) for e in result.errors])
    truth = (tuple(x for arg in args for x in (int(arg.type), arg.value)), tuple(errors))
    # lenient takes a best reading; the truth is one of the best (the cost says what the
    # writer's failure modes leave); where it is the only best, lenient gives it back
    assert (tuple(result.flat), tuple(got)) in best, mode
    assert truth in best, mode
    if len(best) == 1 or all(reading == best[0] for reading in best):
        assert result.args == args, mode
        assert got == errors, mode
