"""`make bench` / `python -m bench`: run the benchmarks, write bench/results/<date>-<device>.json, print a table."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import device_label, machine

BENCHMARKS = ("frozen_speedup", "pipeline_efficiency", "finetune_throughput", "memory_scaling", "head_sweep",
              "bootstrap_speed", "grid_estimate", "dedup_cost")
RESULTS = Path(__file__).resolve().parent / "results"


def _frozen(r: dict) -> tuple[str, bool]:
    ok = r["ratio_of_ideal"] >= 0.9 and r["auroc_difference"] <= 0.02
    return (f"{r['ratio']:.1f}x (ideal {r['ideal_ratio']:.1f}x, {r['ratio_of_ideal']:.2f} of ideal); AUROC "
            f"{r['auroc_project']:.3f} vs {r['auroc_seed']:.3f}", ok)


def _pipeline(r: dict) -> tuple[str, bool]:
    return (f"image cache {r['efficiency_image_cache']:.2f}, PNG files {r['efficiency_files']:.2f} "
            f"(raw {r['images_per_second']['raw model(x)']:.0f} img/s)", r["efficiency_image_cache"] >= 0.9)


def _finetune(r: dict) -> tuple[str, bool]:
    rates = r["images_per_second"]
    return f"{r['ratio']:.3f} ({rates['project']:.0f} vs {rates['plain loop']:.0f} img/s)", r["ratio"] >= 0.95


def _memory(r: dict) -> tuple[str, bool]:
    return (f"{r['ratio']:.2f} ({r['small']['peak_rss_anon_kb'] / 1024:.0f} MiB at {r['small']['n']}, "
            f"{r['large']['peak_rss_anon_kb'] / 1024:.0f} MiB at {r['large']['n']})", r["ratio"] <= 1.2)


def _sweep(r: dict) -> tuple[str, bool]:
    med = r["median_s"]
    return (f"linear {r['ratio']:.2f} ({med['16-head sweep']:.2f} s for {r['heads']} heads, {med['one head']:.2f} s "
            f"for one); mlp {r['mlp']['ratio']:.1f}", r["ratio"] < 2.0)


def _bootstrap(r: dict) -> tuple[str, bool]:
    return f"{r['speedup']:.0f}x ({r['ms_per_resample']['vectorised']:.3f} ms per resample)", r["speedup"] > 1


def _grid(r: dict) -> tuple[str, bool]:
    return (f"{r['total_hours']:.0f} h for {r['runs']} runs: finetune {r['finetune_s'] / 3600:.0f} h, frozen "
            f"{r['frozen_s'] / 3600:.1f} h (seed's way {r['frozen_seed_method_s'] / 3600:.0f} h)", True)


def _dedup(r: dict) -> tuple[str, bool]:
    return (f"{r['added_fraction']:+.1%} wall (A/B); hash pass {r['hash_seconds']:.0f} s = {r['hash_share_in_run']:.1%} "
            f"of the rest of the run ({r['n']} images, {r['backbone']} {r['image_size']} px)",
            r["hash_share_in_run"] < 0.10)


HEADLINES: dict[str, tuple[Callable[[dict], tuple[str, bool]], str]] = {
    "frozen_speedup": (_frozen, ">= 0.9 of ideal, AUROC within 0.02"),
    "pipeline_efficiency": (_pipeline, ">= 0.9 from the image cache"),
    "finetune_throughput": (_finetune, ">= 0.95"),
    "memory_scaling": (_memory, "<= 1.2"),
    "head_sweep": (_sweep, "< 2"),
    "bootstrap_speed": (_bootstrap, "faster"),
    "grid_estimate": (_grid, "(projection)"),
    "dedup_cost": (_dedup, "< 10% of a frozen first pass"),
}


def run_all(names: list[str], smoke: bool) -> dict:
    """Run the named benchmarks in order; each result carries its wall time."""
    results = {}
    for name in names:
        start = time.perf_counter()
        result = importlib.import_module(f"bench.{name}").run(smoke=smoke)
        results[name] = result | {"bench_seconds": round(time.perf_counter() - start, 1)}
    return results


def print_table(results: dict, console: Console) -> None:
    """One row per benchmark: the headline figure, the target and whether it was met."""
    table = Table(title="medtransfer benchmarks")
    for column in ("benchmark", "result", "target", "met", "s"):
        table.add_column(column)
    for name, result in results.items():
        headline, target = HEADLINES[name]
        text, ok = headline(result)
        table.add_row(name, text, target, "yes" if ok else "NO", f"{result['bench_seconds']:.0f}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, of {', '.join(BENCHMARKS)} [all]")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmarks run, measures nothing")
    parser.add_argument("--out", type=Path, help="result file [bench/results/<date>-<device>.json]")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = list(args.names) or list(BENCHMARKS)
    results = run_all(names, args.smoke)
    out = args.out or RESULTS / f"{dt.date.today().isoformat()}-{device_label()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(), "smoke": args.smoke,
               "results": results}
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    tmp.replace(out)
    print_table(results, Console())
    print(out)


if __name__ == "__main__":
    main()
