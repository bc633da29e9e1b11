"""The report stage: collect finished runs, aggregate seeds, compare setups, write tables, figures and HTML."""

from medtransfer.report.aggregate import aggregate_seeds, pairwise_comparisons, t_interval
from medtransfer.report.build import build_report
from medtransfer.report.collect import RunIndex, collect_runs

__all__ = ["RunIndex", "aggregate_seeds", "build_report", "collect_runs", "pairwise_comparisons", "t_interval"]
