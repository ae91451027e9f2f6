"""Nothing a user owns is overwritten or mixed: an output that is an input is refused before any work,
a run directory of another kind is refused, one writer per run directory, corrupt weights refused.
Every case checks the user's file is byte-identical afterwards."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from atldas.cli import main
from atldas.data.io import write_alpha, write_trimap
from atldas.errors import DataError
from atldas.models.zoo import create_model
from atldas.rundir import RunDir
from atldas.utils.atomic import refuse_input_as_output
from atldas.utils.weights import load_weights


def _hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _one_error(capsys, expected: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("atldas: error:")]
    assert len(lines) == 1 and expected in lines[0], err
    return lines[0]


def test_an_input_is_never_an_output_symlinks_followed(tmp_path):
    f = tmp_path / "ckpt.pt"
    f.write_bytes(b"weights")
    link = tmp_path / "link.onnx"
    link.symlink_to(f)
    with pytest.raises(DataError, match="--onnx .* inputs"):
        refuse_input_as_output(link, [None, f], flag="--onnx")
    refuse_input_as_output(tmp_path / "other.onnx", [f], flag="--onnx")  # a new file is fine


def test_derive_into_the_runs_checkpoint_is_refused(tiny_run, capsys):
    ckpt = tiny_run / "checkpoint.pt"
    before = _hash(ckpt)
    assert main(["derive", str(tiny_run), "--out", str(ckpt)]) == 2
    _one_error(capsys, "it would be overwritten")
    assert _hash(ckpt) == before


def test_derive_into_another_runs_folder_is_refused_and_a_running_search_is_named(tiny_run, tmp_path, capsys, caplog):
    """`derive A --out B/genotype.json` replaced run B's genotype (while B searched, too); derive of a
    search that still runs said it had stopped and advised --resume, which the running search refuses."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    before = _hash(other / "genotype.json")
    with RunDir(other, checkpoint="checkpoint.pt", kind="search").locked():
        assert main(["derive", str(tiny_run), "--out", str(other / "genotype.json")]) == 2
        _one_error(capsys, f"is a file of another run, the search run in {other}, which a running atldas process "
                           f"(pid {os.getpid()}) holds")
    assert main(["derive", str(tiny_run), "--out", str(other / "genotype.json")]) == 2
    _one_error(capsys, f"is a file of another run, the search run in {other}; derive writes")
    assert _hash(other / "genotype.json") == before
    from atldas.run import Run, make_search_config

    part = tmp_path / "part"
    Run(make_search_config(space="tiny", epochs=3, tensorboard=False, progress=False), out=part).fit(epochs=1)
    with RunDir(part, checkpoint="checkpoint.pt", kind="search").locked():
        assert main(["derive", str(part), "--out", str(tmp_path / "g.json")]) == 0
    assert f"is still searching (pid {os.getpid()}; its checkpoint is of epoch 1 of 3)" in caplog.text
    assert "--resume" not in caplog.text


def test_an_output_the_library_replaces_is_never_a_pipe_or_device(tiny_run, tmp_path, capsys):
    """``derive --out /dev/stdout`` would replace, as root, the system's /dev/stdout link with a file (the
    genotype is written atomically, by replacing): a pipe, terminal or device is refused before any work
    (only ``--json`` writes one, as ``eval --json -`` does)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert main(["derive", str(tiny_run), "--out", str(fifo)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"--out {fifo} is a pipe, terminal or device, not a file; give a file path"), err
    assert fifo.is_fifo()


def test_eval_json_onto_a_ground_truth_image_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    tri = np.full((16, 16), 128, np.uint8)
    for d in ("pred", "gt", "tri"):
        (tmp_path / d).mkdir()
    write_alpha(tmp_path / "pred" / "a.png", rng.random((16, 16)).astype(np.float32))
    write_alpha(tmp_path / "gt" / "a.png", rng.random((16, 16)).astype(np.float32))
    write_trimap(tmp_path / "tri" / "a.png", tri)
    gt = tmp_path / "gt" / "a.png"
    before = _hash(gt)
    code = main(["eval", "--pred", str(tmp_path / "pred"), "--alpha", str(tmp_path / "gt"),
                 "--trimap", str(tmp_path / "tri"), "--json", str(gt), "--no-progress"])
    assert code == 2
    _one_error(capsys, "--json")
    assert _hash(gt) == before


def test_a_run_directory_of_another_kind_is_refused(tiny_run, tmp_path, capsys):
    config = tiny_run / "config.yaml"
    before = _hash(config)
    g = tiny_run / "genotype.json"
    assert main(["retrain", str(g), "--out", str(tiny_run), "--no-progress"]) == 2
    _one_error(capsys, "holds a search run")
    assert _hash(config) == before
    other = tmp_path / "rt"
    other.mkdir()
    (other / "config.yaml").write_text("model: cnn_baseline_tiny\nseed: 0\n")
    assert main(["search", "--space", "tiny", "--out", str(other), "--no-progress"]) == 2
    _one_error(capsys, "holds a retrain run")
    assert (other / "config.yaml").read_text() == "model: cnn_baseline_tiny\nseed: 0\n"


def test_one_writer_per_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    with RunDir(out, checkpoint="checkpoint.pt", kind="search").locked():
        assert main(["search", "--space", "tiny", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2
        line = _one_error(capsys, "in use by another atldas process")
        assert f"pid {os.getpid()}" in line
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused run wrote nothing
    assert not out.exists()  # the holder created it and wrote nothing


def test_a_refused_run_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "deep" / "run"
    assert main(["search", "--space", "tiny", "--out", str(out), "--resume", "--no-progress"]) == 2
    _one_error(capsys, "does not exist")
    assert not (tmp_path / "deep").exists()


def test_weights_with_nan_are_refused_naming_the_tensor(tmp_path):
    net = create_model("cnn_baseline_tiny")
    sd = net.state_dict()
    name = next(k for k, v in sd.items() if v.is_floating_point() and v.dim() == 4)
    sd[name] = sd[name].clone()
    sd[name].view(-1)[0] = float("nan")
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(DataError, match=f"{name!r} holds NaN"):
        load_weights(create_model("cnn_baseline_tiny"), tmp_path / "bad.pt")


def test_export_onto_its_checkpoint_is_refused(tmp_path, capsys):
    ckpt = tmp_path / "w.pt"
    torch.save({"model": create_model("cnn_baseline_tiny").state_dict()}, ckpt)
    before = _hash(ckpt)
    assert main(["export", "--model", "cnn_baseline_tiny", "--checkpoint", str(ckpt), "--onnx", str(ckpt)]) == 2
    _one_error(capsys, "it would be overwritten")
    assert _hash(ckpt) == before


def test_a_search_with_a_bad_data_folder_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--data", str(tmp_path / "empty"), "--out", str(out),
                 "--no-progress"]) == 2
    _one_error(capsys, "no known data set layout")
    assert not out.exists()


def test_temporary_files_of_a_killed_write_are_swept(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".checkpoint.pt.k3j9x2.tmp").write_bytes(b"partial")
    (out / ".mine").write_text("a user's file")  # not ours: kept
    with RunDir(out, checkpoint="checkpoint.pt", kind="search").locked():
        pass
    assert sorted(p.name for p in out.iterdir()) == [".lock", ".mine"]


def test_disk_full_is_one_line_and_the_old_file_survives(tiny_run, tmp_path, capsys, monkeypatch):
    import errno

    target = tmp_path / "g.json"
    target.write_text("earlier")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["derive", str(tiny_run), "--out", str(target)]) == 2
    line = _one_error(capsys, f"cannot write {target}: No space left on device")
    assert re.search(r"\(\d[\d.]* (B|KiB|MiB|GiB) free on that file system\)", line), line
    assert target.read_text() == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["g.json"]


def test_a_class_index_trimap_is_refused_by_predict_and_eval(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for d in ("img", "tri", "gt", "pred"):
        (tmp_path / d).mkdir()
    from PIL import Image

    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(rng.integers(0, 3, (32, 32)).astype(np.uint8)).save(tmp_path / "tri" / "a.png")
    write_alpha(tmp_path / "gt" / "a.png", rng.random((32, 32)).astype(np.float32))
    write_alpha(tmp_path / "pred" / "a.png", rng.random((32, 32)).astype(np.float32))
    assert main(["predict", "--model", "closed_form", "--image", str(tmp_path / "img"), "--trimap",
                 str(tmp_path / "tri"), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    _one_error(capsys, "class-index trimap")
    assert not (tmp_path / "out").exists()
    assert main(["eval", "--pred", str(tmp_path / "pred"), "--alpha", str(tmp_path / "gt"), "--trimap",
                 str(tmp_path / "tri"), "--no-progress"]) == 2
    _one_error(capsys, "class-index trimap")


def test_predict_checks_every_input_before_writing(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(1)
    for d in ("img", "tri"):
        (tmp_path / d).mkdir()
    for stem in ("a", "b"):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / "img" / f"{stem}.png")
        write_trimap(tmp_path / "tri" / f"{stem}.png", np.full((32, 32), 128, np.uint8))
    data = (tmp_path / "img" / "b.png").read_bytes()
    (tmp_path / "img" / "b.png").write_bytes(data[: len(data) // 2])  # truncated, found after a.png
    assert main(["predict", "--model", "closed_form", "--image", str(tmp_path / "img"), "--trimap",
                 str(tmp_path / "tri"), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    _one_error(capsys, "b.png")
    assert not (tmp_path / "out").exists()



def test_force_moves_the_old_run_aside(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: cnn_baseline_tiny\nseed: 0\n")  # a retrain run's folder
    (out / "last.pt").write_bytes(b"old weights")
    assert main(["search", "--space", "tiny", "--out", str(out), "--force", "--resume", "--no-progress"]) == 2
    _one_error(capsys, "pass one of them")
    # bad input is refused before the old run is moved (it was moved, then refused: nothing left at --out)
    assert main(["search", "--space", "tiny", "--epochs", "2", "--out", str(out), "--force", "--no-progress",
                 "--target-macs", "1K"]) == 2
    _one_error(capsys, "below the cheapest")
    assert (out / "last.pt").read_bytes() == b"old weights" and not any(
        p.name.startswith("run.replaced-") for p in tmp_path.iterdir())
    assert main(["search", "--space", "tiny", "--epochs", "2", "--out", str(out), "--force", "--no-progress",
                 "--set", "tensorboard=false", "--set", "plots=false"]) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and (aside[0] / "last.pt").read_bytes() == b"old weights"
    assert (out / "genotype.json").is_file() and not (out / "last.pt").exists()


def test_retrain_force_checks_the_new_run_before_moving_the_old_one(tmp_path, capsys):
    """retrain --force with a missing --data or MODEL: refused with the old run in place (it was moved
    aside first, then refused, leaving nothing at --out)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: cnn_baseline_tiny\nseed: 0\n")
    (out / "last.pt").write_bytes(b"old weights")
    for args, expect in ((["cnn_baseline_tiny", "--data", str(tmp_path / "nowhere")], "nowhere"),
                         ([str(tmp_path / "no_genotype.json")], "no_genotype.json")):
        assert main(["retrain", *args, "--out", str(out), "--force", "--epochs", "1", "--no-progress"]) == 2
        _one_error(capsys, expect)
        assert (out / "last.pt").read_bytes() == b"old weights"
        assert not any(p.name.startswith("run.replaced-") for p in tmp_path.iterdir())
    (out / "genotype.json").write_text("{}")  # a MODEL inside the folder --force would move aside
    assert main(["retrain", str(out / "genotype.json"), "--out", str(out), "--force", "--no-progress"]) == 2
    _one_error(capsys, "is inside it; copy it out first")
    assert (out / "last.pt").read_bytes() == b"old weights"


def test_search_force_refuses_inputs_inside_the_folder_it_moves(tmp_path, capsys):
    """search --force with --backgrounds (or --lut) inside OUT moved the old run aside and then failed on
    the moved files (or recorded a --lut path that no longer exists); retrain refused it already."""
    from PIL import Image

    out = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--epochs", "2", "--set", "steps_per_epoch=1", "--set",
                 "tensorboard=false", "--no-progress", "--out", str(out)]) == 0
    (out / "bg").mkdir()
    Image.new("RGB", (80, 80), (10, 200, 30)).save(out / "bg" / "b1.png")
    capsys.readouterr()
    assert main(["search", "--space", "tiny", "--epochs", "2", "--backgrounds", str(out / "bg"), "--out", str(out),
                 "--force", "--no-progress"]) == 2
    _one_error(capsys, "--backgrounds")
    assert (out / "checkpoint.pt").is_file() and not any(p.name.startswith("run.replaced-") for p in tmp_path.iterdir())


def test_a_file_as_the_run_folder_is_one_line(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    assert main(["search", "--space", "tiny", "--out", str(f), "--no-progress"]) == 2
    _one_error(capsys, "is a file")
    assert f.read_text() == "mine"


def test_a_run_of_another_configuration_is_not_mixed(tmp_path):
    """A folder holding a search of another configuration that never checkpointed is refused; the
    same configuration may start again there."""
    from atldas.run import make_search_config

    rd = RunDir(tmp_path / "run", checkpoint="checkpoint.pt", kind="search")
    a = make_search_config(space="tiny", sets=["seed=0"])
    rd.write_config(a)
    rd.write_config(a)  # the same configuration: a restart
    with pytest.raises(Exception, match=r"another configuration \(seed differ\).*--force"):
        rd.write_config(make_search_config(space="tiny", sets=["seed=1"]))


def test_force_refuses_to_move_the_working_directory(tmp_path, capsys, monkeypatch):
    """--out . --force: a traceback (Path('.').with_name); moving the working directory aside would also
    have sent the new run's files into the moved folder."""
    out = tmp_path / "run"
    assert main(["search", "--space", "tiny", "--epochs", "2", "--set", "steps_per_epoch=1", "--set",
                 "tensorboard=false", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    monkeypatch.chdir(out)
    assert main(["search", "--space", "tiny", "--epochs", "2", "--out", ".", "--force", "--no-progress"]) == 2
    _one_error(capsys, "it holds the working directory")
    assert (out / "checkpoint.pt").is_file()


def test_a_process_that_loses_the_race_to_a_new_folder_removes_nothing(tmp_path, monkeypatch):
    """Two runs started on one new --out: the one that lost the lock had counted the folder as its own
    (it did not exist when it looked) and removed it, the winner's .lock and config.yaml with it."""
    import contextlib
    import pathlib

    from atldas.errors import AtldasError

    out = tmp_path / "new" / "run"
    winner = contextlib.ExitStack()
    real_mkdir = pathlib.Path.mkdir

    def racing_mkdir(self, *args, **kwargs):
        if not winner._exit_callbacks:  # the other process makes the folder and locks it first
            monkeypatch.setattr(pathlib.Path, "mkdir", real_mkdir)
            winner.enter_context(RunDir(out, checkpoint="checkpoint.pt", kind="search").locked())
            (out / "config.yaml").write_text("the winner's")
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", racing_mkdir)
    with winner:
        with pytest.raises(AtldasError, match="in use by another atldas process"):
            with RunDir(out, checkpoint="checkpoint.pt", kind="search").locked():
                pass
        assert sorted(p.name for p in out.iterdir()) == [".lock", "config.yaml"]


def test_sigterm_is_one_line_and_runs_the_cleanup(monkeypatch, capsys, tmp_path):
    """`kill` (SIGTERM) ended the process without a word and skipped what Ctrl-C cleans up (a 0-byte
    temporary .onnx, a hidden folder of staged predictions)."""
    import signal

    import atldas.cli as cli
    from atldas.utils.atomic import atomic_path

    def killed(args):
        with atomic_path(tmp_path / "m.onnx", suffix=".onnx"):
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(cli, "_cmd_bench", killed)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["bench", "cheapmatting"]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "atldas: terminated (SIGTERM)"
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) is before


def test_a_full_disk_inside_a_writer_names_the_target(tmp_path, capsys, monkeypatch):
    """A write that fails inside an atomic block (Pillow's PNG encoder, the ONNX writer) named no file
    (`cannot write a file`), or the temporary one."""
    import errno

    from atldas.utils.atomic import atomic_path

    def full(path):
        with atomic_path(path):
            raise OSError(errno.ENOSPC, "No space left on device")

    import atldas.cli as cli

    monkeypatch.setattr(cli, "_cmd_bench", lambda args: full(tmp_path / "out.png"))
    assert main(["bench", "cheapmatting"]) == 2
    _one_error(capsys, f"cannot write {tmp_path / 'out.png'}: No space left on device")
    monkeypatch.setattr(cli, "_cmd_bench", lambda args: full_big(tmp_path / "big.png"))

    def full_big(path):
        with atomic_path(path):
            raise OSError(errno.EFBIG, "File too large")

    assert main(["bench", "cheapmatting"]) == 2
    _one_error(capsys, "File too large (a file size limit")


def test_a_truncated_cost_table_is_one_line(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "cost_table.json").write_text((tiny_run / "cost_table.json").read_text()[:300])
    assert main(["derive", str(run), "--out", str(tmp_path / "g.json")]) == 2
    _one_error(capsys, "cost_table.json is not a cost table written by atldas")
    assert main(["search", "--out", str(run), "--resume", "--no-progress"]) == 2
    _one_error(capsys, "cost_table.json is not a cost table written by atldas")


def test_an_existing_output_folder_that_is_not_writable_is_refused_before_work(tmp_path, monkeypatch):
    """Its parent was checked, not the folder its files go into: predict ran the network and then failed
    naming a temporary file."""
    from atldas.utils import atomic
    from atldas.utils.atomic import check_output

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(atomic.os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    with pytest.raises(DataError, match=r"--out .*ro: the folder is not writable"):
        check_output(ro, flag="--out", folder=True)
    with pytest.raises(DataError, match=r"the folder .*ro is not writable"):  # a file in it: the parent's check
        check_output(ro / "x.png", flag="--out")


def test_an_empty_run_config_is_said_to_be_damaged(tiny_run, tmp_path, capsys):
    """An emptied config.yaml read as the defaults: the refusal listed a dozen "differences" from them."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "config.yaml").write_text("")
    assert main(["search", "--out", str(run), "--resume", "--no-progress"]) == 2
    _one_error(capsys, "config.yaml is empty (truncated?); the run folder is damaged")


def test_a_lock_taken_on_a_folder_being_removed_is_refused(tmp_path, monkeypatch):
    """A refused run removed its folder after letting go of the lock: a process that took the lock in
    between ran on in a folder that was then removed. Now the removal happens under the lock, and a
    lock taken on a removed lock file is refused."""
    from atldas.errors import AtldasError
    from atldas import rundir

    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("")
    real_flock = rundir.fcntl.flock

    def flock_then_removed(fd, op):  # the holder removes the folder right as this one takes the lock
        real_flock(fd, op)
        (out / ".lock").unlink()

    monkeypatch.setattr(rundir.fcntl, "flock", flock_then_removed)
    with pytest.raises(AtldasError, match="was being removed by the atldas process that held it"):
        with RunDir(out, checkpoint="checkpoint.pt", kind="search").locked():
            pass


def test_a_worker_error_raised_while_terminating_is_the_termination(monkeypatch, capsys):
    """A group's SIGTERM ends the DataLoader workers too, and torch reported them with a RuntimeError
    raised during the cleanup (a traceback, exit 1)."""
    import atldas.cli as cli

    def killed(args):
        try:
            raise cli.Terminated()
        finally:
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    monkeypatch.setattr(cli, "_cmd_bench", killed)
    assert main(["bench", "cheapmatting"]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "atldas: terminated (SIGTERM)"


def test_a_study_and_a_run_do_not_share_a_folder(tiny_run, tmp_path, capsys):
    """`tune --out` a search's folder wrote study.log, pareto.* and trial folders into it, and `search
    --out` a study's folder was accepted too."""
    before = sorted(p.name for p in tiny_run.iterdir())
    assert main(["tune", "--space", "tiny", "--trials", "1", "--out", str(tiny_run)]) == 2
    _one_error(capsys, "holds a search run; the study's journal and trials would mix with its files")
    assert sorted(p.name for p in tiny_run.iterdir()) == before
    study = tmp_path / "study"
    (study / "trial-0000").mkdir(parents=True)
    (study / "study.log").write_text("")
    assert main(["search", "--space", "tiny", "--out", str(study), "--no-progress"]) == 2
    _one_error(capsys, "holds a tune run")
    assert sorted(p.name for p in study.iterdir()) == ["study.log", "trial-0000"]  # no .lock left either
    assert not (study / "config.yaml").exists()
    (study / ".lock").write_text("")  # a lock file that was there before stays
    assert main(["search", "--space", "tiny", "--out", str(study), "--no-progress"]) == 2
    assert sorted(p.name for p in study.iterdir()) == [".lock", "study.log", "trial-0000"]


def test_a_forked_worker_does_not_hold_the_run_folders_lock(tmp_path):
    """A data loader's workers are forked while the lock is held and inherited it: after a kill, the run's
    own ``--resume`` was refused ("in use by another atldas process") until they exited, seconds later."""
    import signal
    import time

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")  # a run's folder: the lock file stays
    rd = RunDir(tmp_path / "run", checkpoint="checkpoint.pt", kind="search")
    ready, tell = os.pipe()
    with rd.locked():
        child = os.fork()
        if child == 0:  # a worker: lives on after its parent lets go
            os.write(tell, b"x")  # running (the fork hooks ran before this line)
            time.sleep(5)
            os._exit(0)
        assert os.read(ready, 1) == b"x"
    try:
        assert rd.holder() is None  # the parent let go; the live child holds nothing
        with rd.locked():  # and a new run takes the folder at once
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready)
        os.close(tell)
