"""Named genotypes: JSON files in this package (a values-layer package: no networks here).

    >>> from derived_models import get_genotype
    >>> g = get_genotype("atldas_cifar100")          # the cell of the released CheapMatting

Genotypes: ``atldas_cifar100`` (ATL-DAS, CIFAR-100), ``darts_v2`` (DARTS second order),
``pc_darts_cifar`` (PC-DARTS). Their ``cost`` fields are those of the CheapMatting macro (C = 48,
14 cells) at 1x6x1024x1024. The named *models* built from them (``cheapmatting``,
``cheapmatting_darts_v2``, ``cheapmatting_pc_darts``) are registered with the other models in
:mod:`atldas.models.zoo` (``atldas.create_model``, ``atldas.list_models``).
"""

from __future__ import annotations

import os
from pathlib import Path

from atldas.errors import ConfigError
from atldas.genotype import Genotype
from atldas.registry import Registry

__all__ = ["GENOTYPES", "get_genotype", "resolve_genotype", "genotype_names"]

_HERE = Path(__file__).resolve().parent

#: Genotype name -> JSON file name in this package.
GENOTYPES: Registry[str] = Registry("genotype")
GENOTYPES.add("atldas_cifar100", "atldas_cifar100.json")
GENOTYPES.add("darts_v2", "darts_v2.json")
GENOTYPES.add("pc_darts_cifar", "pc_darts_cifar.json")


def genotype_names() -> list[str]:
    """Registered genotype names, sorted."""
    return GENOTYPES.names()


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
