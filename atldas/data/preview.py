"""A PNG contact sheet of synthetic matting samples (``atldas data preview``).

One row per sample: composite image | trimap | alpha | foreground over a checkerboard (the
foreground layer shown with the sample's own alpha, so hair and semi-transparency are visible).

Example::

    atldas data preview --out synthetic_preview.png --count 8 --size 256 --seed 0
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from atldas.data.io import MAX_PIXELS, write_rgb
from atldas.data.synthetic import SyntheticMatting
from atldas.errors import ConfigError
from atldas.utils.atomic import check_output

COLUMNS = ("image", "trimap", "alpha", "fg over checker")
_PAD = 4


def _checker(h: int, w: int, cell: int) -> np.ndarray:
    """(h, w) float32 checkerboard of light greys."""
    y = (np.arange(h) // cell)[:, None]
    x = (np.arange(w) // cell)[None, :]
    return np.where((x + y) % 2 == 0, 0.8, 0.55).astype(np.float32)


def _font(px: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def write_preview(*, out: Union[str, os.PathLike] = "synthetic_preview.png", count: int = 8,
                  size: int = 256, seed: int = 0,
                  backgrounds: Optional[Union[str, os.PathLike]] = None,
                  foregrounds: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Write a grid of ``count`` synthetic samples (the ``train`` split of ``seed``) as a PNG.

    Args:
        out: PNG file to write (parent folders are created; written atomically).
        count: number of samples (rows), at least 1.
        size: sample side in pixels.
        seed: data seed.
        backgrounds: optional folder of background photos (as for :class:`SyntheticMatting`).
        foregrounds: optional folder of real foregrounds, ``fg/`` + ``alpha/`` (as for
            :class:`SyntheticMatting`).

    Returns:
        The path written.
    """
    if not 1 <= int(count) <= 256:
        raise ConfigError(f"data preview: --count must be in 1..256, got {count}")
    if not 16 <= int(size) <= 2048:
        raise ConfigError(f"data preview: --size must be in 16..2048, got {size}")
    if Path(out).suffix.lower() != ".png":
        raise ConfigError(f"data preview: --out must be a .png file, got {str(out)!r}")
    n, s = int(count), int(size)
    title_h = max(12, min(24, s // 10 + 6))
    width = len(COLUMNS) * s + (len(COLUMNS) + 1) * _PAD
    height = title_h + n * s + (n + 1) * _PAD
    if width * height > MAX_PIXELS:  # 256 rows of 2048 px: 4.3 G pixels, 48 GiB as floats
        raise ConfigError(f"data preview: a sheet of {count} samples at {size} px would be {width}x{height} pixels, "
                          f"more than image readers open ({MAX_PIXELS / 1e6:.0f} M); lower --count or --size")
    check_output(out, flag="--out")
    ds = SyntheticMatting(size=size, length=n, seed=seed, split="train", backgrounds=backgrounds,
                          foregrounds=foregrounds)
    grid = np.full((height, width, 3), 255, np.uint8)
    checker = _checker(s, s, max(4, s // 16))[..., None]
    for r in range(n):
        smp = ds.sample(r)
        alpha = smp["alpha"][0][..., None]                         # (H, W, 1)
        fg = smp["fg"].transpose(1, 2, 0)                          # (H, W, 3)
        tiles = [
            smp["image"].transpose(1, 2, 0),
            np.repeat(smp["trimap"][0][..., None].astype(np.float32) / 255.0, 3, axis=2),
            np.repeat(alpha, 3, axis=2),
            alpha * fg + (1.0 - alpha) * checker,
        ]
        y0 = title_h + _PAD + r * (s + _PAD)
        for c, tile in enumerate(tiles):
            x0 = _PAD + c * (s + _PAD)
            grid[y0:y0 + s, x0:x0 + s] = np.rint(np.clip(tile, 0, 1) * 255)
    img = Image.fromarray(grid)
    draw = ImageDraw.Draw(img)
    font = _font(title_h - 4)
    for c, title in enumerate(COLUMNS):
        x0 = _PAD + c * (s + _PAD)
        draw.text((x0 + s / 2, title_h / 2 + _PAD / 2), title, fill=(0, 0, 0), font=font, anchor="mm")
    path = Path(out)
    write_rgb(path, np.asarray(img))
    return path
