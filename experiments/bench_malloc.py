"""Inference with glibc's default malloc against :func:`atldas.utils.malloc.keep_freed_memory`.

    python experiments/bench_malloc.py [--model cheapmatting] [--sizes 1024 2048] [--rounds 3] [--threads 1]
                                       [--modes system kept kept+fold kept+fold+thp]

Each round runs, for each size, one fresh process per mode (``system``: ``ATLDAS_MALLOC=system``;
``kept``: the tuning ``atldas`` applies), alternating, so the modes see the same machine. A process
builds the network (random weights, seed 0), runs the predict path (channels_last,
``torch.inference_mode``) once to warm up and then ``--calls`` times, and reports per call the wall
time, the user and system CPU time and the minor page faults (``getrusage``); a round's figure is
the median over its calls, the table the median over rounds, with the output's checksum (the same
in both modes: the tuning changes where memory comes from, not what is computed). The mode
``kept+fold`` also folds every BatchNorm into its convolution, which is what ``atldas predict`` runs:
``--modes system kept+fold`` sets the predict path from before the tuning against today's (its
checksum differs in the last digits: folding rounds differently). ``kept+fold+thp`` also sets
``THP_MEM_ALLOC_ENABLE=1``, torch's transparent huge pages for large tensors (Linux; what it does
depends on ``/sys/kernel/mm/transparent_hugepage``). The table also shows the warm-up call, the first
forward of a fresh process, which is what ``atldas predict`` of one image pays.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Process modes (module docstring).
MODES = ("system", "kept", "kept+fold", "kept+fold+thp")

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from atldas.utils.malloc import keep_freed_memory
kept = keep_freed_memory()
import torch
torch.set_num_threads({threads})
from atldas.bench import _input
from atldas.models.zoo import resolve_model
from atldas.utils.memory_format import channels_last
mm = resolve_model({model!r})
torch.manual_seed(0)
net = channels_last(mm.build().eval())
if {fold}:
    from atldas.utils.fold import fold_batchnorm
    fold_batchnorm(net)
for m in net.modules():  # raw outputs (random weights saturate the clamp): a checksum that means something
    if isinstance(getattr(m, "clamp", None), bool):
        m.clamp = False
x = channels_last(_input({size}, {size}, "cpu"))
def timed():  # one forward: the output and [wall, user, system, minor faults]
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    y = mm.forward(net, x)
    w, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    return y, [w, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, r1.ru_minflt - r0.ru_minflt]
rows = []
with torch.inference_mode():
    y, first = timed()
    for _ in range({calls}):
        y, row = timed()
        rows.append(row)
print(json.dumps({{"kept": kept, "first": first, "rows": rows, "checksum": float(y.double().sum())}}))
"""


def run_once(mode: str, *, model: str, size: int, threads: int, calls: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("ATLDAS_MALLOC", None)
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    if mode == "system":
        env["ATLDAS_MALLOC"] = "system"
    if mode.endswith("+thp"):
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    code = CHILD.format(root=str(ROOT), threads=threads, model=model, size=size, calls=calls,
                        fold="+fold" in mode)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    if res["kept"] != mode.startswith("kept"):
        raise SystemExit(f"mode {mode}: the tuning was {'applied' if res['kept'] else 'not applied'}")
    med = [statistics.median(col) for col in zip(*res["rows"])]
    return {"wall": med[0], "user": med[1], "sys": med[2], "minflt": med[3], "first_wall": res["first"][0],
            "first_minflt": res["first"][3], "checksum": res["checksum"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--model", default="cheapmatting")
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--modes", nargs="+", default=["system", "kept"], choices=MODES,
                   help="system: glibc's defaults; kept: atldas's tuning; kept+fold: and BatchNorm folded")
    p.add_argument("--json")
    args = p.parse_args(argv)
    modes = list(args.modes)
    first = "system" if "system" in modes else modes[0]  # the ratios' reference
    got = {(s, m): [] for s in args.sizes for m in modes}
    for r in range(args.rounds):
        for s in args.sizes:
            for m in modes if r % 2 == 0 else modes[::-1]:
                got[(s, m)].append(run_once(m, model=args.model, size=s, threads=args.threads, calls=args.calls))
                print(f"round {r + 1}: {s}^2 {m}: {got[(s, m)][-1]['wall']:.2f} s", file=sys.stderr)
    print(f"{args.model}, {args.threads} thread(s), median of {args.rounds} rounds x {args.calls} calls, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'size':>6} {'mode':<14} {'wall s':>7} {'user s':>7} {'sys s':>7} {'faults':>9} {'x ' + first:>8} "
          f"{'1st call s':>10} {'1st faults':>10}  checksum")
    table = []
    for s in args.sizes:
        base = statistics.median(g["wall"] for g in got[(s, first)])
        for m in modes:
            g = got[(s, m)]
            row = {"size": s, "malloc": m, **{k: statistics.median(x[k] for x in g)
                                              for k in ("wall", "user", "sys", "minflt", "first_wall", "first_minflt")},
                   "checksum": g[0]["checksum"]}
            row[f"vs_{first}"] = row["wall"] / base
            table.append(row)
            print(f"{s:>6} {m:<14} {row['wall']:>7.2f} {row['user']:>7.2f} {row['sys']:>7.2f} {row['minflt']:>9.0f} "
                  f"{row[f'vs_{first}']:>8.2f} {row['first_wall']:>10.2f} {row['first_minflt']:>10.0f}  "
                  f"{row['checksum']:.6g}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "threads": args.threads, "rows": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
