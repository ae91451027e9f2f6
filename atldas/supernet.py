"""The search supernet's parts: mixed edges, search cells, a cell stack, choice blocks, and plans.

A *plan* says what one forward pass computes:

- ``Plan.discrete(arch, child)`` (sample and fixed modes): per node, only the chosen edges with their
  chosen op run (hard pruning per step); straight-through gates, when the child has them, multiply
  the outputs (value exactly 1.0) so the loss reaches the logits.
- ``Plan.soft_mixture(arch, ...)`` (DARTS baseline, ablation): every active op on every active edge, weighted
  by ``pi[e] * p[e, o]``; blocks weighted by their probabilities.

Pruned candidates are deleted from the modules (:meth:`SearchCellStack.apply_masks`,
:meth:`ChoiceBlock.apply_mask`) together with their parameters; a strategy then rebuilds its
optimizer over the parameters that are left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from atldas.arch import CELL_TYPES, ArchParams, Child
from atldas.ops import FactorizedReduce, ReLUConvBN, Zero, build_op
from atldas.topology import CellTopology, cell_stack
from atldas.utils.counting import count_params

#: One chosen edge of a node: (source state, op name, gate or None).
EdgeChoice = Tuple[int, str, Optional[Tensor]]


@dataclass
class Plan:
    """What a forward pass of the supernet computes (see the module docstring)."""

    soft: bool
    nodes: Dict[str, List[Tuple[Optional[Tensor], List[EdgeChoice]]]] = field(default_factory=dict)
    op_weights: Dict[str, Tensor] = field(default_factory=dict)
    edge_weights: Dict[str, Tensor] = field(default_factory=dict)
    blocks: Dict[str, Union[Tuple[str, Optional[Tensor]], Tensor]] = field(default_factory=dict)

    @classmethod
    def discrete(cls, arch: ArchParams, child: Child) -> "Plan":
        """Plan that runs exactly ``child`` (gates included when the child has them)."""
        topo = arch.topology
        nodes: Dict[str, List[Tuple[Optional[Tensor], List[EdgeChoice]]]] = {}
        for t in CELL_TYPES:
            per_node = []
            for j, s in enumerate(child.sets[t]):
                set_gate = child.set_gates[t][j] if child.set_gates.get(t) else None
                edges = []
                for i in topo.input_sets[j][s]:
                    e = topo.edge_index[(i, j)]
                    gate = child.op_gates.get(t, {}).get(e)
                    edges.append((i, arch.op_names[child.ops[t][e]], gate))
                per_node.append((set_gate, edges))
            nodes[t] = per_node
        blocks = {g: (arch.block_names[g][b], child.block_gates.get(g)) for g, b in child.blocks.items()}
        return cls(soft=False, nodes=nodes, blocks=blocks)

    @classmethod
    def soft_mixture(cls, arch: ArchParams, *, edge_weights: Optional[Dict[str, Tensor]] = None) -> "Plan":
        """Plan that runs every active candidate, weighted by the current probabilities.

        Args:
            arch: the architecture parameters.
            edge_weights: per cell type (E,) edge weights; default ``pi`` from beta. DARTS passes ones.
        """
        ew = {t: (arch.edge_probs(t) if edge_weights is None else edge_weights[t]) for t in CELL_TYPES}
        return cls(soft=True, op_weights={t: arch.op_probs(t) for t in CELL_TYPES}, edge_weights=ew,
                   blocks={g: arch.block_probs(g) for g in arch.block_names})


def _mixture_weights(op_w: Tensor, edge_w: Tensor) -> Sequence[Sequence[Tensor]]:
    """The soft mixture's weight of op ``o`` on edge ``e``, ``edge_w[e] * op_w[e, o]``, as ``[e][o]``
    0-d tensors: the same products in one call, and ``E`` views instead of ``2 E O`` selects."""
    if edge_w.requires_grad:  # one product per op: its gradient sums over the ops in the order it did before
        return [[edge_w[e] * op_w[e, o] for o in range(op_w.shape[1])] for e in range(op_w.shape[0])]
    return [row.unbind(0) for row in (edge_w[:, None] * op_w).unbind(0)]  # (E, O) -> [e][o]


class MixedEdge(nn.Module):
    """All candidate ops of one edge (``none`` is :class:`~atldas.ops.Zero`; the soft mixture skips it).

    Search-time BatchNorms are not affine (DARTS); pools get a BatchNorm too, as in DARTS' MixedOp.
    """

    def __init__(self, *, ops: Sequence[str], C: int, stride: int) -> None:
        super().__init__()
        self.ops = nn.ModuleDict()
        for name in ops:
            if name == "none":
                self.ops[name] = Zero(stride=stride)
                continue
            op = build_op(name, C_in=C, C_out=C, stride=stride, affine=False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self.ops[name] = op


class SearchCell(nn.Module):
    """A DARTS-style search cell whose nodes take any admissible input set (topology learning).

    Args:
        topology: nodes and in-degree range.
        ops: candidate op names (alpha's column order).
        C_pp: channels of the cell two back.
        C_p: channels of the previous cell.
        C: channels of every node.
        reduction: whether the cell halves the resolution (edges from states 0/1 have stride 2).
        reduction_prev: whether the previous cell halved it (preprocess0 is then a FactorizedReduce).
    """

    def __init__(self, *, topology: CellTopology, ops: Sequence[str], C_pp: int, C_p: int, C: int,
                 reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.topology, self.op_names, self.reduction = topology, tuple(ops), reduction
        self.cell_type = "reduce" if reduction else "normal"
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_in=C_pp, C_out=C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_in=C_pp, C_out=C, affine=False)
        self.preprocess1 = ReLUConvBN(C_in=C_p, C_out=C, affine=False)
        self.edges = nn.ModuleDict({
            f"{i}_{j}": MixedEdge(ops=ops, C=C, stride=2 if reduction and i < 2 else 1)
            for (i, j) in topology.edges})
        self.out_channels = C * topology.nodes

    def forward(self, s0: Tensor, s1: Tensor, plan: Plan) -> Tensor:
        # (B, C_pp, H0, W0), (B, C_p, H, W) -> (B, nodes * C, H', W')
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        t = self.cell_type
        weights = _mixture_weights(plan.op_weights[t], plan.edge_weights[t]) if plan.soft else None
        for j in range(self.topology.nodes):
            if weights is not None:
                node = self._soft_node(j, states, weights)
            else:
                set_gate, edges = plan.nodes[t][j]
                node = None
                for i, name, gate in edges:
                    out = self.edges[f"{i}_{j}"].ops[name](states[i])
                    out = out if gate is None else out * gate
                    node = out if node is None else node + out
                if set_gate is not None:
                    node = node * set_gate
            states.append(node)
        return torch.cat(states[2:], dim=1)

    def _soft_node(self, j: int, states: List[Tensor], weights: Sequence[Sequence[Tensor]]) -> Tensor:
        node: Optional[Tensor] = None
        for e in self.topology.node_edges(j):
            i = self.topology.edges[e][0]
            key = f"{i}_{j}"
            if key not in self.edges:
                continue
            ops = self.edges[key].ops
            for o, name in enumerate(self.op_names):
                if name not in ops or name == "none":  # none adds zeros
                    continue
                out = ops[name](states[i]) * weights[e][o]
                node = out if node is None else node + out
        assert node is not None, "a node lost all its edges"
        return node

    def apply_masks(self, arch: ArchParams) -> int:
        """Delete ops and edges the masks dropped; returns how many parameters were freed."""
        freed = 0
        t = self.cell_type
        op_mask = arch.op_mask(t)
        for e, (i, j) in enumerate(self.topology.edges):
            key = f"{i}_{j}"
            if key not in self.edges:
                continue
            if not arch.edge_used(t, e):
                freed += count_params(self.edges[key])
                del self.edges[key]
                continue
            ops = self.edges[key].ops
            for o, name in enumerate(self.op_names):
                if name in ops and not bool(op_mask[e, o]):
                    freed += count_params(ops[name])
                    del ops[name]
        return freed


class SearchCellStack(nn.Module):
    """``layers`` search cells laid out by :func:`atldas.topology.cell_stack` (reductions at
    ``layers // 3`` and ``2 * layers // 3``, channels doubled); the cells in ``taps`` are returned.

    Args:
        topology: nodes and in-degree range.
        ops: candidate op names.
        C: node channels of the first cell.
        layers: number of cells.
        C_s0: channels of the first input (state 0 of cell 0).
        C_s1: channels of the second input (state 1 of cell 0).
        s0_reduced: whether state 0 has twice the resolution of state 1 (cell 0's preprocess0 is then
            a FactorizedReduce, as in CheapMatting, whose two inputs are the 1/4 and 1/8 features).
        taps: indices of the cells whose outputs :meth:`forward` returns (default: the last cell).
        reductions: the reduction cells (default: DARTS' rule; ``()``: none).
    """

    def __init__(self, *, topology: CellTopology, ops: Sequence[str], C: int, layers: int, C_s0: int,
                 C_s1: int, s0_reduced: bool = False, taps: Optional[Sequence[int]] = None,
                 reductions: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        plan = cell_stack(C=C, layers=layers, C_s0=C_s0, C_s1=C_s1, s0_reduced=s0_reduced,
                          concat=(topology.nodes, topology.nodes), reductions=reductions)
        self.cells = nn.ModuleList(
            SearchCell(topology=topology, ops=ops, C_pp=c.C_pp, C_p=c.C_p, C=c.C, reduction=c.reduction,
                       reduction_prev=c.reduction_prev) for c in plan)
        self.out_channels: List[int] = [c.C_out for c in plan]
        self.taps = tuple(taps) if taps is not None else (layers - 1,)

    @property
    def tap_channels(self) -> Tuple[int, ...]:
        """Channels of the tapped outputs."""
        return tuple(self.out_channels[k] for k in self.taps)

    def forward(self, s0: Tensor, s1: Tensor, plan: Plan) -> List[Tensor]:
        """Outputs of the tapped cells, in order."""
        outs = []
        for k, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, plan)
            if k in self.taps:
                outs.append(s1)
        return outs

    def apply_masks(self, arch: ArchParams) -> int:
        """Delete pruned ops/edges in every cell; returns the number of parameters freed."""
        return sum(cell.apply_masks(arch) for cell in self.cells)


class ChoiceBlock(nn.Module):
    """A macro-level choice among named candidate blocks with the same input and output shapes.

    Args:
        group: the block group name (a key of ``ArchParams.block_names``).
        candidates: candidate name -> module factory (called once).
    """

    def __init__(self, *, group: str, candidates: Mapping[str, Callable[[], nn.Module]]) -> None:
        super().__init__()
        self.group = group
        self.names = tuple(candidates)
        self.blocks = nn.ModuleDict({name: make() for name, make in candidates.items()})

    def forward(self, *inputs: Tensor, plan: Plan) -> Tensor:
        choice = plan.blocks[self.group]
        if plan.soft:
            weights = choice
            out: Optional[Tensor] = None
            for b, name in enumerate(self.names):
                if name in self.blocks:  # pruned blocks have no module
                    y = self.blocks[name](*inputs) * weights[b]
                    out = y if out is None else out + y
            assert out is not None
            return out
        name, gate = choice
        y = self.blocks[name](*inputs)
        return y if gate is None else y * gate

    def apply_mask(self, arch: ArchParams) -> int:
        """Delete candidates the mask dropped; returns the number of parameters freed."""
        freed = 0
        mask = arch.block_mask(self.group)
        for b, name in enumerate(self.names):
            if name in self.blocks and not bool(mask[b]):
                freed += count_params(self.blocks[name])
                del self.blocks[name]
        return freed


class SuperNet(nn.Module):
    """Base class of a search space's supernet: holds ``arch`` and knows how to prune itself.

    Subclasses build their macro (stems, a :class:`SearchCellStack`, choice blocks) and implement
    ``forward(x, plan)``.
    """

    arch: ArchParams

    def weight_parameters(self) -> List[nn.Parameter]:
        """Every parameter that is not an architecture logit."""
        arch_ids = {id(p) for p in self.arch.parameters()}
        return [p for p in self.parameters() if id(p) not in arch_ids]

    def apply_masks(self) -> int:
        """Delete every pruned candidate's module; returns the number of parameters freed."""
        freed = 0
        for m in list(self.modules()):
            if isinstance(m, SearchCellStack):
                freed += m.apply_masks(self.arch)
            elif isinstance(m, ChoiceBlock):
                freed += m.apply_mask(self.arch)
        return freed

    def forward_each(self, x: Tensor, plans: Sequence[Plan]) -> List[Tensor]:
        """``[self(x, plan) for plan in plans]``: the outputs of several architectures on one input.
        A subclass may compute once what no plan changes, where that gives the same floats."""
        return [self(x, plan) for plan in plans]

    def plan(self, child: Optional[Child] = None, *, soft: bool = False,
             edge_weights: Optional[Dict[str, Tensor]] = None) -> Plan:
        """A plan for ``child`` (discrete) or the soft mixture."""
        if soft:
            return Plan.soft_mixture(self.arch, edge_weights=edge_weights)
        if child is None:
            raise ValueError("a discrete plan needs a child")
        return Plan.discrete(self.arch, child)
