"""The ``matting`` task: synthetic or real matting data, the matting loss, RGB + one-hot trimap input."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from atldas.data.datasets import detect_kind, open_dataset, with_draws
from atldas.data.synthetic import SyntheticMatting
from atldas.errors import ConfigError
from atldas.matting.losses import LOSS_VERSION, MattingLoss
from atldas.matting.metrics import sad
from atldas.models.base import set_clamp
from atldas.models.zoo import resolve_model
from atldas.tasks.base import DataCfg, Task
from atldas.tensors import batch_to, matting_input
from atldas.utils import stop
from atldas.utils.memory_format import channels_last
from atldas.utils.optim import decay_groups, lr_factor

__all__ = ["FitRecipe", "MattingTask"]

log = logging.getLogger(__name__)

#: the data set kinds with a composed training split (foregrounds on ``--backgrounds``) that search splits
COMPOSED_KINDS = ("composition-1k", "distinctions-646")


@dataclass(frozen=True)
class FitRecipe:
    """The short standalone fit of the search's ``select`` stage: ``atldas retrain``'s defaults
    (AdamW, linear warm-up over the first half, cosine to 5 %, gradient clipping, batch 8, 96-pixel
    crops) cut to the stage's steps, on the search's data (its weight split to train, its
    architecture split to score).

    Attributes:
        lr, weight_decay, min_lr_ratio, grad_clip: as ``atldas retrain``'s.
        warmup: share of the steps in linear warm-up (retrain's half epoch of a one-epoch run).
        batch_size, crop: of the fit's training batches (None: the search's).
        eval_samples, eval_size: held-out samples the fitted network is scored on, in eval mode, and
            their side in pixels (None: the search's crop).
        score: ``sad`` (the DIM SAD, mean over the samples) or ``loss`` (the task loss).
    """

    lr: float = 2e-3
    weight_decay: float = 1e-4
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    warmup: float = 0.5
    batch_size: Optional[int] = 8
    crop: Optional[int] = 96
    eval_samples: int = 24
    eval_size: Optional[int] = 192
    score: str = "sad"

    def __post_init__(self) -> None:
        if self.score not in ("sad", "loss"):
            raise ConfigError(f"FitRecipe score={self.score!r}: use sad or loss")


class MattingTask(Task):
    """Trimap-based matting (matting.md).

    Data: ``synthetic`` gives two disjoint generated splits (``train`` and ``arch``), fresh samples
    for every epoch; a training-set folder (Composition-1K / Distinctions-646 style, composed on
    ``backgrounds``) is split by foreground index parity, even ones for the weights and odd ones for
    the architecture (a sample's merged second foreground comes from its own split). Loss: L1 over the unknown region + Laplacian pyramid + 0.5 x composition
    (:class:`~atldas.matting.losses.MattingLoss`). Input: (B, 6, H, W) RGB + one-hot trimap.

    Args:
        l1, lap, comp: loss weights.
        fit: the recipe of the select stage's short standalone fits (:class:`FitRecipe`).
    """

    name = "matting"
    loss_version = LOSS_VERSION

    def __init__(self, *, l1: float = 1.0, lap: float = 1.0, comp: float = 0.5,
                 fit: FitRecipe = FitRecipe()) -> None:
        self._loss = MattingLoss(l1=l1, lap=lap, comp=comp)
        self.fit = fit

    def io(self, data: DataCfg) -> Dict[str, Any]:
        return {"in_channels": 6, "out_channels": 1}

    def check(self, data: DataCfg) -> None:
        super().check(data)
        if data.crop % 32:
            raise ConfigError(f"crop must be a multiple of 32 (the networks downsample 5 times), got {data.crop}")

    def datasets(self, data: DataCfg, *, seed: int, n_train: int, n_arch: int) -> Tuple[Dataset, Dataset]:
        if data.source != "synthetic":
            kind = detect_kind(data.source)  # an unknown layout: one DataError listing the layouts
            if kind not in COMPOSED_KINDS:
                raise ConfigError(f"--data {data.source}: a {kind} folder (photos with their mattes); search's --data "
                                  "takes 'synthetic' or a composed training set: "
                                  "Composition-1K Training_set/{fg, alpha} or Distinctions-646 Train/{FG, GT}, "
                                  "with --backgrounds DIR (train on photos with atldas retrain --data)")
            full = open_dataset(data.source, split="train", crop=data.crop, seed=seed, backgrounds=data.backgrounds)
            # even foregrounds for the weights, odd ones for the architecture; neither merges the other's
            # (a split smaller than an epoch: Run gives it more draws per foreground, ComposedTrainSet.with_draws)
            weights, arch = full.split_by_foreground(2)
            return weights, arch
        return (SyntheticMatting(size=data.crop, length=n_train, seed=seed, split="train",
                                 backgrounds=data.backgrounds),
                SyntheticMatting(size=data.crop, length=n_arch, seed=seed, split="arch",
                                 backgrounds=data.backgrounds))

    def model_input(self, batch: Mapping[str, Tensor]) -> Tensor:
        return matting_input(batch)  # (B, 6, H, W)

    def loss(self, pred: Tensor, batch: Mapping[str, Tensor]) -> Tensor:
        return self._loss(pred, batch)["loss"]

    has_short_fit = True

    def short_fit(self, genotype: Any, *, data: DataCfg, seed: int, steps: int, device: str = "cpu") -> float:
        """Train the genotype's target network (the width and depth ``atldas retrain`` trains) from
        scratch for ``steps`` steps of :attr:`fit` on the search's weight split, then score it in eval
        mode on the first ``fit.eval_samples`` samples of the search's architecture split (DIM SAD by
        default; lower is better). ``seed`` draws the initial weights and the batch order. A fit
        whose loss turns non-finite scores ``inf`` (ranked last)."""
        r, dev = self.fit, torch.device(device)
        held_out = dataclasses.replace(data, crop=r.eval_size or data.crop)
        data = dataclasses.replace(data, batch_size=r.batch_size or data.batch_size, crop=r.crop or data.crop)
        self.check(data)
        self.check(held_out)
        train, _ = self.datasets(data, seed=seed, n_train=steps * data.batch_size, n_arch=1)
        _, arch = self.datasets(held_out, seed=seed, n_train=1, n_arch=r.eval_samples)
        train, arch = with_draws(train, steps * data.batch_size), with_draws(arch, r.eval_samples)
        model = resolve_model(genotype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = channels_last(model.build().to(dev))
            order = torch.cat([torch.randperm(len(train)) for _ in range(-(-steps * data.batch_size // len(train)))])
        opt = torch.optim.AdamW(decay_groups(net, r.weight_decay), lr=r.lr, foreach=True)
        warmup = int(round(r.warmup * steps))
        net.train()
        set_clamp(net, False)
        for step in range(steps):
            stop.check()  # a signal's stop that Python swallowed (utils/stop.py)
            for g in opt.param_groups:
                g["lr"] = r.lr * lr_factor(step, total=steps, warmup=warmup, min_ratio=r.min_lr_ratio)
            idx = order[step * data.batch_size:(step + 1) * data.batch_size].tolist()
            batch = batch_to(default_collate([train[i] for i in idx]), dev)
            loss = self.loss(model.forward(net, channels_last(self.model_input(batch))), batch)  # a subclass's own
            if not torch.isfinite(loss):
                log.warning("short fit of %s: the loss became non-finite at step %d; ranked last",
                            model.name, step + 1)
                return float("inf")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), r.grad_clip)
            opt.step()
        net.eval()
        set_clamp(net, True)
        n = min(len(arch), r.eval_samples)
        total = 0.0
        with torch.no_grad():
            for lo in range(0, n, data.batch_size):
                batch = batch_to(default_collate([arch[i] for i in range(lo, min(n, lo + data.batch_size))]), dev)
                pred = model.forward(net, channels_last(self.model_input(batch)))  # (B, 1, H, W)
                if r.score == "loss":
                    total += float(self.loss(pred, batch)) * pred.shape[0]
                    continue
                p = pred[:, 0].clamp(0.0, 1.0).cpu().numpy()  # (B, H, W); as inference clamps it
                a = batch["alpha"][:, 0].cpu().numpy()
                t = batch["trimap"][:, 0].cpu().numpy()
                total += sum(sad(p[k], a[k], t[k]) for k in range(p.shape[0]))
        return total / n
