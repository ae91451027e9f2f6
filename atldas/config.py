"""Run configurations as dataclasses, with YAML load/save and ``--set key=value`` overrides.

Every run writes its *resolved* configuration (every default spelled out) to ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Type, TypeVar

import yaml

from atldas.errors import ConfigError
from atldas.utils.atomic import write_text_atomic

C = TypeVar("C")


@dataclass
class SearchConfig:
    """Configuration of ``atldas search``. ``None`` means "the search space's default".

    Attributes mirror the command-line flags; see ``atldas search --help``.
    """

    space: str = "matting"
    strategy: str = "atldas"
    data: str = "synthetic"
    backgrounds: Optional[str] = None
    epochs: Optional[int] = None
    steps_per_epoch: Optional[int] = None
    arch_steps_per_epoch: Optional[int] = None
    batch_size: Optional[int] = None
    crop: Optional[int] = None
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = None
    # budget
    target_macs: Optional[float] = None
    target_params: Optional[float] = None
    target_latency_ms: Optional[float] = None
    budget_form: str = "hinge"
    lam_init: float = 1.0
    lam_lr: float = 2.0
    lut: Optional[str] = None
    # search space knobs
    C: Optional[int] = None
    layers: Optional[int] = None
    target_C: Optional[int] = None
    target_layers: Optional[int] = None
    k_min: int = 2
    k_max: int = 2
    input_size: Optional[int] = None
    # optimisation
    w_lr: float = 2e-3
    w_weight_decay: float = 1e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-2
    arch_weight_decay: float = 0.0
    arch_samples: int = 1
    channels_last: bool = True  # supernet and inputs in channels_last (atldas.utils.memory_format)
    # sampling and pruning schedule
    warmup_epochs: Optional[int] = None
    tau_max: float = 5.0
    tau_min: float = 0.1
    eps_min: float = 0.2
    prune_every: int = 1
    prune_ratio: float = 0.3
    # random strategy
    random_candidates: int = 16
    # output
    out: Optional[str] = None
    tensorboard: bool = True
    plots: bool = True
    progress: bool = True


def _coerce(value: str, annotation: Any, key: str) -> Any:
    """Turn the text of ``--set key=value`` into the field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union and type(None) in args:
        if value.lower() in ("none", "null", ""):
            return None
        annotation = next(a for a in args if a is not type(None))
    try:
        if annotation is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            return int(value)
        if annotation is float:
            from atldas.cost import parse_amount

            return parse_amount(value)
        return str(value)
    except (ValueError, ConfigError):
        raise ConfigError(f"--set {key}={value}: expected a value of type "
                          f"{getattr(annotation, '__name__', annotation)}") from None


def apply_overrides(cfg: C, pairs: Iterable[str]) -> C:
    """Apply ``key=value`` strings to a config dataclass (unknown keys list the known ones)."""
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in fields(cfg)}  # type: ignore[arg-type]
    changes: Dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in names:
            raise ConfigError(f"--set: unknown key {key!r}; known keys: {', '.join(sorted(names))}")
        changes[key] = _coerce(value.strip(), hints[key], key)
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def load_yaml(cls: Type[C], path: str | os.PathLike[str]) -> C:
    """Read a config dataclass from YAML (unknown keys are an error naming them)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{p}: unknown keys {', '.join(unknown)}; known keys: {', '.join(sorted(names))}")
    return cls(**data)


def save_yaml(cfg: Any, path: str | os.PathLike[str]) -> None:
    """Write a config dataclass to YAML atomically."""
    write_text_atomic(path, yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


@dataclass
class RetrainConfig:
    """Configuration of ``atldas retrain`` (see :mod:`atldas.retrain`).

    The defaults train a small network (e.g. the genotype of a ``tiny`` search, or a genotype with
    ``--set C=16 --set layers=5``) on the synthetic data in a few minutes on a 2-core CPU. ``C`` and
    ``layers`` override the macro of a genotype / CheapMatting-macro MODEL (None: the model's own).
    """

    model: str = ""
    data: str = "synthetic"
    backgrounds: Optional[str] = None
    epochs: int = 10
    steps_per_epoch: int = 30
    batch_size: int = 8
    crop: int = 96
    val_count: int = 16
    val_size: int = 128
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = None
    # macro overrides (genotype / CheapMatting-macro models only)
    C: Optional[int] = None
    layers: Optional[int] = None
    # optimisation
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_epochs: float = 0.5
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    amp: str = "auto"
    channels_last: bool = True
    ema: float = 0.0
    drop_path: float = 0.0
    # losses (atldas.matting.losses.MattingLoss weights)
    loss_l1: float = 1.0
    loss_lap: float = 1.0
    loss_comp: float = 0.5
    # output
    out: Optional[str] = None
    tensorboard: bool = True
    tb_images: int = 4
    progress: bool = True
