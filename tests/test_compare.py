"""experiments/compare.py: the random genotype matched in MACs, the summary and the table."""

import importlib.util
from pathlib import Path

import pytest

from atldas.genotype import Genotype

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare", ROOT / "experiments" / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_random_genotype_matches_the_searched_macs(compare, tmp_path):
    from atldas.ops import OPS
    from atldas.run import bind_space, make_search_config

    # a narrow target macro keeps the counts quick; random_genotype takes the macro from the genotype
    space = bind_space(make_search_config(space="matting", sets=["target_C=16", "target_layers=5"]))
    searched = Genotype.load(ROOT / "derived_models" / "darts_v2.json").replace(
        space={"name": "matting", "macro": {"C": 16, "layers": 5}})
    path = tmp_path / "searched.json"
    searched.save(path)
    target = space.measure(searched, metric="macs")
    out = compare.random_genotype(path, tmp_path, draws=3000, seed=0)
    g = Genotype.load(out)
    g.validate(ops=OPS.names())
    assert g.cost["macs"] == space.measure(g, metric="macs")  # the record is the counter's figure
    assert abs(g.cost["macs"] / target - 1) < 0.01
    assert g.hash() != searched.hash()
    assert g.provenance["random"]["matched_macs"] == target
    # reused, not redrawn, when the script runs again
    assert compare.random_genotype(path, tmp_path, draws=10, seed=1) == out
    assert Genotype.load(out).hash() == g.hash()


def test_summary_is_mean_and_half_range(compare):
    s = compare.summary([{"SAD": 1.0, "MSE": 0.01, "Grad": 2.0, "Conn": 1.0},
                         {"SAD": 3.0, "MSE": 0.03, "Grad": 2.0, "Conn": 2.0}])
    assert s["SAD"] == {"mean": 2.0, "spread": 1.0, "n": 2}
    assert s["MSE"]["mean"] == pytest.approx(0.02) and s["MSE"]["spread"] == pytest.approx(0.01)
    assert s["Grad"]["spread"] == 0.0
    table = compare.format_table({"recipe": {"latency_size": 512}, "models": {"x": {
        "label": "net x", "params": 2_500_000, "macs": 12_340_000_000, "latency_ms": 41.6, "summary": s}}})
    row = table.splitlines()[-1]
    assert row == "| net x | 2.50 M | 12.34 G | 42 ms | 2.00 ± 1.00 | 20.00 ± 10.00 | 2.00 ± 0.00 | 1.50 ± 0.50 |"


@pytest.mark.slow
def test_compare_end_to_end_and_reuse(compare, tmp_path, capsys):
    import json

    searched = tmp_path / "searched.json"
    Genotype.load(ROOT / "derived_models" / "darts_v2.json").replace(
        space={"name": "matting", "macro": {"C": 16, "layers": 5}}).save(searched)
    argv = ["--out", str(tmp_path / "cmp"), "--json", str(tmp_path / "r.json"), "--searched", str(searched),
            "--models", "searched", "random", "cnn_baseline_small", "--seeds", "0", "1", "--epochs", "1",
            "--steps-per-epoch", "2", "--random-draws", "500", "--test-count", "2", "--test-size", "64",
            "--latency-size", "64", "--latency-repeats", "2", "--threads", "1"]
    assert compare.main(argv) == 0
    table = capsys.readouterr().out
    r = json.loads((tmp_path / "r.json").read_text())
    assert list(r["models"]) == ["searched", "random", "cnn_baseline_small", "closed_form", "trivial"]
    for key in ("searched", "random", "cnn_baseline_small"):
        m = r["models"][key]
        assert len(m["per_seed"]) == 2 and m["params"] > 0 and m["macs"] > 0 and m["latency_ms"] > 0
        assert m["per_seed"][0] != m["per_seed"][1]  # the seeds train different networks
        assert (tmp_path / "cmp" / f"{key}-seed1" / "best.pt").is_file()
    assert abs(r["models"]["random"]["macs"] / r["models"]["searched"]["macs"] - 1) < 0.05
    assert "| atldas (searched) |" in table and "| closed_form" in table
    # a second run reuses every stage: same scores
    assert compare.main(argv + ["--no-closed-form"]) == 0
    again = json.loads((tmp_path / "r.json").read_text())
    assert again["models"]["searched"]["per_seed"] == r["models"]["searched"]["per_seed"]
