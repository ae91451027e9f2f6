"""The derive rule after a search: a discrete child, repaired onto the budget, as a costed genotype.

The child comes from the strategy (per node the most probable active input set, per chosen edge the
most probable active op, per block group the most probable block; DARTS/GDAS: the top-2 rule; random
search: the best of several random children by held-out loss). If it is over budget, :func:`repair`
swaps greedily (the swap that loses the least log-probability per unit of cost saved) until it fits;
:func:`finalize` records the cost before and after, and says when the budget cannot be met. No file
I/O here: ``atldas derive`` (:func:`atldas.run.derive_run`) reads the run and writes the file.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from atldas.version import __version__
from atldas.arch import CELL_TYPES, ArchParams, Child
from atldas.cost import Budget, CostTable, format_cost
from atldas.errors import ConfigError
from atldas.genotype import Genotype
from atldas.ops import op_params

log = logging.getLogger("atldas")


def _moves(arch: ArchParams, child: Child, *, cheapest: Optional[CostTable] = None) -> List[Child]:
    """Every child one swap away: another op on a chosen edge, another input set for a node (new
    edges take their most probable op; with ``cheapest``, their active op that costs least by that
    table), another block in a group. ``none`` is never chosen."""
    topo = arch.topology
    none = arch.op_names.index("none") if "none" in arch.op_names else -1
    out: List[Child] = []
    with torch.no_grad():
        for t in CELL_TYPES:
            probs = arch.op_probs(t).clone()
            if none >= 0:
                probs[:, none] = -1.0
            mask = arch.op_mask(t)
            for e, o in child.ops[t].items():
                for o2 in range(len(arch.op_names)):
                    if o2 != o and o2 != none and bool(mask[e, o2]):
                        ops = {**child.ops, t: {**child.ops[t], e: o2}}
                        out.append(Child(sets=child.sets, ops=ops, blocks=child.blocks))
            for j, s in enumerate(child.sets[t]):
                smask = arch.set_mask(t, j)
                old_edges = {topo.edge_index[(i, j)] for i in topo.input_sets[j][s]}
                for s2, srcs in enumerate(topo.input_sets[j]):
                    if s2 == s or not bool(smask[s2]):
                        continue
                    new_ops = {e: o for e, o in child.ops[t].items() if e not in old_edges}
                    for i in srcs:
                        e = topo.edge_index[(i, j)]
                        new_ops[e] = child.ops[t][e] if e in old_edges else int(torch.argmax(probs[e]))
                    sets = {**child.sets, t: child.sets[t][:j] + (s2,) + child.sets[t][j + 1:]}
                    if cheapest is not None:  # each new edge in turn takes its cheapest active op
                        for e in [e for e in new_ops if e not in child.ops[t]]:
                            ok = [o2 for o2 in range(len(arch.op_names)) if o2 != none and bool(mask[e, o2])]
                            new_ops[e] = min(ok, key=lambda o2: cheapest.of_child(
                                Child(sets=sets, ops={**child.ops, t: {**new_ops, e: o2}}, blocks=child.blocks)))
                    out.append(Child(sets=sets, ops={**child.ops, t: new_ops}, blocks=child.blocks))
        for g, b in child.blocks.items():
            for b2 in range(len(arch.block_names[g])):
                if b2 != b and bool(arch.block_mask(g)[b2]):
                    out.append(Child(sets=child.sets, ops=child.ops, blocks={**child.blocks, g: b2}))
    return out


def _greedy(arch: ArchParams, child: Child, table: CostTable, *, step: Callable[[float, float], float],
            done: Callable[[float], bool], max_steps: int,
            cheap_edges: bool = False) -> Tuple[Child, List[Dict[str, Any]]]:
    """Apply, until ``done(cost)`` or no swap qualifies, the swap with the least log-probability lost per
    unit of ``step(cost, new cost)`` (swaps whose step is not positive do not qualify)."""
    steps: List[Dict[str, Any]] = []
    cost = table.of_child(child)
    with torch.no_grad():
        logp = float(arch.log_prob(child))
        for _ in range(max_steps):
            if done(cost):
                break
            best: Optional[Tuple[float, Child, float, float]] = None
            for cand in _moves(arch, child, cheapest=table if cheap_edges else None):
                c2 = table.of_child(cand)
                size = step(cost, c2)
                if size <= 0:
                    continue
                lp2 = float(arch.log_prob(cand))
                score = (logp - lp2) / size
                if best is None or score < best[0]:
                    best = (score, cand, c2, lp2)
            if best is None:
                break
            _, child, cost, logp = best
            steps.append({"cost": cost, "log_prob": logp})
    return child, steps


def repair(arch: ArchParams, child: Child, table: CostTable, target: float,
           *, max_steps: int = 200) -> Tuple[Child, List[Dict[str, Any]]]:
    """Greedy budget repair: apply the swap with the least log-probability lost per unit of cost
    saved until ``table.of_child(child) <= target`` or no swap saves cost. Where that stops above
    ``target`` (after pruning, a node's other input set may only save cost with a cheap op on its new
    edges, not their most probable one), it goes on with those moves giving each new edge its cheapest
    active op.

    Returns:
        The repaired child and the list of swaps made (cost and log-probability after each).
    """
    child, steps = _greedy(arch, child, table, step=lambda cost, new: cost - new, done=lambda cost: cost <= target,
                           max_steps=max_steps)
    if table.of_child(child) > target and len(steps) < max_steps:
        child, more = _greedy(arch, child, table, step=lambda cost, new: cost - new,
                              done=lambda cost: cost <= target, max_steps=max_steps - len(steps), cheap_edges=True)
        steps += more
    return child, steps


def grow(arch: ArchParams, child: Child, table: CostTable, target: float,
         *, max_steps: int = 200) -> Tuple[Child, List[Dict[str, Any]]]:
    """Greedy growth onto the budget, the inverse of :func:`repair`: while a swap that adds cost keeps
    ``table.of_child(child) <= target``, apply the one that loses the least log-probability per unit of
    cost added (a swap that gains log-probability first). A child over ``target`` is returned as it is.

    Returns:
        The grown child and the list of swaps made (cost and log-probability after each).
    """
    return _greedy(arch, child, table, step=lambda cost, new: new - cost if new <= target else 0.0,
                   done=lambda cost: False, max_steps=max_steps)


def cost_record(space, genotype: Genotype, *, budget: Optional[Budget]) -> Dict[str, Any]:
    """The genotype file's ``cost`` entry: MACs and params of the bound space's target network, counted."""
    return {"input": list(space.input_shape()),
            "macs": int(space.measure(genotype, metric="macs")),
            "params": int(space.measure(genotype, metric="params")),
            "latency_ms": None,
            "target": None if budget is None else {"metric": budget.metric, "value": budget.target},
            "counter": "torch.utils.flop_counter.FlopCounterMode total / 2 (convolutions, linear layers)"}


def _learns(op: str, stride: int) -> bool:
    """Whether ``op`` has weights at ``stride`` (any registered op; an unknown one counts as learned)."""
    try:
        return op_params(op, C_in=4, C_out=4, stride=stride) > 0
    except ConfigError:
        return True


def parameter_free_cells(genotype: Genotype) -> List[str]:
    """The cell types of ``genotype`` whose ops all have no weights: such a cell learns nothing (the
    skip-connect / pooling collapse). Decided by counting each op's parameters, so a custom op counts
    too; in a reduction cell a stride-2 skip_connect is a FactorizedReduce with weights, so it counts
    as learned there."""
    out = []
    for name, cell in genotype.cells().items():
        if not any(_learns(op, 2 if name == "reduce" and i < 2 else 1) for i, _, op in cell.edges()):
            out.append(name)
    return out


def finalize(*, space, arch: ArchParams, child: Child, table: CostTable, budget: Optional[Budget],
             provenance: Dict[str, Any]) -> Genotype:
    """Repair ``child`` onto the budget and build the genotype with its cost record (a warning when a
    cell has no learned op)."""
    before = table.of_child(child)
    swaps: List[Dict[str, Any]] = []
    if budget is not None and before > budget.target:
        child, swaps = repair(arch, child, table, budget.target)
    after = table.of_child(child)
    genotype = space.child_to_genotype(arch, child)
    cost = cost_record(space, genotype, budget=budget)
    if budget is not None:
        cost["repair"] = {"metric": budget.metric, "before": before, "after": after, "swaps": len(swaps),
                          "feasible": after <= budget.target}
        if budget.metric == "latency_ms":
            cost["latency_ms"] = after
            if table.source is not None:  # which table, measured where (a run's stored table from before
                # atldas recorded it has none)
                cost["latency_table"] = dict(table.source)
        if after > budget.target:
            log.warning("the budget %s cannot be met: the derived network costs %s after repair",
                        format_cost(budget.target, budget.metric), format_cost(after, budget.metric))
    for name in parameter_free_cells(genotype):
        log.warning("the derived %s cell has no learned op (only skip_connect and pooling): the collapse DARTS "
                    "users check for; look at the run's grad_z/task rows (the task may not be deciding) or search "
                    "longer", name)
    return genotype.replace(cost=cost, provenance={"atldas": __version__, **provenance})


__all__ = ["repair", "grow", "finalize", "cost_record", "parameter_free_cells"]
