"""The PowerShell grammar check every shipped .ps1 must pass (tree-sitter-language-pack 0.13 bundles it)."""

from __future__ import annotations

from tree_sitter_language_pack import get_parser


def grammar_problems(source: str) -> list[str]:
    """Every ERROR or MISSING node the PowerShell grammar finds, with its line:column."""
    tree = get_parser("powershell").parse(source.encode("utf-8"))
    problems: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            problems.append(f"{node.type} at {node.start_point[0] + 1}:{node.start_point[1] + 1}")
        stack.extend(node.children)
    return problems
