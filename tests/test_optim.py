"""ClippedAdam: the clip and fused Adam of the planted task's standalone step."""

import pytest
import torch

from atldas.utils.optim import ClippedAdam


def test_clipped_adam_gives_clip_grad_norm_and_fused_adams_floats_bit_for_bit():
    torch.manual_seed(0)
    cl = torch.channels_last
    nets = [torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 2, 1))
            .to(memory_format=cl) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    e0 = torch.randn(5)
    extra = [torch.nn.Parameter(e0.clone()) for _ in range(2)]  # a gradient on odd steps only, mid-list
    params = [[*list(net.parameters())[:2], e, *list(net.parameters())[2:]] for net, e in zip(nets, extra)]
    ref = torch.optim.Adam(params[0], lr=0.03, fused=True)
    mine = ClippedAdam(params[1], clip=1.0)
    norms = []
    for step in range(12):
        lr = 0.03 * (1 - step / 12)
        for group in ref.param_groups:
            group["lr"] = lr
        x = torch.randn(4, 3, 9, 9).contiguous(memory_format=cl)
        for net, e, opt in zip(nets, extra, (ref, mine)):
            opt.zero_grad()
            scale = 30.0 if step % 3 == 0 else 1e-3  # the clip acts on some steps, not on others
            loss = scale * net(x).square().mean() + (1e-3 * e.square().sum() if step % 2 else 0.0)
            loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params[0], 1.0)))
        ref.step()
        mine.step(lr=lr)
        assert all(torch.equal(a, b) for a, b in zip(params[0], params[1]))
    assert min(norms) < 1.0 < max(norms)
    assert not torch.equal(extra[1].detach(), e0)  # it was trained
    assert mine._state[0][0].is_contiguous(memory_format=cl)  # the moments keep the weights' layout


def test_clipped_adam_refuses_what_it_would_not_compute_as_adam_does():
    w = torch.nn.Parameter(torch.randn(3))
    for bad, why in (([], "at least one"), ([w, w], "twice"),
                     ([w, torch.nn.Parameter(torch.randn(3, dtype=torch.float64))], "one device and dtype"),
                     ([torch.nn.Parameter(torch.ones(2, dtype=torch.int64), requires_grad=False)], "floating-point")):
        with pytest.raises(ValueError, match=why):
            ClippedAdam(bad, clip=1.0)
    for kw in ({"clip": 0.0}, {"clip": 1.0, "eps": -1.0}, {"clip": 1.0, "betas": (1.0, 0.9)},
               {"clip": 1.0, "betas": (0.9,)}):
        with pytest.raises(ValueError, match="clip > 0, eps >= 0 and two betas"):
            ClippedAdam([w], **kw)
