"""Paper-ready figures from a run's tidy tables (matplotlib without pyplot, colour-blind-safe palette).

Every ``plot_*`` function takes a raw run table (``results``, ``per_class`` or ``cka``), computes what
it shows with :mod:`critmass.metrics`, and returns a :class:`matplotlib.figure.Figure` with one panel
(Axes) per (model, dataset), titled ``"model | dataset"`` (plus the layer, solver or split when one
varies within a model and dataset). Artists carry labels and gids so the figure can be inspected:
a selector's mean line is labelled with the selector's name, the full layer's line ``"full layer"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._validation import closest
from ..exceptions import ConfigError, DataError
from ..metrics import (
    ACC_TOL,
    FULL_SELECTOR,
    REQUIRED_PER_CLASS_COLUMNS,
    check_selectors,
    check_table,
    class_label,
    group_keys,
)
from ._style import (
    BAND_COLOR,
    CMAP,
    FULL_STYLE,
    PALETTE,
    RC,
    figure_legend,
    label_outer,
    log_fraction_axis,
    new_figure,
    order_selectors,
    panel_keys,
    panel_title,
    render,
    selector_styles,
)

__all__ = [
    "PALETTE", "FIGURE_FORMATS", "plot_curves", "plot_cka", "plot_dr_curve", "plot_class_drops", "plot_gini",
    "plot_dr_heatmap", "gini_table", "save_figure",
]

logger = logging.getLogger(__name__)

FIGURE_FORMATS = ("png", "pdf", "svg")
BANDS = ("minmax", "std", "none")


def _rc():
    import matplotlib

    return matplotlib.rc_context(RC)


def _subset_selectors(df: pd.DataFrame, selector, full_selector: str = FULL_SELECTOR) -> list[str]:
    """The requested selectors (None: all but the full layer) in the fixed display order."""
    if selector is None:
        return order_selectors(s for s in df["selector"].astype(str).unique() if s != full_selector)
    return list(check_selectors(df, selector, default_all=False))


def _primary_selector(df: pd.DataFrame, selector, full_selector: str = FULL_SELECTOR) -> str:
    """One selector: the given one, else 'random' (the paper's), else the first subset selector."""
    if selector is not None:
        if selector == full_selector:
            raise ConfigError(f"selector {full_selector!r} is the full layer itself; pick a subset selector, "
                              "e.g. random")
        return check_selectors(df, selector, default_all=False)[0]
    names = _subset_selectors(df, None)
    if not names:
        raise DataError("the table has only full-layer ('all') rows; run the probe with a subset selector "
                        "(e.g. random) as well")
    return names[0]


def plot_curves(table: pd.DataFrame, *, metric: str = "test_accuracy", delta: float | None = 0.9,
                full_selector: str = FULL_SELECTOR, selector: str | Sequence[str] | None = None,
                band: str = "minmax", full_value: float | None = None, mark_critical: bool = True,
                ylabel: str | None = None, ncols: int = 3, select_on: str = "test"):
    """A metric vs the fraction of neurons (log-x): one panel per (model, dataset), one line per selector.

    Each line is the mean over seeds at every tested fraction, with a band over seeds. The full layer's
    mean (rows with ``selector == full_selector``, or ``full_value``) is a dashed line; with ``delta`` the
    region from ``delta x full`` to ``full`` is shaded (a curve entering it has reached the critical mass)
    and, with ``mark_critical``, a dotted vertical line in the selector's colour marks the smallest
    tested fraction whose mean reaches ``delta x full`` (the critical fraction f* of
    :func:`critmass.metrics.dr`).

    When the table has ``n_neurons`` and ``n_features`` the x axis is the fraction of neurons actually
    used, k / n_features, and fractions that round to the same k (one fit) are one point.

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy rows with model, dataset, selector, fraction, seed and ``metric`` (e.g. ``results.parquet``
        or ``cka.parquet``); layer, solver and split split panels when they vary.
    metric : str, default "test_accuracy"
        Column plotted on y.
    delta : float in (0, 1] or None, default 0.9
        Shade the ``[delta x full, full]`` band; None draws no band.
    full_selector : str, default "all"
        Selector of the full-layer rows (not drawn as a curve).
    selector : str, sequence of str or None
        Selectors to draw; None means all but ``full_selector``.
    band : {"minmax", "std", "none"}, default "minmax"
        Band over seeds: min to max, mean +- std (sample), or none.
    full_value : float, optional
        Full-layer value for panels without full-layer rows (CKA of the full layer with itself is 1).
    mark_critical : bool, default True
        Mark each selector's critical fraction (needs ``delta`` and a full-layer value).
    ylabel : str, optional
        Default: the metric's name.
    ncols : int, default 3
        Columns when the panels do not form a models x datasets grid.
    select_on : {"test", "val"}, default "test"
        With "val" the critical fraction is marked where the mean ``val_accuracy`` reaches ``delta`` x
        the full layer's (as :func:`critmass.metrics.dr` with ``select_on="val"``).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from critmass.metrics import read_results
    >>> fig = plot_curves(read_results("runs/r50"), delta=0.9)      # doctest: +SKIP
    >>> save_figure(fig, "runs/r50/accuracy_vs_fraction")           # doctest: +SKIP
    [PosixPath('runs/r50/accuracy_vs_fraction.png'), PosixPath('runs/r50/accuracy_vs_fraction.pdf')]
    """
    if band not in BANDS:
        raise ConfigError(f"band must be one of {', '.join(BANDS)}; got {band!r}{closest(band, BANDS)}")
    if delta is not None:
        from ..metrics import check_delta

        delta = check_delta(delta)
    from ..metrics import check_select_on

    mark_metric = metric if check_select_on(select_on) == "test" else "val_accuracy"
    required = ["model", "dataset", "selector", "fraction", "seed", metric,
                *([mark_metric] if mark_critical and delta is not None and mark_metric != metric else [])]
    df = check_table(table, required, name="table")
    if {"n_neurons", "n_features"} <= set(df.columns) and df[["n_neurons", "n_features"]].notna().all().all():
        df["_x"] = df["n_neurons"].astype(float) / df["n_features"].astype(float)
    else:
        df["_x"] = df["fraction"]
    for k in ("layer", "solver", "split"):
        if k in df.columns:
            df[k] = df[k].astype(str)
    df["selector"] = df["selector"].astype(str)
    names = [s for s in _subset_selectors(df, selector, full_selector) if s != full_selector]
    styles = selector_styles(names)
    keys = panel_keys(df)
    groups = dict(iter(df.groupby(keys, sort=True)))
    with _rc():
        fig, axes = new_figure(list(groups), ncols=ncols)
        for key, ax in axes.items():
            sub = groups[key]
            full_rows = sub.loc[sub["selector"] == full_selector, metric]
            full = float(full_rows.mean()) if len(full_rows) else full_value
            mark_rows = sub.loc[sub["selector"] == full_selector, mark_metric]
            mark_full = float(mark_rows.mean()) if len(mark_rows) else full_value
            for sel in names:
                rows = sub[sub["selector"] == sel]
                if rows.empty:
                    continue
                g = rows.groupby("_x")[metric].agg(["mean", "min", "max", "std"]).sort_index()
                st = styles[sel]
                ax.plot(g.index, g["mean"], marker=st["marker"], color=st["color"], label=sel, gid=f"mean:{sel}")
                if band != "none":
                    lo, hi = (g["min"], g["max"]) if band == "minmax" else (g["mean"] - g["std"].fillna(0),
                                                                            g["mean"] + g["std"].fillna(0))
                    ax.fill_between(g.index, lo, hi, color=st["color"], alpha=0.2, lw=0, gid=f"band:{sel}")
                if mark_critical and delta is not None and mark_full is not None:
                    m = g["mean"] if mark_metric == metric else rows.groupby("_x")[mark_metric].mean().sort_index()
                    hit = m.index[m.to_numpy() >= delta * mark_full - ACC_TOL]
                    if len(hit):
                        ax.axvline(hit[0], color=st["color"], ls=":", lw=0.9, gid=f"critical:{sel}")
            if full is not None:
                ax.axhline(full, label="full layer", gid="full", **FULL_STYLE)
                if delta is not None:
                    ax.axhspan(delta * full, full, color=BAND_COLOR, alpha=0.5, lw=0, label=f"≥ {delta:g} × full",
                               gid="delta-band")
            log_fraction_axis(ax)
            ax.set_title(panel_title(key))
        label_outer(axes, "fraction of neurons", ylabel or metric.replace("_", " "))
        figure_legend(fig, axes.values())
    return fig


def plot_cka(cka: pd.DataFrame, *, metric: str = "cka", split: str | None = None,
             selector: str | Sequence[str] | None = None, band: str = "minmax", ncols: int = 3):
    """CKA between neuron subsets and the full layer vs the fraction of neurons (``cka.parquet``).

    Same layout as :func:`plot_curves`; the full layer's CKA with itself (1) is the dashed line.

    Parameters
    ----------
    cka : pandas.DataFrame
        The table ``critmass cka`` writes (model, dataset, layer, split, selector, fraction, seed, cka,
        cka_debiased).
    metric : {"cka", "cka_debiased"}, default "cka"
    split : str, optional
        Split to show when the table has several; default ``test`` if present, else the first one.
    selector, band, ncols
        As in :func:`plot_curves`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    df = _select_split(cka, split)
    label = "debiased CKA with the full layer" if metric == "cka_debiased" else "CKA with the full layer"
    return plot_curves(df, metric=metric, delta=None, selector=selector, band=band, full_value=1.0,
                       mark_critical=False, ylabel=label, ncols=ncols)


def _select_split(cka: pd.DataFrame, split: str | None) -> pd.DataFrame:
    if not isinstance(cka, pd.DataFrame) or "split" not in cka.columns:
        return cka
    splits = sorted(map(str, cka["split"].dropna().unique()))
    if split is None:
        if len(splits) <= 1:
            return cka
        split = "test" if "test" in splits else splits[0]
        logger.info("CKA table has splits %s; showing %r", splits, split)
    if split not in splits:
        raise DataError(f"no CKA rows for split {split!r}{closest(split, splits)}; the table has: {', '.join(splits)}")
    return cka[cka["split"].astype(str) == split]


def default_deltas(delta: float | None = None) -> np.ndarray:
    """0.5 to 1 in steps of 0.01 (from ``delta`` when it is lower), with ``delta`` itself included."""
    lo = 0.5 if delta is None else min(0.5, float(delta))
    grid = np.r_[np.linspace(lo, 1.0, round((1.0 - lo) / 0.01) + 1), [] if delta is None else [delta]]
    return np.unique(np.round(grid, 10))  # rounded: 0.5 + 40 * 0.01 must be the same delta as 0.9


def plot_dr_curve(results: pd.DataFrame, *, deltas: Sequence[float] | None = None,
                  selector: str | Sequence[str] | None = None, delta: float | None = 0.9,
                  interpolate: bool = False, n_boot: int = 1000, random_state=0, ncols: int = 3,
                  select_on: str = "test"):
    """DR(delta) as delta varies: how much of the layer can go for each accuracy target.

    One panel per (model, dataset), one line per selector (a step function: DR is read off the tested
    grid) with its bootstrap confidence band over seeds; a dotted line marks ``delta``. A curve that lies
    higher keeps the same share of accuracy with fewer neurons: the redundancy/performance frontier.

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table (``results.parquet``).
    deltas : sequence of float, optional
        Thresholds; default :func:`default_deltas` (0.5 to 1 in steps of 0.01, and ``delta``).
    selector : str, sequence of str or None
        Selectors; None means every subset selector in the table.
    delta : float or None, default 0.9
        The threshold to mark.
    interpolate, n_boot, random_state, select_on
        As in :func:`critmass.metrics.dr_curve` (``n_boot=0`` draws no band).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..metrics import dr_curve

    df = check_table(results, ["selector"], name="results table")
    names = _subset_selectors(df, selector)
    curve = dr_curve(results, default_deltas(delta) if deltas is None else deltas, selector=names,
                     interpolate=interpolate, n_boot=n_boot, random_state=random_state, select_on=select_on)
    styles = selector_styles(names)
    keys = panel_keys(curve)
    groups = dict(iter(curve.groupby(keys, sort=True)))
    with _rc():
        fig, axes = new_figure(list(groups), ncols=ncols)
        for key, ax in axes.items():
            sub = groups[key]
            for sel in names:
                rows = sub[sub["selector"] == sel].sort_values("delta")
                if rows.empty:
                    continue
                st = styles[sel]
                ax.plot(rows["delta"], rows["dr"], drawstyle="steps-post", color=st["color"], label=sel,
                        gid=f"mean:{sel}")
                if rows["dr_ci_low"].notna().any():
                    ax.fill_between(rows["delta"], rows["dr_ci_low"], rows["dr_ci_high"], step="post",
                                    color=st["color"], alpha=0.2, lw=0, gid=f"band:{sel}")
            if delta is not None:
                ax.axvline(delta, color=FULL_STYLE["color"], ls=":", lw=0.9, label=f"δ = {delta:g}", gid="delta")
            ax.set_xlim(float(curve["delta"].min()), float(curve["delta"].max()))
            ax.set_ylim(-0.02, 1.02)
            ax.grid(True, lw=0.4, alpha=0.4)
            ax.set_title(panel_title(key))
        label_outer(axes, "δ (share of full-layer accuracy kept)", "DR(δ) = 1 − f*")
        figure_legend(fig, axes.values())
    return fig


def plot_class_drops(per_class: pd.DataFrame, *, selector: str | None = None, ncols: int = 3):
    """Per-class accuracy drop from the full layer vs the fraction of neurons, for one selector.

    One panel per (model, dataset): a thin grey line per class (mean over seeds), the mean over classes
    in the selector's colour and the most affected class (largest drop averaged over the tested
    fractions) in black. A mean close to 0 with a class far above it is the paper's "unintended
    consequence": the average holds while some classes pay. The most affected class is labelled
    with its name when the table has a ``class_name`` column (its index otherwise).

    Parameters
    ----------
    per_class : pandas.DataFrame
        The per-class table (``per_class.parquet``).
    selector : str, optional
        Default: 'random' if present, else the first subset selector.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from ..metrics import class_drops

    df = check_table(per_class, REQUIRED_PER_CLASS_COLUMNS, name="per-class table")
    sel = _primary_selector(df, selector)
    drops = class_drops(per_class, selector=sel)
    color = selector_styles([sel])[sel]["color"]
    keys = panel_keys(drops)
    # The dataset's own class names ("Shirt") label the most affected class, when the table has them.
    names = (drops.groupby([*keys, "class"])["class_name"].first().to_dict() if "class_name" in drops.columns
             else {})
    groups = dict(iter(drops.groupby(keys, sort=True)))
    with _rc():
        fig, axes = new_figure(list(groups), ncols=ncols)
        for key, ax in axes.items():
            sub = groups[key]
            by_class = sub.pivot_table(index="fraction", columns="class", values="drop", aggfunc="mean").sort_index()
            for i, c in enumerate(by_class.columns):
                ax.plot(by_class.index, by_class[c], color="0.72", lw=0.6, label="each class" if i == 0 else "_",
                        gid=f"class:{c}")
            mean = by_class.mean(axis=1)
            ax.plot(mean.index, mean, color=color, lw=1.8, marker="o", label=f"mean over classes ({sel})", gid="mean")
            below = by_class[by_class.index < 1.0] if (by_class.index < 1.0).any() else by_class
            worst = below.mean(axis=0).idxmax()
            ax.plot(by_class.index, by_class[worst], color="#000000", lw=1.2, marker="s",
                    label="most affected class", gid=f"worst:{worst}")
            ax.annotate(class_label(worst, names.get((*key, worst)) if names else None), (by_class.index[0], by_class[worst].iloc[0]), xytext=(3, 5),
                        textcoords="offset points", fontsize=7)
            ax.axhline(0.0, label="full layer (no drop)", gid="full", **FULL_STYLE)
            log_fraction_axis(ax)
            ax.set_title(panel_title(key))
        label_outer(axes, "fraction of neurons", "accuracy drop vs full layer")
        figure_legend(fig, axes.values())
    return fig


def gini_table(per_class: pd.DataFrame) -> pd.DataFrame:
    """Gini coefficient of the class accuracies of every probe (one row per seed), full layer included.

    Parameters
    ----------
    per_class : pandas.DataFrame
        The per-class table (``per_class.parquet``).

    Returns
    -------
    pandas.DataFrame
        Columns model, dataset, layer, solver, selector, fraction, seed, n_neurons, n_classes, gini
        (0: every class equally accurate; larger: accuracy concentrated on fewer classes).
    """
    from ..metrics import gini

    df = check_table(per_class, REQUIRED_PER_CLASS_COLUMNS, name="per-class table")
    cell = [*group_keys(df), "selector", "fraction", "seed"]
    rows = [{**dict(zip(cell, key)), "n_neurons": int(g["n_neurons"].max()), "n_classes": int(g["class"].nunique()),
             "gini": gini(g["accuracy"].to_numpy(float))}
            for key, g in df.groupby(cell, sort=True)]
    return pd.DataFrame(rows, columns=[*cell, "n_neurons", "n_classes", "gini"])


def plot_gini(per_class: pd.DataFrame, *, selector: str | Sequence[str] | None = None, band: str = "minmax",
              ncols: int = 3):
    """Gini coefficient of the class accuracies vs the fraction of neurons, one line per selector.

    Each seed's Gini over classes, then mean and band over seeds as in :func:`plot_curves`; the full
    layer's Gini is the dashed line. A curve rising above it means the subset's accuracy is spread less
    evenly over the classes than the full layer's.

    Parameters
    ----------
    per_class : pandas.DataFrame
        The per-class table (``per_class.parquet``).
    selector, band, ncols
        As in :func:`plot_curves`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    return plot_curves(gini_table(per_class), metric="gini", delta=None, selector=selector, band=band,
                       mark_critical=False, ylabel="Gini of class accuracies", ncols=ncols)


def _row_labels(res: pd.DataFrame) -> tuple[list[str], pd.Series]:
    """Heat-map rows: model (with layer / solver when they vary) and feature length, like Table 1."""
    parts = ["model", *(k for k in ("layer", "solver", "weights", "pooling", "codec") if k in res.columns
                        and res[k].nunique() > 1)]
    label = res[parts].astype(str).agg(" | ".join, axis=1) + " (" + res["n_features"].astype(int).astype(str) + ")"
    return parts, label


def plot_dr_heatmap(results: pd.DataFrame, *, delta: float = 0.9, selector: str | Sequence[str] | None = None,
                    interpolate: bool = False, select_on: str = "test"):
    """DR(delta) across models (rows, with feature length) and datasets (columns): one panel per selector.

    Cells are annotated with their value; a model not probed on a dataset is left blank. The colour
    map (cividis) is colour-vision-deficiency safe and shared by all panels (0 to 1).

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table (``results.parquet``).
    delta : float in (0, 1], default 0.9
        The paper's Table 1 uses 0.9.
    selector : str, sequence of str or None
        Selectors (one panel each); None means every subset selector in the table.
    interpolate : bool, default False
    select_on : {"test", "val"}, default "test"
        As in :func:`critmass.metrics.dr`.

    Returns
    -------
    matplotlib.figure.Figure
        Axes titled with the selector; ``ax.images[0].get_array()`` holds DR (rows x datasets, masked
        where missing).
    """
    import matplotlib
    from matplotlib.figure import Figure

    from ..metrics import dr

    df = check_table(results, ["selector"], name="results table")
    names = _subset_selectors(df, selector)
    res = dr(results, delta, selector=names, interpolate=interpolate, n_boot=0, select_on=select_on)
    parts, res["row"] = _row_labels(res)
    rows = list(dict.fromkeys(res.sort_values(parts)["row"]))
    cols = sorted(res["dataset"].astype(str).unique())
    res["dataset"] = res["dataset"].astype(str)
    w = 1.2 + 0.75 * len(cols)
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad="white")  # missing pairs: blank, not a colour
    with _rc():
        fig = Figure(figsize=(w * len(names) + 0.8, 0.9 + 0.38 * len(rows)), layout="constrained")
        axes = fig.subplots(1, len(names), squeeze=False).ravel()
        for i, (ax, sel) in enumerate(zip(axes, names)):
            grid = (res[res["selector"] == sel]
                    .pivot_table(index="row", columns="dataset", values="dr", aggfunc="first")
                    .reindex(index=rows, columns=cols))
            vals = np.ma.masked_invalid(grid.to_numpy(float))
            im = ax.imshow(vals, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
            for (r, c), v in np.ndenumerate(grid.to_numpy(float)):
                # cividis runs dark blue -> yellow: dark text on the light upper half.
                ax.text(c, r, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="0.5" if np.isnan(v) else ("black" if v > 0.55 else "white"))
            ax.set_xticks(range(len(cols)), cols, rotation=30 if max(map(len, cols)) > 8 else 0,
                          ha="right" if max(map(len, cols)) > 8 else "center")
            ax.set_yticks(range(len(rows)), rows if i == 0 else [""] * len(rows))
            ax.tick_params(length=0)
            for side in ("top", "right", "bottom", "left"):
                ax.spines[side].set_visible(False)
            ax.set_title(sel)
        cb = fig.colorbar(im, ax=list(axes), shrink=0.9, fraction=0.05, pad=0.02)
        cb.set_label(f"DR(δ = {delta:g})")
        cb.outline.set_visible(False)
    return fig


def check_formats(formats) -> list[str]:
    """Figure formats as a list of known names (a comma-separated string works too)."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = [str(f).lower().lstrip(".") for f in formats]
    if not formats:
        raise ConfigError(f"formats is empty; pass one or more of {', '.join(FIGURE_FORMATS)} (e.g. png,pdf)")
    for f in formats:
        if f not in FIGURE_FORMATS:
            raise ConfigError(f"unknown figure format {f!r}{closest(f, FIGURE_FORMATS)}; "
                              f"use any of {', '.join(FIGURE_FORMATS)}")
    return list(dict.fromkeys(formats))


def save_figure(fig, path, formats=("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix in ``formats``, atomically; returns the written paths.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or path-like
        Target without (or with a replaced) suffix, e.g. ``out / "accuracy_vs_fraction"``.
    formats : sequence of {"png", "pdf", "svg"} or comma-separated str, default ("png", "pdf")
        PNG at 200 dpi; PDF and SVG are vector with embedded TrueType fonts.

    Returns
    -------
    list of pathlib.Path
    """
    from .._io import atomic_write_bytes

    path = Path(path)
    out = []
    for fmt in check_formats(formats):
        target = path.with_suffix(f".{fmt}")
        atomic_write_bytes(target, render(fig, fmt))
        out.append(target)
    return out
