"""``atldas predict``: alpha mattes (and RGBA cut-outs) for a user's own images and trimaps.

    atldas predict --model cheapmatting --checkpoint cheapmatting.pth --image photos/ --trimap trimaps/ --out mattes/
    atldas predict --model runs/retrain-x --checkpoint runs/retrain-x/best.pt --image a.jpg --trimap a.png \\
                   --out out/ --bits 16 --tile 1024

Inputs: ``--image`` and ``--trimap`` are two files, or two folders matched by file stem (every image
needs a trimap; extra trimaps are ignored with a warning), or an image file and a trimap folder. Any
size: the network input is padded to a multiple of 32 and the prediction cropped back
(:func:`atldas.matting.inference.predict_alpha`); ``--tile N`` bounds memory on large images.

Outputs, per image ``<stem>``: ``<out>/<stem>.png``, the alpha matte (8-bit greyscale PNG, 16-bit with
``bits=16``), clamped by the trimap; and, unless ``cutout=False``, ``<out>/rgba/<stem>.png``, an 8-bit
RGBA cut-out: pymatting's estimated foreground colours with the matte as the alpha channel.

Everything is checked before anything is written: the model, the checkpoint (it must fit the network:
see :func:`atldas.utils.weights.load_weights`), the output folder, the pairing, every image/trimap
pair's size (read from the file headers, within ``--max-pixels``), and the estimated memory of the
largest image (:mod:`atldas.matting.footprint`) against the available memory. A problem is one :class:`~atldas.errors.AtldasError` line.

Weights: ``checkpoint`` is required for a learned network (without it the output would be noise from
random weights). A non-learned MODEL (a classical method such as closed-form matting) declares
``meta={"learned": False}`` in its :class:`~atldas.models.base.MattingModel` and runs without one
(``MattingModel.learned``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from atldas.data.io import (IMAGE_EXTENSIONS, check_image, image_size, list_images, listed, pair_by_stem, read_rgb,
                            read_trimap, write_alpha, write_rgb)
from atldas.errors import ConfigError, DataError
from atldas.matting.footprint import predict_bytes
from atldas.matting.inference import (check_amp, check_tiling, estimate_foreground, image_wide_layers,
                                      network_side, predict_alpha)
from atldas.models.base import MattingModel
from atldas.models.zoo import load_model_weights, resolve_model
from atldas.utils.device import resolve_device, tune_backend
from atldas.utils.fold import fold_batchnorm
from atldas.utils.atomic import check_output
from atldas.utils.memory import require
from atldas.utils.memory_format import channels_last
from atldas.utils.progress import progress_bar

log = logging.getLogger("atldas")

__all__ = ["predict", "match_inputs", "check_sizes"]

PathLike = Union[str, os.PathLike]
#: How many file names a one-line error lists.
SHOWN = 5
#: Subfolder of the cut-outs (beside the alphas they would break ``atldas eval --pred OUT``).
CUTOUT_DIR = "rgba"


def _listed(items: List[str]) -> str:
    return ", ".join(items[:SHOWN]) + (f", ... and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def match_inputs(image: PathLike, trimap: PathLike) -> List[Tuple[str, Path, Path]]:
    """``(stem, image file, trimap file)`` for every image, sorted by stem.

    Raises:
        DataError: a missing path, an empty folder, images without a trimap of the same stem
            (all listed on one line), or an image file that is also its own trimap.
        ConfigError: an image folder with a single trimap file.
    """
    pairs = _match_inputs(image, trimap)
    same = [ip.name for _, ip, tp in pairs if ip.resolve() == tp.resolve()]
    if same:
        raise DataError(f"--image and --trimap give the same file for {len(same)} image(s) ({_listed(same)}): each "
                        "would be its own trimap; pass trimaps (0 = background, 128 = unknown, 255 = foreground)")
    return pairs


def _match_inputs(image: PathLike, trimap: PathLike) -> List[Tuple[str, Path, Path]]:
    img, tri = Path(image), Path(trimap)
    for what, p in (("--image", img), ("--trimap", tri)):
        if not p.exists():
            raise DataError(f"{p}: no such file or folder ({what})")
    if img.is_file():
        if tri.is_file():
            return [(img.stem, img, tri)]
        trimaps = list_images(tri)
        if img.stem not in trimaps:
            raise DataError(f"{tri}: no trimap named {img.stem}.* for the image {img}; "
                            "give the trimap the image's file stem")
        return [(img.stem, img, trimaps[img.stem])]
    if tri.is_file():
        raise ConfigError(f"--image {img} is a folder but --trimap {tri} is a file; give a folder of trimaps "
                          "named like the images")
    images = list_images(img)
    if not images:
        raise DataError(f"{img}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    pairing = pair_by_stem(images, {"trimap": list_images(tri)})
    unmatched = [p.name for p in pairing.missing.get("trimap", [])]
    if unmatched:
        raise DataError(f"{len(unmatched)} image(s) in {img} have no trimap with the same file stem in {tri}: "
                        f"{_listed(unmatched)}; add the trimaps (e.g. {tri / (Path(unmatched[0]).stem + '.png')})")
    extra = [p.name for p in pairing.unused.get("trimap", [])]
    if extra:
        log.warning("%s: %d trimap(s) without an image, ignored: %s", tri, len(extra), _listed(extra))
    return [(stem, path, found["trimap"]) for stem, path, found in pairing.items]


def check_sizes(pairs: List[Tuple[str, Path, Path]]) -> Dict[str, Tuple[int, int]]:
    """Every image and its trimap have the same size (from the headers, within ``--max-pixels``); one
    DataError line otherwise. Returns stem -> (width, height)."""
    bad, sizes = [], {}
    for stem, ip, tp in pairs:
        (iw, ih), (tw, th) = image_size(ip), image_size(tp)
        sizes[stem] = (iw, ih)
        if (iw, ih) != (tw, th):
            bad.append(f"image {ip} is {iw}x{ih} but trimap {tp} is {tw}x{th}")
    if bad:
        n = len(bad)
        raise DataError(f"{'; '.join(bad[:SHOWN])}{f'; ... and {n - SHOWN} more' if n > SHOWN else ''} "
                        "(width x height): give each image a trimap of the same size (atldas never resizes "
                        "them); nothing was written")
    return sizes


def check_memory(mm: MattingModel, net: torch.nn.Module, sizes: Dict[str, Tuple[int, int]], *,
                 tile: Optional[int], cutout: bool, max_size: Optional[int] = None) -> None:
    """Refuse (one line) when the largest image's estimated footprint exceeds the available memory."""
    if not sizes:
        return
    stem, (w, h) = max(sizes.items(), key=lambda kv: kv[1][0] * kv[1][1])
    need = predict_bytes(mm, net, h, w, tile=tile, cutout=cutout, max_size=max_size)
    hint = ("a smaller --tile" if tile else "--max-size 2048 (predicts on a scaled copy) or --tile 1024 (approximate "
            "for networks with image-wide context: see `atldas predict --help`)") + \
        (", --no-cutout" if cutout else "") + ", or a smaller image"
    require(need, what=f"predict of {stem} ({w}x{h}) with {mm.name}", hint=f"try {hint}")


def _outputs(pairs: List[Tuple[str, Path, Path]], out: Path, cutout: bool) -> Dict[str, Tuple[Path, Optional[Path]]]:
    """Output paths per stem; refuses to overwrite an input or to write two outputs to one file."""
    outputs = {s: (out / f"{s}.png", out / CUTOUT_DIR / f"{s}.png" if cutout else None) for s, _, _ in pairs}
    inputs = {p.resolve() for _, ip, tp in pairs for p in (ip, tp)}
    beside = {p.parent for p in inputs}
    if out.resolve() in beside:  # a.png beside a.jpg: the next predict of that folder met two files of stem a
        raise ConfigError(f"--out {out} is the folder of the input images or trimaps; the mattes would mix with "
                          "them: choose another output folder")
    if cutout and (out / CUTOUT_DIR).exists() and not (out / CUTOUT_DIR).is_dir():
        raise ConfigError(f"--out {out}: {out / CUTOUT_DIR} is a file where the cut-outs' folder goes; move it, "
                          "choose another output folder or pass --no-cutout")
    seen: Dict[Path, str] = {}
    for stem, paths in outputs.items():
        for p in paths:
            if p is None:
                continue
            if p.is_dir():  # refused now, not after the outputs before it were written
                raise ConfigError(f"--out {out}: {p} is a folder where {stem}'s output goes; move it or choose "
                                  "another output folder")
            r = p.resolve()
            if r in inputs:
                raise ConfigError(f"--out {out}: writing {p.name} would overwrite an input file; "
                                  "choose another output folder")
            if r in seen:
                raise ConfigError(f"--out {out}: the outputs of {seen[r]!r} and {stem!r} would both be {p.name}; "
                                  "rename one input")
            seen[r] = stem
    return outputs


def predict(*, model: str, checkpoint: Optional[PathLike] = None, image: PathLike, trimap: PathLike, out: PathLike,
            bits: int = 8, cutout: bool = True, device: Union[str, torch.device] = "cpu",
            tile: Optional[int] = None, overlap: Optional[int] = None, amp: bool = False, progress: bool = True,
            max_size: Optional[int] = None) -> List[Path]:
    """Predict alpha mattes (and cut-outs) for image/trimap files; see the module docstring.

    Args:
        model: a MODEL (registered name, genotype file or run directory).
        checkpoint: its weights (required unless the model is not learned).
        image: an image file or a folder of images.
        trimap: a trimap file or a folder of trimaps (matched by file stem).
        out: output folder (created).
        bits: 8 or 16, the bit depth of the alpha PNGs.
        cutout: also write ``rgba/<stem>.png``.
        device: ``cpu`` or ``cuda``.
        tile: tile side for large images (multiple of 32), or None.
        overlap: overlap of neighbouring tiles in pixels (None: 64, at most ``tile`` - 32); only with ``tile``.
        amp: autocast (bfloat16 on the CPU, float16 on CUDA).
        progress: a bar on a terminal, a log line every 30 s elsewhere (:func:`atldas.utils.progress.progress_bar`).
        max_size: predict images whose longer side exceeds it on a scaled copy
            (:func:`~atldas.matting.inference.predict_alpha`); None: full resolution.

    Returns:
        The files written, in order (alpha, then cut-out, per image).

    Raises:
        AtldasError: any problem with the inputs, found before anything is written (one line).
    """
    if bits not in (8, 16):
        raise ConfigError(f"--bits must be 8 or 16, got {bits}")
    if tile is None and overlap is not None:
        raise ConfigError(f"--overlap {overlap} applies to tiled prediction only: add --tile N, or drop --overlap")
    if overlap is None:  # 64, or what the smallest tiles (--tile 64) allow
        overlap = 64 if tile is None else min(64, max(0, int(tile) - 32))
    if tile is not None:
        check_tiling(int(tile), int(overlap))
    if max_size is not None and not 64 <= max_size <= 65536:
        raise ConfigError(f"--max-size must be in 64..65536 pixels, got {max_size}")
    dev = resolve_device(device)
    mm = resolve_model(model)
    check_amp(mm, dev, amp)
    if checkpoint is not None and mm.meta.get("weights_inside"):
        raise ConfigError(f"{model} carries its own weights; drop --checkpoint")
    if checkpoint is None and mm.needs_checkpoint:
        raise ConfigError(f"--checkpoint is required for {model} (a learned network: with random weights its "
                          "mattes would be noise); pass the .pt/.pth file trained for this MODEL")
    pairs = match_inputs(image, trimap)
    sizes = check_sizes(pairs)
    # upper bound of what is written: uncompressed PNG rows (alpha at --bits, RGBA cut-out at 8 bits)
    need = sum(w * h * (bits // 8 + (4 if cutout else 0)) + 1024 for w, h in sizes.values())
    out_dir = check_output(out, flag="--out", folder=True, need_bytes=need)
    outputs = _outputs(pairs, out_dir, cutout)

    net = mm.build()
    smallest = getattr(net, "min_side", None)  # an exported ONNX graph runs sides of at least this
    if tile is not None and smallest is not None and int(tile) < smallest:
        raise ConfigError(f"--tile {tile}: {model} runs inputs of at least {smallest} x {smallest} pixels; use "
                          f"--tile {-(-smallest // 32) * 32} or more")
    if smallest is not None:  # before anything is written (the network refused them one by one, mid-way)
        small = [f"{ip} ({sizes[stem][0]}x{sizes[stem][1]})" for stem, ip, _ in pairs
                 if network_side(*sizes[stem], tile=tile, max_size=max_size) < smallest]
        if small:
            raise DataError(f"{model} runs inputs of at least {smallest} x {smallest} pixels (after padding to a "
                            f"multiple of 32), and {len(small)} image(s) are smaller: {listed(small)}; run them "
                            "with the torch network (--model MODEL --checkpoint CKPT); nothing was written")
    check_memory(mm, net, sizes, tile=tile, cutout=cutout, max_size=max_size)
    wide = image_wide_layers(net) if tile else []
    if wide and any(min(max(w, h), max_size or max(w, h)) > tile for w, h in sizes.values()):
        log.warning("--tile %d: %s has layers with image-wide context (%s), so each tile sees only its own "
                    "statistics: the matte differs from the untiled one and may show seams near tile borders "
                    "(a larger --tile and --overlap bring it closer); drop --tile where memory allows",
                    tile, mm.name, ", ".join(wide))
    if checkpoint is not None:
        if mm.needs_checkpoint:
            load_model_weights(mm, net, checkpoint)
        else:
            log.warning("%s is not a learned model; --checkpoint %s ignored", mm.name, checkpoint)
    tune_backend(dev)
    net = channels_last(net.to(dev).eval())
    fold_batchnorm(net)  # this network serves inference only: conv + BN as one conv (same alphas within 1e-5)
    log.info("predict: %d image(s) with %s on %s", len(pairs), mm.name, dev)

    # every input readable and every trimap valid before the first output
    with progress_bar(pairs, progress=progress, desc="predict: checking the inputs", unit="img", leave=False) as bar:
        for _, ip, tp in bar:
            check_image(ip)
            read_trimap(tp)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    for stem, ip, tp in progress_bar(pairs, progress=progress, desc="predict", unit="img"):
        rgb, tri = read_rgb(ip), read_trimap(tp, warn=False)  # (H, W, 3) float32, (H, W) uint8
        if rgb.shape[:2] != tri.shape:  # headers agreed; the pixels must too
            raise DataError(f"image {ip} is {rgb.shape[1]}x{rgb.shape[0]} but trimap {tp} is "
                            f"{tri.shape[1]}x{tri.shape[0]}; give them the same size")
        alpha = predict_alpha(mm, net, rgb, tri, device=dev, tile=tile, overlap=overlap, amp=amp,
                              max_size=max_size)  # (H, W)
        alpha_path, cut_path = outputs[stem]
        write_alpha(alpha_path, alpha, bits=bits)
        written.append(alpha_path)
        if cut_path is not None:
            fg = estimate_foreground(rgb, alpha)  # (H, W, 3)
            write_rgb(cut_path, np.concatenate([fg, alpha[:, :, None]], axis=2))  # (H, W, 4)
            written.append(cut_path)
    return written
