"""Procedural and folder data for the classification task (the ``darts_cifar`` space).

- :class:`SyntheticShapes`: a procedural 10-class set (oriented gratings, disks, rings, squares,
  triangles, crosses, checkerboards in random colours, sizes, positions, with a faint distracting
  grating and noise); sample ``i`` of a split is a pure function of ``(seed, split, i, size)``.
- :class:`ImageFolderSplit`: ``DIR/<class_name>/*.png|jpg|...`` (class indices in sorted name order;
  images resized to ``size`` x ``size`` with PIL, bilinear); within each class the files, sorted by
  name, alternate between the ``train`` (even positions) and ``arch`` (odd) halves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from atldas.data.io import read_rgb
from atldas.errors import ConfigError, DataError

__all__ = ["CLASS_NAMES", "SyntheticShapes", "ImageFolderSplit", "scan_image_folder"]

#: Class names of the synthetic set, in label order.
CLASS_NAMES: Tuple[str, ...] = ("grating_0", "grating_45", "grating_90", "grating_135", "disk", "ring",
                                "square", "triangle", "cross", "checkerboard")
_SPLITS = ("train", "arch", "val", "test")


def _soft(d: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Anti-aliased coverage of the region ``d < 0`` of a signed distance (pixels)."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


def _rot(x: np.ndarray, y: np.ndarray, theta: float) -> Tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(theta), math.sin(theta)
    return c * x + s * y, -s * x + c * y


class SyntheticShapes(Dataset):
    """Procedural 10-class images (:data:`CLASS_NAMES`), deterministic per (seed, split, index).

    Classes 0-3 are sinusoidal gratings whose wave vector points at 0/45/90/135 degrees (+-10; 0 gives
    vertical stripes), with random frequency, phase and window; 4-9 are a disk, a ring, a square, a triangle, a cross and a checkerboard patch, each with
    random size, position and rotation. Foreground and background colours are random (so colour
    says nothing about the class), the background carries a low-frequency colour gradient and a faint
    grating of random orientation, and Gaussian noise is added. Labels cycle ``index % 10``.

    Args:
        size: image side (32).
        length: number of samples.
        seed: data seed.
        split: ``train``, ``arch``, ``val`` or ``test`` (disjoint random streams).

    Samples: ``{"image": (3, size, size) float32 in [0, 1], "label": int64 scalar tensor}``.
    """

    num_classes = len(CLASS_NAMES)
    classes = CLASS_NAMES

    def __init__(self, *, size: int = 32, length: int = 1000, seed: int = 0, split: str = "train") -> None:
        if split not in _SPLITS:
            raise ConfigError(f"unknown split {split!r}; known: {', '.join(_SPLITS)}")
        if size < 8:
            raise ConfigError(f"synthetic images need size >= 8, got {size}")
        self.size, self.length, self.seed, self.split = size, length, seed, split
        self._split_id = _SPLITS.index(split)
        grid = np.arange(size, dtype=np.float64) + 0.5
        self._x, self._y = np.meshgrid(grid, grid)  # (size, size) pixel centres

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        label = index % self.num_classes
        rng = np.random.default_rng([self.seed, self._split_id, index])
        img = self._render(label, rng)
        return {"image": torch.from_numpy(img), "label": torch.tensor(label, dtype=torch.int64)}

    # ------------------------------------------------------------------ rendering

    def _mask(self, label: int, rng: np.random.Generator) -> np.ndarray:
        """Foreground coverage in [0, 1] of the class pattern, (size, size)."""
        s = self.size / 32.0
        cx, cy = rng.uniform(0.3, 0.7, size=2) * self.size
        x, y = self._x - cx, self._y - cy
        theta = rng.uniform(-math.pi, math.pi)
        if label < 4:  # oriented grating in a soft disk or over the whole image
            angle = math.radians(45 * label + rng.uniform(-10, 10))
            freq = rng.uniform(3, 6) / self.size  # cycles per pixel
            u = x * math.cos(angle) + y * math.sin(angle)
            wave = 0.5 + 0.5 * np.sin(2 * math.pi * freq * u + rng.uniform(0, 2 * math.pi))
            if rng.random() < 0.5:
                return wave
            return wave * _soft(np.hypot(x, y) - rng.uniform(9, 15) * s, 2.0)
        if label == 4:  # disk
            return _soft(np.hypot(x, y) - rng.uniform(5, 11) * s)
        if label == 5:  # ring
            r, t = rng.uniform(7, 12) * s, rng.uniform(1.0, 2.0) * s
            return _soft(np.abs(np.hypot(x, y) - r) - t)
        u, v = _rot(x, y, theta)
        if label == 6:  # square
            return _soft(np.maximum(np.abs(u), np.abs(v)) - rng.uniform(5, 10) * s)
        if label == 7:  # equilateral triangle: intersection of three half-planes
            r = rng.uniform(3.5, 6.5) * s  # inradius
            d = np.max([u * math.cos(a) + v * math.sin(a) for a in (math.pi / 2, 7 * math.pi / 6,
                                                                     11 * math.pi / 6)], axis=0)
            return _soft(d - r)
        if label == 8:  # cross: union of two bars
            half_len, half_w = rng.uniform(7, 12) * s, rng.uniform(1.0, 2.0) * s
            bar1 = np.maximum(np.abs(u) - half_len, np.abs(v) - half_w)
            bar2 = np.maximum(np.abs(v) - half_len, np.abs(u) - half_w)
            return _soft(np.minimum(bar1, bar2))
        # checkerboard patch in a square window
        period = rng.uniform(4, 8) * s
        checks = np.sin(math.pi * u / period) * np.sin(math.pi * v / period)
        window = _soft(np.maximum(np.abs(u), np.abs(v)) - rng.uniform(8, 13) * s)
        return window * (0.5 + 0.5 * np.tanh(4.0 * checks))

    def _render(self, label: int, rng: np.random.Generator) -> np.ndarray:
        n = self.size
        bg = rng.uniform(0.0, 1.0, size=3)
        fg = rng.uniform(0.0, 1.0, size=3)
        for _ in range(8):  # keep some contrast between foreground and background
            if np.abs(fg - bg).max() > 0.3:
                break
            fg = rng.uniform(0.0, 1.0, size=3)
        # background: base colour + low-frequency colour gradient + faint grating of any orientation
        gx, gy = rng.normal(0.0, 0.15, size=(2, 3)) / n
        base = (bg[:, None, None] + gx[:, None, None] * (self._x - n / 2)
                + gy[:, None, None] * (self._y - n / 2))
        phi = rng.uniform(0, math.pi)
        faint = np.sin(2 * math.pi * rng.uniform(2, 8) / n * (self._x * math.cos(phi) + self._y * math.sin(phi)))
        base = base + rng.uniform(0.0, 0.08) * faint
        m = self._mask(label, rng) * rng.uniform(0.6, 1.0)  # contrast
        img = base * (1.0 - m) + fg[:, None, None] * m
        img = img + rng.normal(0.0, rng.uniform(0.02, 0.1), size=img.shape)
        return np.clip(img, 0.0, 1.0).astype(np.float32)  # (3, n, n)


_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def scan_image_folder(root: str | Path) -> Tuple[Tuple[str, ...], List[List[Path]]]:
    """Class names (sorted) and per class its image files (sorted) of ``root/<class>/*.png|jpg``.

    Raises DataError for a missing folder, no class folders, or a class folder without images.
    """
    d = Path(root)
    if not d.is_dir():
        raise DataError(f"{d}: no such folder; pass --data synthetic or a folder laid out as DIR/<class_name>/*.png")
    class_dirs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{d}: no class folders; lay the images out as {d}/<class_name>/*.png|jpg")
    files = [sorted(p for p in c.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTENSIONS)
             for c in class_dirs]
    if not any(files):
        raise DataError(f"{d}: no images in its class folders ({', '.join(c.name for c in class_dirs[:5])}"
                        f"{', ...' if len(class_dirs) > 5 else ''}); add "
                        f"{'/'.join(e[1:] for e in _IMAGE_EXTENSIONS[:3])} files to them")
    empty = [c.name for c, f in zip(class_dirs, files) if not f]
    if empty:
        raise DataError(f"{d}: class folder {empty[0]!r} has no images"
                        f"{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''}; add images or remove it")
    return tuple(c.name for c in class_dirs), files


def _read_resized(path: Path, size: int) -> np.ndarray:
    """RGB image as (3, size, size) float32 in [0, 1], resized with PIL (bilinear) when needed."""
    try:
        a = read_rgb(path)  # (H, W, 3) float32 in [0, 1], any bit depth
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}); re-save it as PNG or JPEG") from None
    if a.shape[:2] != (size, size):
        a = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(a[:, :, c]), mode="F")
                                 .resize((size, size), Image.BILINEAR)) for c in range(3)], axis=-1)
    return np.ascontiguousarray(np.clip(a, 0.0, 1.0).transpose(2, 0, 1), dtype=np.float32)


class ImageFolderSplit(Dataset):
    """One half of an ImageFolder-style classification set: ``root/<class_name>/*.png|jpg``.

    Class ``k`` is the k-th class folder in sorted name order. Within each class the files, sorted by
    name, alternate: even positions are the ``train`` half, odd positions the ``arch`` half (``all``
    keeps both), so the halves are disjoint, balanced per class and independent of the seed.

    Args:
        root: the folder.
        size: images are resized to ``size x size`` (32).
        part: ``train``, ``arch`` or ``all``.

    Samples: ``{"image": (3, size, size) float32 in [0, 1], "label": int64 scalar tensor}``.
    """

    def __init__(self, root: str | Path, *, size: int = 32, part: str = "train") -> None:
        if part not in ("train", "arch", "all"):
            raise ConfigError(f"unknown part {part!r}; known: train, arch, all")
        self.root, self.size, self.part = Path(root), size, part
        self.classes, files = scan_image_folder(root)
        self.samples: List[Tuple[Path, int]] = []
        for k, fs in enumerate(files):
            picked = fs if part == "all" else fs[(0 if part == "train" else 1)::2]
            self.samples.extend((p, k) for p in picked)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        path, label = self.samples[index]
        return {"image": torch.from_numpy(_read_resized(path, self.size)),
                "label": torch.tensor(label, dtype=torch.int64)}
