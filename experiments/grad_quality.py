"""Does a strategy's arch gradient point where the task's does? At a trained supernet, the cosine
between the strategy's mean task gradient (many draws of its estimator, no update) and the exact
gradient of E_child[L] computed from conditional losses under common random numbers, per decision
family (normal/reduce cell ops, normal/reduce input sets, macro blocks).

    python experiments/grad_quality.py --space planted --warmup 4 --json runs/gradq-planted.json
    python experiments/grad_quality.py --space matting --estimators reinforce st --base 8

Split-half reliability: the cosine between the exact gradients of two halves of the base children,
and between an estimator's means over the first and the second half of its draws; a family whose
halves disagree is one where the figure above is mostly noise.

The exact gradient: for a group g with probabilities p (input sets of a node, ops of an edge, blocks
of a group), d E[L] / d logit_k = w * p_k * (m_k - sum_j p_j m_j), where m_k is the mean loss of the
base children with g set to k (the rest of each child unchanged: common random numbers, the same
batches) and w is the probability that the group is used (an edge's op matters only when its node
takes the edge). Base children are drawn from the policy with an op drawn for every edge, so a
swapped input set reuses the same draws. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import default_collate  # noqa: E402

from atldas.arch import CELL_TYPES  # noqa: E402
from atldas.run import Run, make_search_config  # noqa: E402
from atldas.strategies import AtldasHP  # noqa: E402
from atldas.tensors import batch_to  # noqa: E402


def _families(arch) -> Dict[str, List[str]]:
    fam: Dict[str, List[str]] = {}
    for name, _ in arch.named_parameters():
        kind, _, rest = name.partition(".")
        key = f"{rest}_ops" if kind == "alpha" else f"{rest.rsplit('_', 1)[0]}_sets" if kind == "beta" else "blocks"
        fam.setdefault(key, []).append(name)
    return fam


def exact_gradient(run: Run, batches, *, base: int, seed: int,
                   subsets: Sequence[Sequence[int]] = ()) -> List[Dict[str, torch.Tensor]]:
    """d E_child[L] / d logits from conditional losses (module docstring): name -> gradient tensor,
    from all ``base`` base children, then one more from each of ``subsets`` (lists of base-child
    indices; the same losses, so halves of the base cost nothing more)."""
    arch, net = run.net.arch, run.net
    topo = arch.topology
    gen = torch.Generator().manual_seed(seed)
    samples = arch.sample_many(base, generator=gen)

    def loss(child) -> float:
        with torch.no_grad():
            return sum(float(run.task.loss(net(x, net.plan(child)), b)) for b, x in batches) / len(batches)

    def child_of(k: int, **changes):
        s = {key: v[k:k + 1].clone() for key, v in samples.items()}
        for key, (col, value) in changes.items():
            if col is None:
                s[key][0] = value
            else:
                s[key][0, col] = value
        return arch.child_at(s, 0)

    # train mode, as the arch step sees the children: batch statistics of the batch at hand.
    # groups: (parameter name, row or None, probabilities, usage weight, [(option, {k: loss})])
    groups = []
    with torch.no_grad():
        for t in CELL_TYPES:
            for j in range(topo.nodes):  # input sets of node j
                q = arch.set_probs(t, j)
                groups.append((f"beta.{t}_{j}", None, q, 1.0, [
                    {k: loss(child_of(k, **{f"sets/{t}": (j, s)})) for k in range(base)}
                    if bool(arch.set_mask(t, j)[s]) else {} for s in range(len(q))]))
            p_ops = arch.op_probs(t)
            pi = arch.edge_probs(t)
            for e, (i, j) in enumerate(topo.edges):  # ops of edge i -> j, given the edge is used
                users = [k for k in range(base) if i in topo.input_sets[j][int(samples[f"sets/{t}"][k, j])]]
                if not users or not arch.edge_used(t, e):
                    continue
                p = p_ops[e]
                groups.append((f"alpha.{t}", e, p, pi[e], [
                    {k: loss(child_of(k, **{f"ops/{t}": (e, o)})) for k in users}
                    if bool(arch.op_mask(t)[e, o]) else {} for o in range(len(p))]))
        for g in arch.block_names:
            r = arch.block_probs(g)
            groups.append((f"gamma.{g}", None, r, 1.0, [
                {k: loss(child_of(k, **{f"blocks/{g}": (None, b)})) for k in range(base)}
                if bool(arch.block_mask(g)[b]) else {} for b in range(len(r))]))

    def gradient(ks: Sequence[int]) -> Dict[str, torch.Tensor]:
        grads = {name: torch.zeros_like(p) for name, p in arch.named_parameters()}
        for name, row, probs, weight, options in groups:
            per_option = [[per_child[k] for k in ks if k in per_child] for per_child in options]
            if not any(per_option):
                continue  # no base child of this subset uses the edge
            m = torch.tensor([sum(v) / len(v) if v else 0.0 for v in per_option], dtype=probs.dtype)
            value = weight * probs * (m - (probs * m).sum())
            if row is None:
                grads[name] = value
            else:
                grads[name][row] = value
        return grads

    return [gradient(range(base)), *[gradient(ks) for ks in subsets]]


def estimator_gradient(run: Run, batches, *, estimator: str, draws: int,
                       samples: int) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """The mean over ``draws`` of the strategy's task-gradient estimate at the current supernet, and
    the means over the first and the second half of the draws. ``estimator`` ``placebo`` is
    ``reinforce`` with each draw's sign drawn at random (the placebo control: its expected cosine is
    0, but a fixed draw of signs does not cancel exactly, so it keeps a share of a strong signal)."""
    strat = run.strategy
    if run.cfg.strategy == "atldas":
        strat = copy.copy(strat)
        base = "reinforce" if estimator == "placebo" else estimator
        strat.hp = AtldasHP(**{**strat.hp.__dict__, "estimator": base, "arch_samples": samples})
    signs = torch.randint(0, 2, (draws,), generator=torch.Generator().manual_seed(12345)) * 2 - 1
    params = dict(run.net.arch.named_parameters())
    halves = [{name: torch.zeros_like(p) for name, p in params.items()} for _ in range(2)]
    for d in range(draws):
        b, x = batches[d % len(batches)]
        term, _, _ = strat.task_term(b, x)
        grads = torch.autograd.grad(term, list(params.values()), allow_unused=True)
        sign = float(signs[d]) if estimator == "placebo" else 1.0
        for (name, _), g in zip(params.items(), grads):
            if g is not None:
                halves[2 * d // draws][name] += sign * g.detach()
    first, second = draws // 2, draws - draws // 2
    total = {name: (halves[0][name] + halves[1][name]) / draws for name in params}
    return total, {n: v / max(1, first) for n, v in halves[0].items()}, {n: v / second for n, v in halves[1].items()}


def cosines(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], families: Dict[str, List[str]]) -> Dict[str, float]:
    out = {}
    for fam, names in families.items():
        va = torch.cat([a[n].flatten() for n in names]).double()
        vb = torch.cat([b[n].flatten() for n in names]).double()
        den = float(va.norm() * vb.norm())
        out[fam] = float(va @ vb) / den if den > 0 else float("nan")
    va = torch.cat([a[n].flatten() for n in a]).double()
    vb = torch.cat([b[n].flatten() for n in a]).double()
    out["all"] = float(va @ vb) / max(float(va.norm() * vb.norm()), 1e-30)
    return out


def measure(*, space: str = "planted", sets: Sequence[str] = (), warmup: Optional[int] = None,
            estimators: Sequence[str] = ("reinforce", "st"), samples: int = 4, draws: int = 64, base: int = 16,
            batches: int = 2, seed: int = 0) -> Dict[str, Any]:
    """Warm the supernet up, then the cosines per estimator and family (``{"estimators": {est: {family:
    cosine, ..., "all": ...}}, ...}``)."""
    t0 = time.perf_counter()
    cfg = make_search_config(space=space, seed=seed, sets=["tensorboard=false", "progress=false", *sets])
    run = Run(cfg)
    warm = cfg.warmup_epochs if warmup is None else warmup
    run.fit(epochs=warm)  # warm-up epochs only: uniform children train the shared weights
    _, held = run.task.datasets(cfg.data, seed=cfg.seed + 7919, n_train=1, n_arch=batches * cfg.data.batch_size)
    bs = cfg.data.batch_size
    held_batches = []
    for k in range(batches):
        b = batch_to(default_collate([held[i] for i in range(k * bs, (k + 1) * bs)]), cfg.device)
        held_batches.append((b, run.model_input(b)))
    fams = _families(run.net.arch)
    exact, exact_a, exact_b = exact_gradient(run, held_batches, base=base, seed=seed,
                                             subsets=[range(base // 2), range(base // 2, base)])
    result: Dict[str, Any] = {"space": space, "task": run.task.name, "warmup_epochs": warm, "base": base,
                              "draws": draws, "estimators": {},
                              "reliability": {"exact": cosines(exact_a, exact_b, fams)}}
    for est in estimators:
        mean, first, second = estimator_gradient(run, held_batches, estimator=est, draws=draws, samples=samples)
        result["estimators"][est] = cosines(mean, exact, fams)
        result["reliability"][est] = cosines(first, second, fams)
    result["seconds"] = time.perf_counter() - t0
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="planted")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="search config overrides")
    p.add_argument("--warmup", type=int, default=None, help="epochs of uniform-child weight training first "
                   "(default: the space's warm-up epochs)")
    p.add_argument("--estimators", nargs="+", default=["reinforce", "st", "placebo"],
                   help="reinforce, st (straight-through gates), placebo (reinforce with random signs)")
    p.add_argument("--samples", type=int, default=4, help="children per estimator draw")
    p.add_argument("--draws", type=int, default=64, help="estimator draws averaged")
    p.add_argument("--base", type=int, default=16, help="base children of the exact gradient")
    p.add_argument("--batches", type=int, default=2, help="held-out batches every loss is averaged over")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(space=args.space, sets=args.set, warmup=args.warmup, estimators=args.estimators,
                     samples=args.samples, draws=args.draws, base=args.base, batches=args.batches, seed=args.seed)
    cols = list(next(iter(result["estimators"].values())))
    print(f"cosine(mean estimator gradient, exact gradient of E[L]) at a supernet after {result['warmup_epochs']} "
          f"warm-up epochs, {args.space}, {args.base} base children, {args.draws} draws")
    print(f"{'estimator':<10} " + " ".join(f"{c:>12}" for c in cols))
    for est, cs in result["estimators"].items():
        print(f"{est:<10} " + " ".join(f"{cs[c]:>12.3f}" for c in cols))
    print(f"split-half reliability: cosine between the halves (exact: base children 0..{args.base // 2 - 1} and "
          f"the rest; an estimator: its first and second {args.draws // 2} draws)")
    for est, cs in result["reliability"].items():
        print(f"{est:<10} " + " ".join(f"{cs[c]:>12.3f}" for c in cols))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
