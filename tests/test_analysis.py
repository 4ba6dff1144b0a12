"""The questions of docs/analysis.md: each DuckDB query and each pandas block, exactly as the
page shows them, run over Parquet exported from the fixtures, must give the answer computed
independently from `ebpfwire decode --format jsonl` of the same captures."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from corpus import FIXTURES

from ebpfwire.columnar.export import export_parquet

duckdb = pytest.importorskip("duckdb")
pd = pytest.importorskip("pandas")

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "analysis.md"
CAPTURES = [FIXTURES / "real-workload.ewcap", FIXTURES / "real-namespaces.ewcap",
            FIXTURES / "damaged.ewcap"]
QUESTIONS = ["failing-connects", "files-opened", "children-argv", "top-per-second",
             "lost-per-cpu"]


def blocks(kind: str) -> dict[str, str]:
    """The code blocks of the page that follow a `<!-- kind: name -->` marker."""
    found = re.findall(rf"<!-- {kind}: ([\w-]+) -->\n```\w+\n(.*?)```", DOC.read_text(), re.S)
    return dict(found)


@pytest.fixture(scope="module")
def parquet(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("analysis") / "events.parquet"
    export_parquet(CAPTURES, out, jobs=1)
    return str(out)


@pytest.fixture(scope="module")
def lines() -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-m", "ebpfwire", "decode", "--format", "jsonl", "--lenient",
         *map(str, CAPTURES)], cwd=ROOT, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def sockaddr(line: dict) -> dict:
    return next((a["value"] for a in line["args"] if a["type"] == "SOCKADDR_T"), {})


def argv(line: dict) -> list[str] | None:
    return next((a["value"] for a in line["args"] if a["type"] == "STR_ARR_T"), None)


def path(line: dict) -> str | None:
    return next((a["value"] for a in line["args"] if a["type"] == "STR_T"), None)


def expected(question: str, lines: list[dict]) -> list[tuple]:
    events = [line for line in lines if "lost" not in line]
    if question == "failing-connects":
        counts = Counter((e["comm"], e["host_pid"], e["errno"], sockaddr(e).get("addr"),
                          sockaddr(e).get("port"))
                         for e in events if e["event"] == "connect" and e["retval"] < 0)
        return [(*key, n) for key, n in counts.items()]
    if question == "files-opened":
        opens: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
        for e in events:
            if e["event"] in ("open", "openat") and e["comm"] == "cat":
                opens[path(e)][0] += 1
                opens[path(e)][1] += e["retval"] < 0
        return [(p, n, failed) for p, (n, failed) in opens.items()]
    if question == "children-argv":
        return sorted((e["ts"], e["host_pid"], argv(e)) for e in events
                      if e["event"] in ("execve", "execveat") and argv(e) is not None
                      and e["host_ppid"] == 29675)
    if question == "top-per-second":
        counts = Counter((e["ts"] // 10**9, e["event"]) for e in events)
        ranked = sorted(counts.items(), key=lambda item: (item[0][0], -item[1], item[0][1]))
        shown: Counter = Counter()
        top = []
        for (second, event), n in ranked:
            shown[second] += 1
            if shown[second] <= 3:
                top.append((second, event, n))
        return top
    assert question == "lost-per-cpu"
    lost: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for line in lines:
        if "lost" in line:
            lost[line["cpu"]][0] += line["lost"]
            lost[line["cpu"]][1] += 1
    return sorted((cpu, n, records) for cpu, (n, records) in lost.items())


ORDERED = {"children-argv", "top-per-second", "lost-per-cpu"}


def plain(value):
    """A pandas/numpy/DuckDB cell as a plain Python value."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def rows(found, question: str) -> list[tuple]:
    found = [tuple(plain(v) for v in row) for row in found]
    return found if question in ORDERED else sorted(found, key=repr)


def test_the_page_has_every_question_in_both_forms():
    assert sorted(blocks("sql")) == sorted(QUESTIONS)
    assert sorted(blocks("pandas")) == sorted(QUESTIONS)


@pytest.mark.parametrize("question", QUESTIONS)
def test_duckdb_answers_as_decode_jsonl(parquet, lines, question):
    sql = blocks("sql")[question].replace("'events.parquet'", f"'{parquet}'")
    assert sql != blocks("sql")[question]
    got = rows(duckdb.sql(sql).fetchall(), question)
    want = rows(expected(question, lines), question)
    assert want, "the fixtures hold an answer to every question"
    assert got == want


@pytest.mark.parametrize("question", QUESTIONS)
def test_pandas_answers_as_decode_jsonl(parquet, lines, question):
    scope = {"events": pd.read_parquet(parquet), "pd": pd}
    exec(blocks("pandas")[question], scope)
    answer = scope["answer"]
    got = rows(answer.itertuples(index=False, name=None), question)
    assert got == rows(expected(question, lines), question)
