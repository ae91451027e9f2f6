"""A compact hand-designed CNN matting baseline: a ResNet-style U-Net.

The reference point for searched networks at CheapMatting's size and cost: at ``width=1`` it has
5,965,489 parameters and 39.4 G MACs at 1024x1024 by torch's FlopCounterMode (CheapMatting: 6,023,025
and 38.6 G). Data flow (channels at ``width=1``)::

    inputs (B,6,H,W) = RGB + one-hot trimap [bg, unknown, fg]
    stem: conv3x3/2 + GN + ReLU, conv3x3 + GN + ReLU        -> s0 (B,24,H/2,W/2)
    encoder: per level a stride-2 residual block, then ``blocks - 1`` more
                                                            -> s1..s4: 48@1/4, 96@1/8, 192@1/16, 320@1/32
    decoder: per level bilinear x2, concat skip, 1x1 conv + GN + ReLU, one residual block
                                                            -> 192@1/16, 96@1/8, 48@1/4, 24@1/2
    head: bilinear x2, concat the inputs, two conv3x3 + GN + ReLU (16), conv3x3 -> 1,
          clamp to [0, 1]                                   -> alpha (B,1,H,W)

Residual blocks are the basic two-3x3 kind with GroupNorm (8 groups; matting batches are small).
:meth:`CNNBaseline.forward` reflect-pads (centred) to a multiple of 32 and crops back, so any H, W work.

Example:
    >>> net = build_cnn_baseline(variant="small")
    >>> trimap = torch.zeros(1, 3, 72, 88); trimap[:, 1] = 1        # all unknown, one-hot
    >>> alpha = net(torch.cat([torch.rand(1, 3, 72, 88), trimap], 1))  # (1, 1, 72, 88)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from atldas.errors import ConfigError
from atldas.tensors import centred_pad
from atldas.registry import Registry

#: GroupNorm groups; widths are rounded to multiples of this.
GN_GROUPS = 8


@dataclass(frozen=True)
class CNNBaselineConfig:
    """Sizes of the CNN baseline.

    Attributes:
        width: multiplier on every channel count (rounded to a multiple of 8).
        channels: channels of the stem (1/2) and of the encoder levels 1/4 .. 1/32; the input is
            padded to a multiple of ``2 ** len(channels)``.
        blocks: residual blocks per encoder level (1/4 .. 1/32); the first one strides.
        head_channels: channels of the full-resolution head.
        out_act: ``"clamp"`` (clamp to [0,1], as the released matting nets do) or ``"sigmoid"``.
    """

    width: float = 1.0
    channels: Tuple[int, ...] = (24, 48, 96, 192, 320)
    blocks: Tuple[int, ...] = (2, 2, 2, 2)
    head_channels: int = 16
    out_act: str = "clamp"

    def validate(self) -> None:
        """Raise ConfigError when the sizes cannot build a network."""
        if len(self.blocks) != len(self.channels) - 1 or any(b < 1 for b in self.blocks):
            raise ConfigError(f"blocks {self.blocks} needs one entry >= 1 per encoder level "
                              f"({len(self.channels) - 1})")
        if self.width <= 0:
            raise ConfigError(f"width must be positive, got {self.width}")
        if self.out_act not in ("clamp", "sigmoid"):
            raise ConfigError(f"out_act must be 'clamp' or 'sigmoid', got {self.out_act!r}")

    def scaled(self, channels: int) -> int:
        """``channels * width`` rounded to a multiple of :data:`GN_GROUPS` (at least one group)."""
        return max(GN_GROUPS, int(round(channels * self.width / GN_GROUPS)) * GN_GROUPS)


#: Named sizes: ``full`` 5,965,489 parameters (CheapMatting: 6,023,025), ``small``, ``tiny``.
CNN_BASELINE_VARIANTS: Registry[CNNBaselineConfig] = Registry("cnn baseline variant")
CNN_BASELINE_VARIANTS.add("full", CNNBaselineConfig())
CNN_BASELINE_VARIANTS.add("small", CNNBaselineConfig(width=0.5))
CNN_BASELINE_VARIANTS.add("tiny", CNNBaselineConfig(width=0.25, blocks=(1, 1, 1, 1)))


def conv_norm_act(cin: int, cout: int, *, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias) + GroupNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.GroupNorm(GN_GROUPS, cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Basic residual block: two 3x3 conv + GN, ReLU after the sum; 1x1 projection when needed.

    Args:
        cin: input channels.
        cout: output channels.
        stride: stride of the first conv (and of the projection).
    """

    def __init__(self, *, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_norm_act(cin, cout, stride=stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(GN_GROUPS, cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.GroupNorm(GN_GROUPS, cout))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.shortcut(x) + self.norm2(self.conv2(self.conv1(x))))


class UpBlock(nn.Module):
    """Decoder level: bilinear x2, concat the skip, 1x1 conv to ``cout``, one residual block."""

    def __init__(self, *, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.fuse = conv_norm_act(cin + skip, cout, kernel=1)
        self.block = ResidualBlock(cin=cout, cout=cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(self.fuse(torch.cat([x, skip], 1)))


class CNNBaseline(nn.Module):
    """ResNet-style U-Net matting baseline; build it with :func:`build_cnn_baseline`.

    Args:
        config: sizes (defaults: 5,965,489 parameters).
    """

    def __init__(self, *, config: CNNBaselineConfig = CNNBaselineConfig()) -> None:
        super().__init__()
        config.validate()
        self.config = config
        ch = [config.scaled(c) for c in config.channels]
        self.stride = 2 ** len(ch)
        self.stem = nn.Sequential(conv_norm_act(6, ch[0], stride=2), conv_norm_act(ch[0], ch[0]))
        self.encoder = nn.ModuleList(
            nn.Sequential(ResidualBlock(cin=ch[i], cout=ch[i + 1], stride=2),
                          *(ResidualBlock(cin=ch[i + 1], cout=ch[i + 1]) for _ in range(n - 1)))
            for i, n in enumerate(config.blocks))
        self.decoder = nn.ModuleList(
            UpBlock(cin=ch[i + 1], skip=ch[i], cout=ch[i]) for i in reversed(range(len(ch) - 1)))
        head = config.scaled(config.head_channels)
        self.head = nn.Sequential(conv_norm_act(ch[0] + 6, head), conv_norm_act(head, head),
                                  nn.Conv2d(head, 1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Predict alpha.

        Args:
            x: ``(B, 6, H, W)``: RGB in [0, 1] and the one-hot trimap [bg, unknown, fg].

        Returns:
            alpha ``(B, 1, H, W)`` in [0, 1]; any H, W (reflect-padded inside, centred, to a
            multiple of 32, and cropped back).
        """
        if x.ndim != 4 or x.shape[1] != 6:
            raise ValueError(f"expected (B, 6, H, W) = RGB + one-hot trimap, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        inputs, (left, _, top, _) = centred_pad(x, self.stride)
        skips = [self.stem(inputs)]  # (B, c0, H/2, W/2)
        for level in self.encoder:
            skips.append(level(skips[-1]))  # (B, c_i, H/2^(i+1), W/2^(i+1))
        y = skips.pop()  # (B, c4, H/32, W/32)
        for up in self.decoder:
            y = up(y, skips.pop())  # up one level, to (B, c0, H/2, W/2) at the end
        y = F.interpolate(y, size=(inputs.shape[-2:]), mode="bilinear", align_corners=False)
        alpha = self.head(torch.cat([y, inputs], 1))  # (B, 1, H, W)
        alpha = alpha.clamp(0.0, 1.0) if self.config.out_act == "clamp" else torch.sigmoid(alpha)
        return alpha[:, :, top:top + h, left:left + w]


def build_cnn_baseline(*, variant: str = "full", **overrides: Any) -> CNNBaseline:
    """Build the CNN baseline.

    Args:
        variant: a name in :data:`CNN_BASELINE_VARIANTS` (``full`` ~6.0 M, ``small``, ``tiny``).
        **overrides: :class:`CNNBaselineConfig` fields to change, e.g. ``width=0.75``.

    Raises:
        ConfigError: unknown variant or field, or invalid sizes.
    """
    config = CNN_BASELINE_VARIANTS.get(variant)
    fields = {f.name for f in dataclasses.fields(CNNBaselineConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown CNN baseline option(s) {unknown}; known: {sorted(fields)}")
    tuples = {k: tuple(v) for k, v in overrides.items() if isinstance(v, list)}
    return CNNBaseline(config=dataclasses.replace(config, **{**overrides, **tuples}))
