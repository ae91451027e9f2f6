"""Thread policy on a small CPU: wall and CPU time of 1 and 2 torch threads, OpenMP's default
(active) wait against ``OMP_WAIT_POLICY=PASSIVE`` (what the ``atldas`` command sets), on a quiet
machine and with competing busy processes started here.

    python experiments/bench_threads.py [--busy 0 1] [--repeats 3] [--json FILE]

Each configuration runs in a fresh Python process (the wait policy is read when OpenMP starts) and
times two workloads after a warm-up: an inference of ``cheapmatting`` at 512^2 and 3 weight steps of
the ``matting`` search supernet at its proxy width (batch 4, 128^2). Printed per row: the median wall
time, the process CPU time, and the wall time against 1 thread with the same policy and load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

CHILD = r"""
import json, os, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
from atldas.models.zoo import resolve_model
from atldas.run import Run, make_search_config
mm = resolve_model("cheapmatting"); net = mm.build().eval()
x = torch.rand(1, 6, 512, 512)
run = Run(make_search_config(space="matting", sets=["steps_per_epoch=3", "epochs=3", "warmup_epochs=2",
                                                      "tensorboard=false", "progress=false"]), out=None)
def infer():
    with torch.inference_mode():
        mm.forward(net, x)
def steps():
    run.epoch = 0
    run.fit(epochs=1)
out = {}
for name, fn in (("inference 512^2", infer), ("search 3 steps", steps)):
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(int(sys.argv[2])):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w); cpus.append(time.process_time() - c)
    walls.sort(); cpus.sort()
    out[name] = {"wall": walls[len(walls) // 2], "cpu": cpus[len(cpus) // 2]}
print(json.dumps(out))
"""


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10000))


def measure(threads: int, policy: str, repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    proc = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(repeats)], env=env, capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="competing busy processes (default 0 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    rows = []
    print(f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'busy':>4} {'policy':>8} {'threads':>7} {'workload':>16} {'wall s':>8} {'CPU s':>8} {'wall / 1 thread':>15}")
    for busy in args.busy:
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
        for p in spinners:
            p.start()
        time.sleep(1.0)
        try:
            for policy in ("default", "PASSIVE"):
                res = {t: measure(t, policy, args.repeats) for t in (1, 2)}
                for t in (1, 2):
                    for work, r in res[t].items():
                        ratio = r["wall"] / res[1][work]["wall"]
                        rows.append({"busy": busy, "policy": policy, "threads": t, "workload": work, **r,
                                     "wall_vs_1_thread": ratio})
                        print(f"{busy:>4} {policy:>8} {t:>7} {work:>16} {r['wall']:>8.3f} {r['cpu']:>8.3f} {ratio:>15.2f}",
                              flush=True)
        finally:
            stop.set()
            for p in spinners:
                p.join()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
