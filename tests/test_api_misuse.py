"""Misuse of the Python API gets a clear error of its own, not an internal traceback or a silently
wrong search: a run directory written from Python is complete and never overwritten, a strategy
refuses a cost table of another supernet or metric, registries check what they are given."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import atldas
from atldas.errors import AtldasError, ConfigError

TINY = ["epochs=2", "tensorboard=false", "plots=false", "progress=false"]


def test_run_with_out_writes_a_complete_run_directory_and_never_overwrites_it(tmp_path):
    out = tmp_path / "run"
    atldas.Run(atldas.make_search_config(space="tiny", sets=TINY), out=out).fit()
    assert {"config.yaml", "cost_table.json", "checkpoint.pt", "genotype.json", "history.jsonl"} <= {
        p.name for p in out.iterdir()}
    assert atldas.Run.load(out).epoch == 2  # derive and resume read it
    assert atldas.derive_run(out).is_file()
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(AtldasError, match="already holds a search checkpoint"):
        atldas.Run(atldas.make_search_config(space="tiny", sets=TINY), out=out).fit()
    assert (out / "checkpoint.pt").read_bytes() == before


def test_run_with_out_refuses_another_config_left_without_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    atldas.Run(atldas.make_search_config(space="tiny", sets=TINY + ["seed=3"]), out=out).fit(0)
    assert (out / "config.yaml").is_file() and not (out / "checkpoint.pt").exists()  # never checkpointed
    config = (out / "config.yaml").read_text()
    with pytest.raises(AtldasError, match="another configuration.*seed"):
        atldas.Run(atldas.make_search_config(space="tiny", sets=TINY), out=out).fit()
    assert (out / "config.yaml").read_text() == config
    atldas.Run(atldas.make_search_config(space="tiny", sets=TINY + ["seed=3"]), out=out).fit()  # the same one
    assert (out / "checkpoint.pt").is_file()


def test_run_and_config_arguments(tmp_path):
    with pytest.raises(TypeError, match="Run needs a SearchConfig"):
        atldas.Run({"space": "tiny"})
    cfg = atldas.make_search_config(space="tiny", sets="epochs=3")  # one text: a list of one
    assert cfg.epochs == 3


def _pieces(with_none: bool = False):
    cfg = atldas.make_search_config(space="tiny", sets=TINY)
    space = atldas.bind_space(cfg)
    return space, space.build_supernet(ops=space.search_ops(with_none=with_none))


def test_strategy_refuses_a_cost_table_of_another_metric_or_supernet():
    space, supernet = _pieces()
    S, task = atldas.STRATEGIES.get("atldas"), atldas.get_task("matting")

    def build(table, budget):
        return S(supernet=supernet, loss_fn=task.loss, cost=table, budget=budget, hp=atldas.AtldasHP(), epochs=2)

    macs = atldas.cost_table(space, supernet.arch, metric="macs")
    with pytest.raises(ConfigError, match="the budget is in params but the cost table in macs"):
        build(macs, atldas.BudgetCfg(target_params=1e5).build())
    _, other = _pieces(with_none=True)
    with pytest.raises(ConfigError, match=r"normal cells cost \[14, 8\] .* the supernet has \[14, 7\]"):
        build(atldas.cost_table(space, other.arch, metric="macs"), None)
    build(macs, atldas.BudgetCfg(target_macs=12e6).build())  # the README's pieces fit


def test_registries_check_what_they_are_given():
    with pytest.raises(TypeError, match="op name must be a non-empty string, got 5"):
        atldas.register_op(5, lambda *, C_in, C_out, stride, affine: nn.Identity())
    with pytest.raises(TypeError, match="build must be callable"):
        atldas.register_op("test_not_callable", 5)
    with pytest.raises(TypeError, match="build must take the keywords C_in, C_out, stride and affine"):
        atldas.register_op("test_bad_signature", lambda c: nn.Identity())
    assert not {"test_not_callable", "test_bad_signature"} & set(atldas.OPS.names())  # nothing half-registered
    with pytest.raises(TypeError, match="decorates a function"):
        atldas.register_model("test_not_a_builder")(5)
    with pytest.raises(TypeError, match="expected a Task instance"):
        atldas.register_task("test_task", 5)
    with pytest.raises(TypeError, match="register_space expects a SearchSpace"):
        atldas.register_space("foo")
    with pytest.raises(ConfigError, match="unknown op 'nope'; known ops: "):  # the registry still lists its names
        atldas.OPS.get("nope")


def test_plot_takes_a_path_and_save_names_the_folder(tmp_path):
    space, supernet = _pieces()
    g = space.child_to_genotype(supernet.arch, supernet.arch.sample(generator=torch.Generator().manual_seed(0)))
    path = g.save(tmp_path / "g.json")
    assert atldas.plot_genotype(str(path), out=tmp_path / "g.png")[0].is_file()
    with pytest.raises(TypeError, match="needs a Genotype or a genotype file's path"):
        atldas.plot_genotype(5, out=tmp_path / "x.png")
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        g.save(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_small_misuses_are_type_or_value_errors():
    run = atldas.Run(atldas.make_search_config(space="tiny", sets=TINY))
    with pytest.raises(TypeError, match="fit\\(epochs=...\\) takes an int"):
        run.fit("2")
    with pytest.raises(TypeError, match="a MODEL is a registered name"):
        atldas.create_model(5)
    g = run.final_genotype()
    with pytest.raises(ValueError, match="hash length must be an integer in 1..64"):
        g.hash(length=0)
    assert len(g.hash(length=64)) == 64


def test_python_misuse_of_the_verbs_is_one_clear_error(tmp_path):
    """Found by a review: a Path in RetrainConfig failed in the YAML writer, a Genotype as its model in
    pickle, a dict for the config with an AttributeError; bench("name") benched the name's letters;
    make_search_config(sets=[1]) failed inside the parser."""
    from pathlib import Path

    import atldas
    from atldas.errors import ConfigError
    from atldas.retrain import RetrainConfig, _plain_paths
    from derived_models import get_genotype

    cfg = _plain_paths(RetrainConfig(model="cnn_baseline_tiny", data=Path("synthetic"), out=tmp_path / "r"))
    assert cfg.data == "synthetic" and cfg.out == str(tmp_path / "r")
    with pytest.raises(ConfigError, match="save the genotype first"):
        atldas.retrain.retrain(RetrainConfig(model=get_genotype("darts_v2"), out=str(tmp_path / "g")))
    with pytest.raises(TypeError, match="needs a RetrainConfig, got dict"):
        atldas.retrain.retrain({"model": "cnn_baseline_tiny"})
    rows = atldas.bench.bench("cnn_baseline_tiny", size=64, latency=False)
    assert [r["model"] for r in rows] == ["cnn_baseline_tiny"]
    with pytest.raises(ConfigError, match="'key=value' texts"):
        atldas.make_search_config(space="tiny", sets=[1])
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("name", ["RetrainConfig", "SearchConfig", "BudgetCfg", "AtldasHP", "DartsHP", "GdasHP",
                                  "RandomHP", "CheapMattingCfg", "SpaceCfg", "DataCfg"])
def test_config_classes_take_keywords_only(name):
    """style.md: keyword-only constructors. A positional value went into the first field silently
    (BudgetCfg(8e9) set target_macs; RetrainConfig("x") the model)."""
    import dataclasses

    cls = getattr(atldas, name, None) or getattr(atldas.retrain, name)
    first = next(f.name for f in dataclasses.fields(cls) if f.init)
    with pytest.raises(TypeError, match=f"{name} takes keyword arguments only; got 1 positional \\({first}="):
        cls(1)
    made = cls()  # keywords and defaults as before; replace() and copies pass keywords
    assert dataclasses.replace(made) == made


@pytest.mark.parametrize("cls", ["CellSpec", "Genotype", "CellTopology"])
def test_value_classes_take_keywords_only(cls):
    """CellTopology(4, 2, 3) was accepted (nodes, k_min, k_max in field order), as were the genotype's
    value classes: a reordered field would have built another network without a word."""
    import dataclasses

    from atldas.genotype import CellSpec
    from atldas.topology import CellTopology
    from derived_models import get_genotype

    made = {"CellSpec": lambda: CellSpec(nodes=((("skip_connect", 0), ("skip_connect", 1)),), concat=(2,)),
            "Genotype": lambda: get_genotype("darts_v2"),
            "CellTopology": lambda: CellTopology(nodes=4, k_min=2, k_max=3)}[cls]()
    first = next(f.name for f in dataclasses.fields(type(made)) if f.init)
    with pytest.raises(TypeError, match=f"{cls} takes keyword arguments only; got 1 positional \\({first}="):
        type(made)(1)
    assert dataclasses.replace(made) == made


def test_settings_that_do_nothing_are_said(tmp_path, caplog):
    """select_fill with select=0, a Gumbel temperature with the reinforce estimator, a budget setting
    without a target: accepted without a word, and the search ran as if they were not given."""
    import logging

    from atldas.config import save_yaml

    with caplog.at_level(logging.WARNING, logger="atldas"):
        cfg = atldas.make_search_config(space="tiny", sets=["select_fill=true", "hp.tau_min=0.05", "budget_form=abs"])
    assert cfg.select == 0 and not cfg.budget.targets()
    for said in ("select_fill=True does nothing while the select stage is off",
                 "tau_min=0.05 does nothing with estimator=reinforce", "form=abs does nothing without a budget target"):
        assert said in caplog.text, said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atldas"):  # used here: nothing to say
        atldas.make_search_config(space="planted", sets=["select_steps=20", "form=abs", "target_macs=1M"])
        atldas.make_search_config(space="tiny", strategy="gdas", sets=["tau_min=0.05"])
        save_yaml(cfg, tmp_path / "config.yaml")  # a run's whole config.yaml names every key
        atldas.make_search_config(file=str(tmp_path / "config.yaml"))
    assert "does nothing" not in caplog.text, caplog.text


def test_progress_under_a_stderr_without_isatty(monkeypatch):
    """search, retrain, predict, eval and lut asked `sys.stderr.isatty()` directly: an AttributeError
    where a service or notebook put an object without it (or None) in its place."""
    import sys

    from atldas.utils.progress import show_progress

    class Sink:
        def write(self, text):
            return len(text)

        def flush(self):
            pass

    for stderr in (Sink(), None):
        monkeypatch.setattr(sys, "stderr", stderr)
        assert show_progress(True) is False
    monkeypatch.undo()
    assert show_progress(False) is False


@pytest.mark.parametrize("bad", [{"tensorboard": "false"}, {"threads": 5000}, {"threads": 2.5}, {"hp.learn_topology": "false"},
                                 {"budget.target_macs": "25G"}])
def test_a_search_config_built_in_python_is_type_checked(tmp_path, bad):
    """tensorboard="false" was taken as true and written to config.yaml, which the run's own derive and
    --resume then refused; threads=5000 started 5000 threads (the 1..1024 limit was the CLI's only)."""
    import dataclasses

    from atldas.errors import ConfigError
    from atldas.run import Run

    cfg = atldas.make_search_config(space="tiny", sets=["epochs=2", "steps_per_epoch=1", "arch_steps_per_epoch=1"])
    (key, value), = bad.items()
    if "." in key:
        section, field = key.split(".")
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{field: value})})
    else:
        cfg = dataclasses.replace(cfg, **{key: value})
    with pytest.raises(ConfigError, match=f"{key}: expected|{key.split('.')[-1]} must be an integer in 1..1024"):
        Run(dataclasses.replace(cfg, out=str(tmp_path / "run"))).fit()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad", [{"drop_path": "0.1"}, {"num_workers": 1.5}, {"channels_last": "no"}, {"threads": 5000}])
def test_a_retrain_config_built_in_python_is_type_checked(tmp_path, bad):
    """num_workers=1.5 passed the checks and failed in the DataLoader after config.yaml, genotype.json and
    tb/ were written (a rerun into the folder was then refused); drop_path="0.1" was a TypeError."""
    from atldas.errors import ConfigError
    from atldas.retrain import RetrainConfig

    with pytest.raises(ConfigError, match="expected|must be an integer in 1..1024"):
        atldas.retrain.retrain(RetrainConfig(model="cnn_baseline_tiny", out=str(tmp_path / "run"), **bad))
    assert not (tmp_path / "run").exists()


def test_a_matting_space_refuses_an_input_too_small_for_its_network():
    """input_size=16 passed the knob's range (8..16384) and failed deep in the cost table with a
    BatchNorm traceback; the matting macro downsamples 5 times."""
    from atldas.errors import ConfigError
    from atldas.run import bind_space

    with pytest.raises(ConfigError, match="input_size=16: the tiny space's networks take 32 pixels or more"):
        bind_space(atldas.make_search_config(space="tiny", sets=["input_size=16"]))
    bind_space(atldas.make_search_config(space="darts_cifar", sets=["input_size=8"]))


@pytest.mark.parametrize("space", ["planted", "darts_cifar"])
def test_backgrounds_for_a_task_without_them_is_refused(tmp_path, space):
    """--backgrounds DIR was recorded in config.yaml and unused by the planted and classification tasks
    (the planted task refused a crop already)."""
    from atldas.errors import ConfigError
    from atldas.run import Run

    cfg = atldas.make_search_config(space=space, sets=[f"backgrounds={tmp_path}"])
    with pytest.raises(ConfigError, match="takes no backgrounds"):
        Run(cfg, out=None)


def test_foreground_prob_without_foregrounds_is_said(caplog):
    import logging

    from atldas.retrain import RetrainConfig, _datasets

    with caplog.at_level(logging.WARNING, logger="atldas"):
        _datasets(RetrainConfig(model="cnn_baseline_tiny", val_count=1, steps_per_epoch=1, batch_size=1))
    assert "foreground_prob" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="atldas"):
        _datasets(RetrainConfig(model="cnn_baseline_tiny", val_count=1, steps_per_epoch=1, batch_size=1,
                                foreground_prob=0.9))
    assert "foreground_prob=0.9 does nothing without --foregrounds" in caplog.text


def test_a_setting_given_twice_or_empty_is_refused(tmp_path):
    """--set epochs=5 --set epochs=2 ran 2 epochs (arch_lr and hp.arch_lr too), a YAML file's key given
    twice took the last, and --set strategy= fell back to atldas without a word."""
    from atldas.errors import ConfigError

    for sets, said in ((["epochs=5", "epochs=2"], "epochs is set twice (also epochs=5)"),
                       (["arch_lr=0.2", "hp.arch_lr=0.01"], "hp.arch_lr is set twice (also arch_lr=0.2)"),
                       (["strategy="], "--set strategy=: an empty value"),
                       (["task="], "--set task: an empty value")):
        with pytest.raises(ConfigError, match=re.escape(said)):
            atldas.make_search_config(space="tiny", sets=sets)
    (tmp_path / "c.yaml").write_text("epochs: 3\nseed: 1\nepochs: 2\n")
    with pytest.raises(ConfigError, match="key 'epochs' is given twice"):
        atldas.make_search_config(space="tiny", file=str(tmp_path / "c.yaml"))
    (tmp_path / "c.yaml").write_text("epochs: 3\nhp:\n  arch_lr: 0.1\n")
    assert atldas.make_search_config(space="tiny", file=str(tmp_path / "c.yaml")).hp.arch_lr == 0.1


def test_a_yaml_setting_given_flat_and_nested_is_refused(tmp_path):
    """A file giving ``arch_lr`` and ``hp: {arch_lr}`` (or ``budget_form`` and ``budget: {form}``) took
    whichever came last, without a word."""
    from atldas.errors import ConfigError

    for text, said in (("arch_lr: 0.1\nhp:\n  arch_lr: 0.2\n", "hp.arch_lr is given twice (as arch_lr and as hp"),
                       ("budget:\n  form: hinge\nbudget_form: hinge\n", "budget.form is given twice (as budget: {form")):
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(ConfigError, match=re.escape(said)):
            atldas.make_search_config(space="tiny", file=str(tmp_path / "c.yaml"))


def test_a_whole_number_float_for_an_integer_is_refused_on_every_path(tmp_path):
    """``epochs: 3.0`` in YAML was taken as 3, where ``--set epochs=3.0`` and ``SearchConfig(epochs=3.0)``
    were refused: one rule now."""
    from atldas.errors import ConfigError

    (tmp_path / "c.yaml").write_text("epochs: 3.0\n")
    with pytest.raises(ConfigError, match=re.escape("epochs: expected an integer, got 3.0")):
        atldas.make_search_config(space="tiny", file=str(tmp_path / "c.yaml"))
    with pytest.raises(ConfigError, match="expected an integer"):
        atldas.make_search_config(space="tiny", sets=["epochs=3.0"])
    (tmp_path / "c.yaml").write_text("epochs: 3\n")
    assert atldas.make_search_config(space="tiny", file=str(tmp_path / "c.yaml")).epochs == 3


def test_a_custom_task_is_registered_under_its_own_name_and_keeps_the_spaces_io():
    """A subclass that inherited ``name = "matting"`` was registered as "l1" and recorded as matting; a task
    with other inputs was searched, and its genotype could never be built."""
    from atldas.errors import ConfigError
    from atldas.tasks import TASKS
    from atldas.tasks.matting import MattingTask

    class Unnamed(MattingTask):
        pass

    with pytest.raises(ValueError, match=re.escape("the task's name is 'matting'; set name = 'test_unnamed'")):
        atldas.register_task("test_unnamed", Unnamed())
    assert "test_unnamed" not in TASKS

    class FourChannels(MattingTask):
        name = "test_rgbt"

        def io(self, data):
            return {"in_channels": 4, "out_channels": 1}

    atldas.register_task("test_rgbt", FourChannels())
    try:
        cfg = atldas.make_search_config(space="tiny", sets=["task=test_rgbt"])
        with pytest.raises(ConfigError, match="a task of this space keeps its inputs and outputs"):
            cfg.check(atldas.get_task("test_rgbt"))
    finally:
        TASKS.remove("test_rgbt")



def test_retrain_refuses_a_registered_network_with_the_wrong_output_before_writing(tmp_path):
    """A registered network giving 3 channels trained a whole epoch (the loss broadcasting) and then failed
    in validation with a RuntimeError traceback; half-resolution output was a raw size error."""
    from atldas.models.zoo import MODELS
    from atldas.retrain import RetrainConfig

    @atldas.register_model("test_three_channels")
    def three(**kw):
        return nn.Conv2d(6, 3, 3, 1, 1)

    @atldas.register_model("test_half_size")
    def half(**kw):
        return nn.Conv2d(6, 1, 3, 2, 1)

    try:
        for name, got in (("test_three_channels", "(1, 3, 64, 64)"), ("test_half_size", "(1, 1, 32, 32)")):
            with pytest.raises(ConfigError, match=re.escape(f"{name}: on a (1, 6, 64, 64) input the network gives "
                                                            f"{got}")):
                atldas.retrain.retrain(RetrainConfig(model=name, crop=64, out=str(tmp_path / name)))
            assert not (tmp_path / name).exists()
    finally:
        MODELS.remove("test_three_channels")
        MODELS.remove("test_half_size")


@pytest.mark.parametrize("kind", ["per_sample", "float", "detached", "nan"])
def test_a_custom_tasks_bad_loss_is_one_line(kind):
    """A per-sample, float or detached loss was a torch error from deep in the weight step; a loss that was
    NaN on the very first step was met with advice to lower the learning rates, which had not acted yet."""
    from atldas.tasks import TASKS
    from atldas.tasks.matting import MattingTask

    class BadLoss(MattingTask):
        name = "test_bad_loss"

        def loss(self, pred, batch):
            per = (pred - batch["alpha"]).abs().mean(dim=(1, 2, 3))  # (B,)
            return {"per_sample": lambda: per, "float": lambda: float(per.detach().mean()),
                    "detached": lambda: per.mean().detach(), "nan": lambda: per.mean() * float("nan")}[kind]()

    atldas.register_task("test_bad_loss", BadLoss())
    try:
        run = atldas.Run(atldas.make_search_config(space="tiny", sets=["task=test_bad_loss", "tensorboard=false",
                                                                       "progress=false", "plots=false"]))
        said = {"per_sample": "returned a (2,) tensor; it must return a scalar tensor computed from pred",
                "float": "returned 0.", "detached": "without a gradient",
                "nan": "it was so before any update: check the data and the task's loss"}[kind]
        with pytest.raises(AtldasError, match=re.escape(said)):
            run.fit()
    finally:
        TASKS.remove("test_bad_loss")


def test_a_folder_named_like_a_registered_model_does_not_hide_it(tmp_path, monkeypatch):
    """``create_model("cheapmatting")`` in a folder holding a ``cheapmatting/`` package (not a run) said
    "not a run directory"; a run folder of that name is still read as the run."""
    from atldas.plot import load_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "cheapmatting").mkdir()
    (tmp_path / "darts_v2").mkdir()
    assert atldas.create_model("cheapmatting") is not None
    assert load_source("darts_v2")[0].hash() == load_source(atldas.Genotype.load(
        Path(__file__).resolve().parents[1] / "derived_models" / "darts_v2.json"))[0].hash()


def test_a_strategy_is_registered_as_a_strategy_class_under_its_own_name():
    """A function registered as a strategy failed at the first search (no attribute HP); a subclass that
    inherited ``name = "atldas"`` reported itself as atldas."""
    from atldas.strategies import STRATEGIES, AtldasStrategy

    with pytest.raises(TypeError, match="expected a subclass of atldas.Strategy"):
        STRATEGIES.add("test_function", lambda **kw: None)

    class Greedy(AtldasStrategy):
        pass

    with pytest.raises(ValueError, match="the class's name is 'atldas'; set name = 'test_greedy' in Greedy"):
        STRATEGIES.add("test_greedy", Greedy)
    assert "test_function" not in STRATEGIES and "test_greedy" not in STRATEGIES


def test_a_custom_space_lists_each_op_once_as_a_sequence_and_takes_strategy_defaults():
    """An op listed twice was searched as two identical candidates (a biased prior), ops given as one string
    was "unknown op 's'", and the matting space class refused ``strategy_defaults``."""
    from search_spaces import SPACES

    tiny = atldas.get_space("tiny")
    with pytest.raises(TypeError, match="ops is a sequence of op names, got the string 'sep_conv_3x3'"):
        type(tiny)(name="test_str_ops", macro=tiny.macro, defaults=tiny.defaults, ops="sep_conv_3x3")
    atldas.register_space(type(tiny)(name="test_twice", macro=tiny.macro, defaults=tiny.defaults,
                                     ops=("sep_conv_3x3", "skip_connect", "sep_conv_3x3"),
                                     strategy_defaults={"darts": {"epochs": 3}}))
    try:
        with pytest.raises(ConfigError, match="lists op\\(s\\) sep_conv_3x3 more than once"):
            atldas.bind_space(atldas.make_search_config(space="test_twice"))
        assert atldas.make_search_config(space="test_twice", strategy="darts").epochs == 3
    finally:
        SPACES.remove("test_twice")
