"""The report's "recall vs bytes" panel: every (selector, size, codec) as a point of metric against bytes per
vector, its Pareto frontier, and the critical bytes (:mod:`critmass.metrics` ``bytes_points`` /
``critical_bytes``). Drawn when a run has a codec axis: more than one codec, or one other than float32."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import FULL_SELECTOR, bytes_points, critical_bytes, solver_metrics
from ._style import RC, figure_legend, label_outer, new_figure, order_selectors, panel_title, selector_styles

__all__ = ["has_codecs", "bytes_metrics", "plot_bytes_frontier", "bytes_tables", "interpret_bytes"]

_CODEC_MARKERS = {"float32": "o", "float16": "s", "int8": "D", "binary": "v", "binary-rerank": "^", "pq": "P",
                  "opq": "X"}
_METRIC_LABELS = {"recall_at_1": "recall@1", "recall_at_5": "recall@5", "recall_at_10": "recall@10", "map": "mAP",
                  "test_accuracy": "accuracy"}


def has_codecs(results: pd.DataFrame) -> bool:
    """Whether the run has a codec axis worth the panel (several codecs, or one other than float32)."""
    if "codec" not in results.columns:
        return False
    codecs = set(results["codec"].dropna().astype(str)) - {""}
    return len(codecs) > 1 or bool(codecs - {"float32"})


def bytes_metrics(results: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(metric, rows): recall@1, recall@10 and mAP of the retrieval rows; accuracy of the others (kNN, linear)."""
    return solver_metrics(results, retrieval=("recall_at_1", "recall_at_10", "map"))


def _marker(codec: str) -> str:
    base = next((c for c in sorted(_CODEC_MARKERS, key=len, reverse=True) if str(codec).startswith(c)), None)
    return _CODEC_MARKERS.get(base, "*")


def _group_cols(pts: pd.DataFrame) -> list[str]:
    keys = ["model", "dataset"]
    for k in ("layer", "solver", "weights", "pooling"):  # not codec: the codecs share a panel here
        if k in pts.columns and pts.groupby(keys)[k].nunique().max() > 1:
            keys.append(k)
    return keys


def plot_bytes_frontier(results: pd.DataFrame, *, metrics=None, ncols: int = 3):
    """Metric against bytes per vector (log-x): one marker per codec, one colour per selector, the frontier as a
    step line, the full float32 vector as a large open circle. One panel per (group, metric).

    Returns
    -------
    matplotlib.figure.Figure
        Points gid ``point:<selector>:<codec>``, frontier gid ``frontier``, full vector gid ``full``.
    """
    import matplotlib

    pairs = bytes_metrics(results) if metrics is None else [(m, r) for m, r in bytes_metrics(results) if m in metrics]
    metrics = [m for m, _ in pairs]
    tables = {m: bytes_points(rows, m) for m, rows in pairs}
    keys = _group_cols(pd.concat(tables.values(), ignore_index=True))
    panels = []
    for m in metrics:
        for key in tables[m].groupby(keys, sort=True).groups:
            key = key if isinstance(key, tuple) else (key,)
            panels.append((key[0], f"{key[1]} | {_METRIC_LABELS[m]}", *key[2:], m))
    selectors = order_selectors(next(iter(tables.values()))["selector"].astype(str).unique())
    styles = selector_styles(selectors)
    with matplotlib.rc_context(RC):
        fig, axes = new_figure([p[:-1] for p in panels], ncols=ncols)
        for p in panels:
            ax, m = axes[p[:-1]], p[-1]
            pts = tables[m]
            key = (p[0], p[1].rsplit(" | ", 1)[0], *p[2:-1])
            for k, v in zip(keys, key):
                pts = pts[pts[k].astype(str) == str(v)]
            labelled = set()
            for (sel, codec), rows in pts.groupby(["selector", "codec"], sort=True):
                color = "0.15" if sel == FULL_SELECTOR else styles.get(sel, {"color": "0.4"})["color"]
                ax.plot(rows["bytes_per_vector"], rows["value"], ls="none", marker=_marker(codec), ms=4,
                        color=color, alpha=0.85, label=None if sel in labelled else str(sel),
                        gid=f"point:{sel}:{codec}")
                labelled.add(sel)
            front = pts[pts["on_frontier"]].sort_values("bytes_per_vector")
            ax.step(front["bytes_per_vector"], front["value"], where="post", color="0.2", lw=0.9, gid="frontier",
                    label="frontier")
            full = pts[(pts["selector"] == FULL_SELECTOR) & (pts["codec"] == "float32")]
            if len(full):
                ax.plot(full["bytes_per_vector"], full["value"], ls="none", marker="o", ms=9, mfc="none",
                        color="k", gid="full", label="full float32")
            ax.set_xscale("log")
            ax.set_title(panel_title(p[:-1]))
        for codec in sorted(set().union(*(set(t["codec"].astype(str)) for t in tables.values()))):
            ax0 = next(iter(axes.values()))
            ax0.plot([], [], ls="none", marker=_marker(codec), color="0.4", label=f"codec {codec}")
        label_outer(axes, "bytes per vector", "metric")
        figure_legend(fig, axes.values())
    return fig


def bytes_tables(results: pd.DataFrame, *, delta: float = 0.9) -> dict[str, pd.DataFrame]:
    """``bytes_frontier.csv`` (every point with its on_frontier flag, all metrics) and ``critical_bytes.csv``
    (at delta, and within 1 and 5 points of the full vector)."""
    pairs = bytes_metrics(results)
    pts = pd.concat([bytes_points(rows, m) for m, rows in pairs], ignore_index=True)
    crit = [critical_bytes(rows, delta, metric=m) for m, rows in pairs]
    crit += [critical_bytes(rows, metric=m, within=w) for m, rows in pairs for w in (0.01, 0.05)]
    return {"bytes_frontier.csv": pts, "critical_bytes.csv": pd.concat(crit, ignore_index=True)}


def interpret_bytes(critical: pd.DataFrame, *, delta: float) -> list[tuple[str, str]]:
    """Per group and metric: the critical bytes at delta and within 1 point, with who achieves them."""
    out = []
    keys = [k for k in ("model", "dataset", "layer", "solver", "weights", "pooling") if k in critical.columns
            and (k in ("model", "dataset") or critical[k].nunique() > 1)]
    for key, g in critical.groupby([*keys, "metric"], sort=True):
        parts = []
        for r in g.itertuples():
            what = f"{delta:g} × full" if np.isfinite(r.delta) else f"full − {100 * r.within:g} pt"
            hit = "" if r.reached else " (only the full vector reaches it)"
            parts.append(f"{what}: {r.critical_bytes} B ({r.selector}, k = {r.n_neurons}, {r.codec}; "
                         f"{100 * r.value_at_critical:.1f}){hit}, {r.saving:.0f}x smaller than {r.full_bytes} B")
        title = panel_title([*key[:-1], _METRIC_LABELS.get(key[-1], key[-1])])
        out.append((title, "; ".join(parts) + "."))
    return out
