"""The standalone (discrete) DARTS-style cell, built from one cell of a genotype of any in-degree.

Names follow DARTS so that released checkpoints load: ``preprocess0``, ``preprocess1`` and
``_ops.K`` with K running over the genotype's (op, input) pairs in order.

    >>> cell = Cell(spec=genotype.normal, C_prev_prev=48, C_prev=48, C=48, reduction=False,
    ...             reduction_prev=True)
    >>> y = cell(s0, s1)   # s1: (B, 48, H, W) -> y: (B, 4 * 48, H, W)
"""

from __future__ import annotations

import torch
from torch import nn

from atldas.errors import ConfigError
from atldas.genotype import CellSpec
from atldas.ops import (FactorizedReduce, Identity, OpCost, ReLUConvBN, SizedMacs, build_op,
                        factorized_reduce_cost, op_cost, relu_conv_bn_cost)

__all__ = ["Cell", "cell_cost", "drop_path"]


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

    def macs_at(self, *, H: int, W: int) -> SizedMacs:
        """Closed-form MACs for ``s1`` of size ``H x W`` (batch 1), and the output size."""
        cost = cell_cost(self.spec, C_prev_prev=self.C_prev_prev, C_prev=self.C_prev, C=self.C,
                         reduction=self.reduction, reduction_prev=self.reduction_prev, H=H, W=W,
                         affine=self.affine)
        if self.reduction:
            H, W = (H + 1) // 2, (W + 1) // 2
        return SizedMacs(cost.macs, H, W)


def cell_cost(spec: CellSpec, *, C_prev_prev: int, C_prev: int, C: int, reduction: bool,
              reduction_prev: bool, H: int, W: int, affine: bool = True) -> OpCost:
    """Closed-form MACs and params of a :class:`Cell` whose input ``s1`` is ``H x W`` (batch 1).

    The FactorizedReduce of ``s0`` (when ``reduction_prev``) is costed at its output, ``H x W``.
    """
    _check_spec(spec, reduction)
    if reduction_prev:
        # s0 has twice the size; the cost depends only on the FactorizedReduce output, H x W.
        pre0 = factorized_reduce_cost(C_in=C_prev_prev, C_out=C, H=2 * H, W=2 * W, affine=affine)
    else:
        pre0 = relu_conv_bn_cost(C_in=C_prev_prev, C_out=C, H=H, W=W, affine=affine)
    pre1 = relu_conv_bn_cost(C_in=C_prev, C_out=C, H=H, W=W, affine=affine)
    macs, params = pre0.macs + pre1.macs, pre0.params + pre1.params
    H_nodes, W_nodes = ((H + 1) // 2, (W + 1) // 2) if reduction else (H, W)
    for source, _, op in spec.edges():
        stride = 2 if reduction and source < 2 else 1
        H_in, W_in = (H, W) if source < 2 else (H_nodes, W_nodes)
        c = op_cost(op, C_in=C, C_out=C, H=H_in, W=W_in, stride=stride, affine=affine)
        macs += c.macs
        params += c.params
    return OpCost(macs=macs, params=params)
