"""Checkpoints as plain dicts: atomic writes and safe (weights_only) reads.

A checkpoint is data, never code: :func:`load_checkpoint` uses ``torch.load(weights_only=True)``
and turns a refusal into a one-line :class:`~atldas.errors.DataError`.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Union

import torch

from atldas.errors import DataError
from atldas.utils.atomic import atomic_path

PathLike = Union[str, os.PathLike]

log = logging.getLogger("atldas")


def save_checkpoint(state: Dict[str, Any], path: PathLike) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, then ``os.replace``),
    so an interrupted write never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:  # a file object: a failed write is an OSError, not a RuntimeError
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # name the checkpoint, not the temporary file
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
        except RuntimeError as exc:  # torch's zip writer replaces a full disk's OSError with its own error
            cause = exc.__context__
            while cause is not None and not (isinstance(cause, OSError) and cause.errno):
                cause = cause.__context__
            if cause is None:
                raise
            raise OSError(cause.errno, cause.strerror, os.fspath(path)) from None


def load_checkpoint(path: PathLike, *, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        DataError: the file is missing or corrupt, or it carries code (pickled classes/functions),
            which is refused because loading it would run that code.
    """
    p = Path(path)
    if p.is_dir():
        inside = [name for name in ("best.pt", "last.pt", "checkpoint.pt") if (p / name).is_file()]
        hint = (f"pass a file in it, e.g. {p / inside[0]}" if inside
                else "pass the checkpoint file (.pt/.pth) itself")
        raise DataError(f"{p} is a folder, not a checkpoint file; {hint}")
    if not p.is_file():
        raise DataError(f"{p}: no such checkpoint file")
    _refuse_compressed(p)
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        code = ("Weights only load failed" in text or "WeightsUnpickler" in text) and "Unsupported operand" not in text
        if not code:  # torch's text (re-run with weights_only=False) is unsafe advice for a file that is no checkpoint
            raise DataError(f"{p}: not a PyTorch checkpoint ({_kind(p)}); pass a .pt/.pth file written by "
                            "torch.save") from None
        found = re.search(r"GLOBAL ([\w.]+)", text)
        detail = f"it names {found.group(1)}" if found else ""
        raise DataError(f"{p}: refused, the checkpoint carries code or objects other than tensors and "
                        f"plain containers (loaded with weights_only=True for safety){': ' + detail if detail else ''}; "
                        "re-save it as a plain dict of tensors") from None
    except Exception as exc:  # noqa: BLE001 - any other failure means an unreadable file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"{p}: not a readable PyTorch checkpoint ({exc.__class__.__name__}"
                        f"{': ' + msg if msg else ''}); pass a file written by torch.save") from None
    if not isinstance(obj, dict):
        raise DataError(f"{p}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def _refuse_compressed(path: Path) -> None:
    """DataError for a zip checkpoint with compressed entries: ``torch.save`` writes them stored, and
    torch.load inflates a compressed one, so a file of a few megabytes could claim tens of gigabytes
    (a zip bomb: a 4.8 kB file loaded as a 4 MB tensor here, 820 times its size)."""
    try:
        with zipfile.ZipFile(path) as z:
            packed = [i.filename for i in z.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a zip (an old torch.save format, or not a checkpoint): torch.load says what it is
    if packed:
        raise DataError(f"{path}: refused, {len(packed)} of its entries are compressed ({packed[0]}), which torch.save "
                        "never writes: a small file could expand to fill the memory; re-save the weights with "
                        "torch.save")


def warn_other_loss(ckpt: Dict[str, Any], current: str, *, source: PathLike, made: str, loss: str) -> None:
    """Warn when ``ckpt`` records another version of the ``loss`` definition than ``current``: what is
    computed from it now (a resumed run's training, whose history then mixes the two; a derive's select
    stage) uses this atldas's loss."""
    if ckpt.get("loss_version", "") != current:
        log.warning("%s was %s with another definition of the %s loss (%s) than this atldas's (%s): what is "
                    "computed from it now uses this one", source, made, loss, ckpt.get("loss_version") or "before versions were recorded",
                    current or "unversioned")


def _kind(path: Path) -> str:
    """What a file that torch cannot read as a checkpoint looks like, for the message."""
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, name in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
                        (b"PK", "a zip archive torch cannot read")):
        if head.startswith(magic):
            return f"the file is {name}"
    return "torch.load finds no torch.save data in it"
