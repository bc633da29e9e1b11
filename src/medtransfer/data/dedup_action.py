"""The --dedup choices, declared once for TrainConfig's `dedup` and the data layer (data/dedup.py).

A module of its own, without imaging or hashing code, so that config can import it (duplicate_record.py imports
the hashers and the run directory, which imports config)."""

from __future__ import annotations

from typing import Literal

# warn: record only; group: a duplicate cluster is one unit of the carved splits; drop: keep one copy of a cluster
Action = Literal["warn", "group", "drop"]
