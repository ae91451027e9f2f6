"""The one device check: a device name as a ``torch.device``, refused with one line when absent."""

from __future__ import annotations

import platform
from typing import Optional, Union

import torch

from atldas.errors import ConfigError

__all__ = ["resolve_device", "device_name", "tune_backend", "AMP_MODES", "amp_dtype", "native_bf16", "resume_device_hint"]

#: Mixed-precision modes: ``auto`` (bf16 where the GPU has it, else fp16; off on the CPU), ``bf16``,
#: ``fp16`` (with a loss scaler), ``off``.
AMP_MODES = ("auto", "bf16", "fp16", "off")


def resolve_device(device: Union[str, torch.device], *, hint: str = "use --device cpu") -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... as a device; ConfigError when it is unknown or absent
    (``hint``: what to do about an absent GPU; a resumed run's device is in its config.yaml, not a flag)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r} asked for, but torch sees no CUDA device here; {hint}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise ConfigError(f"device {str(device)!r} is not supported; use cpu or cuda")
    return dev


def resume_device_hint(config_yaml: object) -> str:
    """What to do when a run searched or trained on a GPU is resumed where there is none."""
    return (f"the run keeps the device of its {config_yaml}: to go on here, set `device: cpu` there (a setting "
            "of how a run runs; --device on --resume is refused)")


def device_name(device: Union[str, torch.device]) -> str:
    """The GPU's name, or the CPU's model name from /proc/cpuinfo."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    name = ""
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return name or platform.processor() or platform.machine()


def tune_backend(device: Union[str, torch.device]) -> bool:
    """On CUDA, let cuDNN time its convolution algorithms once per input shape and keep the fastest
    (``torch.backends.cudnn.benchmark``): search and retrain use one crop size, predict and eval a few
    image sizes, so the first batch of each size pays the timing once. Returns whether it was set; a CPU
    device changes nothing. Results stay within float tolerance, not bit-identical across runs."""
    if torch.device(device).type != "cuda":
        return False
    torch.backends.cudnn.benchmark = True
    return True


def amp_dtype(device: Union[str, torch.device], mode: str) -> Optional[torch.dtype]:
    """The autocast dtype of ``mode`` on ``device`` (None: full precision). Autocast runs on CUDA only;
    on the CPU every mode is full precision (bf16 autocast there moved alphas by up to 0.08)."""
    if mode not in AMP_MODES:
        raise ConfigError(f"unknown amp mode {mode!r}; choose one of {', '.join(AMP_MODES)}")
    if torch.device(device).type != "cuda" or mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


def native_bf16(device: Union[str, torch.device]) -> bool:
    """Whether the GPU ``device`` computes in bf16 natively (compute capability 8.0, Ampere, or newer; ROCm).
    ``torch.cuda.is_bf16_supported()`` also counts bf16 emulated on older cards (T4, V100), where bf16
    convolutions have no fast kernels: ``amp=auto`` takes fp16 with a loss scaler there."""
    if torch.version.hip:
        return True
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_properties(index).major >= 8
