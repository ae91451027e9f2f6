"""AEMatter-class baseline and its Swin layers: checkpoint compatibility, shapes, padding, locality."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from atldas.errors import ConfigError, DataError
from atldas.models.aematter import (AEMATTER_VARIANTS, AEALBlock, AEMatter, build_aematter,
                                    load_aematter_checkpoint)
from atldas.tensors import centred_pad
from atldas.models.swin import BasicLayer, DropPath, PatchMerging, SwinBlock, relative_position_index

REFERENCE = Path(__file__).parent / "data" / "aematter_state_dict.json"
RELEASED_PARAMS = 51_186_044


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def one_hot_trimap(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    labels = torch.randint(0, 3, (b, h, w), generator=torch.Generator().manual_seed(seed))
    return F.one_hot(labels, 3).permute(0, 3, 1, 2).float()  # (B, 3, H, W) [bg, unknown, fg]


# --- the released network ------------------------------------------------------------------------

def test_state_dict_names_and_shapes_equal_reference(reference: dict) -> None:
    with torch.device("meta"):
        model = build_aematter(variant="full")
    ours = {name: list(t.shape) for name, t in model.state_dict().items()}
    ref = reference["state_dict"]
    assert sorted(set(ref) - set(ours)) == []
    assert sorted(set(ours) - set(ref)) == []
    assert ours == ref
    assert list(ours) == list(ref)  # same key order too
    assert reference["parameters"] == RELEASED_PARAMS
    assert sum(p.numel() for p in model.parameters()) == RELEASED_PARAMS


def test_released_size_costs_about_the_published_macs() -> None:
    with torch.device("meta"):
        model = build_aematter(variant="full").eval()
        image = torch.empty(1, 3, 1024, 1024)
        with FlopCounterMode(display=False) as counter:
            alpha = model(image, torch.empty(1, 3, 1024, 1024))
    assert alpha.shape == (1, 1, 1024, 1024)
    macs = counter.get_total_flops() / 2  # the counter counts 2 per multiply-add
    assert 300e9 < macs < 320e9  # published: about 309 G MACs at 1024^2


def test_buffers_are_the_reference_index_buffers(reference: dict) -> None:
    with torch.device("meta"):
        model = build_aematter(variant="full")
    buffers = {name for name, _ in model.named_buffers()}
    listed_not_params = set(reference["state_dict"]) - {name for name, _ in model.named_parameters()}
    assert buffers == listed_not_params
    assert all(name.endswith("attn.relative_position_index") for name in buffers)
    total = sum(math.prod(s) for s in reference["state_dict"].values())
    assert total - sum(math.prod(reference["state_dict"][b]) for b in buffers) == RELEASED_PARAMS


def test_strict_load_of_released_format_checkpoint(reference: dict, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    fake = {name: (relative_position_index(7) if name.endswith("relative_position_index")
                   else torch.randn(shape, generator=gen) * 0.02)
            for name, shape in reference["state_dict"].items()}
    path = tmp_path / "aematter.ckpt"
    torch.save({"model": fake, "epoch": 3}, path)
    model = load_aematter_checkpoint(build_aematter(variant="full"), str(path), strict=True)
    state = model.state_dict()
    assert torch.equal(state["trans1.gamma"], fake["trans1.gamma"])
    assert torch.equal(state["convo.4.weight"], fake["convo.4.weight"])
    model.eval()
    with torch.no_grad():
        alpha = model(torch.rand(1, 3, 64, 64), one_hot_trimap(1, 64, 64))
    assert alpha.shape == (1, 1, 64, 64)
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0


def test_strict_load_rejects_a_mismatch(reference: dict) -> None:
    with torch.device("meta"):
        model = build_aematter(variant="full")
        state = {name: torch.empty(shape) for name, shape in reference["state_dict"].items()}
    del state["trans3.gamma"]
    with pytest.raises(RuntimeError, match="trans3.gamma"):
        model.load_state_dict(state, strict=True, assign=True)


def test_load_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    model = build_aematter(variant="tiny")
    with pytest.raises(DataError, match="no such checkpoint file"):
        load_aematter_checkpoint(model, str(tmp_path / "none.ckpt"))
    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    with pytest.raises(DataError, match="not a (readable )?PyTorch checkpoint"):
        load_aematter_checkpoint(model, str(tmp_path / "bad.ckpt"))


# --- small variants: shapes, range, padding ------------------------------------------------------

@pytest.mark.parametrize("variant", ["small", "tiny"])
@pytest.mark.parametrize("size", [(64, 64), (72, 88)])
def test_forward_shape_and_range(variant: str, size: tuple) -> None:
    torch.manual_seed(0)
    model = build_aematter(variant=variant).eval()
    h, w = size
    with torch.no_grad():
        alpha = model(torch.rand(2, 3, h, w), one_hot_trimap(2, h, w))
    assert alpha.shape == (2, 1, h, w)
    assert torch.isfinite(alpha).all()
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0


def test_non_multiple_of_32_is_reflect_padded_centred_and_cropped() -> None:
    torch.manual_seed(0)
    model = build_aematter(variant="tiny").eval()
    image, trimap = torch.rand(1, 3, 72, 88), one_hot_trimap(1, 72, 88)
    with torch.no_grad():
        alpha = model(image, trimap)
        padded = F.pad(torch.cat([image, trimap], 1), (4, 4, 12, 12), mode="reflect")  # -> 96 x 96
        expected = model._forward_padded(padded)[:, :, 12:84, 4:92]
    assert torch.allclose(alpha, expected)


def test_centred_pad_small_inputs_fall_back_to_replicate() -> None:
    x = torch.rand(1, 6, 5, 40)
    padded, pads = centred_pad(x, 32)
    assert padded.shape[-2:] == (32, 64)
    assert pads == (12, 12, 13, 14)
    assert torch.equal(padded[..., 13:18, 12:52], x)
    # each axis on its own (matting.md: reflect): W, long enough, is reflected; H, too short, replicated
    import torch.nn.functional as F

    assert torch.equal(padded, F.pad(F.pad(x, (12, 12, 0, 0), mode="reflect"), (0, 0, 13, 14), mode="replicate"))


def test_rejects_wrong_input_shapes() -> None:
    model = build_aematter(variant="tiny")
    with pytest.raises(ValueError, match="one-hot trimap"):
        model(torch.rand(1, 3, 32, 32), torch.rand(1, 1, 32, 32))


def test_backward_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = build_aematter(variant="tiny")
    with torch.no_grad():  # open the context gate and keep outputs off the clamp edges
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
        model.convo[-1].bias.fill_(0.5)
    alpha = model(torch.rand(1, 3, 64, 64), one_hot_trimap(1, 64, 64))
    alpha.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


# --- builder -------------------------------------------------------------------------------------

def test_variants_and_overrides() -> None:
    assert {"full", "small", "tiny"} <= set(AEMATTER_VARIANTS.names())
    with torch.device("meta"):
        small = build_aematter(variant="small")
        tiny = build_aematter(variant="tiny", decoder_depth=1, depths=[2, 2, 2, 2])
    n_small = sum(p.numel() for p in small.parameters())
    n_tiny = sum(p.numel() for p in tiny.parameters())
    assert n_tiny < n_small < RELEASED_PARAMS
    assert isinstance(tiny, AEMatter) and tiny.config.depths == (2, 2, 2, 2)
    assert len(tiny.ctran0.blocks) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"variant": "huge"}, "known aematter variants: full, small, tiny"),
    ({"variant": "tiny", "embed_dims": 8}, "unknown AEMatter option"),
    ({"variant": "tiny", "aeal_dim": 40}, "multiple of 16"),
    ({"variant": "tiny", "depths": (2, 2, 2)}, "4 Swin stages"),
    ({"variant": "tiny", "pad_multiple": 48}, "multiple of 32"),
])
def test_builder_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_aematter(**kwargs)


# --- AEAL: axis-wise attention over strips -------------------------------------------------------

def test_aeal_attends_within_row_and_column_strips_only() -> None:
    torch.manual_seed(0)
    block = AEALBlock(dim=64, num_heads=4, ffn_dim=64, context_dim=32, strip_width=5).eval()
    src, ctx = torch.randn(1, 64, 15, 20), torch.randn(1, 32, 15, 20)
    bumped = src.clone()
    bumped[:, :, 0, 0] += 5.0  # perturb the token at (0, 0)
    with torch.no_grad():  # gamma = 0: the 3x3 context branch is gated off
        change = (block(bumped, ctx) - block(src, ctx)).abs().sum(1)[0]  # (15, 20)
    touched = change > 1e-5
    reach = torch.zeros(15, 20, dtype=torch.bool)
    reach[0:5, :] = True  # its horizontal strip (5 rows, full width)
    reach[:, 0:5] = True  # its vertical strip (full height, 5 columns)
    assert touched[0, 19] and touched[14, 0]
    assert not (touched & ~reach).any()


def test_aeal_pads_to_strip_multiple_inside_the_model() -> None:
    model = build_aematter(variant="tiny").eval()
    x4 = torch.randn(1, 128, 2, 3)  # 1/32 of a 64 x 96 input: not a multiple of 5
    ctx = torch.randn(1, 64, 2, 3)
    with torch.no_grad():
        assert model.aeal(x4, ctx).shape == (1, 64, 2, 3)


# --- Swin pieces ---------------------------------------------------------------------------------

def test_relative_position_index_matches_the_swin_formula() -> None:
    idx = relative_position_index(7)
    assert idx.shape == (49, 49) and idx.dtype == torch.int64
    assert idx[0, 0] == 6 * 13 + 6  # same position -> centre of the (13 x 13) table
    assert idx[0, 48] == 0  # query (0, 0), key (6, 6): offset (-6, -6)
    assert idx[48, 0] == 168  # offset (+6, +6)
    assert idx[1, 0] == 6 * 13 + 7  # offset (0, +1)


def _reach(block: SwinBlock, h: int, w: int, at: tuple) -> torch.Tensor:
    dim = block.norm1.normalized_shape[0]
    x = torch.randn(1, h, w, dim)
    bumped = x.clone()
    bumped[0, at[0], at[1]] += 3.0 * torch.randn(dim)  # not a constant: LayerNorm would erase it
    with torch.no_grad():
        return ((block(bumped) - block(x)).abs().sum(-1)[0] > 1e-5)


def test_window_attention_stays_in_its_window() -> None:
    torch.manual_seed(0)
    block = SwinBlock(dim=16, num_heads=2, window_size=7, shift=0).eval()
    touched = _reach(block, 14, 14, (8, 9))
    expected = torch.zeros(14, 14, dtype=torch.bool)
    expected[7:14, 7:14] = True
    assert torch.equal(touched, expected)


def test_shifted_window_mask_blocks_wrapped_tokens() -> None:
    torch.manual_seed(0)
    block = SwinBlock(dim=16, num_heads=2, window_size=7, shift=3).eval()
    # (0, 0) is rolled to (11, 11); its shifted window also holds rolled rows/cols 7..10 (image
    # 10..13), which the mask must keep apart: only image rows/cols 0..2 may change.
    touched = _reach(block, 14, 14, (0, 0))
    expected = torch.zeros(14, 14, dtype=torch.bool)
    expected[0:3, 0:3] = True
    assert torch.equal(touched, expected)
    # An interior token: its shifted window is rows/cols 3..9.
    touched = _reach(block, 14, 14, (5, 6))
    expected = torch.zeros(14, 14, dtype=torch.bool)
    expected[3:10, 3:10] = True
    assert torch.equal(touched, expected)


@pytest.mark.parametrize("size", [(5, 5), (9, 11), (14, 21), (16, 30)])
def test_basic_layer_pads_odd_sizes(size: tuple) -> None:
    layer = BasicLayer(dim=16, depth=2, num_heads=2, window_size=7, downsample=True).eval()
    h, w = size
    with torch.no_grad():
        out, down = layer(torch.randn(2, h, w, 16))
    assert out.shape == (2, h, w, 16)
    assert down.shape == (2, (h + 1) // 2, (w + 1) // 2, 32)


def test_patch_merging_neighbour_order() -> None:
    merge = PatchMerging(dim=1)
    x = torch.tensor([[1.0, 3.0], [2.0, 4.0]]).reshape(1, 2, 2, 1)  # value = order (dy, dx)
    with torch.no_grad():
        merge.norm.weight.fill_(1.0)
        merge.norm.bias.zero_()
        merge.reduction.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]))
    picked = merge(x)[0, 0, 0]
    normed = F.layer_norm(torch.tensor([1.0, 2.0, 3.0, 4.0]), (4,))  # order (0,0) (1,0) (0,1) (1,1)
    assert torch.allclose(picked, normed[[0, 3]])


def test_drop_path() -> None:
    drop = DropPath(p=0.5)
    x = torch.ones(1000, 4)
    assert torch.equal(drop.eval()(x), x)
    y = drop.train()(x)
    kept = (y[:, 0] != 0).float().mean()
    assert 0.4 < kept < 0.6
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    with pytest.raises(ConfigError):
        DropPath(p=1.0)
