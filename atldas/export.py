"""``atldas export``: a MODEL with its weights as ONNX, with dynamic height and width.

    atldas export --model RUN_DIR --checkpoint RUN_DIR/best.pt --onnx matting.onnx
    atldas export --model cheapmatting --checkpoint cheapmatting.pth --onnx cm.onnx --size 512

The graph has one input ``input`` ``(B, 6, H, W)`` float32 (RGB in [0, 1] + one-hot trimap
[bg, unknown, fg]) and one output ``alpha`` ``(B, 1, H, W)`` in [0, 1]; batch, height and width are
dynamic. The graph is the network only: pad H and W to a multiple of 32 (reflect, centred), crop
back and clamp by the trimap yourself, as :func:`atldas.matting.inference.predict_alpha` does.

With ``check=True`` and onnxruntime installed, the exported file is run on a random input of a size
other than the export size and compared with PyTorch (max abs difference <= ``atol``, 1e-4); a larger
difference is an error. Needs the ``export`` extra: ``pip install atldas[export]`` (onnx, onnxscript,
onnxruntime). Uses the ``torch.onnx.export`` dynamo exporter (TorchScript is deprecated).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from atldas.version import __version__
from atldas.errors import AtldasError, ConfigError, DataError, first_line
from atldas.genotype import Genotype
from atldas.models.base import MattingModel
from atldas.matting.footprint import forward_bytes_per_pixel
from atldas.matting.inference import image_wide_layers
from atldas.models.zoo import load_model_weights, require_torch, resolve_model
from atldas.utils.atomic import atomic_path, refuse_input_as_output

log = logging.getLogger("atldas")

PathLike = Union[str, os.PathLike]
INSTALL_HINT = "pip install 'atldas[export]'"


class _Wrapped(nn.Module):
    """``(B, 6, H, W) -> (B, 1, H, W)`` whatever the network's own signature."""

    def __init__(self, model, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.two_inputs = bool(model.two_inputs)

    def forward(self, x: Tensor) -> Tensor:
        if self.two_inputs:
            return self.net(x[:, :3], x[:, 3:])
        return self.net(x)


#: torch.onnx.export's torch.export-based path with ``dynamo``, ``external_data`` and ``optimize``
#: and no file argument (returning the program) is from torch 2.6 (setup.py's floor is lower for the rest)
MIN_TORCH = (2, 6)


def _require_onnx() -> None:
    have = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2])
    if have < MIN_TORCH:
        raise AtldasError(f"ONNX export needs torch >= {'.'.join(map(str, MIN_TORCH))} (its torch.export-based "
                          f"exporter); this is torch {torch.__version__}")
    for mod in ("onnx", "onnxscript"):
        try:
            __import__(mod)
        except ImportError:
            raise AtldasError(f"ONNX export needs the {mod} package, which is not installed: "
                              f"{INSTALL_HINT}") from None


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's INFO/WARNING chatter (its errors still raise)."""
    names = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx",
             "torch.utils._sympy", "torch.fx.experimental.symbolic_shapes", "onnxscript", "onnx_ir")
    saved = {n: logging.getLogger(n).level for n in names}
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


#: the input contract written into every exported model's metadata (``metadata_props``)
INPUT_SPEC = {
    "atldas.input": "float32 (N, 6, H, W): channels 0-2 RGB in [0, 1] (8-bit / 255, no mean or std), "
                    "channels 3-5 the trimap one-hot [background (0), unknown (128), foreground (255)]",
    "atldas.size_multiple": "32 (pad H and W, e.g. by reflection, centred; crop the output back)",
    "atldas.min_side": "96 (H and W after padding: the graph is traced for sides of 96 and more)",
    "atldas.output": "float32 (N, 1, H, W) alpha in [0, 1]; set alpha = 0 / 1 where the trimap is "
                     "background / foreground (atldas predict does)",
}


def _finish_graph(path: PathLike, names: Dict[str, str], meta: Dict[str, str]) -> int:
    """Rename symbolic dimensions (``32*height_32`` -> ``height``) in the saved graph's signature and
    write ``meta`` into its metadata; returns the file's default-domain opset."""
    import onnx

    m = onnx.load(str(path))
    for v in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param in names:
                d.dim_param = names[d.dim_param]
    onnx.helper.set_model_props(m, meta)
    onnx.save(m, str(path))
    return next((int(o.version) for o in m.opset_import if o.domain in ("", "ai.onnx")), -1)


def _example(h: int, w: int, *, batch: int = 1, seed: int = 0) -> Tensor:
    """A plausible (batch, 6, h, w) input: random RGB and a random one-hot trimap."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(batch, 3, h, w, generator=g)
    labels = torch.randint(0, 3, (batch, h, w), generator=g)
    onehot = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    return torch.cat([rgb, onehot], 1)


def _refuse_non_finite(y: np.ndarray, h: int, w: int) -> None:
    if not np.isfinite(y).all():
        raise AtldasError(f"the network's PyTorch output has NaN or infinite values on a {h}x{w} input; its "
                          "weights are broken (a diverged training?): nothing was exported")


def check_onnx(onnx_path: PathLike, wrapped: nn.Module, *, size: int, atol: float = 1e-4,
               name: Optional[PathLike] = None) -> Optional[Dict]:
    """Compare onnxruntime with PyTorch on a random input of another size than ``size``; ``name``:
    the file the messages name (default ``onnx_path``; the output while ``onnx_path`` is its temporary).

    Returns ``{"input": [1, 6, H, W], "max_abs_diff": ..}``, or None when onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        log.warning("onnxruntime is not installed: the exported file was not checked (%s)", INSTALL_HINT)
        return None
    h, w = size + 64, size + 32  # another height and width than the export size, both multiples of 32
    x = _example(h, w, seed=1)
    with torch.no_grad():
        ref = wrapped(x).float().numpy()
    _refuse_non_finite(ref, h, w)  # else the check below reports NaN differences as an exporter's fault
    try:
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors (InvalidGraph...) in one line
        first = first_line(exc)
        raise AtldasError(f"onnxruntime {ort.__version__} cannot load the exported graph ({first[:200]}); "
                          "try another --opset, or --no-check to keep it unchecked") from None
    (got,) = sess.run(["alpha"], {"input": x.numpy()})
    onnx_path = name if name is not None else onnx_path
    if got.shape != ref.shape:
        raise AtldasError(f"{onnx_path}: onnxruntime returned shape {list(got.shape)} for input "
                          f"{list(x.shape)}, PyTorch {list(ref.shape)}; the export is not dynamic in H/W")
    diff = float(np.max(np.abs(got - ref)))
    if not diff <= atol:
        raise AtldasError(f"{onnx_path}: onnxruntime and PyTorch differ by {diff:.3g} (> {atol:g}) on a "
                          f"{h}x{w} input; the export is not faithful (try another --opset)")
    return {"input": list(x.shape), "max_abs_diff": diff}


#: Oldest opset the exporter writes faithfully (checked from 16 to 28 on the networks here; below
#: 16 torch's exporter falls back to 18).
MIN_OPSET = 16


def export_onnx(*, model: Union[PathLike, Genotype, MattingModel], checkpoint: Optional[PathLike] = None, onnx_path: PathLike, opset: int = 17,
                check: bool = True, size: int = 256, atol: float = 1e-4, optimize: bool = True,
                initial_weights: bool = False) -> Dict:
    """Export ``model`` with ``checkpoint``'s weights to ONNX (dynamic batch, height and width).

    Args:
        model: a MODEL (registered name, genotype file, run directory) or a
            :class:`~atldas.models.base.MattingModel`.
        checkpoint: weights (a retrain ``best.pt``/``last.pt`` or released weights); required unless
            ``initial_weights``.
        onnx_path: the ``.onnx`` file to write (atomically).
        opset: ONNX opset version.
        check: run the exported file in onnxruntime (when installed) on an input of another size and
            compare with PyTorch.
        size: the square export size (a multiple of 32 in 96..4096).
        atol: the largest accepted absolute difference of the check.
        optimize: run the ONNX graph optimizer (constant folding, fusions); off exports about twice
            as fast on a CPU, with a larger graph.
        initial_weights: export the network's initial (untrained) weights, without a checkpoint (to
            time or inspect the graph; its alphas mean nothing).

    Returns:
        ``{"onnx": path, "opset": .., "export_input": [1, 6, size, size], "check": {"input": ..,
        "max_abs_diff": ..} or None}``.

    Raises:
        AtldasError: onnx/onnxscript not installed ("pip install atldas[export]"), no checkpoint (or
            one with ``initial_weights``), a bad checkpoint, a failed export or check.
    """

    _require_onnx()
    if size < 96 or size % 32 or size > 4096:
        raise ConfigError(f"export size must be a multiple of 32 in 96..4096, got {size}")
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ConfigError(f"--opset {opset} cannot be written: the exporter writes opsets {MIN_OPSET}..{newest} "
                          f"(the installed onnx {onnx.__version__})")
    out = Path(onnx_path)
    if out.is_dir():
        raise DataError(f"--onnx {out} is a folder; pass a file name such as {out / 'model.onnx'}")
    model_files = sorted(Path(model).iterdir()) if isinstance(model, (str, Path)) and Path(model).is_dir() else []
    refuse_input_as_output(out, [checkpoint, model if isinstance(model, (str, Path)) else None, *model_files],
                           flag="--onnx")
    if out.suffix.lower() != ".onnx":  # predict and eval know an exported network by its suffix
        raise ConfigError(f"--onnx {out}: the file name must end in .onnx (predict and eval recognise an exported "
                          f"network by it), e.g. {out.with_suffix('.onnx')}")
    mm = require_torch(resolve_model(model), "export")
    if not mm.learned:
        raise ConfigError(f"{mm.name} is a classical solver (pymatting), not a network; it cannot be "
                          "exported to ONNX")
    if (checkpoint is None) != bool(initial_weights):
        raise ConfigError("export needs the trained weights: --checkpoint CKPT (e.g. RUN_DIR/best.pt; in Python "
                          "checkpoint=); --initial-weights (initial_weights=True) exports the untrained network "
                          "instead" if checkpoint is None else
                          "--checkpoint and --initial-weights exclude each other: give one")
    net = mm.build()
    if checkpoint is not None:
        load_model_weights(mm, net, checkpoint)
    else:
        log.warning("--initial-weights: exporting %s with its initial (untrained) weights", mm.name)
    net.eval()
    wrapped = _Wrapped(mm, net).eval()
    with torch.no_grad():  # checked or not, a network whose output is not finite is not exported
        _refuse_non_finite(wrapped(_example(96, 96, seed=1)).float().numpy(), 96, 96)
    x = _example(size, size, batch=2)  # batch 2: torch.export would specialise a batch of 1
    log.info("exporting %s to %s (opset %d): tracing with torch.export%s; this takes a while", mm.name, out, opset,
             ", then a check in onnxruntime" if check else "")
    with atomic_path(out, suffix=".onnx") as tmp:
        # H and W are multiples of 32 (the input is padded so); saying so lets torch.export prove the
        # shapes of strided convs and factorized reductions
        batch = torch.export.Dim("batch", min=1, max=1024)
        height = 32 * torch.export.Dim("height_32", min=3, max=512)
        width = 32 * torch.export.Dim("width_32", min=3, max=512)
        with _quiet_exporter(), torch.no_grad():
            try:
                program = torch.onnx.export(wrapped, (x,), input_names=["input"], output_names=["alpha"],
                                            opset_version=opset, dynamo=True, external_data=False, optimize=optimize,
                                            dynamic_shapes={"x": {0: batch, 2: height, 3: width}},
                                            verbose=False)
            except Exception as exc:  # noqa: BLE001 - an export failure is reported in one line
                msg = first_line(exc)
                raise AtldasError(f"ONNX export of {mm.name} failed: {msg[:300]} (rerun with --debug "
                                  "for details)") from exc
        with _quiet_exporter():
            program.save(tmp)
        meta = {**INPUT_SPEC, "atldas.model": mm.name, "atldas.version": __version__,
                "atldas.bytes_per_pixel": f"{forward_bytes_per_pixel(mm, net):.1f}",
                "atldas.image_wide": ",".join(image_wide_layers(net)),
                "atldas.checkpoint": Path(checkpoint).name if checkpoint is not None else "none (initial weights)"}
        actual_opset = _finish_graph(tmp, {"32*height_32": "height", "32*width_32": "width"}, meta)
        if actual_opset != opset:  # nothing is kept: the user asked for another opset
            raise AtldasError(f"the exporter wrote opset {actual_opset} instead of the requested {opset}; "
                              f"try --opset {actual_opset}")
        report = check_onnx(tmp, wrapped, size=size, atol=atol, name=out) if check else None
    return {"onnx": str(out), "opset": actual_opset, "export_input": [1, *x.shape[1:]], "check": report}


__all__ = ["export_onnx", "check_onnx", "INPUT_SPEC"]
