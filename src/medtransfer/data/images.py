"""Reading 2D image files into uint8 arrays, with errors that name the file.

Every PIL mode is either converted faithfully or refused with one line: a conversion that has to guess (print
colours, transparent pixels, non-finite floats, the first frame of a stack) would train on something the user
never saw.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medtransfer.data.file_kinds import DICOM_SUFFIXES, IMAGE_SUFFIXES
from medtransfer.errors import UserError

# PIL's own decompression-bomb threshold (about 89 megapixels); PIL only warns below twice that, we refuse at it,
# from the header, before a single pixel is decoded.
MAX_PIXELS = 89_478_485
# A side under 4 px holds no picture a backbone can use: a placeholder, a tracking pixel or a failed export.
MIN_SIDE = 4

# Modes read as they are, modes rescaled from their own range (16/32-bit integers and floats), and modes whose
# conversion is exact. Alpha modes are read only when fully opaque (checked when decoding, as it needs pixels).
DIRECT_MODES = frozenset({"L", "RGB"})
RESCALED_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
EXACT_MODES = {"1": "L", "P": "RGB", "YCbCr": "RGB", "RGBX": "RGB"}
ALPHA_MODES = {"RGBA": "RGBA", "LA": "LA", "PA": "RGBA"}
READ_MODES = DIRECT_MODES | RESCALED_MODES | set(EXACT_MODES) | set(ALPHA_MODES)
# Formats whose extra frames are previews of the first (camera multi-picture JPEGs), not more images.
PREVIEW_FRAME_FORMATS = frozenset({"MPO"})

UNREADABLE_FIX = "replace or remove the file"


def is_image(path: Path) -> bool:
    """Whether a path has an image file suffix we read."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 (H,W) or (H,W,3); 16-bit data is rescaled, not clipped; DICOM radiographs
    get their rescale, VOI/window and MONOCHROME1 inversion."""
    if str(path).lower().endswith(DICOM_SUFFIXES):
        from medtransfer.data.radiograph import read_radiograph  # pydicom only when a DICOM file comes

        return read_radiograph(path)
    with _open_checked(Path(path)) as img:
        try:
            return _pixels(img, str(path))
        except (OSError, SyntaxError, ValueError, EOFError) as exc:  # header fine, pixel data cut off or corrupt
            raise UserError(str(path), f"unreadable image ({_short(exc)})", UNREADABLE_FIX) from None


def _open_checked(path: Path) -> Image.Image:
    """Open (header only) and refuse what cannot be read right: empty, too small, too large, odd modes, stacks."""
    problem = _open_problem(path)
    if isinstance(problem, tuple):
        raise UserError(str(path), *problem)
    return problem


def _open_problem(path: Path) -> Image.Image | tuple[str, str]:
    """The opened image, or (problem, fix) from its size on disk and its header."""
    try:
        if path.stat().st_size == 0:
            return "is an empty file (0 bytes), not an image", UNREADABLE_FIX
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})", "check the path"
    try:
        with warnings.catch_warnings():
            # Between PIL's two thresholds it only warns: that line would be a second stderr line; we refuse below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)) / 1e6:.0f} megapixels" if pixels else "over PIL's limit"
        return _too_large(size)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        return f"unreadable image ({_short(exc)})", UNREADABLE_FIX
    problem = _header_problem(img)
    if problem:
        img.close()
        return problem
    return img


def _too_large(size: str) -> tuple[str, str]:
    return (f"is {size}, over the {MAX_PIXELS / 1e6:.0f}-megapixel limit for decoding safely (PIL's decompression "
            "bomb guard)", "downsample it (e.g. to 4096 px on the long side), or remove it")


def _header_problem(img: Image.Image) -> tuple[str, str] | None:
    width, height = img.size
    if width * height > MAX_PIXELS:
        return _too_large(f"{width}×{height} pixels ({width * height / 1e6:.0f} megapixels)")
    if min(width, height) < MIN_SIDE:
        return (f"is {width}×{height} pixels, too small to be an image (under {MIN_SIDE} px on a side)",
                UNREADABLE_FIX)
    if img.mode == "CMYK":
        return ("is CMYK (print colours), which has no faithful RGB form without its colour profile",
                "convert it to RGB with a colour-managed tool (e.g. magick in.jpg -colorspace sRGB out.png)")
    if img.mode not in READ_MODES:
        return (f"has image mode {img.mode!r}, which is not read",
                "save it as 8-bit grey or RGB, or 16-bit grey")
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format not in PREVIEW_FRAME_FORMATS:
        return (f"holds {frames} frames (a stack or an animation), and only the first would be read",
                "save one image per file (a 3D stack belongs in a NIfTI volume source)")
    return None


def _pixels(img: Image.Image, name: str) -> np.ndarray:
    mode = img.mode
    if mode in DIRECT_MODES:
        return np.asarray(img)
    if mode in RESCALED_MODES:
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise UserError(name, f"holds {int((~np.isfinite(arr)).sum())} NaN or infinite pixel values",
                            "replace them with finite values, or remove the file")
        return _rescale(arr)
    if mode == "P" and "transparency" in img.info:  # a palette entry is transparent: as RGBA, then the alpha rule
        mode, img = "PA", img.convert("RGBA")
    if mode in ALPHA_MODES:
        arr = np.asarray(img.convert(ALPHA_MODES[mode]))
        clear = int((arr[..., -1] < 255).sum())
        if clear:
            raise UserError(name, f"has {clear} of {arr[..., -1].size} pixels transparent (alpha below 255); "
                            "what lies under them is undefined", "flatten it onto a background "
                            "(e.g. magick in.png -background black -flatten out.png)")
        colour = arr[..., :-1]
        return colour[..., 0] if colour.shape[-1] == 1 else colour
    return np.asarray(img.convert(EXACT_MODES[mode]))


def _rescale(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    return scaled.round().astype(np.uint8)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


def header_problems(paths: list[Path]) -> list[tuple[str, str, str]]:
    """Open each file's header (cheap) and return (path, problem, fix) for those that cannot be read right."""
    bad = []
    for path in paths:
        if str(path).lower().endswith(DICOM_SUFFIXES):
            if not _dicom_header_ok(Path(path)):
                bad.append((str(path), "unreadable DICOM file", UNREADABLE_FIX))
            continue
        found = _open_problem(Path(path))
        if isinstance(found, tuple):
            bad.append((str(path), *found))
        else:
            found.close()
    return bad


def check_headers(paths: list[Path]) -> list[str]:
    """The files whose header shows they cannot be read right, so a bad file fails before any work."""
    return [path for path, _, _ in header_problems(paths)]


def _dicom_header_ok(path: Path) -> bool:
    from medtransfer.data.dicom_files import header_ok  # pydicom only when a DICOM file comes

    return header_ok(path)


def require_readable(paths: list[Path], source: str) -> None:
    """Raise one UserError naming the first unreadable image, why, and how many there are."""
    bad = header_problems(paths)
    if bad:
        path, problem, fix = bad[0]
        more = f" (and {len(bad) - 1} more bad image{'s' * (len(bad) > 2)})" if len(bad) > 1 else ""
        raise UserError(path, f"{problem}{more}, in {source}", fix)


class FileReader:
    """Reads image files by path; picklable for DataLoader workers."""

    def __call__(self, ref: object) -> np.ndarray:
        return read_image(str(ref))
