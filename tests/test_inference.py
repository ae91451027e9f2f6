"""Padded/tiled full-resolution inference (atldas.matting.inference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from atldas.errors import ConfigError, DataError
from atldas.matting.inference import (clamp_by_trimap, estimate_foreground, predict_alpha, tile_origins,
                                      tile_weights)
from atldas.models.base import MattingModel
from atldas.models.zoo import resolve_model


class Spy(nn.Module):
    """Returns ``scale * R - shift`` (the red channel) and records the input shapes it saw."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0) -> None:
        super().__init__()
        self.scale, self.shift, self.shapes = scale, shift, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return x[:, :1] * self.scale - self.shift


class Local(nn.Module):
    """A network with a bounded receptive field (well under 16 px): convs, a stride-2 level, BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.out = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x):
        y = nn.functional.interpolate(self.down(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.out(y))


def _model(net: nn.Module) -> MattingModel:
    return MattingModel(name=type(net).__name__.lower(), build=lambda: net)


def scene(h: int, w: int, seed: int = 0):
    """A smooth image with noise and a round trimap (bg outside, unknown ring, fg centre)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([np.sin(xx / 9.0) * 0.4 + 0.5, np.cos(yy / 7.0) * 0.4 + 0.5,
                    0.5 + 0.2 * rng.standard_normal((h, w))], -1).clip(0, 1).astype(np.float32)
    r = np.hypot(yy - h / 2, xx - w / 2)
    tri = np.where(r < min(h, w) / 5, 255, np.where(r < min(h, w) / 2.5, 128, 0)).astype(np.uint8)
    return img, tri


@pytest.mark.parametrize("h,w", [(37, 50), (64, 64), (5, 7), (33, 95), (1, 40)])
def test_padding_to_32_and_crop_back(h, w):
    img, _ = scene(h, w)
    tri = np.full((h, w), 128, np.uint8)
    spy = Spy()
    alpha = predict_alpha(_model(spy), spy, img, tri)
    (shape,) = spy.shapes
    assert shape[:2] == (1, 6) and shape[2] % 32 == 0 and shape[3] % 32 == 0
    assert shape[2] - h < 32 and shape[3] - w < 32
    assert alpha.shape == (h, w) and alpha.dtype == np.float32
    # the crop undoes the (centred) pad exactly: the spy returns the red channel
    np.testing.assert_array_equal(alpha, img[:, :, 0])


def test_clamp_and_trimap_clamping():
    h, w = 40, 60
    img, _ = scene(h, w)
    tri = np.full((h, w), 128, np.uint8)
    tri[:, :15] = 0
    tri[:, -15:] = 255
    tri[:3, 20:30] = 100  # near-grey: read as unknown, as the readers do
    spy = Spy(scale=3.0, shift=1.0)  # values outside [0, 1]
    alpha = predict_alpha(_model(spy), spy, img, tri)
    assert np.all(alpha[tri == 0] == 0.0) and np.all(alpha[tri == 255] == 1.0)
    unknown = (tri == 128) | (tri == 100)
    np.testing.assert_allclose(alpha[unknown], np.clip(3 * img[:, :, 0] - 1, 0, 1)[unknown], atol=1e-6)
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    np.testing.assert_array_equal(clamp_by_trimap(np.full((2, 2), 2.0), np.array([[0, 128], [255, 128]])),
                                  np.array([[0, 1], [1, 1]], np.float32))


def test_uint8_image_and_bad_shapes():
    img, tri = scene(20, 30)
    spy = Spy()
    a = predict_alpha(_model(spy), spy, (img * 255).round().astype(np.uint8), tri)
    assert a.shape == (20, 30)
    with pytest.raises(DataError, match="30x20.*29x20"):
        predict_alpha(_model(spy), spy, img, tri[:, :29])
    with pytest.raises(DataError, match="RGB"):
        predict_alpha(_model(spy), spy, img[:, :, :2], tri)


def test_tile_geometry():
    assert tile_origins(100, 128, 64) == [0]
    assert tile_origins(256, 128, 64) == [0, 64, 128]
    assert tile_origins(288, 128, 64) == [0, 64, 128, 160]
    w = tile_weights((256, 256), (64, 0), (128, 128), overlap=64)
    assert w.shape == (128, 128)
    assert torch.all(w[:16] == 0) and torch.all(w[-16:] == 0)  # outer quarter of the overlap: 0
    assert torch.all(w[48:80, :80] == 1)  # interior and the image border (left): 1
    assert torch.all(w[16:-16, :16] > 0)  # no ramp at the image border
    for tile, overlap in [(100, 32), (32, 0), (128, 128), (128, -1)]:
        with pytest.raises(ConfigError, match="tile"):
            spy = Spy()
            predict_alpha(_model(spy), spy, *scene(40, 40), tile=tile, overlap=overlap)


def test_tiled_equals_untiled_when_the_image_fits_one_tile():
    torch.manual_seed(0)
    net = Local().eval()
    img, tri = scene(70, 90)  # padded to 96 x 96
    a = predict_alpha(_model(net), net, img, tri)
    b = predict_alpha(_model(net), net, img, tri, tile=96)
    np.testing.assert_array_equal(a, b)


def test_tiled_equals_untiled_for_a_bounded_receptive_field():
    """Receptive field < overlap / 4: every blended pixel sees what it sees untiled (rounding only)."""
    torch.manual_seed(0)
    net = Local().eval()
    img, tri = scene(150, 230)  # padded 160 x 256: 3 x 5 tiles of 96 with a 64 px overlap
    tri[:] = 128
    a = predict_alpha(_model(net), net, img, tri)
    b = predict_alpha(_model(net), net, img, tri, tile=96, overlap=64)
    assert np.abs(a - b).max() < 1e-5


def test_tiled_close_to_untiled_for_a_searched_network(tmp_path):
    """CheapMatting macro (tiny): GroupNorm and pyramid pooling see the whole input, so tiles differ a
    little; with a generous overlap the blend stays within 1e-2 mean absolute difference."""
    from derived_models import get_genotype

    g = get_genotype("atldas_cifar100").replace(space={"name": "tiny", "macro": {"C": 8, "layers": 3}})
    model = resolve_model(g.save(tmp_path / "tiny.json"))
    torch.manual_seed(0)
    net = model.build().eval()
    img, tri = scene(150, 230)
    a = predict_alpha(model, net, img, tri)
    b = predict_alpha(model, net, img, tri, tile=160, overlap=96)
    unknown = tri == 128
    assert np.abs(a - b)[unknown].mean() < 1e-2
    np.testing.assert_array_equal(a[tri != 128], b[tri != 128])  # both clamped by the trimap


def test_estimate_foreground_shape_and_opaque_case():
    img, _ = scene(24, 32)
    alpha = np.random.default_rng(1).random((24, 32)).astype(np.float32)
    fg = estimate_foreground(img, alpha)
    assert fg.shape == (24, 32, 3) and fg.dtype == np.float32
    assert fg.min() >= 0.0 and fg.max() <= 1.0
    np.testing.assert_allclose(estimate_foreground(img, np.ones((24, 32))), img, atol=1e-3)
    with pytest.raises(DataError):
        estimate_foreground(img, alpha[:, :10])



def test_prediction_runs_in_channels_last_and_matches_the_contiguous_forward(tmp_path):
    """predict_alpha feeds the network a channels_last input; a searched network gives what its
    plain contiguous forward gives on the same padded input (to float rounding: the convolutions sum
    in another order)."""
    from derived_models import get_genotype
    from atldas.matting.inference import PAD_MULTIPLE, network_input
    from atldas.tensors import centred_pad

    g = get_genotype("atldas_cifar100").replace(space={"name": "tiny", "macro": {"C": 8, "layers": 3}})
    model = resolve_model(g.save(tmp_path / "tiny.json"))
    torch.manual_seed(0)
    net = model.build().eval()
    img, tri = scene(70, 90)
    seen = []
    hook = net.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    a = predict_alpha(model, net, img, tri)
    hook.remove()
    assert seen and seen[0].is_contiguous(memory_format=torch.channels_last)
    xp, (left, _, top, _) = centred_pad(network_input(img, tri), PAD_MULTIPLE)
    with torch.no_grad():
        ref = model.forward(net, xp.contiguous())[0, 0, top:top + 70, left:left + 90].numpy()
    unknown = tri == 128
    np.testing.assert_allclose(a[unknown], np.clip(ref, 0, 1)[unknown], atol=1e-4)


def test_max_size_predicts_on_a_scaled_copy():
    """--max-size: the network sees the scaled copy (longer side N), the known regions stay exact, and a
    smooth matte comes back close to the full-resolution one; images within N are untouched."""
    net = Spy(scale=1.0)
    img, tri = scene(200, 300)
    full = predict_alpha(_model(net), net, img, tri)
    net.shapes.clear()
    small = predict_alpha(_model(net), net, img, tri, max_size=150)
    assert net.shapes == [(1, 6, 128, 160)]  # 100 x 150 padded to multiples of 32
    assert small.shape == (200, 300)
    np.testing.assert_array_equal(small[tri == 0], 0.0)
    np.testing.assert_array_equal(small[tri == 255], 1.0)
    unknown = tri == 128
    assert np.abs(small - full)[unknown].mean() < 0.1  # the red channel's noise is averaged away, not its waves
    np.testing.assert_array_equal(predict_alpha(_model(net), net, img, tri, max_size=300), full)


def test_max_size_shrinks_the_trimap_without_inventing_grey_levels(monkeypatch):
    """The downscaled trimap must keep 0/128/255: a linear resize made grey edges that the network input
    read as background or foreground."""
    import atldas.matting.inference as inf

    seen = []
    real = inf.predict_alpha

    def spy(model, net, image, trimap, **kw):
        seen.append(np.unique(trimap))
        return real(model, net, image, trimap, **kw)

    monkeypatch.setattr(inf, "predict_alpha", spy)
    img, tri = scene(96, 160)
    net = Local().eval()
    alpha = inf.predict_alpha(_model(net), net, img, tri, max_size=64)
    assert alpha.shape == tri.shape and len(seen) == 2  # the call and its downscaled one
    assert set(seen[1].tolist()) <= {0, 128, 255}


def test_the_matting_loss_scores_the_whole_image_when_nothing_is_unknown():
    """A crop without unknown pixels scored 0 (a free pass) before the all-ones fallback."""
    from atldas.matting.losses import MattingLoss, weighted_l1

    g = torch.Generator().manual_seed(0)
    pred, alpha = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    onehot = torch.zeros(2, 3, 16, 16)
    onehot[:, 2] = 1.0  # all foreground
    batch = {"alpha": alpha, "trimap_onehot": onehot, "fg": torch.rand(2, 3, 16, 16, generator=g),
             "bg": torch.rand(2, 3, 16, 16, generator=g), "image": torch.rand(2, 3, 16, 16, generator=g)}
    parts = MattingLoss(l1=1.0, lap=0.0, comp=0.0)(pred, batch)
    assert float(parts["l1"]) == pytest.approx(float(weighted_l1(pred, alpha, torch.ones(2, 1, 16, 16))))
    assert float(parts["l1"]) > 0
