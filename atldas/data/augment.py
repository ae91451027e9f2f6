"""Training augmentation for composited matting data (GCA / mmagic conventions, matting.md).

One sample is made from a foreground, its alpha matte and a background, all float32 in [0, 1]:

1. optional merge of a second foreground: ``alpha = 1 - (1 - a1)(1 - a2)``, the first one on top;
2. a random affine on fg and alpha together: per-axis scale in [0.8, 1.25], shear +-10 degrees,
   horizontal flip, rotation only for large images; the whole affine (scale, shear, flip and rotation)
   is skipped when it would push every unknown pixel out of the frame;
3. a crop of the requested size centred on an unknown pixel (zero padding, i.e. background, when the
   image is smaller than the crop);
4. hue / saturation / value jitter of the foreground;
5. a trimap from the cropped alpha by random elliptical erosion (:func:`trimap_from_alpha`);
6. composition on the background with the official protocol (:func:`compose_official`).

Everything is drawn from the ``numpy.random.Generator`` passed in, so a sample is a pure function of
its inputs and the generator's state. The array work is numpy / OpenCV, one call per image.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image

from atldas.data.trimap import one_hot_trimap, trimap_from_alpha

Size = Union[int, Tuple[int, int]]

_EPS = 1e-5


# --------------------------------------------------------------------------- samples

def _chw(a: np.ndarray) -> torch.Tensor:
    """(H, W, C) or (H, W) float array -> contiguous float32 (C, H, W) tensor."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    else:
        a = a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def make_sample(image: np.ndarray, trimap: np.ndarray, *, name: Optional[str] = None,
                alpha: Optional[np.ndarray] = None, fg: Optional[np.ndarray] = None,
                bg: Optional[np.ndarray] = None) -> Dict[str, object]:
    """The sample dict every atldas dataset returns.

    Args:
        image: (H, W, 3) float RGB in [0, 1].
        trimap: (H, W) uint8 trimap in {0, 128, 255}.
        name: file name of the image (omitted from the dict when None).
        alpha: (H, W) float matte in [0, 1], or None where there is no ground truth (key omitted).
        fg: (H, W, 3) foreground colours (training and composed sets), key omitted when None.
        bg: (H, W, 3) background actually used for the composite, key omitted when None.

    Returns:
        ``image`` (3, H, W), ``alpha`` (1, H, W), ``trimap`` (1, H, W) uint8 in {0, 128, 255} (the same
        convention as the synthetic data), ``trimap_onehot`` (3, H, W) [bg, unknown, fg], optional
        ``fg``/``bg`` (3, H, W): float32 tensors; ``name``: str.
    """
    tri = np.asarray(trimap, dtype=np.uint8)
    out: Dict[str, object] = {
        "image": _chw(image),
        "trimap": torch.from_numpy(np.ascontiguousarray(tri[None])),  # (1, H, W) uint8
        "trimap_onehot": torch.from_numpy(one_hot_trimap(tri)),
    }
    if alpha is not None:
        out["alpha"] = _chw(alpha)
    if fg is not None:
        out["fg"] = _chw(fg)
    if bg is not None:
        out["bg"] = _chw(bg)
    if name is not None:
        out["name"] = name
    return out


# --------------------------------------------------------------------------- composition

def resize_bicubic(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an (H, W, C) float image with PIL's bicubic filter (the one the DIM script uses).

    An image of 8-bit levels (every value ``k / 255``, as read from an 8-bit file) is resized as the
    8-bit image, as the DIM script resizes its backgrounds: Pillow rounds and clips to 8 bits between
    its two passes, which the float path does not (up to 20 levels apart on noisy images)."""
    if img.ndim == 3 and img.shape[2] == 3:
        levels = np.rint(np.asarray(img, dtype=np.float32) * 255.0)
        if levels.min(initial=0.0) >= 0 and levels.max(initial=0.0) <= 255 and \
                np.array_equal(levels.astype(np.float32) / 255.0, img):
            out = Image.fromarray(levels.astype(np.uint8), mode="RGB").resize((width, height), Image.BICUBIC)
            return np.asarray(out, dtype=np.float32) / 255.0
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, c], dtype=np.float32))
                        .resize((width, height), Image.BICUBIC), dtype=np.float32)
             for c in range(img.shape[2])]
    return np.clip(np.stack(chans, axis=2), 0.0, 1.0)


def cover_background(bg: np.ndarray, height: int, width: int, *,
                     rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """The (height, width, 3) window of ``bg`` that the official composition uses.

    The background is resized (bicubic, aspect ratio kept, ``ratio = max(w / bw, h / bh)``, sizes
    rounded up) only if it is smaller than the target in some direction, then cropped at the top-left
    corner (or at a random offset drawn from ``rng`` when one is given).
    """
    bh, bw = bg.shape[:2]
    ratio = max(width / bw, height / bh)
    if ratio > 1:
        nw = max(width, math.ceil(bw * ratio))
        nh = max(height, math.ceil(bh * ratio))
        bg = resize_bicubic(bg, nw, nh)
    top = left = 0
    if rng is not None:
        top = int(rng.integers(0, bg.shape[0] - height + 1))
        left = int(rng.integers(0, bg.shape[1] - width + 1))
    return np.ascontiguousarray(bg[top:top + height, left:left + width], dtype=np.float32)


def compose_official(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray, *,
                     rng: Optional[np.random.Generator] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Composite a foreground on a background with the DIM protocol.

    Args:
        fg: (H, W, 3) float foreground in [0, 1].
        alpha: (H, W) float matte in [0, 1].
        bg: (Hb, Wb, 3) float background of any size; see :func:`cover_background`.
        rng: None for the official top-left crop; a generator for a random crop offset.

    Returns:
        ``(image, bg_used)``, both (H, W, 3) float32, ``image = alpha * fg + (1 - alpha) * bg_used``.
    """
    h, w = alpha.shape
    b = cover_background(bg, h, w, rng=rng)
    a = alpha[:, :, None].astype(np.float32)
    image = a * fg.astype(np.float32) + (1.0 - a) * b
    return image.astype(np.float32), b


def merge_foregrounds(fg1: np.ndarray, alpha1: np.ndarray, fg2: np.ndarray,
                      alpha2: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Merge two foregrounds, the first on top of the second (GCA).

    The second is resized (bilinear) to the first's size. ``alpha = 1 - (1 - a1)(1 - a2)`` and
    ``fg = a1 * fg1 + (1 - a1) * fg2``. If the merged matte would be fully opaque, the first
    foreground is returned unchanged (there would be nothing left to matte).

    Returns:
        ``(fg, alpha)``: (H, W, 3) and (H, W) float32.
    """
    h, w = alpha1.shape
    second = np.concatenate([fg2, alpha2[:, :, None]], axis=2).astype(np.float32)
    if second.shape[:2] != (h, w):
        second = cv2.resize(second, (w, h), interpolation=cv2.INTER_LINEAR)
    f2, a2 = second[:, :, :3], np.clip(second[:, :, 3], 0.0, 1.0)
    alpha = 1.0 - (1.0 - alpha1) * (1.0 - a2)
    if not np.any(alpha < 1.0 - _EPS):
        return fg1.astype(np.float32), alpha1.astype(np.float32)
    a1 = alpha1[:, :, None]
    fg = a1 * fg1 + (1.0 - a1) * f2
    return fg.astype(np.float32), alpha.astype(np.float32)


# --------------------------------------------------------------------------- augmentation

def _has_unknown(alpha: np.ndarray) -> bool:
    return bool(np.any((alpha > _EPS) & (alpha < 1.0 - _EPS)))


def _pair(size: Size) -> Tuple[int, int]:
    if isinstance(size, (tuple, list)):
        h, w = (int(s) for s in size)
    else:
        h = w = int(size)
    if h < 1 or w < 1:
        raise ValueError(f"crop must be positive, got {size}")
    return h, w


class Augment:
    """Training augmentation: (fg, alpha, bg, rng) -> sample dict of crop-sized tensors.

    Args:
        crop: output size, an int (square) or (height, width).
        scale: range of the per-axis affine scale.
        shear: largest shear angle in degrees (drawn in [-shear, shear]).
        flip_prob: probability of a horizontal flip.
        rotate: largest rotation in degrees, applied only to large images.
        rotate_min_size: images whose shorter side is at least this are rotated (default: twice the
            longer crop side).
        hue: largest hue shift as a fraction of the colour circle.
        saturation: saturation is multiplied by a factor in [1 - saturation, 1 + saturation].
        value: value (brightness) is multiplied by a factor in [1 - value, 1 + value].
        merge_prob: probability with which a dataset should pass a second foreground (read by the
            datasets; :meth:`__call__` merges whenever ``fg2`` is given).
        trimap_kernel: (min, max) diameters of the random erosion kernels.
        random_bg_crop: crop the background at a random offset instead of the official top-left.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> fg, alpha, bg = rng.random((640, 800, 3)), rng.random((640, 800)), rng.random((600, 900, 3))
        >>> aug = Augment(crop=512)
        >>> sample = aug(fg, alpha, bg, rng)
        >>> sample["image"].shape, sample["alpha"].shape
        (torch.Size([3, 512, 512]), torch.Size([1, 512, 512]))
    """

    def __init__(self, *, crop: Size = 512, scale: Tuple[float, float] = (0.8, 1.25),
                 shear: float = 10.0, flip_prob: float = 0.5, rotate: float = 30.0,
                 rotate_min_size: Optional[int] = None, hue: float = 0.1, saturation: float = 0.3,
                 value: float = 0.3, merge_prob: float = 0.5,
                 trimap_kernel: Tuple[int, int] = (1, 30), random_bg_crop: bool = False) -> None:
        self.crop = _pair(crop)
        self.scale = (float(scale[0]), float(scale[1]))
        self.shear = float(shear)
        self.flip_prob = float(flip_prob)
        self.rotate = float(rotate)
        self.rotate_min_size = (2 * max(self.crop) if rotate_min_size is None
                                else int(rotate_min_size))
        self.hue = float(hue)
        self.saturation = float(saturation)
        self.value = float(value)
        self.merge_prob = float(merge_prob)
        self.trimap_kernel = (int(trimap_kernel[0]), int(trimap_kernel[1]))
        self.random_bg_crop = bool(random_bg_crop)

    def __repr__(self) -> str:
        return (f"Augment(crop={self.crop}, scale={self.scale}, shear={self.shear}, "
                f"flip_prob={self.flip_prob}, rotate={self.rotate}, "
                f"rotate_min_size={self.rotate_min_size}, hue={self.hue}, "
                f"saturation={self.saturation}, value={self.value}, merge_prob={self.merge_prob}, "
                f"trimap_kernel={self.trimap_kernel}, random_bg_crop={self.random_bg_crop})")

    # ---- steps (each takes the generator explicitly; the draw order is fixed)

    def affine_matrix(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """A random 2x3 forward affine matrix about the image centre."""
        sx, sy = rng.uniform(self.scale[0], self.scale[1], size=2)
        shear = math.radians(rng.uniform(-self.shear, self.shear))
        flip = rng.random() < self.flip_prob
        angle = math.radians(rng.uniform(-self.rotate, self.rotate))
        if min(height, width) < self.rotate_min_size:
            angle = 0.0
        cos, sin = math.cos(angle), math.sin(angle)
        rot = np.array([[cos, -sin], [sin, cos]])
        shr = np.array([[1.0, math.tan(shear)], [0.0, 1.0]])
        scl = np.diag([sx * (-1.0 if flip else 1.0), sy])
        lin = rot @ shr @ scl
        c = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
        return np.concatenate([lin, (c - lin @ c)[:, None]], axis=1)

    @staticmethod
    def _warp(fg: np.ndarray, alpha: np.ndarray, m: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if np.allclose(m, [[1, 0, 0], [0, 1, 0]]):
            return fg, alpha
        h, w = alpha.shape
        stack = np.concatenate([fg, alpha[:, :, None]], axis=2).astype(np.float32)
        out = cv2.warpAffine(stack, m, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return np.clip(out[:, :, :3], 0.0, 1.0), np.clip(out[:, :, 3], 0.0, 1.0)

    def _pad(self, fg: np.ndarray, alpha: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        h, w = alpha.shape
        ch, cw = self.crop
        ph, pw = max(0, ch - h), max(0, cw - w)
        if ph == 0 and pw == 0:
            return fg, alpha
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        return np.pad(fg, pads + ((0, 0),)), np.pad(alpha, pads)

    def crop_origin(self, alpha: np.ndarray, rng: np.random.Generator) -> Tuple[int, int]:
        """Top-left corner of a crop centred on a random unknown pixel (0 < alpha < 1; failing that,
        a pixel on the edge of the opaque region; failing that, anywhere)."""
        h, w = alpha.shape
        ch, cw = self.crop
        cand = np.flatnonzero((alpha > _EPS) & (alpha < 1.0 - _EPS))
        if cand.size == 0:
            solid = (alpha > 0.5).astype(np.uint8)
            edge = cv2.morphologyEx(solid, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
            cand = np.flatnonzero(edge)
        if cand.size == 0:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        y, x = divmod(int(cand[rng.integers(cand.size)]), w)
        top = min(max(y - ch // 2, 0), h - ch)
        left = min(max(x - cw // 2, 0), w - cw)
        return top, left

    def jitter(self, fg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Random hue shift and saturation / value scaling of an (H, W, 3) RGB image."""
        dh = rng.uniform(-self.hue, self.hue) * 360.0
        fs = rng.uniform(1.0 - self.saturation, 1.0 + self.saturation)
        fv = rng.uniform(1.0 - self.value, 1.0 + self.value)
        if dh == 0.0 and fs == 1.0 and fv == 1.0:
            return fg
        hsv = cv2.cvtColor(np.ascontiguousarray(fg, dtype=np.float32), cv2.COLOR_RGB2HSV)
        hsv[:, :, 0] = np.mod(hsv[:, :, 0] + dh, 360.0)
        hsv[:, :, 1] = np.clip(hsv[:, :, 1] * fs, 0.0, 1.0)
        hsv[:, :, 2] = np.clip(hsv[:, :, 2] * fv, 0.0, 1.0)
        return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0.0, 1.0)

    # ---- the whole pipeline

    def __call__(self, fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray, rng: np.random.Generator,
                 *, fg2: Optional[np.ndarray] = None, alpha2: Optional[np.ndarray] = None,
                 name: Optional[str] = None) -> Dict[str, object]:
        """Make one training sample.

        Args:
            fg: (H, W, 3) float foreground in [0, 1].
            alpha: (H, W) float matte in [0, 1].
            bg: (Hb, Wb, 3) float background of any size.
            rng: the generator every random choice is drawn from.
            fg2: optional second foreground to merge under the first (any size).
            alpha2: its matte.
            name: stored as ``sample["name"]`` when given.

        Returns:
            :func:`make_sample` dict with ``image``, ``alpha``, ``trimap``, ``trimap_onehot``, ``fg``
            and ``bg``, each crop-sized; ``image = alpha * fg + (1 - alpha) * bg`` holds exactly.
        """
        fg = np.asarray(fg, dtype=np.float32)
        alpha = np.asarray(alpha, dtype=np.float32)
        if fg.shape[:2] != alpha.shape:
            raise ValueError(f"fg {fg.shape[:2]} and alpha {alpha.shape} differ in size")
        if fg2 is not None and alpha2 is not None:
            fg, alpha = merge_foregrounds(fg, alpha, np.asarray(fg2, dtype=np.float32),
                                          np.asarray(alpha2, dtype=np.float32))
        m = self.affine_matrix(*alpha.shape, rng)
        warped_fg, warped_alpha = self._warp(fg, alpha, m)
        if _has_unknown(warped_alpha) or not _has_unknown(alpha):
            fg, alpha = warped_fg, warped_alpha
        # else: the affine pushed every unknown pixel out of the frame; keep the unwarped pair.
        fg, alpha = self._pad(fg, alpha)
        top, left = self.crop_origin(alpha, rng)
        ch, cw = self.crop
        fg = fg[top:top + ch, left:left + cw]
        alpha = np.ascontiguousarray(alpha[top:top + ch, left:left + cw])
        fg = self.jitter(fg, rng)
        trimap = trimap_from_alpha(alpha, rng=rng, k_min=self.trimap_kernel[0],
                                   k_max=self.trimap_kernel[1])
        image, bg_used = compose_official(fg, alpha, np.asarray(bg, dtype=np.float32),
                                          rng=rng if self.random_bg_crop else None)
        return make_sample(image, trimap, name=name, alpha=alpha, fg=fg, bg=bg_used)


__all__ = ["Augment", "compose_official", "cover_background", "make_sample", "merge_foregrounds",
           "resize_bicubic"]
