"""Whether a progress bar is drawn: asked for, and stderr is a terminal."""

from __future__ import annotations

import sys

__all__ = ["show_progress"]


def show_progress(progress: bool) -> bool:
    """``progress`` and stderr is a terminal (False where stderr is None, closed, or an object
    without ``isatty``, as in some notebooks, services and test runners)."""
    if not progress:
        return False
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False
