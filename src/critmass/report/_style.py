"""Shared look of every report figure: palette, per-selector styles, panel grids, rendering."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["PALETTE", "RC", "selector_styles", "panel_keys", "panel_title", "new_figure", "render"]

# Okabe & Ito (2008): distinguishable with every common form of colour blindness. Yellow comes last:
# it is the one colour that is hard to see as a thin line on white.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
_MARKERS = "osD^vPX*"
# Fixed slots so that a selector has the same colour and marker in every figure, run and paper.
_SELECTOR_SLOTS = ("random", "pca", "randproj", "pca-least", "randproj-uniform", "prefix", "norm-max", "norm-min")
#: The full layer's reference line and shaded "reached" band.
FULL_STYLE = {"color": "0.25", "ls": "--", "lw": 1.0}
BAND_COLOR = "0.80"
#: A diverging-free, colour-vision-deficiency-safe sequential map (Nuñez et al. 2018).
CMAP = "cividis"

RC = {
    "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "legend.fontsize": 7.5, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False, "axes.linewidth": 0.6,
    "xtick.major.width": 0.6, "ytick.major.width": 0.6, "xtick.minor.width": 0.4, "ytick.minor.width": 0.4,
    "lines.linewidth": 1.3, "lines.markersize": 3, "legend.frameon": False, "figure.dpi": 100,
    "savefig.dpi": 200, "savefig.bbox": "tight",
    # Embed TrueType fonts (Type 42), not Type 3: conference PDF checkers reject Type 3 fonts.
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
}


def selector_styles(selectors: Iterable[str]) -> dict[str, dict]:
    """Colour and marker of each selector: fixed for the known names, then palette order for others."""
    styles, free = {}, [i for i in range(len(PALETTE)) if i >= len(_SELECTOR_SLOTS)]
    extra = 0
    for name in selectors:
        if name in styles:
            continue
        if name in _SELECTOR_SLOTS:
            i = _SELECTOR_SLOTS.index(name)
        else:  # unknown names cycle over the whole palette after the reserved slots
            i = (free[extra] if extra < len(free) else extra) % len(PALETTE)
            extra += 1
        styles[name] = {"color": PALETTE[i], "marker": _MARKERS[i % len(_MARKERS)]}
    return styles


def order_selectors(selectors: Iterable[str]) -> list[str]:
    """Known selectors in their fixed order (random first), then the others alphabetically."""
    names = set(map(str, selectors))
    known = [s for s in _SELECTOR_SLOTS if s in names]
    return known + sorted(names - set(known))


def panel_keys(df: pd.DataFrame, extra: Sequence[str] = ("layer", "solver", "weights", "pooling", "codec", "split")
               ) -> list[str]:
    """(model, dataset) plus whichever of ``extra`` varies within one (model, dataset).

    A layer or solver that is constant per model and dataset would only lengthen every title; two
    checkpoints of one architecture (the ``weights`` column) get two panels.
    """
    keys = ["model", "dataset"]
    for k in extra:
        if k in df.columns and df.groupby(["model", "dataset"], sort=False)[k].nunique().max() > 1:
            keys.append(k)
    return keys


def panel_title(key: Sequence) -> str:
    return " | ".join(str(k) for k in key)


def new_figure(panels: Sequence[tuple], *, ncols: int = 3, panel_size=(2.9, 2.2), max_grid_cols: int = 4):
    """A constrained-layout Figure with one Axes per panel key; returns (fig, {key: ax}).

    Keys are (model, dataset, ...). With at most ``max_grid_cols`` datasets the panels form a grid,
    rows = models and columns = datasets, so a row reads across datasets and a column across models;
    otherwise they wrap in ``ncols`` columns. Unused grid cells are hidden.

    The Figure is created without pyplot: no global figure manager (nothing to close, no leak in long
    sessions) and no backend switch under a user's Jupyter or GUI session.
    """
    from matplotlib.figure import Figure

    datasets = list(dict.fromkeys(k[1] for k in panels))
    rows_keys = list(dict.fromkeys((k[0], *k[2:]) for k in panels))
    if len(datasets) <= max_grid_cols and len(rows_keys) * len(datasets) <= 2 * len(panels):
        nrows, ncol = len(rows_keys), len(datasets)
        where = {k: rows_keys.index((k[0], *k[2:])) * ncol + datasets.index(k[1]) for k in panels}
    else:
        ncol = max(1, min(ncols, len(panels)))
        nrows = int(np.ceil(len(panels) / ncol))
        where = {k: i for i, k in enumerate(panels)}
    fig = Figure(figsize=(panel_size[0] * ncol, panel_size[1] * nrows + 0.35), layout="constrained")
    axes = fig.subplots(nrows, ncol, squeeze=False).ravel()
    used = set(where.values())
    for i, ax in enumerate(axes):
        if i not in used:
            ax.set_visible(False)
    return fig, {k: axes[i] for k, i in where.items()}


def label_outer(axes_by_key: dict, xlabel: str, ylabel: str) -> None:
    """x label under the lowest panel of each column, y label left of the first panel of each row."""
    specs = {ax: ax.get_subplotspec() for ax in axes_by_key.values()}
    for ax, spec in specs.items():
        col, row = spec.colspan.start, spec.rowspan.start
        below = [o for o, s in specs.items() if s.colspan.start == col and s.rowspan.start > row]
        left = [o for o, s in specs.items() if s.rowspan.start == row and s.colspan.start < col]
        ax.set_xlabel(xlabel if not below else "")
        ax.set_ylabel(ylabel if not left else "")


def figure_legend(fig, axes: Iterable, *, ncol: int | None = None) -> None:
    """One legend above all panels with the unique labels of every panel (a selector may miss in one).

    A single panel gets its legend inside, where it covers the fewest points: a figure one column wide
    should not spend a third of its height on a legend.
    """
    axes = list(axes)
    if len(axes) == 1:
        if axes[0].get_legend_handles_labels()[0]:
            axes[0].legend(loc="best")
        return
    seen = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        if ncol is None:
            # As many entries per row as fit the figure's width (7.5 pt text: ~0.057 in per character,
            # ~0.55 in for the handle and padding), rows balanced so the last is not a lone entry.
            widths = [0.55 + 0.057 * len(lab) for lab in seen]
            per_row = max(1, int(fig.get_figwidth() / max(widths)))
            rows = int(np.ceil(len(seen) / per_row)) if sum(widths) > fig.get_figwidth() else 1
            ncol = int(np.ceil(len(seen) / rows))
        fig.legend(list(seen.values()), list(seen), loc="outside upper center", ncol=ncol)


def log_fraction_axis(ax) -> None:
    """Log-x with plain decimal tick labels (0.001, 0.01, 0.1, 1) instead of powers of ten.

    Call it after plotting: over fewer than 2.5 decades (e.g. 0.02 .. 1) the 2x and 5x minor ticks are
    labelled too, else a panel would show only "0.1" and "1".
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    plain = FuncFormatter(lambda x, _: f"{x:g}")
    ax.xaxis.set_major_formatter(plain)
    lo, hi = ax.dataLim.intervalx
    if np.isfinite([lo, hi]).all() and lo > 0 and np.log10(hi / lo) < 2.5:
        ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(plain)
        # Minor ticks are shorter; pad their labels so they sit on the same baseline as the major ones.
        import matplotlib

        rc = matplotlib.rcParams
        ax.tick_params(axis="x", which="minor", pad=rc["xtick.major.size"] + rc["xtick.major.pad"]
                       - rc["xtick.minor.size"])
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", lw=0.4, alpha=0.4)


# No creation dates: the same results give byte-identical PDF/SVG files (diff-able, cache-friendly).
_METADATA = {"png": {"Software": "critmass"}, "pdf": {"Creator": "critmass", "CreationDate": None},
             "svg": {"Creator": "critmass", "Date": None}}


def render(fig, fmt: str) -> bytes:
    """The figure encoded as ``fmt`` (png, pdf, svg) with the report's save settings."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format=fmt, bbox_inches="tight", dpi=RC["savefig.dpi"], metadata=_METADATA.get(fmt))
    return buf.getvalue()
