"""Equal-recipe comparison on matting: the searched genotype against random genotypes of the same MACs,
the random strategy's genotype and optional hand-designed baselines.

    python experiments/compare.py --json runs/compare/compare.json          # `make compare`
    python experiments/compare.py --searched RUN_DIR --random 8 --seeds 0 1 2 --baselines cnn_baseline

What runs (every stage is kept under ``--out`` and reused when the script runs again, so an interrupted
comparison continues where it stopped; a retrain folder that holds another recipe's run, e.g. after
``--batch`` changed, is refused with a message rather than reused):

1. *searched*: the genotype of ``--searched``, or of a default ``atldas search --space matting`` run
   into ``OUT/search`` (seed 0; continued if it is there);
2. *random strategy*: the genotype of ``atldas search --space matting --strategy random`` (random
   search with shared weights, the same budget and recipe) into ``OUT/search-random``
   (``--no-random-strategy`` skips it);
3. *random-1..N*: ``--random`` uniform random genotypes of the ``matting`` space whose target networks
   have the searched one's MACs within ``--match`` (2 %): the first ones of a fixed stream of uniform
   draws (every input set, op and block equally likely), ``OUT/random-K.json``; their parameter counts
   differ and are reported;
4. every genotype (and baseline) is retrained by :func:`atldas.retrain.retrain` with one recipe (the
   ``atldas retrain`` defaults unless flags change them) once per ``--seeds`` seed
   (``OUT/<model>-<genotype hash>-seed<S>``; a baseline ``OUT/<name>-seed<S>``), ``--workers``
   processes at a time, one torch thread each;
5. every ``best.pt`` is scored on one held-out test set, the synthetic split ``test`` (``--test-count``
   images of ``--test-size`` pixels, seed 0), with the DIM metrics exactly as ``atldas eval`` computes
   them; the trivial prediction (alpha = 0.5 in the unknown region) is scored on the same images.

The table gives, per network, params and MACs at 1024x1024 (FlopCounterMode / 2) and mean ± standard
deviation over the seeds of SAD, MSE (x1e3), Grad and Conn (DIM /1000 scales), and the percentile of the
searched genotype (and of the random strategy's) among the random genotypes: the share, in %, of them
whose mean SAD is lower (0 is best, 50 is what a random genotype scores on average). Under it,
:func:`separation`: whether the recipe tells the genotypes apart at all (one-way ANOVA, ICC).
``--report FILE`` prints the table and separation of a stored ``--json`` result without training.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from atldas.bench import count_cost  # noqa: E402
from atldas.cost import cost_table  # noqa: E402
from atldas.data.synthetic import SyntheticMatting  # noqa: E402
from atldas.derive import cost_record  # noqa: E402
from atldas.errors import AtldasError, ConfigError  # noqa: E402
from atldas.genotype import Genotype  # noqa: E402
from atldas.models.zoo import genotype_macro, resolve_model  # noqa: E402
from atldas.retrain import RetrainConfig, retrain, trivial_scores, validate  # noqa: E402
from atldas.run import bind_space, make_search_config  # noqa: E402
from atldas.search import search  # noqa: E402
from atldas.utils.atomic import write_text_atomic  # noqa: E402
from atldas.utils.weights import load_weights  # noqa: E402

log = logging.getLogger("atldas.compare")

METRICS = ("SAD", "MSE", "Grad", "Conn")


# ----------------------------------------------------------------------------- genotypes

def searched_genotype(args: argparse.Namespace, out: Path, *, strategy: str = "atldas") -> Path:
    """A search's final genotype file: ``--searched`` (for atldas), or a default matting search of
    ``strategy`` into ``OUT/search`` / ``OUT/search-<strategy>``."""
    if strategy == "atldas" and args.searched:
        p = Path(args.searched)
        p = p / "genotype.json" if p.is_dir() else p
        if not p.is_file():
            raise ConfigError(f"--searched {args.searched}: no genotype file there")
        return p
    run = out / ("search" if strategy == "atldas" else f"search-{strategy}")
    final = run / "genotype.json"
    if final.is_file() and "repair" in (Genotype.load(final).cost or {}):  # per-epoch genotypes lack it
        log.info("%s genotype: reusing %s", strategy, final)
        return final
    log.info("%s genotype: atldas search --space matting --strategy %s --out %s", strategy, strategy, run)
    cfg = make_search_config(space="matting", strategy=strategy, out=str(run), seed=0, threads=args.threads,
                             sets=["progress=false"])
    search(cfg, resume=(run / "checkpoint.pt").is_file())
    return final


def random_genotypes(searched: Path, out: Path, *, n: int, match: float, draws: int, seed: int) -> List[Path]:
    """``n`` uniform random genotypes of the matting space with ``searched``'s MACs within ``match``."""
    paths = [out / f"random-{k + 1}.json" for k in range(n)]
    g = Genotype.load(searched)
    _, macro = genotype_macro(g)
    sets = [f"target_{k}={macro[k]}" for k in ("C", "layers") if k in macro]
    space = bind_space(make_search_config(space="matting", sets=sets))
    target = space.measure(g, metric="macs")
    if all(p.is_file() for p in paths) and all(
            (Genotype.load(p).provenance or {}).get("random", {}).get("matched_macs") == int(target) for p in paths):
        return paths  # reused; files matched to another searched cost are drawn again
    arch = space.new_arch()
    with torch.no_grad():
        for p in arch.parameters():  # exactly uniform: every choice equally likely
            p.zero_()
    table = cost_table(space, arch, metric="macs")
    samples = arch.sample_many(draws, generator=torch.Generator().manual_seed(seed))
    costs = table.of_samples(arch, samples)  # (draws,) MACs of each child
    close = ((costs / target - 1).abs() <= match).nonzero().flatten().tolist()
    if len(close) < n:
        raise ConfigError(f"only {len(close)} of {draws} random genotypes have MACs within {match:.0%} of the "
                          f"searched {target:,}; raise --random-draws or --match")
    for k, path in zip(close, paths):
        rg = space.child_to_genotype(arch, arch.child_at(samples, k))
        rg = rg.replace(cost=cost_record(space, rg, budget=None),
                        provenance={"random": {"seed": seed, "draws": draws, "index": k, "matched_to": str(searched),
                                               "matched_macs": int(target)}})
        rg.save(path)
        log.info("random genotype %s: %s MACs (%+.2f %%), %s params", path.name, f"{rg.cost['macs']:,}",
                 100.0 * (rg.cost["macs"] / target - 1.0), f"{rg.cost['params']:,}")
    return paths


# ----------------------------------------------------------------------------- training and scoring

def _run_name(key: str, spec: str) -> str:
    """The retrain folder's name: ``key`` and, for a genotype file, its hash (a changed genotype, e.g.
    after a new search, trains anew instead of reusing another genotype's weights)."""
    return f"{key}-{Genotype.load(spec).hash()}" if Path(spec).is_file() else key


#: A retrain job's recipe fields and their names in a run directory's ``config.yaml``.
_RECIPE = {"seed": "seed", "epochs": "epochs", "steps_per_epoch": "steps_per_epoch", "batch": "batch_size",
           "crop": "crop"}


def check_stored_recipe(job: Dict[str, Any]) -> None:
    """Refuse a retrain folder that holds a run of another recipe (a resumed run continues with the
    stored recipe, and a finished one would be reused, so a changed flag would go unseen)."""
    path = Path(job["run"]) / "config.yaml"
    if not path.is_file():
        return
    stored = yaml.safe_load(path.read_text()) or {}
    for key, name in _RECIPE.items():
        if stored.get(name) != job[key]:
            raise ConfigError(f"{path.parent} was trained with {name}={stored.get(name)}, this comparison asks "
                              f"{name}={job[key]}: remove it or pass another --out")


def _finished(run: Path, epochs: int) -> bool:
    h = run / "history.jsonl"
    return (run / "best.pt").is_file() and h.is_file() and len(h.read_text().splitlines()) >= epochs


def train_and_score(job: Dict[str, Any]) -> Dict[str, Any]:
    """Retrain one model with one seed (continued if interrupted) and score its best.pt."""
    torch.set_num_threads(1)
    run = Path(job["run"])
    cfg = RetrainConfig(model=job["model"], seed=job["seed"], out=str(run), epochs=job["epochs"],
                        steps_per_epoch=job["steps_per_epoch"], batch_size=job["batch"], crop=job["crop"],
                        threads=1, tensorboard=False, progress=False)
    t0 = time.perf_counter()
    trained = not _finished(run, cfg.epochs)
    if trained:
        retrain(cfg, resume=(run / "last.pt").is_file())
    spec = str(run) if (run / "genotype.json").is_file() else job["model"]  # the macro trained
    model = resolve_model(spec)
    net = model.build()
    load_weights(net, run / "best.pt", name=model.name)
    ds = SyntheticMatting(size=job["test_size"], length=job["test_count"], seed=0, split="test")
    metrics, _, _ = validate(model, net.eval(), ds, device="cpu")
    return {**job, "metrics": metrics, "train_s": round(time.perf_counter() - t0, 1) if trained else None}


# ----------------------------------------------------------------------------- table

def summary(per_seed: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    out = {}
    for m in METRICS:
        vals = [r[m] for r in per_seed]
        out[m] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                  "spread": (max(vals) - min(vals)) / 2, "n": len(vals)}
    return out


def percentile(value: float, others: List[float]) -> float:
    """The share, in %, of ``others`` below ``value``."""
    return 100.0 * sum(o < value for o in others) / len(others)


def separation(results: Dict[str, Any]) -> Optional[Dict[str, float]]:
    """Whether the recipe tells the compared genotypes apart at all: a one-way ANOVA of the per-seed
    SAD over the genotypes (searched, random strategy, random-K; baselines left out), its F and p, and
    ICC(1), the share of the SAD variance that lies between genotypes rather than between seeds (0:
    the genotypes' means differ no more than seed noise makes them; 1: seeds agree exactly). With an
    ICC near 0 a genotype's percentile among the random ones is noise. None with fewer than 2
    genotypes of at least 2 seeds."""
    from scipy.stats import f_oneway

    groups = [[r["SAD"] for r in m["per_seed"]] for k, m in results["models"].items()
              if (k in ("searched", "random_strategy") or k.startswith("random-")) and len(m["per_seed"]) > 1]
    n = min((len(g) for g in groups), default=0)
    if len(groups) < 2 or n < 2:
        return None
    groups = [g[:n] for g in groups]
    f, p = f_oneway(*groups)
    means = [statistics.fmean(g) for g in groups]
    msb = n * statistics.variance(means)
    msw = statistics.fmean(statistics.variance(g) for g in groups)
    return {"genotypes": len(groups), "seeds": n, "F": float(f), "p": float(p),
            "icc": (msb - msw) / (msb + (n - 1) * msw), "sd_of_means": statistics.stdev(means),
            "seed_sd": msw ** 0.5}


def format_separation(sep: Optional[Dict[str, float]]) -> str:
    if sep is None:
        return "separation: fewer than 2 genotypes with 2 or more seeds"
    return (f"separation: one-way ANOVA of SAD over {sep['genotypes']} genotypes x {sep['seeds']} seeds: "
            f"F {sep['F']:.2f}, p {sep['p']:.3f}; ICC {sep['icc']:.2f} (SD of the genotype means "
            f"{sep['sd_of_means']:.3f} against a seed SD of {sep['seed_sd']:.3f}; an ICC near 0: the recipe "
            "does not tell these genotypes apart, and the percentiles are noise)")


def _cell(s: Dict[str, float], scale: float = 1.0) -> str:
    if s["n"] < 2:
        return f"{s['mean'] * scale:.3f}"
    return f"{s['mean'] * scale:.3f} ± {s['std'] * scale:.3f}"


def format_table(results: Dict[str, Any]) -> str:
    rows = ["| model | params | MACs @1024² | SAD | MSE ×1e3 | Grad | Conn | SAD percentile among random |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["models"].values():
        params = f"{r['params'] / 1e6:.2f} M" if r.get("params") else "0"
        macs = f"{r['macs'] / 1e9:.2f} G" if r.get("macs") else "–"
        s = r["summary"]
        pct = f"{r['percentile']:.0f}" if r.get("percentile") is not None else ""
        rows.append(f"| {r['label']} | {params} | {macs} | {_cell(s['SAD'])} | {_cell(s['MSE'], 1e3)} "
                    f"| {_cell(s['Grad'])} | {_cell(s['Conn'])} | {pct} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- main

def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/compare", help="working folder (reused when run again)")
    p.add_argument("--json", help="write every figure to this JSON file")
    p.add_argument("--report", metavar="FILE", help="print the table and separation of a stored --json result, train nothing")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--searched", help="genotype file or search run directory (default: search into OUT/search)")
    p.add_argument("--random", type=int, default=8, help="random genotypes matched on MACs")
    p.add_argument("--match", type=float, default=0.02, help="relative MACs tolerance of the random genotypes")
    p.add_argument("--random-draws", type=int, default=20000)
    p.add_argument("--no-random-strategy", action="store_true", help="skip the random strategy's search")
    p.add_argument("--baselines", nargs="*", default=[], help="registered models to retrain beside (e.g. cnn_baseline)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--test-count", type=int, default=24)
    p.add_argument("--test-size", type=int, default=192)
    p.add_argument("--workers", type=int, default=2, help="retrain processes at a time (one thread each)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the searches")
    args = p.parse_args(argv)
    if args.report:
        stored = json.loads(Path(args.report).read_text())
        print(format_table(stored))
        print(format_separation(separation(stored)))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    try:
        searched = searched_genotype(args, out)
        specs: Dict[str, tuple] = {"searched": (str(searched), "atldas (searched)")}
        if not args.no_random_strategy:
            specs["random_strategy"] = (str(searched_genotype(args, out, strategy="random")),
                                        "random search with shared weights")
        for k, path in enumerate(random_genotypes(searched, out, n=args.random, match=args.match,
                                                  draws=args.random_draws, seed=0)):
            specs[f"random-{k + 1}"] = (str(path), f"random genotype {k + 1}, same MACs")
        for name in args.baselines:
            resolve_model(name)  # an unknown name is an error before any training
            specs[name] = (name, name)
        jobs = [{"key": key, "model": spec, "seed": seed, "run": str(out / f"{_run_name(key, spec)}-seed{seed}"),
                 "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "batch": args.batch,
                 "crop": args.crop, "test_size": args.test_size, "test_count": args.test_count}
                for key, (spec, _) in specs.items() for seed in args.seeds]
        for job in jobs:
            check_stored_recipe(job)
        done: Dict[str, List[Dict[str, Any]]] = {}
        with ProcessPoolExecutor(args.workers) as ex:
            for r in ex.map(train_and_score, jobs):
                done.setdefault(r["key"], []).append(r)
                log.info("%s seed %d: %s", r["key"], r["seed"], ", ".join(f"{m} {r['metrics'][m]:.4g}" for m in METRICS))
        results: Dict[str, Any] = {"recipe": {
            "data": "synthetic", "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
            "batch_size": args.batch, "crop": args.crop, "seeds": args.seeds,
            "test": {"split": "test", "count": args.test_count, "size": args.test_size, "seed": 0},
            "random": {"n": args.random, "match": args.match}}, "models": {}}
        for key, (spec, label) in specs.items():
            rs = done[key]
            c = count_cost(resolve_model(rs[0]["run"] if Path(rs[0]["run"], "genotype.json").is_file() else spec), size=1024)
            results["models"][key] = {"label": label, "model": spec, "params": c["params"], "macs": c["macs"],
                                      "train_s": [r["train_s"] for r in rs], "per_seed": [r["metrics"] for r in rs],
                                      "summary": summary([r["metrics"] for r in rs])}
            if str(spec).endswith(".json") and Path(spec).is_file():  # the result stands without runs/
                results["models"][key]["genotype"] = Genotype.load(spec).to_json()
        rand = [m["summary"]["SAD"]["mean"] for k, m in results["models"].items() if k.startswith("random-")]
        for key in ("searched", "random_strategy"):
            if key in results["models"]:
                results["models"][key]["percentile"] = percentile(results["models"][key]["summary"]["SAD"]["mean"], rand)
        results["random_mean"] = {"SAD": statistics.fmean(rand), "SAD_std": statistics.stdev(rand) if len(rand) > 1 else 0.0}
        results["separation"] = separation(results)
        ds = SyntheticMatting(size=args.test_size, length=args.test_count, seed=0, split="test")
        tv = trivial_scores(ds)[0]
        results["models"]["trivial"] = {"label": "trivial (alpha = 0.5 in the unknown region)", "model": None,
                                        "params": 0, "macs": None, "per_seed": [tv], "summary": summary([tv])}
    except AtldasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results["wall_s"] = time.perf_counter() - t_start
    print(format_table(results))
    r = results["recipe"]
    print(f"\nrecipe: synthetic data, {r['epochs']} epochs x {r['steps_per_epoch']} steps, batch {r['batch_size']}, "
          f"crop {r['crop']}, seeds {r['seeds']}; test: {r['test']['count']} synthetic 'test' images at "
          f"{r['test']['size']}²; ± is the standard deviation over seeds; {results['wall_s'] / 60:.0f} min")
    print(format_separation(results.get("separation")))
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
