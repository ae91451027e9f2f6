"""Trimaps: generation from alpha by random erosion, and the one-hot encoding networks take.

Convention (matting.md): 0 background, 128 unknown, 255 foreground; one-hot channel order
[background, unknown, foreground].
"""

from __future__ import annotations

import cv2
import numpy as np

BG, UNKNOWN, FG = 0, 128, 255


def erode_mask(mask: np.ndarray, diameter: int) -> np.ndarray:
    """Erode a boolean mask with the elliptical ``diameter`` x ``diameter`` kernel (GCA convention).

    Pixels outside the image count as inside the mask (OpenCV's default border for erosion).
    """
    if diameter <= 1:
        return mask.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter, diameter))
    return cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


def trimap_from_alpha(alpha: np.ndarray, *, rng: np.random.Generator, k_min: int = 1,
                      k_max: int = 30) -> np.ndarray:
    """Trimap from a float matte: erode fg (alpha == 1) and bg (alpha == 0) separately.

    Args:
        alpha: (H, W) float matte in [0, 1].
        rng: random generator; the two kernel sizes are drawn uniformly from [k_min, k_max].
        k_min: smallest kernel size.
        k_max: largest kernel size.

    Returns:
        (H, W) uint8 trimap in {0, 128, 255}.
    """
    a = np.asarray(alpha)
    k_fg, k_bg = (int(k) for k in rng.integers(k_min, k_max + 1, size=2))
    fg = erode_mask(a >= 1.0 - 1e-5, k_fg)
    bg = erode_mask(a <= 1e-5, k_bg)
    tri = np.full(a.shape, UNKNOWN, dtype=np.uint8)
    tri[fg] = FG
    tri[bg] = BG
    return tri


def one_hot_trimap(trimap: np.ndarray) -> np.ndarray:
    """(H, W) uint8 trimap -> (3, H, W) float32 one-hot in the order [bg, unknown, fg]."""
    t = np.asarray(trimap)
    return np.stack([t == BG, t == UNKNOWN, t == FG]).astype(np.float32)
