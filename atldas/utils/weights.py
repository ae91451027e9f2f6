"""Load trained weights into a network, from any checkpoint layout atldas meets, safely.

Accepted layouts (all read with ``torch.load(weights_only=True)`` by
:func:`atldas.utils.checkpoint.load_checkpoint`, which refuses a file that carries code):

- the released CheapMatting / AEMatter files: ``{"model": state_dict, ...}``;
- atldas retrain checkpoints: ``{"model": state_dict, "ema": ..., "optimizer": ..., ...}``: the
  ``"model"`` entry is used unless ``key="ema"`` (or another entry) is asked for;
- ``{"state_dict": state_dict, ...}`` (Lightning and many other trainers);
- a plain state dict (every value a tensor).

Key prefixes added by wrappers are removed when every key carries them: ``module.``
(DistributedDataParallel, ``torch.optim.swa_utils.AveragedModel``, whose ``n_averaged`` counter is
dropped) and ``_orig_mod.`` (``torch.compile``). BatchNorm ``num_batches_tracked`` counters the
checkpoint lacks are not an error (they do not change inference).

A checkpoint of another network is refused with one line that names the first missing and unexpected
keys and the first shape mismatches::

    checkpoint x.pt does not fit cheapmatting: 12 missing keys (cells.0.preprocess0.conv_1.weight, ...),
    3 unexpected (...), 2 shape mismatches (pred.0.weight: checkpoint [24, 38, 3, 3] vs model [16, 38, 3, 3], ...)
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from atldas.errors import DataError
from atldas.utils.checkpoint import load_checkpoint

log = logging.getLogger("atldas")

__all__ = ["load_weights", "extract_state_dict", "weight_mismatch"]

#: Entries tried, in order, when no ``key`` is given.
STATE_KEYS = ("model", "state_dict")
#: Wrapper prefixes stripped when every key has them.
PREFIXES = ("module.", "_orig_mod.")
#: How many names of each kind a mismatch message shows.
SHOWN = 3


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_prefixes(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    sd = {k: v for k, v in sd.items() if k != "n_averaged"} if "n_averaged" in sd else dict(sd)
    changed = True
    while changed and sd:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def extract_state_dict(ckpt: Mapping[str, Any], *, source: str = "checkpoint",
                       key: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint (see the module docstring for the layouts).

    Args:
        ckpt: what :func:`load_checkpoint` returned.
        source: the file name, for messages.
        key: the entry holding the weights (e.g. ``"ema"``); None tries ``"model"``, then
            ``"state_dict"``, then the checkpoint itself as a plain state dict.

    Raises:
        DataError: no state dict where one was expected (the message lists the entries found).
    """
    found = ", ".join(repr(k) for k in list(ckpt)[:8]) + (", ..." if len(ckpt) > 8 else "")
    if key is not None:
        if key not in ckpt:
            raise DataError(f"{source}: no {key!r} entry in the checkpoint (entries: {found})")
        candidates = [ckpt[key]]
    else:
        candidates = [ckpt[k] for k in STATE_KEYS if k in ckpt] + [ckpt]
    for obj in candidates:
        if _is_state_dict(obj):
            return _strip_prefixes(dict(obj))
    if key is None and "supernet" in ckpt:
        raise DataError(f"{source}: this is a search checkpoint (a supernet, not a standalone network); "
                        "derive the genotype and retrain it (`atldas derive`, `atldas retrain`), then use "
                        "the retrain checkpoint")
    raise DataError(f"{source}: no weights found; expected a state dict (name -> tensor) or a dict with a "
                    f"'model' or 'state_dict' entry holding one (entries: {found})")


def _shape(t: Union[torch.Tensor, torch.Size]) -> str:
    return "[" + ", ".join(str(int(s)) for s in (t.shape if isinstance(t, torch.Tensor) else t)) + "]"


def _listed(names: List[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")


def weight_mismatch(model_sd: Mapping[str, torch.Tensor], ckpt_sd: Mapping[str, torch.Tensor], *,
                    strict: bool = True) -> Optional[str]:
    """What keeps ``ckpt_sd`` from loading into a model with ``model_sd``, in words; None when it fits.

    Missing ``num_batches_tracked`` buffers are tolerated; with ``strict=False`` only shape mismatches
    count (missing and unexpected keys are allowed).
    """
    missing = [k for k in model_sd if k not in ckpt_sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in ckpt_sd if k not in model_sd]
    shapes = [f"{k}: checkpoint {_shape(ckpt_sd[k])} vs model {_shape(v)}"
              for k, v in model_sd.items() if k in ckpt_sd and tuple(ckpt_sd[k].shape) != tuple(v.shape)]
    parts = []
    if strict and missing:
        parts.append(f"{len(missing)} missing key{'s' if len(missing) != 1 else ''} ({_listed(missing)})")
    if strict and unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_listed(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch{'es' if len(shapes) != 1 else ''} ({_listed(shapes)})")
    return ", ".join(parts) or None


def first_non_finite(obj: Any, prefix: str = "") -> Optional[str]:
    """The dotted name of the first floating tensor or float holding NaN or infinity in a nested state
    (mappings, lists, tuples), or None when everything is finite."""
    if torch.is_tensor(obj):
        return prefix if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    if isinstance(obj, float):
        return None if math.isfinite(obj) else prefix
    items = obj.items() if isinstance(obj, Mapping) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        bad = first_non_finite(v, f"{prefix}.{k}" if prefix else str(k))
        if bad is not None:
            return bad
    return None


def load_weights(net: nn.Module, checkpoint_path: Union[str, os.PathLike], *, strict: bool = True,
                 key: Optional[str] = None, name: Optional[str] = None) -> Dict[str, Any]:
    """Load the weights of a checkpoint file into ``net`` (in place).

    Args:
        net: the network (any device; tensors are copied onto its parameters' devices and dtypes).
        checkpoint_path: a ``.pt``/``.pth`` file in one of the layouts of the module docstring.
        strict: every parameter and buffer of ``net`` must be in the checkpoint and nothing else
            (missing ``num_batches_tracked`` counters excepted); False allows missing and unexpected
            keys (logged) but never a shape mismatch.
        key: the checkpoint entry to read (e.g. ``"ema"``); default ``"model"``, ``"state_dict"``, or
            the file as a plain state dict.
        name: the network's name in messages (default: its class name).

    Returns:
        The checkpoint's other entries (everything except the weights), e.g. ``epoch`` or ``config``.

    Raises:
        DataError: a missing, unreadable or code-carrying file, no weights inside, weights of
            another network (one line naming the first mismatched keys and shapes), an integer tensor
            where the network has a floating one (or the reverse), or a tensor with NaN or infinite
            values (named).
    """
    path = os.fspath(checkpoint_path)
    ckpt = load_checkpoint(path, map_location="cpu")
    sd = extract_state_dict(ckpt, source=path, key=key)
    model_sd = net.state_dict()
    label = name or type(net).__name__
    problem = weight_mismatch(model_sd, sd, strict=strict)
    if problem:
        raise DataError(f"checkpoint {path} does not fit {label}: {problem}; "
                        "use the checkpoint trained for this MODEL")
    kind = next((k for k, v in model_sd.items() if k in sd and sd[k].is_floating_point() != v.is_floating_point()
                 and not k.endswith("num_batches_tracked")), None)  # a counter saved as a float still counts
    if kind is not None:
        raise DataError(f"checkpoint {path}: tensor {kind!r} is {str(sd[kind].dtype).replace('torch.', '')} where "
                        f"{label} has {str(model_sd[kind].dtype).replace('torch.', '')} (not weights saved from this "
                        "network); use the checkpoint trained for this MODEL")
    bad = first_non_finite(sd)
    if bad is not None:
        raise DataError(f"checkpoint {path}: tensor {bad!r} holds NaN or infinite values (a diverged run?); "
                        "use a checkpoint from before the divergence")
    for k, v in model_sd.items():  # tolerated: counters the checkpoint lacks keep the model's values
        if k not in sd and k.endswith("num_batches_tracked"):
            sd[k] = v
    result = net.load_state_dict(sd, strict=strict)
    if not strict and (result.missing_keys or result.unexpected_keys):
        log.warning("%s: loaded into %s with %d missing and %d unexpected keys (strict=False)", path, label,
                    len(result.missing_keys), len(result.unexpected_keys))
    used = key if key is not None else next((k for k in STATE_KEYS if k in ckpt and _is_state_dict(ckpt[k])), None)
    return {k: v for k, v in ckpt.items() if k != used} if used is not None else {}
