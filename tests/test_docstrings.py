"""Every example in the package's docstrings runs and shows what it prints (doctest).

A docstring example is documentation a user copies; this runs each module's examples in a fresh
working folder (an example that writes files writes them there) and restores every registry an example
adds to (``register_op``, ``register_model``, ...). Examples that need a file the project does not ship
(the released CheapMatting checkpoint) are marked ``# doctest: +SKIP`` in place."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

import pytest

import atldas
import derived_models
import search_spaces
from atldas.registry import Registry

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    names = []
    for pkg in (atldas, search_spaces, derived_models):
        found = [pkg.__name__] + [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
        for name in found:
            origin = importlib.util.find_spec(name).origin
            if origin and origin.endswith(".py") and ">>>" in Path(origin).read_text():
                names.append(name)
    return sorted(names)


MODULES = _modules_with_examples()
PACKAGES = {"atldas", "search_spaces", "derived_models"}


def test_the_examples_are_found():
    assert {"atldas", "atldas.run", "atldas.genotype", "atldas.models.zoo", "search_spaces.base"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    registries = {id(r): r for m in list(sys.modules.values()) if m.__name__.split(".")[0] in PACKAGES
                  for r in vars(m).values() if isinstance(r, Registry)}.values()
    saved = [(r, dict(r._items)) for r in registries]
    try:
        finder = doctest.DocTestFinder(exclude_empty=True)
        runner = doctest.DocTestRunner(optionflags=FLAGS)
        tests = [t for t in finder.find(module, name) if t.examples]
        for t in tests:
            runner.run(t)
        result = runner.summarize(verbose=False)
    finally:
        for r, items in saved:
            r._items.clear()
            r._items.update(items)
    assert tests, f"{name}: no docstring example found, though its source holds '>>>'"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed (output above)"
