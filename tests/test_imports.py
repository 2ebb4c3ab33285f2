"""The import rules: library code never imports the CLI, commands never import each other, no cycles."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "artifex_agent"
# CLI modules that commands share; every other module in cli/ is one subcommand.
CLI_HELPERS = {"artifex_agent.cli", "artifex_agent.cli.options", "artifex_agent.cli.progress",
               "artifex_agent.cli.jobargs", "artifex_agent.cli.jobview", "artifex_agent.cli.processes",
               "artifex_agent.cli.direct", "artifex_agent.cli.preview_file"}
# Parses the command line and dispatches to every command.
CLI_DISPATCH = {"artifex_agent.cli.main"}
# `python -m artifex_agent` is the CLI's entry point.
CLI_ENTRY = {"artifex_agent.__main__"}
# Function-level imports that close a cycle, known and waiting for their fix: (importer, imported).
HIDDEN_CYCLE_EDGES = {("artifex_agent.engines.vram", "artifex_agent.engines.generation")}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py") if "proto" not in p.relative_to(PACKAGE).parts}
KNOWN = set(MODULES) | {module_name(p) for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run on import: the module body, and inside module-level if/try/with (not TYPE_CHECKING)."""
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _top_level(block)
        elif isinstance(node, ast.With):
            yield from _top_level(node.body)
        else:
            yield node


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> Iterator[str]:
    """The artifex_agent modules an import statement loads (a submodule named in `from pkg import x` counts)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.startswith("artifex_agent"):
                yield alias.name
        return
    base = node.module or ""
    if node.level:
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
    if not base.startswith("artifex_agent"):
        return
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield sub if sub in KNOWN else base


def _runs(node: ast.AST) -> Iterator[ast.AST]:
    """Every node that may run: all of the module but `if TYPE_CHECKING:` blocks (type-only imports never run)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _runs(other)
        else:
            yield from _runs(child)


def imports(module: str, *, top_level_only: bool) -> set[str]:
    """The artifex_agent modules `module` imports, at module level or anywhere (run-time imports only)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    nodes = _top_level(tree.body) if top_level_only else _runs(tree)
    return {t for n in nodes if isinstance(n, ast.Import | ast.ImportFrom) for t in _targets(n, module)}


def _is_cli(name: str) -> bool:
    return name == "artifex_agent.cli" or name.startswith("artifex_agent.cli.")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_library_code_does_not_import_the_cli() -> None:
    offenders = {m: sorted(filter(_is_cli, imports(m, top_level_only=False)))
                 for m in MODULES if not _is_cli(m) and m not in CLI_ENTRY}
    assert not {m: t for m, t in offenders.items() if t}


def test_no_command_imports_another_command() -> None:
    commands = {m for m in MODULES if _is_cli(m)} - CLI_HELPERS - CLI_DISPATCH
    offenders = {m: sorted((imports(m, top_level_only=False) & commands) - {m})
                 for m in commands | (CLI_HELPERS & set(MODULES))}
    assert not {m: t for m, t in offenders.items() if t}


def test_no_import_cycles_at_module_level() -> None:
    graph = {m: imports(m, top_level_only=True) & set(MODULES) for m in MODULES}
    assert _cycles(graph) == []


def test_no_import_cycles_hidden_in_functions() -> None:
    graph = {m: imports(m, top_level_only=False) & set(MODULES) for m in MODULES}
    for importer, imported in HIDDEN_CYCLE_EDGES:
        graph[importer].discard(imported)
    assert _cycles(graph) == []
