"""The package's structure: data flows one way, models/ is the ground floor, no import circles,
no file that has grown into two ideas (every import counted, including those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import attnviz

PACKAGE = Path(attnviz.__file__).parent
GROUND_FLOOR_MAY_USE = {"models", "errors", "cache", "device", "hub", "_version"}
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:` (annotations only, never executed)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *runtime_nodes(child)])
            continue
        yield node
        yield from runtime_nodes(node)


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from pkg import module` imports the module; `from mod import name` the module.
                subs = {f"{node.module}.{a.name}" for a in node.names} & files.keys()
                deps |= subs or ({node.module} & files.keys())
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names} & files.keys()
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_models_is_the_ground_floor():
    offenders = {
        name: sorted(d for d in deps if d.split(".")[1] not in GROUND_FLOOR_MAY_USE)
        for name, deps in import_graph().items()
        if name.startswith("attnviz.models")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_data_flows_one_way():
    # model -> activations -> dictionaries -> analysis -> widgets: no layer imports one above it.
    order = ["models", "data", "dictionaries", "analysis", "training", "widgets"]
    rank = {layer: i for i, layer in enumerate(order)}
    upward = []
    for name, deps in import_graph().items():
        here = name.split(".")[1] if "." in name else ""
        for dep in deps:
            there = dep.split(".")[1] if "." in dep else ""
            if here in rank and there in rank and rank[there] > rank[here]:
                upward.append(f"{name} -> {dep}")
    assert not upward


def test_the_layering_test_sees_a_cycle_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert not cycles(import_graph())


def test_no_source_file_holds_two_ideas():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long
