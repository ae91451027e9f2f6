"""How well the ``select`` stage's short fits rank planted genotypes, and which split of its training
steps picks the best genotype: the measurement behind the planted space's default stage (16
candidates x 50 steps, then the best 5 again with 350 steps; ``SearchConfig.select_keep``).

    python experiments/select_schedule.py --out runs/search_quality --teachers 0 1 2

For each teacher the pool is the reference genotypes (random genotypes matched on cost) of the stored
searches without a budget in ``OUT/searches`` (the benchmark, experiments/search_quality.py), at most
``--pool`` of them, first seen first. Their true loss is the benchmark's: the geometric mean of the
standalone test loss of training seeds 0 and 1 (streams 0 and 1, ``OUT/standalone.json``; missing ones
are trained). The proxies are the stage's own fits: trained on a search's streams (2 and 3: search seed
0) for 50, 150 and 350 steps with initial weights 0, and 150 and 350 steps with initial weights 1
(``OUT/select_fits.json``, reused when present). It prints per teacher the Kendall tau of each proxy
against the true loss, then simulates each rule 3,000 times per teacher: draw the candidates from the
pool, keep the one the rule ranks first, report its percentile among the pool by true loss (0: best;
the benchmark's measure), beside the rule's training steps per search. ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import search_quality as sq  # noqa: E402
from atldas.genotype import Genotype  # noqa: E402
from atldas.tasks.planted import Recipe, standalone  # noqa: E402
from atldas.utils.atomic import write_text_atomic  # noqa: E402

#: (steps, initial-weights seed) of the proxies: the stage's fits on search seed 0's streams.
PROXIES: Tuple[Tuple[int, int], ...] = ((50, 0), (150, 0), (350, 0), (150, 1), (350, 1))


def pools(out: Path, teachers: Sequence[int], size: int, labels: Sequence[str]) -> Dict[int, List[Tuple[str, str]]]:
    """Teacher -> [(hash, genotype JSON)]: the references of the stored searches without a budget of
    the benchmark variants ``labels``, in that order, then by seed."""
    found: Dict[int, Dict[str, str]] = {t: {} for t in teachers}
    stored = [json.loads(f.read_text()) for f in sorted((out / "searches").glob("*|none|*.json"))]
    for label in labels:
        for r in stored:
            if r["teacher"] in found and r["label"] == label:
                for text in r["reference"]:
                    found[r["teacher"]].setdefault(Genotype.from_json(text).hash(), text)
    return {t: list(g.items())[:size] for t, g in found.items()}


def fit_key(teacher: int, genotype_hash: str, steps: int, init: int) -> str:
    return f"{sq.TASK_FINGERPRINT}/{teacher}/{genotype_hash}/{steps}/{init}"


def run_fit(job: Tuple[int, str, int, int]) -> Tuple[str, float]:
    """A proxy fit: ``steps`` steps of the recipe on streams 2 and 3 (search seed 0), initial weights ``init``."""
    torch.set_num_threads(1)
    teacher, text, steps, init = job
    g = Genotype.from_json(text)
    loss = standalone(g, teacher_seed=teacher, seed=init, recipe=Recipe(steps=steps), streams=(2, 3))["test"]
    return fit_key(teacher, g.hash(), steps, init), loss


Rule = Callable[[List[str], random.Random, Callable[[str, int, int], float]], str]


def one_round(n: int, steps: int, *, seeds: Sequence[int] = (0,)) -> Rule:
    """``n`` candidates, each fitted ``steps`` steps per initial-weights seed (geometric mean)."""
    def rule(pool, rng, fit):
        return min(rng.sample(pool, n), key=lambda h: sum(math.log(fit(h, steps, s)) for s in seeds))
    return rule


def halving(n: int, keep: int, first: int, second: int, *, seeds: Sequence[int] = (0,)) -> Rule:
    """``n`` candidates fitted ``first`` steps, the ``keep`` best again with ``second`` per
    initial-weights seed of ``seeds`` (geometric mean)."""
    def rule(pool, rng, fit):
        kept = sorted(rng.sample(pool, n), key=lambda h: fit(h, first, 0))[:keep]
        return min(kept, key=lambda h: sum(math.log(fit(h, second, s)) for s in seeds))
    return rule


RULES: Dict[str, Tuple[Rule, int]] = {
    "16 x 150 (the stage before)": (one_round(16, 150), 2400),
    "16 x 50": (one_round(16, 50), 800),
    "7 x 350": (one_round(7, 350), 2450),
    "8 x 150, 2 initial seeds": (one_round(8, 150, seeds=(0, 1)), 2400),
    "16 x 50, best 5 x 350 (the default)": (halving(16, 5, 50, 350), 2550),
    "16 x 50, best 4 x 350": (halving(16, 4, 50, 350), 2200),
    "16 x 50, best 6 x 350": (halving(16, 6, 50, 350), 2900),
    "16 x 150, best 5 x 350": (halving(16, 5, 150, 350), 4150),
    "16 x 350": (one_round(16, 350), 5600),
    "16 x 50, best 3 x 350 x 2 initial seeds": (halving(16, 3, 50, 350, seeds=(0, 1)), 2900),
    "16 x 50, best 4 x 350 x 2 initial seeds": (halving(16, 4, 50, 350, seeds=(0, 1)), 3600),
    "16 x 50, best 5 x 350 x 2 initial seeds": (halving(16, 5, 50, 350, seeds=(0, 1)), 4300),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--out", default="runs/search_quality", help="a benchmark folder (experiments/search_quality.py)")
    p.add_argument("--teachers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pool", type=int, default=32, help="genotypes per teacher")
    p.add_argument("--labels", nargs="+", default=["atldas", "random"], help="the benchmark variants whose "
                   "references form the pool, in this order")
    p.add_argument("--draws", type=int, default=3000, help="simulated selections per rule and teacher")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    by_teacher = pools(out, args.teachers, args.pool, args.labels)
    for t, pool in by_teacher.items():
        if len(pool) < 17:
            raise SystemExit(f"teacher {t}: {len(pool)} reference genotypes in {out / 'searches'} (searches without "
                             "a budget); 17 are needed, run experiments/search_quality.py with --budgets none first")
    truth_cache_path, fit_cache_path = out / "standalone.json", out / "select_fits.json"
    truths: Dict[str, float] = json.loads(truth_cache_path.read_text()) if truth_cache_path.is_file() else {}
    fits: Dict[str, float] = json.loads(fit_cache_path.read_text()) if fit_cache_path.is_file() else {}
    todo_t = [(t, text, s) for t, pool in by_teacher.items() for h, text in pool for s in (0, 1)
              if sq.standalone_key(t, h, s) not in truths]
    todo_f = [(t, text, steps, init) for t, pool in by_teacher.items() for h, text in pool for steps, init in PROXIES
              if fit_key(t, h, steps, init) not in fits]
    print(f"{sum(map(len, by_teacher.values()))} genotypes; {len(todo_t)} standalone trainings and {len(todo_f)} "
          "proxy fits to run", flush=True)
    with ProcessPoolExecutor(args.workers) as ex:
        for k, v in ex.map(sq.run_standalone, todo_t, chunksize=4):
            truths[k] = v
        write_text_atomic(truth_cache_path, json.dumps(truths))
        for n, (k, v) in enumerate(ex.map(run_fit, todo_f, chunksize=4), 1):
            fits[k] = v
            if n % 40 == 0:
                write_text_atomic(fit_cache_path, json.dumps(fits))
        write_text_atomic(fit_cache_path, json.dumps(fits))

    summary: Dict[str, object] = {"teachers": args.teachers, "pool": {t: len(p) for t, p in by_teacher.items()},
                                  "tau": {}, "rules": {}}
    true = {t: {h: math.exp(statistics.mean(math.log(truths[sq.standalone_key(t, h, s)]) for s in (0, 1)))
                for h, _ in pool} for t, pool in by_teacher.items()}  # the benchmark's loss of a genotype
    print("Kendall tau of each proxy against the true loss, per teacher")
    for steps, init in PROXIES:
        taus = []
        for t, pool in by_teacher.items():
            taus.append(sq.kendall([fits[fit_key(t, h, steps, init)] for h, _ in pool], [true[t][h] for h, _ in pool]))
        summary["tau"][f"{steps} steps, init {init}"] = taus
        print(f"  {steps:3d} steps, initial weights {init}: " + " ".join(f"{x:.2f}" for x in taus))
    print(f"percentile of the selected genotype in its pool (0 best), {args.draws} draws per teacher")
    print("| rule | steps | " + " | ".join(f"teacher {t}" for t in by_teacher) + " | mean |")
    print("| --- | ---: | " + " | ".join("---:" for _ in by_teacher) + " | ---: |")
    for name, (rule, steps) in RULES.items():
        per = []
        for t, pool in by_teacher.items():
            hashes = [h for h, _ in pool]
            rng = random.Random(f"{name}/{t}")
            fit = lambda h, st, i, t=t: fits[fit_key(t, h, st, i)]  # noqa: E731
            picks = [rule(hashes, rng, fit) for _ in range(args.draws)]
            per.append(statistics.mean(100.0 * sum(true[t][x] < true[t][h] for x in hashes) / (len(hashes) - 1)
                                       for h in picks))
        summary["rules"][name] = {"steps": steps, "percentile": per, "mean": statistics.mean(per)}
        print(f"| {name} | {steps} | " + " | ".join(f"{x:.1f}" for x in per) + f" | {statistics.mean(per):.1f} |")
    summary["seconds"] = time.perf_counter() - t0
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(summary, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
