"""KubeArmor's logs of many samples at once (``columnar.kubearmorlogs.Logs``) are the
per-event mapping's (``KubeArmorLogs.logs`` of the decoded event): on every fixture, the
realistic corpus and Hypothesis-made samples and contexts, each sample's logs are the
per-event path's own, and a sample it does not take is left to it (None)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebpfwire import encode
from ebpfwire.capture import CaptureReader, SampleRecord
from ebpfwire.columnar.kubearmorlogs import Logs
from ebpfwire.output.kubearmor import VERSIONS, KubeArmorLogs, LogContext, log_context, log_key
from ebpfwire.process.enrich import Enricher
from ebpfwire.wire.decoder import decode
from ebpfwire.wire.errors import DecodeError
from ebpfwire.wire.layouts import get_layout
from ebpfwire.wire.strategies import catalogue_events, damaged_event_bytes, event_bytes

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = sorted((ROOT / "fixtures").glob("*.ewcap"))
#: contexts with what a template must keep as text: %, quotes, non-ASCII, lone surrogates,
#: spaces, a container, the host, an exec's request, empty names
CONTEXTS = [
    LogContext("/usr/bin/cat", "/usr/bin/cat /etc/passwd", ("cat", "/etc/passwd"),
               "/bin/bash", None, False, None),
    LogContext("/opt/100% \"x\"", "/opt/100% \"x\" %s %d", ("x", "%s"), "/bin/sh %",
               "c0ffee" * 10, False, ("/opt/new %s", ("new", "-v", "é\udcff"))),
    LogContext("/bin/é\udcff", "/bin/é\udcff", (), "", "", True, None),
    LogContext("", "", (), "/sbin/init", "abc", False, None),
    LogContext("/usr/bin/env", "/usr/bin/env", ("env",), "", "", False, ("", ())),
    None,
]


def logs_of(datas: list[bytes], contexts: list, arch: str, logs: KubeArmorLogs,
            layout: str = "classic") -> list[str | None]:
    """The Logs of samples joined into one buffer with a gap between them (as a capture's
    records are: the bytes between the samples are never read)."""
    gap = b"\xa5" * 3
    buf = gap + gap.join(datas) + gap
    sizes = np.array([len(data) for data in datas], np.int64)
    begins = np.cumsum(sizes + len(gap)) - sizes
    return Logs(get_layout(layout), arch, logs)(buf, begins, begins + sizes, contexts)


def per_event(data: bytes, context, arch: str, logs: KubeArmorLogs,
              layout: str = "classic") -> str | None:
    """The per-event path's lines of one sample ("" for none), None if it does not decode."""
    try:
        event = decode(data, layout=layout, arch=arch)
    except DecodeError:
        return None
    return "\n".join(map(json.dumps, logs.logs(event, context)))


def assert_as_per_event(datas: list[bytes], contexts: list, arch: str, logs: KubeArmorLogs,
                        layout: str = "classic") -> list[str | None]:
    got = logs_of(datas, contexts, arch, logs, layout)
    for data, context, lines in zip(datas, contexts, got, strict=True):
        if lines is not None:
            assert lines == per_event(data, context, arch, logs, layout)
    return got


def samples(capture: Path) -> tuple[list[bytes], str, str, int, str]:
    with CaptureReader(capture) as reader:
        header = reader.header
        datas = [record.data for record in reader if type(record) is SampleRecord]
    return datas, header.layout, header.arch, header.boot_time_ns, header.hostname


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_fixtures(capture: Path, version: str):
    datas, layout, arch, boot, host = samples(capture)
    logs = KubeArmorLogs(host, boot, version=version)
    contexts = [CONTEXTS[i % len(CONTEXTS)] for i in range(len(datas))]
    got = assert_as_per_event(datas, contexts, arch, logs, layout)
    if capture.name == "real-workload.ewcap":
        # (2 of the 6 contexts are the mapping's: None, an empty name)
        assert sum(lines is not None for lines in got) > 0.6 * len(got)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_realistic_corpus(version: str):
    """The contexts the per-event path gives (an Enricher fed the samples in file order):
    nearly every sample taken."""
    sys.path.insert(0, str(ROOT / "bench"))
    import realistic

    datas, layout, arch, boot, host = samples(realistic.build(20_000))
    enricher = Enricher(get_layout(layout), arch, make=log_context, key=log_key)
    contexts = [enricher.sample(data) for data in datas]
    got = assert_as_per_event(datas, contexts, arch, KubeArmorLogs(host, boot,
                                                                    version=version))
    assert sum(lines is None for lines in got) < 0.01 * len(got)
    assert sum(bool(lines) for lines in got) > 0.8 * len(got)


@pytest.mark.parametrize("layout", ["cwd", "cwd-oid", "cwd-tty-oid", "exec-id"])
def test_layouts_with_a_cwd_are_taken(layout: str):
    """Cwd (a File or Process Resource joined to it), TTY and ExecID from the header."""
    datas, layout, arch, boot, host = samples(ROOT / "fixtures" / f"layout-{layout}.ewcap")
    for version in VERSIONS:
        got = assert_as_per_event(datas, [CONTEXTS[1]] * len(datas), arch,
                                  KubeArmorLogs(host, boot, version=version), layout)
        assert any(got) and None not in got


def test_a_hash_trailer_is_left_to_the_mapping():
    datas, layout, arch, boot, host = samples(ROOT / "fixtures" / "layout-hash.ewcap")
    got = logs_of(datas, [CONTEXTS[0]] * len(datas), arch, KubeArmorLogs(host, boot), layout)
    assert got == [None] * len(datas)


def test_a_host_name_and_cluster_with_percent_signs_stay_text():
    datas, layout, arch, boot, _ = samples(ROOT / "fixtures" / "real-workload.ewcap")
    logs = KubeArmorLogs("host %s 100%", boot, cluster="c%d\"", version="newest")
    got = assert_as_per_event(datas, [CONTEXTS[1]] * len(datas), arch, logs, layout)
    assert any(lines and '"HostName": "host %s 100%"' in lines for lines in got)


contexts = st.one_of(st.none(), st.sampled_from(CONTEXTS), st.builds(
    LogContext, st.text(max_size=8), st.text(max_size=12),
    st.lists(st.text(max_size=4), max_size=3).map(tuple), st.text(max_size=6),
    st.one_of(st.none(), st.just(""), st.text(max_size=6)), st.booleans(),
    st.one_of(st.none(), st.tuples(st.text(max_size=6),
                                   st.lists(st.text(max_size=4), max_size=3).map(tuple)))))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.one_of(
    catalogue_events().map(lambda e: encode(e, "classic")), event_bytes(),
    damaged_event_bytes()), contexts), min_size=1, max_size=40),
       st.sampled_from(["x86_64", "arm64"]), st.sampled_from(VERSIONS),
       st.integers(0, 1 << 63))
def test_made_samples(items: list, arch: str, version: str, boot: int):
    datas, contexts_ = [data for data, _ in items], [context for _, context in items]
    logs = KubeArmorLogs("h", boot, version=version)
    got = assert_as_per_event(datas, contexts_, arch, logs)
    for data, context, lines in zip(datas, contexts_, got, strict=True):
        if per_event(data, context, arch, logs) is None:
            assert lines is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(catalogue_events(), st.sampled_from(CONTEXTS[:3]),
                          st.booleans()), min_size=1, max_size=30))
def test_catalogue_events_are_taken(items: list):
    """Events of the catalogue's own shapes with a named process and comm, in the host's
    namespaces or a container's: all taken but those with whitespace in a string argument
    (EventData may split it into words)."""
    datas, contexts_, spaced = [], [], []
    for event, context, inside in items:
        event = event.replace(comm=event.comm or "c", pid_id=7 * inside, mnt_id=8 * inside,
                              ts=event.ts % (1 << 60))
        datas.append(encode(event, "classic"))
        contexts_.append(context)
        spaced.append(any(re.search(r"\s", text) for arg in event.args for text in (
            arg.value, getattr(arg.value, "path", None)) if isinstance(text, str)))
    got = assert_as_per_event(datas, contexts_, "x86_64", KubeArmorLogs("h", 10**18))
    assert all(lines is not None or space for lines, space in zip(got, spaced, strict=True))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["cwd", "cwd-oid", "cwd-tty-oid", "exec-id"]), st.data())
def test_made_samples_of_the_layouts_with_a_cwd(layout: str, data):
    """Cwds that are /, empty, relative, with dot-dot, spaces or %; ttys empty or not."""
    from ebpfwire.wire.events import Event

    events = data.draw(st.lists(catalogue_events(layout), min_size=1, max_size=25))
    cwds = st.sampled_from(["/", "", "/home/u", "/a/../b/", "rel/x", "/x y/%s", "/é\udcff/"])
    datas, contexts_ = [], []
    for event in events:
        extra = dict(event.extra)
        extra["cwd"] = data.draw(cwds)
        if "tty" in extra:
            extra["tty"] = data.draw(st.sampled_from(["", "pts/0", "tty %d"]))
        event = Event(*(getattr(event, name) for name in (
            "ts", "pid_id", "mnt_id", "host_ppid", "host_pid", "ppid", "pid", "uid",
            "event_id", "argnum", "retval")), event.comm or "c", event.args, extra, event.arch)
        datas.append(encode(event, layout))
        contexts_.append(data.draw(st.sampled_from(CONTEXTS)))
    for version in VERSIONS:
        assert_as_per_event(datas, contexts_, "x86_64",
                            KubeArmorLogs("h", 10**18, version=version), layout)
