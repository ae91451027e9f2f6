"""Cell topology as data: edges, admissible input sets per node, their incidence, and the geometry of
a DARTS cell stack (:func:`cell_stack`, the one place its channel and size arithmetic lives).

States of a cell are numbered as in DARTS: 0 and 1 are the outputs of the two previous cells,
state ``j + 2`` is intermediate node ``j``. Edge ``(i, j)`` runs from state ``i`` into node ``j``
(``i < j + 2``). Node ``j`` takes an input set ``S``: a subset of its predecessors
``{0, ..., j + 1}`` with ``k_min <= |S| <= k_max``. Sets are ordered by size, then
lexicographically, so ties in derive go to the smaller set, then to the lower source indices.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from atldas.config import keyword_only
from atldas.errors import ConfigError


@keyword_only
@dataclass(frozen=True)
class CellTopology:
    """Edges and admissible input sets of a cell with ``nodes`` intermediate nodes.

    Args:
        nodes: number of intermediate nodes.
        k_min: smallest in-degree of a node.
        k_max: largest in-degree of a node.
    """

    nodes: int = 4
    k_min: int = 2
    k_max: int = 2
    edges: Tuple[Tuple[int, int], ...] = field(init=False)
    input_sets: Tuple[Tuple[Tuple[int, ...], ...], ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ConfigError(f"a cell needs at least one node, got nodes={self.nodes}")
        if not 1 <= self.k_min <= self.k_max:
            raise ConfigError(f"in-degree needs 1 <= k_min <= k_max, got {self.k_min}..{self.k_max}")
        if self.k_min > 2:
            raise ConfigError(f"k_min={self.k_min} leaves node 0 (2 predecessors) without an input set; "
                              "use k_min <= 2")
        edges = tuple((i, j) for j in range(self.nodes) for i in range(j + 2))
        sets = []
        for j in range(self.nodes):
            preds = range(j + 2)
            sets.append(tuple(s for k in range(self.k_min, min(self.k_max, j + 2) + 1)
                              for s in itertools.combinations(preds, k)))
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "input_sets", tuple(sets))

    @property
    def num_edges(self) -> int:
        """Number of candidate edges (14 for 4 nodes)."""
        return len(self.edges)

    @cached_property
    def edge_index(self) -> Dict[Tuple[int, int], int]:
        """(source state, node) -> edge index."""
        return {e: n for n, e in enumerate(self.edges)}

    def node_edges(self, j: int) -> range:
        """Edge indices entering node ``j`` (sources 0..j+1, in order)."""
        start = sum(jj + 2 for jj in range(j))
        return range(start, start + j + 2)

    def incidence(self, j: int) -> torch.Tensor:
        """(n_sets_j, j + 2) float matrix: 1 where the set contains the source."""
        sets = self.input_sets[j]
        m = torch.zeros(len(sets), j + 2)
        for r, s in enumerate(sets):
            m[r, list(s)] = 1.0
        return m

    def num_sets(self) -> Tuple[int, ...]:
        """Number of admissible input sets per node (1, 3, 6, 10 for in-degree 2)."""
        return tuple(len(s) for s in self.input_sets)


# --------------------------------------------------------------------------------------------
# cell-stack geometry (DARTS macro: reductions at layers // 3 and 2 * layers // 3)


def reductions_of(layers: int) -> Tuple[int, int]:
    """Indices of the two reduction cells of a DARTS stack: ``layers // 3`` and ``2 * layers // 3``."""
    return layers // 3, 2 * layers // 3


@keyword_only
@dataclass(frozen=True)
class StackCell:
    """One cell of a DARTS cell stack, as :func:`cell_stack` lays it out.

    Attributes:
        index: position in the stack.
        C_pp: channels of input ``s0`` (the output of the cell before last).
        C_p: channels of input ``s1`` (the output of the previous cell).
        C: node channels.
        reduction: whether the cell halves the resolution.
        reduction_prev: whether ``s0`` is at twice the resolution of ``s1``.
        C_out: output channels (``len(concat) * C``).
        H, W: size of ``s1`` (the cell's input), when the stack was laid out for an input size.
    """

    index: int
    C_pp: int
    C_p: int
    C: int
    reduction: bool
    reduction_prev: bool
    C_out: int
    H: int = 0
    W: int = 0


def cell_stack(*, C: int, layers: int, C_s0: int, C_s1: int, s0_reduced: bool = False,
               concat: Tuple[int, int] = (4, 4), size: Tuple[int, int] = (0, 0),
               reductions: Optional[Sequence[int]] = None) -> Tuple[StackCell, ...]:
    """The one DARTS cell-stack layout: channels double and the size halves (rounding up) at each
    reduction cell; ``s0, s1 = s1, cell(s0, s1)``.

    Args:
        C: node channels of the first stage.
        layers: number of cells.
        C_s0: channels of state 0 of the first cell.
        C_s1: channels of state 1 of the first cell.
        s0_reduced: whether state 0 of the first cell is at twice the resolution of state 1 (its
            preprocessing is then a FactorizedReduce, as in CheapMatting).
        concat: how many states a normal and a reduction cell concatenate (4 and 4 in DARTS).
        size: (H, W) of state 1 of the first cell, to fill in each cell's input size.
        reductions: the reduction cells (default: DARTS', :func:`reductions_of`; ``()``: none).
    """
    reds = set(reductions_of(layers) if reductions is None else reductions)
    out = []
    C_pp, C_p, C_curr, prev = C_s0, C_s1, C, s0_reduced
    H, W = size
    for k in range(layers):
        reduction = k in reds
        if reduction:
            C_curr *= 2
        C_out = concat[1 if reduction else 0] * C_curr
        out.append(StackCell(index=k, C_pp=C_pp, C_p=C_p, C=C_curr, reduction=reduction,
                             reduction_prev=prev, C_out=C_out, H=H, W=W))
        if reduction:
            H, W = (H + 1) // 2, (W + 1) // 2
        C_pp, C_p, prev = C_p, C_out, reduction
    return tuple(out)


@keyword_only
@dataclass(frozen=True)
class CellGeometry:
    """One cell of a target network, for costing: node channels, input size (of state 1), reduction flag."""

    C: int
    H: int
    W: int
    reduction: bool


def stack_geometry(*, C: int, layers: int, size: int) -> List[CellGeometry]:
    """Geometry of a DARTS cell stack whose first cell sees ``size`` x ``size`` (see :func:`cell_stack`)."""
    return [CellGeometry(C=c.C, H=c.H, W=c.W, reduction=c.reduction)
            for c in cell_stack(C=C, layers=layers, C_s0=C, C_s1=C, size=(size, size))]


def edge_geometry(g: CellGeometry, source: int) -> Tuple[int, int, int, int]:
    """(C, H, W, stride) of an edge from state ``source`` in cell ``g``: in a reduction cell, edges
    from the cell inputs (0, 1) have stride 2 at the input size, the others stride 1 at half of it."""
    if not g.reduction:
        return g.C, g.H, g.W, 1
    if source < 2:
        return g.C, g.H, g.W, 2
    return g.C, (g.H + 1) // 2, (g.W + 1) // 2, 1


def stage_taps(layers: int) -> Tuple[int, int, int]:
    """Index of the last cell of each stage of a DARTS stack (before each reduction, and the last)."""
    r1, r2 = reductions_of(layers)
    return r1 - 1, r2 - 1, layers - 1
