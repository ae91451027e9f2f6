"""Small tensor helpers shared by networks, tasks and the run loops (values layer: torch only)."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["centred_pad", "batch_to", "matting_input"]


def centred_pad(x: Tensor, multiple: int) -> Tuple[Tensor, Tuple[int, int, int, int]]:
    """Reflect-pad H and W to a multiple, split evenly (extra pixel at the bottom/right).

    Falls back to replicate padding where a side is too small to reflect.

    Returns:
        The padded tensor and ``(left, right, top, bottom)``.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if not any(pads):
        return x, pads
    mode = "reflect" if max(pads[0], pads[1]) < w and max(pads[2], pads[3]) < h else "replicate"
    return F.pad(x, pads, mode=mode), pads


def batch_to(batch: Mapping[str, Any], device: torch.device | str) -> Dict[str, Any]:
    """A collated batch's tensors on ``device`` as float32 (other values as they are)."""
    return {k: (v.to(device, non_blocking=True).float() if isinstance(v, Tensor) else v)
            for k, v in batch.items()}


def matting_input(batch: Mapping[str, Tensor]) -> Tensor:
    """A matting batch's network input: ``image`` (B, 3, H, W) and ``trimap_onehot`` (B, 3, H, W)
    -> ``(B, 6, H, W)``, RGB + one-hot trimap [bg, unknown, fg]."""
    return torch.cat([batch["image"], batch["trimap_onehot"]], dim=1)
