"""Crafted files and folders (a shared or downloaded run, genotype, config, table or export): one-line
errors, nothing written through a symbolic link, nothing expanded without bound. Each case was found
by a security review: a traceback, a file outside the run folder rewritten, or memory filled."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from atldas.cli import main
from atldas.config import read_yaml
from atldas.errors import AtldasError, ConfigError, DataError
from atldas.genotype import Genotype
from atldas.rundir import LOCK, RunDir

DEEP_JSON = '{"a": ' * 100_000 + "1" + "}" * 100_000
HUGE_INT = "9" * 5000


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("atldas: error:") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_run_folder_whose_lock_is_a_link_is_refused_and_the_target_is_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("IMPORTANT DATA")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).symlink_to(victim)
    with pytest.raises(AtldasError, match="is a symbolic link"):
        with RunDir(run, checkpoint="checkpoint.pt", kind="search").locked():
            pass
    assert victim.read_text() == "IMPORTANT DATA"
    dangling = tmp_path / "run2"
    dangling.mkdir()
    (dangling / LOCK).symlink_to(tmp_path / "created_outside.txt")
    with pytest.raises(AtldasError, match="is a symbolic link"):
        with RunDir(dangling, checkpoint="checkpoint.pt", kind="search").locked():
            pass
    assert not (tmp_path / "created_outside.txt").exists()


def test_a_lock_that_is_not_a_plain_file_is_refused(tmp_path):
    import os

    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / LOCK)
    with pytest.raises(AtldasError, match="not a plain file"):
        with RunDir(run, checkpoint="checkpoint.pt", kind="search").locked():
            pass


def test_tune_writes_the_front_s_genotypes_in_place_of_a_link_not_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("IMPORTANT DATA")
    out = tmp_path / "study"
    (out / "best").mkdir(parents=True)
    (out / "best" / "trial-0000.json").symlink_to(victim)
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(out), "--objective", "loss", "--quiet",
                 "--set", "epochs=2", "--set", "steps_per_epoch=1", "--set", "arch_steps_per_epoch=1",
                 "--set", "tensorboard=false"]) == 0
    best = out / "best" / "trial-0000.json"
    assert victim.read_text() == "IMPORTANT DATA"
    assert not best.is_symlink() and Genotype.load(best).hash()


@pytest.mark.parametrize("field,match", [("range(2, 1000000000000)", "spans 999999999998 nodes"),
                                         ("range(2, 6, 0)", "step 0")])
def test_a_darts_range_is_checked_before_it_is_expanded(field, match):
    text = (f"Genotype(normal=[('skip_connect', 0)], normal_concat={field}, "
            "reduce=[('skip_connect', 0)], reduce_concat=range(2, 3))")
    with pytest.raises(ConfigError, match=match):
        Genotype.loads(text)


@pytest.mark.parametrize("text,why", [(DEEP_JSON, "nested too deeply"),
                                      ('{"normal": ' + HUGE_INT + "}", "digits")])
def test_a_genotype_nested_too_deep_or_with_a_huge_integer_is_one_line(tmp_path, capsys, text, why):
    path = tmp_path / "g.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=why):
        Genotype.load(path)
    assert main(["plot", str(path), "--out", str(tmp_path / "g.png")]) == 2
    assert why in _one_line(capsys)


@pytest.mark.parametrize("text,why", [("a: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested too deeply"),
                                      (f"epochs: {HUGE_INT}\n", "digits")])
def test_a_yaml_config_nested_too_deep_or_with_a_huge_integer_is_one_line(tmp_path, capsys, text, why):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=why):
        read_yaml(path)
    assert main(["retrain", "cheapmatting", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert why in _one_line(capsys) and not (tmp_path / "r").exists()


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path):
    """25 levels of nine aliases each: 9^25 items in a few hundred bytes; the error message's repr of
    the bad value expanded them all. In a child process with 6 GiB of address space: a regression
    fails there instead of filling the machine's memory."""
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, 26)]
    path = tmp_path / "bomb.yaml"
    path.write_text("model: [" + ", ".join(levels) + "]\n")  # the anchors inside the one value
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
            "from atldas.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "retrain", "cheapmatting", "--config", str(path), "--out",
                        str(tmp_path / "r"), "--threads", "1"],  # no thread notice on a busy machine
                       capture_output=True, text=True, timeout=300)
    err = r.stderr.strip()
    assert r.returncode == 2 and err.startswith("atldas: error:") and len(err.splitlines()) == 1, err[-2000:]
    assert "expected" in err and len(err) < 2000 and not (tmp_path / "r").exists()


def test_a_latency_table_nested_too_deep_is_one_line(tmp_path, capsys):
    lut = tmp_path / "lut.json"
    lut.write_text(DEEP_JSON)
    assert main(["search", "--space", "tiny", "--target-latency-ms", "5", "--lut", str(lut),
                 "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    assert "nested too deeply" in _one_line(capsys) and not (tmp_path / "s").exists()
    with pytest.raises(DataError, match="nested too deeply"):
        from atldas.latency import load_lut

        load_lut(lut)


def test_a_tuning_space_nested_too_deep_is_one_line(tmp_path):
    from atldas.tune import load_tune_space

    path = tmp_path / "space.yaml"
    path.write_text("C: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_tune_space(str(path), space="tiny")


@pytest.mark.parametrize("meta,bytes_pp,min_side", [
    ({}, "default", "default"),
    ({"atldas.bytes_per_pixel": "812.5", "atldas.min_side": "128 (after padding)"}, 812.5, 128),
    ({"atldas.bytes_per_pixel": "abc", "atldas.min_side": ""}, "default", "default"),  # were tracebacks
    ({"atldas.bytes_per_pixel": "nan", "atldas.min_side": "0"}, "default", "default"),  # checks turned off
    ({"atldas.bytes_per_pixel": "-3", "atldas.min_side": "32"}, "default", "default")])  # below the guard
def test_an_onnx_file_s_metadata_is_checked_before_it_is_trusted(meta, bytes_pp, min_side, caplog, monkeypatch):
    import types

    from atldas.models.onnx_net import MIN_SIDE, UNKNOWN_BYTES_PER_PIXEL, OnnxNet

    class Session:  # onnxruntime's session as OnnxNet sees it: one (N, 6, H, W) input and the metadata
        def __init__(self, *args, **kwargs):
            pass

        def get_inputs(self):
            return [types.SimpleNamespace(name="input", shape=["batch", 6, "height", "width"])]

        def get_modelmeta(self):
            return types.SimpleNamespace(custom_metadata_map=dict(meta))

    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(SessionOptions=types.SimpleNamespace,
                                                                          InferenceSession=Session))
    net = OnnxNet(path="m.onnx")
    assert net.BYTES_PER_PIXEL == (UNKNOWN_BYTES_PER_PIXEL if bytes_pp == "default" else bytes_pp)
    assert net.min_side == (MIN_SIDE if min_side == "default" else min_side)
    if meta and bytes_pp == "default":
        assert "is not a positive number" in caplog.text


def test_a_deep_json_cost_table_is_a_data_error():
    from atldas.cost import CostTable

    with pytest.raises(DataError, match="nested too deeply"):
        CostTable.from_json(DEEP_JSON)
    with pytest.raises(DataError, match="not a cost table"):
        CostTable.from_json(json.dumps({"metric": "macs", "base": HUGE_INT}))


def test_a_checkpoint_with_compressed_entries_is_refused_before_it_is_inflated(tmp_path, capsys):
    """torch.load inflates deflated zip entries: a file of a few kB loaded as megabytes (a zip bomb);
    torch.save never compresses."""
    import zipfile

    import torch

    from atldas.utils.checkpoint import load_checkpoint

    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(500, 500)}, plain)
    assert load_checkpoint(plain)["w"].shape == (500, 500)  # what torch.save writes loads
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < plain.stat().st_size / 50
    with pytest.raises(DataError, match="entries are compressed"):
        load_checkpoint(bomb)
    assert main(["export", "--model", "cnn_baseline_tiny", "--checkpoint", str(bomb), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "entries are compressed" in _one_line(capsys) and not (tmp_path / "m.onnx").exists()
