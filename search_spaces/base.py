"""What every search space shares: its knobs, child <-> genotype conversion, and measuring a target.

A search space is a *model space* only (data: ops, candidate blocks, defaults; builders: the proxy
supernet searched and the target network a genotype becomes). The data, loss and model input are the
task's (:mod:`atldas.tasks`); the cost tables are built from a space's geometry and candidates by
:func:`atldas.cost.cost_table`.

A registered space is a template; :meth:`SearchSpace.bind` gives a copy bound to concrete knobs
(:class:`SpaceCfg`) and to the task's input/output sizes (``io``), and every builder reads those:

    >>> from derived_models import get_genotype
    >>> from search_spaces import get_space
    >>> space = get_space("matting").bind(SpaceCfg(C=16, layers=8, target_C=48, target_layers=14,
    ...                                             input_size=1024), io={"in_channels": 6})
    >>> net = space.build_supernet(ops=space.search_ops(with_none=False))
    >>> target = space.build_target(get_genotype("atldas_cifar100"))  # those cells in the space's macro
    >>> type(net).__name__, type(target).__name__
    ('MattingSuperNet', 'CheapMatting')

A subclass sets ``name``, ``task`` (its default task), ``ops`` and ``defaults`` (SearchConfig values
it starts from, and ``strategy_defaults`` for one strategy's searches) and implements
``build_supernet``, ``build_target``, ``macro_meta``, ``cell_geometry``, ``input_shape`` and, if it has
macro-level choices, ``block_names`` and ``block_candidates``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from atldas.config import keyword_only
from atldas.arch import CELL_TYPES, ArchParams, Child
from atldas.errors import ConfigError
from atldas.genotype import CellSpec, Genotype
from atldas.ops import OPS, SEARCH_PRIMITIVES
from atldas.supernet import SuperNet
from atldas.topology import CellGeometry, CellTopology
from atldas.utils.counting import count_macs, count_params

__all__ = ["SpaceCfg", "SearchSpace", "BlockCandidates"]

#: Group -> candidate name -> (factory, input shapes in the target network).
BlockCandidates = Dict[str, Dict[str, Tuple[Callable[[], nn.Module], Tuple[Tuple[int, ...], ...]]]]


@keyword_only
@dataclass
class SpaceCfg:
    """Knobs of a search space: the proxy that is searched and the target the budget is stated on.

    Attributes:
        C: node channels of the proxy supernet's first stage.
        layers: cells of the proxy.
        target_C: node channels of the target network derive produces.
        target_layers: cells of the target network.
        input_size: side of the input the budget is stated at.
        nodes: intermediate nodes per cell.
        k_min, k_max: in-degree range of a node (2..2: DARTS cells).
    """

    C: int = 16
    layers: int = 8
    target_C: int = 48
    target_layers: int = 14
    input_size: int = 1024
    nodes: int = 4
    k_min: int = 2
    k_max: int = 2

    def check(self) -> None:
        """Raise ConfigError naming the first knob out of range."""
        limits = {"C": (2, 1024), "layers": (1, 200), "target_C": (2, 1024), "target_layers": (1, 200),
                  "input_size": (8, 16384), "nodes": (1, 8), "k_min": (1, 2), "k_max": (1, 8)}
        for name, (low, high) in limits.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ConfigError(f"{name} must be an integer in {low}..{high}, got {v!r}")
        if self.k_min > self.k_max:
            raise ConfigError(f"in-degree needs k_min <= k_max, got {self.k_min}..{self.k_max}")


class SearchSpace:
    """Base class of a registered search space (see the module docstring)."""

    name: str = "base"
    #: The task a search in this space runs by default.
    task: str = "matting"
    #: Candidate ops of every cell edge (no ``none``: the topology decides whether an edge exists).
    ops: Tuple[str, ...] = SEARCH_PRIMITIVES
    #: SearchConfig values a search in this space starts from (flat keys, e.g. ``epochs``, ``C``).
    defaults: Mapping[str, Any] = {}
    #: Per strategy, SearchConfig values applied after ``defaults`` (e.g. ``{"atldas": {"select": 8}}``).
    strategy_defaults: Mapping[str, Mapping[str, Any]] = {}
    #: The smallest ``input_size`` its networks take (the matting macro downsamples 5 times).
    min_input_size: int = 8

    knobs: Optional[SpaceCfg] = None
    io: Mapping[str, Any] = {}

    def __init__(self, *, name: str, defaults: Mapping[str, Any],
                 strategy_defaults: Optional[Mapping[str, Mapping[str, Any]]] = None) -> None:
        """``name``: the registered name; ``defaults``: SearchConfig values of this space;
        ``strategy_defaults``: more of them for one strategy (strategy name -> values)."""
        self.name = name
        self.defaults = dict(defaults)
        self.strategy_defaults = {k: dict(v) for k, v in (strategy_defaults or {}).items()}

    def bind(self, knobs: SpaceCfg, io: Optional[Mapping[str, Any]] = None) -> "SearchSpace":
        """A copy of this space bound to ``knobs`` and the task's ``io`` (checked)."""
        knobs.check()
        if knobs.input_size < self.min_input_size:
            raise ConfigError(f"input_size={knobs.input_size}: the {self.name} space's networks take "
                              f"{self.min_input_size} pixels or more (they downsample the input several times)")
        for op in self.ops:
            OPS.get(op)  # an unregistered op is an error listing the known ones
        twice = sorted({op for op in self.ops if list(self.ops).count(op) > 1})
        if twice:  # two identical candidates on every edge: the uniform prior would favour that op
            raise ConfigError(f"the {self.name} space lists op(s) {', '.join(twice)} more than once; list each once")
        bound = copy.copy(self)
        bound.knobs, bound.io = knobs, dict(io or {})
        bound.topology  # noqa: B018 - validates nodes/in-degree now
        return bound

    @property
    def cfg(self) -> SpaceCfg:
        """The bound knobs (ConfigError when the space is not bound)."""
        if self.knobs is None:
            raise ConfigError(f"search space {self.name!r} is not bound to knobs; call space.bind(SpaceCfg(...))")
        return self.knobs

    # ------------------------------------------------------------------ to override

    def build_supernet(self, *, ops: Sequence[str]) -> SuperNet:
        """The proxy supernet with candidate ``ops`` on every edge."""
        raise NotImplementedError

    def build_target(self, genotype: Genotype) -> nn.Module:
        """The standalone target network of ``genotype``."""
        raise NotImplementedError

    def macro_meta(self) -> Dict[str, Any]:
        """The target macro, recorded in a genotype file's ``space.macro``."""
        raise NotImplementedError

    def cell_geometry(self) -> List[CellGeometry]:
        """Channels and input size of every cell of the target network."""
        raise NotImplementedError

    def input_shape(self) -> Tuple[int, ...]:
        """The (1, C, H, W) input the budget is stated at."""
        raise NotImplementedError

    def block_names(self) -> Dict[str, Tuple[str, ...]]:
        """Group -> candidate names (the order of gamma)."""
        return {}

    def block_candidates(self) -> BlockCandidates:
        """Group -> candidate name -> (factory, input shapes in the target network)."""
        return {}

    # ------------------------------------------------------------------ shared

    @property
    def topology(self) -> CellTopology:
        """The cell topology the knobs ask for."""
        k = self.cfg
        return CellTopology(nodes=k.nodes, k_min=k.k_min, k_max=k.k_max)

    def search_ops(self, *, with_none: bool) -> Tuple[str, ...]:
        """The op set of the supernet: the space's ops, with ``none`` first for the DARTS/GDAS
        baselines (their soft mixture needs a zero op; derive never keeps it)."""
        ops = tuple(o for o in self.ops if o != "none")
        return ("none",) + ops if with_none else ops

    def new_arch(self, *, with_none: bool = False) -> ArchParams:
        """Fresh architecture parameters of this space (e.g. to sample random children)."""
        return ArchParams(topology=self.topology, ops=self.search_ops(with_none=with_none),
                          blocks=self.block_names())

    def child_to_genotype(self, arch: ArchParams, child: Child) -> Genotype:
        """A discrete child as a Genotype (nodes list their inputs in source order)."""
        topo = arch.topology
        cells = {}
        for t in CELL_TYPES:
            nodes = []
            for j, s in enumerate(child.sets[t]):
                nodes.append(tuple((arch.op_names[child.ops[t][topo.edge_index[(i, j)]]], i)
                                   for i in topo.input_sets[j][s]))
            cells[t] = CellSpec(nodes=tuple(nodes), concat=tuple(range(2, 2 + topo.nodes)))
        choices = {g: arch.block_names[g][b] for g, b in child.blocks.items()}
        space = {"name": self.name, "ops": [o for o in arch.op_names if o != "none"], "nodes": topo.nodes,
                 "in_degree": [topo.k_min, topo.k_max], "macro": self.macro_meta()}
        return Genotype(normal=cells["normal"], reduce=cells["reduce"], space=space, choices=choices)

    def genotype_to_child(self, arch: ArchParams, genotype: Genotype) -> Child:
        """The child of ``arch``'s space that ``genotype`` describes (ConfigError if it is not one)."""
        topo = arch.topology
        sets, ops = {}, {}
        for t in CELL_TYPES:
            cell: CellSpec = genotype.cell(t == "reduce")
            if len(cell.nodes) != topo.nodes:
                raise ConfigError(f"{t} cell has {len(cell.nodes)} nodes; the space has {topo.nodes}")
            chosen, ops[t] = [], {}
            for j, node in enumerate(cell.nodes):
                srcs = tuple(sorted(i for _, i in node))
                if srcs not in topo.input_sets[j]:
                    raise ConfigError(f"{t} cell, node {j}: inputs {list(srcs)} are not an admissible input "
                                      f"set (in-degree {topo.k_min}..{topo.k_max})")
                chosen.append(topo.input_sets[j].index(srcs))
                for op, i in node:
                    if op not in arch.op_names:
                        raise ConfigError(f"{t} cell, node {j}: op {op!r} is not in the space "
                                          f"({', '.join(arch.op_names)})")
                    ops[t][topo.edge_index[(i, j)]] = arch.op_names.index(op)
            sets[t] = tuple(chosen)
        blocks = {}
        for g, names in arch.block_names.items():
            name = dict(genotype.choices).get(g, names[0])
            if name not in names:
                raise ConfigError(f"block {g}: {name!r} is not a candidate ({', '.join(names)})")
            blocks[g] = names.index(name)
        return Child(sets=sets, ops=ops, blocks=blocks)

    def measure(self, genotype: Genotype, *, metric: str) -> int:
        """MACs (FlopCounterMode / 2) or params of the target network of ``genotype``, on the meta device."""
        with torch.device("meta"):
            net = self.build_target(genotype)
            x = torch.zeros(self.input_shape())
        if metric == "params":
            return count_params(net)
        net.eval()
        return count_macs(net, x)
