"""Depth-profile figures of a ``critmass profile`` run: DR and full accuracy across depth, layer x layer CKA.

Both read ``profile.parquet`` (layer order, widths) and ``layer_cka.parquet`` in the run directory; DR and
its CI are recomputed from ``results.parquet`` at the report's delta, so they follow the report's options.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._style import CMAP, FULL_STYLE, PALETTE, RC

__all__ = ["PROFILE_FIGURES", "profile_figures", "profile_notes", "plot_profile", "plot_layer_cka"]

#: Figure name -> (title, navigation label, caption), as :data:`critmass.report.FIGURES`.
PROFILE_FIGURES = {
    "profile_depth": (
        "DR and full accuracy across depth", "Depth profile",
        "One point per profiled layer, in forward order (width in brackets): DR(δ) of random subsets with its 95% "
        "bootstrap CI over seeds, the full layer's test accuracy, and the CKA between the critical-mass subset "
        "and the full layer (dotted)."),
    "layer_cka": (
        "Layer × layer CKA", "Layer CKA",
        "Linear CKA between every pair of profiled layers on the train split (1 on the diagonal), layers in "
        "forward order."),
}


def _load(run):
    from ..profile import read_profile

    return read_profile(run.path)


def _layer_dr(results: pd.DataFrame, prof: pd.DataFrame, *, delta, n_boot, random_state, select_on):
    from ..metrics import dr

    d = dr(results[results["layer"].isin(prof["layer"])], delta, selector="random", n_boot=n_boot,
           random_state=random_state, select_on=select_on)
    d = d.groupby("layer", sort=False).first()  # one model, dataset and solver per profile run
    return d.reindex(prof.sort_values("depth")["layer"])


def plot_profile(prof: pd.DataFrame, layer_dr: pd.DataFrame, *, delta: float):
    """DR(delta) with its CI, full accuracy and CKA at k* against depth (one Axes; lines labelled)."""
    from matplotlib.figure import Figure

    p = prof.sort_values("depth")
    x = np.arange(len(p))
    labels = [f"{n} ({w})" for n, w in zip(p["layer"], p["width"])]
    with __import__("matplotlib").rc_context(RC):
        fig = Figure(figsize=(max(4.0, 0.55 * len(p) + 1.8), 2.9), layout="constrained")
        ax = fig.subplots()
        drv = layer_dr["dr"].to_numpy(float)
        lo, hi = layer_dr["dr_ci_low"].to_numpy(float), layer_dr["dr_ci_high"].to_numpy(float)
        ax.plot(x, drv, marker="o", color=PALETTE[0], label=f"DR(δ = {delta:g})", gid="dr")
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=PALETTE[0], alpha=0.18, lw=0, label="95% CI")
        ax.plot(x, layer_dr["full_accuracy"].to_numpy(float), marker="s", color=PALETTE[1], label="full-layer accuracy",
                gid="full_accuracy")
        if "cka_at_critical" in p.columns:
            ax.plot(x, p["cka_at_critical"].to_numpy(float), ls=":", marker="^", color=PALETTE[2],
                    label="CKA(subset at k*, full)", gid="cka_at_critical")
        ax.axhline(1.0, **{**FULL_STYLE, "lw": 0.6})
        ax.set_ylim(-0.02, 1.05)
        ax.set_xticks(x, labels, rotation=35 if len(p) > 3 else 0, ha="right" if len(p) > 3 else "center")
        ax.set_xlabel("layer (depth order, width)")
        ax.set_ylabel("DR / accuracy / CKA")
        title = " | ".join(str(p[c].iloc[0]) for c in ("model", "dataset") if c in p.columns)
        ax.set_title(title)
        ax.legend(loc="best", fontsize=7)
    return fig


def plot_layer_cka(layer_cka: pd.DataFrame, order: list[str]):
    """Heat map of the layer x layer CKA (rows and columns in ``order``); ``ax.images[0]`` holds the matrix."""
    import matplotlib
    from matplotlib.figure import Figure

    mat = layer_cka.pivot(index="layer_a", columns="layer_b", values="cka").reindex(index=order, columns=order)
    vals = mat.to_numpy(float)
    n = len(order)
    size = max(3.2, 0.42 * n + 1.8)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(size + 0.6, size), layout="constrained")
        ax = fig.subplots()
        im = ax.imshow(np.ma.masked_invalid(vals), cmap=matplotlib.colormaps[CMAP].with_extremes(bad="white"),
                       vmin=0.0, vmax=1.0, interpolation="nearest")
        if n <= 20:
            for (r, c), v in np.ndenumerate(vals):
                ax.text(c, r, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=6.5,
                        color="0.5" if np.isnan(v) else ("black" if v > 0.55 else "white"))
        ax.set_xticks(range(n), order, rotation=45, ha="right")
        ax.set_yticks(range(n), order)
        ax.tick_params(length=0)
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        cb = fig.colorbar(im, ax=ax, shrink=0.85, fraction=0.05, pad=0.02)
        cb.set_label("linear CKA")
        cb.outline.set_visible(False)
    return fig


def profile_figures(run, *, delta: float = 0.9, n_boot: int = 1000, random_state=0, select_on: str = "test") -> dict:
    """The depth figures of a profile run (empty when the run directory holds no ``profile.parquet``)."""
    loaded = _load(run)
    if loaded is None:
        return {}
    prof, lc = loaded
    layer_dr = _layer_dr(run.results, prof, delta=delta, n_boot=n_boot, random_state=random_state,
                         select_on=select_on)
    figs = {"profile_depth": plot_profile(prof, layer_dr, delta=delta)}
    if lc is not None and len(lc):
        figs["layer_cka"] = plot_layer_cka(lc, list(prof.sort_values("depth")["layer"]))
    return figs


def profile_notes(run, *, delta: float = 0.9, select_on: str = "test") -> dict:
    """One or two sentences per depth figure (the numbers the figures show)."""
    loaded = _load(run)
    if loaded is None:
        return {}
    prof, lc = loaded
    d = _layer_dr(run.results, prof, delta=delta, n_boot=0, random_state=0, select_on=select_on)
    hi, lo = d["dr"].idxmax(), d["dr"].idxmin()
    acc = d["full_accuracy"]
    notes = {"profile_depth": [("depth", (
        f"DR({delta:g}) is highest at {hi} ({d.loc[hi, 'dr']:.2f}) and lowest at {lo} ({d.loc[lo, 'dr']:.2f}); "
        f"full-layer accuracy goes from {acc.iloc[0]:.3f} ({acc.index[0]}) to {acc.iloc[-1]:.3f} "
        f"({acc.index[-1]}), best {acc.max():.3f} at {acc.idxmax()}."))]}
    if lc is not None and len(lc):
        order = list(prof.sort_values("depth")["layer"])
        mat = lc.pivot(index="layer_a", columns="layer_b", values="cka").reindex(index=order, columns=order)
        if len(order) > 1:
            adj = [float(mat.iloc[i, i + 1]) for i in range(len(order) - 1)]
            notes["layer_cka"] = [("layers", (
                f"Adjacent layers: CKA {min(adj):.2f} to {max(adj):.2f}; first vs last layer "
                f"({order[0]} vs {order[-1]}): {float(mat.iloc[0, -1]):.2f}."))]
    return notes
