"""Matting losses in GCA Matting's conventions (Li & Lu, AAAI 2020; AEMatter trains with the same):
L1 over the unknown region, Laplacian-pyramid loss, composition loss. All take (B, 1, H, W) alphas and
a (B, 3, H, W) one-hot trimap [bg, unknown, fg].

Each term is a weighted L1: the sum of ``weight * |a - b|`` (over every channel) divided by the sum of
the (one-channel) weight, so the composition loss sums its three colour channels. The Laplacian loss
builds five band-pass levels of pred and target (5x5 binomial kernel, reflect padding; no low-pass
remainder), weights level ``i`` by the unknown region subsampled ``2^i`` times, and sums the levels'
weighted L1 times ``2^i``. (Until 2026-12-06 it masked the difference before the pyramid, averaged over
all pixels and added the low-pass remainder at weight 16, and the composition loss averaged its
channels: a loss mostly of the blurred error, scaled by the unknown region's size.)"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: The losses' definition, stored in search and retrain checkpoints ("" before GCA's conventions)
LOSS_VERSION = "gca-2026-12-06"


def _unknown_weight(trimap_onehot: Tensor) -> Tensor:
    """(B, 3, H, W) one-hot -> (B, 1, H, W) weight of the unknown region."""
    return trimap_onehot[:, 1:2]


def weighted_l1(pred: Tensor, target: Tensor, weight: Tensor, eps: float = 1e-8) -> Tensor:
    """``sum(weight * |pred - target|) / sum(weight)``: (B, C, H, W) against a (B, 1, H, W) weight,
    broadcast over the channels and counted once (GCA's convention: C channels sum)."""
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
    """The ``levels`` band-pass levels of (B, C, H, W), finest first: ``cur - up(down(blur(cur)))`` with
    a 5x5 binomial kernel and reflect padding, then ``cur = down(blur(cur))``; the low-pass remainder
    is not a level. Fewer levels where the image gets too small for the kernel (under 3 pixels)."""
    out = []
    cur = x
    for _ in range(levels):
        if min(cur.shape[-2:]) < 3:
            break
        down = _blur(cur)[:, :, ::2, ::2]  # (B, C, ceil(H / 2), ceil(W / 2))
        up = torch.zeros_like(cur)
        up[:, :, ::2, ::2] = down * 4.0
        out.append(cur - _blur(up))
        cur = down
    return out


def laplacian_loss(pred: Tensor, target: Tensor, weight: Tensor, *, levels: int = 5) -> Tensor:
    """``sum_i 2^i * weighted_l1(L_i(pred), L_i(target), weight[::2^i, ::2^i])`` over the band-pass
    levels ``L_i`` (module docstring).

    The pyramid is linear, so the difference of the two pyramids is the pyramid of the difference:
    one pyramid is built, not two (the same loss up to float rounding).
    """
    total: Tensor = pred.new_zeros(())
    w = weight
    for i, level in enumerate(laplacian_pyramid(pred - target, levels)):
        total = total + (2 ** i) * (w * level.abs()).sum() / (w.sum() + 1e-8)
        w = w[:, :, ::2, ::2]  # the weight of the next, coarser level
    return total


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
