"""The DIM metrics (atldas.matting.metrics) against values worked out by hand, against the cases where
known ports disagree, and against a slow loop-by-loop reference of the DIM MATLAB code."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest

from atldas.errors import DataError
from atldas.matting import metrics

U = 128  # unknown


def u8(rows):
    return np.array(rows, dtype=np.uint8)


# --------------------------------------------------------------------------- SAD / MSE by hand

def test_sad_mse_by_hand():
    pred = u8([[0, 51], [255, 102]])
    gt = u8([[0, 0], [204, 0]])
    tri = u8([[U, U], [U, 0]])  # (1, 1) is background: its error 102 is not counted
    # unknown diffs: 0, 51, 51 (values / 255: 0, 0.2, 0.2)
    # SAD = (0 + 0.2 + 0.2) / 1000 = 0.0004
    assert metrics.sad(pred, gt, tri) == pytest.approx(0.4e-3, rel=1e-12)
    # MSE = (0 + 0.04 + 0.04) / 3 unknown pixels = 0.026666..., not scaled
    assert metrics.mse(pred, gt, tri) == pytest.approx(0.08 / 3, rel=1e-12)


def test_float_inputs_are_the_8bit_values_over_255():
    rng = np.random.default_rng(1)
    p, g = rng.integers(0, 256, (2, 9, 11), dtype=np.uint8)
    tri = rng.choice(np.array([0, 128, 255], np.uint8), size=(9, 11))
    tri[0, 0] = 128
    ref = metrics.compute_all(p, g, tri)
    for cast in (lambda a: a.astype(np.float32) / 255, lambda a: a / 255.0, lambda a: a.astype(np.int64)):
        got = metrics.compute_all(cast(p), cast(g), tri)
        # equal up to summation order (numpy/cv2 SIMD paths depend on memory alignment)
        assert got == pytest.approx(ref, rel=1e-12, abs=1e-18)


def test_trimap_without_unknown():
    a = u8([[0, 255], [255, 0]])
    tri = u8([[0, 255], [255, 0]])
    assert metrics.sad(a, 255 - a, tri) == 0.0
    assert metrics.grad(a, 255 - a, tri) == 0.0
    assert metrics.conn(a, 255 - a, tri) == 0.0
    with pytest.raises(DataError, match="no unknown"):
        metrics.mse(a, 255 - a, tri)
    with pytest.raises(DataError, match="no unknown"):
        metrics.compute_all(a, 255 - a, tri)


@pytest.mark.parametrize("shapes, words", [
    (((4, 5), (4, 6), (4, 5)), "pred and gt have different shapes (4, 5) and (4, 6)"),
    (((4, 5), (4, 5), (5, 4)), "pred and trimap have different shapes (4, 5) and (5, 4)"),
])
def test_shape_mismatch_is_one_line(shapes, words):
    p, g, t = (np.zeros(s, np.uint8) for s in shapes)
    for fn in (metrics.sad, metrics.mse, metrics.grad, metrics.conn, metrics.compute_all):
        with pytest.raises(DataError) as err:
            fn(p, g, t)
        assert words in str(err.value) and "\n" not in str(err.value)


def test_bad_values():
    tri = np.full((2, 2), 128, np.uint8)
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        metrics.sad(np.full((2, 2), 2.0), np.zeros((2, 2)), tri)
    with pytest.raises(DataError, match="outside 0..255"):
        metrics.sad(np.full((2, 2), 300), np.zeros((2, 2), np.uint8), tri)
    with pytest.raises(DataError, match="2-D"):
        metrics.sad(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3)))
    with pytest.raises(DataError, match="0..255 scale"):
        metrics.sad(np.zeros((2, 2)), np.zeros((2, 2)), np.full((2, 2), 128 / 255))


# --------------------------------------------------------------------------- Grad by hand

def test_grad_kernel_is_dims_unit_norm_9x9():
    hx = metrics.gradient_kernel()
    # h = ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) * 1.4 * 0.01))) = ceil(3.6237) = 4 -> 9x9
    assert hx.shape == (9, 9)
    # normalised to unit L2 (Frobenius) norm -- not sum 1, not scipy's gaussian_filter / 10
    assert np.sum(hx ** 2) == pytest.approx(1.0, abs=1e-12)
    # g(0) = 1 / (1.4 sqrt(2 pi)) = 0.284959; g(1) = g(0) exp(-1 / 3.92) = 0.220797
    # dg(1) = -1 * g(1) / 1.96 = -0.112651
    # ||g|| over -4..4 = 0.448883, ||dg|| = 0.226714, product 0.101768
    # hx[4, 5] = g(0) dg(1) / 0.101768 = -0.315434   (row i = 0, column j = +1)
    assert hx[4, 5] == pytest.approx(-0.3154337161, abs=1e-9)
    assert hx[4, 4] == 0.0
    np.testing.assert_allclose(hx, -hx[:, ::-1], atol=1e-15)  # odd in x
    np.testing.assert_allclose(hx, hx[::-1, :], atol=1e-15)   # even in y


def test_grad_step_edge_by_hand():
    # A vertical step: columns 0..5 are 0, columns 6..11 are 255 (min-max normalised: 0 / 1). The
    # image is constant along y, so gy = 0 and gx(x) = G * sum_j I(x - j) dgn(j) (a convolution),
    # G = sum_i g(i) / ||g|| = 2.225460, dgn = dg / ||dg||.
    # At x = 6 the pixels I(6 - j) = 1 are j = -4..0: sum_{j=1..4} j g(j) / 1.96 / ||dg|| = 1.196156,
    # so |grad| = 2.225460 * 1.196156 = 2.661997 and (|grad pred| - 0)^2 = 7.086226.
    # At x = 7 one more term, dgn(1) = -0.496894: 2.225460 * (1.196156 - 0.496894) = 1.556191,
    # squared 2.421730.
    pred = np.zeros((5, 12), np.uint8)
    pred[:, 6:] = 255
    gt = np.full((5, 12), 90, np.uint8)  # constant: mat2gray keeps it flat, gradient 0
    tri = np.zeros((5, 12), np.uint8)
    tri[2, 6] = U
    assert metrics.grad(pred, gt, tri) == pytest.approx(7.0862262204e-3, rel=1e-9)
    tri[2, 7] = U
    assert metrics.grad(pred, gt, tri) == pytest.approx((7.0862262204 + 2.4217297276) * 1e-3, rel=1e-9)
    # the step as seen by scipy's gaussian_filter(sigma=1.4, order=1) / 10 (AIM, IndexNet) differs
    # by far: its derivative kernel sums to 1 per unit step, so |grad| ~ 0.40 at x = 6, not 2.66.


def test_grad_is_scale_invariant_by_min_max():
    # mat2gray normalises each matte: a 0/128 step and a 0/255 step have the same gradient -> 0.
    pred = np.zeros((6, 10), np.uint8)
    gt = np.zeros((6, 10), np.uint8)
    pred[:, 5:] = 128
    gt[:, 5:] = 255
    tri = np.full((6, 10), U, np.uint8)
    assert metrics.grad(pred, gt, tri) == pytest.approx(0.0, abs=1e-20)
    assert metrics.sad(pred, gt, tri) > 0


# --------------------------------------------------------------------------- Conn by hand

def test_conn_153_passes_threshold_06_in_single_precision():
    # One unknown pixel, pred = 153 (0.6 exactly), gt = 255. In single precision 153/255 = 0.6f
    # >= 0.6f, so the pixel is in the largest component for t = 0.1..0.6 and leaves it at 0.7:
    # l = 0.6. pred: d = 0.6 - 0.6 = 0 -> phi = 1; gt: d = 1 - 0.6 = 0.4 >= 0.15 -> phi = 0.6.
    # Conn = |1 - 0.6| / 1000 = 0.0004. (mmeval thresholds in float64 -- 153/255 = 0.6 <
    # 0.6000000000000001 -- gets l = 0.5 and 0.5 / 1000.)
    assert metrics.conn(u8([[153]]), u8([[255]]), u8([[U]])) == pytest.approx(0.4e-3, abs=1e-10)
    # and the same with the two swapped (Conn is symmetric in pred and gt)
    assert metrics.conn(u8([[255]]), u8([[153]]), u8([[U]])) == pytest.approx(0.4e-3, abs=1e-10)


def test_conn_background_is_not_a_component():
    # 1 x 5, all unknown. pred = [255, 127, 0, 0, 0], gt = [255, 204, 0, 0, 0]; min = [255, 127, 0, 0, 0].
    # t = 0.1..0.4: the mask is {0, 1}, one component; pixels 2..4 get l = 0 (at t = 0.1).
    # t = 0.5 (needs >= 128): the mask is {0}; pixel 1 leaves the component: l = 0.4.
    # t = 0.6..1.0: pixel 0 (255) stays in the component -> l = -1 -> 1.
    # pixel 0: d = 0 for both -> 0.  pixels 2..4: alpha 0, l = 0: d = 0 -> 0.
    # pixel 1: pred d = 127/255 - 0.4 = 0.098 < 0.15 -> phi 1; gt d = 0.8 - 0.4 = 0.4 -> phi 0.6.
    # Conn = 0.4 / 1000.
    # GCA's port takes the background (3 pixels > 2) as the "largest component" at t = 0.1 and gives
    # pixels 0 and 1 l = 0: pixel 1 then scores |(1 - 0.498) - (1 - 0.8)| = 77/255 = 0.302.
    pred = u8([[255, 127, 0, 0, 0]])
    gt = u8([[255, 204, 0, 0, 0]])
    tri = np.full((1, 5), U, np.uint8)
    assert metrics.conn(pred, gt, tri) == pytest.approx(0.4e-3, abs=1e-10)


def test_conn_ties_broken_in_matlab_order():
    # Two single-pixel components of the same size, A at (row 0, col 1) and B at (row 1, col 0):
    # pred [[0, 255], [255, 0]], gt [[0, 230], [255, 0]].  bwconncomp numbers components in
    # column-major order, so B comes first and MATLAB's max picks B for t = 0.1..0.9.
    # t = 0.1: the background pixels and A leave (l = 0).  t = 1.0: B (min 255) is the only
    # component, nothing else changes; B ends with l = 1 (d = 0 -> 0).
    # A: pred d = 1 - 0 = 1 -> phi 0; gt d = 230/255 = 0.902 -> phi 0.098 -> |diff| = 25/255.
    # Conn = 25 / 255 / 1000 = 9.8039e-5.  (A row-major labelling picks A and gets 0.)
    pred = u8([[0, 255], [255, 0]])
    gt = u8([[0, 230], [255, 0]])
    tri = np.full((2, 2), U, np.uint8)
    assert metrics.conn(pred, gt, tri) == pytest.approx(25 / 255 / 1000, abs=1e-10)
    # transposed, A comes first in column-major order: the roles swap and the score is 0
    # (A stays; B (pred = gt) leaves with l = 0: equal phi; A leaves at t = 1.0 with l = 0.9: d =
    # 0.1 and 0.002, both < 0.15)
    assert metrics.conn(pred.T, gt.T, tri) == pytest.approx(0.0, abs=1e-12)


def test_conn_l_comes_from_the_intersection():
    # 1 x 3: pred = [255, 255, 255], gt = [255, 0, 255]; the intersection splits into {0} and {2}
    # (same size: column-major first = pixel 0 wins). Pixel 1 leaves at t = 0.1 (l = 0), pixel 2
    # leaves at t = 0.1 too (l = 0), pixel 0 stays -> 1.
    # pixel 1: pred d = 1 -> phi 0; gt d = 0 -> phi 1: |diff| 1.  pixel 2: d = 1 both -> 0.
    # Conn = 1 / 1000. (Separate l maps per matte -- a pred-only map would keep all of pred
    # connected and give pixel 1 l = 1, phi 1: Conn 0.)
    pred = u8([[255, 255, 255]])
    gt = u8([[255, 0, 255]])
    assert metrics.conn(pred, gt, np.full((1, 3), U, np.uint8)) == pytest.approx(1e-3, abs=1e-10)


# --------------------------------------------------------------------------- slow reference

def _ref_dim(pred, gt, trimap):
    """The DIM MATLAB code, transcribed with loops over pixels (no vectorisation, no cv2/scipy)."""
    H, W = pred.shape
    unknown = [(y, x) for y in range(H) for x in range(W) if trimap[y, x] == 128]
    f32 = np.float32

    # compute_sad_loss.m / compute_mse_loss.m
    sad = sum(abs(int(pred[y, x]) - int(gt[y, x])) / 255 for y, x in unknown) / 1000
    mse = sum(((int(pred[y, x]) - int(gt[y, x])) / 255) ** 2 for y, x in unknown) / len(unknown)

    # compute_gradient_loss.m + gaussgradient.m
    sigma = 1.4
    h = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * 0.01)))
    gauss = lambda v: math.exp(-v * v / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi))
    dgauss = lambda v: -v * gauss(v) / sigma ** 2
    n = 2 * h + 1
    hx = [[gauss(i - h) * dgauss(j - h) for j in range(n)] for i in range(n)]
    norm = math.sqrt(sum(v * v for row in hx for v in row))
    hx = [[v / norm for v in row] for row in hx]
    hy = [[hx[j][i] for j in range(n)] for i in range(n)]

    def mat2gray(a):
        lo, hi = int(a.min()), int(a.max())
        if lo == hi:
            return [[min(max(float(a[y, x]), 0.0), 1.0) for x in range(W)] for y in range(H)]
        return [[(int(a[y, x]) - lo) / (hi - lo) for x in range(W)] for y in range(H)]

    def conv_replicate(img, k):  # imfilter(img, k, 'replicate', 'conv')
        out = [[0.0] * W for _ in range(H)]
        for y in range(H):
            for x in range(W):
                s = 0.0
                for i in range(n):
                    for j in range(n):
                        yy = min(max(y - (i - h), 0), H - 1)
                        xx = min(max(x - (j - h), 0), W - 1)
                        s += img[yy][xx] * k[i][j]
                out[y][x] = s
        return out

    def amp(a):
        im = mat2gray(a)
        gx, gy = conv_replicate(im, hx), conv_replicate(im, hy)
        return [[math.sqrt(gx[y][x] ** 2 + gy[y][x] ** 2) for x in range(W)] for y in range(H)]

    pa, ga = amp(pred), amp(gt)
    grad = sum((pa[y][x] - ga[y][x]) ** 2 for y, x in unknown) / 1000

    # compute_connectivity_error.m
    pa32 = [[f32(pred[y, x]) / f32(255) for x in range(W)] for y in range(H)]
    ga32 = [[f32(gt[y, x]) / f32(255) for x in range(W)] for y in range(H)]
    steps = [f32(k / 10) for k in range(11)]
    l_map = [[-1.0] * W for _ in range(H)]
    for ii in range(1, 11):
        t = steps[ii]
        on = [[pa32[y][x] >= t and ga32[y][x] >= t for x in range(W)] for y in range(H)]
        # bwconncomp(.., 4): scan in MATLAB's linear (column-major) order, flood fill
        seen = [[False] * W for _ in range(H)]
        comps = []
        for x in range(W):
            for y in range(H):
                if on[y][x] and not seen[y][x]:
                    comp, queue = [], deque([(y, x)])
                    seen[y][x] = True
                    while queue:
                        cy, cx = queue.popleft()
                        comp.append((cy, cx))
                        for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                            if 0 <= ny < H and 0 <= nx < W and on[ny][nx] and not seen[ny][nx]:
                                seen[ny][nx] = True
                                queue.append((ny, nx))
                    comps.append(comp)
        omega = set()
        if comps:
            sizes = [len(c) for c in comps]
            omega = set(comps[sizes.index(max(sizes))])  # max returns the first of equal sizes
        for y in range(H):
            for x in range(W):
                if l_map[y][x] == -1 and (y, x) not in omega:
                    l_map[y][x] = float(steps[ii - 1])
    conn = 0.0
    for y, x in unknown:
        l = f32(1.0) if l_map[y][x] == -1 else f32(l_map[y][x])
        dp, dg_ = f32(pa32[y][x] - l), f32(ga32[y][x] - l)
        phi_p = f32(1) - dp * f32(dp >= 0.15)
        phi_g = f32(1) - dg_ * f32(dg_ >= 0.15)
        conn += abs(float(phi_p) - float(phi_g))
    return {"SAD": sad, "MSE": mse, "Grad": grad, "Conn": conn / 1000}


def _random_case(rng, kind, shape=(12, 15)):
    if kind == "uniform":  # many tiny components and ties
        gt = rng.integers(0, 256, shape)
        pred = rng.integers(0, 256, shape)
    elif kind == "levels":  # few grey levels, incl. the exact thresholds 51, 102, 153, 204, 255
        levels = np.array([0, 51, 102, 127, 128, 153, 179, 204, 230, 255])
        gt = rng.choice(levels, shape)
        pred = np.where(rng.random(shape) < 0.6, gt, rng.choice(levels, shape))
    else:  # "blobs": smooth mattes with large components
        yy, xx = np.mgrid[:shape[0], :shape[1]]
        cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(3, 9)
        gt = np.clip((r - np.hypot(yy - cy, xx - cx)) / rng.uniform(1, 4), 0, 1) * 255
        pred = gt + rng.normal(0, 30, shape) * (rng.random(shape) < 0.5)
    gt = np.clip(np.rint(gt), 0, 255).astype(np.uint8)
    pred = np.clip(np.rint(pred), 0, 255).astype(np.uint8)
    trimap = rng.choice(np.array([0, 128, 255], np.uint8), shape, p=[0.2, 0.6, 0.2])
    trimap[rng.integers(shape[0]), rng.integers(shape[1])] = 128
    return pred, gt, trimap


@pytest.mark.parametrize("kind", ["uniform", "levels", "blobs"])
def test_matches_slow_reference(kind):
    rng = np.random.default_rng({"uniform": 0, "levels": 1, "blobs": 2}[kind])
    for _ in range(6):
        pred, gt, trimap = _random_case(rng, kind)
        ref = _ref_dim(pred, gt, trimap)
        got = metrics.compute_all(pred, gt, trimap)
        for key in metrics.METRIC_NAMES:
            assert got[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-12), (kind, key)


def test_single_metric_functions_agree_with_compute_all():
    pred, gt, trimap = _random_case(np.random.default_rng(7), "blobs", (30, 40))
    allm = metrics.compute_all(pred, gt, trimap)
    assert allm == pytest.approx({"SAD": metrics.sad(pred, gt, trimap), "MSE": metrics.mse(pred, gt, trimap),
                    "Grad": metrics.grad(pred, gt, trimap), "Conn": metrics.conn(pred, gt, trimap)},
                                 rel=1e-12)


def test_floats_off_the_8bit_grid_round_to_the_nearest_level():
    """A float prediction is quantised as DIM reads a saved PNG: round(255 x), not floor."""
    gt = np.zeros((2, 3), np.uint8)
    tri = np.full((2, 3), 128, np.uint8)
    for value, level in ((0.5, 128), (0.4990, 127), (0.0021, 1), (0.0019, 0), (0.9985, 255)):
        assert metrics.sad(np.full((2, 3), value), gt, tri) == metrics.sad(np.full((2, 3), level, np.uint8), gt, tri)


def test_only_trimap_value_128_is_unknown():
    """DIM's evaluation counts the pixels where the trimap is 128; a 127 or 64 left by resampling is not
    unknown (no range test)."""
    gt = np.zeros((1, 4), np.uint8)
    pred = np.full((1, 4), 255, np.uint8)
    tri = np.array([[128, 127, 64, 129]], np.uint8)
    assert metrics.sad(pred, gt, tri) == pytest.approx(1.0 / 1000)  # one pixel off by 1.0, in thousands
    assert metrics.mse(pred, gt, tri) == pytest.approx(1.0)  # over the one unknown pixel
