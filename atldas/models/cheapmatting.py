"""CheapMatting: a DARTS-cell encoder with a pyramid-pooling U-Net decoder, for trimap-based matting.

A reimplementation of the released CheapMatting network (6,023,025 parameters with the
ATLDAS_cifar100 cell, C = 48, 14 cells; 38.594 G MACs at 1024x1024), built from composable parts
so that a search space can swap the decoder blocks and the prediction head:

    stem00  (B, 6, H, W)       -> (B, C/2, H/2, W/2)    two 3x3 convs + PReLU (first one stride 2)
    stem05                     -> (B, C, H/4, W/4)      3x3 stride-2 conv + two bottleneck res blocks
    stem10                     -> (B, C, H/8, W/8)      3x3 stride-2 conv + BatchNorm
    cells   14 DARTS cells, reductions at layers//3 and 2*layers//3; taps after the last cell of
            each stage: (B, 4C, H/8), (B, 8C, H/16), (B, 16C, H/32)
    ppm     pyramid pooling on the 1/32 tap                      -> (B, 256, H/32)
    decoder_layer3..0  per level: concat(upsampled, skip) -> 1x1 conv -> blocks  (1/16 .. 1/2)
    pred    concat(upsampled, input) -> 3x3 conv, PReLU, 3x3 conv, PReLU, 1x1 conv; clamp to [0, 1]

Module names equal the released ``model.py``, so its checkpoint loads with ``strict=True``:

    >>> net = build_cheapmatting()
    >>> net.load_state_dict(torch.load("cheapmatting.pth", weights_only=True)["model"])
    >>> alpha = net(torch.cat([rgb, trimap_onehot], 1))   # (B, 6, H, W) -> (B, 1, H, W)

Upsampling is bilinear (align_corners=False) to the size of the skip it joins, which equals the
released x2 upsampling whenever H and W are multiples of 32 and also works for other sizes.
"""

from __future__ import annotations

from math import gcd
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from atldas.errors import ConfigError
from atldas.genotype import Genotype
from atldas.models.cells import Cell
from atldas.ops import SizedMacs, conv_output_size, count_params, module_macs
from atldas.registry import Registry

__all__ = [
    "ATLDAS_CIFAR100",
    "BottleneckResBlock",
    "SepResBlock",
    "DECODER_BLOCKS",
    "HEAD_BLOCKS",
    "StemHalf",
    "StemQuarter",
    "StemEighth",
    "CellStack",
    "PyramidPooling",
    "DecoderLevel",
    "PredictionHead",
    "CheapMatting",
    "build_cheapmatting",
]

#: The cell of the released CheapMatting (reference/genotypes.json, ``ATLDAS_cifar100``).
ATLDAS_CIFAR100 = Genotype.from_darts_dict(
    {
        "normal": [("skip_connect", 0), ("dil_conv_5x5", 1), ("dil_conv_3x3", 0), ("sep_conv_3x3", 1),
                   ("sep_conv_5x5", 1), ("sep_conv_5x5", 3), ("sep_conv_3x3", 3), ("dil_conv_3x3", 4)],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
                   ("sep_conv_3x3", 0), ("dil_conv_5x5", 3), ("sep_conv_5x5", 3), ("dil_conv_5x5", 4)],
        "reduce_concat": [2, 3, 4, 5],
    },
    provenance={"reference": "ATLDAS_cifar100",
                "source": "ATL-DAS (Liu et al., Displays 2023), searched on CIFAR-100"},
)


def _groups(C: int, preferred: int = 8) -> int:
    """GroupNorm groups: ``preferred`` when it divides C, else the largest common divisor."""
    return gcd(C, preferred)


# --------------------------------------------------------------------------------------------
# blocks


class BottleneckResBlock(nn.Module):
    """Residual bottleneck 1x1 -> 3x3 -> 1x1 with GroupNorm and LeakyReLU(0.1) (released ``ResBlock``).

    ``x + conv3(act(gn2(conv2(act(gn1(conv1(x)))))))`` followed by LeakyReLU; shape-preserving.

    Args:
        C: input and output channels.
        C_mid: bottleneck channels.
        groups: GroupNorm groups (8 in the released network; reduced to a divisor of C_mid).
    """

    def __init__(self, *, C: int, C_mid: int, groups: int = 8) -> None:
        super().__init__()
        g = _groups(C_mid, groups)
        self.conv1 = nn.Conv2d(C, C_mid, 1, bias=True)
        self.gn1 = nn.GroupNorm(g, C_mid)
        self.conv2 = nn.Conv2d(C_mid, C_mid, 3, padding=1, bias=True)
        self.gn2 = nn.GroupNorm(g, C_mid)
        self.conv3 = nn.Conv2d(C_mid, C, 1, bias=True)
        self.relu = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.gn1(self.conv1(x)))  # (B, C_mid, H, W)
        y = self.relu(self.gn2(self.conv2(y)))
        return self.relu(x + self.conv3(y))  # (B, C, H, W)

    def macs_at(self, *, H: int, W: int) -> SizedMacs:
        C, m = self.conv1.in_channels, self.conv1.out_channels
        return SizedMacs((C * m + 9 * m * m + m * C) * H * W, H, W)


class SepResBlock(nn.Module):
    """Cheaper residual block: depthwise 3x3 -> GN -> LeakyReLU -> pointwise -> GN, + x, LeakyReLU.

    Args:
        C: input and output channels.
        C_mid: unused (same signature as :class:`BottleneckResBlock`).
        groups: GroupNorm groups.
    """

    def __init__(self, *, C: int, C_mid: int = 0, groups: int = 8) -> None:
        super().__init__()
        g = _groups(C, groups)
        self.dw = nn.Conv2d(C, C, 3, padding=1, groups=C, bias=True)
        self.gn1 = nn.GroupNorm(g, C)
        self.pw = nn.Conv2d(C, C, 1, bias=True)
        self.gn2 = nn.GroupNorm(g, C)
        self.relu = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.gn1(self.dw(x)))
        return self.relu(x + self.gn2(self.pw(y)))  # (B, C, H, W)

    def macs_at(self, *, H: int, W: int) -> SizedMacs:
        C = self.dw.in_channels
        return SizedMacs((9 * C + C * C) * H * W, H, W)


#: Residual blocks a decoder level can stack: name -> ``factory(C=, C_mid=) -> nn.Module``.
DECODER_BLOCKS: Registry[Callable[..., nn.Module]] = Registry("decoder block")
DECODER_BLOCKS.add("bottleneck", lambda *, C, C_mid: BottleneckResBlock(C=C, C_mid=C_mid))
DECODER_BLOCKS.add("sep_res", lambda *, C, C_mid: SepResBlock(C=C, C_mid=C_mid))


def _conv_prelu_head(C_in: int, widths: tuple[int, int], separable: bool) -> list[nn.Module]:
    a, b = widths
    if not separable:
        return [nn.Conv2d(C_in, a, 3, padding=1), nn.PReLU(a), nn.Conv2d(a, b, 3, padding=1),
                nn.PReLU(b), nn.Conv2d(b, 1, 1)]
    return [nn.Conv2d(C_in, C_in, 3, padding=1, groups=C_in), nn.Conv2d(C_in, a, 1), nn.PReLU(a),
            nn.Conv2d(a, a, 3, padding=1, groups=a), nn.Conv2d(a, b, 1), nn.PReLU(b),
            nn.Conv2d(b, 1, 1)]


#: Full-resolution prediction heads: name -> ``factory(C_in=) -> list of layers`` (1 output channel).
HEAD_BLOCKS: Registry[Callable[..., list[nn.Module]]] = Registry("head block")
HEAD_BLOCKS.add("conv3x3", lambda *, C_in: _conv_prelu_head(C_in, (24, 16), separable=False))
HEAD_BLOCKS.add("narrow", lambda *, C_in: _conv_prelu_head(C_in, (16, 8), separable=False))
HEAD_BLOCKS.add("sep", lambda *, C_in: _conv_prelu_head(C_in, (24, 16), separable=True))


# --------------------------------------------------------------------------------------------
# parts


class StemHalf(nn.Sequential):
    """``stem00``: 3x3 stride-2 conv -> PReLU -> 3x3 conv -> PReLU: (B, C_in, H, W) -> (B, C_out, H/2, W/2).

    Args:
        C_in: input channels (6: RGB + one-hot trimap).
        C_out: output channels (C / 2 = 24 released).
    """

    def __init__(self, *, C_in: int, C_out: int) -> None:
        super().__init__(nn.Conv2d(C_in, C_out, 3, stride=2, padding=1), nn.PReLU(C_out),
                         nn.Conv2d(C_out, C_out, 3, padding=1), nn.PReLU(C_out))


class StemQuarter(nn.Sequential):
    """``stem05``: 3x3 stride-2 conv + bottleneck residual blocks: (B, C_in, H, W) -> (B, C_out, H/2, W/2).

    Args:
        C_in: input channels.
        C_out: output channels (C = 48 released).
        C_mid: bottleneck channels of the residual blocks (32 released).
        depth: number of residual blocks (2 released).
    """

    def __init__(self, *, C_in: int, C_out: int, C_mid: int = 32, depth: int = 2) -> None:
        super().__init__(nn.Conv2d(C_in, C_out, 3, stride=2, padding=1),
                         *[BottleneckResBlock(C=C_out, C_mid=C_mid) for _ in range(depth)])


class StemEighth(nn.Sequential):
    """``stem10``: 3x3 stride-2 conv (no bias) + BatchNorm: (B, C, H, W) -> (B, C, H/2, W/2).

    Args:
        C_in: input channels.
        C_out: output channels.
    """

    def __init__(self, *, C_in: int, C_out: int) -> None:
        super().__init__(nn.Conv2d(C_in, C_out, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(C_out))


class CellStack(nn.ModuleList):
    """The DARTS cells with reductions at ``layers // 3`` and ``2 * layers // 3``.

    The first cell gets ``s0`` at twice the resolution of ``s1`` (both of ``C`` channels), so its
    ``preprocess0`` is a FactorizedReduce, as in the released network.

    Args:
        genotype: cells to stack.
        C: node channels of the first stage (doubled at each reduction).
        layers: number of cells (>= 3).
        affine: BatchNorm affine in the cells.
    """

    def __init__(self, *, genotype: Genotype, C: int, layers: int, affine: bool = True) -> None:
        super().__init__()
        if layers < 3:
            raise ConfigError(f"the CheapMatting macro needs layers >= 3 (three stages), got {layers}")
        self.reductions = (layers // 3, 2 * layers // 3)
        C_pp, C_p, C_curr = C, C, C
        reduction_prev = True
        self.channels: list[int] = []
        for i in range(layers):
            reduction = i in self.reductions
            if reduction:
                C_curr *= 2
            cell = Cell(spec=genotype.cell(reduction), C_prev_prev=C_pp, C_prev=C_p, C=C_curr,
                        reduction=reduction, reduction_prev=reduction_prev, affine=affine)
            self.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.C_out
            self.channels.append(cell.C_out)
        self.taps = (self.reductions[0] - 1, self.reductions[1] - 1, layers - 1)

    @property
    def tap_channels(self) -> tuple[int, int, int]:
        """Channels of the three taps (1/8, 1/16, 1/32): (192, 384, 768) released."""
        return tuple(self.channels[i] for i in self.taps)  # type: ignore[return-value]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor,
                drop_prob: float = 0.0) -> list[torch.Tensor]:
        """(B, C, 2h, 2w), (B, C, h, w) -> [(B, 4C, h, w), (B, 8C, h/2, w/2), (B, 16C, h/4, w/4)]."""
        taps = []
        for i, cell in enumerate(self):
            s0, s1 = s1, cell(s0, s1, drop_prob)
            if i in self.taps:
                taps.append(s1)
        return taps

    def macs_at(self, *, H: int, W: int) -> SizedMacs:
        """MACs for ``s1`` of size ``H x W``; output size of the last cell."""
        total = 0
        for cell in self:
            m, H, W = cell.macs_at(H=H, W=W)
            total += m
        return SizedMacs(total, H, W)


def _pool_geometry(size: int, scale: int) -> tuple[int, int, int]:
    """(kernel, stride, padding) of one PPM pool along an axis of ``size``.

    Released: kernel ``scale``, stride ``scale // 2``, padding ``scale // 2 - 1``. When the padded
    axis is shorter than the kernel (tiny inputs, where the released code fails), the pool spans the
    whole axis: kernel = size, padding 0, one output.
    """
    k, s, p = scale, scale // 2, scale // 2 - 1
    if size + 2 * p < k:
        return size, s, 0
    return k, s, p


class PyramidPooling(nn.Module):
    """Pyramid pooling (``ppm``): average pools, 1x1 convs, bilinear upsampling, concat, 1x1 conv.

    (B, C_in, h, w) -> (B, C_out, h, w). Pools use ``count_include_pad=False``.

    Args:
        C_in: input channels (768 released).
        C_mid: channels of each pooled branch (128).
        C_out: output channels (256).
        scales: pool sizes (5, 13, 19, 25).
        extra_convs: branch convs built but never used: the released network has 5 branch convs
            for its 4 scales; keep 1 to load its checkpoint strictly, 0 otherwise.
    """

    def __init__(self, *, C_in: int, C_mid: int = 128, C_out: int = 256,
                 scales: Sequence[int] = (5, 13, 19, 25), extra_convs: int = 1) -> None:
        super().__init__()
        if any(s < 2 for s in scales):
            raise ConfigError(f"PPM pool scales must be >= 2, got {list(scales)}")
        self.scales = tuple(int(s) for s in scales)
        # ``out`` before ``conv``: the released state dict lists them in this order
        self.out = nn.Sequential(nn.Conv2d(C_in + len(self.scales) * C_mid, C_out, 1))
        self.conv = nn.ModuleList(nn.Sequential(nn.Conv2d(C_in, C_mid, 1))
                                  for _ in range(len(self.scales) + extra_convs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        feats = [x]
        for scale, conv in zip(self.scales, self.conv):
            (kh, sh, ph), (kw, sw, pw) = _pool_geometry(h, scale), _pool_geometry(w, scale)
            pooled = F.avg_pool2d(x, (kh, kw), (sh, sw), (ph, pw), count_include_pad=False)
            feats.append(F.interpolate(conv(pooled), size=(h, w), mode="bilinear",
                                       align_corners=False))  # (B, C_mid, h, w)
        return self.out(torch.cat(feats, dim=1))  # (B, C_in + n*C_mid, h, w) -> (B, C_out, h, w)

    def macs_at(self, *, H: int, W: int) -> SizedMacs:
        C_in, C_mid = self.conv[0][0].in_channels, self.conv[0][0].out_channels
        macs = module_macs(self.out, H=H, W=W).macs
        for scale in self.scales:
            (kh, sh, ph), (kw, sw, pw) = _pool_geometry(H, scale), _pool_geometry(W, scale)
            ho = conv_output_size(H, kernel_size=kh, stride=sh, padding=ph)
            wo = conv_output_size(W, kernel_size=kw, stride=sw, padding=pw)
            macs += C_in * C_mid * ho * wo
        return SizedMacs(macs, H, W)


class DecoderLevel(nn.Sequential):
    """One U-Net decoder level: 1x1 conv fusing (upsampled, skip), then ``depth`` residual blocks.

    (B, C_in, h, w) -> (B, C_out, h, w); the caller concatenates and upsamples.

    Args:
        C_in: channels of the concatenated input.
        C_out: output channels.
        C_mid: bottleneck channels of the residual blocks.
        block: a name in :data:`DECODER_BLOCKS`; ``"bottleneck"`` is the released layout.
        depth: number of blocks (2 released).
    """

    def __init__(self, *, C_in: int, C_out: int, C_mid: int, block: str = "bottleneck",
                 depth: int = 2) -> None:
        factory = DECODER_BLOCKS.get(block)
        super().__init__(nn.Conv2d(C_in, C_out, 1),
                         *[factory(C=C_out, C_mid=C_mid) for _ in range(depth)])
        self.block = block


class PredictionHead(nn.Sequential):
    """Full-resolution head (``pred``): (B, C_in, H, W) -> (B, 1, H, W), unclamped.

    Args:
        C_in: channels of concat(decoder output, network input) (32 + 6 released).
        block: a name in :data:`HEAD_BLOCKS`; ``"conv3x3"`` is the released layout
            (3x3 conv to 24, PReLU, 3x3 conv to 16, PReLU, 1x1 conv to 1).
    """

    def __init__(self, *, C_in: int, block: str = "conv3x3") -> None:
        super().__init__(*HEAD_BLOCKS.get(block)(C_in=C_in))
        self.block = block


# --------------------------------------------------------------------------------------------
# the network


def _per_level(value: str | Sequence[str], name: str) -> tuple[str, str, str, str]:
    if isinstance(value, str):
        return (value,) * 4  # type: ignore[return-value]
    value = tuple(value)
    if len(value) != 4:
        raise ConfigError(f"{name} needs one entry per decoder level 0..3 (or one string), got {value}")
    return value  # type: ignore[return-value]


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class CheapMatting(nn.Module):
    """The CheapMatting macro network around a genotype.

    Args:
        genotype: normal and reduction cells.
        C: stem and first-stage cell channels (48).
        layers: number of cells (14).
        in_channels: input channels (6 = RGB + one-hot trimap [bg, unknown, fg]).
        stem_mid: bottleneck channels of the 1/4 stem's residual blocks (32).
        ppm_channels: channels of each pyramid-pooling branch (128).
        ppm_out: pyramid-pooling output channels (256).
        ppm_scales: pool sizes (5, 13, 19, 25).
        ppm_extra_convs: unused PPM branch convs kept for the released checkpoint (1).
        decoder_channels: output channels of decoder levels 0..3 (32, 64, 128, 128).
        decoder_mid: residual-block bottleneck channels of levels 0..3 (24, 32, 64, 64).
        decoder_blocks: block of each level 0..3, or one name for all (see :data:`DECODER_BLOCKS`).
        decoder_depth: residual blocks per level (2).
        head_block: prediction head (see :data:`HEAD_BLOCKS`).
        drop_path_prob: drop-path probability inside cells while training (settable attribute).
        affine: BatchNorm affine in the cells.
        clamp: clamp the output to [0, 1] (as released).
    """

    def __init__(self, *, genotype: Genotype, C: int = 48, layers: int = 14, in_channels: int = 6,
                 stem_mid: int = 32, ppm_channels: int = 128, ppm_out: int = 256,
                 ppm_scales: Sequence[int] = (5, 13, 19, 25), ppm_extra_convs: int = 1,
                 decoder_channels: Sequence[int] = (32, 64, 128, 128),
                 decoder_mid: Sequence[int] = (24, 32, 64, 64),
                 decoder_blocks: str | Sequence[str] = "bottleneck", decoder_depth: int = 2,
                 head_block: str = "conv3x3", drop_path_prob: float = 0.0, affine: bool = True,
                 clamp: bool = True) -> None:
        super().__init__()
        if not isinstance(genotype, Genotype):
            raise ConfigError(f"CheapMatting needs a Genotype, got {type(genotype).__name__}")
        if C % 2:
            raise ConfigError(f"CheapMatting needs an even C, got {C}")
        dc, dm = tuple(decoder_channels), tuple(decoder_mid)
        if len(dc) != 4 or len(dm) != 4:
            raise ConfigError("decoder_channels and decoder_mid need 4 entries (levels 0..3)")
        blocks = _per_level(decoder_blocks, "decoder_blocks")
        self.genotype = genotype
        self.drop_path_prob = drop_path_prob
        self.clamp = clamp
        self.stem00 = StemHalf(C_in=in_channels, C_out=C // 2)
        self.stem05 = StemQuarter(C_in=C // 2, C_out=C, C_mid=stem_mid)
        self.stem10 = StemEighth(C_in=C, C_out=C)
        self.cells = CellStack(genotype=genotype, C=C, layers=layers, affine=affine)
        c8, c16, c32 = self.cells.tap_channels
        self.ppm = PyramidPooling(C_in=c32, C_mid=ppm_channels, C_out=ppm_out, scales=ppm_scales,
                                  extra_convs=ppm_extra_convs)
        self.decoder_layer3 = DecoderLevel(C_in=ppm_out + c32 + c16, C_out=dc[3], C_mid=dm[3],
                                           block=blocks[3], depth=decoder_depth)
        self.decoder_layer2 = DecoderLevel(C_in=dc[3] + c8, C_out=dc[2], C_mid=dm[2],
                                           block=blocks[2], depth=decoder_depth)
        self.decoder_layer1 = DecoderLevel(C_in=dc[2] + C, C_out=dc[1], C_mid=dm[1],
                                           block=blocks[1], depth=decoder_depth)
        self.decoder_layer0 = DecoderLevel(C_in=dc[1] + C // 2, C_out=dc[0], C_mid=dm[0],
                                           block=blocks[0], depth=decoder_depth)
        self.pred = PredictionHead(C_in=dc[0] + in_channels, block=head_block)

    @property
    def decoder_levels(self) -> tuple[DecoderLevel, DecoderLevel, DecoderLevel, DecoderLevel]:
        """Decoder levels 0..3 (1/2 .. 1/16)."""
        return (self.decoder_layer0, self.decoder_layer1, self.decoder_layer2, self.decoder_layer3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 6, H, W) RGB + one-hot trimap -> (B, 1, H, W) alpha."""
        s2 = self.stem00(x)  # (B, C/2, H/2, W/2)
        s4 = self.stem05(s2)  # (B, C, H/4, W/4)
        s8 = self.stem10(s4)  # (B, C, H/8, W/8)
        x8, x16, x32 = self.cells(s4, s8, self.drop_path_prob)  # (B, 4C, H/8) (B, 8C, H/16) (B, 16C, H/32)
        y = torch.cat([self.ppm(x32), x32], dim=1)  # (B, 256 + 16C, H/32, W/32)
        y = self.decoder_layer3(torch.cat([_up(y, x16), x16], dim=1))  # (B, 128, H/16, W/16)
        y = self.decoder_layer2(torch.cat([_up(y, x8), x8], dim=1))  # (B, 128, H/8, W/8)
        y = self.decoder_layer1(torch.cat([_up(y, s4), s4], dim=1))  # (B, 64, H/4, W/4)
        y = self.decoder_layer0(torch.cat([_up(y, s2), s2], dim=1))  # (B, 32, H/2, W/2)
        y = self.pred(torch.cat([_up(y, x), x], dim=1))  # (B, 1, H, W)
        return y.clamp(0.0, 1.0) if self.clamp else y

    def macs_breakdown(self, *, H: int, W: int) -> dict[str, int]:
        """Closed-form MACs of each part for a (1, 6, H, W) input (FlopCounterMode total / 2).

        Keys: ``stem00``, ``stem05``, ``stem10``, ``cells``, ``ppm``, ``decoder3`` .. ``decoder0``,
        ``head``; their sum is :meth:`macs_at`.
        """
        out: dict[str, int] = {}
        sizes = [(H, W)]
        h, w = H, W
        for name in ("stem00", "stem05", "stem10"):
            out[name], h, w = module_macs(getattr(self, name), H=h, W=w)
            sizes.append((h, w))
        # sizes: full, 1/2, 1/4, 1/8; cells run on the 1/8 map and reduce twice
        out["cells"] = self.cells.macs_at(H=h, W=w).macs
        h16, w16 = (h + 1) // 2, (w + 1) // 2
        h32, w32 = (h16 + 1) // 2, (w16 + 1) // 2
        out["ppm"] = self.ppm.macs_at(H=h32, W=w32).macs
        level_sizes = {3: (h16, w16), 2: sizes[3], 1: sizes[2], 0: sizes[1]}
        for level in (3, 2, 1, 0):
            lh, lw = level_sizes[level]
            out[f"decoder{level}"] = module_macs(self.decoder_levels[level], H=lh, W=lw).macs
        out["head"] = module_macs(self.pred, H=H, W=W).macs
        return out

    def macs_at(self, *, H: int, W: int) -> SizedMacs:
        """Closed-form MACs for a (1, 6, H, W) input; output size (H, W)."""
        return SizedMacs(sum(self.macs_breakdown(H=H, W=W).values()), H, W)

    def num_params(self) -> int:
        """Number of parameters (6,023,025 for the released configuration)."""
        return count_params(self)


def build_cheapmatting(*, genotype: Genotype | None = None, C: int = 48, layers: int = 14,
                       **knobs: object) -> CheapMatting:
    """Build CheapMatting; the defaults give the released network (ATLDAS_cifar100, C=48, 14 cells).

    Args:
        genotype: the cells; default :data:`ATLDAS_CIFAR100`.
        C: first-stage channels.
        layers: number of cells.
        **knobs: other keyword arguments of :class:`CheapMatting` (e.g. ``decoder_blocks``, ``head_block``).
    """
    known = set(CheapMatting.__init__.__kwdefaults__ or {}) - {"genotype", "C", "layers"}
    unknown = sorted(set(knobs) - known)
    if unknown:
        raise ConfigError(f"unknown CheapMatting option(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    return CheapMatting(genotype=ATLDAS_CIFAR100 if genotype is None else genotype, C=C,
                        layers=layers, **knobs)  # type: ignore[arg-type]
