"""What a search optimises, apart from the architecture: a *task* is its data, its loss and how a
batch becomes the network's input. A search takes a task beside its space (NNI's evaluator), so
searching with another loss or data is a new task, not a new space.

    >>> import torch
    >>> from torch.utils.data import default_collate
    >>> from atldas.tasks import get_task
    >>> task = get_task("matting")
    >>> train, arch = task.datasets(DataCfg(), seed=0, n_train=800, n_arch=800)  # weight and arch splits
    >>> batch = default_collate([train[i] for i in range(2)])
    >>> x = task.model_input(batch)                # RGB + one-hot trimap
    >>> x.shape
    torch.Size([2, 6, 128, 128])
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(6, 1, 3, padding=1), torch.nn.Sigmoid())
    >>> loss = task.loss(net(x), batch)            # a scalar: the task's matting loss
    >>> loss.shape
    torch.Size([])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from torch import Tensor
from torch.utils.data import Dataset

from atldas.config import check_ranges, keyword_only
from atldas.errors import ConfigError

__all__ = ["DataCfg", "Task"]


@keyword_only
@dataclass
class DataCfg:
    """Where a search's samples come from and how they are batched.

    Attributes:
        source: ``synthetic`` (the task's generated data) or a data set folder.
        backgrounds: a folder of background photos (matting: synthetic composites and composed
            training sets).
        batch_size: samples per step (>= 1).
        crop: sample side in pixels.
        num_workers: DataLoader worker processes (0: load in the training process).
    """

    source: str = "synthetic"
    backgrounds: Optional[str] = None
    batch_size: int = 4
    crop: int = 128
    num_workers: int = 0

    def check(self) -> None:
        """Raise ConfigError naming the first value out of range."""
        check_ranges(self, {"batch_size": (1, 4096), "crop": (1, 2048), "num_workers": (0, 64)})


class Task:
    """Base class of a registered task (see the module docstring).

    Subclasses set ``name`` and implement :meth:`datasets`, :meth:`model_input`, :meth:`loss` and
    :meth:`io`; :meth:`check` may refuse data settings the task cannot use.
    """

    name: str = "base"
    #: The version of the loss's definition (stored in checkpoints: a run resumed under another is warned)
    loss_version: str = ""

    def io(self, data: DataCfg) -> Dict[str, Any]:
        """What the networks must take and give for this data (e.g. ``in_channels``,
        ``out_channels`` or ``num_classes``); a space sizes its stems and heads from it."""
        raise NotImplementedError

    def datasets(self, data: DataCfg, *, seed: int, n_train: int, n_arch: int) -> Tuple[Dataset, Dataset]:
        """Two disjoint splits: (weight split, architecture split).

        ``n_train`` and ``n_arch`` are how many samples a generated split should hold (every epoch
        its own); a folder's splits have the size they have.
        """
        raise NotImplementedError

    def model_input(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The network input of a collated batch."""
        raise NotImplementedError

    def loss(self, pred: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        """The scalar training loss of a prediction."""
        raise NotImplementedError

    #: Whether :meth:`short_fit` is implemented (the search's ``select`` stage needs it).
    has_short_fit = False

    def short_fit(self, genotype: Any, *, data: DataCfg, seed: int, steps: int, device: str = "cpu") -> float:
        """Train a standalone network of ``genotype`` briefly on the search's own weight split and
        return its loss on the search's architecture split (the search's ``select`` stage ranks its
        final candidates by it; lower is better, ``inf`` for a fit that diverged). Tasks where this is
        cheap enough implement it and set ``has_short_fit``; ``device`` is the search's."""
        raise ConfigError(f"the {self.name} task has no short standalone fit; leave select at 0")

    def check(self, data: DataCfg) -> None:
        """Refuse data settings this task cannot use (ConfigError, one line)."""
        data.check()
