"""The matting task's short standalone fit and the ``select`` stage it gives matting searches."""

from __future__ import annotations

import math

import pytest
import torch

import atldas
from atldas.run import bind_space
from atldas.tasks.base import DataCfg
from atldas.errors import ConfigError
from atldas.tasks.matting import FitRecipe, MattingTask

DATA = DataCfg(batch_size=2, crop=64)
SMALL = FitRecipe(batch_size=None, crop=None, eval_size=None, eval_samples=4)  # the search's batch and crop: DATA


def _tiny_genotypes(n: int, seed: int = 0):
    space = bind_space(atldas.make_search_config(space="tiny"))
    arch = space.new_arch()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    while len(out) < n:
        with torch.no_grad():
            g = space.child_to_genotype(arch, arch.sample(generator=gen))
        out.setdefault(g.hash(), g)
    return list(out.values())


@pytest.mark.parametrize("score", ["sad", "loss"])
def test_short_fit_is_a_deterministic_held_out_score_that_training_lowers(score):
    """Same genotype and seed: the same figure; more steps: a lower held-out score; another seed or
    genotype: another figure."""
    task = MattingTask(fit=FitRecipe(batch_size=None, crop=None, eval_size=None, eval_samples=4, score=score))
    g, other = _tiny_genotypes(2)
    a = task.short_fit(g, data=DATA, seed=0, steps=3)
    assert math.isfinite(a) and a > 0
    assert task.short_fit(g, data=DATA, seed=0, steps=3) == a
    assert task.short_fit(g, data=DATA, seed=1, steps=3) != a
    assert task.short_fit(other, data=DATA, seed=0, steps=3) != a
    assert task.short_fit(g, data=DATA, seed=0, steps=40) < task.short_fit(g, data=DATA, seed=0, steps=1)


def test_short_fit_ranks_a_diverging_fit_last(monkeypatch, caplog):
    task = MattingTask(fit=SMALL)
    g = _tiny_genotypes(1)[0]
    monkeypatch.setattr(task._loss, "forward", lambda pred, batch: {"loss": pred.sum() * float("nan")})
    caplog.set_level("WARNING", logger="atldas")
    assert task.short_fit(g, data=DATA, seed=0, steps=2) == float("inf")
    assert "non-finite" in caplog.text


def test_a_matting_search_selects_the_candidate_with_the_lowest_short_fit(tmp_path, monkeypatch):
    """``select=N`` on a matting space: N distinct candidates within the budget, each fitted once, and
    the genotype is the one with the lowest fit loss."""
    from atldas.search import search

    seen = {}
    real = MattingTask.short_fit

    def spy(self, genotype, **kw):
        seen[genotype.hash()] = loss = real(self, genotype, **{**kw, "steps": 2})
        return loss

    monkeypatch.setattr(MattingTask, "short_fit", spy)
    cfg = atldas.make_search_config(space="tiny", out=str(tmp_path / "s"), sets=[
        "select=3", "select_fill=true", "target_macs=8e6", "tensorboard=false", "plots=false", "progress=false"])
    out = search(cfg)
    g = atldas.Genotype.load(out / "genotype.json")
    assert len(seen) == 3 and g.hash() == min(seen, key=seen.__getitem__)
    assert g.cost["macs"] <= 8e6


def test_matting_searches_select_only_when_asked():
    for strategy in ("atldas", "random", "darts", "gdas"):
        assert atldas.make_search_config(space="matting", strategy=strategy).select == 0
    assert atldas.make_search_config(space="matting", sets=["select=4"]).select == 4


def test_the_fit_recipe_scores_by_sad_or_loss_only():
    with pytest.raises(ConfigError, match="use sad or loss"):
        FitRecipe(score="mse")


def test_a_task_without_a_short_fit_refuses_select():
    from atldas.tasks import get_task

    cfg = atldas.make_search_config(space="darts_cifar", sets=["select=2"])
    with pytest.raises(ConfigError, match="no short standalone fit"):
        cfg.check(get_task("classification"))


def test_the_select_stage_fits_and_scores_with_a_subclass_loss():
    """``short_fit`` trained and scored with the built-in matting loss, ignoring a subclass's own."""
    calls = []

    class CountingL1(MattingTask):
        name = "test_counting_l1"

        def loss(self, pred, batch):
            calls.append(tuple(pred.shape))
            return (pred - batch["alpha"]).abs().mean()

    task = CountingL1(fit=FitRecipe(batch_size=None, crop=None, eval_size=None, eval_samples=2, score="loss"))
    score = task.short_fit(_tiny_genotypes(1)[0], data=DATA, seed=0, steps=2)
    assert calls == [(2, 1, 64, 64)] * 3  # two training steps, one held-out batch of two
    assert math.isfinite(score)
