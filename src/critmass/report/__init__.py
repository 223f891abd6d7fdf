"""Reports: paper-ready figures, the paper's Table 1 and a self-contained HTML page from a run directory.

``build_report(run_dir)`` does it all (``critmass report RUN_DIR``); the ``plot_*`` functions make
single figures from a run's tables and return matplotlib Figures (created without pyplot, so they
neither leak nor switch a user's backend).
"""

from ._plots import (
    FIGURE_FORMATS,
    PALETTE,
    default_deltas,
    gini_table,
    plot_cka,
    plot_class_drops,
    plot_curves,
    plot_dr_curve,
    plot_dr_heatmap,
    plot_gini,
    save_figure,
)
from ._gap import plot_gap
from ._report import FIGURES, Report, build_report, make_figures
from ._run import RunData, load_run
from ._tables import table1, table1_text

__all__ = [
    "build_report", "Report", "make_figures", "FIGURES", "load_run", "RunData",
    "plot_curves", "plot_cka", "plot_dr_curve", "plot_class_drops", "plot_gini", "plot_dr_heatmap",
    "plot_gap", "gini_table", "default_deltas", "table1", "table1_text", "save_figure", "PALETTE", "FIGURE_FORMATS",
]
