"""The ``classification`` task: procedural shapes or an image folder, cross-entropy, RGB input."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from atldas.data.shapes import ImageFolderSplit, SyntheticShapes, scan_image_folder
from atldas.errors import ConfigError, DataError
from atldas.tasks.base import DataCfg, Task

__all__ = ["ClassificationTask"]


class ClassificationTask(Task):
    """Image classification (the ``darts_cifar`` space's task).

    Data: ``synthetic`` is :class:`~atldas.data.shapes.SyntheticShapes` (10 classes, ``train`` and
    ``arch`` splits); a folder ``DIR/<class_name>/*.png|jpg`` is split per class into alternating
    halves (:class:`~atldas.data.shapes.ImageFolderSplit`). Loss: cross-entropy. Input: (B, 3, H, W).
    """

    name = "classification"

    def check(self, data: DataCfg) -> None:
        super().check(data)
        if data.backgrounds:  # recorded in config.yaml, and unused
            raise ConfigError(f"--backgrounds {data.backgrounds}: the classification task's images are its "
                              "own (synthetic shapes or an image folder); it takes no backgrounds")

    def io(self, data: DataCfg) -> Dict[str, Any]:
        n = SyntheticShapes.num_classes if data.source == "synthetic" else len(scan_image_folder(data.source)[0])
        return {"in_channels": 3, "num_classes": n}

    def datasets(self, data: DataCfg, *, seed: int, n_train: int, n_arch: int) -> Tuple[Dataset, Dataset]:
        if data.source == "synthetic":
            return (SyntheticShapes(size=data.crop, length=n_train, seed=seed, split="train"),
                    SyntheticShapes(size=data.crop, length=n_arch, seed=seed, split="arch"))
        train = ImageFolderSplit(data.source, size=data.crop, part="train")
        arch = ImageFolderSplit(data.source, size=data.crop, part="arch")
        for part, ds in (("train", train), ("arch", arch)):
            if len(ds) < data.batch_size:
                raise DataError(f"{data.source}: the {part} half has {len(ds)} images, fewer than one batch "
                                f"({data.batch_size}); add images or lower --set batch_size=...")
        return train, arch

    def model_input(self, batch: Mapping[str, Tensor]) -> Tensor:
        return batch["image"]  # (B, 3, H, W)

    def loss(self, pred: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        # the run loop moves every tensor to float: labels come back to int64 here
        return F.cross_entropy(pred, batch["label"].long())
