"""The bad-input corpus: every input here is refused by the installed `medtransfer` with exit code 2 and one line.

Each case is (id, a builder that writes its inputs under tmp_path and returns the argv, what the line must name).
Each runs as a user would: the console script beside sys.executable, in a fresh working folder, quiet (`-q`).
Every case must end with
- exit code 2, and stderr exactly one non-empty line, with no "Traceback" anywhere;
- no run directory and no staging folder: no new `runs/`, `.partial-`, `DONE` or `metrics.json` in the tmp tree,
  and what was at `--out` before (a file, a user's folder) left as it was;
- for pickles, no file written by the pickle (its payload would create a sentinel folder).

Inputs are tiny and the error comes before training, except where it cannot (a run diverging to NaN).
Images of modes that convert faithfully (1-bit, 16-bit, 32-bit, palette, opaque alpha) are read, not refused:
they are tested in tests/data/test_images.py.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import png_header_only, write_class_folder
from PIL import Image

CLI = Path(sys.executable).with_name("medtransfer")
FAST = ["--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--epochs", "1", "--bootstrap", "100"]
SENTINEL = "PAYLOAD_RAN"  # a pickle's payload would create this folder under tmp_path
SHARED_HAM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ham10000_subset"


@dataclass(frozen=True)
class Case:
    """One bad input: its builder returns the argv after `medtransfer`; the line must name `mention` (or one of
    them, where the wording may reasonably differ)."""

    id: str
    build: Callable[[Path], list[str]]
    mention: str | tuple[str, ...]


class _Payload:
    """Unpickling this runs os.mkdir(target): loading must refuse it without running it."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (str(self.target),))


# --- builders ----------------------------------------------------------------------------------------------------


def train(tmp: Path, data: str | Path, *extra: str, out: str | Path | None = None,
          cache: str | Path | None = None) -> list[str]:
    """A quiet, fast `train` into tmp/out/run with its own cache, unless the case gives --out or --cache-dir."""
    return ["train", str(data), *FAST, "-q", "--out", str(out or tmp / "out" / "run"),
            "--cache-dir", str(cache or tmp / "cache"), *extra]


def folder(tmp: Path, per_class: int = 8) -> Path:
    """tmp/imgs/{a,b}/img_k.png, enough of each class for train, val and test."""
    return write_class_folder(tmp / "imgs", {"a": per_class, "b": per_class}, size=32)


def with_image(tmp: Path, write: Callable[[Path], None], name: str = "odd.png", per_class: int = 8) -> list[str]:
    """A good folder with one bad image (written by `write`) in class b."""
    root = folder(tmp, per_class)
    write(root / "b" / name)
    return train(tmp, root)


def save_pixels(pixels: np.ndarray, mode: str | None = None, **params) -> Callable[[Path], None]:
    return lambda path: Image.fromarray(pixels, mode=mode).save(path, **params)


def transparent(mode: str) -> Callable[[Path], None]:
    pixels = np.full((32, 32, len(mode)), 120, dtype=np.uint8)
    pixels[..., -1] = 255
    pixels[:4, :4, -1] = 0
    return save_pixels(pixels, mode)


def palette_with_transparent_pixels(path: Path) -> None:
    index = np.zeros((32, 32), dtype=np.uint8)
    index[5:9, 5:9] = 1
    img = Image.fromarray(index, mode="P")
    img.putpalette([40, 50, 60, 200, 210, 220] + [0] * 762)
    img.save(path, transparency=1)


def float_with_nan(path: Path) -> None:
    pixels = np.ones((32, 32), dtype=np.float32)
    pixels[3, 3] = np.nan
    Image.fromarray(pixels, mode="F").save(path)


def tiff_stack(path: Path) -> None:
    frames = [Image.fromarray(np.full((32, 32), 50 * k, np.uint8)) for k in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:])


def truncated(path: Path) -> None:
    """A PNG whose header is whole and whose pixel data is cut off: found only when decoding."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])


def npz(tmp: Path, change: Callable[[dict], None], n: int = 12) -> list[str]:
    """A MedMNIST-layout .npz (28×28 grey, 2 classes) with one change applied to its arrays."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
    change(arrays)
    path = tmp / "set.npz"
    np.savez(path, **arrays)
    return train(tmp, path)


def _set(key: str, value: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict], None]:
    def change(arrays: dict) -> None:
        arrays[key] = value(arrays[key])
    return change


def object_labels(tmp: Path) -> list[str]:
    payload = np.empty((12, 1), dtype=object)
    payload[:, 0] = [_Payload(tmp / SENTINEL)] * 12
    return npz(tmp, _set("train_labels", lambda _: payload))


def manifest(tmp: Path, rows: list[str], header: str = "path,label", extra: tuple[str, ...] = ()) -> list[str]:
    """A CSV beside the good folder tmp/imgs (8 images of a and b), rows as written."""
    root = folder(tmp)
    csv_path = root / "m.csv"
    csv_path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return train(tmp, csv_path, *extra)


def good_rows() -> list[str]:
    return [f"{c}/img_{i:03d}.png,{c}" for c in "ab" for i in range(8)]


def non_utf8(tmp: Path) -> list[str]:
    args = manifest(tmp, good_rows(), header="path,label,note")
    csv_path = Path(args[1])
    csv_path.write_bytes(csv_path.read_bytes().replace(b"a/img_003.png,a", b"a/img_003.png,a,caf\xe9"))
    return args


def outside_image(tmp: Path, absolute: bool) -> list[str]:
    """A row naming a real, readable image outside the image root."""
    outside = tmp / "elsewhere" / "x.png"
    outside.parent.mkdir()
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(outside)
    name = str(outside) if absolute else "../../elsewhere/x.png"
    return manifest(tmp, [*good_rows(), f"{name},b"])


def ham(tmp: Path) -> list[str]:
    """HAM10000-style metadata (detected without options) with a split column that nothing asks to use."""
    images = tmp / "ham" / "HAM10000_images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"ISIC_{i:07d}.jpg")
        rows.append(f"HAM_{i:07d},ISIC_{i:07d},{'nv' if i % 2 else 'mel'},{('train', 'val', 'test')[i % 3]}")
    csv_path = tmp / "ham" / "HAM10000_metadata.csv"
    csv_path.write_text("lesion_id,image_id,dx,split\n" + "\n".join(rows) + "\n")
    return train(tmp, csv_path)


def real_ham_with_split(tmp: Path) -> list[str]:
    """The shared HAM10000 subset as downloaded, plus the split column a user added: it must not be ignored."""
    if not SHARED_HAM.is_dir():
        pytest.skip("../shared/data is missing: real-data tests need the shared data folder beside the checkout")
    lines = (SHARED_HAM / "subset_metadata.csv").read_text().splitlines()
    rows = [f"{line},{('train', 'val', 'test')[k % 3]}" for k, line in enumerate(lines[1:])]
    csv_path = tmp / "ham_split.csv"
    csv_path.write_text(lines[0] + ",split\n" + "\n".join(rows) + "\n")
    return train(tmp, csv_path, "--image-root", str(SHARED_HAM / "HAM10000_images"))


def volumes(tmp: Path, change: Callable[[Path], None] | None = None, patients: int = 6) -> list[str]:
    """Patient folders of one NIfTI modality (t1), labels in a CSV, then one change."""
    root = tmp / "vols"
    rng = np.random.default_rng(0)
    rows = ["patient_id,label"]
    for i in range(patients):
        (root / f"P{i}").mkdir(parents=True)
        data = rng.random((16, 16, 6)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), root / f"P{i}" / f"P{i}_t1.nii.gz")
        rows.append(f"P{i},{'low' if i % 2 else 'high'}")
    (tmp / "labels.csv").write_text("\n".join(rows) + "\n")
    if change:
        change(root)
    return train(tmp, root, "--modalities", "t1", "--slices", "center:2", "--labels-csv", str(tmp / "labels.csv"))


def nifti(path: Path, data: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), path)


def duplicate_patient(tmp: Path) -> list[str]:
    args = volumes(tmp)
    with open(tmp / "labels.csv", "a") as handle:
        handle.write("P2,low\n")  # P2 again, with the other label
    return args


@functools.cache
def _resnet18_state() -> dict:
    import timm

    return timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict()


def checkpoint(tmp: Path, change: Callable[[dict], dict], name: str = "w.pth") -> list[str]:
    """A resnet18 state dict, changed, saved with torch.save, passed as --weights."""
    import torch

    path = tmp / name
    torch.save(change({k: v.clone() for k, v in _resnet18_state().items()}), path)
    args = train(tmp, "synthetic:n=40,size=16")
    args[args.index("--weights") + 1] = str(path)
    return args


def _floats(convert: Callable) -> Callable[[dict], dict]:
    return lambda state: {k: convert(v) if v.is_floating_point() else v for k, v in state.items()}


def _nan_in_one(state: dict) -> dict:
    state["layer3.0.conv2.weight"][0, 0, 0, 0] = float("nan")
    return state


def pickle_with_code(tmp: Path) -> list[str]:
    return checkpoint(tmp, lambda state: {**state, "optimizer": _Payload(tmp / SENTINEL)})


def zero_byte_checkpoint(tmp: Path) -> list[str]:
    args = train(tmp, "synthetic:n=40,size=16")
    (tmp / "empty.pth").write_bytes(b"")
    args[args.index("--weights") + 1] = str(tmp / "empty.pth")
    return args


def out_is_file(tmp: Path) -> list[str]:
    target = tmp / "results.txt"
    target.write_text("my notes\n")
    return train(tmp, folder(tmp), out=target)


def out_under_read_only(tmp: Path) -> list[str]:
    if os.geteuid() == 0:  # permissions do not stop root: a read-only file system does
        return train(tmp, folder(tmp), out="/proc/medtransfer-readonly/run")
    locked = tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return train(tmp, folder(tmp), out=locked / "run")


def out_holds_user_files(tmp: Path) -> list[str]:
    target = tmp / "mywork"
    target.mkdir()
    (target / "thesis.txt").write_text("three years of work\n")
    return train(tmp, folder(tmp), out=target)


def out_is_cwd(tmp: Path) -> list[str]:
    (tmp / "cwd" / "notes.txt").write_text("keep me\n")  # the case runs in tmp/cwd
    return train(tmp, folder(tmp), out=".")


def cache_is_file(tmp: Path) -> list[str]:
    (tmp / "cache.bin").write_bytes(b"not a folder")
    return train(tmp, folder(tmp), cache=tmp / "cache.bin")


STUDY = """name: corpus
datasets:
DATASETS
backbones: [{name: resnet18, image_size: 32, weights: none}]
modes: {frozen: {epochs: 1}}
train: {bootstrap: 100, cache_dir: CACHE}
"""


def study(tmp: Path, datasets: str) -> list[str]:
    path = tmp / "study.yaml"
    path.write_text(STUDY.replace("DATASETS", datasets).replace("CACHE", str(tmp / "cache")))
    return ["run", str(path), "--out", str(tmp / "out" / "study"), "-q"]


def study_second_dataset_bad(tmp: Path) -> list[str]:
    root = folder(tmp)
    rows = [f"{c}/img_{i:03d}.png,{c},{'' if i % 4 == 0 else f'p{c}{i}'}" for c in "ab" for i in range(8)]
    (root / "blank_groups.csv").write_text("path,label,patient\n" + "\n".join(rows) + "\n")
    return study(tmp, f"  first: {{data: \"synthetic:n=60,size=16,groups=30\"}}\n"
                      f"  second: {{data: {root / 'blank_groups.csv'}, group_col: patient}}")


def empty_class_folder(tmp: Path) -> list[str]:
    root = folder(tmp)
    (root / "c").mkdir()
    return train(tmp, root)


def unrecognised_split_pair(tmp: Path) -> list[str]:
    root = tmp / "kaggle"
    write_class_folder(root, {"a": 6, "b": 6}, size=32, splits=("A_part", "B_part"))
    return train(tmp, root)


CASES = [
    # images (PIL modes that cannot be read faithfully, sizes, broken files)
    Case("image-cmyk", lambda t: with_image(t, save_pixels(np.zeros((32, 32, 4), np.uint8), "CMYK"), "odd.jpg"),
         "CMYK"),
    Case("image-rgba-transparent", lambda t: with_image(t, transparent("RGBA")), "transparent"),
    Case("image-la-transparent", lambda t: with_image(t, transparent("LA")), "transparent"),
    Case("image-palette-transparent", lambda t: with_image(t, palette_with_transparent_pixels), "transparent"),
    Case("image-float-nan", lambda t: with_image(t, float_with_nan, "odd.tif"), "NaN"),
    Case("image-lab-mode", lambda t: with_image(t, lambda p: Image.new("LAB", (32, 32)).save(p), "odd.tif"),
         "LAB"),
    Case("image-tiff-stack", lambda t: with_image(t, tiff_stack, "odd.tif"), "frames"),
    Case("image-1x1", lambda t: with_image(t, save_pixels(np.zeros((1, 1), np.uint8))), "1×1"),
    Case("image-20000x20000-png", lambda t: with_image(t, lambda p: png_header_only(p, 20000, 20000)),
         "megapixel"),
    Case("image-zero-bytes", lambda t: with_image(t, lambda p: p.write_bytes(b"")), "0 bytes"),
    Case("image-truncated", lambda t: with_image(t, truncated), "odd.png"),
    Case("image-noise-bytes", lambda t: with_image(t, lambda p: p.write_bytes(os.urandom(256))), "odd.png"),
    # MedMNIST .npz
    Case("npz-float-labels", lambda t: npz(t, _set("train_labels", lambda y: (y / 2).astype(np.float32))),
         "train_labels"),
    Case("npz-negative-labels", lambda t: npz(t, _set("val_labels", lambda y: y.astype(np.int64) - 1)),
         "val_labels"),
    Case("npz-string-labels", lambda t: npz(t, _set("test_labels", lambda y: np.where(y == 1, "tumour", "normal"))),
         "test_labels"),
    Case("npz-object-array", object_labels, "train_labels"),
    Case("npz-two-channels", lambda t: npz(t, _set("train_images", lambda x: np.stack([x, x], axis=-1))),
         "train_images"),
    Case("npz-zero-rows", lambda t: npz(t, lambda a: a.update(val_images=a["val_images"][:0],
                                                              val_labels=a["val_labels"][:0])), "val"),
    # CSV manifests
    Case("csv-duplicate-ids", lambda t: manifest(t, [*good_rows(), "a/img_002.png,b"]), "img_002.png"),
    Case("csv-non-utf8", non_utf8, "UTF-8"),
    Case("csv-path-etc-passwd", lambda t: manifest(t, [*good_rows(), "../../../../../../etc/passwd,b"]),
         "etc/passwd"),
    Case("csv-path-escapes-root", lambda t: outside_image(t, absolute=False), "elsewhere"),
    Case("csv-absolute-path-outside-root", lambda t: outside_image(t, absolute=True), "elsewhere"),
    Case("csv-unknown-split", lambda t: manifest(t, [f"{r},{'holdout' if k == 3 else 'train'}" for k, r in
                                                     enumerate(good_rows())], "path,label,split",
                                                 ("--split-col", "split")), "holdout"),
    Case("csv-blank-group-ids", lambda t: manifest(t, [f"{r},{'' if k % 5 == 0 else f'p{k}'}" for k, r in
                                                       enumerate(good_rows())], "path,label,patient",
                                                   ("--group-col", "patient")), "blank group"),
    Case("csv-label-with-trailing-space", lambda t: manifest(t, [r + " " if r.endswith("7.png,b") else r
                                                                 for r in good_rows()]), "'b '"),
    Case("csv-group-with-leading-space", lambda t: manifest(t, [f"{r},{' p1' if k == 5 else 'p' + str(k // 2)}"
                                                                for k, r in enumerate(good_rows())],
                                                            "path,label,patient", ("--group-col", "patient")),
         "' p1'"),
    Case("csv-ham-split-column-ignored", ham, "--split-col split"),
    Case("csv-real-ham-split-column-ignored", real_ham_with_split, "--split-col split"),
    # volumes
    Case("volume-4d", lambda t: volumes(t, lambda r: nifti(r / "P1" / "P1_t1.nii.gz", np.ones((16, 16, 6, 3)))),
         "P1_t1.nii.gz"),
    Case("volume-all-zero", lambda t: volumes(t, lambda r: nifti(r / "P3" / "P3_t1.nii.gz", np.zeros((16, 16, 6)))),
         "P3"),
    Case("volume-duplicate-patient", duplicate_patient, ("P2", "repeated")),
    # checkpoints (--weights PATH)
    Case("weights-pickle-with-code", pickle_with_code, "unpickl"),
    Case("weights-int32", lambda t: checkpoint(t, _floats(lambda v: v.int())), "int32"),
    Case("weights-bool", lambda t: checkpoint(t, _floats(lambda v: v > 0)), "bool"),
    Case("weights-nan", lambda t: checkpoint(t, _nan_in_one), "NaN"),
    Case("weights-no-matching-keys", lambda t: checkpoint(t, lambda s: {f"decoder.{k}": v for k, v in s.items()}),
         "none of its"),
    Case("weights-zero-bytes", zero_byte_checkpoint, "empty.pth"),
    # splits and options
    Case("train-fraction-0.001", lambda t: train(t, "synthetic:n=200,size=16", "--train-fraction", "0.001"),
         "training samples"),
    Case("seed-negative", lambda t: train(t, "synthetic:n=40,size=16", "--seed", "-1"), "seed"),
    Case("seed-2-to-the-40", lambda t: train(t, "synthetic:n=40,size=16", "--seed", str(2**40)), "seed"),
    # run directory and cache
    Case("out-is-a-file", out_is_file, "results.txt"),
    Case("out-under-read-only-folder", out_under_read_only, ("medtransfer-readonly", "locked")),
    Case("out-holds-user-files", out_holds_user_files, "mywork"),
    Case("out-is-the-working-folder", out_is_cwd, ("--out", "cwd")),
    Case("cache-dir-is-a-file", cache_is_file, "--cache-dir"),
    # studies: every dataset is checked before the first run
    Case("study-duplicate-dataset-names", lambda t: study(t, "  syn: {data: \"synthetic:n=60,size=16\"}\n"
                                                             "  syn: {data: \"synthetic:n=80,size=16\"}"), "syn"),
    Case("study-second-dataset-bad", study_second_dataset_bad, "second"),
    # image folders
    Case("folder-empty-class-beside-good-ones", empty_class_folder, "imgs/c"),
    Case("folder-unrecognised-split-pair", unrecognised_split_pair, "--split-dirs"),
    # training that diverges: it may train, then stops with the epoch and the fix
    Case("lr-1e12-diverges", lambda t: train(t, folder(t, 10), "--mode", "finetune", "--lr", "1e12", "--epochs", "2"),
         "epoch 1"),
]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root, with file contents (None for folders)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.exists():
            continue
        out[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_2_with_nothing_left_behind(case: Case, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    argv = case.build(tmp_path)
    before = _snapshot(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
           "NO_COLOR": "1", "COLUMNS": "200"}
    try:
        done = subprocess.run([str(CLI), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for locked in tmp_path.rglob("locked"):
            locked.chmod(0o755)  # let pytest clean up
    everything = done.stdout + done.stderr
    assert not (tmp_path / SENTINEL).exists(), "a pickle's payload ran"
    assert "Traceback" not in everything, everything
    assert done.returncode == 2, everything
    assert done.stderr.strip() and done.stderr.endswith("\n") and done.stderr.count("\n") == 1, done.stderr
    mentions = (case.mention,) if isinstance(case.mention, str) else case.mention
    assert any(m.lower() in done.stderr.lower() for m in mentions), done.stderr

    after = _snapshot(tmp_path)
    changed = [p for p in before if p in after and after[p] != before[p]]
    assert not changed, f"files changed: {changed}"
    assert not [p for p in before if p not in after], "files were deleted"
    new = [p for p in after if p not in before]
    left = [p for p in new if Path(p).name in ("runs", "DONE", "metrics.json", "predictions.csv")
            or ".partial-" in p]
    assert not left, f"run output left behind: {left}"
    assert not (cwd / "runs").exists()
    if argv[0] == "train":  # the run directory itself: absent unless it was there before (a file, a user's folder)
        out = (cwd / argv[argv.index("--out") + 1]).resolve()
        inside = out.is_relative_to(tmp_path.resolve())
        existed = inside and (out == tmp_path.resolve() or str(out.relative_to(tmp_path.resolve())) in before)
        assert out.exists() == existed, f"{out} was created"
