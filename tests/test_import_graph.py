"""kwsnet's import graph, read with ``ast``: no import cycles, and the domain packages never
import the command line.

Every ``import`` / ``from ... import`` statement of every module under ``kwsnet/`` counts,
at module level or inside a function (a lazy import is still a dependency), with relative
imports resolved. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
else to ``pkg`` (its ``__init__``). Importing ``pkg.mod`` is an edge to ``pkg.mod`` only, not to
``pkg``: a package's ``__init__`` importing its own modules is not a cycle.

Also a script: ``python tests/test_import_graph.py`` prints the cycles, or "no cycles", and the
forbidden imports (exit status 1 when there are any).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kwsnet"

# Packages that hold what kwsnet does; the command line (kwsnet.cli, kwsnet.commands, the
# config parser kwsnet.config_cli, and the console script's kwsnet.entry and kwsnet.dispatch)
# calls them with plain arguments, never the other way round.
DOMAIN_PACKAGES = (
    "export",
    "quant",
    "detect",
    "sweep",
    "data",
    "nn",
    "metrics",
    "callbacks",
    "init",
)
COMMAND_LINE = (
    "kwsnet.cli",
    "kwsnet.commands",
    "kwsnet.config_cli",
    "kwsnet.dispatch",
    "kwsnet.entry",
)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``kwsnet/export/graph.py`` → ``kwsnet.export.graph``; a package's ``__init__.py`` is the
    package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package: its dotted name → its file."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _imported(tree: ast.AST, name: str, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """``(module, names)`` of every import statement in ``tree``, relative ones resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names]


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``module → the kwsnet modules it imports`` (module-level and function-level)."""
    known = modules(root)
    top = root.name
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for target, names in _imported(tree, name, path.name == "__init__.py"):
            if target != top and not target.startswith(f"{top}."):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            if subs:
                edges.update(subs)
            if len(subs) < len(names) or not names:
                # a name defined in the module (or package __init__) itself
                mod = target
                while mod and mod not in known:
                    mod = mod.rpartition(".")[0]
                if mod:
                    edges.add(mod)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's cycles: one per strongly connected component of more than one module
    (Tarjan), as the component's modules, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def forbidden_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(module, imported)`` for every domain-package module that imports the command line."""
    domain = tuple(f"kwsnet.{p}" for p in DOMAIN_PACKAGES)
    return sorted(
        (mod, dep)
        for mod, deps in graph.items()
        if mod in domain or mod.startswith(tuple(f"{d}." for d in domain))
        for dep in deps
        if dep in COMMAND_LINE or dep.startswith(tuple(f"{c}." for c in COMMAND_LINE))
    )


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "kwsnet.loading" in graph["kwsnet.api"]  # imported inside a function
    assert "kwsnet.detect.detector" in graph["kwsnet.detect"]  # `from .detector import ...`
    assert "kwsnet.commands" in graph and "kwsnet.cli" in graph


def test_the_checks_find_what_they_look_for() -> None:
    """The cycle and layering checks report a planted cycle and a planted CLI import."""
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [sorted(c) for c in cycles(planted)] == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    bad = {"kwsnet.data.x": {"kwsnet.cli"}, "kwsnet.cli": {"kwsnet.data.x"}}
    assert forbidden_imports(bad) == [("kwsnet.data.x", "kwsnet.cli")]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_domain_packages_never_import_the_command_line() -> None:
    assert forbidden_imports(import_graph()) == []


def main() -> int:
    """Print the cycles (or "no cycles") and the forbidden imports; 1 if there are any."""
    graph = import_graph()
    found = cycles(graph)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports")
    for component in found:
        inner = {m: sorted(graph[m] & set(component)) for m in component}
        print("cycle: " + ", ".join(component))
        for m, deps in inner.items():
            print(f"  {m} -> {', '.join(deps)}")
    if not found:
        print("no cycles")
    bad = forbidden_imports(graph)
    for mod, dep in bad:
        print(f"forbidden: {mod} imports {dep}")
    if not bad:
        print("no domain package imports the command line")
    return 1 if found or bad else 0


if __name__ == "__main__":
    sys.exit(main())
