"""Full-resolution inference of a trimap-based matting network: padding, tiling, trimap clamping.

The convention of matting.md, step by step (:func:`predict_alpha`):

1. network input = RGB in [0, 1] + one-hot trimap ``[bg, unknown, fg]``: ``(1, 6, H, W)``;
2. reflect-pad to a multiple of 32, centred (extra pixel bottom/right; replicate where a side is
   too small to reflect: :func:`atldas.tensors.centred_pad`);
3. predict (input in channels_last: :mod:`atldas.utils.memory_format`), crop back to ``(H, W)``,
   clamp to [0, 1];
4. clamp by the trimap: unknown keeps the prediction, foreground = 1, background = 0.

Tiling (``tile=N``) bounds memory on large images. The *padded* image is cut into N x N tiles
whose origins are multiples of 32 (so every tile sees the same stride-32 sampling grid as the whole
image) and which overlap by at least ``overlap`` pixels; each tile is predicted on its own and the
predictions are blended with feathered weights: along a side shared with a neighbour, a tile's
weight is 0 over the outer quarter of the overlap, ramps linearly to 1 over the middle half and is 1
beyond; image borders get weight 1. What that guarantees:

- when the padded image fits one tile (both sides <= N), tiling does nothing: the result is the
  untiled one, bit for bit;
- for a network whose receptive field reaches at most ``overlap / 4`` pixels (convolutions,
  pointwise norms such as eval-mode BatchNorm, local up/down-sampling; stride <= 32), tiled equals
  untiled up to floating-point rounding (about 1e-6): every pixel with a non-zero weight in a tile
  sees exactly the input it sees in the whole image;
- networks with image-wide context (GroupNorm statistics, global/pyramid pooling, attention across a
  whole axis: CheapMatting and AEMatter both) give close but not equal results; the blend hides
  seams, and a larger ``overlap`` and ``tile`` bring the result closer to the untiled one.

Foreground colours for RGBA cut-outs come from pymatting's multi-level foreground estimation
(:func:`estimate_foreground`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Optional, Tuple

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from atldas.data.io import normalize_trimap
from atldas.data.trimap import BG, FG, one_hot_trimap
from atldas.errors import ConfigError, DataError
from atldas.models.base import MattingModel
from atldas.tensors import centred_pad
from atldas.utils.memory_format import channels_last

log = logging.getLogger(__name__)

__all__ = ["PAD_MULTIPLE", "DEFAULT_OVERLAP", "predict_alpha", "clamp_by_trimap", "network_input",
           "tile_origins", "tile_weights", "check_tiling", "estimate_foreground", "image_wide_layers",
           "cpu_has_bf16", "check_amp"]

#: Inputs are padded to a multiple of this (the networks downsample 5 times).
PAD_MULTIPLE = 32
#: Default overlap of neighbouring tiles, pixels.
DEFAULT_OVERLAP = 64


def network_input(image: np.ndarray, trimap: np.ndarray) -> Tensor:
    """``(H, W, 3)`` float RGB in [0, 1] and ``(H, W)`` uint8 trimap -> ``(1, 6, H, W)`` float32.

    A uint8 image is divided by 255. Raises DataError for wrong shapes or different sizes.
    """
    img = np.asarray(image)
    tri = np.asarray(trimap)
    if img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"image must be (H, W, 3) RGB, got shape {tuple(img.shape)}")
    if tri.ndim != 2:
        raise DataError(f"trimap must be (H, W), got shape {tuple(tri.shape)}")
    if img.shape[:2] != tri.shape:
        raise DataError(f"image is {img.shape[1]}x{img.shape[0]} but its trimap is {tri.shape[1]}x{tri.shape[0]} "
                        "(width x height); give them the same size")
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    rgb = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)  # (3, H, W)
    onehot = torch.from_numpy(one_hot_trimap(tri))  # (3, H, W)
    return torch.cat([rgb, onehot], 0).unsqueeze(0)  # (1, 6, H, W)


def clamp_by_trimap(alpha: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1], then background (0) -> 0 and foreground (255) -> 1; unknown keeps ``alpha``."""
    a = np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)
    tri = np.asarray(trimap)
    a = np.where(tri == FG, np.float32(1.0), a)
    return np.where(tri == BG, np.float32(0.0), a).astype(np.float32)


def tile_origins(size: int, tile: int, step: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``[0, size)`` with a stride of ``step``;
    the last tile ends at ``size``. One tile at 0 when ``size <= tile``."""
    if size <= tile:
        return [0]
    origins = list(range(0, size - tile, step))
    origins.append(size - tile)
    return origins


def _ramp(length: int, *, start_inner: bool, end_inner: bool, overlap: int) -> Tensor:
    """1-D weights of a tile of ``length`` pixels (see the module docstring)."""
    w = torch.ones(length, dtype=torch.float32)
    if overlap <= 0:
        return w
    margin = overlap // 4
    width = max(overlap - 2 * margin, 1)
    d = torch.arange(length, dtype=torch.float32) + 0.5  # distance of pixel centres from the start edge
    ramp_up = ((d - margin) / width).clamp(0.0, 1.0)
    if start_inner:
        w = torch.minimum(w, ramp_up)
    if end_inner:
        w = torch.minimum(w, ramp_up.flip(0))
    return w


def tile_weights(size: Tuple[int, int], origin: Tuple[int, int], tile: Tuple[int, int], overlap: int) -> Tensor:
    """``(th, tw)`` blending weights of the tile at ``origin`` in a padded image of ``size``."""
    (H, W), (y0, x0), (th, tw) = size, origin, tile
    wy = _ramp(th, start_inner=y0 > 0, end_inner=y0 + th < H, overlap=overlap)
    wx = _ramp(tw, start_inner=x0 > 0, end_inner=x0 + tw < W, overlap=overlap)
    return wy[:, None] * wx[None, :]


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); without it autocast emulates it."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def check_amp(model: MattingModel, device: torch.device, amp: bool) -> None:
    """``--amp`` of predict and eval: ConfigError for a model it would not change (an ONNX file, which
    onnxruntime runs in float32; a classical solver); a warning when the CPU would emulate bf16 (many
    times slower than float32)."""
    if not amp:
        return
    if model.kind == "onnx" or not model.learned:
        what = "an ONNX file, which onnxruntime runs in float32" if model.kind == "onnx" else "not a network"
        raise ConfigError(f"--amp: {model.name} is {what}; --amp would change nothing: drop it")
    if device.type == "cpu" and not cpu_has_bf16():
        log.warning("--amp: this CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 is emulated, many "
                    "times slower than float32 (14.5x at 512^2: experiments/MEASURED.md); drop --amp")


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _run(model: MattingModel, net: nn.Module, x: Tensor, device: torch.device, amp: bool) -> Tensor:
    """``(1, 6, h, w)`` on the CPU -> ``(h, w)`` float32 prediction on the CPU."""
    with _autocast(device, amp):
        y = model.forward(net, channels_last(x.to(device)))  # (1, 1, h, w)
    if y.dim() != 4 or y.shape[:2] != (1, 1) or y.shape[-2:] != x.shape[-2:]:
        raise ConfigError(f"{model.name}: expected a (1, 1, {x.shape[-2]}, {x.shape[-1]}) alpha, "
                           f"got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):  # written as 0 or scored, a broken network would pass for a bad one
        bad = int((~torch.isfinite(y)).sum())
        raise DataError(f"{model.name}: the network's output has {bad} NaN or infinite value(s) on a "
                        f"{x.shape[-2]}x{x.shape[-1]} input; its weights are broken (a diverged training?)"
                        + (" or its values overflow in reduced precision: drop --amp" if amp else ""))
    return y[0, 0].float().cpu()


#: Layers whose output at a pixel depends on the whole input (statistics or pooling over the image):
#: with them, a tile does not see what the whole image sees.
_IMAGE_WIDE = (nn.GroupNorm, nn.InstanceNorm2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.MultiheadAttention)


def image_wide_layers(net: nn.Module) -> list[str]:
    """Names of the layer types in ``net`` with image-wide context (tiling is not exact with them); an
    exported ONNX graph (:class:`~atldas.models.onnx_net.OnnxNet`) gives those its file records."""
    recorded = getattr(net, "image_wide", None)
    if recorded is not None:
        return list(recorded)
    return sorted({type(m).__name__ for m in net.modules() if isinstance(m, _IMAGE_WIDE)})


def check_tiling(tile: int, overlap: int) -> int:
    """Validate the tiling; returns the stride between tile origins (a multiple of 32)."""
    if tile < 2 * PAD_MULTIPLE or tile % PAD_MULTIPLE:
        raise ConfigError(f"tile size (--tile) must be a multiple of {PAD_MULTIPLE} and at least "
                          f"{2 * PAD_MULTIPLE}, got {tile}")
    if overlap < 0 or overlap > tile - PAD_MULTIPLE:
        raise ConfigError(f"tile overlap (--overlap) must be between 0 and tile - {PAD_MULTIPLE} = "
                          f"{tile - PAD_MULTIPLE}, got {overlap}")
    return (tile - overlap) // PAD_MULTIPLE * PAD_MULTIPLE


def _predict_tiled(model: MattingModel, net: nn.Module, x: Tensor, device: torch.device, amp: bool,
                   tile: int, overlap: int) -> Tensor:
    """``(1, 6, H, W)`` padded input (H, W multiples of 32) -> ``(H, W)`` blended prediction."""
    step = check_tiling(tile, overlap)
    H, W = x.shape[-2:]
    ys, xs = tile_origins(H, tile, step), tile_origins(W, tile, step)
    if len(ys) == 1 and len(xs) == 1:
        return _run(model, net, x, device, amp)
    acc = torch.zeros(H, W, dtype=torch.float32)
    wsum = torch.zeros(H, W, dtype=torch.float32)
    ov = tile - step  # actual overlap of regular neighbours (>= the requested one)
    for y0 in ys:
        for x0 in xs:
            th, tw = min(tile, H), min(tile, W)
            pred = _run(model, net, x[:, :, y0:y0 + th, x0:x0 + tw], device, amp)  # (th, tw)
            w = tile_weights((H, W), (y0, x0), (th, tw), ov)
            acc[y0:y0 + th, x0:x0 + tw] += w * pred
            wsum[y0:y0 + th, x0:x0 + tw] += w
    return acc / wsum


def network_side(width: int, height: int, *, tile: Optional[int] = None, max_size: Optional[int] = None) -> int:
    """The shorter side of the inputs the network runs for a ``width`` x ``height`` image in
    :func:`predict_alpha`: scaled to ``max_size``, padded to a multiple of :data:`PAD_MULTIPLE`, and cut
    into tiles of at most ``tile``."""
    h, w = int(height), int(width)
    if max_size is not None and max(h, w) > max_size:
        f = max_size / max(h, w)
        h, w = max(1, round(h * f)), max(1, round(w * f))
    h, w = -(-h // PAD_MULTIPLE) * PAD_MULTIPLE, -(-w // PAD_MULTIPLE) * PAD_MULTIPLE
    if tile is not None:
        h, w = min(h, int(tile)), min(w, int(tile))
    return min(h, w)


@torch.inference_mode()
def predict_alpha(model: MattingModel, net: nn.Module, image: np.ndarray, trimap: np.ndarray, *,
                  device: str | torch.device = "cpu", tile: Optional[int] = None,
                  overlap: int = DEFAULT_OVERLAP, amp: bool = False, max_size: Optional[int] = None) -> np.ndarray:
    """Alpha matte of one image at full resolution.

    Args:
        model: the resolved MODEL (its ``forward`` runs ``net`` on the 6-channel input).
        net: the network, already on ``device``; it runs in eval mode (its mode is restored after).
        image: ``(H, W, 3)`` RGB, float in [0, 1] (uint8 is divided by 255).
        trimap: ``(H, W)`` uint8, 0 background / 128 unknown / 255 foreground (near-greys are mapped
            as the readers map them).
        device: where the network runs.
        tile: tile side in pixels (a multiple of 32, >= 64) to bound memory on large images; None
            predicts the whole (padded) image at once. See the module docstring for what tiling
            guarantees.
        overlap: minimum overlap of neighbouring tiles in pixels (<= tile - 32).
        amp: autocast (bfloat16 on the CPU, float16 on CUDA).
        max_size: when the image's longer side exceeds it, predict on a copy scaled to that side
            (image by area averaging, trimap by nearest neighbour), upsample the alpha bilinearly and
            clamp it by the full-resolution trimap: memory and time of the smaller image, exact known
            regions, and an unknown region as detailed as the smaller image allows (its cost in SAD is
            in the README). None: full resolution.

    Returns:
        ``(H, W)`` float32 alpha in [0, 1], clamped by the trimap.

    Raises:
        DataError: wrong shapes or image and trimap of different sizes.
        ConfigError: an invalid tiling.
    """
    tri, _ = normalize_trimap(np.asarray(trimap))
    if max_size is not None and max(tri.shape) > max_size:
        H, W = tri.shape
        f = max_size / max(H, W)
        hs, ws = max(1, round(H * f)), max(1, round(W * f))
        img = np.asarray(image)
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32, copy=False)
        small = cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA)  # (hs, ws, 3)
        small_tri = cv2.resize(tri, (ws, hs), interpolation=cv2.INTER_NEAREST)  # (hs, ws)
        a = predict_alpha(model, net, small, small_tri, device=device, tile=tile, overlap=overlap, amp=amp)
        return clamp_by_trimap(cv2.resize(a, (W, H), interpolation=cv2.INTER_LINEAR), tri)  # (H, W)
    x = network_input(image, tri)  # (1, 6, H, W)
    H, W = x.shape[-2:]
    dev = torch.device(device)
    xp, (left, _, top, _) = centred_pad(x, PAD_MULTIPLE)  # (1, 6, Hp, Wp), multiples of 32
    was_training = net.training
    net.eval()
    try:
        if tile is None:
            pred = _run(model, net, xp, dev, amp)  # (Hp, Wp)
        else:
            pred = _predict_tiled(model, net, xp, dev, amp, int(tile), int(overlap))  # (Hp, Wp)
    finally:
        net.train(was_training)
    alpha = pred[top:top + H, left:left + W].numpy()  # (H, W)
    return clamp_by_trimap(alpha, tri)


def estimate_foreground(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Foreground colours for a cut-out: pymatting's ``estimate_foreground_ml`` (Germer et al. 2020).

    Args:
        image: ``(H, W, 3)`` RGB float in [0, 1].
        alpha: ``(H, W)`` float in [0, 1].

    Returns:
        ``(H, W, 3)`` float32 foreground in [0, 1]; stack it with ``alpha`` for an RGBA cut-out.
    """
    from pymatting import estimate_foreground_ml  # lazy: pymatting compiles with numba on import

    img = np.ascontiguousarray(image, dtype=np.float64)
    a = np.ascontiguousarray(alpha, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != a.shape:
        raise DataError(f"estimate_foreground needs (H, W, 3) and (H, W), got {img.shape} and {a.shape}")
    if max(img.shape[:2]) < 2:  # pymatting's level count divides by log(size): one pixel is its own colour
        return np.clip(img, 0.0, 1.0).astype(np.float32)
    fg = estimate_foreground_ml(img, a)
    return np.clip(np.asarray(fg, dtype=np.float32), 0.0, 1.0)

