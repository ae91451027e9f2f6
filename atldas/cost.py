"""Cost model: per-candidate cost tables, expected cost, exact cost of a child, and the budget loss.

A :class:`CostTable` holds, for one metric (MACs, parameters or latency), the fixed cost ``base`` of
everything that is not searched, and the cost of every candidate: for each cell type a matrix
``(E, n_ops)`` already summed over all cells of that type in the *target* network (the one derive
produces, at the stated input size), and a vector per block group. Then

    E[C] = base + sum_t sum_e pi_t[e] * sum_o p_t[e, o] * c_t[e, o] + sum_g sum_b r_g[b] * c_g[b]

is exact (node input sets, ops and blocks are drawn independently) and differentiable in alpha, beta
and gamma.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from atldas.arch import CELL_TYPES, ArchParams, Child
from atldas.errors import ConfigError

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


@dataclass
class CostTable:
    """Costs of the candidates of a search space in one metric (see the module docstring).

    Attributes:
        metric: "macs", "params" or "latency_ms".
        base: cost of the fixed part of the network.
        cells: cell type -> (E, n_ops) float64 cost of each (edge, op), summed over cells of the type.
        blocks: block group -> (n_candidates,) float64 cost of each candidate block.
        input_size: the (1, C, H, W) input the costs are measured at.
    """

    metric: str
    base: float
    cells: Dict[str, Tensor]
    blocks: Dict[str, Tensor] = field(default_factory=dict)
    input_size: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"unknown cost metric {self.metric!r}; known: {', '.join(METRICS)}")

    def expected(self, arch: ArchParams, *, edge_probs: Optional[Dict[str, Tensor]] = None) -> Tensor:
        """E[C] under the current policy, differentiable in the arch parameters.

        Args:
            arch: the architecture parameters.
            edge_probs: optional override of pi per cell type (e.g. a uniform in-degree for DARTS).
        """
        total = torch.tensor(float(self.base), dtype=torch.float64)
        for t in CELL_TYPES:
            c = self.cells[t]
            pi = arch.edge_probs(t) if edge_probs is None else edge_probs[t]
            p = arch.op_probs(t).double()
            total = total + (pi.double() * (p * c).sum(-1)).sum()
        for g, c in self.blocks.items():
            total = total + (arch.block_probs(g).double() * c).sum()
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
        """The cheapest child among the active candidates, and its cost."""
        topo = arch.topology
        sets, ops, blocks = {}, {}, {}
        for t in CELL_TYPES:
            c = self.cells[t].masked_fill(~arch.op_mask(t), float("inf"))
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
                           "blocks": {g: v.tolist() for g, v in self.blocks.items()}})


def uniform_edge_probs(arch: ArchParams, *, in_degree: int = 2) -> Dict[str, Tensor]:
    """pi for strategies without topology logits (DARTS, GDAS): each of the ``j + 2`` inputs of node
    ``j`` is kept with probability ``in_degree / (j + 2)`` (the top-k rule keeps ``in_degree``)."""
    pis = []
    for j in range(arch.topology.nodes):
        n = j + 2
        pis.append(torch.full((n,), min(1.0, in_degree / n)))
    pi = torch.cat(pis)
    return {t: pi for t in CELL_TYPES}


@dataclass
class Budget:
    """A cost target and the form of its penalty.

    Forms: ``hinge`` (default) ``lam * max(0, E/T - 1)``; ``abs`` ``lam * |E/T - 1|`` (TF-NAS);
    ``mult`` multiplies the task loss by ``(E/T) ** exponent`` (the MnasNet/ProxylessNAS family;
    ``lam`` unused).
    """

    metric: str
    target: float
    form: str = "hinge"
    exponent: float = 0.6

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"unknown budget metric {self.metric!r}; known: {', '.join(METRICS)}")
        if not self.target > 0:
            raise ConfigError(f"the budget target must be positive, got {self.target}")
        if self.form not in ("hinge", "abs", "mult"):
            raise ConfigError(f"unknown budget form {self.form!r}; known: hinge, abs, mult")

    def apply(self, task_loss: Tensor, expected: Tensor, lam: float) -> Tensor:
        """Total arch loss = task loss combined with the budget penalty on E[C]."""
        ratio = (expected / self.target).to(task_loss.dtype)
        if self.form == "hinge":
            return task_loss + lam * torch.relu(ratio - 1.0)
        if self.form == "abs":
            return task_loss + lam * (ratio - 1.0).abs()
        return task_loss * ratio.clamp_min(1e-6) ** self.exponent


def dual_ascent(lam: float, *, derived_cost: float, target: float, lr: float, lam_max: float = 100.0) -> float:
    """One dual-ascent step on the budget multiplier, driven by the cost of the argmax architecture."""
    return float(min(lam_max, max(0.0, lam + lr * (derived_cost / target - 1.0))))


def parse_amount(text: str) -> float:
    """Parse ``8G``, ``2M``, ``500k``, ``1.5e9`` or ``20`` into a number."""
    s = str(text).strip()
    scale = {"k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9, "t": 1e12, "T": 1e12}
    try:
        if s and s[-1] in scale:
            return float(s[:-1]) * scale[s[-1]]
        return float(s)
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as an amount; write e.g. 8G, 2M, 500k or 1.5e9") from None


__all__ = ["METRICS", "CostTable", "Budget", "dual_ascent", "uniform_edge_probs", "format_cost",
           "parse_amount"]
