"""The shape of the source tree: an import graph without cycles, small modules with a stated job,
and every import that runs late saying why."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "seedlock").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import that can run, with whether it sits inside a function."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    walk(other, in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, in_function))
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            walk(child, nested)

    walk(tree, False)
    return found


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The seedlock modules an import statement executes."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in MODULES}
    base = node.module or ""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    out = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in MODULES:
            out.add(sub)
        elif base in MODULES:
            out.add(base)
    out.discard(module)
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported seedlock module: line}, for the imports that can run."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges: dict[str, int] = {}
        for node, _ in _runtime_imports(ast.parse(path.read_text())):
            for target in _targets(module, path, node):
                edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of the graph, as a list of modules ending where it started; else None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_import_graph_of_seedlock_has_no_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in itertools.pairwise(cycle)]
        pytest.fail("import cycle:\n  " + "\n  ".join(steps))


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None


def test_the_graph_sees_imports_inside_functions_and_skips_type_checking_blocks():
    graph = import_graph()
    # seedlock.streams imports numpy inside functions (not a seedlock module), and its seedlock
    # imports at the top; seedlock/__init__ imports the API only under TYPE_CHECKING.
    assert {"seedlock._ranks", "seedlock._registry", "seedlock.derivation"} <= set(
        graph["seedlock.streams"]
    )
    assert set(graph["seedlock"]) == {"seedlock._lazy", "seedlock._version"}
    assert "seedlock._hooks" in graph["seedlock._bootstrap"]  # imported inside its functions


def test_the_rank_module_is_a_leaf():
    assert import_graph()["seedlock._ranks"] == {}


def _in_import_group(lines: list[str], i: int) -> bool:
    text = lines[i].strip()
    if not text:
        return i > 0 and lines[i - 1].strip().startswith(("import ", "from "))
    return text.startswith(("import ", "from "))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_import_inside_a_function_says_why_it_runs_late(module):
    path = MODULES[module]
    lines = path.read_text().splitlines()
    silent = []
    for node, in_function in _runtime_imports(ast.parse("\n".join(lines))):
        if not in_function:
            continue
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        # One comment above a group of imports (blank lines between sections included) covers
        # the group.
        while first > 0 and _in_import_group(lines, first - 1):
            first -= 1
        said = any("#" in line for line in lines[max(first - 1, 0) : last + 1])
        if not said:
            line = lines[node.lineno - 1].strip()
            silent.append(f"{path.relative_to(SRC)}:{node.lineno}: {line}")
    assert not silent, "an import inside a function without a comment saying why:\n" + "\n".join(
        silent
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_is_small_and_says_what_it_is_for(module):
    path = MODULES[module]
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_LINES, f"{path} is over {MAX_LINES} lines"
    tree = ast.parse(source)
    if path.name not in ("__main__.py", "_version.py"):
        assert ast.get_docstring(tree), f"{path} has no module docstring"
