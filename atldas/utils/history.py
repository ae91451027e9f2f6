"""``history.jsonl``: one JSON line per epoch, truncated on resume to the epochs before it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

from atldas.utils.atomic import write_text_atomic

log = logging.getLogger("atldas")


def _row(line: str) -> Optional[Dict[str, Any]]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:  # a line cut short by a kill in the middle of an append
        return None
    return row if isinstance(row, dict) else None


def last_row(path: Path) -> Optional[Dict[str, Any]]:
    """The last whole row of a ``history.jsonl`` (None without one)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return next((r for r in map(_row, reversed(lines)) if r is not None), None)


class History:
    """Append-only JSONL log; on construction drops the lines of epochs >= ``start`` (resume) and
    any line a kill cut short, rewriting the file atomically."""

    def __init__(self, path: Path, start: int) -> None:
        self.path = Path(path)
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        keep = [ln for ln in lines if (row := _row(ln)) is not None and row.get("epoch", -1) < start]
        held = len({_row(ln).get("epoch") for ln in keep})
        if held < start:  # a resume whose history was removed or cut short: it goes on without those rows
            log.warning("%s holds %d of the %d epochs before this resume (removed or cut short); the rows of "
                        "the missing epochs are lost, the run itself is not", self.path, held, start)
        write_text_atomic(self.path, "".join(ln + "\n" for ln in keep))

    def append(self, row: Dict[str, Any]) -> None:
        """Add ``row`` (JSON-serialisable values) as one line."""
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
