"""The fixed, image-independent part of a search step: CPU time per step against the crop size.

    python experiments/bench_search_overhead.py [--space matting] [--crops 32 64 96 128] [--steps 10] [--rounds 3]

For each crop the default search of ``--space`` runs one epoch of ``--steps`` weight and arch steps
past a warm-up epoch (one torch thread, no TensorBoard, no plots); the figure is process CPU seconds
per step (a weight step and an arch step), the minimum over ``--rounds`` interleaved rounds. A least
squares line ``CPU = fixed + per_pixel * batch * crop^2`` through the points separates the fixed cost
(sampling, plan building, hundreds of small ops, the optimizer over thousands of tensors) from the
part that scales with the image. Run it on a quiet machine; to compare two versions of the code, run
it in each checkout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from atldas.run import Run, make_search_config  # noqa: E402


def step_cpu(space: str, crop: int, steps: int) -> float:
    """CPU seconds per search step (weight + arch step) at ``crop``, after a warm-up epoch."""
    cfg = make_search_config(space=space, sets=[
        "epochs=3", "warmup_epochs=0", f"crop={crop}", f"steps_per_epoch={steps}", f"arch_steps_per_epoch={steps}",
        "tensorboard=false", "progress=false", "plots=false"])
    run = Run(cfg)
    run.fit(epochs=1)
    t = time.process_time()
    run.fit(epochs=2)
    return (time.process_time() - t) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--space", default="matting")
    p.add_argument("--crops", type=int, nargs="+", default=[32, 64, 96, 128])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    import logging

    logging.getLogger("atldas").setLevel(logging.WARNING)
    batch = int(make_search_config(space=args.space).data.batch_size)
    best = {c: float("inf") for c in args.crops}
    for _ in range(args.rounds):
        for c in args.crops:
            best[c] = min(best[c], step_cpu(args.space, c, args.steps))
    crops = sorted(set(args.crops))
    xs = [batch * c * c for c in crops]
    ys = [best[c] for c in crops]
    print(f"space {args.space}, batch {batch}, one thread; CPU s per step (weight + arch), min of {args.rounds}")
    if len(crops) < 2:  # one crop (the planted space has only 12): no line to fit
        print(f"  crop {crops[0]:4d}: {ys[0]:.3f} s   (give two or more --crops to separate the fixed part)")
        return 0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    fixed = my - slope * mx
    for c, y in zip(crops, ys):
        print(f"  crop {c:4d}: {y:.3f} s   fixed share {fixed / y:5.1%}")
    print(f"fit: {fixed:.3f} s fixed + {slope * 1e6:.2f} us per pixel (batch x crop^2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
