"""The ``darts_cifar`` space: the DARTS CIFAR network (32 x 32 classification), so published cells
(DARTS_V2, PC-DARTS, ATL-DAS) can be searched, costed and compared in the same code.

    atldas search --space darts_cifar                       # synthetic 10-class data, a few CPU minutes
    atldas search --space darts_cifar --data DIR            # DIR/<class_name>/*.png|jpg
    atldas search --space darts_cifar --target-params 3.3M  # budget on the 36 x 20 target network

Three networks, all in DARTS' layout (Liu et al., ICLR 2019, ``model_search.Network`` and
``model.NetworkCIFAR``):

    stem        3x3 conv (3 -> 3C) + BatchNorm, (B, 3, 32, 32) -> (B, 3C, 32, 32); s0 = s1 = stem
    cells       ``layers`` cells, reductions at layers // 3 and 2 * layers // 3 (channels doubled)
    aux head    (evaluation network only, off by default) after cell 2 * layers // 3
    classifier  global average pool + linear, (B, 4 * 4C, 8, 8) -> (B, num_classes)

- :class:`DartsCifarSuperNet`: the search proxy (C = 16, 8 cells) with search cells
  (:class:`~atldas.supernet.SearchCellStack`, non-affine BatchNorm).
- :class:`DartsCifarNetwork`: the standalone evaluation network of a genotype (C = 36, 20 cells, affine
  BatchNorm, drop-path). Module names equal DARTS' ``NetworkCIFAR`` (``stem``, ``cells.K._ops.J``,
  ``auxiliary_head``, ``classifier``), so DARTS checkpoints load by name. DARTS_V2 at C = 36 x 20 has
  3,349,342 parameters without the auxiliary head (the DARTS paper: 3.3 M).
- :class:`DartsCifarSpace`: the registered space; the budget is stated on the target network at
  ``input_size`` x ``input_size`` (32).

Data (``--data``):

- ``synthetic`` (default): :class:`SyntheticShapes`, a procedural 10-class set (oriented gratings,
  disks, rings, squares, triangles, crosses, checkerboards in random colours, sizes, positions, with a
  faint distracting grating and noise); sample ``i`` of a split is a pure function of
  ``(seed, split, i, size)``.
- a folder: :class:`ImageFolderSplit`, ``DIR/<class_name>/*.png|jpg|...`` (class indices in sorted
  name order; images resized to ``crop`` x ``crop`` with PIL, bilinear); within each class the files,
  sorted by name, alternate between the ``train`` (even positions) and ``arch`` (odd) halves. One pass
  over the train half is an epoch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from atldas.arch import ArchParams
from atldas.config import SearchConfig
from atldas.errors import ConfigError, DataError
from atldas.genotype import Genotype
from atldas.models.cells import Cell
from atldas.supernet import Plan, SearchCellStack, SuperNet
from atldas.topology import CellTopology
from search_spaces.base import CellGeometry, SearchSpace, reductions_of, stack_geometry

__all__ = [
    "CLASS_NAMES",
    "DARTS_CIFAR",
    "AuxiliaryHeadCIFAR",
    "DartsCifarNetwork",
    "DartsCifarSpace",
    "DartsCifarSuperNet",
    "ImageFolderSplit",
    "SyntheticShapes",
    "reductions_of",
]

#: Channels of the stem relative to C (DARTS' ``stem_multiplier``).
STEM_MULTIPLIER = 3


def _stem(C_out: int, *, affine: bool = True) -> nn.Sequential:
    # indices 0/1 as in DARTS: stem.0 (conv), stem.1 (bn)
    return nn.Sequential(nn.Conv2d(3, C_out, 3, padding=1, bias=False), nn.BatchNorm2d(C_out, affine=affine))


# --------------------------------------------------------------------------------------------
# networks


class DartsCifarSuperNet(SuperNet):
    """DARTS' search network with topology-learning search cells.

    Args:
        topology: cell topology (nodes, in-degree range).
        ops: candidate ops of every edge.
        C: node channels of the first stage (16 in DARTS' search).
        layers: number of cells (8 in DARTS' search).
        num_classes: classifier outputs.
    """

    def __init__(self, *, topology: CellTopology, ops: Sequence[str], C: int = 16, layers: int = 8,
                 num_classes: int = 10) -> None:
        super().__init__()
        if layers < 3:
            raise ConfigError(f"the DARTS CIFAR network needs layers >= 3 (three stages), got {layers}")
        self.arch = ArchParams(topology=topology, ops=ops, blocks={})
        C_stem = STEM_MULTIPLIER * C
        self.stem = _stem(C_stem)
        self.stack = SearchCellStack(topology=topology, ops=ops, C=C, layers=layers,
                                     reductions=reductions_of(layers), C_s0=C_stem, C_s1=C_stem,
                                     s0_reduced=False)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.stack.out_channels[-1], num_classes)

    def forward(self, x: Tensor, plan: Plan) -> Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits of the architecture ``plan`` describes."""
        s = self.stem(x)  # (B, 3C, H, W)
        y = self.stack(s, s, plan)[-1]  # (B, 16C, H/4, W/4)
        return self.classifier(self.global_pooling(y).flatten(1))


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS' auxiliary classifier for an 8 x 8 input: (B, C, 8, 8) -> (B, num_classes)."""

    def __init__(self, *, C: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),  # 2x2 -> 1x1
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class DartsCifarNetwork(nn.Module):
    """DARTS' evaluation network (``NetworkCIFAR``) built from a genotype.

    ``forward`` returns the logits, or ``(logits, aux_logits)`` when ``auxiliary`` is on and the
    network is training. Drop-path (``drop_path_prob``, an attribute a training loop may change per
    epoch, as in DARTS) acts in training only.

    Args:
        genotype: the normal and reduce cells (any in-degree).
        C: node channels of the first stage (36 in DARTS' CIFAR-10 evaluation).
        layers: number of cells (20).
        num_classes: classifier outputs.
        auxiliary: build the auxiliary head after cell ``2 * layers // 3``.
        drop_path_prob: initial drop-path probability.
    """

    def __init__(self, *, genotype: Genotype, C: int = 36, layers: int = 20, num_classes: int = 10,
                 auxiliary: bool = False, drop_path_prob: float = 0.0) -> None:
        super().__init__()
        if layers < 3:
            raise ConfigError(f"the DARTS CIFAR network needs layers >= 3 (three stages), got {layers}")
        self.genotype = genotype
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = drop_path_prob
        self.reductions = reductions_of(layers)
        C_curr = STEM_MULTIPLIER * C
        self.stem = _stem(C_curr)
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        C_aux = None
        for i in range(layers):
            reduction = i in self.reductions
            if reduction:
                C_curr *= 2
            cell = Cell(spec=genotype.cell(reduction), C_prev_prev=C_pp, C_prev=C_p, C=C_curr,
                        reduction=reduction, reduction_prev=reduction_prev, affine=True)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.C_out
            if i == 2 * layers // 3:
                C_aux = C_p
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(C=C_aux, num_classes=num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def num_params(self) -> int:
        """Parameters without the auxiliary head (DARTS' ``count_parameters_in_MB`` convention)."""
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("auxiliary_head."))

    def forward(self, x: Tensor):
        """(B, 3, H, W) -> (B, num_classes) logits (plus aux logits, see the class docstring)."""
        s0 = s1 = self.stem(x)  # (B, 3C, H, W)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == 2 * self._layers // 3 and self._auxiliary and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))  # (B, 16C) -> (B, num_classes)
        return (logits, aux) if aux is not None else logits


# --------------------------------------------------------------------------------------------
# data

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
    from PIL import Image, UnidentifiedImageError

    from atldas.data.io import read_rgb

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


# --------------------------------------------------------------------------------------------
# the space


class DartsCifarSpace(SearchSpace):
    """The DARTS CIFAR macro (see the module docstring): search proxy C x layers, target
    ``target_C`` x ``target_layers`` at ``input_size`` x ``input_size``; no block groups.

    Args:
        name: registered name.
        defaults: SearchConfig defaults of this space.
    """

    task = "classification"

    def __init__(self, *, name: str, defaults: Mapping[str, Any]) -> None:
        self.name = name
        self.defaults = dict(defaults)

    def num_classes(self, cfg: SearchConfig) -> int:
        """10 for the synthetic set, else the number of class folders of ``cfg.data``."""
        if cfg.data == "synthetic":
            return SyntheticShapes.num_classes
        return len(scan_image_folder(cfg.data)[0])

    def build_supernet(self, cfg: SearchConfig, *, ops: Sequence[str]) -> DartsCifarSuperNet:
        return DartsCifarSuperNet(topology=self.topology(cfg), ops=ops, C=cfg.C, layers=cfg.layers,
                                  num_classes=self.num_classes(cfg))

    def build_target(self, genotype: Genotype, cfg: SearchConfig) -> DartsCifarNetwork:
        return DartsCifarNetwork(genotype=genotype, C=cfg.target_C, layers=cfg.target_layers,
                                 num_classes=self.num_classes(cfg), auxiliary=False)

    def macro_meta(self, cfg: SearchConfig) -> Dict[str, Any]:
        return {"C": cfg.target_C, "layers": cfg.target_layers, "num_classes": self.num_classes(cfg),
                "stem_multiplier": STEM_MULTIPLIER}

    def input_shape(self, cfg: SearchConfig) -> Tuple[int, ...]:
        return (1, 3, cfg.input_size, cfg.input_size)

    def cell_geometry(self, cfg: SearchConfig) -> List[CellGeometry]:
        # the stem keeps the input size
        return stack_geometry(C=cfg.target_C, layers=cfg.target_layers, size=cfg.input_size)

    # ------------------------------------------------------------------ data and loss

    def datasets(self, cfg: SearchConfig) -> Tuple[Dataset, Dataset]:
        if cfg.data == "synthetic":
            n = cfg.steps_per_epoch * cfg.batch_size
            n_arch = max(cfg.arch_steps_per_epoch, 1) * cfg.batch_size
            return (SyntheticShapes(size=cfg.crop, length=n, seed=cfg.seed, split="train"),
                    SyntheticShapes(size=cfg.crop, length=n_arch, seed=cfg.seed, split="arch"))
        train = ImageFolderSplit(cfg.data, size=cfg.crop, part="train")
        arch = ImageFolderSplit(cfg.data, size=cfg.crop, part="arch")
        for part, ds in (("train", train), ("arch", arch)):
            if len(ds) < cfg.batch_size:
                raise DataError(f"{cfg.data}: the {part} half has {len(ds)} images, fewer than one batch "
                                f"({cfg.batch_size}); add images or lower --set batch_size=...")
        return train, arch

    def model_input(self, batch: Dict[str, Tensor]) -> Tensor:
        return batch["image"]  # (B, 3, H, W)

    def loss(self, pred: Tensor, batch: Dict[str, Tensor]) -> Tensor:
        # the search loop moves every tensor to float: labels come back to int64 here
        return F.cross_entropy(pred, batch["label"].long())


DARTS_CIFAR = DartsCifarSpace(name="darts_cifar", defaults={
    "epochs": 6, "steps_per_epoch": 20, "arch_steps_per_epoch": 20, "batch_size": 16, "crop": 32,
    "C": 16, "layers": 8, "target_C": 36, "target_layers": 20, "input_size": 32, "warmup_epochs": 1,
    "target_macs": 5e8})
