"""Swin Transformer pieces (Liu et al. 2021) for the AEMatter-class baseline.

Written here because torchvision and timm cannot be imported in this environment. The module and
parameter names (``norm1``, ``attn.qkv``, ``attn.relative_position_bias_table``,
``attn.relative_position_index``, ``mlp.fc1``, ``downsample.reduction`` ...) follow the released Swin
checkpoints, so their state dicts load with ``strict=True``.

Tensors are kept channel-last, ``(B, H, W, C)``, between blocks. Inputs whose H or W is not a
multiple of the window size are zero-padded at the bottom/right inside each block (after ``norm1``)
and cropped back, and :class:`PatchMerging` pads odd sizes, as the detection/segmentation Swin
backbones do. Shifted-window masks are built for the padded size on every call.

Example:
    >>> layer = BasicLayer(dim=32, depth=2, num_heads=2, window_size=7)
    >>> out, down = layer(torch.randn(1, 20, 30, 32))   # (1, 20, 30, 32), same tensor (no merge)
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from atldas.errors import ConfigError

#: Additive logit for token pairs that a shifted window joins across the image border.
MASK_VALUE = -100.0


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p``.

    Kept samples are scaled by ``1 / (1 - p)``; identity in eval mode or when ``p == 0``.
    """

    def __init__(self, *, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"drop-path rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Two-layer perceptron with GELU: ``fc2(drop(gelu(fc1(x))))``."""

    def __init__(self, *, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def relative_position_index(window_size: int) -> Tensor:
    """Index into the bias table for every (query, key) pair of a square window.

    Args:
        window_size: side ``M`` of the window.

    Returns:
        Long tensor ``(M*M, M*M)``; entry ``(i, j)`` is
        ``(dy + M - 1) * (2M - 1) + (dx + M - 1)`` with ``(dy, dx) = pos(i) - pos(j)``.
    """
    m = window_size
    ys, xs = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, M*M), row-major positions
    rel = coords[:, :, None] - coords[:, None, :]  # (2, M*M, M*M)
    return (rel[0] + m - 1) * (2 * m - 1) + (rel[1] + m - 1)


def shifted_window_mask(height: int, width: int, *, window_size: int, shift: int,
                        device: Optional[torch.device] = None) -> Tensor:
    """Attention mask for shifted windows on a padded map of ``height x width``.

    After the cyclic shift by ``-shift``, a window may hold tokens from up to four regions that are
    not neighbours in the image; pairs from different regions get :data:`MASK_VALUE`.

    Args:
        height: padded height (a multiple of ``window_size``).
        width: padded width (a multiple of ``window_size``).
        window_size: window side ``M``.
        shift: shift size (``0 < shift < M``).
        device: where to build the mask.

    Returns:
        Float tensor ``(num_windows, M*M, M*M)`` of 0 and :data:`MASK_VALUE`.
    """
    region = torch.zeros(height, width, device=device)
    bounds = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    label = 0
    for hs in bounds:
        for ws in bounds:
            region[hs, ws] = label
            label += 1
    windows = rearrange(region, "(nh wh) (nw ww) -> (nh nw) (wh ww)", wh=window_size, ww=window_size)
    diff = windows[:, None, :] - windows[:, :, None]  # (nW, N, N)
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside square windows, with a learned relative position bias.

    Parameters: ``qkv`` (one Linear to q, k, v, laid out ``(3, heads, head_dim)``), ``proj``, and
    ``relative_position_bias_table`` ``((2M-1)^2, heads)``; buffer ``relative_position_index``
    ``(M*M, M*M)`` (persistent: released checkpoints store it).
    """

    def __init__(self, *, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"attention dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> Tensor:
        """Bias added to the attention logits, ``(heads, N, N)`` with ``N = M*M``."""
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]  # (N*N, heads)
        return rearrange(bias, "(n m) h -> h n m", n=n, m=n)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Attend within each window.

        Args:
            x: windows ``(B * nW, N, C)``, ``N = M*M``, batch-major (all windows of image 0 first).
            mask: ``(nW, N, N)`` additive mask for shifted windows, or None.

        Returns:
            ``(B * nW, N, C)``.
        """
        bnw, n, _ = x.shape
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d",
                            three=3, h=self.num_heads)  # each (B*nW, heads, N, d)
        bias = self.position_bias().to(q.dtype)  # (heads, N, N)
        if mask is not None:
            nw = mask.shape[0]
            # (B, nW, heads, N, d) against a (nW, heads, N, N) bias + mask
            q, k, v = (rearrange(t, "(b w) h n d -> b w h n d", w=nw) for t in (q, k, v))
            bias = bias[None] + mask[:, None].to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.reshape(bnw, self.num_heads, n, -1)  # (B*nW, heads, N, d)
        out = rearrange(out, "b h n d -> b n (h d)")
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}"


class SwinBlock(nn.Module):
    """One (shifted-)window transformer block, pre-norm: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: window side ``M``.
        shift: cyclic shift (0 for W-MSA, ``M // 2`` for SW-MSA).
        mlp_ratio: MLP hidden width over ``dim``.
        drop: dropout after the attention projection and in the MLP.
        attn_drop: dropout on the attention weights.
        drop_path: stochastic-depth rate of both residual branches.
    """

    def __init__(self, *, dim: int, num_heads: int, window_size: int = 7, shift: int = 0,
                 mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if not 0 <= shift < window_size:
            raise ConfigError(f"shift must be in [0, window_size={window_size}), got {shift}")
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim=dim, num_heads=num_heads, window_size=window_size,
                                    attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(p=drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio), drop=drop)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Apply the block.

        Args:
            x: ``(B, H, W, C)``.
            mask: shifted-window mask for the padded size (see :func:`shifted_window_mask`);
                built here when None and ``shift > 0``.

        Returns:
            ``(B, H, W, C)``.
        """
        _, h, w, _ = x.shape
        m = self.window_size
        y = self.norm1(x)
        pad_b, pad_r = (-h) % m, (-w) % m
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))  # (B, Hp, Wp, C), zeros at bottom/right
        hp, wp = h + pad_b, w + pad_r
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            if mask is None:
                mask = shifted_window_mask(hp, wp, window_size=m, shift=self.shift, device=x.device)
        else:
            mask = None
        windows = rearrange(y, "b (nh wh) (nw ww) c -> (b nh nw) (wh ww) c", wh=m, ww=m)
        windows = self.attn(windows, mask)  # (B*nW, M*M, C)
        y = rearrange(windows, "(b nh nw) (wh ww) c -> b (nh wh) (nw ww) c",
                      nh=hp // m, nw=wp // m, wh=m)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        y = y[:, :h, :w]  # crop the padding
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halve H and W, double C: concat each 2x2 neighbourhood (4C), LayerNorm, Linear to 2C.

    The 2x2 neighbours are concatenated in the order (0,0), (1,0), (0,1), (1,1) as (dy, dx), the
    order of released Swin weights. Odd H or W are zero-padded at the bottom/right.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)  # defined first: checkpoint key order
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, H, W, C)`` -> ``(B, ceil(H/2), ceil(W/2), 2C)``."""
        _, h, w, _ = x.shape
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = rearrange(x, "b (h dy) (w dx) c -> b h w (dx dy c)", dy=2, dx=2)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """A Swin stage: ``depth`` blocks alternating W-MSA and SW-MSA, then optional patch merging.

    Args:
        dim: channels.
        depth: number of blocks; odd-indexed blocks use shifted windows.
        num_heads: attention heads.
        window_size: window side ``M``; the shift is ``M // 2``.
        mlp_ratio: MLP hidden width over ``dim``.
        drop: dropout rate.
        attn_drop: attention-weight dropout rate.
        drop_path: one stochastic-depth rate for all blocks, or one per block.
        downsample: end the stage with :class:`PatchMerging`.
    """

    def __init__(self, *, dim: int, depth: int, num_heads: int, window_size: int = 7,
                 mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float | Sequence[float] = 0.0, downsample: bool = False) -> None:
        super().__init__()
        rates = [float(drop_path)] * depth if isinstance(drop_path, (int, float)) else list(drop_path)
        if len(rates) != depth:
            raise ConfigError(f"need {depth} drop-path rates, got {len(rates)}")
        self.window_size = window_size
        self.shift = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim=dim, num_heads=num_heads, window_size=window_size,
                      shift=self.shift if i % 2 else 0, mlp_ratio=mlp_ratio, drop=drop,
                      attn_drop=attn_drop, drop_path=rates[i])
            for i in range(depth))
        self.downsample = PatchMerging(dim=dim) if downsample else None

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Run the stage.

        Args:
            x: ``(B, H, W, C)``.

        Returns:
            ``(out, next_in)``: the stage output ``(B, H, W, C)`` and the input of the next stage,
            ``(B, ceil(H/2), ceil(W/2), 2C)`` when the stage downsamples, else ``out`` itself.
        """
        _, h, w, _ = x.shape
        m = self.window_size
        mask = None
        if len(self.blocks) > 1 and self.shift:
            hp, wp = h + (-h) % m, w + (-w) % m
            mask = shifted_window_mask(hp, wp, window_size=m, shift=self.shift, device=x.device)
        for block in self.blocks:
            x = block(x, mask if block.shift else None)
        return x, (self.downsample(x) if self.downsample is not None else x)


class PatchEmbed(nn.Module):
    """Convolutional patch embedding followed by LayerNorm over channels.

    Args:
        in_chans: input channels.
        embed_dim: output channels.
        kernel_size: convolution kernel (Swin-T: 4, AEMatter's stem-fed variant: 3).
        stride: convolution stride (Swin-T: 4, AEMatter: 2).
        padding: convolution padding (Swin-T: 0, AEMatter: 1).
    """

    def __init__(self, *, in_chans: int, embed_dim: int, kernel_size: int = 4, stride: int = 4,
                 padding: int = 0) -> None:
        super().__init__()
        self.stride = stride
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` -> ``(B, H', W', embed_dim)``, channel-last."""
        _, _, h, w = x.shape
        if self.proj.padding == (0, 0):  # non-overlapping patches: pad H, W to the stride
            x = F.pad(x, (0, (-w) % self.stride, 0, (-h) % self.stride))
        x = rearrange(self.proj(x), "b c h w -> b h w c")
        return self.norm(x)


class SwinTransformer(nn.Module):
    """Swin backbone returning one normalised feature map per stage.

    Submodules: ``patch_embed``, ``layers.{i}`` (:class:`BasicLayer`, all but the last merge
    patches), ``norm{i}`` (LayerNorm of stage ``i``'s output).

    Args:
        in_chans: input channels of the patch embedding.
        embed_dim: channels of stage 0; stage ``i`` has ``embed_dim * 2**i``.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: window side.
        mlp_ratio: MLP hidden width over the channels.
        drop_rate: dropout rate.
        attn_drop_rate: attention-weight dropout rate.
        drop_path_rate: stochastic depth, rising linearly from 0 to this over all blocks.
        patch_kernel: patch-embedding kernel size.
        patch_stride: patch-embedding stride.
        patch_padding: patch-embedding padding.
    """

    def __init__(self, *, in_chans: int = 3, embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, patch_kernel: int = 4,
                 patch_stride: int = 4, patch_padding: int = 0) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ConfigError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        self.num_features = [embed_dim * 2 ** i for i in range(len(depths))]
        self.patch_embed = PatchEmbed(in_chans=in_chans, embed_dim=embed_dim, kernel_size=patch_kernel,
                                      stride=patch_stride, padding=patch_padding)
        self.pos_drop = nn.Dropout(drop_rate)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linspace(0, rate)
        self.layers = nn.ModuleList()
        start = 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            self.layers.append(BasicLayer(
                dim=self.num_features[i], depth=depth, num_heads=heads, window_size=window_size,
                mlp_ratio=mlp_ratio, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=rates[start:start + depth], downsample=i < len(depths) - 1))
            start += depth
        for i, channels in enumerate(self.num_features):
            self.add_module(f"norm{i}", nn.LayerNorm(channels))

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """``(B, C_in, H, W)`` -> one ``(B, C_i, H_i, W_i)`` map per stage, strides doubling."""
        x = self.pos_drop(self.patch_embed(x))  # (B, H0, W0, C0)
        outs = []
        for i, layer in enumerate(self.layers):
            out, x = layer(x)
            out = getattr(self, f"norm{i}")(out)
            outs.append(rearrange(out, "b h w c -> b c h w").contiguous())
        return tuple(outs)
