"""The retrain recipe's optimisation pieces, shared by ``atldas retrain`` and the matting task's
short standalone fit (the search's ``select`` stage): the learning-rate schedule and the
weight-decay parameter groups."""

from __future__ import annotations

import math
from typing import Any, Dict, List

from torch import nn

__all__ = ["decay_groups", "lr_factor"]


def lr_factor(step: int, *, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 down to ``min_ratio`` at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def decay_groups(net: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Two parameter groups: weights (``ndim > 1``) with ``weight_decay``, and norms, biases and
    PReLU slopes without it."""
    decay, no_decay = [], []
    for p in net.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
