"""Per-class ("unintended") consequences of dropping neurons: which classes pay for it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..exceptions import ConfigError, DataError
from ._common import FULL_SELECTOR, PER_CLASS_COLUMNS, check_full_rows, check_selectors, check_table, group_keys

__all__ = ["gini", "class_drops", "per_class_summary"]

def _cell_keys(df: pd.DataFrame) -> list[str]:
    return [*group_keys(df), "selector", "fraction"]


def gini(values) -> float:
    """Gini coefficient of non-negative values, G = sum_ij |x_i - x_j| / (2 n^2 mean).

    0 when all values are equal (including all zero); (n - 1) / n when one of n is non-zero.

    Parameters
    ----------
    values : array-like of float
        Non-negative values, e.g. per-class accuracies.

    Returns
    -------
    float

    Examples
    --------
    >>> gini([0.5, 0.5, 0.5])
    0.0
    >>> gini([0, 0, 0, 1])
    0.75
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ConfigError("gini needs at least one value; got an empty array")
    if not np.isfinite(x).all() or (x < 0).any():
        raise ConfigError("gini needs finite non-negative values; got NaN, inf or a negative value")
    total = x.sum()
    if total == 0:
        return 0.0
    # O(n log n) form of the mean absolute difference: sum_ij |x_i - x_j| = 2 sum_i (2i - n - 1) x_(i).
    # The weights sum to 0, so shifting by the minimum changes nothing but makes equal values give 0 exactly.
    x = np.sort(x)
    n = x.size
    return float(np.dot(2 * np.arange(1, n + 1) - n - 1, x - x[0]) / (n * total))


def class_drops(per_class: pd.DataFrame, *, selector: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Each class's accuracy with a neuron subset and its drop from the full layer.

    Accuracies are means over seeds; ``drop = full_accuracy - accuracy`` (positive: the subset is
    worse on that class).

    Parameters
    ----------
    per_class : pandas.DataFrame
        The per-class table: model, dataset, layer, solver, selector, fraction, n_neurons, seed,
        class and accuracy (that class's test recall); support is carried along when present.
    selector : str, sequence of str or None, default None
        Selectors to report; None means every selector except the full layer ('all').

    Returns
    -------
    pandas.DataFrame
        One row per group, selector, fraction and class with columns model, dataset, layer, solver,
        selector, fraction, n_neurons, class, full_accuracy, accuracy, drop (and support; and
        class_name, the dataset's own name of the class, when the table has that column; the
        optional weights / pooling group keys likewise).

    Raises
    ------
    DataError
        Empty table, missing columns or values, a group without 'all' rows, a class absent from the
        full-layer rows, unknown selector.
    """
    df = check_table(per_class, PER_CLASS_COLUMNS, name="per-class table")
    selectors = check_selectors(df, selector, default_all=False)
    check_full_rows(df, name="per-class table")
    keys = group_keys(df)
    cell = _cell_keys(df)
    named = "class_name" in df.columns
    if named:  # the dataset's own class names ("Shirt"); a missing one falls back to the index
        df["class_name"] = [str(n) if isinstance(n, str) and n else f"class {c}"
                            for c, n in zip(df["class"], df["class_name"])]
    full = (df[df["selector"] == FULL_SELECTOR].groupby([*keys, "class"], sort=True)["accuracy"].mean()
            .rename("full_accuracy").reset_index())
    aggs = {"n_neurons": ("n_neurons", "max"), "accuracy": ("accuracy", "mean")}
    if "support" in df.columns:
        aggs["support"] = ("support", "max")
    if named:
        aggs["class_name"] = ("class_name", "first")
    sub = df[df["selector"].isin(selectors)].groupby([*cell, "class"], sort=True).agg(**aggs).reset_index()
    out = sub.merge(full, on=[*keys, "class"], how="left", validate="many_to_one")
    lost = out["full_accuracy"].isna().to_numpy()
    if lost.any():
        r = out[lost].iloc[0]
        raise DataError(
            f"class {r['class']} of {'/'.join(str(r[k]) for k in keys)} has no full-layer ('all') row; "
            "probe the full layer and the subsets on the same test set"
        )
    out["drop"] = out["full_accuracy"] - out["accuracy"]
    cols = [*cell, "n_neurons", "class", *(["class_name"] if named else []),
            *(["support"] if "support" in df.columns else []), "full_accuracy", "accuracy", "drop"]
    return out[cols]


def per_class_summary(per_class: pd.DataFrame, *, selector: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Spread of the per-class accuracy drops for every group, selector and fraction.

    Parameters
    ----------
    per_class : pandas.DataFrame
        The per-class table (see :func:`class_drops`).
    selector : str, sequence of str or None, default None
        Selectors to report; None means every selector except the full layer ('all').

    Returns
    -------
    pandas.DataFrame
        One row per group, selector and fraction with columns model, dataset, layer, solver,
        selector, fraction, n_neurons, n_classes, mean_accuracy (mean over classes of the
        mean-over-seeds class accuracy), mean_drop, drop_std (population std over classes),
        max_drop, max_drop_class, gini (of the class accuracies), full_gini (the same for the full
        layer), worst_class and worst_class_accuracy (lowest class accuracy; ties go to the lowest
        class id); with a class_name column also max_drop_class_name and worst_class_name.
    """
    drops = class_drops(per_class, selector=selector)
    cell = [c for c in _cell_keys(drops)]
    named = "class_name" in drops.columns
    rows = []
    for key, g in drops.groupby(cell, sort=True):
        g = g.sort_values("class")
        acc, drop = g["accuracy"].to_numpy(float), g["drop"].to_numpy(float)
        worst, most = int(np.argmin(acc)), int(np.argmax(drop))
        rows.append({
            **dict(zip(cell, key)),
            "n_neurons": int(g["n_neurons"].iloc[0]),
            "n_classes": len(g),
            "mean_accuracy": float(acc.mean()),
            "mean_drop": float(drop.mean()),
            "drop_std": float(drop.std()),
            "max_drop": float(drop[most]),
            "max_drop_class": g["class"].iloc[most],
            "gini": gini(acc),
            "full_gini": gini(g["full_accuracy"].to_numpy(float)),
            "worst_class": g["class"].iloc[worst],
            "worst_class_accuracy": float(acc[worst]),
            **({"max_drop_class_name": g["class_name"].iloc[most],
                "worst_class_name": g["class_name"].iloc[worst]} if named else {}),
        })
    return pd.DataFrame(rows)
