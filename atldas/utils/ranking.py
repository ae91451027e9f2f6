"""Ranking scores where lower is better, a non-finite score (a diverged fit, a NaN loss) last."""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Tuple, TypeVar

from atldas.errors import AtldasError

K = TypeVar("K", bound=Hashable)


def score_key(value: float) -> Tuple[bool, float]:
    """A sort key: finite scores first, lowest first, then the non-finite ones (NaN compares false with
    everything, so ``min`` and ``sorted`` over raw scores could rank a NaN first).

    >>> sorted([2.0, float("nan"), 1.0], key=score_key)
    [1.0, 2.0, nan]
    """
    finite = math.isfinite(value)
    return (not finite, value if finite else 0.0)


def lowest(scores: Mapping[K, float], *, what: str, hint: str) -> K:
    """The key of the lowest finite score; an AtldasError naming ``what``, with ``hint`` (how to mend it),
    when no score is finite."""
    if not any(math.isfinite(v) for v in scores.values()):
        raise AtldasError(f"{what}: no finite score among {len(scores)} ({', '.join(map(str, list(scores.values())[:3]))}"
                          f"{', ...' if len(scores) > 3 else ''}); {hint}")
    return min(scores, key=lambda k: score_key(scores[k]))
