"""Named genotypes (JSON files in this package) and the named models built from them.

    >>> from derived_models import get_genotype, build_model
    >>> g = get_genotype("atldas_cifar100")          # the cell of the released CheapMatting
    >>> net = build_model("cheapmatting")             # the released network, 6,023,025 parameters
    >>> net = build_model("cheapmatting", head_block="sep")   # a variant: any CheapMatting knob

Genotypes: ``atldas_cifar100`` (ATL-DAS, CIFAR-100), ``darts_v2`` (DARTS second order),
``pc_darts_cifar`` (PC-DARTS). Their ``cost`` fields are those of the CheapMatting macro (C = 48,
14 cells) at 1x6x1024x1024. Models: ``cheapmatting`` (ATLDAS_cifar100 in the CheapMatting macro,
the released network) and ``cheapmatting_darts_v2``, ``cheapmatting_pc_darts`` (the same macro
with the other cells).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from atldas.errors import ConfigError
from atldas.genotype import Genotype
from atldas.registry import Registry

__all__ = ["GENOTYPES", "MODELS", "ModelSpec", "get_genotype", "resolve_genotype", "get_model_spec",
           "build_model", "genotype_names", "model_names"]

_HERE = Path(__file__).resolve().parent

#: Genotype name -> JSON file name in this package.
GENOTYPES: Registry[str] = Registry("genotype")
GENOTYPES.add("atldas_cifar100", "atldas_cifar100.json")
GENOTYPES.add("darts_v2", "darts_v2.json")
GENOTYPES.add("pc_darts_cifar", "pc_darts_cifar.json")


@dataclass(frozen=True)
class ModelSpec:
    """A named model: a genotype in a macro network with fixed knobs.

    Attributes:
        name: model name.
        genotype: a name in :data:`GENOTYPES`.
        macro: macro network (``"cheapmatting"``).
        knobs: keyword arguments of the macro builder (C, layers, ...).
        description: one line for listings.
    """

    name: str
    genotype: str
    macro: str = "cheapmatting"
    knobs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


#: Model name -> :class:`ModelSpec`.
MODELS: Registry[ModelSpec] = Registry("model")
for _spec in (
    ModelSpec(name="cheapmatting", genotype="atldas_cifar100", knobs={"C": 48, "layers": 14},
              description="released CheapMatting: ATLDAS_cifar100 cells, C=48, 14 cells, 6.02 M params"),
    ModelSpec(name="cheapmatting_darts_v2", genotype="darts_v2", knobs={"C": 48, "layers": 14},
              description="CheapMatting macro with the DARTS (second order) cells"),
    ModelSpec(name="cheapmatting_pc_darts", genotype="pc_darts_cifar", knobs={"C": 48, "layers": 14},
              description="CheapMatting macro with the PC-DARTS cells"),
):
    MODELS.add(_spec.name, _spec)
del _spec


def genotype_names() -> list[str]:
    """Registered genotype names, sorted."""
    return GENOTYPES.names()


def model_names() -> list[str]:
    """Registered model names, sorted."""
    return MODELS.names()


def get_genotype(name: str) -> Genotype:
    """The registered genotype ``name``; a miss raises ConfigError listing the known names."""
    return Genotype.load(_HERE / GENOTYPES.get(name))


def resolve_genotype(name_or_path: str | os.PathLike[str] | Genotype) -> Genotype:
    """A Genotype, a registered genotype name, or a path to a genotype file (JSON or DARTS string)."""
    if isinstance(name_or_path, Genotype):
        return name_or_path
    text = os.fspath(name_or_path)
    if text in GENOTYPES:
        return get_genotype(text)
    if os.path.exists(text):
        return Genotype.load(text)
    raise ConfigError(f"unknown genotype {text!r}: not a file, and not one of the known genotypes: "
                      f"{', '.join(GENOTYPES.names())}")


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of model ``name``; a miss raises ConfigError listing the known names."""
    return MODELS.get(name)


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a name in :data:`MODELS`.
        **overrides: macro knobs replacing the registered ones (e.g. ``C=32``, ``head_block="sep"``);
            ``genotype`` may be a Genotype, a genotype name or a genotype file.

    Raises:
        ConfigError: unknown model name (listing the known ones) or an unknown knob.
    """
    spec = MODELS.get(name)
    knobs = {**dict(spec.knobs), **overrides}
    genotype = resolve_genotype(knobs.pop("genotype", spec.genotype))
    if spec.macro == "cheapmatting":
        from atldas.models.cheapmatting import build_cheapmatting

        return build_cheapmatting(genotype=genotype, **knobs)
    raise ConfigError(f"model {name!r} names an unknown macro {spec.macro!r}; known: cheapmatting")
