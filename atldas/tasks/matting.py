"""The ``matting`` task: synthetic or real matting data, the matting loss, RGB + one-hot trimap input."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

from torch import Tensor
from torch.utils.data import Dataset, Subset

from atldas.data.datasets import open_dataset
from atldas.data.synthetic import SyntheticMatting
from atldas.errors import ConfigError, DataError
from atldas.matting.losses import MattingLoss
from atldas.tasks.base import DataCfg, Task
from atldas.tensors import matting_input

__all__ = ["MattingTask"]


class MattingTask(Task):
    """Trimap-based matting (matting.md).

    Data: ``synthetic`` gives two disjoint generated splits (``train`` and ``arch``), fresh samples
    for every epoch; a training-set folder (Composition-1K / Distinctions-646 style, composed on
    ``backgrounds``) is split by foreground index parity, even ones for the weights and odd ones for
    the architecture. Loss: L1 over the unknown region + Laplacian pyramid + 0.5 x composition
    (:class:`~atldas.matting.losses.MattingLoss`). Input: (B, 6, H, W) RGB + one-hot trimap.

    Args:
        l1, lap, comp: loss weights.
    """

    name = "matting"

    def __init__(self, *, l1: float = 1.0, lap: float = 1.0, comp: float = 0.5) -> None:
        self._loss = MattingLoss(l1=l1, lap=lap, comp=comp)

    def io(self, data: DataCfg) -> Dict[str, Any]:
        return {"in_channels": 6, "out_channels": 1}

    def check(self, data: DataCfg) -> None:
        super().check(data)
        if data.crop % 32:
            raise ConfigError(f"crop must be a multiple of 32 (the networks downsample 5 times), got {data.crop}")

    def datasets(self, data: DataCfg, *, seed: int, n_train: int, n_arch: int) -> Tuple[Dataset, Dataset]:
        if data.source != "synthetic":
            full = open_dataset(data.source, split="train", crop=data.crop, seed=seed, backgrounds=data.backgrounds)
            n = len(full)
            if n < 2 * data.batch_size:
                raise DataError(f"{data.source}: {n} training samples; the search needs at least "
                                f"{2 * data.batch_size} (two disjoint splits of one batch each)")
            return Subset(full, range(0, n, 2)), Subset(full, range(1, n, 2))
        return (SyntheticMatting(size=data.crop, length=n_train, seed=seed, split="train",
                                 backgrounds=data.backgrounds),
                SyntheticMatting(size=data.crop, length=n_arch, seed=seed, split="arch",
                                 backgrounds=data.backgrounds))

    def model_input(self, batch: Mapping[str, Tensor]) -> Tensor:
        return matting_input(batch)  # (B, 6, H, W)

    def loss(self, pred: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        return self._loss(pred, batch)["loss"]
