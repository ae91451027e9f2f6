"""Files as users have them: every kind is read correctly or refused with one line.

palette ('P') PNG trimaps (as alphamatting.com ships them), RGB trimaps, JPEG alphas and trimaps with
compression noise, EXIF-rotated JPEG photos, CMYK JPEGs, 16-bit PNGs, greyscale and RGBA photos.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from atldas.data.io import image_size, read_alpha, read_rgb, read_trimap
from atldas.errors import DataError


def _trimap(h: int = 24, w: int = 32) -> np.ndarray:
    t = np.full((h, w), 128, np.uint8)
    t[:, :8] = 0
    t[:, -8:] = 255
    return t


def test_palette_trimap_reads_as_its_grey_values(tmp_path):
    t = _trimap()
    idx = np.select([t == 0, t == 128], [0, 1], 2).astype(np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette([0, 0, 0, 128, 128, 128, 255, 255, 255] + [0] * (256 * 3 - 9))
    img.save(tmp_path / "t.png")
    assert Image.open(tmp_path / "t.png").mode == "P"
    np.testing.assert_array_equal(read_trimap(tmp_path / "t.png"), t)


def test_rgb_trimap_with_equal_channels(tmp_path):
    t = _trimap()
    Image.fromarray(np.repeat(t[:, :, None], 3, axis=2)).save(tmp_path / "t.png")
    np.testing.assert_array_equal(read_trimap(tmp_path / "t.png"), t)


def test_jpeg_trimap_noise_is_mapped_back(tmp_path, caplog):
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 31.5, xx - 31.5)
    t = np.where(r < 12, 255, np.where(r < 22, 128, 0)).astype(np.uint8)  # edges off the 8x8 JPEG grid
    Image.fromarray(t).save(tmp_path / "t.jpg", quality=90)
    raw = np.asarray(Image.open(tmp_path / "t.jpg"))
    assert not np.isin(raw, (0, 128, 255)).all()  # the file really is noisy
    got = read_trimap(tmp_path / "t.jpg")
    assert np.isin(got, (0, 128, 255)).all() and (got != t).mean() < 0.01
    assert "not in {0, 128, 255}" in caplog.text  # and the mapping is said, not silent


def test_jpeg_alpha_keeps_its_noise_near_0_and_1(tmp_path):
    a = np.zeros((64, 64), np.uint8)
    a[:, 32:] = 255
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=75)
    got = read_alpha(tmp_path / "a.jpg")
    assert got.dtype == np.float32 and got.shape == (64, 64)
    np.testing.assert_allclose(got, a / 255.0, atol=0.1)  # compression noise, read as is


def test_exif_rotated_photo_is_read_upright(tmp_path):
    rgb = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high
    rgb[:, :10] = (255, 0, 0)  # red on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb).save(tmp_path / "p.jpg", exif=exif, quality=95)
    got = read_rgb(tmp_path / "p.jpg")
    assert got.shape == (40, 20, 3)  # shown 20 wide, 40 high
    assert image_size(tmp_path / "p.jpg") == (20, 40)  # the header size agrees with the pixels
    assert got[:10, :, 0].mean() > 0.8 and got[-10:, :, 0].mean() < 0.2  # the red edge is now on top


def test_cmyk_jpeg_reads_as_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "p.jpg", quality=100)
    assert Image.open(tmp_path / "p.jpg").mode == "CMYK"
    got = read_rgb(tmp_path / "p.jpg")
    assert got.shape == (16, 16, 3)
    assert np.abs(got - rgb / 255.0).mean() < 0.05


def test_sixteen_bit_png_alpha_and_photo(tmp_path):
    a = np.linspace(0, 65535, 32 * 8).reshape(8, 32).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_alpha(tmp_path / "a.png"), a / 65535.0, atol=1e-6)
    rgb = read_rgb(tmp_path / "a.png")  # a 16-bit greyscale photo
    assert rgb.shape == (8, 32, 3)
    np.testing.assert_allclose(rgb[:, :, 1], a / 65535.0, atol=1e-6)


def test_greyscale_and_rgba_photos(tmp_path):
    g = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(g).save(tmp_path / "g.png")
    np.testing.assert_allclose(read_rgb(tmp_path / "g.png"), np.repeat(g[:, :, None] / 255.0, 3, axis=2), atol=1e-6)
    rgba = np.dstack([np.full((8, 8, 3), 100, np.uint8), np.zeros((8, 8), np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "p.png")
    np.testing.assert_allclose(read_rgb(tmp_path / "p.png"), np.full((8, 8, 3), 100 / 255.0), atol=1e-6)


def test_transparent_trimap_is_refused_in_one_line(tmp_path):
    la = np.dstack([_trimap(), np.zeros((24, 32), np.uint8)])
    Image.fromarray(la, mode="LA").save(tmp_path / "t.png")
    with pytest.raises(DataError, match="transparent") as info:
        read_trimap(tmp_path / "t.png")
    assert "\n" not in str(info.value)


def _with_exif_orientation(png: bytes, orientation: int) -> bytes:
    """``png`` with an eXIf chunk (big-endian TIFF, one Orientation entry) after its IHDR."""
    import struct
    import zlib

    tiff = b"MM\x00*\x00\x00\x00\x08" + struct.pack(">HHHIHH", 1, 0x0112, 3, 1, orientation, 0) + b"\x00\x00\x00\x00"
    chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
    return png[:33] + chunk + png[33:]  # signature (8) + IHDR (25)


def test_sixteen_bit_colour_pngs_keep_all_sixteen_bits(tmp_path):
    """Pillow opens a 16-bit RGB(A) PNG as 8-bit, the high bytes only: a matte or photo saved so lost its
    low byte (truncated, not rounded; eval did not count it as 16-bit). Decoded with all 16 bits, turned
    upright by its EXIF orientation as an 8-bit image is."""
    import cv2

    from atldas.data.io import image_info

    rng = np.random.default_rng(0)
    rgb16 = rng.integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "c.png"), rgb16[..., ::-1])  # cv2 writes BGR
    assert Image.open(tmp_path / "c.png").mode == "RGB"  # what Pillow makes of it
    np.testing.assert_allclose(read_rgb(tmp_path / "c.png"), rgb16 / 65535.0, atol=1e-7)
    assert image_info(tmp_path / "c.png") == ((10, 6), "RGB;16")
    rgba16 = rng.integers(0, 65536, (6, 10, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), rgba16[..., [2, 1, 0, 3]])
    np.testing.assert_allclose(read_rgb(tmp_path / "d.png"), rgba16[..., :3] / 65535.0, atol=1e-7)
    for o in range(1, 9):  # upright as Pillow turns the same file's 8-bit decoding
        (tmp_path / f"o{o}.png").write_bytes(_with_exif_orientation((tmp_path / "c.png").read_bytes(), o))
        got = read_rgb(tmp_path / f"o{o}.png")
        eight = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / f"o{o}.png")), np.uint8)
        assert got.shape == eight.shape, o
        np.testing.assert_array_equal(np.floor(got * 65535.0 + 0.5).astype(np.uint16) >> 8, eight, err_msg=str(o))


def test_a_sixteen_bit_colour_trimap_reads_as_one_channel(tmp_path):
    """A 16-bit RGB trimap came back (H, W, 3) once 16-bit colour PNGs were recognised (eval: IndexError)."""
    import cv2

    from atldas.data.io import read_trimap

    t = np.full((6, 10), 128, np.uint8)
    t[:2], t[-2:] = 0, 255
    cv2.imwrite(str(tmp_path / "t.png"), np.dstack([t.astype(np.uint16) * 257] * 3))
    got = read_trimap(tmp_path / "t.png")
    assert got.shape == (6, 10) and np.array_equal(got, t)
