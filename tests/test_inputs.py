"""Odd image files: every valid one is converted correctly, every bad one is a one-line ChoiError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from choi.data.segment import MAX_PIXELS, as_rgb, load_image, silhouette
from choi.errors import ChoiError


def _load_error(path) -> str:
    with pytest.raises(ChoiError) as info:
        load_image(path, "human image")
    message = str(info.value)
    assert "\n" not in message
    return message


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` with almost no pixel data: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def test_rgb_png_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(loaded, rgb)
    assert loaded.flags.writeable  # torch.from_numpy warns on read-only arrays


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high, left half red; orientation 6 means "rotate 90 degrees clockwise to display".
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)
    rgb[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "phone.jpg")
    assert out.shape == (40, 20, 3)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60  # the stored left (red) half is now on top
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "c.jpg", quality=95)  # pure cyan
    out = load_image(tmp_path / "c.jpg")
    assert out.shape == (16, 16, 3)
    assert out[8, 8, 0] < 30 and out[8, 8, 1] > 225 and out[8, 8, 2] > 225


@pytest.mark.parametrize("value,expected", [(0, 0), (32896, 128), (65535, 255)])
def test_16bit_grayscale_is_scaled_not_clipped(tmp_path, value, expected):
    Image.fromarray(np.full((16, 16), value, np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    out = load_image(tmp_path / "g16.png")
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out == expected).all()


def test_32bit_integer_and_float_tiff(tmp_path):
    Image.fromarray(np.full((16, 16), 65535, np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    assert (load_image(tmp_path / "i.tif") == 255).all()
    Image.fromarray(np.full((16, 16), 0.5, np.float32)).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert (load_image(tmp_path / "f.tif") == 128).all()


def test_grayscale_and_bilevel(tmp_path):
    Image.new("L", (16, 12), 77).save(tmp_path / "l.png")
    out = load_image(tmp_path / "l.png")
    assert out.shape == (12, 16, 3) and (out == 77).all()
    Image.new("1", (16, 12), 1).save(tmp_path / "b.png")
    assert (load_image(tmp_path / "b.png") == 255).all()


def test_alpha_kept_only_with_transparency(tmp_path):
    la = Image.new("LA", (16, 16), (90, 0))
    la.paste((90, 255), (4, 4, 12, 12))
    la.save(tmp_path / "la.png")
    out = load_image(tmp_path / "la.png")
    assert out.shape == (16, 16, 4) and out[0, 0, 3] == 0 and out[8, 8, 3] == 255 and out[8, 8, 0] == 90
    Image.new("RGBA", (16, 16), (1, 2, 3, 255)).save(tmp_path / "opaque.png")
    assert load_image(tmp_path / "opaque.png").shape == (16, 16, 3)


def test_palette_with_transparency_segments_by_alpha(tmp_path):
    im = Image.new("P", (64, 64), 0)
    im.putpalette([255, 255, 255, 200, 30, 30] + [0] * 762)
    im.paste(1, (16, 16, 48, 48))
    im.info["transparency"] = 0
    im.save(tmp_path / "p.png", transparency=0)
    out = load_image(tmp_path / "p.png")
    assert out.shape == (64, 64, 4) and out[0, 0, 3] == 0 and tuple(out[32, 32]) == (200, 30, 30, 255)
    mask = silhouette(out)
    assert mask[16:48, 16:48].all() and mask.sum() == 32 * 32
    Image.new("P", (16, 16), 0).save(tmp_path / "p_opaque.png")
    assert load_image(tmp_path / "p_opaque.png").shape == (16, 16, 3)


def test_decompression_bombs_are_refused_from_the_header(tmp_path):
    side = int(MAX_PIXELS**0.5) + 10
    _png_header_only(tmp_path / "big.png", side, side)
    assert "megapixels" in _load_error(tmp_path / "big.png")
    _png_header_only(tmp_path / "bomb.png", 20000, 20000)  # 400 MP: over Pillow's own error limit too
    _load_error(tmp_path / "bomb.png")


def test_bad_files(tmp_path):
    assert "does not exist" in _load_error(tmp_path / "missing.png")
    assert "folder" in _load_error(tmp_path)
    (tmp_path / "notes.png").write_text("hello, I am not an image\n")
    assert "not an image" in _load_error(tmp_path / "notes.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    _load_error(tmp_path / "empty.jpg")
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert "truncated" in _load_error(tmp_path / "cut.png")
    Image.fromarray(rgb).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    _load_error(tmp_path / "cut.jpg")


def test_as_rgb_arrays_and_pil_modes():
    assert (as_rgb(np.full((8, 8), 65535, np.uint16)) == 255).all()
    assert (as_rgb(np.full((8, 8, 3), 0.5, np.float32)) == 128).all()
    assert (as_rgb(np.ones((8, 8), bool)) == 255).all()
    assert (as_rgb(np.full((8, 8, 1), 9, np.uint8)) == 9).all()
    assert (as_rgb(np.full((8, 8, 2), 9, np.uint8)) == 9).all()
    assert as_rgb(np.zeros((8, 8, 4), np.uint8)).shape == (8, 8, 3)
    nan = np.full((8, 8, 3), np.nan, np.float32)
    assert (as_rgb(nan) == 0).all()
    assert (as_rgb(Image.fromarray(np.full((8, 8), 65535, np.uint16))) == 255).all()
    assert tuple(as_rgb(Image.new("CMYK", (8, 8), (0, 0, 0, 0)))[0, 0]) == (255, 255, 255)
    for bad in (np.zeros((4, 4, 3), np.uint8), np.zeros((8, 8, 5), np.uint8), np.zeros(8)):
        with pytest.raises(ChoiError):
            as_rgb(bad)


def test_a_references_mask_is_read_by_the_one_mask_reader(tmp_path):
    from choi.pipelines.inputs import read_reference

    photo = np.full((64, 48, 3), 200, np.uint8)
    photo[10:50, 12:36] = (30, 90, 160)
    mask = np.zeros((32, 24), np.uint8)  # the photo's mask at half scale, as a user's shrunk photo has
    mask[5:25, 6:18] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    rgb, sil = read_reference(photo, tmp_path / "mask.png", "human")
    assert sil.shape == (64, 48) and sil[10:50, 12:36].all() and sil.sum() == 40 * 24
    with pytest.raises(ChoiError, match="the human mask is 24x24 pixels but the photo is 48x64"):
        read_reference(photo, np.ones((24, 24), bool), "human")
    with pytest.raises(ChoiError, match="the object mask is empty"):
        read_reference(photo, np.zeros((64, 48), bool), "object")
