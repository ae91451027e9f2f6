"""The ``planted`` task: a ground truth with a known answer, to measure whether a search carries
task signal (algorithm.md, "The planted-architecture ground truth").

A *teacher* network (:class:`~atldas.models.planted.PlantedNet`, one all-normal cell, 2 channels per
node) is built from a genotype drawn uniformly with the teacher seed, with calibrated random weights
(:func:`~atldas.models.planted.teacher`); smooth noise images (:func:`~atldas.data.noise.smooth_noise`,
3 channels, 12 x 12) go in and the teacher's 4 output channels are the targets, each with zero mean and
unit variance, so an MSE is the share of the target's variance a network misses. Students are the
``planted`` space's networks (16 channels per node): the teacher's own genotype can express the
target and trains to the lowest loss, and genotypes of the same cost spread far above the training
noise, so the percentile of a searched genotype among cost-matched random ones is a measurement.

``--data`` chooses the teacher: ``synthetic`` is teacher 0, ``teacher:K`` teacher K (any integer).

    >>> task = PlantedTask()
    >>> g = task.teacher_genotype(3)                      # the planted answer of teacher 3
    >>> mse = standalone(g, teacher_seed=3, seed=0)["test"]  # its standalone test MSE (0.0015 on a 2-core CPU)
    >>> mse < 0.01                                        # under 1 % of the target's variance missed
    True
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from atldas.data.noise import smooth_noise
from atldas.errors import ConfigError
from atldas.genotype import Genotype
from atldas.models.planted import PlantedNet, calibrate_batchnorm, random_genotype, teacher
from atldas.ops import SEARCH_PRIMITIVES
from atldas.tasks.base import DataCfg, Task
from atldas.utils import stop
from atldas.utils.optim import ClippedAdam

__all__ = ["PlantedTask", "PlantedShape", "Recipe", "teacher_seed_of", "planted_data", "standalone"]


@dataclass(frozen=True)
class PlantedShape:
    """The planted task's shape, shared by the teacher, the search and every standalone student."""

    C: int = 16
    teacher_C: int = 2
    cells: int = 1
    nodes: int = 4
    size: int = 12
    in_channels: int = 3
    out_channels: int = 4
    n_train: int = 512
    n_test: int = 512
    sigmas: Tuple[float, float] = (0.7, 2.5)


@dataclass(frozen=True)
class Recipe:
    """The one standalone training recipe: Adam, cosine decay to 0, gradient-norm clip, fixed steps and
    batch. (Chosen by measurement, experiments/planted_explore.py: without the clip some seeds of the
    teacher's own genotype stall 3-10x above its fit; at 12 px, 350 steps cost about 5 CPU-s.)"""

    steps: int = 350
    batch: int = 12
    lr: float = 0.03
    clip: float = 1.0


SHAPE = PlantedShape()


def teacher_seed_of(data: DataCfg) -> int:
    """The teacher seed ``--data`` names: ``synthetic`` is 0, ``teacher:K`` is K."""
    if data.source == "synthetic":
        return 0
    head, _, tail = data.source.partition(":")
    if head != "teacher" or not tail.lstrip("-").isdigit():
        raise ConfigError(f"the planted task takes --data synthetic or --data teacher:K (K an integer), "
                          f"got {data.source!r}")
    return int(tail)


def teacher_genotype(seed: int) -> Genotype:
    """The planted genotype of teacher ``seed``: per node an input set of in-degree 2, per edge an op,
    uniformly (the DARTS ops without ``none``)."""
    return random_genotype(nodes=SHAPE.nodes, rng=random.Random(f"teacher-{seed}"), ops=SEARCH_PRIMITIVES)


@lru_cache(maxsize=8)
def _teacher(seed: int) -> torch.nn.Module:
    return teacher(teacher_genotype(seed), C=SHAPE.teacher_C, cells=SHAPE.cells, in_channels=SHAPE.in_channels,
                   out_channels=SHAPE.out_channels, seed=seed, size=SHAPE.size, noise_sigmas=SHAPE.sigmas)


@lru_cache(maxsize=8)
def _planted_data(teacher_seed: int, n: int, stream: int) -> Tuple[Tensor, Tensor]:
    x = smooth_noise(n, channels=SHAPE.in_channels, size=SHAPE.size, seed=10_000 * (teacher_seed + 1) + stream,
                     sigmas=SHAPE.sigmas)
    with torch.no_grad():
        y = _teacher(teacher_seed)(x)
    return x, y


def planted_data(teacher_seed: int, n: int, *, stream: int) -> Tuple[Tensor, Tensor]:
    """``n`` inputs (n, 3, 12, 12) and the teacher's targets (n, 4, 12, 12) of one random stream (a
    pure function of the teacher seed and ``stream``). The last 8 streams asked for are kept (124 MB
    for a planted search's two, 20,480 and 10,240 samples of 7 float32 channels), so the searches and trainings of one process draw each once; the
    caller gets its own copies."""
    x, y = _planted_data(teacher_seed, n, stream)
    return x.clone(), y.clone()


class _Pairs(Dataset):
    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> Dict[str, Tensor]:
        return {"image": self.x[i], "target": self.y[i]}


class PlantedTask(Task):
    """Regression of a planted teacher's outputs (module docstring)."""

    name = "planted"

    def io(self, data: DataCfg) -> Dict[str, Any]:
        return {"in_channels": SHAPE.in_channels, "out_channels": SHAPE.out_channels}

    def check(self, data: DataCfg) -> None:
        super().check(data)
        teacher_seed_of(data)
        if data.crop != SHAPE.size:
            raise ConfigError(f"the planted task's images are {SHAPE.size} x {SHAPE.size}; leave crop at {SHAPE.size}")
        if data.backgrounds:  # recorded in config.yaml, and unused
            raise ConfigError(f"--backgrounds {data.backgrounds}: the planted task's images are smooth noise, made "
                              "from the teacher seed; it takes no backgrounds")

    def teacher_genotype(self, seed: int) -> Genotype:
        """The planted answer of teacher ``seed``."""
        return teacher_genotype(seed)

    def datasets(self, data: DataCfg, *, seed: int, n_train: int, n_arch: int) -> Tuple[Dataset, Dataset]:
        t = teacher_seed_of(data)
        # streams 0 and 1 are the standalone recipe's train and test sets; the search's own start at 2
        return (_Pairs(*planted_data(t, n_train, stream=2 + 2 * seed)),
                _Pairs(*planted_data(t, n_arch, stream=3 + 2 * seed)))

    def model_input(self, batch: Mapping[str, Tensor]) -> Tensor:
        return batch["image"]  # (B, 3, 12, 12)

    def loss(self, pred: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        return F.mse_loss(pred, batch["target"])

    has_short_fit = True

    def short_fit(self, genotype: Any, *, data: DataCfg, seed: int, steps: int, device: str = "cpu") -> float:
        """The standalone recipe cut to ``steps`` steps, trained on the search's weight stream and
        tested on its architecture stream (streams ``2 + 2 seed`` and ``3 + 2 seed``; the benchmark's
        streams 0 and 1 are never seen). On the CPU whatever ``device`` says: the network is tiny."""
        return standalone(genotype, teacher_seed=teacher_seed_of(data), seed=seed, recipe=Recipe(steps=steps),
                          streams=(2 + 2 * seed, 3 + 2 * seed))["test"]


def standalone(genotype: Genotype, *, teacher_seed: int, seed: int, recipe: Recipe = Recipe(),
               streams: Tuple[int, int] = (0, 1)) -> Dict[str, float]:
    """Train a student of ``genotype`` by the one recipe; its test MSE (BatchNorm statistics of the
    whole train set, eval mode) and wall time. ``seed`` draws the initial weights and the batch order;
    ``streams`` are the data streams trained and tested on (0 and 1: the benchmark's own; a search's
    ``select`` stage uses its own streams, never these)."""
    t0 = time.perf_counter()
    x, y = planted_data(teacher_seed, SHAPE.n_train, stream=streams[0])
    xt, yt = planted_data(teacher_seed, SHAPE.n_test, stream=streams[1])
    cl = torch.channels_last
    x, y, xt, yt = (v.contiguous(memory_format=cl) for v in (x, y, xt, yt))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = PlantedNet(genotype=genotype, C=SHAPE.C, cells=SHAPE.cells, in_channels=SHAPE.in_channels,
                         out_channels=SHAPE.out_channels).to(memory_format=cl)
    opt = ClippedAdam(net.parameters(), clip=recipe.clip)  # clip_grad_norm_ + fused Adam, the same floats
    g = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(x.shape[0], generator=g), 0
    net.train()
    for step in range(recipe.steps):
        stop.check()  # a signal's stop that Python swallowed (utils/stop.py)
        if pos + recipe.batch > x.shape[0]:
            perm, pos = torch.randperm(x.shape[0], generator=g), 0
        idx = perm[pos:pos + recipe.batch]
        pos += recipe.batch
        loss = F.mse_loss(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step(lr=0.5 * recipe.lr * (1.0 + math.cos(math.pi * step / recipe.steps)))
    calibrate_batchnorm(net, x)  # exact population statistics of the train set, eval mode
    with torch.no_grad():
        test = F.mse_loss(net(xt), yt).item()
    return {"test": test, "seconds": time.perf_counter() - t0}
