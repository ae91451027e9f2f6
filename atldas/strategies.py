"""Search strategies, one interface: ``weight_step``, ``arch_step``, ``end_epoch``, ``derive``,
``state_dict``/``load_state_dict``. A strategy drives a supernet; it is not part of it. Every strategy
with an arch step shares its tail (:meth:`Strategy._arch_update`): the controls (``budget_only``,
``placebo``), the per-family z-statistics of the task's and the budget's gradients
(:meth:`Strategy.grad_stats`), the budget and its multiplier.

- ``atldas``: two independent samplers (algorithm.md). The weight step trains the ops of a child drawn
  from the policy mixed with a uniform share epsilon; the arch step draws M fresh children from the
  policy and updates alpha/beta/gamma only: by default with the score-function estimate of the
  gradient of E_child[L] (leave-one-out baseline over the M children; ``estimator=st``: the
  straight-through Gumbel gates of the first version), plus the budget's gradient through the exact
  expected cost. Hard pruning after warm-up deletes candidates that stayed below threshold for
  ``prune_patience`` checks (with ``prune_z``: and whose applied arch gradient is against them at that
  z-statistic), with their parameters and optimizer state.
- ``darts``: first-order DARTS: the soft mixture of every op (``none`` included) on every edge;
  derive keeps the top-2 edges per node by their strongest non-``none`` op.
- ``gdas``: one Gumbel-sampled op per edge on every edge (straight-through); DARTS' top-2 derive.
- ``random``: uniform children for the weights (random search with shared weights); derive draws
  random valid children under the budget and keeps the one with the lowest held-out loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from atldas.arch import CELL_TYPES, Child
from atldas.cost import Budget, CostTable, uniform_edge_probs
from atldas.config import check_ranges, keyword_only
from atldas.errors import ConfigError
from atldas.registry import Registry
from atldas.supernet import Plan, SuperNet
from atldas.utils.dist import average_, mean
from atldas.utils.ranking import lowest


def _check_strategy(name: str, cls: object) -> None:
    """A strategy is a :class:`Strategy` subclass whose ``name`` is the one it is registered under (runs
    report it; a subclass inherited its parent's)."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"strategy {name!r}: expected a subclass of atldas.Strategy, got {cls!r}")
    if cls.name != name:
        raise ValueError(f"strategy {name!r}: the class's name is {cls.name!r}; set name = {name!r} in {cls.__name__}")


#: Strategy name -> its :class:`Strategy` class (``@STRATEGIES.register("name")`` adds one).
STRATEGIES: Registry[type] = Registry("strategy", plural="strategies", check=_check_strategy)

LossFn = Callable[[Tensor, Dict[str, Tensor]], Tensor]


# --------------------------------------------------------------------------- settings

#: Controls of an arch step (see :class:`ArchHP`).
CONTROLS = ("none", "budget_only", "placebo")
#: Estimators of the ATL-DAS arch gradient (see :class:`AtldasHP`).
ESTIMATORS = ("reinforce", "st")



@keyword_only
@dataclass
class StrategyHP:
    """Settings of every strategy: the weight optimiser (AdamW with a cosine learning rate).

    Attributes:
        w_lr: peak learning rate of the supernet weights.
        w_weight_decay: AdamW weight decay.
        grad_clip: gradient-norm clip of the weight step.
    """

    w_lr: float = 2e-3
    w_weight_decay: float = 1e-4
    grad_clip: float = 5.0

    def check(self) -> None:
        """Raise ConfigError naming the first value out of range."""
        check_ranges(self, {"w_lr": (1e-12, 10.0), "w_weight_decay": (0.0, 10.0), "grad_clip": (1e-12, 1e6)})


@keyword_only
@dataclass
class ArchHP(StrategyHP):
    """Settings of a strategy with an arch step: Adam on the architecture logits.

    Attributes:
        arch_lr: Adam learning rate of alpha, beta and gamma.
        arch_weight_decay: Adam weight decay of the logits.
        control: ``none``; ``budget_only`` (the task term is switched off: what the budget alone
            decides) or ``placebo`` (the task gradient's sign is drawn at random every arch step: what
            noise of the same size decides). Controls for measuring whether the task decides.
        learn_topology: update the topology logits (beta); ``False`` leaves them at their initial,
            near-uniform values, neither the task nor the budget moving them (an ablation: what the
            op and block choices alone do, the input sets drawn as at random).
    """

    arch_lr: float = 3e-2
    arch_weight_decay: float = 0.0
    control: str = "none"
    learn_topology: bool = True

    def check(self) -> None:
        super().check()
        check_ranges(self, {"arch_lr": (0.0, 10.0), "arch_weight_decay": (0.0, 10.0)})
        if self.control not in CONTROLS:
            raise ConfigError(f"unknown control {self.control!r}; known: {', '.join(CONTROLS)}")


@keyword_only
@dataclass
class AtldasHP(ArchHP):
    """ATL-DAS settings (the sampling schedule and hard pruning; see :class:`AtldasStrategy`).

    Attributes:
        estimator: ``reinforce``: the score-function gradient of E_child[L], ``(L_i - b_i) grad log
            p(child_i)`` over ``arch_samples`` children drawn from the policy with the leave-one-out
            baseline ``b_i`` (the mean loss of the others; forward passes only); ``st``:
            straight-through Gumbel gates (backward through the children, biased).
        arch_samples: children per arch step (>= 2 for ``reinforce``).
        tau_max, tau_min: Gumbel temperature of ``st``, linear from max to min after warm-up.
        eps_min: final uniform share of the weight sampler (1 during warm-up; the planted space's
            default is 1.0, a uniform sampler throughout: search_spaces/planted.py says why).
        prune_every: check for pruning every this many epochs after warm-up.
        prune_ratio: a candidate is below threshold when its probability is below
            ``prune_ratio / n_active``.
        prune_patience: checks in a row below threshold before a candidate is dropped.
        prune_z: 0 (off), or the evidence a candidate below threshold must also have against it to be
            dropped: the z-statistic ``sum(g) / sqrt(sum(g^2))`` of the arch gradient applied to its
            logit over every arch step of the search (the task's under the control, plus the
            budget's), at least ``prune_z``. Noise gives z about N(0, 1) (for gradients of random sign
            whose sizes do not depend on the earlier signs, P(z >= x) <= exp(-x^2 / 2) at each check;
            in a search a logit pushed down gets smaller gradients, which can hold a high z, so the
            bound is a guide); a consistent preference grows it like the square root of the steps, and
            since abs(z) <= sqrt(steps), nothing is dropped before ``prune_z ** 2`` arch steps.
    """

    estimator: str = "reinforce"
    arch_samples: int = 4
    tau_max: float = 5.0
    tau_min: float = 0.1
    eps_min: float = 0.2
    prune_every: int = 1
    prune_ratio: float = 0.3
    prune_patience: int = 2
    prune_z: float = 0.0

    def check(self) -> None:
        super().check()
        check_ranges(self, {"arch_samples": (1, 1024), "tau_max": (1e-6, 1e3), "tau_min": (1e-6, 1e3),
                             "eps_min": (0.0, 1.0), "prune_every": (1, 10**6), "prune_ratio": (0.0, 1.0),
                             "prune_patience": (1, 10**6), "prune_z": (0.0, 1e3)})
        if self.tau_min > self.tau_max:
            raise ConfigError(f"tau_min ({self.tau_min}) must not exceed tau_max ({self.tau_max})")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"unknown estimator {self.estimator!r}; known: {', '.join(ESTIMATORS)}")
        if self.estimator == "reinforce" and self.arch_samples < 2:
            raise ConfigError("the reinforce estimator needs arch_samples >= 2 (a leave-one-out baseline)")


@keyword_only
@dataclass
class DartsHP(ArchHP):
    """First-order DARTS settings (the arch optimiser only)."""

    def check(self) -> None:
        super().check()
        _refuse_topology_setting(self, "darts")


@keyword_only
@dataclass
class GdasHP(ArchHP):
    """GDAS settings: the Gumbel temperature, linear from ``tau_max`` to ``tau_min`` after warm-up."""

    tau_max: float = 5.0
    tau_min: float = 0.1

    def check(self) -> None:
        super().check()
        check_ranges(self, {"tau_max": (1e-6, 1e3), "tau_min": (1e-6, 1e3)})
        if self.tau_min > self.tau_max:
            raise ConfigError(f"tau_min ({self.tau_min}) must not exceed tau_max ({self.tau_max})")
        _refuse_topology_setting(self, "gdas")


def _refuse_topology_setting(hp: ArchHP, name: str) -> None:
    """DARTS and GDAS run every edge and derive the top-2 inputs by op weight: no topology logits learn."""
    if not hp.learn_topology:
        raise ConfigError(f"learn_topology=false: {name} learns no topology logits (every edge runs, and its "
                          "derive keeps each node's two strongest inputs), so it would change nothing; it applies "
                          "to the atldas strategy")


@keyword_only
@dataclass
class RandomHP(StrategyHP):
    """Random search with shared weights: how many random children derive ranks."""

    random_candidates: int = 16

    def check(self) -> None:
        super().check()
        check_ranges(self, {"random_candidates": (1, 10**6)})


# --------------------------------------------------------------------------- schedule and base class


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
    """Base class: optimizers, the budget multiplier, the cosine weight schedule, checkpoint state,
    and the tail every arch step shares (:meth:`_arch_update`).

    Args:
        supernet: the supernet (its ``arch`` holds the logits and masks).
        loss_fn: task loss ``loss_fn(pred, batch) -> scalar``.
        cost: cost table of the budget metric.
        budget: the budget, or None for an unconstrained search.
        hp: the strategy's settings (an instance of its ``HP`` class).
        epochs: search epochs (the cosine schedule's length).
        warmup_epochs: epochs of uniform children without arch steps.
        seed: seed of the strategy's two samplers.
    """

    name = "base"
    uses_none = False
    #: Whether :meth:`derive` ranks children by the ``evaluate`` it is given (held-out loss on the
    #: shared weights), so that its result depends on the device's rounding.
    derive_evaluates = False
    #: The settings dataclass of this strategy.
    HP: type = StrategyHP
    #: Autocast dtype of the supernet's forward passes (None: full precision; the run sets it from
    #: ``--set amp=...``). Losses, gradients of the logits and the optimizers stay in float32.
    amp_dtype: Optional[torch.dtype] = None

    def __init__(self, *, supernet: SuperNet, loss_fn: LossFn, cost: CostTable, budget: Optional[Budget],
                 hp: StrategyHP, epochs: int, warmup_epochs: int = 0, seed: int = 0) -> None:
        if not isinstance(hp, self.HP):
            raise ConfigError(f"strategy {self.name!r} takes {self.HP.__name__} settings, got {type(hp).__name__}")
        hp.check()
        cost.check_fits(supernet.arch, budget_metric=budget.metric if budget is not None else None)
        self.net, self.loss_fn, self.cost, self.budget, self.hp = supernet, loss_fn, cost, budget, hp
        self.epochs, self.warmup_epochs, self.seed = epochs, warmup_epochs, seed
        self.schedule = Schedule(epochs=epochs, warmup=warmup_epochs, tau_max=getattr(hp, "tau_max", 1.0),
                                 tau_min=getattr(hp, "tau_min", 1.0), eps_min=getattr(hp, "eps_min", 1.0))
        self.lam = budget.lam_init if budget is not None else 0.0
        self.gen_w = torch.Generator().manual_seed(seed * 1000 + 1)
        self.gen_a = torch.Generator().manual_seed(seed * 1000 + 2)
        self.w_opt = self._make_w_opt()
        self.a_opt = torch.optim.Adam(self.net.arch.arch_parameters(), lr=getattr(hp, "arch_lr", 0.0),
                                      betas=(0.5, 0.999), weight_decay=getattr(hp, "arch_weight_decay", 0.0))
        self.epoch = 0.0
        self.events: List[Dict[str, Any]] = []
        self._grad_sums: Dict[str, List[List[Tensor]]] = {}
        # per arch parameter, the sums of the applied arch gradient and of its square over the search
        self._applied: List[List[Tensor]] = [[torch.zeros_like(p), torch.zeros_like(p)]
                                             for p in self.net.arch.arch_parameters()]

    # -------------------------------------------------------------- optimizers

    def _make_w_opt(self) -> torch.optim.Optimizer:
        # foreach: multi-tensor updates over the supernet's thousands of tensors, bit for bit the same
        return torch.optim.AdamW(self.net.weight_parameters(), lr=self.hp.w_lr, weight_decay=self.hp.w_weight_decay,
                                 foreach=True)

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
        lr = 0.5 * self.hp.w_lr * (1.0 + math.cos(math.pi * min(1.0, epoch / max(1, self.epochs))))
        for g in self.w_opt.param_groups:
            g["lr"] = lr

    def in_warmup(self, epoch: Optional[float] = None) -> bool:
        """Whether ``epoch`` (default: the current one) is a warm-up epoch (no arch steps)."""
        return self.schedule.in_warmup(self.epoch if epoch is None else epoch)

    def _forward(self, x: Tensor, plan: Plan) -> Tensor:
        """The supernet's output for ``plan``, in float32 (autocast inside when :attr:`amp_dtype` is set)."""
        if self.amp_dtype is None:
            return self.net(x, plan)
        with torch.autocast(device_type=x.device.type, dtype=self.amp_dtype):
            out = self.net(x, plan)
        return out.float()

    def _forward_each(self, x: Tensor, plans: Sequence[Plan]) -> List[Tensor]:
        """:meth:`_forward` of every plan on one input (:meth:`SuperNet.forward_each`)."""
        if self.amp_dtype is None:
            return self.net.forward_each(x, plans)
        with torch.autocast(device_type=x.device.type, dtype=self.amp_dtype):
            outs = self.net.forward_each(x, plans)
        return [y.float() for y in outs]

    def _step_weights(self, loss: Tensor) -> None:
        if not isinstance(loss, Tensor) or loss.dim() != 0 or not loss.requires_grad:  # a custom task's loss
            got = f"a {tuple(loss.shape)} tensor" if isinstance(loss, Tensor) and loss.dim() else repr(loss)
            raise ConfigError(f"the task's loss(pred, batch) returned {got}"
                              + (" without a gradient" if isinstance(loss, Tensor) and not loss.dim() else "")
                              + "; it must return a scalar tensor computed from pred")
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        params = self.w_opt.param_groups[0]["params"]  # = net.weight_parameters(), without walking the modules
        average_(p.grad for p in params if p.grad is not None)  # torchrun: one update
        nn.utils.clip_grad_norm_(params, self.hp.grad_clip)
        self.w_opt.step()
        for p in self.net.arch.parameters():  # the weight step never updates the arch logits
            p.grad = None

    def _families(self) -> Dict[str, List[int]]:
        """Decision family -> indices of the arch parameters in it (for the gradient statistics)."""
        fam: Dict[str, List[int]] = {}
        for k, (name, _) in enumerate(self.net.arch.named_parameters()):
            kind, _, rest = name.partition(".")
            if kind == "alpha":
                fam.setdefault(f"{rest}_ops", []).append(k)
            elif kind == "beta":
                fam.setdefault(f"{rest.rsplit('_', 1)[0]}_sets", []).append(k)
            else:
                fam.setdefault("blocks", []).append(k)
        return fam

    def _accumulate(self, key: str, grads: List[Tensor]) -> None:
        acc = self._grad_sums.setdefault(key, [[torch.zeros_like(g), torch.zeros_like(g)] for g in grads])
        for (s1, s2), g in zip(acc, grads):
            s1 += g
            s2 += g * g

    def grad_stats(self, *, reset: bool = True) -> Dict[str, float]:
        """Per decision family, the RMS over its logits of ``z = sum(g) / sqrt(sum(g^2))`` of the task's
        and the budget's arch gradients ``g`` summed over the arch steps since the last reset: about 1
        for noise, growing like the square root of the steps for a consistent signal. Tells whether the
        task or the budget decides."""
        out: Dict[str, float] = {}
        for key, acc in self._grad_sums.items():
            for fam, idx in self._families().items():
                zs = torch.cat([(acc[k][0] / acc[k][1].sqrt().clamp_min(1e-30)).flatten() for k in idx])
                if bool((torch.cat([acc[k][1].flatten() for k in idx]) > 0).any()):
                    out[f"grad_z/{key}/{fam}"] = float(zs.pow(2).mean().sqrt())
        if reset:
            self._grad_sums = {}
        return out

    def _arch_update(self, task: Tensor, *, task_loss: float, steps_per_epoch: int,
                     edge_probs: Optional[Dict[str, Tensor]] = None) -> Dict[str, float]:
        """The tail every arch step shares: the task's arch gradient (``task``'s gradient: the loss, or
        a score-function surrogate whose value is not the loss; ``task_loss`` is reported) under the
        control, the budget's gradient through E[C], one Adam step on the logits, the multiplier's
        dual-ascent step; returns the step's metrics."""
        params = list(self.net.arch.arch_parameters())
        g_task = [torch.zeros_like(p) if g is None else g.detach()
                  for p, g in zip(params, torch.autograd.grad(task, params, allow_unused=True))]
        average_(g_task)  # torchrun: every rank takes the same arch step
        task_loss = mean(task_loss)
        self._accumulate("task", g_task)
        control = getattr(self.hp, "control", "none")
        if control == "budget_only":
            g_task = [torch.zeros_like(g) for g in g_task]
        elif control == "placebo":
            sign = 1.0 if float(torch.rand((), generator=self.gen_a)) < 0.5 else -1.0
            g_task = [sign * g for g in g_task]
        temperature, block_t = 1.0, 1.0
        if self.budget is not None:  # both linear from 1 after the warm-up to their final values
            progress = self.schedule._progress(self.epoch)
            final_block = self.budget.block_temperature or self.budget.temperature
            temperature = 1.0 + (self.budget.temperature - 1.0) * progress
            block_t = 1.0 + (final_block - 1.0) * progress
        expected = self.cost.expected(self.net.arch, edge_probs=edge_probs, temperature=temperature,
                                      block_temperature=block_t)
        grads, total = g_task, task_loss
        if self.budget is not None:
            scale, pen = self.budget.penalty(expected, self.lam, task_value=task_loss)
            g_budget = [torch.zeros_like(p) if g is None else g.detach().to(p.dtype)
                        for p, g in zip(params, torch.autograd.grad(pen, params, allow_unused=True))]
            self._accumulate("budget", g_budget)
            grads = [scale * a + b for a, b in zip(g_task, g_budget)]
            # what the step minimises: without its task term under the budget-only control
            total = (0.0 if control == "budget_only" else scale * task_loss) + float(pen.detach())
        self.a_opt.zero_grad(set_to_none=True)
        learn = getattr(self.hp, "learn_topology", True)
        for (name, p), g, (s1, s2) in zip(self.net.arch.named_parameters(), grads, self._applied):
            if learn or not name.startswith("beta."):
                p.grad = g
                s1 += g  # the evidence of what was applied (prune_z)
                s2 += g * g
            else:
                p.grad = None  # None: Adam leaves it as it is
        self.a_opt.step()
        e = float(expected.detach())
        if self.budget is not None:
            self.lam = self.budget.dual_step(self.lam, e, steps_per_epoch=steps_per_epoch)
        out = {"loss/arch": task_loss, "loss/arch_total": total,
               "cost/derived": self.cost.of_child(self.derive_argmax())}
        if self.budget is not None:  # without one there is no penalty, multiplier or sharpened E[C] to report
            out.update({"cost/budgeted": e, "budget/temperature": temperature, "budget/block_temperature": block_t,
                        "lambda": self.lam})
        return out

    def evidence(self) -> Dict[str, Tensor]:
        """Arch parameter name -> the z-statistic ``sum(g) / sqrt(sum(g^2))`` of the gradient the arch
        steps applied to each of its logits so far (0 where none was applied): positive where the
        search's steps pushed the logit down, about N(0, 1) where they were noise."""
        return {name: torch.where(s2 > 0, s1 / s2.sqrt(), torch.zeros_like(s1))
                for (name, _), (s1, s2) in zip(self.net.arch.named_parameters(), self._applied)}

    # -------------------------------------------------------------- interface

    def weight_step(self, batch: Dict[str, Tensor], x: Tensor) -> Dict[str, float]:
        """One step of the supernet's weights on ``batch`` (``x``: its network input), on the child (or
        mixture) the strategy trains; returns the figures it logs (``loss`` at least)."""
        raise NotImplementedError

    def task_term(self, batch: Dict[str, Tensor], x: Tensor) -> Tuple[Tensor, float, Dict[str, float]]:
        """One draw of the task's arch gradient, without any update: ``(term, loss, metrics)`` where
        ``term``'s gradient w.r.t. the logits is the estimate, ``loss`` the task loss it reports."""
        raise NotImplementedError

    def arch_edge_probs(self) -> Optional[Dict[str, Tensor]]:
        """pi for the expected cost (None: the topology logits' own)."""
        return None

    def arch_step(self, batch: Dict[str, Tensor], x: Tensor, *, steps_per_epoch: int) -> Dict[str, float]:
        """One arch step: :meth:`task_term`, then the shared tail (:meth:`_arch_update`)."""
        term, loss, metrics = self.task_term(batch, x)
        return {**self._arch_update(term, task_loss=loss, steps_per_epoch=steps_per_epoch,
                                    edge_probs=self.arch_edge_probs()), **metrics}

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
        """Everything a resumed search needs besides the supernet's own: the optimizers, the budget's
        multiplier, both samplers' random states, the epoch and the pruning events."""
        return {"w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(), "lam": self.lam,
                "gen_w": self.gen_w.get_state(), "gen_a": self.gen_a.get_state(), "epoch": self.epoch,
                "events": list(self.events), "applied": [[s1.clone(), s2.clone()] for s1, s2 in self._applied]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (after the supernet's own state is loaded)."""
        self.w_opt = self._make_w_opt()
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.lam = float(state["lam"])
        self.gen_w.set_state(state["gen_w"])
        self.gen_a.set_state(state["gen_a"])
        self.epoch = float(state["epoch"])
        self.events = list(state["events"])
        if "applied" in state:  # a checkpoint of an atldas before prune_z: the sums restart from 0
            for (s1, s2), (t1, t2) in zip(self._applied, state["applied"]):
                s1.copy_(t1)
                s2.copy_(t2)


@STRATEGIES.register("atldas")
class AtldasStrategy(Strategy):
    """ATL-DAS: topology + op sampling, two independent samplers, hard pruning (module docstring)."""

    name = "atldas"
    HP = AtldasHP

    def weight_step(self, batch: Dict[str, Tensor], x: Tensor) -> Dict[str, float]:
        eps = self.schedule.epsilon(self.epoch)
        with torch.no_grad():
            child = self.net.arch.sample(epsilon=eps, grad=False, generator=self.gen_w)
        pred = self._forward(x, self.net.plan(child))
        loss = self.loss_fn(pred, batch)
        self._step_weights(loss)
        return {"loss/weights": float(loss.detach()), "epsilon": eps}

    def task_term(self, batch: Dict[str, Tensor], x: Tensor) -> Tuple[Tensor, float, Dict[str, float]]:
        arch, M = self.net.arch, self.hp.arch_samples
        if self.hp.estimator == "reinforce":
            # M children from the policy, independent of the weight sampler; forward passes only
            children = [arch.sample(generator=self.gen_a) for _ in range(M)]
            with torch.no_grad():
                outs = self._forward_each(x, [self.net.plan(c) for c in children])
                losses = torch.stack([self.loss_fn(y, batch).float() for y in outs]).cpu()  # beside logp: the policy is on the CPU
            advantage = losses - (losses.sum() - losses) / (M - 1)  # leave-one-out baseline
            logp = torch.stack([arch.log_prob(c) for c in children])
            surrogate = (advantage * logp).mean()  # its gradient: the score-function estimate of dE[L]
            return surrogate, float(losses.mean()), {"loss/arch_spread": float(losses.std())}
        tau = self.schedule.tau(self.epoch)
        task = torch.zeros(())
        for _ in range(M):
            child = arch.sample(tau=tau, grad=True, generator=self.gen_a)
            task = task + self.loss_fn(self._forward(x, self.net.plan(child)), batch)
        task = task / M
        return task, float(task.detach()), {"tau": tau}

    def end_epoch(self, epoch: int) -> List[Dict[str, Any]]:
        after = epoch + 1 - self.warmup_epochs
        if after <= 0 or after % max(1, self.hp.prune_every):
            return []
        events = self.net.arch.prune(ratio=self.hp.prune_ratio, patience=self.hp.prune_patience,
                                     evidence=self.evidence() if self.hp.prune_z > 0 else None, z_min=self.hp.prune_z)
        for ev in events:
            ev["epoch"] = epoch
        if any("dropped" in ev for ev in events):  # not a round that only held candidates for want of evidence
            freed = self.net.apply_masks()
            self.rebuild_w_opt()
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
    HP = DartsHP

    def _ones(self) -> Dict[str, Tensor]:
        return {t: torch.ones(self.net.arch.topology.num_edges) for t in CELL_TYPES}

    def weight_step(self, batch: Dict[str, Tensor], x: Tensor) -> Dict[str, float]:
        with torch.no_grad():
            plan = self.net.plan(soft=True, edge_weights=self._ones())
        loss = self.loss_fn(self._forward(x, plan), batch)
        self._step_weights(loss)
        return {"loss/weights": float(loss.detach())}

    def task_term(self, batch: Dict[str, Tensor], x: Tensor) -> Tuple[Tensor, float, Dict[str, float]]:
        task = self.loss_fn(self._forward(x, self.net.plan(soft=True, edge_weights=self._ones())), batch)
        return task, float(task.detach()), {}

    def arch_edge_probs(self) -> Optional[Dict[str, Tensor]]:
        return uniform_edge_probs(self.net.arch)

    def derive_argmax(self) -> Child:
        return _top2_child(self.net)


@STRATEGIES.register("gdas")
class GdasStrategy(Strategy):
    """GDAS: one Gumbel-sampled op per edge on every edge; DARTS top-2 derive."""

    name = "gdas"
    uses_none = True
    HP = GdasHP

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
        loss = self.loss_fn(self._forward(x, plan), batch)
        self._step_weights(loss)
        return {"loss/weights": float(loss.detach())}

    def task_term(self, batch: Dict[str, Tensor], x: Tensor) -> Tuple[Tensor, float, Dict[str, float]]:
        task = self.loss_fn(self._forward(x, self._plan(grad=True, generator=self.gen_a)), batch)
        return task, float(task.detach()), {"tau": self.schedule.tau(self.epoch)}

    def arch_edge_probs(self) -> Optional[Dict[str, Tensor]]:
        return uniform_edge_probs(self.net.arch)

    def derive_argmax(self) -> Child:
        return _top2_child(self.net)


@keyword_only
@dataclass
class SoftHP(ArchHP):
    """Settings of the ``soft`` ablation (the arch optimiser only, as ATL-DAS's)."""


@STRATEGIES.register("soft")
class SoftStrategy(Strategy):
    """The ablation "soft instead of sample" of algorithm.md's forward modes: ATL-DAS's parametrisation
    (input-set logits beta, ops without ``none``) and derive (the argmax input sets and ops), trained
    as a first-order soft mixture that runs every op on every edge, each weighted by pi (its edge's
    probability under beta) and p; no sampling, no pruning."""

    name = "soft"
    HP = SoftHP

    def weight_step(self, batch: Dict[str, Tensor], x: Tensor) -> Dict[str, float]:
        with torch.no_grad():
            plan = self.net.plan(soft=True)  # weights pi * p, constants for the weight step
        loss = self.loss_fn(self._forward(x, plan), batch)
        self._step_weights(loss)
        return {"loss/weights": float(loss.detach())}

    def task_term(self, batch: Dict[str, Tensor], x: Tensor) -> Tuple[Tensor, float, Dict[str, float]]:
        task = self.loss_fn(self._forward(x, self.net.plan(soft=True)), batch)  # reaches alpha, beta, gamma
        return task, float(task.detach()), {}


@STRATEGIES.register("random")
class RandomStrategy(Strategy):
    """Random search with shared weights: uniform children for the weights, no arch step; derive
    ranks random valid children under the budget by their held-out loss."""

    name = "random"
    HP = RandomHP
    derive_evaluates = True

    def weight_step(self, batch: Dict[str, Tensor], x: Tensor) -> Dict[str, float]:
        with torch.no_grad():
            child = self.net.arch.sample(epsilon=1.0, grad=False, generator=self.gen_w)
        loss = self.loss_fn(self._forward(x, self.net.plan(child)), batch)
        self._step_weights(loss)
        return {"loss/weights": float(loss.detach())}

    def arch_step(self, batch: Dict[str, Tensor], x: Tensor, *, steps_per_epoch: int) -> Dict[str, float]:
        return {}

    def random_children(self, n: int, *, max_tries: int = 200) -> List[Child]:
        """Up to ``n`` distinct uniform children within the budget (rejection sampling)."""
        out: Dict[tuple, Child] = {}
        gen = torch.Generator().manual_seed(self.seed * 1000 + 7)
        for _ in range(max_tries * n):
            if len(out) >= n:
                break
            c = self.net.arch.sample(epsilon=1.0, generator=gen)
            if self.budget is None or self.cost.of_child(c) <= self.budget.target:
                out.setdefault(c.key(), c)
        return list(out.values())

    def derive(self, evaluate: Optional[Callable[[Child], float]] = None) -> Child:
        children = self.random_children(self.hp.random_candidates)
        if not children:
            return self.cost.cheapest(self.net.arch)[1]
        if evaluate is None:
            return children[0]
        scores = {i: evaluate(c) for i, c in enumerate(children)}
        return children[lowest(scores, what="random search: the candidates' held-out losses on the shared weights",
                               hint="the shared weights diverged: search again with a lower --set w_lr=... (with "
                                    "--force, or another --out)")]
