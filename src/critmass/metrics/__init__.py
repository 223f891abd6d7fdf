"""Diffused redundancy, critical mass, Pareto frontiers and per-class consequences of probe results.

Inputs are the tidy tables the probe stage writes (``results.parquet``, ``per_class.parquet``).
"""

from ._common import read_many, read_results
from ._dr import dr, dr_curve, duplicate_sizes
from ._pareto import pareto_frontier
from ._perclass import class_drops, gini, per_class_summary
from ._table import dr_table, format_table

__all__ = [
    "read_results",
    "read_many",
    "duplicate_sizes",
    "dr",
    "dr_curve",
    "dr_table",
    "format_table",
    "pareto_frontier",
    "class_drops",
    "per_class_summary",
    "gini",
]
