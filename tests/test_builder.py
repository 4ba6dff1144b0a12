"""The batch builder's vectorised paths held equal to per-event decode: texts and argv
spread into place from several template groups (their positions interleaved), unix
socket paths cut at their first NUL by numpy, the flat ``family`` dictionary built from
numbers and domain texts, with damaged rows (the careful walk) among them."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st
from test_arrow import actual_rows, expected_row, reference

import ebpfwire
from ebpfwire.columnar.arrow import to_table
from ebpfwire.wire.events import AF_UNIX, Argv, SockAddr

T = ebpfwire.ArgType
_PATH_CHARS = st.sampled_from(["a", "/", "é", "\udcff", "\0", "x", "."])


def sample(event_id: int, *args, retval: int = 0, comm: str = "t") -> bytes:
    return ebpfwire.encode(ebpfwire.Event(
        9, 0, 0, 1, 50, 1, 50, 0, event_id, len(args), retval, comm,
        [ebpfwire.Arg(*arg) for arg in args]))


def unix_path() -> st.SearchStrategy[str]:
    """Named, abstract ("@..."), empty and full-length (108 bytes, no NUL) paths, some not
    UTF-8 (a surrogate-escaped byte) and some with a NUL inside (the text stops there)."""
    return st.one_of(st.text(_PATH_CHARS, max_size=20), st.just("x" * 108),
                     st.text(_PATH_CHARS, max_size=20).map(lambda text: "@" + text),
                     st.just(""))


def event() -> st.SearchStrategy[bytes]:
    addresses = st.one_of(
        unix_path().map(SockAddr.unix),
        st.tuples(st.integers(0, 255), st.integers(0, 65535)).map(
            lambda v: SockAddr.inet(f"10.0.{v[0]}.1", v[1])),
        st.tuples(st.sampled_from(["::1", "fe80::1", "2001:db8::5"]), st.integers(0, 65535),
                  st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(
            lambda v: SockAddr.inet6(*v)),
        st.integers(3, 40).filter(lambda family: family != 10).map(SockAddr))
    texts = st.text(_PATH_CHARS.filter(lambda c: c != "\0"), max_size=12)
    return st.one_of(
        addresses.map(lambda a: sample(42, (T.INT_T, 3), (T.SOCKADDR_T, a))),
        addresses.map(lambda a: sample(49, (T.INT_T, 4), (T.SOCKADDR_T, a))),
        texts.map(lambda p: sample(257, (T.INT_T, -100), (T.STR_T, p), (T.OPEN_FLAGS_T, 0))),
        st.lists(texts, max_size=4).map(
            lambda argv: sample(59, (T.STR_T, "/bin/x"), (T.STR_ARR_T, Argv(argv)))),
        st.sampled_from([1, 2, 10, 99]).map(
            lambda domain: sample(41, (T.SOCK_DOM_T, domain), (T.SOCK_TYPE_T, 1),
                                  (T.INT_T, 0))),
        st.integers(0, 9).map(lambda fd: sample(3, (T.INT_T, fd), retval=-9)),
    )


def damaged(data: bytes) -> bytes:
    """The sample with its last argument cut: the careful walk takes it."""
    return data[:-3]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(event(), st.booleans()), min_size=1, max_size=40), st.randoms())
def test_batches_of_mixed_events_equal_per_event_decode(items, rnd):
    samples = [damaged(data) if cut else data for data, cut in items] * 2
    rnd.shuffle(samples)
    table = to_table(samples, context=False)
    for row, data in zip(actual_rows(table), samples, strict=True):
        want = expected_row(reference(data, "classic", "x86_64"), data, None, "classic", None)
        assert {key: row[key] for key in want} == want
    # the flat family as Arrow's dictionary encoding of the names gives it
    names = table.column("family").cast("string")
    assert table.column("family").combine_chunks().dictionary.equals(
        pc.dictionary_encode(names).combine_chunks().dictionary)


def test_unix_paths_cut_at_the_first_nul_and_not_utf8_marked_raw():
    paths = ["/run/a.sock", "/run/\udcfe", "x" * 108, "@hidden", "", "/a\0b"]
    samples = [sample(42, (T.INT_T, 3), (T.SOCKADDR_T, SockAddr.unix(p))) for p in paths]
    table = to_table(samples, context=False)
    assert table.column("path").to_pylist() == [
        "/run/a.sock", "/run/\ufffd", "x" * 108, "@hidden", "", "/a"]
    assert table.column("raw").to_pylist() == [None, samples[1], None, None, None, None]
    assert table.column("family").to_pylist() == [ebpfwire.wire.names.sock_family_name(AF_UNIX)] * 6


def test_batches_without_arguments_are_the_same_less_their_columns():
    """``arguments=False`` leaves ``args`` and the flat columns null and nothing else
    changes: ``errors`` still comes from walking the arguments (damaged fixtures)."""
    from ebpfwire.columnar.arrow import FLAT_COLUMNS, located_batches, schema

    flat = {"args", "path", "fd", "argv", "family", "addr", "port", "flags"}
    assert set(schema().names) >= flat and {"sockaddr", "domain"} <= set(FLAT_COLUMNS)
    for path in sorted((Path(__file__).resolve().parent.parent / "fixtures").glob("*.ewcap")):
        full = list(located_batches(path, context=False, max_rows=64))
        lean = list(located_batches(path, context=False, max_rows=64, arguments=False))
        assert len(full) == len(lean)
        for (a, at), (b, bt) in zip(full, lean, strict=True):
            assert a.schema == b.schema and (at == bt).all()
            for name in a.schema.names:
                if name in flat:
                    assert b.column(name).null_count == len(b)
                else:
                    assert a.column(name).equals(b.column(name)), (path.name, name)
