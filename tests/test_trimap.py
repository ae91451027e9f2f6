"""Trimaps from alpha: separate random erosions of the foreground and the background with elliptical
kernels whose diameters are drawn from [k_min, k_max], both ends included; the one-hot order."""

import cv2
import numpy as np
import pytest

from atldas.data.trimap import BG, FG, UNKNOWN, erode_mask, one_hot_trimap, trimap_from_alpha


def _square(size: int = 48, lo: int = 12, hi: int = 36) -> np.ndarray:
    """Background around an opaque square with a one-pixel fractional rim."""
    a = np.zeros((size, size), np.float32)
    a[lo - 1:hi + 1, lo - 1:hi + 1] = 0.5
    a[lo:hi, lo:hi] = 1.0
    return a


@pytest.mark.parametrize("k", [1, 2, 7, 30])
def test_one_kernel_size_is_the_gca_erosion(k):
    a = _square()
    tri = trimap_from_alpha(a, rng=np.random.default_rng(0), k_min=k, k_max=k)
    ellipse = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    fg = cv2.erode((a >= 1.0).astype(np.uint8), ellipse).astype(bool) if k > 1 else a >= 1.0
    bg = cv2.erode((a <= 0.0).astype(np.uint8), ellipse).astype(bool) if k > 1 else a <= 0.0
    np.testing.assert_array_equal(tri == FG, fg)
    np.testing.assert_array_equal(tri == BG, bg)
    np.testing.assert_array_equal(tri == UNKNOWN, ~fg & ~bg)
    assert tri.dtype == np.uint8


def test_kernel_sizes_reach_both_ends_of_the_range_for_fg_and_bg_separately():
    a = _square()
    fg_counts = {int(erode_mask(a >= 1.0, k).sum()): k for k in (1, 2, 3)}
    bg_counts = {int(erode_mask(a <= 0.0, k).sum()): k for k in (1, 2, 3)}
    assert len(fg_counts) == len(bg_counts) == 3  # the three sizes erode differently
    pairs = set()
    for seed in range(60):
        tri = trimap_from_alpha(a, rng=np.random.default_rng(seed), k_min=1, k_max=3)
        pairs.add((fg_counts[int((tri == FG).sum())], bg_counts[int((tri == BG).sum())]))
    assert {k for k, _ in pairs} == {k for _, k in pairs} == {1, 2, 3}
    assert len(pairs) > 3  # drawn separately: not always the same size for both


def test_the_image_border_counts_as_inside_the_eroded_region():
    a = np.ones((20, 20), np.float32)
    a[:, :5] = 0.0  # foreground touching three borders, background touching three
    tri = trimap_from_alpha(a, rng=np.random.default_rng(0), k_min=5, k_max=5)
    assert (tri[:, -1] == FG).all() and (tri[0, 8:] == FG).all()  # the foreground is not eroded at the edge
    assert (tri[:, 0] == BG).all()
    assert erode_mask(np.ones((4, 4), bool), 3).all()


def test_one_hot_order_is_background_unknown_foreground():
    t = np.array([[BG, UNKNOWN, FG]], np.uint8)
    oh = one_hot_trimap(t)
    assert oh.shape == (3, 1, 3) and oh.dtype == np.float32
    np.testing.assert_array_equal(oh[:, 0, :], np.eye(3, dtype=np.float32))
