"""Cost model: per-candidate cost tables built from a space, expected cost, exact cost of a child, and
the budget.

A :class:`CostTable` holds, for one metric (MACs, parameters or latency), the fixed cost ``base`` of
everything that is not searched, and the cost of every candidate: for each cell type a matrix
``(E, n_ops)`` already summed over all cells of that type in the *target* network (the one derive
produces, at the stated input size), and a vector per block group. Then

    E[C] = base + sum_t sum_e pi_t[e] * sum_o p_t[e, o] * c_t[e, o] + sum_g sum_b r_g[b] * c_g[b]

is exact (node input sets, ops and blocks are drawn independently) and differentiable in alpha, beta
and gamma. Where the ops hold ``none`` (the DARTS and GDAS supernets), ``p_t`` is taken over the other
ops (renormalised): E[C] is then the expected cost of the network derive keeps, which never takes
``none``, not the mean cost of children sampled with it (those cost 2-12 % less).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from atldas.config import keyword_only
from atldas.arch import CELL_TYPES, ArchParams, Child
from atldas.errors import ConfigError, DataError, unreadable
from atldas.latency import load_lut, lut_lookup
from atldas.ops import op_cost
from atldas.topology import edge_geometry
from atldas.utils.counting import count_macs, count_params

#: Metric name -> unit used in messages.
METRICS: Dict[str, str] = {"macs": "MACs", "params": "params", "latency_ms": "ms"}


def format_cost(value: float, metric: str) -> str:
    """Human form of a cost: 38.594 G MACs, 6.023 M params, 12.3 ms."""
    if metric == "latency_ms":
        return f"{value:.2f} ms"
    unit = "MACs" if metric == "macs" else "params"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3f} {prefix} {unit}"
    return f"{value:.0f} {unit}"


@keyword_only
@dataclass
class CostTable:
    """Costs of the candidates of a search space in one metric (see the module docstring).

    Attributes:
        metric: "macs", "params" or "latency_ms".
        base: cost of the fixed part of the network.
        cells: cell type -> (E, n_ops) float64 cost of each (edge, op), summed over cells of the type.
        blocks: block group -> (n_candidates,) float64 cost of each candidate block.
        input_size: the (1, C, H, W) input the costs are measured at.
        source: where latencies came from (the table's file, device, threads), recorded in the genotype's
            ``cost`` and in :meth:`to_json` (a resume compares the costs, not it).
    """

    metric: str
    base: float
    cells: Dict[str, Tensor]
    blocks: Dict[str, Tensor] = field(default_factory=dict)
    input_size: Tuple[int, ...] = ()
    source: Optional[Dict[str, Any]] = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"unknown cost metric {self.metric!r}; known: {', '.join(METRICS)}")

    def check_fits(self, arch: ArchParams, *, budget_metric: Optional[str] = None) -> None:
        """Raise ConfigError unless this table costs ``arch``'s candidates (its edges, ops and block
        groups) in ``budget_metric`` (when given): a table of another supernet or metric would
        steer a search wrongly without failing."""
        if budget_metric is not None and budget_metric != self.metric:
            raise ConfigError(f"the budget is in {budget_metric} but the cost table in {self.metric}: build the "
                              f"table with metric={budget_metric!r}")
        for t in CELL_TYPES:
            want = tuple(arch.alpha[t].shape)
            if t not in self.cells or tuple(self.cells[t].shape) != want:
                got = list(self.cells[t].shape) if t in self.cells else "none"
                raise ConfigError(f"the cost table does not fit the supernet: {t} cells cost {got} (edges x ops), the "
                                  f"supernet has {list(want)} ({len(arch.op_names)} ops: {', '.join(arch.op_names)}); "
                                  "build the table from this supernet's arch")
        want_blocks = {g: len(arch.block_names[g]) for g in arch.block_names}
        got_blocks = {g: int(c.numel()) for g, c in self.blocks.items()}
        if want_blocks != got_blocks:
            raise ConfigError(f"the cost table does not fit the supernet: block groups {got_blocks or 'none'} in the "
                              f"table, {want_blocks or 'none'} in the supernet; build the table from this "
                              "supernet's arch")

    def expected(self, arch: ArchParams, *, edge_probs: Optional[Dict[str, Tensor]] = None,
                 temperature: float = 1.0, block_temperature: Optional[float] = None) -> Tensor:
        """E[C] under the current policy, differentiable in the arch parameters.

        Args:
            arch: the architecture parameters.
            edge_probs: optional override of pi per cell type (e.g. a uniform in-degree for DARTS).
            temperature: of the policy (< 1: sharpened towards the argmax child).
            block_temperature: of the block decisions (default: ``temperature``).
        """
        block_t = temperature if block_temperature is None else block_temperature
        total = torch.tensor(float(self.base), dtype=torch.float64)
        # derive never keeps none (DARTS and GDAS take an edge's strongest other op): E[C] is taken over the
        # other ops; with none at cost 0 in it, the budget could be met by raising none while the derived
        # network stayed as costly
        drop = ("none",) if "none" in arch.op_names else ()
        for t in CELL_TYPES:
            c = self.cells[t]
            pi = arch.edge_probs(t, temperature) if edge_probs is None else edge_probs[t]
            p = arch.op_probs_without(t, drop, temperature) if drop else arch.op_probs(t, temperature).double()
            total = total + (pi.double() * (p * c).sum(-1)).sum()
        for g, c in self.blocks.items():
            total = total + (arch.block_probs(g, block_t).double() * c).sum()
        return total

    def of_child(self, child: Child) -> float:
        """Exact cost of a discrete child."""
        total = float(self.base)
        for t in CELL_TYPES:
            c = self.cells[t]
            total += sum(float(c[e, o]) for e, o in child.ops[t].items())
        for g, b in child.blocks.items():
            total += float(self.blocks[g][b])
        return total

    def of_samples(self, arch: ArchParams, samples: Dict[str, Tensor]) -> Tensor:
        """Exact costs (n,) of the children drawn by :meth:`ArchParams.sample_many`."""
        topo = arch.topology
        n = next(iter(samples.values())).shape[0]
        total = torch.full((n,), float(self.base), dtype=torch.float64)
        for t in CELL_TYPES:
            ops = samples[f"ops/{t}"]  # (n, E)
            edge_cost = self.cells[t].gather(1, ops.T).T  # (n, E): cost of each edge's drawn op
            for j in range(topo.nodes):
                inc = getattr(arch, f"incidence_{j}").double()[samples[f"sets/{t}"][:, j]]  # (n, j + 2)
                edges = list(topo.node_edges(j))
                total += (inc * edge_cost[:, edges]).sum(1)
        for g, c in self.blocks.items():
            total += c[samples[f"blocks/{g}"]]
        return total

    def cheapest(self, arch: ArchParams) -> Tuple[float, Child]:
        """The cheapest child among the active candidates, and its cost. Never ``none`` on an edge
        (derive never keeps it, as :meth:`expected` leaves it out: under a latency budget ``none``
        costs 0 ms where every other op costs time, so a budget between the two was taken as
        feasible and the search ran to its end to miss it)."""
        topo = arch.topology
        sets, ops, blocks = {}, {}, {}
        for t in CELL_TYPES:
            c = self.cells[t].masked_fill(~arch.op_mask(t), float("inf"))
            if "none" in arch.op_names:
                c[:, arch.op_names.index("none")] = float("inf")
            best_op_cost, best_op = c.min(-1)
            chosen, ops[t] = [], {}
            for j in range(topo.nodes):
                costs = [float(sum(best_op_cost[topo.edge_index[(i, j)]] for i in s))
                         if bool(arch.set_mask(t, j)[k]) else float("inf")
                         for k, s in enumerate(topo.input_sets[j])]
                k = min(range(len(costs)), key=costs.__getitem__)
                chosen.append(k)
                for i in topo.input_sets[j][k]:
                    e = topo.edge_index[(i, j)]
                    ops[t][e] = int(best_op[e])
            sets[t] = tuple(chosen)
        for g, c in self.blocks.items():
            blocks[g] = int(c.masked_fill(~arch.block_mask(g), float("inf")).argmin())
        child = Child(sets=sets, ops=ops, blocks=blocks)
        return self.of_child(child), child

    def to_json(self) -> str:
        """The table as JSON (for the run directory and inspection)."""
        return json.dumps({"metric": self.metric, "base": self.base, "input_size": list(self.input_size),
                           "cells": {t: v.tolist() for t, v in self.cells.items()},
                           "blocks": {g: v.tolist() for g, v in self.blocks.items()},
                           **({"source": self.source} if self.source is not None else {})})

    @classmethod
    def from_json(cls, text: str, *, where: str = "the cost table") -> "CostTable":
        """The table :meth:`to_json` wrote (e.g. a run's ``cost_table.json``); DataError (one line) for
        text that is not one."""
        try:
            d = json.loads(text)
            return cls(metric=d["metric"], base=float(d["base"]), input_size=tuple(int(v) for v in d["input_size"]),
                       cells={t: torch.tensor(v, dtype=torch.float64) for t, v in d["cells"].items()},
                       blocks={g: torch.tensor(v, dtype=torch.float64) for g, v in d.get("blocks", {}).items()},
                       source=dict(d["source"]) if isinstance(d.get("source"), dict) else None)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise DataError(f"{where} is not a cost table written by atldas ({type(e).__name__}: {unreadable(e)})") from None


# --------------------------------------------------------------------------- building a table

def cell_table(space, arch: ArchParams, cost: Callable[[str, Tuple[int, int, int, int]], float]) -> Dict[str, Tensor]:
    """Per cell type, an (edges, ops) table: for every edge and op, the sum over the bound space's
    target cells of that type of ``cost(op, (C, H, W, stride))`` (the edge's geometry there)."""
    topo = arch.topology
    cells = {t: torch.zeros(topo.num_edges, len(arch.op_names), dtype=torch.float64) for t in CELL_TYPES}
    memo: Dict[Tuple[str, Tuple[int, int, int, int]], float] = {}
    for g in space.cell_geometry():
        t = "reduce" if g.reduction else "normal"
        for e, (i, _) in enumerate(topo.edges):
            geo = edge_geometry(g, i)
            for o, name in enumerate(arch.op_names):
                if (name, geo) not in memo:
                    memo[(name, geo)] = float(cost(name, geo))
                cells[t][e, o] += memo[(name, geo)]
    return cells


def _count_block(make: Callable[[], Any], shapes, metric: str) -> int:
    with torch.device("meta"):
        m = make()
        xs = [torch.zeros(s) for s in shapes]
    return count_macs(m.eval(), *xs) if metric == "macs" else count_params(m)


def cost_table(space, arch: ArchParams, *, metric: str, lut: Any = None) -> "CostTable":
    """The exact cost table of ``arch``'s candidates in a bound space's target network.

    Cell ops: their closed forms (:func:`atldas.ops.op_cost`; counted on the meta device for an op
    without one), per unique edge geometry. Blocks and the fixed part: FlopCounterMode (MACs) or
    ``numel`` (params) on the meta device, the fixed part as the measured reference network minus its
    candidates, so the table adds up to the counter's figure for every child. ``latency_ms``: the
    entries of a latency table (``lut``, :mod:`atldas.latency`).
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown cost metric {metric!r}; known: {', '.join(METRICS)}")
    input_size = tuple(space.input_shape())
    if metric == "latency_ms":
        path = str(lut) if isinstance(lut, (str, os.PathLike)) else None
        if path is not None:
            lut = load_lut(path, space=space.name)
        op_ms, block_ms, base = lut_lookup(space, lut)
        source = {"table": path, **{k: lut.get(k) for k in ("device", "device_name", "threads", "input")}}
        blocks = {g: torch.tensor([block_ms(g, n) for n in names], dtype=torch.float64)
                  for g, names in arch.block_names.items()}
        cells = cell_table(space, arch, op_ms)
        dearest = base + sum(float(c.max(-1).values.sum()) for c in cells.values()) + \
            sum(float(b.max()) for b in blocks.values() if b.numel())
        if not math.isfinite(dearest):  # finite entries that overflow once summed over the network's cells
            raise ConfigError(f"{path or 'the latency table'}: its entries sum to {dearest} ms over the network (an "
                              "entry is too large to be a time); rebuild it with `atldas lut build`")
        return CostTable(metric=metric, base=base, cells=cells, blocks=blocks, input_size=input_size, source=source)

    def edge_cost(name: str, geo: Tuple[int, int, int, int]) -> float:
        C, H, W, stride = geo
        c = op_cost(name, C_in=C, C_out=C, H=H, W=W, stride=stride, affine=True)
        return c.macs if metric == "macs" else c.params

    cands = space.block_candidates()
    blocks = {g: torch.tensor([_count_block(*cands[g][n], metric) for n in names], dtype=torch.float64)
              for g, names in arch.block_names.items()}
    table = CostTable(metric=metric, base=0.0, cells=cell_table(space, arch, edge_cost), blocks=blocks,
                      input_size=input_size)
    ref = arch.argmax()
    table.base = float(space.measure(space.child_to_genotype(arch, ref), metric=metric)) - table.of_child(ref)
    return table


def uniform_edge_probs(arch: ArchParams, *, in_degree: int = 2) -> Dict[str, Tensor]:
    """pi for strategies without topology logits (DARTS, GDAS): each of the ``j + 2`` inputs of node
    ``j`` is kept with probability ``in_degree / (j + 2)`` (the top-k rule keeps ``in_degree``)."""
    pis = []
    for j in range(arch.topology.nodes):
        n = j + 2
        pis.append(torch.full((n,), min(1.0, in_degree / n)))
    pi = torch.cat(pis)
    return {t: pi for t in CELL_TYPES}


@keyword_only
@dataclass
class BudgetCfg:
    """The budget a search is asked for (at most one target) and how it is enforced.

    Attributes:
        target_macs: MACs of the target network at the space's input size (e.g. 25e9), or None.
        target_params: parameters of the target network, or None.
        target_latency_ms: latency from a latency table (``lut``), or None.
        form: the penalty, ``lagrange``, ``hinge``, ``abs`` or ``mult`` (see :class:`Budget`).
        aim: land at this fraction of the target (the search's own cost, before repair).
        lam_init: initial budget multiplier.
        rho: the quadratic term of the augmented Lagrangian (``lagrange`` form).
        temperature: the policy's temperature in E[C] at the end of the search (linear from 1 after
            the warm-up): the budget then holds the child derive keeps, not a spread-out policy.
        block_temperature: the same for the block decisions (the head, the decoder levels), lower:
            a block worth a fifth of the budget is settled in E[C] first, so the cells fill what is
            left instead of the budget holding a 50/50 mixture of two blocks that the argmax
            cannot land on.
        lam_lr: dual-ascent step of the multiplier (per epoch).
        lut: the latency table file of a latency budget.
    """

    target_macs: Optional[float] = None
    target_params: Optional[float] = None
    target_latency_ms: Optional[float] = None
    form: str = "lagrange"
    aim: float = 0.95
    lam_init: float = 0.0
    lam_lr: float = 0.5
    rho: float = 20.0
    temperature: float = 0.1
    block_temperature: float = 0.01
    lut: Optional[str] = None

    def targets(self) -> Dict[str, float]:
        """The targets given, metric -> value."""
        given = {m: getattr(self, f"target_{m}") for m in ("macs", "params", "latency_ms")}
        return {m: float(v) for m, v in given.items() if v is not None}

    def check(self) -> None:
        """Raise ConfigError naming the first problem (two targets, a non-finite or negative value...)."""
        given = self.targets()
        if len(given) > 1:
            raise ConfigError("give one budget: --target-macs, --target-params or --target-latency-ms "
                              f"(got {', '.join('--target-' + m.replace('_', '-') for m in given)})")
        for m, v in given.items():
            if not math.isfinite(v) or v <= 0:
                raise ConfigError(f"--target-{m.replace('_', '-')} must be a positive finite number, got {v}")
        for name in ("lam_init", "lam_lr", "rho"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {v}")
        if self.lam_init > Budget.lam_max:  # the multiplier is kept within it from the first update on
            raise ConfigError(f"lam_init must be at most {Budget.lam_max:g} (the multiplier's bound), got {self.lam_init}")
        for name in ("temperature", "block_temperature"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {v}")
        if self.form not in FORMS:
            raise ConfigError(f"unknown budget form {self.form!r}; known: {', '.join(FORMS)}")
        if not 0.0 < self.aim <= 1.0:
            raise ConfigError(f"aim is a fraction of the budget in (0, 1], got {self.aim}")
        if "latency_ms" in given and not self.lut:
            raise ConfigError("--target-latency-ms needs a latency table: build one with `atldas lut build` "
                              "and pass --lut FILE")

    def build(self) -> Optional["Budget"]:
        """The :class:`Budget`, or None for an unconstrained search."""
        self.check()
        given = self.targets()
        if not given:
            return None
        metric, value = next(iter(given.items()))
        return Budget(metric=metric, target=value, form=self.form, aim=self.aim, lam_init=self.lam_init,
                      lam_lr=self.lam_lr, rho=self.rho, temperature=self.temperature,
                      block_temperature=self.block_temperature)

    @property
    def metric(self) -> str:
        """The metric of the budget (``macs`` when there is none: the cost reported)."""
        return next(iter(self.targets()), "macs")


#: Budget penalty forms (see :class:`Budget`).
FORMS = ("lagrange", "hinge", "abs", "mult")


@keyword_only
@dataclass
class Budget:
    """A cost target, the form of its penalty and the settings of its multiplier.

    Its field defaults are a plain Lagrangian (``lam_init`` 1, ``lam_lr`` 2, ``rho`` 0, E[C] at
    temperature 1); the searched method's are :class:`BudgetCfg`'s (``lam_init`` 0, ``lam_lr`` 0.5,
    ``rho`` 20, temperatures 0.1 and 0.01), which ``BudgetCfg(...).build()`` passes: build a budget
    that way to get what ``atldas search`` runs.

    With ``r = E[C] / target`` (the exact, differentiable expected cost) and the aim ``a`` (land at
    ``a * target``, just under the budget):

    - ``lagrange`` (default): ``lam * (r - a) + rho / 2 * (r - a) ** 2`` with ``lam`` free in sign, the
      multiplier of the equality constraint ``E[C] = a * target`` (with ``rho > 0`` the augmented
      Lagrangian; :class:`BudgetCfg` sets ``rho = 20``): dual ascent raises ``lam`` while the policy
      costs too much and lowers it (below 0: spend more) while it costs too little, so the search
      itself lands on the budget and derive's repair only fixes rounding;
    - ``hinge``: ``lam * max(0, r - a)``, ``lam >= 0`` (only ever pushes the cost down);
    - ``abs``: ``lam * |r - a|``, ``lam >= 0``, two-sided (TF-NAS's form): ``lam`` grows by
      ``lam_lr * |r / a - 1|`` per epoch while the cost is off the aim on either side, and never falls
      (TF-NAS keeps it fixed: ``lam_lr = 0``);
    - ``mult``: the task loss times ``(r / a) ** exponent`` (MnasNet's form; no ``lam``; ``exponent``
      0.6, not a config setting). algorithm.md names FBNet's ``a * log(E[C]) ** b``; that form has no
      target (it trades cost against loss at one fixed rate, whatever the budget), so a budget could not
      be aimed at with it: the ratio to the aim takes its place.

    ``E[C]`` is taken at ``temperature`` (the cells) and ``block_temperature`` (the blocks; default the
    same), which the strategy anneals from 1 after the warm-up to these values.

    ``metric`` is what is budgeted (:data:`METRICS`: ``macs``, ``params``, ``latency_ms``) and
    ``target`` its budget in that unit. The multiplier starts at ``lam_init`` and takes dual-ascent
    steps of ``lam_lr`` per epoch, kept within ``[-lam_max, lam_max]`` (``lagrange``) or ``[0,
    lam_max]`` (the others), driven by ``r`` itself, the quantity the penalty acts on. (Driving it by the argmax architecture's cost, as
    the first version did, let one push make the argmax the cheapest child, after which ``lam`` fell
    to 0 and the budget switched itself off.)
    """

    metric: str
    target: float
    form: str = "lagrange"
    aim: float = 0.95
    exponent: float = 0.6
    lam_init: float = 1.0
    lam_lr: float = 2.0
    lam_max: float = 100.0
    rho: float = 0.0
    temperature: float = 1.0
    block_temperature: Optional[float] = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"unknown budget metric {self.metric!r}; known: {', '.join(METRICS)}")
        if not self.target > 0:
            raise ConfigError(f"the budget target must be positive, got {self.target}")
        if self.form not in FORMS:
            raise ConfigError(f"unknown budget form {self.form!r}; known: {', '.join(FORMS)}")
        if not 0.0 < self.aim <= 1.0:
            raise ConfigError(f"the budget aim is a fraction of the target in (0, 1], got {self.aim}")

    def penalty(self, expected: Tensor, lam: float, *, task_value: float = 0.0) -> Tuple[float, Tensor]:
        """``(task scale, penalty)``: the arch loss is ``task scale * task loss + penalty``, whose
        gradient reaches the logits through ``expected`` (for ``mult``, ``task_value`` is the task
        loss's value)."""
        ratio = expected / self.target
        if self.form == "lagrange":  # with rho > 0 the augmented Lagrangian: a restoring force damps the dual
            return 1.0, lam * (ratio - self.aim) + 0.5 * self.rho * (ratio - self.aim) ** 2
        if self.form == "hinge":
            return 1.0, lam * torch.relu(ratio - self.aim)
        if self.form == "abs":
            return 1.0, lam * (ratio - self.aim).abs()
        scaled = (ratio / self.aim).clamp_min(1e-6) ** self.exponent
        # the value is all in the task scale (scale * L); the penalty adds only L * d(scale)/dE[C]
        return float(scaled.detach()), task_value * (scaled - scaled.detach())

    def apply(self, task_loss: Tensor, expected: Tensor, lam: float) -> Tensor:
        """Total arch loss = task loss combined with the budget penalty on E[C]."""
        scale, pen = self.penalty(expected, lam, task_value=float(task_loss.detach()))
        return scale * task_loss + pen.to(task_loss.dtype)

    def dual_step(self, lam: float, expected: float, *, steps_per_epoch: int) -> float:
        """The multiplier after one arch step at expected cost ``expected``."""
        if self.form == "mult":
            return lam
        if self.form == "abs":  # the violation |r/a - 1| of a two-sided constraint: lam never falls
            off = abs(expected / (self.aim * self.target) - 1.0)
            return float(min(self.lam_max, max(0.0, lam + self.lam_lr / max(1, steps_per_epoch) * off)))
        return dual_ascent(lam, cost=expected, target=self.aim * self.target, lr=self.lam_lr / max(1, steps_per_epoch),
                           low=-self.lam_max if self.form == "lagrange" else 0.0, lam_max=self.lam_max)


def dual_ascent(lam: float, *, cost: float, target: float, lr: float, low: float = 0.0, lam_max: float = 100.0) -> float:
    """One dual-ascent step on a budget multiplier: ``lam + lr * (cost / target - 1)``, clipped to
    ``[low, lam_max]``."""
    return float(min(lam_max, max(low, lam + lr * (cost / target - 1.0))))


__all__ = ["METRICS", "CostTable", "BudgetCfg", "Budget", "cell_table", "cost_table", "dual_ascent",
           "uniform_edge_probs", "format_cost"]
