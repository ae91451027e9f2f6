"""The one loop that scores a matting data set: predict each image, quantise to 8 bits as the DIM code
reads mattes, score SAD/MSE/Grad/Conn, and summarise. ``atldas eval --model`` (:func:`evaluate_model`)
and retrain's validation both run it; it returns values and prints nothing.

    >>> ds = SyntheticMatting(size=64, length=4, seed=0, split="test")
    >>> predict = trivial_alpha  # a network: lambda image, trimap: predict_alpha(mm, net, image, trimap)
    >>> per_image, previews = score_dataset(ds, predict)
    >>> result = metrics.summarise(per_image)     # {"SAD", "MSE", "Grad", "Conn", "count", "per_image"}
    >>> print(metrics.format_table(result))
    DIM metrics (mean over 4 image(s); SAD, Grad, Conn divided by 1000 as in DIM; MSE shown x 1e3)
           SAD   MSE x1e3       Grad       Conn   count
    ...
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Subset

from atldas.data.datasets import AlphaMattingCom, open_dataset
from atldas.data.io import IMAGE_EXTENSIONS, alpha_to_u8, no_unknown_error, write_alpha
from atldas.data.synthetic import SyntheticMatting
from atldas.errors import ConfigError, DataError
from atldas.genotype import Genotype
from atldas.matting import metrics
from atldas.matting.inference import clamp_by_trimap, predict_alpha, check_amp
from atldas.models.base import MattingModel
from atldas.models.zoo import load_model_weights, resolve_model
from atldas.utils.atomic import (check_output, refuse_input_as_output, refuse_overwriting_non_json, sweep_stale,
                                 temp_prefix, to_stdout, write_json)
from atldas.utils.device import resolve_device, tune_backend
from atldas.utils.fold import fold_batchnorm
from atldas.utils.memory_format import channels_last
from atldas.utils.progress import progress_bar

log = logging.getLogger("atldas")

__all__ = ["sample_trimap", "sample_name", "score_dataset", "trivial_alpha", "evaluate_model", "SYNTHETIC_EVAL"]

PathLike = Union[str, os.PathLike]

#: ``predict(image (H, W, 3) float RGB, trimap (H, W) uint8) -> (H, W) float alpha, clamped by the trimap``.
Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def sample_trimap(sample: Mapping[str, Any]) -> np.ndarray:
    """(H, W) uint8 trimap {0, 128, 255} of a data set sample, from its one-hot [bg, unknown, fg]."""
    oh = np.asarray(sample["trimap_onehot"])
    return np.where(oh[2] > 0.5, 255, np.where(oh[1] > 0.5, 128, 0)).astype(np.uint8)


def sample_name(sample: Mapping[str, Any], index: int) -> str:
    """The sample's file name (``<index>.png`` for generated samples)."""
    name = str(sample.get("name", f"{index:06d}"))
    return name if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name + ".png"


def trivial_alpha(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """The trivial prediction: alpha = 0.5 in the unknown region, clamped by the trimap."""
    return clamp_by_trimap(np.full(trimap.shape, 0.5, np.float32), trimap)


def score_dataset(ds, predict: Predictor, *, skip_no_unknown: bool = False, keep: int = 0,
                  save_pred: Optional[Path] = None, progress: bool = False, desc: str = "eval", leave: bool = True
                  ) -> Tuple[Dict[str, Dict[str, float]], List[Tuple[np.ndarray, ...]]]:
    """Score ``predict`` on every sample of ``ds`` with the DIM metrics on 8-bit mattes.

    Args:
        ds: samples with ``image`` (3, H, W), ``trimap_onehot`` (3, H, W), ``alpha`` (1, H, W) and
            optionally ``name``.
        predict: the predictor (see :data:`Predictor`).
        skip_no_unknown: skip images whose trimap has no unknown pixel (their MSE is undefined) with a
            warning; otherwise they are a DataError.
        keep: return the first ``keep`` (image, trimap, gt, pred) arrays for previews.
        save_pred: write each 8-bit prediction there as ``<name>.png``, once every image is scored (they
            wait in a hidden folder inside it until then: an error leaves none behind, nor a folder it made).
        progress: a progress bar on a terminal.
        desc: the bar's label; leave: whether the bar stays on the terminal once done.

    Returns:
        ``({name: {"SAD", "MSE", "Grad", "Conn"}}, previews)``.
    """
    if save_pred is not None:  # a folder where a prediction goes: refused before the first one is written
        inner = getattr(ds, "dataset", ds)  # --limit: a Subset of the data set
        names = getattr(inner, "names", None) or []
        for name in ([names[i] for i in ds.indices] if inner is not ds and names else names):
            target = Path(save_pred) / Path(sample_name({"name": name}, 0)).with_suffix(".png")
            if target.is_dir():
                raise DataError(f"--save-pred {save_pred}: {target} is a folder where the prediction of {name} "
                                "goes; move it or choose another folder")
    made = save_pred is not None and not Path(save_pred).exists()
    staging = _staging(Path(save_pred)) if save_pred is not None else None
    try:
        per, previews, skipped = _score_all(ds, predict, skip_no_unknown=skip_no_unknown, keep=keep,
                                            staging=staging, progress=progress, desc=desc, leave=leave)
        if staging is not None:
            _publish(staging, Path(save_pred))
    except BaseException:
        if made:  # the folder this call made: gone again with its staging folder, unless another process
            shutil.rmtree(staging, ignore_errors=True)  # writes there too (its files and staging stay)
            with contextlib.suppress(OSError):
                os.rmdir(save_pred)
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if skipped:
        log.warning("%d image(s) without unknown pixels skipped", skipped)
    if not per:
        raise DataError("no image has unknown (128) pixels; nothing to score")
    return per, previews


def _staging(save_pred: Path) -> Path:
    """A hidden folder inside ``save_pred`` (made if missing): the same file system whatever
    ``save_pred`` is (a mount point, a link to another disk), so the files move out by rename."""
    save_pred.mkdir(parents=True, exist_ok=True)
    sweep_stale(save_pred)  # what a killed run left
    return Path(tempfile.mkdtemp(prefix=temp_prefix("partial"), dir=save_pred))


def _publish(staging: Path, save_pred: Path) -> None:
    """Move every file of ``staging`` into ``save_pred`` (made if missing), keeping relative paths."""
    for f in sorted(p for p in staging.rglob("*") if p.is_file()):  # same file system: a rename each
        target = save_pred / f.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, target)


def _score_all(ds, predict: Predictor, *, skip_no_unknown: bool, keep: int, staging: Optional[Path],
               progress: bool, desc: str, leave: bool = True
               ) -> Tuple[Dict[str, Dict[str, float]], List[Tuple[np.ndarray, ...]], int]:
    """The loop of :func:`score_dataset`: (per-image scores, previews, images skipped)."""
    per: Dict[str, Dict[str, float]] = {}
    previews: List[Tuple[np.ndarray, ...]] = []
    skipped, sad = 0, 0.0
    with progress_bar(range(len(ds)), progress=progress, desc=desc, unit="img", leave=leave) as bar:
        for i in bar:
            s = ds[i]
            name = sample_name(s, i)
            if "alpha" not in s:
                raise DataError(f"{name}: no ground-truth alpha to score against; run `atldas predict` for "
                                "mattes without scores")
            tri = sample_trimap(s)
            if not np.any(tri == metrics.UNKNOWN):
                if skip_no_unknown:
                    skipped += 1
                    continue
                raise no_unknown_error(name)
            image = np.asarray(s["image"]).transpose(1, 2, 0)  # (H, W, 3)
            pred = alpha_to_u8(predict(image, tri))
            gt = alpha_to_u8(np.asarray(s["alpha"])[0])
            per[name] = metrics.compute_all(pred, gt, tri)
            if staging is not None:
                write_alpha(staging / Path(name).with_suffix(".png"), pred.astype(np.float32) / 255.0)
            if len(previews) < keep:
                previews.append((np.asarray(s["image"]), tri, gt, pred))
            sad += per[name]["SAD"]
            bar.set_postfix(SAD=f"{sad / len(per):.3f}", refresh=False)  # shown with the count it is of
    return per, previews, skipped


# --------------------------------------------------------------------------- model evaluation

#: Defaults of ``data="synthetic"`` in :func:`evaluate_model` (split "test").
SYNTHETIC_EVAL = {"size": 256, "count": 50, "seed": 0}


def _open_eval_data(data: PathLike, dataset_kw: Dict) -> Tuple[object, str]:
    """(dataset, description) for ``data`` = "synthetic" or a data set folder."""
    if str(data) == "synthetic":
        dataset_kw = dict(dataset_kw)
        split = dataset_kw.pop("split", None)
        if split not in (None, "test"):
            raise ConfigError(f"--split {split}: synthetic eval data has a test split only (--split test)")
        unknown = sorted(set(dataset_kw) - set(SYNTHETIC_EVAL) - {"backgrounds"})
        if unknown:
            raise ConfigError(f"synthetic eval data does not take {', '.join(unknown)}; it takes "
                              f"{', '.join(sorted(SYNTHETIC_EVAL))}, backgrounds")
        kw = {**SYNTHETIC_EVAL, **{k: v for k, v in dataset_kw.items() if v is not None}}
        ds = SyntheticMatting(size=int(kw["size"]), length=int(kw["count"]), seed=int(kw["seed"]),
                              split="test", backgrounds=kw.get("backgrounds"))
        return ds, f"synthetic test split ({kw['count']} images, {kw['size']}px, seed {kw['seed']})"
    kw = dict(dataset_kw)
    limit, split = kw.pop("limit", None), kw.pop("split", "test")  # split "train": alphamatting.com's ground truth
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1):
        raise ConfigError(f"limit must be an integer of at least 1 (the first N images), got {limit!r}")
    try:
        ds = open_dataset(data, split=split, **kw)
    except ConfigError:
        if kw.get("backgrounds") is None:
            raise
        kw.pop("backgrounds")  # a test split with its own composites takes no backgrounds (Composition-1K)
        ds = open_dataset(data, split=split, **kw)
        log.warning("--backgrounds is not used: the test split of %s is not composed on backgrounds", data)
    if hasattr(ds, "set_epoch"):  # a composed training set: random crops, augmented, new every epoch
        raise ConfigError(f"--split {split} of {data} is a training set of random augmented crops, not images to "
                          "score; --split train reads photo layouts with ground truth (alphamatting.com, AM-2k)")
    if getattr(ds, "has_alpha", True) is False:
        hint = (" (alphamatting.com publishes the ground truth of its training set only: score it with "
                "--split train)" if isinstance(ds, AlphaMattingCom) else "")
        raise DataError(f"{data}: this data set has no ground-truth alpha to score against{hint}; run "
                        "`atldas predict` to get mattes without scores")
    if limit:
        ds = Subset(ds, range(min(int(limit), len(ds))))
    files = ds.dataset if isinstance(ds, Subset) else ds
    if hasattr(files, "check"):  # every file read once before the network runs on the first
        files.check(ds.indices if isinstance(ds, Subset) else None, need_unknown=True)
    return ds, str(data)


def _within(path: PathLike, folder: PathLike) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def evaluate_model(*, model: Union[PathLike, Genotype, MattingModel], checkpoint: Optional[PathLike] = None, data: PathLike,
                   save_pred: Optional[PathLike] = None, json_path: Optional[PathLike] = None,
                   device: str = "cpu", progress: bool = True, tile: Optional[int] = None,
                   amp: bool = False, **dataset_kw) -> Dict[str, Any]:
    """Run ``model`` over a data set and score it with SAD, MSE, Grad and Conn (DIM convention).

    Args:
        model: a MODEL (registered name, genotype file, run directory, ``closed_form``) or a
            :class:`~atldas.models.base.MattingModel`.
        checkpoint: weights for a learned model (a retrain ``best.pt``/``last.pt``, a released
            checkpoint); None only for models without parameters (``closed_form``).
        data: ``"synthetic"`` (split ``test``; ``size``, ``count``, ``seed`` in ``dataset_kw``) or a
            data set folder in any layout :func:`atldas.data.datasets.open_dataset` reads (its test
            split, or ``split="train"``; ``dataset_kw`` are its options, e.g. ``kind``, ``backgrounds``,
            ``subset``, and ``limit`` = score the first N images only).
        save_pred: folder to write the 8-bit predictions to (the exact mattes scored), named like
            the images with a ``.png`` suffix.
        json_path: write the scores there as JSON (atomically).
        device: where the network runs (``cpu``, ``cuda``).
        progress: show a progress bar (only when stderr is a terminal).
        tile: tile side for very large images (see :func:`~atldas.matting.inference.predict_alpha`).
        amp: autocast (bfloat16 on the CPU, float16 on CUDA), as ``atldas predict --amp``: not exact
            (the README gives its measured error); on a CPU without bf16 instructions it is emulated
            and many times slower.

    Returns:
        The same object as :func:`atldas.evaluate.evaluate_folders` (the eval JSON contract).

    Raises:
        AtldasError: unknown model, missing or mismatched checkpoint, unreadable data, no ground
            truth, a trimap without unknown pixels.
    """
    if to_stdout(json_path):
        pass  # nothing to check: the JSON goes to standard output
    elif json_path is not None and Path(json_path).is_dir():
        raise DataError(f"--json {json_path} is a folder; pass a file name such as {Path(json_path) / 'scores.json'}")
    folder = Path(data) if data != "synthetic" and Path(data).is_dir() else None
    if json_path is not None and not to_stdout(json_path):  # an existing file inside the data folder is an input
        inside = folder is not None and _within(json_path, folder)
        source = Path(model) if isinstance(model, (str, os.PathLike)) and Path(model).exists() else None
        model_files = sorted(source.iterdir()) if source is not None and source.is_dir() else [source]  # a run's
        refuse_input_as_output(json_path, [checkpoint, json_path if inside else None, *model_files], flag="--json",
                               follow=True)
        refuse_overwriting_non_json(json_path)
    if save_pred is not None:
        check_output(save_pred, flag="--save-pred", folder=True)  # an existing file is no folder to write into
    if save_pred is not None and folder is not None and _within(save_pred, folder):
        raise DataError(f"--save-pred {save_pred} is inside the data folder {data}; the predictions would "
                        "overwrite or mix with its images: choose a folder outside it")
    dev = resolve_device(device)
    mm = model if isinstance(model, MattingModel) else resolve_model(model)
    check_amp(mm, dev, amp)
    if checkpoint is not None and mm.meta.get("weights_inside"):
        raise ConfigError(f"{mm.name} carries its own weights; drop --checkpoint")
    net = mm.build()
    if checkpoint is not None and not mm.learned:
        log.warning("%s has no weights; --checkpoint %s is ignored", mm.name, checkpoint)
    elif checkpoint is not None:
        load_model_weights(mm, net, checkpoint)
    elif mm.needs_checkpoint:
        raise ConfigError(f"{mm.name} has learned weights: pass --checkpoint CKPT (a retrain run's "
                          "best.pt, or released weights)")
    tune_backend(dev)
    net = channels_last(net.to(dev).eval())
    fold_batchnorm(net)  # inference only: conv + BN as one conv (same alphas within 1e-5)
    ds, what = _open_eval_data(data, dataset_kw)
    if len(ds) == 0:
        raise DataError(f"{data}: no images to score")
    log.info("evaluating %s on %s: %d image(s)", mm.name, what, len(ds))
    predict = partial(predict_alpha, mm, net, device=dev, tile=tile, amp=amp)  # (image, trimap) -> alpha
    per_image, _ = score_dataset(ds, predict,
                                 save_pred=Path(save_pred) if save_pred is not None else None, progress=progress)
    if save_pred is not None:
        log.debug("wrote %d prediction(s) to %s", len(per_image), save_pred)  # the command prints it
    result = metrics.summarise(per_image)
    result["threads"] = torch.get_num_threads()  # a network's floats depend on it (eval --pred runs none)
    if json_path is not None:
        write_json(json_path, result, follow=True)
    return result
