"""AEMatter-class trimap-based matting network (Liu et al. 2023, "Revisiting Context Aggregation for
Image Matting"), written from the published description.

Data flow (strides relative to the input; channels of the released ``full`` variant)::

    image (B,3,H,W) + one-hot trimap (B,3,H,W) -> inputs (B,6,H,W)
    start_conv0: conv3x3 + PReLU                      -> f0 (B,48,H,W)
    start_conv:  conv3x3/2 + PReLU + conv3x3 + PReLU  -> f1 (B,64,H/2,W/2)
    trans: Swin-T (patch embedding conv3x3/2 on f1)   -> x1..x4: 96@1/4, 192@1/8, 384@1/16, 768@1/32
    context: apptrans(cat[x3, up_nearest(h2l(x4))])   -> ctx (B,512,H/32,W/32)
    AEAL: embdp(emb(x4)), zero-padded to a multiple of 5, trans1..trans3(., ctx), cropped
                                                        -> g (B,640,H/32,W/32)
    decoder: conv1(cat[x4, g]) -> ctran0 -> up -> conv2(cat[x3, .]) -> ctran1 -> up -> conv3(cat[x2, .])
             -> ctran2 -> up -> conv4(cat[x1, .]) -> ctran3 -> up -> conv5(cat[f1, .])   (B,48,H/2,W/2)
    head: convo(cat[inputs, f0, up(.)]) clamped to [0,1] -> alpha (B,1,H,W)

An AEAL block ("axis-wise" attention) adds a gated context branch
``src + gamma * trans(cat[src, ctx])`` (``gamma`` starts at 0), then splits the channels in two: the
first half attends within horizontal strips of ``strip_width`` rows (full width), the second half within
vertical strips of ``strip_width`` columns (full height); a post-norm residual and a ReLU feed-forward
follow, as in ``nn.TransformerEncoderLayer``. (The public code has had two AEAL variants; the released
checkpoint's shapes, a 1x1 conv to C/2, one bottleneck block, a 1x1 conv back, and ``gamma``, pin this
gated, post-norm one.)

Module and parameter names equal those of the released checkpoint (tests/data/aematter_state_dict.json),
so ``model.load_state_dict(torch.load(ckpt, weights_only=True)["model"], strict=True)`` works for the ``full``
variant.

Sizes: :meth:`AEMatter.forward` reflect-pads the input (centred) to a multiple of ``pad_multiple`` (32)
and crops the prediction back, so any H, W work; the released ``eval.py`` pads the same way.

Example:
    >>> model = build_aematter(variant="tiny")
    >>> trimap = torch.zeros(1, 3, 72, 88); trimap[:, 1] = 1        # all unknown, one-hot
    >>> alpha = model(torch.rand(1, 3, 72, 88), trimap)             # (1, 1, 72, 88) in [0, 1]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from atldas.errors import ConfigError
from atldas.models.swin import BasicLayer, SwinTransformer
from atldas.tensors import centred_pad
from atldas.utils.weights import load_weights
from atldas.registry import Registry

#: GroupNorm groups in the residual blocks (released value).
GN_GROUPS = 16


@dataclass(frozen=True)
class AEMatterConfig:
    """Widths and depths of an AEMatter-class network; the defaults are the released sizes.

    Attributes:
        stem_dims: channels of ``start_conv0`` (full resolution) and ``start_conv`` (1/2).
        embed_dim: Swin stage-0 channels (stage ``i`` has ``embed_dim * 2**i``).
        depths: Swin blocks per stage (four stages).
        num_heads: Swin attention heads per stage.
        window_size: Swin window side, backbone and decoder.
        drop_path_rate: backbone stochastic depth (0 in the release).
        context_dim: channels of ``h2l`` and of the context branch; the context fed to the AEAL
            blocks has ``2 * context_dim`` channels.
        aeal_dim: channels of the AEAL blocks.
        aeal_heads: attention heads of an AEAL block (half of them per axis).
        aeal_ffn_dim: hidden width of the AEAL feed-forward.
        aeal_blocks: number of AEAL blocks (``trans1``, ``trans2``, ...).
        strip_width: width of the strips the axis-wise attention runs over.
        decoder_dims: channels of the four decoder levels (1/32, 1/16, 1/8, 1/4).
        decoder_heads: attention heads of the four decoder Swin layers.
        decoder_depth: Swin blocks per decoder layer.
        refine_dims: channels of the 1/2-resolution refinement convs (``conv5``): hidden, output.
        head_dim: channels of the full-resolution head (``convo``).
        pad_multiple: inputs are reflect-padded to a multiple of this inside ``forward``.
    """

    stem_dims: Tuple[int, int] = (48, 64)
    embed_dim: int = 96
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    num_heads: Tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    drop_path_rate: float = 0.0
    context_dim: int = 256
    aeal_dim: int = 640
    aeal_heads: int = 20
    aeal_ffn_dim: int = 2048
    aeal_blocks: int = 3
    strip_width: int = 5
    decoder_dims: Tuple[int, int, int, int] = (256, 256, 192, 128)
    decoder_heads: Tuple[int, int, int, int] = (8, 8, 6, 4)
    decoder_depth: int = 3
    refine_dims: Tuple[int, int] = (64, 48)
    head_dim: int = 32
    pad_multiple: int = 32

    def validate(self) -> None:
        """Raise ConfigError when the sizes cannot build a network."""
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ConfigError(f"AEMatter needs 4 Swin stages; got depths={self.depths}, "
                              f"num_heads={self.num_heads}")
        if len(self.decoder_dims) != 4 or len(self.decoder_heads) != 4:
            raise ConfigError("decoder_dims and decoder_heads need 4 entries (1/32, 1/16, 1/8, 1/4)")
        if self.aeal_heads % 2 or (self.aeal_dim // 2) % (self.aeal_heads // 2):
            raise ConfigError(f"aeal_heads={self.aeal_heads} must be even and aeal_dim/2="
                              f"{self.aeal_dim // 2} divisible by aeal_heads/2")
        for name, ch in (("aeal_dim / 4", self.aeal_dim // 4), ("context_dim / 2", self.context_dim // 2)):
            if ch <= 0 or ch % GN_GROUPS:
                raise ConfigError(f"{name} = {ch} must be a positive multiple of {GN_GROUPS} (GroupNorm)")
        if self.pad_multiple % 32:
            raise ConfigError(f"pad_multiple must be a multiple of 32 (the network's stride), "
                              f"got {self.pad_multiple}")


#: Named sizes. ``full`` is the released network; ``small`` and ``tiny`` run on a CPU.
AEMATTER_VARIANTS: Registry[AEMatterConfig] = Registry("aematter variant")
AEMATTER_VARIANTS.add("full", AEMatterConfig())
AEMATTER_VARIANTS.add("small", AEMatterConfig(
    stem_dims=(24, 32), embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
    context_dim=64, aeal_dim=192, aeal_heads=6, aeal_ffn_dim=384, aeal_blocks=2,
    decoder_dims=(96, 96, 64, 48), decoder_heads=(3, 3, 2, 2), decoder_depth=2,
    refine_dims=(32, 24), head_dim=16))
AEMATTER_VARIANTS.add("tiny", AEMatterConfig(
    stem_dims=(16, 16), embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
    context_dim=32, aeal_dim=64, aeal_heads=4, aeal_ffn_dim=128, aeal_blocks=1,
    decoder_dims=(32, 32, 32, 16), decoder_heads=(2, 2, 2, 1), decoder_depth=2,
    refine_dims=(16, 16), head_dim=16))


class ResBlock(nn.Module):
    """Bottleneck residual block: 1x1 -> GN -> LReLU -> 3x3 -> GN -> LReLU -> 1x1, add, LReLU(0.1)."""

    def __init__(self, *, channels: int, mid: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, mid, 1)
        self.gn1 = nn.GroupNorm(GN_GROUPS, mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1)
        self.gn2 = nn.GroupNorm(GN_GROUPS, mid)
        self.conv3 = nn.Conv2d(mid, channels, 1)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.gn1(self.conv1(x)))
        y = self.act(self.gn2(self.conv2(y)))
        return self.act(x + self.conv3(y))


class AEALBlock(nn.Module):
    """Axis-wise attention block with a gated context branch (one ``trans{i}`` of AEMatter).

    Args:
        dim: channels ``C`` (even).
        num_heads: heads in all; ``num_heads / 2`` per axis, each over ``C / 2`` channels.
        ffn_dim: hidden width of the ReLU feed-forward.
        context_dim: channels of the context map concatenated in the gated branch.
        strip_width: rows per horizontal strip and columns per vertical strip.
    """

    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int, context_dim: int,
                 strip_width: int = 5) -> None:
        super().__init__()
        half = dim // 2
        self.strip_width = strip_width
        # Children in the released checkpoint's key order (own parameters like gamma come first).
        self.gamma = nn.Parameter(torch.zeros(1))  # gate of the context branch
        self.self_attn2 = nn.MultiheadAttention(half, num_heads // 2, batch_first=True)  # columns
        self.self_attn1 = nn.MultiheadAttention(half, num_heads // 2, batch_first=True)  # rows
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.trans = nn.Sequential(
            nn.Conv2d(dim + context_dim, half, 1), ResBlock(channels=half, mid=dim // 4),
            nn.Conv2d(half, dim, 1))

    def forward(self, src: Tensor, context: Tensor) -> Tensor:
        """Apply the block.

        Args:
            src: ``(B, C, H, W)`` with H and W multiples of ``strip_width``.
            context: ``(B, context_dim, H, W)``.

        Returns:
            ``(B, C, H, W)``.
        """
        s = self.strip_width
        src = src + self.gamma * self.trans(torch.cat([src, context], 1))
        _, c, h, w = src.shape
        rows = rearrange(src[:, : c // 2], "b c (nh s) w -> (b nh) (s w) c", s=s)  # strips of s rows
        cols = rearrange(src[:, c // 2:], "b c h (nw s) -> (b nw) (h s) c", s=s)  # strips of s columns
        rows = self.self_attn1(rows, rows, rows, need_weights=False)[0]
        cols = self.self_attn2(cols, cols, cols, need_weights=False)[0]
        rows = rearrange(rows, "(b nh) (s w) c -> b (nh s w) c", nh=h // s, s=s)  # (B, H*W, C/2)
        cols = rearrange(cols, "(b nw) (h s) c -> b (h nw s) c", nw=w // s, s=s)  # (B, H*W, C/2)
        x = rearrange(src, "b c h w -> b (h w) c")
        x = self.norm1(x + torch.cat([rows, cols], 2))
        x = self.norm2(x + self.linear2(F.relu(self.linear1(x))))
        return rearrange(x, "b (h w) c -> b c h w", h=h, w=w)


def _conv_prelu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout)]


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _swin_2d(layer: BasicLayer, x: Tensor) -> Tensor:
    """Run a Swin layer on a channel-first map: ``(B, C, H, W)`` -> ``(B, C, H, W)``."""
    out, _ = layer(rearrange(x, "b c h w -> b h w c"))
    return rearrange(out, "b h w c -> b c h w")


class AEMatter(nn.Module):
    """AEMatter-class matting network: Swin-T encoder, AEAL context blocks, Swin decoder, conv head.

    Build it with :func:`build_aematter`; see the module docstring for the data flow.

    Args:
        config: sizes; ``AEMatterConfig()`` is the released network (51,186,044 parameters).
    """

    def __init__(self, *, config: AEMatterConfig = AEMatterConfig()) -> None:
        super().__init__()
        config.validate()
        self.config = config
        cfg = config
        s0, s1 = cfg.stem_dims
        enc = [cfg.embed_dim * 2 ** i for i in range(4)]  # (96, 192, 384, 768) released
        d0, d1, d2, d3 = cfg.decoder_dims
        r0, r1 = cfg.refine_dims
        ctx = cfg.context_dim

        # Attribute order = the released checkpoint's key order.
        self.start_conv0 = nn.Sequential(*_conv_prelu(6, s0))
        self.start_conv = nn.Sequential(*_conv_prelu(s0, s1, stride=2), *_conv_prelu(s1, s1))
        self.trans = SwinTransformer(
            in_chans=s1, embed_dim=cfg.embed_dim, depths=cfg.depths, num_heads=cfg.num_heads,
            window_size=cfg.window_size, drop_path_rate=cfg.drop_path_rate,
            patch_kernel=3, patch_stride=2, patch_padding=1)
        self.conv1 = nn.Sequential(nn.Conv2d(enc[3] + cfg.aeal_dim, d0, 1))
        self.conv2 = nn.Sequential(nn.Conv2d(d0 + enc[2], d1, 1))
        self.conv3 = nn.Sequential(nn.Conv2d(d1 + enc[1], d2, 1))
        self.conv4 = nn.Sequential(nn.Conv2d(d2 + enc[0], d3, 1))
        for i, (dim, heads) in enumerate(zip(cfg.decoder_dims, cfg.decoder_heads)):
            self.add_module(f"ctran{i}", BasicLayer(dim=dim, depth=cfg.decoder_depth, num_heads=heads,
                                                    window_size=cfg.window_size))
        self.conv5 = nn.Sequential(*_conv_prelu(d3 + s1, r0), *_conv_prelu(r0, r0), *_conv_prelu(r0, r1))
        self.convo = nn.Sequential(*_conv_prelu(6 + s0 + r1, cfg.head_dim),
                                   *_conv_prelu(cfg.head_dim, cfg.head_dim),
                                   nn.Conv2d(cfg.head_dim, 1, 3, 1, 1))
        self.apptrans = nn.Sequential(  # context at 1/16 -> 1/32
            nn.Conv2d(enc[2] + ctx, ctx, 1), ResBlock(channels=ctx, mid=ctx // 2),
            ResBlock(channels=ctx, mid=ctx // 2), nn.Conv2d(ctx, 2 * ctx, 2, 2),
            ResBlock(channels=2 * ctx, mid=ctx // 2))
        self.emb = nn.Sequential(nn.Conv2d(enc[3], cfg.aeal_dim, 1),
                                 ResBlock(channels=cfg.aeal_dim, mid=cfg.aeal_dim // 4))
        self.embdp = nn.Sequential(nn.Conv2d(cfg.aeal_dim, cfg.aeal_dim, 1))
        self.h2l = nn.Conv2d(enc[3], ctx, 1)
        for i in range(cfg.aeal_blocks):
            self.add_module(f"trans{i + 1}", AEALBlock(
                dim=cfg.aeal_dim, num_heads=cfg.aeal_heads, ffn_dim=cfg.aeal_ffn_dim,
                context_dim=2 * ctx, strip_width=cfg.strip_width))

    def aeal(self, x4: Tensor, context: Tensor) -> Tensor:
        """AEAL stage: ``(B, C4, h, w)``, ``(B, 2*context_dim, h, w)`` -> ``(B, aeal_dim, h, w)``.

        Zero-pads (centred) to a multiple of ``strip_width`` for the strips, crops back after.
        """
        s = self.config.strip_width
        x = self.embdp(self.emb(x4))
        h, w = x.shape[-2:]
        ph, pw = (-h) % s, (-w) % s
        pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        x, context = F.pad(x, pads), F.pad(context, pads)
        for i in range(self.config.aeal_blocks):
            x = getattr(self, f"trans{i + 1}")(x, context)
        return x[:, :, pads[2]:pads[2] + h, pads[0]:pads[0] + w]

    def forward(self, image: Tensor, trimap: Tensor) -> Tensor:
        """Predict alpha.

        Args:
            image: RGB ``(B, 3, H, W)`` in [0, 1] (no mean/std normalisation).
            trimap: one-hot ``(B, 3, H, W)``, channels [background, unknown, foreground].

        Returns:
            alpha ``(B, 1, H, W)`` in [0, 1]. Any H, W: the input is reflect-padded (centred) to a
            multiple of ``pad_multiple`` and the prediction cropped back. The prediction is not
            clamped by the trimap here (callers do that).
        """
        if image.ndim != 4 or image.shape[1] != 3 or trimap.shape != image.shape:
            raise ValueError(f"expected image and one-hot trimap of shape (B, 3, H, W), got "
                             f"{tuple(image.shape)} and {tuple(trimap.shape)}")
        h, w = image.shape[-2:]
        inputs, (left, _, top, _) = centred_pad(torch.cat([image, trimap], 1), self.config.pad_multiple)
        alpha = self._forward_padded(inputs)
        return alpha[:, :, top:top + h, left:left + w]

    def _forward_padded(self, inputs: Tensor) -> Tensor:
        """``(B, 6, H, W)`` with H, W multiples of 32 -> alpha ``(B, 1, H, W)``."""
        f0 = self.start_conv0(inputs)  # (B, s0, H, W)
        f1 = self.start_conv(f0)  # (B, s1, H/2, W/2)
        x1, x2, x3, x4 = self.trans(f1)  # 1/4, 1/8, 1/16, 1/32
        hint = F.interpolate(self.h2l(x4), scale_factor=2.0, mode="nearest")  # (B, ctx, H/16, W/16)
        context = self.apptrans(torch.cat([x3, hint], 1))  # (B, 2*ctx, H/32, W/32)
        g = self.aeal(x4, context)  # (B, aeal_dim, H/32, W/32)
        d = _swin_2d(self.ctran0, self.conv1(torch.cat([x4, g], 1)))  # (B, d0, H/32, W/32)
        d = _swin_2d(self.ctran1, self.conv2(torch.cat([x3, _up2(d)], 1)))  # (B, d1, H/16, W/16)
        d = _swin_2d(self.ctran2, self.conv3(torch.cat([x2, _up2(d)], 1)))  # (B, d2, H/8, W/8)
        d = _swin_2d(self.ctran3, self.conv4(torch.cat([x1, _up2(d)], 1)))  # (B, d3, H/4, W/4)
        d = self.conv5(torch.cat([f1, _up2(d)], 1))  # (B, r1, H/2, W/2)
        alpha = self.convo(torch.cat([inputs, f0, _up2(d)], 1))  # (B, 1, H, W)
        return alpha.clamp(0.0, 1.0)


def build_aematter(*, variant: str = "full", **overrides: Any) -> AEMatter:
    """Build an AEMatter-class network.

    Args:
        variant: a name in :data:`AEMATTER_VARIANTS` (``full`` = released sizes, ``small``, ``tiny``).
        **overrides: :class:`AEMatterConfig` fields to change, e.g. ``embed_dim=32``.

    Returns:
        The network (random weights; load a checkpoint's ``"model"`` entry for the released ones).

    Raises:
        ConfigError: unknown variant or field, or sizes that do not fit together.
    """
    config = AEMATTER_VARIANTS.get(variant)
    fields = {f.name for f in dataclasses.fields(AEMatterConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown AEMatter option(s) {unknown}; known: {sorted(fields)}")
    tuples = {k: tuple(v) for k, v in overrides.items() if isinstance(v, list)}
    return AEMatter(config=dataclasses.replace(config, **{**overrides, **tuples}))


def load_aematter_checkpoint(model: AEMatter, path: str, *, strict: bool = True) -> AEMatter:
    """Load a released-format checkpoint (``{"model": state_dict}`` or a plain state dict) with
    :func:`atldas.utils.weights.load_weights` (``weights_only=True``, one-line errors)."""
    load_weights(model, path, strict=strict, name="AEMatter")
    return model
