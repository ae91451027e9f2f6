"""``atldas retrain``: train the standalone network of a genotype (or any MODEL) from scratch.

    atldas retrain runs/search-tiny-atldas-seed0/genotype.json        # the default: minutes on a CPU
    atldas retrain RUN_DIR --set C=16 --set layers=5                  # a demo-sized macro
    atldas retrain cheapmatting --data /data/Adobe --backgrounds /data/coco --device cuda \\
        --epochs 100 --set steps_per_epoch=1000 --set crop=512 --set batch_size=16
    atldas retrain --out RUN_DIR --resume

MODEL is anything :func:`atldas.models.zoo.resolve_model` takes: a genotype file (built in the
target macro its ``space`` metadata names), a search run directory, a registered name
(``cheapmatting``, ``cnn_baseline_tiny``, ...). ``--set C=.. --set layers=..`` override the macro of a
genotype or CheapMatting-macro model; the run's ``genotype.json`` records the macro actually trained,
so ``--model RUN_DIR`` rebuilds exactly this network::

    atldas predict --model RUN_DIR --checkpoint RUN_DIR/best.pt --image photo.png --trimap tri.png --out o/
    atldas eval --model RUN_DIR --checkpoint RUN_DIR/best.pt --data /data/AIM-500

Training (matting.md, "Training conventions"): L1 over the unknown region + Laplacian-pyramid loss +
composition loss (:class:`~atldas.matting.losses.MattingLoss`); AdamW (default) or RAdam; linear
warm-up then cosine decay per step; gradient-norm clipping (``--set grad_clip=5``, the default; 0:
off); channels_last (about 1.3x faster steps on CPU; ``--set channels_last=false`` turns it off); on CUDA only: AMP (bf16 where supported, else
fp16 with a gradient scaler); optional EMA of the weights (``--set ema=0.999``; then validation,
``best.pt`` and ``last.pt["model"]`` use the EMA weights); optional DARTS drop-path in the cells
(``--set drop_path=0.2``, ramped up linearly over the epochs). The network's output clamp is lifted
while training (it would cut the gradient of every pixel outside [0, 1]) and restored for inference.

Data: ``--data synthetic`` (default) draws fresh training crops every epoch (split ``train``) and
validates on ``val_count`` images of split ``val`` (``val_size`` pixels); ``--data DIR`` trains on the
layout's training split (Composition-1K / Distinctions-646 ``Train``, composed on ``--backgrounds``)
and validates on its test split (the first ``val_count`` images; 0 = all), at full resolution with
padded inference.

Validation, every epoch: the DIM metrics (:func:`atldas.matting.metrics.compute_all`) on 8-bit
predictions clamped by the trimap, exactly as ``atldas eval`` scores them, next to the *trivial*
prediction (alpha = 0.5 in the unknown region) scored by the same code on the same images.

Run directory::

    RUN_DIR/
      config.yaml     resolved RetrainConfig
      genotype.json   the genotype in the macro trained (genotype models only)
      last.pt         atomic, torch.load(weights_only=True): {"model": inference weights, "optimizer",
                      "scaler", "ema"/"train_model", "rng", "epoch", "step", "best", "config", ...}
      best.pt         {"model": weights of the epoch with the lowest validation SAD, "epoch", "metrics"}
      history.jsonl   one line per epoch: losses, lr, validation metrics, trivial baseline, time
      tb/             TensorBoard: losses, lr, metrics, predicted mattes

``--resume`` continues from ``last.pt`` and ends in the same state as a run that was never stopped
(data order and model RNG depend on the seed and the epoch only). A non-finite loss stops the run with
one line, keeping the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from atldas.version import __version__
from atldas.config import build, check_ranges, check_threads, check_types, keyword_only, refuse_edited, to_dict
from atldas.data.datasets import PairingError, PhotoTrainSet, open_dataset
from atldas.data.io import same_sizes
from atldas.data.loading import EpochBatches, make_loader
from atldas.data.synthetic import SyntheticMatting
from atldas.errors import AtldasError, ConfigError, DataError
from atldas.genotype import Genotype
from atldas.matting.inference import predict_alpha
from atldas.matting.losses import LOSS_VERSION, MattingLoss
from atldas.matting.metrics import summarise
from atldas.matting.scoring import score_dataset, trivial_alpha
from atldas.models.base import MattingModel, set_clamp
from atldas.models.cheapmatting import CheapMattingCfg
from atldas.models.zoo import genotype_macro, require_torch, resolve_model
from atldas.rundir import CONFIG, RunDir
from atldas.utils import stop
from atldas.utils.atomic import check_output
from atldas.tensors import batch_to, matting_input
from atldas.utils.dist import average_, barrier, check_batch, is_main, mean_values, shard, wait_for_main
from atldas.utils.checkpoint import load_checkpoint, warn_other_loss
from atldas.utils.counting import count_params
from atldas.utils.device import AMP_MODES, amp_dtype, resolve_device, resume_device_hint, tune_backend
from atldas.utils.memory_format import channels_last
from atldas.utils.optim import decay_groups, lr_factor
from atldas.utils.weights import weight_mismatch
from atldas.utils.seed import pin_threads, resume_threads, rng_state, seed_everything, set_rng_state
from atldas.utils.tb import add_scalars
from atldas.utils.progress import progress_bar, time_left

log = logging.getLogger("atldas")

LAST = "last.pt"
BEST = "best.pt"
FORMAT = "atldas-retrain/1"
OPTIMIZERS = ("adamw", "radam")
_NOT_SCALARS = ("epoch", "step", "params", "val/count", "best/epoch")


# --------------------------------------------------------------------------- configuration

@keyword_only
@dataclass
class RetrainConfig:
    """Configuration of ``atldas retrain`` (see :mod:`atldas.retrain`).

    The defaults train a small network (e.g. the genotype of a ``tiny`` search, or a genotype with
    ``--set C=16 --set layers=5``) on the synthetic data in a few minutes on a 2-core CPU. ``C`` and
    ``layers`` override the macro of a genotype / CheapMatting-macro MODEL (None: the model's own).
    """

    model: str = ""
    data: str = "synthetic"
    val_data: Optional[str] = None
    backgrounds: Optional[str] = None
    foregrounds: Optional[str] = None
    foreground_prob: float = 0.5
    epochs: int = 10
    steps_per_epoch: int = 30
    batch_size: int = 8
    crop: int = 96
    val_count: int = 16
    val_size: int = 128
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = None
    # macro overrides (genotype / CheapMatting-macro models only)
    C: Optional[int] = None
    layers: Optional[int] = None
    # optimisation
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_epochs: float = 0.5
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    amp: str = "auto"
    channels_last: bool = True
    ema: float = 0.0
    drop_path: float = 0.0
    num_workers: int = 0
    # losses (atldas.matting.losses.MattingLoss weights)
    loss_l1: float = 1.0
    loss_lap: float = 1.0
    loss_comp: float = 0.5
    # output
    out: Optional[str] = None
    tensorboard: bool = True
    tb_images: int = 4
    progress: bool = True

    def check(self) -> None:
        """Raise ConfigError naming the first setting that cannot be used (types, ranges, choices); the
        model and the data are checked when a run opens them."""
        _check(self)


def _check(cfg: RetrainConfig) -> None:
    check_types(cfg)
    if not cfg.model:
        raise ConfigError("retrain needs a MODEL: a genotype file, a search run directory or a "
                          "registered name (e.g. `atldas retrain runs/search/genotype.json`)")
    check_ranges(cfg, {"epochs": (1, 10**6), "steps_per_epoch": (1, 10**7), "batch_size": (1, 4096),
                       "crop": (32, 2048), "val_size": (32, 8192), "val_count": (0, 10**6), "lr": (1e-12, 10.0),
                       "weight_decay": (0.0, 10.0), "beta1": (0.0, 0.999999), "beta2": (0.0, 0.999999),
                       "warmup_epochs": (0.0, 1e6), "min_lr_ratio": (0.0, 1.0), "grad_clip": (0.0, 1e6),
                       "loss_l1": (0.0, 1e6), "foreground_prob": (0.0, 1.0), "loss_lap": (0.0, 1e6), "loss_comp": (0.0, 1e6),
                       "tb_images": (0, 64), "seed": (0, 2**31 - 1)})
    check_threads(cfg.threads, where="threads")
    if cfg.loss_l1 + cfg.loss_lap + cfg.loss_comp <= 0:
        raise ConfigError("the loss weights loss_l1, loss_lap and loss_comp are all 0: nothing to train")
    if cfg.val_count < 0:
        raise ConfigError(f"val_count must be >= 0 (0: the whole test split of --data DIR), got {cfg.val_count}")
    if cfg.data == "synthetic" and not cfg.val_data and cfg.val_count < 1:
        raise ConfigError("val_count must be at least 1 with --data synthetic")
    if cfg.crop % 32:
        raise ConfigError(f"crop must be a multiple of 32 (the networks downsample 5 times), got {cfg.crop}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if cfg.amp not in AMP_MODES:
        raise ConfigError(f"unknown amp mode {cfg.amp!r}; choose one of {', '.join(AMP_MODES)}")
    if not 0.0 <= cfg.drop_path < 1.0:
        raise ConfigError(f"drop_path is a probability in [0, 1), got {cfg.drop_path}")
    if not 0.0 <= cfg.ema < 1.0:
        raise ConfigError(f"ema is a decay in [0, 1) (0: off), got {cfg.ema}")
    if cfg.warmup_epochs < 0 or cfg.warmup_epochs >= cfg.epochs:
        raise ConfigError(f"warmup_epochs ({cfg.warmup_epochs}) must be in [0, epochs={cfg.epochs})")
    if not 0 <= cfg.num_workers <= 64:
        raise ConfigError(f"num_workers must be in 0..64, got {cfg.num_workers}")
    resolve_device(cfg.device)


#: RetrainConfig fields that hold a path (or a name): config.yaml records them as strings.
_PATH_FIELDS = ("model", "data", "val_data", "backgrounds", "foregrounds", "out")


def _plain_paths(cfg: Any) -> RetrainConfig:
    """``cfg`` with its ``os.PathLike`` paths as strings (a ``Path`` could not be written to config.yaml);
    TypeError for another type than RetrainConfig, ConfigError for a Genotype as the model."""
    if not isinstance(cfg, RetrainConfig):
        raise TypeError(f"retrain needs a RetrainConfig, got {type(cfg).__name__}")
    if isinstance(cfg.model, Genotype):
        raise ConfigError("RetrainConfig(model=...) takes a MODEL name or path, and a run records it: save the "
                          "genotype first (genotype.save('g.json')) and pass the file")
    cfg = dataclasses.replace(cfg, **{f: os.fspath(getattr(cfg, f)) for f in _PATH_FIELDS
                                      if isinstance(getattr(cfg, f), os.PathLike)})
    check_types(cfg)  # before the run folder: a config built in Python skipped YAML's and --set's types
    return cfg


def default_out(cfg: RetrainConfig) -> Path:
    """``runs/retrain-<model>-seed<S>``: the model's folder name, its file's stem (a run's
    ``genotype.json``: its folder's name, so two runs' genotypes do not share a default), or its
    registered name."""
    p = Path(cfg.model)
    if p.is_dir():
        name = p.name
    elif p.suffix:
        name = p.parent.resolve().name if p.name == "genotype.json" and p.parent.resolve().name else p.stem
    else:
        name = cfg.model
    return Path("runs") / f"retrain-{name or 'model'}-seed{cfg.seed}"


# --------------------------------------------------------------------------- model

def run_genotype(cfg: RetrainConfig) -> Optional[Genotype]:
    """The genotype of ``cfg.model`` with the macro overrides applied (None for hand-designed models).

    Its ``space.macro`` records the whole CheapMatting macro trained, so that
    :func:`~atldas.models.zoo.resolve_model` of the run directory rebuilds exactly this network.
    """
    model = require_torch(resolve_model(cfg.model), "retrain")
    overrides = {k: getattr(cfg, k) for k in ("C", "layers") if getattr(cfg, k) is not None}
    if model.genotype is None:
        if overrides:
            raise ConfigError(f"--set {'/'.join(overrides)}: {cfg.model} is a hand-designed model without a "
                              "macro to override; pick a variant by name (e.g. cnn_baseline_small) instead")
        return None
    g = model.genotype
    space = dict(g.space or {})
    if model.kind == "registered":
        macro: Dict[str, Any] = CheapMattingCfg().to_meta()  # the released macro
        # a registered model is a genotype in the CheapMatting macro, whatever space it was searched in
        space = {k: v for k, v in space.items() if k != "name"}
        space["searched_in"] = (g.space or {}).get("name")
    else:
        macro = {"name": genotype_macro(g)[0], **genotype_macro(g)[1]}
    space["macro"] = CheapMattingCfg.from_meta({**macro, **overrides}).to_meta()
    prov = {**{k: v for k, v in g.provenance.items() if k != "interim"}, "retrained_from": cfg.model}
    cost = dict(g.cost) if not overrides and model.kind != "registered" else {}
    return g.replace(space=space, provenance=prov, cost=cost)


def build_model(cfg: RetrainConfig, out: Path, *, genotype: Any = ...) -> Tuple[MattingModel, Optional[Genotype]]:
    """``(MattingModel, genotype or None)``; genotype models are built from ``out/genotype.json``.
    ``genotype``: :func:`run_genotype` of ``cfg`` where the caller has it already."""
    if genotype is ...:
        genotype = run_genotype(cfg)
    if genotype is None:
        return resolve_model(cfg.model), None
    genotype.save(out / "genotype.json")
    return resolve_model(out), genotype


# --------------------------------------------------------------------------- data

def _datasets(cfg: RetrainConfig) -> Tuple[Dataset, Dataset]:
    """(training set, validation set): ``val_data``'s test split when given, else ``data``'s."""
    if cfg.foreground_prob != RetrainConfig.foreground_prob and not cfg.foregrounds:
        log.warning("foreground_prob=%g does nothing without --foregrounds (the share of samples with real "
                    "foregrounds in --data synthetic)", cfg.foreground_prob)
    if cfg.data == "synthetic":
        per_epoch = cfg.steps_per_epoch * cfg.batch_size
        train = SyntheticMatting(size=cfg.crop, length=cfg.epochs * per_epoch, seed=cfg.seed, split="train",
                                 backgrounds=cfg.backgrounds, foregrounds=cfg.foregrounds,
                                 foreground_prob=cfg.foreground_prob)
        if cfg.foregrounds:
            log.info("training data: synthetic, with real foregrounds from %s in %.0f %% of the samples "
                     "(validation stays on %s)", cfg.foregrounds, 100 * cfg.foreground_prob,
                     cfg.val_data or "the procedural val split")
        if cfg.val_data:
            val = _validation_set(Path(cfg.val_data), cfg, flag="--val-data")
            return train, _first(val, cfg)
        val = SyntheticMatting(size=cfg.val_size, length=cfg.val_count, seed=cfg.seed, split="val",
                               backgrounds=cfg.backgrounds)
        return train, val
    root = Path(cfg.data)
    if cfg.foregrounds:
        raise ConfigError("--foregrounds mixes real foregrounds into --data synthetic; a data set folder "
                          f"({root}) brings its own foregrounds")
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder; pass 'synthetic' or a data set folder")
    try:
        train = open_dataset(root, split="train", crop=cfg.crop, seed=cfg.seed, backgrounds=cfg.backgrounds)
    except ConfigError:
        train = None
    if train is None or not hasattr(train, "set_epoch"):
        return _photo_datasets(root, cfg)
    # a composed set with fewer foregrounds than an epoch's samples: fresh composites, not repeats
    return train.with_draws(cfg.steps_per_epoch * cfg.batch_size), _own_or_given_validation(root, cfg)


def _own_or_given_validation(root: Path, cfg: RetrainConfig) -> Dataset:
    """``--val-data``'s test split, else ``root``'s, cut to ``val_count`` images (0: all)."""
    val = _validation_set(Path(cfg.val_data) if cfg.val_data else root, cfg, flag="--val-data" if cfg.val_data else "--data")
    return _first(val, cfg)


def _first(val: Dataset, cfg: RetrainConfig) -> Dataset:
    """``val`` cut to its first ``val_count`` images (0: all); a cut set records how many it was cut from."""
    if not 0 < cfg.val_count < len(val):
        return val
    cut = Subset(val, range(cfg.val_count))
    cut.cut_from = len(val)  # type: ignore[attr-defined]
    return cut


#: Without --val-data, every VAL_EVERY-th photo of a photo folder (sorted by name) is held out.
VAL_EVERY = 10


def _photo_datasets(root: Path, cfg: RetrainConfig) -> Tuple[Dataset, Dataset]:
    """(training set, validation set) from a folder of real photos with mattes (no composed training
    split): :class:`PhotoTrainSet` crops; validation on ``--val-data``, else on every
    ``VAL_EVERY``-th photo, held out of training."""
    no_split = (f"--data {root}: no training split that retrain can use; retrain takes Composition-1K "
                "Training_set/{fg, alpha} or Distinctions-646 Train/{FG, GT} with --backgrounds DIR, or "
                "real photos with their mattes (image/, trimap/, alpha/ folders, AIM-500, ...)")

    def split(name: str) -> Optional[Dataset]:
        try:
            return open_dataset(root, split=name)
        except PairingError:  # the split is there, its files do not pair up
            raise
        except (ConfigError, DataError):  # no such split in this layout
            return None

    train_split = split("train")  # the same photos as the test split where the layout has one split
    try:
        test_split = None if cfg.val_data and train_split is not None else split("test")
    except PairingError as exc:  # a broken test split: an error where its photos are the training photos
        if train_split is None:
            raise
        log.warning("the test split of %s is not used: %s", root, exc)
        test_split = None
    photos = train_split if train_split is not None else test_split
    if photos is None:
        raise DataError(no_split)
    if not getattr(photos, "has_alpha", True):
        raise DataError(f"{no_split}; {root} has no alpha mattes")
    for kind in ("alpha", "trimap"):  # of their photo's size, from the headers, before any work (a sample
        # read mid-epoch would stop the run there; its trimap is read too, though training erodes its own)
        same_sizes([(it.image, getattr(it, kind)) for it in getattr(photos, "items", ())
                    if getattr(it, kind) is not None], kind)
    own_test = (train_split is not None and test_split is not None and getattr(test_split, "has_alpha", True)
                and getattr(train_split, "names", None) != getattr(test_split, "names", None))
    n = len(photos)
    n_photos = n  # distinct photos among the training images, where the held-out split counts them
    if cfg.val_data or own_test:  # AM-2k, alphamatting.com: train on the train split, validate on the test split
        if cfg.val_data and not own_test and Path(cfg.val_data).resolve() == root.resolve():
            log.warning("--val-data %s is --data itself, which has no test split: the run validates on the photos "
                        "it trains on, and its best SAD says nothing of new photos; leave --val-data out (every "
                        "%dth photo is then held out) or give a folder of other photos", cfg.val_data, VAL_EVERY)
        train_idx, val = list(range(n)), _own_or_given_validation(root, cfg)
    else:  # every VAL_EVERY-th photo, with every sample that shares its image or alpha (another trimap of it,
        # another composite of its foreground): held-out samples seen in training would not be held out
        source = list(getattr(photos, "sources", range(n)))
        n_src = len(set(source))
        if n_src < 2:
            raise DataError(f"--data {root}: {n_src} photo(s); training on photos holds every {VAL_EVERY}th "
                            "out for validation and needs at least 2, or a validation set: --val-data DIR")
        held_src = set(range(VAL_EVERY - 1, n_src, VAL_EVERY)) or {n_src - 1}
        held = [i for i in range(n) if source[i] in held_src]
        train_idx = [i for i in range(n) if source[i] not in held_src]
        n_photos = len({source[i] for i in train_idx})
        val = Subset(photos, held)
        val.what = f"{len(held)} image(s) held out of its training photos"  # type: ignore[attr-defined]
    need = cfg.steps_per_epoch * cfg.batch_size
    train = PhotoTrainSet(Subset(photos, train_idx) if len(train_idx) < n else photos, crop=cfg.crop,
                          seed=cfg.seed, samples_per_photo=-(-need // len(train_idx)))
    images = f" ({len(train_idx)} images: a photo's trimaps or composites)" if n_photos < len(train_idx) else ""
    held_out = f"{len(val)} image(s) held out of {root} (every {VAL_EVERY}th photo by name, with all its images)"
    log.info("training data: %d real photo(s)%s of %s as they are (crops of %d px around the unknown region, "
             "flips, trimaps eroded from the alpha; no composition); validation: %s", n_photos, images, root,
             cfg.crop, cfg.val_data or (f"the test split of {root}" if own_test else held_out))
    return train, val


def _validation_set(root: Path, cfg: RetrainConfig, *, flag: str) -> Dataset:
    """The test split of ``root`` (any layout the readers know), with ground-truth alphas."""
    if not root.is_dir():
        raise DataError(f"{flag} {root}: no such folder")
    try:
        try:
            val = open_dataset(root, split="test", backgrounds=cfg.backgrounds)
        except ConfigError:  # a test split with its own composites takes no backgrounds (Composition-1K)
            val = open_dataset(root, split="test")
    except (ConfigError, DataError) as exc:
        hint = "" if cfg.val_data else "; give a validation set of its own with --val-data DIR"
        raise DataError(f"{flag} {root}: no test split to validate on ({exc}){hint}") from None
    if not getattr(val, "has_alpha", True):
        raise DataError(f"{flag} {root}: its test split has no ground-truth alpha to validate on")
    return val


def _epoch_order(n: int, cfg: RetrainConfig) -> Callable[[int], List[int]]:
    """The training indices of each epoch: a function of (seed, epoch) only, so a resumed run sees
    the same data. Synthetic data: fresh samples every epoch; a composed set or photos: its epoch's draws
    (``n`` is at least an epoch's samples: ``with_draws``, ``samples_per_photo``)."""
    need = cfg.steps_per_epoch * cfg.batch_size

    def order(epoch: int) -> List[int]:
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch * 7919 + 17)
        if cfg.data == "synthetic":
            return (epoch * need + torch.randperm(need, generator=gen)).tolist()
        if n < need:
            raise DataError(f"{n} training samples for an epoch of {need}; a data set that draws per epoch gives "
                            "at least an epoch's samples")
        return torch.randperm(n, generator=gen)[:need].tolist()

    return order


# --------------------------------------------------------------------------- optimisation

def _check_resumable(ckpt: Dict[str, Any], net: nn.Module, *, ema: Optional["EMA"], source: str) -> None:
    """DataError (one line) unless ``ckpt`` is a ``last.pt`` of a run of this network: a ``best.pt``
    (weights only) or a checkpoint of another genotype or width put in its place would fail deep in
    ``load_state_dict``."""
    needed = ["model", "optimizer", "best", "epoch", "step", "rng"] + (["train_model", "ema"] if ema is not None else [])
    missing = [k for k in needed if k not in ckpt]
    if missing:
        raise DataError(f"{source}: not the last.pt of a retrain run (no {', '.join(missing)}; a best.pt holds "
                        "weights only); resume needs the run's own last.pt")
    bad = weight_mismatch(net.state_dict(), ckpt["train_model"] if ema is not None else ckpt["model"])
    if bad:
        raise DataError(f"{source} does not fit the network of this run's config.yaml: {bad}; the checkpoint "
                        "and config.yaml come from different runs")


def _optimizer(cfg: RetrainConfig, net: nn.Module) -> torch.optim.Optimizer:
    groups = decay_groups(net, cfg.weight_decay)  # no decay on norms, biases, PReLU slopes
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.RAdam
    kw = {"decoupled_weight_decay": True} if cfg.optimizer == "radam" else {}
    # AdamW runs foreach: one multi-tensor kernel per update term instead of a Python loop over the
    # tensors, bit for bit the same weights (tests/test_retrain.py); RAdam's foreach form is not, so it
    # keeps the loop
    return cls(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=cfg.optimizer == "adamw", **kw)


def _amp_dtype(cfg: RetrainConfig) -> Optional[torch.dtype]:
    """Autocast dtype: CUDA only; ``auto`` = bf16 where supported, else fp16."""
    return amp_dtype(cfg.device, cfg.amp)


class EMA:
    """Exponential moving average of a network's weights and float buffers (BatchNorm's running
    statistics are averaged too; integer buffers, BatchNorm's counts, are copied).

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates.
    """

    def __init__(self, net: nn.Module, *, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(net).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """One step towards ``net``'s current weights and float buffers (integer buffers, e.g. BatchNorm's
        counts, copied)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        src = net.state_dict()
        for k, v in self.module.state_dict().items():
            if v.is_floating_point():
                v.mul_(d).add_(src[k].detach(), alpha=1.0 - d)
            else:
                v.copy_(src[k])

    def state_dict(self) -> Dict[str, Any]:
        """What a checkpoint keeps: ``{"decay", "updates", "weights"}``."""
        return {"decay": self.decay, "updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output (the decay stays this object's)."""
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])


# --------------------------------------------------------------------------- validation

def validate(model: MattingModel, net: nn.Module, val: Dataset, *, device: str, keep: int = 0,
             progress: bool = False) -> Tuple[Dict[str, float], int, List[Tuple[np.ndarray, ...]]]:
    """Score ``net`` on ``val`` with the DIM metrics, in the loop ``atldas eval`` runs
    (:func:`atldas.matting.scoring.score_dataset`): padded full-resolution inference, 8-bit predictions
    clamped by the trimap.

    Returns:
        (means over images, number of images scored, the first ``keep`` (image, trimap, gt, pred)
        arrays for previews). Images without unknown pixels are skipped (their MSE is undefined).
    """
    was_training = net.training
    net.eval()
    try:
        per, previews = score_dataset(val, lambda image, tri: predict_alpha(model, net, image, tri, device=device),
                                      skip_no_unknown=True, keep=keep, progress=progress, desc="validation",
                                      leave=False)
    finally:
        net.train(was_training)
    m = summarise(per)
    return {k: m[k] for k in ("SAD", "MSE", "Grad", "Conn")}, len(per), previews


def trivial_scores(val: Dataset, *, progress: bool = False) -> Tuple[Dict[str, float], int]:
    """DIM means of the trivial prediction (alpha = 0.5 in the unknown region) on ``val``."""
    per, _ = score_dataset(val, trivial_alpha, skip_no_unknown=True, progress=progress, desc="trivial baseline",
                           leave=False)
    t = summarise(per)
    return {k: t[k] for k in ("SAD", "MSE", "Grad", "Conn")}, len(per)


def _preview_grid(previews) -> np.ndarray:
    """(3, H, 4W) rows of image | trimap | ground truth | prediction, stacked vertically."""
    rows = []
    for image, tri, gt, pred in previews:
        grey = [np.repeat(a[None].astype(np.float32) / 255.0, 3, 0) for a in (tri, gt, pred)]
        rows.append(np.concatenate([image.astype(np.float32), *grey], axis=2))
    w = max(r.shape[2] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, 0), (0, w - r.shape[2]))) for r in rows]
    return np.concatenate(rows, axis=1)


# --------------------------------------------------------------------------- run

def _fmt(m: Dict[str, float]) -> str:
    return f"SAD {m['SAD']:.4g}, MSE {m['MSE']:.4g}, Grad {m['Grad']:.4g}, Conn {m['Conn']:.4g}"


def retrain(cfg: RetrainConfig, *, resume: bool = False, force: bool = False) -> Path:
    """Train ``cfg.model`` from scratch and write the run directory (see the module docstring).

    Args:
        cfg: the configuration; on ``resume`` only ``cfg.out`` (or, without it, ``cfg.model``'s default
            folder) and ``cfg.progress`` are used, the rest comes from the run's ``config.yaml``
            (``atldas retrain --resume`` refuses flags that differ from it).
        resume: continue the run in ``cfg.out`` from its ``last.pt``.
        force: start afresh where ``cfg.out`` holds a run; the old folder is moved aside first.

    Returns:
        The run directory.

    Raises:
        AtldasError: a user error (bad config, missing data, existing run without ``--resume``), or a
            non-finite loss (the last good checkpoint is kept).
    """
    cfg = _plain_paths(cfg)
    if resume and not cfg.out and not cfg.model:
        raise ConfigError("--resume needs --out RUN_DIR (the run to continue), or the MODEL it trained (its "
                          "default folder)")
    if force and resume:
        raise ConfigError("--force starts afresh and --resume continues: pass one of them")
    rd = RunDir(Path(cfg.out) if cfg.out else default_out(cfg), checkpoint=LAST, kind="retrain")
    world = rd.join_torchrun(cfg.device, resume=resume)  # on the run's own device
    if not resume:  # every rank, before anything is written (it failed at the first step, after the run folder)
        check_batch(cfg.batch_size)
    if world > 1 and not is_main():
        return _retrain(cfg, rd=_Replica(rd), resume=resume)  # torchrun: rank 0 writes the run directory
    checked = None
    if force:  # the new run's config, data and model are checked before the old run is moved aside
        rd.refuse_inputs_inside((("MODEL", cfg.model), ("--data", cfg.data), ("--val-data", cfg.val_data),
                                 ("--backgrounds", cfg.backgrounds), ("--foregrounds", cfg.foregrounds)))
        checked = _fresh_checks(dataclasses.replace(cfg, out=str(rd.path)))
        rd.set_aside()
    with rd.locked():
        return _retrain(cfg, rd=rd, resume=resume, checked=checked)


class _Replica:
    """The run directory as a rank other than 0 sees it under torchrun: it reads what rank 0 wrote
    (after :func:`~atldas.utils.dist.barrier`) and writes nothing."""

    def __init__(self, rd: RunDir) -> None:
        self.path, self.checkpoint, self._rd = rd.path, rd.checkpoint, rd

    def check_resume(self) -> None:
        wait_for_main()

    def check_new(self) -> None:
        wait_for_main()

    def read_config(self) -> Dict[str, Any]:
        return self._rd.read_config()

    def load(self, **kw: Any) -> Dict[str, Any]:
        return self._rd.load(**kw)

    def write_config(self, cfg: Any) -> None:
        pass

    def history(self, start: int) -> Any:
        return type("NoHistory", (), {"append": lambda self, row: None})()

    def writer(self, enabled: bool = True, *, start: int = 0) -> None:
        return None

    def save(self, state: Dict[str, Any], name: Optional[str] = None) -> None:
        pass


def _fresh_checks(cfg: RetrainConfig) -> Tuple[Dataset, Dataset, Optional[int], Optional[Genotype]]:
    """What a fresh run checks before it writes anything: the config, the data (the two data sets) and
    the model (the bytes of its weights, None where its builder cannot run on the meta device; its
    :func:`run_genotype`)."""
    _check(cfg)
    train_ds, val_ds = _datasets(cfg)
    genotype = run_genotype(cfg)  # a bad MODEL or macro override fails before anything is written
    model = resolve_model(genotype if genotype is not None else cfg.model)
    try:
        with torch.device("meta"):  # parameter bytes without memory
            net = model.build()
        weights: Optional[int] = sum(p.numel() * p.element_size() for p in net.parameters())
    except (NotImplementedError, RuntimeError):  # a builder that cannot run on the meta device
        weights, net = None, None
    if net is not None:
        _check_output_shape(model, net, cfg.crop)
    if weights == 0:
        raise ConfigError(f"{cfg.model}: a network without weights (nothing to train); retrain a genotype or "
                          "a learned model, or score it as it is with atldas eval --model")
    return train_ds, val_ds, weights, genotype


def _check_output_shape(model: MattingModel, net: nn.Module, crop: int) -> None:
    """ConfigError when ``net`` (on the meta device) does not give one alpha channel at its input's size:
    a registered network giving 3 channels trained a whole epoch, the loss broadcasting, before its
    validation failed. A network whose forward cannot run on the meta device is not checked here."""
    x = torch.zeros(1, 6, crop, crop, device="meta")  # (B, 6, H, W): RGB + one-hot trimap
    try:
        with torch.no_grad():
            y = model.forward(net.eval(), x)
    except (NotImplementedError, RuntimeError):
        return
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (1, 1, crop, crop):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ConfigError(f"{model.name}: on a (1, 6, {crop}, {crop}) input the network gives {got}; a matting "
                          f"network gives one alpha channel at its input's size, (1, 1, {crop}, {crop})")


def _retrain(cfg: RetrainConfig, *, rd: RunDir, resume: bool,
             checked: Optional[Tuple[Dataset, Dataset, Optional[int], Optional[Genotype]]] = None) -> Path:
    out = rd.path
    replica = isinstance(rd, _Replica)
    if resume:
        rd.check_resume()
        saved = build(RetrainConfig, rd.read_config(), where=str(out / "config.yaml"))
        cfg = dataclasses.replace(saved, out=str(out), progress=cfg.progress)  # progress: a display setting
        resolve_device(cfg.device, hint=resume_device_hint(out / "config.yaml"))
    else:
        rd.check_new()
        cfg = dataclasses.replace(cfg, out=str(out))
    _check(cfg)
    if not resume:
        cfg = pin_threads(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    tune_backend(device)
    fresh: Any = ...  # the fresh run's genotype, resolved once
    if resume:
        # on the CPU: the RNG states must be (load_state_dict moves the weights and moments to the device)
        ckpt = rd.load(map_location="cpu", fmt=FORMAT)  # the data is read once it is known to be needed
    else:
        train_ds, val_ds, weights, fresh = checked if checked is not None else _fresh_checks(cfg)
        # last.pt (weights, two Adam moments, EMA) and best.pt; an atomic rewrite holds two copies
        check_output(out, flag="--out", folder=True, need_bytes=None if weights is None else 2 * 5 * weights)
        rd.write_config(cfg)

    seed_everything(cfg.seed)
    if resume and (out / "genotype.json").is_file():  # the macro trained, even if cfg.model has moved
        model, genotype = resolve_model(out), Genotype.load(out / "genotype.json")
    elif replica:
        genotype = run_genotype(cfg)
        model = resolve_model(genotype if genotype is not None else cfg.model)
    else:
        model, genotype = build_model(cfg, out, genotype=fresh)
    if not replica:
        barrier()  # torchrun: the other ranks read the config (and the checkpoint) now
    net = model.build().to(device)
    if cfg.drop_path > 0 and not hasattr(net, "drop_path_prob"):
        raise ConfigError(f"drop_path={cfg.drop_path}: {model.name} has no DARTS cells to drop paths in; "
                          "leave drop_path at 0 for it")
    if cfg.channels_last:
        net = channels_last(net)
    loss_fn = MattingLoss(l1=cfg.loss_l1, lap=cfg.loss_lap, comp=cfg.loss_comp)
    opt = _optimizer(cfg, net)
    amp_dtype = _amp_dtype(cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    ema = EMA(net, decay=cfg.ema) if cfg.ema > 0 else None
    total = cfg.epochs * cfg.steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * cfg.steps_per_epoch))

    start, step = 0, 0
    best: Dict[str, Any] = {"epoch": -1, "SAD": float("inf")}
    if resume:
        _check_resumable(ckpt, net, ema=ema, source=str(rd.checkpoint))
        # config.yaml edited since last.pt: another optimizer over AdamW's moments, say, without a word
        refuse_edited(to_dict(cfg), ckpt.get("config"), where=out / CONFIG, made="last.pt was trained")
        warn_other_loss(ckpt, LOSS_VERSION, source=rd.checkpoint, made="trained", loss="matting")
        _complete_best(rd, ckpt)
        if int(ckpt["epoch"]) + 1 >= cfg.epochs:
            log.info("%s finished its %d epochs already: nothing left to train", out, cfg.epochs)
            _check_best(out, dict(ckpt["best"]))
            _log_best(dict(ckpt["best"]), dict(ckpt.get("trivial") or {}), out)
            return out
        train_ds, val_ds = _datasets(cfg)  # before the RNG state is restored, as a fresh run reads it first
        net.load_state_dict(ckpt["train_model"] if ema is not None else ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        best = dict(ckpt["best"])
        start, step = int(ckpt["epoch"]) + 1, int(ckpt["step"])
        set_rng_state(ckpt["rng"], device)
        resume_threads(ckpt.get("threads"), configured=cfg.threads)
        log.info("resumed %s at epoch %d/%d", out, start + 1, cfg.epochs)
        del ckpt

    n_params = count_params(net)
    history = rd.history(start)
    writer = rd.writer(cfg.tensorboard, start=start) if start < cfg.epochs else None  # a finished run's --resume: none
    try:
        eval_net = ema.module if ema is not None else net
        log.info("retrain %s (%s parameters%s): %d epochs x %d steps, batch %d, crop %d, %s, lr %.3g, "
                 "device %s%s -> %s", model.name, f"{n_params:,}",
                 f", genotype {genotype.hash()}" if genotype is not None else "", cfg.epochs,
                 cfg.steps_per_epoch, cfg.batch_size, cfg.crop, cfg.optimizer, cfg.lr, cfg.device,
                 f", amp {str(amp_dtype).replace('torch.', '')}" if amp_dtype else "", out)
        trivial, n_val = trivial_scores(val_ds, progress=cfg.progress)
        cut = getattr(val_ds, "cut_from", None)
        if cut is not None:  # a full set's figures would differ: said, with the way to score them all
            n_val_text = (f"the first {len(val_ds)} of {cut} images (val_count={cfg.val_count}; --set val_count=0 "
                          "scores all)")
        where = (f"{cfg.val_data}, test split at full resolution" if cfg.val_data
                 else f"synthetic split val at {cfg.val_size}x{cfg.val_size}" if cfg.data == "synthetic"
                 else f"{cfg.data}, {getattr(val_ds, 'what', 'test split')} at full resolution")
        log.info("validation set: %d image(s)%s (%s; compare validation figures only with those of the same "
                 "set, e.g. not with `atldas eval --data synthetic`, which scores split test); trivial "
                 "prediction (alpha = 0.5 in the unknown region): %s", n_val, f", {n_val_text}" if cut is not None else "",
                 where, _fmt(trivial))

        last_path = out / LAST
        sampler = EpochBatches(_epoch_order(len(train_ds), cfg), batch_size=cfg.batch_size, steps=cfg.steps_per_epoch)
        loader = make_loader(train_ds, sampler, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                             seed=cfg.seed)
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            net.train()
            set_clamp(net, False)
            if cfg.drop_path > 0:  # DARTS: drop-path probability ramps up linearly
                net.drop_path_prob = cfg.drop_path * epoch / cfg.epochs
            sums: Dict[str, float] = {}
            sampler.set_epoch(epoch)
            bar = progress_bar(loader, progress=cfg.progress, total=cfg.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                               unit="step", leave=False, dynamic_ncols=True)
            for k, batch in enumerate(bar):
                stop.check()  # a signal's stop that Python swallowed (utils/stop.py)
                lr = cfg.lr * lr_factor(step, total=total, warmup=warmup, min_ratio=cfg.min_lr_ratio)
                for g in opt.param_groups:
                    g["lr"] = lr
                batch = shard(batch_to(batch, device), cfg.batch_size)  # torchrun: this rank's part
                x = matting_input(batch)  # (B, 6, H, W)
                if cfg.channels_last:
                    x = channels_last(x)
                with (torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None
                      else contextlib.nullcontext()):
                    pred = model.forward(net, x)  # (B, 1, H, W)
                parts = loss_fn(pred.float(), batch)
                loss = parts["loss"]
                if not torch.isfinite(loss):
                    kept = (f"the last good checkpoint is kept in {last_path} (epoch {start_epoch_of(last_path)})"
                            if last_path.exists() else "no checkpoint was written")
                    raise AtldasError(f"the loss became non-finite ({float(loss.detach())}) at epoch {epoch + 1}, step "
                                      f"{k + 1}; {kept}; train again with a lower --set lr=... (now {cfg.lr:g}) or grad_clip=... "
                                      "(with --force, or another --out)")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                average_(p.grad for p in net.parameters() if p.grad is not None)  # torchrun: one update everywhere
                scaler.unscale_(opt)
                gnorm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
                if not scaler.is_enabled() and not torch.isfinite(gnorm):
                    kept = (f"the last good checkpoint is kept in {last_path} (epoch {start_epoch_of(last_path)})"
                            if last_path.exists() else "no checkpoint was written")
                    raise AtldasError(f"the gradient became non-finite at epoch {epoch + 1}, step {k + 1}; {kept}; "
                                      f"train again with a lower --set lr=... (now {cfg.lr:g}) (with --force, or another --out)")
                scaler.step(opt)
                scaler.update()
                if ema is not None:
                    ema.update(net)
                step += 1
                for key, v in parts.items():
                    key = "loss/total" if key == "loss" else f"loss/{key}"
                    sums[key] = sums.get(key, 0.0) + float(v.detach())
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(gnorm)
                bar.set_postfix(loss=f"{float(loss.detach()):.3g}", lr=f"{lr:.2g}", refresh=False)
            bar.close()
            sums = mean_values(sums)  # torchrun: each rank's losses are of its part of the batch
            train_s = time.perf_counter() - t0
            set_clamp(net, True)
            net.eval()
            metrics, n_val, previews = validate(model, eval_net, val_ds, device=cfg.device, progress=cfg.progress,
                                                keep=cfg.tb_images if writer is not None else 0)
            row: Dict[str, Any] = {"epoch": epoch, "step": step,
                                   **{key: v / cfg.steps_per_epoch for key, v in sums.items()},
                                   "lr": opt.param_groups[0]["lr"],
                                   **{f"val/{key}": v for key, v in metrics.items()},
                                   **{f"trivial/{key}": v for key, v in trivial.items()},
                                   "val/count": n_val, "params": n_params, "time/train_s": train_s,
                                   "time/epoch_s": time.perf_counter() - t0}
            improved = metrics["SAD"] < best["SAD"]
            if improved:
                best = {"epoch": epoch, **metrics}
            row["best/epoch"] = best["epoch"]
            row["best/SAD"] = best["SAD"]
            history.append(row)
            add_scalars(writer, row, epoch, skip=_NOT_SCALARS)
            if writer is not None:
                if previews:
                    writer.add_image("val/image_trimap_gt_pred", _preview_grid(previews), epoch)
                writer.flush()
            weights = eval_net.state_dict()
            state = {"format": FORMAT, "atldas": __version__, "epoch": epoch, "step": step, "model": weights,
                     "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                     "rng": rng_state(device), "best": best, "metrics": metrics, "trivial": trivial,
                     "config": dataclasses.asdict(cfg), "threads": torch.get_num_threads(), "loss_version": LOSS_VERSION,
                     "genotype": genotype.to_json() if genotype is not None else None}
            if ema is not None:
                state["ema"] = ema.state_dict()
                state["train_model"] = net.state_dict()
            rd.save(state)  # last.pt first: a stop before best.pt is written is completed from it on --resume
            if improved:
                rd.save(_best_of(state), BEST)
            log.info("epoch %d/%d: loss %.4f, val %s (trivial SAD %.4g)%s, %.1fs%s", epoch + 1, cfg.epochs,
                     row.get("loss/total", float("nan")), _fmt(metrics), trivial["SAD"],
                     " *best*" if improved else "", row["time/epoch_s"], time_left(row["time/epoch_s"], cfg.epochs - epoch - 1))
    finally:  # also on an error or Ctrl-C (the writer's thread would live on in a Python caller)
        if writer is not None:
            writer.close()
    _log_best(best, trivial, out)
    return out


def _best_of(state: Mapping[str, Any]) -> Dict[str, Any]:
    """``best.pt`` of an epoch from that epoch's ``last.pt`` state: its validated weights (the EMA's,
    with EMA) and scores."""
    return {"format": FORMAT, "atldas": __version__,
            **{k: state[k] for k in ("epoch", "model", "metrics", "trivial", "config", "genotype")}}


def _complete_best(rd: RunDir, ckpt: Mapping[str, Any]) -> None:
    """On ``--resume``: when ``last.pt``'s own epoch was the best and the run stopped before it wrote
    ``best.pt`` (written after ``last.pt``), write it from ``last.pt``, which holds the same weights."""
    best = ckpt.get("best") or {}
    if best.get("epoch") != ckpt["epoch"] or isinstance(rd, _Replica):  # torchrun: rank 0 writes it
        return
    path, epoch = rd.path / BEST, int(ckpt["epoch"])
    try:
        held: Optional[str] = f"epoch {int(load_checkpoint(path)['epoch']) + 1}" if path.is_file() else None
    except AtldasError:
        held = "an unreadable file"
    if held == f"epoch {epoch + 1}":
        return
    if held is None:  # the run stopped between the two writes
        log.info("%s: best.pt of epoch %d written from last.pt (the run stopped before it was)", rd.path, epoch + 1)
    else:
        log.warning("%s held %s, but last.pt names its own epoch %d as the best: rewritten from last.pt, which "
                    "holds that epoch's weights", path, held, epoch + 1)
    rd.save(_best_of(ckpt), BEST)


def _check_best(out: Path, best: Dict[str, Any]) -> None:
    """DataError (one line) unless a finished run's ``best.pt`` loads and holds the epoch that its
    ``last.pt`` names as the best: the run reports that file as its result."""
    if best["epoch"] < 0:
        return
    try:
        epoch = int(load_checkpoint(out / BEST)["epoch"])
    except AtldasError as exc:
        raise DataError(f"{exc}; the run finished, but its best weights (epoch {best['epoch'] + 1}) are lost: "
                        f"{out / LAST} holds the last epoch's, or retrain afresh with --force") from None
    if epoch != best["epoch"]:
        raise DataError(f"{out / BEST} holds epoch {epoch + 1}, but {out / LAST} names epoch {best['epoch'] + 1} "
                        "as the best: the file was replaced; retrain afresh with --force")


def _log_best(best: Dict[str, Any], trivial: Dict[str, float], out: Path) -> None:
    if best["epoch"] >= 0:
        ratio = best["SAD"] / trivial["SAD"] if trivial.get("SAD") else float("nan")
        log.info("best epoch %d: %s; trivial prediction: %s (SAD ratio %.2f) -> %s", best["epoch"] + 1,
                 _fmt(best), _fmt(trivial), ratio, out / BEST)


def start_epoch_of(path: Path) -> int:
    """The (1-based) epoch a retrain checkpoint holds (for messages)."""
    try:
        return int(load_checkpoint(path)["epoch"]) + 1
    except AtldasError:
        return 0


__all__ = ["retrain", "RetrainConfig", "EMA", "lr_factor", "validate", "trivial_scores", "build_model",
           "run_genotype", "default_out"]
