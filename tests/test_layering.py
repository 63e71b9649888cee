"""The import graph: no cycles in the engine, the app helpers or the zoo, and the engine never imports the
app (issue 10, items 3 and 6).

Every ``import`` of a ``mother_core`` module counts, also those inside functions (a deferred import
hides a cycle, it does not remove it); only imports under ``if TYPE_CHECKING:`` are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def _graph(package: str) -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    known = set(files)
    # A package's __init__ is not an edge worth following (it re-exports); modules are.
    return {m: {d for d in _imports(p, known) if d != m and d != package} for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> the modules it imports), or None."""
    found = next(nx.simple_cycles(nx.DiGraph([(m, d) for m, deps in graph.items() for d in deps])), None)
    return None if found is None else sorted(found)


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


@pytest.mark.parametrize("package", ["mother_core", "explorer_ui", "mother_zoo"])
def test_no_import_cycle(package):
    cycle = _cycle(_graph(package))
    assert cycle is None, f"{package} has an import cycle through " + ", ".join(cycle or [])


def test_the_engine_never_imports_the_app():
    for path in (ROOT / "mother_core").rglob("*.py"):
        deps = _imports(path, {"streamlit", "explorer_ui"})
        assert not deps, f"{path.relative_to(ROOT)} imports {deps}"
