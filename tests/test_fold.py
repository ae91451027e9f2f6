"""BatchNorm folded into convolutions: the same outputs, fewer modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atldas.models.zoo import resolve_model
from atldas.utils.fold import fold_batchnorm


def _randomise_bn(net: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(m.num_features, generator=g))
                m.bias.data.copy_(torch.randn(m.num_features, generator=g))


def test_a_folded_network_computes_the_same():
    torch.manual_seed(0)
    mm = resolve_model("cheapmatting_darts_v2")  # DARTS ops: ReLU -> conv -> BN everywhere
    net = mm.build().eval()
    net.clamp = False  # random weights saturate the clamp; compare raw outputs
    _randomise_bn(net)
    x = torch.rand(1, 6, 64, 64)
    with torch.no_grad():
        before = mm.forward(net, x)
        n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        n = fold_batchnorm(net)
        after = mm.forward(net, x)
    assert before.std() > 0 and n > 0 and sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == n_bn - n
    assert float((after - before).abs().max()) < 1e-4


def test_fold_keeps_bias_layout_and_refuses_training_mode():
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=True)
    seq = nn.Sequential(conv, nn.BatchNorm2d(8, affine=False)).to(memory_format=torch.channels_last)
    _randomise_bn(seq, 1)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(seq)
    seq.eval()
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        ref = seq(x)
        assert fold_batchnorm(seq) == 1
        assert isinstance(seq[1], nn.Identity)
        assert seq[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(seq(x), ref, atol=1e-5)
