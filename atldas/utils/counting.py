"""The one MAC and parameter counter: torch's FlopCounterMode total / 2, and ``numel`` summed.

MACs count convolutions, linear layers and matmuls (attention included), one per multiply-add;
norms, pooling, activations and interpolation are not counted. Both work on the meta device (no
memory, no time): build the module under ``torch.device("meta")`` and pass meta inputs.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_macs_by_op", "count_params"]


def count_macs(module: nn.Module, *inputs: Tensor) -> int:
    """Multiply-accumulates of ``module(*inputs)`` (FlopCounterMode total / 2), without gradients."""
    return count_macs_by_op(module, *inputs)[0]


def count_macs_by_op(module: nn.Module, *inputs: Tensor, call=None) -> Tuple[int, Dict[str, int]]:
    """(total MACs, MACs per aten operator) of ``module(*inputs)``, or of ``call()`` when given."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*inputs) if call is None else call()
    by_op = {str(op): int(n) // 2 for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()) // 2, by_op


def count_params(module: nn.Module) -> int:
    """Number of parameter elements (``numel`` summed; buffers not included)."""
    return sum(p.numel() for p in module.parameters())
