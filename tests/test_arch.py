"""Topology enumeration, sampling, straight-through gates, derive and hard pruning."""

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
