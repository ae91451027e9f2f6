"""A dilated depthwise convolution whose CPU backward runs as an undilated one.

On some CPUs (the 2-core AMD EPYC without AVX-512 of the project's later sessions) oneDNN's backward
of a *dilated* depthwise convolution is 4-20x slower than its forward (12 x 16 x 12 x 12 with a 5x5 kernel,
dilation 2, 0.52 ms for the input gradient and 1.9 ms for the weight gradient against 0.13 ms for the
forward; at 4 x 16 x 128 x 128, 14 and 38 ms against 1.7; ``experiments/bench_dilated.py`` compares
the two backwards, about 2x apart there). A stride-1 convolution of dilation ``d``
is, on each of the ``d * d`` phases of the image (the pixels ``(i::d, j::d)``), an undilated
convolution of the phase with padding ``padding / d``. The phases go side by side as channels, so the
backward becomes one undilated depthwise backward with the kernel repeated per phase; the weight
gradient is the sum of the per-phase ones. In channels_last the phases are phase-major channel blocks
(``(N, H, W, C)`` memory read as ``(N, H/d, d, W/d, d, C)``, one copy with runs of ``C`` floats; 1.16-2.4x
faster than ``pixel_unshuffle`` for the whole backward, the same floats bit for bit, since a depthwise
convolution computes each channel alone); in the contiguous format ``pixel_unshuffle`` (channel-major).

What stays exactly the same: the forward (the same ``F.conv2d`` call). The gradients sum the same
products in another order (relative differences of about 1e-6; the input gradient is often
identical bit for bit). It applies on the CPU, in training (gradient enabled, no autocast, not
traced, compiled or exported), to stride-1 depthwise convolutions with ``dilation > 1`` whose padding
is ``dilation * (kernel - 1) / 2`` (the DARTS ``dil_conv``); any other convolution, and every one on
CUDA, runs ``nn.Conv2d`` unchanged. Parameter names and shapes are ``nn.Conv2d``'s, so state dicts
load either way.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DilatedDepthwiseConv2d", "dilated_depthwise_conv2d"]


class _PhaseBackward(torch.autograd.Function):
    """``F.conv2d(x, w, padding=p, dilation=d, groups=C)``, backward through the ``d * d`` phases."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, padding: int, dilation: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, w, padding=padding, dilation=dilation, groups=w.shape[0])

    @staticmethod
    def backward(ctx, gy: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor], None, None]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        d, C, k = ctx.dilation, w.shape[0], w.shape[-1]
        H, W = x.shape[-2:]
        eh, ew = -H % d, -W % d  # zero rows/columns that make the sizes multiples of d: they lie
        if eh or ew:              # inside the convolution's own zero padding (padding >= d - 1)
            x, gy = F.pad(x, (0, ew, 0, eh)), F.pad(gy, (0, ew, 0, eh))
        last = x.is_contiguous(memory_format=torch.channels_last)
        if last:  # phase-major channels: p * C + c
            xs, gys, ws = _phases(x, d), _phases(gy, d), w.repeat(d * d, 1, 1, 1)    # (N, d*d*C, H/d, W/d)
        else:     # channel-major: c * d * d + p
            xs, gys = (F.pixel_unshuffle(v, d).contiguous() for v in (x, gy))      # (N, C*d*d, H/d, W/d)
            ws = w.repeat_interleave(d * d, dim=0)                                   # (C*d*d, 1, k, k)
        p = ctx.padding // d
        gxs, gws, _ = torch.ops.aten.convolution_backward(
            gys, xs, ws, None, [1, 1], [p, p], [1, 1], False, [0, 0], C * d * d,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
        gx = gw = None
        if gxs is not None:
            gx = _unphases(gxs, d) if last else F.pixel_shuffle(gxs, d)             # (N, C, H + eh, W + ew)
            gx = gx[..., :H, :W].contiguous(memory_format=torch.channels_last if last else torch.contiguous_format)
        if gws is not None:
            per_phase = gws.view(d * d, C, k, k).transpose(0, 1) if last else gws.view(C, d * d, k, k)
            gw = per_phase.sum(1, keepdim=True)                                      # (C, 1, k, k)
        return gx, gw, None, None


def _phases(x: Tensor, d: int) -> Tensor:
    """(N, C, H, W) channels_last -> (N, d*d*C, H/d, W/d) channels_last, channel ``(dy * d + dx) * C + c``
    holding ``x[:, c, dy::d, dx::d]``."""
    N, C, H, W = x.shape
    h, w = H // d, W // d
    y = x.permute(0, 2, 3, 1).reshape(N, h, d, w, d, C).transpose(2, 3)  # (N, h, w, dy, dx, C)
    return y.reshape(N, h, w, d * d * C).permute(0, 3, 1, 2)


def _unphases(y: Tensor, d: int) -> Tensor:
    """The inverse of :func:`_phases`: (N, d*d*C, h, w) channels_last -> (N, C, h*d, w*d) channels_last."""
    N, ddC, h, w = y.shape
    z = y.permute(0, 2, 3, 1).reshape(N, h, w, d, d, ddC // (d * d)).transpose(2, 3)  # (N, h, dy, w, dx, C)
    return z.reshape(N, h * d, w * d, ddC // (d * d)).permute(0, 3, 1, 2)


def _applies(x: Tensor, w: Tensor, *, stride, padding, dilation, groups: int) -> bool:
    d = dilation[0]
    return (x.device.type == "cpu" and x.dim() == 4 and torch.is_grad_enabled()
            and (x.requires_grad or w.requires_grad) and x.dtype == w.dtype
            and not torch.is_autocast_enabled("cpu")
            and not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
                     or torch.onnx.is_in_onnx_export())
            and tuple(stride) == (1, 1) and d > 1 and tuple(dilation) == (d, d)
            and w.shape[0] == groups == x.shape[1] and w.shape[1] == 1
            and w.shape[-1] == w.shape[-2] >= 3 and w.shape[-1] % 2 == 1
            and isinstance(padding, (tuple, list)) and tuple(padding) == (d * (w.shape[-1] - 1) // 2,) * 2)


def dilated_depthwise_conv2d(x: Tensor, w: Tensor, *, padding: int, dilation: int) -> Tensor:
    """``F.conv2d(x, w, padding=padding, dilation=dilation, groups=C)`` (no bias) with the phase
    backward where it applies (module docstring), else exactly that call."""
    if _applies(x, w, stride=(1, 1), padding=(padding, padding), dilation=(dilation, dilation), groups=x.shape[1]):
        return _PhaseBackward.apply(x, w, padding, dilation)
    return F.conv2d(x, w, padding=padding, dilation=dilation, groups=x.shape[1])


class DilatedDepthwiseConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters, names and state dict) whose CPU backward runs through the
    phases where that applies (module docstring)."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if bias is None and self.padding_mode == "zeros" and _applies(
                input, weight, stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups):
            return _PhaseBackward.apply(input, weight, self.padding[0], self.dilation[0])
        return super()._conv_forward(input, weight, bias)
