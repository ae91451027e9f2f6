"""Where does ATL-DAS's policy stand against uniform draws? The select stage's pool, trained standalone.

    python experiments/pool_ranking.py --teachers 27 28 29 --seeds 0 [--budgets none 0.8] [--pool 64]
                                       [--out runs/pool_ranking] [--workers 2] [--json FILE]

For each teacher, seed and budget, one ``atldas`` search on the planted task (today's defaults) and,
at its final supernet, two pools of ``--pool`` distinct candidates put onto the select stage's cost
exactly as :meth:`atldas.run.Run._select` puts them (repaired onto the budget, or onto the derived
child's cost without one, and grown onto the budget): the *policy* pool, drawn from the final policy
as the select stage draws it, and a *uniform* pool, drawn uniformly among the candidates hard pruning
left. Every candidate is scored three ways: its shared-weight held-out loss (what the select stage's
prescreen ranks by, the same two batches; ``shared8``: eight batches, as the benchmark's tau), its
log-probability under the final policy (normal cell: the planted network has no other), and its
standalone test loss (the benchmark's recipe; the geometric mean over ``--train-seeds``, default 0). Reported per search and on average:

- ``ratio``: the geometric mean standalone loss of the policy pool over the uniform pool's (below 1:
  the policy draws better networks at the same cost);
- ``shared_ratio``: the same ratio of the shared-weight losses (eight batches): below 1, the policy
  does what its gradient asks, drawing children that the shared weights rate better;
- ``tau_shared_policy`` / ``tau_shared_uniform``: Kendall tau between the shared-weight loss and the
  standalone loss within each pool (how well the prescreen ranks), ``tau_logp_policy``: between minus
  the log-probability and the standalone loss in the policy pool;
- ``top15_*``: the best and the mean standalone loss among the 15 that the prescreen passes on (by the
  shared-weight loss; for the policy pool also by log-probability), relative to the uniform pool's
  geometric mean;
- ``tau_seeds`` (with two or more training seeds): Kendall tau between the first two seeds' standalone
  losses over both pools, the ceiling any ranking can reach against noisy training.

A diagnostic, not a benchmark of the search: it says whether the policy, the prescreen, or neither
carries the signal that would let ATL-DAS beat random search. A stored search is reused only when it
carries the fingerprint of what would run now (``search_quality.search_fingerprint``: a changed default
re-runs it). Standalone losses are cached in ``OUT/standalone.json`` by the same key as
``search_quality.py``'s (copy that file in to reuse it).
"""

from __future__ import annotations

import argparse
import json
import math
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

from atldas.arch import _masked_log_softmax  # noqa: E402
from atldas.run import Run  # noqa: E402
from atldas.utils.atomic import write_text_atomic  # noqa: E402
from search_quality import (kendall, median_random_cost, run_standalone, search_config, search_fingerprint,  # noqa: E402
                            standalone_key)

#: How many the prescreen passes on to the short fits (select 16: the strategy's own and 15 others).
PASSED = 15


@torch.no_grad()
def _normal_log_prob(arch, child) -> float:
    """log P(child's normal cell) under the policy (the planted network copies it into the reduce cell)."""
    lp = _masked_log_softmax(arch.alpha["normal"], arch.op_mask("normal"))
    total = sum(float(_masked_log_softmax(arch.beta[f"normal_{j}"], arch.set_mask("normal", j))[s])
                for j, s in enumerate(child.sets["normal"]))
    return total + sum(float(lp[e, o]) for e, o in child.ops["normal"].items())


def pools(job: Dict[str, Any]) -> Dict[str, Any]:
    """One search and its two pools, scored on the shared weights and by the policy."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    run = Run(search_config(job))
    run.fit()
    arch, table = run.net.arch, run.table
    with torch.no_grad():
        first = run.strategy.derive(run.evaluate)
    if run.budget is not None:
        cap: Optional[float] = run.budget.target
    else:
        cap = table.of_child(first) if run.cfg.select_cost == "derived" else None
    out: Dict[str, List[Dict[str, Any]]] = {}
    for name, epsilon, salt in (("policy", 0.0, 11), ("uniform", 1.0, 17)):
        gen = torch.Generator().manual_seed(run.cfg.seed * 1000 + salt)  # the policy pool: _select's stream
        seen: Dict[str, Any] = {}
        child = first
        for _ in range(50 * job["pool"]):
            child = run._onto_cost(child, cap)
            seen.setdefault(run.space.child_to_genotype(arch, child).hash(), child)
            if len(seen) >= job["pool"] + 1:
                break
            with torch.no_grad():
                child = arch.sample(generator=gen, epsilon=epsilon)
        seen.pop(next(iter(seen)))  # the derived child: in neither pool
        rows = []
        for c in seen.values():
            g = run.space.child_to_genotype(arch, c)
            rows.append({"genotype": g.to_json(), "hash": g.hash(), "macs": table.of_child(c),
                         "shared": run.evaluate(c), "shared8": run.evaluate(c, batches=8),
                         "logp": _normal_log_prob(arch, c)})
        out[name] = rows
    return {**job, "fingerprint": search_fingerprint(job), "seconds": time.perf_counter() - t0, **out}


def to_run(folder: Path, jobs: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The jobs without a stored search (``folder/KEY.json``) computed with what would run now."""
    def stored(job: Dict[str, Any]) -> bool:
        path = folder / f"{job['key']}.json"
        return path.is_file() and json.loads(path.read_text()).get("fingerprint") == search_fingerprint(job)
    return [j for j in jobs if not stored(j)]


def _gmean(xs: Sequence[float]) -> float:
    return math.exp(statistics.mean(math.log(x) for x in xs))


def analyse(r: Dict[str, Any], loss: Dict[str, float]) -> Dict[str, float]:
    """The figures of the module docstring for one search (``loss``: genotype hash -> standalone loss)."""
    pol, uni = r["policy"], r["uniform"]
    lp, lu = [loss[x["hash"]] for x in pol], [loss[x["hash"]] for x in uni]
    ref = _gmean(lu)

    def top(rows: List[Dict[str, Any]], key) -> List[float]:
        return [loss[x["hash"]] for x in sorted(rows, key=key)[:PASSED]]

    res = {"ratio": _gmean(lp) / ref,
           "shared_ratio": _gmean([x["shared8"] for x in pol]) / _gmean([x["shared8"] for x in uni]),
           "tau_shared_policy": kendall([x["shared"] for x in pol], lp),
           "tau_shared_uniform": kendall([x["shared"] for x in uni], lu),
           "tau_shared8_policy": kendall([x["shared8"] for x in pol], lp),
           "tau_shared8_uniform": kendall([x["shared8"] for x in uni], lu),
           "tau_logp_policy": kendall([-x["logp"] for x in pol], lp),
           "macs_policy": statistics.mean(x["macs"] for x in pol), "macs_uniform": statistics.mean(x["macs"] for x in uni)}
    for name, rows, key in (("shared_policy", pol, lambda x: x["shared"]), ("shared_uniform", uni, lambda x: x["shared"]),
                            ("shared8_policy", pol, lambda x: x["shared8"]),
                            ("shared8_uniform", uni, lambda x: x["shared8"]), ("logp_policy", pol, lambda x: -x["logp"])):
        chosen = top(rows, key)
        res[f"top15_{name}_best"] = min(chosen) / ref
        res[f"top15_{name}_mean"] = _gmean(chosen) / ref
    return res


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--teachers", type=int, nargs="+", default=[27, 28, 29])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--budgets", nargs="+", default=["none", "0.8"])
    p.add_argument("--pool", type=int, default=64)
    p.add_argument("--out", default="runs/pool_ranking")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a search setting for every search (as atldas search --set)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    out = Path(args.out)
    (out / "searches").mkdir(parents=True, exist_ok=True)
    median = median_random_cost()
    jobs, tag = [], "".join(f"|{x}" for x in args.sets)
    for t in args.teachers:
        for s in args.seeds:
            for b in args.budgets:
                budget = None if b == "none" else float(b) * median
                jobs.append({"key": f"t{t}|s{s}|{b}|p{args.pool}{tag}", "strategy": "atldas", "sets": list(args.sets), "teacher": t,
                             "seed": s, "budget": budget, "budget_label": b, "pool": args.pool})
    todo = to_run(out / "searches", jobs)
    print(f"{len(jobs)} searches ({len(todo)} to run: none stored, or stored with other settings)", flush=True)
    with ProcessPoolExecutor(args.workers) as ex:
        for r in ex.map(pools, todo):
            write_text_atomic(out / "searches" / f"{r['key']}.json", json.dumps(r))
            print(f"  search {r['key']}: {r['seconds']:.0f} s", flush=True)
    results = [json.loads((out / "searches" / f"{j['key']}.json").read_text()) for j in jobs]
    cache_path = out / "standalone.json"
    cache: Dict[str, float] = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    needed = {}
    for r in results:
        for x in r["policy"] + r["uniform"]:
            for s in args.train_seeds:
                needed.setdefault(standalone_key(r["teacher"], x["hash"], s), (r["teacher"], x["genotype"], s))
    todo_s = [v for k, v in needed.items() if k not in cache]
    print(f"{len(needed)} standalone trainings ({len(todo_s)} to run)", flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        for n, (k, v) in enumerate(ex.map(run_standalone, todo_s, chunksize=4), 1):
            cache[k] = v
            if n % 50 == 0:
                write_text_atomic(cache_path, json.dumps(cache))
                print(f"  trained {n}/{len(todo_s)} in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    write_text_atomic(cache_path, json.dumps(cache))
    per = []
    for r in results:
        rows = r["policy"] + r["uniform"]
        by_seed = {s: {x["hash"]: cache[standalone_key(r["teacher"], x["hash"], s)] for x in rows} for s in args.train_seeds}
        loss = {x["hash"]: _gmean([by_seed[s][x["hash"]] for s in args.train_seeds]) for x in rows}
        row = {"key": r["key"], **analyse(r, loss)}
        if len(args.train_seeds) > 1:  # the noise ceiling: two trainings of the same candidates ranked alike
            a, b = args.train_seeds[:2]
            row["tau_seeds"] = kendall([by_seed[a][x["hash"]] for x in rows], [by_seed[b][x["hash"]] for x in rows])
        per.append(row)
    keys = [k for k in per[0] if k != "key"]
    w = max(10, *(len(k) for k in keys)) + 1  # the whole column names: cut to 18 characters, pairs collided
    print(f"{'search':<22}" + "".join(f"{k:>{w}}" for k in keys))
    for row in per:
        print(f"{row['key']:<22}" + "".join(f"{row[k]:>{w}.3g}" for k in keys))
    mean = {k: statistics.mean(row[k] for row in per) for k in keys}
    se = {k: statistics.stdev(row[k] for row in per) / math.sqrt(len(per)) if len(per) > 1 else float("nan") for k in keys}
    print(f"{'mean':<22}" + "".join(f"{mean[k]:>{w}.3g}" for k in keys))
    print(f"{'SE':<22}" + "".join(f"{se[k]:>{w}.3g}" for k in keys))
    if args.json:
        Path(args.json).write_text(json.dumps({"pool": args.pool, "teachers": args.teachers, "seeds": args.seeds,
                                               "train_seeds": args.train_seeds, "sets": args.sets,
                                               "budgets": args.budgets, "mean": mean, "se": se, "runs": per}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
