"""The synthetic matting data set: determinism, value ranges, the composite equation, mattes that
look like mattes (partial alpha, consistent trimaps), disjoint splits, colour overlap, background
photos, and the ``atldas data preview`` command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from atldas.cli import main
from atldas.data.synthetic import SPLITS, SyntheticMatting, make_splits
from atldas.errors import ConfigError, DataError

SIZE = 64


@pytest.fixture(scope="module")
def ds() -> SyntheticMatting:
    return SyntheticMatting(size=SIZE, length=64, seed=3)


@pytest.fixture(scope="module")
def samples(ds):
    return [ds[i] for i in range(24)]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k] if isinstance(a[k], str) else torch.equal(a[k], b[k]) for k in a)


def test_deterministic_and_order_independent(ds):
    later = ds[7]
    fresh = SyntheticMatting(size=SIZE, length=64, seed=3)
    assert _equal(fresh[7], later)             # another instance, asked in another order
    assert _equal(ds[7], later)                # asked again
    assert _equal(ds[-57], later)              # negative index
    assert not torch.equal(ds[8]["alpha"], later["alpha"])
    assert not torch.equal(ds[8]["image"], later["image"])
    other_seed = SyntheticMatting(size=SIZE, length=64, seed=4)[7]
    assert not torch.equal(other_seed["image"], later["image"])
    with pytest.raises(IndexError):
        ds[64]


def test_shapes_dtypes_ranges(samples):
    for s in samples:
        assert set(s) == {"image", "alpha", "trimap", "trimap_onehot", "fg", "bg", "name"}
        for key, ch in (("image", 3), ("fg", 3), ("bg", 3), ("alpha", 1), ("trimap_onehot", 3)):
            assert s[key].shape == (ch, SIZE, SIZE) and s[key].dtype == torch.float32, key
            assert float(s[key].min()) >= 0.0 and float(s[key].max()) <= 1.0, key
        assert s["trimap"].shape == (1, SIZE, SIZE) and s["trimap"].dtype == torch.uint8
        assert set(torch.unique(s["trimap"]).tolist()) <= {0, 128, 255}
        # one-hot [bg, unknown, fg] agrees with the trimap
        tri = s["trimap"][0]
        oh = s["trimap_onehot"]
        assert torch.equal(oh.sum(0), torch.ones(SIZE, SIZE))
        for c, v in enumerate((0, 128, 255)):
            assert torch.equal(oh[c].bool(), tri == v)
        # alpha is 8-bit exact (multiples of 1/255)
        a255 = s["alpha"] * 255
        assert torch.allclose(a255, a255.round(), atol=1e-3)
        assert isinstance(s["name"], str) and s["name"].startswith("synthetic-train-s3-")
    assert len({s["name"] for s in samples}) == len(samples)


def test_composite_equation(samples):
    for s in samples:
        a = s["alpha"]
        expect = a * s["fg"] + (1 - a) * s["bg"]
        assert torch.max(torch.abs(s["image"] - expect)).item() <= 1e-5


def test_alpha_has_partial_values(samples):
    fractions, mid = [], []
    for s in samples:
        a = s["alpha"][0].numpy()
        partial = (a > 0) & (a < 1)
        assert partial.any(), s["name"]                    # every matte has soft pixels
        assert (a == 1).any() or (a > 0.5).any(), s["name"]  # and an object
        assert (a == 0).mean() > 0.1, s["name"]            # and background
        fractions.append(partial.mean())
        mid.append(((a > 0.2) & (a < 0.8)).mean())
    assert 0.03 < np.mean(fractions) < 0.35
    # semi-transparency and hair: a good share of the samples have many mid-range pixels
    assert np.mean(np.array(mid) > 0.01) > 0.25


def test_trimap_consistent_with_alpha(samples):
    unknown_fractions = []
    for s in samples:
        a = s["alpha"][0]
        tri = s["trimap"][0]
        assert torch.all(a[tri == 255] == 1.0)
        assert torch.all(a[tri == 0] == 0.0)
        assert torch.all(tri[(a > 0) & (a < 1)] == 128)    # every soft pixel is unknown
        unknown_fractions.append((tri == 128).float().mean().item())
    assert 0.02 < np.mean(unknown_fractions) < 0.7


def test_splits_disjoint():
    sets = make_splits(size=32, seed=0, lengths={"train": 6, "arch": 6, "val": 6, "test": 6})
    assert list(sets) == list(SPLITS)
    alphas, names = [], set()
    for name, d in sets.items():
        assert d.split == name and len(d) == 6
        for i in range(len(d)):
            s = d.sample(i)
            names.add(s["name"])
            alphas.append(s["alpha"].tobytes() + s["image"].tobytes())
    assert len(names) == 24
    assert len(set(alphas)) == 24                          # no sample repeats across splits
    assert "val" not in make_splits(size=32, lengths={"val": 0})
    with pytest.raises(ConfigError):
        SyntheticMatting(size=32, split="holdout")
    with pytest.raises(ConfigError):
        make_splits(size=32, lengths={"dev": 3})


def _best_threshold_iou(image: np.ndarray, alpha: np.ndarray) -> float:
    """The best IoU with (alpha > 0.5) of any single-channel threshold (R, G, B or grey, either
    polarity), the threshold chosen with the ground truth in hand: an upper bound of what colour
    thresholding can do."""
    gt = (alpha[0] > 0.5).ravel()
    pos = gt.sum()
    best = 0.0
    for ch in list(image) + [image.mean(0)]:
        g = gt[np.argsort(ch.ravel(), kind="stable")]
        n = g.size
        tp_hi = np.concatenate([np.cumsum(g[::-1])[::-1], [0]])   # predict the top n - k values
        k = np.arange(n + 1)
        iou_hi = tp_hi / np.maximum((n - k) + pos - tp_hi, 1)
        tp_lo = pos - tp_hi                                        # predict the bottom k values
        iou_lo = tp_lo / np.maximum(k + pos - tp_lo, 1)
        best = max(best, float(iou_hi.max()), float(iou_lo.max()))
    return best


def test_colour_threshold_cannot_find_alpha(ds):
    raw = [ds.sample(i) for i in range(24)]
    ious = np.array([_best_threshold_iou(s["image"], s["alpha"]) for s in raw])
    # control: the same mattes composited white-on-black are found exactly by a threshold
    control = [_best_threshold_iou(np.repeat(s["alpha"], 3, axis=0), s["alpha"]) for s in raw[:4]]
    assert min(control) == pytest.approx(1.0)
    assert ious.mean() < 0.75, ious
    assert np.median(ious) < 0.8, ious
    assert (ious < 0.6).mean() > 0.25, ious     # many samples are not separable by colour at all


def test_fg_and_bg_colours_overlap(ds):
    """Foreground and background colours come from the same distribution."""
    fg_means, bg_means = [], []
    for i in range(24):
        s = ds.sample(i)
        fg_means.append(s["fg"].reshape(3, -1).mean(1))
        bg_means.append(s["bg"].reshape(3, -1).mean(1))
    fg_means, bg_means = np.array(fg_means), np.array(bg_means)
    assert np.all(np.abs(fg_means.mean(0) - bg_means.mean(0)) < 0.12)


def _write_flat_png(path, colour, size=(40, 30)):
    img = np.zeros((size[1], size[0], 3), np.uint8)
    img[:] = colour
    Image.fromarray(img).save(path)


def test_background_photos(tmp_path):
    colours = [(200, 30, 30), (20, 180, 40), (30, 40, 220)]
    for k, c in enumerate(colours):
        _write_flat_png(tmp_path / f"photo{k}.png", c)
    (tmp_path / "notes.txt").write_text("not an image")
    d = SyntheticMatting(size=32, length=12, seed=0, backgrounds=tmp_path, photo_prob=1.0, clutter_prob=0.0)
    allowed = set(colours)
    seen = set()
    for i in range(len(d)):
        bg = d.sample(i)["bg"]
        flat = bg.reshape(3, -1)
        assert np.all(flat.max(1) - flat.min(1) < 1e-6)       # a crop of a flat photo is flat
        colour = tuple(int(round(float(v) * 255)) for v in flat[:, 0])
        assert colour in allowed
        seen.add(colour)
    assert len(seen) >= 2
    assert _equal(d[5], SyntheticMatting(size=32, length=12, seed=0, backgrounds=tmp_path, photo_prob=1.0,
                                         clutter_prob=0.0)[5])


def test_background_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        SyntheticMatting(size=32, backgrounds=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no photos here")
    with pytest.raises(DataError, match="no images"):
        SyntheticMatting(size=32, backgrounds=tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    _write_flat_png(tmp_path / "bad" / "good.png", (1, 2, 3))
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):  # when the set is made, not when a draw picks it
        SyntheticMatting(size=32, length=4, backgrounds=tmp_path / "bad", photo_prob=1.0)


def test_a_foreground_and_alpha_of_other_sizes_are_refused_when_the_set_is_made(tmp_path):
    for sub in ("fg", "alpha"):
        (tmp_path / sub).mkdir()
    _write_flat_png(tmp_path / "fg" / "a.png", (200, 30, 30), size=(40, 30))
    Image.fromarray(np.full((30, 41), 128, np.uint8)).save(tmp_path / "alpha" / "a.png")
    with pytest.raises(DataError, match=r"a.png is 40x30 but its alpha .*a.png is 41x30"):
        SyntheticMatting(size=32, length=4, foregrounds=tmp_path)


@pytest.mark.parametrize("kwargs", [dict(size=8), dict(length=0), dict(seed=-1), dict(hair_prob=1.5),
                                    dict(trimap_kernel=(0, 3))])
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        SyntheticMatting(**kwargs)


def test_dataloader_workers_match_direct_access():
    d = SyntheticMatting(size=32, length=4, seed=1, split="val")
    loader = torch.utils.data.DataLoader(d, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert batches[0]["image"].shape == (2, 3, 32, 32) and batches[0]["trimap"].dtype == torch.uint8
    assert batches[1]["name"] == [d[2]["name"], d[3]["name"]]
    assert torch.equal(batches[1]["alpha"][1], d[3]["alpha"])
    assert torch.equal(batches[0]["image"][0], d[0]["image"])


def test_cli_preview_writes_png(tmp_path):
    out = tmp_path / "g.png"
    assert main(["data", "preview", "--out", str(out), "--count", "2", "--size", "64"]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        w, h = img.size
    assert w > 4 * 64 and 2 * 64 < h < 3 * 64 + 60


def test_cli_preview_user_errors(tmp_path, capsys):
    assert main(["data", "preview", "--out", str(tmp_path / "g.png"), "--count", "0"]) == 2
    assert main(["data", "preview", "--out", str(tmp_path / "g.png"), "--count", "1", "--size", "32",
                 "--backgrounds", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "atldas: error:" in err and "nowhere" in err
    for name in ("g.txt", "g.svg", "g"):  # Pillow cannot write the first two: a traceback before
        assert main(["data", "preview", "--out", str(tmp_path / name), "--count", "1", "--size", "32"]) == 2
        err = capsys.readouterr().err
        assert "--out must be a .png file" in err and "Traceback" not in err
        assert not (tmp_path / name).exists()
    # accepted bounds whose sheet no reader opens: one line, before any sample is drawn (it was a
    # traceback from allocating 48 GiB)
    assert main(["data", "preview", "--out", str(tmp_path / "big.png"), "--count", "256", "--size", "2048"]) == 2
    err = capsys.readouterr().err
    assert "would be 8212x" in err and "lower --count or --size" in err and "Traceback" not in err
    assert not (tmp_path / "big.png").exists()


def _foreground_folder(root, n=2, size=(90, 120)):
    """fg/ and alpha/ pairs: an opaque left part, a ramp, a transparent right part."""
    rng = np.random.default_rng(0)
    (root / "fg").mkdir(parents=True)
    (root / "alpha").mkdir()
    h, w = size
    alpha = np.zeros((h, w), np.uint8)
    alpha[:, : w // 3] = 255
    alpha[:, w // 3: 2 * w // 3] = np.linspace(255, 0, 2 * w // 3 - w // 3).astype(np.uint8)
    for k in range(n):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(root / "fg" / f"o{k}.png")
        Image.fromarray(alpha).save(root / "alpha" / f"o{k}.png")
    return root


def test_real_foregrounds_are_mixed_in(tmp_path):
    folder = _foreground_folder(tmp_path / "fgs")
    plain = SyntheticMatting(size=64, length=6, seed=0)
    always = SyntheticMatting(size=64, length=6, seed=0, foregrounds=folder, foreground_prob=1.0)
    for i in range(6):
        s = always.sample(i)
        a = s["alpha"][0]
        assert np.allclose(np.rint(a * 255), a * 255, atol=1e-4)  # multiples of 1/255, as 8-bit mattes
        assert ((a > 0) & (a < 1)).any()  # the crop is centred on the unknown region
        # the foreground's alpha is constant along columns (as the file's), unlike procedural shapes
        assert np.abs(a - a[:1]).max() <= 1.01 / 255  # (resampling rounds to within one level)
        assert np.allclose(s["image"], a * s["fg"] + (1 - a) * s["bg"], atol=1e-5)
    never = SyntheticMatting(size=64, length=6, seed=0, foregrounds=folder, foreground_prob=0.0)
    assert all(np.abs(never.sample(i)["alpha"][0] - never.sample(i)["alpha"][0, :1]).max() > 2 / 255 for i in range(6))
    assert not np.array_equal(plain.sample(0)["alpha"], always.sample(0)["alpha"])
    assert np.array_equal(always.sample(3)["image"], always.sample(3)["image"])  # deterministic


def test_foreground_folder_errors(tmp_path):
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match="fg/ and alpha/ subfolders"):
        SyntheticMatting(size=32, foregrounds=tmp_path / "bare")
    (tmp_path / "odd" / "fg").mkdir(parents=True)
    (tmp_path / "odd" / "alpha").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "odd" / "fg" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "odd" / "alpha" / "b.png")
    with pytest.raises(DataError, match="2 missing partner file.*a.png has no alpha, alpha .*b.png has no foreground"):
        SyntheticMatting(size=32, foregrounds=tmp_path / "odd")
    # one foreground of three without its alpha: refused, not dropped (it was left out without a word)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "odd" / "alpha" / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "odd" / "fg" / "b.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "odd" / "fg" / "c.jpg")
    with pytest.raises(DataError, match=r"1 missing partner file.*c.jpg has no alpha"):
        SyntheticMatting(size=32, foregrounds=tmp_path / "odd")
    (tmp_path / "odd" / "fg" / "c.jpg").unlink()
    assert len(SyntheticMatting(size=32, foregrounds=tmp_path / "odd")._fgs.pairs) == 2
    with pytest.raises(ConfigError, match="foreground_prob"):
        SyntheticMatting(size=32, foreground_prob=1.5)
