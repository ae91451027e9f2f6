"""CheapMatting: the released state dict (names, shapes, 6,023,025 params), strict load, forward, MACs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from atldas.errors import ConfigError
from atldas.genotype import CellSpec, Genotype
from atldas.models.cells import Cell, drop_path
from atldas.models.cheapmatting import (ATLDAS_CIFAR100, DECODER_BLOCKS, HEAD_BLOCKS, CheapMatting,
                                        DecoderLevel, PredictionHead, PyramidPooling,
                                        build_cheapmatting)
from atldas.ops import factorized_reduce_cost, op_cost, relu_conv_bn_cost
from atldas.run import bind_space, make_search_config
from atldas.utils.counting import count_macs, count_params

REFERENCE = json.loads((Path(__file__).parent / "data" / "cheapmatting_state_dict.json").read_text())
RELEASED_MACS_1024 = 38_594_117_632  # FlopCounterMode total / 2 at 1x6x1024x1024
META = torch.device("meta")


def counted_macs(net: torch.nn.Module, H: int, W: int) -> int:
    x = torch.empty(1, 6, H, W, device=META)
    with FlopCounterMode(display=False) as counter:
        y = net(x)
    assert y.shape == (1, 1, H, W)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


def macs_by_part(net: torch.nn.Module, H: int, W: int) -> dict:
    """MACs of each top-level submodule (``stem00``, ``cells``, ``pred``...) of ``net`` on a meta
    (1, 6, H, W) input, from FlopCounterMode's per-module counts."""
    x = torch.empty(1, 6, H, W, device=META)
    with FlopCounterMode(display=False) as counter:
        net(x)
    root = type(net).__name__
    counts = counter.get_flop_counts()
    return {name: sum(counts.get(f"{root}.{name}", {}).values()) // 2 for name, _ in net.named_children()}


def cell_closed_form(cell: Cell, H: int, W: int, *, H0: int, W0: int) -> tuple:
    """(MACs, params) of a discrete cell from the per-op closed forms (:func:`atldas.ops.op_cost` and
    the preprocessing's), for ``s1`` of size H x W and ``s0`` of size H0 x W0."""
    C = cell.C
    if cell.reduction_prev:
        pre0 = factorized_reduce_cost(C_in=cell.C_prev_prev, C_out=C, H=H0, W=W0, affine=cell.affine)
    else:
        pre0 = relu_conv_bn_cost(C_in=cell.C_prev_prev, C_out=C, H=H0, W=W0, affine=cell.affine)
    pre1 = relu_conv_bn_cost(C_in=cell.C_prev, C_out=C, H=H, W=W, affine=cell.affine)
    macs, params = pre0.macs + pre1.macs, pre0.params + pre1.params
    for node in cell.spec.nodes:
        for op, i in node:
            stride = 2 if cell.reduction and i < 2 else 1
            # in a reduction cell, the nodes (states >= 2) are already at half resolution
            h, w = ((H + 1) // 2, (W + 1) // 2) if cell.reduction and i >= 2 else (H, W)
            c = op_cost(op, C_in=C, C_out=C, H=h, W=w, stride=stride, affine=cell.affine)
            macs, params = macs + c.macs, params + c.params
    return macs, params


def cell_ops_match_their_closed_forms(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Run ``net`` on ``x`` recording the input of every cell op, then check each op's closed form
    (:func:`atldas.ops.op_cost`) against the counter on that input; returns the number of ops checked."""
    seen = []
    hooks = []
    for cell in (m for m in net.modules() if isinstance(m, Cell)):
        k = 0
        for node in cell.spec.nodes:
            for op, i in node:
                stride = 2 if cell.reduction and i < 2 else 1
                module = cell._ops[k]
                hooks.append(module.register_forward_pre_hook(
                    (lambda op, stride, module, C: lambda m, args: seen.append((op, stride, module, C, args[0].shape)))(
                        op, stride, module, cell.C)))
                k += 1
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    for op, stride, module, C, shape in seen:
        _, _, h, w = shape
        closed = op_cost(op, C_in=C, C_out=C, H=h, W=w, stride=stride, affine=True)
        assert closed.macs == count_macs(module, torch.empty(shape, device=x.device)), (op, stride, shape)
        assert closed.params == count_params(module), (op, stride)
    return len(seen)


def matting_space(size: int, **knobs):
    """The ``matting`` space (the released macro) bound to the released width and depth at ``size``."""
    sets = [f"target_C={knobs.get('C', 48)}", f"target_layers={knobs.get('layers', 14)}", f"input_size={size}"]
    return bind_space(make_search_config(space="matting", sets=sets))


RELEASED_CHOICES = {**{f"decoder{i}": "bottleneck" for i in range(4)}, "head": "conv3x3"}


@pytest.fixture(scope="module")
def net() -> CheapMatting:
    torch.manual_seed(0)
    return build_cheapmatting().eval()


@pytest.fixture(scope="module")
def meta_net() -> CheapMatting:
    with META:
        return build_cheapmatting()


def test_state_dict_names_and_shapes_equal_the_release(net):
    mine = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert mine == REFERENCE["state_dict"]
    assert list(mine) == list(REFERENCE["state_dict"])  # same order too


def test_parameter_count(net):
    assert count_params(net) == net.num_params() == REFERENCE["parameters"] == 6_023_025


def test_strict_load_of_a_fake_checkpoint(net):
    gen = torch.Generator().manual_seed(1)
    fake = {"model": {k: (torch.randn(shape, generator=gen) if shape else torch.tensor(7))
                      for k, shape in REFERENCE["state_dict"].items()}}
    fresh = build_cheapmatting()
    fresh.load_state_dict(fake["model"], strict=True)
    w = fresh.state_dict()["cells.4._ops.0.conv_1.weight"]
    assert torch.equal(w, fake["model"]["cells.4._ops.0.conv_1.weight"])


def test_forward_small_input_in_unit_range(net):
    torch.manual_seed(0)
    rgb = torch.rand(1, 3, 64, 64)
    trimap = torch.nn.functional.one_hot(torch.randint(0, 3, (1, 64, 64)), 3).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        alpha = net(torch.cat([rgb, trimap], 1))
    assert alpha.shape == (1, 1, 64, 64)
    assert alpha.min() >= 0 and alpha.max() <= 1


def test_forward_odd_size_and_unclamped():
    import copy

    net = build_cheapmatting(C=8, layers=3, clamp=False).eval()
    x = torch.rand(2, 6, 37, 45)
    with torch.no_grad():
        y = net(x)
        assert torch.equal(copy.deepcopy(net)(x), y)  # e.g. an EMA copy
    assert y.shape == (2, 1, 37, 45)


def test_macs_at_1024_equal_the_release(meta_net):
    measured = counted_macs(meta_net, 1024, 1024)
    assert measured == RELEASED_MACS_1024
    assert count_macs(meta_net, torch.empty(1, 6, 1024, 1024, device=META)) == measured
    # the matting space measures the released network's MACs (its unused extra PPM conv has none)
    g = ATLDAS_CIFAR100.replace(choices=RELEASED_CHOICES)
    assert matting_space(1024).measure(g, metric="macs") == measured
    assert round(measured / 1e9, 3) == 38.594


def test_macs_breakdown_at_1024(meta_net):
    parts = macs_by_part(meta_net, 1024, 1024)
    g = lambda *keys: round(sum(parts[k] for k in keys) / 1e9, 2)  # noqa: E731
    assert g("cells") == 11.32
    assert g("pred") == 12.25
    assert g("decoder_layer0") == 4.26
    assert g("decoder_layer1", "decoder_layer2", "decoder_layer3") == 6.07
    assert g("stem00", "stem05", "stem10") == 4.33
    assert g("ppm") == 0.36
    assert sum(parts.values()) == RELEASED_MACS_1024
    # a submodule counted on its own gives its part of the whole
    assert count_macs(meta_net.stem00, torch.empty(1, 6, 1024, 1024, device=META)) == parts["stem00"]


@pytest.mark.parametrize("H,W", [(64, 64), (37, 45)])
def test_closed_form_macs_other_sizes(meta_net, H, W):
    measured = counted_macs(meta_net, H, W)
    x = torch.empty(1, 6, H, W, device=META)
    assert count_macs(meta_net, x) == measured
    # every cell op's closed form (op_cost) equals the counter at the sizes it sees, odd ones too
    assert cell_ops_match_their_closed_forms(meta_net, x) == 14 * 8
    # and the parts add up to the whole
    assert sum(macs_by_part(meta_net, H, W).values()) == measured
    if H == W:  # the space's measure (and so its cost table) is stated on square inputs
        g = ATLDAS_CIFAR100.replace(choices=RELEASED_CHOICES)
        assert matting_space(H).measure(g, metric="macs") == measured


@pytest.mark.parametrize("knobs", [
    {"decoder_blocks": "sep_res", "head_block": "narrow"},
    {"decoder_blocks": ("bottleneck", "sep_res", "bottleneck", "sep_res"), "head_block": "sep",
     "decoder_depth": 1, "ppm_extra_convs": 0},
])
def test_variants_closed_form_and_cheaper(knobs):
    with META:
        base = build_cheapmatting(C=16, layers=5)
        net = build_cheapmatting(C=16, layers=5, **knobs)
    measured = counted_macs(net, 96, 64)
    x = torch.empty(1, 6, 96, 64, device=META)
    assert count_macs(net, x) == measured
    assert measured < count_macs(base, x) == counted_macs(base, 96, 64)
    assert count_params(net) < count_params(base)
    assert cell_ops_match_their_closed_forms(net, x) == 5 * 8


def test_default_blocks_are_the_released_layout():
    assert DECODER_BLOCKS.names() == ["bottleneck", "sep_res"]
    assert HEAD_BLOCKS.names() == ["conv3x3", "narrow", "sep"]
    assert DecoderLevel(C_in=88, C_out=32, C_mid=24).block == "bottleneck"
    assert PredictionHead(C_in=38).block == "conv3x3"
    with pytest.raises(ConfigError, match="known decoder blocks: bottleneck, sep_res"):
        DecoderLevel(C_in=8, C_out=8, C_mid=8, block="transformer")
    with pytest.raises(ConfigError, match="unknown CheapMatting option"):
        build_cheapmatting(widht=3)


def test_ppm_tiny_input_falls_back_to_global_pool():
    ppm = PyramidPooling(C_in=8, C_mid=4, C_out=6)
    x = torch.randn(1, 8, 2, 3)
    y = ppm(x)
    assert y.shape == (1, 6, 2, 3)
    with FlopCounterMode(display=False) as counter:
        ppm(x)
    # the branch convs run on the 1x1 global pools: C_in x C_mid each, plus the 1x1 output conv
    closed = 4 * 8 * 4 * 1 * 1 + (8 + 4 * 4) * 6 * 2 * 3
    assert count_macs(ppm, x) == counter.get_total_flops() // 2 == closed


def test_variable_in_degree_cell():
    spec = CellSpec(nodes=[[("sep_conv_3x3", 0)],
                           [("skip_connect", 1), ("dil_conv_3x3", 2), ("avg_pool_3x3", 0)],
                           [("max_pool_3x3", 3)]], concat=[2, 3, 4])
    for reduction, reduction_prev in [(False, False), (True, False), (False, True)]:
        cell = Cell(spec=spec, C_prev_prev=12, C_prev=10, C=8, reduction=reduction,
                    reduction_prev=reduction_prev)
        H = 9
        s0 = torch.randn(1, 12, 2 * H if reduction_prev else H, 2 * H if reduction_prev else H)
        s1 = torch.randn(1, 10, H, H)
        with FlopCounterMode(display=False) as counter:
            y = cell(s0, s1)
        Ho = (H + 1) // 2 if reduction else H
        assert y.shape == (1, 24, Ho, Ho)
        H0 = 2 * H if reduction_prev else H
        macs, params = cell_closed_form(cell, H, H, H0=H0, W0=H0)  # per-op closed forms
        assert macs == counter.get_total_flops() // 2 == count_macs(cell, s0, s1)
        assert params == count_params(cell)
    with pytest.raises(ConfigError, match="reduction cell cannot concatenate"):
        Cell(spec=CellSpec(nodes=[[("skip_connect", 0)]], concat=[1, 2]), C_prev_prev=8, C_prev=8,
             C=8, reduction=True, reduction_prev=False)


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    cell = Cell(spec=ATLDAS_CIFAR100.normal, C_prev_prev=4, C_prev=4, C=4, reduction=False,
                reduction_prev=False)
    s0, s1 = torch.randn(8, 4, 6, 6), torch.randn(8, 4, 6, 6, requires_grad=True)
    cell.eval()
    with torch.no_grad():
        assert torch.equal(cell(s0, s1, 0.5), cell(s0, s1, 0.0))
    cell.train()
    y = cell(s0, s1, 0.5)
    y.sum().backward()
    assert s1.grad is not None
    assert drop_path(torch.ones(4, 2), 0.0).eq(1).all()
    dropped = drop_path(torch.ones(1000, 1), 0.5)
    assert set(dropped.unique().tolist()) <= {0.0, 2.0}


def test_derived_models_registry():
    from atldas.models.zoo import MODELS, create_model, list_models
    from derived_models import get_genotype

    assert {"cheapmatting", "cheapmatting_darts_v2", "cheapmatting_pc_darts"} <= set(list_models())
    assert get_genotype("atldas_cifar100").cost["macs"] == RELEASED_MACS_1024
    with META:
        released = create_model("cheapmatting")
        darts = create_model("cheapmatting_darts_v2")
        small = create_model("cheapmatting", C=16, layers=5, head_block="sep")
    assert {k: list(v.shape) for k, v in released.state_dict().items()} == REFERENCE["state_dict"]
    assert darts.genotype == get_genotype("darts_v2")
    assert count_macs(darts, torch.empty(1, 6, 1024, 1024, device=META)) == get_genotype("darts_v2").cost["macs"]
    assert isinstance(small, CheapMatting) and small.pred.block == "sep"
    assert MODELS.get("cheapmatting").genotype == "atldas_cifar100"
    with pytest.raises(ConfigError, match="known models: .*cheapmatting.*named genotypes .*darts_v2"):
        create_model("cheapmating")


@pytest.mark.parametrize("name, model", [("atldas_cifar100", "cheapmatting"), ("darts_v2", "cheapmatting_darts_v2"),
                                         ("pc_darts_cifar", "cheapmatting_pc_darts")])
def test_a_named_genotype_is_a_model(name, model):
    """architecture.md: a MODEL is a name registered in derived_models/ or models/."""
    from atldas.models.zoo import create_model, resolve_model
    from derived_models import get_genotype

    resolved = resolve_model(name)
    assert resolved.genotype == get_genotype(name) and resolved.needs_checkpoint
    with META:
        net, ref = create_model(name), create_model(model)
        narrow = create_model(name, C=16, layers=5, head_block="sep")
    assert isinstance(net, CheapMatting) and net.genotype == get_genotype(name)
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert narrow.cfg.C == 16 and narrow.pred.block == "sep"


def test_genotype_is_required():
    with pytest.raises(ConfigError, match="needs a Genotype"):
        CheapMatting(genotype="atldas_cifar100")  # type: ignore[arg-type]
    assert isinstance(build_cheapmatting().genotype, Genotype)


def test_the_forward_pass_is_unchanged_a_deliberate_regression_value():
    """Parameter names and shapes do not pin the forward pass: the PPM's output concatenated in the other
    order, a residual dropped or a pooling counting its padding all loaded the released weights and gave
    other mattes. Float64 (the same on every CPU to ~1e-15) from seeded weights; recorded 2026-12-07 from
    the code whose parameters match the released network's (tests above)."""
    from atldas.models.base import set_clamp
    from atldas.models.zoo import resolve_model

    torch.manual_seed(0)
    model = resolve_model("cheapmatting")
    net = model.build().double().eval()
    set_clamp(net, False)  # the raw output: a clamp would hide changes below 0
    x = torch.rand(1, 6, 64, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        y = model.forward(net, x)
    got = [float(y.mean()), float(y.std())] + [float(y[0, 0, i, j]) for i, j in ((0, 0), (31, 47), (63, 95), (10, 80))]
    want = [-0.29158824759531904, 0.04168380539464443, -0.15213397364578446, -0.2559048369597676,
            -0.1585197218141035, -0.316753029784745]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
