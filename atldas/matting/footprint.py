"""Memory a matting network needs for one image, estimated before the image is allocated.

:func:`forward_bytes_per_pixel` runs the network once on a small probe input and tracks the module
outputs alive at each moment (a weak reference on every output frees its bytes when the tensor
dies): the peak of that live set, per input pixel, scales to any size, because the activations of a
fully convolutional network grow with the pixel count. A classical method declares its own figure
(``BYTES_PER_PIXEL`` on the module). :func:`predict_bytes` adds the whole-image buffers of
:func:`~atldas.matting.inference.predict_alpha` (input, padding, output, and with tiling the blend
accumulators). Commands compare the estimate with :func:`atldas.utils.memory.available_bytes` and
refuse with one line instead of dying in the allocator.

Measured against the growth of the process's peak resident memory over one ``predict_alpha`` (one
thread, fp32): ``cheapmatting`` 0.70 GiB estimated / 0.59 GiB used at 1024^2, 2.70 / 2.04 GiB at 2048^2;
``aematter_tiny`` 0.58 / 0.60 GiB and 2.27 / 2.29 GiB; ``cnn_baseline_tiny`` 0.31 / 0.27 GiB at 1024^2.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from atldas.models.base import MattingModel

__all__ = ["forward_bytes_per_pixel", "predict_bytes", "PROBE", "SAFETY"]

#: Side of the probe input (a multiple of 32).
PROBE = 128
#: Factor on the tracked peak for what the tracking does not see (workspaces, allocator slack).
SAFETY = 2.0
#: Bytes per pixel of the whole-image buffers of one prediction: RGB float32 (12), one-hot input and
#: its padded copy (2 x 24), the prediction and the trimap-clamped alpha (8), the trimap (1).
BUFFER_BYTES = 12 + 48 + 8 + 1
#: Extra bytes per pixel with tiling: the blend's sum and weight accumulators (float32 each).
TILE_BYTES = 8
#: Bytes per pixel of the RGBA cut-out (pymatting's multi-level foreground estimate, float64 levels).
CUTOUT_BYTES = 120

def _tensors(obj: Any):
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


@torch.inference_mode()
def forward_bytes_per_pixel(model: MattingModel, net: nn.Module) -> float:
    """Peak bytes of live activations per input pixel during one CPU forward of ``net`` (times
    :data:`SAFETY`), measured on a ``PROBE`` x ``PROBE`` input (0.03-0.2 s on one thread).

    A module with a ``BYTES_PER_PIXEL`` attribute (a classical method that is not a network of
    modules) gives that figure instead.
    """
    declared = getattr(net, "BYTES_PER_PIXEL", None)
    if declared is not None:
        return float(declared)
    live = {"now": 0, "peak": 0}
    seen: Dict[int, int] = {}

    def release(ptr: int) -> None:
        live["now"] -= seen.pop(ptr, 0)

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        for t in _tensors(output):
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr in seen or ptr == 0:
                continue
            seen[ptr] = storage.nbytes()
            live["now"] += seen[ptr]
            live["peak"] = max(live["peak"], live["now"])
            weakref.finalize(t, release, ptr)

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    was_training = net.training
    try:
        net.eval()
        x = torch.zeros(1, 6, PROBE, PROBE)  # RGB 0 + one-hot trimap [bg, unknown, fg]
        q = PROBE // 4
        x[:, 3, :, :q] = 1.0  # background on the left, foreground on the right, unknown between:
        x[:, 4, :, q:-q] = 1.0  # a method that reads the trimap works as on a photo
        x[:, 5, :, -q:] = 1.0
        y = model.forward(net, x)
        del y
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return SAFETY * (live["peak"] + x.numel() * x.element_size()) / (PROBE * PROBE)


def predict_bytes(model: MattingModel, net: nn.Module, height: int, width: int, *, tile: Optional[int] = None,
                  cutout: bool = False, max_size: Optional[int] = None) -> float:
    """Estimated peak bytes of predicting one ``height`` x ``width`` image (see the module docstring);
    with ``max_size`` (predict's scaled copy) the network runs on the copy, the buffers of both count."""
    hp, wp = (math.ceil(s / 32) * 32 for s in (height, width))
    pixels = hp * wp
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    total = weights + BUFFER_BYTES * pixels
    if max_size is not None and max(height, width) > max_size:
        f = max_size / max(height, width)
        hp, wp = (math.ceil(max(1, round(s * f)) / 32) * 32 for s in (height, width))
        total += BUFFER_BYTES * hp * wp
    run = min(hp, tile or hp) * min(wp, tile or wp)
    total += forward_bytes_per_pixel(model, net) * run
    if tile:
        total += TILE_BYTES * hp * wp
    if cutout:
        total += CUTOUT_BYTES * pixels
    return float(total)
