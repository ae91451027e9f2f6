"""Does the search find better networks than random at equal cost? The planted-task benchmark.

    python experiments/search_quality.py --teachers 0 1 2 --seeds 0 1 2 --json runs/search_quality/sq.json
    python experiments/search_quality.py --teachers 0 --seeds 0 --strategies atldas atldas:estimator=st \\
        --budgets none                                   # an ablation: one variant against another
    python experiments/search_quality.py --seeds 0 1 2 --random 6 --strategies atldas atldas:select=0 \\
        random random:select=0                          # the select stage against the argmax alone

For every teacher (:mod:`atldas.tasks.planted`: a network built from a known random genotype generates
the targets), every strategy variant searches the ``planted`` space with every seed, without a budget
and with one (``--budgets``: ``none`` or a fraction of the median MACs of uniform random genotypes).
Each variant runs the ``planted`` space's defaults for its strategy: ``atldas`` and ``random`` end with
the ``select`` stage (16 candidates fitted 50 steps, the best 5 again with 350), ``darts`` and
``gdas`` derive their argmax as published (they refuse the stage: their supernet holds ``none``;
``atldas:select=0`` or ``random:select=8`` changes the others';
``NAME:select_steps=150,select_keep=0`` is the one-round stage of 150 steps used before 2026-12-04).
The reference of a search is 10 uniform random genotypes (``--random``) whose MACs are within 5 % of
the searched genotype's: the first ones of the teacher's fixed stream of draws in that window, so
searches of similar cost share most of their references (and their standalone trainings).
Every genotype (searched, reference, the teacher's) is trained standalone by the task's one recipe
with each of ``--train-seeds`` (their spread is the noise floor; a genotype's loss is the geometric mean
over the seeds, so one seed that stalls does not decide). Reported per variant and budget,
the mean over teachers and seeds of:

- ``percentile``: the share, in %, of the reference genotypes whose standalone loss is lower than the
  searched one's (0 is best; 50 is what a random genotype of the same cost scores on average);
- ``improvement``: Yang et al.'s relative improvement over the reference mean, ``(mean_ref - loss) /
  mean_ref``, in %;
- ``tau``: Kendall tau-b between the final supernet's shared-weight held-out loss and the standalone
  loss over the reference genotypes and the searched one (those hard pruning left in the supernet,
  ``tau_n`` of them); the mean is over the runs with at least :data:`MIN_TAU_N` (``tau_runs`` of
  them): over 2 genotypes a tau is +-1 by chance (until 2026-12-06 every run with 2 counted);
- ``recovery``: the share of the teacher's (node, input, op) edges the searched normal cell has (and of
  its (node, input) edges, its input sets, and its (node, input) edges from intermediate nodes, the
  planted *deep* topology; the first cell's inputs 0 and 1 count as one, both being the stem's output),
  beside the chance levels: the same share for uniform random genotypes, for those within 5 % of
  the searched MACs, and of the other teachers' genotypes (a placebo: a generic preference scores
  there too);
- ``time``: seconds per search on one thread.

Stages already computed are reused (``OUT/searches/*.json``, ``OUT/standalone.json``) when they were
computed with what would run now: a stored search carries the fingerprint of its resolved search
config, the task's shape and recipe and the reference rule (output and display settings left out), and
is run again when that differs, unless a search stored under another label has today's fingerprint
(``atldas:select=16`` for ``atldas`` once 16 is the default): that one is copied; a standalone loss
is keyed by the fingerprint of the task's shape and recipe, so a changed recipe trains afresh.
``--workers`` processes run them (one torch thread each, glibc's malloc tuned as the ``atldas`` command
tunes it: freed memory reused without page faults, the same floats). A search stored with fewer references than
``--random`` is not run again: its reference list is extended (the next genotypes of its window,
trained like the others), and its ``tau`` counts the references it evaluated with shared weights.
Prints a table and writes JSON and a PNG.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from atldas.config import to_dict  # noqa: E402
from atldas.cost import cost_table  # noqa: E402
from atldas.genotype import Genotype  # noqa: E402
from atldas.run import Run, SearchConfig, bind_space, make_search_config  # noqa: E402
from atldas.strategies import STRATEGIES  # noqa: E402
from atldas.tasks.planted import SHAPE, Recipe, standalone, teacher_genotype  # noqa: E402
from atldas.utils.atomic import write_text_atomic  # noqa: E402
from atldas.utils.malloc import keep_freed_memory  # noqa: E402

#: Uniform random draws per teacher from which references are taken (a fixed stream).
DRAWS = 20000
#: A reference's MACs are within this factor of the searched genotype's.
WINDOW = 1.05
#: How references are chosen (part of a stored search's fingerprint: its tau was measured on them);
#: ``--reference nearest`` has its own rule.
REFERENCE_RULE = f"first draws within x{WINDOW}"
NEAREST_RULE = "nearest in log MACs among the first 48 draws"


def _fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


#: The version of the ops' float arithmetic: raised when a change gives other rounding (2: the
#: ``dil_conv`` backward through the image's phases, :mod:`atldas.utils.dilated_conv`, 2026-12-04).
NUMERICS = 2
#: The task's data shape and standalone recipe (and :data:`NUMERICS`): what every standalone loss (and
#: a search's ``select`` stage) depends on besides the genotype and the seeds.
TASK_FINGERPRINT = _fingerprint({"shape": to_dict(SHAPE), "recipe": to_dict(Recipe()), "numerics": NUMERICS})


def _variant(spec: str) -> Tuple[str, str, List[str]]:
    """``name[:k=v,k=v]`` -> (label, strategy, --set pairs)."""
    name, _, rest = spec.partition(":")
    return spec, name, [kv for kv in rest.split(",") if kv]


def _space(sets: Sequence[str] = ()):
    return bind_space(make_search_config(space="planted", sets=list(sets)))


_POOL: Dict[int, Tuple[Any, Any, torch.Tensor, Dict[str, torch.Tensor]]] = {}


def pool(teacher: int):
    """(space, arch, costs (DRAWS,), samples): the teacher's fixed stream of uniform random genotypes."""
    if teacher not in _POOL:
        space = _space()
        arch = space.new_arch()
        with torch.no_grad():
            for p in arch.parameters():
                p.zero_()  # exactly uniform
        table = cost_table(space, arch, metric="macs")
        samples = arch.sample_many(DRAWS, generator=torch.Generator().manual_seed(7_000_003 + teacher))
        _POOL[teacher] = (space, arch, table.of_samples(arch, samples), samples)
    return _POOL[teacher]


def reference(teacher: int, cost: float, n: int, *, mode: str = "matched", pool_size: int = 48) -> List[Genotype]:
    """The ``n`` reference genotypes of a searched cost (module docstring). ``mode="nearest"`` (quick
    ablations): the ``n`` of the teacher's first ``pool_size`` draws nearest in log MACs, whatever their
    distance, so every search of a teacher shares one pool of standalone trainings."""
    space, arch, costs, samples = pool(teacher)
    if mode == "nearest":
        idx = sorted(range(pool_size), key=lambda k: abs(math.log(float(costs[k]) / cost)))
    else:
        idx = ((costs >= cost / WINDOW) & (costs <= cost * WINDOW)).nonzero().flatten().tolist()
    out, seen = [], set()
    for k in idx:
        g = space.child_to_genotype(arch, arch.child_at(samples, k))
        if g.hash() not in seen:
            seen.add(g.hash())
            out.append(g)
        if len(out) == n:
            break
    return out


def median_random_cost() -> float:
    return float(pool(0)[2].median())


def _edges(g: Genotype) -> List[Tuple[int, int, str]]:
    """(node, input, op) of the normal cell, inputs 0 and 1 merged (both read as 1): in the planted
    network the first cell's two inputs are the same stem output, so an edge from either computes the
    same. Inputs 2.. (the intermediate nodes) stay apart."""
    return [(j, max(i, 1), op) for j, node in enumerate(g.normal.nodes) for op, i in node]


def _recovered(g: Genotype, t: Genotype) -> Dict[str, float]:
    ours, theirs = _edges(g), _edges(t)
    ours_in = {(j, i) for j, i, _ in ours}
    deep = [(j, i) for j, i, _ in theirs if i >= 2]  # the teacher's edges from intermediate nodes
    sets = lambda x: [tuple(sorted(i for jj, i, _ in _edges(x) if jj == j)) for j in range(len(x.normal.nodes))]  # noqa: E731
    return {"edges": sum(e in set(ours) for e in theirs) / len(theirs),
            "inputs": sum((j, i) in ours_in for j, i, _ in theirs) / len(theirs),
            "sets": statistics.mean(a == b for a, b in zip(sets(g), sets(t))),
            "deep": sum(e in ours_in for e in deep) / len(deep) if deep else math.nan}


#: Uniform draws of a teacher's stream that give the chance levels of :func:`recovery`.
CHANCE_DRAWS = 4000
#: The teachers whose genotypes are the placebo control of :func:`recovery` (the others than the searched one).
PLACEBO_TEACHERS = (0, 1, 2, 3, 4, 5)
_CHANCE: Dict[int, Tuple[torch.Tensor, Dict[str, torch.Tensor]]] = {}


def recovery(g: Genotype, teacher: int, *, macs: Optional[float] = None) -> Dict[str, float]:
    """Shares of the teacher's (node, input, op) edges, (node, input) edges, node input sets and
    (node, input) edges from intermediate nodes (``deep``: the planted deep topology) the genotype has
    (up to the planted network's equivalences), beside their chance levels: the mean of the same shares
    over the first uniform random genotypes of the teacher's stream (``*_chance``) and, given the
    genotype's ``macs``, over those of them within 5 % of it (``*_matched``: a budget moves the cost,
    and the cost the structure); and the placebo control ``*_placebo``, the same shares of the other
    teachers' genotypes among :data:`PLACEBO_TEACHERS`: a search that recovers its own teacher scores
    above it, a generic preference (deep cells, say, or some op) scores the same on both."""
    t = teacher_genotype(teacher)
    if teacher not in _CHANCE:
        space, arch, costs, samples = pool(teacher)
        rs = [_recovered(space.child_to_genotype(arch, arch.child_at(samples, k)), t) for k in range(CHANCE_DRAWS)]
        _CHANCE[teacher] = (costs[:CHANCE_DRAWS], {k: torch.tensor([r[k] for r in rs], dtype=torch.float64)
                                                   for k in rs[0]})
    costs, shares = _CHANCE[teacher]
    others = [_recovered(g, teacher_genotype(u)) for u in PLACEBO_TEACHERS if u != teacher]
    out = {**_recovered(g, t), **{f"{k}_chance": float(v.mean()) for k, v in shares.items()},
           **{f"{k}_placebo": statistics.mean(o[k] for o in others) for k in shares}}
    if macs is not None:
        near = (costs >= macs / WINDOW) & (costs <= macs * WINDOW)
        out.update({f"{k}_matched": float(v[near].mean()) if int(near.sum()) >= 20 else math.nan
                    for k, v in shares.items()})
    return out


def search_key(label: str, budget: str, teacher: int, seed: int, reference: str) -> str:
    """The name of a search's file in ``OUT/searches`` (without ``.json``)."""
    return f"{label}|{budget}|t{teacher}|s{seed}|{reference}".replace("/", "_").replace(":", "~")


def search_config(job: Dict[str, Any]):
    """The resolved search config of a benchmark job."""
    sets = ["tensorboard=false", "progress=false", "plots=false", f"seed={job['seed']}", *job["sets"]]
    if job["budget"] is not None:
        sets.append(f"target_macs={job['budget']}")
    return make_search_config(space="planted", strategy=job["strategy"], data=f"teacher:{job['teacher']}", sets=sets)


#: Settings added after searches were stored, at the value that computes what the code computed before
#: they existed: left out of the fingerprint at that value, so the searches stored before stay valid.
LATER_SETTINGS: Dict[Tuple[str, str], Any] = {("hp", "learn_topology"): True, ("hp", "prune_z"): 0.0,
                                              ("", "select_keep"): 0,
                                              ("", "select_keep_steps"): 350, ("", "select_epsilon"): 0.0,
                                              ("", "select_fill"): False, ("", "select_pool"): 0,
                                              ("", "select_mutants"): 0, ("", "select_strata"): "none"}


#: The expected cost of a budgeted search whose supernet holds ``none`` (DARTS, GDAS): since 2026-12-06
#: over the ops derive keeps (``none`` excluded: :meth:`atldas.arch.ArchParams.op_probs_without`, a
#: float64 softmax of the kept ops' logits; a first version renormalised the float32 probabilities, rule
#: (p)'s first run); before, ``none`` counted as free. Part of those searches' fingerprint, so the ones
#: stored before are run again.
NONE_BUDGET_RULE = "expected cost without none: float64 softmax of the kept logits"


def search_fingerprint(job: Dict[str, Any]) -> str:
    """What a stored search must have been computed with to be reused (module docstring)."""
    config = {k: v for k, v in to_dict(search_config(job)).items() if k not in SearchConfig.DISPLAY}
    for (group, name), neutral in LATER_SETTINGS.items():  # group "": a field of the config itself
        where = config.get(group, {}) if group else config
        if where.get(name, neutral) == neutral:
            where.pop(name, None)
    if job["budget"] is None:  # it acts under a budget only: the searches without one stay valid
        config.pop("select_fill", None)
    extra = {}
    if job["budget"] is not None and STRATEGIES.get(job["strategy"]).uses_none:
        extra["budget_rule"] = NONE_BUDGET_RULE
    rule = NEAREST_RULE if job.get("reference") == "nearest" else REFERENCE_RULE
    return _fingerprint({"config": config, "task": TASK_FINGERPRINT, "references": rule, **extra})


def searches_to_run(folder: Path, jobs: Sequence[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], int, Dict[str, Path]]:
    """The jobs without a stored search computed with what would run now (``folder/KEY.json`` with
    the job's :func:`search_fingerprint`), how many of them have one stored with other settings, and,
    by key, the jobs whose own file is not today's but another label's file has their fingerprint."""
    todo, stale, borrowed = [], 0, {}
    by_fingerprint: Optional[Dict[str, Path]] = None
    for job in jobs:
        path, fp = folder / f"{job['key']}.json", search_fingerprint(job)
        if path.is_file() and json.loads(path.read_text()).get("fingerprint") == fp:
            continue
        if by_fingerprint is None:  # read once, only when something is not stored under its own key
            by_fingerprint = {}
            for other in sorted(folder.glob("*.json")):
                by_fingerprint.setdefault(json.loads(other.read_text()).get("fingerprint"), other)
        if fp in by_fingerprint:
            borrowed[job["key"]] = by_fingerprint[fp]
            continue
        stale += path.is_file()
        todo.append(job)
    return todo, stale, borrowed


def _worker_init() -> None:
    """A worker's process: one torch thread, freed memory kept for reuse (as the ``atldas`` command runs)."""
    torch.set_num_threads(1)
    keep_freed_memory()


def run_search(job: Dict[str, Any]) -> Dict[str, Any]:
    """One search and everything measured on its final supernet."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    run = Run(search_config(job))
    run.fit()
    g = run.final_genotype()
    seconds = time.perf_counter() - t0
    cost = float(g.cost["macs"])
    refs = reference(job["teacher"], cost, job["random"], mode=job["reference"])
    shared = {}
    arch = run.net.arch
    for x in [g, *refs]:  # shared-weight held-out loss (more batches than derive uses) where not pruned
        child = run.space.genotype_to_child(arch, x)
        alive = all(bool(arch.set_mask(t, j)[s]) for t, sets in child.sets.items() for j, s in enumerate(sets)) and \
            all(bool(arch.op_mask(t)[e, o]) for t, ops in child.ops.items() for e, o in ops.items())
        if alive:
            shared[x.hash()] = run.evaluate(child, batches=8)
    return {**job, "fingerprint": search_fingerprint(job), "genotype": g.to_json(), "hash": g.hash(), "macs": cost,
            "seconds": seconds, "reference": [r.to_json() for r in refs], "shared": shared}


def standalone_key(teacher: int, genotype_hash: str, seed: int) -> str:
    """A standalone loss's key in ``OUT/standalone.json``: the task fingerprint, teacher, genotype, seed."""
    return f"{TASK_FINGERPRINT}/{teacher}/{genotype_hash}/{seed}"


def run_standalone(job: Tuple[int, str, int]) -> Tuple[str, float]:
    torch.set_num_threads(1)
    teacher, text, seed = job
    g = Genotype.from_json(text)
    return standalone_key(teacher, g.hash(), seed), standalone(g, teacher_seed=teacher, seed=seed)["test"]


#: A run's tau counts in the means only over at least this many genotypes (with 2 it is +-1 by chance).
MIN_TAU_N = 5


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall tau-b of ``a`` and ``b`` (tau-a where nothing ties); NaN for fewer than 2 values or a
    constant side."""
    n, s, ta, tb = len(a), 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            s += 1 if da * db > 0 else -1 if da * db < 0 else 0
            ta += da == 0
            tb += db == 0
    pairs = n * (n - 1) // 2
    denom = math.sqrt((pairs - ta) * (pairs - tb))
    return s / denom if n > 1 and denom > 0 else float("nan")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teachers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=["atldas", "darts", "gdas", "random"],
                   help="variants, NAME or NAME:key=value,key=value (search config overrides)")
    p.add_argument("--budgets", nargs="+", default=["none", "0.8"],
                   help="'none' or a fraction of the median MACs of uniform random genotypes")
    p.add_argument("--random", type=int, default=10, help="reference genotypes per search")
    p.add_argument("--reference", choices=("matched", "nearest"), default="matched",
                   help="matched: within 5 %% of the searched MACs (the benchmark); nearest: the nearest in MACs "
                        "among the first 48 draws of the teacher (quick ablations: one shared pool)")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/search_quality")
    p.add_argument("--json", help="the summary JSON (default OUT/search_quality.json)")
    p.add_argument("--recount", metavar="SUMMARY", help="only recompute the recovery shares of an existing "
                   "summary JSON from the genotypes stored in OUT/searches (nothing is searched or trained)")
    p.add_argument("--retau", metavar="SUMMARY", nargs="+", help="only recompute the mean taus of existing summary "
                   "JSON files from their runs' stored taus with today's rule (MIN_TAU_N)")
    args = p.parse_args(argv)
    if args.retau:
        for name in args.retau:
            path = Path(name)
            before = json.loads(path.read_text())
            summary = retau(before)
            if summary == before:  # not rewritten: a file stored with another indent stays as it is
                print(f"the mean taus of {path} are today's already")
                continue
            write_text_atomic(path, json.dumps(summary, indent=1) + "\n")
            print(f"recomputed the mean taus of {path}")
        return 0
    _worker_init()
    out = Path(args.out)
    if args.recount:
        path = Path(args.recount)
        if not any((out / "searches").glob("*.json")):  # a mistyped --out would set every share to NaN
            raise SystemExit(f"--recount: {out / 'searches'} holds no stored search; give the --out the summary "
                             "was computed in")
        summary = recount(json.loads(path.read_text()), out / "searches", strict=False)
        if summary["recount"]["not_recounted"] and len(summary["recount"]["not_recounted"]) == sum(
                isinstance(m, dict) for v in summary["strategies"].values() for m in v.values()):
            raise SystemExit(f"--recount: none of {path}'s searches is stored in {out / 'searches'} (first: "
                             f"{next(iter(summary['recount']['not_recounted'].values()))}); nothing rewritten")
        write_text_atomic(path, json.dumps(summary, indent=1) + "\n")
        print(format_table(summary))
        for variant, why in summary["recount"]["not_recounted"].items():
            print(f"not recounted (its shares are now NaN): {variant}: {why}")
        print(f"recounted the recovery shares of {path} from {out / 'searches'}")
        return 0
    (out / "searches").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    median = median_random_cost()
    budgets = {b: (None if b == "none" else float(b) * median) for b in args.budgets}

    jobs = []
    for label, strategy, sets in map(_variant, args.strategies):
        for b, target in budgets.items():
            for t in args.teachers:
                for s in args.seeds:
                    key = search_key(label, b, t, s, args.reference)
                    jobs.append({"key": key, "label": label, "strategy": strategy, "sets": sets, "budget_label": b,
                                 "budget": target, "teacher": t, "seed": s, "random": args.random,
                                 "reference": args.reference})
    todo, stale, borrowed = searches_to_run(out / "searches", jobs)
    for job in jobs:  # the same search under another label: stored under this one too, with this job's names
        if job["key"] in borrowed:
            stored = json.loads(borrowed[job["key"]].read_text())
            names = {k: job[k] for k in ("key", "label", "strategy", "sets")}
            write_text_atomic(out / "searches" / f"{job['key']}.json", json.dumps({**stored, **names}))
    # the searches of one teacher and seed share their data (drawn once per worker), darts (the longest) first
    todo.sort(key=lambda j: (j["teacher"], j["seed"], j["strategy"] != "darts"))
    print(f"{len(jobs)} searches ({len(todo)} to run, {stale} of them stored with other settings, {len(borrowed)} "
          f"stored under another label), median random "
          f"cost {median / 1e6:.3f} M MACs", flush=True)
    with ProcessPoolExecutor(args.workers, initializer=_worker_init) as ex:
        for r in ex.map(run_search, todo):
            write_text_atomic(out / "searches" / f"{r['key']}.json", json.dumps(r))
            print(f"  search {r['key']}: {r['macs'] / 1e6:.3f} M MACs, {r['seconds']:.0f} s", flush=True)
    results = [json.loads((out / "searches" / f"{j['key']}.json").read_text()) for j in jobs]
    for r in results:  # the first --random genotypes of the search's window; what it stored is their prefix
        refs = [g.to_json() for g in reference(r["teacher"], r["macs"], args.random, mode=args.reference)]
        stored = r["reference"][:args.random]
        if refs[:len(stored)] != stored:
            raise SystemExit(f"{r['key']}: its stored references are not the first of its window; remove "
                             f"{out / 'searches'} and run again")
        r["reference"] = refs  # more than the search stored: trained below, not in its tau (no shared loss)

    cache_path = out / "standalone.json"
    cache: Dict[str, float] = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    needed = {}
    for r in results:
        for text in [r["genotype"], *r["reference"]]:
            g = Genotype.from_json(text)
            for s in args.train_seeds:
                needed.setdefault(standalone_key(r["teacher"], g.hash(), s), (r["teacher"], text, s))
    teacher_refs, teacher_macs = {}, {}  # the teacher's own genotype among uniform random genotypes of its MACs
    space = _space()
    for t in args.teachers:
        g = teacher_genotype(t)
        teacher_macs[t] = float(space.measure(g, metric="macs"))
        teacher_refs[t] = reference(t, teacher_macs[t], args.random, mode=args.reference)
        for x in [g, *teacher_refs[t]]:
            for s in args.train_seeds:
                needed.setdefault(standalone_key(t, x.hash(), s), (t, x.to_json(), s))
    todo_s = [v for k, v in needed.items() if k not in cache]
    print(f"{len(needed)} standalone trainings ({len(todo_s)} to run)", flush=True)
    t_train, every = time.perf_counter(), max(1, len(todo_s) // 10)
    with ProcessPoolExecutor(args.workers, initializer=_worker_init) as ex:
        for n, (k, v) in enumerate(ex.map(run_standalone, todo_s, chunksize=4), 1):
            cache[k] = v
            if n % 20 == 0:
                write_text_atomic(cache_path, json.dumps(cache))
            if n % every == 0 and n < len(todo_s):
                spent = time.perf_counter() - t_train
                print(f"  trained {n}/{len(todo_s)} in {spent / 60:.1f} min, about "
                      f"{spent / n * (len(todo_s) - n) / 60:.1f} min left", flush=True)
    write_text_atomic(cache_path, json.dumps(cache))

    def loss(t: int, h: str) -> float:  # geometric mean over training seeds: one stalled seed does not dominate
        return math.exp(statistics.mean(math.log(cache[standalone_key(t, h, s)]) for s in args.train_seeds))

    noise = []
    rows: Dict[str, Dict[str, List[Dict[str, float]]]] = {}
    for r in results:
        t = r["teacher"]
        mine = loss(t, r["hash"])
        refs = [Genotype.from_json(x).hash() for x in r["reference"]]
        ref_losses = [loss(t, h) for h in refs]
        if not ref_losses:
            raise SystemExit(f"{r['key']}: no uniform random genotype of the teacher's {DRAWS} draws is within "
                             f"x{WINDOW} of its {r['macs'] / 1e6:.3f} M MACs: no percentile")
        if len(ref_losses) < args.random:
            print(f"  warning: {r['key']}: only {len(ref_losses)} of {args.random} references within x{WINDOW} of "
                  f"its {r['macs'] / 1e6:.3f} M MACs among the teacher's {DRAWS} draws", flush=True)
        hashes = [r["hash"], *refs]
        for h in hashes if len(args.train_seeds) >= 2 else ():  # one training seed: no noise floor
            a, b = (cache[standalone_key(t, h, s)] for s in args.train_seeds[:2])
            noise.append(abs(a - b) / ((a + b) / 2))
        # from the genotype (searches stored before 2026-12-04 also carry shares that merged every
        # intermediate-node input into input 1; they are not read, see --recount)
        rec = recovery(Genotype.from_json(r["genotype"]), t, macs=r["macs"])
        rows.setdefault(r["label"], {}).setdefault(r["budget_label"], []).append({
            "teacher": t, "seed": r["seed"], "loss": mine, "macs": r["macs"], "seconds": r["seconds"],
            "percentile": 100.0 * sum(x < mine for x in ref_losses) / len(ref_losses),
            "improvement": 100.0 * (statistics.mean(ref_losses) - mine) / statistics.mean(ref_losses),
            "tau": kendall([r["shared"][h] for h in hashes if h in r["shared"]],
                           [loss(t, h) for h in hashes if h in r["shared"]]),
            "tau_n": sum(h in r["shared"] for h in hashes), "n_reference": len(ref_losses),
            "hash": r["hash"], "fingerprint": r.get("fingerprint"), "task": TASK_FINGERPRINT,
            "reference_losses": ref_losses,
            "ref_spread": statistics.pstdev(ref_losses) / statistics.mean(ref_losses),
            **{f"recovery_{k}": v for k, v in rec.items()}})
    teacher_loss = {t: loss(t, teacher_genotype(t).hash()) for t in args.teachers}
    teacher_rank = {}
    for t, refs in teacher_refs.items():
        ref_losses = [loss(t, x.hash()) for x in refs]
        teacher_rank[t] = {"macs": teacher_macs[t],
                           "percentile": 100.0 * sum(x < teacher_loss[t] for x in ref_losses) / len(ref_losses),
                           "improvement": 100.0 * (statistics.mean(ref_losses) - teacher_loss[t]) / statistics.mean(ref_losses)}
    summary: Dict[str, Any] = {"strategies": {}, "teachers": args.teachers, "seeds": args.seeds,
                               "budgets": {b: t for b, t in budgets.items()}, "train_seeds": args.train_seeds,
                               "noise": statistics.mean(noise) if noise else None, "teacher_loss": teacher_loss,
                               "teacher": teacher_rank, "median_random_macs": median, "commit": _commit(),
                               "tau_rule": f"mean over runs with tau_n >= {MIN_TAU_N}"}
    for label, per_budget in rows.items():
        summary["strategies"][label] = {b: {**_means(rs), "runs": rs} for b, rs in per_budget.items()}
    # the contract's flat form: the no-budget figures when present, else the first budget
    for label, per_budget in summary["strategies"].items():
        first = per_budget.get("none") or next(iter(per_budget.values()))
        per_budget.update({k: first[k] for k in ("percentile", "improvement", "tau", "recovery")})
    summary["seconds"] = time.perf_counter() - t_start
    path = Path(args.json) if args.json else out / "search_quality.json"
    write_text_atomic(path, json.dumps(summary, indent=1) + "\n")
    print(format_table(summary))
    _plot(summary, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')} ({summary['seconds'] / 60:.1f} min)")
    return 0


RECOVERY_KEYS = [f"recovery_{k}{x}" for k in ("edges", "inputs", "sets", "deep") for x in ("", "_chance", "_matched", "_placebo")]


def _commit() -> Optional[str]:
    """The checkout's commit (with ``+`` when its tracked files differ from it), None outside git."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def _means(rs: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """The means over a variant's runs of one budget (``recovery``: the edges' share, as the contract names it)."""
    keys = ["percentile", "improvement", *RECOVERY_KEYS, "seconds", "macs", "loss"]
    means = {k: statistics.mean(x[k] for x in rs) for k in keys if all(k in x for x in rs)}
    means["recovery"] = means["recovery_edges"]
    means.update(_tau_mean(rs))
    return means


def _tau_mean(rs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The mean tau over runs and how many count: pruning leaves few of a run's genotypes in its
    supernet, and a tau over fewer than MIN_TAU_N (or NaN, under two) is not counted."""
    taus = [x["tau"] for x in rs if isinstance(x.get("tau"), float) and math.isfinite(x["tau"])
            and x.get("tau_n", MIN_TAU_N) >= MIN_TAU_N]
    return {"tau": statistics.mean(taus) if taus else float("nan"), "tau_runs": len(taus)}


def retau(summary: Dict[str, Any]) -> Dict[str, Any]:
    """``summary`` with every mean tau recomputed from its runs by :func:`_tau_mean` (the flat no-budget
    figures too); the runs' own taus are kept."""
    for per_budget in summary["strategies"].values():
        for m in per_budget.values():
            if isinstance(m, dict) and "runs" in m:
                m.update(_tau_mean(m["runs"]))
        first = per_budget.get("none") or next(v for v in per_budget.values() if isinstance(v, dict))
        per_budget["tau"] = first["tau"]
    summary["tau_rule"] = f"mean over runs with tau_n >= {MIN_TAU_N}"
    return summary


def recount(summary: Dict[str, Any], searches: Path, *, reference: str = "matched", strict: bool = True) -> Dict[str, Any]:
    """``summary`` with the recovery shares of every run recomputed from the genotype its search stored
    in ``searches`` (found by label, budget, teacher and seed; its MACs and measured seconds must be the
    run's, or the stored search is another one). The other figures are kept. For summaries written before
    the first cell's inputs were merged as documented (every intermediate-node input read as input 1).
    A variant and budget with a run whose search is not stored raise, or with ``strict=False`` get NaN
    shares and are listed under ``"recount"`` with the reason."""
    out = json.loads(json.dumps(summary))
    missing: Dict[str, str] = {}
    for label, per_budget in out["strategies"].items():
        for b, m in per_budget.items():
            if not isinstance(m, dict):
                continue
            recs, why = [], None
            for run in m["runs"]:
                path = searches / f"{search_key(label, b, run['teacher'], run['seed'], reference)}.json"
                stored = json.loads(path.read_text()) if path.is_file() else None
                if stored is None:
                    why = f"no stored search {path}"
                elif (float(stored["macs"]), float(stored["seconds"])) != (float(run["macs"]), float(run["seconds"])):
                    why = (f"{path} holds a search of {float(stored['macs']):.0f} MACs in {float(stored['seconds']):.3f} s, "
                           f"the summary's run {float(run['macs']):.0f} in {float(run['seconds']):.3f} s: another search "
                           f"was stored since")
                if why:
                    break
                recs.append(recovery(Genotype.from_json(stored["genotype"]), int(run["teacher"]), macs=float(run["macs"])))
            if why and strict:
                raise SystemExit(why)
            if why:
                missing[f"{label}|{b}"] = why
                recs = [{k[len("recovery_"):]: math.nan for k in RECOVERY_KEYS}] * len(m["runs"])
            for run, rec in zip(m["runs"], recs):
                run.update({f"recovery_{k}": v for k, v in rec.items()})
            m.update(_means(m["runs"]))
        first = per_budget.get("none") or next(v for v in per_budget.values() if isinstance(v, dict))
        per_budget["recovery"] = first["recovery"]
    out["recount"] = {"rule": "inputs 0 and 1 merged, intermediate nodes apart (2026-12-04)", "not_recounted": missing}
    return out


def format_table(summary: Dict[str, Any]) -> str:
    teacher = summary.get("teacher", {})
    noise = ("n/a (one training seed)" if summary["noise"] is None else
             f"{100 * summary['noise']:.1f} % (|seed 0 - seed 1| / mean)")
    lines = [f"planted task: teachers {summary['teachers']}, seeds {summary['seeds']}; training noise "
             f"{noise}; teacher's own loss "
             + ", ".join(f"{v:.4f}" for v in summary["teacher_loss"].values())
             + "; the teacher's own genotype among random genotypes of its MACs (what finding the planted "
             "genotype scores): percentile " + ", ".join(f"{v['percentile']:.0f}" for v in teacher.values())
             + ", improvement " + ", ".join(f"{v['improvement']:+.1f} %" for v in teacher.values()),
             "| strategy | budget | percentile (lower is better) | improvement % | tau | edges recovered (chance) | "
             "input sets recovered (chance) | deep edges recovered (chance, cost-matched, other teachers) | MACs | s / search |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, per_budget in summary["strategies"].items():
        for b, m in per_budget.items():
            if not isinstance(m, dict):
                continue
            runs = len(m.get("runs", ()))
            tau = ((f"{m['tau']:.2f}" if math.isfinite(m["tau"]) else "undefined")
                   + (f" ({m['tau_runs']} runs)" if m.get("tau_runs", runs) < runs else ""))
            lines.append(f"| {label} | {b} | {m['percentile']:.1f} | {m['improvement']:+.1f} | {tau} | "
                         f"{m['recovery_edges']:.2f} ({m['recovery_edges_chance']:.2f}) | {m['recovery_sets']:.2f} "
                         f"({m['recovery_sets_chance']:.2f}) | {m.get('recovery_deep', math.nan):.2f} "
                         f"({m.get('recovery_deep_chance', math.nan):.2f}, {m.get('recovery_deep_matched', math.nan):.2f}, "
                         f"{m.get('recovery_deep_placebo', math.nan):.2f}) | "
                         f"{m['macs'] / 1e6:.2f} M | {m['seconds']:.0f} |")
    return "\n".join(lines)


def _plot(summary: Dict[str, Any], path: Path) -> None:
    import matplotlib  # only for the picture

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [(label, b) for label, pb in summary["strategies"].items() for b, m in pb.items() if isinstance(m, dict)]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels)), 3.5))
    for k, (label, b) in enumerate(labels):
        ps = [r["percentile"] for r in summary["strategies"][label][b]["runs"]]
        ax.scatter([k] * len(ps), ps, alpha=0.6)
        ax.plot([k - 0.3, k + 0.3], [statistics.mean(ps)] * 2, color="black")
    ax.axhline(50, color="grey", ls="--", lw=0.8)
    names = [a.replace(":", "\n").replace(",", "\n") + f"\nbudget {b}" for a, b in labels]
    ax.set_xticks(range(len(labels)), names, fontsize=7)
    ax.set_ylabel("percentile among matched-cost random (%)")
    ax.set_ylim(-5, 105)
    ax.set_title("planted task: searched genotypes vs\nrandom genotypes of the same MACs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
