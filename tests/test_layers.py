"""The import-layer contract: the package imports only downwards, has no import cycle, and imports
lazily (inside a function) only optional heavy dependencies, and only where the layer map allows.

Layers, bottom to top (architecture.md, style.md): leaves -> values -> networks -> search core ->
run plumbing -> verbs -> cli. A module may import modules of its own layer or below, never above.
"""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path
from typing import Dict, List, Set, Tuple

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("atldas", "search_spaces", "derived_models")

#: Layer name and the module patterns in it, bottom first.
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("leaves", ("atldas.errors", "atldas.registry", "atldas.version", "atldas.config", "atldas.utils", "atldas.utils.*")),
    ("values", ("atldas.topology", "atldas.genotype", "atldas.tensors", "atldas.data", "atldas.data.*",
                "atldas.cellgraph", "derived_models")),
    ("networks", ("atldas.ops", "atldas.models", "atldas.models.*", "atldas.matting", "atldas.matting.*",
                  "atldas.tasks", "atldas.tasks.*")),
    ("search core", ("atldas.arch", "atldas.supernet", "atldas.latency", "atldas.cost", "atldas.strategies",
                     "atldas.derive", "search_spaces", "search_spaces.*")),
    ("run", ("atldas.run", "atldas.rundir")),
    ("verbs", ("atldas.search", "atldas.retrain", "atldas.evaluate", "atldas.predict", "atldas.bench",
               "atldas.export", "atldas.plot", "atldas.lut", "atldas.tune")),
    ("cli", ("atldas.cli", "atldas.__main__", "atldas.warmup", "atldas")),
]

#: Third-party modules a function may import lazily: optional, or heavy to import for the commands
#: that do not need them.
LAZY_OK = ("matplotlib", "networkx", "tensorboard", "torch.utils.tensorboard", "onnx", "onnxruntime", "onnxscript", "pymatting",
           "torch.utils.benchmark", "optuna")
#: Modules that may import anything lazily (the CLI imports each verb when it runs; the package's
#: public names load on first use).
LAZY_ANYTHING = ("atldas.cli", "atldas")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    for k, (_, patterns) in enumerate(LAYERS):
        if any(module == p or fnmatch(module, p) for p in patterns):
            return k
    raise AssertionError(f"{module} is in no layer of the contract: add it to LAYERS")


def _imports(path: Path) -> List[Tuple[str, bool, int]]:
    """(imported module, imported inside a function, line) for every import of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: List[Tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, in_function, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                out.append((child.module, in_function, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return out


def _ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def _resolve(module: str, known: Set[str]) -> str:
    """The package module an import names (``from atldas.x import y`` imports ``atldas.x``)."""
    while module not in known and "." in module:
        module = module.rsplit(".", 1)[0]
    return module


def _graph() -> Tuple[Dict[str, List[Tuple[str, bool, int]]], Dict[str, Path]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {m: _imports(p) for m, p in files.items()}, files


def test_every_import_goes_downwards():
    imports, files = _graph()
    upward = []
    for module, items in imports.items():
        for target, _, line in items:
            if not _ours(target):
                continue
            target = _resolve(target, set(files))
            if target != module and _layer(target) > _layer(module):
                upward.append(f"{files[module].relative_to(ROOT)}:{line}: {module} ({LAYERS[_layer(module)][0]}) "
                              f"imports {target} ({LAYERS[_layer(target)][0]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycle():
    imports, files = _graph()
    g = nx.DiGraph()
    for module, items in imports.items():
        g.add_node(module)
        for target, _, _ in items:
            if _ours(target):
                target = _resolve(target, set(files))
                if target != module and not (module == "atldas" or module.startswith(target + ".")):
                    g.add_edge(module, target)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_lazy_imports_only_for_optional_heavy_dependencies():
    imports, files = _graph()
    bad = []
    for module, items in imports.items():
        if module in LAZY_ANYTHING:
            continue
        for target, lazy, line in items:
            if lazy and not any(target == p or target.startswith(p + ".") for p in LAZY_OK):
                bad.append(f"{files[module].relative_to(ROOT)}:{line}: lazy import of {target}")
    assert not bad, "imports inside functions (move them to the top of the module):\n" + "\n".join(bad)


def test_the_contract_fails_on_an_upward_import(tmp_path):
    """The checker itself: an import from a higher layer is found."""
    f = tmp_path / "fake.py"
    f.write_text("import atldas.run\n\ndef g():\n    from atldas.cli import main\n")
    found = [(m, lazy) for m, lazy, _ in _imports(f)]
    assert found == [("atldas.run", False), ("atldas.cli", True)]
    assert _layer("atldas.run") > _layer("atldas.ops")
