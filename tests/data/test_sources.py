"""The registry of source readers: each form of DATA goes to its reader, unknown forms get one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import write_class_folder

from medtransfer.data import sources
from medtransfer.data.sources import SOURCES, SourceReader, load_source
from medtransfer.data.table import SampleTable
from medtransfer.errors import UserError
from medtransfer.registry import Registry


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, train_images=rng.integers(0, 255, (6, 8, 8), dtype=np.uint8),
             train_labels=np.array([[0], [1]] * 3))
    return path


def _csv(tmp_path: Path) -> Path:
    write_class_folder(tmp_path / "images", {"a": 3, "b": 3})
    rows = [(f"{c}/img_{i:03d}.png", c) for c in ("a", "b") for i in range(3)]
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(path, index=False)
    return path


def test_the_built_in_forms_are_registered_in_dispatch_order() -> None:
    assert SOURCES.names() == ("synthetic", "npz", "csv", "folder")
    with pytest.raises(ValueError, match="already registered"):
        SOURCES.register("npz", SOURCES.get("npz"))


def test_each_form_is_read_by_its_reader(tmp_path: Path) -> None:
    synthetic = load_source("synthetic:n=20,classes=2")
    assert len(synthetic) == 20
    npz = load_source(str(_npz(tmp_path / "tiny.npz")))
    assert set(npz.frame["split"]) == {"train"} and len(npz) == 6
    manifest = load_source(str(_csv(tmp_path)), image_root=str(tmp_path / "images"))
    assert sorted(manifest.frame["label"].unique()) == ["a", "b"] and len(manifest) == 6
    folder = load_source(str(write_class_folder(tmp_path / "folder", {"x": 2, "y": 3})))
    assert folder.frame["label"].value_counts().to_dict() == {"y": 3, "x": 2}


def test_a_missing_path_and_an_unknown_form_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_source(str(tmp_path / "absent.npz"))
    odd = tmp_path / "notes.txt"
    odd.write_text("x")
    with pytest.raises(UserError, match="unsupported file type '.txt'"):
        load_source(str(odd))


def test_split_dirs_are_refused_for_anything_but_a_folder() -> None:
    with pytest.raises(UserError, match="--split-dirs"):
        load_source("synthetic:n=20", split_dirs={"train": "tr"})


def test_a_registered_reader_is_asked_in_turn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    table = load_source("synthetic:n=12")

    def load(data: str, request: sources.SourceRequest) -> SampleTable:
        seen.append(data)
        return table

    registry: Registry[SourceReader] = Registry("data source")
    registry.register("mine", SourceReader(lambda data: data.startswith("mine:"), load))
    for name, reader in SOURCES.items():
        registry.register(name, reader)
    monkeypatch.setattr(sources, "SOURCES", registry)
    assert load_source("mine:anything") is table and seen == ["mine:anything"]
    assert len(load_source("synthetic:n=30")) == 30  # the built-in readers still answer after it
