"""The `duplicates` record of metrics.json and `inspect`: pairs counted per span of splits, examples, log lines."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtransfer.data.dedup_action import Action
from medtransfer.data.duplicate_hashes import HASH_SIZE, hash_workers
from medtransfer.data.duplicate_scan import DuplicateScan, scan_table
from medtransfer.data.table import SampleTable
from medtransfer.rundir.files import METRICS_FILE

SPLIT_ORDER = ("train", "val", "test", "unused", "pool", "dropped")
MAIN_SPANS = ("train-val", "train-test", "val-test", "within-split")
EXAMPLES = 5


def split_labels(frame: pd.DataFrame) -> np.ndarray:
    """Each row's split, with rows not yet split called the pool."""
    return frame["split"].where(frame["split"].notna(), "pool").astype(str).to_numpy()


def _span(a: str, b: str) -> str:
    if a == b:  # pairs in the pool (splits not carved yet) or both dropped are not inside a split
        return "within-split" if a in ("train", "val", "test", "unused") else f"within-{a}"
    rank = {name: k for k, name in enumerate(SPLIT_ORDER)}
    first, second = sorted((a, b), key=lambda s: (rank.get(s, len(rank)), s))
    return f"{first}-{second}"


def count_spans(pairs: np.ndarray, splits: np.ndarray) -> dict[str, int]:
    """Pairs per span of splits: train-val, train-test, val-test, within-split, and any other that occurs."""
    counts = dict.fromkeys(MAIN_SPANS, 0)
    for a, b in pairs:
        span = _span(splits[a], splits[b])
        counts[span] = counts.get(span, 0) + 1
    return counts


def _across(counts: dict[str, int]) -> int:
    """Pairs whose two images sit in two different evaluation-relevant splits (not the pool, not dropped)."""
    real = {"train", "val", "test"}
    return sum(n for span, n in counts.items() if set(span.split("-")) <= real)


def _examples(scan: DuplicateScan, splits: np.ndarray) -> list[dict]:
    """A few pairs to look at, those spanning two splits first."""
    rows = [("exact", pair, 0) for pair in scan.exact] + [("near", pair, int(d)) for pair, d in
                                                            zip(scan.near, scan.near_distance)]
    rows.sort(key=lambda r: (_span(splits[r[1][0]], splits[r[1][1]]).startswith("within-"), r[0] != "exact"))
    return [{"kind": kind, "a": str(scan.sample_ids[a]), "b": str(scan.sample_ids[b]),
             "splits": _span(splits[a], splits[b]), "distance": d} for kind, (a, b), d in rows[:EXAMPLES]]


def describe(scan: DuplicateScan, splits: np.ndarray, action: Action = "warn", effect: str = "",
             dropped: dict[str, int] | None = None) -> dict:
    """The `duplicates` record of metrics.json (and of `inspect`): method, counts per span, examples, action."""
    exact, near = count_spans(scan.exact, splits), count_spans(scan.near, splits)
    record = {"method": {"exact": "xxh3-64 of the decoded pixels (dtype, shape, bytes)",
                         "near": f"imagehash.phash, {HASH_SIZE * HASH_SIZE} bits, Hamming distance <= threshold",
                         "pairs_within_a_group": "not counted (the group already keeps them in one split)"},
              "threshold": scan.threshold, "exact_pairs": int(len(scan.exact)), "near_pairs": int(len(scan.near)),
              "exact": exact, "near": near, "across_splits": _across(exact) + _across(near),
              "clusters": int(sum(np.bincount(scan.clusters()) > 1)) if len(scan.pairs) else 0,
              "examples": _examples(scan, splits), "action": action,
              "cache_hit": scan.cache_hit}
    if effect:
        record["effect"] = effect
    if dropped is not None:
        record["dropped"] = dropped
    return record


def summary_line(record: dict) -> str:
    """One line for the log and `inspect`: counts, spans and an example."""
    spans = {k: v for k, v in _sum_counts(record["exact"], record["near"]).items() if v}
    text = (f"{record['exact_pairs']} exact and {record['near_pairs']} near-duplicate pair(s) (perceptual hash within "
            f"{record['threshold']} bits)")
    if spans:
        text += ": " + ", ".join(f"{k} {v}" for k, v in spans.items())
    if record["examples"]:
        e = record["examples"][0]
        text += f"; e.g. {e['a']!r} ~ {e['b']!r} ({e['kind']}, {e['splits']})"
    return text


def log_line(record: dict) -> str:
    """The run's log line: a warning when pairs span two splits and nothing removed them, else a note."""
    text = f"duplicates: {summary_line(record)}"
    if record["across_splits"] and record["action"] == "warn":
        return (f"warning: {text}. Pairs across splits leak test images into training and inflate the metrics: "
                f"--dedup group (carved splits) or --dedup drop removes them (recorded as duplicates in {METRICS_FILE})")
    if record["action"] != "warn" and record.get("effect"):
        text += f"; --dedup {record['action']}: {record['effect']}"
    return text


def _sum_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Key-wise sum of two count dicts, keys in first-seen order."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in dict.fromkeys([*a, *b])}


def inspect_duplicates(table: SampleTable, cache_dir: str | None) -> dict:
    """The `duplicates` record of a table as loaded (splits not yet carved are the pool), for `inspect`."""
    from medtransfer.engine.cache import cache_root

    scan = scan_table(table, cache_root(cache_dir), hash_workers(None))
    return describe(scan, split_labels(table.frame))


def duplicate_problem(record: dict) -> str:
    """What `inspect` lists as the problem: leakage across predefined splits, or copies carving may separate."""
    across = record["across_splits"]
    total = record["exact_pairs"] + record["near_pairs"]
    if across:
        return (f"{across} duplicate pair(s) span predefined splits: metrics would be inflated; `train --dedup drop` "
                "drops the val/test copies of training images")
    return (f"{total} duplicate pair(s) among the images: carved splits may put copies on both sides; "
            "`train --dedup group` keeps each cluster in one split, `--dedup drop` keeps one copy")
