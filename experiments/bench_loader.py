"""Which ``num_workers`` default? Wall time of the default matting search's steps and of the default
retrain's steps with the data made in the training process (0) or in worker processes (1, 2).

    python experiments/bench_loader.py [--workers 0 1 2] [--steps 20] [--threads 2]

The search figure is seconds per step (a weight and an arch step) of the epoch after a warm-up epoch;
the retrain figure is a whole two-epoch retrain's wall time per optimizer step (start-up, data
workers and a one-image validation included: no warm-up). CPU timings on a
shared machine vary: run it on a quiet one and compare the columns, not the absolute values.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from atldas.retrain import RetrainConfig, retrain  # noqa: E402
from atldas.run import Run, make_search_config  # noqa: E402


def search_step(workers: int, steps: int) -> float:
    """Seconds per search step (one epoch after warm-up: a weight step and an arch step each)."""
    cfg = make_search_config(space="matting", sets=[f"num_workers={workers}", "epochs=2", "warmup_epochs=0",
                                                    f"steps_per_epoch={steps}", f"arch_steps_per_epoch={steps}",
                                                    "tensorboard=false", "progress=false"])
    run = Run(cfg)
    run.fit(epochs=1)  # warm-up epoch: workers started, allocator warm
    t0 = time.perf_counter()
    run.fit(epochs=2)
    return (time.perf_counter() - t0) / steps


def retrain_step(workers: int, steps: int, model: str) -> float:
    """Seconds per retrain step of the default recipe on synthetic data (start-up and a one-image
    validation included)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RetrainConfig(model=model, out=str(Path(tmp) / "r"), epochs=2, steps_per_epoch=steps,
                            num_workers=workers, val_count=1, val_size=64, tensorboard=False, progress=False)
        t0 = time.perf_counter()
        retrain(cfg)
        return (time.perf_counter() - t0) / (2 * steps)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="cheapmatting", help="MODEL to retrain (default: the released network)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{args.threads} torch threads, {args.steps} steps per figure")
    print("| num_workers | search s/step | retrain s/step |")
    print("| ---: | ---: | ---: |")
    for w in args.workers:
        s = search_step(w, args.steps)
        r = retrain_step(w, args.steps, args.model)
        print(f"| {w} | {s:.3f} | {r:.3f} |", flush=True)


if __name__ == "__main__":
    main()
