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
empty folder, files without a partner, different sizes, an unreadable image, a float image with NaN or
infinite pixels, a trimap that is not one (a photo or noise: see :func:`atldas.data.io.read_trimap`), a trimap without
unknown pixels (its MSE is undefined: DIM divides by the number of unknown pixels, and leaving the
image out would make the mean incomparable).

Output: the scores (the CLI prints :func:`atldas.matting.metrics.format_table`: SAD, MSE x 1e3, Grad,
Conn, count; SAD/Grad/Conn on DIM's /1000 scale) and, with ``json_path``, the JSON of the design
contract, written atomically::

    {"SAD": .., "MSE": .., "Grad": .., "Conn": .., "count": N,
     "per_image": {"name.png": {"SAD": .., "MSE": .., "Grad": .., "Conn": ..}}}

(SAD/1000, MSE unscaled, Grad/1000, Conn/1000; the top-level values are means over images.)
This module scores folders and imports no torch, so scoring is quick to start. Model-level evaluation
(``--model/--checkpoint/--data``, :func:`atldas.matting.scoring.evaluate_model`) runs a MODEL over a
data set with padded full-resolution inference (:func:`atldas.matting.inference.predict_alpha`: the
prediction is clamped by the trimap) and scores the 8-bit predictions with the same loop retrain's
validation runs (:func:`atldas.matting.scoring.score_dataset`), table and JSON::

    atldas eval --model RUN_DIR --checkpoint RUN_DIR/best.pt --data /data/Composition-1K --json s.json
    atldas eval --model closed_form --data DIR --save-pred preds/    # a classical baseline, no weights
    atldas eval --model cheapmatting --checkpoint ck.pth --data synthetic   # 50 synthetic test images
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from atldas.data.io import (IMAGE_EXTENSIONS, alpha_to_u8, collected_file_warnings, image_info, list_images, listed,
                            pair_by_stem, read_alpha, read_trimap, warn_file)
from atldas.errors import DataError
from atldas.matting import metrics
from atldas.matting.metrics import summarise
from atldas.utils.atomic import refuse_input_as_output, refuse_overwriting_non_json, to_stdout, write_json
from atldas.utils.progress import progress_bar

log = logging.getLogger("atldas")

__all__ = ["evaluate_folders", "match_files"]

PathLike = Union[str, os.PathLike]

# Composition-1K test names: <fg>_<k>.png, k = 0..19 (any integer accepted), alpha <fg>.png.
_SHARED_ALPHA = re.compile(r"^(?P<fg>.+)_(?P<k>\d+)$")


# --------------------------------------------------------------------------- folder evaluation

def _score(item: Tuple[str, Path, Path, Path]) -> Tuple[str, Optional[Dict[str, float]], bool, List[tuple], str]:
    """(name, DIM scores, whether the prediction is clamped by its trimap, the files' warnings for the
    parent to give (:func:`~atldas.data.io.collected_file_warnings`), the DataError's text or '') of
    one matched item: a refused file's warnings come with its error (they may explain it)."""
    name, pred_path, alpha_path, trimap_path = item
    with collected_file_warnings() as notes:
        try:
            pred = alpha_to_u8(read_alpha(pred_path))
            gt = alpha_to_u8(read_alpha(alpha_path))
            trimap = read_trimap(trimap_path, warn_no_unknown=False)  # refused below with the reason
        except DataError as exc:
            return name, None, False, notes, str(exc)
    if not np.any(trimap == metrics.UNKNOWN):
        return name, None, False, notes, (f"{trimap_path}: trimap has no unknown (128) pixels, so MSE is undefined "
                                          "(DIM divides by their number); fix the trimap, or remove "
                                          f"{Path(name).stem} from the prediction and trimap folders")
    clamped = not (np.any(pred[trimap == 0] != 0) or np.any(pred[trimap == 255] != 255))
    return name, metrics.compute_all(pred, gt, trimap), clamped, notes, ""


def _scored(items: Sequence[Tuple[str, Path, Path, Path]], workers: int):
    """:func:`_score` of every item, in order; over ``workers`` processes (forked where the OS can)."""
    if workers <= 1:
        yield from map(_score, items)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield from pool.map(_score, items)


def default_workers(n_items: int) -> int:
    """Processes for scoring ``n_items`` images: one per core this process may run on, one for fewer
    than 4 images. Unlike torch's OpenMP threads (``atldas.cli.thread_policy``), these processes never
    wait for each other, so a busy core costs them time-sharing, not a collapse; following the load
    average instead gave one worker right after another process had ended (0.54-0.59 of mmeval's time
    against 0.37-0.41 with two, experiments/bench_eval_mmeval.py)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, n_items)) if n_items >= 4 else 1


def evaluate_folders(*, pred_dir: PathLike, alpha_dir: PathLike, trimap_dir: PathLike,
                     json_path: Optional[PathLike] = None, progress: bool = True,
                     workers: Optional[int] = None) -> Dict[str, Any]:
    """Score every prediction in ``pred_dir`` with SAD, MSE, Grad and Conn (DIM convention).

    Args:
        pred_dir: folder of predicted alpha mattes (8-bit; 16-bit are rounded to 8 bits).
        alpha_dir: folder of ground-truth alpha mattes (Composition-1K's shared ``<fg>`` alphas
            are understood).
        trimap_dir: folder of trimaps (0 / 128 / 255; near-greys are mapped, with a warning).
        json_path: if given, write the scores there as JSON (atomically).
        progress: show a progress bar (only when stderr is a terminal).
        workers: processes that decode and score images (default :func:`default_workers`); the
            scores do not depend on it.

    Returns:
        ``{"SAD", "MSE", "Grad", "Conn": means over images, "count": N, "per_image": {name: {...}}}``
        with SAD, Grad, Conn divided by 1000 and MSE unscaled.

    Raises:
        DataError: a missing or empty folder, unmatched files, different sizes, an unreadable
            image, or a trimap without unknown pixels.
    """
    if json_path is not None and not to_stdout(json_path):
        _check_json_path(json_path)  # before the scoring, not after
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise DataError(f"--workers must be at least 1, got {workers}")
    for other, flag in ((alpha_dir, "--alpha"), (trimap_dir, "--trimap")):  # scored SAD 0 against itself
        if Path(pred_dir).resolve() == Path(other).resolve():
            raise DataError(f"--pred {pred_dir} is the {flag} folder: the predictions would be scored against "
                            "themselves; pass the folder that atldas predict (or eval --save-pred) wrote")
    preds = _list_folder(pred_dir, "prediction", "--pred")
    alphas = _list_folder(alpha_dir, "alpha", "--alpha")
    trimaps = _list_folder(trimap_dir, "trimap", "--trimap")
    items = match_files(preds, alphas, trimaps, pred_dir=pred_dir, alpha_dir=alpha_dir,
                        trimap_dir=trimap_dir)
    if json_path is not None:
        refuse_input_as_output(json_path, [f for item in items for f in item[1:]], flag="--json", follow=True)
        refuse_overwriting_non_json(json_path)  # after the input check: naming an input says more
    sixteen_bit = _check_sizes(items)
    if sixteen_bit:
        log.info("%d prediction(s) are 16-bit; quantised to 8 bits by rounding, as the DIM metrics "
                 "take 8-bit mattes", sixteen_bit)
    log.info("scoring %d image(s) from %s", len(items), pred_dir)

    per_image: Dict[str, Dict[str, float]] = {}
    unclamped: List[str] = []
    sad_sum = 0.0
    n_workers = default_workers(len(items)) if workers is None else min(int(workers), len(items))
    with progress_bar(_scored(items, n_workers), progress=progress, total=len(items), desc="eval", unit="img") as bar:
        for name, scores, clamped, notes, error in bar:
            for note in notes:  # the workers' file warnings, counted here once for all of them
                warn_file(*note)
            if error:
                raise DataError(error)
            if not clamped:
                unclamped.append(name)
            per_image[name] = scores
            sad_sum += scores["SAD"]
            bar.set_postfix(SAD=f"{sad_sum / len(per_image):.3f}", refresh=False)  # shown with the count it is of
    if unclamped:
        log.warning("%d of %d prediction(s) are not clamped by their trimap (%s); scored as given. "
                    "The DIM protocol sets pred = 0 where trimap = 0 and 255 where trimap = 255 "
                    "first, and Grad/Conn see the whole image", len(unclamped), len(items),
                    listed(unclamped))
    result = summarise(per_image)
    if json_path is not None:
        write_json(json_path, result, follow=True)
    return result


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


def _shared_alpha(stem: str, alphas: Mapping[str, Path]) -> Optional[str]:
    m = _SHARED_ALPHA.match(stem)
    return m.group("fg") if m and m.group("fg") in alphas else None


def match_files(preds: Mapping[str, Path], alphas: Mapping[str, Path], trimaps: Mapping[str, Path], *,
                pred_dir: PathLike = "--pred", alpha_dir: PathLike = "--alpha",
                trimap_dir: PathLike = "--trimap") -> List[Tuple[str, Path, Path, Path]]:
    """Pair predictions, alphas and trimaps by stem (see the module docstring).

    Returns:
        ``[(name, pred_path, alpha_path, trimap_path)]`` sorted by prediction stem; name is the
        prediction's file name.

    Raises:
        DataError: some files have no partner (the message lists them).
    """
    p = pair_by_stem(preds, {"trimap": trimaps, "alpha": alphas}, fallback={"alpha": _shared_alpha})
    no_trimap = [f.name for f in p.missing.get("trimap", [])]
    no_pred = [f.name for f in p.unused.get("trimap", [])]
    no_alpha = [f.name for f in p.missing.get("alpha", [])]
    problems = []
    if no_trimap:
        problems.append(f"{len(no_trimap)} prediction(s) without a trimap in {trimap_dir} ({listed(no_trimap)})")
    if no_pred:
        problems.append(f"{len(no_pred)} trimap(s) without a prediction in {pred_dir} ({listed(no_pred)})")
    if no_alpha:
        problems.append(f"{len(no_alpha)} prediction(s) without an alpha in {alpha_dir} ({listed(no_alpha)})")
    if problems:
        raise DataError("unmatched files: " + "; ".join(problems) + ". Files are matched by stem: "
                        "give every prediction a trimap and an alpha of the same name "
                        "(Composition-1K: alpha <fg>.png serves <fg>_<k>.png)")
    unused = [f.name for f in p.unused.get("alpha", [])]
    if unused:
        log.warning("%d alpha(s) in %s match no prediction and are not scored (%s)", len(unused), alpha_dir,
                    listed(unused))
    items = [(pred.name, pred, found["alpha"], found["trimap"]) for _, pred, found in p.items]
    shared = sum(1 for _, pp, a, _ in items if pp.stem != a.stem)
    if shared:
        log.info("%d prediction(s) scored against a shared alpha <fg> (Composition-1K <fg>_<k> naming)", shared)
    return items


def _check_sizes(items: Sequence[Tuple[str, Path, Path, Path]]) -> int:
    """Check before scoring that each prediction, alpha and trimap have one size (headers only).

    Returns the number of 16-bit predictions. Raises DataError naming the first mismatch.
    """
    mismatched, sixteen_bit = [], 0
    for name, pred_path, alpha_path, trimap_path in items:
        (pw, ph), mode = image_info(pred_path)
        sixteen_bit += mode.startswith("I") or mode.endswith(";16")
        for what, other in (("trimap", trimap_path), ("alpha", alpha_path)):
            (ow, oh), _ = image_info(other)
            if (ow, oh) != (pw, ph):
                mismatched.append(f"{name}: prediction {pred_path} is {pw}x{ph} but its {what} "
                                  f"{other} is {ow}x{oh}")
                break
    if mismatched:
        more = f" (and {len(mismatched) - 1} more image(s))" if len(mismatched) > 1 else ""
        raise DataError(f"size mismatch for {mismatched[0]} (width x height){more}; nothing is "
                        "resized: predict at the size of the trimap and alpha")
    return sixteen_bit


def _check_json_path(path: PathLike) -> None:
    p = Path(path)
    if p.is_dir():
        raise DataError(f"--json {p} is a folder; pass a file name such as {p / 'scores.json'}")
