"""Does the matting ``select`` stage's short fit rank genotypes as the equal-recipe retrain does?

    python experiments/select_matting.py --compare experiments/results/compare_gca.json --steps 60 150

(a ``make compare`` result from 2026-12-06 on holds its genotypes; an older one needs the run folders
``make compare`` wrote, ``runs/compare``.)

For every genotype of a ``make compare`` result (the searched one, the random strategy's and the
matched random genotypes; baselines without a genotype are skipped) it runs the matting task's
``short_fit`` exactly as a default ``atldas search --space matting`` does in its select stage (the
target network trained from scratch on the search's weight split, seed 0, scored
by its held-out score: ``FitRecipe``, which ``--recipe`` changes), for each ``--steps``, ``--workers``
processes at a time, one torch thread each. It prints, per step count, each genotype's fit loss beside
its retrain SAD (mean over the comparison's seeds) and the Kendall tau and Spearman rho between the
two (1: the same order), and the wall time of the fits. ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from scipy.stats import kendalltau, spearmanr  # noqa: E402

import atldas  # noqa: E402
from atldas.genotype import Genotype  # noqa: E402
from atldas.tasks.matting import FitRecipe, MattingTask  # noqa: E402


def _fit(job: Dict[str, Any]) -> Dict[str, Any]:
    torch.set_num_threads(1)
    cfg = atldas.make_search_config(space="matting")  # the default search's data
    task = MattingTask(fit=dataclasses.replace(FitRecipe(), **job["recipe"]))
    t0 = time.perf_counter()
    genotype = Genotype.from_json(job["genotype"]) if job.get("genotype") else Genotype.load(job["path"])
    loss = task.short_fit(genotype, data=cfg.data, seed=job["seed"], steps=job["steps"])
    return {**job, "loss": loss, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", default="experiments/results/compare_gca.json", help="a compare.py --json result")
    p.add_argument("--steps", type=int, nargs="+", default=[60, 150])
    p.add_argument("--seed", type=int, default=0, help="the search seed whose splits and initial weights the fits use")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--recipe", nargs="*", default=[], metavar="K=V",
                   help="FitRecipe fields to change (e.g. score=loss crop=128 batch_size=4; 0 for None)")
    p.add_argument("--json", help="write the figures to this JSON file")
    args = p.parse_args(argv)
    fields = {f.name: f.type for f in dataclasses.fields(FitRecipe)}
    recipe: Dict[str, Any] = {}
    for item in args.recipe:
        k, _, v = item.partition("=")
        if k not in fields:
            raise SystemExit(f"--recipe {item}: FitRecipe has no field {k!r}; it has {', '.join(fields)}")
        recipe[k] = v if k == "score" else (None if v == "0" and k in ("batch_size", "crop", "eval_size") else
                                            (int(v) if k in ("batch_size", "crop", "eval_samples", "eval_size") else float(v)))
    result = json.loads(Path(args.compare).read_text())
    models = {k: m for k, m in result["models"].items() if m.get("model") and str(m["model"]).endswith(".json")}
    if len(models) < 3:
        raise SystemExit(f"{args.compare}: {len(models)} genotypes; a ranking needs at least 3")
    jobs = [{"key": k, "path": str(ROOT / m["model"]) if not Path(m["model"]).is_absolute() else m["model"],
             "genotype": m.get("genotype"), "steps": s, "seed": args.seed, "recipe": recipe}
            for s in args.steps for k, m in models.items()]
    missing = [j["path"] for j in jobs if j["genotype"] is None and not Path(j["path"]).is_file()]
    if missing:  # results written before compare.py stored each genotype in its JSON name files under runs/
        raise SystemExit(f"genotype file not found: {missing[0]} (run make compare first, or pass --compare)")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        done = list(ex.map(_fit, jobs))
    out: Dict[str, Any] = {"compare": args.compare, "seed": args.seed,
                           "recipe": dataclasses.asdict(dataclasses.replace(FitRecipe(), **recipe)), "steps": {}}
    for s in args.steps:
        rows = [r for r in done if r["steps"] == s]
        fit = [r["loss"] for r in rows]
        sad = [models[r["key"]]["summary"]["SAD"]["mean"] for r in rows]
        tau, rho = float(kendalltau(fit, sad)[0]), float(spearmanr(fit, sad)[0])
        print(f"{s} steps: Kendall tau {tau:.2f}, Spearman rho {rho:.2f} against the retrain SAD "
              f"({len(rows)} genotypes; fits {min(r['seconds'] for r in rows):.0f}-{max(r['seconds'] for r in rows):.0f} s each)")
        for r, v in sorted(zip(rows, sad), key=lambda t: t[0]["loss"]):
            print(f"  {r['key']:<16} fit loss {r['loss']:.4f}   retrain SAD {v:.3f}")
        out["steps"][str(s)] = {"tau": tau, "rho": rho, "per_genotype": {
            r["key"]: {"fit": r["loss"], "sad": v, "seconds": r["seconds"]} for r, v in zip(rows, sad)}}
    print(f"{len(jobs)} fits in {(time.perf_counter() - t0) / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
