"""Depth-profile figures of a ``critmass profile`` run: DR and full accuracy across depth, layer x layer CKA.

Both read ``profile.parquet`` (layer order, widths) and ``layer_cka.parquet`` in the run directory; DR and
its CI are recomputed from ``results.parquet`` at the report's delta, so they follow the report's options.

A study profiles one model on several datasets into one directory: ``profile.parquet`` and ``layer_cka.parquet``
then hold rows of each (model, dataset). Each gets its own panel (and its own DR, from its own probes), never a
line that mixes datasets; a single profile draws one Axes, as before. A study keeps the profile's per-layer probes
in ``profile_results.parquet`` (its ``results.parquet`` holds the main sweep's): DR is then read from that table.
A profiled layer without probes in either table shows the DR stored in ``profile.parquet`` (at the profile's delta).
"""

from __future__ import annotations

from pathlib import Path

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
        "and the full layer (dotted). A profile of several datasets gets one panel per (model, dataset)."),
    "layer_cka": (
        "Layer × layer CKA", "Layer CKA",
        "Linear CKA between every pair of profiled layers on the train split (1 on the diagonal), layers in "
        "forward order; one panel per (model, dataset) of the profile."),
}

#: What tells one profile from another in a directory that holds several (a study's datasets).
_GROUP_KEYS = ("model", "dataset")
#: A study's per-layer probes of its profiles, beside its main ``results.parquet``.
PROFILE_RESULTS = "profile_results.parquet"
#: The columns of :func:`_layer_dr` that ``profile.parquet`` stores too.
_STORED = ("dr", "dr_ci_low", "dr_ci_high", "full_accuracy")


def _load(run):
    from ..profile import read_profile

    return read_profile(run.path)


def _probes(run) -> pd.DataFrame:
    """The probes the depth DR is read from: ``profile_results.parquet`` when the run directory has it (a study),
    else ``results.parquet``."""
    if (Path(run.path) / PROFILE_RESULTS).is_file():
        from ..metrics import REQUIRED_RESULT_COLUMNS, check_table, read_results

        return check_table(read_results(run.path, name=PROFILE_RESULTS), REQUIRED_RESULT_COLUMNS,
                           name=PROFILE_RESULTS)
    return run.results


def _group_keys(df: pd.DataFrame) -> list[str]:
    return [k for k in _GROUP_KEYS if k in df.columns]


def _groups(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """((model, dataset), rows) per profile in the table, in order of appearance; one group ``()`` without keys."""
    keys = _group_keys(df)
    if not keys:
        return [((), df)]
    return [(k if isinstance(k, tuple) else (k,), g)
            for k, g in df.groupby([df[c].astype(str) for c in keys], sort=False)]


def _layer_dr(results: pd.DataFrame, prof: pd.DataFrame, *, delta, n_boot, random_state, select_on):
    """DR of random subsets per profiled layer, indexed by layer in depth order, per (model, dataset) of ``prof``
    (concatenated; the ``model`` and ``dataset`` columns tell them apart).

    Each profile reads its own probes: the results rows of its layers and, where the results have them, of its
    model, dataset and solver. Layers without random-subset probes there keep the values ``profile.parquet`` stores.
    """
    from ..metrics import dr

    out = []
    for key, p in _groups(prof):
        p = p.sort_values("depth")
        rows = results[results["layer"].isin(p["layer"])]
        for c in (*_GROUP_KEYS, "solver"):
            if c in p.columns and c in rows.columns and p[c].nunique() == 1:
                hit = rows[c].astype(str) == str(p[c].iloc[0])
                if hit.any():  # a key the results spell otherwise is not used to filter
                    rows = rows[hit]
        rows = rows[rows["layer"].isin(rows.loc[rows["selector"] == "random", "layer"])]
        if len(rows):
            d = dr(rows, delta, selector="random", n_boot=n_boot, random_state=random_state, select_on=select_on)
            d = d.groupby("layer", sort=False).first()  # one model, dataset and solver per profile
        else:
            d = pd.DataFrame(columns=list(_STORED), index=pd.Index([], name="layer"))
        d = d.reindex(p["layer"])
        stored = p.set_index("layer")
        missing = d["dr"].isna() & ~d.index.isin(rows["layer"])
        for c in _STORED:
            d[c] = d[c].astype(float)
            d.loc[missing, c] = stored.loc[missing[missing].index, c].astype(float).to_numpy()
        for c, v in zip(_group_keys(prof), key):
            d[c] = v
        out.append(d)
    return out[0] if len(out) == 1 else pd.concat(out)


def _depth_axes(ax, p: pd.DataFrame, layer_dr: pd.DataFrame, *, delta: float, legend: bool = True) -> None:
    x = np.arange(len(p))
    labels = [f"{n} ({w})" for n, w in zip(p["layer"], p["width"])]
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
    ax.set_title(" | ".join(str(p[c].iloc[0]) for c in _GROUP_KEYS if c in p.columns))
    if legend:
        ax.legend(loc="best", fontsize=7)


def plot_profile(prof: pd.DataFrame, layer_dr: pd.DataFrame, *, delta: float):
    """DR(delta) with its CI, full accuracy and CKA at k* against depth (lines labelled): one Axes per
    (model, dataset) of ``prof`` (one Axes for a single profile), titled "model | dataset".

    ``layer_dr`` is :func:`_layer_dr`'s frame (indexed by layer; with several profiles, their rows one after the
    other with ``model`` and ``dataset`` columns).
    """
    from matplotlib.figure import Figure

    groups = _groups(prof)
    n = len(groups)
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    width = max(4.0, 0.55 * max(len(p) for _, p in groups) + 1.8)
    with __import__("matplotlib").rc_context(RC):
        fig = Figure(figsize=(width * ncols, 2.9 * nrows), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
        for i, (key, p) in enumerate(groups):
            p = p.sort_values("depth")
            d = layer_dr
            if n > 1:
                mask = np.ones(len(d), dtype=bool)
                for c, v in zip(_group_keys(prof), key):
                    if c in d.columns:
                        mask &= (d[c].astype(str) == v).to_numpy()
                d = d[mask].reindex(p["layer"])
            _depth_axes(axes[i], p, d, delta=delta, legend=i == 0)
        for ax in axes[n:]:
            ax.set_visible(False)
    return fig


def _cka_matrix(layer_cka: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    return layer_cka.pivot(index="layer_a", columns="layer_b", values="cka").reindex(index=order, columns=order)


def plot_layer_cka(layer_cka: pd.DataFrame, order):
    """Heat map of the layer x layer CKA (rows and columns in ``order``); ``ax.images[0]`` holds the matrix.

    With several (model, dataset) profiles in ``layer_cka``, one heat map per profile (titled "model | dataset"),
    ``order`` then a dict of (model, dataset) -> layers (a list applies to all).
    """
    import matplotlib
    from matplotlib.figure import Figure

    groups = _groups(layer_cka)
    orders = [_order(order, key, g) for key, g in groups]
    n = max(len(o) for o in orders)
    size = max(3.2, 0.42 * n + 1.8)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(size * len(groups) + 0.6, size), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False).ravel())
        for ax, (key, g), o in zip(axes, groups, orders):
            im = _cka_axes(ax, _cka_matrix(g, o), o)
            if len(groups) > 1:
                ax.set_title(" | ".join(key))
        cb = fig.colorbar(im, ax=axes[0] if len(groups) == 1 else list(axes), shrink=0.85, fraction=0.05, pad=0.02)
        cb.set_label("linear CKA")
        cb.outline.set_visible(False)
    return fig


def _cka_axes(ax, mat: pd.DataFrame, order: list[str]):
    import matplotlib

    vals = mat.to_numpy(float)
    n = len(order)
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
    return im


def _order(order, key: tuple, g: pd.DataFrame) -> list[str]:
    """The layer order of one profile's heat map: ``order`` (a list, or a dict by (model, dataset)), else the
    table's own depth order."""
    if not isinstance(order, dict):
        return list(order)
    if key in order:
        return list(order[key])
    if "depth_a" in g.columns:
        return list(g.sort_values("depth_a").drop_duplicates("layer_a")["layer_a"])
    return list(dict.fromkeys(g["layer_a"]))


def _orders(prof: pd.DataFrame) -> dict[tuple, list[str]]:
    return {key: list(p.sort_values("depth")["layer"]) for key, p in _groups(prof)}


def profile_figures(run, *, delta: float = 0.9, n_boot: int = 1000, random_state=0, select_on: str = "test") -> dict:
    """The depth figures of a profile run (empty when the run directory holds no ``profile.parquet``); one panel
    per (model, dataset) when the directory holds several profiles."""
    loaded = _load(run)
    if loaded is None:
        return {}
    prof, lc = loaded
    layer_dr = _layer_dr(_probes(run), prof, delta=delta, n_boot=n_boot, random_state=random_state,
                         select_on=select_on)
    figs = {"profile_depth": plot_profile(prof, layer_dr, delta=delta)}
    if lc is not None and len(lc):
        orders = _orders(prof)
        figs["layer_cka"] = plot_layer_cka(lc, orders if len(orders) > 1 else next(iter(orders.values())))
    return figs


def profile_notes(run, *, delta: float = 0.9, select_on: str = "test") -> dict:
    """One or two sentences per depth figure (the numbers the figures show), one per (model, dataset) when the
    directory holds several profiles (titled "model | dataset"; "depth" / "layers" for a single one)."""
    loaded = _load(run)
    if loaded is None:
        return {}
    prof, lc = loaded
    groups = _groups(prof)
    several = len(groups) > 1
    probes = _probes(run)
    depth, layers = [], []
    for key, p in groups:
        d = _layer_dr(probes, p, delta=delta, n_boot=0, random_state=0, select_on=select_on)
        hi, lo = d["dr"].idxmax(), d["dr"].idxmin()
        acc = d["full_accuracy"]
        depth.append((" | ".join(key) if several else "depth", (
            f"DR({delta:g}) is highest at {hi} ({d.loc[hi, 'dr']:.2f}) and lowest at {lo} ({d.loc[lo, 'dr']:.2f}); "
            f"full-layer accuracy goes from {acc.iloc[0]:.3f} ({acc.index[0]}) to {acc.iloc[-1]:.3f} "
            f"({acc.index[-1]}), best {acc.max():.3f} at {acc.idxmax()}.")))
        if lc is None or not len(lc):
            continue
        g = lc
        for c, v in zip(_group_keys(prof), key):
            if c in g.columns:
                g = g[g[c].astype(str) == v]
        order = list(p.sort_values("depth")["layer"])
        if len(order) > 1 and len(g):
            mat = _cka_matrix(g, order)
            adj = [float(mat.iloc[i, i + 1]) for i in range(len(order) - 1)]
            layers.append((" | ".join(key) if several else "layers", (
                f"Adjacent layers: CKA {min(adj):.2f} to {max(adj):.2f}; first vs last layer "
                f"({order[0]} vs {order[-1]}): {float(mat.iloc[0, -1]):.2f}.")))
    notes = {"profile_depth": depth}
    if layers:
        notes["layer_cka"] = layers
    return notes
