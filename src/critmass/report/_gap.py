"""The report's "gap to random" panel: chosen minus random accuracy vs the fraction of neurons, k* and diffuseness.

The panel is drawn only when a run can say something about it: it has random subsets (the baseline) and at
least one other column selector (one that picks neurons, e.g. fscore or variance; projections such as pca
do not count). Every number comes from :mod:`critmass.metrics` (``selector_gap``, ``selector_critical_mass``,
``diffuseness``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import (
    FULL_SELECTOR,
    GAP_BASELINE,
    check_table,
    diffuseness,
    group_keys,
    selector_critical_mass,
    selector_gap,
    selector_kinds,
)
from ._style import (
    FULL_STYLE,
    RC,
    figure_legend,
    label_outer,
    log_fraction_axis,
    new_figure,
    order_selectors,
    panel_keys,
    panel_title,
    selector_styles,
)

__all__ = ["gap_selectors", "gap_n_boot", "plot_gap", "gap_tables", "interpret_gap"]


def gap_selectors(results: pd.DataFrame, *, baseline: str = GAP_BASELINE) -> list[str]:
    """The selectors the gap panel draws (every non-random subset selector), or [] when it does not apply.

    It applies when the table has ``baseline`` rows and at least one other column selector; random
    selectors (randproj, randproj-uniform) are not drawn: their gap is noise around a projection.

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table.
    baseline : str, default "random"

    Returns
    -------
    list of str
        In the report's fixed selector order.
    """
    kinds = selector_kinds(results).set_index("selector")
    if baseline not in kinds.index:
        return []
    others = kinds.drop(index=[s for s in (baseline, FULL_SELECTOR) if s in kinds.index])
    if not others["is_column"].any():
        return []
    return order_selectors(others.index[~others["is_random"].astype(bool)])


def gap_n_boot(results: pd.DataFrame, n_boot: int, *, baseline: str = GAP_BASELINE) -> int:
    """``n_boot``, or 0 when some group has the baseline under one seed only (no CI over seeds possible)."""
    df = check_table(results, ["selector", "seed"], name="results table")
    seeds = df[df["selector"] == baseline].groupby(group_keys(df))["seed"].nunique()
    return n_boot if len(seeds) and int(seeds.min()) > 1 else 0


def plot_gap(results: pd.DataFrame, *, baseline: str = GAP_BASELINE, selectors=None, n_boot: int = 1000,
             ci: float = 0.95, random_state=0, ncols: int = 3, gap: pd.DataFrame | None = None):
    """Chosen minus random test accuracy vs the fraction of neurons (log-x), with bootstrap CI bands.

    One panel per (model, dataset) (plus the layer, solver, weights or pooling when one varies), one line
    per selector: :func:`critmass.metrics.selector_gap` at every k tested by both it and the baseline,
    drawn at the fraction actually used, k / n_features, with its CI over the baseline's (and its own)
    seeds as a band. The dashed line at 0 is the baseline itself: above it, the chosen subset beats as
    many random neurons.

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table.
    baseline : str, default "random"
    selectors : sequence of str, optional
        Default: :func:`gap_selectors`.
    n_boot, ci, random_state
        As in :func:`critmass.metrics.selector_gap` (``n_boot=0`` draws no bands).
    ncols : int, default 3
    gap : pandas.DataFrame, optional
        A :func:`critmass.metrics.selector_gap` table computed already (the other arguments then only
        pick the lines).

    Returns
    -------
    matplotlib.figure.Figure
        Lines labelled with the selector (gid ``mean:<selector>``), bands gid ``band:<selector>``, the
        baseline's zero line gid ``baseline``.
    """
    import matplotlib

    names = list(selectors) if selectors is not None else gap_selectors(results, baseline=baseline)
    if gap is None:
        gap = selector_gap(results, baseline=baseline, selectors=names, n_boot=n_boot, ci=ci,
                           random_state=random_state)
    names = order_selectors(s for s in names if s in set(gap["selector"]))
    styles = selector_styles(names)
    keys = panel_keys(gap)
    groups = dict(iter(gap.groupby(keys, sort=True)))
    with matplotlib.rc_context(RC):
        fig, axes = new_figure(list(groups), ncols=ncols)
        for key, ax in axes.items():
            sub = groups[key]
            for sel in names:
                rows = sub[sub["selector"] == sel].sort_values("fraction")
                if rows.empty:
                    continue
                st = styles[sel]
                ax.plot(rows["fraction"], rows["gap"], marker=st["marker"], color=st["color"], label=sel,
                        gid=f"mean:{sel}")
                if rows["gap_ci_low"].notna().any():
                    ax.fill_between(rows["fraction"], rows["gap_ci_low"], rows["gap_ci_high"], color=st["color"],
                                    alpha=0.2, lw=0, gid=f"band:{sel}")
            ax.axhline(0.0, label=f"{baseline} (baseline)", gid="baseline", **FULL_STYLE)
            log_fraction_axis(ax)
            ax.set_title(panel_title(key))
        label_outer(axes, "fraction of neurons", f"test accuracy − {baseline}")
        figure_legend(fig, axes.values())
    return fig


def gap_tables(results: pd.DataFrame, *, delta: float = 0.9, baseline: str = GAP_BASELINE, selectors=None,
               interpolate: bool = False, select_on: str = "test") -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """k* per selector next to the baseline's, and the diffuseness per group (None without column selectors).

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame or None)
        :func:`critmass.metrics.selector_critical_mass` and :func:`critmass.metrics.diffuseness` rows.
    """
    names = list(selectors) if selectors is not None else gap_selectors(results, baseline=baseline)
    critical = selector_critical_mass(results, delta, baseline=baseline, selectors=names, interpolate=interpolate,
                                      select_on=select_on)
    diffuse = None
    if critical["is_column"].any():
        diffuse = diffuseness(results, delta, baseline=baseline, selectors=names, interpolate=interpolate,
                              select_on=select_on)
    return critical, diffuse


def interpret_gap(gap: pd.DataFrame, diffuse: pd.DataFrame | None, *, delta: float) -> list[tuple[str, str]]:
    """Per panel: each selector's largest gap (where, with its CI), where the gap closes, and the diffuseness."""
    out = []
    keys = panel_keys(gap)
    dkeys = [k for k in keys if diffuse is not None and k in diffuse.columns]
    for key, g in gap.groupby(keys, sort=True):
        baseline = str(g["baseline"].iloc[0])
        parts = []
        for sel in order_selectors(g["selector"].unique()):
            s = g[g["selector"] == sel].sort_values("n_neurons")
            top = s.loc[s["gap"].idxmax()]
            ci = "" if np.isnan(top["gap_ci_low"]) else f" [{top['gap_ci_low']:+.3f}, {top['gap_ci_high']:+.3f}]"
            where = "the whole layer" if top["fraction"] >= 1 else f"{top['fraction']:.3g} of the layer"
            text = f"{sel} {top['gap']:+.3f}{ci} at k = {int(top['n_neurons'])} ({where})"
            # "Closes": from the first size on which every later CI (or gap, without CIs) contains 0 or less.
            low = s["gap_ci_low"].where(s["gap_ci_low"].notna(), s["gap"]).to_numpy()
            above = np.nonzero(low > 0)[0]
            if len(above) and above[-1] + 1 < len(s):
                text += f", no longer above {baseline} from k = {int(s['n_neurons'].iloc[above[-1] + 1])}"
            elif not len(above):
                text += f", never clearly above {baseline}"
            parts.append(text)
        note = f"Largest gap to {baseline}: " + "; ".join(parts) + "."
        if diffuse is not None and dkeys:
            match = diffuse[(diffuse[dkeys] == pd.Series(dict(zip(keys, key)))[dkeys]).all(axis=1)]
            for r in match.itertuples():
                if np.isnan(r.diffuseness):
                    note += f" Diffuseness at δ = {delta:g}: undefined ({r.reason})."
                else:
                    bound = {"lower": " (a lower bound)", "upper": " (an upper bound)"}.get(r.bound, "")
                    note += (f" Diffuseness at δ = {delta:g}: {r.diffuseness:.2f}{bound} = k*({baseline}) "
                             f"{int(r.baseline_critical_n_neurons)} / k*({r.best_selector}) "
                             f"{int(r.best_critical_n_neurons)}" + (" (no neuron is special)." if
                                                                    abs(r.diffuseness - 1) < 1e-12 else "."))
        out.append((panel_title(key), note))
    return out
