"""An ``atldas export`` ONNX file as a MODEL: the network run by onnxruntime's CPU provider.

``atldas predict --model model.onnx`` and ``atldas eval --model model.onnx`` take the file as they take
a torch network (the weights are inside: no ``--checkpoint``). On this project's CPUs onnxruntime ran
``cheapmatting`` at 1024^2 in 0.74 of the torch predict path's time at one thread, with outputs within
1.2e-5 (``experiments/bench_inference.py``). onnxruntime is optional (``pip install atldas[export]``);
it is imported when such a file is opened.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from atldas.errors import ConfigError, DataError, first_line

__all__ = ["OnnxNet", "UNKNOWN_BYTES_PER_PIXEL", "MIN_SIDE"]

log = logging.getLogger("atldas")

#: Activation bytes per pixel assumed for a file whose export did not record its own figure.
UNKNOWN_BYTES_PER_PIXEL = 2000.0
#: The smallest padded side an export runs (``atldas export`` traces H and W as 32 x (3..512)): below it
#: shapes the trace fixed no longer hold (onnxruntime crashed with SIGFPE on a 32 x 32 input).
MIN_SIDE = 96


def _meta_number(meta: Mapping[str, str], key: str, default: float, *, path: str | Path) -> float:
    """A positive finite number from the file's metadata (its first word), else ``default`` with a
    warning: a hand-edited value that is not one gave a traceback, and NaN would turn the memory check
    off, 0 the guard against onnxruntime's crash on small inputs."""
    if key not in meta:
        return float(default)
    words = str(meta[key]).split()
    try:
        value = float(words[0])
    except (IndexError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        log.warning("%s: its metadata %s=%r is not a positive number; %g is used", path, key, meta[key][:40],
                    default)
        return float(default)
    return value


class OnnxNet(nn.Module):
    """``(B, 6, H, W) -> (B, 1, H, W)`` by an onnxruntime session on ``path`` (a module without
    parameters; ``.to()``, ``.eval()`` and the rest of the nn.Module interface do nothing harmful).

    Args:
        path: an ``.onnx`` file written by ``atldas export`` (dynamic batch, height and width).
        threads: onnxruntime's intra-op threads (default: torch's current thread count).
    """

    def __init__(self, *, path: str | Path, threads: Optional[int] = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError(f"running {path} needs onnxruntime: pip install 'atldas[export]'") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types; one line for the user
            msg = first_line(exc)
            raise DataError(f"{path}: onnxruntime cannot load it: {msg[:200]}") from None
        inputs = self.session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        if shape is None or len(shape) != 4 or shape[1] != 6:
            raise DataError(f"{path}: not a matting network export: expected one (N, 6, H, W) input, got "
                            f"{[tuple(i.shape) for i in inputs]} (write it with atldas export)")
        self.input_name = inputs[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        #: Peak activation bytes per input pixel, measured by ``atldas export`` on the torch network
        #: (:mod:`atldas.matting.footprint` reads it); a file without it gets a conservative figure,
        #: about 3x what ``cheapmatting`` needs.
        self.BYTES_PER_PIXEL = _meta_number(meta, "atldas.bytes_per_pixel", UNKNOWN_BYTES_PER_PIXEL, path=path)
        self.min_side = max(MIN_SIDE, int(_meta_number(meta, "atldas.min_side", MIN_SIDE, path=path)))
        #: The torch network's layer types with image-wide context, as ``atldas export`` recorded them
        #: (``--tile`` warns about them); an empty list for a file of an older atldas (not recorded).
        self.image_wide = [w for w in meta.get("atldas.image_wide", "").split(",") if w]
        self.path = str(path)

    def forward(self, x: Tensor) -> Tensor:
        # (B, 6, H, W) -> (B, 1, H, W), on x's device
        h, w = x.shape[-2:]
        if min(h, w) < self.min_side:
            raise DataError(f"{self.path} runs inputs of at least {self.min_side} x {self.min_side} pixels (after "
                            f"padding to a multiple of 32), got {h} x {w}: run this image with the torch network "
                            "(--model MODEL --checkpoint CKPT)")
        try:
            y = self.session.run(None, {self.input_name: x.detach().float().cpu().contiguous().numpy()})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types; one line for the user
            msg = first_line(exc)
            raise DataError(f"{self.path}: onnxruntime failed on a {h} x {w} input: {msg[:200]}") from None
        return torch.from_numpy(y).to(x.device)

    def extra_repr(self) -> str:
        return f"path={self.path!r}"
