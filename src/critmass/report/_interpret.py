"""One or two plain sentences per panel: where the critical mass is and how the selectors compare.

Every number quoted here is computed by :mod:`critmass.metrics` from the same tables the figures show.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..metrics import ACC_TOL, FULL_SELECTOR, GROUP_KEYS, OPTIONAL_KEYS, class_label
from ._style import order_selectors, panel_keys, panel_title

__all__ = ["interpret_accuracy", "interpret_cka", "interpret_dr_curve", "interpret_class_drops", "interpret_gini",
           "interpret_heatmap"]


def _f(x: float) -> str:
    """A fraction as the paper writes it (0.05, 0.002, 1)."""
    return f"{x:.3g}"


def _panels(df: pd.DataFrame, keys=None):
    """(title, rows) per panel, titled like the figures' panels."""
    keys = keys or panel_keys(df)
    for key, g in df.groupby(keys, sort=True):
        yield panel_title(key), g


def _critical_phrase(r) -> str:
    if not r["reached"]:
        return f"{r['selector']} never reaches it below the full layer (DR = 0)"
    ci = ""
    if not math.isnan(r["dr_ci_low"]):
        ci = f" [{r['dr_ci_low']:.2f}, {r['dr_ci_high']:.2f}]"
    return (f"{r['selector']} from {int(r['critical_n_neurons'])} neurons ({_f(r['critical_fraction'])} of the "
            f"layer; DR = {r['dr']:.2f}{ci})")


def interpret_accuracy(results: pd.DataFrame, dr_long: pd.DataFrame, delta: float) -> list[tuple[str, str]]:
    """Full-layer accuracy, each selector's critical mass, and the selectors at the smallest fraction."""
    out = []
    keys = panel_keys(results)
    for title, g in _panels(dr_long, keys):
        first = g.iloc[0]
        full, d = float(first["full_accuracy"]), int(first["n_features"])
        parts = [f"The full layer ({d} neurons) reaches {full:.3f} test accuracy. Subsets reach δ × full = "
                 f"{delta * full:.3f}: " + "; ".join(_critical_phrase(r) for _, r in g.iterrows()) + "."]
        reached = g[g["reached"]]
        if len(g) > 1 and len(reached):
            best = reached.loc[reached["critical_n_neurons"] == reached["critical_n_neurons"].min(), "selector"]
            parts.append(f"Fewest neurons: {', '.join(best)}.")
        # How much each selector keeps at the smallest fraction tested by all of them.
        on = [k for k in (*GROUP_KEYS, *OPTIONAL_KEYS) if k in g.columns and k in results.columns]
        rows = results.merge(g[on].drop_duplicates(), on=on, how="inner")
        rows = rows[rows["selector"].isin(g["selector"])]
        common = rows.groupby("fraction")["selector"].nunique()
        common = common[common == g["selector"].nunique()]
        if len(common):
            f0 = float(common.index.min())
            kept = rows[rows["fraction"] == f0].groupby("selector")["test_accuracy"].mean() / full
            parts.append(f"At the smallest fraction ({_f(f0)}) they keep "
                         + ", ".join(f"{kept[s]:.0%} ({s})" for s in g["selector"] if s in kept) + " of it.")
        out.append((title, " ".join(parts)))
    return out


def interpret_cka(cka: pd.DataFrame, dr_long: pd.DataFrame, delta: float, metric: str = "cka") -> list[tuple[str, str]]:
    """Where CKA with the full layer reaches delta, and its value at the accuracy critical mass."""
    out = []
    cka = cka[cka["selector"].astype(str) != FULL_SELECTOR]
    for title, g in _panels(cka):
        curves = g.groupby(["selector", "fraction"])[metric].mean()
        parts = []
        for sel in order_selectors(g["selector"].astype(str).unique()):
            c = curves.loc[sel].sort_index()
            hit = c.index[c.to_numpy() >= delta - ACC_TOL]
            if not len(hit):
                parts.append(f"{sel} not within the tested fractions")
            else:
                parts.append(f"{sel} only with the whole layer" if hit[0] >= 1.0 else f"{sel} from {_f(hit[0])}")
        text = f"CKA with the full layer reaches {delta:g}: " + "; ".join(parts) + "."
        crit = _same_group(dr_long, g)
        if "codec" in crit.columns and crit["codec"].nunique() > 1:  # CKA has no codec: the float32 vectors' k*
            crit = crit[crit["codec"] == ("float32" if (crit["codec"] == "float32").any() else crit["codec"].iloc[0])]
        crit = crit[crit["reached"]]
        by_k = g.groupby(["selector", "n_neurons"])[metric].mean()  # the same k: the same subset
        notes = []
        for _, r in crit.iterrows():
            sel, k = r["selector"], int(r["critical_n_neurons"])
            if sel in by_k.index.get_level_values(0) and k in by_k.loc[sel].index:
                notes.append(f"{sel} {by_k.loc[(sel, k)]:.2f} at k* = {k} (f* = {_f(r['critical_fraction'])})")
        if notes:
            text += " At the accuracy critical mass the CKA is " + "; ".join(notes) + "."
        out.append((title, text))
    return out


def interpret_dr_curve(curve: pd.DataFrame, delta: float) -> list[tuple[str, str]]:
    """DR at a lenient, the chosen and the strictest delta, and the ranking of selectors at ``delta``."""
    out = []
    for title, g in _panels(curve):
        lo, hi = float(g["delta"].min()), float(g["delta"].max())
        parts = []
        for sel, s in g.groupby("selector", sort=False):
            at = s.set_index("delta")["dr"]
            d = at.index.to_numpy()
            lo_v, mid_v, hi_v = (float(at.iloc[int(np.argmin(np.abs(d - x)))]) for x in (lo, delta, hi))
            parts.append(f"{sel} {lo_v:.2f} → {mid_v:.2f} → {hi_v:.2f}")
        text = f"DR at δ = {lo:g} → {delta:g} → {hi:g}: " + "; ".join(parts) + "."
        near = g.loc[(g["delta"] - delta).abs() < 1e-9]
        if near["selector"].nunique() > 1:
            top, bottom = near["dr"].max(), near["dr"].min()
            best = ", ".join(near.loc[near["dr"] >= top - 1e-12, "selector"])
            worst = ", ".join(near.loc[near["dr"] <= bottom + 1e-12, "selector"])
            if top - bottom < 1e-12:
                text += f" At δ = {delta:g} all selectors tie (DR {top:.2f})."
            else:
                text += (f" At δ = {delta:g} the most neurons can go with {best} (DR {top:.2f}), the fewest with "
                         f"{worst} ({bottom:.2f}).")
        out.append((title, text))
    return out


def _at_size(index: pd.Index, k: float):
    """The tested size (number of neurons) closest to ``k`` from above (a grid k* is always a tested one)."""
    above = index[index >= k - 1e-9]
    return above.min() if len(above) else index.max()


def _class_names(drops: pd.DataFrame) -> dict:
    if "class_name" not in drops.columns:
        return {}
    return drops.groupby("class")["class_name"].first().to_dict()


def _same_group(dr_long: pd.DataFrame, g: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``dr_long`` of the group the panel ``g`` shows: equal in every group key constant in ``g``
    (model, dataset, layer, solver, weights, pooling, codec), so one codec's k* never labels another's panel."""
    keys = [k for k in (*GROUP_KEYS, *OPTIONAL_KEYS) if k in dr_long.columns and k in g.columns and g[k].nunique() == 1]
    mask = np.ones(len(dr_long), dtype=bool)
    for k in keys:
        mask &= (dr_long[k].astype(str) == str(g[k].iloc[0])).to_numpy()
    return dr_long[mask]


def interpret_class_drops(drops: pd.DataFrame, dr_long: pd.DataFrame, selector: str) -> list[tuple[str, str]]:
    """Mean and largest class drop at the selector's critical mass and at the smallest fraction."""
    out = []
    for title, g in _panels(drops):
        # By size k: fractions that round to the same k are one fit.
        by = g.pivot_table(index="n_neurons", columns="class", values="drop", aggfunc="mean").sort_index()
        names = _class_names(g)
        r = _same_group(dr_long, g)
        r = r[r["selector"] == selector]
        parts = []
        if len(r) and bool(r["reached"].iloc[0]):
            k = _at_size(by.index, float(r["critical_n_neurons"].iloc[0]))
            row = by.loc[k]
            worst = row.idxmax()
            ratio = f" ({row[worst] / row.mean():.1f}× the mean)" if row.mean() > 1e-9 else ""
            parts.append(f"At the critical mass of {selector} subsets (k* = {int(k)} neurons, f* = "
                         f"{_f(float(r['critical_fraction'].iloc[0]))}) classes lose {row.mean():.3f} accuracy on "
                         f"average, {class_label(worst, names.get(worst))} the most: {row[worst]:.3f}{ratio}.")
        k0 = by.index.min()
        row = by.loc[k0]
        f0 = float(g.loc[g["n_neurons"] == k0, "fraction"].min())
        parts.append(f"At the smallest size ({int(k0)} neurons, fraction {_f(f0)}) the mean drop is {row.mean():.3f} "
                     f"and the largest {row.max():.3f} ({class_label(row.idxmax(), names.get(row.idxmax()))}).")
        out.append((title, " ".join(parts)))
    return out


def interpret_gini(gtab: pd.DataFrame, dr_long: pd.DataFrame) -> list[tuple[str, str]]:
    """Gini of class accuracies for the full layer, at each selector's critical mass and smallest fraction."""
    out = []
    for title, g in _panels(gtab):
        means = g.groupby(["selector", "n_neurons"])["gini"].mean()
        if FULL_SELECTOR not in means.index.get_level_values(0):
            continue
        full = float(means.loc[FULL_SELECTOR].mean())
        parts = []
        for sel in [s for s in order_selectors(g["selector"].unique()) if s != FULL_SELECTOR]:
            c = means.loc[sel].sort_index()
            r = _same_group(dr_long, g)
            r = r[r["selector"] == sel]
            bits = []
            if len(r) and bool(r["reached"].iloc[0]):
                k = _at_size(c.index, float(r["critical_n_neurons"].iloc[0]))
                bits.append(f"{c[k]:.3f} at k* = {int(k)} (f* = {_f(float(r['critical_fraction'].iloc[0]))})")
            bits.append(f"{c.iloc[0]:.3f} at {int(c.index[0])} neuron(s)")
            parts.append(f"{sel} " + ", ".join(bits))
        out.append((title, f"Gini of the class accuracies: full layer {full:.3f}; " + "; ".join(parts) + "."))
    return out


def interpret_heatmap(dr_long: pd.DataFrame, delta: float, selector: str) -> list[tuple[str, str]]:
    """Where redundancy is highest and lowest, per-model means, and how other selectors compare."""
    sub = dr_long[dr_long["selector"] == selector]
    if sub.empty:
        return []
    hi, lo = sub.loc[sub["dr"].idxmax()], sub.loc[sub["dr"].idxmin()]
    text = (f"{selector} subsets: highest DR({delta:g}) {hi['dr']:.2f} ({hi['model']} on {hi['dataset']}), "
            f"lowest {lo['dr']:.2f} ({lo['model']} on {lo['dataset']}).")
    if sub["model"].nunique() > 1:
        by = ["model", *(k for k in OPTIONAL_KEYS if k in sub.columns and sub[k].nunique() > 1)]
        means = sub.groupby(by)["dr"].mean().sort_values(ascending=False)
        means.index = [" | ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in means.index]
        text += " Mean over datasets: " + ", ".join(f"{m} {v:.2f}" for m, v in means.items()) + "."
    out = [("models and datasets", text)]
    others = [s for s in dict.fromkeys(dr_long["selector"]) if s != selector]
    if others:
        keys = [k for k in (*GROUP_KEYS, *OPTIONAL_KEYS) if k in dr_long.columns]
        wide = dr_long.pivot_table(index=keys, columns="selector", values="dr")
        bits = []
        for s in others:
            both = wide[[selector, s]].dropna()
            bits.append(f"{s} ≥ {selector} in {int((both[s] >= both[selector] - 1e-12).sum())} of {len(both)}")
        out.append(("selectors", "Model–dataset pairs where another selector is at least as redundant: "
                    + "; ".join(bits) + "."))
    return out
