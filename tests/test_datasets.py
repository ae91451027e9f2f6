"""Dataset readers: every layout written in small files under tmp_path and read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from atldas.data.augment import Augment, resize_bicubic
from atldas.data.datasets import (AIM500, AM2K, DATASET_KINDS, AlphaMattingCom, Composition1KTest,
                                  Composition1KTrain, Distinctions646Test, Distinctions646Train,
                                  GenericFolders, P3M500, detect_kind, deterministic_trimap,
                                  open_dataset)
from atldas.errors import ConfigError, DataError

H, W = 24, 32
IDENTITY = dict(scale=(1.0, 1.0), shear=0.0, flip_prob=0.0, rotate=0.0, hue=0.0, saturation=0.0,
                value=0.0, merge_prob=0.0)
U = np.float32(128 / 255)


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return path


def rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def alpha_u8(h: int = H, w: int = W) -> np.ndarray:
    """Background on the left, a ramp in the middle, foreground on the right."""
    xx = np.broadcast_to(np.arange(w), (h, w))
    return np.clip((xx - 12) * 40, 0, 255).astype(np.uint8)


def trimap_u8(a: np.ndarray) -> np.ndarray:
    t = np.full(a.shape, 128, np.uint8)
    t[a == 0] = 0
    t[a == 255] = 255
    return t


def chw(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy() if t.shape[0] == 3 else t[0].numpy()


def check_sample(s, h=H, w=W, alpha=True):
    assert s["image"].shape == (3, h, w) and s["image"].dtype == torch.float32
    assert s["trimap"].shape == (1, h, w) and s["trimap_onehot"].shape == (3, h, w)
    assert set(torch.unique(s["trimap"]).tolist()) <= {0, 128, 255}
    assert torch.equal(s["trimap_onehot"].sum(0), torch.ones(h, w))
    assert ("alpha" in s) == alpha
    if alpha:
        assert s["alpha"].shape == (1, h, w) and s["alpha"].dtype == torch.float32
    assert isinstance(s["name"], str)


# --------------------------------------------------------------------------- Composition-1K

def make_comp1k_test(root: Path, alpha_dir: str = "alpha_copy") -> dict:
    d = root / "Test_set"
    files = {}
    for fg, ks in (("cat", (0, 1)), ("dog_big", (0,))):
        a = alpha_u8() if fg == "cat" else 255 - alpha_u8()
        save(d / alpha_dir / f"{fg}.png", a)
        for k in ks:
            img = rgb(10 * len(fg) + k)
            save(d / "merged" / f"{fg}_{k}.png", img)
            save(d / "trimaps" / f"{fg}_{k}.png", trimap_u8(a))
            files[f"{fg}_{k}.png"] = (img, a)
    return files


@pytest.mark.parametrize("alpha_dir", ["alpha_copy", "alpha"])
def test_comp1k_test_reads_shared_alpha(tmp_path, alpha_dir):
    files = make_comp1k_test(tmp_path, alpha_dir)
    ds = open_dataset(tmp_path)
    assert isinstance(ds, Composition1KTest)
    assert ds.names == ["cat_0.png", "cat_1.png", "dog_big_0.png"]
    samples = {s["name"]: s for s in ds}
    for name, (img, a) in files.items():
        s = samples[name]
        check_sample(s)
        np.testing.assert_array_equal(chw(s["image"]), img.astype(np.float32) / 255)
        np.testing.assert_array_equal(chw(s["alpha"]), a.astype(np.float32) / 255)
        np.testing.assert_array_equal(chw(s["trimap"]), trimap_u8(a))
    assert torch.equal(samples["cat_0.png"]["alpha"], samples["cat_1.png"]["alpha"])
    assert not torch.equal(samples["cat_0.png"]["image"], samples["cat_1.png"]["image"])
    # The Test_set folder itself works too.
    assert open_dataset(tmp_path / "Test_set").names == ds.names


def test_comp1k_alpha_named_like_composite_wins(tmp_path):
    make_comp1k_test(tmp_path)
    special = np.full((H, W), 77, np.uint8)
    save(tmp_path / "Test_set" / "alpha_copy" / "cat_1.png", special)
    ds = Composition1KTest(tmp_path)
    assert torch.equal(ds[1]["alpha"], torch.full((1, H, W), np.float32(77 / 255)))
    assert not torch.equal(ds[0]["alpha"], ds[1]["alpha"])


def test_comp1k_missing_alpha_and_trimap_listed(tmp_path):
    make_comp1k_test(tmp_path)
    (tmp_path / "Test_set" / "trimaps" / "cat_1.png").unlink()
    save(tmp_path / "Test_set" / "merged" / "owl_0.png", rgb(3))
    with pytest.raises(DataError) as e:
        Composition1KTest(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("3 missing partner file(s) (matched by file stem): ")
    assert "cat_1.png has no trimap" in msg and "owl_0.png has no alpha" in msg
    assert "owl_0.png has no trimap" in msg


def test_comp1k_leftover_trimaps_and_alphas_listed(tmp_path):
    """A trimap or alpha that no composite uses (a half-copied merged/) is refused, as in the other readers,
    rather than scoring fewer images without a word."""
    make_comp1k_test(tmp_path)
    save(tmp_path / "Test_set" / "trimaps" / "owl_0.png", trimap_u8(alpha_u8()))
    save(tmp_path / "Test_set" / "alpha_copy" / "lonely.png", alpha_u8())
    with pytest.raises(DataError) as e:
        Composition1KTest(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("2 missing partner file(s) (matched by file stem): ")
    assert "trimap " + str(tmp_path / "Test_set" / "trimaps" / "owl_0.png") + " has no image" in msg
    assert "alpha " + str(tmp_path / "Test_set" / "alpha_copy" / "lonely.png") + " has no image" in msg


def make_training(fg_dir: Path, alpha_dir: Path, names=("a", "b")):
    for i, n in enumerate(names):
        fg = np.zeros((H, W, 3), np.uint8)
        fg[..., 0] = 255
        fg[..., 1] = 40 * i
        a = alpha_u8()
        a[0, 0] = 102  # 0.4 at the top-left pixel
        save(fg_dir / f"{n}.png", fg)
        save(alpha_dir / f"{n}.png", a)


def test_comp1k_train_official_protocol_large_bg_cropped_top_left(tmp_path):
    make_training(tmp_path / "Training_set" / "fg", tmp_path / "Training_set" / "alpha", ("a",))
    bg = np.zeros((40, 50, 3), np.uint8)
    bg[..., 0] = 10
    bg[..., 1] = np.arange(50)[None, :]  # column index
    bg[..., 2] = np.arange(40)[:, None]  # row index
    save(tmp_path / "bg" / "coco.png", bg)
    ds = open_dataset(tmp_path, split="train", backgrounds=tmp_path / "bg",
                      augment=Augment(crop=(H, W), **IDENTITY))
    assert isinstance(ds, Composition1KTrain)
    from atldas.errors import ConfigError as _ConfigError  # eval --split train: random crops are no images to score
    from atldas.matting.scoring import evaluate_model

    with pytest.raises(_ConfigError, match="training set of random augmented crops"):
        evaluate_model(model="closed_form", checkpoint=None, data=tmp_path, split="train",
                       backgrounds=tmp_path / "bg")
    s = ds[0]
    check_sample(s)
    assert s["name"] == "a.png"
    img = chw(s["image"])
    # Hand computation at (0, 0): alpha = 0.4, F = (1, 0, 0), B = (10, 0, 0) / 255.
    np.testing.assert_allclose(img[0, 0], [0.4 + 0.6 * 10 / 255, 0.0, 0.0], atol=1e-6)
    # At (5, 3) (row 5, column 3): alpha = 0, so the composite is the background's (5, 3) pixel.
    np.testing.assert_allclose(img[5, 3], [10 / 255, 3 / 255, 5 / 255], atol=1e-6)
    # At (7, 13): alpha = 40/255; B = (10, 13, 7)/255.
    a = 40 / 255
    np.testing.assert_allclose(img[7, 13], [a + (1 - a) * 10 / 255, (1 - a) * 13 / 255,
                                            (1 - a) * 7 / 255], atol=1e-6)
    np.testing.assert_allclose(chw(s["bg"]), bg[:H, :W] / 255, atol=1e-6)


def test_comp1k_train_official_protocol_small_bg_resized(tmp_path):
    make_training(tmp_path / "Training_set" / "fg", tmp_path / "Training_set" / "alpha", ("a",))
    save(tmp_path / "bg" / "grey.png", np.full((12, 16, 3), 90, np.uint8))
    aug = Augment(crop=(H, W), **IDENTITY)
    s = Composition1KTrain(tmp_path, backgrounds=tmp_path / "bg", augment=aug)[0]
    np.testing.assert_allclose(chw(s["bg"]), 90 / 255, atol=1e-6)  # resized constant stays constant
    np.testing.assert_allclose(chw(s["image"])[0, 0], [0.4 + 0.6 * 90 / 255, 0.6 * 90 / 255,
                                                      0.6 * 90 / 255], atol=1e-6)
    # A textured small background: 6x8 -> bicubic x4 to 24x32, as the DIM script does it: PIL's filter on
    # the 8-bit image (rounded and clipped between its passes; a float resize differs by several levels)
    small = rgb(5, 6, 8)
    save(tmp_path / "bg2" / "t.png", small)
    s = Composition1KTrain(tmp_path, backgrounds=tmp_path / "bg2", augment=aug)[0]
    ref = np.asarray(Image.fromarray(small).resize((W, H), Image.BICUBIC), dtype=np.float32) / 255
    np.testing.assert_array_equal(chw(s["bg"]), ref)
    floats = np.stack([np.asarray(Image.fromarray(small[..., c].astype(np.float32) / 255)
                                  .resize((W, H), Image.BICUBIC)) for c in range(3)], axis=2)
    assert np.abs(np.clip(floats, 0, 1) - ref).max() > 2 / 255
    # Wide background 10x40: ratio = max(32/40, 24/10) = 2.4 -> 96x24, then the top-left 32 columns.
    wide = rgb(6, 10, 40).astype(np.float32) / 255
    np.testing.assert_allclose(resize_bicubic(wide, 96, 24)[:, :W],
                               Augment(crop=(H, W), **IDENTITY)(
                                   np.zeros((H, W, 3), np.float32), np.zeros((H, W), np.float32),
                                   wide, np.random.default_rng(0))["bg"].permute(1, 2, 0).numpy(),
                               atol=1e-6)


def test_comp1k_train_fresh_backgrounds_and_determinism(tmp_path):
    make_training(tmp_path / "Training_set" / "fg", tmp_path / "Training_set" / "alpha")
    for i in range(3):
        save(tmp_path / "bg" / f"b{i}.png", np.full((30, 40, 3), 60 * i + 20, np.uint8))
    ds = Composition1KTrain(tmp_path, backgrounds=tmp_path / "bg", crop=16, seed=3,
                            samples_per_fg=4)
    assert len(ds) == 8
    seen = set()
    for epoch in range(2):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            check_sample(s, 16, 16)
            seen.add(round(float(s["bg"][0, 0, 0]) * 255))
    assert seen == {20, 80, 140}
    ds.set_epoch(0)
    a, b = ds[5], ds[5]
    assert all(torch.equal(a[k], b[k]) for k in ("image", "alpha", "trimap", "bg"))
    ds.set_epoch(1)
    assert not torch.equal(a["image"], ds[5]["image"])
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 16) and len(batch["name"]) == 4


def test_a_search_splits_a_training_set_by_foreground_merges_included(tmp_path, monkeypatch):
    """The weight and architecture splits of a composed training set share no foreground: a sample's
    merged second foreground comes from its own split (it came from all, so half the architecture
    samples showed a weight-split foreground), and the two draw from their own random streams."""
    import atldas.data.datasets as datasets
    from atldas.tasks.base import DataCfg
    from atldas.tasks.matting import MattingTask

    names = tuple("abcdef")
    make_training(tmp_path / "Training_set" / "fg", tmp_path / "Training_set" / "alpha", names)
    save(tmp_path / "bg" / "b.png", rgb(7, 30, 40))  # textured: the parts' crops of it differ
    read = []
    real = datasets._read_fg_alpha
    monkeypatch.setattr(datasets, "_read_fg_alpha", lambda it: (read.append(Path(it.image).stem), real(it))[1])
    weights, arch = MattingTask().datasets(DataCfg(source=str(tmp_path), backgrounds=str(tmp_path / "bg"), crop=32,
                                                   batch_size=2), seed=0, n_train=8, n_arch=8)
    seen = []
    for ds in (weights, arch):
        read.clear()
        ds.augment = Augment(crop=32, merge_prob=1.0)  # every sample merges a second foreground
        for epoch in range(3):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                ds[i]
        seen.append(set(read))
    assert seen == [{"a", "c", "e"}, {"b", "d", "f"}], seen
    assert len(weights) == len(arch) == 3
    whole = Composition1KTrain(tmp_path, backgrounds=tmp_path / "bg", crop=32)
    whole_rng = lambda i: whole._rng(i).random()  # noqa: E731
    weights.set_epoch(0), arch.set_epoch(0)
    assert weights._rng(0).random() != arch._rng(0).random() != whole_rng(0)  # own random streams
    with pytest.raises(DataError, match="6 foreground.*7 parts"):
        whole.split_by_foreground(7)


def test_comp1k_train_needs_backgrounds(tmp_path):
    make_training(tmp_path / "Training_set" / "fg", tmp_path / "Training_set" / "alpha")
    with pytest.raises(DataError, match="composed on backgrounds: pass a folder of background"):
        open_dataset(tmp_path, split="train")


# --------------------------------------------------------------------------- Distinctions-646

def make_d646(root: Path):
    for split in ("Train", "Test"):
        for n in ("p1", "p2"):
            save(root / split / "FG" / f"{n}.png", rgb(len(n) + len(split)))
            save(root / split / "GT" / f"{n}.png", alpha_u8())
    for i in range(4):
        save(root / "bg" / f"v{i}.jpg", np.full((30 + i, 40, 3), 50 * i, np.uint8))


def test_d646_test_deterministic_trimaps_and_backgrounds(tmp_path):
    make_d646(tmp_path / "D646")
    ds = open_dataset(tmp_path / "D646", backgrounds=tmp_path / "D646" / "bg")
    assert isinstance(ds, Distinctions646Test)
    assert ds.names == ["p1.png", "p2.png"]
    again = Distinctions646Test(tmp_path / "D646" / "Test", backgrounds=tmp_path / "D646" / "bg")
    s1, s2 = ds[0], ds[1]
    for s in (s1, s2):
        check_sample(s)
    for i in range(2):  # same across two reads
        for k in ("image", "alpha", "trimap", "bg"):
            assert torch.equal(ds[i][k], again[i][k])
    assert not torch.equal(s1["trimap"], s2["trimap"])  # same alpha, different file names
    a = alpha_u8().astype(np.float32) / 255
    np.testing.assert_array_equal(chw(s1["trimap"]), deterministic_trimap(a, "p1.png"))
    assert bool((s1["trimap"] == 128).any())
    # Background chosen from the name, composed top-left.
    bg = np.asarray(Image.open(ds.background_for("p1.png")).convert("RGB")).astype(np.float32)
    np.testing.assert_allclose(chw(s1["bg"]), bg[:H, :W] / 255, atol=1e-6)
    np.testing.assert_allclose(chw(s1["image"]), a[..., None] * chw(s1["fg"])
                               + (1 - a[..., None]) * chw(s1["bg"]), atol=1e-6)
    # Several composites per foreground share the trimap.
    many = Distinctions646Test(tmp_path / "D646", backgrounds=tmp_path / "D646" / "bg", bg_per_fg=3)
    assert many.names[:3] == ["p1_0.png", "p1_1.png", "p1_2.png"] and len(many) == 6
    assert torch.equal(many[0]["trimap"], many[2]["trimap"])
    assert torch.equal(many[0]["trimap"], s1["trimap"])


def test_d646_train_and_missing_backgrounds(tmp_path):
    make_d646(tmp_path)
    ds = open_dataset(tmp_path, kind="d646", split="train", backgrounds=tmp_path / "bg", crop=20)
    assert isinstance(ds, Distinctions646Train)
    s = ds[1]
    check_sample(s, 20, 20)
    assert s["name"] == "p2.png"
    with pytest.raises(DataError, match="Distinctions-646 test set is composed on backgrounds"):
        open_dataset(tmp_path)


# --------------------------------------------------------------------------- real-image sets

def test_aim500(tmp_path):
    root = tmp_path / "AIM-500"
    a = alpha_u8()
    smooth = np.zeros((H, W, 3), np.uint8) + np.array([200, 50, 10], np.uint8)  # JPEG-friendly
    save(root / "validation" / "original" / "o_1.jpg", smooth)
    save(root / "validation" / "mask" / "o_1.png", a)
    save(root / "validation" / "trimap" / "o_1.png", trimap_u8(a))
    assert detect_kind(root) == "aim-500"
    ds = open_dataset(root)
    assert isinstance(ds, AIM500) and ds.names == ["o_1.jpg"]
    s = ds[0]
    check_sample(s)
    np.testing.assert_array_equal(chw(s["alpha"]), a / np.float32(255))
    np.testing.assert_allclose(chw(s["image"]), smooth / 255, atol=0.03)  # JPEG, RGB order
    with pytest.raises(DataError, match="AIM-500 has only a validation split"):
        open_dataset(root, split="train")


def make_p3m(root: Path):
    a = alpha_u8()
    for sub, img_dir, names in (("P3M-500-NP", "original_image", ("np_a", "np_b")),
                                ("P3M-500-P", "blurred_image", ("p_a",))):
        for i, n in enumerate(names):
            save(root / "validation" / sub / img_dir / f"{n}.jpg", rgb(i))
            save(root / "validation" / sub / "mask" / f"{n}.png", a)
            save(root / "validation" / sub / "trimap" / f"{n}.png", trimap_u8(a))


def test_p3m500_subsets(tmp_path, caplog):
    make_p3m(tmp_path / "P3M")
    with caplog.at_level("WARNING", logger="atldas"):
        ds = open_dataset(tmp_path / "P3M")
    assert isinstance(ds, P3M500) and ds.names == ["np_a.jpg", "np_b.jpg"]
    assert "its face-blurred P3M-500-P is not" in caplog.text  # it was left out without a word
    check_sample(ds[1])
    assert open_dataset(tmp_path / "P3M", subset="P").names == ["p_a.jpg"]
    assert P3M500(tmp_path / "P3M", subset="both").names == ["np_a.jpg", "np_b.jpg", "p_a.jpg"]
    assert P3M500(tmp_path / "P3M" / "validation" / "P3M-500-P", subset="P").names == ["p_a.jpg"]
    # a folder holding P only reads P (it was refused as "not laid out as P3M-500 ... P3M-500-NP")
    assert open_dataset(tmp_path / "P3M" / "validation" / "P3M-500-P").names == ["p_a.jpg"]
    with pytest.raises(ConfigError, match="unknown P3M-500 subset 'X'"):
        P3M500(tmp_path / "P3M", subset="X")


def test_am2k_splits_and_generated_trimaps(tmp_path):
    root = tmp_path / "AM-2k"
    a = alpha_u8()
    save(root / "validation" / "original" / "v.jpg", rgb(2))
    save(root / "validation" / "mask" / "v.png", a)
    save(root / "validation" / "trimap" / "v.png", trimap_u8(a))
    save(root / "train" / "original" / "t1.jpg", rgb(3))
    save(root / "train" / "mask" / "t1.png", a)
    assert detect_kind(root) == "am-2k"
    val = open_dataset(root, split="validation")
    assert isinstance(val, AM2K) and val.names == ["v.jpg"]
    np.testing.assert_array_equal(chw(val[0]["trimap"]), trimap_u8(a))
    train = open_dataset(root, split="train")
    assert train.names == ["t1.jpg"]
    s = train[0]
    check_sample(s)
    np.testing.assert_array_equal(chw(s["trimap"]),
                                  deterministic_trimap(a / np.float32(255), "t1.jpg"))
    assert torch.equal(s["trimap"], open_dataset(root, split="train")[0]["trimap"])


def test_alphamatting_com_without_alpha(tmp_path, capsys):
    root = tmp_path / "amc"
    for n in ("doll", "troll"):
        save(root / "input_lowres" / f"{n}.png", rgb(len(n)))
        for k in (1, 2, 3):
            save(root / "trimap_lowres" / f"Trimap{k}" / f"{n}.png", trimap_u8(alpha_u8()))
    assert detect_kind(root) == "alphamatting"
    ds = open_dataset(root)
    assert isinstance(ds, AlphaMattingCom) and not ds.has_alpha
    assert ds.names[:2] == ["Trimap1/doll.png", "Trimap1/troll.png"] and len(ds) == 6
    s = ds[4]
    check_sample(s, alpha=False)
    assert s["name"] == "Trimap3/doll.png"
    assert open_dataset(root, trimap_sets=[2]).names == ["doll.png", "troll.png"]
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert "alpha" not in batch and batch["image"].shape == (2, 3, H, W)
    # The training part has ground truth.
    save(root / "input_training_lowres" / "GT01.png", rgb(9))
    save(root / "gt_training_lowres" / "GT01.png", alpha_u8())
    save(root / "trimap_training_lowres" / "Trimap1" / "GT01.png", trimap_u8(alpha_u8()))
    tr = open_dataset(root, split="train")
    assert tr.has_alpha and tr.names == ["GT01.png"]
    check_sample(tr[0])
    # eval scores it with --split train; the test split says where the ground truth is
    from atldas.cli import main
    from atldas.models.zoo import create_model

    ckpt = tmp_path / "ck.pt"
    torch.save({"model": create_model("cnn_baseline_tiny").state_dict()}, ckpt)
    model = ["eval", "--model", "cnn_baseline_tiny", "--checkpoint", str(ckpt), "--data", str(root), "--no-progress"]
    assert main([*model, "--split", "train", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["count"] == 1
    assert main(model) == 2
    assert "--split train" in capsys.readouterr().err


# --------------------------------------------------------------------------- generic folders

def make_generic(root: Path, names=("a", "b", "c"), alpha=True):
    for i, n in enumerate(names):
        save(root / "images" / f"{n}.png", rgb(i))
        save(root / "trimaps" / f"{n}.png", trimap_u8(alpha_u8()))
        if alpha:
            save(root / "alphas" / f"{n}.png", alpha_u8())


def test_mmagic_test_layout_is_read_as_generic_folders(tmp_path):
    """mmagic's test layout ROOT/{merged, alpha, trimap} is a generic folder set, not a broken Composition-1K."""
    for n in ("a", "b"):
        save(tmp_path / "merged" / f"{n}.png", rgb(1))
        save(tmp_path / "trimap" / f"{n}.png", trimap_u8(alpha_u8()))
        save(tmp_path / "alpha" / f"{n}.png", alpha_u8())
    ds = open_dataset(tmp_path, split="test")
    assert isinstance(ds, GenericFolders) and ds.has_alpha and len(ds) == 2


def test_generic_by_stem(tmp_path):
    make_generic(tmp_path)
    save(tmp_path / "images" / "d.jpg", rgb(7))
    save(tmp_path / "trimaps" / "d.png", trimap_u8(alpha_u8()))
    save(tmp_path / "alphas" / "d.png", alpha_u8())
    ds = open_dataset(image=tmp_path / "images", trimap=tmp_path / "trimaps")
    assert isinstance(ds, GenericFolders) and not ds.has_alpha
    assert ds.names == ["a.png", "b.png", "c.png", "d.jpg"]
    check_sample(ds[0], alpha=False)
    np.testing.assert_array_equal(chw(ds[1]["image"]), rgb(1) / np.float32(255))
    with_alpha = open_dataset(tmp_path)  # ROOT/{images, trimaps, alphas} detected
    assert detect_kind(tmp_path) == "generic" and with_alpha.has_alpha
    check_sample(with_alpha[3])
    batch = next(iter(DataLoader(with_alpha, batch_size=3)))
    assert batch["name"] == ["a.png", "b.png", "c.png"]


def test_generic_missing_partners_are_listed(tmp_path):
    make_generic(tmp_path, names=[f"x{i:02d}" for i in range(3)])
    for i in range(12):
        save(tmp_path / "images" / f"lonely{i:02d}.png", rgb(i))
    save(tmp_path / "trimaps" / "orphan.png", trimap_u8(alpha_u8()))
    with pytest.raises(DataError) as e:
        GenericFolders(tmp_path / "images", tmp_path / "trimaps")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("13 missing partner file(s) (matched by file stem): ")
    assert f"{tmp_path / 'images' / 'lonely00.png'} has no trimap" in msg
    assert "lonely09.png has no trimap" in msg and "lonely10.png" not in msg
    assert msg.endswith(", ... and 3 more; give every image a trimap with the same file stem")
    (tmp_path / "alphas" / "x01.png").unlink()
    for i in range(12):
        (tmp_path / "images" / f"lonely{i:02d}.png").unlink()
    (tmp_path / "trimaps" / "orphan.png").unlink()
    with pytest.raises(DataError, match=r"^1 missing partner file\(s\) .*x01.png has no alpha; "
                                        r"give every image a trimap and an alpha with the same "
                                        r"file stem$"):
        open_dataset(kind="generic", image=tmp_path / "images", trimap=tmp_path / "trimaps",
                     alpha=tmp_path / "alphas")


def test_size_mismatch_names_file_and_sizes(tmp_path):
    make_generic(tmp_path, names=("a",))
    bad = save(tmp_path / "trimaps" / "a.png", np.zeros((20, W), np.uint8) + 128)
    ds = open_dataset(tmp_path)
    with pytest.raises(DataError) as e:
        ds[0]
    assert str(e.value) == (f"{bad}: trimap is 32x20 but the image {tmp_path / 'images' / 'a.png'} "
                            "is 32x24 (width x height); give them the same size (atldas never "
                            "resizes them)")
    save(tmp_path / "trimaps" / "a.png", trimap_u8(alpha_u8()))
    save(tmp_path / "alphas" / "a.png", np.zeros((H, 30), np.uint8))
    with pytest.raises(DataError, match=r"alphas/a.png: alpha is 30x24 but the image .* is 32x24"):
        open_dataset(tmp_path)[0]


def test_size_mismatch_in_training_fg_alpha(tmp_path):
    save(tmp_path / "Training_set" / "fg" / "a.png", rgb(0))
    save(tmp_path / "Training_set" / "alpha" / "a.png", np.zeros((H + 1, W), np.uint8))
    save(tmp_path / "bg" / "b.png", rgb(1))
    with pytest.raises(DataError, match=r"fg/a.png is 32x24 but its alpha .*alpha/a.png is 32x25"):
        open_dataset(tmp_path, split="train", backgrounds=tmp_path / "bg", crop=8)  # not at the first draw


def test_an_unreadable_background_is_refused_when_the_set_is_made(tmp_path):
    save(tmp_path / "Training_set" / "fg" / "a.png", rgb(0))
    save(tmp_path / "Training_set" / "alpha" / "a.png", np.zeros((H, W), np.uint8))
    save(tmp_path / "bg" / "b.png", rgb(1))
    (tmp_path / "bg" / "zz.png").write_bytes(b"")  # found at epoch 3 when a draw first picked it
    with pytest.raises(DataError, match="zz.png"):
        open_dataset(tmp_path, split="train", backgrounds=tmp_path / "bg", crop=8)


# --------------------------------------------------------------------------- detection, registry

def test_autodetection_and_registry_misses(tmp_path):
    make_comp1k_test(tmp_path / "c1k")
    make_d646(tmp_path / "d646")
    make_p3m(tmp_path / "p3m")
    assert detect_kind(tmp_path / "c1k") == "composition-1k"
    assert detect_kind(tmp_path / "d646") == "distinctions-646"
    assert detect_kind(tmp_path / "p3m") == "p3m-500"
    assert DATASET_KINDS.names() == ["aim-500", "alphamatting", "am-2k", "composition-1k",
                                     "distinctions-646", "generic", "p3m-500"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        open_dataset(tmp_path / "empty")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'empty'}: no known data set layout (composition-1k: ")
    assert "aim-500: validation/{original, mask, trimap}" in msg and "\n" not in msg
    with pytest.raises(ConfigError) as e:
        open_dataset(tmp_path / "c1k", kind="nope")
    assert str(e.value) == ("unknown dataset kind 'nope'; known dataset kinds: aim-500, "
                            "alphamatting, am-2k, composition-1k, distinctions-646, generic, "
                            "p3m-500")
    with pytest.raises(DataError) as e:  # a kind given, but the folder has another layout
        open_dataset(tmp_path / "d646", kind="composition-1k")
    assert str(e.value) == (f"{tmp_path / 'd646'}: not laid out as Composition-1K test; expected "
                            "Test_set/{merged, alpha_copy or alpha, trimaps}")
    with pytest.raises(DataError, match=r"not laid out as AIM-500; expected validation/\{original, "):
        open_dataset(tmp_path / "d646", kind="aim")
    with pytest.raises(ConfigError, match="data set kind p3m-500 \\(test\\) does not take crop; "
                                          "it takes subset"):
        open_dataset(tmp_path / "p3m", crop=3)
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        open_dataset(tmp_path / "p3m", split="dev")
    with pytest.raises(DataError, match="no such folder"):
        open_dataset(tmp_path / "missing")
    assert open_dataset(tmp_path / "c1k", kind="comp1k", subset=None).names[0] == "cat_0.png"


def test_a_foregrounds_composites_take_distinct_backgrounds(tmp_path):
    """bg_per_fg composites of one foreground drew their backgrounds one by one and repeated them (8 of
    50 foregrounds had a duplicate composite with 20 per foreground over 1000 backgrounds); the DIM
    protocol's 20 per foreground are 20 different backgrounds."""
    from atldas.data.datasets import ComposedTestSet

    make_d646(tmp_path / "D646")
    bg = tmp_path / "many_bg"
    bg.mkdir()
    for k in range(12):
        Image.fromarray(np.full((40, 40, 3), 20 * k, np.uint8)).save(bg / f"b{k:02d}.png")
    ds = ComposedTestSet(tmp_path / "D646" / "Test" / "FG", tmp_path / "D646" / "Test" / "GT", bg, bg_per_fg=10)
    per_fg = {}
    for name in ds.names:
        per_fg.setdefault(name.rsplit("_", 1)[0], []).append(ds.background_for(name))
    assert len(per_fg) == 2 and all(len(set(v)) == 10 for v in per_fg.values())
    assert list(per_fg.values())[0] != list(per_fg.values())[1]  # each foreground its own order
    assert ds._background(3) == ds.background_for(ds.names[3])


def test_a_composed_test_set_checks_its_files_before_the_network_runs(tmp_path, capsys, monkeypatch):
    """eval --model on a Distinctions-646 test set whose last foreground is truncated ran the network on
    the images before it (only file-based sets were checked)."""
    import atldas.matting.scoring as scoring
    from atldas.cli import main

    make_d646(tmp_path / "D646")
    fg = tmp_path / "D646" / "Test" / "FG" / "p2.png"
    fg.write_bytes(fg.read_bytes()[:60])
    calls = []
    monkeypatch.setattr(scoring, "predict_alpha", lambda *a, **k: calls.append(1))
    assert main(["eval", "--model", "closed_form", "--data", str(tmp_path / "D646"), "--backgrounds",
                 str(tmp_path / "D646" / "bg"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "p2.png" in err and "Traceback" not in err and calls == []


def test_a_merged_second_foreground_is_never_the_sample_s_own(tmp_path, monkeypatch):
    """With merge_prob 1 every sample merges another foreground, drawn uniformly from the others:
    never its own, and every other one in time."""
    import atldas.data.datasets as datasets

    names = tuple("abcd")
    make_training(tmp_path / "Training_set" / "fg", tmp_path / "Training_set" / "alpha", names)
    save(tmp_path / "bg" / "b.png", rgb(7, 30, 40))
    read = []
    real = datasets._read_fg_alpha
    monkeypatch.setattr(datasets, "_read_fg_alpha", lambda it: (read.append(Path(it.image).stem), real(it))[1])
    ds = Composition1KTrain(tmp_path, backgrounds=tmp_path / "bg", crop=16).with_draws(40)
    ds.augment = Augment(crop=16, merge_prob=1.0)
    partners = {n: set() for n in names}
    for i in range(len(ds)):
        read.clear()
        ds[i]
        own, other = read
        assert own == names[i % len(names)] and other != own
        partners[own].add(other)
    assert partners == {n: set(names) - {n} for n in names}
