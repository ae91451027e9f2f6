"""The embedded synthetic matting data set (``--data synthetic``, the default everything runs on).

Every sample is drawn procedurally, so nothing has to be downloaded:

- **alpha**: an opaque object of 1-3 parts (organic star-shaped outlines, ellipses, hard-cornered
  polygons, limbs, a body entering from the border, soft-edged noise blobs; sometimes with a hole)
  with anti-aliased, often softened edges; hair (tens to hundreds of long wavy strands) or fur
  (hundreds of short ones): anti-aliased curves of partial opacity rooted on the outline, fainter
  towards the tip; semi-transparent veils and glass (smoothly varying alpha 0.2-0.8); defocus and
  motion blur. Alpha is quantised to multiples of 1/255, like an 8-bit ground-truth matte, so
  ``alpha_to_u8`` is lossless and the opaque interior is exactly 1.
- **colours**: foreground and background textures come from the same generators (gradients,
  smooth colour fields, multi-octave noise, stripes, blobs, checkers, mixtures of two, grain) and
  their colours from the same palette distribution; by default 60% of the samples share one palette,
  20% share two colours, and 60% have distractor shapes in the background painted with the
  foreground's own (mirrored) texture or palette. Hair, veils and glass are tinted with colours of
  their own. A colour threshold cannot find the matte (see tests/test_synthetic.py). Backgrounds are
  often out of focus (drawn at half resolution); with ``backgrounds=FOLDER`` they are random crops of
  the user's photos, and then sometimes so is the foreground (an object cut from a photo).
- **real foregrounds** (``foregrounds=FOLDER``, ``atldas retrain --foregrounds``): with probability
  ``foreground_prob`` a sample's foreground colours and alpha are a crop of one of the user's
  ``fg/`` + ``alpha/`` pairs (the Composition-1K training layout: files matched by stem), centred on
  a pixel of its unknown region, composed on the procedural or photo background like any sample.
- **image** = ``alpha * fg + (1 - alpha) * bg`` (float32, to rounding).
- **trimap** from alpha by random erosion (:func:`atldas.data.trimap.trimap_from_alpha`), uint8
  0 / 128 / 255, and its one-hot form [background, unknown, foreground].

Determinism: sample ``i`` of ``split`` depends only on ``(seed, split, i)`` and the constructor's
other arguments (and the background folder's files when one is given): its generator is
``np.random.default_rng([seed, split_id, i])``. It does not depend on DataLoader workers or on the
order samples are asked for.

Splits: ``split`` is one of :data:`SPLITS`: ``train`` (network weights), ``arch`` (the held-out
data of a search's architecture step), ``val`` (validation), ``test`` (final numbers). The split id
enters the seed sequence, so the splits are disjoint by construction: different random streams
whatever their lengths, with no index ranges that could overlap. :func:`make_splits` builds all four.

Speed: about 3 ms of CPU per 256x256 sample on one core (``experiments/bench_synthetic.py``); all
drawing is numpy / OpenCV on whole arrays.

Example::

    from atldas.data.synthetic import SyntheticMatting
    ds = SyntheticMatting(size=256, length=1000, seed=0, split="train")
    s = ds[0]   # s["image"]: (3, 256, 256) float32, s["trimap"]: (1, 256, 256) uint8, ...
"""

from __future__ import annotations

import colorsys
import os
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from atldas.data.io import (IMAGE_EXTENSIONS, check_headers, list_images, pair_by_stem, partnerless_error,
                            read_alpha, read_rgb, same_sizes)
from atldas.data.trimap import one_hot_trimap, trimap_from_alpha
from atldas.errors import ConfigError, DataError

#: Split names, in the order of their ids in the seed sequence.
SPLITS: Tuple[str, ...] = ("train", "arch", "val", "test")

#: Default number of samples per split made by :func:`make_splits`.
DEFAULT_LENGTHS: Dict[str, int] = {"train": 1000, "arch": 1000, "val": 200, "test": 200}

_SHIFT = 4            # cv2 drawing with sub-pixel precision: coordinates * 16
_ONE = 1 << _SHIFT


# --------------------------------------------------------------------------- colours and textures

def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV (each (n,) in [0, 1]) -> RGB float32 (n, 3); n is a handful of palette colours."""
    return np.array([colorsys.hsv_to_rgb(a % 1.0, b, c) for a, b, c in zip(h, s, v)], np.float32)


def _palette(rng: np.random.Generator) -> np.ndarray:
    """3-6 colours (k, 3) in [0, 1]: around one or two base hues, with varied saturation/value."""
    k = int(rng.integers(3, 7))
    base = rng.random(2)
    hue = base[rng.integers(0, 2, k)] + rng.normal(0.0, 0.06, k)
    hue = np.where(rng.random(k) < 0.25, rng.random(k), hue)       # a few unrelated colours
    sat = rng.beta(1.2, 1.6, k)
    val = rng.beta(2.0, 1.5, k)
    return _hsv_to_rgb(hue, sat, val)


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Smoothly upsample a coarse float32 grid (gy, gx) or (c, gy, gx) to (h, w) or (c, h, w).

    Bicubic to an intermediate of about 8 pixels per cell, then bilinear: as smooth to the eye as one
    bicubic resize by a large factor, and many times faster. (No BLAS: a threaded BLAS on a busy
    machine made matrix-product upsampling 100x slower.)
    """
    if grid.ndim == 3:
        return np.stack([_upsample(g, h, w) for g in grid])
    gy, gx = grid.shape
    mid = cv2.resize(grid, (min(w, 8 * gx), min(h, 8 * gy)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(mid, (w, h), interpolation=cv2.INTER_LINEAR)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; a wide one (sigma > 2.5) runs at 1/2 or 1/4 resolution and is upsampled
    bilinearly (the result is smooth at that scale anyway, and it is several times faster)."""
    f = 1 if sigma <= 2.5 else (2 if sigma <= 6.0 else 4)
    h, w = img.shape[:2]
    if f == 1 or min(h, w) < 8 * f:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), (sigma * sigma - 0.25 * f * f) ** 0.5 / f)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _field(rng: np.random.Generator, h: int, w: int, *, cells: int, octaves: int = 1) -> np.ndarray:
    """Smooth random scalar field (h, w) float32 in [0, 1] (multi-octave value noise)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        g = rng.random((cells + 2, cells + 2), dtype=np.float32)
        out += np.float32(amp) * _upsample(g, h, w)
        total += amp
        amp *= 0.5
        cells *= 2
    return out * np.float32(1.0 / total)


def _ramp(t: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Map t (h, w) in [0, 1] onto a piecewise-linear ramp through ``colours`` (k, 3) -> (3, h, w)."""
    k = len(colours)
    if k == 2:
        return colours[0][:, None, None] + t[None] * (colours[1] - colours[0])[:, None, None]
    x = np.linspace(0.0, 1.0, 256)
    idx = np.clip(t * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    return np.stack([cv2.LUT(idx, np.interp(x, np.linspace(0, 1, k), colours[:, c]).astype(np.float32))
                     for c in range(3)])


def _coords(h: int, w: int, angle: float) -> np.ndarray:
    """(h, w) float32 coordinate along direction ``angle``, in pixels from the image centre."""
    y = (np.arange(h, dtype=np.float32) - h / 2)[:, None]
    x = (np.arange(w, dtype=np.float32) - w / 2)[None, :]
    return x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))


def _pick(rng: np.random.Generator, palette: np.ndarray, n: int) -> np.ndarray:
    """``n`` colours from the palette, slightly jittered (n, 3)."""
    c = palette[rng.integers(0, len(palette), n)] + rng.normal(0.0, 0.04, (n, 3)).astype(np.float32)
    return np.clip(c, 0.0, 1.0).astype(np.float32)


def _u8_to_chw(img: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> (3, h, w) float32 in [0, 1]."""
    return np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32) * np.float32(1 / 255)


def _texture_one(rng: np.random.Generator, h: int, w: int, palette: np.ndarray,
                 kind: Optional[int] = None) -> np.ndarray:
    """One procedural texture (3, h, w) float32 (about [0, 1]) with colours from ``palette``."""
    k = int(rng.integers(0, 7))
    kind = k if kind is None else kind
    s = max(h, w)
    if kind == 0:    # linear gradient, 2-3 stops
        t = _coords(h, w, rng.uniform(0, 2 * np.pi)) * np.float32(1 / (0.75 * s)) + np.float32(0.5)
        return _ramp(np.clip(t, 0, 1), _pick(rng, palette, int(rng.integers(2, 4))))
    if kind == 1:    # smooth colour field: a coarse grid of palette colours, upsampled
        g = int(rng.integers(2, 7))
        grid = _pick(rng, palette, g * g).T.reshape(3, g, g)
        return _upsample(np.ascontiguousarray(grid), h, w)
    if kind == 2:    # multi-octave noise through a colour ramp
        t = _field(rng, h, w, cells=int(rng.integers(3, 12)), octaves=int(rng.integers(1, 4)))
        lo, hi = float(t.min()), float(t.max())
        t = (t - np.float32(lo)) * np.float32(1 / max(hi - lo, 1e-6))
        return _ramp(t, _pick(rng, palette, int(rng.integers(2, 4))))
    if kind == 3:    # stripes, sometimes warped, soft or hard
        period = rng.uniform(0.03, 0.3) * s
        phase = _coords(h, w, rng.uniform(0, np.pi)) * np.float32(2 * np.pi / period)
        if rng.random() < 0.5:
            phase += _field(rng, h, w, cells=int(rng.integers(2, 5))) * np.float32(rng.uniform(2, 12))
        t = np.float32(0.5) + np.float32(0.5) * np.sin(phase)
        if rng.random() < 0.5:
            t = np.clip((t - np.float32(0.5)) * np.float32(rng.uniform(3, 20)) + np.float32(0.5), 0, 1)
        return _ramp(t, _pick(rng, palette, 2))
    if kind == 4:    # blobs: ellipses of palette colours on a base colour, often blurred
        img = np.empty((h, w, 3), np.uint8)
        img[:] = np.rint(_pick(rng, palette, 1)[0] * 255).astype(np.uint8)
        n = int(rng.integers(3, 25))
        cols = np.rint(_pick(rng, palette, n) * 255).astype(np.int64)
        centres = rng.uniform(-0.1, 1.1, (n, 2)) * (w, h)
        axes = rng.uniform(0.03, 0.3, (n, 2)) * s
        ang = rng.uniform(0, 180, n)
        for i in range(n):
            cv2.ellipse(img, (int(centres[i, 0] * _ONE), int(centres[i, 1] * _ONE)),
                        (int(axes[i, 0] * _ONE), int(axes[i, 1] * _ONE)), float(ang[i]), 0, 360,
                        tuple(int(v) for v in cols[i]), -1, cv2.LINE_AA, _SHIFT)
        if rng.random() < 0.6:
            img = _blur(img, rng.uniform(0.5, max(0.6, 0.02 * s)))
        return _u8_to_chw(img)
    if kind == 5:    # checker / tiles, rotated
        period = rng.uniform(0.04, 0.25) * s
        a = rng.uniform(0, np.pi)
        u = np.floor(_coords(h, w, a) * np.float32(1 / period))
        v = np.floor(_coords(h, w, a + np.pi / 2) * np.float32(1 / period))
        t = ((u + v).astype(np.int32) & 1).astype(np.float32)
        if rng.random() < 0.5:
            t = _blur(t, rng.uniform(0.5, 2.0))
        return _ramp(t, _pick(rng, palette, 2))
    # kind == 6: flat colour with a gentle low-frequency shading
    c = _pick(rng, palette, 1)[0]
    shade = _field(rng, h, w, cells=2) * np.float32(rng.uniform(0.1, 0.5)) + np.float32(0.75)
    return shade[None] * c[:, None, None]


_GRAIN_TILE: Optional[np.ndarray] = None
_GRAIN_SIDE = 1024


def _grain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) float32 uniform noise in [-0.5, 0.5): a random window of a fixed tile (cheap), or fresh
    noise for images larger than the tile."""
    global _GRAIN_TILE
    if h > _GRAIN_SIDE or w > _GRAIN_SIDE:
        g = rng.random((h, w), dtype=np.float32)
        g -= np.float32(0.5)
        return g
    if _GRAIN_TILE is None:
        tile = np.random.default_rng(20240611).random((_GRAIN_SIDE, _GRAIN_SIDE), dtype=np.float32)
        tile -= np.float32(0.5)
        _GRAIN_TILE = tile
    y0, x0 = (int(v) for v in rng.integers(0, [_GRAIN_SIDE - h + 1, _GRAIN_SIDE - w + 1]))
    return _GRAIN_TILE[y0:y0 + h, x0:x0 + w]


def _texture(rng: np.random.Generator, h: int, w: int, palette: np.ndarray, *,
             soft: bool = False) -> np.ndarray:
    """A texture (3, h, w) float32 in [0, 1]: sometimes the mixture of two under a smooth mask,
    sometimes with grain. ``soft``: drawn at half resolution and upsampled (an out-of-focus
    background; grain is still added at full resolution)."""
    th, tw = ((h + 1) // 2, (w + 1) // 2) if soft and min(h, w) >= 32 else (h, w)
    tex = _texture_one(rng, th, tw, palette)
    if rng.random() < 0.3:
        other = _texture_one(rng, th, tw, palette)
        m = _field(rng, th, tw, cells=int(rng.integers(2, 6)))
        m -= np.float32(0.5)
        m *= np.float32(rng.uniform(2, 12))
        m += np.float32(0.5)
        _blend(tex, other, np.clip(m, 0, 1, out=m))
    if (th, tw) != (h, w):
        tex = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in tex])
    if rng.random() < 0.4:
        tex += (_grain(rng, h, w) * np.float32(rng.uniform(0.02, 0.12)))[None]
    return np.clip(tex, 0.0, 1.0, out=tex)


# --------------------------------------------------------------------------- background photos

class _PhotoBank:
    """Random square crops of a folder of photos, decoded lazily and cached (per process).

    Each photo is decoded once and kept, downscaled to at most ``2 * size`` on its short side, as
    uint8; the crop is taken from that copy, so results do not depend on what is cached.
    """

    def __init__(self, folder: Union[str, os.PathLike], size: int, cache: int = 64):
        d = Path(folder)
        if not d.is_dir():
            raise DataError(f"{d}: background folder does not exist; pass a folder of photos "
                            "or leave --backgrounds out for procedural backgrounds")
        self.paths = list(list_images(d).values())
        if not self.paths:
            raise DataError(f"{d}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the background folder")
        check_headers(self.paths)  # an unreadable photo fails now, not when a draw first picks it
        self.size = size
        self.cache_size = cache
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        img = read_rgb(self.paths[i])
        h, w = img.shape[:2]
        short = min(h, w)
        if short > 2 * self.size:
            f = 2 * self.size / short
            img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        u8 = np.rint(img * 255.0).astype(np.uint8)
        self._cache[i] = u8
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return u8

    def crop(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        """A random crop of a random photo, resized to (3, h, w) float32 in [0, 1]."""
        i = int(rng.integers(len(self.paths)))
        scale, fx, fy, flip = rng.uniform(0.35, 1.0), rng.random(), rng.random(), rng.random() < 0.5
        img = self._load(i)
        ih, iw = img.shape[:2]
        # crop with the output's aspect ratio, covering `scale` of the largest such crop
        ch = min(ih, iw * h / w) * scale
        cw = ch * w / h
        ch, cw = max(1, int(round(ch))), max(1, int(round(cw)))
        y0, x0 = int(fy * (ih - ch)), int(fx * (iw - cw))
        patch = img[y0:y0 + ch, x0:x0 + cw]
        interp = cv2.INTER_AREA if ch > h else cv2.INTER_LINEAR
        out = cv2.resize(patch, (w, h), interpolation=interp)
        if flip:
            out = out[:, ::-1]
        return _u8_to_chw(out)


class _ForegroundBank:
    """Crops of real foregrounds and their alphas: ``folder/fg/<stem>.*`` with ``folder/alpha/<stem>.*``.

    Each pair is decoded once and kept (at most ``cache`` of them), downscaled to at most ``2 * size``
    on its short side, as uint8 (so alphas stay multiples of 1/255, like the procedural ones).
    """

    def __init__(self, folder: Union[str, os.PathLike], size: int, cache: int = 32):
        d = Path(folder)
        if not (d / "fg").is_dir() or not (d / "alpha").is_dir():
            raise DataError(f"{d}: a foreground folder needs fg/ and alpha/ subfolders (files matched by stem, "
                            "as in Composition-1K's Training_set)")
        fgs = list_images(d / "fg")
        if not fgs:
            raise DataError(f"{d / 'fg'}: no images (.png, .jpg, ...) in this folder")
        p = pair_by_stem(fgs, {"alpha": list_images(d / "alpha")})  # a foreground without its alpha: refused
        problems = [f"{f} has no alpha" for f in p.missing.get("alpha", [])]
        problems += [f"alpha {f} has no foreground" for f in p.unused.get("alpha", [])]
        if problems:
            raise partnerless_error(problems, f"every foreground in {d / 'fg'} needs an alpha in {d / 'alpha'} "
                                              "with the same stem")
        self.pairs = [(fg, found["alpha"]) for _, fg, found in p.items]
        same_sizes(self.pairs, "alpha")  # checked from the headers now, not when a draw first picks a pair
        self.size = size
        self.cache_size = cache
        self._cache: "OrderedDict[int, Tuple[np.ndarray, np.ndarray]]" = OrderedDict()

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        fp, ap = self.pairs[i]
        fg, alpha = read_rgb(fp), read_alpha(ap)  # (H, W, 3), (H, W) float32
        if fg.shape[:2] != alpha.shape:
            raise DataError(f"{fp} is {fg.shape[1]}x{fg.shape[0]} but its alpha {ap} is "
                            f"{alpha.shape[1]}x{alpha.shape[0]}; give them the same size")
        h, w = alpha.shape
        if min(h, w) > 2 * self.size:
            f = 2 * self.size / min(h, w)
            dsize = (max(1, round(w * f)), max(1, round(h * f)))
            fg = cv2.resize(fg, dsize, interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(alpha, dsize, interpolation=cv2.INTER_AREA)
        pair = (np.rint(fg * 255.0).astype(np.uint8), np.rint(alpha * 255.0).astype(np.uint8))
        self._cache[i] = pair
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return pair

    def crop(self, rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
        """A random crop of a random pair around one of its unknown pixels: ``(3, h, w)`` foreground and
        ``(h, w)`` alpha, float32 in [0, 1] (alpha in multiples of 1/255)."""
        i = int(rng.integers(len(self.pairs)))
        scale, flip, pick = rng.uniform(0.5, 1.0), rng.random() < 0.5, rng.random()
        fg, alpha = self._load(i)
        ih, iw = alpha.shape
        ch = max(1, int(round(min(ih, iw * h / w) * scale)))
        cw = max(1, int(round(ch * w / h)))
        ys, xs = np.nonzero((alpha > 0) & (alpha < 255))  # the unknown region: where matting is hard
        if len(ys) == 0:
            ys, xs = np.nonzero(alpha > 0)
        if len(ys):
            k = int(pick * len(ys))
            cy, cx = int(ys[k]), int(xs[k])
        else:
            cy, cx = ih // 2, iw // 2
        y0 = min(max(cy - ch // 2, 0), ih - ch)
        x0 = min(max(cx - cw // 2, 0), iw - cw)
        interp = cv2.INTER_AREA if ch > h else cv2.INTER_LINEAR
        f = cv2.resize(fg[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=interp)  # (h, w, 3) uint8
        a = cv2.resize(alpha[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=interp)  # (h, w) uint8
        if flip:
            f, a = f[:, ::-1], a[:, ::-1]
        return _u8_to_chw(f), a.astype(np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------- alpha

def _draw_poly(mask: np.ndarray, pts: np.ndarray, value: int = 255) -> None:
    cv2.fillPoly(mask, [np.rint(pts * _ONE).astype(np.int32)], value, cv2.LINE_AA, _SHIFT)


def _draw_ellipse(mask: np.ndarray, c: np.ndarray, axes: Tuple[float, float], angle: float,
                  value: int = 255) -> None:
    cv2.ellipse(mask, (int(c[0] * _ONE), int(c[1] * _ONE)), (int(axes[0] * _ONE), int(axes[1] * _ONE)),
                float(angle), 0, 360, value, -1, cv2.LINE_AA, _SHIFT)


def _star(rng: np.random.Generator, centre: np.ndarray, r: float, *, n: int, rough: float,
          smooth: int) -> np.ndarray:
    """Star-shaped polygon (n, 2): sorted angles, smoothed random radii, random stretch and turn."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = rng.uniform(1 - rough, 1.0, n)
    if smooth > 1:
        k = np.ones(smooth) / smooth
        rad = np.convolve(np.concatenate([rad[-smooth:], rad, rad[:smooth]]), k, "same")[smooth:-smooth]
    stretch = rng.uniform(0.5, 1.0)
    rot = rng.uniform(0, 2 * np.pi)
    x, y = np.cos(ang) * rad * r, np.sin(ang) * rad * r * stretch
    c, s = np.cos(rot), np.sin(rot)
    return np.stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y], -1)


def _solid(rng: np.random.Generator, h: int, w: int, *, scale: Tuple[float, float] = (0.12, 0.4),
           ) -> Tuple[np.ndarray, np.ndarray, float]:
    """An opaque object: (h, w) float32 in [0, 1] with anti-aliased edges, its centre and radius.

    1-3 parts (organic outline, ellipse, hard-cornered polygon, limbs, a body entering from the
    border, a soft-edged noise blob), sometimes with a hole.
    """
    s = min(h, w)
    mask = np.zeros((h, w), np.uint8)
    centre = np.array([w, h], np.float64) * rng.uniform(0.25, 0.75, 2)
    r = s * rng.uniform(*scale)
    soft_blob = None
    for part in range(int(rng.integers(1, 4))):
        c = centre + (rng.normal(0, 0.4 * r, 2) if part else 0.0)
        rp = r * (rng.uniform(0.35, 0.8) if part else 1.0)
        kind = int(rng.integers(0, 6))
        if kind == 0:      # organic star-shaped outline
            _draw_poly(mask, _star(rng, c, rp, n=int(rng.integers(12, 60)), rough=rng.uniform(0.1, 0.6),
                                   smooth=int(rng.integers(1, 6))))
        elif kind == 1:    # ellipse
            _draw_ellipse(mask, c, (rp, rp * rng.uniform(0.4, 1.0)), rng.uniform(0, 180))
        elif kind == 2:    # hard-cornered polygon (a man-made object)
            _draw_poly(mask, _star(rng, c, rp, n=int(rng.integers(3, 8)), rough=0.3, smooth=1))
        elif kind == 3:    # limbs / branches: thick curves
            for _ in range(int(rng.integers(1, 4))):
                ang = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.3, 6))
                pts = c + np.cumsum(np.stack([np.cos(ang), np.sin(ang)], -1) * rp * rng.uniform(0.2, 0.45), 0)
                pts = np.vstack([c, pts])
                cv2.polylines(mask, [np.rint(pts * _ONE).astype(np.int32)], False, 255,
                              max(2, int(rp * rng.uniform(0.12, 0.4))), cv2.LINE_AA, _SHIFT)
        elif kind == 4:    # a head-and-shoulders-like body entering from one border
            _draw_poly(mask, _star(rng, c, rp, n=int(rng.integers(10, 30)), rough=0.3, smooth=3))
            wide, far = rp * rng.uniform(0.7, 1.6), 2.0 * (h + w)
            side = rng.uniform(0, 2 * np.pi)                       # direction of the border
            d = np.array([np.cos(side), np.sin(side)])
            n = np.array([-d[1], d[0]])
            body = [c - wide * n, c + wide * n, c + far * d + 1.3 * wide * n, c + far * d - 1.3 * wide * n]
            _draw_poly(mask, np.asarray(body))
        else:              # thresholded smooth noise: an irregular blob with a soft edge
            f = _field(rng, h, w, cells=int(rng.integers(3, 7)), octaves=2)
            yy = (np.arange(h, dtype=np.float32)[:, None] - np.float32(c[1])) * np.float32(1 / rp)
            xx = (np.arange(w, dtype=np.float32)[None, :] - np.float32(c[0])) * np.float32(1 / rp)
            d2 = xx * xx + yy * yy                                 # (h, w)
            d2 *= np.float32(-0.5)
            d2 += f
            d2 *= np.float32(rng.uniform(3.0, 40.0))               # edge sharpness
            blob = np.clip(d2, 0, 1, out=d2)
            soft_blob = blob if soft_blob is None else np.maximum(soft_blob, blob, out=soft_blob)
    if rng.random() < 0.25:   # a hole (the gap between arm and body, the handle of a cup)
        hc = centre + rng.normal(0, 0.3 * r, 2)
        axes = (r * rng.uniform(0.08, 0.3), r * rng.uniform(0.08, 0.3))
        _draw_ellipse(mask, hc, axes, rng.uniform(0, 180), 0)
    a = mask.astype(np.float32)
    a *= np.float32(1 / 255)
    if soft_blob is not None:
        np.maximum(a, soft_blob, out=a)
    return a, centre, r


def _strands(rng: np.random.Generator, solid: np.ndarray, centre: np.ndarray, r: float) -> np.ndarray:
    """Hair / fur: anti-aliased curves of partial opacity rooted on the object's boundary.

    Long wavy hair (tens to hundreds of strands) or dense short fur (hundreds); strands taper (the
    tip half is fainter), lean the same way, and grow from one sector of the outline or all round.
    Returns the strand opacity (h, w) float32 in [0, 1].
    """
    h, w = solid.shape
    s = min(h, w)
    layer = np.zeros((h, w), np.uint8)
    edge = np.flatnonzero((solid > 0.05) & (solid < 0.95))    # 2-D np.nonzero is much slower
    if len(edge) == 0:
        return layer.astype(np.float32)
    ys, xs = np.divmod(edge, w)
    ang_root = np.arctan2(ys - centre[1], xs - centre[0])
    if rng.random() < 0.7:         # one hairy sector of the outline
        d = np.abs((ang_root - rng.uniform(-np.pi, np.pi) + np.pi) % (2 * np.pi) - np.pi)
        keep = np.flatnonzero(d < rng.uniform(0.6, 2.5))
        if len(keep):
            ys, xs, ang_root = ys[keep], xs[keep], ang_root[keep]
    area = (s / 256.0) ** 0.5
    if rng.random() < 0.3:         # fur: many short, fine, straight-ish strands
        n_total, k = int(rng.integers(150, 500) * area), 4
        length_scale, curl, thick = s * rng.uniform(0.015, 0.06), rng.uniform(0.02, 0.15), False
    else:                          # hair: fewer, longer, wavy strands
        n_total, k = int(rng.integers(30, 220) * area), 8
        length_scale, curl = s * rng.uniform(0.04, 0.25), rng.uniform(0.02, 0.35)
        thick = bool(rng.random() < 0.25)
    flow = rng.normal(0, 0.6)      # all strands lean the same way
    groups = int(rng.integers(2, 5))
    for _ in range(groups):
        n = max(1, n_total // groups)
        pick = rng.integers(0, len(xs), n)
        root = np.stack([xs[pick], ys[pick]], -1).astype(np.float64)
        theta0 = ang_root[pick] + flow + rng.normal(0, 0.35, n)
        root -= np.stack([np.cos(theta0), np.sin(theta0)], -1) * rng.uniform(0, 0.08 * r, (n, 1))
        theta = theta0[:, None] + np.cumsum(rng.normal(0, curl, (n, k)) + curl * rng.normal(0, 1, (n, 1)), 1)
        step = length_scale * rng.uniform(0.3, 1.5, (n, 1, 1)) / k
        pts = root[:, None, :] + np.cumsum(np.stack([np.cos(theta), np.sin(theta)], -1) * step, 1)
        pts_i = np.rint(np.concatenate([root[:, None, :], pts], 1) * _ONE).astype(np.int32)  # (n, k+1, 2)
        opac = rng.uniform(0.3, 1.0)
        half = k // 2
        # an (n, m, 2) int32 array is n polylines to OpenCV (no list of n small arrays needed)
        roots, tips = np.ascontiguousarray(pts_i[:, :half + 1]), np.ascontiguousarray(pts_i[:, half:])
        cv2.polylines(layer, roots, False, int(255 * opac), 1, cv2.LINE_AA, _SHIFT)
        if thick:      # a thicker root half: the same curves again, shifted by under a pixel
            # (thickness > 1 with LINE_AA is drawn as polygons and is about 8x slower)
            cv2.polylines(layer, roots + np.int32([11, 6]), False, int(255 * opac), 1, cv2.LINE_AA, _SHIFT)
        cv2.polylines(layer, tips, False, int(255 * opac * rng.uniform(0.3, 0.8)), 1, cv2.LINE_AA, _SHIFT)
    hair = layer.astype(np.float32)
    hair *= np.float32(1 / 255)
    return hair


def _transparent_patch(rng: np.random.Generator, h: int, w: int, centre: np.ndarray, r: float) -> np.ndarray:
    """A veil / glass patch (h, w) float32 with opacity varying smoothly in 0.2..0.8, soft-edged."""
    s = min(h, w)
    mask = np.zeros((h, w), np.uint8)
    c = centre + rng.normal(0, 0.8 * r, 2)
    _draw_poly(mask, _star(rng, c, r * rng.uniform(0.5, 1.3), n=int(rng.integers(5, 30)),
                           rough=rng.uniform(0.0, 0.4), smooth=int(rng.integers(1, 5))))
    p = mask.astype(np.float32)
    p *= np.float32(1 / 255)
    if rng.random() < 0.7:
        p = _blur(p, rng.uniform(0.5, max(0.6, 0.03 * s)))
    lo, hi = sorted(rng.uniform(0.2, 0.8, 2))
    t = _field(rng, h, w, cells=int(rng.integers(2, 6)))
    t *= np.float32(hi - lo)
    t += np.float32(lo)
    p *= t
    return p


def _motion_kernel(rng: np.random.Generator, s: int) -> np.ndarray:
    """A normalised line kernel of random length and direction (motion blur)."""
    length = int(rng.integers(3, max(4, int(0.05 * s)) + 1))
    k = np.zeros((length, length), np.float32)
    a = rng.uniform(0, np.pi)
    c = (length - 1) / 2
    dx, dy = np.cos(a) * c, np.sin(a) * c
    cv2.line(k, (int(round((c - dx) * _ONE)), int(round((c - dy) * _ONE))),
             (int(round((c + dx) * _ONE)), int(round((c + dy) * _ONE))), 1.0, 1, cv2.LINE_AA, _SHIFT)
    return k / max(float(k.sum()), 1e-6)


def _screen(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """In place: a = 1 - (1 - a)(1 - b), the union of two partial covers."""
    a -= 1.0
    a *= b - np.float32(1.0)
    np.subtract(np.float32(1.0), a, out=a)
    return a


def _alpha(rng: np.random.Generator, h: int, w: int, p: Dict[str, float],
           ) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """The matte (h, w) float32 quantised to k/255, plus the hair and veil layers (or None) so that
    the foreground can be coloured to match."""
    s = min(h, w)
    a, centre, r = _solid(rng, h, w)
    if rng.random() < 0.6:                       # soft boundary
        a = _blur(a, rng.uniform(0.4, max(0.5, 0.012 * s)))
    hair = veil = None
    if rng.random() < p["hair_prob"]:
        hair = _strands(rng, a, centre, r)
        if rng.random() < 0.3:
            hair = _blur(hair, rng.uniform(0.3, 0.8))
        _screen(a, hair)
    if rng.random() < p["transparency_prob"]:
        patch = _transparent_patch(rng, h, w, centre, r)
        if rng.random() < 0.6:                   # a veil over / beside the object
            _screen(a, patch)
            veil = patch
        else:                                    # glass: part of the object itself is see-through
            inside = np.minimum(patch * np.float32(4.0), 1.0)
            a *= 1.0 - inside * (1.0 - patch)
    u = rng.random()
    if u < p["blur_prob"] * 0.6:                 # defocus
        a = _blur(a, rng.uniform(0.7, max(0.8, 0.015 * s)))
    elif u < p["blur_prob"]:                     # motion blur
        a = cv2.filter2D(a, -1, _motion_kernel(rng, s), borderType=cv2.BORDER_REFLECT)
    np.clip(a, 0.0, 1.0, out=a)
    a *= np.float32(255.0)
    np.rint(a, out=a)
    a *= np.float32(1 / 255)
    return a, hair, veil


def _blend(dst: np.ndarray, src: Union[np.ndarray, float], m: np.ndarray) -> None:
    """In place: dst (3, h, w) = dst + m * (src - dst), with src (3, h, w) or a colour (3,) and the
    mask m (h, w)."""
    if isinstance(src, np.ndarray) and src.ndim == 1:
        src = src[:, None, None]
    d = src - dst
    d *= m[None]
    dst += d


_HEAP_READY = False


def _keep_freed_memory(nbytes: int) -> None:
    """Once per process: allocate and free one block of ``nbytes`` (at most 30 MiB).

    glibc serves blocks above a threshold with mmap and hands freed heap memory back to the system
    when more than twice that threshold is free; freeing an mmapped block raises the threshold to
    its size. Every sample allocates a few MiB of fresh arrays, so with the default threshold each one
    page-faults its output into existence again (about a third of the time per sample on a VM).
    Freeing one large block once makes glibc keep that memory for reuse. Elsewhere this is a
    harmless allocation.
    """
    global _HEAP_READY
    if not _HEAP_READY:
        _HEAP_READY = True
        block = np.empty(min(max(nbytes, 1 << 20), 30 << 20), np.uint8)
        del block


# --------------------------------------------------------------------------- data set

class SyntheticMatting(Dataset):
    """Procedural matting samples: deterministic, endless variety, no files needed.

    Args:
        size: side of the square samples in pixels (at least 16).
        length: number of samples (``len(ds)``).
        seed: data seed (non-negative).
        split: one of :data:`SPLITS`; splits are disjoint random streams (see the module docstring).
        backgrounds: optional folder of photos; a random crop of one of them is the background of a
            sample with probability ``photo_prob`` (else a procedural background).
        photo_prob: probability of a photo background when ``backgrounds`` is given.
        foregrounds: optional folder with ``fg/`` and ``alpha/`` subfolders (files matched by stem): real
            foregrounds mixed into the samples (module docstring).
        foreground_prob: probability of a real foreground when ``foregrounds`` is given.
        hair_prob: probability of hair-like strands.
        transparency_prob: probability of a semi-transparent veil / glass patch.
        blur_prob: probability of defocus or motion blur of the matte.
        shared_palette_prob: probability that foreground and background share one colour palette
            (otherwise half of the rest share two colours, half are drawn independently).
        clutter_prob: probability of opaque distractor shapes in the foreground's colours in the
            background.
        trimap_kernel: (k_min, k_max) erosion kernel sizes for the trimap; ``None`` means
            ``(1, min(30, max(3, round(30 * size / 256))))``.

    Each item is a dict (float32 unless said):

    - ``image``: (3, H, W) in [0, 1], equal to ``alpha * fg + (1 - alpha) * bg``.
    - ``alpha``: (1, H, W) in [0, 1], multiples of 1/255.
    - ``trimap``: (1, H, W) uint8 in {0, 128, 255} (matting.md convention).
    - ``trimap_onehot``: (3, H, W) one-hot, channels [background, unknown, foreground].
    - ``fg``, ``bg``: (3, H, W) in [0, 1], the layers the image is composed of.
    - ``name``: str, e.g. ``"synthetic-train-s0-000042"``.

    :meth:`sample` gives the same arrays as numpy arrays (``ds[i]`` wraps them with ``torch.from_numpy``).
    """

    def __init__(self, *, size: int = 256, length: int = 1000, seed: int = 0, split: str = "train",
                 backgrounds: Optional[Union[str, os.PathLike]] = None, photo_prob: float = 0.8,
                 foregrounds: Optional[Union[str, os.PathLike]] = None, foreground_prob: float = 0.5,
                 hair_prob: float = 0.6, transparency_prob: float = 0.35, blur_prob: float = 0.3,
                 shared_palette_prob: float = 0.6, clutter_prob: float = 0.6,
                 trimap_kernel: Optional[Tuple[int, int]] = None):
        if int(size) < 16:
            raise ConfigError(f"synthetic data: size must be at least 16, got {size}")
        if int(length) < 1:
            raise ConfigError(f"synthetic data: length must be at least 1, got {length}")
        if int(seed) < 0:
            raise ConfigError(f"synthetic data: seed must be non-negative, got {seed}")
        if split not in SPLITS:
            raise ConfigError(f"synthetic data: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        probs = dict(photo_prob=photo_prob, foreground_prob=foreground_prob, hair_prob=hair_prob,
                     transparency_prob=transparency_prob,
                     blur_prob=blur_prob, shared_palette_prob=shared_palette_prob, clutter_prob=clutter_prob)
        for k, v in probs.items():
            if not 0.0 <= float(v) <= 1.0:
                raise ConfigError(f"synthetic data: {k} must be in [0, 1], got {v}")
        self.size, self.length, self.seed, self.split = int(size), int(length), int(seed), split
        self.split_id = SPLITS.index(split)
        self.probs = {k: float(v) for k, v in probs.items()}
        if trimap_kernel is None:
            trimap_kernel = (1, min(30, max(3, round(30 * self.size / 256))))
        k_min, k_max = (int(k) for k in trimap_kernel)
        if not 1 <= k_min <= k_max:
            raise ConfigError("synthetic data: trimap_kernel must satisfy 1 <= k_min <= k_max, "
                              f"got {trimap_kernel}")
        self.trimap_kernel = (k_min, k_max)
        self.backgrounds = None if backgrounds is None else str(backgrounds)
        self._photos = None if backgrounds is None else _PhotoBank(backgrounds, self.size)
        self.foregrounds = None if foregrounds is None else str(foregrounds)
        self._fgs = None if foregrounds is None else _ForegroundBank(foregrounds, self.size)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (f"SyntheticMatting(size={self.size}, length={self.length}, seed={self.seed}, "
                f"split={self.split!r}, backgrounds={self.backgrounds!r}, foregrounds={self.foregrounds!r})")

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"sample {index} out of range for {self.length} samples")
        return i

    def sample(self, index: int) -> Dict[str, object]:
        """Sample ``index`` as numpy arrays: the same keys, shapes (channels first) and dtypes as
        ``ds[index]`` (see the class docstring)."""
        i = self._index(index)
        _keep_freed_memory(self.size * self.size * 4 * 40)  # ~10x a sample's output arrays
        rng = np.random.default_rng([self.seed, self.split_id, i])
        h = w = self.size
        p = self.probs
        pal_bg = _palette(rng)
        u = rng.random()
        if u < p["shared_palette_prob"]:              # one palette for both layers
            pal_fg = pal_bg
        elif u < 0.5 + 0.5 * p["shared_palette_prob"]:   # some colours in common
            pal_fg = np.concatenate([_palette(rng), pal_bg[rng.integers(0, len(pal_bg), 2)]])
        else:
            pal_fg = _palette(rng)
        if self._photos is not None and rng.random() < p["photo_prob"]:
            bg = self._photos.crop(rng, h, w)
            # an object cut from a photo: its colours are the scene's
            fg = self._photos.crop(rng, h, w) if rng.random() < 0.3 else _texture(rng, h, w, pal_fg)
        else:
            bg = _texture(rng, h, w, pal_bg, soft=rng.random() < 0.6)
            fg = _texture(rng, h, w, pal_fg)
        real = None  # (fg, alpha) of a real foreground; drawn only with a foreground folder (streams unchanged)
        if self._fgs is not None and rng.random() < p["foreground_prob"]:
            real = self._fgs.crop(rng, h, w)
            fg = real[0]
        if rng.random() < p["clutter_prob"]:          # opaque distractors in the foreground's colours
            clutter, _, _ = _solid(rng, h, w, scale=(0.08, 0.3))
            if rng.random() < 0.5:
                clutter = _blur(clutter, rng.uniform(0.5, max(0.6, 0.02 * h)))
            if rng.random() < 0.7:                    # the foreground's own texture, mirrored
                flip = int(rng.integers(0, 3))
                src = fg[:, ::-1] if flip == 0 else (fg[:, :, ::-1] if flip == 1 else fg[:, ::-1, ::-1])
            else:
                src = _texture(rng, h, w, pal_fg)
            _blend(bg, src, clutter)
        alpha, hair, veil = _alpha(rng, h, w, p) if real is None else (real[1], None, None)
        if hair is not None and rng.random() < 0.6:   # hair has a colour of its own
            m = _blur(np.minimum(hair * np.float32(4.0), 1.0), 2.0)
            _blend(fg, _pick(rng, pal_fg, 1)[0], m)
        if veil is not None and rng.random() < 0.7:   # the veil / glass is tinted
            m = np.minimum(veil * np.float32(8.0), 1.0)
            _blend(fg, _pick(rng, np.concatenate([pal_fg, pal_bg]), 1)[0], m)
        fg = np.clip(fg, 0.0, 1.0, out=fg)                    # (3, H, W) float32
        bg = np.clip(bg, 0.0, 1.0, out=bg)                    # (3, H, W) float32
        a = alpha[None]                                       # (1, H, W)
        image = fg - bg
        image *= a
        image += bg                                           # (3, H, W) = a * fg + (1 - a) * bg
        np.clip(image, 0.0, 1.0, out=image)                   # float rounding only (< 1e-7)
        trimap = trimap_from_alpha(alpha, rng=rng, k_min=self.trimap_kernel[0], k_max=self.trimap_kernel[1])
        return {"image": image, "alpha": a, "trimap": trimap[None], "trimap_onehot": one_hot_trimap(trimap),
                "fg": fg, "bg": bg, "name": f"synthetic-{self.split}-s{self.seed}-{i:06d}"}

    def __getitem__(self, index: int) -> Dict[str, object]:
        return {k: (v if isinstance(v, str) else torch.from_numpy(v)) for k, v in self.sample(index).items()}


def make_splits(*, size: int = 256, seed: int = 0, lengths: Optional[Dict[str, int]] = None,
                backgrounds: Optional[Union[str, os.PathLike]] = None,
                **kwargs) -> Dict[str, SyntheticMatting]:
    """One :class:`SyntheticMatting` per split (disjoint by construction).

    Args:
        size: sample side in pixels.
        seed: data seed shared by the splits (the split id keeps them apart).
        lengths: samples per split, e.g. ``{"train": 2000, "val": 100}``; missing splits take
            :data:`DEFAULT_LENGTHS`; a split given length 0 is left out.
        backgrounds: optional folder of background photos.
        **kwargs: further :class:`SyntheticMatting` arguments.

    Returns:
        ``{split: dataset}`` in the order of :data:`SPLITS`.
    """
    lengths = {**DEFAULT_LENGTHS, **(lengths or {})}
    unknown = sorted(set(lengths) - set(SPLITS))
    if unknown:
        raise ConfigError(f"synthetic data: unknown split(s) {', '.join(unknown)}; "
                          f"choose from {', '.join(SPLITS)}")
    return {name: SyntheticMatting(size=size, length=lengths[name], seed=seed, split=name,
                                   backgrounds=backgrounds, **kwargs)
            for name in SPLITS if lengths[name] > 0}
