"""Do the shared weights rank deep cells as standalone training does? Cell depth against both losses.

    python experiments/depth_bias.py runs/sq_intel [MORE_FOLDERS ...] [--labels atldas random]
        [--teachers 48 49 50] [--json FILE]

Reads the planted benchmark's stored searches (``FOLDER/searches/*.json``, cost-matched references
only) and its standalone losses (``FOLDER/standalone.json``, today's task fingerprint only). For each
search, over its reference genotypes (uniform random cells within 5 % of the search's MACs, so cost
does not confound what follows) that are still alive in its final supernet, i.e. have a shared-weight
held-out loss, it computes Kendall's tau-b between a property of the normal cell and

- the shared-weight loss (what the search and its select stage's prescreen rank by), and
- the standalone loss (the mean over the benchmark's training seeds: the truth the percentiles use).

Properties: ``depth``, the number of the cell's edges whose input is an intermediate node (0 for a
cell that reads only the cell inputs), and ``teacher deep``, the share of the teacher's own deep edges
the cell has (the planted deep topology; see ``recovery`` in ``search_quality.py``). A negative tau
means the property goes with a lower loss. Per strategy label it prints, clustered by teacher (a
teacher's searches share one task and overlapping references), the mean over teachers of each
teacher's mean and its standard error over the teachers, for each tau, the paired difference
shared - standalone, and how deep the searched genotype is against its references (depth of the
derived genotype minus the mean depth of its references). A shared-weight ranking that reads depth as
standalone training does has the two taus equal.

``--fits 50 350`` also trains every reference of each teacher's no-budget, seed-0 search as the
``select`` stage's fits train a candidate (that many steps, on the search's own streams 2 and 3,
initial weights 0: ``PlantedTask.short_fit``) and prints, per label, tau-b of depth against each fit's
loss and against the standalone loss over the same references (all of them, alive or not), and their
difference (standard errors over teachers). It costs about 0.4 CPU-s per reference and 50 steps.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from concurrent.futures import ProcessPoolExecutor  # noqa: E402

from scipy.stats import kendalltau  # noqa: E402

from atldas.genotype import Genotype  # noqa: E402
from atldas.tasks.planted import teacher_genotype  # noqa: E402
from paired import _mean_se  # noqa: E402
from search_quality import TASK_FINGERPRINT, _recovered, search_fingerprint  # noqa: E402

#: Per search: (property, loss) pairs whose tau is taken.
MEASURES = (("depth", "shared"), ("depth", "standalone"), ("teacher_deep", "shared"), ("teacher_deep", "standalone"))


def depth(g: Genotype) -> int:
    """Edges of the normal cell whose input is an intermediate node (states 2..)."""
    return g.normal.depth


def tau_b(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either list allowed); NaN with fewer than 3 pairs or a constant list."""
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    return float(kendalltau(a, b).statistic)


def standalone_losses(folder: Path) -> Dict[Tuple[int, str], float]:
    """(teacher, genotype hash) -> mean standalone loss over the training seeds stored for it."""
    by: Dict[Tuple[int, str], List[float]] = {}
    for key, loss in json.loads((folder / "standalone.json").read_text()).items():
        fingerprint, teacher, h, _ = key.rsplit("/", 3)
        if fingerprint == TASK_FINGERPRINT:
            by.setdefault((int(teacher), h), []).append(float(loss))
    return {k: statistics.mean(v) for k, v in by.items()}


def _today(record: Dict[str, Any]) -> bool:
    """Whether a stored search was computed with the settings its label runs with today."""
    return search_fingerprint(record) == record.get("fingerprint")


def search_rows(folder: Path, labels: Optional[Sequence[str]] = None) -> Iterator[Dict[str, Any]]:
    """One row per stored cost-matched search of ``folder`` (of ``labels`` if given): its label
    (with " (older settings)" when it was computed with other settings than the label runs today:
    a default changed since), budget, teacher, seed, the taus of :data:`MEASURES` (NaN with fewer than
    three references alive in its supernet) and the depth gap."""
    truth = standalone_losses(folder)
    for path in sorted((folder / "searches").glob("*.json")):
        r = json.loads(path.read_text())
        if not r["key"].endswith("|matched") or (labels and r["label"] not in labels):
            continue
        t = int(r["teacher"])
        planted = teacher_genotype(t)
        refs = [Genotype.from_json(x) for x in r["reference"]]
        alive = [(g, r["shared"][g.hash()], truth[(t, g.hash())]) for g in refs
                 if g.hash() in r["shared"] and (t, g.hash()) in truth]
        props = {"depth": [depth(g) for g, _, _ in alive],
                 "teacher_deep": [_recovered(g, planted)["deep"] for g, _, _ in alive]}
        losses = {"shared": [s for _, s, _ in alive], "standalone": [x for _, _, x in alive]}
        row = {"label": r["label"] if _today(r) else f"{r['label']} (older settings)", "budget": r["budget_label"],
               "teacher": t, "seed": int(r["seed"]), "alive": len(alive),
               "depth_gap": depth(Genotype.from_json(r["genotype"])) - statistics.mean(depth(g) for g in refs)}
        for p, loss in MEASURES:
            row[f"{p}~{loss}"] = tau_b(props[p], losses[loss])
        yield row


def clustered(rows: Sequence[Dict[str, Any]], value) -> Tuple[float, float, int, int]:
    """Clustered by teacher (a teacher's searches share one task and overlapping references): the mean
    over teachers of each teacher's mean of ``value(row)`` where defined, its standard error over the
    teachers (NaN with fewer than two), the number of rows and of teachers."""
    by: Dict[int, List[float]] = {}
    for row in rows:
        v = value(row)
        if not math.isnan(v):
            by.setdefault(row["teacher"], []).append(v)
    if not by:
        return math.nan, math.nan, 0, 0
    mean, se = _mean_se([statistics.mean(vs) for vs in by.values()])
    return mean, se, sum(len(vs) for vs in by.values()), len(by)


def summarise(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per label: each measure's and each shared - standalone difference's (mean, SE, searches, teachers)."""
    out: Dict[str, Dict[str, Any]] = {}
    for label in sorted({r["label"] for r in rows}):
        mine = [r for r in rows if r["label"] == label]
        s: Dict[str, Any] = {f"{p}~{loss}": clustered(mine, lambda r, k=f"{p}~{loss}": r[k]) for p, loss in MEASURES}
        for p in ("depth", "teacher_deep"):
            s[f"{p}:shared-standalone"] = clustered(mine, lambda r, p=p: r[f"{p}~shared"] - r[f"{p}~standalone"])
        s["depth_gap"] = clustered(mine, lambda r: r["depth_gap"])
        out[label] = s
    return out


def _fmt(cell: Tuple[float, float, int, int]) -> str:
    mean, se, _, _ = cell
    if math.isnan(mean):
        return "n/a"
    return f"{mean:+.3f} ({'n/a' if math.isnan(se) else f'{se:.3f}'})"


def format_table(summary: Dict[str, Dict[str, Any]]) -> str:
    """A markdown table of :func:`summarise`'s result."""
    lines = ["| label | searches (teachers) | depth ~ shared | depth ~ standalone | shared - standalone | "
             "teacher deep ~ shared | teacher deep ~ standalone | shared - standalone | derived depth - refs' |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, s in summary.items():
        n, teachers = s["depth_gap"][2], s["depth_gap"][3]
        cells = [_fmt(s[k]) for k in ("depth~shared", "depth~standalone", "depth:shared-standalone",
                                      "teacher_deep~shared", "teacher_deep~standalone",
                                      "teacher_deep:shared-standalone", "depth_gap")]
        lines.append(f"| {label} | {n} ({teachers}); {s['depth~shared'][2]} with taus | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fit_taus(job: Tuple[str, str, Sequence[int]]) -> Dict[str, Any]:
    """One search's references: tau-b of depth against each fit length's loss and the standalone loss."""
    import torch

    from atldas.tasks.planted import Recipe, standalone

    torch.set_num_threads(1)
    folder, path, steps = job
    truth = standalone_losses(Path(folder))
    r = json.loads(Path(path).read_text())
    t = int(r["teacher"])
    refs = [g for g in (Genotype.from_json(x) for x in r["reference"]) if (t, g.hash()) in truth]
    d = [depth(g) for g in refs]
    out = {"label": r["label"], "teacher": t, "references": len(refs),
           "standalone": tau_b(d, [truth[(t, g.hash())] for g in refs])}
    for n in steps:  # the call PlantedTask.short_fit makes for search seed 0: streams 2 and 3, initial weights 0
        out[str(n)] = tau_b(d, [standalone(g, teacher_seed=t, seed=0, recipe=Recipe(steps=n), streams=(2, 3))["test"]
                                for g in refs])
    return out


def fit_rows(folders: Sequence[str], labels: Optional[Sequence[str]], steps: Sequence[int],
             workers: int, teachers: Optional[Sequence[int]] = None) -> List[Dict[str, Any]]:
    """:func:`_fit_taus` of every no-budget, seed-0, cost-matched search of ``folders`` (of ``labels``
    and ``teachers`` where given)."""
    jobs = []
    for folder in folders:
        for path in sorted((Path(folder) / "searches").glob("*|none|t*|s0|matched.json")):
            r = json.loads(path.read_text())
            if (not labels or r["label"] in labels) and (not teachers or int(r["teacher"]) in teachers) and _today(r):
                jobs.append((folder, str(path), tuple(steps)))
    if workers <= 1:
        return [_fit_taus(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(_fit_taus, jobs))


def format_fits(rows: Sequence[Dict[str, Any]], steps: Sequence[int]) -> str:
    """Per label: tau-b of depth against the standalone loss and each fit's, and each fit minus standalone."""
    head = ["label", "teachers", "depth ~ standalone"] + [f"depth ~ {n}-step fit" for n in steps] + \
        [f"{n}-step - standalone" for n in steps]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for label in sorted({r["label"] for r in rows}):
        mine = [r for r in rows if r["label"] == label]
        cells = [_fmt(clustered(mine, lambda r: r["standalone"]))]
        cells += [_fmt(clustered(mine, lambda r, n=n: r[str(n)])) for n in steps]
        cells += [_fmt(clustered(mine, lambda r, n=n: r[str(n)] - r["standalone"])) for n in steps]
        lines.append(f"| {label} | {len({r['teacher'] for r in mine})} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("folders", nargs="+", help="benchmark output folders (search_quality.py --out)")
    p.add_argument("--labels", nargs="+", help="only these strategy labels")
    p.add_argument("--teachers", type=int, nargs="+", help="only the searches of these teachers")
    p.add_argument("--fits", type=int, nargs="+", default=[], metavar="STEPS",
                   help="also fit the references of each teacher's no-budget seed-0 search for these steps")
    p.add_argument("--workers", type=int, default=2, help="processes for --fits")
    p.add_argument("--json", help="write the rows and the summary to this file")
    args = p.parse_args(argv)
    rows = [row for f in args.folders for row in search_rows(Path(f), args.labels)
            if not args.teachers or row["teacher"] in args.teachers]
    if not rows:
        print(f"no stored cost-matched searches in {', '.join(args.folders)}", file=sys.stderr)
        return 1
    summary = summarise(rows)
    print("Kendall tau-b within each search's alive cost-matched references (negative: goes with a lower loss);")
    print("clustered by teacher: the mean of the teachers' means (standard error over teachers)")
    print(format_table(summary))
    fits: List[Dict[str, Any]] = []
    if args.fits:
        fits = fit_rows(args.folders, args.labels, args.fits, args.workers, args.teachers)
        print("\nThe select stage's fits of each teacher's no-budget seed-0 references (tau-b; SE over teachers)")
        print(format_fits(fits, args.fits))
    if args.json:
        Path(args.json).write_text(json.dumps({"folders": args.folders, "summary": summary, "rows": rows,
                                               "fits": fits}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
