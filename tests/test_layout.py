"""The module layout stays a graph, not a knot: no import cycles, one list of verbs.

A cycle (entry -> cli -> runner -> entry, cli -> admin_cli -> hostcheck -> cli)
means no module can be read, tested or imported on its own, and the hot path
drags in whatever the cycle touches. Lazy imports inside functions count too:
they are still dependencies.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lockrun"


def _imports(path: Path) -> set[str]:
    """The lockrun modules *path* imports anywhere in its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "lockrun":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from lockrun import x: x may be a module or a name in __init__
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("lockrun."))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in PACKAGE.glob("*.py")}
    return {name: _imports(path) & modules.keys() - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_modules_import_each_other_without_a_cycle() -> None:
    graph = _graph()
    assert {"cli", "runner", "protocol"} <= graph.keys()  # the graph was read
    assert "runner" in graph["wrapper_cli"]  # and lazy imports count
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_main_knows_the_verbs_the_admin_group_has() -> None:
    """cli.main dispatches on a cheap copy of the verb names, so a fire never imports the
    admin group; the copy must not drift from the group."""
    from lockrun.admin_cli import admin
    from lockrun.cli import ADMIN_VERBS

    assert set(ADMIN_VERBS) == set(admin.commands)
