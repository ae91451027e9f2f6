"""``history.jsonl``: one JSON line per epoch, truncated on resume to the epochs before it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict


class History:
    """Append-only JSONL log; on construction drops the lines of epochs >= ``start`` (resume)."""

    def __init__(self, path: Path, start: int) -> None:
        self.path = Path(path)
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("epoch", -1) < start]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def append(self, row: Dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
