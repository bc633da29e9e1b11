"""Running a study: shared feature cache, resume after SIGKILL (with external sets and subgroups) without redoing
finished runs, dry run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
from safetensors.torch import save_file

from medtransfer.config import TrainConfig
from medtransfer.errors import UserError
from medtransfer.rundir import is_complete
from medtransfer.study.run import run_study
from tests.helpers import write_class_folder

STUDY = """
name: tiny
datasets:
  syn: {{data: "synthetic:n=120,size=24,groups=60,classes=2"}}
backbones:
  - {{name: resnet18, image_size: 32, weights: {ckpt}}}
modes:
  frozen: {{heads: [linear, mlp], epochs: 8}}
  finetune: {{epochs: 1, batch_size: 16, lr: 0.001}}
seeds: {seeds}
train: {{bootstrap: 200, workers: 0, cache_dir: {cache}}}
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(path))
    return path


def write_study(folder: Path, checkpoint: Path, seeds: list[int], cache: str = "cache") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"study-{cache}.yaml"
    path.write_text(STUDY.format(ckpt=checkpoint, seeds=seeds, cache=folder / cache))
    return path


def results(out: Path) -> dict[str, dict]:
    """Each run's metrics without the timing block (seconds differ between any two executions)."""
    found = {}
    for metrics in sorted((out / "runs").glob("*/metrics.json")):
        data = json.loads(metrics.read_text())
        data.pop("timing")
        found[metrics.parent.name] = data
    return found


def flat(value: object, path: str = "") -> dict[str, object]:
    """Nested metrics as {dotted path: leaf}."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{path}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{path}[{i}]").items()}
    return {path: value}


def assert_same_results(a: dict[str, dict], b: dict[str, dict]) -> None:
    """The same runs and metrics; numbers up to float error, as runs resumed in another process may reduce in
    another order (thread count, kernel choice) than the uninterrupted study."""
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for key, value in fa.items():
        if key.endswith("_seconds"):  # durations differ between any two runs
            continue
        if isinstance(value, float) and isinstance(fb[key], float):
            assert fb[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
        else:
            assert fb[key] == value, key


def test_frozen_grid_extracts_once_per_backbone(tmp_path, checkpoint):
    """3 seeds x 2 heads of one frozen backbone: one extraction, five cache hits (finetune runs excluded)."""
    study = write_study(tmp_path, checkpoint, [0, 1, 2]).read_text().replace(
        "  finetune: {epochs: 1, batch_size: 16, lr: 0.001}\n", "")
    path = tmp_path / "frozen.yaml"
    path.write_text(study)
    outcome = run_study(path, tmp_path / "out")
    timings = [json.loads((Path(s.config.out) / "metrics.json").read_text())["timing"] for s in outcome.specs]
    assert len(timings) == 6
    assert [t["cache_hit"] for t in timings].count(False) == 1
    assert sum(t["extract_seconds"] > 0 for t in timings) == 1
    assert (tmp_path / "out" / "report" / "report.html").is_file()


SHIFT_STUDY = """
name: shift
datasets:
  clinic:
    data: {manifest}
    group_col: patient
    subgroups: [sex, "age:0,50,120"]
    subgroup_min: 5
    external: {{other: {external}}}
backbones:
  - {{name: resnet18, image_size: 32, weights: {ckpt}}}
  - {{name: resnet10t, image_size: 32, weights: none}}
modes:
  frozen: {{heads: [linear, mlp], epochs: 8}}
  finetune: {{epochs: 1, batch_size: 16, lr: 0.001}}
train: {{bootstrap: 200, workers: 0, cache_dir: {cache}}}
"""


def write_manifest(folder: Path, n: int, seed: int) -> Path:
    """PNGs of two classes with a CSV manifest: patients of two images each, and their sex and age."""
    images = write_class_folder(folder, {"a": n // 2, "b": n // 2}, seed=seed)
    files = sorted(p.relative_to(images) for p in images.rglob("*.png"))
    rng = np.random.default_rng(seed)
    patients = [f"{p.parent.name}{i // 2}" for i, p in enumerate(files)]
    meta = {pid: (rng.choice(["female", "male"]), str(rng.integers(20, 90))) for pid in dict.fromkeys(patients)}
    manifest = pd.DataFrame({"path": [str(p) for p in files], "label": [p.parent.name for p in files],
                             "patient": patients, "sex": [meta[p][0] for p in patients],
                             "age": [meta[p][1] for p in patients]})
    manifest.to_csv(images / "manifest.csv", index=False)
    return images / "manifest.csv"


def write_shift_study(folder: Path, checkpoint: Path, data: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(SHIFT_STUDY.format(manifest=data / "train" / "manifest.csv", external=data / "other" /
                                       "manifest.csv", ckpt=checkpoint, cache=folder / "cache"))
    return path


def test_kill_and_resume_loses_nothing_and_redoes_nothing(tmp_path, checkpoint):
    """A study with an external set, subgroups and two backbones, killed after its first run and resumed: the same
    results as the uninterrupted study, finished runs untouched."""
    write_manifest(tmp_path / "data" / "train", 80, seed=0)
    write_manifest(tmp_path / "data" / "other", 40, seed=1)
    reference = run_study(write_shift_study(tmp_path / "a", checkpoint, tmp_path / "data"), tmp_path / "a" / "out")
    assert reference.ran == 6
    first = json.loads(next((tmp_path / "a" / "out" / "runs").glob("*/metrics.json")).read_text())
    assert set(first["external"]) == {"other"} and set(first["subgroups"]) == {"sex", "age:0,50,120"}

    out = tmp_path / "b" / "out"
    study = write_shift_study(tmp_path / "b", checkpoint, tmp_path / "data")
    proc = subprocess.Popen([sys.executable, "-m", "medtransfer", "run", str(study), "--out", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "runs").glob("*/DONE")):
        assert proc.poll() is None, "the study ended before it could be killed"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/DONE")}
    assert 1 <= len(finished) < 6

    with pytest.raises(UserError, match="--resume"):
        run_study(study, out)
    resumed = run_study(study, out, resume=True)
    assert resumed.skipped == len(finished) and resumed.ran == 6 - len(finished)
    assert {name: (out / "runs" / name / "DONE").stat().st_mtime_ns for name in finished} == finished
    assert all(is_complete(Path(s.config.out)) for s in resumed.specs)
    assert not list((out / "runs").glob(".*partial*"))
    assert_same_results(results(out), results(tmp_path / "a" / "out"))
    html = (out / "report" / "report.html").read_text()
    assert "Internal vs external" in html and "Subgroups" in html


def test_resume_after_a_new_option_was_added_reruns_nothing(tmp_path, checkpoint, monkeypatch):
    """A study finished, then a version added an option with a default: resuming finds every run finished."""
    from pydantic import create_model

    import medtransfer.study.grid as grid

    study = tmp_path / "frozen.yaml"
    study.write_text(write_study(tmp_path, checkpoint, [0]).read_text().replace(
        "  finetune: {epochs: 1, batch_size: 16, lr: 0.001}\n", ""))
    first = run_study(study, tmp_path / "out")
    assert first.ran == 2
    finished = {p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").glob("*/DONE")}
    later = create_model("LaterTrainConfig", __base__=TrainConfig, new_option=(int, 3), new_flag=(bool, False))
    monkeypatch.setattr(grid, "TrainConfig", later)
    resumed = run_study(study, tmp_path / "out", resume=True)
    assert all(isinstance(s.config, later) for s in resumed.specs)
    assert (resumed.skipped, resumed.ran) == (2, 0)
    assert [s.run_id for s in resumed.specs] == [s.run_id for s in first.specs]
    assert {p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").glob("*/DONE")} == finished


@pytest.fixture
def short_calibration(monkeypatch) -> None:
    """A one-second calibration budget: each measurement still times a warm-up and one batch."""
    import medtransfer.study.cost as cost

    monkeypatch.setattr(cost, "BUDGET_SECONDS", 1.0)


def test_dry_run_prints_the_grid_and_runs_nothing(tmp_path, checkpoint, capsys, short_calibration):
    """The plan is a result, on stdout: every run with a measured low–high time, the machine and the total."""
    from medtransfer.progress import Reporter

    outcome = run_study(write_study(tmp_path, checkpoint, [0]), tmp_path / "out", dry_run=True, reporter=Reporter())
    captured = capsys.readouterr()
    printed = captured.out
    assert "3 runs" in printed and "measured on this machine" in printed and "remaining: 3 run(s)" in printed
    assert "3 runs" not in captured.err  # progress only on stderr
    for spec in outcome.specs:
        assert spec.label in printed
        estimate = outcome.plan.estimates[spec.run_id]
        assert 0 < estimate.low < estimate.high
    # The two frozen runs share one extraction: only the first one's forward passes are counted.
    frozen = [outcome.plan.works[s.run_id] for s in outcome.specs if s.config.mode == "frozen"]
    assert [w.infer for w in frozen] == [120, 0]
    assert not (tmp_path / "out" / "runs").exists()


def test_a_resumed_dry_run_estimates_only_what_is_left(tmp_path, checkpoint, monkeypatch, capsys, short_calibration):
    """Finished runs are listed as done and neither timed nor counted in the remaining total."""
    import medtransfer.study.cost as cost
    import medtransfer.study.run as study_run

    timed: list[tuple] = []  # measurements stubbed: this test is about which runs are estimated
    monkeypatch.setattr(cost, "_measure", lambda key, *rest: timed.append(key) or cost.Rate(1.0, 2.0))

    study = write_study(tmp_path, checkpoint, [0])
    first = run_study(study, tmp_path / "out", dry_run=True)
    done = {first.specs[0].run_id}
    monkeypatch.setattr(study_run, "is_complete", lambda path: Path(path) == Path(first.specs[0].config.out))
    timed.clear()
    resumed = run_study(study, tmp_path / "out", dry_run=True)
    assert set(resumed.plan.estimates) == {s.run_id for s in first.specs} - done
    # The finished frozen run was the one to extract features (the other one reads them): no extraction is timed.
    extraction = cost.measurement_keys(first.specs[0].config, {"train": 0, "val": 0})["infer"]
    assert first.specs[0].config.mode == "frozen" and extraction not in timed
    assert "remaining: 2 run(s)" in capsys.readouterr().out


# --- A study folder holds one study; every dataset is checked before the first run ---

FAST_STUDY = """
name: {name}
datasets:
  syn: {{data: "synthetic:n=60,size=16,groups=30"}}
backbones: [{{name: resnet18, image_size: 32, weights: none}}]
modes: {{frozen: {{epochs: 2}}}}
seeds: {seeds}
train: {{bootstrap: 100, workers: 0}}
"""


@pytest.fixture
def no_runs(monkeypatch) -> list:
    """Replace the executor and the report: these tests are about the study folder, not the runs."""
    import medtransfer.study.run as study_run

    executed: list = []
    monkeypatch.setattr(study_run, "execute", lambda name, specs, *a, **k: executed.append(list(specs)))
    monkeypatch.setattr(study_run, "_report", lambda out, reporter: None)
    return executed


def test_a_folder_holding_another_study_is_refused_unless_replaced(tmp_path, no_runs):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(FAST_STUDY.format(name="alpha", seeds=[0]))
    second.write_text(FAST_STUDY.format(name="beta", seeds=[0]))
    out = tmp_path / "out"
    run_study(first, out)
    stored = (out / "study.yaml").read_text()
    for resume in (False, True):
        with pytest.raises(UserError, match="another study \\('alpha'\\)") as err:
            run_study(second, out, resume=resume)
        assert "--replace-study" in err.value.line()
        assert (out / "study.yaml").read_text() == stored
    assert len(no_runs) == 1  # the refused attempts started nothing

    run_study(second, out, replace_study=True)
    assert (out / "study.yaml").read_text() == second.read_text()
    kept = list(out.glob("study.replaced-*.yaml"))
    assert len(kept) == 1 and kept[0].read_text() == stored


def test_the_same_name_with_other_settings_is_another_study(tmp_path, no_runs):
    path, out = tmp_path / "s.yaml", tmp_path / "out"
    path.write_text(FAST_STUDY.format(name="alpha", seeds=[0]))
    run_study(path, out)
    path.write_text("# reformatted, same study\n" + FAST_STUDY.format(name="alpha", seeds="[ 0 ]"))
    run_study(path, out, resume=True)  # comments and layout are not content
    path.write_text(FAST_STUDY.format(name="alpha", seeds=[0, 1]))
    with pytest.raises(UserError, match="other settings \\(seeds differ\\)"):
        run_study(path, out, resume=True)


def test_every_dataset_is_preflighted_and_the_bad_one_named_before_any_run(tmp_path, no_runs):
    from helpers import write_class_folder

    root = write_class_folder(tmp_path / "imgs", {"a": 12, "b": 12})
    rows = [f"{c}/img_{i:03d}.png,{c},{'' if i % 5 == 0 else f'p{c}{i // 2}'}" for c in "ab" for i in range(12)]
    (root / "m.csv").write_text("path,label,patient\n" + "\n".join(rows) + "\n")
    study = tmp_path / "s.yaml"
    study.write_text(FAST_STUDY.format(name="two", seeds=[0]).replace(
        '  syn: {data: "synthetic:n=60,size=16,groups=30"}\n',
        f'  syn: {{data: "synthetic:n=60,size=16,groups=30"}}\n  blanks: {{data: "{root / "m.csv"}", '
        'group_col: patient}\n'))
    with pytest.raises(UserError) as err:
        run_study(study, tmp_path / "out")
    line = err.value.line()
    assert "study dataset 'blanks'" in line and "blank group id" in line
    assert not no_runs and not (tmp_path / "out" / "runs").exists()


def test_a_train_fraction_too_small_to_split_fails_in_preflight(tmp_path, no_runs):
    study = tmp_path / "s.yaml"
    study.write_text(FAST_STUDY.format(name="frac", seeds=[0]) + "train_fractions: [1.0, 0.001]\n")
    with pytest.raises(UserError, match="study dataset 'syn'"):
        run_study(study, tmp_path / "out")
    assert not no_runs
