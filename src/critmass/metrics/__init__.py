"""Diffused redundancy, critical mass, the gap to random, Pareto frontiers and per-class consequences of probes.

Inputs are the tidy tables the probe stage writes (``results.parquet``, ``per_class.parquet``). Besides the
measures, the table checks and keys the report and the CLI share are public here (``check_table``,
``group_keys``, ``check_delta``, ...), so every stage reads a probe table by the same rules.
"""

from ._common import (
    ACC_TOL,
    FULL_SELECTOR,
    GROUP_KEYS,
    OPTIONAL_KEYS,
    REQUIRED_PER_CLASS_COLUMNS,
    REQUIRED_RESULT_COLUMNS,
    check_delta,
    check_n_boot,
    check_selectors,
    check_table,
    class_label,
    group_keys,
    read_many,
    read_results,
)
from ._bytes import BYTES_METRICS, bytes_frontier, bytes_points, critical_bytes, default_bytes_metric, solver_metrics
from ._dr import check_select_on, dr, dr_curve, duplicate_sizes
from ._gap import (
    GAP_BASELINE,
    critical_mass_table,
    diffuseness,
    gap_table,
    join_diffuseness,
    selector_critical_mass,
    selector_gap,
    selector_kinds,
)
from ._neurons import chance_jaccard, neuron_overlap, neuron_stability, top_neurons
from ._pareto import pareto_frontier
from ._perclass import class_drops, gini, per_class_summary
from ._table import dr_table, dr_table_rows, format_table, table_layout, table_notes

__all__ = [
    # recall against bytes per vector (codecs)
    "BYTES_METRICS", "bytes_frontier", "bytes_points", "critical_bytes", "default_bytes_metric", "solver_metrics",
    "read_results",
    "read_many",
    "duplicate_sizes",
    "dr",
    "dr_curve",
    "dr_table",
    "dr_table_rows",
    "table_layout",
    "table_notes",
    "format_table",
    "pareto_frontier",
    # which neurons a ranking picks, and whether resamples and other datasets pick the same
    "top_neurons",
    "neuron_stability",
    "neuron_overlap",
    "chance_jaccard",
    # the gap to random: chosen minus random accuracy, critical mass per selector, diffuseness
    "selector_gap",
    "selector_critical_mass",
    "diffuseness",
    "join_diffuseness",
    "selector_kinds",
    "gap_table",
    "critical_mass_table",
    "GAP_BASELINE",
    "class_drops",
    "per_class_summary",
    "gini",
    # table checks and keys shared with report, profile and the CLI
    "check_table",
    "check_delta",
    "check_n_boot",
    "check_selectors",
    "check_select_on",
    "group_keys",
    "class_label",
    "GROUP_KEYS",
    "OPTIONAL_KEYS",
    "FULL_SELECTOR",
    "REQUIRED_RESULT_COLUMNS",
    "REQUIRED_PER_CLASS_COLUMNS",
    "ACC_TOL",
]
