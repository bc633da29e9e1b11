"""Duplicate pairs of a table: exact copies by equal hashes, near copies within NEAR_THRESHOLD bits, and clusters.

The hash and threshold were chosen by measurement (docs/methods.md, `python -m bench dedup_cost`). Pairs inside
one patient group are not reported: the group keeps them in one split already, and a volume's neighbouring slices
would otherwise flood the record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medtransfer.data.duplicate_hashes import table_hashes
from medtransfer.data.table import SampleTable

NEAR_THRESHOLD = 6  # bits; copies measured at <= 4, distinct real images at >= 10 (docs/methods.md)


SEARCH_BLOCK = 128  # rows per block of the all-pairs Hamming search: 128 x 50k uint64 is 50 MB


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
