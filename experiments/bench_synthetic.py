"""Throughput of the synthetic matting data (``atldas.data.synthetic``) on ONE CPU core.

Generates the same ``--count`` samples ``--repeats`` times per size (torch and OpenCV held to one
thread) and prints samples/s: "best" adds up the fastest repeat of each sample (what an undisturbed
core does: other work on a shared machine only ever slows a run down), "median" is the median over
whole repeats; and the CPU time per sample.

    python experiments/bench_synthetic.py                      # 256 and 512
    python experiments/bench_synthetic.py --sizes 256 --json bench_synthetic.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Dict, List, Optional

import cv2
import torch

from atldas.data.synthetic import SyntheticMatting


def bench(size: int, *, count: int, repeats: int, seed: int = 0, chunk: int = 1) -> Dict[str, float]:
    """Time ``ds[i]`` for i < count, ``repeats`` times, in chunks of ``chunk`` samples.

    ``samples_per_s_best`` adds up each chunk's fastest repeat (an estimate of an undisturbed core on
    a shared machine); ``samples_per_s_median`` is the median over whole repeats.
    """
    ds = SyntheticMatting(size=size, length=count, seed=seed)
    for i in range(min(5, count)):      # warm-up: imports, caches, allocator
        ds[i]
    chunks = [range(a, min(a + chunk, count)) for a in range(0, count, chunk)]
    best = [float("inf")] * len(chunks)
    totals, cpu_ms = [], []
    for _ in range(repeats):
        total, c0 = 0.0, time.process_time()
        for k, idx in enumerate(chunks):
            t0 = time.perf_counter()
            for i in idx:
                ds[i]
            dt = time.perf_counter() - t0
            best[k] = min(best[k], dt)
            total += dt
        totals.append(total)
        cpu_ms.append((time.process_time() - c0) / count * 1e3)
    return {"size": size, "count": count, "repeats": repeats,
            "samples_per_s_best": count / sum(best),
            "samples_per_s_median": count / statistics.median(totals),
            "cpu_ms_per_sample_median": statistics.median(cpu_ms)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--count", type=int, default=100, help="samples per repeat at 256 px (100), scaled by (256 / size)^2 for other sizes, at least 10")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    results = []
    for size in args.sizes:
        count = max(10, int(args.count * (256 / size) ** 2))
        r = bench(size, count=count, repeats=args.repeats)
        results.append(r)
        print(f"{size}x{size}: {r['samples_per_s_best']:.0f} samples/s best, "
              f"{r['samples_per_s_median']:.0f} median ({r['cpu_ms_per_sample_median']:.2f} ms CPU/sample, "
              f"1 thread, {count} samples x {args.repeats})")
    if args.json:
        info = {"machine": platform.machine(), "processor": platform.processor(),
                "python": platform.python_version(), "torch": torch.__version__, "cv2": cv2.__version__,
                "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}
        with open(args.json, "w") as f:
            json.dump({"results": results, "env": info}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
