"""channels_last, the memory format atldas runs its convolutions in.

On the project's CPUs it makes training steps about 1.3x (fixed networks) to 1.6x (the search
supernet) faster and inference about 1.6x faster than the contiguous format
(experiments/bench_search.py, README "Measured figures"); on CUDA it is the format cuDNN's
tensor-core convolutions prefer under AMP (the one GPU check, on an H200, ran every path in it
and did not compare it with the contiguous format). Search and retrain turn it off with
``--set channels_last=false``.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor, nn

T = TypeVar("T", nn.Module, Tensor)


def channels_last(obj: T) -> T:
    """A module's 4-d parameters and buffers, or a 4-d tensor, in channels_last (anything else as is)."""
    if isinstance(obj, nn.Module):
        return obj.to(memory_format=torch.channels_last)
    if obj.dim() == 4:
        return obj.contiguous(memory_format=torch.channels_last)
    return obj
