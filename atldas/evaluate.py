"""``atldas eval``: score alpha mattes with the DIM metrics (SAD, MSE, Grad, Conn).

    atldas eval --pred PRED_DIR --alpha ALPHA_DIR --trimap TRIMAP_DIR [--json scores.json]

Folder evaluation (:func:`evaluate_folders`) scores prediction files against ground-truth alphas
and trimaps, matched by file stem:

- every prediction needs a trimap of the same stem, and every trimap a prediction;
- every prediction needs an alpha of the same stem or, as in Composition-1K (where the 20
  composites of one foreground share its alpha), ``<fg>_<k>`` (k an integer) is scored against
  ``<fg>`` when no alpha ``<fg>_<k>`` exists. Alphas no prediction uses are reported (a warning).

Values: mattes are scored as 8-bit, as the DIM code reads them. A 16-bit prediction or alpha PNG is
quantised to 8 bits by rounding (``round(a * 255)``); an RGB matte with equal channels is read as one
channel (different channels: luma, with a warning); trimaps are read with the robust near-grey
mapping of :func:`atldas.data.io.read_trimap`. The files are scored as given: a prediction that is
not clamped by its trimap (background 0, foreground 255) is scored unclamped, with a warning,
because Grad and Conn see the whole image. Nothing is ever resized.

Errors (each a one-line :class:`~atldas.errors.DataError`, exit status 2 from the CLI): a missing or
empty folder, files without a partner, different sizes, an unreadable image, a trimap without
unknown pixels (its MSE is undefined: DIM divides by the number of unknown pixels, and leaving the
image out would make the mean incomparable).

Output: a table on stdout (SAD, MSE x 1e3, Grad, Conn, count; SAD/Grad/Conn on DIM's /1000 scale)
and, with ``json_path``, the JSON of the design contract, written atomically::

    {"SAD": .., "MSE": .., "Grad": .., "Conn": .., "count": N,
     "per_image": {"name.png": {"SAD": .., "MSE": .., "Grad": .., "Conn": ..}}}

(SAD/1000, MSE unscaled, Grad/1000, Conn/1000; the top-level values are means over images.)
Model-level evaluation (:func:`evaluate_model`, ``--model/--checkpoint/--data``) runs a MODEL over a
data set with padded full-resolution inference (:func:`atldas.matting.inference.predict_alpha`: the
prediction is clamped by the trimap) and scores the 8-bit predictions with the same code, table and
JSON::

    atldas eval --model RUN_DIR --checkpoint RUN_DIR/best.pt --data /data/Composition-1K --json s.json
    atldas eval --model closed_form --data DIR --save-pred preds/    # a classical baseline, no weights
    atldas eval --model cheapmatting --checkpoint ck.pth --data synthetic   # 50 synthetic test images
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from tqdm import tqdm

from atldas.data.io import IMAGE_EXTENSIONS, alpha_to_u8, list_images, read_alpha, read_trimap
from atldas.errors import DataError
from atldas.matting import metrics
from atldas.utils.atomic import write_text_atomic

log = logging.getLogger("atldas")

PathLike = Union[str, os.PathLike]

#: How many file names an error message lists before "... and N more".
MAX_LISTED = 10

# Composition-1K test names: <fg>_<k>.png, k = 0..19 (any integer accepted), alpha <fg>.png.
_SHARED_ALPHA = re.compile(r"^(?P<fg>.+)_(?P<k>\d+)$")


# --------------------------------------------------------------------------- folder evaluation

def evaluate_folders(*, pred_dir: PathLike, alpha_dir: PathLike, trimap_dir: PathLike,
                     json_path: Optional[PathLike] = None, progress: bool = True) -> Dict:
    """Score every prediction in ``pred_dir`` with SAD, MSE, Grad and Conn (DIM convention).

    Args:
        pred_dir: folder of predicted alpha mattes (8-bit; 16-bit are rounded to 8 bits).
        alpha_dir: folder of ground-truth alpha mattes (Composition-1K's shared ``<fg>`` alphas
            are understood).
        trimap_dir: folder of trimaps (0 / 128 / 255; near-greys are mapped, with a warning).
        json_path: if given, write the scores there as JSON (atomically).
        progress: show a progress bar (only when stderr is a terminal).

    Returns:
        ``{"SAD", "MSE", "Grad", "Conn": means over images, "count": N, "per_image": {name: {...}}}``
        with SAD, Grad, Conn divided by 1000 and MSE unscaled.

    Raises:
        DataError: a missing or empty folder, unmatched files, different sizes, an unreadable
            image, or a trimap without unknown pixels.
    """
    if json_path is not None:
        _check_json_path(json_path)  # before the scoring, not after
    preds = _list_folder(pred_dir, "prediction", "--pred")
    alphas = _list_folder(alpha_dir, "alpha", "--alpha")
    trimaps = _list_folder(trimap_dir, "trimap", "--trimap")
    items = match_files(preds, alphas, trimaps, pred_dir=pred_dir, alpha_dir=alpha_dir,
                        trimap_dir=trimap_dir)
    sixteen_bit = _check_sizes(items)
    if sixteen_bit:
        log.info("%d prediction(s) are 16-bit; quantised to 8 bits by rounding, as the DIM metrics "
                 "take 8-bit mattes", sixteen_bit)
    log.info("scoring %d image(s) from %s", len(items), pred_dir)

    per_image: Dict[str, Dict[str, float]] = {}
    unclamped: List[str] = []
    sad_sum = 0.0
    show = progress and _is_tty(sys.stderr)
    with tqdm(items, desc="eval", unit="img", disable=not show, file=sys.stderr) as bar:
        for name, pred_path, alpha_path, trimap_path in bar:
            pred = alpha_to_u8(read_alpha(pred_path))
            gt = alpha_to_u8(read_alpha(alpha_path))
            trimap = read_trimap(trimap_path)
            if not np.any(trimap == metrics.UNKNOWN):
                raise DataError(f"{trimap_path}: trimap has no unknown (128) pixels, so MSE is "
                                "undefined (DIM divides by their number); fix the trimap, or remove "
                                f"{Path(name).stem} from the prediction and trimap folders")
            if np.any(pred[trimap == 0] != 0) or np.any(pred[trimap == 255] != 255):
                unclamped.append(name)
            per_image[name] = metrics.compute_all(pred, gt, trimap)
            sad_sum += per_image[name]["SAD"]
            bar.set_postfix(SAD=f"{sad_sum / len(per_image):.3f}")
    if unclamped:
        log.warning("%d of %d prediction(s) are not clamped by their trimap (%s); scored as given. "
                    "The DIM protocol sets pred = 0 where trimap = 0 and 255 where trimap = 255 "
                    "first, and Grad/Conn see the whole image", len(unclamped), len(items),
                    _names(unclamped))

    result = summarise(per_image)
    print(format_table(result, title=f"DIM metrics, {pred_dir}"))
    if json_path is not None:
        write_json(json_path, result)
        log.info("wrote %s", json_path)
    return result


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _list_folder(folder: PathLike, what: str, flag: str) -> Dict[str, Path]:
    d = Path(folder)
    if not d.exists():
        raise DataError(f"{what} folder {d} does not exist ({flag}); pass a folder of {what} images")
    if not d.is_dir():
        raise DataError(f"{what} folder {d} is not a folder ({flag}); pass a folder of {what} images")
    files = list_images(d)
    if not files:
        raise DataError(f"{what} folder {d} has no images ({flag}); expected files ending in "
                        + ", ".join(IMAGE_EXTENSIONS))
    return files


def _names(names: Sequence[str]) -> str:
    """'a.png, b.png, ... and 12 more' (at most MAX_LISTED names)."""
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def match_files(preds: Mapping[str, Path], alphas: Mapping[str, Path], trimaps: Mapping[str, Path], *,
                pred_dir: PathLike = "--pred", alpha_dir: PathLike = "--alpha",
                trimap_dir: PathLike = "--trimap") -> List[Tuple[str, Path, Path, Path]]:
    """Pair predictions, alphas and trimaps by stem (see the module docstring).

    Args:
        preds, alphas, trimaps: ``{stem: path}`` as :func:`atldas.data.io.list_images` returns.
        pred_dir, alpha_dir, trimap_dir: the folders, for messages only.

    Returns:
        ``[(name, pred_path, alpha_path, trimap_path)]`` sorted by prediction stem; name is the
        prediction's file name.

    Raises:
        DataError: some files have no partner (the message lists them).
    """
    no_trimap = [preds[s].name for s in sorted(preds) if s not in trimaps]
    no_pred = [trimaps[s].name for s in sorted(trimaps) if s not in preds]
    items, no_alpha, used = [], [], set()
    for stem in sorted(preds):
        alpha_stem = stem
        if stem not in alphas:
            m = _SHARED_ALPHA.match(stem)
            alpha_stem = m.group("fg") if m and m.group("fg") in alphas else None
        if alpha_stem is None:
            no_alpha.append(preds[stem].name)
            continue
        used.add(alpha_stem)
        if stem in trimaps:
            items.append((preds[stem].name, preds[stem], alphas[alpha_stem], trimaps[stem]))
    problems = []
    if no_trimap:
        problems.append(f"{len(no_trimap)} prediction(s) without a trimap in {trimap_dir} "
                        f"({_names(no_trimap)})")
    if no_pred:
        problems.append(f"{len(no_pred)} trimap(s) without a prediction in {pred_dir} "
                        f"({_names(no_pred)})")
    if no_alpha:
        problems.append(f"{len(no_alpha)} prediction(s) without an alpha in {alpha_dir} "
                        f"({_names(no_alpha)})")
    if problems:
        raise DataError("unmatched files: " + "; ".join(problems) + ". Files are matched by stem: "
                        "give every prediction a trimap and an alpha of the same name "
                        "(Composition-1K: alpha <fg>.png serves <fg>_<k>.png)")
    unused = [alphas[s].name for s in sorted(alphas) if s not in used]
    if unused:
        log.warning("%d alpha(s) in %s match no prediction and are not scored (%s)",
                    len(unused), alpha_dir, _names(unused))
    shared = sum(1 for _, p, a, _ in items if p.stem != a.stem)
    if shared:
        log.info("%d prediction(s) scored against a shared alpha <fg> (Composition-1K <fg>_<k> naming)",
                 shared)
    return items


def _header(path: Path) -> Tuple[Tuple[int, int], str]:
    """(width, height) and PIL mode of an image file, from its header only."""
    try:
        with Image.open(path) as img:
            return img.size, img.mode
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc}); "
                        "re-save it as PNG or JPEG") from None


def _check_sizes(items: Sequence[Tuple[str, Path, Path, Path]]) -> int:
    """Check before scoring that each prediction, alpha and trimap have one size (headers only).

    Returns the number of 16-bit predictions. Raises DataError naming the first mismatch.
    """
    mismatched, sixteen_bit = [], 0
    for name, pred_path, alpha_path, trimap_path in items:
        (pw, ph), mode = _header(pred_path)
        sixteen_bit += mode.startswith("I")
        for what, other in (("trimap", trimap_path), ("alpha", alpha_path)):
            (ow, oh), _ = _header(other)
            if (ow, oh) != (pw, ph):
                mismatched.append(f"{name}: prediction {pred_path} is {pw}x{ph} but its {what} "
                                  f"{other} is {ow}x{oh}")
                break
    if mismatched:
        more = f" (and {len(mismatched) - 1} more image(s))" if len(mismatched) > 1 else ""
        raise DataError(f"size mismatch for {mismatched[0]} (width x height){more}; nothing is "
                        "resized: predict at the size of the trimap and alpha")
    return sixteen_bit


# --------------------------------------------------------------------------- shared reporting

def summarise(per_image: Mapping[str, Mapping[str, float]]) -> Dict:
    """The eval JSON object from per-image scores: means over images, count, per_image.

    Args:
        per_image: ``{name: {"SAD", "MSE", "Grad", "Conn"}}`` in the DIM convention.
    """
    count = len(per_image)
    out: Dict = {}
    for key in metrics.METRIC_NAMES:
        out[key] = math.fsum(s[key] for s in per_image.values()) / count if count else float("nan")
    out["count"] = count
    out["per_image"] = {name: {k: float(s[k]) for k in metrics.METRIC_NAMES}
                        for name, s in per_image.items()}
    return out


def format_table(result: Mapping, title: str = "DIM metrics") -> str:
    """A small text table of :func:`summarise`'s means: SAD, MSE x 1e3, Grad, Conn (4 significant
    digits), count."""
    head = (f"{title} (mean over {result['count']} image(s); SAD, Grad, Conn divided by 1000 as in "
            "DIM; MSE shown x 1e3)")
    cols = f"{'SAD':>10} {'MSE x1e3':>10} {'Grad':>10} {'Conn':>10} {'count':>7}"
    vals = (f"{result['SAD']:>10.4g} {result['MSE'] * 1e3:>10.4g} {result['Grad']:>10.4g} "
            f"{result['Conn']:>10.4g} {result['count']:>7d}")
    return "\n".join((head, cols, vals))


def _check_json_path(path: PathLike) -> None:
    p = Path(path)
    if p.is_dir():
        raise DataError(f"--json {p} is a folder; pass a file name such as {p / 'scores.json'}")


def write_json(path: PathLike, result: Mapping) -> None:
    """Write ``result`` as JSON atomically (temporary file in the same folder, then os.replace)."""
    p = Path(path)
    _check_json_path(p)
    try:
        write_text_atomic(p, json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        raise DataError(f"cannot write {p}: {exc.strerror or exc}; choose a writable path for --json") from None


# --------------------------------------------------------------------------- model evaluation

#: Defaults of ``data="synthetic"`` in :func:`evaluate_model` (split "test").
SYNTHETIC_EVAL = {"size": 256, "count": 50, "seed": 0}


def sample_trimap(sample: Mapping) -> np.ndarray:
    """(H, W) uint8 trimap {0, 128, 255} of a data set sample, from its one-hot [bg, unknown, fg]."""
    oh = np.asarray(sample["trimap_onehot"])
    return np.where(oh[2] > 0.5, 255, np.where(oh[1] > 0.5, 128, 0)).astype(np.uint8)


def _resolve_model(model):
    """A :class:`~atldas.models.registry.MattingModel` as is, or resolved from a MODEL spec."""
    from atldas.models.registry import MattingModel, resolve_model

    return model if isinstance(model, MattingModel) else resolve_model(model)


def _open_eval_data(data: PathLike, dataset_kw: Dict) -> Tuple[object, str]:
    """(dataset, description) for ``data`` = "synthetic" or a data set folder."""
    if str(data) == "synthetic":
        from atldas.data.synthetic import SyntheticMatting

        unknown = sorted(set(dataset_kw) - set(SYNTHETIC_EVAL) - {"backgrounds"})
        if unknown:
            from atldas.errors import ConfigError

            raise ConfigError(f"synthetic eval data does not take {', '.join(unknown)}; it takes "
                              f"{', '.join(sorted(SYNTHETIC_EVAL))}, backgrounds")
        kw = {**SYNTHETIC_EVAL, **{k: v for k, v in dataset_kw.items() if v is not None}}
        ds = SyntheticMatting(size=int(kw["size"]), length=int(kw["count"]), seed=int(kw["seed"]),
                              split="test", backgrounds=kw.get("backgrounds"))
        return ds, f"synthetic test split ({kw['count']} images, {kw['size']}px, seed {kw['seed']})"
    from atldas.data.datasets import open_dataset
    from atldas.errors import ConfigError

    kw = dict(dataset_kw)
    limit = kw.pop("limit", None)
    try:
        ds = open_dataset(data, split="test", **kw)
    except ConfigError:
        if kw.get("backgrounds") is None:
            raise
        kw.pop("backgrounds")  # a test split with its own composites takes no backgrounds (Composition-1K)
        ds = open_dataset(data, split="test", **kw)
    if getattr(ds, "has_alpha", True) is False:
        raise DataError(f"{data}: this data set has no ground-truth alpha to score against; run "
                        "`atldas predict` to get mattes without scores")
    if limit:
        from torch.utils.data import Subset

        ds = Subset(ds, range(min(int(limit), len(ds))))
    return ds, str(data)


def evaluate_model(*, model, checkpoint: Optional[PathLike], data: PathLike,
                   save_pred: Optional[PathLike] = None, json_path: Optional[PathLike] = None,
                   device: str = "cpu", progress: bool = True, tile: Optional[int] = None,
                   **dataset_kw) -> Dict:
    """Run ``model`` over a data set and score it with SAD, MSE, Grad and Conn (DIM convention).

    Args:
        model: a MODEL (registered name, genotype file, run directory, ``closed_form``) or a
            :class:`~atldas.models.registry.MattingModel`.
        checkpoint: weights for a learned model (a retrain ``best.pt``/``last.pt``, a released
            checkpoint); None only for models without parameters (``closed_form``).
        data: ``"synthetic"`` (split ``test``; ``size``, ``count``, ``seed`` in ``dataset_kw``) or a
            data set folder in any layout :func:`atldas.data.datasets.open_dataset` reads (its test
            split; ``dataset_kw`` are its options, e.g. ``kind``, ``backgrounds``, ``subset``, and
            ``limit`` = score the first N images only).
        save_pred: folder to write the 8-bit predictions to (the exact mattes scored), named like
            the images with a ``.png`` suffix.
        json_path: write the scores there as JSON (atomically).
        device: where the network runs (``cpu``, ``cuda``).
        progress: show a progress bar (only when stderr is a terminal).
        tile: tile side for very large images (see :func:`~atldas.matting.inference.predict_alpha`).

    Returns:
        The same object as :func:`evaluate_folders`: means, ``count`` and ``per_image``.

    Raises:
        AtldasError: unknown model, missing or mismatched checkpoint, unreadable data, no ground
            truth, a trimap without unknown pixels.
    """
    import torch

    from atldas.errors import ConfigError
    from atldas.matting.inference import predict_alpha

    if json_path is not None:
        _check_json_path(json_path)
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    from atldas.utils.weights import load_weights

    mm = _resolve_model(model)
    net = mm.build()
    if checkpoint is not None and not mm.learned:
        log.warning("%s has no weights; --checkpoint %s is ignored", mm.name, checkpoint)
    elif checkpoint is not None:
        load_weights(net, checkpoint, name=mm.name)
    elif mm.learned:
        raise ConfigError(f"{mm.name} has learned weights: pass --checkpoint CKPT (a retrain run's "
                          "best.pt, or released weights)")
    from atldas.utils.memory_format import channels_last

    net = channels_last(net.to(device).eval())
    ds, what = _open_eval_data(data, dataset_kw)
    if len(ds) == 0:
        raise DataError(f"{data}: no images to score")
    out_dir = Path(save_pred) if save_pred is not None else None
    log.info("evaluating %s on %s: %d image(s)", mm.name, what, len(ds))

    per_image: Dict[str, Dict[str, float]] = {}
    sad_sum = 0.0
    show = progress and _is_tty(sys.stderr)
    with tqdm(range(len(ds)), desc="eval", unit="img", disable=not show, file=sys.stderr) as bar:
        for i in bar:
            s = ds[i]
            name = str(s.get("name", f"{i:06d}"))
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                name += ".png"
            if "alpha" not in s:
                raise DataError(f"{name}: no ground-truth alpha in {data}; run `atldas predict` for "
                                "mattes without scores")
            tri = sample_trimap(s)
            if not np.any(tri == metrics.UNKNOWN):
                raise DataError(f"{name}: trimap has no unknown (128) pixels, so MSE is undefined (DIM "
                                "divides by their number); fix the trimap or leave the image out")
            image = np.asarray(s["image"]).transpose(1, 2, 0)  # (H, W, 3)
            pred = alpha_to_u8(predict_alpha(mm, net, image, tri, device=device, tile=tile))
            gt = alpha_to_u8(np.asarray(s["alpha"])[0])
            per_image[name] = metrics.compute_all(pred, gt, tri)
            if out_dir is not None:
                from atldas.data.io import write_alpha

                write_alpha(out_dir / Path(name).with_suffix(".png"), pred.astype(np.float32) / 255.0)
            sad_sum += per_image[name]["SAD"]
            bar.set_postfix(SAD=f"{sad_sum / len(per_image):.3f}")
    result = summarise(per_image)
    print(format_table(result, title=f"DIM metrics, {mm.name} on {what}"))
    if out_dir is not None:
        log.info("wrote %d prediction(s) to %s", len(per_image), out_dir)
    if json_path is not None:
        write_json(json_path, result)
        log.info("wrote %s", json_path)
    return result
