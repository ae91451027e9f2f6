"""The standalone (discrete) DARTS-style cell, built from one cell of a genotype of any in-degree.

Names follow DARTS so that released checkpoints load: ``preprocess0``, ``preprocess1`` and
``_ops.K`` with K running over the genotype's (op, input) pairs in order.

    >>> from derived_models import get_genotype
    >>> genotype = get_genotype("atldas_cifar100")
    >>> cell = Cell(spec=genotype.normal, C_prev_prev=48, C_prev=48, C=48, reduction=False,
    ...             reduction_prev=True)
    >>> s0, s1 = torch.rand(2, 48, 16, 16), torch.rand(2, 48, 8, 8)  # s0 at twice s1's resolution
    >>> cell(s0, s1).shape   # s1: (B, 48, H, W) -> (B, 4 * 48, H, W): its 4 nodes concatenated
    torch.Size([2, 192, 8, 8])
"""

from __future__ import annotations

import torch
from torch import nn

from atldas.errors import ConfigError
from atldas.genotype import CellSpec
from atldas.ops import FactorizedReduce, Identity, ReLUConvBN, build_op

__all__ = ["Cell", "drop_path"]


def drop_path(x: torch.Tensor, drop_prob: float, *, training: bool = True) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest by ``1 / (1 - p)``."""
    if not training or drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # (B, 1, 1, 1)
    return x * mask / keep


def _check_spec(spec: CellSpec, reduction: bool) -> None:
    if reduction and any(c < 2 for c in spec.concat):
        raise ConfigError(f"a reduction cell cannot concatenate its inputs (states 0/1) with its "
                          f"half-resolution nodes; concat is {list(spec.concat)}")


class Cell(nn.Module):
    """A discrete cell: two preprocessed inputs, nodes summing their ops, concat of listed states.

    Args:
        spec: the genotype cell (nodes of any in-degree >= 1, concat).
        C_prev_prev: channels of the cell input ``s0`` (output of the cell before last).
        C_prev: channels of ``s1`` (output of the previous cell).
        C: channels of every node.
        reduction: halve the resolution (inputs 0/1 go through stride-2 ops).
        reduction_prev: the previous cell halved the resolution, so ``s0`` is at twice the
            resolution of ``s1`` and is preprocessed by a FactorizedReduce.
        affine: BatchNorm affine for the preprocessing and the ops.
    """

    def __init__(self, *, spec: CellSpec, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
                 reduction_prev: bool, affine: bool = True) -> None:
        super().__init__()
        _check_spec(spec, reduction)
        self.spec = spec
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.C = C
        self.C_prev_prev = C_prev_prev
        self.C_prev = C_prev
        self.affine = affine
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(C_in=C_prev_prev, C_out=C, affine=affine)
        else:
            self.preprocess0 = ReLUConvBN(C_in=C_prev_prev, C_out=C, kernel_size=1, stride=1,
                                          padding=0, affine=affine)
        self.preprocess1 = ReLUConvBN(C_in=C_prev, C_out=C, kernel_size=1, stride=1, padding=0,
                                      affine=affine)
        self._ops = nn.ModuleList()
        self._indices: list[int] = []
        self._node_sizes: list[int] = []
        for node in spec.nodes:
            self._node_sizes.append(len(node))
            for op, index in node:
                stride = 2 if reduction and index < 2 else 1
                self._ops.append(build_op(op, C_in=C, C_out=C, stride=stride, affine=affine))
                self._indices.append(index)
        self._concat = list(spec.concat)
        self.multiplier = len(self._concat)

    @property
    def C_out(self) -> int:
        """Channels of the cell output: ``len(concat) * C``."""
        return self.multiplier * self.C

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        """(B, C_prev_prev, H0, W0), (B, C_prev, H, W) -> (B, len(concat) * C, H', W').

        H' = H, or ``ceil(H / 2)`` in a reduction cell; drop-path (training only) skips identities.
        """
        states = [self.preprocess0(s0), self.preprocess1(s1)]  # 2 x (B, C, H, W)
        k = 0
        for size in self._node_sizes:
            total = None
            for _ in range(size):
                op = self._ops[k]
                h = op(states[self._indices[k]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
                k += 1
            states.append(total)
        return torch.cat([states[i] for i in self._concat], dim=1)
