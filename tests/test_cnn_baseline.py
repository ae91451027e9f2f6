"""The hand-designed ResNet-style U-Net matting baseline."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from atldas.errors import ConfigError
from atldas.models.cnn_baseline import CNN_BASELINE_VARIANTS, CNNBaseline, build_cnn_baseline

CHEAPMATTING_PARAMS = 6_023_025


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_has_about_cheapmatting_parameter_count() -> None:
    with torch.device("meta"):
        model = build_cnn_baseline()
    assert n_params(model) == 5_965_489
    assert abs(n_params(model) - CHEAPMATTING_PARAMS) / CHEAPMATTING_PARAMS < 0.05


def test_width_multiplier_shrinks_the_network() -> None:
    with torch.device("meta"):
        counts = [n_params(build_cnn_baseline(width=w)) for w in (1.0, 0.75, 0.5, 0.25)]
    assert counts == sorted(counts, reverse=True)
    assert counts[2] < counts[0] / 3  # parameters scale ~ width^2


@pytest.mark.parametrize("variant", ["full", "small", "tiny"])
@pytest.mark.parametrize("size", [(64, 64), (72, 88)])
def test_forward_shape_and_range(variant: str, size: tuple) -> None:
    torch.manual_seed(0)
    model = build_cnn_baseline(variant=variant).eval()
    with torch.no_grad():
        alpha = model(torch.rand(2, 6, *size))
    assert alpha.shape == (2, 1, *size)
    assert torch.isfinite(alpha).all()
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0


def test_sigmoid_output_and_backward() -> None:
    torch.manual_seed(0)
    model = build_cnn_baseline(variant="tiny", out_act="sigmoid")
    alpha = model(torch.rand(1, 6, 40, 40))
    assert alpha.shape == (1, 1, 40, 40) and 0.0 < alpha.min() and alpha.max() < 1.0
    alpha.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_variants_registry_and_errors() -> None:
    assert {"full", "small", "tiny"} <= set(CNN_BASELINE_VARIANTS.names())
    assert isinstance(build_cnn_baseline(variant="tiny"), CNNBaseline)
    with pytest.raises(ConfigError, match="known cnn baseline variants"):
        build_cnn_baseline(variant="huge")
    with pytest.raises(ConfigError, match="unknown CNN baseline option"):
        build_cnn_baseline(widht=0.5)
    with pytest.raises(ConfigError, match="blocks"):
        build_cnn_baseline(blocks=(1, 1))
    with pytest.raises(ConfigError, match="out_act"):
        build_cnn_baseline(out_act="relu")
    with pytest.raises(ValueError, match="one-hot trimap"):
        build_cnn_baseline(variant="tiny")(torch.rand(1, 3, 32, 32))


def test_cost_is_comparable_to_cheapmatting() -> None:
    with torch.device("meta"):
        model = build_cnn_baseline().eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 6, 1024, 1024))
    macs = counter.get_total_flops() / 2  # the counter counts 2 per multiply-add
    assert 35e9 < macs < 45e9  # CheapMatting: 38.6 G MACs at 1024^2 by the same counter
