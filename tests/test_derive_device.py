"""`atldas derive` computes on the device the run searched on when it is here, and says so when it
cannot: a GPU search's select stage or random search's ranking, redone on the CPU, rounds otherwise
and can pick another genotype than the search's own."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import atldas
import atldas.run as run_mod
from atldas.cli import main
from atldas.errors import ConfigError

SETS = ["epochs=2", "warmup_epochs=1", "steps_per_epoch=2", "arch_steps_per_epoch=2", "tensorboard=false",
        "plots=false", "progress=false"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Three tiny searches made once, at two torch threads: random search, the policy's argmax without
    the select stage (both as made before a fresh run's config.yaml recorded its thread count), and
    random search whose config sets two threads."""
    root = tmp_path_factory.mktemp("searched")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for name, sets in (("random", ["strategy=random", "random_candidates=3"]), ("argmax", ["strategy=atldas", "select=0"]),
                           ("threads", ["strategy=random", "random_candidates=3", "threads=2"])):
            atldas.Run(atldas.make_search_config(space="tiny", sets=[*SETS, *sets]), out=root / name).fit()
            if name != "threads":  # as a run made before config.yaml recorded the count it ran at
                _unpinned(root / name)
    finally:
        torch.set_num_threads(before)
    return root


def _unpinned(out):
    """Make the search in ``out`` look as one that recorded no thread count (config.yaml and the
    checkpoint's config say ``threads: null``; the checkpoint still names the count it ran at)."""
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["threads"] = None
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["config"]["threads"] = None
    torch.save(ckpt, out / "checkpoint.pt")


@pytest.fixture
def copy(searched, tmp_path):
    """``copy("random")``: a fresh copy of that search's folder, for this test to change."""
    def make(name):
        return Path(shutil.copytree(searched / name, tmp_path / name))
    return make


def _recorded_as(out, device):
    """config.yaml says the run searched on ``device`` (the checkpoint's copy is the CPU's: derive puts
    its own device in before the two are compared, as for a real GPU run derived elsewhere)."""
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["device"] = device
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_a_gpu_random_search_derived_without_a_gpu_is_warned_about(copy, tmp_path, caplog, no_gpu):
    out = copy("random")
    _recorded_as(out, "cuda")
    with caplog.at_level(logging.WARNING, logger="atldas"):
        path = atldas.derive_run(out, out=tmp_path / "g.json")
    assert path.is_file()
    assert "searched on cuda and derives on cpu, where random search ranks its candidates" in caplog.text


def test_a_gpu_search_without_a_computing_derive_is_derived_silently(copy, tmp_path, caplog, no_gpu):
    out = copy("argmax")
    _recorded_as(out, "cuda")
    with caplog.at_level(logging.WARNING, logger="atldas"):
        atldas.derive_run(out, out=tmp_path / "g.json")
    assert "derives on" not in caplog.text  # the argmax and repair do not depend on the device


def test_a_cpu_search_derived_on_the_cpu_is_not_warned_about(copy, tmp_path, caplog):
    out = copy("random")
    with caplog.at_level(logging.WARNING, logger="atldas"):
        atldas.derive_run(out, out=tmp_path / "g.json", device="cpu")
    assert "derives on" not in caplog.text


def test_the_default_device_is_the_searches_own_when_it_is_here(copy, tmp_path, monkeypatch):
    out = copy("random")
    _recorded_as(out, "cuda")
    seen = []

    def load(run_dir, *, device=None, table=None, **kw):
        seen.append(device)
        raise RuntimeError("stop here")

    monkeypatch.setattr(run_mod.Run, "load", staticmethod(load))
    monkeypatch.setattr(run_mod, "_device_here", lambda d: True)
    with pytest.raises(RuntimeError, match="stop here"):
        atldas.derive_run(out, out=tmp_path / "g.json")
    monkeypatch.setattr(run_mod, "_device_here", lambda d: False)
    with pytest.raises(RuntimeError, match="stop here"):
        atldas.derive_run(out, out=tmp_path / "g.json")
    with pytest.raises(RuntimeError, match="stop here"):
        atldas.derive_run(out, out=tmp_path / "g.json", device="cpu")
    _recorded_as(out, "cuda:1")  # searched on a second GPU, derived where there is one: the first
    monkeypatch.setattr(run_mod, "_device_here", lambda d: d in ("cpu", "cuda"))
    with pytest.raises(RuntimeError, match="stop here"):
        atldas.derive_run(out, out=tmp_path / "g.json")
    assert seen == ["cuda", "cpu", "cpu", "cuda"]


def test_derive_device_flag(copy, tmp_path, capsys, no_gpu):
    out = copy("random")
    assert main(["derive", str(out), "--out", str(tmp_path / "g.json"), "--device", "cpu"]) == 0
    assert (tmp_path / "g.json").is_file()
    with pytest.raises(ConfigError, match="no CUDA device here; use --device cpu$"):  # not --resume's hint
        atldas.derive_run(out, out=tmp_path / "h.json", device="cuda")
    assert not (tmp_path / "h.json").exists()
    assert main(["derive", str(out), "--out", str(tmp_path / "h.json"), "--device", "cuda"]) != 0
    assert "no CUDA device here" in capsys.readouterr().err
    assert not (tmp_path / "h.json").exists()


def test_a_computing_derive_runs_on_the_searches_thread_count_and_puts_the_count_back(copy, tmp_path, monkeypatch):
    """Floats depend on the thread count: random search's ranking redone at another count could pick
    another child than the search did (as --resume, derive takes the checkpoint's count)."""
    before = torch.get_num_threads()
    try:
        rnd, arg = copy("random"), copy("argmax")
        torch.set_num_threads(1)
        seen = []
        final = run_mod.Run.final_genotype

        def spy(self):
            seen.append(torch.get_num_threads())
            return final(self)

        monkeypatch.setattr(run_mod.Run, "final_genotype", spy)
        atldas.derive_run(rnd, out=tmp_path / "r.json")
        assert torch.get_num_threads() == 1
        atldas.derive_run(arg, out=tmp_path / "a.json")  # the argmax: nothing computed, the count is left
        assert seen == [2, 1] and torch.get_num_threads() == 1
        # a GPU search derived on the CPU: its host's count says nothing of this machine's rounding
        _recorded_as(rnd, "cuda")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        atldas.derive_run(rnd, out=tmp_path / "r.json")
        assert seen == [2, 1, 1]
    finally:
        torch.set_num_threads(before)


def test_derive_puts_back_the_thread_count_a_config_sets(copy, tmp_path):
    """A search whose config sets its threads: loading it sets them (Run does); derive_run from Python
    puts the process's count back, also when it refuses."""
    before = torch.get_num_threads()
    try:
        out = copy("threads")
        torch.set_num_threads(1)
        atldas.derive_run(out, out=tmp_path / "g.json")
        assert torch.get_num_threads() == 1
        (out / "cost_table.json").write_text("{}")  # costs changed since: refused after loading
        with pytest.raises(ConfigError, match="costs of this run"):
            atldas.derive_run(out, out=tmp_path / "h.json")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_torch_threads_puts_back_the_count_it_found():
    from atldas.utils.seed import torch_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch_threads(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
        with pytest.raises(KeyError):
            with torch_threads(2):
                raise KeyError
        assert torch.get_num_threads() == 1
        with torch_threads(None):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_derive_run_leaves_the_global_random_streams_as_it_found_them(copy, tmp_path):
    """Loading a run seeds Python's, numpy's and torch's global generators (as Run does); derive_run, a
    verb that only reads a run, puts them back."""
    import random

    import numpy as np

    out = copy("random")
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    atldas.derive_run(out, out=tmp_path / "g.json")
    after = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    assert after == (random.random(), float(np.random.rand()), float(torch.rand(())))
