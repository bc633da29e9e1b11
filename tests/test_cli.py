"""Bad input anywhere: one line on stderr naming the input and the fix, exit 2, and no run directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli, write_class_folder

from medtransfer.rundir import is_complete

FAST = ["--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--epochs", "2", "--bootstrap", "100",
        "-q"]


def assert_bad_input(args: list[str], out: Path, monkeypatch, capsys, mention: str) -> str:
    code, stdout, stderr = run_cli([*args, "--out", str(out)], monkeypatch, capsys)
    assert code == 2, (stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert mention.lower() in lines[0].lower()
    assert not out.exists()
    leftovers = list(out.parent.glob(f".{out.name}.partial*")) if out.parent.exists() else []
    assert not leftovers
    return lines[0]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "run1"


def test_missing_data_path(tmp_path, out, monkeypatch, capsys):
    assert_bad_input(["train", str(tmp_path / "nope.npz"), *FAST], out, monkeypatch, capsys, "nope.npz")


def test_corrupt_image_in_the_middle_of_a_folder(tmp_path, out, monkeypatch, capsys):
    root = write_class_folder(tmp_path / "imgs", {"a": 12, "b": 12})
    (root / "b" / "img_005.png").write_bytes(b"\x89PNG not really an image")
    line = assert_bad_input(["train", str(root), *FAST], out, monkeypatch, capsys, "img_005.png")
    assert "replace or remove" in line


def test_unknown_csv_column(tmp_path, out, monkeypatch, capsys):
    root = write_class_folder(tmp_path / "imgs", {"a": 4})
    csv = root / "m.csv"
    csv.write_text("path,label\n" + "".join(f"a/img_{i:03d}.png,a\n" for i in range(4)))
    assert_bad_input(["train", str(csv), "--label-col", "diagnosis", *FAST], out, monkeypatch, capsys, "diagnosis")


def test_label_missing_from_csv(tmp_path, out, monkeypatch, capsys):
    root = write_class_folder(tmp_path / "imgs", {"a": 4})
    csv = root / "m.csv"
    csv.write_text("path,label\na/img_000.png,a\na/img_001.png,\na/img_002.png,b\n")
    assert_bad_input(["train", str(csv), *FAST], out, monkeypatch, capsys, "line 3")


def test_single_class_split(tmp_path, out, monkeypatch, capsys):
    root = tmp_path / "imgs"
    write_class_folder(root, {"a": 6, "b": 6}, splits=("train",))
    write_class_folder(root, {"a": 4}, splits=("test",))
    assert_bad_input(["train", str(root), *FAST], out, monkeypatch, capsys, "one class")


def test_unknown_backbone(out, monkeypatch, capsys):
    line = assert_bad_input(["train", "synthetic:n=60", "--backbone", "resnet5", "--weights", "none", "-q"],
                            out, monkeypatch, capsys, "resnet5")
    assert "did you mean" in line


def test_missing_weights_offline(tmp_path, out, monkeypatch, capsys):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    line = assert_bad_input(["train", "synthetic:n=60", "--backbone", "resnet18", "--weights", "imagenet", "-q"],
                            out, monkeypatch, capsys, "resnet18")
    assert "--weights PATH" in line and "HF_HOME" in line


def test_mismatched_checkpoint(tmp_path, out, monkeypatch, capsys):
    import timm

    ckpt = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", num_classes=0).state_dict(), ckpt)
    line = assert_bad_input(["train", "synthetic:n=60", "--backbone", "resnet18", "--weights", str(ckpt), "-q"],
                            out, monkeypatch, capsys, "resnet34.pth")
    assert "layer1.2" in line or "unexpected" in line


def test_missing_checkpoint_file(tmp_path, out, monkeypatch, capsys):
    assert_bad_input(["train", "synthetic:n=60", "--weights", str(tmp_path / "w.safetensors"), "-q"],
                     out, monkeypatch, capsys, "w.safetensors")


def test_bad_option_values_are_all_reported(out, monkeypatch, capsys):
    line = assert_bad_input(["train", "synthetic:n=60", "--mode", "probe", "--lr", "-1", "-q"],
                            out, monkeypatch, capsys, "mode")
    assert "lr" in line


def test_finished_run_is_never_overwritten(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["train", "synthetic:n=80,size=16,groups=40", *FAST, "--mode", "frozen", "--cache-dir", str(tmp_path / "c")]
    code, stdout, stderr = run_cli([*args, "--out", str(out)], monkeypatch, capsys)
    assert code == 0, stderr
    before = (out / "metrics.json").read_bytes()
    code, _, stderr = run_cli([*args, "--out", str(out)], monkeypatch, capsys)
    assert code == 2 and "already holds a finished run" in stderr
    assert (out / "metrics.json").read_bytes() == before


def test_console_script_runs_as_a_process(tmp_path):
    npz = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 16), ("test", 16)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 16, 16), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
    np.savez(npz, **arrays)
    done = subprocess.run([sys.executable, "-m", "medtransfer", "inspect", str(npz)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "40" in done.stdout and "train" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "medtransfer", "inspect", str(tmp_path / "missing.npz")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing.npz" in bad.stderr


def test_backbones_lists_the_catalog(monkeypatch, capsys):
    """Each entry's family, input size, feature width with its pooling, licence, access and cache state, built on
    the meta device; then what each model is."""
    from medtransfer.models.backbone import meta_backbone
    from medtransfer.models.catalog import CATALOG

    code, stdout, _ = run_cli(["backbones"], monkeypatch, capsys)
    assert code == 0
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in stdout.splitlines() if line.startswith("│") and line.split("│")[1].strip()}
    for name, entry in CATALOG.items():
        meta = meta_backbone(name, None)
        family, size, features, _, access, weights = rows[name]
        assert (family, size, features) == (entry.family, str(meta.preprocess.size),
                                            f"{meta.num_features} ({meta.pooling})")
        assert access == ("gated" if entry.gated else "open") and weights == "not cached"  # the test cache is empty
        assert f"{name}: " in stdout and entry.note.split(" ")[0] in stdout


def test_truncated_image_decoded_in_a_worker_is_one_line(tmp_path, out, monkeypatch, capsys):
    """A file whose header parses but whose pixels are cut off fails inside a DataLoader worker process."""
    root = write_class_folder(tmp_path / "imgs", {"a": 10, "b": 10}, size=64)
    victim = root / "a" / "img_004.png"
    victim.write_bytes(victim.read_bytes()[:120])
    line = assert_bad_input(["train", str(root), *FAST, "--workers", "1", "--cache-dir", str(tmp_path / "c")],
                            out, monkeypatch, capsys, "img_004.png")
    assert "Original Traceback" not in line and "unreadable image" in line


def test_blank_group_ids_stop_the_run_before_training(tmp_path, out, monkeypatch, capsys):
    root = write_class_folder(tmp_path / "imgs", {"a": 12, "b": 12})
    rows = [f"{c}/img_{i:03d}.png,{c},{'' if i % 5 == 0 else f'p{c}{i // 2}'}" for c in "ab" for i in range(12)]
    csv = root / "m.csv"
    csv.write_text("path,label,patient\n" + "\n".join(rows) + "\n")
    trained = []
    monkeypatch.setattr("medtransfer.fitting.build_backbone", lambda *a, **k: trained.append(1))
    line = assert_bad_input(["train", str(csv), "--group-col", "patient", *FAST], out, monkeypatch, capsys,
                            "blank group id")
    assert "group column" in line and not trained  # refused at load, before any model exists


def test_a_class_too_rare_for_every_split_is_one_line(tmp_path, out, monkeypatch, capsys):
    root = write_class_folder(tmp_path / "imgs", {"a": 12, "b": 12, "rare": 2})
    line = assert_bad_input(["train", str(root), *FAST], out, monkeypatch, capsys, "'rare'")
    assert "--allow-missing-classes" in line


# --- --out is never someone else's, a run dir has one writer, and an interrupted run says so (exit 130/143) ---

CLI = str(Path(sys.executable).with_name("medtransfer"))  # the installed console script
TINY = "synthetic:n=60,size=16,groups=30"


def test_out_holding_the_users_files_is_refused_and_untouched(tmp_path, monkeypatch, capsys):
    out = tmp_path / "S"
    out.mkdir()
    (out / "thesis.txt").write_text("do not delete")
    trained = []
    monkeypatch.setattr("medtransfer.runner.load_table", lambda *a, **k: trained.append(1))
    code, _, stderr = run_cli(["train", TINY, *FAST, "--out", str(out)], monkeypatch, capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "already holds files" in stderr
    assert [p.name for p in out.iterdir()] == ["thesis.txt"] and (out / "thesis.txt").read_text() == "do not delete"
    assert not trained  # refused before any work
    code, _, stderr = run_cli(["train", TINY, *FAST, "--out", str(out / "thesis.txt")], monkeypatch, capsys)
    assert code == 2 and "is a file" in stderr and not trained


@pytest.mark.slow
def test_two_runs_into_the_same_out_at_once_one_wins_one_line_for_the_other(tmp_path):
    out = tmp_path / "run"
    args = [CLI, "train", TINY, *FAST, "--mode", "frozen", "--workers", "0", "--out", str(out)]
    procs = [subprocess.Popen([*args, "--cache-dir", str(tmp_path / f"cache{k}")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code == 2)
    assert len(loser.strip().splitlines()) == 1 and "Traceback" not in loser
    assert "being written by process" in loser or "already holds a finished run" in loser
    assert is_complete(out)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("cache")) == ["run"]


def test_a_held_lock_refuses_the_run_naming_the_holder(tmp_path):
    from filelock import FileLock

    from medtransfer.rundir import lock_path

    out = tmp_path / "run"
    lock = FileLock(lock_path(out), timeout=0)
    lock.acquire()
    lock_path(out).write_text(f"{os.getpid()}\n")
    try:
        done = subprocess.run([CLI, "train", TINY, *FAST, "--out", str(out)], capture_output=True, text=True,
                              timeout=300)
    finally:
        lock.release()
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and f"being written by process {os.getpid()}" in done.stderr
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "workers"), [(signal.SIGINT, 130, "0"), (signal.SIGTERM, 143, "1")])
def test_an_interrupted_finetune_exits_130_or_143_with_one_line_and_keeps_nothing(tmp_path, sig, code, workers):
    out = tmp_path / "runs" / "X"
    proc = subprocess.Popen([CLI, "train", "synthetic:n=200,size=32", "--mode", "finetune", "--backbone", "resnet18",
                             "--weights", "none", "--image-size", "32", "--epochs", "50", "--bootstrap", "100",
                             "--workers", workers, "--no-image-cache", "-q", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.parent.glob(".X.partial-*")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(4)  # well into loading and training
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and signal.Signals(sig).name in lines[0], stderr
    assert "nothing of it was kept" in lines[0]
    assert stdout == ""
    assert list(out.parent.iterdir()) == []  # no run dir, no staging folder, no lock file


def test_a_diverging_finetune_stops_with_the_epoch_the_last_loss_and_the_fix(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, stderr = run_cli(["train", "synthetic:n=80,size=16", "--backbone", "resnet18", "--weights", "none",
                               "--image-size", "32", "--epochs", "3", "--bootstrap", "100", "--mode", "finetune",
                               "--lr", "1e12", "--workers", "0", "-q", "--out", str(out)], monkeypatch, capsys)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr
    assert "epoch 1" in lines[0] and "diverged" in lines[0] and "lower --lr" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".run*"))


@pytest.mark.parametrize("argv", [["train", "--bogus", "x"], ["train"], ["nosuch"], ["report"]])
def test_usage_errors_are_one_line_and_exit_2(argv):
    result = subprocess.run([CLI, *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: medtransfer") and "--help" in lines[0]


# --- Results on stdout, progress and status on stderr ---

STUDY = """
name: two-heads
datasets: {syn: {data: "synthetic:n=60,size=16,groups=30"}}
backbones: [{name: resnet18, image_size: 32, weights: none}]
modes: {frozen: {heads: [linear, knn], epochs: 3}}
train: {bootstrap: 100, workers: 0, cache_dir: CACHE}
"""


def test_train_prints_its_table_and_path_on_stdout_and_its_epochs_on_stderr(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([CLI, "train", TINY, *[a for a in FAST if a != "-q"], "--mode", "frozen", "--workers", "0",
                           "--cache-dir", str(tmp_path / "c"), "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "95% CI" in done.stdout and "AUROC" in done.stdout and done.stdout.splitlines()[-1] == str(out)
    assert "epoch 1/2: train loss" in done.stderr and "best epoch" in done.stderr and "95% CI" not in done.stderr
    assert "\x1b" not in done.stdout + done.stderr  # piped: no colours, no bars, no cursor movement
    assert "best epoch" not in done.stdout


def test_run_ends_with_the_results_table_on_stdout(tmp_path, monkeypatch, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(STUDY.replace("CACHE", str(tmp_path / "cache")))
    code, stdout, stderr = run_cli(["run", str(study), "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 0, stderr
    table = stdout.split("test split")[1]
    assert "frozen + linear" in table and "frozen + knn" in table  # the report's names of the two setups
    assert "task" not in table.splitlines()[1]  # one task: no task column
    assert "2 run(s) in" in stdout and stdout.splitlines()[-1] == str(tmp_path / "out" / "report")
    assert "[1/2]" in stderr and "best epoch" in stderr and "best k" in stderr and "test split" not in stderr
    for run_dir in (tmp_path / "out" / "runs").iterdir():
        assert "best " in (run_dir / "train.log").read_text()


def test_quiet_run_prints_only_the_report_path(tmp_path, monkeypatch, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(STUDY.replace("CACHE", str(tmp_path / "cache")).replace("[linear, knn]", "[knn]"))
    code, stdout, stderr = run_cli(["run", str(study), "--out", str(tmp_path / "out"), "-q"], monkeypatch, capsys)
    assert code == 0, stderr
    assert (stdout, stderr) == (f"{tmp_path / 'out' / 'report'}\n", "")
