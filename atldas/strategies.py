"""Search strategies, one interface: ``weight_step``, ``arch_step``, ``end_epoch``, ``derive``,
``state_dict``/``load_state_dict``. A strategy drives a supernet; it is not part of it.

- ``atldas``: two independent samplers (algorithm.md). The weight step trains the ops of a child drawn
  from the policy mixed with a uniform share epsilon; the arch step draws M fresh children with
  straight-through Gumbel gates and updates alpha/beta/gamma only, on the task loss plus the budget
  term on the exact expected cost. Hard pruning after warm-up deletes dropped candidates with their
  parameters and optimizer state.
- ``darts``: first-order DARTS: the soft mixture of every op (``none`` included) on every edge;
  derive keeps the top-2 edges per node by their strongest non-``none`` op.
- ``gdas``: one Gumbel-sampled op per edge on every edge (straight-through); DARTS' top-2 derive.
- ``random``: uniform children for the weights (random search with shared weights); derive draws
  random valid children under the budget and keeps the one with the lowest held-out loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from atldas.arch import CELL_TYPES, Child
from atldas.config import SearchConfig
from atldas.cost import Budget, CostTable, dual_ascent, uniform_edge_probs
from atldas.errors import ConfigError
from atldas.registry import Registry
from atldas.supernet import Plan, SuperNet

STRATEGIES: Registry[type] = Registry("strategy", plural="strategies")

LossFn = Callable[[Tensor, Dict[str, Tensor]], Tensor]


@dataclass
class Schedule:
    """Epoch-dependent exploration and temperature (warm-up: uniform children, no arch step)."""

    epochs: int
    warmup: int
    tau_max: float
    tau_min: float
    eps_min: float

    def _progress(self, epoch: float) -> float:
        span = max(1, self.epochs - self.warmup)
        return min(1.0, max(0.0, (epoch - self.warmup) / span))

    def tau(self, epoch: float) -> float:
        """Gumbel temperature: tau_max during warm-up, then linear down to tau_min."""
        return self.tau_max + (self.tau_min - self.tau_max) * self._progress(epoch)

    def epsilon(self, epoch: float) -> float:
        """Uniform share of the weight sampler: 1 during warm-up, then linear down to eps_min."""
        if epoch < self.warmup:
            return 1.0
        return 1.0 + (self.eps_min - 1.0) * self._progress(epoch)

    def in_warmup(self, epoch: float) -> bool:
        return epoch < self.warmup


class Strategy:
    """Base class: optimizers, the budget multiplier, the cosine weight schedule, checkpoint state.

    Args:
        supernet: the supernet (its ``arch`` holds the logits and masks).
        loss_fn: task loss ``loss_fn(pred, batch) -> scalar``.
        cost: cost table of the budget metric.
        budget: the budget, or None for an unconstrained search.
        cfg: the resolved search configuration.
    """

    name = "base"
    uses_none = False

    def __init__(self, *, supernet: SuperNet, loss_fn: LossFn, cost: CostTable, budget: Optional[Budget],
                 cfg: SearchConfig) -> None:
        self.net, self.loss_fn, self.cost, self.budget, self.cfg = supernet, loss_fn, cost, budget, cfg
        self.schedule = Schedule(epochs=cfg.epochs, warmup=cfg.warmup_epochs, tau_max=cfg.tau_max,
                                 tau_min=cfg.tau_min, eps_min=cfg.eps_min)
        self.lam = float(cfg.lam_init)
        self.gen_w = torch.Generator().manual_seed(cfg.seed * 1000 + 1)
        self.gen_a = torch.Generator().manual_seed(cfg.seed * 1000 + 2)
        self.w_opt = self._make_w_opt()
        self.a_opt = torch.optim.Adam(self.net.arch.arch_parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=cfg.arch_weight_decay)
        self.epoch = 0.0
        self.events: List[Dict[str, Any]] = []

    # -------------------------------------------------------------- optimizers

    def _make_w_opt(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.weight_parameters(), lr=self.cfg.w_lr,
                                 weight_decay=self.cfg.w_weight_decay)

    def rebuild_w_opt(self) -> None:
        """New weight optimizer over the parameters left after pruning; their state is kept."""
        old = self.w_opt
        new = self._make_w_opt()
        for group_new, group_old in zip(new.param_groups, old.param_groups):
            group_new["lr"] = group_old["lr"]
        for p in new.param_groups[0]["params"]:
            if p in old.state:
                new.state[p] = old.state[p]
        self.w_opt = new

    def set_epoch(self, epoch: float) -> None:
        """Set the (fractional) epoch: cosine learning rate of the weights."""
        self.epoch = epoch
        lr = 0.5 * self.cfg.w_lr * (1.0 + math.cos(math.pi * min(1.0, epoch / max(1, self.cfg.epochs))))
        for g in self.w_opt.param_groups:
            g["lr"] = lr

    def _step_weights(self, loss: Tensor) -> None:
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.weight_parameters(), self.cfg.grad_clip)
        self.w_opt.step()
        for p in self.net.arch.parameters():  # the weight step never updates the arch logits
            p.grad = None

    def _step_arch(self, total: Tensor) -> None:
        params = [p for p in self.net.arch.arch_parameters()]
        grads = torch.autograd.grad(total, params, allow_unused=True)
        self.a_opt.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.detach()
        self.a_opt.step()

    def _budget_terms(self, task: Tensor, edge_probs: Optional[Dict[str, Tensor]] = None):
        expected = self.cost.expected(self.net.arch, edge_probs=edge_probs)
        if self.budget is None:
            return task, expected
        return self.budget.apply(task, expected, self.lam), expected

    def _update_lam(self, steps_per_epoch: int) -> float:
        derived = self.cost.of_child(self.derive_argmax())
        if self.budget is not None and self.budget.form != "mult":
            self.lam = dual_ascent(self.lam, derived_cost=derived, target=self.budget.target,
                                   lr=self.cfg.lam_lr / max(1, steps_per_epoch))
        return derived

    # -------------------------------------------------------------- interface

    def weight_step(self, batch: Dict[str, Tensor], x: Tensor) -> Dict[str, float]:
        raise NotImplementedError

    def arch_step(self, batch: Dict[str, Tensor], x: Tensor, *, steps_per_epoch: int) -> Dict[str, float]:
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> List[Dict[str, Any]]:
        """Called after each epoch; returns events (pruning) to log."""
        return []

    def derive_argmax(self) -> Child:
        """The current argmax architecture (without evaluation)."""
        return self.net.arch.argmax()

    def derive(self, evaluate: Optional[Callable[[Child], float]] = None) -> Child:
        """The final architecture; ``evaluate(child) -> held-out loss`` is used by ``random``."""
        return self.derive_argmax()

    def state_dict(self) -> Dict[str, Any]:
        return {"w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(), "lam": self.lam,
                "gen_w": self.gen_w.get_state(), "gen_a": self.gen_a.get_state(), "epoch": self.epoch,
                "events": list(self.events)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.w_opt = self._make_w_opt()
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.lam = float(state["lam"])
        self.gen_w.set_state(state["gen_w"])
        self.gen_a.set_state(state["gen_a"])
        self.epoch = float(state["epoch"])
        self.events = list(state["events"])


@STRATEGIES.register("atldas")
class AtldasStrategy(Strategy):
    """ATL-DAS: topology + op sampling, two independent samplers, hard pruning (module docstring)."""

    name = "atldas"

    def weight_step(self, batch: Dict[str, Tensor], x: Tensor) -> Dict[str, float]:
        eps = self.schedule.epsilon(self.epoch)
        with torch.no_grad():
            child = self.net.arch.sample(epsilon=eps, grad=False, generator=self.gen_w)
        pred = self.net(x, self.net.plan(child))
        loss = self.loss_fn(pred, batch)
        self._step_weights(loss)
        return {"loss/weights": float(loss.detach()), "epsilon": eps}

    def arch_step(self, batch: Dict[str, Tensor], x: Tensor, *, steps_per_epoch: int) -> Dict[str, float]:
        tau = self.schedule.tau(self.epoch)
        task = torch.zeros(())
        for _ in range(self.cfg.arch_samples):
            child = self.net.arch.sample(tau=tau, grad=True, generator=self.gen_a)
            task = task + self.loss_fn(self.net(x, self.net.plan(child)), batch)
        task = task / self.cfg.arch_samples
        total, expected = self._budget_terms(task)
        self._step_arch(total)
        derived = self._update_lam(steps_per_epoch)
        return {"loss/arch": float(task.detach()), "loss/arch_total": float(total.detach()), "cost/expected": float(expected.detach()),
                "cost/derived": derived, "lambda": self.lam, "tau": tau}

    def end_epoch(self, epoch: int) -> List[Dict[str, Any]]:
        cfg = self.cfg
        after = epoch + 1 - cfg.warmup_epochs
        if after <= 0 or after % max(1, cfg.prune_every):
            return []
        events = self.net.arch.prune(ratio=cfg.prune_ratio)
        if events:
            freed = self.net.apply_masks()
            self.rebuild_w_opt()
            for ev in events:
                ev["epoch"] = epoch
            events.append({"epoch": epoch, "group": "supernet", "freed_params": freed,
                           "params_left": sum(p.numel() for p in self.net.weight_parameters())})
            self.events.extend(events)
        return events


def _top2_child(net: SuperNet) -> Child:
    """DARTS derive: per node the two inputs whose strongest non-``none`` op is most probable."""
    arch = net.arch
    topo = arch.topology
    if not any(len(s) == 2 for s in topo.input_sets[-1]):
        raise ConfigError("the DARTS/GDAS derive keeps 2 inputs per node; use k_min <= 2 <= k_max")
    sets, ops = {}, {}
    with torch.no_grad():
        for t in CELL_TYPES:
            p = arch.op_probs(t).clone()
            names = arch.op_names
            if "none" in names:
                p[:, names.index("none")] = -1.0
            best_p, best_o = p.max(-1)
            chosen, ops[t] = [], {}
            for j in range(topo.nodes):
                edges = list(topo.node_edges(j))
                order = sorted(range(len(edges)), key=lambda k: (-float(best_p[edges[k]]), k))
                srcs = tuple(sorted(topo.edges[edges[k]][0] for k in order[:2]))
                chosen.append(topo.input_sets[j].index(srcs))
                for i in srcs:
                    e = topo.edge_index[(i, j)]
                    ops[t][e] = int(best_o[e])
            sets[t] = tuple(chosen)
        blocks = {g: int(torch.argmax(arch.block_probs(g))) for g in arch.block_names}
    return Child(sets=sets, ops=ops, blocks=blocks)


@STRATEGIES.register("darts")
class DartsStrategy(Strategy):
    """First-order DARTS on the same supernet: soft mixture of all ops (with ``none``) on all edges."""

    name = "darts"
    uses_none = True

    def _ones(self) -> Dict[str, Tensor]:
        return {t: torch.ones(self.net.arch.topology.num_edges) for t in CELL_TYPES}

    def weight_step(self, batch: Dict[str, Tensor], x: Tensor) -> Dict[str, float]:
        with torch.no_grad():
            plan = self.net.plan(soft=True, edge_weights=self._ones())
        loss = self.loss_fn(self.net(x, plan), batch)
        self._step_weights(loss)
        return {"loss/weights": float(loss.detach())}

    def arch_step(self, batch: Dict[str, Tensor], x: Tensor, *, steps_per_epoch: int) -> Dict[str, float]:
        task = self.loss_fn(self.net(x, self.net.plan(soft=True, edge_weights=self._ones())), batch)
        total, expected = self._budget_terms(task, uniform_edge_probs(self.net.arch))
        self._step_arch(total)
        derived = self._update_lam(steps_per_epoch)
        return {"loss/arch": float(task.detach()), "loss/arch_total": float(total.detach()), "cost/expected": float(expected.detach()),
                "cost/derived": derived, "lambda": self.lam}

    def derive_argmax(self) -> Child:
        return _top2_child(self.net)


@STRATEGIES.register("gdas")
class GdasStrategy(Strategy):
    """GDAS: one Gumbel-sampled op per edge on every edge; DARTS top-2 derive."""

    name = "gdas"
    uses_none = True

    def _plan(self, *, grad: bool, generator: torch.Generator) -> Plan:
        arch = self.net.arch
        topo = arch.topology
        tau = self.schedule.tau(self.epoch)
        nodes = {}
        for t in CELL_TYPES:
            per_node = []
            for j in range(topo.nodes):
                edges = []
                for e in topo.node_edges(j):
                    o, gate = arch._draw(arch.alpha[t][e], arch.op_mask(t)[e], tau=tau, epsilon=0.0,
                                         grad=grad, generator=generator)
                    edges.append((topo.edges[e][0], arch.op_names[o], gate))
                per_node.append((None, edges))
            nodes[t] = per_node
        blocks = {}
        for g, names in arch.block_names.items():
            b, gate = arch._draw(arch.gamma[g], arch.block_mask(g), tau=tau, epsilon=0.0, grad=grad,
                                 generator=generator)
            blocks[g] = (names[b], gate)
        return Plan(soft=False, nodes=nodes, blocks=blocks)

    def weight_step(self, batch: Dict[str, Tensor], x: Tensor) -> Dict[str, float]:
        with torch.no_grad():
            plan = self._plan(grad=False, generator=self.gen_w)
        loss = self.loss_fn(self.net(x, plan), batch)
        self._step_weights(loss)
        return {"loss/weights": float(loss.detach())}

    def arch_step(self, batch: Dict[str, Tensor], x: Tensor, *, steps_per_epoch: int) -> Dict[str, float]:
        task = self.loss_fn(self.net(x, self._plan(grad=True, generator=self.gen_a)), batch)
        total, expected = self._budget_terms(task, uniform_edge_probs(self.net.arch))
        self._step_arch(total)
        derived = self._update_lam(steps_per_epoch)
        return {"loss/arch": float(task.detach()), "loss/arch_total": float(total.detach()), "cost/expected": float(expected.detach()),
                "cost/derived": derived, "lambda": self.lam, "tau": self.schedule.tau(self.epoch)}

    def derive_argmax(self) -> Child:
        return _top2_child(self.net)


@STRATEGIES.register("random")
class RandomStrategy(Strategy):
    """Random search with shared weights: uniform children for the weights, no arch step; derive
    ranks random valid children under the budget by their held-out loss."""

    name = "random"

    def weight_step(self, batch: Dict[str, Tensor], x: Tensor) -> Dict[str, float]:
        with torch.no_grad():
            child = self.net.arch.sample(epsilon=1.0, grad=False, generator=self.gen_w)
        loss = self.loss_fn(self.net(x, self.net.plan(child)), batch)
        self._step_weights(loss)
        return {"loss/weights": float(loss.detach())}

    def arch_step(self, batch: Dict[str, Tensor], x: Tensor, *, steps_per_epoch: int) -> Dict[str, float]:
        return {}

    def random_children(self, n: int, *, max_tries: int = 200) -> List[Child]:
        """Up to ``n`` distinct uniform children within the budget (rejection sampling)."""
        out: Dict[tuple, Child] = {}
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + 7)
        for _ in range(max_tries * n):
            if len(out) >= n:
                break
            c = self.net.arch.sample(epsilon=1.0, generator=gen)
            if self.budget is None or self.cost.of_child(c) <= self.budget.target:
                out.setdefault(c.key(), c)
        return list(out.values())

    def derive(self, evaluate: Optional[Callable[[Child], float]] = None) -> Child:
        children = self.random_children(self.cfg.random_candidates)
        if not children:
            return self.cost.cheapest(self.net.arch)[1]
        if evaluate is None:
            return children[0]
        scores = [evaluate(c) for c in children]
        return children[min(range(len(children)), key=scores.__getitem__)]
