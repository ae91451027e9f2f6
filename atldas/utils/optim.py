"""Optimisation pieces: the retrain recipe's learning-rate schedule and weight-decay parameter groups,
shared by ``atldas retrain`` and the matting task's short standalone fit (the search's ``select``
stage), and :class:`ClippedAdam`, the planted task's standalone step."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ["ClippedAdam", "decay_groups", "lr_factor"]


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


class ClippedAdam:
    """Adam after a clip of the global gradient norm, in PyTorch's fused CPU kernel: the same floats as
    ``torch.nn.utils.clip_grad_norm_(params, clip)`` followed by ``torch.optim.Adam(params,
    fused=True).step()`` (tested bit for bit against this torch version: it calls the private
    ``torch._foreach_norm`` and ``torch._fused_adam_`` as those two do), without the optimizer's per-step
    walk over parameter groups and state (the planted task's standalone training, a 6.2 ms step of a
    small network: about 6 % less CPU; experiments/MEASURED.md).

    For dense floating-point parameters of one device and one dtype, each given once (anything else is
    refused). Parameters without a gradient are skipped, as both of those skip them. The learning rate is
    an argument of :meth:`step`, so a schedule needs no parameter groups. There is no ``state_dict``:
    it serves trainings that are never resumed.

    Args:
        params: the parameters, in a fixed order.
        clip: the maximal global L2 norm of the gradients (> 0).
        betas: Adam's coefficients of the running averages, in [0, 1).
        eps: Adam's denominator term (>= 0).
    """

    def __init__(self, params: Iterable[Tensor], *, clip: float, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("ClippedAdam needs at least one parameter, got none")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("ClippedAdam got a parameter twice; give each once")
        kinds = {(p.device, p.dtype, p.layout) for p in self.params}
        if len(kinds) != 1 or not self.params[0].is_floating_point() or self.params[0].layout != torch.strided:
            raise ValueError("ClippedAdam takes dense floating-point parameters of one device and dtype, got "
                             + ", ".join(sorted({f"{d}/{t}/{lay}" for d, t, lay in kinds})))
        if not clip > 0 or not eps >= 0 or len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"ClippedAdam needs clip > 0, eps >= 0 and two betas in [0, 1); got clip={clip}, "
                             f"eps={eps}, betas={betas}")
        self.clip, self.betas, self.eps = float(clip), (float(betas[0]), float(betas[1])), float(eps)
        self._state: List[Optional[Tuple[Tensor, Tensor, Tensor]]] = [None] * len(self.params)  # avg, avg_sq, step

    def zero_grad(self) -> None:
        """Drop every gradient (``set_to_none``)."""
        for p in self.params:
            p.grad = None

    def _states(self, k: int) -> Tuple[Tensor, Tensor, Tensor]:
        s = self._state[k]
        if s is None:  # as Adam makes it on a parameter's first gradient
            p = self.params[k]
            s = self._state[k] = (torch.zeros_like(p, memory_format=torch.preserve_format),
                                  torch.zeros_like(p, memory_format=torch.preserve_format),
                                  torch.zeros((), dtype=torch.float32, device=p.device))
        return s

    @torch.no_grad()
    def step(self, *, lr: float) -> None:
        """Clip the gradients in place, then one Adam step at learning rate ``lr``."""
        live = [k for k, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        params = [self.params[k] for k in live]
        grads = [p.grad for p in params]
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        torch._foreach_mul_(grads, torch.clamp(self.clip / (total + 1e-6), max=1.0))
        states = [self._states(k) for k in live]
        steps = [s[2] for s in states]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, grads, [s[0] for s in states], [s[1] for s in states], [], steps,
                           amsgrad=False, lr=float(lr), beta1=self.betas[0], beta2=self.betas[1],
                           weight_decay=0.0, eps=self.eps, maximize=False, grad_scale=None, found_inf=None)
