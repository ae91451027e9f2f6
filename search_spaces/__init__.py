"""Search spaces, registered by name: ``matting`` (CheapMatting macro), ``tiny`` (seconds, for tests
and CI), ``darts_cifar`` (the DARTS CIFAR network); see each module. ``get_space(name)`` raises a
ConfigError listing the known names."""

from __future__ import annotations

from atldas.registry import Registry
from search_spaces.base import SearchSpace

SPACES: Registry[SearchSpace] = Registry("search space")


def _register_builtin() -> None:
    from search_spaces.darts_cifar import DARTS_CIFAR
    from search_spaces.matting import MATTING, TINY

    SPACES.add("matting", MATTING)
    SPACES.add("tiny", TINY)
    SPACES.add("darts_cifar", DARTS_CIFAR)


_register_builtin()


def get_space(name: str) -> SearchSpace:
    """The registered search space ``name``."""
    return SPACES.get(name)


__all__ = ["SPACES", "SearchSpace", "get_space"]
