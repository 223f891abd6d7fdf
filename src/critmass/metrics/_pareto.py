"""Accuracy-vs-neurons Pareto frontier across selectors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._common import ACC_TOL, RESULT_COLUMNS, check_selectors, check_table, group_keys

__all__ = ["pareto_frontier"]


def _non_dominated(n: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Mask of points no other point dominates (no more neurons and no less accuracy, not equal).

    Sweep over neuron counts: a point survives iff it is the most accurate at its count and beats
    every point with strictly fewer neurons. Accuracies within ACC_TOL are equal (means of the same
    seeds summed in another order differ in the last bits), so tying selectors both survive.
    """
    best_at = pd.Series(acc).groupby(n).max()  # ascending n
    best_below = best_at.cummax().shift(1, fill_value=-np.inf)
    return (acc >= best_at.loc[n].to_numpy() - ACC_TOL) & (acc > best_below.loc[n].to_numpy() + ACC_TOL)


def pareto_frontier(results: pd.DataFrame, *, selector: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Non-dominated (n_neurons, mean accuracy) points across selectors, per group.

    Each selector's accuracy at a neuron count is the mean test accuracy over its seeds (and over
    fractions that round to the same count). A point is kept unless another point of the group has
    no more neurons and at least its accuracy (and differs from it).

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table (see :func:`critmass.metrics.dr`).
    selector : str, sequence of str or None, default None
        Selectors competing for the frontier; None means all, the full layer ('all') included.

    Returns
    -------
    pandas.DataFrame
        The frontier points, sorted by group and n_neurons, with columns model, dataset, layer,
        solver, selector (which one achieved the point), fraction (smallest fraction giving that
        count), n_neurons, accuracy and n_seeds.
    """
    df = check_table(results, RESULT_COLUMNS, name="results table")
    selectors = check_selectors(df, selector, default_all=True)
    df = df[df["selector"].isin(selectors)]
    keys = group_keys(df)
    points = (df.groupby([*keys, "selector", "n_neurons"], sort=True)
              .agg(fraction=("fraction", "min"), accuracy=("test_accuracy", "mean"), n_seeds=("seed", "nunique"))
              .reset_index())
    keep = np.zeros(len(points), dtype=bool)
    for idx in points.groupby(keys, sort=True).indices.values():
        keep[idx] = _non_dominated(points["n_neurons"].to_numpy()[idx], points["accuracy"].to_numpy(float)[idx])
    out = points[keep].sort_values([*keys, "n_neurons", "selector"]).reset_index(drop=True)
    return out[[*keys, "selector", "fraction", "n_neurons", "accuracy", "n_seeds"]]
