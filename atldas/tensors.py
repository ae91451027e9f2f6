"""Small tensor helpers shared by networks, tasks and the run loops (values layer: torch only)."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["centred_pad", "batch_to", "matting_input"]


def centred_pad(x: Tensor, multiple: int) -> Tuple[Tensor, Tuple[int, int, int, int]]:
    """Reflect-pad H and W to a multiple, split evenly (extra pixel at the bottom/right).

    Falls back to replicate padding on an axis too short to reflect (each axis on its own: a 3 x 500
    image is replicated in H and reflected in W).

    Returns:
        The padded tensor and ``(left, right, top, bottom)``.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if not any(pads):
        return x, pads
    if max(pads[0], pads[1]) < w and max(pads[2], pads[3]) < h:
        return F.pad(x, pads, mode="reflect"), pads
    for side, axis_pads in ((w, pads[:2] + (0, 0)), (h, (0, 0) + pads[2:])):
        if any(axis_pads):
            x = F.pad(x, axis_pads, mode="reflect" if max(axis_pads) < side else "replicate")
    return x, pads


def batch_to(batch: Mapping[str, Any], device: torch.device | str) -> Dict[str, Any]:
    """A collated batch's tensors on ``device`` as float32 (other values as they are)."""
    return {k: (v.to(device, non_blocking=True).float() if isinstance(v, Tensor) else v)
            for k, v in batch.items()}


def matting_input(batch: Mapping[str, Tensor]) -> Tensor:
    """A matting batch's network input: ``image`` (B, 3, H, W) and ``trimap_onehot`` (B, 3, H, W)
    -> ``(B, 6, H, W)``, RGB + one-hot trimap [bg, unknown, fg]."""
    return torch.cat([batch["image"], batch["trimap_onehot"]], dim=1)
