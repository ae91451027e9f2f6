"""Equal-recipe comparison: a searched genotype against hand-designed and random networks.

    python experiments/compare.py [--json FILE] [--out runs/compare] [--seeds 0 1]
                                  [--searched RUN_DIR|GENOTYPE] [--epochs 10] [--steps-per-epoch 30]
                                  [--models searched darts_v2 random aematter_small cnn_baseline]

What runs, in order (every stage is kept under ``--out`` and reused when the script runs again, so an
interrupted comparison continues where it stopped):

1. *searched*: the genotype of ``--searched``, or else of a default ``atldas search --space matting``
   run into ``OUT/search`` (continued if it is there);
2. *random*: a uniformly random genotype of the same ``matting`` space whose target network has the
   searched one's MACs: ``--random-draws`` children are drawn uniformly (every input set, op and block
   equally likely) and the one closest in MACs is kept (``OUT/random_genotype.json``);
3. every model is retrained by :func:`atldas.retrain.retrain` with one recipe (the ``atldas retrain``
   defaults unless flags change them: synthetic data, epochs, steps, batch, crop, optimizer, losses)
   once per seed (``OUT/<model>-seed<S>``); the seed changes the initialisation and the training
   crops, not the test set;
4. every ``best.pt`` is scored on one held-out test set, the synthetic split ``test`` (``--test-count``
   images of ``--test-size`` pixels, seed 0, disjoint from the training and validation splits), with
   the DIM metrics exactly as ``atldas eval`` computes them; ``closed_form`` (pymatting, nothing to
   train) and the trivial prediction (alpha = 0.5 in the unknown region) are scored on the same images;
5. params and MACs of every network at 1024x1024 (FlopCounterMode / 2), and its CPU forward latency at
   ``--latency-size`` (median over at least ``--latency-repeats`` runs, ``--threads`` threads) on a quiet
   machine is the caller's business.

The table gives mean ± spread over the seeds, where spread is half the range (max - min) / 2: with
two seeds, the two results are mean - spread and mean + spread. MSE is shown x1e3 (DIM convention:
SAD /1000, Grad /1000, Conn /1000 already applied by the metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from atldas.utils.atomic import write_text_atomic  # noqa: E402

log = logging.getLogger("atldas.compare")

METRICS = ("SAD", "MSE", "Grad", "Conn")
LABELS = {
    "searched": "atldas (searched)",
    "darts_v2": "cheapmatting macro + DARTS_V2",
    "random": "random genotype, same MACs",
    "aematter_small": "aematter_small",
    "aematter_tiny": "aematter_tiny",
    "cnn_baseline": "cnn_baseline",
    "cnn_baseline_small": "cnn_baseline_small",
}
REGISTERED = {"darts_v2": "cheapmatting_darts_v2", "aematter_small": "aematter_small",
              "aematter_tiny": "aematter_tiny", "cnn_baseline": "cnn_baseline",
              "cnn_baseline_small": "cnn_baseline_small"}
DEFAULT_MODELS = ("searched", "darts_v2", "random", "aematter_small", "cnn_baseline")


# ----------------------------------------------------------------------------- genotypes

def searched_genotype(args: argparse.Namespace, out: Path) -> Path:
    """The searched genotype file: ``--searched`` or a default matting search in ``OUT/search``."""
    from atldas.errors import ConfigError

    if args.searched:
        p = Path(args.searched)
        p = p / "genotype.json" if p.is_dir() else p
        if not p.is_file():
            raise ConfigError(f"--searched {args.searched}: no genotype file there")
        return p
    from atldas.genotype import Genotype
    from atldas.run import make_search_config
    from atldas.search import search

    run = out / "search"
    cfg = make_search_config(space="matting", out=str(run), seed=0, threads=args.threads)
    final = run / "genotype.json"
    if final.is_file() and "repair" in (Genotype.load(final).cost or {}):  # per-epoch genotypes lack it
        log.info("searched genotype: reusing %s", final)
        return final
    log.info("searched genotype: atldas search --space matting --out %s", run)
    search(cfg, resume=(run / "checkpoint.pt").is_file())
    return run / "genotype.json"


def random_genotype(searched: Path, out: Path, *, draws: int, seed: int) -> Path:
    """A uniform random genotype of the matting space with the MACs closest to ``searched``'s."""
    from atldas.cost import cost_table
    from atldas.derive import cost_record
    from atldas.genotype import Genotype
    from atldas.models.zoo import genotype_macro
    from atldas.run import bind_space, make_search_config

    path = out / "random_genotype.json"
    if path.is_file():
        return path
    g = Genotype.load(searched)
    _, macro = genotype_macro(g)
    sets = [f"target_{k}={macro[k]}" for k in ("C", "layers") if k in macro]
    space = bind_space(make_search_config(space="matting", sets=sets))
    target = space.measure(g, metric="macs")
    arch = space.new_arch()
    with torch.no_grad():
        for p in arch.parameters():  # exactly uniform: every choice equally likely
            p.zero_()
    table = cost_table(space, arch, metric="macs")
    gen = torch.Generator().manual_seed(seed)
    samples = arch.sample_many(draws, generator=gen)
    costs = table.of_samples(arch, samples)  # (draws,) MACs of each child
    child = arch.child_at(samples, int((costs - target).abs().argmin()))
    rg = space.child_to_genotype(arch, child)
    rg = rg.replace(cost=cost_record(space, rg, budget=None),
                    provenance={"random": {"seed": seed, "draws": draws, "matched_to": str(searched),
                                           "matched_macs": int(target)}})
    rg.save(path)
    log.info("random genotype: %s MACs vs %s searched (%+.2f %%) -> %s", f"{rg.cost['macs']:,}",
             f"{target:,}", 100.0 * (rg.cost["macs"] / target - 1.0), path)
    return path


# ----------------------------------------------------------------------------- training and scoring

def _finished(run: Path, epochs: int) -> bool:
    h = run / "history.jsonl"
    return (run / "best.pt").is_file() and h.is_file() and len(h.read_text().splitlines()) >= epochs


def train(model: str, run: Path, seed: int, args: argparse.Namespace) -> bool:
    """Retrain ``model`` with the shared recipe into ``run`` (continued if interrupted); False when
    the run was complete already."""
    from atldas.retrain import RetrainConfig, retrain

    cfg = RetrainConfig(model=model, seed=seed, out=str(run), epochs=args.epochs,
                        steps_per_epoch=args.steps_per_epoch, batch_size=args.batch, crop=args.crop,
                        threads=args.threads, tensorboard=False, progress=args.progress)
    if _finished(run, cfg.epochs):
        log.info("%s: done already", run)
        return False
    retrain(cfg, resume=(run / "last.pt").is_file())
    return True


def test_set(args: argparse.Namespace):
    from atldas.data.synthetic import SyntheticMatting

    return SyntheticMatting(size=args.test_size, length=args.test_count, seed=0, split="test")


def score(model_spec: str, checkpoint: Optional[Path], ds) -> Dict[str, float]:
    """DIM means of ``model_spec`` (weights from ``checkpoint``) on ``ds``."""
    from atldas.models.zoo import resolve_model
    from atldas.retrain import validate
    from atldas.utils.weights import load_weights

    model = resolve_model(model_spec)
    net = model.build()
    if checkpoint is not None:
        load_weights(net, checkpoint)
    metrics, _, _ = validate(model, net.eval(), ds, device="cpu")
    return metrics


def cost(model_spec: str, args: argparse.Namespace) -> Dict[str, Any]:
    from atldas.bench import count_cost, measure_latency
    from atldas.models.zoo import resolve_model

    model = resolve_model(model_spec)
    c = count_cost(model, size=1024) if model_spec != "closed_form" else {"params": 0, "macs": None}
    lat = measure_latency(model, size=args.latency_size, threads=args.threads, repeats=args.latency_repeats)
    return {"params": c["params"], "macs": c["macs"], "latency_ms": lat["median"],
            "latency_p10_ms": lat["p10"], "latency_p90_ms": lat["p90"]}


def trivial(ds) -> Dict[str, float]:
    from atldas.retrain import trivial_scores

    return trivial_scores(ds)[0]


# ----------------------------------------------------------------------------- table

def summary(per_seed: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    out = {}
    for m in METRICS:
        vals = [r[m] for r in per_seed]
        out[m] = {"mean": statistics.fmean(vals), "spread": (max(vals) - min(vals)) / 2, "n": len(vals)}
    return out


def _cell(s: Dict[str, float], scale: float = 1.0) -> str:
    if s["n"] < 2:
        return f"{s['mean'] * scale:.2f}"
    return f"{s['mean'] * scale:.2f} ± {s['spread'] * scale:.2f}"


def format_table(results: Dict[str, Any]) -> str:
    head = ("| model | params | MACs @1024² | CPU latency @{lat}² | SAD | MSE ×1e3 | Grad | Conn |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |").format(lat=results["recipe"]["latency_size"])
    rows = [head]
    for key, r in results["models"].items():
        params = f"{r['params'] / 1e6:.2f} M" if r.get("params") else "0"
        macs = f"{r['macs'] / 1e9:.2f} G" if r.get("macs") else "–"
        lat = f"{r['latency_ms']:.0f} ms" if r.get("latency_ms") is not None else "–"
        s = r["summary"]
        rows.append(f"| {r['label']} | {params} | {macs} | {lat} | {_cell(s['SAD'])} | {_cell(s['MSE'], 1e3)} "
                    f"| {_cell(s['Grad'])} | {_cell(s['Conn'])} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/compare", help="working folder (reused when run again)")
    p.add_argument("--json", help="write every figure to this JSON file")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=sorted(LABELS))
    p.add_argument("--searched", help="genotype file or search run directory (default: search into OUT/search)")
    p.add_argument("--random-draws", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--test-count", type=int, default=24)
    p.add_argument("--test-size", type=int, default=192)
    p.add_argument("--latency-size", type=int, default=512)
    p.add_argument("--latency-repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-closed-form", action="store_true", help="skip the (slow) closed-form baseline")
    p.add_argument("--progress", action="store_true", help="tqdm bars for the retrains")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    from atldas.errors import AtldasError

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    try:
        specs: Dict[str, str] = {}
        if "searched" in args.models or "random" in args.models:
            searched = searched_genotype(args, out)
            if "searched" in args.models:
                specs["searched"] = str(searched)
            if "random" in args.models:
                specs["random"] = str(random_genotype(searched, out, draws=args.random_draws, seed=0))
        for key in args.models:
            specs.setdefault(key, REGISTERED.get(key, key))
        ds = test_set(args)
        results: Dict[str, Any] = {"recipe": {
            "data": "synthetic", "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
            "batch_size": args.batch, "crop": args.crop, "seeds": args.seeds,
            "test": {"split": "test", "count": args.test_count, "size": args.test_size, "seed": 0},
            "latency_size": args.latency_size, "threads": args.threads}, "models": {}}
        for key in args.models:
            per_seed, times = [], []
            for seed in args.seeds:
                run = out / f"{key}-seed{seed}"
                t0 = time.perf_counter()
                trained = train(specs[key], run, seed, args)
                times.append(round(time.perf_counter() - t0, 1) if trained else None)  # None: reused
                # genotype models are rebuilt from the run (its genotype.json holds the macro trained)
                spec = str(run) if (run / "genotype.json").is_file() else specs[key]
                per_seed.append(score(spec, run / "best.pt", ds))
                log.info("%s seed %d: %s", key, seed, ", ".join(f"{m} {per_seed[-1][m]:.4g}" for m in METRICS))
            results["models"][key] = {"label": LABELS[key], "model": specs[key], "train_s": times,
                                      "per_seed": per_seed, "summary": summary(per_seed)}
        if not args.no_closed_form:
            cf = score("closed_form", None, ds)
            results["models"]["closed_form"] = {"label": "closed_form (pymatting, not trained)",
                                                "model": "closed_form", "per_seed": [cf], "summary": summary([cf])}
        # costs last, after all the training: the latency wants a quiet machine
        for key, r in results["models"].items():
            log.info("%s: counting MACs and timing the forward pass", key)
            r.update(cost(r["model"], args))
        tv = trivial(ds)
        results["models"]["trivial"] = {"label": "trivial (alpha = 0.5 in the unknown region)",
                                        "model": None, "params": 0, "macs": None, "latency_ms": None,
                                        "per_seed": [tv], "summary": summary([tv])}
    except AtldasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results["wall_s"] = time.perf_counter() - t_start
    print(format_table(results))
    r = results["recipe"]
    print(f"\nrecipe: synthetic data, {r['epochs']} epochs x {r['steps_per_epoch']} steps, batch {r['batch_size']}, "
          f"crop {r['crop']}, seeds {r['seeds']}; test: {r['test']['count']} synthetic 'test' images at "
          f"{r['test']['size']}²; latency: batch 1, {r['threads']} CPU threads; ± is half the range over seeds")
    if args.json:
        write_text_atomic(args.json, json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
