"""bf16 autocast against float32 on trained weights: the alpha error, the DIM scores and the time.

    python experiments/bf16_error.py --model RUN --checkpoint RUN/best.pt [--sizes 512 1024] [--count 4]
                                     [--rounds 2] [--threads 1] [--json FILE]

RUN is a retrain run directory (or any MODEL with its weights). The network is prepared as ``atldas
predict`` prepares it (channels_last, eval mode, BatchNorm folded); each synthetic test image
(``SyntheticMatting`` split ``test``, seed 0) is predicted by
:func:`~atldas.matting.inference.predict_alpha` in float32 and under CPU bf16 autocast (``atldas
predict --amp`` / ``atldas eval --model ... --amp``). Reported per size: the largest and the mean
absolute alpha difference (the mattes as predict returns them: clamped by the trimap, so only the
unknown region can differ), the largest difference in the 8-bit PNG predict writes (grey levels),
the DIM scores of both against the ground truth, and the wall and process CPU time per image of
each mode (interleaved over ``--rounds`` rounds, the median). Whether the CPU has bf16 instructions
is printed first: without them autocast emulates bf16 and is many times slower than float32.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from atldas.data.synthetic import SyntheticMatting  # noqa: E402
from atldas.matting import metrics  # noqa: E402
from atldas.matting.inference import predict_alpha  # noqa: E402
from atldas.models.zoo import resolve_model  # noqa: E402
from atldas.utils.fold import fold_batchnorm  # noqa: E402
from atldas.utils.malloc import keep_freed_memory  # noqa: E402
from atldas.utils.memory_format import channels_last  # noqa: E402
from atldas.utils.weights import load_weights  # noqa: E402


def cpu_bf16() -> dict:
    """What this CPU offers for bf16 (torch's own checks)."""
    return {"avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
            "amx_tile": bool(torch.cpu._is_amx_tile_supported()),
            "capability": torch.backends.cpu.get_cpu_capability()}


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def measure(mm, net, *, size: int, count: int, rounds: int) -> dict:
    """The figures of one image size (module docstring)."""
    ds = SyntheticMatting(size=size, length=count, seed=0, split="test")
    items = []
    for i in range(count):
        s = ds.sample(i)  # numpy arrays: image (3, H, W), alpha (1, H, W), trimap (1, H, W)
        items.append((np.ascontiguousarray(s["image"].transpose(1, 2, 0)), s["trimap"][0], s["alpha"][0]))
    times = {"float32": ([], []), "bf16": ([], [])}
    preds = {}
    for r in range(rounds + 1):  # round 0 warms up
        for mode, amp in (("float32", False), ("bf16", True)):
            walls, cpus = [], []
            for k, (img, tri, _) in enumerate(items):
                a, w, c = _timed(lambda: predict_alpha(mm, net, img, tri, amp=amp))  # (H, W)
                preds[(mode, k)] = a
                walls.append(w)
                cpus.append(c)
            if r:
                times[mode][0].append(statistics.median(walls))
                times[mode][1].append(statistics.median(cpus))
    diff = np.stack([np.abs(preds[("bf16", k)] - preds[("float32", k)]) for k in range(count)])
    unknown = np.stack([tri == 128 for _, tri, _ in items])
    q = {m: np.stack([np.round(preds[(m, k)] * 255) for k in range(count)]) for m in times}
    scores = {}
    for m in times:
        means = metrics.summarise({str(k): metrics.compute_all(preds[(m, k)], gt, tri)
                                   for k, (_, tri, gt) in enumerate(items)})
        scores[m] = {key: means[key] for key in metrics.METRIC_NAMES}
    return {"size": size, "images": count, "max_abs": float(diff.max()),
            "mean_abs_unknown": float(diff[unknown].mean()),
            "max_grey_levels": int(np.abs(q["bf16"] - q["float32"]).max()),
            "scores": scores,
            "wall_s": {m: statistics.median(t[0]) for m, t in times.items()},
            "cpu_s": {m: statistics.median(t[1]) for m, t in times.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="MODEL: a retrain run directory, genotype file or name")
    ap.add_argument("--checkpoint", required=True, help="its trained weights (e.g. RUN/best.pt)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--count", type=int, default=4, help="synthetic test images per size")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    mm = resolve_model(args.model)
    net = mm.build()
    load_weights(net, args.checkpoint, name=mm.name)
    net = channels_last(net.eval())
    fold_batchnorm(net)  # as predict runs it
    cpu = cpu_bf16()
    print(f"{mm.name}, {args.threads} thread(s); CPU bf16: avx512_bf16 {cpu['avx512_bf16']}, amx {cpu['amx_tile']} "
          f"({cpu['capability']})")
    rows = []
    for size in args.sizes:
        row = measure(mm, net, size=size, count=args.count, rounds=args.rounds)
        rows.append(row)
        s32, s16 = row["scores"]["float32"], row["scores"]["bf16"]
        print(f"{size}^2, {row['images']} images: alpha difference max {row['max_abs']:.4f}, mean (unknown) "
              f"{row['mean_abs_unknown']:.2e}, 8-bit PNG up to {row['max_grey_levels']} grey levels; "
              f"SAD {s32['SAD']:.4f} -> {s16['SAD']:.4f}, MSE {s32['MSE']:.3e} -> {s16['MSE']:.3e}, "
              f"Grad {s32['Grad']:.4f} -> {s16['Grad']:.4f}, Conn {s32['Conn']:.4f} -> {s16['Conn']:.4f}; "
              f"wall {row['wall_s']['float32']:.3f} -> {row['wall_s']['bf16']:.3f} s "
              f"({row['wall_s']['bf16'] / row['wall_s']['float32']:.2f}x), CPU {row['cpu_s']['float32']:.3f} -> "
              f"{row['cpu_s']['bf16']:.3f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"model": mm.name, "checkpoint": str(args.checkpoint),
                                               "threads": args.threads, "cpu": cpu, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
