"""lmplay's modules import each other without cycles (module-level imports, those for type
checking included; package __init__s aside), so any module can be imported first, none sees
another half-initialised, and each layer can be read without the ones above it."""

from __future__ import annotations

import ast
from pathlib import Path

import lmplay

ROOT = Path(lmplay.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(tree: ast.Module) -> set[str]:
    """Names imported at module level or under `if TYPE_CHECKING:`, not inside functions."""
    names: set[str] = set()
    body = list(tree.body)
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            body.extend(node.body)
    for node in body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue  # a package imports its children by design
        imported = _top_level_imports(ast.parse(path.read_text()))
        graph[name] = {
            m for m in imported if m in modules and m != name and modules[m].name != "__init__.py"
        }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_lmplay_has_no_import_cycle() -> None:
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
    assert "lmplay.models.args" in graph["lmplay.models.modules"]  # the graph sees real edges


def test_model_args_are_importable_from_their_old_homes() -> None:
    from lmplay.models import ModelArgs as from_package
    from lmplay.models.args import ModelArgs
    from lmplay.models.registry import ModelArgs as from_registry

    assert from_package is ModelArgs and from_registry is ModelArgs
