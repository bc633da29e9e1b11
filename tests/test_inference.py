"""`predict` rebuilds a finished run's model and reproduces its own test-set probabilities; a folder stands for the
images inside it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import run_cli, write_class_folder

from medtransfer.config import parse_config
from medtransfer.errors import UserError
from medtransfer.inference import expand_images, predict
from medtransfer.runner import train


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_predict_matches_the_runs_own_predictions(tmp_path, mode):
    root = write_class_folder(tmp_path / "imgs", {"benign": 20, "malignant": 20})
    cfg = parse_config({"data": str(root), "backbone": "resnet18", "weights": "none", "image_size": 32, "mode": mode,
                        "epochs": 2, "bootstrap": 100, "workers": 0, "out": str(tmp_path / "run"),
                        "cache_dir": str(tmp_path / "cache")})
    run_dir = train(cfg).run_dir.path
    saved = pd.read_csv(run_dir / "predictions.csv")
    test = saved[saved.split == "test"].head(5)
    images = [root / sid for sid in test["sample_id"]]
    fresh = predict(run_dir, images, "cpu")
    assert list(fresh.columns) == ["image", "predicted", "prob_benign", "prob_malignant"]
    assert np.allclose(fresh[["prob_benign", "prob_malignant"]].to_numpy(),
                       test[["prob_benign", "prob_malignant"]].to_numpy(), atol=2e-3)
    assert list(fresh["predicted"]) == list(test["predicted"])


def test_predict_cli_writes_csv_and_refuses_unfinished_runs(tmp_path, monkeypatch, capsys):
    root = write_class_folder(tmp_path / "imgs", {"a": 12, "b": 12})
    run_dir = tmp_path / "run"
    code, _, err = run_cli(["train", str(root), "--backbone", "resnet18", "--weights", "none", "--image-size", "32",
                            "--epochs", "2", "--bootstrap", "100", "--cache-dir", str(tmp_path / "c"), "--out",
                            str(run_dir), "-q"], monkeypatch, capsys)
    assert code == 0, err
    out_csv = tmp_path / "p.csv"
    code, _, err = run_cli(["predict", str(run_dir), str(root / "a" / "img_000.png"), "-o", str(out_csv)],
                           monkeypatch, capsys)
    assert code == 0, err
    assert len(pd.read_csv(out_csv)) == 1
    (run_dir / "DONE").unlink()
    with pytest.raises(UserError, match="not a finished run"):
        predict(run_dir, [root / "a" / "img_000.png"])


def test_a_run_dirs_damaged_weights_or_records_are_refused_with_one_line(tmp_path):
    """The checks a --weights checkpoint gets apply to the files a run saved: NaN, int, garbage, missing."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    root = write_class_folder(tmp_path / "imgs", {"a": 12, "b": 12})
    cfg = parse_config({"data": str(root), "backbone": "resnet18", "weights": "none", "image_size": 32,
                        "epochs": 1, "bootstrap": 100, "workers": 0, "out": str(tmp_path / "run"),
                        "cache_dir": str(tmp_path / "cache")})
    run_dir = train(cfg).run_dir.path
    image = [root / "a" / "img_000.png"]
    head = run_dir / "head.safetensors"
    good = head.read_bytes()
    state = load_file(str(head))
    weight = next(k for k in state if k.endswith("weight"))

    def refused(match: str) -> None:
        with pytest.raises(UserError, match=match) as info:
            predict(run_dir, image, "cpu")
        assert "\n" not in info.value.line()
        head.write_bytes(good)

    save_file({**state, weight: torch.full_like(state[weight], float("nan"))}, str(head))
    refused("NaN or infinite")
    save_file({**state, weight: state[weight].to(torch.int32)}, str(head))
    refused("int32 tensors where the model's weights are floating point")
    save_file({k: v for k, v in state.items() if k != weight}, str(head))
    refused(f"does not fit the run's model: missing keys \\(1\\): {weight}")
    head.write_bytes(b"\x00" * 64)
    refused("cannot read checkpoint")
    head.unlink()
    refused("is missing from the run directory")
    assert len(predict(run_dir, image, "cpu")) == 1  # restored: the run predicts again
    metrics = run_dir / "metrics.json"
    saved = metrics.read_text()
    metrics.write_text(saved[: len(saved) // 2])
    with pytest.raises(UserError, match="metrics.json: is not valid JSON"):
        predict(run_dir, image, "cpu")
    # A record lacking sections RunMetrics requires today (an older run's): predict needs only the classes.
    metrics.write_text(json.dumps({"classes": json.loads(saved)["classes"]}))
    assert len(predict(run_dir, image, "cpu")) == 1
    metrics.write_text(json.dumps({"test": {}}))
    with pytest.raises(UserError, match="metrics.json: has no `classes` list"):
        predict(run_dir, image, "cpu")
    metrics.write_text(json.dumps({**json.loads(saved), "schema_version": 999}))
    with pytest.raises(UserError, match="upgrade medtransfer"):
        predict(run_dir, image, "cpu")
    metrics.write_text(saved)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("mode: frozen", "mode: sideways"))
    with pytest.raises(UserError, match="config.yaml: is not a valid run configuration"):
        predict(run_dir, image, "cpu")
    config.write_text(config.read_text().replace("mode: sideways", "mode: frozen"))
    with pytest.raises(UserError, match="nope.png"):
        predict(run_dir, [root / "nope.png"], "cpu")


def test_a_device_that_is_no_choice_is_refused_before_the_run_is_read(tmp_path):
    from typing import get_args

    from medtransfer.config import TrainConfig

    with pytest.raises(UserError) as err:
        predict(tmp_path / "no-run", [tmp_path / "x.png"], device="bogus")
    line = err.value.line()
    assert line.startswith("device 'bogus': ") and "no-run" not in line
    assert all(choice in line for choice in get_args(TrainConfig.model_fields["device"].annotation))


def test_a_folder_expands_to_its_images_at_any_depth_sorted_without_hidden_files(tmp_path):
    root = write_class_folder(tmp_path / "new", {"b": 2, "a": 1}, size=8)
    for junk in (".hidden.png", "notes.txt", "a/.DS_Store", ".cache/x.png", "__MACOSX/b/img_000.png"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_bytes(b"x")
    single = tmp_path / "one.png"
    found = expand_images([single, root])
    assert found == [single, root / "a" / "img_000.png", root / "b" / "img_000.png", root / "b" / "img_001.png"]


@pytest.mark.parametrize("content", [[], ["readme.txt", ".hidden.png"]], ids=["empty", "no-images"])
def test_a_folder_without_images_is_refused_naming_it_before_the_run_is_read(tmp_path, content):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in content:
        (folder / name).write_bytes(b"x")
    with pytest.raises(UserError) as info:
        predict(tmp_path / "no-run", [folder], "cpu")
    line = info.value.line()
    assert line.startswith(f"{folder}: is a folder holding no image files (") and ".png" in line
    assert "no-run" not in line and "\n" not in line


def test_predict_cli_on_a_folder_writes_one_row_per_image_with_its_path(tmp_path, monkeypatch, capsys):
    root = write_class_folder(tmp_path / "imgs", {"a": 12, "b": 12})
    run_dir = tmp_path / "run"
    code, _, err = run_cli(["train", str(root), "--backbone", "resnet18", "--weights", "none", "--image-size", "32",
                            "--epochs", "1", "--bootstrap", "100", "--workers", "0", "--cache-dir",
                            str(tmp_path / "c"), "--out", str(run_dir), "-q"], monkeypatch, capsys)
    assert code == 0, err
    new = write_class_folder(tmp_path / "new", {"x": 2, "y": 1}, size=24, seed=5)
    out_csv = tmp_path / "p.csv"
    code, _, err = run_cli(["predict", str(run_dir), str(new), "-o", str(out_csv)], monkeypatch, capsys)
    assert code == 0, err
    rows = pd.read_csv(out_csv)
    files = sorted((new / "x").glob("*.png")) + sorted((new / "y").glob("*.png"))
    assert rows["image"].tolist() == [str(p) for p in files]
    one_by_one = predict(run_dir, files, "cpu")
    np.testing.assert_allclose(rows[["prob_a", "prob_b"]].to_numpy(), one_by_one[["prob_a", "prob_b"]].to_numpy(),
                               atol=1e-5)
