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


#: The 5-tap binomial filter of the pyramid (the 5x5 kernel is its outer product / 256).
_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)


def _blur(x: Tensor) -> Tensor:
    """5x5 binomial blur of (B, C, H, W) with reflect padding, as two separable 5-tap passes (10
    multiply-adds per pixel instead of 25; the same sum up to float rounding)."""
    C = x.shape[1]
    k = torch.tensor(_TAPS, device=x.device, dtype=x.dtype) / 16.0
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 5, 1).expand(C, 1, 5, 1), groups=C)  # (B, C, H, W + 4)
    return F.conv2d(x, k.view(1, 1, 1, 5).expand(C, 1, 1, 5), groups=C)  # (B, C, H, W)


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """Laplacian pyramid of (B, C, H, W) with a 5x5 binomial kernel (reflect padding)."""
    out = []
    cur = x
    for _ in range(levels - 1):
        down = _blur(cur)[:, :, ::2, ::2]
        up = torch.zeros_like(cur)
        up[:, :, ::2, ::2] = down * 4.0
        out.append(cur - _blur(up))
        cur = down
        if min(cur.shape[-2:]) < 3:
            break
    out.append(cur)
    return out


def laplacian_loss(pred: Tensor, target: Tensor, weight: Tensor, *, levels: int = 5) -> Tensor:
    """Sum over pyramid levels of 2^i-weighted L1 between Laplacian pyramids, masked by ``weight``.

    The pyramid is linear, so the difference of the two pyramids is the pyramid of the difference:
    one pyramid is built, not two (the same loss up to float rounding).
    """
    levels_of_diff = laplacian_pyramid((pred - target) * weight, levels)
    return sum((2 ** i) * level.abs().mean() for i, level in enumerate(levels_of_diff))


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
