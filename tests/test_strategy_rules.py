"""Rules of the strategies and the search loop checked against hand-computed values: the schedules, the
DARTS top-2 derive, random search's candidates and choice, an epoch's slice of a search split, the
budget temperature. Each was a one-line mutation the suite did not catch."""

from __future__ import annotations

import math
import types

import pytest
import torch

from atldas.arch import CELL_TYPES, ArchParams
from atldas.ops import SEARCH_PRIMITIVES
from atldas.run import Run, epoch_order, make_search_config
from atldas.strategies import Schedule, _top2_child
from atldas.topology import CellTopology


def test_schedules_run_from_their_warm_up_values_to_their_final_ones_after_the_warm_up():
    s = Schedule(epochs=10, warmup=4, tau_max=5.0, tau_min=0.5, eps_min=0.2)
    assert s.epsilon(0) == s.epsilon(3.9) == 1.0 and s.tau(2) == 5.0
    assert s.epsilon(4) == 1.0 and s.tau(4) == 5.0
    assert s.epsilon(7) == pytest.approx(1.0 + (0.2 - 1.0) * 0.5) and s.tau(7) == pytest.approx(2.75)
    assert s.epsilon(10) == pytest.approx(0.2) and s.tau(10) == pytest.approx(0.5)
    assert s.in_warmup(3.99) and not s.in_warmup(4)


def test_darts_derive_keeps_each_nodes_two_strongest_inputs():
    arch = ArchParams(topology=CellTopology(), ops=("none",) + SEARCH_PRIMITIVES, init_std=0.0)
    topo = arch.topology
    j = 2  # node 2: sources 0, 1, 2, 3
    with torch.no_grad():
        for t in CELL_TYPES:
            for i, strength in ((0, 3.0), (1, 1.0), (2, 2.5), (3, 0.5)):
                arch.alpha[t][topo.edge_index[(i, j)], 4] = strength
            arch.alpha[t][topo.edge_index[(1, j)], 0] = 9.0  # "none" does not count
    child = _top2_child(types.SimpleNamespace(arch=arch))
    for t in CELL_TYPES:
        assert topo.input_sets[j][child.sets[t][j]] == (0, 2)
        assert child.ops[t][topo.edge_index[(0, j)]] == 4


def test_random_search_samples_within_the_budget_and_keeps_the_best_scored_candidate():
    probe = Run(make_search_config(space="tiny", strategy="random"))
    gen = torch.Generator().manual_seed(0)
    costs = sorted(probe.table.of_child(probe.net.arch.sample(epsilon=1.0, generator=gen)) for _ in range(40))
    target = costs[len(costs) // 2]  # about half the uniform children are over it
    run = Run(make_search_config(space="tiny", strategy="random", sets=[f"target_macs={target}"]))
    strat, table = run.strategy, run.table
    children = strat.random_children(8)
    assert len(children) == 8 and all(table.of_child(c) <= target for c in children)
    scores = {c.key(): table.of_child(c) for c in strat.random_children(strat.hp.random_candidates)}
    picked = strat.derive(evaluate=lambda c: table.of_child(c))
    assert table.of_child(picked) == min(scores.values())


def test_an_epoch_takes_its_own_slice_of_a_split_made_per_epoch():
    order = epoch_order(n=40, per_epoch=10, epochs=4, seed=0, salt=0, batch_size=2, cycle=False)
    for e in range(4):
        idx = list(order(e))
        assert sorted(idx) == list(range(10 * e, 10 * e + 10))
    whole = epoch_order(n=30, per_epoch=10, epochs=4, seed=0, salt=0, batch_size=2, cycle=False)
    assert sorted(whole(2)) == list(range(30))  # a split too small for one slice per epoch: all of it


def test_a_lower_temperature_sharpens_the_policy():
    arch = ArchParams(topology=CellTopology(), ops=SEARCH_PRIMITIVES)
    with torch.no_grad():
        arch.alpha["normal"].normal_(0, 1.0)
    sharp, flat = arch.op_probs("normal", 0.5), arch.op_probs("normal", 1.0)
    assert bool((sharp.max(-1).values > flat.max(-1).values).all())
    assert torch.allclose(sharp, (arch.alpha["normal"] / 0.5).softmax(-1))


def test_rebuilding_the_weight_optimizer_after_pruning_keeps_each_kept_tensors_state_and_lr():
    run = Run(make_search_config(space="tiny", sets=["tensorboard=false", "progress=false", "plots=false",
                                                     "epochs=2", "steps_per_epoch=1", "arch_steps_per_epoch=1",
                                                     "warmup_epochs=1"]))
    run.fit()
    strat = run.strategy
    old = strat.w_opt
    strat.set_epoch(1.5)
    lr = old.param_groups[0]["lr"]
    strat.rebuild_w_opt()
    new = strat.w_opt
    assert new is not old and new.param_groups[0]["lr"] == lr
    kept = [p for p in new.param_groups[0]["params"] if p in old.state]
    assert kept and all(new.state[p] is old.state[p] for p in kept)


def test_an_arch_metric_in_the_history_row_is_the_mean_over_the_arch_steps_that_ran():
    """With fewer arch steps than weight steps, an arch metric was divided by the weight steps."""
    run = Run(make_search_config(space="tiny", sets=["tensorboard=false", "progress=false", "plots=false",
                                                     "epochs=2", "steps_per_epoch=3", "arch_steps_per_epoch=1",
                                                     "warmup_epochs=1"]))
    real = run.strategy.arch_step
    run.strategy.arch_step = lambda *a, **k: {**real(*a, **k), "test/one": 1.0}
    rows = run.fit()
    assert rows[-1]["test/one"] == 1.0


def test_pruning_starts_after_the_last_warm_up_epoch_and_then_runs_every_prune_every_epochs():
    run = Run(make_search_config(space="tiny", sets=["tensorboard=false", "progress=false", "plots=false",
                                                     "epochs=8", "warmup_epochs=2", "prune_patience=1",
                                                     "prune_every=2"]))
    strat, arch = run.strategy, run.net.arch
    with torch.no_grad():  # one candidate far ahead in every op group: all others below any threshold
        for t in CELL_TYPES:
            arch.alpha[t].zero_()
            arch.alpha[t][:, 0] = 30.0
    assert strat.end_epoch(0) == [] and strat.end_epoch(1) == []  # warm-up epochs, the last one included
    assert strat.end_epoch(2) == []  # the first epoch after the warm-up: prune_every=2 waits one more
    events = strat.end_epoch(3)
    assert any(ev["group"].endswith("/ops") for ev in events) and events[-1]["group"] == "supernet"


def test_the_weight_learning_rate_follows_the_cosine_at_every_step_not_only_at_epoch_starts():
    run = Run(make_search_config(space="tiny", sets=["tensorboard=false", "progress=false", "plots=false",
                                                     "epochs=2", "steps_per_epoch=4", "arch_steps_per_epoch=1",
                                                     "warmup_epochs=1"]))
    strat, lrs = run.strategy, []
    real = strat.weight_step
    strat.weight_step = lambda *a, **k: (lrs.append(strat.w_opt.param_groups[0]["lr"]), real(*a, **k))[1]
    run.fit()
    w_lr = strat.hp.w_lr
    assert lrs == pytest.approx([0.5 * w_lr * (1 + math.cos(math.pi * (e + s / 4) / 2))
                                 for e in range(2) for s in range(4)], rel=1e-12)


def test_the_budget_only_control_moves_the_policy_by_the_budget_alone(tmp_path):
    """`--set control=budget_only` switches the task term off: two searches whose supernet weights train
    differently (another weight learning rate) end on the same logits and arch totals, where with the
    task term they do not; the logged `loss/arch_total` is then the penalty alone."""
    import json

    import atldas

    def search(name, *sets):
        out = tmp_path / name
        cfg = atldas.make_search_config(space="tiny", sets=[
            "epochs=3", "warmup_epochs=1", "steps_per_epoch=2", "arch_steps_per_epoch=3", "tensorboard=false",
            "plots=false", "progress=false", "target_macs=12M", *sets])
        run = atldas.Run(cfg, out=out)
        run.fit()
        rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
        arch = {k: v.clone() for k, v in run.net.arch.state_dict().items()}
        return arch, [r.get("loss/arch_total") for r in rows], [r.get("loss/arch") for r in rows]

    a, total_a, task_a = search("a", "control=budget_only", "w_lr=2e-3")
    b, total_b, task_b = search("b", "control=budget_only", "w_lr=5e-2")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert total_a == total_b and task_a != task_b  # the task loss moved; what the step minimised did not
    c, total_c, _ = search("c", "w_lr=2e-3")
    d, total_d, _ = search("d", "w_lr=5e-2")
    assert not all(torch.equal(c[k], d[k]) for k in c) and total_c != total_d


def test_prune_z_drops_a_candidate_below_threshold_only_when_its_evidence_is_against_it():
    """With ``evidence``, being below the threshold for ``patience`` checks is not enough: a candidate
    whose applied gradient's z is under ``z_min`` stays, one at or above it goes (the same logits)."""
    arch = ArchParams(topology=CellTopology(), ops=SEARCH_PRIMITIVES, init_std=0.0)
    with torch.no_grad():
        for t in CELL_TYPES:
            arch.alpha[t][:, 0] = 30.0  # every other op far below threshold
    z = {name: torch.zeros_like(p) for name, p in arch.named_parameters()}
    z["alpha.normal"][:, 1] = 3.0  # against op 1 on every edge of the normal cell, at the bar
    z["alpha.normal"][:, 2] = 2.99  # just under it
    events = arch.prune(ratio=0.3, patience=1, evidence=z, z_min=3.0)
    dropped = {ev["group"]: ev["dropped"] for ev in events if "dropped" in ev}
    used = [e for e in range(arch.topology.num_edges) if arch.edge_used("normal", e)]
    assert used and all(dropped[f"normal/edge{i}->{j}/ops"] == [SEARCH_PRIMITIVES[1]]
                        for e, (i, j) in enumerate(arch.topology.edges) if e in used)
    assert not any(g.startswith("reduce/") for g in dropped)  # z 0 there: no evidence, nothing dropped
    assert all(ev["z"] == [3.0] for ev in events if "dropped" in ev)
    n = len(SEARCH_PRIMITIVES)  # held: the normal cell's ops below threshold but 0 and 1, the reduce cell's but 0
    assert events[-1] == {"group": "evidence", "held": len(used) * ((n - 2) + (n - 1)), "z_min": 3.0}
    assert bool(arch.op_mask("normal")[used[0], 2]) and not bool(arch.op_mask("normal")[used[0], 1])
    arch.prune(ratio=0.3, patience=1)  # without evidence: the rule of before, every op below threshold goes
    assert int(arch.op_mask("reduce")[used[0]].sum()) == 1


def test_the_evidence_is_the_z_of_the_applied_arch_gradient_and_a_resumed_search_keeps_it():
    """``Strategy.evidence()`` is sum(g) / sqrt(sum(g^2)) of the gradients the arch steps applied
    (recomputed here from the logits' own ``.grad`` at each step; under the placebo and a budget, the
    task gradient with its random sign plus the budget's, not the task gradient the statistics of the
    log take), and it travels in the strategy's
    state: a search resumed from it prunes on the same sums."""
    sets = ["tensorboard=false", "progress=false", "plots=false", "epochs=3", "steps_per_epoch=2",
            "arch_steps_per_epoch=2", "warmup_epochs=1", "prune_z=3", "control=placebo", "target_macs=12e6"]
    run = Run(make_search_config(space="tiny", sets=sets))
    strat = run.strategy
    assert all(float(v.abs().max()) == 0.0 for v in strat.evidence().values())
    params = dict(strat.net.arch.named_parameters())
    sums = {k: [torch.zeros_like(p), torch.zeros_like(p)] for k, p in params.items()}
    real = strat.a_opt.step

    def step(*a, **k):  # the gradients the optimiser is given are the applied ones
        for k2, p in params.items():
            sums[k2][0] += p.grad
            sums[k2][1] += p.grad * p.grad
        return real(*a, **k)

    strat.a_opt.step = step
    run.fit()
    ev = strat.evidence()
    assert float(sums["alpha.normal"][1].sum()) > 0 and float(sums["beta.normal_1"][1].sum()) > 0
    for k, (s1, s2) in sums.items():
        torch.testing.assert_close(ev[k], s1 / s2.sqrt().clamp_min(1e-30), rtol=1e-5, atol=1e-6)
    state = strat.state_dict()
    again = Run(make_search_config(space="tiny", sets=sets)).strategy
    again.load_state_dict(state)
    for k in ev:
        assert torch.equal(again.evidence()[k], ev[k])
    del state["applied"]  # an older atldas's checkpoint: the sums restart from 0
    older = Run(make_search_config(space="tiny", sets=sets)).strategy
    older.load_state_dict(state)
    assert all(float(v.abs().max()) == 0.0 for v in older.evidence().values())


def test_a_search_with_prune_z_drops_only_the_candidates_its_applied_gradient_is_against():
    """The strategy's pruning round passes its own evidence and ``prune_z``: with every op but one and
    every block but one below threshold, only the candidates whose applied-gradient sums give z >= 3
    go (op 1 on the normal cell's even edges, block 1 of one group); without ``prune_z`` all go."""
    def run_with(z: str):
        sets = ["tensorboard=false", "progress=false", "plots=false", "epochs=8", "warmup_epochs=2",
                "prune_patience=1", f"prune_z={z}"]
        run = Run(make_search_config(space="tiny", sets=sets))
        arch = run.net.arch
        with torch.no_grad():
            for t in CELL_TYPES:
                arch.alpha[t].zero_()
                arch.alpha[t][:, 0] = 30.0
            for g in arch.gamma:
                arch.gamma[g].zero_()
                arch.gamma[g][0] = 30.0
        applied = dict(zip((n for n, _ in arch.named_parameters()), run.strategy._applied))
        for s1, s2 in applied.values():
            s2.fill_(1.0)  # one applied step of size 1 on every logit: z = s1
        applied["alpha.normal"][0][0::2, 1] = 3.0
        group = next(iter(arch.gamma))
        applied[f"gamma.{group}"][0][1] = 3.0
        return run, group, run.strategy.end_epoch(2)

    run, group, events = run_with("3")
    arch, topo = run.net.arch, run.net.arch.topology
    used = [e for e in range(topo.num_edges) if arch.edge_used("normal", e)]
    assert any(e % 2 for e in used) and any(e % 2 == 0 for e in used)
    for e in used:
        kept = arch.op_mask("normal")[e].tolist()
        assert kept == [True] * len(kept) if e % 2 else kept == [k != 1 for k in range(len(kept))]
        assert all(arch.op_mask("reduce")[e].tolist())
    assert arch.block_mask(group).tolist() == [k != 1 for k in range(len(arch.block_names[group]))]
    assert all(all(arch.block_mask(g).tolist()) for g in arch.block_names if g != group)
    assert any(ev["group"] == "evidence" and ev["held"] > 0 for ev in events) and events[-1]["group"] == "supernet"
    run, group, events = run_with("0")
    arch = run.net.arch
    assert all(int(arch.op_mask(t)[e].sum()) == 1 for t in CELL_TYPES for e in used)
    assert all(int(arch.block_mask(g).sum()) == 1 for g in arch.block_names)
    assert not any(ev["group"] == "evidence" for ev in events)


def test_unlearned_topology_logits_collect_no_evidence():
    """With ``learn_topology=false`` the topology logits get no step, so no applied gradient either:
    their evidence stays 0 (they were summed before, and prune_ratio near 1 pruned input sets on it)."""
    run = Run(make_search_config(space="tiny", sets=["tensorboard=false", "progress=false", "plots=false",
                                                     "epochs=3", "steps_per_epoch=2", "arch_steps_per_epoch=2",
                                                     "warmup_epochs=1", "prune_z=1", "learn_topology=false"]))
    run.fit()
    ev = run.strategy.evidence()
    assert all(float(v.abs().max()) == 0.0 for k, v in ev.items() if k.startswith("beta."))
    assert float(ev["alpha.normal"].abs().max()) > 0
