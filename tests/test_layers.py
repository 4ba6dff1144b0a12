"""The package's layers: imports point down only, no cycle, every module imports alone.

The ranks are those of docs/architecture.md. Every import is counted, the lazy ones inside
functions too, so a layer cannot reach up by importing late.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ebpfwire"

#: Layer of each package (or top-level module); a module may import its own package and
#: any layer of a lower rank, never a peer of the same rank or a layer above.
RANKS = {
    "ebpfwire.errors": 0, "ebpfwire.collect": 0, "ebpfwire.machine": 0, "ebpfwire.lazy": 0,
    "ebpfwire.wire": 1,
    "ebpfwire.capture": 2, "ebpfwire.kernel": 2,
    "ebpfwire.process": 3,
    "ebpfwire.output": 4,
    "ebpfwire.columnar": 5,
    "ebpfwire": 2.5,  # the facade: decode, encode, Event, ... (wire and the snapshot records)
    "ebpfwire.cli": 6,
    "ebpfwire.__main__": 7, "ebpfwire.arrow": 7, "ebpfwire.dask": 7, "ebpfwire.export": 7,
    "ebpfwire.loader": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """The longest RANKS key that is ``module`` or a package holding it."""
    best = ""
    for name in RANKS:
        if (module == name or module.startswith(name + ".")) and len(name) > len(best):
            best = name
    assert best, f"{module} is in no layer of RANKS"
    return best


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported ebpfwire module, line, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from pkg import mod" imports the module; "from pkg import name" the package
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                     else node.module for alias in node.names]
        else:
            assert not isinstance(node, ast.ImportFrom) or node.level == 0, (
                f"{path}:{node.lineno}: a relative import (the package uses absolute ones)")
            continue
        found += [(name, node.lineno, id(node) in top_level)
                  for name in names if name == "ebpfwire" or name.startswith("ebpfwire.")]
    return found


def upward_imports(modules: dict[str, Path]) -> list[str]:
    wrong = []
    for name, path in modules.items():
        own = layer(name)
        for target, line, _ in imports_of(path, modules):
            other = layer(target)
            if other != own and RANKS[other] >= RANKS[own]:
                wrong.append(f"{name}:{line} imports {target} ({other}, rank {RANKS[other]}; "
                             f"{own} is rank {RANKS[own]})")
    return wrong


def test_every_import_points_down():
    assert upward_imports(all_modules()) == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule is not vacuous: a wire module importing the capture layer is caught."""
    modules = all_modules()
    bad = tmp_path / "bad.py"
    bad.write_text("def late():\n    from ebpfwire.capture import CaptureReader\n")
    modules["ebpfwire.wire.bad"] = bad
    assert upward_imports(modules) == [
        "ebpfwire.wire.bad:2 imports ebpfwire.capture (ebpfwire.capture, rank 2; "
        "ebpfwire.wire is rank 1)"]


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk meets, as the list of modules around it."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    return cycles


def test_no_import_cycle_at_module_level():
    modules = all_modules()
    graph = {name: {target for target, _, top in imports_of(path, modules)
                    if top and target in modules and target != name}
             for name, path in modules.items()}
    assert cycles_in(graph) == []


def test_the_cycle_check_sees_the_old_perf_loader_cycle():
    graph = {"perf": {"loader"}, "loader": {"loader.monitor"}, "loader.monitor": {"perf"}}
    assert cycles_in(graph) == [["loader", "loader.monitor", "perf", "loader"]]


@pytest.mark.parametrize("chunk", range(4))
def test_each_module_imports_alone(chunk):
    """In a fresh interpreter each, so no module works only because another was loaded."""
    names = sorted(set(all_modules()) - {"ebpfwire.__main__"})[chunk::4]  # __main__ runs

    def run(name: str) -> tuple[str, str]:
        done = subprocess.run([sys.executable, "-c", f"import {name}"],
                              capture_output=True, text=True)
        return name, (done.stderr.strip() or "no message") if done.returncode else ""

    with ThreadPoolExecutor(4) as pool:
        failed = {name: err for name, err in pool.map(run, names) if err}
    assert failed == {}


def test_the_facade_gives_every_public_name_and_imports_nothing_first():
    code = ("import sys, ebpfwire\n"
            "first = [m for m in sys.modules if m.startswith('ebpfwire.')]\n"
            "assert first == ['ebpfwire.lazy'], first\n"
            "from ebpfwire import *\n"
            "missing = [n for n in ebpfwire.__all__ if n not in globals()]\n"
            "assert not missing, missing\n"
            "assert issubclass(ebpfwire.DecodeError, ebpfwire.EbpfwireError)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
