"""The README's generated figures match what the code computes (experiments/readme_figures.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "experiments" / "readme_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_readme_figures_have_not_drifted():
    mod = _script()
    text = mod.README.read_text()
    new = mod.render(text)
    assert new == text, ("README figures differ from what the code computes: run "
                         "`python experiments/readme_figures.py` (and commit), or find what changed the counts")


def test_the_demo_genotype_recorded_for_a_cpu_kind_is_accepted_there_only(tmp_path, monkeypatch):
    mod = _script()
    monkeypatch.setattr(mod, "DEMO_BY_CPU", tmp_path / "by_cpu.json")
    readme = mod.demo_hashes()
    assert list(readme) == ["README"]
    run = tmp_path / "run"
    run.mkdir()
    from derived_models import get_genotype

    g = get_genotype("atldas_cifar100")
    g.save(run / "genotype.json")
    kind = mod.record_demo_for_cpu(run, "a test")
    assert kind == mod.cpu_kind() and mod.demo_hashes() == {**readme, kind: g.hash()}
    monkeypatch.setattr(mod, "cpu_kind", lambda: "another CPU")
    assert mod.demo_hashes() == readme
    assert json.loads((tmp_path / "by_cpu.json").read_text())[kind]["machine"] == "a test"


def test_a_drifted_block_is_found(tmp_path):
    mod = _script()
    text = mod.README.read_text()
    stale = text.replace("| cnn_baseline | ", "| cnn_baseline | 1", 1)
    assert stale != text and mod.render(stale) == text  # the rendering puts the true figure back


@pytest.mark.slow
def test_the_demo_search_still_derives_the_stored_genotype(tmp_path):
    """`make demo` (two threads, seed 0) on today's code derives the genotype the README shows."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = tmp_path / "demo"
    subprocess.run([sys.executable, "-m", "atldas", "search", "--space", "matting", "--out", str(out),
                    "--threads", "2", "--quiet", "--set", "progress=false"], check=True, env=env, cwd=ROOT)
    from atldas.genotype import Genotype

    mod = _script()
    got = Genotype.load(out / "genotype.json").hash()
    accepted = mod.demo_hashes()  # the README's, and the one recorded for this kind of CPU if any
    assert got in accepted.values(), (
        f"the demo search derived {got} on this CPU ({mod.cpu_kind()}); accepted: {accepted}. If the code "
        "changed it, find why; if this kind of CPU has no recorded genotype yet, record it with "
        "`python experiments/readme_figures.py --demo-cpu RUN_DIR` after a `make demo` on today's code")
