"""Recall against bytes per vector: the points of every (selector, size, codec), their Pareto frontier and the
"critical bytes" (the fewest bytes per vector whose metric reaches delta x the full float32 vector's).

A point is one (selector, n_neurons, codec) of a group (model, dataset, layer, solver, weights, pooling: the
codec is what varies along the frontier, so it is not a group key here), its value the mean of ``metric``
over the seeds and its cost the codec's ``bytes_per_vector``. The reference is the full layer ('all') in
float32; when the table has no float32 full-layer rows, the full layer of the codec that stores the most.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..exceptions import DataError
from ._common import FULL_SELECTOR, RESULT_COLUMNS, check_delta, check_selectors, check_table, group_keys
from ._pareto import _non_dominated

__all__ = ["BYTES_METRICS", "bytes_points", "bytes_frontier", "critical_bytes", "default_bytes_metric", "solver_metrics"]

#: Metrics a bytes frontier can be drawn for: retrieval's recall@k and mAP, any solver's test accuracy.
BYTES_METRICS = ("recall_at_1", "recall_at_5", "recall_at_10", "map", "test_accuracy")
FULL_CODEC = "float32"


def default_bytes_metric(df: pd.DataFrame) -> str:
    """recall@10 for retrieval tables, else test accuracy (kNN accuracy for kNN rows)."""
    if "recall_at_10" in df.columns and df["recall_at_10"].notna().any():
        return "recall_at_10"
    return "test_accuracy"


def solver_metrics(df: pd.DataFrame, retrieval=("recall_at_10",)) -> list[tuple[str, pd.DataFrame]]:
    """(metric, rows) pairs of a table that may mix solvers: ``retrieval`` metrics on the rows that have
    recall@k (retrieval), test accuracy on the others (kNN accuracy, linear probes)."""
    has = df["recall_at_10"].notna() if "recall_at_10" in df.columns else pd.Series(False, index=df.index)
    out = [(m, df[has]) for m in retrieval] if has.any() else []
    if (~has).any():
        out.append(("test_accuracy", df[~has]))
    return out


def _base_keys(df: pd.DataFrame) -> list[str]:
    return [k for k in group_keys(df) if k != "codec"]


def _checked(results, metric: str) -> pd.DataFrame:
    """The rows that have ``metric`` (recall@k and mAP: the retrieval rows), with ``codec`` and
    ``bytes_per_vector`` filled in for tables written before the codec axis (float32, ``4 k``)."""
    if metric not in BYTES_METRICS:
        raise DataError(f"unknown metric {metric!r} for a bytes frontier; valid: {', '.join(BYTES_METRICS)}")
    df = results.copy() if isinstance(results, pd.DataFrame) else results
    if isinstance(df, pd.DataFrame):
        if "codec" not in df.columns:
            df["codec"] = FULL_CODEC
        if "bytes_per_vector" not in df.columns:
            df["bytes_per_vector"] = np.nan
        if "n_neurons" in df.columns:
            df["bytes_per_vector"] = df["bytes_per_vector"].fillna(4 * df["n_neurons"])
    df = check_table(df, [*RESULT_COLUMNS, "bytes_per_vector"], name="results table")
    if metric not in df.columns or df[metric].isna().all():
        raise DataError(f"the results table has no {metric} values (retrieval runs have recall_at_k and map); "
                        "pass metric='test_accuracy' for kNN or linear probes")
    return df[df[metric].notna()]


def bytes_points(results: pd.DataFrame, metric: str = "recall_at_10", *,
                 selector: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Every (selector, n_neurons, codec) of each group: its bytes per vector and mean ``metric`` over seeds.

    Returns
    -------
    pandas.DataFrame
        Group keys, selector, codec, n_neurons, fraction (smallest giving that count), bytes_per_vector,
        ``value`` (mean over seeds), ``value_std`` (over seeds), n_seeds, the mean rank agreement with the full
        vector (``overlap_at_10``, ``spearman_top100``) where the rows have it, and ``on_frontier`` (no other
        point of the group stores at most as many bytes and reaches at least its value).
    """
    df = _checked(results, metric)
    df = df[df["selector"].isin(check_selectors(df, selector, default_all=True))]
    keys = _base_keys(df)
    extra = {c: (c, "mean") for c in ("overlap_at_10", "spearman_top100") if c in df.columns and df[c].notna().any()}
    pts = (df.groupby([*keys, "selector", "codec", "n_neurons"], sort=True)
           .agg(fraction=("fraction", "min"), bytes_per_vector=("bytes_per_vector", "max"),
                value=(metric, "mean"), value_std=(metric, "std"), n_seeds=("seed", "nunique"), **extra)
           .reset_index())
    pts["metric"] = metric
    keep = np.zeros(len(pts), dtype=bool)
    for idx in pts.groupby(keys, sort=True).indices.values():
        keep[idx] = _non_dominated(pts["bytes_per_vector"].to_numpy()[idx], pts["value"].to_numpy(float)[idx])
    pts["on_frontier"] = keep
    return pts.sort_values([*keys, "bytes_per_vector", "selector", "codec"]).reset_index(drop=True)


def bytes_frontier(results: pd.DataFrame, metric: str = "recall_at_10", *,
                   selector: str | Sequence[str] | None = None) -> pd.DataFrame:
    """The Pareto frontier of ``metric`` against bytes per vector: the non-dominated :func:`bytes_points`."""
    pts = bytes_points(results, metric, selector=selector)
    return pts[pts["on_frontier"]].drop(columns="on_frontier").reset_index(drop=True)


def _reference(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    full = rows[rows["selector"] == FULL_SELECTOR]
    if full.empty:
        return full, ""
    if (full["codec"] == FULL_CODEC).any():
        return full[full["codec"] == FULL_CODEC], FULL_CODEC
    widest = full.loc[full["bytes_per_vector"].idxmax(), "codec"]
    return full[full["codec"] == widest], str(widest)


def critical_bytes(results: pd.DataFrame, delta: float | None = 0.9, *, metric: str = "recall_at_10",
                   within: float | None = None, selector: str | Sequence[str] | None = None) -> pd.DataFrame:
    """The fewest bytes per vector whose mean ``metric`` reaches the threshold, and who achieves it.

    The threshold is ``delta x`` the full float32 vector's mean ``metric`` or, with ``within``, that value
    minus ``within`` (absolute: 0.01 = within 1 point). Every (selector, n_neurons, codec) competes.

    Returns
    -------
    pandas.DataFrame
        One row per group: metric, delta or within, full_value, full_bytes, threshold, critical_bytes,
        selector, codec, n_neurons (the point achieving it, ties to the higher value), value_at_critical,
        saving (full_bytes / critical_bytes) and reached (False: no point storing fewer bytes than the full
        vector reaches the threshold; critical_bytes is then the full vector's).
    """
    if within is None:
        delta = check_delta(delta)
    elif not (isinstance(within, (int, float)) and 0 <= within < 1):
        raise DataError(f"within must be a number in [0, 1) (0.01 = within 1 point); got {within!r}")
    pts = bytes_points(results, metric, selector=selector)
    df = _checked(results, metric)
    keys = _base_keys(df)
    out = []
    for key, rows in df.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ref, ref_codec = _reference(rows)
        if ref.empty:
            raise DataError(f"results for {'/'.join(map(str, key))} have no full-layer ('all') rows; run the probe "
                            "with the full layer included")
        full_value = float(ref[metric].mean())
        full_bytes = int(ref["bytes_per_vector"].max())
        thr = full_value - within if within is not None else delta * full_value
        sel = pts
        for k, v in zip(keys, key):
            sel = sel[sel[k] == v]
        ok = sel[sel["value"] >= thr - 1e-12]
        best = ok.sort_values(["bytes_per_vector", "value"], ascending=[True, False], kind="stable").iloc[0]
        reached = int(best["bytes_per_vector"]) < full_bytes  # fewer bytes than the reference vector
        out.append({**dict(zip(keys, key)), "metric": metric, "delta": np.nan if within is not None else delta,
                    "within": np.nan if within is None else float(within), "reference_codec": ref_codec,
                    "full_value": full_value, "full_bytes": full_bytes, "threshold": thr,
                    "critical_bytes": int(best["bytes_per_vector"]), "selector": best["selector"],
                    "codec": best["codec"], "n_neurons": int(best["n_neurons"]),
                    "value_at_critical": float(best["value"]),
                    "saving": full_bytes / max(int(best["bytes_per_vector"]), 1), "reached": bool(reached)})
    return pd.DataFrame(out)
