"""Layers import in one direction: the package's import graph has no cycle, late imports included.

Every `import` / `from ... import` of a product module counts, wherever it stands (a late import inside a
function still ties two modules together; a cycle held by one only hides until someone moves it up).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(sources: Iterable[Path], root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the product modules it imports (a name imported from a package counts as its submodule
    when there is one, else as the package)."""
    texts = {_module(path, root): path.read_text() for path in sources}
    graph: dict[str, set[str]] = {}
    for name, text in texts.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names if alias.name in texts)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in texts:
                        deps.add(full)
                    elif node.module in texts:
                        deps.add(node.module)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_product_has_no_import_cycle() -> None:
    sources = [ROOT / "app.py", *(ROOT / "chalicelib").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]
    assert cycles(import_graph(sources)) == []


def test_the_cycle_finder_finds_cycles_late_imports_included(tmp_path: Path) -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def late() -> None:\n    from pkg.a import thing\n")
    assert cycles(import_graph(sorted(package.glob("*.py")), tmp_path)) == [["pkg.a", "pkg.b"]]
