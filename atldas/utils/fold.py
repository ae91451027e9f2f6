"""BatchNorm folded into the convolution before it, for inference.

In eval mode ``BN(conv(x)) = conv'(x)`` with ``w' = w * s`` and ``b' = (b - mean) * s + beta`` where
``s = gamma / sqrt(var + eps)``: one convolution with a bias instead of a convolution and a norm. Only
a ``Conv2d`` directly followed by a ``BatchNorm2d`` inside one ``nn.Sequential`` is folded (the layout of
every DARTS op and stem here); the BatchNorm becomes an ``Identity``. The network's parameter names
change, so fold a copy that serves inference, never a network whose ``state_dict`` is saved.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["fold_batchnorm"]


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = torch.rsqrt(bn.running_var + bn.eps)  # (C_out,)
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    shift = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        out.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))  # (C_out, C_in / groups, k, k)
        out.bias.copy_((bias - bn.running_mean) * scale + shift)
    out = out.to(device=conv.weight.device, dtype=conv.weight.dtype)
    if conv.weight.is_contiguous(memory_format=torch.channels_last):  # keep the network's layout
        out = out.to(memory_format=torch.channels_last)
    return out


@torch.no_grad()
def fold_batchnorm(net: nn.Module) -> int:
    """Fold every eval-mode ``Conv2d -> BatchNorm2d`` pair of ``nn.Sequential`` containers in ``net``,
    in place (module docstring). Returns the number folded; a network in training mode is refused
    (its BatchNorm uses batch statistics, which no convolution can hold)."""
    if net.training:
        raise ValueError("fold_batchnorm needs a network in eval mode (net.eval())")
    n = 0
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for k in range(len(seq) - 1):
            conv, bn = seq[k], seq[k + 1]
            if (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and bn.running_var is not None and conv.out_channels == bn.num_features):
                seq[k] = _folded(conv, bn)
                seq[k + 1] = nn.Identity()
                n += 1
    return n
