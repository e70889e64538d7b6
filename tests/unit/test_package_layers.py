"""The application's imports point down: no cycle between modules, and no package imports one above it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_APPLICATION = {"tests", "bench", "migrations", "static", "samples", "docs", "postman", "instance"}

#: Bottom to top. A module may import modules of its own layer's packages or of any layer below.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"config", "errors", "models", "database", "network_policy"}),
    frozenset({"storage", "access", "imaging"}),
    frozenset({"compliance"}),
    frozenset({"marketplaces"}),
    frozenset({"output_plan"}),
    frozenset({"queueing"}),
    frozenset({"observability"}),
    frozenset({"intake"}),
    frozenset({"fetching"}),
    frozenset({"catalog_formats"}),
    frozenset({"outputs"}),
    frozenset({"reading"}),
    frozenset({"image_packs"}),
    frozenset({"delivery"}),
    frozenset({"lifecycle"}),
    frozenset({"processing"}),
    frozenset({"web", "command_line", "process_launch"}),
    frozenset({"upload_routes", "status_routes", "webhooks_routes", "image_tasks", "app", "cli", "launcher"}),
)


def _top_level_names() -> set[str]:
    names = {path.stem for path in ROOT.glob("*.py")}
    names |= {path.parent.name for path in ROOT.glob("*/__init__.py") if path.parent.name not in NOT_APPLICATION}
    return names


def _application_modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in NOT_APPLICATION or relative.parts[0].startswith("."):
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(path: Path, modules: dict[str, Path], top: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] not in top:
                continue
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _application_modules()
    top = _top_level_names()
    return {name: _imports(path, modules, top) - {name} for name, path in modules.items()}


def _layer_of(module: str) -> int:
    head = module.split(".")[0]
    for index, layer in enumerate(LAYERS):
        if head in layer:
            return index
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_application_module_has_a_layer():
    for module in _graph():
        _layer_of(module)


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{module} -> {target}"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if _layer_of(target) > _layer_of(module)
    ]
    assert upward == []


def test_packages_form_no_cycle():
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        packages[module.split(".")[0]] |= {target.split(".")[0] for target in targets}
    for package in packages:
        packages[package].discard(package)
    assert _cycles(packages) == []


def test_modules_form_no_cycle():
    assert _cycles(_graph()) == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The checks above read real imports: an upward one in a module of the tree is found."""
    top = _top_level_names()
    modules = _application_modules()
    probe = tmp_path / "probe.py"
    probe.write_text("from lifecycle import leases\nimport config\n")
    assert _imports(probe, modules, top) == {"lifecycle.leases", "config"}
    assert _layer_of("lifecycle.leases") > _layer_of("storage")
