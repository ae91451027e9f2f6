"""Inference variants of one network side by side: time, GMAC/s against the dense-convolution ceiling,
and the largest difference from the predict path's output.

    python experiments/bench_inference.py [--model cheapmatting] [--size 1024] [--threads 1] [--rounds 3]
                                          [--json FILE]

Variants (random weights, seed 0; bench's random image and round trimap; eval mode):

- ``contiguous``: network and input in the default contiguous layout, ``torch.no_grad``;
- ``predict path``: channels_last, ``torch.no_grad`` (what ``atldas predict`` ran before this script);
- ``inference_mode``: the same under ``torch.inference_mode``;
- ``BN folded``: and every Conv2d -> BatchNorm2d pair folded into one convolution
  (:func:`atldas.utils.fold.fold_batchnorm`);
- ``bf16 autocast``: channels_last under CPU bf16 autocast (not exact: its error is the point);
- ``onnxruntime``: the network exported to ONNX (opset 17, as ``atldas export``) run by onnxruntime's
  CPU provider at the same thread count (when ``onnx`` and ``onnxruntime`` are installed).

The network's output clamp is lifted, so the differences are those of the raw outputs. The process
runs with glibc's malloc tuned as the ``atldas`` command runs it
(:func:`atldas.utils.malloc.keep_freed_memory`; ``--system-malloc``: glibc's defaults, as before it;
``experiments/bench_malloc.py`` compares the two).

The variants are interleaved over ``--rounds`` rounds (each at least ``--min-run-time`` seconds and 3
calls after a warm-up); the median of the round medians is reported, with the process CPU time per
forward beside the wall time, so a loaded machine shows as wall > CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from atldas.bench import _input, conv_ceiling, count_cost  # noqa: E402
from atldas.models.zoo import resolve_model  # noqa: E402
from atldas.utils.fold import fold_batchnorm  # noqa: E402
from atldas.utils.malloc import keep_freed_memory  # noqa: E402
from atldas.utils.memory_format import channels_last  # noqa: E402


def _variants(model_name: str, mm, net, x, threads: int, tmp: Path):
    cl_net, cl_x = channels_last(copy.deepcopy(net)), channels_last(x.clone())
    folded = copy.deepcopy(cl_net)
    n_folded = fold_batchnorm(folded)

    def plain(n, inp, ctx=torch.no_grad):
        def run():
            with ctx():
                return mm.forward(n, inp)
        return run

    def bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return mm.forward(cl_net, cl_x).float()

    out = {"contiguous": plain(net, x), "predict path": plain(cl_net, cl_x),
           "inference_mode": plain(cl_net, cl_x, torch.inference_mode),
           f"BN folded ({n_folded})": plain(folded, cl_x, torch.inference_mode), "bf16 autocast": bf16}
    try:
        import onnxruntime as ort
    except ImportError:
        return out
    from atldas.export import _Wrapped

    path = tmp / "m.onnx"
    with torch.no_grad():
        torch.onnx.export(_Wrapped(mm, net).eval(), (x,), str(path), input_names=["input"], output_names=["alpha"],
                          opset_version=17, dynamo=True, external_data=False, optimize=True, verbose=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    out["onnxruntime"] = lambda: torch.from_numpy(sess.run(None, feed)[0])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cheapmatting")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-run-time", type=float, default=2.0)
    ap.add_argument("--no-bf16", action="store_true", help="leave out bf16 autocast (slow where the CPU lacks "
                                                           "bf16 instructions)")
    ap.add_argument("--system-malloc", action="store_true", help="glibc's default malloc (large blocks mapped "
                                                                 "and unmapped each call), not atldas's tuning")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    kept = False if args.system_malloc else keep_freed_memory()
    torch.set_num_threads(args.threads)
    mm = resolve_model(args.model)
    torch.manual_seed(0)
    net = mm.build().eval()
    for m in net.modules():  # raw outputs: random weights saturate the [0, 1] clamp, hiding differences
        if isinstance(getattr(m, "clamp", None), bool):
            m.clamp = False
    x = _input(args.size, args.size, "cpu")
    macs = count_cost(mm, size=args.size)["macs"]
    with tempfile.TemporaryDirectory() as tmp:
        fns = _variants(args.model, mm, net, x, args.threads, Path(tmp))
        if args.no_bf16:
            fns.pop("bf16 autocast")
        with torch.inference_mode():
            ref = fns["predict path"]()
            diffs = {k: float((fn() - ref).abs().max()) for k, fn in fns.items()}
        walls = {k: [] for k in fns}
        cpus = {k: [] for k in fns}
        ceilings = []
        for r in range(args.rounds):
            ceilings.append(conv_ceiling(threads=args.threads, min_run_time=args.min_run_time / 2))
            for k, fn in fns.items():
                fn()  # warm-up
                w, c = [], []
                end = time.perf_counter() + args.min_run_time
                while len(w) < 3 or time.perf_counter() < end:
                    w0, c0 = time.perf_counter(), time.process_time()
                    fn()
                    w.append(time.perf_counter() - w0)
                    c.append(time.process_time() - c0)
                walls[k].append(statistics.median(w))
                cpus[k].append(statistics.median(c))
                print(f"round {r + 1}: {k}: {1e3 * walls[k][-1]:.1f} ms", file=sys.stderr)
    ceiling = statistics.median(ceilings)
    base = statistics.median(walls["predict path"])
    rows = []
    for k in fns:
        wall = statistics.median(walls[k])
        rows.append({"variant": k, "ms": wall * 1e3, "cpu_ms": statistics.median(cpus[k]) * 1e3,
                     "vs_predict_path": wall / base, "gmacs_per_s": macs / wall / 1e9,
                     "share_of_ceiling": macs / wall / 1e9 / ceiling, "max_diff": diffs[k]})
    print(f"{args.model} at {args.size}^2, {args.threads} thread(s), {args.rounds} interleaved rounds, "
          f"load {os.getloadavg()[0]:.2f}; ceiling (3x3 64->64 conv, 256^2) {ceiling:.1f} GMAC/s; "
          f"{macs / 1e9:.2f} G MACs; malloc: {'kept freed memory' if kept else 'system'}")
    print(f"{'variant':<20} {'ms':>9} {'CPU ms':>9} {'x path':>7} {'GMAC/s':>7} {'ceiling':>8} {'max diff':>9}")
    for r in rows:
        print(f"{r['variant']:<20} {r['ms']:>9.1f} {r['cpu_ms']:>9.1f} {r['vs_predict_path']:>7.2f} "
              f"{r['gmacs_per_s']:>7.1f} {100 * r['share_of_ceiling']:>7.0f}% {r['max_diff']:>9.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "size": args.size, "threads": args.threads, "malloc_kept": kept,
                                               "ceiling_gmacs_per_s": ceiling, "macs": macs, "rows": rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
