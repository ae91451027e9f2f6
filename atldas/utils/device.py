"""The one device check: a device name as a ``torch.device``, refused with one line when absent."""

from __future__ import annotations

import platform
from typing import Union

import torch

from atldas.errors import ConfigError

__all__ = ["resolve_device", "device_name"]


def resolve_device(device: Union[str, torch.device]) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... as a device; ConfigError when it is unknown or absent."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use cpu or cuda") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r} asked for, but torch sees no CUDA device here; "
                              "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise ConfigError(f"device {str(device)!r} is not supported; use cpu or cuda")
    return dev


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
