"""`atldas predict` through atldas.cli.main, and the checkpoint layouts of atldas.utils.weights."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from atldas.cli import main
from atldas.errors import DataError
from atldas.models.base import MattingModel
from atldas.models.zoo import resolve_model
from atldas.utils.weights import load_weights


def _error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("atldas: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _tiny_genotype(path: Path, *, genotype: str = "atldas_cifar100", C: int = 8) -> Path:
    from derived_models import get_genotype

    g = get_genotype(genotype).replace(space={"name": "tiny", "macro": {"C": C, "layers": 3}})
    return g.save(path)


def _save_image(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _pair(root: Path, stem: str, h: int, w: int, seed: int, ext: str = ".png"):
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    tri = np.where(r < min(h, w) / 5, 255, np.where(r < min(h, w) / 2.5, 128, 0)).astype(np.uint8)
    return _save_image(root / "img" / f"{stem}{ext}", img), _save_image(root / "tri" / f"{stem}.png", tri)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny genotype, a released-format checkpoint for it ({"model": state_dict}) and two image/trimap
    pairs of odd sizes."""
    root = tmp_path_factory.mktemp("predict")
    geno = _tiny_genotype(root / "tiny.json")
    torch.manual_seed(0)
    net = resolve_model(geno).build()
    ckpt = root / "tiny.pth"
    torch.save({"model": net.state_dict()}, ckpt)
    _pair(root, "a", 45, 67, 0, ".jpg")
    _pair(root, "b", 33, 40, 1)
    return root, geno, ckpt


def _predict(capsys, *args):
    code = main(["predict", *map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_folders_8_and_16_bit_with_cutouts(setup, tmp_path, capsys):
    root, geno, ckpt = setup
    code, out, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", root / "img",
                              "--trimap", root / "tri", "--out", tmp_path / "o8")
    assert code == 0, err
    assert "wrote 2 alpha matte(s) and 2 RGBA cut-out(s)" in out
    code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", root / "img",
                            "--trimap", root / "tri", "--out", tmp_path / "o16", "--bits", "16")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o16").iterdir()) == ["a.png", "b.png", "rgba"]
    assert sorted(p.name for p in (tmp_path / "o16" / "rgba").iterdir()) == ["a.png", "b.png"]
    for stem, (h, w) in {"a": (45, 67), "b": (33, 40)}.items():
        a8 = Image.open(tmp_path / "o8" / f"{stem}.png")
        a16 = Image.open(tmp_path / "o16" / f"{stem}.png")
        assert a8.mode == "L" and a16.mode.startswith("I") and a8.size == a16.size == (w, h)
        v8 = np.asarray(a8, np.float64) / 255
        v16 = np.asarray(a16, np.float64) / 65535
        assert np.abs(v8 - v16).max() <= 0.5 / 255 + 1e-9
        tri = np.asarray(Image.open(root / "tri" / f"{stem}.png"))
        assert np.all(v16[tri == 255] == 1.0) and np.all(v16[tri == 0] == 0.0)
        cut = Image.open(tmp_path / "o8" / "rgba" / f"{stem}.png")
        assert cut.mode == "RGBA" and cut.size == (w, h)
        np.testing.assert_array_equal(np.asarray(cut)[:, :, 3], np.asarray(a8))


def test_predict_single_file_released_cheapmatting_no_cutout(tmp_path, capsys):
    img, tri = _pair(tmp_path, "photo", 40, 52, 3)
    torch.manual_seed(0)
    ckpt = tmp_path / "cheapmatting.pth"
    torch.save({"model": resolve_model("cheapmatting").build().state_dict()}, ckpt)
    code, out, err = _predict(capsys, "--model", "cheapmatting", "--checkpoint", ckpt, "--image", img,
                              "--trimap", tri, "--out", tmp_path / "out", "--no-cutout", "--tile", "64",
                              "--overlap", "32")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["photo.png"]
    assert Image.open(tmp_path / "out" / "photo.png").size == (52, 40)


def test_run_directory_model_and_image_file_with_trimap_folder(setup, tmp_path, capsys):
    root, geno, ckpt = setup
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(geno, run / "genotype.json")
    code, _, err = _predict(capsys, "--model", run, "--checkpoint", ckpt, "--image", root / "img" / "b.png",
                            "--trimap", root / "tri", "--out", tmp_path / "out", "--no-cutout")
    assert code == 0, err
    assert (tmp_path / "out" / "b.png").is_file()


def test_size_mismatch_writes_nothing(setup, tmp_path, capsys):
    root, geno, ckpt = setup
    shutil.copytree(root / "img", tmp_path / "img")
    tri = tmp_path / "tri"
    shutil.copytree(root / "tri", tri)
    _save_image(tri / "b.png", np.full((33, 41), 128, np.uint8))
    code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", tmp_path / "img",
                            "--trimap", tri, "--out", tmp_path / "out")
    line = _error_line(err)
    assert code == 2
    assert "40x33" in line and "41x33" in line and "b.png" in line and "nothing was written" in line
    assert not (tmp_path / "out").exists()


def test_missing_trimap_lists_the_images(setup, tmp_path, capsys):
    root, geno, ckpt = setup
    tri = tmp_path / "tri"
    tri.mkdir()
    shutil.copy(root / "tri" / "a.png", tri / "a.png")
    code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", root / "img",
                            "--trimap", tri, "--out", tmp_path / "out")
    line = _error_line(err)
    assert code == 2 and "1 image(s)" in line and "b.png" in line and "no trimap" in line
    assert not (tmp_path / "out").exists()


def test_checkpoint_of_another_network(setup, tmp_path, capsys):
    root, geno, _ = setup
    other = _tiny_genotype(tmp_path / "other.json", genotype="darts_v2", C=16)
    ckpt = tmp_path / "other.pth"
    torch.save({"model": resolve_model(other).build().state_dict()}, ckpt)
    code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", root / "img",
                            "--trimap", root / "tri", "--out", tmp_path / "out")
    line = _error_line(err)
    assert code == 2
    assert f"checkpoint {ckpt} does not fit" in line
    assert "missing key" in line and "unexpected" in line and "shape mismatch" in line
    assert "stem00.0.weight: checkpoint [8, 6, 3, 3] vs model [4, 6, 3, 3]" in line
    assert not (tmp_path / "out").exists()


class _Evil:
    def __reduce__(self):
        return (print, ("this code ran while loading a checkpoint",))


@pytest.mark.parametrize("payload, names", [(lambda sd: {"model": sd, "args": argparse.Namespace(lr=1.0)},
                                             "argparse.Namespace"),
                                            (lambda sd: {"model": _Evil()}, "print")])
def test_checkpoint_carrying_code_is_refused(setup, tmp_path, capsys, payload, names):
    root, geno, ckpt = setup
    bad = tmp_path / "bad.pth"
    torch.save(payload(torch.load(ckpt, weights_only=True)["model"]), bad)
    code, out, err = _predict(capsys, "--model", geno, "--checkpoint", bad, "--image", root / "img",
                              "--trimap", root / "tri", "--out", tmp_path / "out")
    line = _error_line(err)
    assert code == 2 and "refused" in line and "carries code" in line and "weights_only" in line
    assert names in line
    assert "this code ran" not in out + err


def test_missing_checkpoint_file_and_flag(setup, tmp_path, capsys):
    root, geno, _ = setup
    code, _, err = _predict(capsys, "--model", geno, "--checkpoint", tmp_path / "nope.pth", "--image",
                            root / "img", "--trimap", root / "tri", "--out", tmp_path / "out")
    assert code == 2 and "no such checkpoint file" in _error_line(err)
    code, _, err = _predict(capsys, "--model", geno, "--image", root / "img", "--trimap", root / "tri",
                            "--out", tmp_path / "out")
    assert code == 2 and "--checkpoint is required" in _error_line(err)
    assert not (tmp_path / "out").exists()


def test_output_folder_must_not_overwrite_inputs(setup, tmp_path, capsys):
    root, geno, ckpt = setup
    code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", root / "img",
                            "--trimap", root / "tri", "--out", root / "tri")
    assert code == 2 and "is the folder of the input images or trimaps" in _error_line(err)
    # the images' folder too: a.png beside a.jpg, and the next predict of that folder met two files of stem a
    code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", root / "img",
                            "--trimap", root / "tri", "--out", root / "img")
    assert code == 2 and "is the folder of the input images or trimaps" in _error_line(err)
    # the cut-outs' folder (OUT/rgba) holding the images
    import shutil

    shutil.copytree(root / "img", tmp_path / "d" / "rgba")
    code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", tmp_path / "d" / "rgba",
                            "--trimap", root / "tri", "--out", tmp_path / "d")
    assert code == 2 and "overwrite an input" in _error_line(err)


def test_non_learned_model_needs_no_checkpoint(setup, tmp_path, monkeypatch):
    """The hook for classical methods (closed-form matting): meta={"learned": False}."""
    from atldas import predict as predict_mod

    class Grey(nn.Module):
        def forward(self, x):
            return x[:, :1]

    model = MattingModel(name="grey", build=Grey, meta={"learned": False})
    monkeypatch.setattr(predict_mod, "resolve_model", lambda spec: model)
    root, _, _ = setup
    written = predict_mod.predict(model="grey", checkpoint=None, image=root / "img", trimap=root / "tri",
                                  out=tmp_path / "out", cutout=False, progress=False)
    assert [p.name for p in written] == ["a.png", "b.png"]


def test_closed_form_runs_without_a_checkpoint(setup, tmp_path, capsys):
    root, _, _ = setup
    code, _, err = _predict(capsys, "--model", "closed_form", "--image", root / "img" / "b.png", "--trimap",
                            root / "tri" / "b.png", "--out", tmp_path / "out", "--no-cutout")
    assert code == 0, err
    alpha = np.asarray(Image.open(tmp_path / "out" / "b.png"))
    tri = np.asarray(Image.open(root / "tri" / "b.png"))
    assert np.all(alpha[tri == 255] == 255) and np.all(alpha[tri == 0] == 0)


# --------------------------------------------------------------------------- checkpoint layouts

def _small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(6, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 1, 1))


@pytest.mark.parametrize("layout", ["released", "retrain", "state_dict", "plain", "ddp", "ema", "no_counter"])
def test_load_weights_layouts(tmp_path, layout):
    torch.manual_seed(1)
    src = _small()
    sd = src.state_dict()
    key = None
    if layout == "released":
        obj = {"model": sd}
    elif layout == "retrain":
        obj = {"model": sd, "ema": {k: torch.zeros_like(v) for k, v in sd.items()}, "epoch": 7,
               "optimizer": {"state": {}, "param_groups": []}}
    elif layout == "state_dict":
        obj = {"state_dict": sd, "epoch": 1}
    elif layout == "plain":
        obj = sd
    elif layout == "ddp":
        obj = {"model": {f"module.{k}": v for k, v in sd.items()}}
    elif layout == "ema":  # torch.optim.swa_utils.AveragedModel's state dict under "ema"
        obj = {"model": {k: torch.zeros_like(v) for k, v in sd.items()},
               "ema": {"n_averaged": torch.tensor(3), **{f"module.{k}": v for k, v in sd.items()}}}
        key = "ema"
    else:
        obj = {"model": {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}}
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    torch.manual_seed(2)
    dst = _small()
    rest = load_weights(dst, path, key=key)
    for k, v in sd.items():
        if not (layout == "no_counter" and k.endswith("num_batches_tracked")):
            assert torch.equal(dst.state_dict()[k], v), k
    if layout == "retrain":
        assert rest["epoch"] == 7 and "ema" in rest and "model" not in rest


def test_load_weights_errors(tmp_path):
    torch.save({"epoch": 1, "config": {"lr": 0.1}}, tmp_path / "none.pt")
    with pytest.raises(DataError, match="no weights found.*'epoch', 'config'"):
        load_weights(_small(), tmp_path / "none.pt")
    torch.save({"model": _small().state_dict()}, tmp_path / "ok.pt")
    with pytest.raises(DataError, match="no 'ema' entry"):
        load_weights(_small(), tmp_path / "ok.pt", key="ema")
    wide = nn.Sequential(nn.Conv2d(6, 5, 3), nn.BatchNorm2d(5), nn.Conv2d(5, 1, 1))
    with pytest.raises(DataError, match=r"does not fit Sequential: 7 shape mismatches \(0.weight: "
                                        r"checkpoint \[4, 6, 3, 3\] vs model \[5, 6, 3, 3\]"):
        load_weights(wide, tmp_path / "ok.pt", name=None)
    extra = nn.Sequential(nn.Conv2d(6, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 1, 1), nn.Conv2d(1, 1, 1))
    with pytest.raises(DataError, match=r"2 missing keys \(3.weight, 3.bias\)"):
        load_weights(extra, tmp_path / "ok.pt")
    load_weights(extra, tmp_path / "ok.pt", strict=False)  # missing keys allowed, shapes fit
    ints = {k: v.long() if v.is_floating_point() else v for k, v in _small().state_dict().items()}
    torch.save({"model": ints}, tmp_path / "int.pt")  # the right names and shapes, integer weights
    with pytest.raises(DataError, match="tensor '0.weight' is int64 where Sequential has float32"):
        load_weights(_small(), tmp_path / "int.pt")
    counter = _small().state_dict()
    counter["1.num_batches_tracked"] = torch.tensor(7.0)  # a counter saved as a float (a converted checkpoint)
    torch.save({"model": counter}, tmp_path / "float_counter.pt")
    net = _small()
    load_weights(net, tmp_path / "float_counter.pt")
    assert net[1].num_batches_tracked.dtype == torch.int64 and int(net[1].num_batches_tracked) == 7


def test_tiling_a_network_with_image_wide_context_warns(tmp_path, caplog):
    import numpy as np
    import torch
    from PIL import Image

    from atldas.cli import main
    from atldas.data.io import write_trimap
    from atldas.models.zoo import create_model

    Image.fromarray(np.full((96, 128, 3), 90, np.uint8)).save(tmp_path / "p.png")
    write_trimap(tmp_path / "t.png", np.full((96, 128), 128, np.uint8))
    torch.save({"model": create_model("cnn_baseline_tiny").state_dict()}, tmp_path / "w.pt")
    caplog.set_level("WARNING", logger="atldas")
    assert main(["predict", "--model", "cnn_baseline_tiny", "--checkpoint", str(tmp_path / "w.pt"), "--image",
                 str(tmp_path / "p.png"), "--trimap", str(tmp_path / "t.png"), "--out", str(tmp_path / "o"),
                 "--tile", "64", "--overlap", "32", "--no-cutout"]) == 0
    assert "image-wide context (GroupNorm)" in caplog.text


def test_predict_amp_writes_mattes_near_float32_and_warns_only_where_bf16_is_emulated(setup, tmp_path, capsys,
                                                                                       monkeypatch, caplog):
    from atldas.matting import inference

    root, geno, ckpt = setup
    common = ["--model", geno, "--checkpoint", ckpt, "--image", root / "img", "--trimap", root / "tri", "--no-cutout"]
    code, _, err = _predict(capsys, *common, "--out", tmp_path / "f32")
    assert code == 0, err
    for has_bf16 in (True, False):
        monkeypatch.setattr(inference, "cpu_has_bf16", lambda: has_bf16)
        out = tmp_path / f"bf16-{has_bf16}"
        caplog.clear()
        with caplog.at_level("WARNING", logger="atldas"):
            code, _, err = _predict(capsys, *common, "--out", out, "--amp")
        assert code == 0, err
        assert ("no bf16 instructions" in caplog.text) == (not has_bf16), caplog.text
        for stem in ("a", "b"):
            a = np.asarray(Image.open(out / f"{stem}.png"), np.int32)
            b = np.asarray(Image.open(tmp_path / "f32" / f"{stem}.png"), np.int32)
            assert np.abs(a - b).max() <= 16  # bf16 rounding, not another network


# --------------------------------------------------------------------------- junk inputs

def test_image_as_its_own_trimap_is_refused(setup, tmp_path, capsys):
    root, geno, ckpt = setup
    for image, trimap in ((root / "img" / "b.png", root / "img" / "b.png"), (root / "img", root / "img")):
        code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", image, "--trimap", trimap,
                                "--out", tmp_path / "out")
        line = _error_line(err)
        assert code == 2 and "--image and --trimap give the same file" in line and "b.png" in line
        assert not (tmp_path / "out").exists()


def test_noise_trimap_is_refused_before_writing(setup, tmp_path, capsys):
    root, geno, ckpt = setup
    tri = _save_image(tmp_path / "tri" / "b.png", np.random.default_rng(2).integers(0, 256, (33, 40)).astype(np.uint8))
    code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", root / "img" / "b.png",
                            "--trimap", tri, "--out", tmp_path / "out")
    assert code == 2 and _error_line(err).startswith(f"atldas: error: {tri}: ") and "not a trimap" in err
    assert not (tmp_path / "out").exists()


def test_rgb_trimap_warning_is_logged_once(setup, tmp_path, capsys, caplog):
    root, geno, ckpt = setup
    t = np.repeat(np.asarray(Image.open(root / "tri" / "b.png"))[:, :, None], 3, axis=2)
    t[0, 0] = (0, 3, 0)  # channels differ in one pixel: read as luma, with a warning
    tri = _save_image(tmp_path / "tri" / "b.png", t)
    with caplog.at_level("WARNING", logger="atldas"):
        code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", root / "img" / "b.png",
                                "--trimap", tri, "--out", tmp_path / "out", "--no-cutout")
    assert code == 0, err
    assert sum("RGB with different channels" in r.getMessage() for r in caplog.records) == 1


def test_float_image_with_nan_is_refused_before_writing(setup, tmp_path, capsys):
    root, geno, ckpt = setup
    a = np.full((33, 40), 0.5, np.float32)
    a[4, 7] = np.nan
    img = tmp_path / "b.tif"
    Image.fromarray(a, mode="F").save(img)
    code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", img, "--trimap",
                            root / "tri" / "b.png", "--out", tmp_path / "out")
    assert code == 2
    assert _error_line(err) == (f"atldas: error: {img}: 1 pixel(s) are NaN or infinite; re-save the image with "
                                "finite values")
    assert not (tmp_path / "out").exists()


def _overflowing_checkpoint(geno, path: Path) -> Path:
    """Finite weights whose output overflows to NaN/inf (what a diverged training leaves)."""
    torch.manual_seed(0)
    net = resolve_model(geno).build()
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 4:
                p.mul_(1e12)
    torch.save({"model": net.state_dict()}, path)
    return path


def test_a_network_with_non_finite_output_is_refused_not_written_or_scored(setup, tmp_path, capsys):
    """A finite checkpoint whose output overflows: predict writes no all-zero mattes, eval no scores,
    export does not blame the exporter; one line each, exit 2."""
    root, geno, _ = setup
    huge = _overflowing_checkpoint(geno, tmp_path / "huge.pth")
    code, _, err = _predict(capsys, "--model", geno, "--checkpoint", huge, "--image", root / "img" / "b.png",
                            "--trimap", root / "tri" / "b.png", "--out", tmp_path / "out")
    line = _error_line(err)
    assert code == 2 and "NaN or infinite value(s)" in line and "weights are broken" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))
    code = main(["eval", "--model", str(geno), "--checkpoint", str(huge), "--data", "synthetic", "--limit", "1",
                 "--json", str(tmp_path / "e.json"), "--no-progress"])
    _, err = capsys.readouterr()
    assert code == 2 and "NaN or infinite value(s)" in _error_line(err) and not (tmp_path / "e.json").exists()
    pytest.importorskip("onnxruntime")
    code = main(["export", "--model", str(geno), "--checkpoint", str(huge), "--onnx", str(tmp_path / "m.onnx"),
                 "--size", "96"])
    _, err = capsys.readouterr()
    line = _error_line(err)
    assert code == 2 and "weights are broken" in line and "opset" not in line and not (tmp_path / "m.onnx").exists()
    code = main(["export", "--model", str(geno), "--checkpoint", str(huge), "--onnx", str(tmp_path / "m.onnx"),
                 "--size", "96", "--no-check"])  # unchecked: still not written (it was)
    _, err = capsys.readouterr()
    assert code == 2 and "weights are broken" in _error_line(err) and not (tmp_path / "m.onnx").exists()


def test_output_paths_that_are_folders_or_files_are_refused_before_the_first_write(setup, tmp_path, capsys):
    """A folder where b.png goes, or a file where the cut-outs' folder goes: refused before a.png is
    written (it was written, then the run failed)."""
    root, geno, ckpt = setup
    for out, blocker, expect in ((tmp_path / "o1", "b.png", "is a folder where b's output goes"),
                                 (tmp_path / "o2", "rgba", "is a file where the cut-outs' folder goes")):
        out.mkdir()
        (out / blocker).mkdir() if blocker.endswith(".png") else (out / blocker).write_text("x")
        code, _, err = _predict(capsys, "--model", geno, "--checkpoint", ckpt, "--image", root / "img",
                                "--trimap", root / "tri", "--out", out)
        line = _error_line(err)
        assert code == 2 and expect in line, line
        assert sorted(p.name for p in out.iterdir()) == [blocker]


def test_a_checkpoint_of_another_genotype_with_the_same_shapes_is_refused(tmp_path, capsys):
    """Two genotypes that differ only in a parameter-free op have the same weight names and shapes: a
    retrain checkpoint of one loaded into the other silently (mattes off by up to 59/255)."""
    import copy

    from atldas.genotype import Genotype
    from atldas.models.zoo import create_model

    a = _tiny_genotype(tmp_path / "a.json", genotype="darts_v2")
    ga = Genotype.load(a)
    data = copy.deepcopy(ga.to_json())
    first = data["cells"]["reduce"]["nodes"][0]["inputs"][0]
    assert first[0] == "max_pool_3x3"
    first[0] = "avg_pool_3x3"
    data.pop("darts", None)
    b = Genotype.from_json(data).save(tmp_path / "b.json")
    net = resolve_model(a).build()
    torch.save({"model": net.state_dict(), "genotype": ga.to_json()}, tmp_path / "a.pt")
    create_model(a, checkpoint_path=tmp_path / "a.pt")  # its own genotype: loads
    with pytest.raises(DataError, match=f"trained for genotype {ga.hash()}"):
        create_model(b, checkpoint_path=tmp_path / "a.pt")
    image = _save_image(tmp_path / "img" / "x.png", np.full((16, 16, 3), 128, np.uint8))
    trimap = _save_image(tmp_path / "tri" / "x.png", np.full((16, 16), 128, np.uint8))
    assert main(["predict", "--model", str(b), "--checkpoint", str(tmp_path / "a.pt"), "--image", str(image),
                 "--trimap", str(trimap), "--out", str(tmp_path / "pred")]) == 2
    assert "was trained for genotype" in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "pred").exists()
