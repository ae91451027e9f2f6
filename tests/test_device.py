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
