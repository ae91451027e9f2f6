"""Data-parallel runs under ``torchrun``: one process per device, the same model on every rank.

``torchrun --nproc_per_node=N -m atldas search ...`` (or ``retrain``) starts N processes with
``RANK``/``WORLD_SIZE`` set; :func:`init_from_env` joins them into a process group (``gloo`` on the
CPU, ``nccl`` on CUDA, each rank on ``cuda:LOCAL_RANK``). How atldas keeps the ranks one run:

- every rank loads the same global batch and trains on its own slice (:func:`shard`), so the global
  batch is ``batch_size`` whatever the number of processes (it must divide by N);
- the weight gradients are averaged over the ranks after each backward (:func:`average_`), before
  the clip and the optimiser step: the same update on every rank. This is what DDP's reducer does;
  atldas calls it itself because the sampled child changes every step: the parameters of the
  candidates not sampled have no gradient, on every rank alike (the same child everywhere), so they
  are skipped, where DDP would need ``find_unused_parameters=True`` and a graph walk per step;
- every random choice that picks a child comes from generators seeded by the run's seed (the same
  on every rank), and the arch gradients are averaged too, so the arch logits stay identical;
- rank 0 alone writes the run directory; every rank derives the genotype and the ranks check that
  they agree (:func:`check_same`).

With one process (no ``torchrun``) every function here is a no-op.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.distributed as dist

from atldas.errors import AtldasError, ConfigError, first_line
from atldas.utils.device import resolve_device, resume_device_hint

__all__ = ["init_from_env", "world_size", "rank", "is_main", "check_batch", "shard", "average_", "mean", "mean_values", "check_same", "barrier", "wait_for_main"]

log = logging.getLogger("atldas")


def world_size() -> int:
    """Processes in the run (1 without torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes outputs (rank 0)."""
    return rank() == 0


def init_from_env(device: str = "cpu", *, config_yaml: Optional[object] = None) -> int:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (once); returns the world size.
    Ranks other than 0 log warnings only. ``config_yaml``: a resumed run's, where its device is set
    (the errors name it instead of ``--device``, which ``--resume`` refuses)."""
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n <= 1 or (dist.is_available() and dist.is_initialized()):
        return world_size()
    if not dist.is_available():
        raise AtldasError("WORLD_SIZE > 1 but this torch has no torch.distributed")
    if str(device).startswith("cuda:"):  # every rank would put its model on that one GPU
        fix = "pass --device cuda" if config_yaml is None else f"set `device: cuda` in {config_yaml}"
        raise ConfigError(f"device {device} under torchrun: each process runs on its own GPU, cuda:LOCAL_RANK; "
                          f"{fix} (CUDA_VISIBLE_DEVICES picks the GPUs)")
    hint = {} if config_yaml is None else {"hint": resume_device_hint(config_yaml)}
    cuda = resolve_device(device, **hint).type == "cuda"  # cuda on a machine without: one line, every rank
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"torchrun started local rank {local}, but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s): start at most that many processes "
                              "per node (--nproc_per_node)")
        torch.cuda.set_device(local)
    try:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    except (ValueError, RuntimeError) as exc:  # RANK or MASTER_ADDR missing, a rendezvous that failed
        raise AtldasError(f"WORLD_SIZE={n} but the process group cannot start ({first_line(exc)}); start "
                          "data-parallel runs with torchrun") from None
    if not is_main():
        logging.getLogger("atldas").setLevel(logging.WARNING)
    log.info("data-parallel run: %d processes (%s)", world_size(), dist.get_backend())
    return world_size()


def check_batch(batch_size: int) -> None:
    """ConfigError unless the global ``batch_size`` divides by the processes (every rank trains on its slice)."""
    n = world_size()
    if n > 1 and batch_size % n:
        raise ConfigError(f"batch_size {batch_size} does not divide by the {n} processes; use a multiple of {n}")


def shard(batch: Dict[str, Any], batch_size: int) -> Dict[str, Any]:
    """This rank's contiguous slice of every batch-sized tensor of ``batch``."""
    n = world_size()
    if n == 1:
        return batch
    check_batch(batch_size)
    k, r = batch_size // n, rank()
    return {key: v[r * k:(r + 1) * k] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == batch_size else v
            for key, v in batch.items()}


def _comm_device() -> torch.device:
    """Where the process group reduces: this rank's GPU under nccl (the weight gradients are there;
    the arch gradients, on the CPU, travel there and back), else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def average_(tensors: Iterable[torch.Tensor]) -> None:
    """Average tensors over the ranks, in place (one flat all-reduce)."""
    if world_size() == 1:
        return
    ts: List[torch.Tensor] = [t for t in tensors if t is not None]
    if not ts:
        return
    flat = torch.cat([t.detach().reshape(-1).to(_comm_device(), torch.float32) for t in ts])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for t in ts:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t).to(t.dtype))
        offset += n


def mean(value: float) -> float:
    """The mean of a number over the ranks."""
    if world_size() == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t) / world_size()


def mean_values(values: Dict[str, float]) -> Dict[str, float]:
    """Each value averaged over the ranks, in one all-reduce (every rank passes the same keys): an
    epoch's loss sums, which each rank took over its own part of the batch."""
    if world_size() == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, (t / world_size()).tolist()))


def check_same(value: str, *, what: str) -> None:
    """Raise on every rank when the ranks hold different ``value``s (e.g. a genotype's hash)."""
    if world_size() == 1:
        return
    values: List[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) != 1:
        raise AtldasError(f"the {world_size()} processes disagree on the {what} ({', '.join(map(str, values))}); "
                          "please report this")


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if world_size() > 1:
        dist.barrier()


def wait_for_main() -> None:
    """A rank other than 0 waits for rank 0 to check and write the run directory; when rank 0 stopped
    instead (a config error, an existing ``--out``: its one-line error says why), one line here too,
    not the process group's traceback."""
    try:
        barrier()
    except RuntimeError:  # gloo: the peer closed the connection
        raise AtldasError(f"rank {rank()}: rank 0 stopped before the run started (its error says why)") from None
