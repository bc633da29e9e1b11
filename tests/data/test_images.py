"""Decoding image files to uint8: each PIL mode converted faithfully or refused, sizes checked from the header,
errors naming the file."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import png_header_only

from medtransfer.data.images import MAX_PIXELS, check_headers, header_problems, is_image, read_image, require_readable
from medtransfer.data.table import to_rgb
from medtransfer.errors import UserError


def _refusal(path: Path) -> str:
    with pytest.raises(UserError) as info:
        read_image(path)
    line = info.value.line()
    assert line.startswith(str(path)) and "\n" not in line
    assert check_headers([path]) in ([str(path)], [])  # header-level refusals also fail the cheap pass
    return line


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    raw = np.kron(np.array([[0, 1000, 2000], [4000, 30000, 65535]], dtype=np.uint16), np.ones((4, 4), np.uint16))
    path = tmp_path / "ct.png"
    Image.fromarray(raw).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file

    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == raw.shape
    assert out.max() == 255 and out.min() == 0
    expected = np.round((raw.astype(np.float64) - raw.min()) / (raw.max() - raw.min()) * 255)
    np.testing.assert_allclose(out, expected, atol=1)
    assert (np.diff(out[0]) >= 0).all()  # order kept


def test_16bit_values_all_above_255_keep_their_contrast(tmp_path):
    """Clipping would turn every pixel into 255; rescaling keeps the image."""
    raw = np.linspace(1200, 3400, 48, dtype=np.uint16).reshape(6, 8)
    path = tmp_path / "mr.png"
    Image.fromarray(raw).save(path)
    out = read_image(path)
    assert out[-1, -1] == 255 and out[0, 0] == 0
    assert len(np.unique(out)) > 40


def test_32bit_integer_tiff_is_rescaled(tmp_path):
    raw = np.linspace(-70000, 900000, 64).astype(np.int32).reshape(8, 8)
    path = tmp_path / "i.tif"
    Image.fromarray(raw, mode="I").save(path)
    assert Image.open(path).mode == "I"
    out = read_image(path)
    expected = np.round((raw - raw.min()) / (raw.max() - raw.min()) * 255)
    np.testing.assert_allclose(out, expected, atol=1)


def test_constant_16bit_image_does_not_divide_by_zero(tmp_path):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((4, 4), 5000, dtype=np.uint16)).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (4, 4)
    assert len(np.unique(out)) == 1


def test_float_tiff_is_rescaled(tmp_path):
    raw = np.kron(np.array([[-1.0, 0.0], [1.5, 3.0]], dtype=np.float32), np.ones((3, 3), np.float32))
    path = tmp_path / "f.tif"
    Image.fromarray(raw, mode="F").save(path)
    out = read_image(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.round((raw + 1.0) / 4.0 * 255).astype(np.uint8))


def test_float_tiff_with_nan_is_refused_with_the_count(tmp_path):
    raw = np.ones((6, 6), dtype=np.float32)
    raw[1, 2], raw[3, 3] = np.nan, np.inf
    path = tmp_path / "nan.tif"
    Image.fromarray(raw, mode="F").save(path)
    assert "2 NaN or infinite" in _refusal(path)


def test_grey_and_rgb_are_returned_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(read_image(str(tmp_path / "c.png")), rgb)


def test_opaque_rgba_becomes_its_rgb(tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    path = tmp_path / "a.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (6, 4, 3)
    np.testing.assert_array_equal(out, rgba[:, :, :3])


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_are_refused_not_dropped(tmp_path, mode):
    """Under a transparent pixel the colour is undefined (often black, white or garbage): reading it would guess."""
    pixels = np.full((6, 5, len(mode)), 120, dtype=np.uint8)
    pixels[..., -1] = 255
    pixels[0, :3, -1] = 0
    path = tmp_path / "cutout.png"
    Image.fromarray(pixels, mode=mode).save(path)
    line = _refusal(path)
    assert "3 of 30 pixels transparent" in line and "flatten" in line


def test_palette_image_becomes_its_colours(tmp_path):
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
    index = np.kron(np.array([[0, 1], [2, 3], [1, 0]], dtype=np.uint8), np.ones((2, 2), np.uint8))
    img = Image.fromarray(index, mode="P")
    img.putpalette(palette + [0] * (768 - len(palette)))
    path = tmp_path / "p.png"
    img.save(path)
    assert Image.open(path).mode == "P"
    out = read_image(path)
    assert out.shape == (6, 4, 3) and out.dtype == np.uint8
    colours = np.array(palette, dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(out, colours[index])


def test_palette_with_a_transparent_entry_follows_the_alpha_rule(tmp_path):
    index = np.zeros((5, 5), dtype=np.uint8)
    img = Image.fromarray(index, mode="P")
    img.putpalette([40, 50, 60, 200, 210, 220] + [0] * 762)
    img.save(tmp_path / "unused.png", transparency=1)  # the transparent entry is never used: all opaque
    np.testing.assert_array_equal(read_image(tmp_path / "unused.png"), np.full((5, 5, 3), [40, 50, 60], np.uint8))
    index[2, 2] = 1
    img = Image.fromarray(index, mode="P")
    img.putpalette([40, 50, 60, 200, 210, 220] + [0] * 762)
    img.save(tmp_path / "used.png", transparency=1)
    assert "1 of 25 pixels transparent" in _refusal(tmp_path / "used.png")


def test_bilevel_and_opaque_grey_alpha_modes_decode(tmp_path):
    Image.fromarray(np.kron(np.array([[0, 255], [255, 0]], dtype=np.uint8), np.ones((3, 3), np.uint8))).convert(
        "1").save(tmp_path / "b.png")
    la_pixels = np.full((5, 5, 2), 90, dtype=np.uint8)
    la_pixels[..., 1] = 255
    Image.fromarray(la_pixels, mode="LA").save(tmp_path / "la.png")
    assert Image.open(tmp_path / "b.png").mode == "1" and Image.open(tmp_path / "la.png").mode == "LA"
    bilevel = read_image(tmp_path / "b.png")
    assert bilevel.dtype == np.uint8 and bilevel.shape == (6, 6) and set(np.unique(bilevel)) == {0, 255}
    assert bilevel[0, 0] == 0 and bilevel[0, 5] == 255
    la = read_image(tmp_path / "la.png")
    assert la.dtype == np.uint8 and la.shape == (5, 5) and (la == 90).all()


def test_ycbcr_is_converted_exactly_enough(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path = tmp_path / "y.tif"
    Image.fromarray(rgb).convert("YCbCr").save(path)
    assert Image.open(path).mode == "YCbCr"
    np.testing.assert_allclose(read_image(path).astype(int), rgb.astype(int), atol=3)


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_is_refused_from_the_header(tmp_path, suffix):
    path = tmp_path / f"print{suffix}"
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), mode="CMYK").save(path)
    line = _refusal(path)
    assert "CMYK" in line and "RGB" in line
    assert check_headers([path]) == [str(path)]


def test_an_unsupported_mode_is_named(tmp_path):
    path = tmp_path / "lab.tif"
    Image.new("LAB", (8, 8)).save(path)
    assert "'LAB'" in _refusal(path)


def test_a_multi_frame_tiff_is_refused_not_read_as_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((8, 8), 40 * k, np.uint8)) for k in range(3)]
    path = tmp_path / "stack.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert "3 frames" in _refusal(path)
    assert check_headers([path]) == [str(path)]


@pytest.mark.parametrize("shape", [(1, 1), (2, 40), (40, 3)])
def test_images_too_small_to_hold_a_picture_are_refused(tmp_path, shape):
    path = tmp_path / "dot.png"
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)
    line = _refusal(path)
    assert f"{shape[1]}×{shape[0]} pixels" in line and "too small" in line


@pytest.mark.parametrize("width, height", [(20000, 20000), (10000, 9000)], ids=["pil-error", "pil-warning"])
def test_decompression_bombs_are_refused_from_the_header_with_their_size(tmp_path, width, height):
    """PIL raises past twice its limit and only warns below; both are one line here, with no warning printed."""
    path = png_header_only(tmp_path / "huge.png", width, height)
    assert path.stat().st_size < 50_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        line = _refusal(path)
        assert check_headers([path]) == [str(path)]
    assert f"{width * height / 1e6:.0f} megapixels" in line and "downsample" in line
    assert width * height > MAX_PIXELS


def test_an_image_just_under_the_limit_passes_the_header_check(tmp_path):
    assert check_headers([png_header_only(tmp_path / "big.png", 9000, 9000)]) == []


@pytest.mark.parametrize("content", [b"", os.urandom(300), b"\x89PNG\r\n\x1a\n" + os.urandom(40)],
                         ids=["empty", "noise", "truncated-png"])
def test_unreadable_file_is_a_user_error_naming_it(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_image(path)
    assert str(path) in info.value.line()
    assert check_headers([path]) == [str(path)]


def test_zero_byte_file_says_it_is_empty(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert "empty file (0 bytes)" in _refusal(path)


def test_pixels_cut_off_after_a_good_header_fail_on_decode_with_one_line(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    assert check_headers([path]) == []  # the header is intact: only decoding finds it
    line = _refusal(path)
    assert "unreadable image" in line and "truncated" in line.lower()


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nope.png"):
        read_image(tmp_path / "nope.png")


def test_check_headers_passes_good_files(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "ok.jpg")
    assert check_headers([tmp_path / "ok.jpg"]) == []


def test_require_readable_names_the_first_bad_file_its_reason_and_the_count(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(good)
    (tmp_path / "a_empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "b_dot.png")
    paths = [good, tmp_path / "a_empty.png", tmp_path / "b_dot.png"]
    assert [p for p, _, _ in header_problems(paths)] == [str(paths[1]), str(paths[2])]
    with pytest.raises(UserError) as info:
        require_readable(paths, "my-source")
    line = info.value.line()
    assert line.startswith(str(paths[1])) and "empty file" in line and "1 more" in line and "my-source" in line
    require_readable([good], "my-source")


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
