"""Search under torchrun (gloo, 2 CPU processes): the ranks stay one run."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from atldas.run import Run, make_search_config

SETS = ["epochs=3", "steps_per_epoch=3", "arch_steps_per_epoch=3", "batch_size=4", "tensorboard=false",
        "progress=false"]


def _search_in_memory(out_file: str) -> None:
    torch.set_num_threads(1)
    run = Run(make_search_config(space="tiny", sets=SETS), out=None)
    arch, losses = [], []
    run.fit(callback=lambda row: (arch.append([p.detach().clone() for p in run.net.arch.parameters()]),
                                  losses.append(row["loss/weights"])))
    torch.save({"arch": arch, "losses": losses, "genotype": run.final_genotype().hash(),
                "world": max(1, dist.get_world_size() if dist.is_initialized() else 1)}, out_file)


def _rank(rank: int, world: int, init: str, out: str) -> None:
    # a peer that never arrives fails the test in 2 minutes instead of gloo's default 30
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        _search_in_memory(out % rank)
    finally:
        dist.destroy_process_group()


def test_two_processes_keep_identical_arch_and_one_genotype(tmp_path):
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path / "rank%d.pt")), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == 2 and len(r0["arch"]) == 3
    for e0, e1 in zip(r0["arch"], r1["arch"]):  # after every epoch, bit for bit
        assert all(torch.equal(a, b) for a, b in zip(e0, e1))
    assert r0["genotype"] == r1["genotype"]
    assert r0["losses"] == r1["losses"]  # the epoch's weight loss over the whole batch (it was each rank's half)
    # against one process on the same global batch (4): not equal. BatchNorm normalises each rank's
    # half batch with its own statistics (SyncBatchNorm runs on CUDA only), so losses and gradients
    # differ slightly, and Adam's first steps (about lr * sign(g)) turn that into logit differences
    # of the order of the arch learning rate per step. Measured: 0.11 after 3 epochs (logits up to 0.19).
    _search_in_memory(str(tmp_path / "single.pt"))
    one = torch.load(tmp_path / "single.pt", weights_only=True)
    diff = max(float((a - b).abs().max()) for a, b in zip(one["arch"][-1], r0["arch"][-1]))
    scale = max(float(a.abs().max()) for a in one["arch"][-1])
    print(f"max |arch(1 process) - arch(2 processes)| after 3 epochs: {diff:.3g} (logits up to {scale:.3g})")
    assert diff == diff and diff < 10 * scale


def _torchrun(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "atldas", *argv, "--no-progress"], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_torchrun_search_resume_and_retrain(tmp_path):
    """The commands under torchrun: one run directory written by rank 0, resume, and retrain."""
    out = tmp_path / "run"
    proc = _torchrun("search", "--space", "tiny", "--epochs", "2", "--out", str(out), "--set", "batch_size=2",
                     "--set", "tensorboard=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("search finished") == 1
    assert (out / "genotype.json").is_file() and (out / "checkpoint.pt").is_file()
    assert len((out / "history.jsonl").read_text().splitlines()) == 2
    first = (out / "genotype.json").read_text()
    proc = _torchrun("search", "--resume", "--out", str(out))  # a finished run: both ranks load it and agree
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "genotype.json").read_text() == first
    rt = tmp_path / "retrain"
    proc = _torchrun("retrain", str(out), "--epochs", "1", "--set", "steps_per_epoch=2", "--set", "batch_size=4",
                     "--set", "val_count=2", "--set", "tensorboard=false", "--out", str(rt))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("retrain finished") == 1
    assert (rt / "best.pt").is_file() and len((rt / "history.jsonl").read_text().splitlines()) == 1
    # resume under torchrun (rank 1 failed on it: AttributeError): one more epoch, then a finished run
    cfg = (rt / "config.yaml").read_text()
    assert "\nepochs: 1\n" in cfg
    (rt / "config.yaml").write_text(cfg.replace("\nepochs: 1\n", "\nepochs: 2\n"))
    ckpt = torch.load(rt / "last.pt", weights_only=True)  # as if stopped after epoch 1 of 2
    ckpt["config"]["epochs"] = 2
    torch.save(ckpt, rt / "last.pt")
    proc = _torchrun("retrain", "--resume", "--out", str(rt))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len((rt / "history.jsonl").read_text().splitlines()) == 2
    proc = _torchrun("retrain", "--resume", "--out", str(rt))  # finished: both ranks return, neither waits
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished its 2 epochs already" in proc.stderr
    # rank 0 refuses before the first barrier: rank 1 said so in 27 lines of gloo traceback
    proc = _torchrun("retrain", str(out), "--out", str(rt))  # a run is there already
    assert proc.returncode != 0 and "atldas: error:" in proc.stderr and "already holds" in proc.stderr
    assert "Connection closed by peer" not in proc.stderr and "GLHF" not in proc.stderr, proc.stderr[-2000:]
    # a global batch the processes cannot share: refused before the run folder is made (it failed at the
    # first step, after rank 0 had written config.yaml)
    proc = _torchrun("search", "--space", "tiny", "--epochs", "2", "--out", str(tmp_path / "odd"), "--set",
                     "batch_size=3")
    assert proc.returncode != 0 and "batch_size 3 does not divide by the 2 processes" in proc.stderr
    assert not (tmp_path / "odd").exists()


def test_a_process_group_that_cannot_start_is_one_line(monkeypatch):
    """WORLD_SIZE without torchrun's other variables, or --device cuda under torchrun on a machine without
    CUDA (torch.cuda.set_device ran before any check): tracebacks on every rank."""
    from atldas.errors import AtldasError, ConfigError
    from atldas.utils.dist import init_from_env

    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(AtldasError, match=r"^WORLD_SIZE=2 but the process group cannot start \(.*\); start "):
        init_from_env("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no CUDA device here"):
            init_from_env("cuda")
    with pytest.raises(ConfigError, match=r"device cuda:1 under torchrun: each process runs on its own GPU.*pass --device cuda"):
        init_from_env("cuda:1")
    # a resumed run: its config.yaml sets the device, which --resume's flags cannot change
    with pytest.raises(ConfigError, match=r"set `device: cuda` in run/config.yaml"):
        init_from_env("cuda:0", config_yaml="run/config.yaml")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"keeps the device of its run/config.yaml: .* set `device: cpu` there"):
            init_from_env("cuda", config_yaml="run/config.yaml")
    assert not dist.is_initialized()


def test_a_resumed_run_joins_torchrun_on_its_own_device(tmp_path):
    """On --resume the command's --device is the default (a flag would be refused), so torchrun's backend
    and GPU came from 'cpu' for a run that trains on cuda: gloo, every rank on cuda:0."""
    from atldas.rundir import RunDir

    (tmp_path / "config.yaml").write_text("device: cuda\nepochs: 3\n")
    rd = RunDir(tmp_path, checkpoint="last.pt", kind="retrain")
    assert rd.device("cpu", resume=True) == "cuda"
    assert rd.device("cpu", resume=False) == "cpu"
    assert RunDir(tmp_path / "new", checkpoint="last.pt", kind="retrain").device("cpu", resume=True) == "cpu"
