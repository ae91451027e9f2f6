"""What hard pruning and sampling buy: step time and peak memory of each strategy on one supernet.

    python experiments/bench_search.py [--json FILE] [--space matting] [--batch 4] [--crop 128]
                                       [--steps 6] [--device cpu|cuda] [--strategies atldas darts gdas]

Each strategy runs in its own process (so one's memory high-water mark cannot hide another's) on the
same search space, batch and crop, past warm-up (both the weight step and the arch step run). A
*step* is one weight step plus one arch step. Figures:

- ``step_s``: median wall time of a step over ``--steps`` steps (after one untimed step);
- ``peak_mb``: CPU: the peak resident memory of the process during the timed steps (``VmHWM``,
  reset through ``/proc/self/clear_refs`` once the supernet, optimizers and batches exist) minus the
  resident memory at that moment, i.e. what the steps themselves need (activations, gradients,
  optimizer state created on the first step is already there); CUDA: ``torch.cuda.max_memory_allocated``
  after a reset, likewise above the memory allocated at that moment.

With ``--prune-epochs K`` the atldas worker also runs K pruning rounds on a policy trained for a few
arch steps first, and reports the figures after pruning (``atldas_pruned``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current resident size


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker(args: argparse.Namespace) -> dict:
    import torch

    from atldas.config import SearchConfig
    from atldas.search import _collate, build_run
    from search_spaces import get_space

    torch.set_num_threads(args.threads)
    space = get_space(args.space)
    cfg = SearchConfig(space=args.space, strategy=args.worker, batch_size=args.batch, crop=args.crop,
                       C=args.C, layers=args.layers,
                       steps_per_epoch=args.steps + 1, arch_steps_per_epoch=args.steps + 1, epochs=10,
                       warmup_epochs=1, device=args.device, tensorboard=False, progress=False, seed=0)
    cfg = space.resolve(cfg)
    train, arch = space.datasets(cfg)
    batch = _collate([train[i] for i in range(args.batch)])
    abatch = _collate([arch[i] for i in range(args.batch)])
    batch = {k: (v.to(args.device).float() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    abatch = {k: (v.to(args.device).float() if isinstance(v, torch.Tensor) else v) for k, v in abatch.items()}
    x, ax = space.model_input(batch), space.model_input(abatch)
    run = build_run(cfg, Path("/tmp/bench_search_unused"))
    strat = run.strategy
    cuda = args.device.startswith("cuda")
    pruned = {}
    if args.prune_epochs and args.worker == "atldas":
        strat.set_epoch(2.0)
        for epoch in range(args.prune_epochs):
            for _ in range(args.steps):
                strat.arch_step(abatch, ax, steps_per_epoch=args.steps)
            events = strat.end_epoch(epoch + 1)
            pruned[epoch] = len(events)
    strat.set_epoch(2.0)  # past warm-up: exploration < 1 and arch steps on
    strat.weight_step(batch, x)  # untimed: creates the optimizer state
    strat.arch_step(abatch, ax, steps_per_epoch=args.steps)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        import gc

        gc.collect()
        base = _rss_mb()
        _reset_peak_rss()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        strat.weight_step(batch, x)
        strat.arch_step(abatch, ax, steps_per_epoch=args.steps)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20 - base
    else:
        peak = _peak_rss_mb() - base
    out = {"step_s": statistics.median(times), "peak_mb": round(peak, 1),
           "params": sum(p.numel() for p in run.net.weight_parameters())}
    if pruned:
        out["pruning_rounds"] = args.prune_epochs
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="matting")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--C", type=int, default=None, help="supernet width (default: the space's proxy)")
    p.add_argument("--layers", type=int, default=None, help="supernet cells (default: the space's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--strategies", nargs="+", default=["atldas", "darts", "gdas"])
    p.add_argument("--prune-epochs", type=int, default=0)
    p.add_argument("--json", help="write the figures to this JSON file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    results = {}
    common = ["--space", args.space, "--batch", str(args.batch), "--crop", str(args.crop),
              "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
    for knob in ("C", "layers"):
        if getattr(args, knob) is not None:
            common += [f"--{knob}", str(getattr(args, knob))]
    jobs = [(s, s, 0) for s in args.strategies]
    if args.prune_epochs and "atldas" in args.strategies:
        jobs.append(("atldas_pruned", "atldas", args.prune_epochs))
    for label, strategy, prune in jobs:
        cmd = [sys.executable, __file__, *common, "--worker", strategy, "--prune-epochs", str(prune)]
        # a fixed mmap threshold: large buffers are returned to the OS when freed, so the resident
        # size before the timed steps is the resting size (glibc's dynamic threshold would keep them)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[label]
        print(f"{label:14s} step {r['step_s']:.3f} s   peak {r['peak_mb']:8.1f} MB   params {r['params']:,}",
              flush=True)
    if "darts" in results and "atldas" in results:
        d, a = results["darts"], results["atldas"]
        print(f"atldas / darts: step time {a['step_s'] / d['step_s']:.3f}, peak memory {a['peak_mb'] / d['peak_mb']:.3f}")
    print(f"space {args.space}, C {args.C or 'default'}, layers {args.layers or 'default'}, "
          f"batch {args.batch}, crop {args.crop}, device {args.device}, "
          f"{args.threads} threads, median of {args.steps} steps")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
