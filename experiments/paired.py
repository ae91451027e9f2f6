"""Paired comparison of two strategies of the planted benchmark, from its summary JSON files.

    python experiments/paired.py experiments/results/search_quality_t91011_intel.json [MORE.json ...] \\
        [--a atldas] [--b random]

Runs are paired by budget, teacher and search seed (several files are pooled; a run found in two files
counts once, the later file's). For each budget it prints the number of pairs, the mean percentile of
``--a`` and ``--b``, the mean paired difference a - b with its standard error (negative: ``--a``
better), how many pairs ``--a`` won and lost, and the geometric mean of the standalone-loss ratio a / b.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

Key = Tuple[int, int]


def runs_of(paths: Sequence[Path], label: str) -> Dict[str, Dict[Key, dict]]:
    """Budget label -> (teacher, seed) -> run record of strategy ``label``, pooled over ``paths``."""
    out: Dict[str, Dict[Key, dict]] = {}
    for path in paths:
        strategies = json.loads(path.read_text())["strategies"]
        if label not in strategies:
            continue
        for budget, summary in strategies[label].items():  # beside the budgets: the means over all runs
            for run in summary.get("runs", []) if isinstance(summary, dict) else []:
                out.setdefault(budget, {})[(int(run["teacher"]), int(run["seed"]))] = run
    return out


def compare(paths: Sequence[Path], a: str, b: str) -> List[Dict[str, float]]:
    """One row per budget both strategies ran: n, mean percentiles, paired difference, SE, wins, losses,
    geometric-mean loss ratio."""
    ra, rb = runs_of(paths, a), runs_of(paths, b)
    rows = []
    for budget in sorted(set(ra) & set(rb)):
        keys = sorted(set(ra[budget]) & set(rb[budget]))
        if not keys:
            continue
        d = [ra[budget][k]["percentile"] - rb[budget][k]["percentile"] for k in keys]
        n = len(d)
        mean = sum(d) / n
        se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n) if n > 1 else float("nan")
        ratio = math.exp(sum(math.log(ra[budget][k]["loss"] / rb[budget][k]["loss"]) for k in keys) / n)
        rows.append({"budget": budget, "n": n, "a": sum(ra[budget][k]["percentile"] for k in keys) / n,
                     "b": sum(rb[budget][k]["percentile"] for k in keys) / n, "diff": mean, "se": se,
                     "better": sum(x < 0 for x in d), "worse": sum(x > 0 for x in d), "loss_ratio": ratio})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("json", nargs="+", type=Path)
    p.add_argument("--a", default="atldas")
    p.add_argument("--b", default="random")
    args = p.parse_args(argv)
    missing = [str(f) for f in args.json if not f.is_file()]
    if missing:
        p.error(f"no such file: {', '.join(missing)}")
    rows = compare(args.json, args.a, args.b)
    if not rows:
        p.error(f"no runs of both {args.a!r} and {args.b!r} under one budget in {', '.join(map(str, args.json))}")
    print(f"| budget | pairs | {args.a} | {args.b} | paired {args.a} - {args.b} (SE) | better / worse | loss ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['budget']} | {r['n']} | {r['a']:.1f} | {r['b']:.1f} | {r['diff']:+.1f} ({r['se']:.1f}) | "
              f"{r['better']} / {r['worse']} | {r['loss_ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
