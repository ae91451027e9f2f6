"""The DataLoader of search and retrain: built once per run, with persistent workers when it has
workers, and batches that are a pure function of (seed, epoch) whatever the worker count.

A run gives an *order* per epoch (``order(epoch) -> indices``); :class:`EpochBatches` cuts it into
``steps`` batches of ``(epoch, index)`` keys, and :class:`EpochView` reads a dataset by those keys, so
a dataset that draws per epoch (``set_epoch``: composed training sets) sees its epoch in every
worker process.

    >>> ds = torch.utils.data.TensorDataset(torch.arange(100.0))
    >>> s = 0  # the run's seed
    >>> sampler = EpochBatches(lambda e: seeded_order(len(ds), seed=s * 1000 + e), batch_size=8, steps=3)
    >>> loader = make_loader(ds, sampler, num_workers=0)
    >>> sampler.set_epoch(3); batches = list(loader)
    >>> len(batches), batches[0][0].shape
    (3, torch.Size([8]))
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator, List

import cv2
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

__all__ = ["EpochBatches", "EpochView", "make_loader", "seeded_order"]


def seeded_order(n: int, *, seed: int, start: int = 0, drop_last_of: int = 1) -> List[int]:
    """``start + randperm(n)`` from a generator seeded with ``seed``, truncated to a multiple of
    ``drop_last_of`` (a DataLoader's ``drop_last``)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [start + i for i in perm[:n - n % drop_last_of]]


class EpochBatches(Sampler):
    """``steps`` batches of ``(epoch, index)`` keys from ``order(epoch)`` (fewer if it runs out).

    Args:
        order: the epoch's indices, in order (may be infinite).
        batch_size: keys per batch.
        steps: batches per epoch.
    """

    def __init__(self, order: Callable[[int], Iterable[int]], *, batch_size: int, steps: int) -> None:
        self.order, self.batch_size, self.steps = order, batch_size, steps
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch the next iteration draws."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[List[tuple]]:
        it = iter(self.order(self.epoch))
        for _ in range(self.steps):
            batch = [(self.epoch, i) for i in itertools.islice(it, self.batch_size)]
            if len(batch) < self.batch_size:
                return
            yield batch

    def __len__(self) -> int:
        return self.steps


class EpochView(Dataset):
    """A dataset read by ``(epoch, index)`` keys (see the module docstring)."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        base = ds.dataset if isinstance(ds, Subset) else ds
        self._set_epoch = getattr(base, "set_epoch", None)

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple) -> Any:
        epoch, index = key
        if self._set_epoch is not None:
            self._set_epoch(epoch)
        return self.ds[index]


def _one_thread(worker_id: int) -> None:
    """Worker processes run torch on one thread: a worker's OpenMP threads spinning beside the
    training process's on a small CPU make both many times slower."""
    torch.set_num_threads(1)


def make_loader(ds: Dataset, sampler: EpochBatches, *, num_workers: int = 0, pin_memory: bool = False,
                seed: int = 0) -> DataLoader:
    """The one DataLoader of a split (``default_collate``; persistent, single-threaded workers when it
    has workers).

    Its own generator (seeded with ``seed``) draws the workers' base seed: a DataLoader without one
    draws it from torch's global RNG whenever an iterator starts (every epoch without workers, once
    with persistent workers), so the global stream, and whatever draws from it (drop-path masks),
    depended on the worker count and shifted in a resumed run.

    With workers, OpenCV runs on the calling thread in this process from then on
    (``cv2.setNumThreads(0)``): the workers are forked, and OpenCV's thread pool does not survive a
    fork (a worker's first ``cv2`` call waited forever on a lock of pool threads that exist only in the
    parent: a retrain hung that way under load). OpenCV's results do not depend on its thread count."""
    if num_workers > 0:
        cv2.setNumThreads(0)
    return DataLoader(EpochView(ds), batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0, collate_fn=default_collate,
                      worker_init_fn=_one_thread if num_workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed))
