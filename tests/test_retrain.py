"""`atldas retrain` on a tiny genotype and tiny synthetic crops: the run directory, checkpoints that load
with weights_only, resume after an interruption (bit-identical to an uninterrupted run), NaN handling,
macro overrides, user errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import atldas.rundir as rundir_mod
from atldas.cli import main
from atldas.errors import AtldasError, ConfigError, DataError
from atldas.matting.losses import MattingLoss
from atldas.models.zoo import resolve_model
from atldas.retrain import RetrainConfig, lr_factor, retrain

# two steps of two 32x32 crops per epoch, two 32x32 validation images
TINY = dict(steps_per_epoch=2, batch_size=2, crop=32, val_count=2, val_size=32, tensorboard=False,
            progress=False, threads=1)


@pytest.fixture(scope="module")
def genotype_file(tmp_path_factory) -> Path:
    """A genotype of the `tiny` space (DARTS-v2 cells in the tiny macro: C=8, 3 cells)."""
    import derived_models

    g = derived_models.get_genotype("darts_v2")
    g = g.replace(space={**dict(g.space), "name": "tiny", "macro": {"C": 8, "layers": 3}})
    return g.save(tmp_path_factory.mktemp("g") / "tiny_genotype.json")


def _cfg(genotype_file: Path, out: Path, **kw) -> RetrainConfig:
    return RetrainConfig(model=str(genotype_file), out=str(out), **{**TINY, **kw})


def test_retrain_writes_the_run_directory(genotype_file, tmp_path):
    out = tmp_path / "run"
    assert main(["retrain", str(genotype_file), "--epochs", "2", "--out", str(out), "--no-progress",
                 "--set", "steps_per_epoch=2", "--set", "batch_size=2", "--set", "crop=32",
                 "--set", "val_count=2", "--set", "val_size=32", "--set", "C=12", "--set", "threads=1"]) == 0
    for name in ("config.yaml", "genotype.json", "history.jsonl", "best.pt", "last.pt"):
        assert (out / name).is_file(), name
    assert any((out / "tb").glob("events.out.tfevents.*"))
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    for key in ("loss/total", "loss/l1", "loss/lap", "loss/comp", "lr", "val/SAD", "val/MSE", "val/Grad",
                "val/Conn", "trivial/SAD", "trivial/MSE", "trivial/Grad", "trivial/Conn", "best/SAD"):
        assert key in rows[-1] and math.isfinite(rows[-1][key]), key
    assert rows[0]["trivial/SAD"] == rows[1]["trivial/SAD"] > 0  # same images, same metric code
    last = torch.load(out / "last.pt", weights_only=True)  # data, never code
    best = torch.load(out / "best.pt", weights_only=True)
    assert {"model", "optimizer", "rng", "epoch", "step", "best", "config"} <= set(last)
    assert last["epoch"] == 1 and last["step"] == 4
    assert best["epoch"] == last["best"]["epoch"]
    assert best["metrics"]["SAD"] == min(r["val/SAD"] for r in rows)
    # the run directory is a MODEL: it rebuilds exactly the network trained (macro override C=12)
    g = json.loads((out / "genotype.json").read_text())
    assert g["space"]["macro"]["C"] == 12 and g["space"]["name"] == "tiny"
    net = resolve_model(out).build()
    net.load_state_dict(best["model"], strict=True)
    assert sum(p.numel() for p in net.parameters()) == rows[0]["params"]
    text = (out / "config.yaml").read_text()
    assert "optimizer: adamw" in text and "C: 12" in text


def _strip_times(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_resume_after_interruption_equals_an_uninterrupted_run(genotype_file, tmp_path, monkeypatch):
    kw = dict(epochs=3, ema=0.9, optimizer="radam", seed=3, drop_path=0.2)
    ref = retrain(_cfg(genotype_file, tmp_path / "ref", **kw))

    # retrain writes its checkpoints through the run directory (atldas.rundir.RunDir.save)
    real_save = rundir_mod.save_checkpoint
    saved = {"last": 0}

    def interrupting_save(state, path):
        real_save(state, path)
        if Path(path).name == "last.pt":
            saved["last"] += 1
            if saved["last"] == 2:  # killed right after epoch 2's checkpoint
                raise KeyboardInterrupt

    monkeypatch.setattr(rundir_mod, "save_checkpoint", interrupting_save)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        retrain(_cfg(genotype_file, run, **kw))
    monkeypatch.setattr(rundir_mod, "save_checkpoint", real_save)
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1

    # flags other than --out are ignored on resume: the saved config.yaml wins
    retrain(RetrainConfig(out=str(run), epochs=99), resume=True)
    a = torch.load(ref / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    for key in ("model", "train_model"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k
    assert a["ema"]["updates"] == b["ema"]["updates"] == 6
    assert a["best"] == b["best"] and a["step"] == b["step"]
    ra = [json.loads(x) for x in (ref / "history.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert _strip_times(ra) == _strip_times(rb)
    ba = torch.load(ref / "best.pt", weights_only=True)
    bb = torch.load(run / "best.pt", weights_only=True)
    assert ba["epoch"] == bb["epoch"] and all(torch.equal(ba["model"][k], bb["model"][k]) for k in ba["model"])

    # the run has finished: --resume says so without reading the data (it built the validation set first)
    import atldas.retrain as retrain_mod

    def no_data(cfg):
        raise AssertionError("a finished run read its data")

    monkeypatch.setattr(retrain_mod, "_datasets", no_data)
    last = (run / "last.pt").read_bytes()
    assert retrain(RetrainConfig(out=str(run)), resume=True) == run
    assert (run / "last.pt").read_bytes() == last
    # ... and checks the best.pt it reports (a truncated one was reported as the run's result)
    best = (run / "best.pt").read_bytes()
    (run / "best.pt").write_bytes(best[: len(best) // 2])
    with pytest.raises(DataError, match="best weights .* are lost"):
        retrain(RetrainConfig(out=str(run)), resume=True)
    stale = dict(bb, epoch=bb["epoch"] + 1)
    torch.save(stale, run / "best.pt")
    with pytest.raises(DataError, match="the file was replaced"):
        retrain(RetrainConfig(out=str(run)), resume=True)
    (run / "best.pt").write_bytes(best)
    assert retrain(RetrainConfig(out=str(run)), resume=True) == run


def test_a_resumed_run_drops_the_tensorboard_points_of_the_epoch_it_repeats(genotype_file, tmp_path, monkeypatch):
    """Killed while writing epoch 2's last.pt (its TensorBoard points already flushed), then resumed:
    epoch 2 ran again and tb/ held two points at its step (history.jsonl dropped its line)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    real_save = rundir_mod.save_checkpoint
    saved = {"last": 0}

    def killed_while_saving(state, path):
        if Path(path).name == "last.pt":
            saved["last"] += 1
            if saved["last"] == 2:
                raise KeyboardInterrupt
        real_save(state, path)

    monkeypatch.setattr(rundir_mod, "save_checkpoint", killed_while_saving)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        retrain(_cfg(genotype_file, run, epochs=3, tensorboard=True))
    monkeypatch.setattr(rundir_mod, "save_checkpoint", real_save)
    retrain(RetrainConfig(out=str(run)), resume=True)
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/SAD")] == [0, 1, 2]
    rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(genotype_file, tmp_path, monkeypatch):
    real = MattingLoss.forward
    calls = {"n": 0}

    def flaky(self, pred, batch):
        calls["n"] += 1
        parts = real(self, pred, batch)
        if calls["n"] > 3:  # epoch 1 (2 steps) and one step of epoch 2 are fine
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(MattingLoss, "forward", flaky)
    out = tmp_path / "nan"
    with pytest.raises(AtldasError, match=r"non-finite.*epoch 2, step 2.*last good checkpoint.*epoch 1"):
        retrain(_cfg(genotype_file, out, epochs=3))
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 0  # nothing after the last good epoch was written
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert len((out / "history.jsonl").read_text().splitlines()) == 1


def test_nan_error_is_one_line_from_the_cli(genotype_file, tmp_path, monkeypatch, capsys):
    def always_nan(self, pred, batch):
        return {"loss": pred.sum() * float("nan"), "l1": pred.sum()}

    monkeypatch.setattr(MattingLoss, "forward", always_nan)
    code = main(["retrain", str(genotype_file), "--out", str(tmp_path / "r"), "--no-progress",
                 "--set", "steps_per_epoch=1", "--set", "batch_size=1", "--set", "crop=32",
                 "--set", "val_count=1", "--set", "val_size=32", "--set", "tensorboard=false"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("atldas: error:")]
    assert len(lines) == 1 and "non-finite" in lines[0] and "no checkpoint was written" in lines[0]
    assert "Traceback" not in err


def _composition_1k(root: Path) -> Path:
    """A tiny Composition-1K layout: Training_set/{fg, alpha}, Test_set/{merged, alpha_copy, trimaps}."""
    import numpy as np

    from atldas.data.io import write_alpha, write_rgb, write_trimap

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for k in range(3):
        a = np.clip((18 - np.hypot(yy - 32 - k, xx - 30)) / 4 + 0.5, 0, 1)
        fg = rng.random((64, 64, 3)) * 0.3 + np.array([0.7, 0.2, 0.1])
        write_rgb(root / "Training_set/fg" / f"f{k}.png", fg)
        write_alpha(root / "Training_set/alpha" / f"f{k}.png", a)
        write_alpha(root / "Test_set/alpha_copy" / f"t{k}.png", a)
        bg = rng.random((64, 64, 3)) * 0.3
        write_rgb(root / "Test_set/merged" / f"t{k}_0.png", a[..., None] * fg + (1 - a[..., None]) * bg)
        write_trimap(root / "Test_set/trimaps" / f"t{k}_0.png",
                     np.where(a >= 1, 255, np.where(a <= 0, 0, 128)).astype(np.uint8))
        write_rgb(root / "backgrounds" / f"b{k}.png", rng.random((80, 80, 3)))
    return root


def test_a_composed_set_with_fewer_foregrounds_than_an_epoch_draws_fresh_composites(genotype_file, tmp_path):
    """3 foregrounds, 12 samples an epoch: every sample its own composite (the epoch's order repeated the
    3 indices, so each came back four times bit for bit)."""
    import numpy as np

    from atldas.retrain import _datasets, _epoch_order

    root = _composition_1k(tmp_path / "c1k")
    cfg = _cfg(genotype_file, tmp_path / "run", data=str(root), backgrounds=str(root / "backgrounds"),
               batch_size=4, steps_per_epoch=3, crop=32)
    train, _ = _datasets(cfg)
    for epoch in (0, 1):
        train.set_epoch(epoch)
        idx = _epoch_order(len(train), cfg)(epoch)
        assert len(idx) == 12 and len(set(idx)) == 12
        assert len({np.asarray(train[i]["image"]).tobytes() for i in idx}) == 12
        assert sorted(i % 3 for i in idx) == [0] * 4 + [1] * 4 + [2] * 4  # each foreground as often


def test_retrain_on_a_data_set_folder(genotype_file, tmp_path):
    root = _composition_1k(tmp_path / "c1k")
    out = retrain(_cfg(genotype_file, tmp_path / "run", epochs=1, data=str(root),
                       backgrounds=str(root / "backgrounds"), val_count=0))
    row = json.loads((out / "history.jsonl").read_text())
    assert row["val/count"] == 3  # the whole test split (val_count=0), at full resolution
    assert math.isfinite(row["val/SAD"]) and row["trivial/SAD"] > 0
    with pytest.raises(AtldasError, match="not laid out as Composition-1K training"):
        retrain(_cfg(genotype_file, tmp_path / "run2", epochs=1, data=str(root / "Test_set")))


def test_user_errors_are_one_line(genotype_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run directories would land here
    run = tmp_path / "r"
    (run).mkdir()
    (run / "last.pt").write_bytes(b"")
    cases = [
        (["retrain", "cnn_baseline_tiny", "--set", "C=16"], "hand-designed model without a macro"),
        (["retrain", str(genotype_file), "--set", "C=7"], "C must be even"),
        (["retrain", str(genotype_file), "--set", "crop=50"], "multiple of 32"),
        (["retrain", str(genotype_file), "--set", "optimizer=sgd"], "adamw, radam"),
        (["retrain", str(genotype_file), "--out", str(run)], "--resume"),
        (["retrain", "--out", str(tmp_path / "none"), "--resume"], "does not exist"),
        (["retrain", "no_such_model"], "unknown model"),
        (["retrain", str(genotype_file), "--data", str(tmp_path / "missing")], "no such folder"),
        (["retrain"], "needs a MODEL"),
    ]
    for args, expected in cases:
        code = main(args + ["--no-progress"])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("atldas: error:")]
        assert code == 2 and len(lines) == 1, (args, err)
        assert expected in lines[0], (args, lines[0])
    assert not (tmp_path / "runs").exists()  # a refused run leaves no directory behind


def test_lr_schedule_warms_up_then_decays():
    f = [lr_factor(s, total=100, warmup=10, min_ratio=0.05) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))
    assert f[-1] == pytest.approx(0.05, abs=1e-3)
    assert lr_factor(0, total=10, warmup=0, min_ratio=0.0) == pytest.approx(1.0)


@pytest.mark.slow
def test_default_retrain_beats_the_trivial_prediction(tmp_path, tiny_run):
    """The README's default job on the CPU: a tiny search's genotype, the default RetrainConfig."""
    search_out = tiny_run
    out = retrain(RetrainConfig(model=str(search_out / "genotype.json"), out=str(tmp_path / "rt"),
                                tensorboard=False, progress=False))
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["metrics"]["SAD"] < 0.8 * best["trivial"]["SAD"]
    assert best["metrics"]["MSE"] < best["trivial"]["MSE"]


def test_drop_path_on_a_network_without_darts_cells_is_refused(tmp_path):
    from atldas.errors import ConfigError

    cfg = RetrainConfig(model="cnn_baseline_tiny", out=str(tmp_path / "run"), epochs=1, drop_path=0.2, **TINY)
    with pytest.raises(ConfigError, match="no DARTS cells"):
        retrain(cfg)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_retrain_mixes_real_foregrounds(genotype_file, tmp_path, caplog):
    from tests.test_synthetic import _foreground_folder

    folder = _foreground_folder(tmp_path / "fgs")
    caplog.set_level("INFO", logger="atldas")
    out = retrain(_cfg(genotype_file, tmp_path / "run", epochs=1, foregrounds=str(folder), foreground_prob=0.7))
    row = json.loads((out / "history.jsonl").read_text())
    assert math.isfinite(row["val/SAD"]) and "real foregrounds from" in caplog.text and "70 %" in caplog.text
    with pytest.raises(AtldasError, match="--foregrounds mixes real foregrounds into --data synthetic"):
        retrain(_cfg(genotype_file, tmp_path / "run2", epochs=1, foregrounds=str(folder), data=str(tmp_path)))


def test_val_data_validates_on_a_folder_of_its_own(genotype_file, tmp_path, caplog):
    """--val-data: a generic image/trimap/alpha folder validates a synthetic retrain; a folder without
    a test split is one line naming --val-data."""
    from tests.test_datasets import make_generic

    make_generic(tmp_path / "val", names=("a", "b"))
    caplog.set_level("INFO", logger="atldas")
    out = retrain(_cfg(genotype_file, tmp_path / "run", epochs=1, val_data=str(tmp_path / "val"), val_count=0))
    row = json.loads((out / "history.jsonl").read_text())
    assert row["val/count"] == 2 and math.isfinite(row["val/SAD"])
    assert f"{tmp_path / 'val'}, test split at full resolution" in caplog.text
    assert "the first" not in caplog.text
    # val_count cuts the folder: said (it scored 16 of a folder of 40 without a word)
    out = retrain(_cfg(genotype_file, tmp_path / "cut", epochs=1, val_data=str(tmp_path / "val"), val_count=1))
    assert json.loads((out / "history.jsonl").read_text())["val/count"] == 1
    assert "validation set: 1 image(s), the first 1 of 2 images (val_count=1; --set val_count=0 scores all)" in caplog.text
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtldasError, match="--val-data .*empty"):
        retrain(_cfg(genotype_file, tmp_path / "run2", epochs=1, val_data=str(tmp_path / "empty")))


def test_a_failing_retrain_closes_its_tensorboard_writer(genotype_file, tmp_path, monkeypatch):
    """The writer was closed on the normal path only: a retrain from Python that failed or was stopped
    left its event-file thread running."""
    import threading

    import atldas.retrain as retrain_mod

    def writers():
        return [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread" and t.is_alive()]

    before = len(writers())

    def fails(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(retrain_mod, "validate", fails)
    with pytest.raises(KeyboardInterrupt):
        retrain(_cfg(genotype_file, tmp_path / "run", epochs=1, tensorboard=True))
    assert (tmp_path / "run" / "tb").is_dir() and len(writers()) == before


def test_the_matting_losses_follow_gca():
    """The Laplacian loss is GCA Matting's: two pyramids of five band-pass levels (5x5 binomial kernel,
    reflect padding, zero-insertion upsampling with 4x the kernel; no low-pass remainder), level i
    weighted by the unknown region subsampled 2^i times, each level's masked L1 summed and divided by
    its weight's sum, times 2^i; the composition loss sums its three channels over the one-channel
    weight. (The loss before 2026-12-06 gave 1.6 for a constant error of 0.1, which has no band-pass
    content, and changed 6.5x with the unknown region's size at the same per-pixel error.)"""
    import torch.nn.functional as F

    from atldas.matting.losses import MattingLoss, composition_loss, laplacian_loss

    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k2 = (torch.outer(k, k) / 256.0).view(1, 1, 5, 5)

    def gauss(x, kernel):
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel)

    def pyramid(x):  # GCA's lap_pyramid, max_levels=5 (even sizes)
        out, cur = [], x
        for _ in range(5):
            down = gauss(cur, k2)[:, :, ::2, ::2]
            up = torch.zeros(*down.shape[:2], down.shape[2] * 2, down.shape[3] * 2)
            up[:, :, ::2, ::2] = down
            out.append(cur - gauss(up, 4 * k2))
            cur = down
        return out

    def gca(p, t, w):  # GCA's lap_loss with its weight pyramid and regression_loss
        ws = [w[:, :, :: 2 ** i, :: 2 ** i] for i in range(5)]
        return sum(2 ** i * F.l1_loss(a * m, b * m, reduction="sum") / (m.sum() + 1e-8)
                   for i, (a, b, m) in enumerate(zip(pyramid(p), pyramid(t), ws)))

    torch.manual_seed(0)
    p, t = torch.rand(3, 1, 96, 64, requires_grad=True), torch.rand(3, 1, 96, 64)
    w = (torch.rand(3, 1, 96, 64) > 0.4).float()
    want, got = gca(p, t, w), laplacian_loss(p, t, w)
    assert abs(float(got.detach()) - float(want.detach())) < 1e-5 * float(want.detach())
    g_want, = torch.autograd.grad(want, p)
    g_got, = torch.autograd.grad(got, p)
    assert torch.allclose(g_got, g_want, atol=1e-7)
    # a constant error has no band-pass content; the same per-pixel error scores alike whatever the region
    assert float(laplacian_loss(t + 0.1, t, torch.ones_like(w))) < 1e-5
    small = torch.zeros_like(w)
    small[:, :, 32:56, 16:40] = 1.0
    noise = torch.randn(3, 1, 96, 64) * 0.1
    full, part = (float(laplacian_loss(t + noise, t, m)) for m in (torch.ones_like(w), small))
    assert abs(part / full - 1) < 0.35, (part, full)
    # composition: the channel sum over the one-channel weight (3x the channel mean)
    fg, bg, img = torch.rand(3, 3, 96, 64), torch.rand(3, 3, 96, 64), torch.rand(3, 3, 96, 64)
    comp = p.detach() * fg + (1 - p.detach()) * bg
    want_c = F.l1_loss(comp * w, img * w, reduction="sum") / (w.sum() + 1e-8)
    assert torch.allclose(composition_loss(p.detach(), fg, bg, img, w), want_c, rtol=1e-6)
    onehot = torch.cat([1 - w, w, torch.zeros_like(w)], 1)
    parts = MattingLoss()(p.detach(), {"alpha": t, "trimap_onehot": onehot, "fg": fg, "bg": bg, "image": img})
    assert torch.allclose(parts["loss"], parts["l1"] + parts["lap"] + 0.5 * parts["comp"])


def test_the_multi_tensor_optimizer_is_bit_for_bit_the_loop():
    """retrain's AdamW runs ``foreach`` (one kernel per update term over all tensors): the same
    weights, bit for bit, as the per-tensor loop after a few steps with weight decay groups (RAdam's
    foreach form differs in the last bits, so RAdam keeps the loop)."""
    name = "adamw"
    from atldas.retrain import RetrainConfig, _optimizer

    def train(foreach: bool):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.PReLU(8),
                                  torch.nn.Conv2d(8, 1, 1))
        opt = _optimizer(RetrainConfig(optimizer=name), net)
        for g in opt.param_groups:
            g["foreach"] = foreach
        x = torch.randn(4, 3, 12, 12)
        for _ in range(5):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
        return [p.detach().clone() for p in net.parameters()]

    assert _optimizer(RetrainConfig(), torch.nn.Linear(2, 2)).defaults["foreach"] is True
    assert not _optimizer(RetrainConfig(optimizer="radam"), torch.nn.Linear(2, 2)).defaults["foreach"]
    assert all(torch.equal(a, b) for a, b in zip(train(True), train(False)))


def _photos(root: Path, n: int, size=(40, 56)) -> Path:
    """A generic folder of ``n`` real-photo stand-ins: image/, trimap/, alpha/ (a soft disc each)."""
    import numpy as np

    from atldas.data.io import write_alpha, write_rgb, write_trimap

    rng = np.random.default_rng(1)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for k in range(n):
        a = np.clip((12 - np.hypot(yy - h / 2 - k, xx - w / 2)) / 3 + 0.5, 0, 1)
        img = a[..., None] * np.array([0.8, 0.3, 0.1]) + (1 - a[..., None]) * rng.random((h, w, 3)) * 0.3
        write_rgb(root / "image" / f"p{k}.png", img)
        write_alpha(root / "alpha" / f"p{k}.png", a)
        write_trimap(root / "trimap" / f"p{k}.png", np.where(a >= 1, 255, np.where(a <= 0, 0, 128)).astype(np.uint8))
    return root


def test_photo_training_set_crops_around_the_unknown_region(tmp_path):
    """PhotoTrainSet: crop-sized samples (padded when the photo is smaller), a trimap eroded from the
    crop's own alpha, deterministic per (seed, epoch, index), other draws in another epoch."""
    from atldas.data.datasets import PhotoTrainSet, open_dataset

    ds = PhotoTrainSet(open_dataset(_photos(tmp_path / "p", 2), split="test"), crop=48, seed=3, samples_per_photo=4)
    assert len(ds) == 8
    s = ds[5]
    assert s["image"].shape == (3, 48, 48) and s["alpha"].shape == (1, 48, 48) and "fg" not in s
    a, tri = s["alpha"][0], s["trimap"][0]
    assert bool((a[tri == 255] >= 1 - 1e-5).all()) and bool((a[tri == 0] <= 1e-5).all())
    assert bool(((a > 0.01) & (a < 0.99)).any())  # centred on the unknown region
    assert torch.equal(ds[5]["image"], s["image"])
    ds.set_epoch(1)
    assert any(not torch.equal(ds[i]["trimap"], PhotoTrainSet(ds.photos, crop=48, seed=3, samples_per_photo=4)[i]["trimap"])
               for i in range(8))


def test_retrain_on_a_folder_of_photos_holds_some_out(genotype_file, tmp_path, caplog):
    """`retrain --data DIR` with real photos and mattes (generic image/trimap/alpha): trained on crops
    of the photos, validated on the held-out ones, or on --val-data; one photo alone is one line."""
    caplog.set_level("INFO", logger="atldas")
    root = _photos(tmp_path / "photos", 3)
    out = retrain(_cfg(genotype_file, tmp_path / "run", epochs=1, data=str(root)))
    row = json.loads((out / "history.jsonl").read_text())
    assert row["val/count"] == 1 and math.isfinite(row["val/SAD"])  # p2 held out (every 10th, at least one)
    assert "2 real photo(s)" in caplog.text and "held out" in caplog.text
    out2 = retrain(_cfg(genotype_file, tmp_path / "run2", epochs=1, data=str(root), val_data=str(root), val_count=0))
    assert json.loads((out2 / "history.jsonl").read_text())["val/count"] == 3
    assert "is --data itself, which has no test split" in caplog.text  # it validated on its training photos
    one = _photos(tmp_path / "one", 1)
    with pytest.raises(AtldasError, match="--val-data"):
        retrain(_cfg(genotype_file, tmp_path / "run3", epochs=1, data=str(one)))


def test_photos_with_an_alpha_of_another_size_are_refused_before_training(tmp_path):
    """`retrain --data PHOTOS` checks every alpha's and trimap's size against its photo's from the headers
    before any work: a mismatched pair is one error naming both files, not a stop when the sample is first
    read."""
    import numpy as np

    from atldas.data.io import write_alpha, write_trimap
    from atldas.retrain import _photo_datasets

    root = _photos(tmp_path / "photos", 12)
    write_alpha(root / "alpha" / "p3.png", np.zeros((20, 24)))  # the photos are 56x40
    cfg = RetrainConfig(model="cnn_baseline_tiny", data=str(root), out=str(tmp_path / "run"))
    with pytest.raises(DataError, match=r"p3.png is 56x40 but its alpha .*p3.png is 24x20"):
        _photo_datasets(root, cfg)
    write_alpha(root / "alpha" / "p3.png", np.zeros((40, 56)))
    write_trimap(root / "trimap" / "p9.png", np.zeros((40, 40), np.uint8))  # read with its sample, though unused
    with pytest.raises(DataError, match=r"p9.png is 56x40 but its trimap .*p9.png is 40x40"):
        _photo_datasets(root, cfg)
    write_trimap(root / "trimap" / "p9.png", np.zeros((40, 56), np.uint8))
    assert len(_photo_datasets(root, cfg)[1]) == 1


def test_held_out_photos_share_no_image_or_alpha_with_training(tmp_path):
    """alphamatting.com's training set reads every photo twice (Trimap1/, Trimap2/), Composition-1K's
    test set composes each foreground several times: a held-out sample whose photo or alpha is also
    trained on is not held out. Every 10th photo goes out with all its samples."""
    import shutil

    from atldas.data.datasets import MattingFolders, MattingItem
    from atldas.retrain import _photo_datasets

    src, root = _photos(tmp_path / "src", 12), tmp_path / "amc"
    shutil.copytree(src / "image", root / "input_training_lowres")
    shutil.copytree(src / "alpha", root / "gt_training_lowres")
    for k in (1, 2):
        shutil.copytree(src / "trimap", root / "trimap_training_lowres" / f"Trimap{k}")
    cfg = RetrainConfig(model="cnn_baseline_tiny", data=str(root), out=str(tmp_path / "run"))
    train, val = _photo_datasets(root, cfg)
    photos = val.dataset
    held = {photos.items[i].image for i in val.indices}
    trained = {photos.items[i].image for i in train.photos.indices}
    assert len(photos) == 24 and not held & trained and {p.name for p in held} == {"p7.png"}  # p0, p1, p10, p11, p2, ..., p7
    assert sorted(photos.names[i] for i in val.indices) == ["Trimap1/p7.png", "Trimap2/p7.png"]
    # composites of one foreground share its alpha: one file, or a copy per composite (mmagic's layout)
    a, a_copy, b = (src / "alpha" / "p1.png"), tmp_path / "a_copy.png", src / "alpha" / "p2.png"
    shutil.copy(a, a_copy)
    items = [MattingItem("a_0.png", tmp_path / "i0.png", None, a), MattingItem("a_1.png", tmp_path / "i1.png", None, a),
             MattingItem("b_0.png", tmp_path / "i2.png", None, b), MattingItem("a_2.png", tmp_path / "i3.png", None, a_copy)]
    assert MattingFolders(items).sources == [0, 0, 1, 0]


def test_retrain_on_photos_with_their_own_test_split(genotype_file, tmp_path, caplog):
    """A photo layout with a train and a test split (AM-2k: {train, validation}/{original, mask,
    trimap}) trains on the train split and validates on the test split, holding nothing out."""
    caplog.set_level("INFO", logger="atldas")
    for split, n in (("train", 2), ("validation", 3)):
        src = _photos(tmp_path / f"src_{split}", n)
        for a, b in (("image", "original"), ("alpha", "mask"), ("trimap", "trimap")):
            (tmp_path / "am2k" / split).mkdir(parents=True, exist_ok=True)
            (src / a).rename(tmp_path / "am2k" / split / b)
    out = retrain(_cfg(genotype_file, tmp_path / "run", epochs=1, data=str(tmp_path / "am2k"), val_count=0))
    assert json.loads((out / "history.jsonl").read_text())["val/count"] == 3
    assert "2 real photo(s)" in caplog.text and "the test split of" in caplog.text
    # a test split whose files do not pair up is said so (it was taken for a missing split without a word)
    (tmp_path / "am2k" / "validation" / "mask" / "p0.png").rename(tmp_path / "am2k" / "validation" / "mask" / "q0.png")
    caplog.clear()
    out2 = retrain(_cfg(genotype_file, tmp_path / "run2", epochs=1, data=str(tmp_path / "am2k"), val_count=0))
    assert "the test split of" in caplog.text and "is not used: 2 missing partner file(s)" in caplog.text
    assert json.loads((out2 / "history.jsonl").read_text())["val/count"] == 1  # held out of the training photos
    caplog.clear()  # with --val-data the test split is not read at all
    retrain(_cfg(genotype_file, tmp_path / "run3", epochs=1, data=str(tmp_path / "am2k"),
                 val_data=str(_photos(tmp_path / "val", 2)), val_count=0))
    assert "missing partner" not in caplog.text


def test_a_run_refused_after_it_started_leaves_no_folder(genotype_file, tmp_path, capsys):
    """A bad file found only when training reads it (one trimap of another size, every 10th photo held
    out) refuses the run with one line, and the folder it had created is removed again; a model
    without weights is refused before anything is written."""
    import numpy as np

    from atldas.data.io import write_trimap

    root = _photos(tmp_path / "photos", 3)
    image = (root / "image" / "p1.png").read_bytes()
    (root / "image" / "p1.png").write_bytes(image[:120])  # p1 trains: its header reads, its pixels do not
    out = tmp_path / "run"
    with pytest.raises(AtldasError, match="p1.png"):
        retrain(_cfg(genotype_file, out, epochs=1, data=str(root)))
    assert not out.exists()
    (root / "image" / "p1.png").write_bytes(image)
    write_trimap(root / "trimap" / "p1.png", np.full((40, 50), 128, np.uint8))  # of another size: found up front
    code = main(["retrain", "closed_form", "--out", str(tmp_path / "cf"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "without weights" in err and "Traceback" not in err
    assert not (tmp_path / "cf").exists()
    existing = tmp_path / "mine"  # a folder the user made is kept, with what was in it
    (existing / "notes").mkdir(parents=True)
    with pytest.raises(AtldasError, match="but its trimap .*p1.png is 50x40"):
        retrain(_cfg(genotype_file, existing, epochs=1, data=str(root)))
    assert (existing / "notes").is_dir()


def test_resume_refuses_a_checkpoint_that_is_not_this_runs_last_pt_in_one_line(genotype_file, tmp_path, capsys):
    """A best.pt, or another width's last.pt, in place of last.pt: one line naming the file, exit 2 (a
    KeyError and a size-mismatch traceback before)."""
    import shutil

    run, other = tmp_path / "run", tmp_path / "other"
    retrain(_cfg(genotype_file, run, epochs=1))
    retrain(_cfg(genotype_file, other, epochs=1, C=16))
    kept = (run / "last.pt").read_bytes()
    for source, expect in ((run / "best.pt", "not the last.pt of a retrain run (no optimizer"),
                           (other / "last.pt", "does not fit the network of this run's config.yaml")):
        shutil.copy(source, run / "last.pt")
        assert main(["retrain", "--out", str(run), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("atldas: error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert f"{run / 'last.pt'}" in lines[0] and expect in lines[0], lines[0]
    (run / "last.pt").write_bytes(kept)
    # a config.yaml edited since last.pt was written: one line naming the change (it went on silently,
    # with RAdam over AdamW's moments)
    text = (run / "config.yaml").read_text()
    assert "optimizer: adamw" in text
    (run / "config.yaml").write_text(text.replace("optimizer: adamw", "optimizer: radam"))
    assert main(["retrain", "--out", str(run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "differs from the config its last.pt was trained with: optimizer: 'radam' (was 'adamw')" in err, err
    # how it runs (data workers, TensorBoard, device) may change; a moved input is said, not refused
    assert "num_workers: 0" in text and "tensorboard: false" in text
    (run / "config.yaml").write_text(text.replace("num_workers: 0", "num_workers: 1")
                                     .replace("tensorboard: false", "tensorboard: true"))
    assert main(["retrain", "--out", str(run), "--resume", "--no-progress"]) == 0
    (run / "config.yaml").write_text(text)
    assert main(["retrain", "--out", str(run), "--resume", "--no-progress"]) == 0


def test_two_runs_genotypes_get_their_own_default_folder_and_resume_finds_it(genotype_file, tmp_path, monkeypatch):
    """Every RUN/genotype.json defaulted to runs/retrain-genotype-seed0 (the second was refused, and its
    advice '--resume' then asked for --out): the default names the run's folder, and --resume of a
    MODEL without --out continues that default folder."""
    from atldas.retrain import default_out

    for name in ("runA", "runB"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "genotype.json").write_text(genotype_file.read_text())
    assert default_out(RetrainConfig(model=str(tmp_path / "runA" / "genotype.json"))) == \
        Path("runs") / "retrain-runA-seed0"
    assert default_out(RetrainConfig(model=str(genotype_file))) == Path("runs") / "retrain-tiny_genotype-seed0"
    monkeypatch.chdir(tmp_path)
    fast = ["--set", "steps_per_epoch=2", "--set", "batch_size=2", "--set", "crop=32", "--set", "val_count=2",
            "--set", "val_size=32", "--set", "tensorboard=false", "--no-progress"]
    for name in ("runA", "runB"):
        assert main(["retrain", f"{name}/genotype.json", "--epochs", "1", *fast]) == 0
    assert main(["retrain", "runA/genotype.json", "--resume", "--no-progress"]) == 0
    # the run folder and its genotype.json are one MODEL: either names the run that the other started
    assert main(["retrain", "runB", "--resume", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["retrain-runA-seed0", "retrain-runB-seed0"]


def test_a_run_of_another_loss_definition_is_warned_on_resume(genotype_file, tmp_path, caplog):
    """The matting losses changed definition (GCA's conventions, 2026-12-06) with no config key to show it:
    checkpoints record the version, and a run of another one is warned when it resumes."""
    import logging

    run = tmp_path / "run"
    retrain(_cfg(genotype_file, run, epochs=1))
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["loss_version"] == "gca-2026-12-06"
    del ckpt["loss_version"]  # as an older atldas wrote it
    torch.save(ckpt, run / "last.pt")
    with caplog.at_level(logging.WARNING, logger="atldas"):
        retrain(RetrainConfig(out=str(run)), resume=True)
    assert "trained with another definition of the matting loss (before versions were recorded)" in caplog.text


def test_best_is_the_lowest_validation_sad_saved_with_the_validated_ema_weights_and_lr_decays_per_step(
        tmp_path, monkeypatch):
    """Mutations that survived the suite: best.pt taken on another metric (in a tiny run SAD fell every
    epoch, so "best = last" passed); best.pt and last.pt holding the training weights instead of the EMA
    weights that were validated; the learning rate restarting its warm-up every epoch."""
    import atldas.retrain as rt

    sads = iter([3.0, 1.0, 2.0])
    real = rt.validate

    def scripted(model, net, val, **kw):  # the real validation, its SAD replaced by a scripted one
        metrics, n, previews = real(model, net, val, **kw)
        return {**metrics, "SAD": next(sads)}, n, previews

    monkeypatch.setattr(rt, "validate", scripted)
    cfg = RetrainConfig(model="cnn_baseline_tiny", out=str(tmp_path / "r"), epochs=3, ema=0.9, warmup_epochs=0.5,
                        **TINY)
    out = retrain(cfg)
    best = torch.load(out / "best.pt", weights_only=True)
    last = torch.load(out / "last.pt", weights_only=True)
    assert best["epoch"] == 1 and best["metrics"]["SAD"] == 1.0 and last["best"]["epoch"] == 1
    ema_weights = last["ema"]["weights"]
    assert all(torch.equal(last["model"][k], ema_weights[k]) for k in ema_weights)
    assert any(not torch.equal(last["model"][k], last["train_model"][k]) for k in ema_weights
               if last["model"][k].is_floating_point())
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    total, warmup = 3 * TINY["steps_per_epoch"], TINY["steps_per_epoch"] // 2
    for r in rows:  # the lr of each epoch's last step: one schedule over the whole run
        step = (r["epoch"] + 1) * TINY["steps_per_epoch"] - 1
        assert r["lr"] == pytest.approx(cfg.lr * lr_factor(step, total=total, warmup=warmup, min_ratio=cfg.min_lr_ratio))
    assert rows[0]["lr"] > rows[1]["lr"] > rows[2]["lr"]


def test_ema_ramps_up_and_averages_towards_the_network():
    from torch import nn

    from atldas.retrain import EMA

    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = EMA(net, decay=0.999)
    with torch.no_grad():
        net.weight.fill_(12.0)
    ema.update(net)  # first update: decay min(0.999, 2 / 11)
    d = 2 / 11
    assert float(ema.module.weight[0, 0]) == pytest.approx(d * 1.0 + (1 - d) * 12.0)
    for _ in range(50):
        ema.update(net)
    assert float(ema.module.weight[0, 0]) == pytest.approx(12.0, rel=1e-3)  # a network that stands still


def test_synthetic_retrain_epochs_draw_fresh_samples():
    from atldas.retrain import _epoch_order

    cfg = RetrainConfig(model="cnn_baseline_tiny", **TINY)
    order = _epoch_order(10**6, cfg)
    assert not set(order(0)) & set(order(1)) and len(order(0)) == TINY["steps_per_epoch"] * TINY["batch_size"]


def test_a_stop_between_last_pt_and_best_pt_is_completed_on_resume(genotype_file, tmp_path, monkeypatch):
    """best.pt was written before last.pt: a stop between the two left best.pt holding an epoch that
    last.pt did not know, and a resumed run whose repeated epoch scored otherwise (a GPU, a thread count
    edited) ended with best.pt holding weights the run did not name as its best. Now last.pt comes first
    and a resume writes the missing best.pt from it."""
    kw = dict(epochs=3, seed=4)
    ref = retrain(_cfg(genotype_file, tmp_path / "ref", **kw))
    rows = [json.loads(x) for x in (ref / "history.jsonl").read_text().splitlines()]
    stop = rows[-1]["best/epoch"]  # stopped right after the best epoch's last.pt: no later epoch writes best.pt
    real_save = rundir_mod.save_checkpoint
    written = []

    def stopping_save(state, path):
        real_save(state, path)
        written.append((Path(path).name, int(state["epoch"])))
        if written[-1] == ("last.pt", stop):  # killed before this epoch's best.pt
            raise KeyboardInterrupt

    monkeypatch.setattr(rundir_mod, "save_checkpoint", stopping_save)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        retrain(_cfg(genotype_file, run, **kw))
    monkeypatch.setattr(rundir_mod, "save_checkpoint", real_save)
    assert not (run / "best.pt").exists() or torch.load(run / "best.pt", weights_only=True)["epoch"] != stop
    retrain(RetrainConfig(out=str(run)), resume=True)
    ba, bb = (torch.load(r / "best.pt", weights_only=True) for r in (ref, run))
    assert ba["epoch"] == bb["epoch"] and ba["metrics"] == bb["metrics"]
    assert all(torch.equal(ba["model"][k], bb["model"][k]) for k in ba["model"])


def test_a_retrain_run_of_a_hand_designed_model_is_a_model(tmp_path, capsys):
    """README: a MODEL is 'a search or retrain run directory'; a retrain of a registered model without a
    genotype (cnn_baseline_tiny) wrote no genotype.json, and eval/predict/export refused its folder."""
    out = retrain(RetrainConfig(model="cnn_baseline_tiny", out=str(tmp_path / "run"), epochs=1, **TINY))
    model = resolve_model(out)
    assert str(out) in model.name and "cnn_baseline_tiny" in model.name
    net = model.build()
    net.load_state_dict(torch.load(out / "best.pt", weights_only=True)["model"], strict=True)
    assert main(["eval", "--model", str(out), "--checkpoint", str(out / "best.pt"), "--data", "synthetic",
                 "--limit", "1", "--no-progress", "--quiet"]) == 0
    assert "SAD" in capsys.readouterr().out
    # a retrain of that run folder is a MODEL too (its config.yaml names the folder)
    again = retrain(RetrainConfig(model=str(out), out=str(tmp_path / "again"), epochs=1, **TINY))
    assert "cnn_baseline_tiny" in resolve_model(again).name
    # a name this process does not know (a model registered by the user's own code): one line naming it
    (out / "config.yaml").write_text((out / "config.yaml").read_text().replace("cnn_baseline_tiny", "my_own_net"))
    with pytest.raises(ConfigError, match="it trained .my_own_net., not a genotype: a model name not registered"):
        resolve_model(out)


def test_grad_clip_zero_turns_clipping_off(tmp_path):
    """grad_clip's range started above 0, so the documented 'no clipping' branch could not be reached."""
    out = retrain(RetrainConfig(model="cnn_baseline_tiny", out=str(tmp_path / "run"), epochs=1, grad_clip=0.0, **TINY))
    assert torch.load(out / "last.pt", weights_only=True)["config"]["grad_clip"] == 0.0
    with pytest.raises(ConfigError, match="grad_clip"):
        RetrainConfig(model="cnn_baseline_tiny", grad_clip=-1.0).check()
