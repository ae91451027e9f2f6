"""The one TensorBoard helper: a writer for ``RUN_DIR/tb`` (or none), and scalar rows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger("atldas")

__all__ = ["open_writer", "add_scalars"]


def open_writer(run_dir: Path, *, enabled: bool = True, start: int = 0):
    """A ``SummaryWriter`` on ``run_dir / "tb"``, or None when disabled or tensorboard is missing.
    ``start``: the epoch a resumed run goes on from; the points of that epoch and later that an
    interrupted run wrote are dropped (``purge_step``), as ``history.jsonl`` drops its lines."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is heavy to import
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        log.warning("tensorboard is not installed; no tb/ events")
        return None
    return SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=start if start > 0 else None)


def add_scalars(writer, row: Mapping[str, Any], step: int, *, skip: Iterable[str] = ()) -> None:
    """Every int/float value of ``row`` (bools and ``skip`` keys excepted) as a scalar at ``step``.

    One ``add_scalar`` per key: ``SummaryWriter.add_scalars`` would make a run folder per key.
    """
    if writer is None:
        return
    skip = set(skip)
    for k, v in row.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in skip:
            writer.add_scalar(k, v, step)
