"""Training augmentation: determinism, shapes, the composite equation, unknown-centred crops, merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atldas.data.augment import (Augment, compose_official, cover_background, make_sample,
                                 merge_foregrounds)

IDENTITY = dict(scale=(1.0, 1.0), shear=0.0, flip_prob=0.0, rotate=0.0, hue=0.0, saturation=0.0,
                value=0.0)


def _data(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    fg = rng.random((h, w, 3), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip((xx - w / 3) / (w / 3), 0, 1).astype(np.float32)  # bg | ramp | fg
    bg = rng.random((h + 10, w + 20, 3), dtype=np.float32)
    return fg, alpha, bg


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in ("image", "alpha", "trimap", "fg", "bg"))


def test_deterministic_per_seed():
    fg, alpha, bg = _data()
    aug = Augment(crop=32)
    a = aug(fg, alpha, bg, np.random.default_rng(7))
    b = aug(fg, alpha, bg, np.random.default_rng(7))
    c = aug(fg, alpha, bg, np.random.default_rng(8))
    assert _same(a, b)
    assert not _same(a, c)


@pytest.mark.parametrize("crop,size", [(32, (48, 64)), (80, (48, 64)), ((16, 40), (48, 64)),
                                       ((64, 20), (30, 30))])
def test_output_shapes_are_the_crop(crop, size):
    fg, alpha, bg = _data(*size)
    s = Augment(crop=crop)(fg, alpha, bg, np.random.default_rng(0), name="x.png")
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    assert s["image"].shape == s["fg"].shape == s["bg"].shape == (3, ch, cw)
    assert s["alpha"].shape == s["trimap"].shape == (1, ch, cw)
    assert s["trimap_onehot"].shape == (3, ch, cw)
    assert s["name"] == "x.png"
    for k in ("image", "alpha", "fg", "bg", "trimap_onehot"):
        assert s[k].dtype == torch.float32
        assert float(s[k].min()) >= 0.0 and float(s[k].max()) <= 1.0
    assert set(torch.unique(s["trimap"]).tolist()) <= {0, 128, 255} and s["trimap"].dtype == torch.uint8
    assert torch.equal(s["trimap_onehot"].sum(0), torch.ones(ch, cw))


def test_composite_equation_holds():
    fg, alpha, bg = _data()
    for seed in range(4):
        s = Augment(crop=40, random_bg_crop=bool(seed % 2))(fg, alpha, bg, np.random.default_rng(seed))
        a = s["alpha"]
        torch.testing.assert_close(s["image"], a * s["fg"] + (1 - a) * s["bg"], rtol=0, atol=1e-6)


def test_crop_is_centred_on_unknown_pixels():
    h = w = 300
    alpha = np.zeros((h, w), np.float32)
    alpha[250:270, 20:40] = 0.5  # one small fractional patch far from the centre
    alpha[270:290, 20:40] = 1.0
    fg = np.full((h, w, 3), 0.7, np.float32)
    bg = np.zeros((h, w, 3), np.float32)
    aug = Augment(crop=32, rotate_min_size=10_000)
    for seed in range(8):
        s = aug(fg, alpha, bg, np.random.default_rng(seed))
        a = s["alpha"]
        assert bool(((a > 0) & (a < 1)).any())
        assert bool((s["trimap"] == 128).any())


def test_binary_alpha_crop_lands_on_the_edge():
    alpha = np.zeros((200, 200), np.float32)
    alpha[150:, 150:] = 1.0
    fg = np.ones((200, 200, 3), np.float32)
    s = Augment(crop=24, **IDENTITY)(fg, alpha, fg, np.random.default_rng(0))
    a = s["alpha"]
    assert bool((a == 0).any()) and bool((a == 1).any())


def test_merge_formula():
    rng = np.random.default_rng(1)
    f1, f2 = rng.random((2, 16, 20, 3), dtype=np.float32)
    a1, a2 = rng.random((2, 16, 20), dtype=np.float32)
    fg, alpha = merge_foregrounds(f1, a1, f2, a2)
    np.testing.assert_allclose(alpha, 1 - (1 - a1) * (1 - a2), atol=1e-6)
    np.testing.assert_allclose(fg, a1[..., None] * f1 + (1 - a1[..., None]) * f2, atol=1e-6)
    # A fully opaque merge keeps the first foreground.
    ones = np.ones_like(a1)
    fg, alpha = merge_foregrounds(f1, ones, f2, a2)
    np.testing.assert_array_equal(alpha, ones)
    np.testing.assert_array_equal(fg, f1)


def test_merge_inside_augment():
    rng = np.random.default_rng(2)
    f1, f2 = rng.random((2, 24, 32, 3), dtype=np.float32)
    a1, a2 = rng.random((2, 24, 32), dtype=np.float32)
    bg = rng.random((24, 32, 3), dtype=np.float32)
    s = Augment(crop=(24, 32), **IDENTITY)(f1, a1, bg, np.random.default_rng(0), fg2=f2, alpha2=a2)
    np.testing.assert_allclose(s["alpha"][0].numpy(), 1 - (1 - a1) * (1 - a2), atol=1e-6)
    np.testing.assert_allclose(s["fg"].permute(1, 2, 0).numpy(),
                               a1[..., None] * f1 + (1 - a1[..., None]) * f2, atol=1e-6)
    # The second foreground is resized to the first's size.
    s2 = Augment(crop=(24, 32), **IDENTITY)(f1, a1, bg, np.random.default_rng(0),
                                            fg2=f2[:12, :16], alpha2=a2[:12, :16])
    assert s2["alpha"].shape == (1, 24, 32)


def test_identity_settings_keep_the_pixels():
    fg, alpha, bg = _data(24, 32)
    s = Augment(crop=(24, 32), **IDENTITY)(fg, alpha, bg, np.random.default_rng(3))
    np.testing.assert_array_equal(s["alpha"][0].numpy(), alpha)
    np.testing.assert_array_equal(s["fg"].permute(1, 2, 0).numpy(), fg)
    np.testing.assert_array_equal(s["bg"].permute(1, 2, 0).numpy(), bg[:24, :32])  # top-left


def test_rotation_only_for_large_images():
    aug = Augment(crop=16, scale=(1, 1), shear=0, flip_prob=0, rotate=30)
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(aug.affine_matrix(20, 20, rng), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    m = aug.affine_matrix(40, 40, np.random.default_rng(0))
    assert abs(m[0, 1]) > 1e-3  # rotated
    np.testing.assert_allclose(m[:, :2] @ m[:, :2].T, np.eye(2), atol=1e-9)  # a pure rotation


def test_affine_flip_and_scale_ranges():
    aug = Augment(crop=16, rotate=0)
    flips = 0
    for seed in range(40):
        m = aug.affine_matrix(50, 50, np.random.default_rng(seed))
        flips += m[0, 0] < 0
        sx = abs(m[0, 0])
        assert 0.8 <= sx <= 1.25 and 0.8 <= m[1, 1] <= 1.25
    assert 5 < flips < 35


def test_jitter_changes_colour_not_alpha():
    fg, alpha, bg = _data(24, 32)
    s = Augment(crop=(24, 32), **{**IDENTITY, "hue": 0.2, "saturation": 0.3, "value": 0.3})(
        fg, alpha, bg, np.random.default_rng(5))
    np.testing.assert_array_equal(s["alpha"][0].numpy(), alpha)
    assert not np.allclose(s["fg"].permute(1, 2, 0).numpy(), fg, atol=1e-3)


def test_compose_official_and_cover():
    fg = np.full((24, 32, 3), 0.25, np.float32)
    alpha = np.full((24, 32), 0.5, np.float32)
    bg = np.arange(40 * 50 * 3, dtype=np.float32).reshape(40, 50, 3) / (40 * 50 * 3)
    image, used = compose_official(fg, alpha, bg)
    np.testing.assert_array_equal(used, bg[:24, :32])
    np.testing.assert_allclose(image[3, 5], 0.5 * 0.25 + 0.5 * bg[3, 5], rtol=1e-6)
    # Smaller in one direction: resized keeping the aspect ratio (ratio = max(32/40, 24/10) = 2.4).
    small = np.full((10, 40, 3), 0.3, np.float32)
    np.testing.assert_allclose(cover_background(small, 24, 32), 0.3, atol=1e-6)


def test_make_sample_without_alpha():
    s = make_sample(np.zeros((4, 5, 3)), np.full((4, 5), 128, np.uint8), name="a.png")
    assert "alpha" not in s and "fg" not in s
    assert s["trimap"].shape == (1, 4, 5) and int(s["trimap"][0, 0, 0]) == 128
    assert torch.equal(s["trimap_onehot"][1], torch.ones(4, 5))


def test_the_affine_keeps_the_image_centre_and_a_flip_mirrors_exactly():
    # every draw (scale, shear, flip, rotation) is about the centre pixel ((w - 1) / 2, (h - 1) / 2)
    h, w = 40, 60
    aug = Augment(crop=16, rotate_min_size=1)
    for seed in range(20):
        m = aug.affine_matrix(h, w, np.random.default_rng(seed))
        np.testing.assert_allclose(m @ [(w - 1) / 2, (h - 1) / 2, 1.0], [(w - 1) / 2, (h - 1) / 2], atol=1e-9)
    # a flip alone maps column x to w - 1 - x: the warped image is the mirror image, pixel for pixel
    fg, alpha, _ = _data(h, w)
    flip = Augment(crop=16, **{**IDENTITY, "flip_prob": 1.0})
    m = flip.affine_matrix(h, w, np.random.default_rng(0))
    warped_fg, warped_alpha = Augment._warp(fg, alpha, m)
    np.testing.assert_allclose(warped_alpha, alpha[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(warped_fg, fg[:, ::-1], atol=1e-6)


@pytest.mark.parametrize("y,x,top,left", [(50, 70, 50 - 8, 70 - 12),  # inside: the pixel at the crop's centre
                                          (3, 70, 0, 70 - 12),  # near the top: clamped to the image
                                          (95, 118, 100 - 16, 120 - 24)])  # near the bottom right corner
def test_the_crop_is_centred_on_the_unknown_pixel(y, x, top, left):
    alpha = np.zeros((100, 120), np.float32)
    alpha[y, x] = 0.5  # the only unknown pixel
    assert Augment(crop=(16, 24)).crop_origin(alpha, np.random.default_rng(0)) == (top, left)
