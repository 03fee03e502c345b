"""The package's layout holds: no import cycles, no import from a layer above, modules and functions of a size
one reads in one sitting. Read from the source text (every import statement, inside functions and
``TYPE_CHECKING`` blocks too), so nothing is imported to check it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unet_sep"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

# Each top-level part of the package and its layer: a module imports only from its own layer or those below.
LAYERS = {
    "unet_sep": 0, "errors": 0, "extras": 0,
    "fields": 1, "atomic": 1, "device": 1, "distributed": 1,
    "config": 2,
    "dsp": 3, "audio": 3,
    "model": 4,
    "data": 5,
    "weights": 6,
    "separate": 7,
    "train": 8,
    "evaluate": 9,
    "serve": 10,
    "live": 10,
    "cli": 11, "__main__": 11,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its text."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in modules and target != name)
    return found


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    return {name: _imports(name, path, set(sources)) for name, path in sources.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
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


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else parts[0]]


def test_every_part_of_the_package_has_a_layer() -> None:
    unknown = sorted({name.split(".")[1] for name in _sources() if "." in name} - set(LAYERS))
    assert not unknown, f"add these to LAYERS in {Path(__file__).name}: {unknown}"


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_no_import_from_a_layer_above() -> None:
    upward = [f"{name} -> {target}" for name, targets in _graph().items() for target in sorted(targets)
              if _layer(target) > _layer(name)]
    assert upward == []


def test_evaluation_and_data_do_not_import_training() -> None:
    graph = _graph()
    offending = [f"{name} -> {target}" for name, targets in graph.items() for target in sorted(targets)
                 if name.split(".")[1:2] in (["evaluate"], ["data"]) and target.startswith("unet_sep.train")]
    assert offending == []


def test_modules_and_functions_fit_in_one_sitting() -> None:
    too_long = []
    for name, path in _sources().items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {lines} lines")
    assert too_long == []


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    """The checks themselves: a made-up graph with a cycle and an upward edge is caught."""
    graph = {"unet_sep.separate.a": {"unet_sep.separate.b"}, "unet_sep.separate.b": {"unet_sep.separate.a"},
             "unet_sep.audio.c": {"unet_sep.train.d"}, "unet_sep.train.d": set()}
    assert _cycles(graph) == [["unet_sep.separate.a", "unet_sep.separate.b"]]
    assert _layer("unet_sep.train.d") > _layer("unet_sep.audio.c")
