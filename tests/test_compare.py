"""experiments/compare.py: random genotypes matched in MACs, the summary, the percentile and the table."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from atldas.genotype import Genotype

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare", ROOT / "experiments" / "compare.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["compare"] = mod  # the worker processes find train_and_score by its module's name
    spec.loader.exec_module(mod)
    return mod


def _searched(tmp_path: Path) -> Path:
    # a narrow target macro keeps the counts quick; the random genotypes take the macro from the genotype
    searched = Genotype.load(ROOT / "derived_models" / "darts_v2.json").replace(
        space={"name": "matting", "macro": {"C": 16, "layers": 5}})
    path = tmp_path / "searched.json"
    searched.save(path)
    return path


def test_random_genotypes_match_the_searched_macs(compare, tmp_path):
    from atldas.ops import OPS
    from atldas.run import bind_space, make_search_config

    space = bind_space(make_search_config(space="matting", sets=["target_C=16", "target_layers=5"]))
    path = _searched(tmp_path)
    target = space.measure(Genotype.load(path), metric="macs")
    outs = compare.random_genotypes(path, tmp_path, n=3, match=0.02, draws=3000, seed=0)
    hashes = set()
    for out in outs:
        g = Genotype.load(out)
        g.validate(ops=OPS.names())
        assert g.cost["macs"] == space.measure(g, metric="macs")  # the record is the counter's figure
        assert abs(g.cost["macs"] / target - 1) <= 0.02
        assert g.provenance["random"]["matched_macs"] == target
        hashes.add(g.hash())
    assert len(hashes) == 3 and Genotype.load(path).hash() not in hashes
    # reused, not redrawn, when the script runs again
    assert compare.random_genotypes(path, tmp_path, n=3, match=0.02, draws=10, seed=1) == outs
    # a searched genotype of another cost draws them again
    other = Genotype.load(path).replace(choices={**Genotype.load(path).choices, "head": "narrow"})
    other.save(tmp_path / "other.json")
    again = compare.random_genotypes(tmp_path / "other.json", tmp_path, n=3, match=0.02, draws=3000, seed=0)
    other_target = space.measure(other, metric="macs")
    assert other_target != target
    assert all(Genotype.load(o).provenance["random"]["matched_macs"] == other_target for o in again)


def test_summary_percentile_and_table(compare):
    s = compare.summary([{"SAD": 1.0, "MSE": 0.01, "Grad": 2.0, "Conn": 1.0},
                         {"SAD": 3.0, "MSE": 0.03, "Grad": 2.0, "Conn": 2.0}])
    assert s["SAD"]["mean"] == 2.0 and s["SAD"]["spread"] == 1.0 and s["SAD"]["n"] == 2
    assert s["SAD"]["std"] == pytest.approx(2 ** 0.5)
    assert s["Grad"]["std"] == 0.0
    assert compare.percentile(2.0, [1.0, 3.0, 4.0, 1.5]) == 50.0
    assert compare.percentile(0.5, [1.0, 3.0]) == 0.0
    table = compare.format_table({"models": {"x": {
        "label": "net x", "params": 2_500_000, "macs": 12_340_000_000, "summary": s, "percentile": 25.0}}})
    assert table.splitlines()[-1] == ("| net x | 2.50 M | 12.34 G | 2.000 ± 1.414 | 20.000 ± 14.142 | 2.000 ± 0.000 "
                                      "| 1.500 ± 0.707 | 25 |")


@pytest.mark.slow
def test_compare_end_to_end_and_reuse(compare, tmp_path, capsys):
    searched = _searched(tmp_path)
    argv = ["--out", str(tmp_path / "cmp"), "--json", str(tmp_path / "r.json"), "--searched", str(searched),
            "--no-random-strategy", "--random", "2", "--baselines", "cnn_baseline_tiny", "--seeds", "0", "1",
            "--epochs", "1", "--steps-per-epoch", "2", "--random-draws", "3000", "--test-count", "2",
            "--test-size", "64", "--workers", "1", "--threads", "1"]
    assert compare.main(argv) == 0
    table = capsys.readouterr().out
    r = json.loads((tmp_path / "r.json").read_text())
    assert list(r["models"]) == ["searched", "random-1", "random-2", "cnn_baseline_tiny", "trivial"]
    for key in ("searched", "random-1", "cnn_baseline_tiny"):
        m = r["models"][key]
        assert len(m["per_seed"]) == 2 and m["params"] > 0 and m["macs"] > 0
        assert m["per_seed"][0] != m["per_seed"][1]  # the seeds train different networks
        name = key if key == "cnn_baseline_tiny" else f"{key}-{Genotype.load(m['model']).hash()}"
        assert (tmp_path / "cmp" / f"{name}-seed1" / "best.pt").is_file()
    for key in ("searched", "random-1"):  # the genotypes travel in the result (select_matting.py reads them)
        assert Genotype.from_json(r["models"][key]["genotype"]).hash() == Genotype.load(r["models"][key]["model"]).hash()
    assert "genotype" not in r["models"]["cnn_baseline_tiny"]
    assert abs(r["models"]["random-1"]["macs"] / r["models"]["searched"]["macs"] - 1) < 0.02
    assert r["models"]["searched"]["percentile"] in (0.0, 50.0, 100.0)
    assert "| atldas (searched) |" in table
    # a second run reuses every stage: same scores
    assert compare.main(argv) == 0
    again = json.loads((tmp_path / "r.json").read_text())
    assert again["models"]["searched"]["per_seed"] == r["models"]["searched"]["per_seed"]


def test_a_retrain_folder_of_another_recipe_is_refused(compare, tmp_path):
    """A stored run is reused or resumed with its own recipe, so one trained with other flags is an
    error naming the field, not a silent reuse."""
    from atldas.errors import ConfigError

    run = tmp_path / "random-1-abc-seed0"
    job = {"run": str(run), "seed": 0, "epochs": 10, "steps_per_epoch": 30, "batch": 8, "crop": 96}
    compare.check_stored_recipe(job)  # nothing stored yet
    run.mkdir()
    (run / "config.yaml").write_text("model: r.json\nepochs: 10\nsteps_per_epoch: 30\nbatch_size: 8\ncrop: 96\n"
                                     "seed: 0\n")
    compare.check_stored_recipe(job)  # the same recipe: reused
    with pytest.raises(ConfigError, match="trained with batch_size=8, this comparison asks batch_size=16"):
        compare.check_stored_recipe({**job, "batch": 16})
    with pytest.raises(ConfigError, match="epochs=10, this comparison asks epochs=5"):
        compare.check_stored_recipe({**job, "epochs": 5})


def test_separation_tells_distinct_genotypes_from_seed_noise(compare, tmp_path, capsys):
    """ANOVA over the genotypes' seeds: means far apart against a small seed spread give ICC near 1;
    the same values shuffled across genotypes give none; baselines and single seeds are left out;
    ``--report`` prints a stored result without training."""
    def result(groups):
        models = {f"random-{k + 1}": {"per_seed": [{"SAD": v} for v in g]} for k, g in enumerate(groups)}
        models["cnn_baseline"] = {"per_seed": [{"SAD": 99.0}, {"SAD": 0.0}]}  # a baseline: not a genotype
        models["trivial"] = {"per_seed": [{"SAD": 3.0}]}
        return {"models": models}

    apart = [[2.0, 2.01, 1.99], [2.5, 2.51, 2.49], [3.0, 3.02, 2.98]]
    sep = compare.separation(result(apart))
    assert sep["genotypes"] == 3 and sep["seeds"] == 3 and sep["p"] < 1e-4 and sep["icc"] > 0.99
    mixed = [[2.0, 2.5, 3.0], [2.01, 2.51, 3.02], [1.99, 2.49, 2.98]]
    sep = compare.separation(result(mixed))
    assert sep["p"] > 0.9 and sep["icc"] < 0
    assert compare.separation(result([[2.0]])) is None
    full = result(apart)
    for k, m in full["models"].items():
        m["per_seed"] = [{"SAD": r["SAD"], "MSE": 0.1, "Grad": 1.0, "Conn": 1.0} for r in m["per_seed"]]
        m.update(label=k, model=None, params=0, macs=None, summary=compare.summary(m["per_seed"]))
    path = tmp_path / "r.json"
    path.write_text(json.dumps(full))
    assert compare.main(["--report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| random-1 |" in out
    assert "separation: one-way ANOVA of SAD over 3 genotypes x 3 seeds: F" in out
