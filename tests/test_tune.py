"""``atldas tune``: a study on a journal file shared by worker processes, one of them killed mid-trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atldas.cli import main
from atldas.errors import ConfigError
from atldas.tune import load_tune_space

FAST = ["--set", "epochs=2", "--set", "steps_per_epoch=2", "--set", "arch_steps_per_epoch=2", "--set",
        "tensorboard=false"]


def _study(out: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(out / "study.log")))
    return optuna.load_study(study_name="tune-tiny", storage=storage)


def test_the_tuning_space_is_checked(tmp_path):
    assert [p.key for p in load_tune_space(None, space="tiny")] == ["arch_lr", "w_lr", "k_max"]
    bad = tmp_path / "s.yaml"
    for text, match in (("wings: {type: int, low: 1, high: 2}\n", "unknown key 'wings'; tunable keys: .*arch_lr"),
                        ("arch_lr: {type: float, low: 1, high: 0}\n", "low <= high"),
                        ("arch_lr: {type: float, low: 0, high: 1, log: true}\n", "low > 0 with log"),
                        ("arch_lr: {type: gaussian}\n", "float, int or categorical"),
                        ("arch_lr: {type: float, low: 0.1, high: 1, spread: 2}\n", "unknown field"),
                        ("strategy: {type: categorical, choices: []}\n", "non-empty list"),
                        ("arch_lr: {type: float, low: 0.1, high: 1, log: 'no'}\n", "log must be true or false"),
                        ("k_max: {type: int, low: 2.5, high: 3}\n", "integer low and high"),
                        ("k_max: {type: int, low: 2, high: 3, step: 0}\n", "step must be a positive integer"),
                        ("arch_lr: {type: float, low: 0.1, high: 1, step: -1}\n", "step must be a positive number"),
                        ("arch_lr: {type: float, low: 0.1, high: 1, step: fine}\n", "step must be a positive number"),
                        ("arch_lr: {type: float, low: 1e-4, high: 1e-2, step: 1e-4, log: true}\n", "cannot be combined"),
                        ("arch_lr: {type: float, low: 0.1, high: 1, step: 0.1, log: true}\n", "cannot be combined"),
                        ("k_max: {type: int, low: 2, high: 8, step: 2, log: true}\n", "log int range takes step 1"),
                        ("out: {type: categorical, choices: [elsewhere]}\n", "out cannot be tuned"),
                        ("space: {type: categorical, choices: [matting]}\n", "space cannot be tuned"),
                        ("- 1\n", "mapping")):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_tune_space(str(bad), space="tiny")
    good = tmp_path / "good.yaml"  # what Optuna accepts is accepted: a log int range with step 1, log: (null)
    good.write_text("k_max: {type: int, low: 2, high: 8, step: 1, log: true}\narch_lr: {type: float, low: 0.1, "
                    "high: 1, log: }\nw_lr: {type: float, low: 1e-4, high: 1e-2, step: 1e-4}\n")
    k_max, arch_lr, w_lr = load_tune_space(str(good), space="tiny")
    assert (k_max.log, k_max.step, arch_lr.log) == (True, 1, False)
    assert w_lr.step == 1e-4 and (w_lr.low, w_lr.high) == (1e-4, 1e-2)  # YAML reads 1e-4 (no dot) as a string
    import optuna

    trial = optuna.create_study().ask()
    assert 2 <= k_max.suggest(trial) <= 8 and 0.1 <= arch_lr.suggest(trial) <= 1
    # the ends checked before a study are what Optuna draws (a float step's top was 0.2 for 0.1..0.3)
    from atldas.tune import Param

    assert Param(key="aim", type="float", low=0.1, high=0.3, step=0.1).ends() == [0.1, 0.3]
    assert Param(key="aim", type="float", low=0.09, high=1.0, step=0.07).ends() == [0.09, 1.0]
    assert Param(key="k_max", type="int", low=2, high=40, step=3).ends() == [2, 38]


def test_a_budget_end_below_the_cheapest_passes_only_beside_other_structural_keys():
    """A tuned dimension's end whose budget is below the cheapest architecture is refused before the
    study, unless another tuned key sizes the network or the budget (a trial's draw may then fit); a
    network that cannot be built is refused either way."""
    from atldas import make_search_config
    from atldas.errors import BudgetBelowCheapest
    from atldas.tune import _build_end

    low = make_search_config(space="tiny", sets=["target_macs=1K"])
    with pytest.raises(BudgetBelowCheapest, match="below the cheapest"):
        _build_end(low, others=set())
    _build_end(low, others={"knobs.target_C"})
    with pytest.raises(ConfigError, match="C must be even") as info:
        _build_end(make_search_config(space="tiny", sets=["C=5"]), others={"budget.target_macs"})
    assert not isinstance(info.value, BudgetBelowCheapest)


def test_bad_tune_input_is_one_line(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("bogus: {type: int, low: 1, high: 2}\n")
    cases = [(["--space-file", str(tmp_path / "s.yaml")], "unknown key 'bogus'"),
             (["--storage", "sqlite:////no/such/folder/x.db"], "cannot open"),
             (["--trials", "0"], "--trials"),
             (["--prune"], "--prune needs the single objective loss"),
             (["--set", "C=0"], "C must be"),
             (["--objective", "sad", "macs"], "--objective sad needs --retrain-epochs"),
             (["--retrain-epochs", "1", "--retrain-set", "wings=2"], "wings"),
             (["--space", "planted", "--retrain-epochs", "1"], "retrain trains matting networks only"),
             (["--set", "k_max=2"], "k_max is tuned"),
             (["--set", "hp.arch_lr=0.01"], "hp.arch_lr is tuned"),
             (["--retrain-set", "lr=0.1"], "--retrain-set needs --retrain-epochs"),
             (["--retrain-epochs", "1", "--retrain-set", "epochs=3"], "give the retrain's length as --retrain-epochs"),
             # a retrain setting no retrain can use: five searches ran first, each retrain then refused
             (["--retrain-epochs", "1", "--retrain-set", "crop=33"], "--retrain-set: crop must be a multiple of 32"),
             (["--set", "plots=true"], "tune sets plots itself"),
             (["--threads", "1", "--set", "threads=2"], "--threads 1 and --set threads=2 disagree"),  # --set won  # overridden without a word
             (["--storage", str(tmp_path / "notes.txt")], "is not an Optuna journal file"),
             # checked before the study: five failed trials and their warnings came first before
             (["--set", "target_macs=1K"], "below the cheapest architecture"),
             (["--set", f"data={tmp_path / 'no_data'}"], "no_data"),
             # random search has no arch step: the default space's arch_lr was named as an unknown --set key
             (["--set", "strategy=random"], "default tuning space tunes arch_lr, a setting the random strategy does not")]
    (tmp_path / "dotted.yaml").write_text("hp.arch_lr: {type: float, low: 0.001, high: 0.1, log: true}\n")
    cases.append((["--space-file", str(tmp_path / "dotted.yaml"), "--set", "arch-lr=0.01"], "arch_lr is tuned"))
    # each tuned dimension's ends, before the study (a trial drawing them failed, five times, first)
    for name, text, expect in (("c.yaml", "C: {type: int, low: 0, high: 8}\n", "C=0 cannot run: C must be"),
                               ("k.yaml", "k_max: {type: int, low: 2, high: 40, step: 3}\n", "k_max=38 cannot run"),
                               ("strat.yaml", "strategy: {type: categorical, choices: [atldas, bogus]}\n",
                                "strategy=bogus cannot run: unknown strategy"),
                               # a tuned key of one tuned strategy only: every darts trial failed on it
                               # strategy listed after a key: the refusal still names the file, key and value
                               ("late.yaml", "w_lr: {type: float, low: 0.001, high: 0.1}\n"
                                "strategy: {type: categorical, choices: [atldas, bogus]}\n",
                                "late.yaml: w_lr=0.001 with strategy=bogus cannot run: unknown strategy"),
                               ("mix.yaml", "strategy: {type: categorical, choices: [atldas, darts]}\n"
                                "eps_min: {type: float, low: 0.1, high: 0.5}\n",
                                "mix.yaml tunes eps_min, a setting the darts strategy does not have"),
                               # refused where the network or the budget is built: five failed trials before
                               ("odd.yaml", "C: {type: int, low: 5, high: 9, step: 2}\n", "C=5 cannot run: "
                                "CheapMatting macro: C must be even"),
                               ("layers.yaml", "layers: {type: int, low: 1, high: 2}\n", "layers=1 cannot run"),
                               ("budget.yaml", "target_macs: {type: categorical, choices: [1K, 2K]}\n",
                                "target_macs=1K cannot run: budget 1.000 k MACs is below the cheapest")):
        (tmp_path / name).write_text(text)
        cases.append((["--space-file", str(tmp_path / name)], expect))
    (tmp_path / "notes.txt").write_text("my notes\n")
    for extra, expect in cases:
        assert main(["tune", "--space", "tiny", "--out", str(tmp_path / "t"), *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("atldas: error:") and expect in err[0], err
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"  # a file that is no journal is left untouched
    assert not (tmp_path / "t").exists()


def test_relative_data_paths_reach_the_trials_absolute(tmp_path, monkeypatch):
    """A trial's config.yaml recorded `--set backgrounds=bg` as given: `search --config TRIAL/config.yaml`
    from another folder named nothing. Existing paths of location keys go to tune absolute; other
    values (and a path that does not exist, for its error) as written."""
    import atldas.tune

    seen = {}

    def fake(**kw):
        seen.update(kw)
        return {"table": "", "study": "s", "finished": 0, "plot": "p"}

    monkeypatch.setattr(atldas.tune, "tune", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bg").mkdir()
    (tmp_path / "photos").mkdir()
    assert main(["tune", "--out", "t", "--set", "backgrounds=bg", "--set", "data=missing", "--set", "data.source = photos",
                 "--set", "epochs=2", "--retrain-epochs", "1", "--retrain-set", "val_data=photos"]) == 0
    assert seen["sets"] == [f"backgrounds={tmp_path / 'bg'}", "data=missing", f"data.source ={tmp_path / 'photos'}",
                            "epochs=2"]
    assert seen["retrain_sets"] == [f"val_data={tmp_path / 'photos'}"]


def test_a_study_with_other_objectives_is_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "t"
    monkeypatch.chdir(tmp_path)  # a relative --out; the later calls run from elsewhere with the absolute one
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", "t", "--quiet", *FAST]) == 0
    monkeypatch.chdir(tmp_path.parent)
    table = capsys.readouterr().out
    assert "Pareto front of 1 trial(s)" in table and (out / "pareto.png").is_file()
    front = json.loads((out / "pareto.json").read_text())["pareto"]
    assert (out / "best" / f"trial-{front[0]['trial']:04d}.json").is_file()
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), "--objective", "loss", "params"]) == 2
    assert "was created with objectives loss, macs" in capsys.readouterr().err
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), "--study", "other", *FAST]) == 2
    assert "holds the trials of study 'tune-tiny'; give study 'other' its own --out" in capsys.readouterr().err
    # a study in another storage: its trials numbered from 0 in the same folder dropped these from the front
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), "--storage", str(tmp_path / "b.log"),
                 *FAST]) == 2
    assert (f"holds the trials of a study stored in {out / 'study.log'}, not {tmp_path / 'b.log'}; give --storage"
            in capsys.readouterr().err) and not (tmp_path / "b.log").exists()
    # continued with other fixed settings (here the default epochs): one front of unlike trials before
    assert main(["tune", "--space", "tiny", "--trials", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "was run with other fixed settings: search.arch_steps_per_epoch: 3 (was 2)" in err, err
    assert sorted(p.name for p in out.glob("trial-*")) == ["trial-0000"]
    # a setting of how a trial runs, not what it computes, may differ
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), "--quiet", *FAST,
                 "--set", "threads=1"]) == 0


def test_a_trial_out_of_memory_fails_and_counts(tmp_path, capsys, monkeypatch):
    """An allocator error in a trial (a large C, batch or crop drawn) ended the worker with a traceback."""
    import atldas.tune as tune_mod

    def oom(cfg, **kw):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:116] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 1099511627776 bytes")

    monkeypatch.setattr(tune_mod, "search", oom)
    out = tmp_path / "t"
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "the last 5 trials of this worker failed" in err and "Traceback" not in err, err
    assert len(_study(out).get_trials()) == 5

    def bug(cfg, **kw):  # any other error is a bug: raised, not counted as a failed trial
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(tune_mod, "search", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), *FAST])


def test_a_trial_another_worker_ended_meanwhile_is_warned_and_the_worker_goes_on(tmp_path, capsys, caplog,
                                                                                 monkeypatch):
    """A live worker's trial that another worker marked failed (an RDB heartbeat taken as stale) crashed
    this worker at Optuna's tell ("Cannot tell a FAIL trial", then Optuna's own AssertionError)."""
    import optuna

    import atldas.tune as tune_mod

    out = tmp_path / "t"
    ended = []

    def ended_elsewhere(cfg, **kw):
        if not ended:  # the first trial only: another worker fails it while it runs
            st = _study(out)
            trial = next(t for t in st.get_trials() if t.state == optuna.trial.TrialState.RUNNING)
            st._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            ended.append(trial.number)

    monkeypatch.setattr(tune_mod, "search", ended_elsewhere)
    monkeypatch.setattr(tune_mod, "_objective_values", lambda run_dir, objectives: [1.0] * len(objectives))
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), *FAST]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert "tune: trial 0 was ended by another worker while this one ran it" in caplog.text, caplog.text
    states = [t.state for t in _study(out).get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE], states


def test_the_sad_objective_comes_from_a_short_retrain(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), "--quiet", *FAST,
                 "--objective", "sad", "macs", "--retrain-epochs", "1",
                 "--retrain-set", "steps_per_epoch=2", "--retrain-set", "val_count=2",
                 "--retrain-set", "batch_size=2", "--retrain-set", "crop=64", "--retrain-set", "val_size=64"]) == 0
    front = json.loads((out / "pareto.json").read_text())["pareto"]
    rows = [json.loads(r) for r in (Path(front[0]["run"]) / "retrain" / "history.jsonl").read_text().splitlines()]
    assert front[0]["values"][0] == pytest.approx(rows[-1]["best/SAD"]) and rows[-1]["best/SAD"] > 0
    assert "sad" in capsys.readouterr().out
    from atldas.matting.losses import LOSS_VERSION

    assert _study(out).user_attrs["atldas.settings"]["loss"] == LOSS_VERSION  # the tiny space's task: matting


def test_two_workers_one_killed_mid_trial(tmp_path):
    """Two worker processes share a journal file; one is SIGKILLed while it runs a trial. No finished
    trial is lost, the killed trial is marked failed and its settings are tried again, and the study
    reaches the requested number of finished trials."""
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "atldas", "tune", "--space", "tiny", "--trials", "4", "--out", str(out), "--quiet",
           "--threads", "1", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    a = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    b = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import optuna

    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline:  # kill a while it runs a trial
        time.sleep(0.2)
        if not (out / "study.log").exists():
            continue
        try:
            running = [t for t in _study(out).trials if t.state == optuna.trial.TrialState.RUNNING
                       and t.user_attrs.get("pid") == a.pid and (out / f"trial-{t.number:04d}" / "config.yaml").exists()]
        except Exception:  # noqa: BLE001 - the study may not exist yet
            continue
        if running:
            os.kill(a.pid, signal.SIGKILL)
            killed = running[0]
    assert killed is not None, "worker A never ran a trial"
    a.wait(timeout=30)
    assert b.wait(timeout=300) == 0, b.stderr.read().decode()
    trials = {t.number: t for t in _study(out).trials}
    states = optuna.trial.TrialState
    assert trials[killed.number].state == states.FAIL
    retries = [t for t in trials.values() if t.user_attrs.get("atldas.retry_of") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params and retries[0].state == states.COMPLETE
    assert sum(t.state == states.COMPLETE for t in trials.values()) >= 4
    assert not [t for t in trials.values() if t.state == states.RUNNING]


def test_a_worker_whose_trials_are_all_pruned_stops(tmp_path, capsys, monkeypatch):
    import optuna

    from atldas import tune

    monkeypatch.setattr(tune, "MAX_PRUNED", 3)
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune", lambda self, study, trial: True)
    out = tmp_path / "t"
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), "--objective", "loss", "--prune",
                 "--quiet", *FAST, "--set", "warmup_epochs=0"]) == 2
    assert "the last 3 trials of this worker were pruned" in capsys.readouterr().err
    assert len(_study(out).get_trials(states=(optuna.trial.TrialState.PRUNED,))) == 3


def test_a_trial_stopped_by_ctrl_c_is_run_again_once(tmp_path, monkeypatch):
    import optuna

    from atldas import tune

    def interrupted(cfg, callback=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune, "search", interrupted)
    out = tmp_path / "t"
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), "--quiet", *FAST]) == 130
    trials = _study(out).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert trials[1].user_attrs["atldas.retry_of"] == 0
    assert dict(trials[1].system_attrs["fixed_params"]) == trials[0].params


def test_a_trial_records_its_thread_count_and_a_non_finite_objective_fails(tmp_path, capsys, caplog, monkeypatch):
    """A trial's config.yaml said threads: null, so `search --config` of it ran at another thread count
    (another genotype); an objective of NaN was taken as a success by this worker and failed silently by
    Optuna, so the worker ran trials forever."""
    import yaml

    out = tmp_path / "t"
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), "--threads", "1", "--quiet", *FAST]) == 0
    assert yaml.safe_load((out / "trial-0000" / "config.yaml").read_text())["threads"] == 1
    capsys.readouterr()
    import atldas.tune as tune_mod

    monkeypatch.setattr(tune_mod, "search", lambda cfg, **kw: None)  # the objective alone matters here
    monkeypatch.setattr(tune_mod, "_objective_values", lambda run_dir, objectives: [float("nan")] * len(objectives))
    assert main(["tune", "--space", "tiny", "--trials", "2", "--out", str(out), "--threads", "1", *FAST]) == 2
    assert "the last 5 trials of this worker failed" in capsys.readouterr().err
    assert caplog.text.count("its objective is not finite (loss=nan") == 5, caplog.text


def test_tune_leaves_optuna_s_logging_as_it_found_it(tmp_path, capsys):
    """tune quieted Optuna's logger to ERROR for the rest of the process, also when it failed."""
    import logging

    logger = logging.getLogger("optuna")
    before = logger.level
    try:
        logger.setLevel(logging.INFO)
        assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(tmp_path / "t"), "--set", "crop=100000"]) == 2
        assert logger.level == logging.INFO
        assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(tmp_path / "u"), "--quiet", *FAST]) == 0
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(before)


@pytest.mark.parametrize("recorded", ["bare", "now", "other"])
def test_a_dead_worker_of_an_older_atldas_is_found(recorded):
    """Before host_id(), trials recorded the bare host name: a killed worker of such a study is this
    machine's, marked failed and its settings queued again; another machine's is left alone."""
    import socket

    import optuna

    from atldas.tune import fail_dead_trials
    from atldas.utils.atomic import host_id

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("arch_lr", 1e-3, 1e-1, log=True)
    trial.set_user_attr("host", {"bare": socket.gethostname(), "now": host_id(), "other": "elsewhere-1"}[recorded])
    trial.set_user_attr("pid", gone.pid)
    found = fail_dead_trials(study)
    states = [t.state for t in study.get_trials()]
    if recorded == "other":
        assert found == 0 and states == [optuna.trial.TrialState.RUNNING]
    else:
        assert found == 1 and states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
        again = study.ask()  # the queued trial: the dead one's settings
        assert again.suggest_float("arch_lr", 1e-3, 1e-1, log=True) == trial.params["arch_lr"]


def test_a_study_of_an_older_atldas_without_settings_is_warned_about(caplog):
    import optuna

    from atldas.tune import open_study

    storage = optuna.storages.InMemoryStorage()
    old = optuna.create_study(storage=storage, study_name="s")  # an older atldas: no settings recorded
    old.set_user_attr("atldas.objectives", ["loss"])
    old.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with caplog.at_level("WARNING", logger="atldas"):
        study = open_study(storage, "s", ["loss"], settings={"space": "tiny", "loss": "v2"})
    assert "holds 2 finished trial(s) of an atldas that did not record" in caplog.text
    assert study.user_attrs["atldas.settings"] == {"space": "tiny", "loss": "v2"}
    caplog.clear()
    with caplog.at_level("WARNING", logger="atldas"):  # recorded now: the next worker is compared, not warned
        open_study(storage, "s", ["loss"], settings={"space": "tiny", "loss": "v2"})
    assert "did not record" not in caplog.text


def test_a_study_of_another_loss_definition_is_refused():
    import optuna

    from atldas.errors import AtldasError
    from atldas.tune import open_study

    storage = optuna.storages.InMemoryStorage()
    open_study(storage, "s", ["loss"], settings={"space": "matting", "loss": "gca-old"})
    with pytest.raises(AtldasError, match=r"another definition of its task's loss \(gca-old\) than this atldas's "
                       r"\(gca-new\): their values do not compare"):
        open_study(storage, "s", ["loss"], settings={"space": "matting", "loss": "gca-new"})



def test_a_study_recorded_before_its_loss_was_records_it_then_refuses_another():
    import optuna

    from atldas.errors import AtldasError
    from atldas.tune import open_study

    storage = optuna.storages.InMemoryStorage()
    open_study(storage, "s", ["loss"], settings={"space": "tiny"})  # an atldas of before the loss was recorded
    study = open_study(storage, "s", ["loss"], settings={"space": "tiny", "loss": "v2"})
    assert study.user_attrs["atldas.settings"] == {"space": "tiny", "loss": "v2"}
    with pytest.raises(AtldasError, match=r"\(v2\) than this atldas's \(unversioned\)"):
        open_study(storage, "s", ["loss"], settings={"space": "tiny"})  # a Python caller without the key
