"""Topology enumeration, sampling, straight-through gates, derive and hard pruning."""

import pytest
import torch

from atldas.arch import CELL_TYPES, ArchParams
from atldas.ops import SEARCH_PRIMITIVES
from atldas.topology import CellTopology


def test_input_set_counts_match_algorithm_md():
    assert CellTopology(k_min=2, k_max=2).num_sets() == (1, 3, 6, 10)  # 20 logits per cell type
    assert sum(CellTopology(k_min=1, k_max=3).num_sets()) == 49  # 3 + 7 + 14 + 25
    assert CellTopology().num_edges == 14


def test_edge_probs_are_set_marginals():
    arch = ArchParams(topology=CellTopology(k_min=1, k_max=3), ops=SEARCH_PRIMITIVES)
    with torch.no_grad():
        for p in arch.beta.values():
            p.normal_()
    pi = arch.edge_probs("normal")
    topo = arch.topology
    for e, (i, j) in enumerate(topo.edges):
        q = arch.set_probs("normal", j)
        expect = sum(float(q[k].detach()) for k, s in enumerate(topo.input_sets[j]) if i in s)
        assert abs(float(pi[e].detach()) - expect) < 1e-6


def test_sampled_gates_are_exactly_one_and_carry_gradient():
    arch = ArchParams(topology=CellTopology(), ops=SEARCH_PRIMITIVES)
    child = arch.sample(tau=0.7, grad=True, generator=torch.Generator().manual_seed(3))
    gates = [g for t in CELL_TYPES for g in child.set_gates[t]] + \
            [g for t in CELL_TYPES for g in child.op_gates[t].values()]
    assert all(float(g.detach()) == 1.0 for g in gates)
    sum(gates).backward()
    assert arch.alpha["normal"].grad.abs().sum() > 0
    assert arch.beta["normal_3"].grad.abs().sum() > 0


def test_sampling_follows_the_policy():
    arch = ArchParams(topology=CellTopology(), ops=SEARCH_PRIMITIVES)
    with torch.no_grad():
        arch.beta["normal_3"].copy_(torch.log(torch.tensor([0.5] + [0.5 / 9] * 9)))
    gen = torch.Generator().manual_seed(0)
    n = 2000
    hits = sum(arch.sample(generator=gen).sets["normal"][3] == 0 for _ in range(n))
    assert abs(hits / n - 0.5) < 0.04
    # epsilon = 1: uniform over the 10 sets whatever the logits
    hits = sum(arch.sample(epsilon=1.0, generator=gen).sets["normal"][3] == 0 for _ in range(n))
    assert abs(hits / n - 0.1) < 0.03


def test_derive_takes_most_probable_set_then_op_with_low_index_ties():
    arch = ArchParams(topology=CellTopology(), ops=SEARCH_PRIMITIVES, init_std=0.0)
    child = arch.argmax()
    # all ties: the first set (sources 0, 1) and the first op everywhere
    assert child.sets["normal"] == (0, 0, 0, 0)
    assert set(child.ops["normal"].values()) == {0}
    with torch.no_grad():
        arch.beta["reduce_2"][4] = 3.0
        arch.alpha["reduce"][arch.topology.edge_index[(3, 2)], 5] = 2.0
    child = arch.argmax()
    assert arch.topology.input_sets[2][child.sets["reduce"][2]] == (1, 3)
    assert child.ops["reduce"][arch.topology.edge_index[(3, 2)]] == 5


def test_prune_keeps_the_best_and_records_events():
    arch = ArchParams(topology=CellTopology(), ops=SEARCH_PRIMITIVES, blocks={"head": ("a", "b", "c")})
    with torch.no_grad():
        arch.beta["normal_3"][7] = 6.0
        arch.gamma["head"][1] = 5.0
    assert arch.prune(ratio=0.3) == []  # one check is evidence of nothing (the default patience: 2, as the strategy's)
    events = arch.prune(ratio=0.3)
    groups = {e["group"] for e in events}
    assert "normal/node3/sets" in groups and "block/head" in groups
    assert int(arch.set_mask("normal", 3).sum()) == 1 and bool(arch.set_mask("normal", 3)[7])
    assert arch.decided()["block/head"]
    # pruned candidates are never sampled again
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        c = arch.sample(epsilon=1.0, generator=gen)
        assert c.sets["normal"][3] == 7 and c.blocks["head"] == 1


def test_arch_stays_on_the_cpu_when_the_supernet_moves():
    from atldas.run import bind_space, make_search_config
    space = bind_space(make_search_config(space="tiny"))
    net = space.build_supernet(ops=space.search_ops(with_none=False))
    net.to("meta")  # any device but the CPU: the weights go, the policy stays
    assert {p.device.type for p in net.arch.parameters()} | {b.device.type for b in net.arch.buffers()} == {"cpu"}
    assert {p.device.type for p in net.weight_parameters()} == {"meta"}
    net.arch.double()  # dtype conversions still apply
    assert net.arch.alpha["normal"].dtype == torch.float64


def _differences(a, b):
    """The decisions in which two children differ: ('set', t, j), ('op', t, e) or ('block', g)."""
    out = [("set", t, j) for t in CELL_TYPES for j, (x, y) in enumerate(zip(a.sets[t], b.sets[t])) if x != y]
    out += [("op", t, e) for t in CELL_TYPES for e in a.ops[t] if e in b.ops[t] and a.ops[t][e] != b.ops[t][e]]
    return out + [("block", g) for g in a.blocks if a.blocks[g] != b.blocks[g]]


def test_mutate_redraws_one_decision_from_the_policy_and_keeps_the_child_valid():
    arch = ArchParams(topology=CellTopology(k_min=1, k_max=3), ops=SEARCH_PRIMITIVES,
                      blocks={"head": ("a", "b", "c")})
    topo = arch.topology
    gen = torch.Generator().manual_seed(0)
    parent = arch.sample(generator=torch.Generator().manual_seed(1))
    kinds = set()
    for _ in range(300):
        child = arch.mutate(parent, generator=gen)
        diff = _differences(parent, child)
        assert len(diff) <= 1  # one decision (or none, where the draw repeated the old value)
        for t in CELL_TYPES:  # the ops are exactly those of the chosen sets' edges
            used = {topo.edge_index[(i, j)] for j, s in enumerate(child.sets[t]) for i in topo.input_sets[j][s]}
            assert set(child.ops[t]) == used
            if diff and diff[0][:2] == ("set", t):  # a new set keeps the ops of the edges it shares
                assert all(child.ops[t][e] == o for e, o in parent.ops[t].items() if e in used)
        kinds.update(d[0] for d in diff)
    assert kinds == {"set", "op", "block"}
    assert parent.key() == arch.sample(generator=torch.Generator().manual_seed(1)).key()  # parent untouched
    with torch.no_grad():  # the redrawn op follows the policy: a certain op is always the new one
        arch.alpha["normal"].fill_(-30.0)
        arch.alpha["normal"][:, 2] = 30.0
    ops = [o for _ in range(200) for o in [arch.mutate(parent, generator=gen)] if _differences(parent, o)
           and _differences(parent, o)[0][:2] == ("op", "normal")]
    assert ops and all(o.ops["normal"][_differences(parent, o)[0][2]] == 2 for o in ops)


def _draw_before_numpy(logits, mask, *, epsilon, generator):
    """ArchParams._draw without gradient as it was before the NumPy argmax (commit 138584f)."""
    u = torch.rand((), generator=generator).item()
    gumbel = -torch.empty_like(logits).exponential_(generator=generator).log()
    masked = logits.masked_fill(~mask, float("-inf"))
    if u < epsilon:
        active = mask.nonzero().flatten()
        return int(active[torch.randint(len(active), (), generator=generator)])
    return int(torch.argmax(masked.detach() + gumbel))


def test_draws_pick_what_the_torch_draws_picked_from_the_same_random_numbers(monkeypatch):
    # float32 and float64, every epsilon branch, pruned candidates, real ties (two active +inf logits:
    # the noise cannot break them, the first wins); the generator ends in the same state
    arch = ArchParams(topology=CellTopology(), ops=SEARCH_PRIMITIVES)
    gen = torch.Generator().manual_seed(0)
    for k in range(600):
        dtype = (torch.float32, torch.float64)[k % 2]
        logits = (torch.randn(8, generator=gen) * [0.0, 1.0, 3.0, 30.0][k % 4]).to(dtype)
        mask = torch.rand(8, generator=gen) < 0.6
        mask[k % 8] = True
        if k % 5 == 0:
            logits[[k % 8, (k + 3) % 8]] = float("inf")
            mask[(k + 3) % 8] = True
        epsilon = (0.0, 0.5, 1.0)[k % 3]
        seed = int(torch.randint(1 << 30, (), generator=gen))
        g_old, g_new = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        old = _draw_before_numpy(logits, mask, epsilon=epsilon, generator=g_old)
        with monkeypatch.context() as m:  # the gradient-free draw takes no torch argmax (it is NumPy's)
            m.setattr(torch, "argmax", None)
            new, gate = arch._draw(logits, mask, tau=1.0, epsilon=epsilon, grad=False, generator=g_new)
        assert new == old and bool(mask[new]) and gate is None
        assert torch.equal(g_old.get_state(), g_new.get_state())
        if k % 5 == 0 and epsilon == 0.0:
            assert new == min(k % 8, (k + 3) % 8)
        gated, gate = arch._draw(logits.clone().requires_grad_(), mask, tau=1.0, epsilon=epsilon, grad=True,
                                 generator=torch.Generator().manual_seed(seed))
        assert gated == old and (k % 5 == 0 or float(gate.detach()) == 1.0)  # infinite logits: no finite gate


def _random_space_arch(seed: int):
    """The tiny matting space's policy (cells and blocks) with random logits and some candidates pruned."""
    from atldas.run import bind_space, make_search_config

    space = bind_space(make_search_config(space="tiny"))
    torch.manual_seed(seed)
    arch = space.new_arch()
    with torch.no_grad():
        for p in arch.arch_parameters():
            p.normal_(0, 1.5)
        for t in CELL_TYPES:
            arch.op_mask(t)[:, 1] = False  # one op gone everywhere
            arch.set_mask(t, arch.topology.nodes - 1)[0] = False
        g = next(iter(arch.block_names))
        arch.block_mask(g)[0] = False
    return arch


def test_log_prob_is_the_sum_of_each_choices_masked_log_probability():
    """The REINFORCE estimator's log P(child): a cell type read with another's logits (the reduce ops got
    no task gradient), or set 0's probability for whatever set was drawn, still looked plausible."""
    arch = _random_space_arch(0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        child = arch.sample(generator=gen)
        expect = 0.0
        with torch.no_grad():
            for t in CELL_TYPES:
                probs = arch.op_probs(t)
                for j, s in enumerate(child.sets[t]):
                    expect += float(torch.log(arch.set_probs(t, j)[s]))
                for e, o in child.ops[t].items():
                    expect += float(torch.log(probs[e, o]))
            for g, b in child.blocks.items():
                expect += float(torch.log(arch.block_probs(g)[b]))
        lp = arch.log_prob(child)
        assert abs(float(lp.detach()) - expect) < 1e-4
        t, j = "reduce", arch.topology.nodes - 1
        s = child.sets[t][j]
        g_beta, g_alpha = torch.autograd.grad(lp, [arch.beta[f"{t}_{j}"], arch.alpha["reduce"]])
        q = arch.set_probs(t, j).detach()
        onehot = torch.zeros_like(q)
        onehot[s] = 1.0
        assert torch.allclose(g_beta, onehot - q, atol=1e-6)  # d log softmax_s / d beta
        for e, o in child.ops["reduce"].items():
            assert float(g_alpha[e, o]) > 0  # the drawn op's own logit gets a push


def test_argmax_and_draws_never_take_a_pruned_candidate():
    """After pruning the derive rule and the Monte-Carlo draws must skip masked candidates, even where
    their logits are the largest (Adam's momentum or weight decay can move a pruned logit)."""
    arch = _random_space_arch(2)
    with torch.no_grad():
        for t in CELL_TYPES:
            arch.alpha[t][:, 1] = 10.0  # the pruned op has the largest logit
            arch.beta[f"{t}_{arch.topology.nodes - 1}"][0] = 10.0
        g = next(iter(arch.block_names))
        arch.gamma[g][0] = 10.0
    child = arch.argmax()
    for t in CELL_TYPES:
        assert 1 not in child.ops[t].values()
        assert child.sets[t][-1] != 0
    assert child.blocks[g] != 0
    many = arch.sample_many(300, generator=torch.Generator().manual_seed(0))
    for t in CELL_TYPES:
        assert not bool((many[f"ops/{t}"] == 1).any())
        assert not bool((many[f"sets/{t}"][:, -1] == 0).any())
    assert not bool((many[f"blocks/{g}"] == 0).any())


def test_prune_drops_an_improbable_op_on_an_edge_in_use():
    arch = ArchParams(topology=CellTopology(), ops=SEARCH_PRIMITIVES, init_std=0.0)
    e = arch.topology.edge_index[(0, 2)]  # node 0's only input set uses sources 0 and 1
    with torch.no_grad():
        arch.alpha["normal"][e, 3] = -5.0
    events = arch.prune(ratio=0.3, patience=1)
    assert not bool(arch.op_mask("normal")[e, 3]) and bool(arch.op_mask("normal")[e, 2])
    assert any(ev["group"] == "normal/edge0->2/ops" and SEARCH_PRIMITIVES[3] in ev["dropped"] for ev in events)


@pytest.mark.parametrize("tau", [1.0, 0.4])
def test_the_straight_through_gate_has_the_gradient_of_the_gumbel_softmax_weight(tau):
    """gate = 1 + soft[idx] - stop_grad(soft[idx]) with soft = softmax((masked logits + gumbel) / tau):
    its gradient is that of the drawn candidate's relaxed weight, zero on pruned candidates."""
    arch = ArchParams(topology=CellTopology(), ops=SEARCH_PRIMITIVES)
    logits = torch.tensor([0.3, -1.2, 2.0, 0.0, 0.7, -0.4, 1.1, 0.5], requires_grad=True)
    mask = torch.tensor([True, True, False, True, True, False, True, True])
    for seed in range(5):
        idx, gate = arch._draw(logits, mask, tau=tau, epsilon=0.0, grad=True,
                               generator=torch.Generator().manual_seed(seed))
        (grad,) = torch.autograd.grad(gate, logits)
        g = torch.Generator().manual_seed(seed)  # the draw's random numbers: a uniform, then the Gumbel noise
        torch.rand((), generator=g)
        gumbel = -torch.empty(8).exponential_(generator=g).log()
        z = torch.where(mask, logits.detach() + gumbel, torch.tensor(float("-inf")))
        soft = (z / tau).softmax(-1)
        assert idx == int(z.argmax()) and float(gate.detach()) == 1.0
        expected = soft[idx] * ((torch.arange(8) == idx).float() - soft) / tau  # d soft[idx] / d logits
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)
        assert torch.all(grad[~mask] == 0) and grad[idx] > 0


def test_an_edge_no_active_input_set_takes_is_unused_and_its_ops_are_not_pruned():
    arch = ArchParams(topology=CellTopology(), ops=SEARCH_PRIMITIVES)
    topo = arch.topology
    j = 2
    e = topo.edge_index[(0, j)]
    assert arch.edge_used("normal", e)
    with torch.no_grad():
        arch.set_mask("normal", j).copy_(torch.tensor([0 not in s for s in topo.input_sets[j]]))
        arch.alpha["normal"][e].copy_(torch.linspace(-30, 0, len(SEARCH_PRIMITIVES)))  # all but one far below
        arch.alpha["reduce"][e].copy_(torch.linspace(-30, 0, len(SEARCH_PRIMITIVES)))
    assert not arch.edge_used("normal", e) and arch.edge_used("reduce", e)
    assert arch.edge_used("normal", topo.edge_index[(1, j)])
    arch.prune(ratio=0.3, patience=1)
    assert bool(arch.op_mask("normal")[e].all())  # not decided on while no input set can take it
    assert int(arch.op_mask("reduce")[e].sum()) < len(SEARCH_PRIMITIVES)


def test_pruning_an_input_set_that_leaves_an_edge_unused_reports_the_edge():
    arch = ArchParams(topology=CellTopology(), ops=SEARCH_PRIMITIVES)
    topo = arch.topology
    j = 2
    keep = [k for k, s in enumerate(topo.input_sets[j]) if 0 not in s][0]
    before = sum(arch.edge_used("normal", e) for e in range(len(topo.edges)))
    with torch.no_grad():
        arch.beta[f"normal_{j}"].fill_(-30.0)
        arch.beta[f"normal_{j}"][keep] = 0.0  # every other set of node 2 far below the bar: one set left
    events = arch.prune(ratio=0.3, patience=1)
    edges = [ev for ev in events if ev["group"] == "normal/edges"]
    gone = [f"{i}->{jj}" for e, (i, jj) in enumerate(topo.edges) if not arch.edge_used("normal", e)]
    assert gone and len(edges) == 1 and edges[0]["unused"] == gone
    assert edges[0]["left"] == before - len(gone)
    assert not [ev for ev in events if ev["group"] == "reduce/edges"]  # the reduction cell lost no set
