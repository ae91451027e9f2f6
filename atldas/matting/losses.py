"""Matting losses (GCA / mmagic conventions): L1 over the unknown region, Laplacian-pyramid loss,
composition loss. All take (B, 1, H, W) alphas and a (B, 3, H, W) one-hot trimap [bg, unknown, fg]."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _unknown_weight(trimap_onehot: Tensor) -> Tensor:
    """(B, 3, H, W) one-hot -> (B, 1, H, W) weight of the unknown region."""
    return trimap_onehot[:, 1:2]


def weighted_l1(pred: Tensor, target: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean |pred - target| over the pixels where ``weight`` > 0 (weight broadcast over channels)."""
    weight = weight.expand_as(pred)
    return (weight * (pred - target).abs()).sum() / (weight.sum() + eps)


def _gauss_kernel(channels: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype)
    k2 = torch.outer(k, k) / 256.0
    return k2.expand(channels, 1, 5, 5).contiguous()


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """Laplacian pyramid of (B, C, H, W) with a 5x5 binomial kernel (reflect padding)."""
    kernel = _gauss_kernel(x.shape[1], x.device, x.dtype)
    out = []
    cur = x
    for _ in range(levels - 1):
        blurred = F.conv2d(F.pad(cur, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])
        down = blurred[:, :, ::2, ::2]
        up = torch.zeros_like(cur)
        up[:, :, ::2, ::2] = down * 4.0
        up = F.conv2d(F.pad(up, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])
        out.append(cur - up)
        cur = down
        if min(cur.shape[-2:]) < 3:
            break
    out.append(cur)
    return out


def laplacian_loss(pred: Tensor, target: Tensor, weight: Tensor, *, levels: int = 5) -> Tensor:
    """Sum over pyramid levels of 2^i-weighted L1 between Laplacian pyramids, masked by ``weight``."""
    pp = laplacian_pyramid(pred * weight, levels)
    tp = laplacian_pyramid(target * weight, levels)
    return sum((2 ** i) * F.l1_loss(a, b) for i, (a, b) in enumerate(zip(pp, tp)))


def composition_loss(pred: Tensor, fg: Tensor, bg: Tensor, image: Tensor, weight: Tensor) -> Tensor:
    """L1 between the image and pred * fg + (1 - pred) * bg over the weighted region."""
    comp = pred * fg + (1.0 - pred) * bg
    return weighted_l1(comp, image, weight)


class MattingLoss(nn.Module):
    """Weighted sum of the matting losses; returns the total and its parts.

    Args:
        l1: weight of the unknown-region L1 loss.
        lap: weight of the Laplacian-pyramid loss.
        comp: weight of the composition loss (used only when the batch has ``fg`` and ``bg``).
    """

    def __init__(self, *, l1: float = 1.0, lap: float = 1.0, comp: float = 0.5) -> None:
        super().__init__()
        self.l1, self.lap, self.comp = l1, lap, comp

    def forward(self, pred: Tensor, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        alpha = batch["alpha"]
        weight = _unknown_weight(batch["trimap_onehot"])
        if float(weight.sum()) == 0.0:  # no unknown pixels: score the whole image
            weight = torch.ones_like(weight)
        parts: Dict[str, Tensor] = {"l1": weighted_l1(pred, alpha, weight)}
        if self.lap:
            parts["lap"] = laplacian_loss(pred, alpha, weight)
        fg: Optional[Tensor] = batch.get("fg")
        bg: Optional[Tensor] = batch.get("bg")
        if self.comp and fg is not None and bg is not None:
            parts["comp"] = composition_loss(pred, fg, bg, batch["image"], weight)
        total = self.l1 * parts["l1"] + self.lap * parts.get("lap", 0.0) + self.comp * parts.get("comp", 0.0)
        parts["loss"] = total
        return parts
