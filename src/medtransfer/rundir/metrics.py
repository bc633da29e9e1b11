"""A run's metrics file as a typed, versioned model: what its evaluation wrote, checked when it is read back.

The JSON keys are the outward contract (the design notes, shared/DESIGN.md): the model keeps them as they are, and
a record round-trips, `RunMetrics.model_validate(data).to_json() == data` (plus `schema_version`). A file without
`schema_version` was written before the schema was versioned and reads as version 0; its content is the same as
version 1's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medtransfer.config import PatientAggregation

# Bump when a key is added, changes meaning or goes away; readers refuse versions newer than theirs. Version 2 added
# the optional `external` and `subgroups` sections (a version-1 reader, which forbids unknown keys, would fail on them).
SCHEMA_VERSION = 2


class _Strict(BaseModel):
    # A misspelt or unknown key is an error, never silently dropped.
    model_config = ConfigDict(extra="forbid")


class Interval(_Strict):
    """A metric on the whole split and its 95% bootstrap interval (NaN where undefined)."""

    value: float
    low: float
    high: float


Metrics = dict[str, Interval]  # metric name (evaluation.metric_registry, recall_c<k> before per_class) -> interval


class ClassStats(_Strict):
    """One class in one split: its recall with CI (absent when the class has no samples there) and its count."""

    recall: Interval | None = None
    n: int


class Threshold(_Strict):
    """A binary task's operating point, fixed on val and applied to test."""

    value: float
    rule: str
    positive_class: str


class Bootstrap(_Strict):
    """How the intervals were drawn: resamples, level, unit resampled (patients or images) and seed."""

    n: int
    level: float
    unit: Literal["group", "sample"]
    seed: int


class PatientMetrics(_Strict):
    """The same metrics over patients: one pooled prediction per patient (its own val threshold)."""

    per_class: dict[str, dict[str, ClassStats]]
    val: Metrics
    test: Metrics
    threshold: Threshold | None = None
    n_val: int
    n_test: int
    aggregation: PatientAggregation  # the run's patient_agg


class ExternalPatients(_Strict):
    """An external set's metrics over its patients: one pooled prediction each, at the patient val threshold (the
    image one when the internal split has no patients)."""

    metrics: Metrics
    n: int
    aggregation: PatientAggregation


class ExternalMetrics(_Strict):
    """One external test set, scored whole: every metric with its CI, and the gap to the internal test split."""

    data: str
    n: int
    n_groups: int | None = None  # patients (groups) when the set has them; the bootstrap then resamples those
    classes_missing: list[str]  # training classes the set lacks (a recorded warning)
    counts: dict[str, int]
    metrics: Metrics
    per_class: dict[str, ClassStats]
    confusion: list[list[int]]
    bootstrap: Bootstrap  # the set's own resamples, independent of the internal test's
    patient: ExternalPatients | None = None
    gap: Metrics  # internal test minus external, the two sets bootstrapped independently
    gap_interval: str  # what the gap's interval covers


class WorstSubgroup(Interval):
    """The subgroup with the worst value of a metric, with that subgroup's own interval."""

    subgroup: str


class SubgroupGap(Interval):
    """The highest minus the lowest subgroup of a metric (the pair picked on the point values), with its interval."""

    highest: str
    lowest: str


class SubgroupStats(_Strict):
    """One subgroup: its images, its cases (patients or lesions where the data has them) and its metrics."""

    n: int
    n_cases: int
    metrics: Metrics


class SubgroupColumnMetrics(_Strict):
    """The subgroups of one metadata column on one split, from one joint bootstrap of the split."""

    bins: list[float] | None = None  # the bin edges of a numeric column
    min_cases: int
    unit: Literal["group", "sample"]
    split: str
    subgroups: dict[str, SubgroupStats]
    too_few: dict[str, int]  # subgroup -> cases, below min_cases: listed, not analysed
    worst: dict[str, WorstSubgroup]
    gap: dict[str, SubgroupGap]
    interval: str
    gap_interval: str


class RunMetrics(_Strict):
    """A run's metrics (METRICS_FILE). Fields are in the order the file has them; optional ones are absent, not null."""

    schema_version: int = Field(ge=0, le=SCHEMA_VERSION)
    per_class: dict[str, dict[str, ClassStats]] | None = None  # split -> class -> stats
    val: Metrics
    test: Metrics
    threshold: Threshold | None = None
    confusion: dict[str, list[list[int]]]  # split -> rows true class, columns predicted
    counts: dict[str, dict[str, int]] | None = None  # split (train too) -> class -> samples
    bootstrap: Bootstrap
    ordinal: bool | None = None
    patient: PatientMetrics | None = None  # runs whose samples have groups
    n_train: int
    n_val: int
    n_test: int
    classes: list[str] = Field(min_length=2)
    best_epoch: int  # a kNN probe's chosen k
    notes: list[str]
    # Open-ended records, whose keys vary with the mode, the caches and the data: kept as written.
    timing: dict[str, Any]
    duplicates: dict[str, Any] | None = None
    head_selection: dict[str, Any] | None = None  # a head sweep's or kNN's candidates and choice
    missing_classes: dict[str, list[str]] | None = None  # split -> classes without samples there
    external: dict[str, ExternalMetrics] | None = None  # external set name -> its record (version 2)
    subgroups: dict[str, SubgroupColumnMetrics] | None = None  # `subgroups` entry (COL or COL:EDGES) -> record

    @model_validator(mode="before")
    @classmethod
    def _unversioned(cls, data: Any) -> Any:
        """A record without `schema_version` was written before it existed: version 0."""
        if isinstance(data, dict) and "schema_version" not in data:
            return {"schema_version": 0, **data}
        return data

    @classmethod
    def build(cls, sections: dict[str, Any]) -> RunMetrics:
        """The record of a run just evaluated, at this version."""
        return cls.model_validate({**sections, "schema_version": SCHEMA_VERSION})

    def to_json(self) -> dict[str, Any]:
        """The record as the metrics file holds it: plain JSON types, absent sections left out (NaN stays NaN)."""
        return self.model_dump(mode="json", exclude_none=True)
