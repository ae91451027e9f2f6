"""CheapMatting: a DARTS-cell encoder with a pyramid-pooling U-Net decoder, for trimap-based matting.

A reimplementation of the released CheapMatting network (6,023,025 parameters with the
ATLDAS_cifar100 cell, C = 48, 14 cells; 38.594 G MACs at 1024x1024). The macro is data,
:class:`CheapMattingCfg`, and one class, :class:`CheapMattingMacro`, builds it around a cell stack and
a block factory; the standalone network (:class:`CheapMatting`: fixed cells, fixed blocks) and the
search supernet (``search_spaces.matting``: search cells, choice blocks) are both that macro, and the
cost tables and plots read the same config:

    stem00  (B, 6, H, W)       -> (B, C/2, H/2, W/2)    two 3x3 convs + PReLU (first one stride 2)
    stem05                     -> (B, C, H/4, W/4)      3x3 stride-2 conv + two bottleneck res blocks
    stem10                     -> (B, C, H/8, W/8)      3x3 stride-2 conv + BatchNorm
    cells   14 DARTS cells, reductions at layers//3 and 2*layers//3; taps after the last cell of
            each stage: (B, 4C, H/8), (B, 8C, H/16), (B, 16C, H/32)
    ppm     pyramid pooling on the 1/32 tap                      -> (B, 256, H/32)
    decoder_layer3..0  per level: concat(upsampled, skip) -> 1x1 conv -> blocks  (1/16 .. 1/2)
    pred    concat(upsampled, input) -> 3x3 conv, PReLU, 3x3 conv, PReLU, 1x1 conv; clamp to [0, 1]

Module names equal the released ``model.py``, so its checkpoint loads with ``strict=True``:

    >>> net = CheapMatting(genotype=ATLDAS_CIFAR100)            # the released network
    >>> sum(p.numel() for p in net.parameters())
    6023025
    >>> state = torch.load("cheapmatting.pth", weights_only=True)["model"]  # doctest: +SKIP
    >>> net.load_state_dict(state, strict=True)  # doctest: +SKIP
    >>> rgb, trimap = torch.rand(1, 3, 64, 64), torch.randint(0, 3, (1, 64, 64))  # trimap 0 / 1 / 2
    >>> trimap_onehot = F.one_hot(trimap, 3).permute(0, 3, 1, 2).float()
    >>> alpha = net.eval()(torch.cat([rgb, trimap_onehot], 1))   # (B, 6, H, W) -> (B, 1, H, W)
    >>> alpha.shape
    torch.Size([1, 1, 64, 64])

Upsampling is bilinear (align_corners=False) to the size of the skip it joins, which equals the
released x2 upsampling whenever H and W are multiples of 32 and also works for other sizes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from math import gcd
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from atldas.config import keyword_only
from atldas.errors import ConfigError
from atldas.genotype import Genotype
from atldas.models.cells import Cell
from atldas.registry import Registry
from atldas.topology import cell_stack, reductions_of, stage_taps
from atldas.utils.counting import count_params

import derived_models

__all__ = [
    "ATLDAS_CIFAR100",
    "MACRO_NAME",
    "CheapMattingCfg",
    "BottleneckResBlock",
    "SepResBlock",
    "DECODER_BLOCKS",
    "HEAD_BLOCKS",
    "LEVELS",
    "StemHalf",
    "StemQuarter",
    "StemEighth",
    "CellStack",
    "PyramidPooling",
    "DecoderLevel",
    "PredictionHead",
    "CheapMattingMacro",
    "CheapMatting",
    "build_cheapmatting",
]

#: The macro's name in genotype files (``space.macro.name``).
MACRO_NAME = "cheapmatting"
#: Decoder levels, from 1/2 (0) to 1/16 (3).
LEVELS = (0, 1, 2, 3)
#: Sanity limits of the macro knobs (a genotype file is user input).
MAX_C, MAX_LAYERS = 1024, 200


def _int(value: Any, name: str, *, low: int = 1, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"CheapMatting macro: {name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ConfigError(f"CheapMatting macro: {name} must be in {low}..{high if high is not None else 'inf'}, "
                          f"got {value}")
    return value


def _ints(value: Any, name: str, n: Optional[int]) -> Tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or (n is not None and len(value) != n):
        want = f"{n} integers" if n is not None else "a list of integers"
        raise ConfigError(f"CheapMatting macro: {name} must be {want}, got {value!r}")
    return tuple(_int(v, name, high=4096) for v in value)


@keyword_only
@dataclass(frozen=True)
class CheapMattingCfg:
    """The CheapMatting macro as data; the defaults are the released network's.

    The cells (a genotype) and the decoder/head blocks (a genotype's ``choices``) are not part of the
    macro. A genotype file records the macro in ``space.macro`` (:meth:`to_meta`).

    Attributes:
        C: stem and first-stage cell channels (48), even.
        layers: number of cells (14), >= 3.
        in_channels: input channels (6 = RGB + one-hot trimap [bg, unknown, fg]).
        stem_mid: bottleneck channels of the 1/4 stem's residual blocks (32).
        ppm_channels: channels of each pyramid-pooling branch (128).
        ppm_out: pyramid-pooling output channels (256).
        ppm_scales: pool sizes (5, 13, 19, 25).
        ppm_extra_convs: unused PPM branch convs the released checkpoint carries (1; 0 in searched
            networks).
        decoder_channels: output channels of decoder levels 0..3 (32, 64, 128, 128).
        decoder_mid: residual-block bottleneck channels of levels 0..3 (24, 32, 64, 64).
        decoder_depth: residual blocks per level (2).
    """

    C: int = 48
    layers: int = 14
    in_channels: int = 6
    stem_mid: int = 32
    ppm_channels: int = 128
    ppm_out: int = 256
    ppm_scales: Tuple[int, ...] = (5, 13, 19, 25)
    ppm_extra_convs: int = 1
    decoder_channels: Tuple[int, int, int, int] = (32, 64, 128, 128)
    decoder_mid: Tuple[int, int, int, int] = (24, 32, 64, 64)
    decoder_depth: int = 2

    def __post_init__(self) -> None:
        C = _int(self.C, "C", low=2, high=MAX_C)
        if C % 2:
            raise ConfigError(f"CheapMatting macro: C must be even (the 1/2 stem has C/2 channels), got {C}")
        _int(self.layers, "layers", low=3, high=MAX_LAYERS)
        for name in ("in_channels", "stem_mid", "ppm_channels", "ppm_out"):
            _int(getattr(self, name), name, high=4096)
        _int(self.ppm_extra_convs, "ppm_extra_convs", low=0, high=8)
        _int(self.decoder_depth, "decoder_depth", low=0, high=16)
        object.__setattr__(self, "ppm_scales", _ints(self.ppm_scales, "ppm_scales", None))
        if not self.ppm_scales or any(s < 2 for s in self.ppm_scales):
            raise ConfigError(f"CheapMatting macro: ppm_scales must be >= 2, got {list(self.ppm_scales)}")
        object.__setattr__(self, "decoder_channels", _ints(self.decoder_channels, "decoder_channels", 4))
        object.__setattr__(self, "decoder_mid", _ints(self.decoder_mid, "decoder_mid", 4))

    # ------------------------------------------------------------------ geometry

    @property
    def taps(self) -> Tuple[int, int, int]:
        """Cells whose outputs feed the decoder (the last of each stage)."""
        return stage_taps(self.layers)

    def tap_channels(self, concat: int = 4) -> Tuple[int, int, int]:
        """Channels at the taps (1/8, 1/16, 1/32) when every cell concatenates ``concat`` nodes."""
        plan = cell_stack(C=self.C, layers=self.layers, C_s0=self.C, C_s1=self.C, s0_reduced=True,
                          concat=(concat, concat))
        return tuple(plan[k].C_out for k in self.taps)  # type: ignore[return-value]

    def level_inputs(self, tap_channels: Sequence[int]) -> Dict[int, int]:
        """Input channels of decoder level 0..3: concat(upsampled previous, skip)."""
        c8, c16, c32 = tap_channels
        dc = self.decoder_channels
        return {3: self.ppm_out + c32 + c16, 2: dc[3] + c8, 1: dc[2] + self.C, 0: dc[1] + self.C // 2}

    @property
    def head_input(self) -> int:
        """Input channels of the prediction head: decoder level 0 + the network input."""
        return self.decoder_channels[0] + self.in_channels

    @staticmethod
    def sizes(size: int) -> Tuple[int, int, int, int, int, int]:
        """Side at full, 1/2, 1/4, 1/8, 1/16, 1/32 resolution (each stride-2 step rounds up)."""
        out = [size]
        for _ in range(5):
            out.append((out[-1] + 1) // 2)
        return tuple(out)  # type: ignore[return-value]

    def level_sizes(self, size: int) -> Dict[int, int]:
        """Side of decoder level 0..3 for a ``size`` x ``size`` input (1/2 .. 1/16)."""
        s = self.sizes(size)
        return {lv: s[lv + 1] for lv in LEVELS}

    # ------------------------------------------------------------------ derived configs

    def scaled(self, *, C: int, layers: int, minimum: int = 8) -> "CheapMattingCfg":
        """A proxy of this macro (DARTS practice): ``C`` and ``layers`` as given, the other widths
        scaled by ``C / self.C`` to multiples of 8 (at least ``minimum``), no extra PPM convs."""
        ratio = C / self.C

        def sc(w: int) -> int:
            return max(minimum, int(round(w * ratio / 8)) * 8)

        return dataclasses.replace(self, C=C, layers=layers, stem_mid=sc(self.stem_mid),
                                   ppm_channels=sc(self.ppm_channels), ppm_out=sc(self.ppm_out),
                                   decoder_channels=tuple(sc(w) for w in self.decoder_channels),
                                   decoder_mid=tuple(sc(w) for w in self.decoder_mid), ppm_extra_convs=0)

    def to_meta(self) -> Dict[str, Any]:
        """The ``space.macro`` entry of a genotype file (plain JSON)."""
        meta: Dict[str, Any] = {"name": MACRO_NAME}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            meta[f.name] = list(v) if isinstance(v, tuple) else v
        return meta

    @classmethod
    def from_meta(cls, meta: Optional[Mapping[str, Any]], **defaults: Any) -> "CheapMattingCfg":
        """Inverse of :meth:`to_meta`; keys the file lacks take ``defaults``, then the released values.

        Raises:
            ConfigError: an unknown key, another macro's name, or a value of the wrong type or range.
        """
        meta = dict(meta or {})
        name = meta.pop("name", MACRO_NAME)
        if name != MACRO_NAME:
            raise ConfigError(f"macro {name!r} is not the CheapMatting macro")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(meta) - known)
        if unknown:
            raise ConfigError(f"CheapMatting macro: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{**defaults, **meta})


#: The cell of the released CheapMatting (reference/genotypes.json, ``ATLDAS_cifar100``), as
#: ``derived_models/atldas_cifar100.json`` holds it.
ATLDAS_CIFAR100 = derived_models.get_genotype("atldas_cifar100")


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
    """Standalone DARTS cells laid out by :func:`atldas.topology.cell_stack` (reductions at
    ``layers // 3`` and ``2 * layers // 3``); the outputs of the cells in ``taps`` are returned.

    Module names are ``K`` per cell (``cells.K._ops.J`` inside a network), as in DARTS.

    Args:
        genotype: cells to stack.
        C: node channels of the first stage (doubled at each reduction).
        layers: number of cells (>= 3).
        C_s0, C_s1: channels of the first cell's two inputs (default ``C``).
        s0_reduced: the first cell's ``s0`` is at twice the resolution of ``s1`` (CheapMatting: the
            1/4 and 1/8 stems), so its ``preprocess0`` is a FactorizedReduce.
        taps: indices of the cells whose outputs :meth:`forward` returns (default: the last one of
            each stage).
        affine: BatchNorm affine in the cells.
    """

    def __init__(self, *, genotype: Genotype, C: int, layers: int, C_s0: Optional[int] = None,
                 C_s1: Optional[int] = None, s0_reduced: bool = True, taps: Optional[Sequence[int]] = None,
                 affine: bool = True) -> None:
        super().__init__()
        if layers < 3:
            raise ConfigError(f"a DARTS cell stack needs layers >= 3 (three stages), got {layers}")
        plan = cell_stack(C=C, layers=layers, C_s0=C if C_s0 is None else C_s0, C_s1=C if C_s1 is None else C_s1,
                          s0_reduced=s0_reduced, concat=(len(genotype.normal.concat), len(genotype.reduce.concat)))
        for c in plan:
            self.append(Cell(spec=genotype.cell(c.reduction), C_prev_prev=c.C_pp, C_prev=c.C_p, C=c.C,
                             reduction=c.reduction, reduction_prev=c.reduction_prev, affine=affine))
        self.reductions = reductions_of(layers)
        self.channels: list[int] = [c.C_out for c in plan]
        self.taps = tuple(taps) if taps is not None else stage_taps(layers)

    @property
    def tap_channels(self) -> tuple[int, ...]:
        """Channels of the tapped outputs ((192, 384, 768) in the released CheapMatting)."""
        return tuple(self.channels[i] for i in self.taps)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> list[torch.Tensor]:
        """(B, C_s0, 2h, 2w), (B, C_s1, h, w) -> the tapped outputs, e.g. [(B, 4C, h, w),
        (B, 8C, h/2, w/2), (B, 16C, h/4, w/4)]."""
        taps = []
        for i, cell in enumerate(self):
            s0, s1 = s1, cell(s0, s1, drop_prob)
            if i in self.taps:
                taps.append(s1)
        return taps


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
# the macro


def _per_level(value: str | Sequence[str], name: str) -> tuple[str, str, str, str]:
    if isinstance(value, str):
        return (value,) * 4  # type: ignore[return-value]
    value = tuple(value)
    if len(value) != 4:
        raise ConfigError(f"{name} needs one entry per decoder level 0..3 (or one string), got {value}")
    return value  # type: ignore[return-value]


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


#: ``level(lv, C_in) -> module`` builds decoder level ``lv``; ``head(C_in) -> module`` the head.
LevelFactory = Callable[[int, int], nn.Module]
HeadFactory = Callable[[int], nn.Module]


class CheapMattingMacro(nn.Module):
    """The CheapMatting macro around a cell stack and a block factory (module docstring).

    Subclasses pass the cells (a :class:`CellStack`, or the supernet's search stack: any module
    ``cells(s4, s8, **kw)`` returning the three taps) and how to build each decoder level and the head
    (fixed blocks, or choices among candidates); :meth:`run` is the forward both share.

    Args:
        cfg: the macro.
        cells: the cell stack.
        tap_channels: channels of its three taps.
        level: builds decoder level ``lv`` from its input channels (see :data:`LevelFactory`).
        head: builds the prediction head from its input channels.
    """

    def __init__(self, *, cfg: CheapMattingCfg, cells: nn.Module, tap_channels: Sequence[int],
                 level: LevelFactory, head: HeadFactory) -> None:
        super().__init__()
        self.cfg = cfg
        C = cfg.C
        self.stem00 = StemHalf(C_in=cfg.in_channels, C_out=C // 2)
        self.stem05 = StemQuarter(C_in=C // 2, C_out=C, C_mid=cfg.stem_mid)
        self.stem10 = StemEighth(C_in=C, C_out=C)
        self.cells = cells
        c_in = cfg.level_inputs(tap_channels)
        self.ppm = PyramidPooling(C_in=tap_channels[2], C_mid=cfg.ppm_channels, C_out=cfg.ppm_out,
                                  scales=cfg.ppm_scales, extra_convs=cfg.ppm_extra_convs)
        for lv in (3, 2, 1, 0):  # the released state dict lists them in this order
            setattr(self, f"decoder_layer{lv}", level(lv, c_in[lv]))
        self.pred = head(cfg.head_input)

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The first two stems' features of ``x``: (B, C/2, H/2, W/2) and (B, C, H/4, W/4)."""
        s2 = self.stem00(x)
        return s2, self.stem05(s2)

    def run(self, x: torch.Tensor, *, cells_kw: Mapping[str, Any], block_kw: Mapping[str, Any],
            stems: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
        """(B, 6, H, W) -> unclamped (B, 1, H, W); ``cells_kw`` go to the cells, ``block_kw`` to the
        decoder levels and the head; ``stems``: :meth:`stems` of ``x`` where the caller has them."""
        s2, s4 = self.stems(x) if stems is None else stems  # (B, C/2, H/2, W/2), (B, C, H/4, W/4)
        s8 = self.stem10(s4)  # (B, C, H/8, W/8)
        x8, x16, x32 = self.cells(s4, s8, **cells_kw)  # (B, 4C, H/8) (B, 8C, H/16) (B, 16C, H/32)
        y = torch.cat([self.ppm(x32), x32], dim=1)  # (B, ppm_out + 16C, H/32, W/32)
        y = self.decoder_layer3(torch.cat([_up(y, x16), x16], dim=1), **block_kw)  # (B, dc3, H/16, W/16)
        y = self.decoder_layer2(torch.cat([_up(y, x8), x8], dim=1), **block_kw)  # (B, dc2, H/8, W/8)
        y = self.decoder_layer1(torch.cat([_up(y, s4), s4], dim=1), **block_kw)  # (B, dc1, H/4, W/4)
        y = self.decoder_layer0(torch.cat([_up(y, s2), s2], dim=1), **block_kw)  # (B, dc0, H/2, W/2)
        return self.pred(torch.cat([_up(y, x), x], dim=1), **block_kw)  # (B, 1, H, W)


class CheapMatting(CheapMattingMacro):
    """The standalone CheapMatting network: a genotype's cells and fixed decoder/head blocks.

    Args:
        genotype: normal and reduction cells.
        cfg: the macro (default: the released one); keyword knobs (``C=``, ``layers=``, any
            :class:`CheapMattingCfg` field) replace its values.
        decoder_blocks: block of each level 0..3, or one name for all (see :data:`DECODER_BLOCKS`).
        head_block: prediction head (see :data:`HEAD_BLOCKS`).
        drop_path_prob: drop-path probability inside cells while training (settable attribute).
        affine: BatchNorm affine in the cells.
        clamp: clamp the output to [0, 1] (as released).
    """

    def __init__(self, *, genotype: Genotype, cfg: Optional[CheapMattingCfg] = None,
                 decoder_blocks: str | Sequence[str] = "bottleneck", head_block: str = "conv3x3",
                 drop_path_prob: float = 0.0, affine: bool = True, clamp: bool = True, **knobs: Any) -> None:
        if not isinstance(genotype, Genotype):
            raise ConfigError(f"CheapMatting needs a Genotype, got {type(genotype).__name__}")
        cfg = cfg if cfg is not None else CheapMattingCfg()
        if knobs:
            known = {f.name for f in dataclasses.fields(CheapMattingCfg)}
            unknown = sorted(set(knobs) - known)
            if unknown:
                raise ConfigError(f"unknown CheapMatting option(s) {', '.join(unknown)}; "
                                  f"known: {', '.join(sorted(known | {'decoder_blocks', 'head_block'}))}")
            cfg = dataclasses.replace(cfg, **knobs)
        blocks = _per_level(decoder_blocks, "decoder_blocks")
        dc, dm = cfg.decoder_channels, cfg.decoder_mid
        cells = CellStack(genotype=genotype, C=cfg.C, layers=cfg.layers, affine=affine)
        super().__init__(
            cfg=cfg, cells=cells, tap_channels=cells.tap_channels,
            level=lambda lv, c_in: DecoderLevel(C_in=c_in, C_out=dc[lv], C_mid=dm[lv], block=blocks[lv],
                                                depth=cfg.decoder_depth),
            head=lambda c_in: PredictionHead(C_in=c_in, block=head_block))
        self.genotype = genotype
        self.drop_path_prob = drop_path_prob
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 6, H, W) RGB + one-hot trimap -> (B, 1, H, W) alpha."""
        y = self.run(x, cells_kw={"drop_prob": self.drop_path_prob}, block_kw={})
        return y.clamp(0.0, 1.0) if self.clamp else y

    def num_params(self) -> int:
        """Number of parameters (6,023,025 for the released configuration)."""
        return count_params(self)


def build_cheapmatting(*, genotype: Genotype | None = None, **knobs: Any) -> CheapMatting:
    """Build CheapMatting; the defaults give the released network (ATLDAS_cifar100, C=48, 14 cells).

    Args:
        genotype: the cells; default :data:`ATLDAS_CIFAR100`.
        **knobs: other keyword arguments of :class:`CheapMatting` (``cfg``, ``C``, ``layers``,
            ``decoder_blocks``, ``head_block``, ...).
    """
    return CheapMatting(genotype=ATLDAS_CIFAR100 if genotype is None else genotype, **knobs)
