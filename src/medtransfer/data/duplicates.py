"""Exact and near-duplicate images across splits: hashes of the decoded pixels, candidate pairs, clusters, action.

Exact copies share an xxh3-64 hash of their decoded pixels (dtype, shape and bytes), so a PNG and a BMP of the same
pixels are one image, and two encodings that decode differently are not. Near copies (resized, re-encoded,
recompressed) are found by imagehash's DCT perceptual hash (64 bits): two images whose hashes differ in at most
NEAR_THRESHOLD bits are a pair. The hash and threshold were chosen by measurement (docs/methods.md, `python -m bench
dedup_cost`). Pairs inside one patient group are not reported: the group keeps them in one split already, and a
volume's neighbouring slices would otherwise flood the record.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import imagehash
import numpy as np
import pandas as pd
import scipy.fftpack  # noqa: F401  (phash imports it on first call: imported here, forked workers inherit it)
import xxhash
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medtransfer.data.table import SampleTable

HASH_VERSION = 1  # bump when the hashes change in a way the cache key cannot see
HASH_SIZE = 8  # imagehash's default: an 8x8 block of a 32x32 DCT, 64 bits
NEAR_THRESHOLD = 6  # bits; copies measured at <= 4, distinct real images at >= 10 (docs/methods.md)
HASH_CHUNK = 64  # rows per task of the hash pool
SEARCH_BLOCK = 128  # rows per block of the all-pairs Hamming search: 128 x 50k uint64 is 50 MB
SPLIT_ORDER = ("train", "val", "test", "unused", "pool", "dropped")
MAIN_SPANS = ("train-val", "train-test", "val-test", "within-split")
EXAMPLES = 5
Action = Literal["warn", "group", "drop"]


def pixel_hashes(pixels: np.ndarray) -> tuple[int, int]:
    """(exact, perceptual) 64-bit hashes of one image's decoded uint8 pixels."""
    pixels = np.ascontiguousarray(pixels)
    exact = xxhash.xxh3_64(f"{pixels.dtype.str}{pixels.shape}".encode())
    exact.update(pixels.data)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    image = Image.fromarray(pixels)
    grey = image if image.mode == "L" else image.convert("L")
    # phash shrinks to 32x32 itself; doing it here with PIL's reducing gap (integer box reduction first) costs a
    # third as much on a 600x450 photo and measured as stable under resizing (docs/methods.md).
    side = HASH_SIZE * 4
    small = grey.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    bits = imagehash.phash(small, hash_size=HASH_SIZE).hash.reshape(-1)
    return exact.intdigest(), int.from_bytes(np.packbits(bits).tobytes(), "big")


_TABLE: SampleTable | None = None  # the table a hash worker reads, set once per worker process


def _init_worker(table: SampleTable | None) -> None:
    global _TABLE
    _TABLE = table


def _hash_rows(rows: range) -> list[tuple[int, int, int]]:
    assert _TABLE is not None
    return [(row, *pixel_hashes(_TABLE.pixels(row))) for row in rows]


def hash_workers(workers: int | None) -> int:
    """Processes for the hash pass: every core (nothing else runs then), unless --workers 0 asks for none."""
    if workers == 0:
        return 0
    return max(workers or 0, min(8, os.cpu_count() or 1))


def compute_hashes(table: SampleTable, workers: int, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """(N, 2) uint64: each row's exact and perceptual hash, decoded in `workers` processes."""
    out = np.zeros((len(table), 2), dtype=np.uint64)
    chunks = [range(k, min(k + HASH_CHUNK, len(table))) for k in range(0, len(table), HASH_CHUNK)]
    # A plain process pool, not a torch DataLoader: `inspect` never imports torch (seconds) just to hash.
    # Starting workers costs a moment: a small table is faster hashed in this process.
    if workers and len(table) >= 4 * HASH_CHUNK:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)  # fork: the table is inherited
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(table,)) as pool:
            for rows in pool.map(_hash_rows, chunks):
                _store(out, rows, progress)
        return out
    _init_worker(table)
    try:
        for chunk in chunks:
            _store(out, _hash_rows(chunk), progress)
    finally:
        _init_worker(None)  # hold no reference to the table beyond the pass
    return out


def _store(out: np.ndarray, rows: list[tuple[int, int, int]], progress: Callable[[int], None] | None) -> None:
    for row, exact, near in rows:
        out[row] = (exact, near)
    if progress:
        progress(len(rows))


def hash_key(table: SampleTable) -> dict:
    """The hash cache entry of a table: its data and sample order, and the hash definition."""
    from medtransfer.engine.cache import samples_key

    return {"version": HASH_VERSION, "exact": "xxh3_64(dtype, shape, pixels)", "near": f"phash{HASH_SIZE}",
            **samples_key(table)}


def table_hashes(table: SampleTable, root: Path | None, workers: int,
                 progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, bool]:
    """The table's hashes, from the cache under `root`/hashes (filled when absent); and whether it was a hit."""
    if root is None:
        return compute_hashes(table, workers, progress), False
    from medtransfer.engine.cache import ArrayCache

    cache, key = ArrayCache(Path(root) / "hashes", "hashes"), hash_key(table)
    hit = cache.load(key)
    if hit is not None:
        return np.asarray(hit), True
    hashes = compute_hashes(table, workers, progress)
    cache.store(key, hashes)
    return hashes, False


def exact_pairs(exact: np.ndarray) -> np.ndarray:
    """(P, 2) row pairs i < j with equal hashes: every pair within each group of equal values."""
    order = np.argsort(exact, kind="stable")
    values = exact[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    sizes = np.diff(np.r_[starts, len(values)])
    pairs = [np.empty((0, 2), dtype=np.int64)]
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
        rows = np.sort(order[start:start + size])
        i, j = np.triu_indices(size, 1)
        pairs.append(np.stack([rows[i], rows[j]], axis=1))
    return np.concatenate(pairs)


def near_pairs(codes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, 2) index pairs i < j whose 64-bit codes differ in at most `threshold` bits, and their distances.

    All pairs, by XOR and popcount of blocks of rows against the rest, the blocks on threads (numpy lets go of the
    GIL): exact (a banded index would need 7 bands at this threshold, each too coarse to prune much), memory-bounded,
    and measured at about 5 s for 50k images on 2 cores (1.25e9 comparisons), small beside decoding them.
    """
    codes = np.asarray(codes, dtype=np.uint64)

    def block(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        distance = np.bitwise_count(codes[start:start + SEARCH_BLOCK, None] ^ codes[None, start:])
        ii, jj = np.nonzero(distance <= threshold)
        keep = jj > ii  # the block against itself: upper triangle only
        return ii[keep] + start, jj[keep] + start, distance[ii[keep], jj[keep]]

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        found = list(pool.map(block, range(0, len(codes), SEARCH_BLOCK)))
    if not found:
        return np.empty((0, 2), dtype=np.int64), np.empty(0, dtype=np.int64)
    i, j, d = (np.concatenate(parts) for parts in zip(*found))
    return np.stack([i, j], axis=1).astype(np.int64), d.astype(np.int64)


@dataclass
class DuplicateScan:
    """The duplicate pairs of a table (row positions into it), their clusters, and how the hashes were had."""

    sample_ids: np.ndarray
    exact: np.ndarray  # (P, 2)
    near: np.ndarray  # (Q, 2), pairs that are not exact copies
    near_distance: np.ndarray  # (Q,)
    threshold: int = NEAR_THRESHOLD
    seconds: float = 0.0
    cache_hit: bool = False

    @property
    def pairs(self) -> np.ndarray:
        """Every pair, exact first."""
        return np.concatenate([self.exact, self.near])

    def clusters(self) -> np.ndarray:
        """Each row's connected component over all pairs (a row without a pair is its own)."""
        return components(len(self.sample_ids), self.pairs)


def components(n: int, edges: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n nodes under the given (E, 2) edges."""
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _other_group(frame: pd.DataFrame, pairs: np.ndarray) -> np.ndarray:
    """Which pairs are not inside one patient group (rows without a group are never inside one)."""
    group = frame["group"].to_numpy()
    a, b = group[pairs[:, 0]], group[pairs[:, 1]]
    same = pd.notna(a) & pd.notna(b) & (a == b)
    return ~np.asarray(same, dtype=bool)


def scan_table(table: SampleTable, root: Path | None, workers: int, threshold: int = NEAR_THRESHOLD,
               progress: Callable[[int], None] | None = None) -> DuplicateScan:
    """Hash every image (cached under `root`) and find the exact and near pairs between different groups."""
    start = time.perf_counter()
    hashes, hit = table_hashes(table, root, workers, progress)
    exact = exact_pairs(hashes[:, 0])
    # Near pairs among one representative per exact value: identical images have identical perceptual hashes, so a
    # large set of copies (blank frames …) would otherwise fill the search with pairs already known.
    _, first, inverse = np.unique(hashes[:, 0], return_index=True, return_inverse=True)
    rep_pairs, rep_distance = near_pairs(hashes[first, 1], threshold)
    members = pd.Series(np.arange(len(table))).groupby(inverse).agg(list)
    near, distance = [], []
    for (a, b), d in zip(rep_pairs, rep_distance):
        for i in members[a]:
            for j in members[b]:
                near.append((min(i, j), max(i, j)))
                distance.append(d)
    near_arr = np.asarray(near, dtype=np.int64).reshape(-1, 2)
    frame = table.frame
    keep_exact, keep_near = _other_group(frame, exact), _other_group(frame, near_arr)
    return DuplicateScan(frame["sample_id"].astype(str).to_numpy(), exact[keep_exact], near_arr[keep_near],
                         np.asarray(distance, dtype=np.int64)[keep_near], threshold,
                         round(time.perf_counter() - start, 3), hit)


def _split_labels(frame: pd.DataFrame) -> np.ndarray:
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
                "--dedup group (carved splits) or --dedup drop removes them (recorded as duplicates in metrics.json)")
    if record["action"] != "warn" and record.get("effect"):
        text += f"; --dedup {record['action']}: {record['effect']}"
    return text


def _sum_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    """Key-wise sum of two count dicts, keys in first-seen order."""
    return {k: a.get(k, 0) + b.get(k, 0) for k in dict.fromkeys([*a, *b])}


def _carved(frame: pd.DataFrame) -> bool:
    """Whether any split will be carved here (some of train/val/test are not predefined)."""
    return not {"train", "val", "test"} <= set(frame["split"].dropna())


def group_duplicates(table: SampleTable, scan: DuplicateScan) -> SampleTable:
    """The table with a `split_group` column: patient groups merged with every duplicate cluster that links them.

    A cluster spanning two patients merges them: either the ids are wrong or the patients share images; only one
    unit for both keeps every copy on one side of every carved split.
    """
    frame = table.frame.copy()
    n = len(frame)
    keys = pd.factorize(frame["group"].where(frame["group"].notna(), "sample:" + frame["sample_id"].astype(str)))[0]
    first = pd.Series(np.arange(n)).groupby(keys).transform("first").to_numpy()
    edges = np.concatenate([scan.pairs, np.stack([np.arange(n), first], axis=1)])
    frame["split_group"] = [f"cluster:{c}" for c in components(n, edges)]
    return replace(table, frame=frame, notes=list(table.notes))


def drop_duplicates(table: SampleTable, scan: DuplicateScan) -> tuple[SampleTable, dict[str, int], list[str]]:
    """Keep one image of each cluster: its train copy when the split is predefined, else the first in table order.

    So the copies dropped from a predefined val or test are those that repeat an image seen in training.
    Returns the smaller table, how many were dropped per split (pool: not yet split) and their sample ids.
    """
    frame = table.frame
    splits = _split_labels(frame)
    rank = np.array([{"train": 0, "pool": 0, "val": 1, "test": 2}.get(s, 3) for s in splits])
    cluster = scan.clusters()
    order = np.lexsort((np.arange(len(frame)), rank, cluster))  # per cluster: best split, then table order
    kept = np.zeros(len(frame), dtype=bool)
    kept[order[np.r_[True, cluster[order][1:] != cluster[order][:-1]]]] = True
    gone = np.flatnonzero(~kept)
    dropped = {s: int((splits[gone] == s).sum()) for s in dict.fromkeys(splits[gone])}
    ids = frame["sample_id"].astype(str).to_numpy()[gone].tolist()
    smaller = replace(table, frame=frame.loc[kept].copy(), notes=list(table.notes))
    return smaller, dropped, ids


@dataclass
class Deduplicated:
    """A table after the --dedup action, and what to record once the splits are known."""

    table: SampleTable
    scan: DuplicateScan
    action: Action
    effect: str
    dropped: dict[str, int] | None = None
    dropped_ids: list[str] = field(default_factory=list)

    def record(self, frame: pd.DataFrame) -> dict:
        """The metrics.json record, with the pairs counted by the final splits (dropped copies as `dropped`)."""
        position = {sid: k for k, sid in enumerate(frame["sample_id"].astype(str))}
        final = _split_labels(frame)
        splits = np.array([final[position[s]] if s in position else "dropped" for s in self.scan.sample_ids])
        record = describe(self.scan, splits, self.action, self.effect, self.dropped)
        if self.dropped_ids:
            record["dropped_examples"] = self.dropped_ids[:EXAMPLES]
        return record


def apply_dedup(table: SampleTable, scan: DuplicateScan, action: Action) -> Deduplicated:
    """Carry out --dedup: warn (nothing changes), group (clusters kept together where splits are carved) or drop."""
    if action == "warn" or not len(scan.pairs):
        return Deduplicated(table, scan, action, "none: recorded only" if len(scan.pairs) else "none: no pairs")
    if action == "group":
        if not _carved(table.frame):
            return Deduplicated(table, scan, action, "none: every split is predefined, so no split is carved; the "
                                "pairs across them are reported (use --dedup drop to remove the copies from val/test)")
        return Deduplicated(group_duplicates(table, scan), scan, action,
                            "each cluster is one group in the carved splits (merged with its patients' groups)")
    smaller, dropped, ids = drop_duplicates(table, scan)
    return Deduplicated(smaller, scan, action, f"dropped {len(ids)} copies, keeping one image per cluster "
                        "(the train copy where the split is predefined)", dropped, ids)


def inspect_duplicates(table: SampleTable, cache_dir: str | None) -> dict:
    """The `duplicates` record of a table as loaded (splits not yet carved are the pool), for `inspect`."""
    from medtransfer.engine.cache import cache_root

    scan = scan_table(table, cache_root(cache_dir), hash_workers(None))
    return describe(scan, _split_labels(table.frame))


def duplicate_problem(record: dict) -> str:
    """What `inspect` lists as the problem: leakage across predefined splits, or copies carving may separate."""
    across = record["across_splits"]
    total = record["exact_pairs"] + record["near_pairs"]
    if across:
        return (f"{across} duplicate pair(s) span predefined splits: metrics would be inflated; `train --dedup drop` "
                "drops the val/test copies of training images")
    return (f"{total} duplicate pair(s) among the images: carved splits may put copies on both sides; "
            "`train --dedup group` keeps each cluster in one split, `--dedup drop` keeps one copy")
