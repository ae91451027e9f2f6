"""Cost tables: exact against torch's counter, expected cost against Monte Carlo, budgets."""

import pytest
import torch

from atldas.config import parse_amount
from atldas.cost import Budget, cost_table, dual_ascent
from atldas.errors import ConfigError
from atldas.run import Run, bind_space, make_search_config


@pytest.fixture(scope="module")
def tiny():
    space = bind_space(make_search_config(space="tiny"))
    torch.manual_seed(0)
    net = space.build_supernet(ops=space.search_ops(with_none=False))
    return space, net


@pytest.mark.parametrize("metric", ["macs", "params"])
def test_table_equals_counter_for_random_children(tiny, metric):
    space, net = tiny
    table = cost_table(space, net.arch, metric=metric)
    gen = torch.Generator().manual_seed(5)
    for _ in range(4):
        child = net.arch.sample(epsilon=1.0, generator=gen)
        genotype = space.child_to_genotype(net.arch, child)
        assert table.of_child(child) == space.measure(genotype, metric=metric)


@pytest.mark.parametrize("k", [(2, 2), (1, 3)])
def test_expected_cost_matches_monte_carlo(k):
    space = bind_space(make_search_config(space="tiny", sets=[f"k_min={k[0]}", f"k_max={k[1]}"]))
    torch.manual_seed(1)
    net = space.build_supernet(ops=space.search_ops(with_none=False))
    with torch.no_grad():  # a non-uniform policy
        for p in net.arch.parameters():
            p.normal_(0.0, 1.0)
    table = cost_table(space, net.arch, metric="macs")
    gen = torch.Generator().manual_seed(2)
    n = 50_000  # per-child sd is about 55 % of the mean here: the mean's sd is about 0.25 %, a quarter of the bound
    mc = float(table.of_samples(net.arch, net.arch.sample_many(n, generator=gen)).mean())
    with torch.no_grad():
        expected = float(table.expected(net.arch))
    assert abs(mc - expected) / expected < 0.01
    # the batched draws are exact costs of real children: spot-check against of_child
    few = net.arch.sample_many(5, generator=gen)
    costs = table.of_samples(net.arch, few)
    for r in range(5):
        assert float(costs[r]) == table.of_child(net.arch.child_at(few, r))


def test_expected_cost_is_differentiable(tiny):
    space, net = tiny
    table = cost_table(space, net.arch, metric="macs")
    table.expected(net.arch).backward()
    assert net.arch.alpha["normal"].grad.abs().sum() > 0
    assert net.arch.beta["normal_3"].grad.abs().sum() > 0
    assert net.arch.gamma["head"].grad.abs().sum() > 0


def test_cheapest_is_a_lower_bound(tiny):
    space, net = tiny
    table = cost_table(space, net.arch, metric="macs")
    cheapest, child = table.cheapest(net.arch)
    assert cheapest == table.of_child(child)
    gen = torch.Generator().manual_seed(9)
    assert all(table.of_child(net.arch.sample(epsilon=1.0, generator=gen)) >= cheapest for _ in range(200))


def test_matting_table_reproduces_cheapmatting_macs():
    """The default matting space's table, applied to the released genotype and blocks, gives the
    released network's 38.594 G MACs at 1024x1024 (algorithm.md's breakdown)."""
    from atldas.models.cheapmatting import ATLDAS_CIFAR100

    space = bind_space(make_search_config(space="matting"))
    net = space.build_supernet(ops=space.search_ops(with_none=False))
    table = cost_table(space, net.arch, metric="macs")
    g = ATLDAS_CIFAR100.replace(choices={**{f"decoder{i}": "bottleneck" for i in range(4)}, "head": "conv3x3"})
    child = space.genotype_to_child(net.arch, g)
    # the released network has one unused PPM conv (no MACs), so MACs agree exactly
    assert round(table.of_child(child) / 1e9, 3) == 38.594


def test_budget_forms_and_dual_ascent():
    e = torch.tensor(30.0, requires_grad=True)
    task = torch.tensor(1.0)
    # hinge and abs with the aim at the target itself (aim=1): the penalties on E/T - 1
    hinge = dict(form="hinge", aim=1.0)
    assert float(Budget(metric="macs", target=20.0, **hinge).apply(task, e, 2.0).detach()) == pytest.approx(1.0 + 2.0 * 0.5)
    assert float(Budget(metric="macs", target=40.0, **hinge).apply(task, e, 2.0).detach()) == pytest.approx(1.0)
    assert float(Budget(metric="macs", target=40.0, form="abs", aim=1.0).apply(task, e, 2.0).detach()) == pytest.approx(1.5)
    # the default: a Lagrange multiplier on E/T - aim (aim 0.95), which may also reward spending
    assert Budget(metric="macs", target=20.0).form == "lagrange"
    assert float(Budget(metric="macs", target=20.0).apply(task, e, 2.0).detach()) == pytest.approx(1.0 + 2.0 * 0.55)
    assert float(Budget(metric="macs", target=40.0).apply(task, e, 2.0).detach()) == pytest.approx(1.0 - 2.0 * 0.2)
    assert dual_ascent(1.0, cost=30.0, target=20.0, lr=1.0) == pytest.approx(1.5)
    assert dual_ascent(0.1, cost=10.0, target=20.0, lr=1.0) == 0.0
    assert dual_ascent(0.1, cost=10.0, target=20.0, lr=1.0, low=-100.0) == pytest.approx(-0.4)  # lagrange
    with pytest.raises(ConfigError):
        Budget(metric="flops", target=1.0)
    assert parse_amount("8G") == 8e9 and parse_amount("2M") == 2e6 and parse_amount("1.5e3") == 1500.0
    with pytest.raises(ConfigError):
        parse_amount("eight")


def test_block_temperature_settles_the_blocks_in_the_expected_cost(tiny):
    """A low block temperature makes E[C] count the argmax block of each group (a coarse decision
    settled first), while the cells keep their own temperature."""
    space, net = tiny
    table = cost_table(space, net.arch, metric="macs")
    arch = net.arch
    with torch.no_grad():
        gen = torch.Generator().manual_seed(3)
        for p in arch.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        arch.gamma["head"][0] = arch.gamma["head"].max() + 0.05  # a near tie, decided by 0.05
        same = float(table.expected(arch, temperature=0.5))
        assert float(table.expected(arch, temperature=0.5, block_temperature=0.5)) == same
        settled = float(table.expected(arch, temperature=0.5, block_temperature=1e-3))
        cells = float(table.expected(arch, temperature=0.5)) - sum(
            float((arch.block_probs(g, 0.5).double() * c).sum()) for g, c in table.blocks.items())
        argmax_blocks = sum(float(c[int(arch.block_probs(g).argmax())]) for g, c in table.blocks.items())
    assert settled == pytest.approx(cells + argmax_blocks, rel=1e-9)
    assert settled != pytest.approx(same, rel=1e-3)


def test_the_budget_carries_its_block_temperature():
    cfg = make_search_config(space="tiny", target_macs=1e9)
    assert cfg.budget.build().block_temperature == cfg.budget.block_temperature < cfg.budget.temperature
    with pytest.raises(ConfigError, match="block_temperature must be in"):
        make_search_config(space="tiny", target_macs=1e9, sets=["block_temperature=0"]).budget.build()
    # a search anneals both from 1 after the warm-up, the blocks to the lower value
    cfg = make_search_config(space="tiny", target_macs=12e6, epochs=3, warmup_epochs=1, sets=[
        "steps_per_epoch=2", "arch_steps_per_epoch=2", "tensorboard=false", "progress=false", "plots=false"])
    rows = []
    Run(cfg).fit(callback=rows.append)
    last = rows[-1]
    assert last["budget/block_temperature"] < last["budget/temperature"] < 1.0


def test_none_is_not_counted_as_free_in_the_expected_cost():
    """DARTS/GDAS supernets hold ``none``, which derive never keeps: E[C] is over the other ops, so a
    budget cannot be met by raising ``none`` while the derived network stays as costly (the cells' E[C]
    fell 8x here). A large lead of ``none`` at the annealed temperature leaves E[C] and its gradient
    finite and the same (renormalised float32 probabilities gave NaN gradients from a lead of 8 at 0.1)."""
    from atldas.strategies import _top2_child

    space = bind_space(make_search_config(space="tiny"))
    torch.manual_seed(0)
    net = space.build_supernet(ops=space.search_ops(with_none=True))
    arch, k = net.arch, net.arch.op_names.index("none")
    table = cost_table(space, arch, metric="macs")
    with torch.no_grad():
        for p in arch.parameters():
            p.normal_(0.0, 1.0)
    e0 = table.expected(arch)
    e0.backward()
    for t in ("normal", "reduce"):
        assert float(arch.alpha[t].grad[:, k].abs().max()) < 1e-9 * float(e0.detach())
    derived = table.of_child(_top2_child(net))
    with torch.no_grad():
        for t in ("normal", "reduce"):
            arch.alpha[t][:, k] += 5.0
    assert float(table.expected(arch).detach()) == pytest.approx(float(e0.detach()), rel=1e-6)  # float32 softmax
    assert table.of_child(_top2_child(net)) == derived
    arch.zero_grad()
    for lead in (0.0, 8.0, 30.0):
        with torch.no_grad():
            for t in ("normal", "reduce"):
                arch.alpha[t][:, k] = arch.alpha[t].max() + lead
        e = table.expected(arch, temperature=0.1)
        e.backward()
        if lead == 0.0:
            e_low = float(e.detach())
        assert float(e.detach()) == pytest.approx(e_low, rel=1e-12) and all(
            bool(torch.isfinite(p.grad).all()) for p in arch.parameters() if p.grad is not None), lead
        arch.zero_grad()
    # the mean over the other ops' distribution (renormalised without none), by hand
    manual = float(table.base)
    with torch.no_grad():
        for t in ("normal", "reduce"):
            q = arch.op_probs(t).double()
            q[:, k] = 0.0
            q = q / q.sum(-1, keepdim=True)
            manual += float((arch.edge_probs(t).double() * (q * table.cells[t]).sum(-1)).sum())
        manual += sum(float((arch.block_probs(g).double() * c).sum()) for g, c in table.blocks.items())
    assert float(table.expected(arch).detach()) == pytest.approx(manual, rel=1e-6)  # by hand in float32


def test_abs_is_two_sided_and_mult_is_logged_once():
    """``abs``: lambda grows while the cost is off the aim on either side (it fell to 0 under the aim,
    a hinge); ``mult``: the arch loss is L * (r/a)^b, not twice that, with the same gradients."""
    b = Budget(metric="macs", target=100.0, form="abs", aim=1.0, lam_lr=1.0)
    assert b.dual_step(1.0, 80.0, steps_per_epoch=1) == pytest.approx(1.2)  # 20 % under: up, not down
    assert b.dual_step(1.0, 130.0, steps_per_epoch=1) == pytest.approx(1.3)
    assert b.dual_step(1.0, 100.0, steps_per_epoch=1) == pytest.approx(1.0)
    m = Budget(metric="macs", target=20.0, form="mult", aim=1.0)
    e = torch.tensor(30.0, requires_grad=True)
    w = torch.tensor(2.0, requires_grad=True)  # the task loss L = 3 w, a function of a weight
    total = m.apply(3.0 * w, e, 0.0)
    total.backward()
    s = 1.5 ** m.exponent
    assert float(total.detach()) == pytest.approx(6.0 * s)
    assert float(w.grad) == pytest.approx(3.0 * s)
    assert float(e.grad) == pytest.approx(6.0 * m.exponent * 1.5 ** (m.exponent - 1) / 20.0)


def test_the_multiplier_moves_by_the_arch_steps_that_run(monkeypatch):
    """More arch steps asked for than weight steps: one runs after each weight step, and each dual step
    is lam_lr / (the steps that run), so lambda moves lam_lr per epoch (it moved 2/6 of it)."""
    seen = []
    real = Budget.dual_step

    def spy(self, lam, expected, *, steps_per_epoch):
        seen.append(steps_per_epoch)
        return real(self, lam, expected, steps_per_epoch=steps_per_epoch)

    monkeypatch.setattr(Budget, "dual_step", spy)
    run = Run(make_search_config(space="tiny", sets=["epochs=2", "warmup_epochs=1", "steps_per_epoch=2",
                                                     "arch_steps_per_epoch=6", "target_macs=1G", "tensorboard=false"]))
    run.fit()
    assert seen == [2, 2]


def test_repair_reaches_a_target_above_the_cheapest_child_after_pruning():
    """After pruning, a node's other input set saved cost only with a cheap op on its new edges, whose
    most probable op repair gave them: repair stopped above a target the cheapest child meets (in 14
    of 96 such repairs), and finalize said the budget could not be met."""
    from atldas.derive import repair

    stuck = 0
    for seed in range(6):
        torch.manual_seed(seed)
        space = bind_space(make_search_config(space="tiny"))
        arch = space.new_arch()
        with torch.no_grad():  # random logits and pruning masks (each keeps at least one candidate)
            for p in arch.arch_parameters():
                p.normal_(0, 2.0)
            for t in ("normal", "reduce"):
                m = torch.rand(arch.op_mask(t).shape) > 0.5
                m[torch.arange(m.shape[0]), torch.randint(m.shape[1], (m.shape[0],))] = True
                arch.op_mask(t).copy_(m)
                for j in range(arch.topology.nodes):
                    sm = arch.set_mask(t, j)
                    keep = torch.rand(sm.shape) > 0.5
                    keep[torch.randint(len(sm), ())] = True
                    sm.copy_(keep)
        for metric in ("params", "macs"):
            table = cost_table(space, arch, metric=metric)
            low, _ = table.cheapest(arch)
            child = arch.sample(generator=torch.Generator().manual_seed(seed))
            for target in (low, low * 1.02):
                fixed, _ = repair(arch, child, table, target=target)
                stuck += table.of_child(fixed) > target
    assert stuck == 0


def test_repair_takes_the_swap_that_loses_the_least_log_probability_per_cost_saved():
    """Every budgeted search ends in repair, and a repair that took the worst swap (``>`` for ``<``) still
    met the target: check its first swap against every single swap that saves cost."""
    from atldas.derive import _moves, repair

    space = bind_space(make_search_config(space="tiny"))
    checked = 0
    for seed in range(3):
        torch.manual_seed(seed)
        arch = space.new_arch()
        with torch.no_grad():
            for p in arch.arch_parameters():
                p.normal_(0, 2.0)
        table = cost_table(space, arch, metric="macs")
        child = arch.argmax()
        with torch.no_grad():
            cost, logp = table.of_child(child), float(arch.log_prob(child))
            scored = [((logp - float(arch.log_prob(m))) / (cost - table.of_child(m)), table.of_child(m))
                      for m in _moves(arch, child) if table.of_child(m) < cost]
        best_score, best_cost = min(scored)
        worst_score, _ = max(scored)
        if best_score == worst_score:
            continue
        _, steps = repair(arch, child, table, target=cost - 1)  # one swap is enough
        assert len(steps) == 1
        first = steps[0]
        assert (logp - first["log_prob"]) / (cost - first["cost"]) == pytest.approx(best_score, rel=1e-9)
        checked += 1
    assert checked >= 2


def test_finalize_records_a_budget_that_cannot_be_met(caplog):
    """A target below the cheapest child: the cost record says infeasible, and a warning says so."""
    from atldas.derive import finalize

    space = bind_space(make_search_config(space="tiny"))
    arch = space.new_arch()
    table = cost_table(space, arch, metric="macs")
    low, _ = table.cheapest(arch)
    budget = Budget(metric="macs", target=low * 0.5)
    with caplog.at_level("WARNING", logger="atldas"):
        g = finalize(space=space, arch=arch, child=arch.argmax(), table=table, budget=budget, provenance={})
    rec = g.cost["repair"]
    assert rec["feasible"] is False and rec["after"] > budget.target
    assert "cannot be met" in caplog.text
    ok = finalize(space=space, arch=arch, child=arch.argmax(), table=table, budget=Budget(metric="macs", target=low),
                  provenance={})
    assert ok.cost["repair"]["feasible"] is True


def test_budget_penalties_and_multiplier_steps_by_form():
    """The penalty of each form with ``rho > 0`` and an aim below 1, and the multiplier's dual steps
    (per arch step: ``lam_lr / steps_per_epoch``; hinge and abs never below 0), against hand-computed
    values: repair hid a wrong sign or step size, while the search no longer steered itself."""
    e = torch.tensor(12.0, dtype=torch.float64, requires_grad=True)  # r = 1.2, aim 0.8: r - a = 0.4
    lag = Budget(metric="macs", target=10.0, form="lagrange", aim=0.8, rho=20.0, lam_lr=2.0, lam_max=5.0)
    scale, pen = lag.penalty(e, 0.5)
    assert scale == 1.0 and float(pen.detach()) == pytest.approx(0.5 * 0.4 + 0.5 * 20.0 * 0.16)
    pen.backward()
    assert float(e.grad) == pytest.approx((0.5 + 20.0 * 0.4) / 10.0)  # d/dE: (lam + rho (r - a)) / target
    hinge = Budget(metric="macs", target=10.0, form="hinge", aim=0.8)
    assert float(hinge.penalty(torch.tensor(12.0), 2.0)[1]) == pytest.approx(0.8)
    assert float(hinge.penalty(torch.tensor(6.0), 2.0)[1]) == 0.0
    assert float(Budget(metric="macs", target=10.0, form="abs", aim=0.8).penalty(torch.tensor(6.0), 2.0)[1]) == \
        pytest.approx(0.4)
    mult = Budget(metric="macs", target=10.0, form="mult", aim=0.8, exponent=0.5)
    scale, pen = mult.penalty(torch.tensor(12.0), 0.0, task_value=3.0)
    assert scale == pytest.approx(1.5 ** 0.5) and float(pen) == 0.0  # (r / a) ** exponent; the value is all in scale
    # dual steps: 4 arch steps per epoch move lam by lam_lr / 4 * (E / (a T) - 1)
    assert lag.dual_step(0.5, 12.0, steps_per_epoch=4) == pytest.approx(0.5 + 0.5 * (12.0 / 8.0 - 1.0))
    assert lag.dual_step(0.0, 4.0, steps_per_epoch=1) == pytest.approx(-1.0)  # lagrange: below 0 spends more
    assert lag.dual_step(4.9, 80.0, steps_per_epoch=1) == 5.0  # within lam_max
    hinge = Budget(metric="macs", target=10.0, form="hinge", aim=0.8, lam_lr=2.0)
    assert hinge.dual_step(0.2, 4.0, steps_per_epoch=1) == 0.0  # hinge: never below 0
    assert hinge.dual_step(0.2, 12.0, steps_per_epoch=2) == pytest.approx(0.2 + 1.0 * 0.5)
    absf = Budget(metric="macs", target=10.0, form="abs", aim=0.8, lam_lr=2.0)
    assert absf.dual_step(0.2, 4.0, steps_per_epoch=2) == pytest.approx(0.2 + 1.0 * 0.5)  # |4/8 - 1|: grows either way
    assert mult.dual_step(0.7, 12.0, steps_per_epoch=1) == 0.7
