"""Model-level eval (`atldas eval --model --checkpoint --data`) on a tiny generic-folder data set the
test writes, and the closed-form matting baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atldas.cli import main
from atldas.data.io import alpha_to_u8, read_alpha, write_alpha, write_rgb, write_trimap
from atldas.evaluate import evaluate_folders
from atldas.matting import metrics
from atldas.matting.scoring import evaluate_model, trivial_alpha
from atldas.models.classical import ClosedFormMatting, closed_form_alpha
from atldas.models.zoo import resolve_model

SIZES = [(40, 56), (48, 48), (33, 70)]  # (H, W): none needs to be a multiple of 32


def trivial_prediction(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """The trivial 8-bit prediction: alpha 0.5 in the unknown region, clamped by the trimap."""
    return alpha_to_u8(trivial_alpha(image, trimap))


def _scene(h: int, w: int, seed: int):
    """A soft disc of one colour on a smooth background of another, its trimap and alpha."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    cy, cx, r = h / 2 + rng.uniform(-3, 3), w / 2 + rng.uniform(-3, 3), min(h, w) / 3
    alpha = np.clip((r - np.hypot(yy - cy, xx - cx)) / 4.0 + 0.5, 0, 1)
    alpha = alpha_to_u8(alpha).astype(np.float32) / 255.0
    fg = np.stack([0.9 - 0.2 * yy / h, 0.2 + 0.1 * xx / w, 0.1 + 0 * xx], -1)
    bg = np.stack([0.1 + 0 * xx, 0.3 + 0.2 * yy / h, 0.8 - 0.2 * xx / w], -1)
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    tri = np.full((h, w), 128, np.uint8)
    d = np.hypot(yy - cy, xx - cx)
    tri[d < r - 6] = 255
    tri[d > r + 6] = 0
    return image.astype(np.float32), tri, alpha


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """root/{images, trimaps, alphas} with three small scenes (generic layout)."""
    root = tmp_path_factory.mktemp("generic")
    for k, (h, w) in enumerate(SIZES):
        image, tri, alpha = _scene(h, w, k)
        write_rgb(root / "images" / f"s{k}.png", image)
        write_trimap(root / "trimaps" / f"s{k}.png", tri)
        write_alpha(root / "alphas" / f"s{k}.png", alpha)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = resolve_model("cnn_baseline_tiny").build()
    path = tmp_path_factory.mktemp("ck") / "ck.pt"
    torch.save({"model": net.state_dict()}, path)
    return path


def test_cli_model_eval_writes_table_json_and_predictions(folder, checkpoint, tmp_path, capsys):
    js, preds = tmp_path / "scores.json", tmp_path / "pred"
    code = main(["eval", "--model", "cnn_baseline_tiny", "--checkpoint", str(checkpoint), "--data", str(folder),
                 "--save-pred", str(preds), "--json", str(js), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "SAD" in out and "MSE x1e3" in out and "cnn_baseline_tiny" in out
    assert out.rstrip().endswith(f"wrote {js}\nwrote 3 prediction(s) to {preds}")  # results: kept by --quiet
    result = json.loads(js.read_text())
    assert set(result) == {"SAD", "MSE", "Grad", "Conn", "count", "per_image", "threads"}
    assert result["threads"] == torch.get_num_threads()  # a network's scores depend on it: recorded
    assert result["count"] == 3 and set(result["per_image"]) == {"s0.png", "s1.png", "s2.png"}
    for scores in result["per_image"].values():
        assert set(scores) == {"SAD", "MSE", "Grad", "Conn"}
    assert result["SAD"] == pytest.approx(np.mean([s["SAD"] for s in result["per_image"].values()]))
    # the saved predictions are the mattes scored: 8-bit, full size, clamped by the trimap
    for k, (h, w) in enumerate(SIZES):
        p = alpha_to_u8(read_alpha(preds / f"s{k}.png"))
        assert p.shape == (h, w)
        _, tri, _ = _scene(h, w, k)
        assert (p[tri == 0] == 0).all() and (p[tri == 255] == 255).all()
    again = evaluate_folders(pred_dir=preds, alpha_dir=folder / "alphas", trimap_dir=folder / "trimaps",
                             progress=False)
    for key in ("SAD", "MSE", "Grad", "Conn"):
        assert again[key] == pytest.approx(result[key], rel=1e-12, abs=1e-15)


def test_closed_form_beats_the_trivial_prediction(folder):
    image, tri, alpha = _scene(48, 64, 7)
    pred = alpha_to_u8(closed_form_alpha(image, tri))
    gt = alpha_to_u8(alpha)
    cf = metrics.compute_all(pred, gt, tri)
    trivial = metrics.compute_all(trivial_prediction(image, tri), gt, tri)
    assert cf["SAD"] < 0.5 * trivial["SAD"], (cf, trivial)
    assert cf["MSE"] < 0.25 * trivial["MSE"]
    assert (pred[tri == 0] == 0).all() and (pred[tri == 255] == 255).all()
    # as a MODEL through model-level eval, without a checkpoint
    result = evaluate_model(model="closed_form", checkpoint=None, data=folder, progress=False)
    assert result["count"] == 3 and result["SAD"] > 0
    trivial_sad = np.mean([metrics.sad(trivial_prediction(i, t), alpha_to_u8(a), t)
                           for i, t, a in (_scene(h, w, k) for k, (h, w) in enumerate(SIZES))])
    assert result["SAD"] < 0.5 * trivial_sad


def test_closed_form_module_and_edge_cases():
    image, tri, alpha = _scene(32, 40, 1)
    x = torch.cat([torch.from_numpy(image).permute(2, 0, 1),
                   torch.from_numpy(np.stack([tri == 0, tri == 128, tri == 255]).astype(np.float32))])[None]
    y = ClosedFormMatting()(x.repeat(2, 1, 1, 1))
    assert y.shape == (2, 1, 32, 40)
    assert np.allclose(y[0, 0].numpy(), closed_form_alpha(image, tri))
    known = np.where(alpha > 0.5, 255, 0).astype(np.uint8)
    assert np.array_equal(closed_form_alpha(image, known), known / 255.0)  # nothing unknown
    only_bg = np.where(tri == 255, 128, tri).astype(np.uint8)  # no foreground pixel: alpha 0
    assert not closed_form_alpha(image, only_bg).any()
    from atldas.errors import DataError

    with pytest.raises(DataError, match="trimap is 10x32"):
        closed_form_alpha(image, tri[:, :10])


def test_model_eval_on_synthetic_data(checkpoint, capsys):
    result = evaluate_model(model="cnn_baseline_tiny", checkpoint=checkpoint, data="synthetic", size=48,
                            count=2, progress=False)
    assert result["count"] == 2 and all(n.endswith(".png") for n in result["per_image"])
    assert capsys.readouterr().out == ""  # the library returns the scores; the CLI prints the table


def test_model_eval_user_errors_are_one_line(folder, checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"nope": torch.zeros(1)}}, bad)
    no_alpha = tmp_path / "noalpha"
    for sub in ("images", "trimaps"):
        (no_alpha / sub).mkdir(parents=True)
        for p in (folder / sub).iterdir():
            (no_alpha / sub / p.name).write_bytes(p.read_bytes())
    cases = [
        (["--model", "cnn_baseline_tiny", "--data", str(folder)], "--checkpoint"),
        (["--model", "cnn_baseline_tiny", "--checkpoint", str(bad), "--data", str(folder)], str(bad)),
        (["--model", "cnn_baseline_tiny", "--checkpoint", str(checkpoint)], "--data"),
        (["--model", "cnn_baseline_tiny", "--checkpoint", str(checkpoint), "--data", str(no_alpha)],
         "ground-truth"),
        (["--model", "no_such_model", "--data", str(folder)], "unknown model"),
        (["--model", "closed_form", "--data", str(tmp_path / "missing")], "no such folder"),
        (["--model", "closed_form", "--data", str(folder), "--save-pred", str(folder / "alphas")],
         "inside the data folder"),
        (["--model", "cnn_baseline_tiny", "--checkpoint", str(checkpoint), "--data", str(folder), "--json",
          str(checkpoint)], "it would be overwritten"),
        (["--model", "closed_form", "--data", str(folder), "--backgrounds", str(tmp_path / "nope")],
         "background folder does not exist"),  # was ignored without a word
    ]
    for args, expected in cases:
        code = main(["eval", *args, "--no-progress"])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("atldas: error:")]
        assert code == 2 and len(lines) == 1, (args, err)
        assert expected in lines[0], (args, lines[0])
        assert "Traceback" not in err


def test_real_photo_quality_script_scores_closed_form_and_trivial(folder, tmp_path, capsys):
    """experiments/real_photo_quality.py: the README's real-photo table, here on the tiny generic set
    (no retrain runs): closed form and the trivial matte, per image and on average."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "rpq", Path(__file__).resolve().parents[1] / "experiments" / "real_photo_quality.py")
    rpq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rpq)
    js = tmp_path / "q.json"
    assert rpq.main(["--data", str(folder), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    rows = json.loads(js.read_text())["rows"]
    assert set(rows) == {"closed_form", "trivial (0.5)"}
    trivial_sad = np.mean([metrics.sad(trivial_prediction(i, t), alpha_to_u8(a), t)
                           for i, t, a in (_scene(h, w, k) for k, (h, w) in enumerate(SIZES))])
    assert rows["trivial (0.5)"]["SAD"] == pytest.approx(trivial_sad)
    assert "| closed_form |" in out and "0 of 3" in out and "SAD s0" in out


def test_model_eval_amp_runs_under_autocast_and_warns_where_bf16_is_emulated(folder, checkpoint, monkeypatch,
                                                                              caplog):
    from atldas.matting import inference

    seen = []
    real = inference._autocast
    monkeypatch.setattr(inference, "_autocast", lambda device, amp: seen.append(amp) or real(device, amp))
    full = evaluate_model(model="cnn_baseline_tiny", checkpoint=checkpoint, data=folder, progress=False)
    assert seen == [False] * 3
    seen.clear()
    for has_bf16, warned in ((True, False), (False, True)):
        monkeypatch.setattr(inference, "cpu_has_bf16", lambda: has_bf16)
        caplog.clear()
        with caplog.at_level("WARNING", logger="atldas"):
            half = evaluate_model(model="cnn_baseline_tiny", checkpoint=checkpoint, data=folder, progress=False,
                                  amp=True)
        assert seen == [True] * 3
        seen.clear()
        assert ("no bf16 instructions" in caplog.text) == warned
        for key in ("SAD", "MSE"):  # bf16 rounds; the scores stay those of the same network
            assert half[key] == pytest.approx(full[key], rel=0.05, abs=1e-3)


def test_bf16_error_script_reports_both_modes(checkpoint, tmp_path, capsys):
    """experiments/bf16_error.py (the bf16 table in experiments/MEASURED.md) on a tiny network: both modes timed, the
    differences and the scores of each."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bf16_error", Path(__file__).resolve().parents[1] / "experiments" / "bf16_error.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    js = tmp_path / "bf16.json"
    assert script.main(["--model", "cnn_baseline_tiny", "--checkpoint", str(checkpoint), "--sizes", "64",
                        "--count", "2", "--rounds", "1", "--json", str(js)]) == 0
    (row,) = json.loads(js.read_text())["rows"]
    assert row["size"] == 64 and row["images"] == 2
    assert set(row["wall_s"]) == set(row["cpu_s"]) == set(row["scores"]) == {"float32", "bf16"}
    assert 0 <= row["max_abs"] <= 1 and row["mean_abs_unknown"] <= row["max_abs"]
    assert row["max_grey_levels"] <= round(row["max_abs"] * 255) + 1
    assert "64^2, 2 images" in capsys.readouterr().out


def test_backgrounds_a_layout_does_not_compose_on_are_reported(folder, tmp_path, caplog):
    """--backgrounds with a data set whose test images are not composed (here real photos in the generic
    layout): scored as they are, with a warning instead of silence."""
    import logging

    (tmp_path / "bg").mkdir()
    with caplog.at_level(logging.WARNING, logger="atldas"):
        assert main(["eval", "--model", "closed_form", "--data", str(folder), "--backgrounds", str(tmp_path / "bg"),
                     "--limit", "1", "--no-progress"]) == 0
    assert "--backgrounds is not used" in caplog.text


def test_a_folder_where_a_prediction_goes_is_refused_before_any_is_written(folder, tmp_path, capsys):
    out = tmp_path / "preds"
    (out / "s1.png").mkdir(parents=True)
    assert main(["eval", "--model", "closed_form", "--data", str(folder), "--save-pred", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is a folder where the prediction of s1.png goes" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["s1.png"]


def test_save_pred_writes_nothing_when_a_later_image_fails(folder, tmp_path, capsys):
    """A truncated third image: one line, exit 2, and no prediction left behind (the first two were
    written as the loop went), nor the hidden folder they wait in; a folder's own files stay."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    (data / "images" / "s2.png").write_bytes((data / "images" / "s2.png").read_bytes()[:200])
    out = tmp_path / "preds"
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    assert main(["eval", "--model", "closed_form", "--data", str(data), "--save-pred", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "s2.png" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "preds"]
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert main(["eval", "--model", "closed_form", "--data", str(data), "--save-pred", str(tmp_path / "new"),
                 "--no-progress"]) == 2  # a folder it made for them: removed again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "preds"]
    capsys.readouterr()
    assert main(["eval", "--model", "closed_form", "--data", str(folder), "--save-pred", str(out),
                 "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "s0.png", "s1.png", "s2.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "preds"]
    # a link to a folder elsewhere (another disk, a mount point): the predictions land there
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    assert main(["eval", "--model", "closed_form", "--data", str(folder), "--save-pred", str(tmp_path / "link"),
                 "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["s0.png", "s1.png", "s2.png"]


def test_a_failed_save_pred_leaves_another_processs_files_in_the_folder_it_made(folder, tmp_path):
    """Two evals into one new --save-pred folder: the one that made it removed the whole folder when it
    failed or was stopped, with the other's published predictions and its staging folder (whose files
    then went missing without a word). Now it removes its own staging folder, and the folder only if
    empty."""
    from atldas.data.datasets import open_dataset
    from atldas.matting.scoring import score_dataset

    out = tmp_path / "preds"
    calls = []

    def predict(image, trimap):
        calls.append(1)
        if len(calls) == 1:  # meanwhile another process publishes a prediction and stages the next
            (out / "other.png").write_bytes(b"x")
            (out / ".partial.atldas-1@elsewhere.abc").mkdir()
            return np.zeros(trimap.shape, np.float32)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_dataset(open_dataset(folder, split="test"), predict, save_pred=out)
    assert sorted(p.name for p in out.iterdir()) == [".partial.atldas-1@elsewhere.abc", "other.png"]
    with pytest.raises(KeyboardInterrupt):  # alone: the folder it made is gone again
        calls.clear()
        score_dataset(open_dataset(folder, split="test"), lambda i, t: (_ for _ in ()).throw(KeyboardInterrupt()),
                      save_pred=tmp_path / "alone")
    assert not (tmp_path / "alone").exists()


@pytest.mark.parametrize("spoil", ["truncated", "size", "mode", "no_unknown"])
def test_model_eval_reads_every_file_before_the_network_runs(folder, tmp_path, capsys, monkeypatch, spoil):
    """A bad third file (truncated, an alpha of another size, a pixel mode no reader takes) is one line
    before the network runs on the first image (it ran on two first, and wasted a whole set)."""
    import shutil

    from PIL import Image

    import atldas.matting.scoring as scoring

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    s2 = data / "images" / "s2.png"
    if spoil == "truncated":
        s2.write_bytes(s2.read_bytes()[:200])
    elif spoil == "size":
        a = data / "alphas" / "s2.png"
        Image.open(a).crop((0, 0, 10, 10)).save(a)
    elif spoil == "mode":
        s2.unlink()
        Image.open(folder / "images" / "s2.png").convert("LAB").save(data / "images" / "s2.tif")
    else:
        t2 = data / "trimaps" / "s2.png"
        Image.fromarray(np.where(np.asarray(Image.open(t2)) > 0, 255, 0).astype(np.uint8)).save(t2)
    calls = []
    monkeypatch.setattr(scoring, "predict_alpha", lambda *a, **k: calls.append(1))
    assert main(["eval", "--model", "closed_form", "--data", str(data), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "s2" in err and "Traceback" not in err and calls == []
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err  # one line, no warning before it


def test_model_eval_takes_the_documented_split_and_limit(checkpoint, folder, capsys):
    """`--split test` is the default for synthetic data too; `train` names the option; limit 0 is refused
    in Python as in the CLI (it scored every image)."""
    assert main(["eval", "--model", "cnn_baseline_tiny", "--checkpoint", str(checkpoint), "--data", "synthetic",
                 "--split", "test", "--limit", "2", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--model", "cnn_baseline_tiny", "--checkpoint", str(checkpoint), "--data", "synthetic",
                 "--split", "train", "--no-progress"]) == 2
    assert "--split train: synthetic eval data has a test split only" in capsys.readouterr().err
    from atldas.errors import ConfigError

    with pytest.raises(ConfigError, match="limit must be an integer of at least 1"):
        evaluate_model(model="closed_form", data=folder, limit=0, progress=False)
