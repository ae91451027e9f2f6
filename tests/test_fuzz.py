"""Fuzz suite: bad input to every verb, as a new user or a careless script gives it.

Every case must exit 2 with exactly one stderr line starting ``atldas: error:``, no traceback, and
leave nothing behind in the output folder. The cases are grouped by class (the ``id`` prefix):
genotype (validated against its space where it is read), config (ranges of flags, ``--set`` and
YAML), size (memory guards; the estimate is compared with a machine of 2 GiB available, so no case
allocates), path (outputs), ckpt (checkpoints), export, and ok-refused (cases handled well before
this suite, kept so they stay handled).
"""

from __future__ import annotations

import copy
import json
import signal
import struct
import zlib
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pytest
import torch

import derived_models
from atldas.cli import main
from atldas.data import io
from atldas.data.io import write_alpha, write_trimap
from atldas.utils import memory

Builder = Callable[[Dict[str, Path], Path], List[str]]


# --------------------------------------------------------------------------- inputs

def png_header_only(path: Path, width: int, height: int, *, colour: int = 2) -> Path:
    """A valid PNG of ``width`` x ``height`` zeros (8-bit, RGB by default) written from raw rows:
    large sizes cost a few MB of compressed zeros, never the decoded image."""
    channels = {0: 1, 2: 3}[colour]
    row = b"\x00" + bytes(width * channels)
    comp = zlib.compressobj(1)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def _genotype_json(**macro) -> dict:
    g = derived_models.get_genotype("atldas_cifar100").to_json()
    g["space"] = {**g["space"], "name": "matting",
                  "macro": {"name": "cheapmatting", "C": 8, "layers": 5, "ppm_extra_convs": 0, **macro}}
    g["choices"] = {"decoder0": "sep_res", "decoder1": "sep_res", "decoder2": "sep_res", "decoder3": "sep_res",
                    "head": "narrow"}
    g.pop("darts", None)
    return g


def _write_json(path: Path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def _mutated(ws: Dict[str, Path], name: str, change: Callable[[dict], None]) -> str:
    g = copy.deepcopy(_genotype_json())
    change(g)
    return _write_json(ws["root"] / f"{name}.json", g)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    paths: Dict[str, Path] = {"root": root}
    paths["geno"] = Path(_write_json(root / "geno.json", _genotype_json()))
    for d in ("img", "tri", "gt", "pred"):
        (root / d).mkdir()
    from PIL import Image

    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(root / "img" / "a.png")
    tri = np.full((64, 64), 128, np.uint8)
    tri[:16] = 0
    tri[-16:] = 255
    write_trimap(root / "tri" / "a.png", tri)
    write_alpha(root / "gt" / "a.png", rng.random((64, 64)).astype(np.float32))
    write_alpha(root / "pred" / "a.png", rng.random((64, 64)).astype(np.float32))
    paths["img"], paths["tri"] = root / "img" / "a.png", root / "tri" / "a.png"
    small = root / "small_tri.png"
    write_trimap(small, tri[:32, :32])
    paths["small_tri"] = small
    paths["huge"] = png_header_only(root / "huge.png", 20000, 20000)           # over Pillow's bomb limit
    paths["big"] = png_header_only(root / "big.png", 10000, 10000)             # 1e8 pixels
    paths["big_tri"] = png_header_only(root / "big_tri.png", 10000, 10000, colour=0)
    paths["big9"] = png_header_only(root / "big9.png", 9000, 9000)              # under the bomb limit
    paths["big9_tri"] = png_header_only(root / "big9_tri.png", 9000, 9000, colour=0)
    whole = (root / "img" / "a.png").read_bytes()
    paths["truncated"] = root / "truncated.png"
    paths["truncated"].write_bytes(whole[: len(whole) // 2])
    paths["class_tri"] = root / "class_tri.png"
    Image.fromarray((tri // 127).astype(np.uint8)).save(paths["class_tri"])
    from atldas.models.zoo import create_model

    torch.manual_seed(0)
    paths["tiny_ckpt"] = root / "tiny.pt"
    state = create_model("cnn_baseline_tiny").state_dict()
    torch.save({"model": state}, paths["tiny_ckpt"])
    paths["nan_ckpt"] = root / "nan.pt"
    torch.save({"model": {k: (v.float() * float("nan") if v.is_floating_point() else v) for k, v in state.items()}},
               paths["nan_ckpt"])
    paths["other_ckpt"] = root / "other.pt"
    torch.save({"model": create_model("cnn_baseline_small").state_dict()}, paths["other_ckpt"])
    code = root / "code.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "fn": Path("x")}, code)          # a pickled object: code
    paths["code_ckpt"] = code
    text = root / "text.pt"
    text.write_text("not a checkpoint")
    paths["text_ckpt"] = text
    paths["a_file"] = root / "a_file.txt"
    paths["a_file"].write_text("user data")
    (root / "bad.yaml").write_text("epochs: ten\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "bad_knob.yaml").write_text("knobs: {C: 'abc'}\n")
    return paths


# --------------------------------------------------------------------------- cases
# (id, argv builder, a fragment the one error line must contain)

VERB_ARGV = {
    "plot": lambda ws, tmp, g: ["plot", g, "--out", str(tmp / "g.png")],
    "bench": lambda ws, tmp, g: ["bench", g, "--size", "64", "--no-latency"],
    "retrain": lambda ws, tmp, g: ["retrain", g, "--epochs", "1", "--set", "steps_per_epoch=1", "--no-progress",
                                   "--out", str(tmp / "run")],
    "predict": lambda ws, tmp, g: ["predict", "--model", g, "--image", str(ws["img"]), "--trimap", str(ws["tri"]),
                                   "--out", str(tmp / "pred"), "--checkpoint", str(ws["tiny_ckpt"])],
    "export": lambda ws, tmp, g: ["export", "--model", g, "--onnx", str(tmp / "m.onnx"), "--no-check",
                                  "--initial-weights"],
}
ALL_VERBS = tuple(VERB_ARGV)


def _geno_case(name: str, change: Callable[[dict], None], expect: str, verbs=ALL_VERBS):
    def build(ws, tmp, verb, name=name, change=change):
        return VERB_ARGV[verb](ws, tmp, _mutated(ws, name, change))
    return [(f"genotype-{name}-{verb}", (lambda ws, tmp, verb=verb: build(ws, tmp, verb)), expect) for verb in verbs]


def _set_node(cell: str, j: int, inputs):
    def change(g):
        g["cells"][cell]["nodes"][j]["inputs"] = inputs
    return change


def _macro(**kv):
    def change(g):
        g["space"]["macro"].update(kv)
    return change


def _choice(key, value):
    def change(g):
        g["choices"][key] = value
    return change


def _write_text(ws, name: str, text: str) -> str:
    p = ws["root"] / name
    p.write_text(text)
    return str(p)


CASES: List = []
CASES += _geno_case("unknown-op", _set_node("normal", 0, [["conv_9x9", 0], ["skip_connect", 1]]), "unknown op 'conv_9x9'")
CASES += _geno_case("op-none", _set_node("normal", 1, [["none", 0], ["skip_connect", 1]]), "op 'none'")
CASES += _geno_case("unknown-space", lambda g: g["space"].update(name="no_such_space"), "space 'no_such_space'")
CASES += _geno_case("unknown-decoder", _choice("decoder1", "transformer"), "decoder1='transformer'")
CASES += _geno_case("unknown-head", _choice("head", "wide_and_deep"), "head='wide_and_deep'")
CASES += _geno_case("unknown-choice-key", _choice("decoder7", "sep_res"), "choice 'decoder7'")
CASES += _geno_case("C-negative", _macro(C=-8), "C must be")
CASES += _geno_case("C-huge", _macro(C=10**6), "C must be")
CASES += _geno_case("C-text", _macro(C="abc"), "C must be")
CASES += _geno_case("layers-0", _macro(layers=0), "layers must be")
CASES += _geno_case("layers-huge", _macro(layers=10**5), "layers must be")
CASES += _geno_case("macro-list", lambda g: g["space"].update(macro=[1, 2]), "macro must be an object")
CASES += _geno_case("choices-list", lambda g: g.update(choices=["sep_res"]), "choices")
CASES += _geno_case("many-nodes", lambda g: g["cells"]["normal"].update(
    nodes=[{"inputs": [["skip_connect", 0], ["skip_connect", 1]]}] * 100_000,
    concat=list(range(2, 100_002))), "100000 nodes", verbs=("plot", "bench", "retrain"))
CASES += _geno_case("input-cycle", _set_node("reduce", 0, [["skip_connect", 5], ["skip_connect", 1]]), "later node",
                    verbs=("plot", "bench"))
CASES += _geno_case("unknown-macro-key", _macro(wings=2), "unknown key", verbs=("plot", "bench"))
CASES += [
    ("genotype-darts-none-plot", lambda ws, tmp: ["plot", _write_text(
        ws, "none.txt", "Genotype(normal=" + str([("none", 0), ("skip_connect", 1)] * 4) + ", normal_concat=[2, 3, 4, 5], "
        "reduce=" + str([("skip_connect", 0), ("skip_connect", 1)] * 4) + ", reduce_concat=[2, 3, 4, 5])"),
        "--out", str(tmp / "g.png")], "op 'none'"),
    ("genotype-not-json-bench", lambda ws, tmp: ["bench", _write_text(ws, "junk.json", "{nope"), "--size", "64"],
     "invalid JSON"),
    ("genotype-empty-file-plot", lambda ws, tmp: ["plot", _write_text(ws, "empty.json", ""),
                                                  "--out", str(tmp / "g.png")], "neither genotype JSON"),
]


def _search(*extra: str) -> Builder:
    return lambda ws, tmp: ["search", "--space", "tiny", "--epochs", "2", "--no-progress",
                            "--out", str(tmp / "run"), *extra]


def _retrain(*extra: str) -> Builder:
    return lambda ws, tmp: ["retrain", str(ws["geno"]), "--epochs", "1", "--no-progress",
                            "--out", str(tmp / "run"), *extra]


def _bench(*extra: str) -> Builder:
    return lambda ws, tmp: ["bench", "cnn_baseline_tiny", "--size", "64", *extra]


def _predict(image: str = "img", trimap: str = "tri", *extra: str, model: str = "cnn_baseline_tiny") -> Builder:
    ckpt = ["--checkpoint", "{tiny_ckpt}"] if model == "cnn_baseline_tiny" and "--checkpoint" not in extra else []
    return lambda ws, tmp: ["predict", "--model", model, "--image", str(ws[image]), "--trimap", str(ws[trimap]),
                            "--out", str(tmp / "p"), *ckpt, *extra]


def _eval_model(*extra: str) -> Builder:
    return lambda ws, tmp: ["eval", "--model", "cnn_baseline_tiny", "--checkpoint", str(ws["tiny_ckpt"]),
                            "--data", "synthetic", "--limit", "1", *extra]


def _export(*extra: str) -> Builder:
    return lambda ws, tmp: ["export", "--model", "cnn_baseline_tiny", "--onnx", str(tmp / "m.onnx"), "--no-check",
                            "--checkpoint", str(ws["tiny_ckpt"]), *extra]


def _lut(*extra: str) -> Builder:
    return lambda ws, tmp: ["lut", "build", "--space", "tiny", "--out", str(tmp / "lut.json"), *extra]


def _eval_folders(pred: str = "pred", *extra: str) -> Builder:
    return lambda ws, tmp: ["eval", "--pred", str(ws["root"] / pred), "--alpha", str(ws["root"] / "gt"),
                            "--trimap", str(ws["root"] / "tri"), *extra]


CASES += [
    ("config-search-C-0", _search("--set", "C=0"), "C must be"),
    ("config-search-C-negative", _search("--set", "C=-8"), "C must be"),
    ("config-search-layers-0", _search("--set", "layers=0"), "layers must be"),
    ("config-search-k_max-9", _search("--set", "k_max=9"), "k_max must be"),
    ("config-search-tau_max-negative", _search("--set", "tau_max=-1"), "tau_max must be"),
    ("config-search-tau_min-0", _search("--set", "tau_min=0"), "tau_min must be"),
    ("config-search-target-macs-inf", _search("--target-macs", "inf"), "finite"),
    ("config-search-target-macs-1e400", _search("--target-macs", "1e400"), "finite"),
    ("config-search-target-macs-negative", _search("--target-macs=-5G"), "positive"),
    ("config-search-two-targets", _search("--target-macs", "5G", "--target-params", "1M"), "give one budget"),
    ("config-search-threads-0", _search("--threads", "0"), "--threads"),
    ("config-search-device-tpu", _search("--device", "tpu"), "tpu"),
    ("config-search-epochs-0", _search("--epochs", "0"), "epochs must be"),
    ("config-search-batch-0", _search("--set", "batch_size=0"), "batch_size must be"),
    ("config-search-crop-huge", _search("--set", "crop=100000"), "crop must be"),
    ("config-search-steps-huge", _search("--set", "steps_per_epoch=10000000000"), "steps_per_epoch must be"),
    ("config-search-arch-lr-nan", _search("--set", "arch_lr=nan"), "arch_lr"),
    ("config-search-unknown-space", lambda ws, tmp: ["search", "--space", "nope", "--out", str(tmp / "r")],
     "unknown search space 'nope'"),
    ("config-search-unknown-strategy", _search("--strategy", "evolution"), "'evolution'"),
    ("config-search-unknown-estimator", _search("--set", "estimator=magic"), "estimator"),
    ("config-search-yaml-text", lambda ws, tmp: _search("--config", str(ws["root"] / "bad.yaml"))(ws, tmp), "epochs"),
    ("config-search-yaml-list", lambda ws, tmp: _search("--config", str(ws["root"] / "list.yaml"))(ws, tmp),
     "mapping"),
    ("config-search-yaml-knob-text",
     lambda ws, tmp: _search("--config", str(ws["root"] / "bad_knob.yaml"))(ws, tmp), "'abc'"),
    ("config-search-yaml-missing", _search("--config", "/no/such/config.yaml"), "/no/such/config.yaml"),
    ("config-search-set-no-equals", _search("--set", "C"), "key=value"),
    ("config-search-set-unknown", _search("--set", "bogus=1"), "unknown key 'bogus'"),
    ("config-retrain-loss-negative", _retrain("--set", "loss_l1=-1"), "loss_l1 must be"),
    ("config-retrain-losses-zero", _retrain("--set", "loss_l1=0", "--set", "loss_lap=0", "--set", "loss_comp=0"),
     "nothing to train"),
    ("config-retrain-lr-negative", _retrain("--set", "lr=-1"), "lr must be"),
    ("config-retrain-lr-inf", _retrain("--set", "lr=inf"), "finite"),
    ("config-retrain-C-0", _retrain("--set", "C=0"), "C must be"),
    ("config-retrain-C-odd", _retrain("--set", "C=7"), "C must be even"),
    ("config-retrain-layers-0", _retrain("--set", "layers=0"), "layers must be"),
    ("config-retrain-crop-33", _retrain("--set", "crop=33"), "multiple of 32"),
    ("config-retrain-crop-huge", _retrain("--set", "crop=65536"), "crop must be"),
    ("config-retrain-threads-0", _retrain("--threads", "0"), "--threads"),
    ("config-retrain-device-tpu", _retrain("--device", "tpu"), "tpu"),
    ("config-retrain-beta-2", _retrain("--set", "beta1=2"), "beta1 must be"),
    ("config-retrain-workers-negative", _retrain("--set", "num_workers=-1"), "num_workers"),
    ("config-retrain-unknown-optimizer", _retrain("--set", "optimizer=sgd9"), "optimizer"),
    ("config-retrain-channels-last-no", lambda ws, tmp: _retrain("--config", _write_text(
        ws, "cl.yaml", "channels_last: 'no'\n"))(ws, tmp), "true or false"),
    ("config-bench-repeats-0", _bench("--repeats", "0"), "--repeats"),
    ("config-bench-min-run-time-negative", _bench("--min-run-time", "-1"), "--min-run-time"),
    ("config-bench-size-0", lambda ws, tmp: ["bench", "cnn_baseline_tiny", "--size", "0"], "--size"),
    ("config-bench-device-tpu", _bench("--device", "tpu"), "tpu"),
    ("config-bench-threads-0", _bench("--threads", "0"), "--threads"),
    ("config-predict-device-tpu", _predict("img", "tri", "--device", "tpu"), "tpu"),
    ("config-predict-tile-33", _predict("img", "tri", "--tile", "33"), "--tile"),
    ("config-predict-max-size-10", _predict("img", "tri", "--max-size", "10"), "--max-size"),
    ("config-predict-overlap-huge", _predict("img", "tri", "--tile", "64", "--overlap", "64"), "--overlap"),
    ("config-predict-threads-0", _predict("img", "tri", "--threads", "0"), "--threads"),
    ("config-predict-max-pixels-0", _predict("img", "tri", "--max-pixels", "0"), "--max-pixels"),
    ("config-predict-no-checkpoint", lambda ws, tmp: ["predict", "--model", "cnn_baseline_tiny", "--image",
                                                      str(ws["img"]), "--trimap", str(ws["tri"]), "--out",
                                                      str(tmp / "p")], "--checkpoint is required"),
    ("config-eval-limit-0", _eval_model("--limit", "0"), "limit"),
    ("config-eval-device-tpu", _eval_model("--device", "tpu"), "tpu"),
    ("config-export-size-33", _export("--size", "33"), "multiple of 32"),
    ("config-lut-min-run-time-negative", _lut("--min-run-time", "-1"), "--min-run-time"),
    ("config-lut-threads-0", _lut("--threads", "0"), "--threads"),
    ("config-preview-count-0", lambda ws, tmp: ["data", "preview", "--count", "0", "--out", str(tmp / "p.png")],
     "--count"),
]

CASES += [
    ("size-predict-bomb", _predict("huge", "tri"), "decompression bombs"),
    ("size-predict-10000", _predict("big", "big_tri"), "--max-pixels"),
    ("size-predict-9000-memory", _predict("big9", "big9_tri", "--max-pixels", "100000000"), "of memory"),
    ("size-predict-9000-tiled-memory", _predict("big9", "big9_tri", "--tile", "1024"), "of memory"),
    ("size-eval-folders-bomb", lambda ws, tmp: ["eval", "--pred", str(_folder_with(ws, tmp, "huge")),
                                                "--alpha", str(ws["root"] / "gt"), "--trimap", str(ws["root"] / "tri")],
     "decompression bombs"),
    ("size-bench-20000", lambda ws, tmp: ["bench", "cheapmatting", "--size", "20000"], "of memory"),
    ("size-predict-trimap-mismatch", _predict("img", "small_tri"), "never resizes"),
]


def _folder_with(ws, tmp: Path, key: str) -> Path:
    d = tmp.parent / f"in-{tmp.name}"
    d.mkdir(exist_ok=True)
    target = d / "a.png"
    if not target.exists():
        target.symlink_to(ws[key])
    return d


CASES += [
    ("path-predict-out-is-a-file", lambda ws, tmp: _predict()(ws, tmp)[:-4] + ["--out", str(ws["a_file"]),
                                                                              "--checkpoint", str(ws["tiny_ckpt"])],
     "is a file"),
    ("path-predict-out-under-a-file", lambda ws, tmp: _predict()(ws, tmp) + ["--out", str(ws["a_file"] / "sub")],
     "is a file"),
    ("path-export-onnx-under-a-file", lambda ws, tmp: _export()(ws, tmp) + ["--onnx", str(ws["a_file"] / "m.onnx")],
     "is a file"),
    ("path-export-onnx-is-a-folder", lambda ws, tmp: _export()(ws, tmp) + ["--onnx", str(ws["root"] / "img")],
     "is a folder"),
    ("path-search-out-is-a-file", lambda ws, tmp: ["search", "--space", "tiny", "--out", str(ws["a_file"])],
     "is a file"),
    ("path-retrain-out-under-a-file", _retrain("--out", "{a_file}/run"), "is a file"),
    ("path-plot-out-under-a-file", lambda ws, tmp: ["plot", str(ws["geno"]), "--out", str(ws["a_file"] / "g.png")],
     "is a file"),
    ("path-plot-out-bad-suffix", lambda ws, tmp: ["plot", str(ws["geno"]), "--out", str(tmp / "g.bmpx")], ".png"),
    ("path-eval-json-under-a-file", _eval_folders("pred", "--json", "{a_file}/s.json"), "is a file"),
    ("path-eval-json-onto-an-input", _eval_folders("pred", "--json", "{root}/gt/a.png"), "inputs"),
    ("path-bench-json-under-a-file", _bench("--no-latency", "--json", "{a_file}/b.json"), "is a file"),
    ("path-lut-out-under-a-file", _lut("--out", "{a_file}/lut.json"), "is a file"),
    ("path-preview-out-under-a-file", lambda ws, tmp: ["data", "preview", "--out", str(ws["a_file"] / "p.png")],
     "is a file"),
    ("path-derive-out-under-a-file", lambda ws, tmp: ["derive", str(ws["root"] / "img"), "--out",
                                                      str(ws["a_file"] / "g.json")], ""),
    ("ckpt-code-predict", _predict("img", "tri", "--checkpoint", "{code_ckpt}"), "weights_only"),
    ("ckpt-code-export", lambda ws, tmp: _export()(ws, tmp) + ["--checkpoint", str(ws["code_ckpt"])], "weights_only"),
    ("ckpt-code-eval", lambda ws, tmp: _eval_model()(ws, tmp) + ["--checkpoint", str(ws["code_ckpt"])],
     "weights_only"),
    ("ckpt-text-predict", _predict("img", "tri", "--checkpoint", "{text_ckpt}"), "text.pt"),
    ("ckpt-missing-predict", _predict("img", "tri", "--checkpoint", "/no/such.pt"), "/no/such.pt"),
    ("ckpt-other-network-predict", _predict("img", "tri", "--checkpoint", "{other_ckpt}"), "other.pt"),
    ("ckpt-nan-predict", _predict("img", "tri", "--checkpoint", "{nan_ckpt}"), "NaN"),
    ("export-opset-5", _export("--opset", "5"), "--opset 5"),
    ("export-opset-99", _export("--opset", "99"), "--opset 99"),
    ("ok-unknown-model-predict", _predict("img", "tri", model="no_such_model"), "unknown model"),
    ("ok-missing-image", lambda ws, tmp: ["predict", "--model", "cnn_baseline_tiny", "--image", "/no/img.png",
                                          "--trimap", str(ws["tri"]), "--out", str(tmp / "p"), "--checkpoint",
                                          str(ws["tiny_ckpt"])], "/no/img.png"),
    ("ok-truncated-image", _predict("truncated", "tri"), "not a readable image"),
    ("ok-class-index-trimap", _predict("img", "class_tri"), "class-index"),
    ("ok-eval-missing-flag", lambda ws, tmp: ["eval", "--pred", str(ws["root"] / "pred")], "--alpha"),
    ("ok-eval-pred-and-model", lambda ws, tmp: _eval_model()(ws, tmp) + ["--pred", str(ws["root"] / "pred")],
     "not both"),
    # --pred the ground truth's own folder scored SAD 0, without a word
    ("ok-eval-pred-is-alpha", lambda ws, tmp: ["eval", "--pred", str(ws["root"] / "gt"), "--alpha",
                                               str(ws["root"] / "gt"), "--trimap", str(ws["root"] / "tri")],
     "is the --alpha folder"),
    # --json onto the MODEL's own genotype file replaced it with the scores
    ("ok-eval-json-onto-its-model", lambda ws, tmp: ["eval", "--model", str(ws["geno"]), "--checkpoint",
                                                     str(ws["tiny_ckpt"]), "--data", "synthetic", "--limit", "1",
                                                     "--json", str(ws["geno"])], "one of this command's inputs"),
    # --alpha and --trimap beside --model were ignored (the model's data set has its own)
    ("ok-eval-alpha-and-model", lambda ws, tmp: _eval_model()(ws, tmp) + ["--alpha", str(ws["root"] / "pred")],
     "not both: drop --alpha"),
    ("ok-derive-not-a-run", lambda ws, tmp: ["derive", str(ws["root"] / "img")], ""),
    ("ok-plot-missing", lambda ws, tmp: ["plot", "/no/such/genotype.json"], "/no/such/genotype.json"),
    ("ok-bench-unknown-model", lambda ws, tmp: ["bench", "no_such_model", "--size", "64"], "unknown model"),
    ("ok-retrain-no-model", lambda ws, tmp: ["retrain", "--out", str(tmp / "run")], "MODEL"),
    ("ok-retrain-resume-nothing", _retrain("--resume"), "resume"),
    ("ok-search-resume-nothing", _search("--resume"), "resume"),
    ("ok-search-force-and-resume", _search("--resume", "--force"), "--force"),
    ("ok-eval-image-as-folder", _eval_folders("img/a.png"), "a.png"),
    ("ok-retrain-hand-model-with-C", lambda ws, tmp: ["retrain", "cnn_baseline_tiny", "--set", "C=16", "--out",
                                                      str(tmp / "run")], "hand-designed"),
]


def _expand(argv: List[str], ws: Dict[str, Path]) -> List[str]:
    return [a.format(**{k: str(v) for k, v in ws.items()}) if "{" in a and not a.startswith("Genotype") else a
            for a in argv]


def _tree(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


class _TooSlow(Exception):
    pass


@pytest.fixture(autouse=True)
def refused_quickly():
    """A refusal is immediate; a case still running after 30 s did real work on bad input."""
    def alarm(signum, frame):
        raise _TooSlow("still running after 30 s: the input was not refused")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(autouse=True)
def small_machine(monkeypatch):
    """Memory guards compare their estimate with 2 GiB available, whatever this machine has."""
    monkeypatch.setattr(memory, "available_bytes", lambda: 2 * 2**30)
    monkeypatch.setattr(io, "MAX_PIXELS", io.MAX_PIXELS)  # --max-pixels of one case does not leak into the next


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, ws, tmp_path, capsys):
    name, build, expect = case
    out = tmp_path / "out"
    out.mkdir()
    argv = _expand(build(ws, out), ws)
    before_ws = _tree(ws["root"])
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("INFO:", "WARNING:", "DEBUG:"))]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("atldas: error: "), (rc, err)
    assert expect in lines[0], (expect, lines[0])
    assert _tree(out) == [], f"{name} left {_tree(out)}"
    new = set(_tree(ws["root"])) - set(before_ws)
    assert all(Path(p).suffix in (".json", ".txt", ".yaml") for p in new), f"{name} wrote {sorted(new)}"


def test_the_fuzz_suite_covers_every_verb(ws, tmp_path):
    verbs = {c[1](ws, tmp_path)[0] for c in CASES}
    assert verbs >= {"search", "derive", "retrain", "eval", "predict", "plot", "bench", "export", "lut", "data"}


def test_one_pixel_images_predict(tmp_path, ws):
    """A 1x1 image is not bad input: learned networks pad it, closed form and the cut-out handle it."""
    from PIL import Image

    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(tmp_path / "p.png")
    write_trimap(tmp_path / "t.png", np.full((1, 1), 128, np.uint8))
    for model, ckpt in (("closed_form", []), ("cnn_baseline_tiny", ["--checkpoint", str(ws["tiny_ckpt"])])):
        out = tmp_path / model
        assert main(["predict", "--model", model, *ckpt, "--image", str(tmp_path / "p.png"), "--trimap",
                     str(tmp_path / "t.png"), "--out", str(out)]) == 0
        assert (out / "p.png").is_file() and (out / "rgba" / "p.png").is_file()


def test_every_registered_space_is_known_where_genotypes_are_read():
    from atldas.models.zoo import KNOWN_SPACES
    from search_spaces import SPACES

    assert set(SPACES.names()) <= KNOWN_SPACES
