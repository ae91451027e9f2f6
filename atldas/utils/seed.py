"""Seeding and RNG state capture, so a resumed run continues the same random streams."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _cuda_index(device: Any) -> Optional[int]:
    """The CUDA device whose generator a run on ``device`` draws from (None: not a CUDA run here)."""
    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type != "cuda" or not torch.cuda.is_available():
        return None
    return dev.index if dev.index is not None else torch.cuda.current_device()  # torchrun: cuda:LOCAL_RANK


def rng_state(device: Any = None) -> Dict[str, Any]:
    """The global RNG states as plain checkpoint data (tensors, lists, ints; no numpy objects); with a
    CUDA ``device``, the generator of that one GPU (the one the run draws from: under torchrun every
    rank's GPU draws alike, so rank 0's state is every rank's)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    index = _cuda_index(device)
    if index is not None:
        state["cuda"] = torch.cuda.get_rng_state(index)
    return state


def set_rng_state(state: Dict[str, Any], device: Any = None) -> None:
    """Restore what :func:`rng_state` captured; the CUDA state goes to the GPU the run on ``device`` draws
    from (a checkpoint of an earlier atldas holds one state per GPU of the machine that wrote it: the
    one of that index, else the first; setting them all failed on a machine with fewer GPUs)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    index = _cuda_index(device)
    if "cuda" in state and index is not None:
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):
            cuda = cuda[index] if index < len(cuda) else cuda[0]
        torch.cuda.set_rng_state(cuda, index)


def pin_threads(cfg: Any) -> Any:
    """``cfg`` (a search or retrain config) with ``threads`` set to torch's current count where it names
    none and runs on the CPU: a fresh run's ``config.yaml`` records the count it runs at (chosen by the
    thread policy from the machine's load when no ``--threads`` was given), so ``--config
    RUN/config.yaml`` repeats the run's floats, which depend on it. A GPU run's floats do not, and its
    host's count would be imposed on the machine that derives or reruns it: left unset."""
    if cfg.threads is not None or torch.device(cfg.device).type != "cpu":
        return cfg
    return dataclasses.replace(cfg, threads=torch.get_num_threads())


def resume_threads(saved: Any, *, configured: Any) -> None:
    """On ``--resume``, run on the torch thread count the run ran on (``saved``, from its checkpoint),
    since reductions, and so the floats of a run, depend on it; unless the run's config fixes a count
    (``configured``), which the caller has already applied. Without it, the thread policy of the
    resuming command (chosen from the machine's load) would make the resumed run end elsewhere."""
    if configured is None and isinstance(saved, int) and saved >= 1 and saved != torch.get_num_threads():
        logging.getLogger("atldas").info("resuming on %d torch thread(s), as the run ran (its results depend on "
                                         "the count)", saved)
        torch.set_num_threads(saved)


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """Run the block on ``n`` torch threads (None or below 1: the current count), then put back the count
    it found."""
    prev = torch.get_num_threads()
    if n is not None and n >= 1 and n != prev:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != prev:
            torch.set_num_threads(prev)
