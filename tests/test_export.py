"""`atldas export`: ONNX with dynamic height and width, checked against PyTorch in onnxruntime at
another size than the export size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atldas.cli import main

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def genotype_file(tmp_path_factory):
    import derived_models

    g = derived_models.get_genotype("darts_v2")
    g = g.replace(space={**dict(g.space), "name": "tiny", "macro": {"C": 8, "layers": 3}})
    return g.save(tmp_path_factory.mktemp("g") / "tiny_genotype.json")


def test_export_genotype_model_matches_pytorch_at_another_size(genotype_file, exported):
    from atldas.models.zoo import resolve_model

    onnx_path, ckpt, out = exported
    assert "max abs diff" in out and "[1, 6, 160, 128]" in out

    import onnx

    m = onnx.load(str(onnx_path))
    (inp,), (outp,) = m.graph.input, m.graph.output
    assert inp.name == "input" and outp.name == "alpha"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 6, "height", "width"]

    # independent check at a third size and batch 2: the graph is dynamic in B, H and W
    model = resolve_model(genotype_file)
    net = model.build()
    net.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
    net.eval()
    x = torch.rand(2, 6, 128, 224)
    x[:, 3:] = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 128, 224)), 3).permute(0, 3, 1, 2).float()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["alpha"], {"input": x.numpy()})
    with torch.no_grad():
        ref = model.forward(net, x).numpy()
    assert got.shape == (2, 1, 128, 224)
    assert np.max(np.abs(got - ref)) < 1e-4


def test_export_user_errors_are_one_line(genotype_file, tmp_path, capsys):
    cases = [
        (["--model", "closed_form", "--onnx", str(tmp_path / "c.onnx")], "classical"),
        (["--model", str(genotype_file), "--onnx", str(tmp_path / "x.onnx"), "--size", "80"], "multiple of 32"),
        (["--model", str(genotype_file), "--checkpoint", str(tmp_path / "none.pt"), "--onnx",
          str(tmp_path / "y.onnx")], "no such checkpoint"),
        (["--model", str(genotype_file), "--onnx", str(tmp_path / "z.onnx")], "needs the trained weights: --checkpoint"),
        (["--model", str(genotype_file), "--initial-weights", "--onnx", str(tmp_path / "z.txt")], "must end in .onnx"),
        (["--model", str(genotype_file), "--checkpoint", str(tmp_path / "none.pt"), "--initial-weights", "--onnx",
          str(tmp_path / "z.onnx")], "exclude each other"),
    ]
    for args, expected in cases:
        code = main(["export", *args])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("atldas: error:")]
        assert code == 2 and len(lines) == 1, (args, err)
        assert expected in lines[0], (args, lines[0])
    assert not any(tmp_path.glob("*.onnx")) and not (tmp_path / "z.txt").exists()


def test_missing_onnx_is_a_one_line_hint(genotype_file, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kw):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    code = main(["export", "--model", str(genotype_file), "--onnx", str(tmp_path / "z.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'atldas[export]'" in err and "Traceback" not in err


def test_a_torch_without_the_new_exporter_is_a_one_line_error(genotype_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    code = main(["export", "--model", str(genotype_file), "--onnx", str(tmp_path / "z.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "torch >= 2.6" in err and "2.5.1+cpu" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def exported(genotype_file, tmp_path_factory):
    """(onnx path, checkpoint, what ``atldas export`` printed): the genotype's network with seeded
    weights, exported once through the command line at 96 px with the graph optimizer (the default)
    and shared by the tests below (an export takes 10-25 s)."""
    import contextlib
    import io

    from atldas.models.zoo import resolve_model

    tmp = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    ckpt = tmp / "best.pt"
    torch.save({"model": resolve_model(str(genotype_file)).build().state_dict(), "epoch": 0}, ckpt)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", "--model", str(genotype_file), "--checkpoint", str(ckpt), "--onnx",
                     str(tmp / "m.onnx"), "--size", "96"])
    assert code == 0 and (tmp / "m.onnx").is_file()
    return tmp / "m.onnx", ckpt, printed.getvalue()


def test_export_with_the_graph_optimizer(exported):
    """The default export (graph optimizer on) passes its own check in onnxruntime at 160 x 128."""
    import re

    found = re.search(r"onnxruntime matches PyTorch on \[1, 6, 160, 128\] \(max abs diff ([0-9.e+-]+)\)", exported[2])
    assert found and float(found.group(1)) < 1e-4, exported[2]


def test_readme_onnx_example_matches_predict(genotype_file, exported, tmp_path):
    """The README's onnxruntime example, as written, gives atldas predict's matte, and the exported
    file carries the input contract in its metadata."""
    import re
    from pathlib import Path

    import onnx
    from PIL import Image

    from atldas.data.io import write_trimap
    from atldas.export import INPUT_SPEC

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"<!-- onnx-example -->\s*```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    ns: dict = {}
    exec(compile(blocks[0], "README onnx example", "exec"), ns)

    onnx_path = exported[0]
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert {k: props[k] for k in INPUT_SPEC} == INPUT_SPEC and props["atldas.version"]
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "tri").mkdir()
    Image.fromarray((rng.random((70, 90, 3)) * 255).astype(np.uint8)).save(tmp_path / "img" / "a.png")
    tri = np.full((70, 90), 128, np.uint8)
    tri[:10], tri[-10:] = 0, 255
    write_trimap(tmp_path / "tri" / "a.png", tri)
    ours = ns["matte"](str(onnx_path), tmp_path / "img" / "a.png", tmp_path / "tri" / "a.png")
    assert ours.shape == (70, 90)

    from atldas.matting.inference import predict_alpha
    from atldas.models.zoo import resolve_model

    mm = resolve_model(str(genotype_file))
    rgb = np.asarray(Image.open(tmp_path / "img" / "a.png"), np.float32) / 255.0
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    class _Onnx(torch.nn.Module):  # the exported graph as a network, through atldas's own inference
        def forward(self, x):
            return torch.from_numpy(session.run(["alpha"], {"input": x.numpy()})[0])

    reference = predict_alpha(mm, _Onnx(), rgb, tri)
    assert np.abs(ours - reference).max() < 1e-5


def test_an_onnx_file_is_a_model_for_predict_and_eval(genotype_file, exported, tmp_path, capsys):
    """predict and eval run an exported file through onnxruntime (weights inside: no --checkpoint) and
    give the torch network's mattes; the verbs that need a torch network say so in one line."""
    import json

    from PIL import Image

    from atldas.data.io import write_trimap

    onnx_path, ckpt, _ = exported
    rng = np.random.default_rng(0)
    for d in ("img", "tri", "gt"):
        (tmp_path / d).mkdir()
    Image.fromarray((rng.random((70, 90, 3)) * 255).astype(np.uint8)).save(tmp_path / "img" / "a.png")
    tri = np.full((70, 90), 128, np.uint8)
    tri[:10], tri[-10:] = 0, 255
    write_trimap(tmp_path / "tri" / "a.png", tri)
    Image.fromarray((rng.random((70, 90)) * 255).astype(np.uint8)).save(tmp_path / "gt" / "a.png")
    common = ["--image", str(tmp_path / "img"), "--trimap", str(tmp_path / "tri"), "--no-cutout", "--bits", "16"]
    assert main(["predict", "--model", str(onnx_path), *common, "--out", str(tmp_path / "o")]) == 0
    assert main(["predict", "--model", str(genotype_file), "--checkpoint", str(ckpt), *common,
                 "--out", str(tmp_path / "t")]) == 0
    a = np.asarray(Image.open(tmp_path / "o" / "a.png"), np.float64)
    b = np.asarray(Image.open(tmp_path / "t" / "a.png"), np.float64)
    assert a.shape == (70, 90) and np.abs(a - b).max() <= 1  # 16-bit levels: within 1.5e-5
    capsys.readouterr()
    data = ["--data", str(tmp_path), "--json"]
    (tmp_path / "image").symlink_to(tmp_path / "img")
    (tmp_path / "trimap").symlink_to(tmp_path / "tri")
    (tmp_path / "alpha").symlink_to(tmp_path / "gt")
    assert main(["eval", "--model", str(onnx_path), *data, str(tmp_path / "e1.json")]) == 0
    assert main(["eval", "--model", str(genotype_file), "--checkpoint", str(ckpt), *data,
                 str(tmp_path / "e2.json")]) == 0
    s1, s2 = (json.loads((tmp_path / f"e{k}.json").read_text()) for k in (1, 2))
    assert s1["SAD"] == pytest.approx(s2["SAD"], rel=1e-4, abs=1e-6)
    capsys.readouterr()
    for argv, fragment in ((["predict", "--model", str(onnx_path), "--checkpoint", str(ckpt), *common,
                             "--out", str(tmp_path / "x")], "carries its own weights"),
                           (["bench", str(onnx_path), "--no-latency"], "bench needs a torch MODEL"),
                           (["retrain", str(onnx_path)], "retrain needs a torch MODEL"),
                           # --amp changed nothing here (onnxruntime runs float32) and warned about bf16
                           (["predict", "--model", str(onnx_path), *common, "--amp", "--out", str(tmp_path / "y")],
                            "ONNX file, which onnxruntime runs in float32"),
                           (["eval", "--model", str(onnx_path), *data, str(tmp_path / "e3.json"), "--amp"],
                            "--amp would change nothing"),
                           (["eval", "--model", "closed_form", *data, str(tmp_path / "e4.json"), "--amp"],
                            "closed_form is not a network")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], err
    assert not any((tmp_path / name).exists() for name in ("x", "y", "e3.json", "e4.json"))


def test_initial_weights_are_exported_only_when_asked(tmp_path, capsys, caplog):
    """Without --checkpoint, export refuses (above); --initial-weights exports the untrained network and
    says so, in the log and in the file's metadata."""
    import onnx

    out = tmp_path / "init.onnx"
    code = main(["export", "--model", "cnn_baseline_tiny", "--initial-weights", "--onnx", str(out), "--size", "96",
                 "--no-optimize"])  # the graph without the optimizer, checked in onnxruntime too
    assert code == 0, capsys.readouterr().err
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["atldas.checkpoint"] == "none (initial weights)"
    assert "initial (untrained) weights" in caplog.text


def test_an_onnx_file_refuses_images_under_its_smallest_side_in_one_line(exported, tmp_path, capsys):
    """The graph is traced for sides of 96 and more: a 20 x 20 image (padded to 32) crashed onnxruntime
    with SIGFPE (exit 136, no message), a 40 x 7 one with a traceback."""
    from PIL import Image

    from atldas.data.io import write_trimap

    onnx_path = exported[0]
    for name, (h, w) in (("small", (20, 20)), ("thin", (40, 7))):
        (tmp_path / name / "img").mkdir(parents=True)
        (tmp_path / name / "tri").mkdir()
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(tmp_path / name / "img" / "a.png")
        write_trimap(tmp_path / name / "tri" / "a.png", np.full((h, w), 128, np.uint8))
        assert main(["predict", "--model", str(onnx_path), "--image", str(tmp_path / name / "img"), "--trimap",
                     str(tmp_path / name / "tri"), "--out", str(tmp_path / name / "out"), "--no-cutout"]) == 2
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("atldas: error:")]
        assert len(lines) == 1 and "runs inputs of at least 96 x 96 pixels" in lines[0] and "Traceback" not in err, err
    big = tmp_path / "big"  # tiles under the smallest side: the tile is named, not the image
    (big / "img").mkdir(parents=True)
    (big / "tri").mkdir()
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(big / "img" / "a.png")
    write_trimap(big / "tri" / "a.png", np.full((200, 200), 128, np.uint8))
    assert main(["predict", "--model", str(onnx_path), "--image", str(big / "img"), "--trimap", str(big / "tri"),
                 "--out", str(big / "out"), "--no-cutout", "--tile", "64", "--overlap", "0"]) == 2
    assert "--tile 64: " in capsys.readouterr().err and not (big / "out").exists()
    # a 100 x 100 image (padded to 128) and a 20 x 20 one: refused before the first matte is written (the
    # large one's matte and cut-out were written, then the small one failed); --max-size 64 makes both small
    mixed = tmp_path / "mixed"
    for name, side in (("a", 100), ("b", 20)):
        (mixed / "img").mkdir(parents=True, exist_ok=True)
        (mixed / "tri").mkdir(exist_ok=True)
        Image.fromarray(np.full((side, side, 3), 128, np.uint8)).save(mixed / "img" / f"{name}.png")
        write_trimap(mixed / "tri" / f"{name}.png", np.full((side, side), 128, np.uint8))
    for extra, shown in (([], "1 image(s) are smaller: "), (["--max-size", "64"], "2 image(s) are smaller: ")):
        assert main(["predict", "--model", str(onnx_path), "--image", str(mixed / "img"), "--trimap",
                     str(mixed / "tri"), "--out", str(mixed / "out"), *extra]) == 2
        err = capsys.readouterr().err
        assert shown in err and "b.png (20x20)" in err and "nothing was written" in err, err
        assert not (mixed / "out").exists()
    (mixed / "img" / "b.png").unlink()
    (mixed / "tri" / "b.png").unlink()
    assert main(["predict", "--model", str(onnx_path), "--image", str(mixed / "img"), "--trimap",
                 str(mixed / "tri"), "--out", str(mixed / "out"), "--no-cutout"]) == 0



def test_tiling_an_onnx_file_warns_about_the_image_wide_layers_its_network_has(genotype_file, exported, tmp_path,
                                                                              caplog):
    """The export records the torch network's layers with image-wide context; predict --tile warns about
    them for the file as it does for the network (it could not see inside the graph)."""
    from PIL import Image

    from atldas.data.io import write_trimap
    from atldas.matting.inference import image_wide_layers
    from atldas.models.zoo import resolve_model

    wide = image_wide_layers(resolve_model(str(genotype_file)).build())
    assert wide  # the CheapMatting macro normalises with GroupNorm
    (tmp_path / "img").mkdir()
    (tmp_path / "tri").mkdir()
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(tmp_path / "img" / "a.png")
    write_trimap(tmp_path / "tri" / "a.png", np.full((200, 200), 128, np.uint8))
    with caplog.at_level("WARNING", logger="atldas"):
        assert main(["predict", "--model", str(exported[0]), "--image", str(tmp_path / "img"), "--trimap",
                     str(tmp_path / "tri"), "--out", str(tmp_path / "out"), "--no-cutout", "--tile", "128"]) == 0
    assert f"image-wide context ({', '.join(wide)})" in caplog.text


def test_a_failed_export_check_names_the_output_not_its_temporary(genotype_file, exported, tmp_path, monkeypatch):
    """The check ran on the atomic write's hidden temporary and named it (a file that no longer exists);
    the output is not written. The exporter hands back the fixture's graph (the same network and
    weights), so only the check runs here."""
    import shutil

    from atldas.errors import AtldasError
    from atldas.export import export_onnx

    class Program:
        def save(self, path):
            shutil.copyfile(exported[0], path)

    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: Program())
    out = tmp_path / "keep.onnx"
    with pytest.raises(AtldasError, match=r"onnxruntime and PyTorch differ") as info:
        export_onnx(model=str(genotype_file), checkpoint=exported[1], onnx_path=out, size=96, atol=0.0)
    assert str(info.value).startswith(f"{out}: ") and not out.exists()


def test_the_check_refuses_a_nan_from_onnxruntime(monkeypatch, tmp_path):
    """``max(|got - ref|)`` is NaN when onnxruntime returns NaN, and ``NaN > atol`` is false: the check
    must fail on it, not pass."""
    from torch import nn

    from atldas.errors import AtldasError
    from atldas.export import check_onnx

    class Session:
        def __init__(self, *a, **k):
            pass

        def run(self, names, feeds):
            x = feeds["input"]
            return [np.full((x.shape[0], 1, x.shape[2], x.shape[3]), np.nan, np.float32)]

    monkeypatch.setattr(ort, "InferenceSession", Session)
    net = nn.Conv2d(6, 1, 1).eval()
    with pytest.raises(AtldasError, match="differ by nan"):
        check_onnx(tmp_path / "m.onnx", net, size=32)
