"""Image, matte and trimap file I/O with the matting conventions of matting.md.

Every reader returns numpy arrays (H, W[, C]) and raises :class:`~atldas.errors.DataError` with a
one-line message for a missing, corrupt or unusable file. Conversions that change data (a trimap with
grey values other than 0/128/255, an RGB matte) are logged on the ``atldas`` logger, never silent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from atldas.errors import DataError
from atldas.utils.atomic import atomic_path

log = logging.getLogger("atldas")

PathLike = Union[str, os.PathLike]

#: File extensions treated as images when a folder is listed.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


#: A trimap pixel more than this many grey levels from 0, 128 and 255 is "off-level" (:func:`read_trimap`).
TRIMAP_TOLERANCE = 16
#: Largest share of off-level pixels a trimap may have: more is not compression noise but another kind
#: of image (a photo, noise). Measured on SyntheticMatting trimaps (thin unknown bands, kernel 1-3, 200
#: per size) saved as JPEG (grey or RGB): quality 95 leaves no off-level pixel; quality 75 leaves at
#: most 2.6% at 256 px, 3.6% at 128 px and 7.4% at 32 px; even quality 50 at most 7.8% at 256 px and
#: 24% at 32 px. A photo's luma has ~60% (grace_hopper.jpg 59%), uniform noise 74%.
MAX_OFF_LEVEL_SHARE = 0.25


#: Largest image (width x height) read without ``--max-pixels``: Pillow's decompression-bomb limit.
MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)


def set_max_pixels(n: int) -> None:
    """Allow images of up to ``n`` pixels (``--max-pixels``); the default is Pillow's bomb limit."""
    global MAX_PIXELS
    if n < 1:
        raise DataError(f"--max-pixels must be at least 1, got {n}")
    MAX_PIXELS = int(n)


def _header(path: PathLike) -> Image.Image:
    """The image opened lazily (header only), its size checked against :data:`MAX_PIXELS`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # the limit below is ours
            try:
                img = Image.open(p)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{p}: not a readable image ({exc.__class__.__name__}: {exc}); "
                        "re-save it as PNG or JPEG") from None
    w, h = img.size
    if w * h > MAX_PIXELS:
        img.close()
        raise DataError(f"{p}: {w}x{h} = {w * h:,} pixels, above the limit of {MAX_PIXELS:,} (a guard against "
                        f"decompression bombs); eval and predict read it with --max-pixels {w * h} or more; elsewhere, "
                        "use a smaller copy of it")
    if w < 1 or h < 1:
        img.close()
        raise DataError(f"{p}: the image is {w}x{h} pixels")
    return img


def image_info(path: PathLike) -> Tuple[Tuple[int, int], str]:
    """((width, height), PIL mode) from the file header, without decoding the pixels; the size as
    the readers return the image (EXIF rotation applied). DataError above ``--max-pixels``. A 16-bit
    colour PNG, which Pillow opens as 8-bit ``RGB``/``RGBA``, is ``RGB;16``/``RGBA;16``."""
    img = _header(path)
    try:
        w, h = img.size
        mode = img.mode + (";16" if _png16_colour(img, path) else "")
        return ((h, w) if _orientation(img, header=True) in (5, 6, 7, 8) else (w, h)), mode  # 5-8: a quarter turn
    finally:
        img.close()


def _png_header(path: PathLike) -> Tuple[int, int]:
    """(bit depth, colour type) of a PNG's IHDR chunk; (0, 0) for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return 0, 0
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return 0, 0
    return head[24], head[25]


def _png16_colour(img: Image.Image, path: PathLike) -> bool:
    """Whether ``img`` is a 16-bit RGB or RGBA PNG that Pillow opened as 8 bits (the high bytes only)."""
    return img.mode in ("RGB", "RGBA") and _is_png(img, path) and _png_header(path) == (16, 2 if img.mode == "RGB" else 6)


#: EXIF orientation -> the array operation that turns the stored image upright (as ImageOps.exif_transpose)
_UPRIGHT: Dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1)}


def _read_png16_colour(path: PathLike) -> np.ndarray:
    """A 16-bit RGB(A) PNG as float32 (H, W, 3|4) in [0, 1], all 16 bits, upright."""
    a = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)  # the stored pixels, no EXIF turn: ours below
    if a is None or a.dtype != np.uint16 or a.ndim != 3 or a.shape[2] not in (3, 4):
        raise DataError(f"{path}: a 16-bit colour PNG that cannot be decoded; re-save it")
    a = a[..., [2, 1, 0, 3][: a.shape[2]]]  # BGR(A) -> RGB(A)
    header = _header(path)
    try:
        turn = _UPRIGHT.get(_orientation(header))
    finally:
        header.close()
    a = turn(a) if turn is not None else a
    return np.ascontiguousarray(a).astype(np.float32) / 65535.0


def image_size(path: PathLike) -> Tuple[int, int]:
    """(width, height) from the file header (see :func:`image_info`)."""
    return image_info(path)[0]


def _orientation(img: Image.Image, *, header: bool = False) -> int:
    """The EXIF orientation of ``img`` (1: upright; a missing or broken EXIF block counts as 1).
    ``header``: without decoding the pixels (Pillow's ``getexif`` decodes a PNG whose EXIF is not in the
    chunks before its image data: 37 ms for a 1080p file where its header takes 0.04): a PNG's EXIF from
    those chunks only (the PNG extensions put ``eXIf`` before the image data)."""
    try:
        if header and img.format == "PNG":
            raw = img.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            return int(exif.get(0x0112, 1))
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001
        return 1


def _open(path: PathLike) -> Image.Image:
    """The decoded image, turned upright by its EXIF orientation (as photo viewers show it)."""
    img = _header(path)
    try:
        img.load()
        if _orientation(img) not in (0, 1):
            img = ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc}); "
                        "re-save it as PNG or JPEG") from None
    return img


def _is_png(img: Image.Image, path: PathLike) -> bool:
    """Whether ``img`` was read from a PNG (``format`` is lost when EXIF turns an image: the suffix then)."""
    return img.format == "PNG" or (img.format is None and str(path).lower().endswith(".png"))


def _sixteen_bit(img: Image.Image, path: PathLike) -> bool:
    """Whether ``img`` holds 16-bit samples (any ``I;16`` mode, a PNG opened as ``I``, a 16-bit colour PNG)."""
    return (img.mode.startswith("I;16") or (img.mode == "I" and _is_png(img, path))
            or (img.mode in ("RGB", "RGBA") and _is_png(img, path) and _png_header(path)[0] == 16))


def _to_float(img: Image.Image, path: PathLike, *, warn: bool = True) -> np.ndarray:
    """Pixel values as float32 in [0, 1], channels last, whatever the bit depth (a 16-bit colour PNG,
    which Pillow decodes to its high bytes, is decoded again with all 16 bits)."""
    mode = img.mode
    if mode in ("RGB", "RGBA") and _is_png(img, path) and _png_header(path)[0] == 16:
        return _read_png16_colour(path)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.uint16).astype(np.float32) / 65535.0
    if mode == "I":
        a = np.asarray(img, dtype=np.int64)
        # a PNG is 16-bit here (older Pillow opens 16-bit greyscale PNGs as "I"): its bit depth, not
        # its values, gives the scale; other 32-bit integer images: 16-bit if any value needs it
        scale = 65535.0 if _is_png(img, path) or a.max(initial=0) > 255 else 255.0
        return (a.astype(np.float32) / scale).clip(0.0, 1.0)
    if mode == "F":
        a = np.asarray(img, dtype=np.float32)
        _check_finite(a, path)
        # [0, 1] floats may overshoot a little (1.01 read as 0..255 made the whole matte black)
        out = a / 255.0 if a.max(initial=0) > 2.0 else a
        outside = int(np.count_nonzero((out < 0.0) | (out > 1.0)))
        if outside and warn:
            warn_file("float pixels outside [0, 1]", path, "%s: %d float pixel(s) outside [0, 1] (read as %s) "
                      "clipped to [0, 1]", outside, "0..255" if out is not a else "0..1")
        return out.clip(0.0, 1.0)
    if mode in ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "PA"):
        if mode in ("P", "CMYK", "YCbCr", "PA"):
            img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
        if img.mode == "1":
            img = img.convert("L")
        return np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0
    if mode.startswith("RGB") or mode.startswith("BGR"):
        raise DataError(f"{path}: unsupported pixel mode {mode}; re-save as 8- or 16-bit PNG")
    raise DataError(f"{path}: unsupported pixel mode {mode}; re-save as 8- or 16-bit PNG")


def _check_finite(a: np.ndarray, path: PathLike) -> None:
    """DataError naming ``path`` when a float image has NaN or infinite pixels."""
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise DataError(f"{path}: {bad} pixel(s) are NaN or infinite; re-save the image with finite values")


def read_rgb(path: PathLike) -> np.ndarray:
    """Read an image as RGB float32 (H, W, 3) in [0, 1] (RGB order, not OpenCV's BGR).

    Greyscale images are repeated to three channels; an alpha channel is dropped.
    """
    a = _to_float(_open(path), path)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 2:  # LA
        a = np.repeat(a[:, :, :1], 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def _single_channel(a: np.ndarray, path: PathLike, what: str) -> Tuple[np.ndarray, bool]:
    """Reduce a matte/trimap array to (H, W): grey as is; RGB with equal channels to one channel;
    different channels to luma. Returns the array and whether it is luma (the caller warns:
    :func:`_warn_luma`)."""
    if a.ndim == 2:
        return a, False
    channels = a.shape[2]
    if channels in (2, 4):  # LA / RGBA: the colour part carries the matte, the A part must be opaque
        if not np.all(a[:, :, -1] >= 1.0):
            raise DataError(f"{path}: {what} has a transparent alpha channel; "
                            f"save the {what} as a greyscale PNG")
        a = a[:, :, :-1]
        if a.shape[2] == 1:
            return a[:, :, 0], False
    if np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 0], a[:, :, 2]):
        return a[:, :, 0], False
    return a[:, :, 0] * 0.299 + a[:, :, 1] * 0.587 + a[:, :, 2] * 0.114, True


#: Files of one folder named per kind of warning; past this many, one line says that more are not named.
MAX_NAMED_FILES = 5
_WARNED: Dict[Tuple[str, str], set] = {}  # (kind, folder) -> the files named (the summary's mark past the cap)


def warn_file(kind: str, path: PathLike, fmt: str, *args: object) -> None:
    """``log.warning(fmt, path, *args)`` once per file and ``kind``, for the first
    :data:`MAX_NAMED_FILES` files of a kind in one folder; the next one gets one line saying that
    further files are not named. A retrain reads its files again at every draw, and a folder of a
    thousand JPEG trimaps gave a thousand lines (tens of thousands in a retrain) that buried everything
    else in the log. The count is per process (a data-loading worker keeps its own; eval's workers hand
    theirs to the parent: :func:`collected_file_warnings`);
    :func:`reset_file_warnings` starts it afresh (a long Python session that reads new files)."""
    if _COLLECTED is not None:  # a worker process: the parent names the files (collected_file_warnings)
        _COLLECTED.append((kind, str(path), fmt, *args))
        return
    seen = _WARNED.setdefault((kind, str(Path(path).parent)), set())
    if str(path) in seen or len(seen) > MAX_NAMED_FILES:
        return
    if len(seen) == MAX_NAMED_FILES:
        seen.add(None)  # past the cap: the summary once, and no more paths kept
        log.warning("%s: further files there with this problem (%s) are read the same way without a warning each",
                    Path(path).parent, kind)
        return
    seen.add(str(path))
    log.warning(fmt, path, *args)


def reset_file_warnings() -> None:
    """Name files in warnings afresh (:func:`warn_file`)."""
    _WARNED.clear()


_COLLECTED: Optional[List[tuple]] = None


@contextlib.contextmanager
def collected_file_warnings() -> Iterator[List[tuple]]:
    """Inside: :func:`warn_file` keeps its warnings in the yielded list (``warn_file``'s arguments,
    picklable) instead of logging them, for a worker process to hand them to its parent, which calls
    ``warn_file(*args)`` for each: one count for all workers."""
    global _COLLECTED
    before, _COLLECTED = _COLLECTED, []
    try:
        yield _COLLECTED
    finally:
        _COLLECTED = before


def _warn_luma(path: PathLike, what: str) -> None:
    warn_file(f"{what} in colour", path, "%s: %s is RGB with different channels; using luma 0.299R + 0.587G + "
              "0.114B", what)


def read_alpha(path: PathLike, *, warn: bool = True) -> np.ndarray:
    """Read an alpha matte as float32 (H, W) in [0, 1].

    8-bit mattes are divided by 255, 16-bit PNGs by 65535 (their bit depth, not their values, gives
    the scale); float (TIFF mode ``F``) mattes are read as [0, 1] unless their maximum is over 2 (then
    as 0..255), and clipped to [0, 1]. An RGB matte with equal channels is read as one channel
    (different channels: luma, with a warning; ``warn=False``: a second read of a file already checked).
    """
    a, luma = _single_channel(_to_float(_open(path), path), path, "alpha matte")
    if luma and warn:
        _warn_luma(path, "alpha matte")
    return np.ascontiguousarray(a, dtype=np.float32)


def alpha_to_u8(alpha: np.ndarray) -> np.ndarray:
    """Quantise a [0, 1] float matte to 8 bits by rounding (the DIM metrics take 8-bit inputs)."""
    return np.clip(np.rint(np.asarray(alpha, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def normalize_trimap(values: np.ndarray) -> Tuple[np.ndarray, int]:
    """Map grey values onto {0, 128, 255}: < 85 -> 0, >= 170 -> 255, else 128.

    Args:
        values: (H, W) trimap in 0..255 (any numeric dtype).

    Returns:
        The uint8 trimap and the number of pixels whose value changed.
    """
    v = np.asarray(values)
    out = np.full(v.shape, 128, dtype=np.uint8)
    out[v < 85] = 0
    out[v >= 170] = 255
    changed = int(np.count_nonzero(out != v))
    return out, changed


def check_image(path: PathLike) -> None:
    """Decode ``path`` fully and drop the pixels: a DataError now for a truncated or unreadable file
    or a pixel mode the readers refuse, before a command writes any output (a float image with NaN or
    infinite pixels too)."""
    img = _open(path)
    try:
        _to_float(img, path, warn=False)
    finally:
        img.close()


def check_headers(paths: Sequence[PathLike]) -> List[Tuple[int, int]]:
    """Each file's (width, height) from its header (:func:`image_info`), checked before any work: one
    DataError listing the files that are not readable images or are above ``--max-pixels``."""
    sizes: List[Tuple[int, int]] = []
    bad: List[str] = []
    for path in paths:
        try:
            sizes.append(image_info(path)[0])
        except DataError as e:
            bad.append(str(e))
            sizes.append((0, 0))
    if bad:
        raise DataError(listed(bad, sep="; "))
    return sizes


def same_sizes(pairs: Sequence[Tuple[PathLike, PathLike]], kind: str) -> None:
    """Each ``(image, partner)`` pair of files of one size, from their headers (:func:`check_headers`):
    one DataError listing the pairs that differ (atldas never resizes a partner to fit)."""
    pairs = list(pairs)
    sizes = check_headers([p for pair in pairs for p in pair])
    bad = [f"{a} is {sa[0]}x{sa[1]} but its {kind} {b} is {sb[0]}x{sb[1]}"
           for (a, b), sa, sb in zip(pairs, sizes[0::2], sizes[1::2]) if sa != sb]
    if bad:
        raise DataError(f"{listed(bad, sep='; ')} (width x height): give each the same size as its {kind}")


def read_trimap(path: PathLike, *, warn: bool = True, warn_no_unknown: bool = True) -> np.ndarray:
    """Read a trimap as uint8 (H, W) with values in {0, 128, 255}.

    Near-greys are mapped robustly (< 85 -> 0, >= 170 -> 255, else 128) and the number of changed
    pixels is logged. 16-bit trimaps are scaled to 8 bits first, unless every value is at most 255 (8-bit
    levels saved in a 16-bit file: read as they are). A class-index trimap (values 0/1/2)
    is refused with a DataError: mapped by value it would read as all background; so is an image with
    more than :data:`MAX_OFF_LEVEL_SHARE` of its pixels over :data:`TRIMAP_TOLERANCE` grey levels from
    0/128/255 (a photo or noise, not a trimap with compression noise). ``warn=False`` skips the
    warnings (a second read of a file already checked); ``warn_no_unknown=False`` skips only the one
    about a trimap without unknown pixels (for a caller that refuses such a trimap itself).
    """
    img = _open(path)
    a, luma = _single_channel(_to_float(img, path), path, "trimap")
    values = np.rint(a * 255.0)
    if _sixteen_bit(img, path) and img.mode.startswith("I"):  # a one-channel 16-bit file (colour ones: above)
        raw = np.asarray(img, dtype=np.int64)
        if raw.max(initial=0) <= 255:  # 8-bit levels (0/128/255) saved in a 16-bit file: read them as such
            values = raw.astype(np.float64)
    top = float(values.max()) if values.size else 0.0
    if 0 < top <= 2:
        raise DataError(f"{path}: trimap values are 0/1/2 (a class-index trimap); atldas reads trimaps as "
                        "0 = background, 128 = unknown, 255 = foreground: convert it (value * 127.5)")
    tri, changed = normalize_trimap(values)
    off = int(np.count_nonzero(np.abs(values - tri) > TRIMAP_TOLERANCE)) if changed else 0
    if off > MAX_OFF_LEVEL_SHARE * values.size:
        raise DataError(f"{path}: {off / values.size:.1%} of the pixels (over {MAX_OFF_LEVEL_SHARE:.0%}) are more than "
                        f"{TRIMAP_TOLERANCE} grey levels from 0/128/255 (JPEG noise leaves under 8%): not a trimap "
                        "(a photo or noise?); pass "
                        "a trimap with 0 = background, 128 = unknown, 255 = foreground")
    if luma and warn:  # after the refusals: a refused file gets one line
        _warn_luma(path, "trimap")
    if changed and warn:
        warn_file("trimap levels", path, "%s: trimap had %d pixels not in {0, 128, 255}; mapped <85 -> 0, "
                  ">=170 -> 255, else 128", changed)
    if warn and warn_no_unknown and not np.any(tri == 128):
        warn_file("trimap without unknown pixels", path, "%s: trimap has no unknown (128) pixels")
    return tri


def list_images(folder: PathLike) -> Dict[str, Path]:
    """Image files of ``folder`` keyed by file stem (raises DataError for a missing folder or a
    stem that appears twice, e.g. ``a.png`` and ``a.jpg``). Hidden files are not images of the set:
    the temporary file of a killed atomic write (``.a.png.x1y2.png``), macOS's ``._a.png``."""
    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"{d}: no such folder")
    out: Dict[str, Path] = {}
    for p in sorted(d.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            if p.stem in out:
                raise DataError(f"{d}: two files share the stem {p.stem!r} ({out[p.stem].name}, {p.name}); "
                                "keep one")
            out[p.stem] = p
    return out


@dataclass
class Pairing:
    """What :func:`pair_by_stem` found.

    Attributes:
        items: ``(stem, main file, {partner kind: file})`` for every main file, sorted by stem.
        missing: partner kind -> main files without that partner.
        unused: partner kind -> partner files no main file uses.
    """

    items: List[Tuple[str, Path, Dict[str, Path]]]
    missing: Dict[str, List[Path]]
    unused: Dict[str, List[Path]]


class PairingError(DataError):
    """Files of a layout that do not pair up (an image without its alpha, a trimap without its image):
    the folder is that layout, broken, not another layout."""


#: Partnerless files named in one error at most.
MAX_LISTED = 10


def listed(names: List[str], *, sep: str = ", ") -> str:
    """'a.png, b.png, ... and 12 more' (at most :data:`MAX_LISTED` names, joined by ``sep``)."""
    shown = sep.join(names[:MAX_LISTED])
    return shown + (f"{sep}... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def no_unknown_error(name: object) -> DataError:
    """The refusal of a trimap without unknown pixels where it is scored (DIM's MSE divides by their number)."""
    return DataError(f"{name}: trimap has no unknown (128) pixels, so MSE is undefined (DIM divides by their "
                     "number); fix the trimap or leave the image out")


def partnerless_error(problems: List[str], need: str) -> PairingError:
    """One error naming ``problems`` (files without a partner, :func:`listed`) and what the layout needs."""
    return PairingError(f"{len(problems)} missing partner file(s) (matched by file stem): {listed(problems)}; {need}")


def pair_by_stem(main: Mapping[str, Path], partners: Mapping[str, Optional[Mapping[str, Path]]], *,
                 fallback: Optional[Mapping[str, Callable[[str, Mapping[str, Path]], Optional[str]]]] = None) -> Pairing:
    """Match files of several folders by file stem (the one pairing routine of eval, predict and the
    dataset readers; each caller decides which gaps are errors).

    Args:
        main: stem -> file of the main kind (predictions, images).
        partners: kind -> (stem -> file), or None for a kind that is not given.
        fallback: kind -> ``f(stem, files)`` naming another stem of that kind to use when ``stem`` has
            none (Composition-1K: ``<fg>_<k>`` uses alpha ``<fg>``).
    """
    items: List[Tuple[str, Path, Dict[str, Path]]] = []
    missing: Dict[str, List[Path]] = {k: [] for k in partners}
    used: Dict[str, set] = {k: set() for k in partners}
    for stem in sorted(main):
        found: Dict[str, Path] = {}
        for kind, files in partners.items():
            if files is None:
                continue
            other = stem if stem in files else (fallback or {}).get(kind, lambda s, f: None)(stem, files)
            if other is None:
                missing[kind].append(main[stem])
            else:
                found[kind] = files[other]
                used[kind].add(other)
        items.append((stem, main[stem], found))
    unused = {k: [files[s] for s in sorted(files) if s not in used[k]] for k, files in partners.items() if files}
    return Pairing(items=items, missing={k: v for k, v in missing.items() if v},
                   unused={k: v for k, v in unused.items() if v})


def _atomic_save(img: Image.Image, path: PathLike) -> None:
    p = Path(path)
    with atomic_path(p, suffix=p.suffix or ".png") as tmp:
        img.save(tmp, format="PNG" if p.suffix.lower() in ("", ".png") else None)


def write_alpha(path: PathLike, alpha: np.ndarray, *, bits: int = 8) -> None:
    """Write a [0, 1] float matte (H, W) as an 8- or 16-bit greyscale PNG (atomically)."""
    a = np.clip(np.asarray(alpha, dtype=np.float64), 0.0, 1.0)
    if bits == 8:
        img = Image.fromarray(np.rint(a * 255.0).astype(np.uint8), mode="L")
    elif bits == 16:
        img = Image.fromarray(np.rint(a * 65535.0).astype(np.uint16))
    else:
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    _atomic_save(img, path)


def write_rgb(path: PathLike, rgb: np.ndarray) -> None:
    """Write a [0, 1] float (H, W, 3) or (H, W, 4) image as an 8-bit PNG (atomically); a uint8 array is
    written as it is."""
    a = rgb if isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 else \
        np.rint(np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    _atomic_save(Image.fromarray(a), path)


def write_trimap(path: PathLike, trimap: np.ndarray) -> None:
    """Write a uint8 trimap (H, W) as an 8-bit greyscale PNG (atomically)."""
    _atomic_save(Image.fromarray(np.asarray(trimap, dtype=np.uint8), mode="L"), path)
