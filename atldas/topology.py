"""Cell topology as data: edges, admissible input sets per node, and their incidence.

States of a cell are numbered as in DARTS: 0 and 1 are the outputs of the two previous cells,
state ``j + 2`` is intermediate node ``j``. Edge ``(i, j)`` runs from state ``i`` into node ``j``
(``i < j + 2``). Node ``j`` takes an input set ``S``: a subset of its predecessors
``{0, ..., j + 1}`` with ``k_min <= |S| <= k_max``. Sets are ordered by size, then
lexicographically, so ties in derive go to the lower source index.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, Tuple

import torch

from atldas.errors import ConfigError


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
