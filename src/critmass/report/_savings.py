"""The report's "savings" panel: test accuracy against the bytes each stored vector takes, per selector.

A subset of k neurons stored as float32 takes ``4 k`` bytes per vector (``k`` values of ``itemsize`` bytes:
column selectors keep k raw values, projections k projected values); the full layer takes ``4 D``. The panel
puts every selector's accuracy curve on that axis, so the price of a smaller gallery reads straight off it.
"""

from __future__ import annotations

import pandas as pd

from ..metrics import ACC_TOL, FULL_SELECTOR, check_table
from ._style import FULL_STYLE, RC, figure_legend, label_outer, new_figure, panel_keys, panel_title, selector_styles

__all__ = ["savings_table", "plot_savings", "interpret_savings"]

REQUIRED = ("model", "dataset", "selector", "fraction", "n_neurons", "n_features", "seed", "test_accuracy")


def _float_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The float32 rows of a table with a codec axis: this panel prices k neurons at ``k x itemsize`` bytes (the
    codecs' own bytes are the bytes-frontier figure's)."""
    if "codec" in df.columns and (df["codec"] == "float32").any():
        return df[df["codec"] == "float32"]
    return df


def savings_table(results: pd.DataFrame, *, itemsize: int = 4) -> pd.DataFrame:
    """Mean / min / max test accuracy over seeds per selector and subset size, with bytes per vector.

    One row per (panel keys, selector, n_neurons): ``bytes_per_vector = n_neurons * itemsize``,
    ``full_bytes = n_features * itemsize``; fractions that round to the same k are one fit and one row.
    """
    df = _float_rows(check_table(results, REQUIRED, name="results"))
    keys = panel_keys(df)
    df = df.copy()
    df["selector"] = df["selector"].astype(str)
    # Fractions that gave the same k are one fit recorded on several rows: count each (seed, k) once.
    df = df.drop_duplicates([*keys, "selector", "seed", "n_neurons"])
    g = (df.groupby([*keys, "selector", "n_neurons"], sort=True)
         .agg(n_features=("n_features", "first"), mean=("test_accuracy", "mean"), low=("test_accuracy", "min"),
              high=("test_accuracy", "max"), n_seeds=("seed", "nunique"))
         .reset_index())
    g["bytes_per_vector"] = g["n_neurons"].astype(int) * int(itemsize)
    g["full_bytes"] = g["n_features"].astype(int) * int(itemsize)
    return g


def plot_savings(results: pd.DataFrame, *, itemsize: int = 4, full_selector: str = FULL_SELECTOR,
                 delta: float | None = 0.9, ncols: int = 3):
    """Test accuracy (mean over seeds, min–max band) against bytes per stored vector (log-x).

    One panel per (model, dataset), one line per selector; the full layer is a dashed horizontal line and a
    square marker at its own size, and with ``delta`` a dotted line marks ``delta x full``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    tab = savings_table(results, itemsize=itemsize)
    keys = panel_keys(_float_rows(check_table(results, REQUIRED, name="results")))
    names = [s for s in dict.fromkeys(tab["selector"]) if s != full_selector]
    from ._style import order_selectors

    names = order_selectors(names)
    styles = selector_styles(names)
    groups = dict(iter(tab.groupby(keys, sort=True)))
    with matplotlib.rc_context(RC):
        fig, axes = new_figure(list(groups), ncols=ncols)
        for key, ax in axes.items():
            sub = groups[key]
            full = sub[sub["selector"] == full_selector]
            for sel in names:
                rows = sub[sub["selector"] == sel].sort_values("bytes_per_vector")
                if rows.empty:
                    continue
                st = styles[sel]
                ax.plot(rows["bytes_per_vector"], rows["mean"], marker=st["marker"], color=st["color"], label=sel,
                        gid=f"mean:{sel}")
                ax.fill_between(rows["bytes_per_vector"], rows["low"], rows["high"], color=st["color"], alpha=0.2,
                                lw=0, gid=f"band:{sel}")
            if len(full):
                acc, nbytes = float(full["mean"].mean()), float(full["full_bytes"].iloc[0])
                ax.axhline(acc, label="full layer", gid="full", **FULL_STYLE)
                ax.plot([nbytes], [acc], marker="s", color=FULL_STYLE.get("color", "k"), ls="none", gid="full-point")
                if delta is not None:
                    ax.axhline(delta * acc, color="0.5", ls=":", lw=0.9, label=f"{delta:g} × full", gid="delta")
            ax.set_xscale("log")
            ax.set_title(panel_title(key))
        label_outer(axes, f"bytes per stored vector (float{8 * itemsize})", "test accuracy")
        figure_legend(fig, axes.values())
    return fig


def _bytes(n: float) -> str:
    return f"{int(n):,} B" if n < 1 << 10 else f"{n / (1 << 10):.3g} KiB"


def interpret_savings(results: pd.DataFrame, *, delta: float = 0.9, itemsize: int = 4,
                      full_selector: str = FULL_SELECTOR) -> list[tuple[str, str]]:
    """Per panel: the fewest bytes per vector at which each selector's mean accuracy reaches ``delta x full``."""
    tab = savings_table(results, itemsize=itemsize)
    keys = panel_keys(_float_rows(check_table(results, REQUIRED, name="results")))
    out = []
    for key, sub in tab.groupby(keys, sort=True):
        full = sub[sub["selector"] == full_selector]
        if full.empty:
            continue
        acc, nbytes = float(full["mean"].mean()), float(full["full_bytes"].iloc[0])
        parts = []
        for sel, rows in sub[sub["selector"] != full_selector].groupby("selector", sort=True):
            hit = rows[rows["mean"].to_numpy() >= delta * acc - ACC_TOL].sort_values("bytes_per_vector")
            if hit.empty:
                parts.append(f"{sel} never reaches it below the full layer")
                continue
            b = float(hit["bytes_per_vector"].iloc[0])
            parts.append(f"{sel} at {_bytes(b)} ({b / nbytes:.3g} of the full layer's {_bytes(nbytes)}, "
                         f"accuracy {float(hit['mean'].iloc[0]):.3f})")
        if parts:
            out.append((panel_title(key),
                        f"{delta:g} × full ({delta * acc:.3f}) per stored vector: " + "; ".join(parts) + "."))
    return out

