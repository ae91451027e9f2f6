"""SAD, MSE, Grad and Conn exactly as the DIM evaluation code defines them (Xu et al. 2017).

The reference is the MATLAB code released with "Deep Image Matting" (``compute_sad_loss.m``,
``compute_mse_loss.m``, ``compute_gradient_loss.m`` with ``gaussgradient.m``,
``compute_connectivity_error.m``). Every detail below follows it; the known faulty ports are named
where they differ.

Inputs:
    pred, gt: (H, W) 8-bit mattes. ``uint8`` arrays (0..255) are used as they are; other integer
        arrays must hold 0..255; float arrays must hold values in [0, 1] and are quantised to 8 bits
        by rounding (``round(x * 255)``, as :func:`atldas.data.io.alpha_to_u8`), because the DIM code
        reads 8-bit PNGs and divides by 255. So ``sad(u8 / 255, ...) == sad(u8, ...)``.
    trimap: (H, W) values in 0..255 (e.g. :func:`atldas.data.io.read_trimap`); unknown pixels are
        exactly those equal to 128, as in DIM (``trimap == 128``).

Scales (the DIM convention, the one ``atldas eval --json`` writes): SAD / 1000, MSE unscaled,
Grad / 1000, Conn / 1000. Tables often print MSE x 1e3; these functions never do.

Numerics: SAD and MSE are computed exactly in integers; Grad in float64; Conn in float32, as the
DIM code does (``single(pred) / 255`` compared with the thresholds in single precision, so an alpha of
exactly 153/255 passes t = 0.6). Results equal DIM's up to DIM's own single-precision rounding.

A trimap without unknown pixels makes MSE undefined (DIM divides 0 by 0): :func:`mse` and
:func:`compute_all` raise :class:`~atldas.errors.DataError`; SAD, Grad and Conn are 0 for it.

Example:
    >>> import numpy as np
    >>> pred = np.array([[255, 102]], np.uint8); gt = np.array([[255, 128]], np.uint8)
    >>> tri = np.full((1, 2), 128, np.uint8)
    >>> round(sad(pred, gt, tri) * 1000, 6)   # |102 - 128| / 255
    0.101961
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Tuple

import cv2
import numpy as np

from atldas.errors import DataError

__all__ = ["sad", "mse", "grad", "conn", "compute_all", "gradient_kernel", "summarise", "format_table",
           "METRIC_NAMES"]

#: Keys of :func:`compute_all`, in table order.
METRIC_NAMES = ("SAD", "MSE", "Grad", "Conn")

#: Value of an unknown pixel in a trimap.
UNKNOWN = 128

GRAD_SIGMA = 1.4
GRAD_EPS = 1e-2
CONN_STEP_COUNT = 10  # thresholds 0.1, 0.2, ..., 1.0 (DIM: 0:0.1:1 without the 0)

# --------------------------------------------------------------------------- lookup tables
# DIM: pred = single(pred) / 255. Every 8-bit value as the float32 alpha the DIM code sees.
_ALPHA32 = np.arange(256, dtype=np.float32) / np.float32(255.0)
# Thresholds and the "previous threshold" values l takes, in single precision: index k is k / 10
# (k = 0..10); index 10 (= 1.0) is also the value of pixels that are never assigned (l = -1 -> 1).
_THRESH32 = np.array([k / 10 for k in range(CONN_STEP_COUNT + 1)], dtype=np.float32)
# For threshold index k (1..10): the smallest 8-bit value v with single(v)/255 >= single(k/10).
# (p >= t) & (g >= t) is then min(p, g) >= _CONN_MIN_U8[k]: one uint8 comparison per threshold.
# Compared in float32 as DIM does: 153 (0.6f) passes t = 0.6; in float64 (mmeval) it would not.
_CONN_MIN_U8 = np.array([int(np.argmax(_ALPHA32 >= t)) if _ALPHA32[-1] >= t else 256
                         for t in _THRESH32], dtype=np.int64)


# --------------------------------------------------------------------------- input checks

def _as_u8(a: np.ndarray, name: str) -> np.ndarray:
    """A matte as a (H, W) uint8 array (see the module docstring for what is accepted)."""
    a = np.asarray(a)
    if a.ndim != 2:
        raise DataError(f"{name} must be a 2-D (H, W) matte, got shape {tuple(a.shape)}")
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 255):
            raise DataError(f"{name} has integer values outside 0..255 (min {a.min()}, max {a.max()}); "
                            "pass 8-bit mattes (0..255) or floats in [0, 1]")
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        if a.size:
            lo, hi = float(np.min(a)), float(np.max(a))
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
                raise DataError(f"{name} has float values outside [0, 1] (min {lo:g}, max {hi:g}); "
                                "pass floats in [0, 1] or 8-bit mattes (0..255)")
        return np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    raise DataError(f"{name} has unsupported dtype {a.dtype}; pass uint8 (0..255) or floats in [0, 1]")


def _unknown_mask(trimap: np.ndarray) -> np.ndarray:
    t = np.asarray(trimap)
    if t.ndim != 2:
        raise DataError(f"trimap must be a 2-D (H, W) array, got shape {tuple(t.shape)}")
    if t.dtype.kind not in "iuf":
        raise DataError(f"trimap has unsupported dtype {t.dtype}; pass values 0/128/255")
    if t.dtype.kind == "f" and t.size and float(t.max()) <= 1.0 and np.any(t > 0):
        raise DataError("trimap holds floats in [0, 1]; pass it on the 0..255 scale "
                        "(0 background, 128 unknown, 255 foreground)")
    return t == UNKNOWN


def _prepare(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check shapes and values; return (pred uint8, gt uint8, unknown mask (H, W) bool)."""
    p_shape, g_shape, t_shape = (tuple(np.shape(x)) for x in (pred, gt, trimap))
    if p_shape != g_shape:
        raise DataError(f"pred and gt have different shapes {p_shape} and {g_shape}; "
                        "score mattes of the same size (nothing is resized)")
    if p_shape != t_shape:
        raise DataError(f"pred and trimap have different shapes {p_shape} and {t_shape}; "
                        "score mattes of the same size as their trimap (nothing is resized)")
    p = np.ascontiguousarray(_as_u8(pred, "pred"))
    g = np.ascontiguousarray(_as_u8(gt, "gt"))
    return p, g, _unknown_mask(trimap)


# --------------------------------------------------------------------------- SAD / MSE

def _abs_diff(p: np.ndarray, g: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """|pred - gt| in 0..255 at the unknown pixels (int32, 1-D)."""
    return np.abs(p[unknown].astype(np.int32) - g[unknown].astype(np.int32))


def _sad(p: np.ndarray, g: np.ndarray, unknown: np.ndarray) -> float:
    # DIM: sum(|single(pred) - single(target)| / 255 .* (trimap == 128)) / 1000 (exact integers here)
    return int(_abs_diff(p, g, unknown).sum(dtype=np.int64)) / 255.0 / 1000.0


def _mse(p: np.ndarray, g: np.ndarray, unknown: np.ndarray) -> float:
    # DIM: sum(((pred - target) / 255).^2 .* (trimap == 128)) / sum(trimap == 128)
    d = _abs_diff(p, g, unknown).astype(np.int64)
    if d.size == 0:
        raise DataError("trimap has no unknown (128) pixels, so MSE is undefined "
                        "(the DIM code divides by their number); give the trimap an unknown region")
    return int(np.dot(d, d)) / (255.0 * 255.0) / d.size


# --------------------------------------------------------------------------- Grad

def _gauss_factors(sigma: float = GRAD_SIGMA, eps: float = GRAD_EPS) -> Tuple[np.ndarray, np.ndarray]:
    """The 1-D factors of gaussgradient.m's kernel, each with unit L2 norm.

    hx(i, j) = g(i) * dg(j), so hx / ||hx||_F = (g / ||g||) (x) (dg / ||dg||): the filter is separable.
    """
    h = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * eps)))
    x = np.arange(-h, h + 1, dtype=np.float64)
    g = np.exp(-x ** 2 / (2.0 * sigma ** 2)) / (sigma * math.sqrt(2.0 * math.pi))
    dg = -x * g / sigma ** 2
    return g / np.linalg.norm(g), dg / np.linalg.norm(dg)


def gradient_kernel(sigma: float = GRAD_SIGMA, eps: float = GRAD_EPS) -> np.ndarray:
    """The x-derivative kernel ``hx`` of DIM's gaussgradient.m (9x9 for sigma 1.4), unit L2 norm.

    Rows are y (index i), columns x (index j): ``hx[i, j] = g(i) * dg(j) / ||g dg||``; ``hy = hx.T``.
    """
    g, dg = _gauss_factors(sigma, eps)
    return np.outer(g, dg)


_G1, _DG1 = _gauss_factors()
# imfilter(..., 'conv') convolves; cv2 correlates, so the kernels are flipped. g is symmetric and
# dg antisymmetric, so the flip only changes the sign of gx and gy, never the magnitude.
_CONV_G, _CONV_DG = _G1[::-1].copy(), _DG1[::-1].copy()


def _grad_magnitude(a: np.ndarray) -> np.ndarray:
    """|gaussgradient(mat2gray(a), 1.4)|: (H, W) uint8 -> (H, W) float64."""
    lo, hi = int(a.min()), int(a.max())
    if hi == lo:  # mat2gray of a constant image: double(A) clipped to [0, 1]; its gradient is 0
        lut = np.clip(np.arange(256, dtype=np.float64), 0.0, 1.0)
    else:         # mat2gray: (A - min) / (max - min)
        lut = (np.arange(256, dtype=np.float64) - lo) / (hi - lo)
    x = cv2.LUT(a, lut)  # (H, W) float64
    # gx = imfilter(x, hx, 'replicate', 'conv') with hx = g(row) * dg(col); gy with hy = hx'.
    gx = cv2.sepFilter2D(x, cv2.CV_64F, _CONV_DG, _CONV_G, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.sepFilter2D(x, cv2.CV_64F, _CONV_G, _CONV_DG, borderType=cv2.BORDER_REPLICATE)
    return cv2.magnitude(gx, gy)  # sqrt(gx^2 + gy^2)


def _grad(p: np.ndarray, g: np.ndarray, unknown: np.ndarray) -> float:
    if not unknown.any():
        return 0.0
    d = _grad_magnitude(p)
    d -= _grad_magnitude(g)
    np.square(d, out=d)
    return float(np.sum(d, where=unknown)) / 1000.0


# --------------------------------------------------------------------------- Conn

def _largest_component(mask: np.ndarray) -> Tuple[np.ndarray, int]:
    """Labels (H, W) int32 of the 4-connected components of ``mask`` (uint8 0/1) and the label of
    the largest one (0 when there is none). Label 0 is the background and never a candidate (GCA's
    port counts it, and then takes the background for the largest component).

    Ties are broken as MATLAB does: bwconncomp numbers components in column-major order of their
    first pixel, and ``max`` returns the first of equal sizes.
    """
    n, labels = cv2.connectedComponents(mask, connectivity=4, ltype=cv2.CV_32S)
    if n <= 1:
        return labels, 0
    areas = np.bincount(labels.ravel(), minlength=n)
    areas[0] = -1  # the background is not a component
    best = int(np.argmax(areas))
    tied = areas == areas[best]
    if np.count_nonzero(tied) > 1:
        hit = tied[labels]                          # (H, W): pixel belongs to a tied component
        col = int(np.argmax(hit.any(axis=0)))       # leftmost column touching one of them
        best = int(labels[int(np.argmax(hit[:, col])), col])  # its first such row: column-major first
    return labels, best


def _conn_levels(p: np.ndarray, g: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """DIM's l map at the unknown pixels, as threshold indices 0..10 (l = index / 10), 1-D in the
    order of ``p[unknown]``.

    l = -1 everywhere; for t = 0.1, ..., 1.0, every pixel still at -1 and outside the largest
    4-connected component of (pred >= t) & (gt >= t) gets l = the previous threshold; finally l = 1
    where still -1. One l map for pred and gt together. Components are found on the whole image; l
    is needed only at unknown pixels, so only those are tracked.

    An empty intersection (e.g. at t = 1.0 when no pixel is 255 in both mattes) has no component, so
    every pixel still at -1 gets the previous threshold, as matting.md states and mmeval does. (The
    MATLAB line ``omega(cc.PixelIdxList{max_id}) = 1`` with an empty ``max_id`` is an odd corner of
    MATLAB indexing; we do not reproduce it.)
    """
    m = np.minimum(p, g)  # (pred >= t) & (gt >= t)  <=>  min(pred, gt) >= t
    level = np.full(m.shape, CONN_STEP_COUNT, dtype=np.int8)  # CONN_STEP_COUNT: "still -1"
    pending = unknown.copy()  # unknown pixels whose l is still -1
    for k in range(1, CONN_STEP_COUNT + 1):
        above = m >= _CONN_MIN_U8[k]
        stay = pending & above  # only pixels of the thresholded mask can be in its largest component
        if stay.any():
            labels, best = _largest_component(above.view(np.uint8))
            stay &= labels == best
        np.putmask(level, pending & ~stay, k - 1)
        pending = stay
        if not pending.any():
            break
    return level[unknown]


def _conn(p: np.ndarray, g: np.ndarray, unknown: np.ndarray) -> float:
    if not unknown.any():
        return 0.0
    l = _THRESH32[_conn_levels(p, g, unknown)]  # float32, as in single(pred) - l_map
    phi = []
    for a in (p, g):
        d = _ALPHA32[a[unknown]] - l               # d = alpha - l (single precision)
        phi.append(np.float32(1.0) - d * (d >= np.float32(0.15)))  # phi = 1 - d .* (d >= 0.15)
    return float(np.abs(phi[0] - phi[1]).sum(dtype=np.float64)) / 1000.0


# --------------------------------------------------------------------------- public API

def sad(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    """Sum of absolute differences over the unknown region, alpha in [0, 1], divided by 1000.

    Args:
        pred: (H, W) predicted matte, uint8 0..255 or float in [0, 1].
        gt: (H, W) ground-truth matte, same conventions.
        trimap: (H, W) trimap, 0..255; unknown = 128.
    """
    return _sad(*_prepare(pred, gt, trimap))


def mse(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    """Mean squared error over the unknown pixels, alpha in [0, 1], not scaled.

    Raises:
        DataError: the trimap has no unknown pixel (DIM divides by zero).
    """
    return _mse(*_prepare(pred, gt, trimap))


def grad(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    """Gradient error: min-max normalise each matte, filter with DIM's 9x9 Gaussian-derivative
    kernels (sigma 1.4, unit L2 norm, replicated borders), sum over the unknown region of the
    squared difference of gradient magnitudes; divided by 1000."""
    return _grad(*_prepare(pred, gt, trimap))


def conn(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> float:
    """Connectivity error (thresholds 0.1..1.0 in single precision, largest 4-connected component
    of the intersection, phi = 1 - d (d >= 0.15)), summed over the unknown region; divided by 1000."""
    return _conn(*_prepare(pred, gt, trimap))


def compute_all(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> Dict[str, float]:
    """All four DIM metrics of one image: ``{"SAD", "MSE", "Grad", "Conn"}`` (SAD, Grad, Conn / 1000;
    MSE unscaled).

    Raises:
        DataError: shapes differ, values are out of range, or the trimap has no unknown pixel.
    """
    p, g, unknown = _prepare(pred, gt, trimap)
    return {"SAD": _sad(p, g, unknown), "MSE": _mse(p, g, unknown),
            "Grad": _grad(p, g, unknown), "Conn": _conn(p, g, unknown)}


# --------------------------------------------------------------------------- reporting

def summarise(per_image: Mapping[str, Mapping[str, float]]) -> Dict[str, Any]:
    """The eval JSON object from per-image scores: means over images, count, per_image (DIM
    convention: SAD/1000, MSE unscaled, Grad/1000, Conn/1000)."""
    count = len(per_image)
    out: Dict[str, Any] = {}
    for key in METRIC_NAMES:
        out[key] = math.fsum(s[key] for s in per_image.values()) / count if count else float("nan")
    out["count"] = count
    out["per_image"] = {name: {k: float(s[k]) for k in METRIC_NAMES} for name, s in per_image.items()}
    return out


def format_table(result: Mapping[str, Any], title: str = "DIM metrics") -> str:
    """A small text table of :func:`summarise`'s means: SAD, MSE x 1e3, Grad, Conn, count."""
    head = (f"{title} (mean over {result['count']} image(s); SAD, Grad, Conn divided by 1000 as in "
            "DIM; MSE shown x 1e3)")
    cols = f"{'SAD':>10} {'MSE x1e3':>10} {'Grad':>10} {'Conn':>10} {'count':>7}"
    vals = (f"{result['SAD']:>10.4g} {result['MSE'] * 1e3:>10.4g} {result['Grad']:>10.4g} "
            f"{result['Conn']:>10.4g} {result['count']:>7d}")
    return "\n".join((head, cols, vals))
