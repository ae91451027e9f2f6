"""The CUDA paths: every strategy's search, retrain in each mixed-precision mode, and inference that
matches the CPU's. They need a GPU and are skipped where torch sees none (CI has none); on a GPU
machine run ``pytest tests/test_cuda.py``, and ``experiments/gpu_check.py`` for the commands' figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atldas.matting.inference import predict_alpha
from atldas.models.zoo import resolve_model
from atldas.retrain import RetrainConfig, retrain
from atldas.run import Run, make_search_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY_SEARCH = ["steps_per_epoch=3", "arch_steps_per_epoch=3", "warmup_epochs=1", "batch_size=2", "crop=32",
               "tensorboard=false", "plots=false", "progress=false"]


@pytest.mark.parametrize("strategy,sets", [("atldas", []), ("atldas", ["estimator=st"]), ("darts", []),
                                           ("gdas", []), ("random", [])])
@pytest.mark.parametrize("amp", ["bf16", "off"])
def test_every_strategy_searches_on_cuda(strategy, sets, amp):
    cfg = make_search_config(space="tiny", strategy=strategy, device="cuda", epochs=3, seed=1,
                             sets=[*TINY_SEARCH, f"amp={amp}", *sets])
    run = Run(cfg)
    rows = run.fit()
    assert {p.device.type for p in run.net.weight_parameters()} == {"cuda"}
    assert {p.device.type for p in run.net.arch.parameters()} == {"cpu"}  # the policy stays on the CPU
    assert len(rows) == 3 and all(math.isfinite(r["loss/weights"]) for r in rows)
    if strategy in ("atldas", "darts", "gdas"):  # the arch step moved the logits
        moved = max(float(p.detach().abs().max()) for p in run.net.arch.arch_parameters())
        assert moved > 1e-2
    g = run.final_genotype()
    assert g.cost["macs"] > 0


def test_search_draws_the_same_children_on_cuda_as_on_the_cpu():
    """The samplers are CPU generators over CPU logits: the warm-up's children do not depend on the device."""
    drawn = {}
    for device in ("cpu", "cuda"):
        run = Run(make_search_config(space="tiny", device=device, epochs=2, seed=4, sets=TINY_SEARCH))
        drawn[device] = [run.net.arch.sample(epsilon=0.5, generator=run.strategy.gen_w).key() for _ in range(5)]
    assert drawn["cpu"] == drawn["cuda"]


@pytest.mark.parametrize("amp", ["bf16", "fp16", "off"])
def test_retrain_on_cuda_in_each_precision(tmp_path, amp):
    out = retrain(RetrainConfig(model="cnn_baseline_tiny", out=str(tmp_path / amp), device="cuda", amp=amp, epochs=2,
                                steps_per_epoch=4, batch_size=4, crop=64, val_count=2, val_size=64,
                                tensorboard=False, progress=False))
    ck = torch.load(out / "last.pt", weights_only=True, map_location="cpu")
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_cuda_inference_matches_the_cpu():
    model = resolve_model("cheapmatting")
    torch.manual_seed(0)
    net = model.build().eval()
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():  # random weights saturate the matte at 0: centre the head so alphas vary
        last.weight.mul_(1e-2)
        if last.bias is not None:
            last.bias.fill_(0.5)
    rng = np.random.default_rng(0)
    image = rng.random((200, 264, 3), dtype=np.float32)
    trimap = np.full((200, 264), 128, np.uint8)
    trimap[:40] = 0
    trimap[-40:] = 255
    cpu = predict_alpha(model, net, image, trimap, device="cpu")
    gpu = predict_alpha(model, net.to("cuda"), image, trimap, device="cuda")
    half = predict_alpha(model, net, image, trimap, device="cuda", amp=True)
    assert np.unique(cpu[40:-40]).size > 1000  # the unknown band is not a constant
    err, err_half = float(np.abs(cpu - gpu).max()), float(np.abs(cpu - half).max())
    print(f"cuda vs cpu: max |alpha difference| {err:.2e} in float32, {err_half:.2e} with --amp")
    assert err < 1e-2  # cuDNN convolutions run in TF32 by default (PyTorch's setting)
    assert err_half < 5e-2
