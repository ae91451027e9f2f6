"""The dilated depthwise convolution's backward: oneDNN's own against the phase backward.

    python experiments/bench_dilated.py [--rounds 3] [--json FILE]

Part 1, per shape (batch, channels, size, kernel; dilation 2, channels_last, one thread): microseconds
of a forward and backward (input and weight gradients) with ``torch.nn.functional.conv2d`` (oneDNN's
backward) and with :mod:`atldas.utils.dilated_conv` (the same forward, the backward run undilated on
the image's phases), the median over ``--rounds`` interleaved rounds. The shapes are the planted
task's (12 x 16 x 12 x 12) and a matting search's at the proxy crop (4 x 16 x 128 x 128).

Part 2, whole workloads, process CPU seconds with the phase backward switched off and on, interleaved:
a planted standalone training step (4 reference genotypes of teacher 0, 100 steps each), and a
retrain step of the demo genotype (``experiments/bench_retrain.py``'s plain loop). Run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import atldas.utils.dilated_conv as dc  # noqa: E402

SHAPES = [(12, 16, 12, 3), (12, 16, 12, 5), (8, 48, 12, 5), (4, 16, 128, 3), (4, 16, 128, 5)]


def _us(f, seconds: float = 0.3) -> float:
    f()
    t = time.perf_counter()
    f()
    n = max(3, min(300, int(seconds / max(time.perf_counter() - t, 1e-6))))
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1e6


def conv_pair(N: int, C: int, H: int, k: int, d: int = 2):
    """(oneDNN, phase) closures: one forward and backward each."""
    cl = torch.channels_last
    x = torch.randn(N, C, H, H).contiguous(memory_format=cl).requires_grad_()
    w = torch.randn(C, 1, k, k).requires_grad_()
    gy = torch.randn(N, C, H, H).contiguous(memory_format=cl)
    p = d * (k - 1) // 2

    def onednn():
        torch.autograd.grad(F.conv2d(x, w, padding=p, dilation=d, groups=C), (x, w), gy)

    def phase():
        torch.autograd.grad(dc.dilated_depthwise_conv2d(x, w, padding=p, dilation=d), (x, w), gy)
    return onednn, phase


def workloads():
    import search_quality as sq
    from bench_retrain import plain
    from atldas.tasks.planted import Recipe, standalone
    genotypes = sq.reference(0, sq.median_random_cost(), 4)

    def planted() -> float:
        t = time.process_time()
        for g in genotypes:
            standalone(g, teacher_seed=0, seed=0, recipe=Recipe(steps=100))
        return (time.process_time() - t) / (100 * len(genotypes))

    def retrain() -> float:
        return plain(ROOT / "experiments" / "results" / "demo_genotype.json", 4, False)[0]
    return {"planted standalone step": planted, "retrain step (demo genotype)": retrain}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ops = {}
    pairs = {s: conv_pair(*s) for s in SHAPES}
    for _ in range(args.rounds):
        for s, (a, b) in pairs.items():
            r = ops.setdefault(s, {"onednn": [], "phase": []})
            r["onednn"].append(_us(a))
            r["phase"].append(_us(b))
    out = {"ops": [], "workloads": {}}
    print("| N x C x H x H, kernel (dilation 2) | oneDNN fwd+bwd (us) | phase fwd+bwd (us) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for (N, C, H, k), r in ops.items():
        a, b = statistics.median(r["onednn"]), statistics.median(r["phase"])
        out["ops"].append({"shape": [N, C, H, H], "kernel": k, "onednn_us": a, "phase_us": b})
        print(f"| {N} x {C} x {H} x {H}, {k}x{k} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    applies = dc._applies
    times = {}
    for _ in range(args.rounds):
        for mode in ("onednn", "phase"):
            dc._applies = applies if mode == "phase" else (lambda *a, **k: False)
            for name, f in workloads().items():
                times.setdefault(name, {"onednn": [], "phase": []})[mode].append(f())
    dc._applies = applies
    print("\n| workload (CPU s per step, one thread) | oneDNN backward | phase backward | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in times.items():
        a, b = statistics.median(r["onednn"]), statistics.median(r["phase"])
        out["workloads"][name] = {"onednn_s": a, "phase_s": b}
        print(f"| {name} | {a:.4f} | {b:.4f} | {b / a:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
