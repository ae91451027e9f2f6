"""Paired comparison of two strategies of the planted benchmark, from its summary JSON files.

    python experiments/paired.py experiments/results/search_quality_t91011_intel.json [MORE.json ...] \\
        [--a atldas] [--b random]

Runs are paired by budget, teacher and search seed (several files are pooled; a run found in two files
counts once, the later file's). For each budget, and over all budgets when there are several, it prints
the number of pairs, the mean percentile of ``--a`` and ``--b``, the mean paired difference a - b with
its standard error (negative: ``--a`` better), the same clustered by teacher (the mean of each
teacher's paired differences, its standard error over the teachers: a teacher's runs share one task,
so they are not independent), how many pairs ``--a`` won and lost, the geometric mean of the
standalone-loss ratio a / b, the mean log loss ratio log(a / b) over the pairs with its standard error,
z and how many pairs' ratios are below and above 1, the same clustered by teacher (with its standard error and how many teachers' mean log ratios
are below and above 0),
and the geometric mean of the MACs ratio a / b (the loss ratio does not match costs as the percentile
does: under one budget, a strategy that fills more of it trains to a lower loss). Runs whose files record the standalone recipe they were scored with
(``task``) are paired only with runs of the same recipe. Where a strategy's label changed between files (a setting that
became the default), give one label per file: ``--a atldas:select_pool=64 atldas``; a label a file
does not hold (``-``) takes nothing from it, so ``OLD.json NEW.json --a - atldas --b atldas -`` compares
one label across two files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

Key = Tuple[int, int]
Labels = Union[str, Sequence[str]]


def runs_of(paths: Sequence[Path], labels: Labels) -> Dict[str, Dict[Key, dict]]:
    """Budget label -> (teacher, seed) -> run record of the strategy ``labels`` names (one label for
    every file, or one per file), pooled over ``paths``."""
    if isinstance(labels, str):
        labels = [labels] * len(paths)
    if len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} files: give one, or one per file")
    out: Dict[str, Dict[Key, dict]] = {}
    for path, label in zip(paths, labels):
        strategies = json.loads(path.read_text())["strategies"]
        if label not in strategies:
            continue
        replaced = 0
        for budget, summary in strategies[label].items():  # beside the budgets: the means over all runs
            mine = {(int(run["teacher"]), int(run["seed"])): run
                    for run in (summary.get("runs", []) if isinstance(summary, dict) else [])}
            replaced += len(mine.keys() & out.get(budget, {}).keys())
            out.setdefault(budget, {}).update(mine)
        if replaced:  # said: pooling two samples of one teacher range is a smaller pool than it looks
            print(f"note: {path} replaces {replaced} run(s) of {label!r} that an earlier file holds (same budget, "
                  "teacher and seed)", file=sys.stderr)
    return out


def _mean_se(xs: Sequence[float]) -> Tuple[float, float]:
    n = len(xs)
    mean = sum(xs) / n
    return mean, (math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1) / n) if n > 1 else float("nan"))


def _z(mean: float, se: float) -> float:
    """mean / se; NaN where the SE is 0 (every pair alike) or undefined (one pair)."""
    return mean / se if se > 0 else float("nan")


def _row(budget: str, pairs: List[Tuple[dict, dict]]) -> Dict[str, float]:
    d = [ra["percentile"] - rb["percentile"] for ra, rb in pairs]
    n = len(d)
    mean, se = _mean_se(d)
    by_teacher: Dict[int, List[float]] = {}  # a teacher's runs share its task: the conservative unit
    for (ra, _), x in zip(pairs, d):
        by_teacher.setdefault(int(ra["teacher"]), []).append(x)
    t_mean, t_se = _mean_se([sum(v) / len(v) for v in by_teacher.values()])
    logs = [math.log(ra["loss"] / rb["loss"]) for ra, rb in pairs]
    log_mean, log_se = _mean_se(logs)
    logs_by_teacher: Dict[int, List[float]] = {}
    for (ra, _), x in zip(pairs, logs):
        logs_by_teacher.setdefault(int(ra["teacher"]), []).append(x)
    teacher_logs = [sum(v) / len(v) for v in logs_by_teacher.values()]
    t_log_mean, t_log_se = _mean_se(teacher_logs)
    return {"budget": budget, "n": n, "a": sum(ra["percentile"] for ra, _ in pairs) / n,
            "b": sum(rb["percentile"] for _, rb in pairs) / n, "diff": mean, "se": se,
            "teachers": len(by_teacher), "teacher_diff": t_mean, "teacher_se": t_se,
            "better": sum(x < 0 for x in d), "worse": sum(x > 0 for x in d), "loss_ratio": math.exp(log_mean),
            "macs_ratio": math.exp(sum(math.log(ra["macs"] / rb["macs"]) for ra, rb in pairs) / n),
            "log_ratio": log_mean, "log_ratio_se": log_se, "teacher_log_ratio": t_log_mean,
            "teacher_log_ratio_se": t_log_se, "teachers_lower": sum(x < 0 for x in teacher_logs),
            "teachers_higher": sum(x > 0 for x in teacher_logs), "lower": sum(x < 0 for x in logs),
            "higher": sum(x > 0 for x in logs)}


def compare(paths: Sequence[Path], a: Labels, b: Labels) -> List[Dict[str, float]]:
    """One row per budget both strategies ran, and one for all of them (budget ``all``) when there are
    several: n, mean percentiles, paired difference, SE (and clustered by teacher), wins, losses,
    geometric-mean loss ratio, mean log loss ratio with its SE (and clustered by teacher), MACs ratio."""
    ra, rb = runs_of(paths, a), runs_of(paths, b)
    rows, every = [], []
    for budget in sorted(set(ra) & set(rb)):
        pairs = [(ra[budget][k], rb[budget][k]) for k in sorted(set(ra[budget]) & set(rb[budget]))]
        for x, y in pairs:  # runs that record their standalone recipe (search_quality.py since 2026-12-06)
            if x.get("task") and y.get("task") and x["task"] != y["task"]:
                raise ValueError(f"teacher {x['teacher']}, seed {x['seed']}, budget {budget}: the two runs were "
                                 f"scored with other standalone recipes (task {x['task']} against {y['task']}); "
                                 "their percentiles do not compare")
        if pairs:
            rows.append(_row(budget, pairs))
            every += pairs
    if len(rows) > 1:
        rows.append(_row("all", every))
    recipes = sorted({str(x["task"]) for pair in every for x in pair if x.get("task")})
    if len(recipes) > 1:  # each pair is of one recipe, but the pool mixes pairs scored otherwise
        print(f"note: the pairs were scored with {len(recipes)} standalone recipes ({', '.join(recipes)})",
              file=sys.stderr)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("json", nargs="+", type=Path)
    p.add_argument("--a", nargs="+", default=["atldas"], help="a strategy label, or one per file")
    p.add_argument("--b", nargs="+", default=["random"], help="a strategy label, or one per file")
    args = p.parse_args(argv)
    missing = [str(f) for f in args.json if not f.is_file()]
    if missing:
        p.error(f"no such file: {', '.join(missing)}")
    try:  # one label, or one per file (runs_of says which count is wrong)
        rows = compare(args.json, args.a[0] if len(args.a) == 1 else args.a, args.b[0] if len(args.b) == 1 else args.b)
    except ValueError as e:
        p.error(str(e))
    na, nb = "/".join(dict.fromkeys(args.a)), "/".join(dict.fromkeys(args.b))
    if not rows:
        p.error(f"no runs of both {na!r} and {nb!r} under one budget in {', '.join(map(str, args.json))}")
    print(f"| budget | pairs | {na} | {nb} | paired {na} - {nb} (SE) | by teacher (SE; teachers) | better / worse | "
          "loss ratio | mean log loss ratio (SE; z; pairs lower / higher) | by teacher (SE; lower / higher) | "
          "MACs ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['budget']} | {r['n']} | {r['a']:.1f} | {r['b']:.1f} | {r['diff']:+.1f} ({r['se']:.1f}) | "
              f"{r['teacher_diff']:+.1f} ({r['teacher_se']:.1f}; {r['teachers']}) | "
              f"{r['better']} / {r['worse']} | {r['loss_ratio']:.2f} | "
              f"{r['log_ratio']:+.3f} ({r['log_ratio_se']:.3f}; {_z(r['log_ratio'], r['log_ratio_se']):+.2f}; "
              f"{r['lower']} / {r['higher']}) | "
              f"{r['teacher_log_ratio']:+.3f} ({r['teacher_log_ratio_se']:.3f}; {r['teachers_lower']} / "
              f"{r['teachers_higher']}) | {r['macs_ratio']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
