"""The dilated depthwise convolution's phase backward against torch's own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atldas.ops import build_op
from atldas.utils.dilated_conv import DilatedDepthwiseConv2d, _PhaseBackward, dilated_depthwise_conv2d


def _pair(N, C, H, W, k, d, fmt, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, H, W, generator=g).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(C, 1, k, k, generator=g).requires_grad_()
    gy = torch.randn(N, C, H, W, generator=g).contiguous(memory_format=fmt)
    return x, w, gy


@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("N,C,H,W,k,d", [(3, 4, 12, 12, 3, 2), (2, 5, 12, 10, 5, 2), (2, 3, 7, 9, 3, 2),
                                         (2, 3, 3, 3, 5, 2), (1, 2, 11, 13, 3, 3)])
def test_the_phase_backward_gives_torchs_forward_bit_for_bit_and_its_gradients(N, C, H, W, k, d, fmt):
    x, w, gy = _pair(N, C, H, W, k, d, fmt)
    p = d * (k - 1) // 2
    y0 = F.conv2d(x, w, padding=p, dilation=d, groups=C)
    gx0, gw0 = torch.autograd.grad(y0, (x, w), gy)
    y1 = _PhaseBackward.apply(x, w, p, d)
    gx1, gw1 = torch.autograd.grad(y1, (x, w), gy)
    assert torch.equal(y1, y0)
    torch.testing.assert_close(gx1, gx0, rtol=1e-5, atol=1e-5)
    assert gx1.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(gw1, gw0, rtol=1e-5, atol=1e-5)


def test_only_the_input_or_only_the_weight_gradient_is_computed_when_only_it_is_needed():
    x, w, gy = _pair(2, 3, 8, 8, 3, 2, torch.channels_last)
    p = 2
    ref_x, ref_w = torch.autograd.grad(F.conv2d(x, w, padding=p, dilation=2, groups=3), (x, w), gy)
    (gx,) = torch.autograd.grad(_PhaseBackward.apply(x, w.detach(), p, 2), (x,), gy)
    (gw,) = torch.autograd.grad(_PhaseBackward.apply(x.detach(), w, p, 2), (w,), gy)
    torch.testing.assert_close(gx, ref_x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, ref_w, rtol=1e-5, atol=1e-5)


def test_the_module_is_a_conv2d_with_its_names_and_takes_the_phase_path_only_where_it_applies():
    conv = DilatedDepthwiseConv2d(4, 4, 5, padding=4, dilation=2, groups=4, bias=False)
    assert isinstance(conv, torch.nn.Conv2d) and list(conv.state_dict()) == ["weight"]
    x = torch.randn(2, 4, 10, 10, requires_grad=True)
    assert conv(x).grad_fn.name() == "_PhaseBackwardBackward"
    with torch.no_grad():  # inference: the plain call, no autograd node
        assert conv(x).grad_fn is None
    strided = DilatedDepthwiseConv2d(4, 4, 5, stride=2, padding=4, dilation=2, groups=4, bias=False)
    assert strided(x).grad_fn.name() == "ConvolutionBackward0"
    undilated = DilatedDepthwiseConv2d(4, 4, 3, padding=1, groups=4, bias=False)
    assert undilated(x).grad_fn.name() == "ConvolutionBackward0"
    assert dilated_depthwise_conv2d(x, conv.weight, padding=4, dilation=2).grad_fn.name() == "_PhaseBackwardBackward"


def test_dil_conv_trains_the_same_as_with_a_plain_conv2d_up_to_the_weight_gradients_rounding():
    torch.manual_seed(0)
    op = build_op("dil_conv_5x5", C_in=6, C_out=6, stride=1, affine=True)
    plain = build_op("dil_conv_5x5", C_in=6, C_out=6, stride=1, affine=True)
    plain.op[1] = torch.nn.Conv2d(6, 6, 5, padding=4, dilation=2, groups=6, bias=False)
    plain.load_state_dict(op.state_dict(), strict=True)
    x = torch.randn(4, 6, 12, 12).contiguous(memory_format=torch.channels_last)
    for m in (op, plain):
        m.to(memory_format=torch.channels_last)
        m(x).square().mean().backward()
    assert torch.equal(op(x), plain(x))
    for (name, a), (_, b) in zip(op.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("N,C,H,W,k", [(3, 4, 12, 12, 3), (2, 16, 12, 12, 5), (2, 8, 7, 9, 3), (1, 32, 16, 16, 5)])
def test_channels_last_phases_give_the_channel_major_orders_floats_bit_for_bit(N, C, H, W, k):
    # the channels_last backward orders the phases' channels phase-major (one fast copy); a depthwise
    # convolution computes each channel alone, so it must give what pixel_unshuffle's order gives
    x, w, gy = _pair(N, C, H, W, k, 2, torch.channels_last)
    d, p, cl = 2, 2 * (k - 1) // 2, torch.channels_last
    eh, ew = -H % d, -W % d
    xp, gyp = F.pad(x.detach(), (0, ew, 0, eh)), F.pad(gy, (0, ew, 0, eh))
    xs, gys = (F.pixel_unshuffle(v, d).contiguous(memory_format=cl) for v in (xp, gyp))
    gxs, gws, _ = torch.ops.aten.convolution_backward(gys, xs, w.detach().repeat_interleave(d * d, dim=0), None,
                                                      [1, 1], [p // d] * 2, [1, 1], False, [0, 0], C * d * d,
                                                      [True, True, False])
    ref_gx = F.pixel_shuffle(gxs, d)[..., :H, :W]
    ref_gw = gws.view(C, d * d, k, k).sum(1, keepdim=True)
    gx, gw = torch.autograd.grad(_PhaseBackward.apply(x, w, p, d), (x, w), gy)
    assert torch.equal(gx, ref_gx) and torch.equal(gw, ref_gw)
    assert gx.is_contiguous(memory_format=cl)
