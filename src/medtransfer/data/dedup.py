"""The --dedup action on a table: warn (record only), group (a cluster is one unit of the carved splits) or drop."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from medtransfer.data.duplicate_record import EXAMPLES, Action, describe, split_labels
from medtransfer.data.duplicate_scan import DuplicateScan, components
from medtransfer.data.table import SampleTable

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
    splits = split_labels(frame)
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
        final = split_labels(frame)
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
