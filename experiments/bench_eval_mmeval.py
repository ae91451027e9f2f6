"""`atldas eval` of prediction folders against the mmeval (cv2) port, whole process, paired.

    python experiments/bench_eval_mmeval.py [--images 30] [--pairs 3] [--workers 2] [--mmeval-path DIR]

Writes ``--images`` seeded mattes at 1620 x 1080 (ground truth, a trimap with an unknown band, a noisy
prediction clamped by the trimap) into a temporary folder, then times, in ``--pairs`` interleaved
pairs, two whole processes that read the three folders and compute SAD, MSE, Grad and Conn: mmeval's
(``SAD``, ``MattingMSE``, ``GradientError``, ``ConnectivityError`` on cv2-read arrays in [0, 1]) and
``atldas eval --pred --alpha --trimap`` (``--workers``; ``0`` leaves eval's default, one process per
core). Prints each pair's seconds, the ratios and both sets of metric means
(they agree: the same protocol). mmeval is optional: install it (``pip install mmeval``, it pulls
its own cv2) or point ``--mmeval-path`` at a ``pip install --target`` folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

MMEVAL = r"""
import os, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, cv2
from mmeval import SAD, MattingMSE, GradientError, ConnectivityError
d = sys.argv[1]
ms = [SAD(), MattingMSE(), GradientError(), ConnectivityError()]
for n in sorted(os.listdir(os.path.join(d, "gt"))):
    p, g, t = (cv2.imread(os.path.join(d, k, n), cv2.IMREAD_GRAYSCALE) for k in ("pred", "gt", "tri"))
    p, g = p.astype(np.float64) / 255.0, g.astype(np.float64) / 255.0
    ms[0].add([p], [g])
    for m in ms[1:]:
        m.add([p], [g], [t])
r = [list(m.compute().values())[0] for m in ms]
print("SAD %.4f MSE %.6g Grad %.4f Conn %.4f" % tuple(r))
"""


def make_folders(root: Path, n: int, seed: int = 0) -> None:
    """``n`` seeded (pred, gt, tri) triples at 1620 x 1080 under ``root/{pred, gt, tri}``."""
    rng = np.random.default_rng(seed)
    for d in ("pred", "gt", "tri"):
        (root / d).mkdir(parents=True, exist_ok=True)
    h, w = 1080, 1620
    for i in range(n):
        f = cv2.GaussianBlur(rng.standard_normal((h // 8, w // 8)).astype(np.float32), (0, 0), 3)
        gt = np.clip(cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) * 8 + 0.5, 0, 1)  # (h, w)
        unknown = cv2.dilate(((gt > 0) & (gt < 1)).astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
        tri = np.where(unknown, 128, np.where(gt >= 0.5, 255, 0)).astype(np.uint8)
        noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 2)
        pred = np.clip(gt + 0.1 * noise, 0, 1)
        pred[tri == 0], pred[tri == 255] = 0, 1
        for d, a in (("gt", gt), ("pred", pred)):
            cv2.imwrite(str(root / d / f"{i:03d}.png"), np.rint(a * 255).astype(np.uint8))
        cv2.imwrite(str(root / "tri" / f"{i:03d}.png"), tri)


def timed(cmd, env) -> tuple:
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - t, out.stdout.strip().splitlines()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="atldas eval --workers (0: its default)")
    ap.add_argument("--mmeval-path", help="a folder holding mmeval (pip install --target DIR mmeval)")
    args = ap.parse_args(argv)
    env_mm = dict(os.environ)
    if args.mmeval_path:
        env_mm["PYTHONPATH"] = args.mmeval_path
    probe = subprocess.run([sys.executable, "-c", "import mmeval"], env=env_mm, capture_output=True)
    if probe.returncode:
        print("mmeval is not importable: pip install mmeval, or pass --mmeval-path DIR", file=sys.stderr)
        return 2
    atldas = [sys.executable, "-m", "atldas", "eval"] + (["--workers", str(args.workers)] if args.workers else [])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folders(root, args.images)
        ratios = []
        for k in range(args.pairs):
            t_mm, out_mm = timed([sys.executable, "-c", MMEVAL, str(root)], env_mm)
            t_at, out_at = timed(atldas + ["--pred", str(root / "pred"), "--alpha", str(root / "gt"), "--trimap",
                                           str(root / "tri"), "--quiet"], dict(os.environ))
            ratios.append(t_at / t_mm)
            print(f"pair {k + 1}: mmeval {t_mm:.2f} s, atldas {t_at:.2f} s, ratio {t_at / t_mm:.2f}")
        print(f"mmeval: {out_mm[-1]}")
        print(f"atldas: {' | '.join(out_at[-2:])}")
        print(f"{args.images} images at 1620x1080, {args.pairs} pairs: atldas / mmeval whole-process time "
              f"{min(ratios):.2f}-{max(ratios):.2f} (median {statistics.median(ratios):.2f}), load "
              f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
