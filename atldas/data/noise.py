"""Smooth noise images: the inputs of the planted-architecture task (:mod:`atldas.models.planted`).

An image is a weighted sum of independent Gaussian white-noise fields, each low-pass filtered by a
periodic Gaussian of one scale (``sigmas``, in pixels; ``0`` keeps the field white), every field
normalised to unit variance before the sum and every (image, channel) normalised to zero mean and
unit variance after it. The fine scale makes the pixels a few steps apart nearly independent (so
the receptive field of a network matters), the coarse one gives structure a 3x3 window cannot see.

Everything is vectorised (one FFT per scale for the whole batch) and deterministic: the images
depend only on ``(n, channels, size, seed, sigmas, weights)``, through a private
``torch.Generator`` seeded with ``seed`` (the global RNG is not touched).

    >>> x = smooth_noise(256, channels=3, size=16, seed=0)       # (256, 3, 16, 16) float32
    >>> x.mean((2, 3)).abs().max() < 1e-5, x.std((2, 3), unbiased=False).sub(1).abs().max() < 1e-4
    (tensor(True), tensor(True))

The filtering is circular (the images tile), so there is no border artefact to learn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from atldas.errors import ConfigError

__all__ = ["gaussian_transfer", "smooth_noise"]


def gaussian_transfer(size: int, sigma: float) -> Tensor:
    """(size, size // 2 + 1) real transfer function of a periodic Gaussian blur of std ``sigma`` px.

    For ``torch.fft.rfft2`` of a ``size x size`` image: ``exp(-2 pi^2 sigma^2 |f|^2)``, f in cycles/px.
    ``sigma = 0`` gives all ones (no filtering).
    """
    fy = torch.fft.fftfreq(size, dtype=torch.float64)  # (size,)
    fx = torch.fft.rfftfreq(size, dtype=torch.float64)  # (size // 2 + 1,)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2  # (size, size // 2 + 1)
    return torch.exp(-2.0 * math.pi ** 2 * sigma ** 2 * f2)


def smooth_noise(n: int, *, channels: int, size: int, seed: int,
                 sigmas: Sequence[float] = (0.7, 2.5), weights: Sequence[float] | None = None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` smooth noise images, ``(n, channels, size, size)``, deterministic per ``seed``.

    Args:
        n: number of images.
        channels: channels per image (independent fields).
        size: height and width in pixels.
        seed: seed of the private generator; the same arguments give the same tensor bit for bit.
        sigmas: the low-pass scales in pixels (Gaussian std; 0 = white). One independent field each.
        weights: standard deviation of each scale's field in the sum (default: all equal).
        dtype: output dtype (the filtering is done in float64).

    Returns:
        (n, channels, size, size) tensor; every image channel has zero mean and unit variance
        (population variance over its ``size * size`` pixels).
    """
    if n < 1 or channels < 1 or size < 2:
        raise ConfigError(f"smooth_noise needs n >= 1, channels >= 1, size >= 2; got "
                          f"n={n}, channels={channels}, size={size}")
    sigmas = [float(s) for s in sigmas]
    if not sigmas or any(s < 0 for s in sigmas):
        raise ConfigError(f"smooth_noise sigmas must be a non-empty list of values >= 0, got {sigmas}")
    weights = [1.0] * len(sigmas) if weights is None else [float(w) for w in weights]
    if len(weights) != len(sigmas):
        raise ConfigError(f"smooth_noise: {len(weights)} weights for {len(sigmas)} sigmas")
    g = torch.Generator().manual_seed(int(seed))
    # all scales' white noise in one draw: (S, n, channels, size, size)
    white = torch.randn((len(sigmas), n, channels, size, size), generator=g, dtype=torch.float64)
    spectrum = torch.fft.rfft2(white)  # (S, n, C, size, size // 2 + 1) complex
    transfer = torch.stack([gaussian_transfer(size, s) for s in sigmas])  # (S, size, size // 2 + 1)
    fields = torch.fft.irfft2(spectrum * transfer[:, None, None], s=(size, size))  # (S, n, C, size, size)
    # unit variance per scale: the expected variance of filtered unit white noise is mean(|H|^2)
    # over the full spectrum; dividing by it (not by each field's sample std) keeps the weights exact
    full = torch.cat([transfer, transfer[:, :, 1:(size + 1) // 2].flip(-1)], dim=-1)  # (S, size, size)
    field_std = full.pow(2).mean(dim=(1, 2)).sqrt()  # (S,)
    w = torch.tensor(weights, dtype=torch.float64) / field_std  # (S,)
    x = (fields * w[:, None, None, None, None]).sum(0)  # (n, C, size, size)
    x = x - x.mean(dim=(2, 3), keepdim=True)
    x = x / x.std(dim=(2, 3), keepdim=True, unbiased=False).clamp_min(1e-12)
    return x.to(dtype)
