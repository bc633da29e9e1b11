"""`--executor ray` against a real local Ray head: same metrics as local; a killed worker's run is retried."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from medtransfer.provenance import command_line
from medtransfer.rundir import RunDir

# Keep every Ray connection on loopback: by default Ray swaps 127.0.0.1 for the machine's network address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'medtransfer[ray]'")

from medtransfer.study.run import run_study  # noqa: E402

pytestmark = pytest.mark.slow

STUDY = """
name: raytest
datasets:
  syn: {{data: "synthetic:n=96,size=24,groups=48,classes=2"}}
backbones:
  - {{name: resnet18, image_size: 32, weights: none}}
modes:
  frozen: {{heads: [linear], epochs: 5}}
  finetune: {{epochs: {epochs}, batch_size: 16, lr: 0.001}}
seeds: [0, 1]
train: {{bootstrap: 200, workers: 0, cache_dir: {cache}, device: cpu}}
resources: {{num_cpus: 1, max_retries: 3}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A local Ray head started and stopped by the test (CI has no Ray service of its own)."""
    ray_bin = Path(sys.executable).with_name("ray")
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    temp = tmp_path_factory.mktemp("ray")
    subprocess.run([str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    "--node-ip-address=127.0.0.1",
                    f"--temp-dir={temp}", "--disable-usage-stats"], check=True, env=env, capture_output=True)
    yield f"127.0.0.1:{port}"  # loopback only
    subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True)


def metrics_by_label(outcome) -> dict[str, dict]:
    found = {}
    for spec in outcome.specs:
        data = json.loads((Path(spec.config.out) / "metrics.json").read_text())
        found[spec.label] = {"test": data["test"], "val": data["val"]}
    return found


def test_ray_executor_matches_local(tmp_path, ray_head):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.format(epochs=1, cache=tmp_path / "cache"))
    # Ray gives a 1-CPU task one thread; float reductions depend on the thread count, so match it here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_study(study, tmp_path / "local")
    finally:
        torch.set_num_threads(threads)
    remote = run_study(study, tmp_path / "ray", executor="ray", address=ray_head)
    assert remote.ran == local.ran == 4
    a, b = metrics_by_label(local), metrics_by_label(remote)
    assert a.keys() == b.keys()
    for label in a:
        for split in ("test", "val"):
            for metric, entry in a[label][split].items():
                assert b[label][split][metric] == pytest.approx(entry, abs=1e-6, nan_ok=True), (label, split, metric)
    # A Ray worker's argv is Ray's own: each run records the driver's command line.
    for spec in remote.specs:
        assert RunDir(spec.config.out).environment()["command"] == command_line()


def test_killed_worker_is_retried_and_the_study_completes(tmp_path, ray_head):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY.format(epochs=6, cache=tmp_path / "cache"))
    killed: list[int] = []

    def kill_a_running_task() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
            for line in ps.splitlines():
                if "ray::_run_one" in line:
                    pid = int(line.split()[0])
                    time.sleep(3)  # let the run get going
                    try:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                    except ProcessLookupError:
                        continue
                    return
            time.sleep(0.3)

    killer = threading.Thread(target=kill_a_running_task, daemon=True)
    killer.start()
    outcome = run_study(study, tmp_path / "out", executor="ray", address=ray_head)
    killer.join(timeout=5)
    assert killed, "no running Ray task was found to kill"
    assert outcome.ran == 4
    assert all((Path(s.config.out) / "DONE").is_file() for s in outcome.specs)
    assert not list((tmp_path / "out" / "runs").glob(".*partial*"))
