"""Input checks of atldas.data.io: junk trimaps and non-finite float images are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from atldas.data.io import check_image, read_alpha, read_rgb, read_trimap
from atldas.errors import DataError


def _trimap(h: int = 64, w: int = 96) -> np.ndarray:
    """A thin unknown band around a disc, its edges off the 8x8 JPEG grid (the most JPEG noise)."""
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2 + 0.5, xx - w / 2 + 0.5)
    return np.where(r < 14, 255, np.where(r < 17, 128, 0)).astype(np.uint8)


@pytest.mark.parametrize("quality", [75, 95])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_trimap_is_read_with_the_mapping_warning(tmp_path, caplog, quality, mode):
    t = _trimap()
    Image.fromarray(t).convert(mode).save(tmp_path / "t.jpg", quality=quality)
    assert not np.isin(np.asarray(Image.open(tmp_path / "t.jpg")), (0, 128, 255)).all()  # really noisy
    got = read_trimap(tmp_path / "t.jpg")
    assert (got != t).mean() < 0.01
    assert "not in {0, 128, 255}" in caplog.text


def _photo(h: int = 64, w: int = 96) -> np.ndarray:
    """A smooth colour image with texture, like a photo (every grey level occurs)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    base = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx + 4 * yy)], axis=2)
    return np.clip((base + rng.normal(0, 0.05, base.shape)) * 255, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["noise", "photo"])
def test_noise_or_photo_as_trimap_is_refused_in_one_line(tmp_path, caplog, kind):
    a = np.random.default_rng(1).integers(0, 256, (64, 96)).astype(np.uint8) if kind == "noise" else _photo()
    Image.fromarray(a).save(tmp_path / "t.png")
    with caplog.at_level("WARNING", logger="atldas"), pytest.raises(DataError) as info:
        read_trimap(tmp_path / "t.png")
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 't.png'}: ") and "not a trimap" in msg and "\n" not in msg
    assert caplog.records == []  # the error alone: no "RGB ... luma" or "mapped" warning before it


def test_rgb_trimap_warning_not_repeated_on_a_second_read(tmp_path, caplog):
    t = np.repeat(_trimap()[:, :, None], 3, axis=2)
    t[0, 0] = (0, 3, 0)  # channels differ in one pixel
    Image.fromarray(t).save(tmp_path / "t.png")
    with caplog.at_level("WARNING", logger="atldas"):
        read_trimap(tmp_path / "t.png")
        read_trimap(tmp_path / "t.png", warn=False)
    assert sum("RGB with different channels" in r.getMessage() for r in caplog.records) == 1


def test_trimap_without_unknown_warns_unless_the_caller_refuses_it(tmp_path, caplog):
    Image.fromarray(np.where(_trimap() == 255, 255, 0).astype(np.uint8)).save(tmp_path / "t.png")
    with caplog.at_level("WARNING", logger="atldas"):
        read_trimap(tmp_path / "t.png", warn_no_unknown=False)
        assert caplog.records == []
        read_trimap(tmp_path / "t.png")
    assert "no unknown (128) pixels" in caplog.text


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("reader", [read_rgb, read_alpha, read_trimap, check_image])
def test_float_tiff_with_non_finite_pixels_is_refused(tmp_path, bad, reader):
    a = np.where(_trimap() == 128, 0.5, _trimap() / 255.0).astype(np.float32)
    a[3, 5] = bad
    Image.fromarray(a, mode="F").save(tmp_path / "f.tif")
    with pytest.raises(DataError) as info:
        reader(tmp_path / "f.tif")
    assert str(info.value) == f"{tmp_path / 'f.tif'}: 1 pixel(s) are NaN or infinite; re-save the image with " \
                              "finite values"


def test_finite_float_tiff_is_read(tmp_path):
    a = np.linspace(0, 1, 64 * 96, dtype=np.float32).reshape(64, 96)
    Image.fromarray(a, mode="F").save(tmp_path / "f.tif")
    check_image(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_alpha(tmp_path / "f.tif"), a)


def test_a_float_matte_that_overshoots_one_is_read_as_zero_to_one_and_clipped(tmp_path):
    """A [0, 1] float matte with values a little past 1 (or under 0) was read as 0..255: all black."""
    a = np.linspace(-0.1, 1.01, 64 * 96, dtype=np.float32).reshape(64, 96)
    Image.fromarray(a, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_alpha(tmp_path / "f.tif"), a.clip(0, 1))
    Image.fromarray(a * 255, mode="F").save(tmp_path / "g.tif")  # a 0..255 float matte
    np.testing.assert_allclose(read_alpha(tmp_path / "g.tif"), a.clip(0, 1), atol=1e-6)


def test_clipping_a_float_image_is_said(tmp_path, caplog):
    a = np.linspace(0.0, 1.5, 64 * 96, dtype=np.float32).reshape(64, 96)
    Image.fromarray(a, mode="F").save(tmp_path / "f.tif")
    check_image(tmp_path / "f.tif")  # a check before the read: no warning
    assert "clipped" not in caplog.text
    read_alpha(tmp_path / "f.tif")
    n = int(np.count_nonzero(a > 1))
    assert f"f.tif: {n} float pixel(s) outside [0, 1] (read as 0..1) clipped" in caplog.text


def test_a_pixel_mode_no_reader_takes_is_found_by_the_check(tmp_path):
    """predict's check before writing decoded such an image without refusing it; the read in the write
    loop did, after earlier outputs were written."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).convert("LAB").save(tmp_path / "lab.tif")
    with pytest.raises(DataError, match="unsupported pixel mode LAB"):
        check_image(tmp_path / "lab.tif")


def test_sixteen_bit_png_scale_comes_from_its_bit_depth_not_its_values(tmp_path, monkeypatch):
    """A 16-bit PNG matte whose values are all small is still 16-bit, under older Pillow too (which
    opens 16-bit greyscale PNGs as mode "I"): 200 is 200/65535, not 200/255."""
    import atldas.data.io as io

    Image.fromarray(np.full((4, 6), 200, np.uint16)).save(tmp_path / "f.png")
    assert read_alpha(tmp_path / "f.png")[0, 0] == np.float32(200 / 65535)
    as_old_pillow = Image.open(tmp_path / "f.png").convert("I")  # what Pillow < 10 gives
    assert as_old_pillow.mode == "I"
    assert io._to_float(as_old_pillow, tmp_path / "f.png")[0, 0] == np.float32(200 / 65535)
    monkeypatch.setattr(io, "_open", lambda path: Image.open(path).convert("I"))
    assert read_alpha(tmp_path / "f.png")[0, 0] == np.float32(200 / 65535)


@pytest.mark.parametrize("old_pillow", [False, True])
def test_sixteen_bit_trimaps_on_either_scale_are_read(tmp_path, monkeypatch, old_pillow):
    """A 16-bit trimap is read on the 16-bit scale (0/32896/65535), and 8-bit levels (0/128/255) saved
    in a 16-bit file as they are (the message about class-index trimaps was wrong for those)."""
    import atldas.data.io as io

    if old_pillow:
        monkeypatch.setattr(io, "_open", lambda path: Image.open(path).convert("I"))
    t = _trimap()
    for name, stored in (("wide.png", t.astype(np.uint16) * 257 - (t == 128)),  # 128 -> 32895
                         ("narrow.png", t.astype(np.uint16))):
        Image.fromarray(stored).save(tmp_path / name)
        np.testing.assert_array_equal(read_trimap(tmp_path / name), t)
    Image.fromarray(np.where(t == 255, 2, t // 128).astype(np.uint16)).save(tmp_path / "classes.png")
    with pytest.raises(DataError, match="class-index trimap"):
        read_trimap(tmp_path / "classes.png")


def test_a_file_s_warning_is_given_once_and_a_folder_names_at_most_five_files(tmp_path, caplog):
    """A retrain reads a file again at every draw, and a folder of a thousand JPEG-like trimaps gave a
    warning per file and read."""
    from atldas.data.io import MAX_NAMED_FILES

    noisy = np.full((8, 8), 128, np.uint8)
    noisy[0, :3] = [3, 250, 120]  # off the three levels: mapped with a warning
    for k in range(8):
        Image.fromarray(noisy).save(tmp_path / f"t{k}.png")
    with caplog.at_level("WARNING", logger="atldas"):
        for _ in range(3):  # three epochs
            for k in range(8):
                read_trimap(tmp_path / f"t{k}.png")
    named = [r.getMessage() for r in caplog.records if "not in {0, 128, 255}" in r.getMessage()]
    assert len(named) == MAX_NAMED_FILES == len(set(named))
    assert sum("without a warning each" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    (tmp_path / "five").mkdir()  # exactly five files in a folder: no summary of files that do not exist
    for k in range(MAX_NAMED_FILES):
        Image.fromarray(noisy).save(tmp_path / "five" / f"t{k}.png")
    with caplog.at_level("WARNING", logger="atldas"):
        for k in range(MAX_NAMED_FILES):
            read_trimap(tmp_path / "five" / f"t{k}.png")
    assert len(caplog.records) == MAX_NAMED_FILES and "without a warning each" not in caplog.text
    other = tmp_path / "other"  # another folder is named afresh
    other.mkdir()
    Image.fromarray(noisy).save(other / "t.png")
    caplog.clear()
    with caplog.at_level("WARNING", logger="atldas"):
        read_trimap(other / "t.png")
    assert "not in {0, 128, 255}" in caplog.text


def test_eval_s_workers_share_one_count_of_named_files(tmp_path, caplog):
    """Each eval worker process kept its own count: with 4 workers all 12 noisy trimaps were named."""
    from atldas.cli import main
    from atldas.data.io import MAX_NAMED_FILES

    for d in ("pred", "alpha", "trimap"):
        (tmp_path / d).mkdir()
    noisy = np.full((8, 8), 128, np.uint8)
    noisy[0, :3] = [3, 250, 120]
    for k in range(12):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "pred" / f"{k:02d}.png")
        Image.fromarray(np.full((8, 8), 90, np.uint8)).save(tmp_path / "alpha" / f"{k:02d}.png")
        Image.fromarray(noisy).save(tmp_path / "trimap" / f"{k:02d}.png")
    with caplog.at_level("WARNING", logger="atldas"):
        assert main(["eval", "--pred", str(tmp_path / "pred"), "--alpha", str(tmp_path / "alpha"),
                     "--trimap", str(tmp_path / "trimap"), "--workers", "4"]) == 0
    named = [r for r in caplog.records if "not in {0, 128, 255}" in r.getMessage()]
    assert len(named) == MAX_NAMED_FILES and "without a warning each" in caplog.text


def test_a_refused_trimap_s_warning_comes_with_its_error(tmp_path, caplog, capsys):
    """eval's workers hand their warnings to the parent: a refused file's warning (near-greys mapped,
    none to 128) was dropped with the error it explains."""
    from atldas.cli import main

    for d in ("pred", "alpha", "trimap"):
        (tmp_path / d).mkdir()
    greys = np.full((8, 8), 3, np.uint8)
    greys[4:, :] = 250  # near-black and near-white: no unknown pixel once mapped
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "pred" / "a.png")
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(tmp_path / "alpha" / "a.png")
    Image.fromarray(greys).save(tmp_path / "trimap" / "a.png")
    with caplog.at_level("WARNING", logger="atldas"):
        assert main(["eval", "--pred", str(tmp_path / "pred"), "--alpha", str(tmp_path / "alpha"),
                     "--trimap", str(tmp_path / "trimap"), "--workers", "1"]) == 2
    assert "not in {0, 128, 255}" in caplog.text and "no unknown (128) pixels" in capsys.readouterr().err
