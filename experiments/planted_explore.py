"""Planted-architecture task: does the architecture matter, and is the planted genotype the best?

    python experiments/planted_explore.py [--teacher-seeds 0 1] [--random 12] [--matched 4]
                                          [--json FILE] [--C 16] [--teacher-C 2] [--size 12] ...

For every teacher seed: the teacher genotype is drawn uniformly (per node an input set of in-degree
2, per edge one of the 7 DARTS ops without ``none``), a teacher :class:`PlantedNet` of width
``--teacher-C`` gets calibrated random weights (:func:`atldas.models.planted.teacher`), and fixed
train / test sets of smooth noise images (:func:`atldas.data.noise.smooth_noise`) with the
teacher's outputs as targets are built. The targets have zero mean and unit variance per channel,
so a test MSE is the fraction of the target variance a student misses (a constant scores ~1).

Students (width ``--C``) are trained standalone by ONE fixed recipe (:class:`Recipe`,
:func:`train_standalone`), each with two training seeds (the seed draws the initial weights and
the batch order). Genotypes, per teacher (each group from its own random stream):

- ``teacher``: the planted genotype;
- ``swap01``: the teacher with inputs 0 and 1 exchanged on every edge. In the first cell both
  inputs are 1x1 projections of the same stem output, so this is a re-parametrisation of the same
  function family: it should score like the teacher (a check, not a competitor);
- ``shallow``: the teacher's ops with every node fed by inputs 0 and 1 only (no node feeds another;
  same MACs): is depth (topology) detectable?
- ``matched``: ``--matched`` genotypes with the teacher's multiset of ops on a random topology in a
  random placement: exactly the teacher's MACs, so any spread among them is architecture, not cost;
- ``random``: ``--random`` genotypes drawn like the teacher.

Figures (``rel`` = relative to the mean of the two seeds; log = natural log of the test MSE):

- ``noise``: mean over all genotypes of |loss(seed 0) - loss(seed 1)| rel (the training noise;
  one bimodal pair, a seed that misses the exact fit, can add ~0.1 to it, so the median is given
  too); ``log sd``: within-genotype std of log loss over the random genotypes' runs;
- ``spread``: std over the random genotypes of their seed-mean log loss (~ relative std), and
  spread / noise; ``icc``: the between-genotype share of the variance of the log losses of all
  random runs (1 = all architecture, 0 = all training noise);
- ``matched spread``: the same std over the ``matched`` genotypes (equal MACs), and over noise;
- ``resid``: std of the residuals of log loss ~ a + b log MACs over the random genotypes (what cost
  does not explain); ``pairs20``: mean |difference of log loss| over pairs of random genotypes
  within 20% MACs;
- ``spearman`` / ``kendall``: rank correlation of MACs with loss over the random genotypes;
- ``teacher rank``: 1 + the number of random genotypes with a lower seed-mean loss;
- ``linear9``: test MSE of the best linear 9x9 filter (least squares), for scale;
- ``per run``: median CPU (and wall) seconds of one standalone training run, one thread.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atldas.data.noise import smooth_noise
from atldas.genotype import Genotype
from atldas.models.planted import (
    PlantedNet,
    calibrate_batchnorm,
    planted_genotype,
    planted_macs,
    random_genotype,
    teacher,
)
from atldas.tasks.planted import PlantedShape
from atldas.tasks.planted import Recipe as PlantedRecipe
from atldas.topology import CellTopology


@dataclass(frozen=True)
class Task(PlantedShape):
    """The planted task's shape (students: width ``C``; the teacher: width ``teacher_C``) and the
    teacher's knobs this exploration varies."""

    stem_kernel: int = 1
    gamma: tuple = (0.5, 1.5)
    beta_std: float = 0.5


@dataclass(frozen=True)
class Recipe(PlantedRecipe):
    """The task's standalone recipe and the knobs this exploration varied to choose it."""

    weight_decay: float = 0.0
    warmup: int = 0
    optimizer: str = "adam"


# ------------------------------------------------------------------------------------ data


def make_data(task: Task, teacher_seed: int) -> dict[str, object]:
    """Teacher genotype and net, train and test sets for one teacher seed (deterministic)."""
    g = random_genotype(nodes=task.nodes, rng=random.Random(f"teacher-{teacher_seed}"))
    t = teacher(g, C=task.teacher_C, cells=task.cells, in_channels=task.in_channels,
                out_channels=task.out_channels, seed=teacher_seed, size=task.size,
                stem_kernel=task.stem_kernel, gamma=task.gamma, beta_std=task.beta_std,
                noise_sigmas=task.sigmas)
    x_train = smooth_noise(task.n_train, channels=task.in_channels, size=task.size,
                           seed=10_000 + 2 * teacher_seed, sigmas=task.sigmas)
    x_test = smooth_noise(task.n_test, channels=task.in_channels, size=task.size,
                          seed=10_001 + 2 * teacher_seed, sigmas=task.sigmas)
    with torch.no_grad():
        y_train, y_test = t(x_train), t(x_test)
    cl = torch.channels_last
    return {"genotype": g, "teacher": t,
            "x_train": x_train.contiguous(memory_format=cl), "y_train": y_train.contiguous(memory_format=cl),
            "x_test": x_test.contiguous(memory_format=cl), "y_test": y_test.contiguous(memory_format=cl)}


def linear_baseline(data: dict[str, Tensor], k: int = 9) -> float:
    """Test MSE of the least-squares linear ``k x k`` filter (zero padding) with bias."""
    def feats(x: Tensor) -> Tensor:
        cols = nn.functional.unfold(x.contiguous().double(), k, padding=k // 2)  # (N, C*k*k, H*W)
        cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (N*H*W, C*k*k)
        return torch.cat([cols, torch.ones(cols.shape[0], 1, dtype=cols.dtype)], 1)

    def targets(y: Tensor) -> Tensor:
        return y.contiguous().double().permute(0, 2, 3, 1).reshape(-1, y.shape[1])  # (N*H*W, out)

    w = torch.linalg.lstsq(feats(data["x_train"]), targets(data["y_train"])).solution
    return (feats(data["x_test"]) @ w - targets(data["y_test"])).pow(2).mean().item()


# ------------------------------------------------------------------------------------ recipe


def train_standalone(genotype: Genotype, data: dict[str, Tensor], task: Task, recipe: Recipe,
                     seed: int) -> dict[str, float]:
    """Train a student of ``genotype`` by ``recipe``; test MSE after exact BatchNorm statistics.

    ``seed`` draws the initial weights (global RNG) and the batch order (its own generator).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    net = PlantedNet(genotype=genotype, C=task.C, cells=task.cells, in_channels=task.in_channels,
                     out_channels=task.out_channels, stem_kernel=task.stem_kernel)
    net = net.to(memory_format=torch.channels_last)  # ~1.5x faster on CPU for the depthwise convs
    if recipe.optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                               fused=True)  # one kernel for all parameters: ~2 ms less per step on CPU
    else:
        opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True,
                              weight_decay=recipe.weight_decay)
    x, y = data["x_train"], data["y_train"]  # channels_last
    n = x.shape[0]
    g = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=g), 0
    net.train()
    for step in range(recipe.steps):
        if step < recipe.warmup:
            lr = recipe.lr * (step + 1) / recipe.warmup
        else:
            s = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
            lr = 0.5 * recipe.lr * (1.0 + math.cos(math.pi * s))
        for group in opt.param_groups:
            group["lr"] = lr
        if pos + recipe.batch > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos:pos + recipe.batch]
        pos += recipe.batch
        loss = nn.functional.mse_loss(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.clip:
            nn.utils.clip_grad_norm_(net.parameters(), recipe.clip)
        opt.step()
    train_s = time.perf_counter() - t0
    calibrate_batchnorm(net, x)  # exact population statistics of the train set, eval mode
    with torch.no_grad():
        test = nn.functional.mse_loss(net(data["x_test"]), data["y_test"]).item()
        train = nn.functional.mse_loss(net(x[:256]), y[:256]).item()
    return {"test": test, "train": train, "seconds": time.perf_counter() - t0, "train_s": train_s,
            "cpu_s": time.process_time() - c0}


# ------------------------------------------------------------------------------------ genotypes


def swap01(g: Genotype) -> Genotype:
    """Inputs 0 and 1 exchanged on every edge."""
    swap = {0: 1, 1: 0}
    return planted_genotype([tuple((op, swap.get(i, i)) for op, i in node) for node in g.normal.nodes])


def shallow(g: Genotype) -> Genotype:
    """The same ops, every node fed by inputs 0 and 1 (in the teacher's edge order)."""
    return planted_genotype([tuple((op, i) for (op, _), i in zip(node, (0, 1)))
                             for node in g.normal.nodes])


def matched(g: Genotype, rng: random.Random) -> Genotype:
    """The multiset of ``g``'s ops in a random placement on a random in-degree-2 topology."""
    nodes = g.normal.n_nodes
    topo = CellTopology(nodes=nodes, k_min=2, k_max=2)
    ops = [op for node in g.normal.nodes for op, _ in node]
    rng.shuffle(ops)
    it = iter(ops)
    return planted_genotype([tuple((next(it), i) for i in rng.choice(topo.input_sets[j]))
                             for j in range(nodes)])


def genotype_set(tg: Genotype, teacher_seed: int, n_random: int, n_matched: int,
                 nodes: int) -> list[tuple]:
    """``[(kind, genotype)]``: teacher, swap01, shallow, matched, random (no duplicates)."""
    todo = [("teacher", tg)]
    seen = {tg}
    for kind, g in (("swap01", swap01(tg)), ("shallow", shallow(tg))):
        if g not in seen:
            seen.add(g)
            todo.append((kind, g))
    rng = random.Random(f"matched-{teacher_seed}")
    for _ in range(n_matched):
        for _ in range(1000):
            g = matched(tg, rng)
            if g not in seen and swap01(g) not in seen:
                break
        seen.add(g)
        todo.append(("matched", g))
    rng = random.Random(f"random-{teacher_seed}")
    added = 0
    while added < n_random:
        g = random_genotype(nodes=nodes, rng=rng)
        if g not in seen:
            seen.add(g)
            todo.append(("random", g))
            added += 1
    return todo


# ------------------------------------------------------------------------------------ statistics


def _rankdata(v: Sequence[float]) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    sa = math.sqrt(sum((x - ma) ** 2 for x in a))
    sb = math.sqrt(sum((x - mb) ** 2 for x in b))
    if sa == 0 or sb == 0:
        return float("nan")
    return sum((x - ma) * (y - mb) for x, y in zip(a, b)) / (sa * sb)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    return _pearson(_rankdata(a), _rankdata(b))


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall tau-b."""
    n, conc, disc, ta, tb = len(a), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ta += 1
            elif db == 0:
                tb += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + ta) * (conc + disc + tb))
    return (conc - disc) / denom if denom else float("nan")


def _logmean(r: dict) -> float:
    return statistics.fmean(math.log(v) for v in r["test"])


def summarise(rows: list[dict]) -> dict:
    """The figures of the module docstring from one teacher's rows."""
    rand = [r for r in rows if r["kind"] == "random"]
    mat = [r for r in rows if r["kind"] == "matched"]
    teach = next(r for r in rows if r["kind"] == "teacher")
    rel = [abs(r["test"][0] - r["test"][1]) / statistics.fmean(r["test"]) for r in rows]
    noise = statistics.fmean(rel)
    logm = [_logmean(r) for r in rand]
    spread = statistics.stdev(logm)
    # intraclass correlation of log losses (one-way ANOVA, 2 runs per genotype)
    within = statistics.fmean(statistics.variance([math.log(v) for v in r["test"]]) for r in rand)
    between = max(0.0, statistics.variance(logm) - within / 2)
    icc = between / (between + within) if between + within > 0 else float("nan")
    macs = [r["macs"] for r in rand]
    losses = [statistics.fmean(r["test"]) for r in rand]
    lx = [math.log(m) for m in macs]
    mx, my = statistics.fmean(lx), statistics.fmean(logm)
    sxx = sum((v - mx) ** 2 for v in lx)
    b = sum((u - mx) * (v - my) for u, v in zip(lx, logm)) / sxx if sxx else 0.0
    resid = [v - my - b * (u - mx) for u, v in zip(lx, logm)]
    resid_std = math.sqrt(sum(e * e for e in resid) / max(1, len(resid) - 2))
    pairs = [abs(logm[i] - logm[j]) for i in range(len(rand)) for j in range(i + 1, len(rand))
             if max(macs[i], macs[j]) <= 1.2 * min(macs[i], macs[j])]
    t_loss = statistics.fmean(teach["test"])
    out = {
        "teacher_loss": t_loss,
        "teacher_seeds": teach["test"],
        "random_mean": statistics.fmean(losses),
        "random_median": statistics.median(losses),
        "random_min": min(losses),
        "random_max": max(losses),
        "noise": noise,
        "noise_median": statistics.median(rel),
        "noise_log_sd": math.sqrt(within),
        "spread": spread,
        "spread_over_noise": spread / noise if noise else float("inf"),
        "icc": icc,
        "resid_std": resid_std,
        "resid_over_noise": resid_std / noise if noise else float("inf"),
        "pairs20": len(pairs),
        "pairs20_mean_dlog": statistics.fmean(pairs) if pairs else float("nan"),
        "spearman_macs_loss": spearman(macs, losses),
        "kendall_macs_loss": kendall(macs, losses),
        "teacher_rank": 1 + sum(v < t_loss for v in losses),
        "teacher_over_median": t_loss / statistics.median(losses),
        "teacher_over_best_random": t_loss / min(losses),
        "s_per_run": statistics.median(r["seconds"] for r in rows),
        "cpu_s_per_run": statistics.median(r["cpu_s"] for r in rows),
    }
    if len(mat) >= 2:
        ml = [statistics.fmean(r["test"]) for r in mat]
        out.update({
            "matched_median": statistics.median(ml),
            "matched_min": min(ml),
            "matched_max": max(ml),
            "matched_spread": statistics.stdev(_logmean(r) for r in mat),
            "teacher_rank_matched": 1 + sum(v < t_loss for v in ml),
        })
        out["matched_spread_over_noise"] = out["matched_spread"] / noise if noise else float("inf")
    for r in rows:
        if r["kind"] in ("swap01", "shallow"):
            out[f"{r['kind']}_loss"] = statistics.fmean(r["test"])
    return out


def _fmt_g(g: Genotype) -> str:
    short = {"skip_connect": "skip", "max_pool_3x3": "max", "avg_pool_3x3": "avg",
             "sep_conv_3x3": "sep3", "sep_conv_5x5": "sep5", "dil_conv_3x3": "dil3",
             "dil_conv_5x5": "dil5"}
    return " | ".join(",".join(f"{short.get(op, op)}<{i}" for op, i in node) for node in g.normal.nodes)


# ------------------------------------------------------------------------------------ main


def run_teacher(task: Task, recipe: Recipe, teacher_seed: int, n_random: int, n_matched: int,
                train_seeds: Sequence[int], verbose: bool) -> dict:
    """All genotypes of one teacher, two seeds each; rows and summary."""
    data = make_data(task, teacher_seed)
    tg: Genotype = data["genotype"]
    lin = linear_baseline(data)
    if verbose:
        print(f"  teacher genotype {_fmt_g(tg)}   linear9 test MSE {lin:.4f}", flush=True)
    rows = []
    for kind, g in genotype_set(tg, teacher_seed, n_random, n_matched, task.nodes):
        macs = planted_macs(g, C=task.C, cells=task.cells, in_channels=task.in_channels,
                            out_channels=task.out_channels, stem_kernel=task.stem_kernel,
                            H=task.size, W=task.size)
        runs = [train_standalone(g, data, task, recipe, seed=s) for s in train_seeds]
        row = {"kind": kind, "genotype": _fmt_g(g), "hash": g.hash(), "macs": macs,
               "test": [r["test"] for r in runs], "train": [r["train"] for r in runs],
               "seconds": statistics.fmean(r["seconds"] for r in runs),
               "cpu_s": statistics.fmean(r["cpu_s"] for r in runs)}
        rows.append(row)
        if verbose:
            print(f"  {kind:8s} {macs / 1e3:6.0f}k  test {row['test'][0]:.4f} {row['test'][1]:.4f}  "
                  f"train {row['train'][0]:.4f} {row['train'][1]:.4f}  {row['cpu_s']:.1f}s  "
                  f"{row['genotype']}", flush=True)
    summary = summarise(rows)
    summary["linear9"] = lin
    return {"teacher_seed": teacher_seed, "teacher_genotype": _fmt_g(tg), "rows": rows,
            "summary": summary}


def print_summary(res: dict, n_random: int) -> None:
    s = res["summary"]
    print(f"  teacher {res['teacher_genotype']}")
    print(f"  teacher loss {s['teacher_loss']:.4f} (seeds {s['teacher_seeds'][0]:.4f}, "
          f"{s['teacher_seeds'][1]:.4f})  rank {s['teacher_rank']}/{n_random + 1}  "
          f"teacher/median {s['teacher_over_median']:.2f}  teacher/best random "
          f"{s['teacher_over_best_random']:.2f}  linear9 {s['linear9']:.4f}")
    extra = "  ".join(f"{k} {s[k + '_loss']:.4f}" for k in ("swap01", "shallow") if k + "_loss" in s)
    if "matched_spread" in s:
        extra += (f"  matched median {s['matched_median']:.4f} [{s['matched_min']:.4f}, "
                  f"{s['matched_max']:.4f}] spread {s['matched_spread']:.3f} "
                  f"(/noise {s['matched_spread_over_noise']:.1f}) teacher rank among matched "
                  f"{s['teacher_rank_matched']}")
    print(f"  controls: {extra}")
    print(f"  random mean {s['random_mean']:.4f} median {s['random_median']:.4f} "
          f"min {s['random_min']:.4f} max {s['random_max']:.4f}")
    print(f"  noise {s['noise']:.3f} (median {s['noise_median']:.3f}, random log sd "
          f"{s['noise_log_sd']:.3f})  spread {s['spread']:.3f}  "
          f"spread/noise {s['spread_over_noise']:.1f}  icc {s['icc']:.3f}  resid(logMACs) "
          f"{s['resid_std']:.3f} resid/noise {s['resid_over_noise']:.1f}  pairs20 {s['pairs20']} "
          f"mean|dlog| {s['pairs20_mean_dlog']:.3f}")
    print(f"  MACs~loss spearman {s['spearman_macs_loss']:+.2f} kendall "
          f"{s['kendall_macs_loss']:+.2f}  per run: cpu {s['cpu_s_per_run']:.2f}s wall "
          f"{s['s_per_run']:.2f}s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    d, r = Task(), Recipe()
    p.add_argument("--teacher-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--random", type=int, default=12, help="random genotypes per teacher")
    p.add_argument("--matched", type=int, default=4,
                   help="genotypes with the teacher's ops on a random topology per teacher")
    p.add_argument("--train-seeds", type=int, nargs=2, default=[0, 1])
    for name, value in asdict(d).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, tuple):
            p.add_argument(flag, type=float, nargs="+", default=list(value))
        else:
            p.add_argument(flag, type=type(value), default=value)
    for name, value in asdict(r).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", type=Path, help="write every row and summary here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    task = Task(**{k: (tuple(getattr(a, k)) if isinstance(v, tuple) else getattr(a, k))
                   for k, v in asdict(d).items()})
    recipe = Recipe(**{k: getattr(a, k) for k in asdict(r)})
    print(f"task   {asdict(task)}")
    print(f"recipe {asdict(recipe)}  threads={a.threads}", flush=True)
    results = []
    t0 = time.perf_counter()
    for ts in a.teacher_seeds:
        print(f"teacher seed {ts}", flush=True)
        res = run_teacher(task, recipe, ts, a.random, a.matched, a.train_seeds, not a.quiet)
        results.append(res)
        print_summary(res, a.random)
    print(f"total {time.perf_counter() - t0:.0f}s")
    if a.json:
        a.json.write_text(json.dumps({"task": asdict(task), "recipe": asdict(recipe),
                                      "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
