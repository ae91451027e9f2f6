"""Search spaces, registered by name: ``matting`` (CheapMatting macro), ``tiny`` (seconds, for tests
and CI), ``darts_cifar`` (the DARTS CIFAR network), ``planted`` (the ground-truth task's networks);
see each module. ``get_space(name)`` raises a
ConfigError listing the known names; ``register_space(space)`` adds one."""

from __future__ import annotations

from atldas.models.zoo import KNOWN_SPACES
from atldas.registry import Registry
from search_spaces.base import SearchSpace, SpaceCfg
from search_spaces.darts_cifar import DARTS_CIFAR
from search_spaces.matting import MATTING, TINY
from search_spaces.planted import PLANTED

__all__ = ["SPACES", "SearchSpace", "SpaceCfg", "get_space", "register_space"]

#: Space name -> registered :class:`SearchSpace` (a template; ``bind`` it to knobs).
SPACES: Registry[SearchSpace] = Registry("search space")


def register_space(space: SearchSpace) -> SearchSpace:
    """Register ``space`` under ``space.name`` (a duplicate raises ValueError); genotype files that
    name it are then accepted where genotypes are read."""
    if not isinstance(space, SearchSpace):
        raise TypeError(f"register_space expects a SearchSpace (e.g. type(get_space('tiny'))(name=..., ...)), "
                        f"got {type(space).__name__}")
    SPACES.add(space.name, space)
    KNOWN_SPACES.add(space.name)
    return space


def get_space(name: str) -> SearchSpace:
    """The registered search space ``name``."""
    return SPACES.get(name)


for _space in (MATTING, TINY, DARTS_CIFAR, PLANTED):
    register_space(_space)
del _space
