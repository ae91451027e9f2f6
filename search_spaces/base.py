"""What every search space shares: child <-> genotype conversion and the exact cost table.

A space subclass is mostly data (op set, defaults, macro knobs) plus four builders:
``build_supernet`` (the proxy network searched), ``build_target`` (the standalone network a genotype
becomes), ``cell_geometry`` (channels and input size of every target cell) and ``block_candidates``
(the macro-level choices and the input shapes they see in the target network).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from atldas.arch import CELL_TYPES, ArchParams, Child
from atldas.config import SearchConfig
from atldas.cost import CostTable
from atldas.errors import ConfigError
from atldas.genotype import CellSpec, Genotype
from atldas.ops import PRIMITIVES, SEARCH_PRIMITIVES, op_cost, op_output_size
from atldas.supernet import SuperNet
from atldas.topology import CellTopology


@dataclasses.dataclass(frozen=True)
class CellGeometry:
    """One cell of the target network: node channels, input size (of state 1), reduction flag."""

    C: int
    H: int
    W: int
    reduction: bool


def edge_geometry(g: CellGeometry, source: int) -> Tuple[int, int, int, int]:
    """(C, H, W, stride) of an edge from state ``source`` in target cell ``g``: in a reduction cell,
    edges from the cell inputs (0, 1) have stride 2 at the input size, the others stride 1 at half."""
    stride = 2 if g.reduction and source < 2 else 1
    H, W = (g.H, g.W) if stride == 2 or not g.reduction else op_output_size(H=g.H, W=g.W, stride=2)
    return g.C, H, W, stride


def reductions_of(layers: int) -> Tuple[int, int]:
    """Indices of the two reduction cells (DARTS: layers // 3 and 2 * layers // 3)."""
    return layers // 3, 2 * layers // 3


def stack_geometry(*, C: int, layers: int, size: int) -> List[CellGeometry]:
    """Geometry of a DARTS cell stack whose first cell sees ``size`` x ``size``: reductions at
    layers // 3 and 2 * layers // 3 double the channels and halve the size (rounding up)."""
    reds = reductions_of(layers)
    out, h = [], size
    for k in range(layers):
        reduction = k in reds
        if reduction:
            C *= 2
        out.append(CellGeometry(C=C, H=h, W=h, reduction=reduction))
        if reduction:
            h = (h + 1) // 2
    return out


def count_macs(module: nn.Module, *inputs: Tensor) -> int:
    """Multiply-accumulates of ``module(*inputs)``: torch's FlopCounterMode total / 2."""
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def count_params(module: nn.Module) -> int:
    """Number of parameters (``numel`` summed)."""
    return sum(p.numel() for p in module.parameters())


class SearchSpace:
    """Base class of a registered search space (see the module docstring)."""

    name: str = "base"
    task: str = "matting"
    ops: Tuple[str, ...] = SEARCH_PRIMITIVES
    #: SearchConfig fields this space fills in when the user leaves them at None.
    defaults: Mapping[str, Any] = {}

    # ------------------------------------------------------------------ to override

    def build_supernet(self, cfg: SearchConfig, *, ops: Sequence[str]) -> SuperNet:
        raise NotImplementedError

    def build_target(self, genotype: Genotype, cfg: SearchConfig) -> nn.Module:
        raise NotImplementedError

    def cell_geometry(self, cfg: SearchConfig) -> List[CellGeometry]:
        raise NotImplementedError

    def block_candidates(self, cfg: SearchConfig) -> Dict[str, Dict[str, Tuple[Callable[[], nn.Module], Tuple[Tuple[int, ...], ...]]]]:
        """Group -> candidate name -> (factory, input shapes in the target network)."""
        return {}

    def block_names(self) -> Dict[str, Tuple[str, ...]]:
        """Group -> candidate names (the order of gamma)."""
        return {}

    def input_shape(self, cfg: SearchConfig) -> Tuple[int, ...]:
        """The (1, C, H, W) input the budget is stated at."""
        raise NotImplementedError

    def datasets(self, cfg: SearchConfig) -> Tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """(weight split, arch split), disjoint."""
        raise NotImplementedError

    def model_input(self, batch: Dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def loss(self, pred: Tensor, batch: Dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared

    def resolve(self, cfg: SearchConfig) -> SearchConfig:
        """Fill the fields left at None with this space's defaults."""
        changes = {k: v for k, v in self.defaults.items() if getattr(cfg, k) is None}
        if any(getattr(cfg, k) is not None for k in ("target_macs", "target_params", "target_latency_ms")):
            changes.pop("target_macs", None)  # the user chose a budget: the default one does not apply
        return dataclasses.replace(cfg, **changes)

    def topology(self, cfg: SearchConfig) -> CellTopology:
        return CellTopology(nodes=4, k_min=cfg.k_min, k_max=cfg.k_max)

    def search_ops(self, *, with_none: bool) -> Tuple[str, ...]:
        """The op set of the supernet (``none`` only for the DARTS/GDAS baselines)."""
        return tuple(PRIMITIVES) if with_none else tuple(o for o in self.ops if o != "none")

    def macro_meta(self, cfg: SearchConfig) -> Dict[str, Any]:
        """Macro knobs recorded in the genotype file."""
        return {"C": cfg.target_C, "layers": cfg.target_layers}

    def child_to_genotype(self, arch: ArchParams, child: Child, cfg: SearchConfig) -> Genotype:
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
                 "in_degree": [topo.k_min, topo.k_max], "macro": self.macro_meta(cfg)}
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

    def cell_table(self, cfg: SearchConfig, *, arch: ArchParams,
                   cost: Callable[[str, Tuple[int, int, int, int]], float]) -> Dict[str, Tensor]:
        """Per cell type, an (edges, ops) table: for every edge and op, the sum over the target
        network's cells of that type of ``cost(op, (C, H, W, stride))`` (the edge's geometry there)."""
        topo = arch.topology
        cells = {t: torch.zeros(topo.num_edges, len(arch.op_names), dtype=torch.float64) for t in CELL_TYPES}
        for g in self.cell_geometry(cfg):
            t = "reduce" if g.reduction else "normal"
            for e, (i, _) in enumerate(topo.edges):
                geo = edge_geometry(g, i)
                for o, name in enumerate(arch.op_names):
                    cells[t][e, o] += cost(name, geo)
        return cells

    def cost_table(self, cfg: SearchConfig, *, metric: str, arch: ArchParams,
                   lut: Optional[Mapping[str, float]] = None) -> CostTable:
        """Exact cost of every candidate in the target network at :meth:`input_shape`.

        Cell ops use the closed forms of :mod:`atldas.ops`; blocks and the fixed part are counted
        with FlopCounterMode (MACs) or ``numel`` (params) on the meta device, so the table adds up to
        the counter's figure for every child. ``latency_ms`` needs a latency table (``lut``).
        """
        if metric == "latency_ms":
            from atldas.latency import latency_table

            return latency_table(self, cfg, arch=arch, lut=lut)
        def cost(name: str, geo: Tuple[int, int, int, int]) -> float:
            C, H, W, stride = geo
            c = op_cost(name, C_in=C, C_out=C, H=H, W=W, stride=stride, affine=True)
            return c.macs if metric == "macs" else c.params

        cells = self.cell_table(cfg, arch=arch, cost=cost)
        blocks: Dict[str, Tensor] = {}
        for group, cands in self.block_candidates(cfg).items():
            vals = []
            for name in arch.block_names[group]:
                make, shapes = cands[name]
                with torch.device("meta"):
                    m = make()
                    xs = [torch.zeros(s) for s in shapes]
                vals.append(count_macs(m, *xs) if metric == "macs" else count_params(m))
            blocks[group] = torch.tensor(vals, dtype=torch.float64)
        table = CostTable(metric=metric, base=0.0, cells=cells, blocks=blocks,
                          input_size=tuple(self.input_shape(cfg)))
        ref = arch.argmax()
        table.base = float(self.measure(self.child_to_genotype(arch, ref, cfg), cfg, metric=metric)) - table.of_child(ref)
        return table

    def measure(self, genotype: Genotype, cfg: SearchConfig, *, metric: str) -> int:
        """MACs (FlopCounterMode / 2) or params of the target network of ``genotype``."""
        with torch.device("meta"):
            net = self.build_target(genotype, cfg)
            x = torch.zeros(self.input_shape(cfg))
        if metric == "params":
            return count_params(net)
        net.eval()
        return count_macs(net, x)
