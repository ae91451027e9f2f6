"""Time the DIM metrics (SAD, MSE, Grad, Conn) on one large image, on ONE CPU thread.

    python experiments/bench_metrics.py                      # 2000 x 2000, both cases below
    python experiments/bench_metrics.py --size 1024 --repeat 5 --json bench_metrics.json

Two cases, both synthetic and seeded: ``band`` (a soft-edged blob with a noisy prediction and an
unknown band around the edge, like a Composition-1K trimap) and ``all-unknown`` (the same mattes
with every pixel unknown, the worst case for the per-pixel work). Each metric is timed through its
public function (input checks included); ``compute_all`` shares the checks between the four.
Reported: the median over ``--repeat`` runs, after one warm-up call. The whole-process comparison of
``atldas eval`` with the mmeval port is ``experiments/bench_eval_mmeval.py`` (mmeval optional).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atldas.matting import metrics  # noqa: E402


def make_case(size: int, seed: int = 0):
    """Ground truth, prediction (uint8) and a band trimap of a soft, wavy blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    c = size / 2.0
    angle = np.arctan2(yy - c, xx - c)
    radius = size * (0.33 + 0.03 * np.sin(7 * angle) + 0.01 * np.sin(31 * angle))
    gt = np.clip((radius - np.hypot(yy - c, xx - c)) / (size * 0.03), 0.0, 1.0)
    gt = np.rint(gt * 255).astype(np.uint8)
    noise = cv2.GaussianBlur(rng.normal(0.0, 25.0, gt.shape), (0, 0), 2.0)
    pred = np.clip(np.rint(gt + noise * (gt > 0) * (gt < 255)), 0, 255).astype(np.uint8)
    edge = ((gt > 0) & (gt < 255)).astype(np.uint8)
    band = cv2.dilate(edge, np.ones((25, 25), np.uint8)).astype(bool)
    trimap = np.where(band, 128, np.where(gt == 255, 255, 0)).astype(np.uint8)
    return pred, gt, trimap


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--size", type=int, default=2000, help="image side in pixels")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per metric (median)")
    parser.add_argument("--json", help="also write the timings to this JSON file")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass

    pred, gt, trimap = make_case(args.size)
    cases = {"band": trimap, "all-unknown": np.full_like(trimap, 128)}
    results = []
    print(f"DIM metrics on {args.size}x{args.size}, 1 thread, median of {args.repeat} "
          f"(cv2 {cv2.__version__}, numpy {np.__version__})")
    print(f"{'case':<12} {'unknown':>8} {'SAD':>8} {'MSE':>8} {'Grad':>8} {'Conn':>8} "
          f"{'sum':>8} {'all':>8}   (seconds; all = compute_all)")
    for name, tri in cases.items():
        row = {"case": name, "size": args.size, "unknown_fraction": float(np.mean(tri == 128))}
        for metric, fn in (("SAD", metrics.sad), ("MSE", metrics.mse), ("Grad", metrics.grad),
                           ("Conn", metrics.conn)):
            row[metric] = median_time(lambda: fn(pred, gt, tri), args.repeat)
        row["sum"] = row["SAD"] + row["MSE"] + row["Grad"] + row["Conn"]
        row["compute_all"] = median_time(lambda: metrics.compute_all(pred, gt, tri), args.repeat)
        row["values"] = metrics.compute_all(pred, gt, tri)
        results.append(row)
        print(f"{name:<12} {row['unknown_fraction']:>8.1%} {row['SAD']:>8.3f} {row['MSE']:>8.3f} "
              f"{row['Grad']:>8.3f} {row['Conn']:>8.3f} {row['sum']:>8.3f} {row['compute_all']:>8.3f}")
    if args.json:
        out = {"machine": platform.processor() or platform.machine(), "threads": 1, "results": results}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
