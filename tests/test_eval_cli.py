"""`atldas eval --pred --alpha --trimap [--json]` through atldas.cli.main on small PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atldas.cli import main
from atldas.matting import metrics


def _blob(rng, h=24, w=32):
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.uniform(8, h - 8), rng.uniform(8, w - 8), rng.uniform(5, 9)
    return np.clip((r - np.hypot(yy - cy, xx - cx)) / 3.0, 0, 1)


def _trimap(alpha):
    tri = np.where(alpha >= 1.0, 255, 0).astype(np.uint8)
    tri[(alpha > 0) & (alpha < 1)] = 128
    tri[:2, :2] = 128  # always some unknown
    return tri


def _save(path: Path, array) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _run(capsys, *args):
    code = main(["eval", *map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("atldas: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def dataset(tmp_path):
    """pred/alpha/trimap folders: Composition-1K shared alpha (a_0, a_1 -> a), a 16-bit alpha with an
    RGB prediction and a near-grey trimap (b), a 16-bit prediction (c). Returns the folders and the
    8-bit arrays the scores must be computed from."""
    rng = np.random.default_rng(0)
    P, A, T = tmp_path / "pred", tmp_path / "alpha", tmp_path / "trimap"
    expected = {}

    # a: one alpha, two composites a_0, a_1
    alpha_a = np.rint(_blob(rng) * 255).astype(np.uint8)
    _save(A / "a.png", alpha_a)
    for k in range(2):
        tri = _trimap(alpha_a / 255.0)
        pred = np.clip(alpha_a.astype(int) + rng.integers(-40, 41, alpha_a.shape), 0, 255).astype(np.uint8)
        _save(P / f"a_{k}.png", pred)
        _save(T / f"a_{k}.png", tri)
        expected[f"a_{k}.png"] = (pred, alpha_a, tri)

    # b: 16-bit GT alpha, RGB prediction (equal channels), trimap with near-grey values
    alpha16 = np.rint(_blob(rng) * 65535).astype(np.uint16)
    _save(A / "b.png", alpha16)
    gt_b = np.rint(alpha16 / 65535.0 * 255).astype(np.uint8)  # the 8-bit value DIM scores
    tri_b = _trimap(gt_b / 255.0)
    pred_b = np.clip(gt_b.astype(int) + rng.integers(-30, 31, gt_b.shape), 0, 255).astype(np.uint8)
    _save(P / "b.png", np.repeat(pred_b[:, :, None], 3, axis=2))
    noisy = tri_b.astype(int) + np.where(tri_b == 128, rng.integers(-20, 21, tri_b.shape),
                                         np.where(tri_b == 0, 7, -3))
    _save(T / "b.png", np.clip(noisy, 0, 255).astype(np.uint8))  # 0 -> 7, 255 -> 252, 128 -> 108..148
    expected["b.png"] = (pred_b, gt_b, tri_b)

    # c: 16-bit prediction (rounded to 8 bits for scoring)
    gt_c = np.rint(_blob(rng) * 255).astype(np.uint8)
    tri_c = _trimap(gt_c / 255.0)
    pred16 = np.clip(gt_c / 255.0 + rng.normal(0, 0.05, gt_c.shape), 0, 1)
    pred16 = np.rint(pred16 * 65535).astype(np.uint16)
    _save(P / "c.png", pred16)
    _save(A / "c.png", gt_c)
    _save(T / "c.png", tri_c)
    expected["c.png"] = (np.rint(pred16 / 65535.0 * 255).astype(np.uint8), gt_c, tri_c)
    return P, A, T, expected


def test_eval_json_matches_compute_all(dataset, tmp_path, capsys):
    P, A, T, expected = dataset
    out_json = tmp_path / "out" / "scores.json"
    code, out, err = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T, "--json", out_json)
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert set(data) == {"SAD", "MSE", "Grad", "Conn", "count", "per_image"}
    assert data["count"] == 4
    assert list(data["per_image"]) == ["a_0.png", "a_1.png", "b.png", "c.png"]
    for name, (pred, gt, tri) in expected.items():
        want = metrics.compute_all(pred, gt, tri)
        assert data["per_image"][name] == pytest.approx(want, rel=1e-12, abs=1e-15), name
    for key in ("SAD", "MSE", "Grad", "Conn"):
        mean = np.mean([data["per_image"][n][key] for n in expected])
        assert data[key] == pytest.approx(mean, rel=1e-12)
    assert 0 < data["MSE"] < 0.1  # unscaled
    # the table: MSE printed x 1e3 and labelled so
    assert "MSE x1e3" in out and "count" in out
    assert f"{data['MSE'] * 1e3:.4g}" in out and f"{data['SAD']:.4g}" in out
    assert out.rstrip().endswith(f"wrote {out_json}")  # a result: on stdout, as bench's, kept by --quiet
    # written atomically: nothing but the JSON in its folder
    assert [p.name for p in out_json.parent.iterdir()] == ["scores.json"]


def test_eval_json_to_standard_output_a_link_and_a_pipe(dataset, tmp_path, capsys, monkeypatch):
    """``--json link.json`` replaced the link with a file (as root, ``--json /dev/stdout`` replaced the
    system's /dev/stdout link), ``--json -`` wrote a file named ``-``, and a named pipe was replaced by a
    file: JSON on standard output only through a file and a second step."""
    import os
    import threading

    P, A, T, _ = dataset
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T, "--json", "-")
    assert code == 0, err
    assert json.loads(out)["count"] == 4  # standard output: the JSON alone
    assert "MSE x1e3" in err and not Path("-").exists()
    target = tmp_path / "real" / "scores.json"
    target.parent.mkdir()
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert _run(capsys, "--pred", P, "--alpha", A, "--trimap", T, "--json", link)[0] == 0
    assert link.is_symlink() and json.loads(target.read_text())["count"] == 4
    assert [p.name for p in target.parent.iterdir()] == ["scores.json"]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    read = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_text()), daemon=True)
    reader.start()
    assert _run(capsys, "--pred", P, "--alpha", A, "--trimap", T, "--json", fifo)[0] == 0
    reader.join(30)
    assert json.loads(read[0])["count"] == 4 and fifo.is_fifo()


def test_eval_scores_do_not_depend_on_the_worker_processes(dataset, monkeypatch):
    from atldas.evaluate import evaluate_folders

    P, A, T, _ = dataset
    one = evaluate_folders(pred_dir=P, alpha_dir=A, trimap_dir=T, progress=False, workers=1)
    two = evaluate_folders(pred_dir=P, alpha_dir=A, trimap_dir=T, progress=False, workers=2)
    assert one == two and list(one["per_image"]) == list(two["per_image"])
    import atldas.evaluate as evaluate_mod

    seen, real = [], evaluate_mod._scored
    monkeypatch.setattr(evaluate_mod, "_scored", lambda items, workers: seen.append(workers) or real(items, workers))
    many = evaluate_folders(pred_dir=P, alpha_dir=A, trimap_dir=T, progress=False, workers=40)  # one per image at most
    assert many == one and seen == [len(one["per_image"])]
    from atldas.errors import DataError

    with pytest.raises(DataError, match="--workers must be at least 1, got 0"):  # before the folders are read
        evaluate_folders(pred_dir=P / "nowhere", alpha_dir=A, trimap_dir=T, progress=False, workers=0)


def test_eval_returns_dict_without_json(dataset):
    from atldas.evaluate import evaluate_folders

    P, A, T, _ = dataset
    res = evaluate_folders(pred_dir=P, alpha_dir=A, trimap_dir=T, progress=False)
    assert res["count"] == 4 and len(res["per_image"]) == 4


def test_unclamped_prediction_warns(dataset, caplog, capsys):
    P, A, T, expected = dataset
    pred, gt, tri = expected["c.png"]
    assert np.any(pred[tri == 0] != 0)  # the noisy 16-bit prediction leaks into the background
    with caplog.at_level("WARNING", logger="atldas"):
        code, _, _ = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T)
    assert code == 0
    assert any("not clamped by their trimap" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- bad input

def test_missing_folder(dataset, tmp_path, capsys):
    P, A, T, _ = dataset
    code, _, err = _run(capsys, "--pred", tmp_path / "nope", "--alpha", A, "--trimap", T)
    assert code == 2
    assert _error_line(err) == (f"atldas: error: prediction folder {tmp_path / 'nope'} does not exist "
                                "(--pred); pass a folder of prediction images")


def test_empty_folder(dataset, tmp_path, capsys):
    P, A, T, _ = dataset
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    code, _, err = _run(capsys, "--pred", P, "--alpha", empty, "--trimap", T)
    assert code == 2
    assert _error_line(err).startswith(f"atldas: error: alpha folder {empty} has no images (--alpha)")


def test_missing_flag(dataset, capsys):
    P, A, T, _ = dataset
    code, _, err = _run(capsys, "--pred", P, "--trimap", T)
    assert code == 2
    assert "--alpha" in _error_line(err)


def test_unmatched_files_are_listed(dataset, capsys):
    P, A, T, expected = dataset
    pred, gt, tri = expected["c.png"]
    for i in range(12):  # 12 predictions without trimap or alpha: 10 names listed + "2 more"
        _save(P / f"extra{i:02d}.png", pred)
    (T / "b.png").rename(T / "b_renamed.png")
    code, _, err = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T)
    assert code == 2
    line = _error_line(err)
    assert "13 prediction(s) without a trimap" in line
    assert "b.png, extra00.png" in line and "extra08.png, ... and 3 more" in line
    assert f"1 trimap(s) without a prediction in {P} (b_renamed.png)" in line
    assert "12 prediction(s) without an alpha" in line and "... and 2 more" in line


def test_shared_alpha_needs_the_fg_alpha(dataset, capsys):
    P, A, T, _ = dataset
    (A / "a.png").unlink()
    code, _, err = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T)
    assert code == 2
    assert "2 prediction(s) without an alpha in" in _error_line(err)
    assert "(a_0.png, a_1.png)" in _error_line(err)


def test_size_mismatch_is_named(dataset, capsys):
    P, A, T, expected = dataset
    pred, gt, tri = expected["c.png"]
    _save(P / "c.png", np.zeros((24, 33), np.uint8))  # one column too many
    code, _, err = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T)
    assert code == 2
    assert _error_line(err) == (
        f"atldas: error: size mismatch for c.png: prediction {P / 'c.png'} is 33x24 but its trimap "
        f"{T / 'c.png'} is 32x24 (width x height); nothing is resized: predict at the size of the "
        "trimap and alpha")


def test_size_mismatch_alpha(dataset, capsys):
    P, A, T, _ = dataset
    _save(A / "a.png", np.zeros((25, 32), np.uint8))
    code, _, err = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T)
    assert code == 2
    line = _error_line(err)
    assert f"size mismatch for a_0.png: prediction {P / 'a_0.png'} is 32x24 but its alpha" in line
    assert "is 32x25 (width x height) (and 1 more image(s))" in line


@pytest.mark.parametrize("content", [b"this is not a PNG", None])
def test_corrupt_image(dataset, capsys, content):
    P, A, T, _ = dataset
    path = T / "b.png"
    if content is None:  # a real PNG cut short: the header reads, the pixels do not
        content = path.read_bytes()[:60]
    path.write_bytes(content)
    code, _, err = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T)
    assert code == 2
    line = _error_line(err)
    assert line.startswith(f"atldas: error: {path}: not a readable image (")
    assert line.endswith("re-save it as PNG or JPEG")


def test_trimap_without_unknown(dataset, capsys, caplog):
    P, A, T, expected = dataset
    _save(T / "c.png", np.where(expected["c.png"][1] > 127, 255, 0).astype(np.uint8))
    with caplog.at_level("WARNING", logger="atldas"):
        code, _, err = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T, "--workers", "1")
    assert code == 2
    assert "no unknown" not in caplog.text  # the error alone says it, no warning before it
    assert _error_line(err) == (
        f"atldas: error: {T / 'c.png'}: trimap has no unknown (128) pixels, so MSE is undefined "
        "(DIM divides by their number); fix the trimap, or remove c from the prediction and trimap "
        "folders")


def test_json_path_is_a_folder(dataset, tmp_path, capsys):
    P, A, T, _ = dataset
    code, out, err = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T, "--json", tmp_path)
    assert code == 2
    assert "count" not in out  # refused before scoring
    assert _error_line(err).startswith(f"atldas: error: --json {tmp_path} is a folder")


@pytest.mark.parametrize("kind", ["noise", "photo"])
def test_junk_trimap_is_refused(dataset, capsys, caplog, kind):
    P, A, T, _ = dataset
    rng = np.random.default_rng(3)
    junk = rng.integers(0, 256, (24, 32, 3) if kind == "photo" else (24, 32)).astype(np.uint8)
    _save(T / "b.png", junk)
    with caplog.at_level("WARNING", logger="atldas"):
        code, out, err = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T, "--workers", "1")
    assert code == 2 and "count" not in out
    line = _error_line(err)
    assert line.startswith(f"atldas: error: {T / 'b.png'}: ") and "not a trimap" in line
    assert f"{T / 'b.png'}" not in caplog.text  # no "mapped" or "luma" warning about it before the error


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_float_prediction_is_refused(dataset, capsys, bad):
    P, A, T, expected = dataset
    pred = (expected["c.png"][0] / 255.0).astype(np.float32)
    pred[5, 6] = bad
    (P / "c.png").unlink()
    Image.fromarray(pred, mode="F").save(P / "c.tif")
    code, out, err = _run(capsys, "--pred", P, "--alpha", A, "--trimap", T)
    assert code == 2 and "count" not in out
    assert _error_line(err) == (f"atldas: error: {P / 'c.tif'}: 1 pixel(s) are NaN or infinite; re-save the "
                                "image with finite values")


def test_a_sixteen_bit_colour_prediction_is_rounded_and_counted(tmp_path, caplog):
    """A 16-bit RGB prediction PNG was read by its high bytes (v >> 8, not round(v / 257)) and not
    counted among the 16-bit predictions."""
    import logging

    import cv2

    from atldas.evaluate import evaluate_folders

    rng = np.random.default_rng(3)
    v16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    gt = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    tri = np.full((9, 11), 128, np.uint8)
    tri[0] = 0
    for d in ("pred", "alpha", "trimap"):
        (tmp_path / d).mkdir()
    cv2.imwrite(str(tmp_path / "pred" / "a.png"), np.dstack([v16] * 3))
    Image.fromarray(gt).save(tmp_path / "alpha" / "a.png")
    Image.fromarray(tri).save(tmp_path / "trimap" / "a.png")
    with caplog.at_level(logging.INFO, logger="atldas"):
        got = evaluate_folders(pred_dir=tmp_path / "pred", alpha_dir=tmp_path / "alpha", trimap_dir=tmp_path / "trimap")
    assert "1 prediction(s) are 16-bit" in caplog.text
    want = metrics.compute_all(np.floor(v16 / 257.0 + 0.5).astype(np.uint8), gt, tri)
    [scores] = got["per_image"].values()
    assert scores["SAD"] == pytest.approx(want["SAD"], rel=1e-9) and scores["MSE"] == pytest.approx(want["MSE"], rel=1e-9)
