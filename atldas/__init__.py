"""atldas: hardware-aware differentiable architecture search with explicit topology learning.

The library behind the ``atldas`` command: search an ATL-DAS supernet on matting data under a cost
budget, derive a genotype, retrain it, and score it with the DIM matting metrics. Everything the CLI
does is a function or class here (the names below load on first use, so ``import atldas`` is cheap):

    >>> import atldas
    >>> cfg = atldas.make_search_config(space="tiny", sets=["epochs=2"])
    >>> run = atldas.Run(cfg)                  # space, task, supernet, cost table, budget, strategy
    >>> history = run.fit()                    # the search loop, in memory: one dict per epoch
    >>> len(history), sorted(k for k in history[-1] if k.startswith("cost/"))
    (2, ['cost/derived', 'cost/expected', 'cost/metric'])
    >>> genotype = run.final_genotype()        # derive, repair onto the budget, counted cost
    >>> net = atldas.create_model(genotype)    # the standalone network

See the README's "Python API" section for the pieces one by one, custom ops and custom spaces.
"""

from __future__ import annotations

import importlib
from typing import Any, List

from atldas.version import __version__

#: Public name -> the module that defines it.
_API = {
    # models
    "create_model": "atldas.models.zoo", "resolve_model": "atldas.models.zoo", "list_models": "atldas.models.zoo",
    "register_model": "atldas.models.zoo", "MattingModel": "atldas.models.base",
    "CheapMatting": "atldas.models.cheapmatting", "CheapMattingCfg": "atldas.models.cheapmatting",
    # values
    "Genotype": "atldas.genotype", "CellSpec": "atldas.genotype", "CellTopology": "atldas.topology",
    # ops, spaces, tasks, strategies, costs
    "register_op": "atldas.ops", "OPS": "atldas.ops",
    "get_space": "search_spaces", "register_space": "search_spaces", "SearchSpace": "search_spaces",
    "SpaceCfg": "search_spaces", "SPACES": "search_spaces",
    "get_task": "atldas.tasks", "register_task": "atldas.tasks", "Task": "atldas.tasks", "DataCfg": "atldas.tasks",
    "TASKS": "atldas.tasks",
    "STRATEGIES": "atldas.strategies", "Strategy": "atldas.strategies", "AtldasHP": "atldas.strategies",
    "DartsHP": "atldas.strategies", "GdasHP": "atldas.strategies", "RandomHP": "atldas.strategies",
    "cost_table": "atldas.cost", "CostTable": "atldas.cost", "Budget": "atldas.cost", "BudgetCfg": "atldas.cost",
    # runs
    "SearchConfig": "atldas.run", "make_search_config": "atldas.run", "bind_space": "atldas.run",
    "Run": "atldas.run", "derive_run": "atldas.run",
    # verbs (those named like their module are reached through it, loaded on first use like the names
    # here: atldas.search.search, atldas.retrain.retrain, atldas.predict.predict, atldas.bench.bench,
    # atldas.plot.plot, atldas.tune.tune; see _VERBS)
    "RetrainConfig": "atldas.retrain", "evaluate_folders": "atldas.evaluate",
    "evaluate_model": "atldas.matting.scoring", "export_onnx": "atldas.export", "plot_genotype": "atldas.plot",
    # process settings the CLI applies
    "keep_freed_memory": "atldas.utils.malloc",
}

#: The verbs' modules (``atldas.retrain.retrain(cfg)``, ``atldas.lut.lut_build(space=...)``), loaded on first use.
_VERBS = ("search", "retrain", "evaluate", "predict", "bench", "export", "plot", "lut", "tune")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _VERBS:  # a submodule: importing it binds it here
        return importlib.import_module(f"atldas.{name}")
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'atldas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_API) | set(_VERBS))
