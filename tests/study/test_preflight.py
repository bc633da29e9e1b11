"""A study checks every backbone (built on the meta device) and every dataset before its first run, and reports
every problem of the grid in one error."""

from __future__ import annotations

import sys

import pytest

from medtransfer.config import parse_config
from medtransfer.errors import UserError
from medtransfer.study.preflight import model_problems
from medtransfer.study.run import run_study

STUDY = """
name: checked
datasets:
  syn: {{data: "synthetic:n=60,size=16,groups=30"}}
backbones:
{backbones}
modes: {modes}
seeds: [0]
train: {{bootstrap: 100, workers: 0, cache_dir: {cache}}}
"""


def write(tmp_path, backbones: list[str], modes: str = "{frozen: {epochs: 1}}"):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(backbones="\n".join(f"  - {b}" for b in backbones), modes=modes,
                                 cache=tmp_path / "cache"))
    return path


def refused(study, tmp_path) -> str:
    """The one line a study is refused with by the real executor (a missed problem would start runs), and that no
    run was started."""
    with pytest.raises(UserError) as err:
        run_study(study, tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()
    return err.value.line()


def test_a_bad_pooling_of_the_third_backbone_fails_before_the_first_run(tmp_path):
    study = write(tmp_path, ["{name: resnet18, image_size: 32, weights: none}",
                             "{name: resnet34, image_size: 32, weights: none}",
                             "{name: resnet50, image_size: 32, weights: none, pooling: cls}"])
    line = refused(study, tmp_path)
    assert "study backbone 'resnet50'" in line and "--pooling cls" in line and "use avg" in line
    assert "resnet18" not in line and "resnet34" not in line


def test_two_problems_are_reported_in_one_message(tmp_path):
    study = write(tmp_path, ["{name: resnet18, image_size: 32, weights: none, pooling: cls_mean}",
                             "{name: vit_tiny_patch16_224, image_size: 40, weights: none}"])
    line = refused(study, tmp_path)
    assert line.startswith("study: 2 problems")
    assert "study backbone 'resnet18'" in line and "--pooling cls_mean" in line
    assert "study backbone 'vit_tiny_patch16_224'" in line and "--image-size 40" in line and "patch size 16" in line


def test_a_missing_weights_file_and_a_bad_dataset_are_reported_together(tmp_path):
    study = write(tmp_path, [f"{{name: resnet18, image_size: 32, weights: {tmp_path / 'gone.safetensors'}}}"])
    study.write_text(study.read_text().replace("n=60,size=16,groups=30", "n=60,size=16,groups=2"))
    with pytest.raises(UserError) as err:
        run_study(study, tmp_path / "out")
    line = err.value.line()
    assert "2 problems" in line and "gone.safetensors" in line and "file does not exist" in line
    assert "study dataset 'syn'" in line


@pytest.mark.parametrize(("values", "expected"), [
    ({"freeze_blocks": 5}, "--freeze-blocks 5: is more than the 4 blocks"),
    ({"freeze_blocks": 4}, None),
    ({"lora_rank": 4}, "LoRA applies to attention layers"),
])
def test_finetune_adaptations_are_checked_by_the_runs_own_rules(values, expected):
    cfg = parse_config({"data": "synthetic:", "backbone": "resnet18", "mode": "finetune", **values})
    problems = model_problems(cfg)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0][0] == "study backbone 'resnet18'" and expected in problems[0][1]


def test_lora_on_a_vit_passes_the_check():
    cfg = parse_config({"data": "synthetic:", "backbone": "vit_tiny_patch16_224", "mode": "finetune", "lora_rank": 4})
    assert model_problems(cfg) == []


def test_lora_without_peft_is_a_preflight_problem(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` raise ImportError
    cfg = parse_config({"data": "synthetic:", "backbone": "vit_tiny_patch16_224", "mode": "finetune", "lora_rank": 4})
    problems = model_problems(cfg)
    assert len(problems) == 1 and "needs the peft package" in problems[0][1]
    assert "medtransfer[lora]" in problems[0][1]


def test_a_tracker_without_its_extra_fails_before_the_first_run(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # makes `import mlflow` raise ImportError
    study = write(tmp_path, ["{name: resnet18, image_size: 32, weights: none}"])
    study.write_text(study.read_text().replace("bootstrap: 100,", "bootstrap: 100, tracker: mlflow,"))
    line = refused(study, tmp_path)
    assert "study tracker 'mlflow'" in line and "pip install 'medtransfer[mlflow]'" in line


def test_a_bad_family_name_a_missing_extra_and_wrong_weights_fail_before_the_first_run(tmp_path, monkeypatch):
    """Three foundation-model problems and one good backbone: nothing runs, every problem is named."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "open_clip" else real(name, *a))
    study = write(tmp_path, ["{name: resnet18, image_size: 32, weights: none}",
                             "{name: 'hugging:org/model', weights: none}",
                             "{name: biomedclip, weights: none}",
                             "{name: rad_dino, weights: imagenet}"])
    line = refused(study, tmp_path)
    assert line.startswith("study: 3 problems")
    assert "'hugging:org/model'" in line and "unknown backbone" in line
    assert "'biomedclip'" in line and "pip install 'medtransfer[clip]'" in line
    assert "'rad_dino'" in line and "--weights pretrained" in line


def test_external_sets_and_subgroup_columns_are_checked_before_the_first_run(tmp_path):
    """A subgroup column the manifest lacks and an external set with a class training lacks: both in one line."""
    from tests.helpers import write_class_folder

    images = write_class_folder(tmp_path / "img", {"a": 6, "b": 6})
    files = sorted(p.relative_to(images) for p in images.rglob("*.png"))
    (images / "m.csv").write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in files))
    other = write_class_folder(tmp_path / "other", {"a": 2, "c": 2})
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.format(backbones="  - {name: resnet18, image_size: 16, weights: none}",
                                  modes="{frozen: {epochs: 1}}", cache=tmp_path / "cache").replace(
        '  syn: {data: "synthetic:n=60,size=16,groups=30"}',
        f"  csv: {{data: {images / 'm.csv'}, subgroups: [sex]}}\n"
        f"  ext: {{data: \"synthetic:n=60,size=16\", external: {{site2: {other}}}}}"))
    line = refused(study, tmp_path)
    assert "2 problems" in line
    assert "study dataset 'csv'" in line and "--subgroups 'sex'" in line
    assert "study dataset 'ext'" in line and "external set 'site2'" in line and "that training does not have" in line
