"""The package is layered: each part imports only parts below it, so there is no import
circle and any stage can be read (and imported) without the ones after it.

A "part" is a sub-package (`rollout_ray/inputs/`) or a top-level module
(`rollout_ray/storage.py`); the root `rollout_ray/__init__.py` is the part `rollout_ray`.
Only imports that run when a module is imported count: those at module level (also
inside `try`, `if` or a class body), not those in a function body or under
`if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import rollout_ray

PACKAGE = Path(rollout_ray.__file__).parent

#: The layers, lowest first. A part may import the parts of its own layer (without a
#: circle) and of any lower layer, never a higher one. Bottom-up: shared leaf modules;
#: config; chat (the message, Responses-API item and tool shapes every stage speaks);
#: inputs (rows made prompts); engines (prompts made generations); output (the record
#: schema, manifest and plan: records are what verifiers judge and exports read);
#: verifiers; agents (an episode drives an engine and a verify endpoint); exports and
#: metrics (both read records); the run that wires them all; then serve, views, the
#: Python API and the CLI.
LAYERS: list[set[str]] = [
    {"errors", "version", "logs", "retries", "replies", "json_text", "storage"},
    {"config", "secrets", "tracking"},
    {"chat"},
    {"inputs"},
    {"engines"},
    {"output"},
    {"verifiers"},
    {"agents"},
    {"exports", "metrics"},
    {"run"},
    {"serve", "views"},
    {"api", "cli_results"},
    {"cli", "rollout_ray"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", "")
    return name == "TYPE_CHECKING"


def _imports(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that `module` imports when it is imported. `from pkg
    import name` imports `pkg.name` when that is a module, else `pkg`."""
    out: set[str] = set()

    def visit(statements: list[ast.stmt] | list[ast.AST]) -> None:
        for node in statements:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue  # runs when called, not when imported
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
            elif isinstance(node, ast.Import):
                out.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative to the module's own package
                    here = module.split(".") if is_package else module.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join(here + ([base] if base else []))
                for alias in node.names:
                    name = f"{base}.{alias.name}"
                    out.add(name if name in known else base)
            else:
                visit(list(ast.iter_child_nodes(node)))

    visit(tree.body)
    return {name for name in out if name in known and name != module}


def module_edges() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports at import time."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    known = set(paths)
    return {
        module: _imports(
            ast.parse(path.read_text(), str(path)), module, path.name == "__init__.py", known
        )
        for module, path in paths.items()
    }


def part_edges() -> dict[tuple[str, str], list[str]]:
    """(part, part it imports) -> the module imports that make the edge."""
    why: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, imported in sorted(module_edges().items()):
        for other in sorted(imported):
            if _part(module) != _part(other):
                why[_part(module), _part(other)].append(f"{module} -> {other}")
    return why


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's circles: each strongly connected set of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_circle_between_parts():
    why = part_edges()
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in why:
        graph[a].add(b)
    lines = []
    for circle in strongly_connected(graph):
        lines.append(f"import circle between {', '.join(circle)}:")
        for a in circle:
            for b in circle:
                for edge in why.get((a, b), []):
                    lines.append(f"  {a} -> {b}: {edge}")
    assert not lines, "\n".join(lines)


def test_no_import_circle_between_modules():
    edges = module_edges()
    lines = []
    for circle in strongly_connected(edges):
        lines.append(f"import circle between modules {', '.join(circle)}:")
        lines += [f"  {a} -> {b}" for a in circle for b in sorted(edges[a]) if b in circle]
    assert not lines, "\n".join(lines)


def test_every_part_has_a_layer():
    layered = set().union(*LAYERS)
    parts = {_part(_module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert parts - layered == set(), "add the new part to LAYERS in tests/repo/test_imports.py"
    assert layered - parts == set(), "LAYERS names a part that is gone"


def test_parts_import_only_their_own_layer_or_lower():
    layer = {part: i for i, parts in enumerate(LAYERS) for part in parts}
    upward = [
        f"  {a} (layer {layer[a]}) imports {b} (layer {layer[b]}): {edge}"
        for (a, b), edges in sorted(part_edges().items())
        if a in layer and b in layer and layer[b] > layer[a]
        for edge in edges
    ]
    assert not upward, "imports up the layers (see LAYERS):\n" + "\n".join(upward)
