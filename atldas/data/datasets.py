"""Readers for the public matting data sets and for a user's own folders (torch Datasets).

Every reader returns the sample dict of :func:`atldas.data.augment.make_sample`:

- ``image`` (3, H, W) float32 RGB in [0, 1];
- ``alpha`` (1, H, W) float32 in [0, 1] (absent where the data set has no ground truth);
- ``trimap`` (1, H, W) uint8 in {0, 128, 255} (as read: 128 is the unknown region);
- ``trimap_onehot`` (3, H, W) float32 [background, unknown, foreground];
- ``fg``, ``bg`` (3, H, W) float32 for composed sets;
- ``name``: the image's file name (``Trimap1/doll.png`` style for alphamatting.com with several
  trimap sets).

Evaluation sets are returned at full resolution; image, trimap and alpha of different sizes raise a
:class:`~atldas.errors.DataError` naming the file and both sizes (nothing is resized silently).

Layouts (``open_dataset`` detects them from the folder names, or takes ``kind``):

==================== ==========================================================================
composition-1k       ``Test_set/{merged, alpha_copy|alpha, trimaps}``, composites ``<fg>_<k>.png``
                     sharing the alpha ``<fg>.png`` (an alpha named like the composite wins);
                     ``Training_set/{fg, alpha}`` + ``backgrounds=DIR``, composed on the fly
distinctions-646     ``Train/{FG, GT}`` + ``backgrounds=DIR`` (composed on the fly, like
                     Composition-1K); ``Test/{FG, GT}`` + ``backgrounds=DIR`` composed
                     deterministically (below)
aim-500              ``validation/{original/*.jpg, mask/*.png, trimap/*.png}``
p3m-500              ``validation/P3M-500-NP/{original_image, mask, trimap}``,
                     ``validation/P3M-500-P/{blurred_image, mask, trimap}``; ``subset`` NP, P or both
am-2k                ``{train, validation}/{original, mask, trimap}`` (generated trimaps where the
                     trimap folder is missing)
alphamatting         ``input_lowres/`` + ``trimap_lowres/Trimap{1,2,3}/`` (no alpha);
                     ``split="train"``: ``input_training_lowres/`` + ``trimap_training_lowres/
                     Trimap{1,2}/`` + ``gt_training_lowres/``
generic              ``image=DIR trimap=DIR [alpha=DIR]`` matched by file stem, or a root folder
                     holding ``image(s)/``, ``trimap(s)/`` and optionally ``alpha(s)/``
==================== ==========================================================================

Deterministic trimaps and backgrounds (Distinctions-646 test, folders without trimaps): a trimap is
:func:`~atldas.data.trimap.trimap_from_alpha` with kernel diameters drawn from ``trimap_kernel``
(default 10..25) by ``numpy.random.default_rng(name_seed("trimap:" + file_name))``, where
``name_seed`` is the first 8 bytes (little endian) of the SHA-256 of the UTF-8 string. With one
composite per foreground, the background of composite ``name`` is
``backgrounds[rng.integers(len(backgrounds))]`` with ``rng = default_rng(name_seed("background:" +
name))``; with ``k`` per foreground, composite ``j`` of foreground ``f`` takes
``backgrounds[perm[j mod len(backgrounds)]]`` with ``perm = default_rng(name_seed("backgrounds:" +
f)).permutation(len(backgrounds))`` (distinct backgrounds per foreground); the background files sorted
by name. It is then composed with the official protocol (bicubic resize only if smaller, top-left crop). The same
files therefore always give the same samples, on any machine.

Training sets draw every random choice (background, second foreground, augmentation) from
``default_rng([seed, epoch, index])``: a fresh background per sample and epoch, reproducible and
independent of DataLoader workers. Call :meth:`ComposedTrainSet.set_epoch` between epochs.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from torch.utils.data import Dataset

from atldas.data.augment import Augment, compose_official, make_sample
from atldas.data.io import (PairingError, check_headers, check_image, list_images, no_unknown_error, pair_by_stem,
                            partnerless_error, read_alpha, read_rgb, read_trimap, same_sizes)
from atldas.data.trimap import trimap_from_alpha
from atldas.errors import ConfigError, DataError
from atldas.registry import Registry

log = logging.getLogger("atldas")

PathLike = Union[str, Path]

#: Kernel-diameter range of the deterministic trimaps generated for sets without trimaps.
DEFAULT_TEST_TRIMAP_KERNEL = (10, 25)


# --------------------------------------------------------------------------- helpers

def name_seed(text: str) -> int:
    """A 64-bit seed from a string: the first 8 bytes (little endian) of its SHA-256."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def deterministic_trimap(alpha: np.ndarray, name: str, *,
                         kernel: Tuple[int, int] = DEFAULT_TEST_TRIMAP_KERNEL) -> np.ndarray:
    """The trimap generated for file ``name`` (same file name and alpha -> same trimap).

    Args:
        alpha: (H, W) float matte in [0, 1].
        name: the file name that seeds the erosion kernels (``"trimap:" + name``).
        kernel: (min, max) diameters of the elliptical erosion kernels.

    Returns:
        (H, W) uint8 trimap in {0, 128, 255}.
    """
    rng = np.random.default_rng(name_seed("trimap:" + name))
    return trimap_from_alpha(alpha, rng=rng, k_min=int(kernel[0]), k_max=int(kernel[1]))


def _wh(shape: Sequence[int]) -> str:
    return f"{shape[1]}x{shape[0]}"


def check_same_size(ref: Path, ref_shape: Sequence[int], other: Path, other_shape: Sequence[int],
                    what: str) -> None:
    """Raise DataError when ``other`` (a ``what``) and ``ref`` differ in height or width."""
    if tuple(ref_shape[:2]) != tuple(other_shape[:2]):
        raise DataError(f"{other}: {what} is {_wh(other_shape)} but the image {ref} is "
                        f"{_wh(ref_shape)} (width x height); give them the same size "
                        "(atldas never resizes them)")


def _child(folder: Path, *names: str) -> Optional[Path]:
    """The first sub-folder of ``folder`` named like one of ``names`` (exact match first, then
    case-insensitive), or None."""
    if not folder.is_dir():
        return None
    for n in names:
        if (folder / n).is_dir():
            return folder / n
    lower = {n.lower() for n in names}
    for p in sorted(folder.iterdir()):
        if p.is_dir() and p.name.lower() in lower:
            return p
    return None


def _images(folder: Path) -> Dict[str, Path]:
    files = list_images(folder)
    if not files:
        raise DataError(f"{folder}: no images (.png, .jpg, ...) in this folder")
    return files


@dataclass(frozen=True)
class MattingItem:
    """One sample of a file-based set: an image, a trimap (or None: generated), an alpha (or None)."""

    name: str
    image: Path
    trimap: Optional[Path]
    alpha: Optional[Path]


def _pair_by_stem(images: Dict[str, Path], trimaps: Optional[Dict[str, Path]],
                  alphas: Optional[Dict[str, Path]], *, need: str) -> List[MattingItem]:
    """Items matched by stem (:func:`atldas.data.io.pair_by_stem`); every file without its partners
    is listed in one DataError."""
    p = pair_by_stem(images, {"trimap": trimaps, "alpha": alphas})
    problems = [f"{f} has no {kind}" for kind, files in p.missing.items() for f in files]
    problems += [f"{kind} {f} has no image" for kind, files in p.unused.items() for f in files]
    if problems:
        raise partnerless_error(problems, need)
    return [MattingItem(path.name, path, found.get("trimap"), found.get("alpha")) for _, path, found in p.items]


# --------------------------------------------------------------------------- file-based sets

class MattingFolders(Dataset):
    """Image + trimap (+ alpha) read from files at full resolution: the evaluation readers.

    Args:
        items: the samples, in order.
        trimap_kernel: kernel range of the trimaps generated for items without a trimap file.
    """

    def __init__(self, items: Sequence[MattingItem], *,
                 trimap_kernel: Tuple[int, int] = DEFAULT_TEST_TRIMAP_KERNEL) -> None:
        self.items = list(items)
        self.trimap_kernel = tuple(trimap_kernel)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def names(self) -> List[str]:
        """Sample names, in order."""
        return [it.name for it in self.items]

    @property
    def has_alpha(self) -> bool:
        """Whether samples carry a ground-truth ``alpha``."""
        return all(it.alpha is not None for it in self.items)

    @property
    def sources(self) -> List[int]:
        """Per sample, the index of its source photo: samples that share an image file or an alpha (one
        photo under two trimaps; composites of one foreground, whose alpha may be one file or a copy per
        composite, so alphas are compared by content) share it; numbered by first sample."""
        parent = list(range(len(self.items)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        first: Dict[Tuple[str, str], int] = {}
        for i, it in enumerate(self.items):
            keys = [("image", os.path.realpath(it.image))]
            if it.alpha is not None:
                keys.append(("alpha", hashlib.blake2b(Path(it.alpha).read_bytes(), digest_size=16).hexdigest()))
            for key in keys:
                j = first.setdefault(key, i)
                parent[root(i)] = root(j)
        ids: Dict[int, int] = {}
        return [ids.setdefault(root(i), len(ids)) for i in range(len(self.items))]

    def check(self, indices: Optional[Sequence[int]] = None, *, need_unknown: bool = False) -> None:
        """Every file of the set (or of the samples ``indices``) readable, within ``--max-pixels``, of its
        image's size, and every trimap valid (with ``need_unknown``, holding unknown pixels), before any
        work: a DataError naming the file (a bad file near the end of a large set costs nothing).
        Decodes each file once; the samples read them again."""
        items = self.items if indices is None else [self.items[i] for i in indices]
        for kind in ("trimap", "alpha"):
            same_sizes([(it.image, getattr(it, kind)) for it in items if getattr(it, kind) is not None], kind)
        check_headers([it.image for it in items if it.trimap is None and it.alpha is None])
        for it in items:
            check_image(it.image)
            if it.alpha is not None:
                read_alpha(it.alpha, warn=False)
            if it.trimap is not None and not np.any(read_trimap(it.trimap, warn=False) == 128) and need_unknown:
                raise no_unknown_error(it.trimap)

    def __getitem__(self, index: int) -> Dict[str, object]:
        it = self.items[index]
        image = read_rgb(it.image)
        alpha = None
        if it.alpha is not None:
            alpha = read_alpha(it.alpha)
            check_same_size(it.image, image.shape, it.alpha, alpha.shape, "alpha")
        if it.trimap is not None:
            trimap = read_trimap(it.trimap)
            check_same_size(it.image, image.shape, it.trimap, trimap.shape, "trimap")
        elif alpha is not None:
            trimap = deterministic_trimap(alpha, it.name, kernel=self.trimap_kernel)
        else:  # pragma: no cover - readers never build such items
            raise DataError(f"{it.image}: no trimap and no alpha to generate one from")
        return make_sample(image, trimap, name=it.name, alpha=alpha)


def _layout_error(root: Path, kind: str, layout: str, extra: str = "") -> DataError:
    return DataError(f"{root}: not laid out as {kind}; expected {layout}{extra}")


def _split_dir(root: Path, split_names: Sequence[str], inner: Sequence[str]) -> Optional[Path]:
    """``root/<split>`` or ``root`` itself, whichever holds the ``inner`` sub-folders."""
    for d in [_child(root, *split_names), root]:
        if d is not None and all(_child(d, n) is not None for n in inner):
            return d
    return None


_COMP1K_TEST = "Test_set/{merged, alpha_copy or alpha, trimaps}"
_COMP1K_TRAIN = "Training_set/{fg, alpha} and backgrounds=DIR"
_COMP1K_LAYOUT = f"{_COMP1K_TEST} (test) or {_COMP1K_TRAIN} (train)"
_K_SUFFIX = re.compile(r"^(.*)_(\d+)$")


class Composition1KTest(MattingFolders):
    """Composition-1K test set: ``Test_set/{merged, alpha_copy or alpha, trimaps}``.

    Composites are ``<fg>_<k>.png`` (k = 0..19 for the 1000 official images); the ground truth
    ``<fg>.png`` in ``alpha_copy/`` (or ``alpha/``) is shared by the 20 composites of one foreground.
    An alpha named like the composite is used instead where it exists.

    Args:
        root: the ``Test_set`` folder or the folder that holds it.
    """

    def __init__(self, root: PathLike) -> None:
        root = Path(root)
        d = None
        for cand in (_child(root, "Test_set"), root):
            if cand is not None and _child(cand, "merged") and _child(cand, "trimaps") \
                    and _child(cand, "alpha_copy", "alpha"):
                d = cand
                break
        if d is None:
            raise _layout_error(root, "Composition-1K test", _COMP1K_TEST)
        merged = _images(_child(d, "merged"))
        trimaps = list_images(_child(d, "trimaps"))
        alpha_dir = _child(d, "alpha_copy") or _child(d, "alpha")
        alphas = list_images(alpha_dir)
        items, problems, used = [], [], set()
        for stem, p in merged.items():
            a = alphas.get(stem)
            if a is None:
                m = _K_SUFFIX.match(stem)
                a = alphas.get(m.group(1)) if m else None
            t = trimaps.get(stem)
            if a is None:
                problems.append(f"{p} has no alpha (<fg>.png or {stem}.png in {alpha_dir})")
            if t is None:
                problems.append(f"{p} has no trimap")
            used.update(x for x in (a, t) if x is not None)
            items.append(MattingItem(p.name, p, t, a))
        # a half-copied merged/ would otherwise score fewer images without a word
        problems += [f"{kind} {f} has no image" for kind, files in (("trimap", trimaps), ("alpha", alphas))
                     for f in sorted(files.values()) if f not in used]
        if problems:
            raise partnerless_error(problems, "every composite <fg>_<k> needs trimaps/<fg>_<k> "
                                               "and a shared alpha <fg>")
        super().__init__(items)
        self.root = d


class AIM500(MattingFolders):
    """AIM-500: ``validation/{original/*.jpg, mask/*.png, trimap/*.png}`` (real images).

    Args:
        root: the AIM-500 folder or its ``validation`` folder.
    """

    layout = "validation/{original, mask, trimap}"

    def __init__(self, root: PathLike) -> None:
        root = Path(root)
        d = _split_dir(root, ("validation",), ("original", "mask", "trimap"))
        if d is None:
            raise _layout_error(root, "AIM-500", self.layout)
        items = _pair_by_stem(_images(_child(d, "original")), list_images(_child(d, "trimap")),
                              list_images(_child(d, "mask")),
                              need="every original needs a mask and a trimap with the same stem")
        super().__init__(items)
        self.root = d


_P3M_LAYOUT = ("validation/P3M-500-NP/{original_image, mask, trimap} or "
               "validation/P3M-500-P/{blurred_image, mask, trimap}")


class P3M500(MattingFolders):
    """P3M-500 portraits: ``validation/P3M-500-NP/{original_image, mask, trimap}`` (non-private) and
    ``validation/P3M-500-P/{blurred_image, mask, trimap}`` (face-blurred).

    Args:
        root: the P3M folder, its ``validation`` folder, or one subset folder.
        subset: ``"NP"`` (default), ``"P"`` or ``"both"`` (NP first; a name in both is an error);
            :func:`open_dataset` without ``subset`` reads the one a folder holds, NP where it holds both.
    """

    _SUBSETS = {"NP": ("P3M-500-NP", "original_image"), "P": ("P3M-500-P", "blurred_image")}

    def __init__(self, root: PathLike, *, subset: str = "NP") -> None:
        root = Path(root)
        key = str(subset).upper()
        if key not in ("NP", "P", "BOTH"):
            raise ConfigError(f"unknown P3M-500 subset {subset!r}; choose NP, P or both")
        items: List[MattingItem] = []
        seen: Dict[str, Path] = {}
        for sub in (("NP", "P") if key == "BOTH" else (key,)):
            folder, img_name = self._SUBSETS[sub]
            d = None
            for cand in (_child(_child(root, "validation") or root, folder), root):
                if cand is not None and all(_child(cand, n) for n in (img_name, "mask", "trimap")):
                    d = cand
                    break
            if d is None:
                raise _layout_error(root, "P3M-500", f"validation/{folder}/{{{img_name}, mask, trimap}}")
            for it in _pair_by_stem(_images(_child(d, img_name)), list_images(_child(d, "trimap")),
                                    list_images(_child(d, "mask")),
                                    need=f"every {img_name} needs a mask and a trimap with the same "
                                         "stem"):
                if it.name in seen:
                    raise DataError(f"{it.image}: the name {it.name} is also in {seen[it.name]}; "
                                    "read one subset at a time (subset NP or P)")
                seen[it.name] = it.image
                items.append(it)
        super().__init__(items)
        self.subset = key if key == "BOTH" else sub


class AM2K(MattingFolders):
    """AM-2k animals: ``{train, validation}/{original, mask, trimap}``.

    Where the ``trimap`` folder is missing (the training split), trimaps are generated
    deterministically from the mask and the file name (see the module docstring).

    Args:
        root: the AM-2k folder or one split folder.
        split: ``"validation"`` (also ``"test"``/``"val"``) or ``"train"``.
        trimap_kernel: kernel range for generated trimaps.
    """

    layout = "{train, validation}/{original, mask, trimap}"

    def __init__(self, root: PathLike, *, split: str = "validation",
                 trimap_kernel: Tuple[int, int] = DEFAULT_TEST_TRIMAP_KERNEL) -> None:
        root = Path(root)
        name = "train" if _is_train(split) else "validation"
        d = _split_dir(root, (name,), ("original", "mask"))
        if d is None:
            raise _layout_error(root, "AM-2k", self.layout, f" (split {name})")
        tri_dir = _child(d, "trimap")
        items = _pair_by_stem(_images(_child(d, "original")),
                              list_images(tri_dir) if tri_dir is not None else None,
                              list_images(_child(d, "mask")),
                              need="every original needs a mask (and a trimap) with the same stem")
        super().__init__(items, trimap_kernel=trimap_kernel)
        self.root = d


_AMC_LAYOUT = ("input_lowres/ + trimap_lowres/Trimap{1,2,3}/ (test) or input_training_lowres/ + "
               "trimap_training_lowres/Trimap{1,2}/ + gt_training_lowres/ (train)")


class AlphaMattingCom(MattingFolders):
    """alphamatting.com: ``input_lowres/`` + ``trimap_lowres/Trimap{1,2,3}/``.

    The test set has no public ground truth: samples have no ``alpha`` (usable for prediction, not
    for scoring). ``split="train"`` reads ``input_training_lowres/``,
    ``trimap_training_lowres/Trimap{1,2}/`` and ``gt_training_lowres/`` instead.

    Names are the image file name when one trimap set is read, ``Trimap<k>/<file>`` otherwise
    (the site's submission layout).

    Args:
        root: the folder holding ``input_lowres`` and ``trimap_lowres``.
        split: ``"test"`` or ``"train"``.
        trimap_sets: which ``Trimap<k>`` folders to read (default: every one present).
    """

    def __init__(self, root: PathLike, *, split: str = "test",
                 trimap_sets: Optional[Sequence[int]] = None) -> None:
        root = Path(root)
        train = _is_train(split)
        prefix = "training_" if train else ""
        img_dir = _child(root, f"input_{prefix}lowres")
        tri_root = _child(root, f"trimap_{prefix}lowres")
        gt_dir = _child(root, "gt_training_lowres") if train else None
        if img_dir is None or tri_root is None or (train and gt_dir is None):
            raise _layout_error(root, "alphamatting.com", _AMC_LAYOUT)
        present = sorted(int(p.name[len("Trimap"):]) for p in tri_root.iterdir()
                         if p.is_dir() and re.fullmatch(r"Trimap\d+", p.name))
        sets = list(present if trimap_sets is None else trimap_sets)
        missing = [k for k in sets if k not in present]
        if not sets or missing:
            raise _layout_error(root, "alphamatting.com", _AMC_LAYOUT,
                                f" (no {tri_root.name}/Trimap{missing[0] if missing else 1})")
        images = _images(img_dir)
        alphas = list_images(gt_dir) if gt_dir is not None else None
        items: List[MattingItem] = []
        for k in sets:
            for it in _pair_by_stem(images, list_images(tri_root / f"Trimap{k}"), alphas,
                                    need=f"every input image needs a trimap in Trimap{k}"
                                         + (" and a gt alpha" if alphas is not None else "")
                                         + " with the same stem"):
                name = it.name if len(sets) == 1 else f"Trimap{k}/{it.name}"
                items.append(MattingItem(name, it.image, it.trimap, it.alpha))
        super().__init__(items)
        self.trimap_sets = sets


class GenericFolders(MattingFolders):
    """A user's folders: images, trimaps and optional alphas matched by file stem.

    Args:
        image: folder of images.
        trimap: folder of trimaps (0 / 128 / 255).
        alpha: optional folder of ground-truth mattes (needed to score, not to predict).

    Raises:
        DataError: listing the files without a partner (the first 10 and a count).
    """

    def __init__(self, image: PathLike, trimap: PathLike, alpha: Optional[PathLike] = None) -> None:
        need = "give every image a trimap" + (" and an alpha" if alpha is not None else "") + \
               " with the same file stem"
        items = _pair_by_stem(_images(Path(image)), list_images(Path(trimap)),
                              list_images(Path(alpha)) if alpha is not None else None, need=need)
        super().__init__(items)


# --------------------------------------------------------------------------- composed sets

def _backgrounds(folder: Optional[PathLike], what: str) -> List[Path]:
    if folder is None:
        raise DataError(f"{what} is composed on backgrounds: pass a folder of background images "
                        "(backgrounds=DIR / --backgrounds DIR)")
    paths = list(_images(Path(folder)).values())
    check_headers(paths)  # an unreadable background fails now, not when a draw first picks it
    return paths


def _fg_alpha_items(fg_dir: Path, alpha_dir: Path) -> List[MattingItem]:
    items = _pair_by_stem(_images(fg_dir), None, list_images(alpha_dir),
                          need=f"every foreground in {fg_dir} needs an alpha in {alpha_dir} with the "
                               "same stem")
    same_sizes([(it.image, it.alpha) for it in items], "alpha")  # from the headers, before any draw
    return items


def _read_fg_alpha(it: MattingItem) -> Tuple[np.ndarray, np.ndarray]:
    fg = read_rgb(it.image)
    alpha = read_alpha(it.alpha)
    check_same_size(it.image, fg.shape, it.alpha, alpha.shape, "alpha")
    return fg, alpha


def with_draws(ds: Dataset, n: int) -> Dataset:
    """``ds`` with at least ``n`` distinct samples per epoch where it draws per epoch and holds fewer
    (:meth:`ComposedTrainSet.with_draws`); any other data set as it is."""
    return ds.with_draws(n) if isinstance(ds, ComposedTrainSet) and len(ds) < n else ds


class ComposedTestSet(Dataset):
    """Foregrounds composed deterministically on backgrounds (the official protocol) for testing.

    Each foreground gives ``bg_per_fg`` composites named ``<stem>_<k>.png`` (just the foreground's
    file name when ``bg_per_fg == 1``). The trimap is generated from the foreground's file name and
    shared by its composites; the background is chosen from the composite's name (module docstring),
    and a foreground's ``bg_per_fg`` composites take distinct backgrounds (a seeded permutation keyed
    by the foreground's name; the DIM protocol's 20 per foreground are 20 different ones) while there
    are that many.

    Args:
        fg_dir: foreground colours.
        alpha_dir: alpha mattes, matched by stem.
        backgrounds: folder of background images.
        bg_per_fg: composites per foreground.
        trimap_kernel: kernel range of the generated trimaps.
    """

    def __init__(self, fg_dir: PathLike, alpha_dir: PathLike, backgrounds: Optional[PathLike], *,
                 bg_per_fg: int = 1,
                 trimap_kernel: Tuple[int, int] = DEFAULT_TEST_TRIMAP_KERNEL,
                 what: str = "this test set") -> None:
        self.has_alpha = True
        if bg_per_fg < 1:
            raise ConfigError(f"bg_per_fg must be at least 1, got {bg_per_fg}")
        self.fgs = _fg_alpha_items(Path(fg_dir), Path(alpha_dir))
        self.backgrounds = _backgrounds(backgrounds, what)
        self.bg_per_fg = int(bg_per_fg)
        self.trimap_kernel = tuple(trimap_kernel)

    def __len__(self) -> int:
        return len(self.fgs) * self.bg_per_fg

    def _name(self, index: int) -> Tuple[MattingItem, str]:
        it = self.fgs[index // self.bg_per_fg]
        if self.bg_per_fg == 1:
            return it, it.name
        return it, f"{it.image.stem}_{index % self.bg_per_fg}.png"

    @property
    def names(self) -> List[str]:
        """Sample names, in order."""
        return [self._name(i)[1] for i in range(len(self))]

    def check(self, indices: Optional[Sequence[int]] = None, *, need_unknown: bool = False) -> None:
        """Every foreground, alpha and background the samples (or the samples ``indices``) use decoded
        before any work: a DataError naming the file (as :meth:`MattingFolders.check`; the generated
        trimaps come from the alphas, which the composites need with unknown pixels anyway)."""
        index = range(len(self)) if indices is None else indices
        fgs = {id(it): it for it in (self._name(i)[0] for i in index)}.values()
        for it in fgs:
            check_image(it.image)
            read_alpha(it.alpha, warn=False)
        for bg in sorted({self._background(i) for i in index}):
            check_image(bg)

    def background_for(self, name: str) -> Path:
        """The background file that composite ``name`` uses."""
        names = self.names
        if name not in names:
            raise KeyError(f"{name!r} is not a composite of this set")
        return self._background(names.index(name))

    def _background(self, index: int) -> Path:
        it, name = self._name(index)
        if self.bg_per_fg == 1:
            rng = np.random.default_rng(name_seed("background:" + name))
            return self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        # a foreground's composites take distinct backgrounds (drawn one by one, they repeated)
        order = np.random.default_rng(name_seed("backgrounds:" + it.name)).permutation(len(self.backgrounds))
        return self.backgrounds[int(order[(index % self.bg_per_fg) % len(order)])]

    def __getitem__(self, index: int) -> Dict[str, object]:
        it, name = self._name(index)
        fg, alpha = _read_fg_alpha(it)
        trimap = deterministic_trimap(alpha, it.name, kernel=self.trimap_kernel)
        image, bg = compose_official(fg, alpha, read_rgb(self._background(index)))
        return make_sample(image, trimap, name=name, alpha=alpha, fg=fg, bg=bg)


class _EpochDraws(Dataset):
    """A training set whose sample ``index`` in epoch ``e`` draws from
    ``numpy.random.default_rng([seed, e, index])`` (the same whatever the loader's worker count)."""

    seed: int = 0
    epoch: int = 0
    #: Appended to the random key of a part made by :meth:`ComposedTrainSet.split_by_foreground`, so
    #: that parts draw independently (empty: the whole set's own key).
    stream: Tuple[int, ...] = ()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws :meth:`__getitem__` makes."""
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index), *self.stream])


class ComposedTrainSet(_EpochDraws):
    """Foregrounds composed on the fly on a fresh random background, with :class:`Augment`.

    Sample ``index`` uses foreground ``index % n_fg`` and draws everything else (background, an
    optional second foreground with probability ``augment.merge_prob``, the augmentation) from
    ``numpy.random.default_rng([seed, epoch, index])``.

    Args:
        fg_dir: foreground colours.
        alpha_dir: alpha mattes, matched by stem.
        backgrounds: folder of background images (e.g. COCO for Composition-1K).
        augment: the augmentation (default ``Augment(crop=crop)``).
        crop: crop size when ``augment`` is None.
        seed: base seed.
        samples_per_fg: samples per foreground and epoch (the dataset length is
            ``n_fg * samples_per_fg``).
    """

    def __init__(self, fg_dir: PathLike, alpha_dir: PathLike, backgrounds: Optional[PathLike], *,
                 augment: Optional[Augment] = None, crop: Union[int, Tuple[int, int]] = 512,
                 seed: int = 0, samples_per_fg: int = 1, what: str = "this training set") -> None:
        self.has_alpha = True
        if samples_per_fg < 1:
            raise ConfigError(f"samples_per_fg must be at least 1, got {samples_per_fg}")
        self.fgs = _fg_alpha_items(Path(fg_dir), Path(alpha_dir))
        self.backgrounds = _backgrounds(backgrounds, what)
        self.augment = augment if augment is not None else Augment(crop=crop)
        self.seed = int(seed)
        self.samples_per_fg = int(samples_per_fg)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.fgs) * self.samples_per_fg

    def split_by_foreground(self, parts: int = 2) -> List["ComposedTrainSet"]:
        """This set as ``parts`` sets on disjoint foregrounds: foreground ``k`` (in file order) goes to
        part ``k % parts``, a part merges only its own foregrounds (``merge_prob``) and draws from its
        own random stream. Held-out splits that share no foreground (a search's weight and
        architecture splits; backgrounds are drawn from the one folder by both)."""
        if not 1 <= parts <= len(self.fgs):
            raise DataError(f"{len(self.fgs)} foreground(s) cannot be split into {parts} parts; the search "
                            f"needs at least {parts} (one per split)")
        out = []
        for p in range(parts):
            part = copy.copy(self)
            part.fgs, part.stream = self.fgs[p::parts], (*self.stream, p)
            out.append(part)
        return out

    def with_draws(self, n: int) -> "ComposedTrainSet":
        """This set with at least ``n`` samples per epoch: each foreground ``ceil(n / n_fg)`` times, every
        sample with its own draws. An epoch that needs more samples than there are foregrounds gets
        fresh composites of them, never one sample twice (indices past the set repeated them)."""
        out = copy.copy(self)
        out.samples_per_fg = max(self.samples_per_fg, -(-int(n) // len(self.fgs)))
        return out

    def __getitem__(self, index: int) -> Dict[str, object]:
        rng = self._rng(index)
        it = self.fgs[index % len(self.fgs)]
        fg, alpha = _read_fg_alpha(it)
        bg = read_rgb(self.backgrounds[int(rng.integers(len(self.backgrounds)))])
        fg2 = alpha2 = None
        if len(self.fgs) > 1 and rng.random() < self.augment.merge_prob:
            other = int(rng.integers(len(self.fgs) - 1))
            other += other >= index % len(self.fgs)
            fg2, alpha2 = _read_fg_alpha(self.fgs[other])
        return self.augment(fg, alpha, bg, rng, fg2=fg2, alpha2=alpha2, name=it.name)


class PhotoTrainSet(_EpochDraws):
    """Real photos with their mattes, as they are, as a training set (no composition).

    Sample ``index`` is a crop of photo ``index % n`` centred on an unknown pixel (zero-padded when the
    photo is smaller than the crop), flipped horizontally with ``augment.flip_prob``, with a trimap
    eroded at random from the crop's alpha (``augment.trimap_kernel``); every draw comes from
    ``numpy.random.default_rng([seed, epoch, index])``. Samples carry no ``fg``/``bg``, so the
    composition loss is skipped.

    Args:
        photos: a data set with ground-truth alphas in any layout the readers know (a generic
            ``image/trimap/alpha`` folder, AIM-500, ...); its own trimaps are not used.
        crop: crop size.
        seed: base seed.
        samples_per_photo: samples per photo and epoch (the length is ``n * samples_per_photo``).
    """

    def __init__(self, photos: Dataset, *, crop: Union[int, Tuple[int, int]] = 512, seed: int = 0,
                 samples_per_photo: int = 1) -> None:
        if not getattr(photos, "has_alpha", True):
            raise DataError("these photos have no ground-truth alpha mattes to train on")
        if len(photos) == 0 or samples_per_photo < 1:
            raise DataError("no photos to train on" if len(photos) == 0 else
                            f"samples_per_photo must be at least 1, got {samples_per_photo}")
        self.has_alpha = True
        self.photos = photos
        self.augment = Augment(crop=crop)
        self.seed = int(seed)
        self.samples_per_photo = int(samples_per_photo)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.photos) * self.samples_per_photo

    def __getitem__(self, index: int) -> Dict[str, object]:
        rng = self._rng(index)
        s = self.photos[index % len(self.photos)]
        image = np.asarray(s["image"]).transpose(1, 2, 0)  # (H, W, 3)
        image, alpha = self.augment._pad(image, np.asarray(s["alpha"])[0])  # (H', W', 3), (H', W')
        top, left = self.augment.crop_origin(alpha, rng)
        ch, cw = self.augment.crop
        image, alpha = image[top:top + ch, left:left + cw], alpha[top:top + ch, left:left + cw]
        if rng.random() < self.augment.flip_prob:
            image, alpha = image[:, ::-1], alpha[:, ::-1]
        alpha = np.ascontiguousarray(alpha)
        k_min, k_max = self.augment.trimap_kernel
        trimap = trimap_from_alpha(alpha, rng=rng, k_min=k_min, k_max=k_max)
        return make_sample(np.ascontiguousarray(image), trimap, name=s.get("name"), alpha=alpha)


class Composition1KTrain(ComposedTrainSet):
    """Composition-1K training set: ``Training_set/{fg, alpha}`` composed on ``backgrounds``.

    Args:
        root: the ``Training_set`` folder or the folder that holds it.
        backgrounds: folder of background images (COCO in the DIM protocol).
        **kw: :class:`ComposedTrainSet` options (augment, crop, seed, samples_per_fg).
    """

    def __init__(self, root: PathLike, *, backgrounds: Optional[PathLike] = None, **kw) -> None:
        root = Path(root)
        d = _split_dir(root, ("Training_set",), ("fg", "alpha"))
        if d is None:
            raise _layout_error(root, "Composition-1K training", _COMP1K_TRAIN)
        super().__init__(_child(d, "fg"), _child(d, "alpha"), backgrounds,
                         what="the Composition-1K training set", **kw)
        self.root = d


_D646_LAYOUT = "{Train, Test}/{FG, GT} and backgrounds=DIR"


def _d646_dir(root: Path, split: str) -> Path:
    name = "Train" if _is_train(split) else "Test"
    d = _split_dir(root, (name,), ("FG", "GT"))
    if d is None:
        raise _layout_error(root, "Distinctions-646", _D646_LAYOUT, f" (split {name})")
    return d


class Distinctions646Train(ComposedTrainSet):
    """Distinctions-646 training set: ``Train/{FG, GT}`` composed on ``backgrounds`` on the fly.

    Args:
        root: the Distinctions-646 folder or its ``Train`` folder.
        backgrounds: folder of background images.
        **kw: :class:`ComposedTrainSet` options (augment, crop, seed, samples_per_fg).
    """

    def __init__(self, root: PathLike, *, backgrounds: Optional[PathLike] = None, **kw) -> None:
        d = _d646_dir(Path(root), "train")
        super().__init__(_child(d, "FG"), _child(d, "GT"), backgrounds,
                         what="the Distinctions-646 training set", **kw)
        self.root = d


class Distinctions646Test(ComposedTestSet):
    """Distinctions-646 test set: ``Test/{FG, GT}``, composed deterministically on ``backgrounds``
    with generated trimaps (there are no standard test trimaps; see the module docstring).

    Args:
        root: the Distinctions-646 folder or its ``Test`` folder.
        backgrounds: folder of background images.
        bg_per_fg: composites per foreground (the DIM protocol uses 20).
        trimap_kernel: kernel range of the generated trimaps.
    """

    def __init__(self, root: PathLike, *, backgrounds: Optional[PathLike] = None,
                 bg_per_fg: int = 1,
                 trimap_kernel: Tuple[int, int] = DEFAULT_TEST_TRIMAP_KERNEL) -> None:
        d = _d646_dir(Path(root), "test")
        super().__init__(_child(d, "FG"), _child(d, "GT"), backgrounds, bg_per_fg=bg_per_fg,
                         trimap_kernel=trimap_kernel, what="the Distinctions-646 test set")
        self.root = d


# --------------------------------------------------------------------------- registry

def _is_train(split: str) -> bool:
    s = str(split).lower()
    if s in ("train", "training"):
        return True
    if s in ("test", "val", "valid", "validation", "eval"):
        return False
    raise ConfigError(f"unknown split {split!r}; choose train or test (val/validation)")


@dataclass(frozen=True)
class DatasetKind:
    """A registered layout: how to recognise a root folder and how to open it.

    Attributes:
        name: the registry name.
        layout: the expected layout, as shown in error messages.
        detect: ``detect(root) -> bool``: whether ``root`` looks like this layout.
        build: ``build(root, split, **options) -> Dataset``.
    """

    name: str
    layout: str
    detect: Callable[[Path], bool]
    build: Callable[..., Dataset]


#: Dataset layouts by name (``open_dataset(kind=...)``).
DATASET_KINDS: Registry[DatasetKind] = Registry("dataset kind")


def _has(root: Path, *parts: str) -> bool:
    d: Optional[Path] = root
    for p in parts:
        d = _child(d, p) if d is not None else None
    return d is not None


def _detect_comp1k(root: Path) -> bool:
    return (_has(root, "Test_set", "merged") or _has(root, "Training_set", "fg")
            or (_has(root, "merged") and _has(root, "trimaps"))
            or (_has(root, "fg") and _has(root, "alpha")))


def _build_comp1k(root: Path, split: str, **kw) -> Dataset:
    if _is_train(split):
        return Composition1KTrain(root, **kw)
    return Composition1KTest(root, **kw)


def _detect_d646(root: Path) -> bool:
    return _has(root, "Train", "FG") or _has(root, "Test", "FG") or (
        _has(root, "FG") and _has(root, "GT"))


def _build_d646(root: Path, split: str, **kw) -> Dataset:
    if _is_train(split):
        return Distinctions646Train(root, **kw)
    return Distinctions646Test(root, **kw)


def _detect_p3m(root: Path) -> bool:
    v = _child(root, "validation") or root
    return any(_has(v, s) for s in ("P3M-500-NP", "P3M-500-P")) or _has(root, "original_image") \
        or _has(root, "blurred_image")


def _build_p3m(root: Path, split: str, **kw) -> Dataset:
    if _is_train(split):
        raise DataError(f"{root}: atldas reads only the P3M-500 validation sets "
                        f"({_P3M_LAYOUT}); use split test")
    if "subset" not in kw:  # the subset the folder holds; NP where it holds both
        v = _child(root, "validation") or root
        has_np, has_p = _has(v, "P3M-500-NP") or _has(root, "original_image"), \
            _has(v, "P3M-500-P") or _has(root, "blurred_image")
        if has_p and not has_np:
            kw["subset"] = "P"
        elif has_p:
            p_dir = _child(v, "P3M-500-P")
            where = f"point --data at {p_dir} to read it, or in Python" if p_dir is not None else "in Python,"
            log.warning("%s: P3M-500-NP is read, its face-blurred P3M-500-P is not (%s subset='P' or 'both')",
                        root, where)
    return P3M500(root, **kw)


def _detect_am2k(root: Path) -> bool:
    return _has(root, "train", "original") or (
        _has(root, "validation", "original")
        and re.search(r"am[-_]?2k", root.name.lower()) is not None)


def _build_am2k(root: Path, split: str, **kw) -> Dataset:
    return AM2K(root, split=split, **kw)


def _detect_aim(root: Path) -> bool:
    return _has(root, "validation", "original") or (
        _has(root, "original") and _has(root, "mask") and _has(root, "trimap"))


def _build_aim(root: Path, split: str, **kw) -> Dataset:
    if _is_train(split):
        raise DataError(f"{root}: AIM-500 has only a validation split ({AIM500.layout}); "
                        "use split test")
    return AIM500(root, **kw)


def _detect_amc(root: Path) -> bool:
    return _has(root, "input_lowres") or _has(root, "input_training_lowres")


def _build_amc(root: Path, split: str, **kw) -> Dataset:
    return AlphaMattingCom(root, split=split, **kw)


_GENERIC_LAYOUT = ("image=DIR trimap=DIR [alpha=DIR], or ROOT/{images, trimaps[, alphas]} (also image, merged; "
                   "trimap; alpha, mask, gt: mmagic's test layout ROOT/{merged, alpha, trimap} is one)")


def _generic_dirs(root: Optional[Path]) -> Tuple[Optional[Path], Optional[Path], Optional[Path]]:
    if root is None:
        return None, None, None
    return (_child(root, "image", "images", "merged"), _child(root, "trimap", "trimaps"),
            _child(root, "alpha", "alphas", "alpha_copy", "mask", "masks", "gt"))


def _detect_generic(root: Path) -> bool:
    img, tri, _ = _generic_dirs(root)
    return img is not None and tri is not None


def _build_generic(root: Optional[Path], split: str, *, image: Optional[PathLike] = None,
                   trimap: Optional[PathLike] = None, alpha: Optional[PathLike] = None) -> Dataset:
    img_d, tri_d, alpha_d = _generic_dirs(root)
    image = image if image is not None else img_d
    trimap = trimap if trimap is not None else tri_d
    alpha = alpha if alpha is not None else alpha_d
    if image is None or trimap is None:
        where = f"{root}: " if root is not None else ""
        raise DataError(f"{where}generic folders need {_GENERIC_LAYOUT}")
    return GenericFolders(image, trimap, alpha)


# Detection order matters: specific layouts first, the generic folder pair last.
for _kind in (
        DatasetKind("composition-1k", _COMP1K_LAYOUT, _detect_comp1k, _build_comp1k),
        DatasetKind("distinctions-646", _D646_LAYOUT, _detect_d646, _build_d646),
        DatasetKind("p3m-500", _P3M_LAYOUT, _detect_p3m, _build_p3m),
        DatasetKind("am-2k", AM2K.layout, _detect_am2k, _build_am2k),
        DatasetKind("aim-500", AIM500.layout, _detect_aim, _build_aim),
        DatasetKind("alphamatting", _AMC_LAYOUT, _detect_amc, _build_amc),
        DatasetKind("generic", _GENERIC_LAYOUT, _detect_generic, _build_generic)):
    DATASET_KINDS.add(_kind.name, _kind)

_DETECTION_ORDER = ("composition-1k", "distinctions-646", "p3m-500", "am-2k", "aim-500",
                    "alphamatting", "generic")
_ALIASES = {"comp1k": "composition-1k", "composition1k": "composition-1k", "adobe": "composition-1k",
            "d646": "distinctions-646", "distinctions646": "distinctions-646",
            "p3m": "p3m-500", "p3m500": "p3m-500", "am2k": "am-2k", "aim": "aim-500",
            "aim500": "aim-500", "alphamatting.com": "alphamatting", "folders": "generic"}


def detect_kind(root: PathLike) -> str:
    """The registered kind whose layout ``root`` matches (DataError listing the layouts if none)."""
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"{r}: no such folder")
    order = list(_DETECTION_ORDER) + [n for n in DATASET_KINDS.names() if n not in _DETECTION_ORDER]
    for name in order:
        if DATASET_KINDS.get(name).detect(r):
            return name
    layouts = "; ".join(f"{n}: {DATASET_KINDS.get(n).layout}" for n in order)
    raise DataError(f"{r}: no known data set layout ({layouts}); put your own files in {r}/image, {r}/trimap "
                    f"and {r}/alpha, matched by file stem (the generic layout), or, in Python, pass kind= "
                    "to open_dataset")


def open_dataset(root: Optional[PathLike] = None, *, kind: Optional[str] = None,
                 split: str = "test", **kw) -> Dataset:
    """Open a matting data set, detecting its layout from the folder names unless ``kind`` is given.

    Args:
        root: the data set folder (may be None for ``kind="generic"`` with ``image``/``trimap``).
        kind: a registered kind (``composition-1k``, ``distinctions-646``, ``aim-500``,
            ``p3m-500``, ``am-2k``, ``alphamatting``, ``generic``) or an alias (``comp1k``,
            ``d646``, ...); None to detect.
        split: ``"test"`` (also ``"val"``/``"validation"``) or ``"train"``.
        **kw: options of the kind's reader, e.g. ``backgrounds=DIR`` (composed sets),
            ``subset="NP"`` (P3M-500), ``image=``/``trimap=``/``alpha=`` (generic), ``augment``,
            ``crop``, ``seed`` (training sets). Options whose value is None are ignored.

    Returns:
        A torch Dataset of sample dicts (see the module docstring).

    Raises:
        DataError: the folder does not match the layout (the message names the expected one).
        ConfigError: an unknown kind (listing the kinds), split or option.
    """
    kw = {k: v for k, v in kw.items() if v is not None}
    _is_train(split)  # validate early
    if kind is None:
        if root is None:
            if "image" in kw and "trimap" in kw:
                kind = "generic"
            else:
                raise ConfigError("open_dataset needs a root folder, or image= and trimap= folders")
        else:
            kind = "generic" if ("image" in kw and "trimap" in kw) else detect_kind(root)
    key = _ALIASES.get(str(kind).lower(), str(kind).lower())
    spec = DATASET_KINDS.get(key) if key in DATASET_KINDS else DATASET_KINDS.get(str(kind))
    if root is None and spec.name != "generic":
        raise ConfigError(f"data set kind {spec.name} needs a root folder ({spec.layout})")
    r = Path(root) if root is not None else None
    if r is not None and not r.is_dir():
        raise DataError(f"{r}: no such folder")
    if "backgrounds" in kw and not Path(kw["backgrounds"]).is_dir():  # checked before any layout ignores it
        raise DataError(f"{kw['backgrounds']}: background folder does not exist; pass a folder of photos")
    _check_options(spec, split, kw)
    return spec.build(r, split, **kw)


_TARGETS = {"composition-1k": (Composition1KTest, Composition1KTrain, ComposedTrainSet),
            "distinctions-646": (Distinctions646Test, Distinctions646Train, ComposedTrainSet),
            "p3m-500": (P3M500,), "am-2k": (AM2K,), "aim-500": (AIM500,),
            "alphamatting": (AlphaMattingCom,), "generic": (_build_generic,)}


def _check_options(spec: DatasetKind, split: str, kw: Dict[str, object]) -> None:
    """ConfigError for options the kind's reader does not take (instead of a TypeError)."""
    targets = _TARGETS.get(spec.name)
    if targets is None:  # a kind registered elsewhere: let its builder decide
        return
    if spec.name in ("composition-1k", "distinctions-646"):
        targets = targets[1:] if _is_train(split) else targets[:1]
    accepted = set()
    for t in targets:
        accepted |= {p.name for p in inspect.signature(t).parameters.values()
                     if p.kind == p.KEYWORD_ONLY or (p.kind == p.POSITIONAL_OR_KEYWORD
                                                     and p.name not in ("root", "split"))}
    accepted -= {"root", "what", "fg_dir", "alpha_dir"}
    bad = sorted(set(kw) - accepted)
    if bad:
        raise ConfigError(f"data set kind {spec.name} ({'train' if _is_train(split) else 'test'}) "
                          f"does not take {', '.join(bad)}; it takes "
                          f"{', '.join(sorted(accepted)) or 'no options'}")


__all__ = ["AIM500", "AM2K", "AlphaMattingCom", "ComposedTestSet", "ComposedTrainSet",
           "Composition1KTest", "Composition1KTrain", "DATASET_KINDS", "DEFAULT_TEST_TRIMAP_KERNEL",
           "DatasetKind", "Distinctions646Test", "Distinctions646Train", "GenericFolders",
           "MattingFolders", "MattingItem", "P3M500", "PairingError", "PhotoTrainSet", "check_same_size", "with_draws",
           "compose_official", "detect_kind", "deterministic_trimap", "name_seed", "open_dataset"]
