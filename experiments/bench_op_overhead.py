"""What one op call costs at the planted task's sizes: the fixed part against the part that grows.

    python experiments/bench_op_overhead.py [--rounds 3] [--paired] [--json FILE]

The planted benchmark's networks (12 x 12 images, 16 channels, batch 12-16) and the low-resolution
levels of a matting search step run thousands of small ops, so their time is mostly what a call costs
whatever its size. For each op this prints the microseconds of one call (forward, and forward plus
backward), minimum over ``--rounds`` rounds, at a near-empty size (1 x 16 x 4 x 4: the fixed part)
and at the sizes the searches and standalone trainings use. One torch thread, channels_last.

Beside oneDNN's depthwise convolution it times an exact alternative that avoids its per-call cost:
the convolution as ``k * k`` shifted multiply-adds over a zero-padded channels_last copy, with a
backward of the same kind (its forward and input gradient equal oneDNN's bit for bit here, its weight
gradient up to rounding). ``--paired`` also times two standalone trainings of one planted genotype
(training seeds 0 and 1) against both trained at once with ``torch.func.vmap`` over their stacked
parameters, one call per op for the two networks (the batch of ops halves, each op does twice the work).

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

#: (label, N, C, H, W): near-empty, planted standalone, planted DARTS, the dilated phases of DARTS,
#: matting low-resolution levels, a matting 1/2-resolution level.
SHAPES: Tuple[Tuple[str, int, int, int, int], ...] = (
    ("near-empty", 1, 16, 4, 4), ("planted standalone", 12, 16, 12, 12), ("planted darts", 16, 16, 12, 12),
    ("dil phases", 16, 64, 6, 6), ("matting 1/16", 4, 48, 8, 8), ("matting 1/2", 4, 16, 64, 64))


class _ShiftedDepthwise(torch.autograd.Function):
    """A stride-1 "same" depthwise convolution as ``k * k`` shifted multiply-adds (channels_last)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, dilation: int) -> Tensor:  # type: ignore[override]
        N, C, H, W = x.shape
        k, d = w.shape[-1], dilation
        p = d * (k - 1) // 2
        xp = x.new_zeros(N, H + 2 * p, W + 2 * p, C)  # (N, H+2p, W+2p, C)
        xp[:, p:p + H, p:p + W] = x.permute(0, 2, 3, 1)
        wt = w.view(C, k * k).t()  # (k*k, C)
        y = xp[:, :H, :W] * wt[0]
        for t in range(1, k * k):
            i, j = divmod(t, k)
            y.addcmul_(xp[:, i * d:i * d + H, j * d:j * d + W], wt[t])
        ctx.save_for_backward(xp, w)
        ctx.d = d
        return y.permute(0, 3, 1, 2)  # (N, C, H, W), channels_last strides

    @staticmethod
    def backward(ctx, gy: Tensor):  # type: ignore[override]
        xp, w = ctx.saved_tensors
        d = ctx.d
        N, Hp, Wp, C = xp.shape
        k = w.shape[-1]
        p = d * (k - 1) // 2
        H, W = Hp - 2 * p, Wp - 2 * p
        g = gy.permute(0, 2, 3, 1)  # (N, H, W, C)
        gp = gy.new_zeros(N, Hp, Wp, C)
        gp[:, p:p + H, p:p + W] = g
        wt = w.view(C, k * k).t()
        o = 2 * p
        gx = gp[:, o:o + H, o:o + W] * wt[0]
        for t in range(1, k * k):
            i, j = divmod(t, k)
            gx.addcmul_(gp[:, o - i * d:o - i * d + H, o - j * d:o - j * d + W], wt[t])
        sN, sH, sW, sC = xp.stride()
        win = xp.as_strided((N, H, W, k, k, C), (sN, sH, sW, d * sH, d * sW, sC))  # no copy
        gw = (win * g.contiguous()[:, :, :, None, None, :]).sum((0, 1, 2))  # (k, k, C)
        return gx.permute(0, 3, 1, 2), gw.permute(2, 0, 1).unsqueeze(1).contiguous(), None


def _time(fn: Callable[[], object], rounds: int) -> float:
    """Microseconds per call, minimum over rounds of about 0.2 s each."""
    fn()
    t = time.perf_counter()
    fn()
    n = max(5, int(0.2 / max(time.perf_counter() - t, 1e-7)))
    best = math.inf
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def op_table(rounds: int) -> List[Dict[str, object]]:
    """Per op and shape: forward and forward+backward microseconds."""
    rows: List[Dict[str, object]] = []
    cl = torch.channels_last
    for label, N, C, H, W in SHAPES:
        x = torch.randn(N, C, H, W).contiguous(memory_format=cl).requires_grad_()
        ops: Dict[str, Callable[[Tensor], Tensor]] = {}
        for k in (3, 5):
            w = torch.randn(C, 1, k, k, requires_grad=True)
            ops[f"depthwise {k}x{k} (oneDNN)"] = lambda v, w=w, k=k: F.conv2d(v, w, padding=k // 2, groups=C)
            ops[f"depthwise {k}x{k} (shifted)"] = lambda v, w=w: _ShiftedDepthwise.apply(v, w, 1)
        w1 = torch.randn(C, C, 1, 1, requires_grad=True)
        ops["1x1 conv"] = lambda v: F.conv2d(v, w1)
        ops["batch norm (train)"] = lambda v: F.batch_norm(v, None, None, training=True)
        ops["max pool 3x3"] = lambda v: F.max_pool2d(v, 3, 1, 1)
        ops["avg pool 3x3"] = lambda v: F.avg_pool2d(v, 3, 1, 1, count_include_pad=False)
        ops["relu"] = F.relu
        ops["add"] = lambda v: v + v
        for name, op in ops.items():
            def fwd(op=op):
                with torch.no_grad():
                    op(x)

            def fwd_bwd(op=op):
                y = op(x)
                y.backward(y.detach())

            rows.append({"shape": label, "size": [N, C, H, W], "op": name, "forward_us": round(_time(fwd, rounds), 1),
                         "forward_backward_us": round(_time(fwd_bwd, rounds), 1)})
            print(f"{label:20s} {N}x{C}x{H}x{W:<4d} {name:28s} fwd {rows[-1]['forward_us']:8.1f} us   "
                  f"fwd+bwd {rows[-1]['forward_backward_us']:8.1f} us", flush=True)
    return rows


def paired(rounds: int) -> Dict[str, float]:
    """CPU seconds: two standalone trainings of one genotype (seeds 0, 1) one after the other, against
    both at once under vmap (same recipe, the gradient clip per network)."""
    from torch.func import functional_call, stack_module_state, vmap

    from atldas.models.planted import PlantedNet
    from atldas.tasks.planted import SHAPE, Recipe, planted_data, standalone, teacher_genotype

    g, recipe, cl = teacher_genotype(1), Recipe(), torch.channels_last
    x, y = (v.contiguous(memory_format=cl) for v in planted_data(0, SHAPE.n_train, stream=0))

    def two_at_once() -> None:
        nets = []
        for s in (0, 1):
            torch.manual_seed(s)
            nets.append(PlantedNet(genotype=g, C=SHAPE.C, cells=SHAPE.cells, in_channels=SHAPE.in_channels,
                                   out_channels=SHAPE.out_channels).to(memory_format=cl))
        params, buffers = stack_module_state(nets)
        base = copy.deepcopy(nets[0]).to("meta")
        run = vmap(lambda p, b, xx: functional_call(base, (p, b), (xx,)))
        plist = list(params.values())
        opt = torch.optim.Adam(plist, lr=recipe.lr, fused=True)
        gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
        perms, pos = [torch.randperm(x.shape[0], generator=q) for q in gens], 0
        for step in range(recipe.steps):
            for group in opt.param_groups:
                group["lr"] = 0.5 * recipe.lr * (1.0 + math.cos(math.pi * step / recipe.steps))
            if pos + recipe.batch > x.shape[0]:
                perms, pos = [torch.randperm(x.shape[0], generator=q) for q in gens], 0
            idx = [pm[pos:pos + recipe.batch] for pm in perms]
            pos += recipe.batch
            out = run(params, buffers, torch.stack([x[i] for i in idx]))  # (2, B, out, H, W)
            loss = ((out - torch.stack([y[i] for i in idx])) ** 2).mean((1, 2, 3, 4)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norms = torch.stack([p.grad.flatten(1).norm(dim=1) for p in plist], 1).norm(dim=1)  # (2,)
            coef = (recipe.clip / (norms + 1e-6)).clamp(max=1.0)
            for p in plist:
                p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))))
            opt.step()

    def one_after_the_other() -> None:
        for s in (0, 1):
            standalone(g, teacher_seed=0, seed=s)

    out: Dict[str, float] = {}
    for name, fn in (("one_after_the_other_cpu_s", one_after_the_other), ("vmap_pair_cpu_s", two_at_once)):
        best = math.inf
        for _ in range(rounds):
            t = time.process_time()
            fn()
            best = min(best, time.process_time() - t)
        out[name] = round(best, 2)
        print(f"{name}: {out[name]:.2f}", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--paired", action="store_true", help="also time two trainings at once under vmap")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    result: Dict[str, object] = {"torch": torch.__version__, "ops": op_table(args.rounds)}
    if args.paired:
        result["paired"] = paired(args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
