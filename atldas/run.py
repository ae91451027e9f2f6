"""A search run: its configuration, its live objects, its loop and its run directory.

:class:`SearchConfig` composes the settings that live beside the classes using them (the space's
:class:`~search_spaces.base.SpaceCfg`, the task's :class:`~atldas.tasks.base.DataCfg`, the budget's
:class:`~atldas.cost.BudgetCfg`, the strategy's ``...HP``) and is what ``config.yaml`` stores.
:class:`Run` builds the space, task, supernet, cost table, budget and strategy from it, runs the
search loop (:meth:`Run.fit`) in memory or into a run directory, and derives the final genotype
(:meth:`Run.final_genotype`) the same way for ``atldas search`` and ``atldas derive``:

    >>> cfg = make_search_config(space="tiny", sets=["epochs=2"])
    >>> run = Run(cfg)                 # in memory; Run(cfg, out=Path("runs/x")) writes a run directory
    >>> history = run.fit()           # one dict per epoch, as history.jsonl holds them
    >>> genotype = run.final_genotype()
    >>> len(genotype.hash())
    12

Run directory (architecture.md): ``config.yaml`` (resolved), ``checkpoint.pt`` (atomic, loads with
``weights_only=True``: weights, alpha/beta/gamma, pruning masks, optimizers, lambda, RNG states,
epoch), ``genotype.json`` (rewritten every epoch; the final one is repaired onto the budget),
``history.jsonl`` (one line per epoch), ``cost_table.json``, ``tb/`` (TensorBoard).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import default_collate

from atldas.version import __version__
from atldas.arch import CELL_TYPES, Child
from atldas.cellgraph import plot_cell
from atldas.config import (annotation_at, apply_overrides, build, check_ranges, check_threads, check_types, coerce,
                           keyword_only, leaf_paths, read_yaml, refuse_edited, set_path, to_dict)
from atldas.cost import BudgetCfg, CostTable, cost_table, format_cost
from atldas.data.datasets import with_draws
from atldas.data.loading import EpochBatches, make_loader, seeded_order
from atldas.derive import finalize, grow, repair
from atldas.errors import AtldasError, BudgetBelowCheapest, ConfigError, DataError
from atldas.genotype import Genotype
from atldas.rundir import RUN_FILES, RunDir
from atldas.strategies import STRATEGIES, AtldasHP, Strategy, StrategyHP
from atldas.tasks import DataCfg, Task, get_task
from atldas.tensors import batch_to
from atldas.utils import stop
from atldas.utils.atomic import refuse_input_as_output, refuse_overwriting_non_json, write_text_atomic
from atldas.utils.checkpoint import warn_other_loss
from atldas.utils.device import amp_dtype, resolve_device, resume_device_hint, tune_backend
from atldas.utils.dist import mean_values, shard
from atldas.utils.memory_format import channels_last
from atldas.utils.seed import pin_threads, resume_threads, rng_state, seed_everything, set_rng_state, torch_threads
from atldas.utils.tb import add_scalars
from atldas.utils.weights import first_non_finite, weight_mismatch
from atldas.utils.progress import progress_bar, time_left
from atldas.utils.ranking import lowest, score_key
from search_spaces import SPACES, SearchSpace, SpaceCfg, get_space

log = logging.getLogger("atldas")

__all__ = ["SearchConfig", "make_search_config", "load_search_config", "bind_space", "Run", "derive_run",
           "CHECKPOINT", "FORMAT"]

CHECKPOINT = "checkpoint.pt"
FORMAT = "atldas-search/2"
#: Keys of earlier flat configs that have another name now.
ALIASES = {"budget_form": "budget.form", "data": "data.source"}
_TARGETS = ("target_macs", "target_params", "target_latency_ms")


@keyword_only
@dataclass
class SearchConfig:
    """Configuration of a search (``atldas search``); ``config.yaml`` is its resolved form.

    The field defaults are the matting space's; another space's own defaults (``tiny``: 3 epochs of 3
    steps, C 8, ...) come with :func:`make_search_config`, which is what the CLI builds:
    ``make_search_config(space="tiny", seed=1)``, not ``SearchConfig(space="tiny", seed=1)``.

    Attributes:
        space: registered search space.
        strategy: registered strategy (``atldas``, ``darts``, ``gdas``, ``random``).
        task: registered task; empty: the space's own.
        seed: seed of the weights, data order and samplers.
        device: ``cpu`` or ``cuda``.
        threads: torch CPU threads (None: torch's default).
        epochs: search epochs.
        steps_per_epoch: weight steps per epoch.
        arch_steps_per_epoch: arch steps per epoch (after warm-up; one after each of the first
            weight steps, so at most ``steps_per_epoch``: a larger value runs that many).
        warmup_epochs: epochs of uniform children and no arch steps.
        channels_last: the supernet and its inputs in channels_last.
        amp: mixed precision of the supernet's forward passes on CUDA: ``auto`` (bf16 where the GPU
            has it, else off), ``bf16``, ``off`` (``fp16`` is refused: the arch step has no loss
            scaler); the CPU always runs in float32.
        select: candidates of the final policy (the strategy's derived child first, then distinct
            samples, each repaired onto the budget) trained briefly on their own by the task's
            ``short_fit`` and ranked by that held-out loss; the best one is the genotype. 0: off (the
            strategy's derive alone). Tasks with a standalone fit only: ``planted`` (whose space
            makes it 16 for ``atldas`` and ``random`` by default) and ``matting`` (off by default:
            ``search_spaces/matting.py`` says why).
        select_steps: training steps of each candidate's short fit.
        select_keep: a second round (successive halving): the ``select_keep`` candidates with the
            lowest short-fit losses are fitted again, from the start, with ``select_keep_steps`` steps,
            and the lowest of those losses picks the genotype (with no more candidates than that, only
            the second round runs). 0: one round. On the planted task the
            short fit of 150 steps ranks genotypes by their standalone loss with Kendall tau 0.58-0.68,
            one of 350 steps with 0.69-0.81 (experiments/select_schedule.py); 16 x 50 steps, then the
            best 5 x 350, picks in simulation the 9th percentile where 16 x 150 picks the 17th, for 6 %
            more steps.
        select_keep_steps: training steps of the second round's fits.
        select_epsilon: share of each of the ``select`` stage's draws (per decision) taken uniformly
            among the candidates hard pruning left, instead of from the policy: 0 samples the final
            policy (its neighbourhood of the argmax), 1 the pruned space uniformly. On the planted task
            under a budget 0.5 moved ATL-DAS by -1.1 percentile points (standard error 6.7, 18 runs),
            within the noise and still behind random search, so not the default.
        select_cost: the cost the ``select`` stage's candidates are repaired onto: ``free`` (the
            budget's target; without a budget the candidates keep their own costs, so the stage may
            pick a larger network than the strategy's own) or ``derived`` (without a budget, the cost
            of the strategy's own derived child: the stage picks structure at the searched cost). On
            the planted task without a budget ``derived`` moved the percentile by -1.4 points
            (standard error 2.6, 36 runs) with 7 % fewer MACs: within the noise, so not the default.
        select_fill: under a budget, grow each candidate (after repair, whose last swap may overshoot)
            onto the target (:func:`~atldas.derive.grow`, the inverse of repair: the swaps that lose the
            least log-probability per unit of cost added, until no single swap fits), so that no
            candidate leaves budget unused. The planted space's default for ``atldas`` (there, under the
            0.8 budget, 10.0th against 13.1st percentile and standalone losses 0.84x over 36 paired
            runs, teachers 0-5, seeds 0-5); not for ``random``, whose uniform policy grows candidates
            without a preference (18.9th against 12.5th, losses 1.07x).
        select_pool: with more than ``select``, the stage first draws up to ``select_pool`` distinct
            candidates the same way and keeps the strategy's own child and the ``select`` - 1 others
            with the lowest held-out loss on the shared weights (:meth:`Run.evaluate`, forward passes
            only), so the fits go to the candidates the supernet ranks best. 0: off. The planted
            space's default for ``atldas`` and ``random`` (64), kept by a rule written before the runs
            (teachers 12-17: atldas's pick 4.4 percentile points better with it, standard error 3.9);
            over 72 paired runs (teachers 0-2, 12-20) it moves atldas by -1.7 (2.7): no clear gain.
        select_mutants: of the ``select`` candidates, how many are made after the first fits instead
            of drawn before them: the first ``select`` - ``select_mutants`` are fitted, then each new
            one is one of the two best so far with one decision (a node's input set, a chosen edge's
            op or a block) drawn anew from the final policy (:meth:`~atldas.arch.ArchParams.mutate`),
            put onto the cost as the others are and distinct from every candidate before it; it is
            fitted as long, and the second round (``select_keep``) takes the best of all. The same
            number of fits as without it. 0: off. On the planted task 8 moved ATL-DAS by +6.7
            percentile points (worse; standard error 3.8, 18 runs on teachers 27-29), so not the default.
        select_strata: ``none``, or ``depth``: the two cuts of the stage (the pool's prescreen on the
            shared weights and the second round's ``select_keep``) take the candidates stratum by
            stratum, the genotype's depth (:attr:`~atldas.genotype.Genotype.depth`, summed over its
            cells) being the stratum: first the best of every depth, in the order of their losses, then
            the second best of every depth, and so on. Both proxies rank deeper cells worse than
            standalone training does (``experiments/depth_bias.py``: Kendall tau-b of depth +0.22 to
            +0.32 above standalone training's on the planted task), while the 350-step second round
            reads depth as standalone training does; so the cuts keep every depth in the race and
            leave the choice to the longest fit. The same fits as ``none``. On the planted task it made
            the picks deeper and worse (by a rule written before the run, teachers 48-50: +3.9 percentile
            points for ATL-DAS, standard error 2.9, +8.3, 4.3, for random search), so not the default.
        knobs: the space's knobs (proxy and target widths and depths, input size, in-degree).
        data: where samples come from and how they are batched.
        budget: the cost target and its penalty.
        hp: the strategy's settings.
        out: the run directory.
        tensorboard: write ``tb/``.
        heatmap_every: draw the op and input-set probability heatmaps and the cells of the policy's
            argmax (``cells/normal``, ``cells/reduce``) into ``tb/`` every this many epochs and after
            the last one (0: never; its CPU cost in the default matting search: README, "Run directory"); the
            scalars are written every epoch.
        plots: draw the final genotype into ``plots/``.
        progress: a progress bar on a terminal.
    """

    space: str = "matting"
    strategy: str = "atldas"
    task: str = ""
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = None
    epochs: int = 10
    steps_per_epoch: int = 50
    arch_steps_per_epoch: int = 50
    warmup_epochs: int = 2
    channels_last: bool = True
    amp: str = "auto"
    select: int = 0
    select_steps: int = 150
    select_keep: int = 0
    select_keep_steps: int = 350
    select_epsilon: float = 0.0
    select_cost: str = "free"
    select_fill: bool = False
    select_pool: int = 0
    select_mutants: int = 0
    select_strata: str = "none"
    knobs: SpaceCfg = field(default_factory=SpaceCfg)
    data: DataCfg = field(default_factory=DataCfg)
    budget: BudgetCfg = field(default_factory=BudgetCfg)
    hp: StrategyHP = field(default_factory=AtldasHP)
    out: Optional[str] = None
    tensorboard: bool = True
    heatmap_every: int = 5
    plots: bool = True
    progress: bool = True

    #: Fields that change what is written or shown, not what is searched: two configs that differ only
    #: in these give the same search (what a cache of searches may leave out of a search's identity).
    DISPLAY: ClassVar[Tuple[str, ...]] = ("out", "threads", "tensorboard", "heatmap_every", "plots", "progress")

    def check_values(self) -> None:
        """Raise ConfigError naming the first value that cannot be used whatever the task: types, ranges
        and names (:func:`make_search_config` calls it before it warns about settings that do nothing)."""
        check_types(self)  # a config built in Python skipped YAML's and --set's types
        check_ranges(self, {"epochs": (1, 10**6), "steps_per_epoch": (1, 10**7),
                            "arch_steps_per_epoch": (0, 10**7), "warmup_epochs": (0, 10**6),
                            "select": (0, 1000), "select_steps": (1, 10**6),
                            "select_keep": (0, 1000), "select_keep_steps": (1, 10**6), "select_epsilon": (0.0, 1.0),
                            "select_pool": (0, 100_000), "select_mutants": (0, 1000),
                            "heatmap_every": (0, 10**6), "seed": (0, 2**31 - 1)})
        if self.select_strata not in STRATA:
            raise ConfigError(f"select_strata={self.select_strata!r}: use {' or '.join(STRATA)}")
        if self.select_cost not in ("derived", "free"):
            raise ConfigError(f"select_cost={self.select_cost!r}: use free or derived")
        self.knobs.check()
        self.budget.check()
        self.hp.check()

    def check(self, task: Task) -> None:
        """Raise ConfigError naming the first value that cannot be used."""
        self.check_values()
        own = get_task(get_space(self.space).task)
        if not isinstance(task, type(own)):  # the networks' inputs and outputs are the space's task's
            others = [n for n in SPACES.names() if get_space(n).task == task.name]
            raise ConfigError(f"task={task.name}: the {self.space} space's networks take and give what the {own.name} "
                              f"task does; use a space of the {task.name} task ({', '.join(others) or 'none registered'}) "
                              f"or a task derived from {type(own).__name__}")
        if task.io(self.data) != own.io(self.data):  # the genotype's network could never be built
            raise ConfigError(f"task={task.name}: its networks take and give {task.io(self.data)}, the {self.space} "
                              f"space's {own.io(self.data)}; a task of this space keeps its inputs and outputs")
        if self.select_mutants and self.select_mutants >= self.select:
            raise ConfigError(f"select_mutants={self.select_mutants} leaves no candidate to mutate: it must be "
                              f"below select={self.select}")
        strategy = STRATEGIES.get(self.strategy)
        if self.select and strategy.uses_none:  # their candidates would be drawn with `none` on edges
            raise ConfigError(f"select={self.select}: {self.strategy} derives its argmax, as published (its supernet "
                              "holds `none`, which a standalone candidate cannot take); the select stage is for the "
                              "atldas and random strategies: leave select at 0")
        if strategy.uses_none and not self.knobs.k_min <= 2 <= self.knobs.k_max:
            raise ConfigError(f"k_min={self.knobs.k_min}, k_max={self.knobs.k_max}: the {self.strategy} derive keeps 2 "
                              "inputs per node; use k_min <= 2 <= k_max")
        if self.select and not task.has_short_fit:
            raise ConfigError(f"select={self.select}: the {task.name} task has no short standalone fit to rank "
                              "candidates by (the planted and matting tasks have); leave select at 0")
        check_threads(self.threads, where="threads")
        if self.warmup_epochs >= self.epochs and self.strategy != "random":
            raise ConfigError(f"epochs={self.epochs} leaves no epoch after the {self.warmup_epochs} warm-up "
                              f"epoch(s) to train the architecture; use --epochs {self.warmup_epochs + 1} (--set "
                              f"epochs={self.warmup_epochs + 1}) or more, or --set warmup_epochs=...")
        resolve_device(self.device, hint="use --device cpu (tune: --set device=cpu)")
        if self.amp == "fp16":
            raise ConfigError("search runs autocast in bf16 only (fp16 would need loss scaling of the arch "
                              "step); use --set amp=bf16, auto or off")
        amp_dtype(self.device, self.amp)
        task.check(self.data)


def _hp_class(strategy: str) -> type:
    return STRATEGIES.get(strategy).HP


def make_search_config(*, file: Optional[str] = None, sets: Sequence[str] = (), **flags: Any) -> SearchConfig:
    """The resolved SearchConfig: the space's defaults (and those it has for the strategy), then a YAML
    file (flat or nested keys), then ``flags`` (flat keys, None ignored), then ``--set key=value`` texts.

    A budget given anywhere by the user (``target_macs``, ``target_params`` or ``target_latency_ms``)
    replaces the space's default budget, and one given by a flag or ``--set`` the file's (a run's
    ``config.yaml`` reused with another budget).

    ``sets`` are ``key=value`` texts as ``--set`` takes them (a leaf field's name where it is unique,
    else its dotted path, e.g. ``hp.arch_lr=1e-3``; a run's ``config.yaml`` shows them all).

    Raises ConfigError for a value no search can take (:meth:`SearchConfig.check_values`: types, ranges,
    names; a latency target without its table), before it warns about settings that do nothing; what
    depends on the task (the data, the select stage's short fit) is checked when the run is built.
    """
    data = read_yaml(file) if file else {}
    sets = [sets] if isinstance(sets, str) else list(sets)  # one "key=value" text is a list of one
    bad = [p for p in sets if not isinstance(p, str)]
    if bad:
        raise ConfigError(f"sets are 'key=value' texts (as --set takes them), got {bad[0]!r}")
    flags = {k: v for k, v in flags.items() if v is not None}
    parsed = [p.split("=", 1) for p in sets if "=" in p]
    chosen = {k.strip().replace("-", "_"): v.strip() for k, v in parsed}
    empty = next((k for k in ("space", "strategy") if k in chosen and not chosen[k]), None)
    if empty:  # '' fell back to the default space or strategy
        raise ConfigError(f"--set {empty}=: an empty value; give a {empty} name (or leave it out)")

    def pick(key: str, default: str) -> str:
        return str(chosen.get(key) or flags.get(key) or data.get(key) or default)

    space_name, strategy = pick("space", "matting"), pick("strategy", "atldas")
    space = get_space(space_name)
    cfg = SearchConfig(space=space_name, strategy=strategy, hp=_hp_class(strategy)(), task=space.task)
    cfg = _apply(cfg, dict(space.defaults), where=f"space {space_name} defaults")
    cfg = _apply(cfg, dict(space.strategy_defaults.get(strategy, {})),
                 where=f"space {space_name}, {strategy} defaults")
    user = set(flags) | set(chosen) | {k for k in data if not isinstance(data[k], Mapping)}
    user |= {f"{k}.{kk}" for k, v in data.items() if isinstance(v, Mapping) for kk in v}
    if any(t in user or f"budget.{t}" in user for t in _TARGETS):
        cfg = dataclasses.replace(cfg, budget=dataclasses.replace(cfg.budget, **{t: None for t in _TARGETS}))
    cfg = _apply(cfg, data, where=str(file))
    if any(t in flags or t in chosen or f"budget.{t}" in chosen for t in _TARGETS):  # replaces the file's budget
        cfg = dataclasses.replace(cfg, budget=dataclasses.replace(cfg.budget, **{t: None for t in _TARGETS}))
    cfg = _apply(cfg, flags, where="flags")
    cfg = apply_overrides(cfg, [p for p in sets if p.split("=", 1)[0].strip() not in ("space", "strategy")],
                          aliases=ALIASES)
    cfg.check_values()  # a bad value is refused, not warned about as doing nothing first
    for line in inert_settings(cfg, set(flags) | set(chosen)):  # a file may be a run's whole config.yaml
        log.warning("%s", line)
    return cfg


#: Settings of the select stage, which do nothing while it is off (``select=0``)
_SELECT_KEYS = ("select_steps", "select_keep", "select_keep_steps", "select_epsilon", "select_cost", "select_fill",
                "select_pool", "select_mutants", "select_strata")
#: Budget settings, which do nothing without a target
_BUDGET_KEYS = ("form", "aim", "lam_init", "lam_lr", "rho", "temperature", "block_temperature")


def inert_settings(cfg: SearchConfig, given: Iterable[str]) -> List[str]:
    """One line for each setting in ``given`` (keys as the user wrote them: flat, dotted or aliased) that
    the resolved ``cfg`` does not use: a select-stage setting while the stage is off, a budget setting
    without a budget target, a Gumbel temperature with the ``reinforce`` estimator."""
    names = {ALIASES.get(k, k).rsplit(".", 1)[-1] for k in given}
    out = []
    if not cfg.select:
        out += [f"{k}={getattr(cfg, k)} does nothing while the select stage is off (select=0); set select=N "
                "to use it" for k in _SELECT_KEYS if k in names]
    elif cfg.select_fill and "select_fill" in names and not cfg.budget.targets():
        out.append("select_fill=true does nothing without a budget (it grows candidates onto the target); "
                   "give --target-macs, --target-params or --target-latency-ms")
    if not cfg.budget.targets():
        out += [f"{k}={getattr(cfg.budget, k)} does nothing without a budget target; give --target-macs, "
                "--target-params or --target-latency-ms" for k in _BUDGET_KEYS if k in names]
    if getattr(cfg.hp, "estimator", None) == "reinforce":
        out += [f"{k}={getattr(cfg.hp, k)} does nothing with estimator=reinforce (it is the Gumbel temperature "
                "of estimator=st)" for k in ("tau_max", "tau_min") if k in names]
    return out


def _apply(cfg: SearchConfig, values: Mapping[str, Any], *, where: str) -> SearchConfig:
    """Set flat or nested ``values`` on ``cfg`` (strict types, unknown keys listed; a setting given twice,
    flat and nested, is refused: the later one won without a word)."""
    paths = leaf_paths(cfg)
    seen: Dict[Tuple[str, ...], str] = {}

    def once(path: Tuple[str, ...], written: str) -> None:
        if path in seen:
            raise ConfigError(f"{where}: {'.'.join(path)} is given twice (as {seen[path]} and as {written}); "
                              "give it once")
        seen[path] = written

    for key, value in values.items():
        if key in ("space", "strategy"):
            continue
        if isinstance(value, Mapping) and key in ("knobs", "data", "budget", "hp"):  # a nested section
            for sub in value:
                once((key, str(sub)), f"{key}: {{{sub}: ...}}")
            section = getattr(cfg, key)
            merged = {**dataclasses.asdict(section), **value}
            cfg = dataclasses.replace(cfg, **{key: build(type(section), merged, where=f"{where}: {key}")})
            continue
        written, key = key, ALIASES.get(key, key)
        if key not in paths:
            names = sorted(k for k in paths if "." not in k)
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(names)}")
        once(paths[key], str(written))
        cfg = set_path(cfg, paths[key], coerce(value, annotation_at(cfg, paths[key]), f"{where}: {key}"))
    return cfg


def load_search_config(data: Mapping[str, Any], *, where: str) -> SearchConfig:
    """A SearchConfig from a saved ``config.yaml`` mapping (nested, or an earlier flat one)."""
    strategy = str(data.get("strategy", "atldas"))
    space = get_space(str(data.get("space", "matting")))
    cfg = SearchConfig(space=space.name, strategy=strategy, hp=_hp_class(strategy)(), task=space.task)
    return _apply(cfg, data, where=where)


def bind_space(cfg: SearchConfig) -> SearchSpace:
    """The config's space bound to its knobs and its task's input/output sizes."""
    task = get_task(cfg.task or get_space(cfg.space).task)
    return get_space(cfg.space).bind(cfg.knobs, io=task.io(cfg.data))


# --------------------------------------------------------------------------- data

def epoch_order(*, n: int, per_epoch: int, epochs: int, seed: int, salt: int, batch_size: int,
                cycle: bool) -> Callable[[int], Iterator[int]]:
    """A search split's order per epoch: epoch ``e`` takes its own slice of a generated split (when
    the split holds one per epoch of ``epochs``; ``epochs=0``: the whole split) or the whole split, in
    a seeded random order (drop_last batches), repeated with fresh orders when ``cycle``."""
    def order(epoch: int) -> Iterator[int]:
        start, size = (epoch * per_epoch, per_epoch) if epochs and n >= epochs * per_epoch else (0, n)
        for k in itertools.count():
            key = epoch * 1000 + k if cycle else epoch
            yield from seeded_order(size, seed=seed * 100003 + key * 101 + salt, start=start, drop_last_of=batch_size)
            if not cycle:
                return

    return order


# --------------------------------------------------------------------------- the run

#: How to go on after a search diverged.
_DIVERGED = ("search again with a lower --set w_lr=... or arch_lr=... (or, under a budget, a lower lam_init or rho; "
             "with --force, or another --out)")


def _kept(rd: Optional[RunDir]) -> str:
    """What a stopped search leaves: its last checkpoint, which is whole and finite, or none."""
    return (f"the last good checkpoint is kept in {rd.checkpoint}" if rd is not None and rd.checkpoint.exists()
            else "no checkpoint was written")


def _finite(metrics: Mapping[str, Any]) -> bool:
    return all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


class Run:
    """A search's live objects, built from a config (module docstring).

    Args:
        cfg: the resolved configuration (:func:`make_search_config`).
        out: the run directory to write; None keeps everything in memory.
        table: the cost table of the budget metric to use instead of the one the config would build
            (``derive --stored-costs``: the run's stored ``cost_table.json``); None builds it.

    Attributes:
        space: the bound search space; task: the task; net: the supernet; table: the cost table of
        the budget metric; budget: the budget (or None); strategy: the strategy; epoch: the next
        epoch :meth:`fit` runs.
    """

    def __init__(self, cfg: SearchConfig, *, out: Optional[Path] = None, table: Optional[CostTable] = None) -> None:
        if not isinstance(cfg, SearchConfig):
            raise TypeError(f"Run needs a SearchConfig (atldas.make_search_config(space=..., sets=[...])), got "
                            f"{type(cfg).__name__}")
        self.task: Task = get_task(cfg.task or get_space(cfg.space).task)
        cfg.check(self.task)
        self.cfg = cfg
        self.out = Path(out) if out is not None else None
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.space: SearchSpace = bind_space(cfg)
        #: The cell types the space's target network has (the planted space has no reduction cell: its
        #: reduce logits exist and are drawn, but decide nothing, so nothing of them is logged).
        self.cell_types: Tuple[str, ...] = tuple(
            t for t in CELL_TYPES if t == "normal" or any(g.reduction for g in self.space.cell_geometry()))
        strategy_cls = STRATEGIES.get(cfg.strategy)
        tune_backend(cfg.device)
        net = self.space.build_supernet(ops=self.space.search_ops(with_none=strategy_cls.uses_none)).to(cfg.device)
        self.net = channels_last(net) if cfg.channels_last else net
        self.budget = cfg.budget.build()
        metric = self.budget.metric if self.budget else "macs"
        if table is None:
            table = cost_table(self.space, self.net.arch, metric=metric, lut=cfg.budget.lut)
        else:  # the costs a search started with (derive --stored-costs): no --lut needed, checked against this net
            table.check_fits(self.net.arch, budget_metric=metric if self.budget else None)
        self.table: CostTable = table
        self.strategy: Strategy = strategy_cls(supernet=self.net, loss_fn=self.task.loss, cost=self.table,
                                               budget=self.budget, hp=cfg.hp, epochs=cfg.epochs,
                                               warmup_epochs=cfg.warmup_epochs, seed=cfg.seed)
        dtype = amp_dtype(cfg.device, cfg.amp)
        self.strategy.amp_dtype = None if dtype == torch.float16 else dtype  # auto on a GPU without bf16: off
        self.epoch = 0
        #: The torch thread count the loaded checkpoint was written at (None for a fresh run).
        self.saved_threads: Optional[int] = None
        self._data: Optional[tuple] = None

    def check_budget(self) -> None:
        """Before a fresh run (:meth:`fit` of epoch 0 calls it): ConfigError when the budget is below
        the cheapest architecture, or when a latency table estimates that architecture at 0 ms or less
        (its fixed part came out negative when measured; lut build warned): such a table cannot tell
        small budgets apart (a 0.01 ms budget was met with a negative latency). A run searched under
        either still resumes and derives (its genotype records whether the budget was met)."""
        if self.budget is None:
            return
        cheapest, _ = self.table.cheapest(self.net.arch)
        metric = self.budget.metric
        if cheapest > self.budget.target:
            raise BudgetBelowCheapest(f"budget {format_cost(self.budget.target, metric)} is below the cheapest "
                              f"architecture in the {self.cfg.space} space ({format_cost(cheapest, metric)} at input "
                              f"{list(self.table.input_size)}); raise the target to at least that")
        if self.table.metric != "latency_ms":
            return
        if cheapest <= 0:
            raise ConfigError(f"the latency table {self.cfg.budget.lut} estimates the cheapest architecture at "
                              f"{cheapest:.4g} ms (its fixed part, base_ms, came out negative when measured): it "
                              "cannot tell budgets this small; rebuild it with a longer --min-run-time or at a "
                              "larger --size")

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, run_dir: Path | str, *, restore_rng: bool = False, device: Optional[str] = None,
             table: Optional[CostTable] = None) -> "Run":
        """Rebuild a run from its directory (config.yaml + checkpoint.pt), pruned modules deleted;
        ``device`` replaces the config's (``atldas derive`` loads a GPU search on the CPU); ``table``
        replaces the cost table the config would build (``derive --stored-costs``)."""
        rd = RunDir(run_dir, checkpoint=CHECKPOINT, kind="search")
        config = rd.read_config()
        ckpt = rd.load(fmt=FORMAT)  # first: another version's run is told so, not by its config's keys
        cfg = load_search_config(config, where=str(rd.path / "config.yaml"))
        if device is not None:
            cfg = dataclasses.replace(cfg, device=device)
        resolve_device(cfg.device, hint=resume_device_hint(rd.path / "config.yaml"))
        # config.yaml edited since: the run would go on (or derive) with other settings, silently
        refuse_edited(to_dict(cfg), ckpt.get("config"), where=rd.path / "config.yaml", made="checkpoint was searched")
        run = cls(cfg, out=rd.path, table=table)
        run.load_state_dict(ckpt, source=str(rd.checkpoint))
        warn_other_loss(ckpt, run.task.loss_version, source=rd.checkpoint, made="searched", loss=run.task.name)
        if restore_rng:
            set_rng_state(ckpt["rng"], cfg.device)
            resume_threads(ckpt.get("threads"), configured=cfg.threads)
        return run

    def state_dict(self) -> Dict[str, Any]:
        """Everything a resumed run needs (plain data: loads with ``weights_only=True``)."""
        masks = {k: v for k, v in self.net.arch.state_dict().items() if "mask" in k}
        return {"format": FORMAT, "atldas": __version__, "epoch": self.epoch - 1,
                "config": dataclasses.asdict(self.cfg), "masks": masks, "supernet": self.net.state_dict(),
                "strategy": self.strategy.state_dict(), "rng": rng_state(self.cfg.device), "threads": torch.get_num_threads(),
                "loss_version": self.task.loss_version}

    def load_state_dict(self, ckpt: Mapping[str, Any], *, source: str = "checkpoint") -> None:
        """Restore :meth:`state_dict`'s output. Raises DataError (one line, naming ``source``) when the
        checkpoint lacks an entry or its tensors do not fit this run's supernet."""
        missing = [k for k in ("masks", "supernet", "strategy", "epoch") if k not in ckpt]
        if missing:
            raise DataError(f"{source}: not a search checkpoint (no {', '.join(missing)}); point at a search run's folder")
        arch = self.net.arch

        def check(bad: Optional[str]) -> None:
            if bad:
                raise DataError(f"{source} does not fit the supernet of this run's config.yaml ({self.cfg.space} "
                                f"space): {bad}; the checkpoint and config.yaml come from different runs")

        check(weight_mismatch({k: v for k, v in arch.state_dict().items() if "mask" in k}, ckpt["masks"]))
        for k, v in ckpt["masks"].items():
            getattr(arch, k).copy_(v)
        self.net.apply_masks()  # pruned candidates deleted: what the checkpoint's supernet holds
        check(weight_mismatch(self.net.state_dict(), ckpt["supernet"]))
        self.net.load_state_dict(ckpt["supernet"])
        self.strategy.load_state_dict(ckpt["strategy"])
        self.epoch = int(ckpt["epoch"]) + 1
        threads = ckpt.get("threads")
        self.saved_threads = threads if isinstance(threads, int) and threads >= 1 else None

    # ------------------------------------------------------------------ data

    def model_input(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The supernet's input for ``batch``, in the supernet's memory format."""
        x = self.task.model_input(batch)
        return channels_last(x) if self.cfg.channels_last else x

    def open_data(self) -> None:
        """Open the task's data sets now (a bad data folder fails here, before a run directory is
        written); :meth:`fit` reuses them."""
        self._loaders()

    def _loaders(self):
        if self._data is None:
            cfg, d = self.cfg, self.cfg.data
            arch_steps = max(1, cfg.arch_steps_per_epoch)
            train, arch = self.task.datasets(d, seed=cfg.seed, n_train=cfg.steps_per_epoch * d.batch_size * cfg.epochs,
                                             n_arch=arch_steps * d.batch_size * cfg.epochs)
            # a composed split of fewer foregrounds than an epoch takes: fresh composites, not repeats
            train, arch = with_draws(train, cfg.steps_per_epoch * d.batch_size), with_draws(arch, arch_steps * d.batch_size)
            ts = EpochBatches(epoch_order(n=len(train), per_epoch=cfg.steps_per_epoch * d.batch_size, epochs=cfg.epochs,
                                          seed=cfg.seed, salt=1, batch_size=d.batch_size, cycle=False),
                              batch_size=d.batch_size, steps=cfg.steps_per_epoch)
            As = EpochBatches(epoch_order(n=len(arch), per_epoch=arch_steps * d.batch_size, epochs=cfg.epochs,
                                          seed=cfg.seed, salt=2, batch_size=d.batch_size, cycle=True),
                              batch_size=d.batch_size, steps=arch_steps)
            self._data = (train, arch, make_loader(train, ts, num_workers=d.num_workers, seed=cfg.seed),
                          make_loader(arch, As, num_workers=d.num_workers, seed=cfg.seed), ts, As)
        return self._data

    # ------------------------------------------------------------------ search

    def fit(self, epochs: Optional[int] = None, *, callback: Optional[Callable[[Dict[str, Any]], None]] = None
            ) -> List[Dict[str, Any]]:
        """Run epochs ``self.epoch`` up to ``epochs`` (default: all the config's); returns their history
        rows. With a run directory, each epoch ends with ``history.jsonl``, ``genotype.json``, TensorBoard
        and an atomic checkpoint. ``callback(row)`` is called after each epoch (after the checkpoint).

        Raises:
            AtldasError: a non-finite loss (the last good checkpoint is kept).
        """
        cfg = self.cfg
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)):
            raise TypeError(f"fit(epochs=...) takes an int (the epoch to stop before), got {epochs!r}")
        end = cfg.epochs if epochs is None else min(cfg.epochs, epochs)
        _, _, train_loader, arch_loader, ts, As = self._loaders()
        rd = RunDir(self.out, checkpoint=CHECKPOINT, kind="search") if self.out is not None else None
        if self.epoch == 0:
            self.check_budget()
        if rd is not None and self.epoch == 0:  # a fresh run: never over another one; a complete directory
            rd.check_new()
            self.cfg = cfg = pin_threads(cfg)
            rd.write_config(dataclasses.replace(cfg, out=str(self.out)))  # refuses another config left without a checkpoint
            write_cost_table(self)
        history = rd.history(self.epoch) if rd is not None else None
        # none for a finished run's --resume (it made an event file of a purge marker alone each time)
        writer = rd.writer(cfg.tensorboard, start=self.epoch) if rd is not None and self.epoch < end else None
        strat, rows = self.strategy, []
        try:
            for epoch in range(self.epoch, end):
                self.net.train()
                t0 = time.perf_counter()
                ts.set_epoch(epoch)
                As.set_epoch(epoch)
                arch_batches = None  # made on the first arch step (no prefetching in warm-up epochs)
                sums: Dict[str, float] = {}
                counts: Dict[str, int] = {}
                bar = progress_bar(train_loader, progress=cfg.progress, total=cfg.steps_per_epoch,
                                   desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False, dynamic_ncols=True)
                arch_steps = min(cfg.arch_steps_per_epoch, cfg.steps_per_epoch)  # one after each weight step at most
                shown: Dict[str, str] = {}
                for step, batch in enumerate(bar):
                    stop.check()  # a signal's stop that Python swallowed (utils/stop.py)
                    strat.set_epoch(epoch + step / cfg.steps_per_epoch)
                    batch = shard(batch_to(batch, cfg.device), cfg.data.batch_size)  # torchrun: this rank's part
                    metrics = strat.weight_step(batch, self.model_input(batch))
                    if not strat.in_warmup() and step < cfg.arch_steps_per_epoch:
                        arch_batches = arch_batches or iter(arch_loader)
                        ab = shard(batch_to(next(arch_batches), cfg.device), cfg.data.batch_size)
                        metrics.update(strat.arch_step(ab, self.model_input(ab), steps_per_epoch=arch_steps))
                    if not _finite(metrics):
                        bad = ", ".join(f"{k}={v}" for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
                        first = (epoch, step) == (0, 0) and not math.isfinite(metrics.get("loss/weights", 0.0))
                        raise AtldasError(f"the loss became non-finite at epoch {epoch + 1}, step {step + 1} ({bad}); "
                                          f"{_kept(rd)}; " + ("it was so before any update: check the data and the "
                                                              "task's loss" if first else _DIVERGED))
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                        counts[k] = counts.get(k, 0) + 1
                    shown.update({k.split("/")[-1]: f"{v:.3g}" for k, v in metrics.items()
                                  if k in ("loss/weights", "cost/expected", "lambda")})
                    bar.set_postfix(shown, refresh=False)  # the last of each (lambda comes with arch steps only)
                bar.close()
                del arch_batches
                events = strat.end_epoch(epoch)
                sums = mean_values(sums)  # torchrun: each rank's weight loss is of its part of the batch
                row = self._epoch_row(epoch, sums, counts, events, time.perf_counter() - t0)
                self.epoch = epoch + 1
                state = self.state_dict()
                bad = first_non_finite({"supernet": state["supernet"], "strategy": state["strategy"]}) or next(
                    (k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)), None)
                if bad is not None:  # an arch step's logits, the budget's multiplier, an optimizer's moments
                    self.epoch = epoch
                    raise AtldasError(f"the search's state became non-finite in epoch {epoch + 1} (first: {bad}); "
                                      f"{_kept(rd)}; {_DIVERGED}")
                self._warn_diverging(row)
                if rd is not None:
                    g = self.genotype(strat.derive_argmax())  # the policy's argmax so far: not repaired, no select
                    history.append(row)  # before the checkpoint: a resume drops the rows of epochs it repeats
                    add_scalars(writer, row, epoch, skip=("epoch",))  # the step already is the epoch
                    if writer is not None:
                        if _heatmap_due(cfg.heatmap_every, epoch, cfg.epochs):
                            _heatmaps(writer, self, epoch)
                            _cell_graphs(writer, g, epoch, cell_types=self.cell_types)
                        writer.flush()
                    rd.save(state)
                    # after the checkpoint: an interim genotype is never ahead of it (killed in between, it
                    # said the search had run every epoch and advised derive instead of --resume)
                    g.replace(provenance={**g.provenance, "interim": True}).save(rd.path / "genotype.json")
                self._log_epoch(row, events, end=end, wall=time.perf_counter() - t0)
                rows.append(row)
                if callback is not None:
                    callback(row)
        except BaseException:
            self.close()  # a failed or stopped fit leaves no worker processes behind
            raise
        finally:
            if writer is not None:
                writer.close()
        if self.epoch >= cfg.epochs:  # searched: what follows (derive, the select stage) reads no loader
            self.close()
        return rows

    def close(self) -> None:
        """Stop the data loaders' worker processes (``num_workers`` > 0 keeps them between epochs): a
        finished run kept by a caller held two processes, their pipes and threads each. The data sets
        stay; a later :meth:`fit` starts the workers again."""
        for loader in (self._data or ())[2:4]:
            it = getattr(loader, "_iterator", None)
            if it is not None and hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()
            if it is not None:
                loader._iterator = None

    #: An epoch's mean weight loss this many times the lowest before it: the search diverges (warned once).
    DIVERGING = 1e3

    def _warn_diverging(self, row: Dict[str, Any]) -> None:
        """Warn, once per process, when the epoch's mean weight loss is :attr:`DIVERGING` times the lowest
        epoch's so far (finite but diverged: 1e23 at the end of `--set w_lr=10` ended as a success)."""
        loss = row.get("loss/weights")
        if not isinstance(loss, float):
            return
        low = getattr(self, "_lowest_loss", None)
        if low is not None and low > 0 and loss > self.DIVERGING * low and not getattr(self, "_warned_diverging", False):
            self._warned_diverging = True
            log.warning("the weight loss of epoch %d (%.4g) is over %g times the lowest epoch's (%.4g): the search is "
                        "diverging; %s", row["epoch"] + 1, loss, self.DIVERGING, low, _DIVERGED)
        self._lowest_loss = loss if low is None else min(low, loss)

    def _epoch_row(self, epoch: int, sums: Dict[str, float], counts: Dict[str, int], events: List[Dict[str, Any]],
                   seconds: float) -> Dict[str, Any]:
        child = self.strategy.derive_argmax()
        row: Dict[str, Any] = {"epoch": epoch, **{k: sums[k] / counts[k] for k in sums}}
        with torch.no_grad():
            expected = float(self.table.expected(self.net.arch))
        row.update({"cost/derived": self.table.of_child(child), "cost/metric": self.table.metric,
                    "cost/expected": expected,
                    **({"lambda": self.strategy.lam} if self.budget is not None else {}),
                    "params/supernet": sum(p.numel() for p in self.net.weight_parameters()),
                    "time/epoch_s": seconds, "genotype": self.space.child_to_genotype(self.net.arch, child).hash(),
                    **self.net.arch.entropies(), **self.strategy.grad_stats()})
        unused = [t for t in CELL_TYPES if t not in self.cell_types]
        for key in [k for k in row if any(f"/{t}_" in k for t in unused)]:  # entropy/..., grad_z/.../reduce_ops
            del row[key]
        if events:
            row["pruning"] = events
        return row

    def _log_epoch(self, row: Dict[str, Any], events: List[Dict[str, Any]], *, end: int, wall: float) -> None:
        """The epoch's line; its estimate of the time left is from the epoch's wall time with its
        checkpoint, genotype and heatmaps (``wall``), not the training alone (``time/epoch_s``)."""
        for ev in events:
            log.info("pruning, epoch %d: %s", row["epoch"] + 1, ", ".join(f"{k}={v}" for k, v in ev.items() if k != "epoch"))
        metric = self.table.metric
        warm = " (warm-up: uniform children, no arch step)" if row["epoch"] < self.cfg.warmup_epochs else ""
        lam = f", lambda {self.strategy.lam:.3g}" if self.budget is not None else ""
        log.info("epoch %d/%d%s: loss %.4f, derived %s, expected %s%s, %.1fs%s%s", row["epoch"] + 1,
                 self.cfg.epochs, warm, row.get("loss/weights", float("nan")), format_cost(row["cost/derived"], metric),
                 format_cost(row["cost/expected"], metric), lam, row["time/epoch_s"],
                 f", pruned {len([e for e in events if 'dropped' in e])} groups" if events else "",
                 "" if warm else time_left(wall, end - row["epoch"] - 1)  # warm-up epochs are faster
                 + (", then the select stage" if self.cfg.select and end == self.cfg.epochs
                    and row["epoch"] + 1 < end else ""))

    # ------------------------------------------------------------------ derive

    def provenance(self) -> Dict[str, Any]:
        """What a derived genotype records of the search that made it: seed, strategy, run folder,
        epochs searched, space and task."""
        cfg = self.cfg
        return {"seed": cfg.seed, "strategy": cfg.strategy, "run": str(self.out) if self.out else None,
                "epochs": min(self.epoch, cfg.epochs), "space": cfg.space, "task": self.task.name}  # searched

    def genotype(self, child: Child) -> Genotype:
        """Genotype of ``child`` with its cost in the table's metric (not repaired)."""
        g = self.space.child_to_genotype(self.net.arch, child)
        cost = {"input": list(self.table.input_size), self.table.metric: self.table.of_child(child),
                "target": None if self.budget is None else {"metric": self.budget.metric, "value": self.budget.target}}
        return g.replace(cost=cost, provenance={"atldas": __version__, **self.provenance()})

    def evaluate(self, child: Child, *, batches: int = 2) -> float:
        """Held-out loss of a fixed child on the first ``batches`` batches of the architecture split, in
        a fixed order (random search with shared weights ranks its children by it). BatchNorm uses the
        batch's statistics, as in the arch step: running statistics pooled over other children misjudge
        this one (Kendall tau against standalone training 0.03 vs 0.09 on the planted task)."""
        _, arch, *_ = self._loaders()
        d = self.cfg.data
        sampler = EpochBatches(epoch_order(n=len(arch), per_epoch=0, epochs=0, seed=self.cfg.seed, salt=3,
                                           batch_size=d.batch_size, cycle=False), batch_size=d.batch_size, steps=batches)
        sampler.set_epoch(10**6)
        total, n = 0.0, 0
        with torch.no_grad():
            for keys in sampler:
                batch = batch_to(default_collate([arch[i] for _, i in keys]), self.cfg.device)
                total += float(self.task.loss(self.net(self.model_input(batch), self.net.plan(child)), batch))
                n += 1
        return total / max(1, n)

    def _select(self, first: Child) -> Tuple[Child, Dict[str, Any]]:
        """The ``select`` stage: up to ``cfg.select`` distinct candidates (``first``, then samples of the
        final policy), each repaired onto the cost ``cfg.select_cost`` names (and with ``cfg.select_fill``
        grown onto the budget), ranked by the task's short standalone fit (with ``cfg.select_mutants``,
        the last of them made from the best of the first: :meth:`_mutants`); with ``cfg.select_keep``,
        the best few are fitted again, longer, and ranked by that. Returns the chosen child and the
        record the genotype's provenance keeps: the strategy's own candidate and the deciding round's
        scores (genotype hash: score; None where not finite)."""
        arch, mutants = self.net.arch, self.cfg.select_mutants
        n = self.cfg.select - mutants  # drawn before the first fits
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + 11)
        if self.budget is not None:
            cap: Optional[float] = self.budget.target
        else:  # no budget: the derived child's cost, or none
            cap = self.table.of_child(first) if self.cfg.select_cost == "derived" else None
        pool = max(n, self.cfg.select_pool)
        candidates: Dict[str, Child] = {}
        child = first
        for _ in range(50 * pool):
            child = self._onto_cost(child, cap)
            candidates.setdefault(self.space.child_to_genotype(arch, child).hash(), child)
            if len(candidates) >= pool:
                break
            with torch.no_grad():
                child = arch.sample(generator=gen, epsilon=self.cfg.select_epsilon)
        if len(candidates) > n:  # select_pool: the strategy's own, then the best others on the shared weights
            own, *others = candidates
            shared = {k: self.evaluate(candidates[k]) for k in others}
            log.info("select: the best %d of %d candidates on the shared weights go on%s", n - 1, len(others),
                     "" if self.cfg.select_strata == "none" else f" (by {self.cfg.select_strata})")
            candidates = {k: candidates[k] for k in [own, *self._best(shared, candidates, n - 1)]}
        keep = self.cfg.select_keep
        if keep and not mutants and len(candidates) <= keep:  # all reach the second round: it alone decides
            scores = self._short_fits(candidates, steps=self.cfg.select_keep_steps)
        else:
            scores = self._short_fits(candidates, steps=self.cfg.select_steps)
            if mutants:
                new = self._mutants(candidates, scores, count=mutants, cap=cap)
                candidates.update(new)
                scores.update(self._short_fits(new, steps=self.cfg.select_steps))
            if keep:  # successive halving: the best few, fitted again longer
                kept = self._best(scores, candidates, keep)
                scores = self._short_fits({k: candidates[k] for k in kept}, steps=self.cfg.select_keep_steps)
        best = lowest(scores, what="select: the candidates' short fits",
                      hint="every candidate's fit diverged; search without the select stage (--set select=0)")
        own = next(iter(candidates))
        log.info("select: %s of %d candidates (the strategy's own: %s)", best, len(candidates), own)
        record = {"own": own, "chosen": best, "candidates": len(candidates),
                  "scores": {k: v if math.isfinite(v) else None for k, v in scores.items()}}
        return candidates[best], record

    def _best(self, scores: Dict[str, float], candidates: Dict[str, Child], count: int) -> List[str]:
        """The ``count`` keys of ``scores`` the stage keeps: the lowest scores or, with
        ``cfg.select_strata``, the lowest within each stratum first (:func:`stratified_order`)."""
        if self.cfg.select_strata == "none":
            return sorted(scores, key=lambda k: score_key(scores[k]))[:count]
        arch = self.net.arch
        depth = {k: self.space.child_to_genotype(arch, candidates[k]).depth for k in scores}
        return stratified_order(scores, depth)[:count]

    def _onto_cost(self, child: Child, cap: Optional[float]) -> Child:
        """``child`` repaired onto ``cap`` if above it and, with ``cfg.select_fill``, grown onto the budget."""
        if cap is not None and self.table.of_child(child) > cap:
            child, _ = repair(self.net.arch, child, self.table, cap)
        if self.budget is not None and self.cfg.select_fill:  # repair's last swap may overshoot
            child, _ = grow(self.net.arch, child, self.table, self.budget.target)
        return child

    def _mutants(self, candidates: Dict[str, Child], scores: Dict[str, float], *, count: int,
                 cap: Optional[float]) -> Dict[str, Child]:
        """Up to ``count`` new candidates, each one of the two best-scoring ``candidates`` with one
        decision drawn anew from the policy, put onto the cost, distinct from all before it."""
        arch = self.net.arch
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + 13)
        parents = sorted(scores, key=lambda k: score_key(scores[k]))[:2]
        new: Dict[str, Child] = {}
        for k in range(50 * count):
            if len(new) >= count:
                break
            child = self._onto_cost(arch.mutate(candidates[parents[k % len(parents)]], generator=gen), cap)
            key = self.space.child_to_genotype(arch, child).hash()
            if key not in candidates:
                new.setdefault(key, child)
        log.info("select: %d mutant(s) of the best %d candidate(s) %s", len(new), len(parents), ", ".join(parents))
        return new

    def _short_fits(self, candidates: Dict[str, Child], *, steps: int) -> Dict[str, float]:
        """Candidate key -> the task's short standalone fit score (its loss or, on matting, SAD) of ``steps`` steps."""
        scores: Dict[str, float] = {}
        log.info("select: fitting %d candidate(s) on their own, %d steps each", len(candidates), steps)
        for key, c in candidates.items():
            g = self.space.child_to_genotype(self.net.arch, c)
            scores[key] = self.task.short_fit(g, data=self.cfg.data, seed=self.cfg.seed, steps=steps,
                                              device=self.cfg.device)
            log.info("select: candidate %s, %s: %d-step fit score %.4g (lower is better)", key,
                     format_cost(self.table.of_child(c), self.table.metric), steps, scores[key])
        return scores

    def final_genotype(self) -> Genotype:
        """The final genotype: the strategy's derive (random search ranks by :meth:`evaluate`),
        repaired onto the budget, with counted costs. ``atldas search`` and ``atldas derive`` both
        call this, so they cannot disagree."""
        child = self.strategy.derive(self.evaluate)
        provenance = self.provenance()
        if self.cfg.select:  # recorded: the select stage may have chosen another genotype than the policy's
            child, provenance["select"] = self._select(child)
        return finalize(space=self.space, arch=self.net.arch, child=child, table=self.table, budget=self.budget,
                        provenance=provenance)


#: The ``select_strata`` a search may name.
STRATA = ("none", "depth")


def stratified_order(scores: Mapping[str, float], stratum: Mapping[str, Any]) -> List[str]:
    """The keys of ``scores`` by their rank within their stratum, then by score (lower first): the best
    of every stratum in the order of their scores, then every stratum's second best, and so on.

    >>> stratified_order({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 0, "b": 0, "c": 1})
    ['a', 'c', 'b']
    """
    rank: Dict[str, int] = {}
    seen: Dict[Any, int] = {}
    for k in sorted(scores, key=lambda k: score_key(scores[k])):
        rank[k] = seen.get(stratum[k], 0)
        seen[stratum[k]] = rank[k] + 1
    return sorted(scores, key=lambda k: (rank[k], score_key(scores[k])))


def _heatmap_due(every: int, epoch: int, epochs: int) -> bool:
    """Whether epoch ``epoch`` (0-based) of ``epochs`` draws heatmaps: every ``every``-th and the last."""
    return every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == epochs)


def _heatmaps(writer, run: Run, epoch: int) -> None:
    """Op and input-set probabilities as TensorBoard figures."""
    import matplotlib  # lazy: matplotlib is only needed when TensorBoard is written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arch = run.net.arch
    with torch.no_grad():
        for t in run.cell_types:
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.imshow(arch.op_probs(t).numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
            ax.set_yticks(range(len(arch.topology.edges)), [f"{i}->{j + 2}" for i, j in arch.topology.edges], fontsize=6)
            ax.set_xticks(range(len(arch.op_names)), arch.op_names, rotation=45, ha="right", fontsize=6)
            ax.set_title(f"{t}: op probabilities p (alpha)")
            fig.tight_layout()
            writer.add_figure(f"alpha/{t}", fig, epoch)
            plt.close(fig)
            fig, axes = plt.subplots(1, arch.topology.nodes, figsize=(8, 3), squeeze=False)
            for j, ax in enumerate(axes[0]):
                q = arch.set_probs(t, j).numpy()
                ax.barh(range(len(q)), q)
                ax.set_yticks(range(len(q)), ["+".join(map(str, s)) for s in arch.topology.input_sets[j]], fontsize=5)
                ax.set_title(f"node {j + 2}", fontsize=7)
            fig.suptitle(f"{t}: input-set probabilities q (beta)", fontsize=8)
            fig.tight_layout()
            writer.add_figure(f"beta/{t}", fig, epoch)
            plt.close(fig)


def _cell_graphs(writer, genotype: Genotype, epoch: int, *, cell_types: Sequence[str]) -> None:
    """The cells of the policy's argmax so far (the interim ``genotype.json``) as TensorBoard figures."""
    for name, cell in genotype.cells().items():
        if name not in cell_types:
            continue
        ax = plot_cell(cell, title=f"{name} cell, epoch {epoch + 1}: the policy's argmax (not repaired)")
        writer.add_figure(f"cells/{name}", ax.figure, epoch)


def derive_run(run_dir: Path | str, *, out: Optional[Path | str] = None, stored_costs: bool = False,
               device: Optional[str] = None) -> Path:
    """``atldas derive RUN_DIR [--out FILE] [--stored-costs] [--device D]``: the run's final genotype
    from its checkpoint, written to ``out`` (default ``RUN_DIR/genotype.json``).

    ``stored_costs``: cost the candidates with the table the search started with
    (``RUN_DIR/cost_table.json``) rather than with the one this atldas builds; without it a run whose
    costs have changed since (another cost model, a rebuilt ``--lut``) is refused.

    ``device``: where the derive computes, which matters only where it trains or evaluates (the select
    stage's fits, ``random``'s ranking on the shared weights). None: the device the run searched on
    when it is here (a GPU search derived on a machine with a GPU fits its candidates there, as the
    search did), else the CPU, with a warning when the derive computes: another kind of device rounds
    otherwise and can pick another candidate than the search's own ``genotype.json`` (so can another
    GPU model, unwarned). A CPU search derived on the CPU computes at the torch thread count its
    checkpoint recorded. The process's thread count and cuDNN setting are put back afterwards."""
    path = Path(out) if out else Path(run_dir) / "genotype.json"
    refuse_overwriting_non_json(path, flag="--out", example="genotype.json")  # --out photo.png overwrote it
    rd = RunDir(run_dir, checkpoint=CHECKPOINT, kind="search")
    if rd.path.is_dir():
        refuse_input_as_output(path, [p for p in rd.path.iterdir() if p.name != "genotype.json"], flag="--out")
        if rd.owner() == "retrain":
            g = Path(run_dir) / "genotype.json"
            have = f"its genotype is already in {g}" if g.is_file() else "it trained a registered model, no genotype"
            raise ConfigError(f"{run_dir} is a retrain run, not a search run: derive reads the folder of an `atldas "
                              f"search` run; {have}")
    inside = (Path(run_dir) / CHECKPOINT).is_file() and path.resolve().parent == Path(run_dir).resolve()
    other = RunDir(path.resolve().parent, checkpoint=CHECKPOINT, kind="search")
    if path.name in RUN_FILES and not inside and other.path != Path(run_dir).resolve() and other.owner():
        busy = f", which a running atldas process (pid {other.holder()}) holds" if other.holder() else ""
        raise ConfigError(f"--out {path} is a file of another run, the {other.owner()} run in {other.path}{busy}; "
                          f"derive writes {Path(run_dir) / 'genotype.json'} by default: leave --out out, or choose "
                          "another path")
    # writing into the run directory: not while a search of it runs (it rewrites genotype.json every epoch)
    lock = rd.locked() if inside else contextlib.nullcontext()
    searching = None if inside else rd.holder()  # derive elsewhere from a search that still runs
    with lock, _process_state_kept():
        table = stored_cost_table(Path(run_dir)) if stored_costs else None
        config = rd.read_config()
        searched = str(config.get("device") or "cpu")
        budget = config.get("budget") if isinstance(config.get("budget"), dict) else {}
        lut = budget.get("lut") if budget.get("target_latency_ms") is not None else None
        if not stored_costs and isinstance(lut, str) and lut and not Path(lut).is_file():
            raise ConfigError(f"{run_dir} searched under a latency budget with the table {lut}, which is gone; put it "
                              "back, or derive with the costs it searched with: atldas derive RUN_DIR --stored-costs")
        if device is None:  # the search's own device when it is here (or a GPU of its kind), else the CPU
            device = next((d for d in (searched, _device_kind(searched)) if _device_here(d)), "cpu")
        else:
            resolve_device(device)  # the flag's own hint, not that of a resumed run's config.yaml
        run = Run.load(run_dir, device=device, table=table)
        computes = bool(run.cfg.select or run.strategy.derive_evaluates)
        if _device_kind(device) != _device_kind(searched) and computes:
            what = "its select stage fits its candidates" if run.cfg.select else "random search ranks its candidates"
            log.warning("%s searched on %s and derives on %s, where %s: another device rounds otherwise, so the "
                        "genotype can differ from the search's own genotype.json", run_dir, searched, device, what)
        if stored_costs:
            warn_other_costs(run, Path(run_dir))
        else:
            check_costs_unchanged(run, Path(run_dir), verb="derive")
        if run.epoch < run.cfg.epochs and searching:  # its checkpoint is whole: the last epoch it wrote
            log.warning("%s is still searching (pid %s; its checkpoint is of epoch %d of %d): the genotype is derived "
                        "from the search as it stands now; derive again when it has finished", run_dir, searching,
                        run.epoch, run.cfg.epochs)
        elif run.epoch < run.cfg.epochs:
            log.warning("%s stopped after epoch %d of %d: the genotype is derived from the search as it stood then; "
                        "`atldas search --out %s --resume` finishes it", run_dir, run.epoch, run.cfg.epochs, run_dir)
        # a CPU search on the CPU: on the thread count it ran on (floats depend on it), as --resume does
        on_cpu = _device_kind(device) == _device_kind(searched) == "cpu"
        threads = run.saved_threads if computes and on_cpu and not run.cfg.threads else None
        with torch_threads(threads):
            genotype = run.final_genotype()
        save_final(genotype, path)
    return path


def save_final(genotype: Genotype, path: Path) -> None:
    """Write a run's final ``genotype`` to ``path``. Where the file held the final genotype of another
    architecture (an older atldas's search derived or resumed by this one, with another loss or select
    stage; another device or cost table), the old file is kept beside it as ``<stem>.<old hash>.json``
    and a warning says so: retrains made from it keep their own copy, but nothing else would name it."""
    old = None
    if path.is_file():
        with contextlib.suppress(AtldasError, OSError, ValueError):
            old = Genotype.load(path)
    if old is not None and not old.provenance.get("interim") and old.hash() != genotype.hash():
        kept = path.with_name(f"{path.stem}.{old.hash()}.json")
        if not kept.exists():
            write_text_atomic(kept, path.read_text())
        other = old.provenance.get("run")
        why = ("this atldas, device or cost table is not the one that wrote it"
               if other == genotype.provenance.get("run") else f"it was derived from {other or 'another run'}")
        log.warning("%s held the derived genotype %s; this derive gives %s (%s), which replaces it; the old one is "
                    "kept in %s", path, old.hash(), genotype.hash(), why, kept)
    genotype.save(path)


@contextlib.contextmanager
def _process_state_kept() -> Iterator[None]:
    """:func:`derive_run` from Python leaves the process as it found it: loading a run seeds the global
    generators and sets the torch thread count of its config and, on CUDA, cuDNN's autotuning."""
    benchmark = torch.backends.cudnn.benchmark
    py_state, np_state = random.getstate(), np.random.get_state()
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch_threads(None), torch.random.fork_rng(devices=gpus):
            yield
    finally:
        torch.backends.cudnn.benchmark = benchmark
        random.setstate(py_state)
        np.random.set_state(np_state)


def _device_kind(device: str) -> str:
    """``cpu`` or ``cuda`` of a device string (a malformed one is left to :func:`resolve_device`)."""
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError):
        return str(device)


def _device_here(device: str) -> bool:
    """Whether ``device`` (a run's recorded device) can be used on this machine."""
    try:
        resolve_device(device)
    except ConfigError:
        return False
    return True


def check_costs_unchanged(run: Run, run_dir: Path, *, verb: str) -> None:
    """ConfigError when the costs ``run`` rebuilt (its cost model, its ``--lut``) differ from the ones
    its search started with (``RUN_DIR/cost_table.json``): resumed or derived on other costs, the run
    would search or derive another genotype without a word."""
    stored = run_dir / "cost_table.json"
    if not stored.is_file():
        return
    try:
        saved = json.loads(stored.read_text())
    except (ValueError, OSError) as e:
        raise DataError(f"{stored} is not a cost table written by atldas ({type(e).__name__}: {e}); restore it, "
                        "or remove it to go on with the costs rebuilt now (unchecked against the search's)") from None
    if _costs(saved) != _costs(json.loads(run.table.to_json())):  # e.g. --lut rebuilt
        what = (f"the latency table {run.cfg.budget.lut}" if run.table.metric == "latency_ms"
                else "the cost model (another atldas?)")
        hint = (", or derive with the costs it searched with (atldas derive RUN_DIR --stored-costs)"
                if verb == "derive" else "")
        raise ConfigError(f"{verb}: the costs of this run's architectures differ from those it started with "
                          f"({stored}): {what} changed since; restore it, or start a new run{hint}")


def _costs(table: Any) -> Any:
    """A cost table's JSON without its ``source`` (where latencies came from is not a cost: a table moved,
    or rebuilt with the same entries, costs the same)."""
    return {k: v for k, v in table.items() if k != "source"} if isinstance(table, dict) else table


def stored_cost_table(run_dir: Path) -> CostTable:
    """The cost table a search started with (``RUN_DIR/cost_table.json``)."""
    stored = run_dir / "cost_table.json"
    if not stored.is_file():
        raise ConfigError(f"--stored-costs: {run_dir} has no cost_table.json (a run of atldas before it wrote one)")
    return CostTable.from_json(stored.read_text(), where=str(stored))


def warn_other_costs(run: Run, run_dir: Path) -> None:
    """A warning when ``run``'s stored costs differ from those this atldas builds now (or when those cannot
    be built: a --lut moved or rebuilt out of the budget's reach)."""
    try:
        now = cost_table(run.space, run.net.arch, metric=run.table.metric, lut=run.cfg.budget.lut)
    except AtldasError as e:
        log.warning("derive: the costs of %s are those its search started with; today's cannot be built (%s)",
                    run_dir, e)
        return
    if _costs(json.loads(now.to_json())) != _costs(json.loads(run.table.to_json())):
        log.warning("derive: the costs of %s are those its search started with (%s), not this atldas's", run_dir,
                    run_dir / "cost_table.json")


def write_cost_table(run: Run) -> None:
    """``cost_table.json`` in the run directory."""
    if run.out is not None:
        write_text_atomic(run.out / "cost_table.json", run.table.to_json())
