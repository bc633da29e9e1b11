"""Smoke versions of the benchmarks (tiny sizes, nothing measured) so they cannot rot; `make bench` measures."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    """Every benchmark once at smoke size, through the same entry point as `make bench`."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "medtransfer benchmarks" in done.stdout and str(out) in done.stdout
    return json.loads(out.read_text())


def _positive(*values: float) -> bool:
    return all(math.isfinite(v) and v > 0 for v in values)


def test_the_result_file_names_the_machine_and_every_benchmark(smoke):
    from bench.__main__ import BENCHMARKS

    assert smoke["smoke"] is True and smoke["machine"]["cores"] >= 1
    assert sorted(smoke["results"]) == sorted(BENCHMARKS)
    for result in smoke["results"].values():
        for side in result.get("seconds", {}).values():
            assert side and _positive(*side)  # every side was really timed


def test_frozen_speedup_reports_ratio_ideal_and_both_aurocs(smoke):
    r = smoke["results"]["frozen_speedup"]
    n = r["n_train"] + r["n_val"] + r["n_test"]
    assert r["ideal_ratio"] == pytest.approx(r["epochs"] * (r["n_train"] + r["n_val"]) / n)
    assert _positive(r["ratio"]) and 0 <= r["auroc_project"] <= 1 and 0 <= r["auroc_seed"] <= 1


def test_throughput_and_efficiency_are_ratios_of_measured_rates(smoke):
    p, f = smoke["results"]["pipeline_efficiency"], smoke["results"]["finetune_throughput"]
    rates = p["images_per_second"]
    assert p["efficiency_image_cache"] == pytest.approx(rates["project, image cache"] / rates["raw model(x)"])
    assert f["ratio"] == pytest.approx(f["images_per_second"]["project"] / f["images_per_second"]["plain loop"])


def test_memory_scaling_measured_two_sizes_in_fresh_processes(smoke):
    r = smoke["results"]["memory_scaling"]
    assert r["large"]["n"] == 10 * r["small"]["n"]
    assert r["small"]["peak_rss_anon_kb"] >= r["small"]["rss_anon_before_kb"] > 0


def test_head_sweep_and_grid_estimate(smoke):
    sweep, grid = smoke["results"]["head_sweep"], smoke["results"]["grid_estimate"]
    assert sweep["heads"] == 16 and _positive(sweep["ratio"])
    assert grid["runs"] > 0 and grid["total_s"] == pytest.approx(grid["frozen_s"] + grid["finetune_s"])
    assert grid["finetune_s"] > grid["frozen_s"] > 0  # E epochs of training cost more than one extraction


def test_dedup_cost_times_both_sides_and_the_hash_pass(smoke):
    r = smoke["results"]["dedup_cost"]
    assert _positive(*r["median_s"].values(), r["hash_seconds"], r["hash_share_in_run"])
    assert r["added_fraction"] == pytest.approx(r["median_s"]["with hash pass"] / r["median_s"]["without hash pass"] - 1)
    assert r["n"] > 0 and r["pairs_found"]["exact"] >= 0
