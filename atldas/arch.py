"""Architecture parameters: op logits (alpha), topology logits (beta), block logits (gamma), the
pruning masks, sampling of children, and the derive rule.

Normal and reduce cells have their own alpha/beta, shared by all cells of the type (algorithm.md).
A *block group* is a macro-level choice (a decoder level, the prediction head) among named
candidate blocks; it works like an op choice without topology.

A :class:`Child` is one discrete architecture: an input set per node, an op per chosen edge, a block
per group. With ``grad=True`` sampling also returns straight-through gates: their forward value is
exactly 1.0 (``one_hot + (soft - soft.detach())``) and their gradient reaches the logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from atldas.errors import ConfigError
from atldas.topology import CellTopology

CELL_TYPES: Tuple[str, str] = ("normal", "reduce")


@dataclass
class Child:
    """One discrete architecture drawn from (or fixed in) the search space.

    Attributes:
        sets: cell type -> chosen input-set index per node.
        ops: cell type -> {edge index: op index} for the edges of the chosen sets.
        blocks: block group -> candidate index.
        set_gates / op_gates / block_gates: straight-through gates (value 1.0) when sampled with
            gradients, else empty.
    """

    sets: Dict[str, Tuple[int, ...]]
    ops: Dict[str, Dict[int, int]]
    blocks: Dict[str, int] = field(default_factory=dict)
    set_gates: Dict[str, List[Tensor]] = field(default_factory=dict)
    op_gates: Dict[str, Dict[int, Tensor]] = field(default_factory=dict)
    block_gates: Dict[str, Tensor] = field(default_factory=dict)

    def key(self) -> tuple:
        """A hashable value identifying the architecture (gates ignored)."""
        return (tuple((t, self.sets[t], tuple(sorted(self.ops[t].items()))) for t in sorted(self.sets)),
                tuple(sorted(self.blocks.items())))


def _masked_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    return logits.masked_fill(~mask, float("-inf")).softmax(-1)


def _masked_log_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    return logits.masked_fill(~mask, float("-inf")).log_softmax(-1)


_NUMPY_DTYPES = (torch.float32, torch.float64)  # logits whose draws take their argmax in NumPy


class ArchParams(nn.Module):
    """All architecture parameters of a search space, with pruning masks as buffers.

    Args:
        topology: the cell topology (nodes, in-degree range).
        ops: candidate op names of every edge (the column order of alpha).
        blocks: block group name -> candidate block names (the order of gamma).
        init_std: standard deviation of the initial logits (near-uniform policy).

    The module stays on the CPU when the supernet holding it moves to a GPU (``net.to("cuda")``
    moves the weights only; dtype conversions still apply): the policy is a few hundred numbers whose
    draws, costs and pruning run as many tiny ops that a GPU would only launch and synchronise, and
    the CPU generators a strategy seeds draw the same children on every device. What reaches the
    forward pass are 0-dim gates and mixture weights, which PyTorch multiplies into tensors of any
    device and whose gradients it brings back to the CPU.
    """

    def __init__(self, *, topology: CellTopology, ops: Sequence[str],
                 blocks: Optional[Mapping[str, Sequence[str]]] = None, init_std: float = 1e-3) -> None:
        super().__init__()
        self.topology = topology
        self.op_names: Tuple[str, ...] = tuple(ops)
        self.block_names: Dict[str, Tuple[str, ...]] = {g: tuple(c) for g, c in (blocks or {}).items()}
        if not self.op_names:
            raise ConfigError("a search space needs at least one op")
        E, n_ops = topology.num_edges, len(self.op_names)
        self.alpha = nn.ParameterDict({t: nn.Parameter(init_std * torch.randn(E, n_ops)) for t in CELL_TYPES})
        self.beta = nn.ParameterDict({
            f"{t}_{j}": nn.Parameter(init_std * torch.randn(len(s)))
            for t in CELL_TYPES for j, s in enumerate(topology.input_sets)})
        self.gamma = nn.ParameterDict({g: nn.Parameter(init_std * torch.randn(len(c)))
                                       for g, c in self.block_names.items()})
        # a mask per group (active candidates) and, beside it, how many pruning checks in a row each
        # candidate has been below the threshold (pruning waits for evidence: :meth:`prune`)
        for t in CELL_TYPES:
            self.register_buffer(f"op_mask_{t}", torch.ones(E, n_ops, dtype=torch.bool))
            self.register_buffer(f"op_strikes_{t}", torch.zeros(E, n_ops, dtype=torch.int32))
            for j, s in enumerate(topology.input_sets):
                self.register_buffer(f"set_mask_{t}_{j}", torch.ones(len(s), dtype=torch.bool))
                self.register_buffer(f"set_strikes_{t}_{j}", torch.zeros(len(s), dtype=torch.int32))
        for g, c in self.block_names.items():
            self.register_buffer(f"block_mask_{g}", torch.ones(len(c), dtype=torch.bool))
            self.register_buffer(f"block_strikes_{g}", torch.zeros(len(c), dtype=torch.int32))
        for j in range(topology.nodes):
            self.register_buffer(f"incidence_{j}", topology.incidence(j), persistent=False)

    def _apply(self, fn, recurse=True):
        """``Module._apply`` without device moves (see the class docstring): a conversion that would
        take a tensor off the CPU is not applied."""
        if fn(torch.zeros(())).device.type != "cpu":
            return self
        return super()._apply(fn, recurse)

    # ------------------------------------------------------------------ masks and probabilities

    def op_mask(self, t: str) -> Tensor:
        """(E, n_ops) bool: ops still active on each edge of cell type ``t``."""
        return getattr(self, f"op_mask_{t}")

    def set_mask(self, t: str, j: int) -> Tensor:
        """(n_sets_j,) bool: input sets still active for node ``j``."""
        return getattr(self, f"set_mask_{t}_{j}")

    def block_mask(self, g: str) -> Tensor:
        """(n_candidates,) bool: blocks still active in group ``g``."""
        return getattr(self, f"block_mask_{g}")

    # ``temperature`` < 1 sharpens a distribution towards its argmax (the budget's view at the end of a
    # search: the cost of the sharpened policy approaches the cost of the child derive will keep)

    def op_probs(self, t: str, temperature: float = 1.0) -> Tensor:
        """p: (E, n_ops) softmax of alpha / temperature over the active ops of each edge."""
        return _masked_softmax(self.alpha[t] / temperature, self.op_mask(t))

    def op_probs_without(self, t: str, drop: Sequence[str], temperature: float = 1.0) -> Tensor:
        """(E, n_ops) float64 softmax of alpha / temperature over the active ops of each edge other than
        ``drop`` (a row with none of them left is 0): the op a derive that never keeps ``drop`` picks.
        Taken on the logits, not by renormalising :meth:`op_probs`, whose float32 values of the kept ops
        underflow to 0 (and their gradient overflows) when a dropped op leads by much."""
        keep = torch.tensor([n not in drop for n in self.op_names], device=self.alpha[t].device)
        mask = self.op_mask(t) & keep  # (E, n_ops)
        some = mask.any(-1, keepdim=True)  # (E, 1)
        p = _masked_softmax(self.alpha[t].double() / temperature, mask | ~some)  # a row with none: finite, then 0
        return torch.where(some, p, torch.zeros_like(p))

    def set_probs(self, t: str, j: int, temperature: float = 1.0) -> Tensor:
        """q[j]: (n_sets_j,) softmax of beta / temperature over the active input sets of node ``j``."""
        return _masked_softmax(self.beta[f"{t}_{j}"] / temperature, self.set_mask(t, j))

    def edge_probs(self, t: str, temperature: float = 1.0) -> Tensor:
        """pi: (E,) probability that each edge is in its node's input set."""
        return torch.cat([self.set_probs(t, j, temperature) @ getattr(self, f"incidence_{j}")
                          for j in range(self.topology.nodes)])

    def block_probs(self, g: str, temperature: float = 1.0) -> Tensor:
        """(n_candidates,) softmax of gamma / temperature over the active blocks of group ``g``."""
        return _masked_softmax(self.gamma[g] / temperature, self.block_mask(g))

    def arch_parameters(self) -> List[nn.Parameter]:
        """Every logit tensor (alpha, beta, gamma)."""
        return list(self.parameters())

    def entropies(self) -> Dict[str, float]:
        """Mean entropy (nats) of the op, set and block distributions, per kind."""
        def ent(p: Tensor) -> Tensor:
            return -(p * p.clamp_min(1e-12).log()).sum(-1)

        with torch.no_grad():
            out = {}
            for t in CELL_TYPES:
                out[f"entropy/{t}_ops"] = float(ent(self.op_probs(t)).mean())
                out[f"entropy/{t}_sets"] = float(torch.stack(
                    [ent(self.set_probs(t, j)) for j in range(self.topology.nodes)]).mean())
            if self.block_names:
                out["entropy/blocks"] = float(torch.stack([ent(self.block_probs(g)) for g in self.block_names]).mean())
        return out

    # ------------------------------------------------------------------ sampling

    def _draw(self, logits: Tensor, mask: Tensor, *, tau: float, epsilon: float, grad: bool,
              generator: Optional[torch.Generator]) -> Tuple[int, Optional[Tensor]]:
        """One categorical draw from the masked policy mixed with a uniform share ``epsilon``."""
        u = torch.rand((), generator=generator).item()
        gumbel = torch.empty_like(logits).exponential_(generator=generator).log_().neg_()
        masked = logits.masked_fill(~mask, float("-inf")) if grad else None
        if u < epsilon:
            active = np.flatnonzero(mask.cpu().numpy())
            idx = int(active[int(torch.randint(len(active), (), generator=generator))])
        elif masked is not None:
            idx = int(torch.argmax(masked.detach() + gumbel))
        elif logits.dtype in _NUMPY_DTYPES and logits.device.type == mask.device.type == "cpu":
            lg = logits.detach().numpy()  # the same float sums in NumPy, without 5 tiny torch ops
            idx = int((np.where(mask.numpy(), lg, lg.dtype.type(-np.inf)) + gumbel.numpy()).argmax())  # the first max
        else:
            idx = int(torch.argmax(logits.detach().masked_fill(~mask, float("-inf")) + gumbel))
        gate = None
        if masked is not None:
            soft = ((masked + gumbel) / tau).softmax(-1)
            gate = 1.0 + (soft[idx] - soft[idx].detach())  # value exactly 1.0, gradient of soft[idx]
        return idx, gate

    def sample(self, *, tau: float = 1.0, epsilon: float = 0.0, grad: bool = False,
               generator: Optional[torch.Generator] = None) -> Child:
        """Draw a child: an input set per node from q, an op per chosen edge from p, a block per group.

        Args:
            tau: Gumbel-softmax temperature of the straight-through gradient.
            epsilon: share of uniform draws over the active candidates (exploration).
            grad: attach straight-through gates so the loss reaches alpha/beta/gamma.
            generator: torch generator for reproducible draws.
        """
        sets: Dict[str, Tuple[int, ...]] = {}
        ops: Dict[str, Dict[int, int]] = {}
        set_gates: Dict[str, List[Tensor]] = {}
        op_gates: Dict[str, Dict[int, Tensor]] = {}
        topo = self.topology
        for t in CELL_TYPES:
            chosen, ops[t], set_gates[t], op_gates[t] = [], {}, [], {}
            for j in range(topo.nodes):
                s, g = self._draw(self.beta[f"{t}_{j}"], self.set_mask(t, j), tau=tau, epsilon=epsilon,
                                  grad=grad, generator=generator)
                chosen.append(s)
                if g is not None:
                    set_gates[t].append(g)
                for i in topo.input_sets[j][s]:
                    e = topo.edge_index[(i, j)]
                    o, g = self._draw(self.alpha[t][e], self.op_mask(t)[e], tau=tau, epsilon=epsilon,
                                      grad=grad, generator=generator)
                    ops[t][e] = o
                    if g is not None:
                        op_gates[t][e] = g
            sets[t] = tuple(chosen)
        blocks, block_gates = {}, {}
        for g_name in self.block_names:
            b, g = self._draw(self.gamma[g_name], self.block_mask(g_name), tau=tau, epsilon=epsilon,
                              grad=grad, generator=generator)
            blocks[g_name] = b
            if g is not None:
                block_gates[g_name] = g
        if not grad:
            set_gates, op_gates = {}, {}
        return Child(sets=sets, ops=ops, blocks=blocks, set_gates=set_gates, op_gates=op_gates,
                     block_gates=block_gates)

    @torch.no_grad()
    def sample_many(self, n: int, *, generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """``n`` independent children from the policy at once, as index tensors (for Monte-Carlo
        estimates): ``sets/<t>`` (n, nodes), ``ops/<t>`` (n, E) (an op for every edge; only the edges
        of the chosen sets count), ``blocks/<g>`` (n,). Same distribution as :meth:`sample`."""
        def draw(logits: Tensor, mask: Tensor, shape: Tuple[int, ...]) -> Tensor:
            u = torch.rand(*shape, logits.shape[-1], generator=generator, dtype=torch.float64).clamp_min(1e-300)
            gumbel = -torch.log(-torch.log(u))
            return (logits.double().masked_fill(~mask, float("-inf")) + gumbel).argmax(-1)

        out: Dict[str, Tensor] = {}
        for t in CELL_TYPES:
            out[f"sets/{t}"] = torch.stack([draw(self.beta[f"{t}_{j}"], self.set_mask(t, j), (n,))
                                            for j in range(self.topology.nodes)], dim=1)
            out[f"ops/{t}"] = draw(self.alpha[t], self.op_mask(t), (n, self.topology.num_edges))
        for g in self.block_names:
            out[f"blocks/{g}"] = draw(self.gamma[g], self.block_mask(g), (n,))
        return out

    def child_at(self, samples: Mapping[str, Tensor], k: int) -> Child:
        """Row ``k`` of :meth:`sample_many`'s tensors as a :class:`Child` (the chosen edges' ops only)."""
        topo = self.topology
        sets = {t: tuple(int(v) for v in samples[f"sets/{t}"][k]) for t in CELL_TYPES}
        ops = {t: {topo.edge_index[(i, j)]: int(samples[f"ops/{t}"][k, topo.edge_index[(i, j)]])
                   for j, s in enumerate(sets[t]) for i in topo.input_sets[j][s]}
               for t in CELL_TYPES}
        blocks = {g: int(samples[f"blocks/{g}"][k]) for g in self.block_names}
        return Child(sets=sets, ops=ops, blocks=blocks)

    @torch.no_grad()
    def mutate(self, child: Child, *, generator: Optional[torch.Generator] = None) -> Child:
        """``child`` with one decision drawn anew from the policy: a node's input set (the ops of the
        edges it adds drawn too), a chosen edge's op, or a block, which one uniformly among them. The
        draw may return the old value (the caller keeps what is new)."""
        topo = self.topology
        draw = self.sample_many(1, generator=generator)
        decisions = [("set", t, j) for t in CELL_TYPES for j in range(topo.nodes)]
        decisions += [("op", t, e) for t in CELL_TYPES for e in sorted(child.ops[t])]
        decisions += [("block", g, 0) for g in sorted(child.blocks)]
        kind, name, k = decisions[int(torch.randint(len(decisions), (1,), generator=generator))]
        sets = {t: list(v) for t, v in child.sets.items()}
        ops = {t: dict(v) for t, v in child.ops.items()}
        blocks = dict(child.blocks)
        if kind == "set":
            sets[name][k] = int(draw[f"sets/{name}"][0, k])
            used = sorted(topo.edge_index[(i, j)] for j, s in enumerate(sets[name]) for i in topo.input_sets[j][s])
            ops[name] = {e: ops[name].get(e, int(draw[f"ops/{name}"][0, e])) for e in used}
        elif kind == "op":
            ops[name][k] = int(draw[f"ops/{name}"][0, k])
        else:
            blocks[name] = int(draw[f"blocks/{name}"][0])
        return Child(sets={t: tuple(v) for t, v in sets.items()}, ops=ops, blocks=blocks)

    @torch.no_grad()
    def argmax(self) -> Child:
        """The derive rule: per node the most probable active input set, per chosen edge the most
        probable active op, per group the most probable active block. Ties go to the lower index
        (sets are ordered by size then source indices; ops by the op order)."""
        topo = self.topology
        sets, ops = {}, {}
        for t in CELL_TYPES:
            chosen, ops[t] = [], {}
            probs = self.op_probs(t)
            for j in range(topo.nodes):
                s = int(torch.argmax(self.set_probs(t, j)))
                chosen.append(s)
                for i in topo.input_sets[j][s]:
                    e = topo.edge_index[(i, j)]
                    ops[t][e] = int(torch.argmax(probs[e]))
            sets[t] = tuple(chosen)
        blocks = {g: int(torch.argmax(self.block_probs(g))) for g in self.block_names}
        return Child(sets=sets, ops=ops, blocks=blocks)

    def log_prob(self, child: Child) -> Tensor:
        """log P(child) under the current policy (sum over nodes, edges and groups)."""
        total = torch.zeros(())
        for t in CELL_TYPES:
            logp = _masked_log_softmax(self.alpha[t], self.op_mask(t))
            for j, s in enumerate(child.sets[t]):
                total = total + _masked_log_softmax(self.beta[f"{t}_{j}"], self.set_mask(t, j))[s]
            for e, o in child.ops[t].items():
                total = total + logp[e, o]
        for g, b in child.blocks.items():
            total = total + _masked_log_softmax(self.gamma[g], self.block_mask(g))[b]
        return total

    # ------------------------------------------------------------------ hard pruning

    @torch.no_grad()
    def prune(self, *, ratio: float = 0.3, patience: int = 2, evidence: Optional[Mapping[str, Tensor]] = None,
              z_min: float = 0.0) -> List[Dict[str, object]]:
        """Drop candidates whose probability has been below ``ratio / n_active`` in their group at
        ``patience`` checks in a row (one check is evidence of nothing when the logits random-walk),
        keeping at least the most probable one. With ``evidence`` (arch parameter name, as
        :meth:`named_parameters` gives it -> a tensor of its shape: the z-statistic of the gradient the
        arch steps applied to each logit, positive against the candidate) a candidate is dropped only
        when its z is also at least ``z_min``. Returns one event per group that lost candidates (with
        ``evidence``: their ``"z"``), one per cell type whose pruned input sets left edges that no
        active set takes (``"unused"``: the edges, ``"left"``: the edges still in use; their ops are no
        longer searched), and with ``evidence`` one ``{"group": "evidence", "held": n}`` when ``n``
        candidates had stayed below threshold long enough but were kept for want of evidence."""
        events: List[Dict[str, object]] = []
        held = [0]  # candidates below threshold long enough, kept for want of evidence

        def z_of(name: str) -> Optional[Tensor]:
            return None if evidence is None else evidence[name]

        def prune_group(probs: Tensor, mask: Tensor, strikes: Tensor, label: str, names: Sequence[str],
                        z: Optional[Tensor]) -> None:
            n_active = int(mask.sum())
            if n_active <= 1:
                strikes.zero_()
                return
            below = mask & (probs < ratio / n_active)
            strikes.copy_(torch.where(below, strikes + 1, torch.zeros_like(strikes)))
            drop = strikes >= patience
            drop[int(torch.argmax(probs))] = False
            if z is not None:  # below threshold is not enough: the gradient must be against it too
                held[0] += int((drop & (z < z_min)).sum())
                drop &= z >= z_min
            if drop.any():
                mask &= ~drop
                strikes[drop] = 0
                gone = drop.nonzero().flatten().tolist()
                events.append({"group": label, "dropped": [names[k] for k in gone], "left": int(mask.sum()),
                               **({} if z is None else {"z": [round(float(z[k]), 2) for k in gone]})})

        topo = self.topology
        for t in CELL_TYPES:
            used = [self.edge_used(t, e) for e in range(len(topo.edges))]
            for j in range(topo.nodes):
                names = ["+".join(map(str, s)) for s in topo.input_sets[j]]
                prune_group(self.set_probs(t, j), self.set_mask(t, j), getattr(self, f"set_strikes_{t}_{j}"),
                            f"{t}/node{j}/sets", names, z_of(f"beta.{t}_{j}"))
            now = [self.edge_used(t, e) for e in range(len(topo.edges))]
            if now != used:
                events.append({"group": f"{t}/edges", "unused": [f"{i}->{j}" for e, (i, j) in enumerate(topo.edges)
                                                                 if used[e] and not now[e]], "left": sum(now)})
            probs = self.op_probs(t)
            strikes = getattr(self, f"op_strikes_{t}")
            for e, (i, j) in enumerate(topo.edges):
                if self.edge_used(t, e):
                    z = z_of(f"alpha.{t}")
                    prune_group(probs[e], self.op_mask(t)[e], strikes[e], f"{t}/edge{i}->{j}/ops", self.op_names,
                                None if z is None else z[e])
        for g, names in self.block_names.items():
            prune_group(self.block_probs(g), self.block_mask(g), getattr(self, f"block_strikes_{g}"), f"block/{g}",
                        names, z_of(f"gamma.{g}"))
        if held[0]:
            events.append({"group": "evidence", "held": held[0], "z_min": z_min})
        return events

    def edge_used(self, t: str, e: int) -> bool:
        """Whether any active input set of the edge's node contains the edge's source."""
        i, j = self.topology.edges[e]
        mask = self.set_mask(t, j)
        return any(i in s for k, s in enumerate(self.topology.input_sets[j]) if bool(mask[k]))

    def decided(self) -> Dict[str, bool]:
        """Input-set and block group label -> True when one candidate is left (the group is frozen;
        the op groups are not listed)."""
        out = {}
        for t in CELL_TYPES:
            for j in range(self.topology.nodes):
                out[f"{t}/node{j}/sets"] = int(self.set_mask(t, j).sum()) == 1
        for g in self.block_names:
            out[f"block/{g}"] = int(self.block_mask(g).sum()) == 1
        return out

