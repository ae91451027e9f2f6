"""Seeding and RNG state capture, so a resumed run continues the same random streams."""

from __future__ import annotations

import logging
import random
from typing import Any, Dict

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    """The global RNG states as plain checkpoint data (tensors, lists, ints; no numpy objects)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_threads(saved: Any, *, configured: Any) -> None:
    """On ``--resume``, run on the torch thread count the run ran on (``saved``, from its checkpoint),
    since reductions, and so the floats of a run, depend on it; unless the run's config fixes a count
    (``configured``), which the caller has already applied. Without it, the thread policy of the
    resuming command (chosen from the machine's load) would make the resumed run end elsewhere."""
    if configured is None and isinstance(saved, int) and saved >= 1 and saved != torch.get_num_threads():
        logging.getLogger("atldas").info("resuming on %d torch thread(s), as the run ran (its results depend on "
                                         "the count)", saved)
        torch.set_num_threads(saved)
