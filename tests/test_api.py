"""The public Python API: the README's example runs as written, models and ops and spaces register,
and the two bugs the re-layering fixed stay fixed (random-search derive, custom ops in the
DARTS/GDAS baselines)."""

from __future__ import annotations

import json
import logging
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import atldas
from atldas.cli import main
from atldas.cost import cost_table
from atldas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--space", "tiny", "--no-progress", "--set", "tensorboard=false", "--set", "plots=false"]


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- api-example -->\s*```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the README's Python API example is marked with <!-- api-example -->"
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    monkeypatch.chdir(tmp_path)
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:  # the example registers an op and a space: leave the registries as they were
        from search_spaces import SPACES

        for registry, name in ((atldas.OPS, "conv_3x3"), (SPACES, "tiny_conv")):
            if name in registry:
                registry.remove(name)
    out = capsys.readouterr().out.splitlines()
    assert (tmp_path / "tiny_genotype.json").is_file()
    assert out[0].endswith("(1, 1, 64, 64)")
    assert out[1].startswith("Genotype(normal=[")
    assert out[2] == "('none', 'skip_connect', 'sep_conv_3x3', 'conv_3x3')"


def test_random_strategy_derive_equals_the_search(tmp_path):
    """`atldas derive` of a random-search run writes the genotype the search wrote: both rank the same
    random children by held-out loss (before the fix derive took the first child unranked)."""
    out = tmp_path / "random"
    assert main(["search", *FAST, "--strategy", "random", "--epochs", "2", "--seed", "1", "--out", str(out)]) == 0
    assert main(["derive", str(out), "--out", str(tmp_path / "again.json")]) == 0
    searched = json.loads((out / "genotype.json").read_text())
    derived = json.loads((tmp_path / "again.json").read_text())
    assert (searched["cells"], searched.get("choices")) == (derived["cells"], derived.get("choices"))


@pytest.fixture
def custom_space():
    """A tiny matting space whose ops include a registered custom op."""
    from search_spaces import SPACES

    atldas.register_op("test_conv_3x3", lambda *, C_in, C_out, stride, affine: nn.Sequential(
        nn.ReLU(), nn.Conv2d(C_in, C_out, 3, stride, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine)),
        maps_channels=True)
    tiny = atldas.get_space("tiny")
    space = atldas.register_space(type(tiny)(name="test_tiny_conv", macro=tiny.macro, defaults=tiny.defaults,
                                             ops=("skip_connect", "avg_pool_3x3", "test_conv_3x3")))
    yield space
    atldas.OPS.remove("test_conv_3x3")
    SPACES.remove("test_tiny_conv")


def test_darts_and_gdas_search_the_spaces_own_ops(custom_space):
    """The soft-mixture baselines get the space's ops plus `none` (before the fix: the DARTS primitives
    whatever the space, so a custom op silently disappeared from the comparison)."""
    assert custom_space.search_ops(with_none=True) == ("none", "skip_connect", "avg_pool_3x3", "test_conv_3x3")
    assert custom_space.search_ops(with_none=False) == ("skip_connect", "avg_pool_3x3", "test_conv_3x3")
    for strategy in ("darts", "gdas", "atldas"):
        run = atldas.Run(atldas.make_search_config(space="test_tiny_conv", strategy=strategy,
                                                   sets=["epochs=2", "steps_per_epoch=1", "arch_steps_per_epoch=1"]))
        assert "test_conv_3x3" in run.net.arch.op_names
        assert ("none" in run.net.arch.op_names) == (strategy != "atldas")
        run.fit()
        g = run.final_genotype()
        assert set(g.space["ops"]) == {"skip_connect", "avg_pool_3x3", "test_conv_3x3"}


def test_a_custom_op_is_costed_without_a_formula(custom_space):
    """No closed form was registered: the table counts the op on the meta device, and the table equals
    the counter for a child that uses it."""
    space = atldas.bind_space(atldas.make_search_config(space="test_tiny_conv"))
    arch = space.new_arch()
    table = cost_table(space, arch, metric="macs")
    conv = arch.op_names.index("test_conv_3x3")
    child = arch.argmax()
    child.ops = {t: {e: conv for e in ops} for t, ops in child.ops.items()}
    g = space.child_to_genotype(arch, child)
    assert "test_conv_3x3" in {op for _, _, op in g.normal.edges()}
    assert table.of_child(child) == space.measure(g, metric="macs")
    net = atldas.create_model(g)  # the standalone network builds the custom op too
    assert net(torch.rand(1, 6, 64, 64)).shape == (1, 1, 64, 64)


def test_model_registry(tmp_path):
    assert {"cheapmatting", "aematter_tiny", "cnn_baseline_tiny", "closed_form"} <= set(atldas.list_models())
    net = atldas.create_model("cheapmatting", C=16, layers=5)
    assert isinstance(net, atldas.CheapMatting) and net.cfg.C == 16 and net.cfg.layers == 5

    @atldas.register_model("test_identity_matting")
    def build(**knobs):
        return nn.Conv2d(6, 1, 1)

    try:
        assert atldas.create_model("test_identity_matting")(torch.rand(1, 6, 8, 8)).shape == (1, 1, 8, 8)
        torch.save({"model": nn.Conv2d(6, 1, 1).state_dict()}, tmp_path / "w.pt")
        loaded = atldas.create_model("test_identity_matting", checkpoint_path=tmp_path / "w.pt")
        assert torch.equal(loaded.weight, torch.load(tmp_path / "w.pt", weights_only=True)["model"]["weight"])
        with pytest.raises(ValueError, match="already registered"):
            atldas.register_model("test_identity_matting")(build)
        with pytest.raises(TypeError, match="takes the model's name"):  # bare: it registered nothing, silently
            atldas.register_model(build)
        atldas.register_model("test_not_a_module")(lambda **knobs: "not a module")
        with pytest.raises(ConfigError, match="returned a str, not a torch nn.Module"):
            atldas.create_model("test_not_a_module")
    finally:
        from atldas.models.zoo import MODELS

        MODELS.remove("test_identity_matting")
        MODELS.remove("test_not_a_module")
    with pytest.raises(ConfigError, match="unknown model 'nope'; known models: aematter"):
        atldas.create_model("nope")


def test_derive_of_a_search_that_stopped_early_says_so_and_records_the_epochs_searched(tmp_path, monkeypatch, caplog):
    """derive of an interrupted search: a warning naming the epoch it stopped at and how to finish it;
    the genotype's provenance counts the epochs searched (it said the configured number)."""
    import logging

    import atldas.rundir as rundir_mod

    real_save, saves = rundir_mod.save_checkpoint, []

    def interrupting_save(state, path):
        if saves:  # killed in the second epoch, before its checkpoint (the first epoch's is whole)
            raise KeyboardInterrupt
        real_save(state, path)
        saves.append(path)

    monkeypatch.setattr(rundir_mod, "save_checkpoint", interrupting_save)
    out = tmp_path / "run"
    assert main(["search", *FAST, "--epochs", "3", "--out", str(out)]) != 0
    monkeypatch.setattr(rundir_mod, "save_checkpoint", real_save)
    with caplog.at_level(logging.WARNING, logger="atldas"):
        assert main(["derive", str(out), "--out", str(tmp_path / "g.json")]) == 0
    assert "stopped after epoch 1 of 3" in caplog.text and "--resume" in caplog.text
    assert json.loads((tmp_path / "g.json").read_text())["provenance"]["epochs"] == 1
    assert json.loads((out / "genotype.json").read_text())["provenance"]["epochs"] == 1
    # the verbs that take the run folder as a MODEL said nothing of its unfinished, unrepaired genotype
    assert "interim" not in json.loads((tmp_path / "g.json").read_text())["provenance"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atldas"):
        assert main(["bench", str(out), "--size", "64", "--no-latency"]) == 0
    assert "a search that has not finished (epoch 1)" in caplog.text and f"atldas derive {out}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atldas"):  # plot drew it without a word
        assert main(["plot", str(out), "--out", str(tmp_path / "g.png")]) == 0
    assert "a search that has not finished (epoch 1)" in caplog.text


def test_resume_refuses_costs_that_changed_since_the_run_started(tmp_path, monkeypatch, capsys, caplog):
    """A latency table rebuilt between an interrupt and --resume changed the run's costs silently (its
    history and genotype then differed from an uninterrupted run); here the stored cost table is
    edited, which the check reads the same way."""
    import atldas.rundir as rundir_mod

    real_save, saves = rundir_mod.save_checkpoint, []

    def interrupting_save(state, path):  # killed in the second epoch, before its checkpoint
        if saves:
            raise KeyboardInterrupt
        real_save(state, path)
        saves.append(path)

    monkeypatch.setattr(rundir_mod, "save_checkpoint", interrupting_save)
    out = tmp_path / "run"
    assert main(["search", *FAST, "--epochs", "3", "--target-macs", "100M", "--out", str(out)]) != 0
    monkeypatch.setattr(rundir_mod, "save_checkpoint", real_save)
    table = out / "cost_table.json"
    kept = table.read_text()
    data = json.loads(kept)
    data["base"] = data["base"] * 2 + 1
    table.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["search", *FAST, "--epochs", "3", "--target-macs", "100M", "--out", str(out), "--resume"]) == 2
    assert "differ from those it started with" in capsys.readouterr().err
    before = (out / "genotype.json").read_text()  # derive too: it derived another genotype without a word
    assert main(["derive", str(out)]) == 2
    assert "derive: the costs of this run's architectures differ" in capsys.readouterr().err
    assert (out / "genotype.json").read_text() == before
    # --stored-costs: derived with the table the run started with (here the edited one), said so
    with caplog.at_level(logging.WARNING, logger="atldas"):
        assert main(["derive", str(out), "--stored-costs", "--out", str(tmp_path / "stored.json")]) == 0
    assert "are those its search started with" in caplog.text
    table.write_text("{}")
    assert main(["derive", str(out), "--stored-costs", "--out", str(tmp_path / "bad.json")]) == 2
    assert "is not a cost table written by atldas" in capsys.readouterr().err
    table.write_text(kept)
    assert main(["derive", str(out), "--out", str(tmp_path / "plain.json")]) == 0
    old, new = (json.loads((tmp_path / f).read_text())["cost"]["repair"] for f in ("plain.json", "stored.json"))
    assert new["before"] - old["before"] == data["base"] - json.loads(kept)["base"], (old, new)
    assert main(["search", *FAST, "--epochs", "3", "--target-macs", "100M", "--out", str(out), "--resume"]) == 0
    with caplog.at_level(logging.INFO, logger="atldas"):  # a finished run: said so (it said "epoch 4/3")
        assert main(["search", *FAST, "--epochs", "3", "--target-macs", "100M", "--out", str(out), "--resume"]) == 0
    assert "finished its 3 epochs already" in caplog.text and "epoch 4/3" not in caplog.text


def test_derive_into_a_run_a_search_holds_is_refused(tmp_path, capsys, caplog):
    """derive wrote RUN_DIR/genotype.json while the run's search held it (the search rewrote it at its
    next epoch); --out elsewhere reads the checkpoint and is allowed."""
    from atldas.rundir import RunDir

    out = tmp_path / "run"
    assert main(["search", *FAST, "--epochs", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    with RunDir(out, checkpoint="checkpoint.pt", kind="search").locked():
        import subprocess
        import sys

        r = subprocess.run([sys.executable, "-m", "atldas", "derive", str(out)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 2 and "is in use by another atldas process" in r.stderr, r.stderr
        r = subprocess.run([sys.executable, "-m", "atldas", "derive", str(out), "--out", str(tmp_path / "g.json")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and (tmp_path / "g.json").is_file(), r.stderr
        # plot of a run a search holds: drawn (a look at the search so far), with a word that it is one
        assert RunDir(out, checkpoint="checkpoint.pt", kind="search").holder() == str(os.getpid())
        with caplog.at_level(logging.WARNING, logger="atldas"):
            assert main(["plot", str(out), "--out", str(tmp_path / "mid.png")]) == 0
        assert "is in use by a running search" in caplog.text
    caplog.clear()
    assert RunDir(out, checkpoint="checkpoint.pt", kind="search").holder() is None
    with caplog.at_level(logging.WARNING, logger="atldas"):
        assert main(["plot", str(out), "--out", str(tmp_path / "end.png")]) == 0
    assert "running search" not in caplog.text


def test_a_python_run_that_finished_but_was_not_derived_is_named_so(tmp_path, caplog):
    """Run(cfg, out=DIR).fit() leaves the policy's argmax in DIR/genotype.json (interim): a MODEL given
    that folder is warned about a search that ran all its epochs, not one that "has not finished"; derive
    then writes the final genotype and the warning goes."""
    import logging

    out = tmp_path / "apirun"
    cfg = atldas.make_search_config(space="tiny", sets=["epochs=2", "warmup_epochs=1", "steps_per_epoch=2",
                                                        "arch_steps_per_epoch=2", "tensorboard=false", "plots=false",
                                                        "progress=false"])
    atldas.Run(cfg, out=out).fit()
    assert json.loads((out / "genotype.json").read_text())["provenance"]["interim"] is True
    with caplog.at_level(logging.WARNING, logger="atldas"):
        atldas.resolve_model(out)
    assert "ran its 2 epochs but whose final genotype was never derived" in caplog.text
    assert "has not finished" not in caplog.text
    atldas.derive_run(out)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atldas"):
        atldas.resolve_model(out)
    assert "derive" not in caplog.text


def test_the_verbs_are_reached_through_the_package():
    """After a plain `import atldas`, atldas.retrain.retrain and the other verbs are there (they raised
    AttributeError unless their module had been imported by hand)."""
    import subprocess
    import sys

    code = ("import atldas, sys; fns = [atldas.search.search, atldas.retrain.retrain, atldas.predict.predict, "
            "atldas.bench.bench, atldas.plot.plot, atldas.tune.tune, atldas.evaluate.evaluate_folders, "
            "atldas.export.export_onnx, atldas.lut.lut_build]; print(len(fns), 'retrain' in dir(atldas))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["9", "True"]


def test_the_command_line_reaches_what_a_script_registered_first(custom_space, tmp_path, capsys):
    """The README's way to use your own pieces from the command line: register them, then run it (here
    ``main``, which ``main_exit`` calls): search in the custom space, derive, and plot its genotype."""
    from atldas.cli import main

    out = tmp_path / "s"
    assert main(["search", "--space", "test_tiny_conv", "--epochs", "2", "--set", "steps_per_epoch=1",
                 "--set", "arch_steps_per_epoch=1", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    assert json.loads((out / "genotype.json").read_text())["space"]["name"] == "test_tiny_conv"
    assert main(["derive", str(out), "--out", str(tmp_path / "g.json")]) == 0
    assert main(["plot", str(tmp_path / "g.json"), "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").is_file()


def test_cli_main_called_from_python_leaves_the_process_as_it_found_it(tmp_path):
    """cli.main left a root handler at INFO (a second call's --quiet was ignored, every library's INFO
    lines went to stderr), OMP_NUM_THREADS in the environment and torch's thread count changed; a
    fresh process, since pytest configures logging itself."""
    code = f"""
import json, logging, os, torch
from atldas.cli import main
torch.set_num_threads(2)
before = (len(logging.root.handlers), logging.root.level, os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads())
assert main(["derive", "no_such_run", "--quiet"]) == 2
assert main(["plot", "no_such_genotype"]) == 2
assert main(["bench", "cnn_baseline_tiny", "--size", "64", "--threads", "1", "--min-run-time", "0.01", "--repeats", "1",
      "--json", {str(tmp_path / "b.json")!r}]) == 0
after = (len(logging.root.handlers), logging.root.level, os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads())
print(json.dumps([before, after]))
"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == after and before[2] is None


def test_bench_leaves_the_callers_random_stream_alone():
    import torch

    from atldas.bench import measure_latency
    from atldas.models.zoo import resolve_model

    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    measure_latency(resolve_model("cnn_baseline_tiny"), size=64, threads=1, min_run_time=0.01, repeats=1)
    assert torch.equal(torch.rand(3), expected)
