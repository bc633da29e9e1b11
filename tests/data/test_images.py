"""Decoding image files to uint8: 16-bit rescaling, alpha and palette modes, grey to RGB, errors naming the file."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from medtransfer.data.images import check_headers, is_image, read_image
from medtransfer.data.table import to_rgb
from medtransfer.errors import UserError


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    raw = np.array([[0, 1000, 2000], [4000, 30000, 65535]], dtype=np.uint16)
    path = tmp_path / "ct.png"
    Image.fromarray(raw).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file

    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == raw.shape
    assert out.max() == 255 and out.min() == 0
    expected = np.round((raw.astype(np.float64) - raw.min()) / (raw.max() - raw.min()) * 255)
    np.testing.assert_allclose(out, expected, atol=1)
    assert (np.diff(out.ravel()) >= 0).all()  # order kept


def test_16bit_values_all_above_255_keep_their_contrast(tmp_path):
    """Clipping would turn every pixel into 255; rescaling keeps the image."""
    raw = np.linspace(1200, 3400, 48, dtype=np.uint16).reshape(6, 8)
    path = tmp_path / "mr.png"
    Image.fromarray(raw).save(path)
    out = read_image(path)
    assert out[-1, -1] == 255 and out[0, 0] == 0
    assert len(np.unique(out)) > 40


def test_constant_16bit_image_does_not_divide_by_zero(tmp_path):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((4, 4), 5000, dtype=np.uint16)).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (4, 4)
    assert len(np.unique(out)) == 1


def test_float_tiff_is_rescaled(tmp_path):
    raw = np.array([[-1.0, 0.0], [1.5, 3.0]], dtype=np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(raw, mode="F").save(path)
    out = read_image(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.round((raw + 1.0) / 4.0 * 255).astype(np.uint8))


def test_grey_and_rgb_are_returned_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(read_image(str(tmp_path / "c.png")), rgb)


def test_rgba_becomes_rgb(tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque, so the colour channels are well defined
    rgba[0, 0, 3] = 0
    path = tmp_path / "a.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (6, 4, 3)
    np.testing.assert_array_equal(out[1:], rgba[1:, :, :3])


def test_palette_image_becomes_its_colours(tmp_path):
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
    index = np.array([[0, 1], [2, 3], [1, 0]], dtype=np.uint8)
    img = Image.fromarray(index, mode="P")
    img.putpalette(palette + [0] * (768 - len(palette)))
    path = tmp_path / "p.png"
    img.save(path)
    assert Image.open(path).mode == "P"
    out = read_image(path)
    assert out.shape == (3, 2, 3) and out.dtype == np.uint8
    colours = np.array(palette, dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(out, colours[index])


def test_bilevel_and_grey_alpha_modes_decode(tmp_path):
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1").save(tmp_path / "b.png")
    Image.fromarray(np.full((3, 3, 2), 90, dtype=np.uint8), mode="LA").save(tmp_path / "la.png")
    bilevel = read_image(tmp_path / "b.png")
    assert bilevel.dtype == np.uint8 and set(np.unique(bilevel)) == {0, 255}
    la = read_image(tmp_path / "la.png")
    assert la.dtype == np.uint8 and la.shape[:2] == (3, 3) and (la == 90).all()


@pytest.mark.parametrize("content", [b"", os.urandom(300), b"\x89PNG\r\n\x1a\n" + os.urandom(40)],
                         ids=["empty", "noise", "truncated-png"])
def test_unreadable_file_is_a_user_error_naming_it(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_image(path)
    assert str(path) in info.value.line()
    assert check_headers([path]) == [str(path)]


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nope.png"):
        read_image(tmp_path / "nope.png")


def test_check_headers_passes_good_files(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "ok.jpg")
    assert check_headers([tmp_path / "ok.jpg"]) == []


@pytest.mark.parametrize("name, expected", [("a.PNG", True), ("b.jpeg", True), ("c.tif", True), ("d.webp", True),
                                            ("e.txt", False), ("._f.png", False), ("g.dcm", True)])
def test_is_image(tmp_path, name, expected):
    assert is_image(tmp_path / name) is expected


def test_to_rgb_repeats_grey_into_three_channels():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for image in (grey, grey[:, :, None]):
        out = to_rgb(image)
        assert out.shape == (3, 4, 3) and out.dtype == np.uint8
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], grey)
        assert out.flags["C_CONTIGUOUS"]


def test_to_rgb_drops_alpha_and_keeps_rgb():
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    out = to_rgb(rgba)
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out, rgba[:, :, :3])
    assert out.flags["C_CONTIGUOUS"]
    rgb = rgba[:, :, :3].copy()
    np.testing.assert_array_equal(to_rgb(rgb), rgb)
