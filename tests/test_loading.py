"""Data loading: one DataLoader per split and run, and the same batches (so the same search and the
same retrain) whatever the number of worker processes."""

from __future__ import annotations

import torch

import atldas
from atldas.retrain import retrain
from atldas.data.loading import EpochBatches, EpochView, make_loader, seeded_order


class _PerEpoch(torch.utils.data.Dataset):
    """A dataset whose samples depend on ``set_epoch`` (as the composed training sets' do)."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int):
        return {"x": torch.tensor([self.epoch * 100 + i])}


def test_batches_are_the_epochs_whatever_the_worker_count():
    order = lambda epoch: seeded_order(10, seed=epoch, drop_last_of=3)  # noqa: E731
    seen = {}
    for workers in (0, 2):
        sampler = EpochBatches(order, batch_size=3, steps=5)
        loader = make_loader(_PerEpoch(), sampler, num_workers=workers)
        seen[workers] = []
        for epoch in (0, 1, 2):  # the same loader every epoch (persistent workers when it has workers)
            sampler.set_epoch(epoch)
            seen[workers].append([b["x"].flatten().tolist() for b in loader])
    assert seen[0] == seen[2]
    assert [len(e) for e in seen[0]] == [3, 3, 3]  # 9 of 10 samples: drop_last, fewer steps than asked
    assert all(v // 100 == epoch for epoch, e in enumerate(seen[0]) for b in e for v in b)  # set_epoch reached
    assert EpochView(_PerEpoch())[(4, 2)]["x"].item() == 402


def test_search_is_the_same_with_data_workers():
    states = {}
    for workers in (0, 1):
        cfg = atldas.make_search_config(space="tiny", sets=["epochs=2", f"num_workers={workers}", "seed=4"])
        run = atldas.Run(cfg)
        run.fit()
        states[workers] = {k: v.clone() for k, v in run.net.arch.state_dict().items()}, run.final_genotype().hash()
    (a, ga), (b, gb) = states[0], states[1]
    assert ga == gb
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_retrain_is_the_same_with_data_workers(tmp_path):
    weights = {}
    for workers in (0, 1):
        cfg = atldas.RetrainConfig(model="cnn_baseline_tiny", epochs=1, steps_per_epoch=3, batch_size=2, crop=64,
                                   val_count=2, val_size=64, num_workers=workers, out=str(tmp_path / str(workers)),
                                   tensorboard=False, progress=False)
        out = retrain(cfg)
        weights[workers] = torch.load(out / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_opencv_runs_on_the_calling_thread_once_workers_are_forked():
    """A forked worker's first cv2 call waited forever for the parent's OpenCV pool threads (a retrain
    with a data worker hung that way under load): making a loader with workers turns the pool off."""
    import subprocess
    import sys

    code = ("import cv2, torch; from atldas.data.loading import EpochBatches, make_loader; "
            "cv2.setNumThreads(2); assert cv2.getNumThreads() == 2; "
            "make_loader(list(range(4)), EpochBatches(lambda e: range(4), batch_size=2, steps=2), num_workers=0); "
            "assert cv2.getNumThreads() == 2; "
            "make_loader(list(range(4)), EpochBatches(lambda e: range(4), batch_size=2, steps=2), num_workers=1); "
            "print(cv2.getNumThreads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr


def test_the_loader_draws_nothing_from_the_global_rng():
    """A DataLoader without its own generator drew its workers' base seed from torch's global RNG
    whenever an iterator started (every epoch without workers, once with persistent ones): the drop-path
    masks of a retrain then depended on the worker count and shifted in a resumed run."""
    for workers in (0, 1):
        sampler = EpochBatches(lambda e: range(10), batch_size=2, steps=2)
        loader = make_loader(_PerEpoch(), sampler, num_workers=workers)
        torch.manual_seed(0)
        before = torch.get_rng_state()
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            list(loader)
        assert torch.equal(torch.get_rng_state(), before), workers
