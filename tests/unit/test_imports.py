"""The house has no import circles: the module import graph of harness/ and guest/ is acyclic.

The graph is read from the source with `ast`, not by importing: every `import` and
`from ... import` statement counts, at module level or inside a function (a lazy import is an
edge too; hiding one in a function does not remove the circle, it only moves when it bites).
An edge goes to the module named: `from harness.vm import kept` to harness.vm.kept (a module),
`from harness.config import TRANSPORTS` to harness.config. Imports outside the two packages
(stdlib, paramiko, pytest) are not nodes. A failure names each circle as a path a -> b -> a.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "guest")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} for every .py under the packages (a package is its __init__)."""
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute dotted name of a relative `from` import (level dots, then name)."""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: the project modules it imports}, from every import statement of its source."""
    mods = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(mod, is_package, node.level, node.module) if node.level else node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in mods else base)
            for target in targets:
                # `import harness.vm.kept` may name a module; otherwise the longest known prefix
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (a path that returns to its start) per strongly connected component of more
    than one module, from Tarjan's algorithm; [] when the graph is acyclic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle(graph, set(comp)) for comp in components]


def _circle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(comp)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)  # unreachable for a strongly connected component


def test_no_import_circles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    """The checker can fail: a circle closed by a lazy, relative import inside a function is found."""
    pkg = tmp_path / "harness"
    (pkg / "vm").mkdir(parents=True)
    (tmp_path / "guest").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "vm" / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("from harness.vm import kept\n")
    (pkg / "vm" / "kept.py").write_text("def up():\n    from ..cli import main\n    return main\n")
    graph = import_graph(tmp_path)
    assert graph["harness.cli"] == {"harness.vm.kept"}
    assert graph["harness.vm.kept"] == {"harness.cli"}
    assert find_cycles(graph) == [["harness.cli", "harness.vm.kept", "harness.cli"]]
