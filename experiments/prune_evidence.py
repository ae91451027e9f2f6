"""Does hard pruning drop candidates on evidence or on noise? Pruning counts, real search against placebo.

    python experiments/prune_evidence.py --teachers 0 1 2 --seeds 0 1 2 --budgets none 0.8 \\
        --variants atldas atldas:control=placebo atldas:prune_z=3 atldas:prune_z=3,control=placebo

Every variant (``NAME:key=value,...``, search config overrides as in ``search_quality.py``) searches the
``planted`` space for every teacher, seed and budget (``none`` or a fraction of the median MACs of
uniform random genotypes) with ``select=0`` (the select stage runs after the last pruning round and
does not change what was pruned). Only the searches run: nothing is trained standalone. Reported per
variant and budget, as the mean over teachers and seeds (and the per-run values in ``--json``):

- ``dropped``: the normal cell's candidates (input sets and ops) hard pruning deleted; the placebo
  control (the task gradient's sign drawn at random every arch step) has no task evidence, so what it
  drops without a budget was dropped on noise;
- ``z>3``: the share of the normal cell's logits whose applied arch gradient over the search has a
  z-statistic ``sum(g) / sqrt(sum(g^2))`` above 3 in size (about 0.3 % for noise);
- ``time``: seconds per search on one thread.

A search is the ``planted`` space's default otherwise; one torch thread per worker.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import torch  # noqa: E402

from atldas.run import Run  # noqa: E402
from atldas.utils.atomic import write_text_atomic  # noqa: E402
from search_quality import _variant, _worker_init, median_random_cost, search_config  # noqa: E402


def run_one(job: Dict[str, Any]) -> Dict[str, Any]:
    """One search; what its pruning dropped and how strong the evidence on its logits was."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    run = Run(search_config(job))
    run.fit()
    seconds = time.perf_counter() - t0
    dropped = {"sets": 0, "ops": 0}
    for ev in run.strategy.events:
        group = str(ev.get("group", ""))
        if group.startswith("normal/") and "dropped" in ev:
            dropped["sets" if group.endswith("/sets") else "ops"] += len(ev["dropped"])
    z = torch.cat([v.flatten() for k, v in run.strategy.evidence().items() if k.split(".")[1].startswith("normal")])
    return {**job, "dropped": dropped, "z_gt3": float((z.abs() > 3).float().mean()),
            "z_rms": float(z.pow(2).mean().sqrt()), "seconds": seconds}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--teachers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budgets", nargs="+", default=["none", "0.8"])
    p.add_argument("--variants", nargs="+", default=["atldas", "atldas:control=placebo", "atldas:prune_z=3",
                                                     "atldas:prune_z=3,control=placebo"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="write the per-run values and the means here")
    args = p.parse_args(argv)
    median = median_random_cost()
    jobs: List[Dict[str, Any]] = []
    for spec in args.variants:
        label, strategy, sets = _variant(spec)
        for b in args.budgets:
            for t in args.teachers:
                for s in args.seeds:
                    jobs.append({"label": label, "strategy": strategy, "sets": [*sets, "select=0"], "budget_label": b,
                                 "budget": None if b == "none" else float(b) * median, "teacher": t, "seed": s})
    print(f"{len(jobs)} searches", flush=True)
    results = []
    with ProcessPoolExecutor(args.workers, initializer=_worker_init) as ex:
        for r in ex.map(run_one, jobs):
            results.append(r)
            print(f"  {r['label']} budget {r['budget_label']} t{r['teacher']} s{r['seed']}: dropped {r['dropped']}, "
                  f"|z|>3 {100 * r['z_gt3']:.1f} %, {r['seconds']:.0f} s", flush=True)
    summary: Dict[str, Any] = {}
    print("\n| variant | budget | dropped sets | dropped ops | dropped (per run) | logits with abs(z) > 3 | s/search |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: |")
    for spec in args.variants:
        label = _variant(spec)[0]
        for b in args.budgets:
            rs = [r for r in results if r["label"] == label and r["budget_label"] == b]
            row = {k: statistics.fmean(r["dropped"][k] for r in rs) for k in ("sets", "ops")}
            row.update(z_gt3=statistics.fmean(r["z_gt3"] for r in rs), seconds=statistics.fmean(r["seconds"] for r in rs),
                       per_run=[r["dropped"]["sets"] + r["dropped"]["ops"] for r in rs])
            summary.setdefault(label, {})[b] = row
            print(f"| {label} | {b} | {row['sets']:.1f} | {row['ops']:.1f} | {' '.join(map(str, row['per_run']))} | "
                  f"{100 * row['z_gt3']:.1f} % | {row['seconds']:.0f} |")
    if args.json:
        write_text_atomic(Path(args.json), json.dumps({"variants": summary, "runs": results, "teachers": args.teachers,
                                                       "seeds": args.seeds}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
