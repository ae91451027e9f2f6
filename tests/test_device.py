"""The device helpers without a GPU: what ``amp=auto`` picks on which card (mocked properties)."""

from __future__ import annotations

import types

import pytest
import torch

from atldas.utils.device import amp_dtype, native_bf16


@pytest.mark.parametrize("major, expected", [(7, torch.float16), (8, torch.bfloat16), (9, torch.bfloat16)])
def test_amp_auto_takes_bf16_only_where_the_card_computes_it(monkeypatch, major, expected):
    """torch.cuda.is_bf16_supported() counts emulated bf16 (a T4, compute capability 7.5, says True), so
    amp=auto took bf16 there and never reached fp16 with its loss scaler."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: asked.append(i) or types.SimpleNamespace(major=major, minor=5))
    assert amp_dtype("cuda", "auto") == expected
    assert native_bf16("cuda:1") == (major >= 8) and asked[-1] == 1  # the card asked about, not the current one
    assert amp_dtype("cuda", "bf16") == torch.bfloat16 and amp_dtype("cuda", "fp16") == torch.float16
    assert amp_dtype("cpu", "auto") is None and amp_dtype("cuda", "off") is None


def test_a_runs_cuda_rng_state_is_its_own_gpus(monkeypatch):
    """The CUDA RNG state: the one GPU a run draws from, saved and restored (all GPUs' states were saved,
    and restored on every torchrun rank; a checkpoint of a machine with more GPUs failed to restore)."""
    from atldas.utils.seed import rng_state, set_rng_state

    states = {0: torch.tensor([0], dtype=torch.uint8), 1: torch.tensor([1], dtype=torch.uint8)}
    set_to = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)  # torchrun's set_device(LOCAL_RANK)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda index: states[index])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, index: set_to.append((int(s[0]), index)))
    assert "cuda" not in rng_state("cpu")
    assert int(rng_state("cuda")["cuda"][0]) == 1 and int(rng_state("cuda:0")["cuda"][0]) == 0
    cpu_state = rng_state("cpu")
    set_rng_state({**cpu_state, "cuda": states[0]}, "cuda")
    set_rng_state({**cpu_state, "cuda": [torch.tensor([k], dtype=torch.uint8) for k in (5, 6, 7, 8)]}, "cuda")
    set_rng_state({**cpu_state, "cuda": [torch.tensor([9], dtype=torch.uint8)]}, "cuda")  # fewer GPUs then
    set_rng_state({**cpu_state, "cuda": states[0]}, "cpu")  # a GPU run derived on the CPU: nothing to set
    assert set_to == [(0, 1), (6, 1), (9, 1)]
