"""A run directory, shared by search and retrain: ``config.yaml``, the atomic checkpoint,
``history.jsonl``, ``tb/``, and the checks before a run starts or resumes.

    RUN_DIR/
      config.yaml     the resolved config (every default written out)
      <checkpoint>    written atomically, loads with torch.load(weights_only=True)
      history.jsonl   one line per epoch
      tb/             TensorBoard events
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

from atldas.config import read_yaml, save_yaml
from atldas.errors import AtldasError
from atldas.utils.checkpoint import load_checkpoint, save_checkpoint
from atldas.utils.history import History
from atldas.utils.tb import open_writer

log = logging.getLogger("atldas")

__all__ = ["RunDir"]

CONFIG = "config.yaml"


class RunDir:
    """One run directory.

    Args:
        path: the folder.
        checkpoint: the checkpoint's file name (``checkpoint.pt`` for search, ``last.pt`` for retrain).
        kind: what runs here, for messages (``search``, ``retrain``).
    """

    def __init__(self, path: Path | str, *, checkpoint: str, kind: str) -> None:
        self.path = Path(path)
        self.checkpoint = self.path / checkpoint
        self.kind = kind

    def check_new(self) -> None:
        """Refuse to start a fresh run where one already has a checkpoint."""
        if self.checkpoint.exists():
            raise AtldasError(f"{self.path} already holds a {self.kind} checkpoint; continue it with --resume "
                              "or choose another --out")

    def check_resume(self) -> None:
        """Refuse to resume where there is no checkpoint."""
        if not self.checkpoint.is_file():
            raise AtldasError(f"--resume: {self.checkpoint} does not exist; start without --resume")
        if not (self.path / CONFIG).is_file():
            raise AtldasError(f"--resume: {self.path / CONFIG} does not exist; this is not a {self.kind} run directory")

    def read_config(self) -> Dict[str, Any]:
        """The mapping in ``config.yaml``."""
        if not (self.path / CONFIG).is_file():
            raise AtldasError(f"{self.path}: not a {self.kind} run directory (no {CONFIG})")
        return read_yaml(self.path / CONFIG)

    def write_config(self, cfg: Any) -> None:
        """Write the resolved config atomically (the folder is created)."""
        self.path.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, self.path / CONFIG)

    def save(self, state: Dict[str, Any], name: Optional[str] = None) -> Path:
        """Write a checkpoint atomically (``name`` beside the main one, e.g. ``best.pt``)."""
        path = self.checkpoint if name is None else self.path / name
        save_checkpoint(state, path)
        return path

    def load(self, *, map_location: Any = "cpu") -> Dict[str, Any]:
        """The checkpoint (``weights_only=True``)."""
        return load_checkpoint(self.checkpoint, map_location=map_location)

    def history(self, start: int) -> History:
        """``history.jsonl``, with the lines of epochs >= ``start`` dropped (resume)."""
        return History(self.path / "history.jsonl", start)

    def writer(self, enabled: bool = True):
        """A TensorBoard writer on ``tb/`` (or None)."""
        return open_writer(self.path, enabled=enabled)
