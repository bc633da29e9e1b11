"""Shared test helpers: run the CLI in-process, and write tiny image trees in real layouts."""

from __future__ import annotations

import struct
import sys
import zlib
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


def default_settings(cls: type, mode: str = "frozen", **given: object):
    """An engine settings dataclass (HeadTraining, ProbeHead, HeadSweep, FinetuneSettings, SplitPlan, ...) with
    TrainConfig's defaults for `mode`, except `given`; fields the config lacks keep the class's own defaults."""
    from dataclasses import MISSING, fields

    from medtransfer.config import TrainConfig, from_config

    own = {f.name: f.default for f in fields(cls)
           if f.name not in TrainConfig.model_fields and f.name not in given and f.default is not MISSING}
    return from_config(cls, TrainConfig(data="synthetic:", mode=mode), **own, **given)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width×height, with a few rows of data: cheap to write, huge to decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
                     + chunk(b"IEND", b""))
    return path


def volume_settings(**given: object):
    """VolumeOptions as a run with these settings gets them (TrainConfig's defaults otherwise), checked as a run's
    settings are; `modalities` defaults to none."""
    from medtransfer.config import from_config, parse_config
    from medtransfer.data.volume_options import VolumeOptions

    modalities = tuple(given.pop("modalities", ()))
    cfg = parse_config({"data": "volumes", "modalities": list(modalities) or None, **given}, "volume options")
    return from_config(VolumeOptions, cfg, modalities=modalities)
