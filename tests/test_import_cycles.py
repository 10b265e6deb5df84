"""No import cycles in the package: every ``import`` statement counts, also inside functions and under
``TYPE_CHECKING`` (a cycle hidden there is still two modules that cannot be understood one without the
other)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import scaleguard

ROOT = Path(scaleguard.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imported(name: str, path: Path) -> Iterator[str]:
    """The package modules ``path`` imports: ``from a import b`` names ``a.b`` when that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def graph() -> dict[str, set[str]]:
    return {
        name: {target for target in imported(name, path) if target in MODULES and target != name}
        for name, path in MODULES.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from scaleguard.pipeline import AuditResult\n"
        "def later() -> None:\n"
        "    from scaleguard.reports import registry\n"
        "    import scaleguard.notify\n"
        "from . import exitcodes\n",
        encoding="utf-8",
    )
    found = set(imported("scaleguard.example", source))
    assert {"scaleguard.pipeline", "scaleguard.reports.registry", "scaleguard.notify", "scaleguard.exitcodes"} <= found
    edges = graph()
    assert "scaleguard.pipeline" in edges["scaleguard.cli.audit_cmd"]
    assert "scaleguard.collectors.evidence" in edges["scaleguard.pipeline"], "imported inside collect()"
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []
