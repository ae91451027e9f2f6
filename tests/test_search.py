"""`atldas search` end to end on the tiny space: run directory, resume after a kill, NaN handling,
the baseline strategies, and user errors."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from atldas.cli import main
from atldas.errors import AtldasError
from atldas.run import Run, make_search_config
from atldas.search import search
from atldas.tasks import get_task
from atldas.utils.checkpoint import load_checkpoint

FAST = ["--space", "tiny", "--no-progress", "--set", "tensorboard=false"]


def test_search_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    assert main(["search", *FAST, "--epochs", "3", "--target-macs", "12M", "--out", str(out)]) == 0
    for name in ("config.yaml", "checkpoint.pt", "genotype.json", "history.jsonl"):
        assert (out / name).is_file(), name
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert {"loss/weights", "cost/expected", "cost/derived", "lambda"} <= set(rows[-1])
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)  # data, never code
    assert {"supernet", "strategy", "masks", "rng", "epoch", "config"} <= set(ckpt)
    g = json.loads((out / "genotype.json").read_text())
    assert g["format"] == "atldas-genotype/1"
    assert g["cost"]["macs"] <= 12e6 and g["cost"]["repair"]["feasible"]
    assert "darts" in g  # in-degree 2: the DARTS string is present
    # resolved config: every default written out
    text = (out / "config.yaml").read_text()
    assert "steps_per_epoch: 3" in text and "target_layers: 3" in text


def test_heatmaps_are_drawn_every_k_epochs_and_after_the_last(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--no-progress", "--epochs", "3", "--set", "warmup_epochs=1",
                 "--set", "heatmap_every=2", "--set", "plots=false", "--out", str(out)]) == 0
    events = EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for tag in ("alpha/normal", "beta/reduce", "cells/normal", "cells/reduce"):  # the second epoch, and the last
        assert [e.step for e in events.Images(tag)] == [1, 2], tag
    assert [e.step for e in events.Scalars("loss/weights")] == [0, 1, 2]  # scalars every epoch
    assert "epoch" not in events.Tags()["scalars"]  # the step is the epoch: no scalar of it
    assert main(["search", *FAST, "--set", "heatmap_every=-1", "--out", str(tmp_path / "bad")]) == 2
    assert "heatmap_every must be an integer in 0..1000000" in capsys.readouterr().err


def test_derive_cli_rewrites_the_genotype(tmp_path, tiny_run):
    out = tiny_run
    before = json.loads((out / "genotype.json").read_text())
    assert main(["derive", str(out), "--out", str(tmp_path / "g.json")]) == 0
    after = json.loads((tmp_path / "g.json").read_text())
    assert after["cells"] == before["cells"] and after["cost"]["macs"] == before["cost"]["macs"]


def _arch_state(out: Path):
    sd = load_checkpoint(out / "checkpoint.pt")["supernet"]
    return {k: v for k, v in sd.items() if k.startswith("arch.")}


_KILLED_RUN = """
import os, signal, sys
from atldas.run import make_search_config
from atldas.search import search

kill_after = int(sys.argv[2])

def callback(row):  # called after each epoch's checkpoint: a real SIGKILL, at a fixed point
    if row["epoch"] == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

search(make_search_config(space="tiny", epochs=8, seed=3, threads=1, out=sys.argv[1],
                          sets=["tensorboard=false", "progress=false", "plots=false", "prune_every=2",
                                "target_macs=5.9M"]),  # a budget: its multiplier is resumed too
       callback=callback if kill_after >= 0 else None)
"""


def test_resume_after_kill_ends_in_the_same_state(tmp_path):
    # every run in a fresh process: float results depend on torch's thread count, which other tests
    # in this process may have changed
    ref, run = tmp_path / "ref", tmp_path / "killed"
    subprocess.run([sys.executable, "-c", _KILLED_RUN, str(ref), "-1"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(run), "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 2
    assert not (run / "plots").exists()

    subprocess.run([sys.executable, "-m", "atldas", "search", "--out", str(run), "--resume", "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert json.loads((run / "genotype.json").read_text())["cells"] == \
        json.loads((ref / "genotype.json").read_text())["cells"]
    a, b = _arch_state(run), _arch_state(ref)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(8))
    lams = [json.loads(x)["lambda"] for x in (ref / "history.jsonl").read_text().splitlines()]
    assert [r["lambda"] for r in rows] == lams and len(set(lams)) > 2  # the multiplier moved, and resumed


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    task = get_task("matting")  # the tiny space's task: the loss lives there now
    calls = {"n": 0}
    real = type(task).loss

    def flaky(self, pred, batch):
        calls["n"] += 1
        loss = real(self, pred, batch)
        return loss * float("nan") if calls["n"] > 8 else loss

    monkeypatch.setattr(type(task), "loss", flaky)
    out = tmp_path / "nan"
    with pytest.raises(AtldasError, match="non-finite.*last good checkpoint"):
        search(make_search_config(space="tiny", epochs=3, out=str(out), tensorboard=False, progress=False))
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 0  # epoch 1 finished before the NaN; nothing after it was written
    assert all(torch.isfinite(v).all() for v in ckpt["supernet"].values() if v.is_floating_point())


def test_a_non_finite_state_stops_before_its_checkpoint(tmp_path, monkeypatch):
    """Arch logits, the budget's multiplier or an optimizer's moments that turn non-finite with a
    finite loss (lam_init=1e300, rho=1e39): the checkpoint of that epoch overwrote the good one, a
    genotype was derived from NaN logits and the search ended with status 0. Now the epoch stops before
    anything of it is written, naming the first bad tensor."""
    from atldas.strategies import AtldasStrategy
    from atldas.utils.weights import first_non_finite

    real = AtldasStrategy.end_epoch

    def poisoned(self, epoch):
        events = real(self, epoch)
        if epoch == 1:
            with torch.no_grad():
                self.net.arch.alpha["normal"].view(-1)[3] = float("nan")
        return events

    monkeypatch.setattr(AtldasStrategy, "end_epoch", poisoned)
    out = tmp_path / "run"
    with pytest.raises(AtldasError, match=r"state became non-finite in epoch 2 \(first: supernet\.arch\.alpha\.normal\); "
                                          "the last good checkpoint is kept"):
        search(make_search_config(space="tiny", epochs=3, out=str(out), tensorboard=False, progress=False))
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 0 and first_non_finite(ckpt) is None
    assert len((out / "history.jsonl").read_text().splitlines()) == 1
    assert first_non_finite({"a": [1.0, {"b": torch.tensor([0.0, float("inf")])}]}) == "a.1.b"
    assert first_non_finite({"a": torch.tensor([1, 2]), "b": float("nan")}) == "b"


def test_a_finite_but_diverging_weight_loss_is_warned(tmp_path, monkeypatch, caplog):
    """`--set w_lr=10` ended `epoch 3/3: loss 3.7e23` and `search finished` without a word."""
    task = get_task("matting")
    real, calls = type(task).loss, {"n": 0}
    steps = make_search_config(space="tiny").steps_per_epoch

    def growing(self, pred, batch):
        calls["n"] += 1
        return real(self, pred, batch) * (1e4 if calls["n"] > 2 * steps else 1.0)

    monkeypatch.setattr(type(task), "loss", growing)
    caplog.set_level("WARNING", logger="atldas")
    run = Run(make_search_config(space="tiny", epochs=3, tensorboard=False, progress=False, sets=["arch_steps_per_epoch=0"]))
    run.fit()
    assert caplog.text.count("is over 1000 times the lowest epoch's") == 1 and "the search is diverging" in caplog.text


def test_the_time_left_counts_the_checkpoint_and_names_the_select_stage(tmp_path, monkeypatch, caplog):
    """An epoch line's estimate was the training time alone: a slow checkpoint (or heatmaps, genotype)
    and the select stage after the last epoch were left out ("about 30 s left" of 110 s)."""
    import re
    import time

    from atldas.rundir import RunDir

    save = RunDir.save
    monkeypatch.setattr(RunDir, "save", lambda self, *a, **k: (time.sleep(1.0), save(self, *a, **k))[1])
    caplog.set_level("INFO", logger="atldas")
    run = Run(make_search_config(space="tiny", sets=["epochs=3", "warmup_epochs=1", "steps_per_epoch=1",
                                                     "arch_steps_per_epoch=1", "tensorboard=false", "progress=false",
                                                     "select=2", "select_steps=2", "select_keep=0"]),
              out=tmp_path / "s")
    run.fit()
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 2/3"))
    left = re.search(r"about (\d+) s left, then the select stage$", line)
    assert left is not None and int(left.group(1)) >= 1, line
    last = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 3/3"))
    assert "left" not in last and "select stage" not in last, last
    # the select stage's record stays with the genotype (it was on stderr only)
    g = run.final_genotype()
    rec = json.loads(json.dumps(g.to_json()))["provenance"]["select"]
    assert rec["candidates"] == len(rec["scores"]) == 2 and {rec["own"], rec["chosen"]} <= set(rec["scores"])
    assert rec["scores"][rec["chosen"]] == min(rec["scores"].values())


@pytest.mark.parametrize("handler", ["_interrupt", "_terminate"])
def test_a_signal_whose_exception_python_swallowed_still_stops_the_run(tmp_path, monkeypatch, capsys, handler):
    """A Ctrl-C or SIGTERM landing in a weakref callback or a __del__ is printed as "Exception ignored"
    and dropped: the run went on (3 of 24 Ctrl-Cs in a review; one search wrote 100 more epochs). The
    handler also asks for the stop, and the next step raises it."""
    import atldas.cli as cli
    from atldas.strategies import AtldasStrategy
    from atldas.utils import stop

    steps = []
    real = AtldasStrategy.weight_step

    def step(self, batch, x):
        steps.append(1)
        if len(steps) == 2:  # the signal arrives where Python drops what the handler raises
            try:
                getattr(cli, handler)(signal.SIGINT, None)
            except KeyboardInterrupt:
                pass
        return real(self, batch, x)

    monkeypatch.setattr(AtldasStrategy, "weight_step", step)
    monkeypatch.setattr(signal, "signal", lambda *a: signal.SIG_DFL)  # the test's own handlers stay as they are
    out = tmp_path / "s"
    code = main(["search", "--space", "tiny", "--epochs", "3", "--no-progress", "--set", "tensorboard=false",
                 "--set", "steps_per_epoch=3", "--out", str(out)])
    assert code == (130 if handler == "_interrupt" else 143) and len(steps) == 2, (code, steps)
    assert stop.requested() is None  # main forgets it when the command ends
    assert not (out / "genotype.json").exists() or json.loads((out / "genotype.json").read_text())["provenance"].get("interim")


def test_a_finished_run_keeps_no_loader_workers(tmp_path):
    """A Run kept after fit() (to call final_genotype, as the README does) held its loaders' worker
    processes (num_workers > 0 keeps them between epochs): two processes, pipes and threads per run."""
    import multiprocessing

    run = Run(make_search_config(space="tiny", sets=["epochs=2", "steps_per_epoch=2", "arch_steps_per_epoch=1",
                                                     "num_workers=1", "tensorboard=false", "progress=false"]),
              out=tmp_path / "s")
    before = len(multiprocessing.active_children())
    run.fit(epochs=1)
    assert len(multiprocessing.active_children()) > before  # kept between epochs, as designed
    run.fit()
    assert len(multiprocessing.active_children()) == before
    assert run.final_genotype().hash()


def test_resuming_a_finished_run_adds_no_event_file(tmp_path):
    """Each --resume of a finished search (or retrain) wrote a new TensorBoard event file holding only a
    purge marker."""
    from atldas.cli import main

    out = tmp_path / "s"
    assert main(["search", "--space", "tiny", "--epochs", "2", "--no-progress", "--set", "steps_per_epoch=1",
                 "--set", "arch_steps_per_epoch=1", "--out", str(out)]) == 0
    assert main(["retrain", str(out), "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r"),
                 "--set", "steps_per_epoch=1", "--set", "crop=32", "--set", "batch_size=2", "--set", "val_count=1",
                 "--set", "val_size=32"]) == 0
    for run, verb in ((out, "search"), (tmp_path / "r", "retrain")):
        events = sorted((run / "tb").iterdir())
        assert len(events) == 1, events
        assert main([verb, "--resume", "--out", str(run), "--no-progress"]) == 0
        assert sorted((run / "tb").iterdir()) == events, verb


def test_scores_that_are_not_finite_rank_last_and_none_finite_is_an_error():
    """min() over [nan, 1.0] is nan: a random search whose shared weights diverged took its first
    candidate without a word, and a select stage whose first fit was NaN kept it."""
    from atldas.utils.ranking import lowest

    assert lowest({"a": float("nan"), "b": 2.0, "c": 1.0}, what="w", hint="h") == "c"
    assert lowest({"a": float("inf"), "b": 2.0}, what="w", hint="h") == "b"
    with pytest.raises(AtldasError, match=r"^w: no finite score among 2 \(nan, inf\); h$"):
        lowest({"a": float("nan"), "b": float("inf")}, what="w", hint="h")
    run = Run(make_search_config(space="tiny", strategy="random", tensorboard=False, progress=False))
    with pytest.raises(AtldasError, match="random search: the candidates' held-out losses on the shared weights: no "
                                          "finite score among 16"):
        run.strategy.derive(lambda child: float("nan"))
    with pytest.raises(AtldasError, match=r"lam_init must be at most 100 \(the multiplier's bound\), got 1000.0"):
        make_search_config(space="tiny", target_macs=20e6, sets=["lam_init=1000"])


@pytest.mark.parametrize("strategy", ["darts", "gdas", "random", "soft"])
def test_baseline_strategies_run_and_meet_the_budget(tmp_path, strategy):
    out = tmp_path / strategy
    assert main(["search", *FAST, "--strategy", strategy, "--epochs", "2", "--target-macs", "12M",
                 "--out", str(out)]) == 0
    g = json.loads((out / "genotype.json").read_text())
    assert g["provenance"]["strategy"] == strategy
    assert g["cost"]["macs"] <= 12e6
    ops = {op for cell in g["cells"].values() for node in cell["nodes"] for op, _ in node["inputs"]}
    assert "none" not in ops and all(len(n["inputs"]) == 2 for n in g["cells"]["normal"]["nodes"])


def test_variable_in_degree_search(tmp_path):
    out = tmp_path / "k13"
    assert main(["search", *FAST, "--epochs", "2", "--set", "k_min=1", "--set", "k_max=3",
                 "--out", str(out)]) == 0
    g = json.loads((out / "genotype.json").read_text())
    assert g["space"]["in_degree"] == [1, 3]


def test_pruning_deletes_parameters(tmp_path):
    out = tmp_path / "prune"
    assert main(["search", *FAST, "--epochs", "4", "--set", "prune_ratio=0.9", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert any("pruning" in r for r in rows)
    params = [r["params/supernet"] for r in rows]
    assert params[-1] < params[0]
    # a pruned run's checkpoint derives and resumes (its supernet has lost the pruned candidates)
    assert main(["derive", str(out), "--out", str(tmp_path / "g.json")]) == 0
    assert json.loads((tmp_path / "g.json").read_text())["cells"] == json.loads((out / "genotype.json").read_text())["cells"]
    assert main(["search", *FAST, "--resume", "--out", str(out)]) == 0


def test_user_errors_are_one_line(tmp_path, capsys, tiny_run):
    cases = [
        (["search", *FAST, "--target-macs", "1M", "--out", str(tmp_path / "a")], "below the cheapest"),
        (["search", *FAST, "--target-macs", "9M", "--target-params", "1M", "--out", str(tmp_path / "b")],
         "give one budget"),
        (["search", "--space", "nope", "--out", str(tmp_path / "c")], "known search spaces: "),
        (["search", *FAST, "--strategy", "enas", "--out", str(tmp_path / "d")], "known strategies: atldas, darts, gdas, random"),
        (["search", *FAST, "--set", "bogus=1", "--out", str(tmp_path / "e")], "unknown key"),
        (["search", *FAST, "--resume", "--out", str(tmp_path / "f")], "does not exist"),
        (["derive", str(tmp_path / "nowhere")], "not a search run directory"),
    ]
    for argv, expect in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], (argv, err)
    # a second search into a finished run directory is refused, the run is untouched
    out = tiny_run
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["search", *FAST, "--epochs", "2", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_channels_last_supernet_computes_the_same_loss(tmp_path):
    """The default channels_last supernet holds its conv weights and inputs in that format and computes
    what the contiguous one does (same seed, same child)."""
    from torch.utils.data import default_collate

    losses = {}
    for cl in (True, False):
        run = Run(make_search_config(space="tiny", channels_last=cl, tensorboard=False, progress=False),
                  out=tmp_path / str(cl))
        train, _ = run.task.datasets(run.cfg.data, seed=run.cfg.seed, n_train=2, n_arch=2)
        batch = default_collate([train[i] for i in range(2)])
        x = run.model_input(batch)
        convs = [m.weight for m in run.net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.dim() == 4]
        assert x.is_contiguous(memory_format=torch.channels_last) == cl
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs) == cl
        child = run.net.arch.sample(epsilon=1.0, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            losses[cl] = float(run.task.loss(run.net(x, run.net.plan(child)), batch))
    assert abs(losses[True] - losses[False]) < 1e-4 * max(1.0, abs(losses[False]))


def test_parameter_free_cells_are_flagged(caplog):
    from atldas.derive import parameter_free_cells
    from atldas.genotype import CellSpec, Genotype

    free = CellSpec(nodes=[[("skip_connect", 0), ("avg_pool_3x3", 1)], [("max_pool_3x3", 0), ("skip_connect", 2)]],
                    concat=[2, 3])
    learned = CellSpec(nodes=[[("sep_conv_3x3", 0), ("avg_pool_3x3", 1)], [("max_pool_3x3", 0), ("skip_connect", 2)]],
                       concat=[2, 3])
    assert parameter_free_cells(Genotype(normal=free, reduce=learned)) == ["normal"]
    assert parameter_free_cells(Genotype(normal=learned, reduce=learned)) == []
    # a stride-2 skip_connect in a reduction cell is a FactorizedReduce: it has weights
    assert parameter_free_cells(Genotype(normal=learned, reduce=free)) == []
    # a custom op is judged by its parameters (the list of free ops was the built-in ones only)
    import atldas
    from torch import nn

    atldas.register_op("test_avg_pool_5x5", lambda *, C_in, C_out, stride, affine: nn.AvgPool2d(
        5, stride=stride, padding=2, count_include_pad=False))
    try:
        custom = CellSpec(nodes=[[("skip_connect", 0), ("test_avg_pool_5x5", 1)], [("test_avg_pool_5x5", 0),
                                                                                   ("skip_connect", 2)]],
                          concat=[2, 3])
        assert parameter_free_cells(Genotype(normal=custom, reduce=learned)) == ["normal"]
    finally:
        atldas.OPS.remove("test_avg_pool_5x5")


def test_autocast_forward_stays_near_float32(tmp_path):
    """The strategy's forward under bf16 autocast (the CUDA path of ``--set amp``; CPU autocast runs the
    same code) returns float32, a finite loss near the full-precision one, and trains the weights."""
    from torch.utils.data import default_collate

    run = Run(make_search_config(space="tiny", tensorboard=False, progress=False), out=tmp_path / "r")
    assert run.strategy.amp_dtype is None  # the CPU runs in float32 whatever --set amp says
    train, _ = run.task.datasets(run.cfg.data, seed=run.cfg.seed, n_train=2, n_arch=2)
    batch = default_collate([train[i] for i in range(2)])
    x = run.model_input(batch)
    run.net.eval()  # BatchNorm statistics untouched, so both passes see the same network
    plan = run.net.plan(run.net.arch.sample(epsilon=1.0, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        full = run.strategy._forward(x, plan)
        run.strategy.amp_dtype = torch.bfloat16
        half = run.strategy._forward(x, plan)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert 0 < float((half - full).abs().max()) < 0.1
    run.net.train()
    before = [p.detach().clone() for p in run.net.weight_parameters()]
    metrics = run.strategy.weight_step(batch, x)
    assert metrics["loss/weights"] == metrics["loss/weights"]  # not NaN
    assert any(not torch.equal(a, p) for a, p in zip(before, run.net.weight_parameters()))


def test_search_amp_modes_are_checked():
    from atldas.errors import ConfigError

    for mode, fragment in (("fp16", "bf16 only"), ("half", "unknown amp mode")):
        cfg = make_search_config(space="tiny", sets=[f"amp={mode}"])
        with pytest.raises(ConfigError, match=fragment):
            cfg.check(get_task(cfg.task or "matting"))


def test_multi_tensor_weight_optimizer_leaves_the_search_unchanged(tmp_path, monkeypatch):
    """The supernet's AdamW runs ``foreach`` (fewer tiny ops per weight step): a short search ends in
    the same weights and logits, bit for bit, as with the per-tensor loop."""
    from atldas import strategies

    states = {}
    real = strategies.Strategy._make_w_opt
    for foreach in (True, False):
        def make(self, foreach=foreach):
            opt = real(self)
            assert opt.defaults["foreach"] is True
            for g in opt.param_groups:
                g["foreach"] = foreach
            return opt

        monkeypatch.setattr(strategies.Strategy, "_make_w_opt", make)
        run = Run(make_search_config(space="tiny", epochs=3, tensorboard=False, progress=False, threads=1),
                  out=tmp_path / str(foreach))
        run.fit()
        states[foreach] = run.net.state_dict()
    assert states[True].keys() == states[False].keys()
    assert all(torch.equal(states[True][k], states[False][k]) for k in states[True])


def test_learn_topology_false_leaves_the_topology_logits_as_they_were(tmp_path):
    """--set learn_topology=false: the arch steps move the op logits, never the topology logits."""
    def final_arch(*sets):
        run = Run(make_search_config(space="tiny", sets=["tensorboard=false", "progress=false", "plots=false",
                                                        f"out={tmp_path / ('r' + str(len(sets)))}", *sets]))
        start = {k: v.detach().clone() for k, v in run.net.arch.named_parameters()}
        run.fit(epochs=3)
        return start, dict(run.net.arch.named_parameters())

    start, end = final_arch("learn_topology=false")
    assert any(k.startswith("beta.") for k in start)
    for k, v in end.items():
        if k.startswith("beta."):
            assert torch.equal(v.detach(), start[k]), k
        if k.startswith("alpha."):
            assert not torch.equal(v.detach(), start[k]), k
    start, end = final_arch()
    assert any(not torch.equal(end[k].detach(), start[k]) for k in start if k.startswith("beta."))


def test_the_soft_ablation_learns_the_topology_through_pi_and_runs_every_op(tmp_path, monkeypatch):
    """algorithm.md's ablation "soft instead of sample" had no way to run (only DARTS used the soft
    mixture, with every edge weighted 1): ``--strategy soft`` weights each edge by pi and each op by p."""
    from atldas.supernet import Plan

    seen = []
    mixture = Plan.soft_mixture
    monkeypatch.setattr(Plan, "soft_mixture", classmethod(
        lambda cls, arch, *, edge_weights=None: seen.append(edge_weights) or mixture.__func__(cls, arch,
                                                                                          edge_weights=edge_weights)))
    run = Run(make_search_config(space="tiny", strategy="soft", sets=["tensorboard=false", "progress=false",
                                                                       "plots=false", f"out={tmp_path / 's'}"]))
    assert "none" not in run.net.arch.op_names  # ATL-DAS's ops
    start = {k: v.detach().clone() for k, v in run.net.arch.named_parameters()}
    run.fit(epochs=3)
    assert seen and all(w is None for w in seen)  # pi, not ones
    moved = {k for k, v in run.net.arch.named_parameters() if not torch.equal(v.detach(), start[k])}
    assert any(k.startswith("beta.") for k in moved) and any(k.startswith("alpha.") for k in moved)


def test_derive_loads_a_gpu_search_on_the_cpu(tiny_run, tmp_path):
    """A run directory searched with --device cuda derives on a machine without a GPU (and with one)."""
    import shutil

    from atldas.cli import main
    from atldas.genotype import Genotype

    run = tmp_path / "gpu_run"
    shutil.copytree(tiny_run, run)
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("device: cpu", "device: cuda", 1))
    assert "device: cuda" in cfg.read_text()
    assert main(["derive", str(run), "--out", str(tmp_path / "g.json")]) == 0
    assert Genotype.load(tmp_path / "g.json").hash() == Genotype.load(tiny_run / "genotype.json").hash()


def test_a_checkpoint_of_another_run_is_refused_in_one_line(tiny_run, tmp_path, capsys):
    """derive and --resume check the checkpoint against the run: another kind's file (a retrain
    checkpoint renamed) and a supernet of another config are one line each, and nothing is written."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    torch.save({"format": "atldas-retrain/1", "model": ckpt["supernet"]}, run / "checkpoint.pt")
    assert main(["derive", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an atldas search checkpoint" in err[0], err

    torch.save(ckpt, run / "checkpoint.pt")
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("  C: 8\n", "  C: 12\n", 1))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for argv in (["derive", str(run)], ["search", *FAST, "--resume", "--out", str(run)]):
        assert main(argv) == 2, argv  # config.yaml edited since the checkpoint: named
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "differs from the config its checkpoint was searched with: knobs.C: 12 (was 8)" in err[0]
    ckpt["config"]["knobs"]["C"] = 12  # a checkpoint whose own config says so, its tensors another width's
    torch.save(ckpt, run / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for argv in (["derive", str(run)], ["search", *FAST, "--resume", "--out", str(run)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "does not fit the supernet of this run's config.yaml" in err[0], (argv, err)
        assert "shape mismatch" in err[0]
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resume_runs_on_the_thread_count_the_run_ran_on(tiny_run, tmp_path):
    """A resumed run's floats depend on torch's thread count, which the CLI chooses from the machine's
    load when --threads is not given: --resume takes the count from the checkpoint instead."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["threads"] >= 1
    before = torch.get_num_threads()
    ckpt["threads"] = before + 1
    # a run made before config.yaml recorded the count (now it does: the test below)
    ckpt["config"]["threads"] = None
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace(f"\nthreads: {before}\n", "\nthreads: null\n"))
    torch.save(ckpt, run / "checkpoint.pt")
    try:
        Run.load(run, restore_rng=True)
        assert torch.get_num_threads() == before + 1
        torch.set_num_threads(before)
        Run.load(run)  # derive: no change
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_a_fresh_run_records_the_thread_count_it_ran_at(tmp_path):
    """Without --threads the thread policy picks the count from the machine's load, and config.yaml said
    ``threads: null``: ``search --config RUN/config.yaml`` (or retrain's) then ran at another count, with
    other floats. A fresh run's config.yaml, and its checkpoint's config, record the count."""
    import yaml

    from atldas.cli import main
    from atldas.utils.seed import torch_threads

    with torch_threads(2):
        assert main(["search", "--space", "tiny", "--epochs", "2", "--no-progress", "--set", "tensorboard=false",
                     "--set", "steps_per_epoch=2", "--out", str(tmp_path / "s")]) == 0
        assert main(["retrain", str(tmp_path / "s"), "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r"),
                     "--set", "steps_per_epoch=1", "--set", "crop=32", "--set", "batch_size=2", "--set", "val_count=1",
                     "--set", "val_size=32", "--set", "tensorboard=false"]) == 0
    for run, ckpt in (("s", "checkpoint.pt"), ("r", "last.pt")):
        assert yaml.safe_load((tmp_path / run / "config.yaml").read_text())["threads"] == 2, run
        assert torch.load(tmp_path / run / ckpt, weights_only=True)["config"]["threads"] == 2, run
    # a GPU run's floats do not depend on it, and its host's count would be imposed where it is derived
    from atldas.utils.seed import pin_threads

    gpu = make_search_config(space="tiny", device="cuda")
    assert pin_threads(gpu) is gpu and pin_threads(make_search_config(space="tiny")).threads == torch.get_num_threads()


def test_forward_each_shares_the_stems_without_gradients_and_gives_one_forwards_floats(tmp_path):
    """An arch step's children on one input: without gradients the matting supernet runs its first two
    stems once for all of them; the outputs, and the BatchNorm statistics the children leave, are those
    of one forward each, bit for bit. With gradients it is one forward each."""
    from torch.utils.data import default_collate

    run = Run(make_search_config(space="tiny", tensorboard=False, progress=False), out=tmp_path)
    train, _ = run.task.datasets(run.cfg.data, seed=run.cfg.seed, n_train=2, n_arch=2)
    batch = default_collate([train[i] for i in range(2)])
    x, net = run.model_input(batch), run.net
    g = torch.Generator().manual_seed(5)
    plans = [net.plan(net.arch.sample(epsilon=1.0, generator=g)) for _ in range(3)]
    assert net._stems_stateless
    calls = []
    net.stem05.register_forward_hook(lambda *_: calls.append(1))
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        one_each = [net(x, p) for p in plans]
    after_one_each = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(start)
    calls.clear()
    with torch.no_grad():
        shared = net.forward_each(x, plans)
    assert len(calls) == 1
    assert all(torch.equal(a, b) for a, b in zip(one_each, shared))
    assert all(torch.equal(after_one_each[k], v) for k, v in net.state_dict().items())
    calls.clear()
    assert len(net.forward_each(x, plans)) == 3 and len(calls) == 3  # with gradients: one forward each


def test_resume_refuses_a_config_yaml_edited_since_the_checkpoint(tmp_path, capsys):
    """config.yaml edited between an interruption and --resume (more epochs, another learning rate):
    the run went on with the new settings silently (epochs could grow past the CLI's own refusal)."""
    out = tmp_path / "run"
    cfg = make_search_config(space="tiny", out=str(out), sets=["epochs=3", "tensorboard=false", "progress=false"])
    Run(cfg, out=out).fit(epochs=1)
    text = (out / "config.yaml").read_text()
    assert "\nepochs: 3\n" in text
    (out / "config.yaml").write_text(text.replace("\nepochs: 3\n", "\nepochs: 5\n"))
    for argv in (["search", "--out", str(out), "--resume", "--no-progress"], ["derive", str(out)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "differs from the config its checkpoint was searched with: epochs: 5 (was 3)" in err, err
    (out / "config.yaml").write_text(text)
    assert main(["search", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert len((out / "history.jsonl").read_text().splitlines()) == 3


def test_a_run_of_another_loss_definition_is_warned_on_load(tiny_run, tmp_path, caplog):
    """Checkpoints record the task loss's version; a run searched with another one is warned about when it
    resumes or derives (the matting losses took GCA's conventions on 2026-12-06 with no config key)."""
    import logging
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["loss_version"] == Run.load(run).task.loss_version != ""
    ckpt["loss_version"] = "old"
    torch.save(ckpt, run / "checkpoint.pt")
    with caplog.at_level(logging.WARNING, logger="atldas"):
        Run.load(run)
    assert "searched with another definition of the matting loss (old) than this atldas's" in caplog.text


def test_a_search_on_a_composed_set_of_few_foregrounds_takes_its_steps_with_fresh_composites(tmp_path):
    """4 foregrounds (2 per split), batch 2, 5 steps: every epoch takes its 5 weight and 5 arch batches of
    distinct composites (the weight split was one pass over its 2 foregrounds: 1 step an epoch while the
    log said 5; the arch split cycled through the same 2 samples)."""
    from tests.test_retrain import _composition_1k

    root = _composition_1k(tmp_path / "c1k")
    import numpy as np

    from atldas.data.io import write_alpha, write_rgb
    write_rgb(root / "Training_set/fg/f3.png", np.full((64, 64, 3), 0.5))
    write_alpha(root / "Training_set/alpha/f3.png", np.pad(np.ones((20, 20)), 22))
    cfg = make_search_config(space="tiny", sets=[f"data.source={root}", f"data.backgrounds={root / 'backgrounds'}",
                                                 "data.batch_size=2", "data.crop=32", "steps_per_epoch=5",
                                                 "arch_steps_per_epoch=5", "epochs=2", "tensorboard=false",
                                                 "progress=false"])
    run = Run(cfg, out=tmp_path / "run")
    train, arch, _, _, ts, As = run._loaders()
    seen = set()
    for epoch in (0, 1):
        for data, sampler in ((train, ts), (arch, As)):
            sampler.set_epoch(epoch)
            data.set_epoch(epoch)
            keys = [i for batch in sampler for _, i in batch]
            assert len(keys) == 10 and len(set(keys)) == 10, keys
            images = {np.asarray(data[i]["image"]).tobytes() for i in keys}
            assert len(images) == 10 and not images & seen
            seen |= images
    # a split with an epoch's samples already stays as it was (its order and draws: the same search)
    cfg = make_search_config(space="tiny", sets=[f"data.source={root}", f"data.backgrounds={root / 'backgrounds'}",
                                                 "data.batch_size=2", "data.crop=32", "steps_per_epoch=1",
                                                 "arch_steps_per_epoch=1", "epochs=2", "tensorboard=false",
                                                 "progress=false"])
    train, arch, *_ = Run(cfg, out=tmp_path / "run2")._loaders()
    assert len(train) == len(arch) == 2


def test_history_holds_budget_keys_only_under_a_budget(tmp_path):
    keys = ("lambda", "cost/budgeted", "budget/temperature", "budget/block_temperature")
    for budget, out in (([], tmp_path / "free"), (["--target-macs", "12M"], tmp_path / "budgeted")):
        assert main(["search", *FAST, "--epochs", "2", "--set", "warmup_epochs=1", *budget, "--out", str(out)]) == 0
        last = json.loads((out / "history.jsonl").read_text().splitlines()[-1])
        assert "loss/arch" in last and "cost/expected" in last  # an arch epoch
        assert all((k in last) == bool(budget) for k in keys), (budget, sorted(last))


def test_a_space_without_a_reduction_cell_logs_no_reduce_family(tmp_path):
    """The planted space has one normal cell: its reduce logits decide nothing, and their entropies and
    gradient z (noise) were logged beside the normal cell's."""
    out = tmp_path / "planted"
    assert main(["search", "--space", "planted", "--epochs", "2", "--no-progress", "--set", "warmup_epochs=1",
                 "--set", "select=0", "--set", "steps_per_epoch=2", "--set", "arch_steps_per_epoch=2",
                 "--set", "tensorboard=false", "--out", str(out)]) == 0
    last = json.loads((out / "history.jsonl").read_text().splitlines()[-1])
    assert "entropy/normal_ops" in last and "grad_z/task/normal_ops" in last
    assert not [k for k in last if "reduce" in k], sorted(last)
    out = tmp_path / "tiny"  # a space with reduction cells logs both
    assert main(["search", *FAST, "--epochs", "2", "--set", "warmup_epochs=1", "--out", str(out)]) == 0
    last = json.loads((out / "history.jsonl").read_text().splitlines()[-1])
    assert {"entropy/reduce_ops", "grad_z/task/reduce_sets"} <= set(last)


def test_a_budget_below_the_cheapest_is_refused_for_a_fresh_run_only(tmp_path, monkeypatch):
    """A run searched when its budget passed the check (an older atldas counted `none` as free) must
    still resume and derive: the check refused derive and --stored-costs of such finished runs."""
    from atldas.cost import CostTable

    out = tmp_path / "run"
    assert main(["search", *FAST, "--epochs", "2", "--set", "warmup_epochs=1", "--target-macs", "30M",
                 "--out", str(out)]) == 0
    monkeypatch.setattr(CostTable, "cheapest", lambda self, arch: (float("inf"), None))  # every budget too low
    assert main(["derive", str(out), "--out", str(tmp_path / "g.json")]) == 0
    assert main(["derive", str(out), "--stored-costs", "--out", str(tmp_path / "g2.json")]) == 0
    assert main(["search", *FAST, "--epochs", "2", "--target-macs", "30M", "--out", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()


def test_the_interim_genotype_is_written_after_the_checkpoint(tmp_path, monkeypatch):
    """Killed between an epoch's genotype.json and its checkpoint, a folder's interim genotype named more
    epochs than the checkpoint held, and the verbs advised derive where --resume was due."""
    import atldas.rundir as rundir_mod

    real = rundir_mod.save_checkpoint
    calls = []

    def stop_at_the_last(state, path):
        calls.append(int(state["epoch"]))
        if len(calls) == 2:  # the last epoch's checkpoint: the process dies before writing it
            raise KeyboardInterrupt
        real(state, path)

    monkeypatch.setattr(rundir_mod, "save_checkpoint", stop_at_the_last)
    out = tmp_path / "run"
    assert main(["search", *FAST, "--epochs", "2", "--set", "warmup_epochs=1", "--out", str(out)]) == 130
    g = json.loads((out / "genotype.json").read_text())
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert g["provenance"]["interim"] and g["provenance"]["epochs"] == ckpt["epoch"] + 1 == 1


def test_resume_messages_name_the_way_out(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", *FAST, "--epochs", "2", "--set", "warmup_epochs=1", "--out", str(out)]) == 0
    (out / "checkpoint.pt").write_bytes(b"\0" * 64)  # damaged
    assert main(["search", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the search cannot go on from it: start it afresh with --force" in err and err.count("\n") == 1, err
    retrained = tmp_path / "retrain"
    retrained.mkdir()
    (retrained / "config.yaml").write_text("model: cnn_baseline_tiny\n")
    assert main(["search", "--out", str(retrained), "--resume", "--no-progress"]) == 2
    assert "holds a retrain run, not a search run" in capsys.readouterr().err


def _other_final(genotype_json: dict) -> dict:
    """The same file with the first op of the normal cell's first node swapped: another architecture."""
    d = json.loads(json.dumps(genotype_json))
    first = d["cells"]["normal"]["nodes"][0]["inputs"][0]
    first[0] = "max_pool_3x3" if first[0] != "max_pool_3x3" else "avg_pool_3x3"
    d["provenance"].pop("interim", None)
    d.pop("darts", None)  # the same cells as a DARTS string, which would disagree
    return d


def test_derive_over_another_final_genotype_keeps_the_old_file_and_warns(tmp_path, tiny_run, caplog):
    import shutil

    from atldas.genotype import Genotype

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    other = _other_final(json.loads((run / "genotype.json").read_text()))
    other["provenance"]["run"] = str(run)  # this run's own, as an older atldas wrote it
    (run / "genotype.json").write_text(json.dumps(other))
    old = Genotype.load(run / "genotype.json")
    with caplog.at_level("WARNING", logger="atldas"):
        assert main(["derive", str(run)]) == 0
    new = Genotype.load(run / "genotype.json")
    kept = run / f"genotype.{old.hash()}.json"
    assert new.hash() != old.hash() and Genotype.load(kept).hash() == old.hash()
    assert any(f"held the derived genotype {old.hash()}" in r.getMessage() and str(kept) in r.getMessage()
               and "this atldas, device or cost table" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="atldas"):  # the same architecture again: nothing to keep or say
        assert main(["derive", str(run)]) == 0
    assert not [r for r in caplog.records if "held the derived genotype" in r.getMessage()]
    assert sorted(p.name for p in run.glob("genotype*.json")) == sorted(["genotype.json", kept.name])


def test_an_interim_genotype_is_replaced_without_a_word(tmp_path, tiny_run, caplog):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    other = _other_final(json.loads((run / "genotype.json").read_text()))
    other["provenance"]["interim"] = True  # what an unfinished search leaves
    (run / "genotype.json").write_text(json.dumps(other))
    with caplog.at_level("WARNING", logger="atldas"):
        assert main(["derive", str(run)]) == 0
    assert not [r for r in caplog.records if "held the derived genotype" in r.getMessage()]
    assert [p.name for p in run.glob("genotype*.json")] == ["genotype.json"]


def test_a_run_of_an_older_checkpoint_format_is_told_so_before_its_config_keys(tmp_path, tiny_run, capsys):
    """A run from before the search checkpoint's format 2 also has config keys this atldas lacks: the
    format is what the one line says (it was "unknown key 'random_candidates'; known keys: ...")."""
    import shutil

    import torch
    import yaml

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    torch.save({**ckpt, "format": "atldas-search/1"}, run / "checkpoint.pt")
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "random_candidates": 8}))
    for argv in (["derive", str(run)], ["search", "--space", "tiny", "--out", str(run), "--resume"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "written by another atldas version (format 'atldas-search/1'; this one reads 'atldas-search/2')" in err
        assert "random_candidates" not in err and err.count("\n") == 1, err


def test_derive_out_onto_another_runs_genotype_says_whose_it_was(tmp_path, tiny_run, caplog):
    other = _other_final(json.loads((tiny_run / "genotype.json").read_text()))
    other["provenance"]["run"] = "/somewhere/other_run"
    (tmp_path / "g.json").write_text(json.dumps(other))
    with caplog.at_level("WARNING", logger="atldas"):
        assert main(["derive", str(tiny_run), "--out", str(tmp_path / "g.json")]) == 0
    assert "(it was derived from /somewhere/other_run)" in caplog.text
    assert len(list(tmp_path.glob("g.*.json"))) == 1  # kept all the same
