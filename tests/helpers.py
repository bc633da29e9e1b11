"""Shared test helpers: run the CLI in-process, and write tiny image trees in real layouts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Invoke `medtransfer ARGS` in-process; return (exit code, stdout, stderr)."""
    from medtransfer.cli import main

    monkeypatch.setattr(sys, "argv", ["medtransfer", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_class_folder(root: Path, classes: dict[str, int], size: int = 24, seed: int = 0,
                       splits: tuple[str, ...] = ()) -> Path:
    """Write PNGs as ROOT/[split/]<class>/img_k.png whose brightness depends on the class."""
    rng = np.random.default_rng(seed)
    for split in splits or ("",):
        for k, (name, count) in enumerate(classes.items()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (size, size), dtype=np.uint8) + np.uint8(80 * k)
                Image.fromarray(pixels).save(folder / f"img_{i:03d}.png")
    return root
