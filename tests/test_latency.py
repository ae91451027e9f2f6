"""Latency tables (`atldas lut build`) and the latency CostTable, on the `tiny` space."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch

from atldas.arch import CELL_TYPES, ArchParams
from atldas.cli import main
from atldas.cost import cost_table
from atldas.errors import ConfigError, DataError
from atldas.latency import (FORMAT, block_key, build_lut, load_lut, measure_genotype, op_key, reference_genotype,
                            save_lut)
from atldas.run import bind_space, make_search_config
from atldas.topology import edge_geometry

MIN_RUN_TIME = 0.005  # seconds per entry: the tiny space's entries take microseconds


@pytest.fixture(scope="module")
def cfg():
    return make_search_config(space="tiny")


@pytest.fixture(scope="module")
def space(cfg):
    return bind_space(cfg)


def latency_table(space, *, arch, lut):
    return cost_table(space, arch, metric="latency_ms", lut=lut)


def _rebound(space, **knobs):
    return space.bind(dataclasses.replace(space.cfg, **knobs), io=space.io)


@pytest.fixture(scope="module")
def lut(space, cfg):
    return build_lut(space, min_run_time=MIN_RUN_TIME, progress=False)


def _arch(space, cfg, *, std: float = 0.0, seed: int = 0) -> ArchParams:
    torch.manual_seed(seed)
    return ArchParams(topology=space.topology, ops=space.search_ops(with_none=False),
                      blocks=space.block_names(), init_std=std)


def test_lut_has_every_candidate(space, cfg, lut):
    assert lut["format"] == FORMAT and lut["space"] == "tiny" and lut["input"] == [1, 6, 64, 64]
    assert json.loads(json.dumps(lut)) == lut  # plain JSON data
    topo = space.topology
    ops = space.search_ops(with_none=False)
    uses = 0
    for g in space.cell_geometry():
        for i, _ in topo.edges:
            for op in ops:
                assert op_key(op, *edge_geometry(g, i)) in lut["ops"]
                uses += 1
    assert len(lut["ops"]) < uses  # shared shapes are measured once
    for group, names in space.block_names().items():
        for name in names:
            assert block_key(group, name) in lut["blocks"]
    values = list(lut["ops"].values()) + list(lut["blocks"].values())
    assert all(math.isfinite(v) and v > 0 for v in values)
    ref = lut["reference"]
    assert lut["base_ms"] == pytest.approx(ref["whole_ms"] - ref["candidates_ms"])


def test_reduction_edge_geometry(space, cfg):
    g = next(g for g in space.cell_geometry() if g.reduction)
    assert edge_geometry(g, 0) == (g.C, g.H, g.W, 2)
    assert edge_geometry(g, 1) == (g.C, g.H, g.W, 2)
    assert edge_geometry(g, 2) == (g.C, (g.H + 1) // 2, (g.W + 1) // 2, 1)


def test_table_sums_lut_entries(space, cfg, lut):
    arch = _arch(space, cfg)
    table = latency_table(space, arch=arch, lut=lut)
    assert table.metric == "latency_ms" and table.base == lut["base_ms"]
    # the reference genotype's table cost is exactly its measured whole-network latency
    ref = reference_genotype(space)
    assert ref.hash() == lut["reference"]["hash"]
    child = space.genotype_to_child(arch, ref)
    assert table.of_child(child) == pytest.approx(lut["reference"]["whole_ms"], rel=1e-9)
    # each (edge, op) entry is the LUT entry summed over the cells of the type
    for t in CELL_TYPES:
        cells = [g for g in space.cell_geometry() if g.reduction == (t == "reduce")]
        for e, (i, _) in enumerate(arch.topology.edges):
            for o, op in enumerate(arch.op_names):
                want = sum(lut["ops"][op_key(op, *edge_geometry(g, i))] for g in cells)
                assert float(table.cells[t][e, o]) == pytest.approx(want, rel=1e-12)


def test_expected_matches_monte_carlo(space, cfg, lut):
    arch = _arch(space, cfg, std=1.0, seed=3)  # a far-from-uniform policy
    table = latency_table(space, arch=arch, lut=lut)
    with torch.no_grad():
        expected = float(table.expected(arch))
    gen = torch.Generator().manual_seed(0)
    costs = torch.tensor([table.of_child(arch.sample(generator=gen)) for _ in range(2000)], dtype=torch.float64)
    assert float(costs.mean()) == pytest.approx(expected, rel=0.01)
    # and the searched part alone (the base dominates on this tiny network), within 3 standard errors
    var = costs - table.base
    se = float(var.std()) / math.sqrt(len(var))
    assert abs(float(var.mean()) - (expected - table.base)) < 3 * se + 1e-9


def test_table_near_measured_latency(space, cfg, lut):
    # Latency is only approximately additive (caches, per-op framework overhead, node sums and concats
    # living in the base), and this machine may be shared, so only a loose band is asserted: it still
    # catches wrong units, missing or double-counted cells, and a broken base.
    arch = _arch(space, cfg)
    table = latency_table(space, arch=arch, lut=lut)
    child = arch.sample(generator=torch.Generator().manual_seed(1))
    genotype = space.child_to_genotype(arch, child)
    measured = measure_genotype(space, genotype, min_run_time=0.02)
    assert 0.3 <= table.of_child(child) / measured <= 3.0


def test_mismatched_lut_raises(space, cfg, lut):
    arch = _arch(space, cfg)
    with pytest.raises(ConfigError, match="atldas lut build"):
        latency_table(space, arch=arch, lut=None)
    other = dict(lut, space="matting")
    with pytest.raises(ConfigError, match="space 'matting'.*atldas lut build --space tiny"):
        latency_table(space, arch=arch, lut=other)
    with pytest.raises(ConfigError, match=r"input \[1, 6, 64, 64\].*--size 96"):
        latency_table(_rebound(space, input_size=96), arch=arch, lut=lut)
    with pytest.raises(ConfigError, match="target_C=16"):
        latency_table(_rebound(space, target_C=16), arch=arch, lut=lut)
    # the nodes change the target's fixed part (base_ms) and no op key: a table of 4 nodes was taken for 2
    with pytest.raises(ConfigError, match="'nodes': 4}, not .*'nodes': 2}.*--set nodes=2"):
        latency_table(_rebound(space, nodes=2), arch=arch, lut=lut)
    assert "--set nodes" not in str(pytest.raises(ConfigError, latency_table, _rebound(space, target_C=16),
                                                  arch=arch, lut=lut).value)
    older = copy.deepcopy(lut)  # written before the nodes were recorded: the space's default nodes
    del older["config"]["nodes"]
    assert latency_table(space, arch=arch, lut=older).base == latency_table(space, arch=arch, lut=lut).base
    missing = copy.deepcopy(lut)
    missing["ops"].pop(next(iter(missing["ops"])))
    with pytest.raises(ConfigError, match="no entry for op"):
        latency_table(space, arch=arch, lut=missing)
    with pytest.raises(ConfigError, match="not an atldas-lut/2"):
        latency_table(space, arch=arch, lut={"ops": {}})
    with pytest.raises(ConfigError) as info:
        latency_table(space, arch=arch, lut=other)
    assert "\n" not in str(info.value)  # one line


def test_save_load(tmp_path, lut):
    p = save_lut(lut, tmp_path / "sub" / "lut.json")
    assert load_lut(p) == lut
    assert not [f for f in p.parent.iterdir() if f.name.startswith(".")]  # no temp files left
    with pytest.raises(DataError, match="no such latency table"):
        load_lut(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not a JSON latency table"):
        load_lut(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(DataError, match="not an atldas-lut/2"):
        load_lut(tmp_path / "other.json")
    # hand-edited or truncated tables: one line each (KeyError, TypeError, ValueError tracebacks before, a
    # negative entry used as is, a NaN one failing epochs later with a hint about learning rates)
    op = next(iter(lut["ops"]))
    negative = json.loads(json.dumps(lut))
    negative["base_ms"] = -0.3  # lut build keeps a fixed part that came out negative (it warns): a valid table
    (tmp_path / "negative.json").write_text(json.dumps(negative))
    assert load_lut(tmp_path / "negative.json")["base_ms"] == -0.3
    # ... but one whose cheapest network comes out at 0 ms or less cannot tell small budgets: a 0.01 ms
    # budget was accepted and the genotype recorded a negative latency
    negative["base_ms"] = -1e6
    (tmp_path / "negative.json").write_text(json.dumps(negative))
    from atldas.run import Run, make_search_config

    cfg = make_search_config(space="tiny", sets=["target_latency_ms=0.01", f"lut={tmp_path / 'negative.json'}"])
    with pytest.raises(ConfigError, match="cannot tell budgets this small"):
        Run(cfg).fit()
    for change, expect in ((lambda t: t.pop("base_ms"), "base_ms is None"),
                           (lambda t: t.update(ops=None), "'ops' is NoneType"),
                           (lambda t: t.update(config="x"), "config is str"),
                           (lambda t: t["ops"].update({op: "abc"}), f"ops entry {op!r} is 'abc'"),
                           (lambda t: t["ops"].update({op: -1}), f"ops entry {op!r} is -1"),
                           (lambda t: t["blocks"].update({next(iter(t["blocks"])): float("nan")}), "is nan")):
        edited = json.loads(json.dumps(lut))
        change(edited)
        path = tmp_path / "edited.json"
        path.write_text(json.dumps(edited))
        with pytest.raises(DataError, match="not a valid latency table") as info:
            load_lut(path)
        assert expect in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_cli_lut_build(tmp_path, capsys):
    p = tmp_path / "lut.json"
    assert main(["lut", "build", "--space", "tiny", "--out", str(p), "--min-run-time", str(MIN_RUN_TIME),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "op shapes" in out and "base" in out and str(p) in out
    lut = load_lut(p)
    assert lut["space"] == "tiny" and lut["device"] == "cpu" and lut["threads"] == 1
    assert main(["lut", "build", "--space", "tiny", "--size", "8", "--out", str(tmp_path / "x.json")]) == 2
    capsys.readouterr()
    # were accepted and ignored; the last two (values no search takes) were refused as search values
    # so were the supernet's knobs (the table times the target network) and an unknown key
    for pair, what in (("device=cuda", "search setting"), ("threads=2", "search setting"), ("epochs=7", "search"),
                       ("batch_size=8", "data setting"), ("crop=96", "data setting"), ("epochs=0", "search"),
                       ("target_latency_ms=20", "search"), ("C=16", "knob of the supernet"),
                       ("layers=5", "knob of the supernet"), ("foo=3", "not a setting")):
        assert main(["lut", "build", "--space", "tiny", "--set", pair, "--out", str(tmp_path / "y.json")]) == 2
        err = capsys.readouterr().err
        assert f"--set {pair}: a table is of the space's target network" in err and what in err, err
    assert main(["lut", "build", "--space", "tiny", "--set", "input_size=128", "--size", "96", "--out",
                 str(tmp_path / "y.json")]) == 2  # --size won without a word
    assert "--size 96 and --set input_size=128 disagree" in capsys.readouterr().err
    assert not (tmp_path / "y.json").exists()


@pytest.mark.slow
def test_cli_search_with_latency_budget(tmp_path, space, cfg):
    p = tmp_path / "lut.json"
    assert main(["lut", "build", "--space", "tiny", "--out", str(p), "--min-run-time", str(MIN_RUN_TIME),
                 "--no-progress"]) == 0
    arch = _arch(space, cfg)
    table = latency_table(space, arch=arch, lut=load_lut(p))
    cheapest, _ = table.cheapest(arch)
    with torch.no_grad():
        target = cheapest + 0.5 * (float(table.expected(arch)) - cheapest)  # feasible, and binding
    out = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--epochs", "2", "--target-latency-ms", f"{target:.6f}",
                 "--lut", str(p), "--out", str(out), "--no-progress", "--set", "tensorboard=false"]) == 0
    cost = json.loads((out / "genotype.json").read_text())["cost"]
    assert cost["target"] == {"metric": "latency_ms", "value": pytest.approx(target, rel=1e-5)}
    assert cost["latency_ms"] is not None and cost["latency_ms"] <= target * (1 + 1e-9)
    assert cost["repair"]["metric"] == "latency_ms" and cost["repair"]["feasible"]
    rows = [json.loads(ln) for ln in (out / "history.jsonl").read_text().splitlines()]
    assert rows and all(r["cost/metric"] == "latency_ms" for r in rows)


def test_a_latency_table_without_a_latency_budget_is_warned_about(tmp_path, caplog, lut):
    import logging

    p = save_lut(lut, tmp_path / "lut.json")
    fast = ["--space", "tiny", "--epochs", "2", "--lut", str(p), "--no-progress", "--set", "tensorboard=false",
            "--set", "plots=false"]
    for extra, expect in (([], "has no budget"), (["--target-macs", "1G"], "has a macs budget")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="atldas"):
            assert main(["search", *fast, *extra, "--out", str(tmp_path / f"r{len(extra)}")]) == 0
        assert f"--lut {p} is read only for a latency budget" in caplog.text and expect in caplog.text, caplog.text
        assert caplog.text.count("is read only") == 1  # once, when the run starts (not on each Run.load)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atldas"):
        assert main(["search", *fast, "--target-latency-ms", "1000", "--out", str(tmp_path / "lat")]) == 0
    assert "--lut" not in caplog.text


def test_a_relative_lut_is_recorded_absolute_so_derive_works_from_elsewhere(tmp_path, monkeypatch, lut):
    """config.yaml kept `lut: lut.json` as typed: derive or --resume from another working directory
    failed ('no such latency table'), and the hint to rebuild it would have changed the costs."""
    import yaml

    save_lut(lut, tmp_path / "lut.json")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--epochs", "2", "--target-latency-ms", "1000", "--lut", "lut.json",
                 "--out", "run", "--no-progress", "--set", "tensorboard=false", "--set", "plots=false"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["budget"]["lut"] == str(tmp_path / "lut.json")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["derive", str(run), "--out", str(tmp_path / "g.json")]) == 0


def test_derive_with_stored_costs_needs_no_latency_table(tmp_path, caplog, lut):
    """`derive --stored-costs` built the costs of today's --lut first: a table moved away, or rebuilt so
    that the budget no longer fits, was refused although the stored costs were all it needed."""
    import logging

    p = save_lut(lut, tmp_path / "lut.json")
    run = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--epochs", "2", "--target-latency-ms", "1000", "--lut", str(p),
                 "--out", str(run), "--no-progress", "--set", "tensorboard=false", "--set", "plots=false"]) == 0
    p.rename(tmp_path / "moved.json")
    with caplog.at_level(logging.WARNING, logger="atldas"):
        assert main(["derive", str(run), "--stored-costs", "--out", str(tmp_path / "g.json")]) == 0
    assert "today's cannot be built" in caplog.text
    a, b = (json.loads(f.read_text()) for f in (run / "genotype.json", tmp_path / "g.json"))
    assert a["cells"] == b["cells"] and a["cost"] == b["cost"]


def test_none_is_never_the_cheapest_op(tmp_path, space, lut):
    """DARTS and GDAS search with `none`, which derive never keeps: under a latency table (where it is
    the only op at 0 ms) the cheapest architecture counted it, so a budget below every network derive can
    give was accepted and the search ran to its end to miss it."""
    from atldas.run import Run, make_search_config

    with_none = ArchParams(topology=space.topology, ops=space.search_ops(with_none=True), blocks=space.block_names())
    without = ArchParams(topology=space.topology, ops=space.search_ops(with_none=False), blocks=space.block_names())
    a, b = (cost_table(space, arch, metric="latency_ms", lut=lut) for arch in (with_none, without))
    (ca, child), (cb, _) = a.cheapest(with_none), b.cheapest(without)
    assert ca == pytest.approx(cb)
    none = with_none.op_names.index("none")
    assert all(o != none for ops in child.ops.values() for o in ops.values())
    path = save_lut(lut, tmp_path / "lut.json")
    for strategy in ("darts", "gdas"):
        with pytest.raises(ConfigError, match="below the cheapest architecture"):
            Run(make_search_config(space="tiny", strategy=strategy,
                                   sets=[f"target_latency_ms={0.999 * cb}", f"lut={path}"])).check_budget()
        Run(make_search_config(space="tiny", strategy=strategy,
                               sets=[f"target_latency_ms={1.001 * cb}", f"lut={path}"])).check_budget()


def test_a_latency_search_records_and_prints_its_table(tmp_path, capsys, lut):
    p = save_lut(lut, tmp_path / "lut.json")
    out = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--epochs", "2", "--target-latency-ms", "1000", "--lut", str(p),
                 "--out", str(out), "--no-progress", "--set", "tensorboard=false", "--set", "plots=false"]) == 0
    cost = json.loads((out / "genotype.json").read_text())["cost"]
    assert cost["latency_table"] == {"table": str(p), "device": "cpu", "device_name": lut["device_name"],
                                     "threads": lut["threads"], "input": lut["input"]}
    assert f"{cost['latency_ms']:.2f} ms" in capsys.readouterr().out  # the finish line names the latency
    # derive from the stored costs records the same (the table's source travels in cost_table.json)
    p.rename(tmp_path / "moved.json")
    assert main(["derive", str(out), "--out", str(tmp_path / "g.json")]) == 2
    err = capsys.readouterr().err
    assert "which is gone" in err and "--stored-costs" in err and err.count("\n") == 1
    assert main(["derive", str(out), "--stored-costs", "--out", str(tmp_path / "g.json")]) == 0
    assert json.loads((tmp_path / "g.json").read_text())["cost"] == cost


def test_hand_edited_sizes_and_huge_entries_are_refused_in_one_line(tmp_path, space, lut):
    edited = json.loads(json.dumps(lut))
    edited["input"] = 5
    (tmp_path / "input.json").write_text(json.dumps(edited))
    with pytest.raises(DataError, match="input is 5, not a list of positive sizes"):
        load_lut(tmp_path / "input.json")
    huge = json.loads(json.dumps(lut))
    huge["ops"] = {k: 1e308 for k in huge["ops"]}  # finite, but the network's sum overflows
    (tmp_path / "huge.json").write_text(json.dumps(huge))
    arch = ArchParams(topology=space.topology, ops=space.search_ops(with_none=False), blocks=space.block_names())
    with pytest.raises(ConfigError, match="entries sum to inf ms"):
        cost_table(space, arch, metric="latency_ms", lut=tmp_path / "huge.json")
