"""The study sections of a report: which neurons, and what exporting the critical mass saves.

A ``critmass study`` sweep leaves, beside ``results.parquet``, optional tables that the report shows when they are
there (and skips, leaving the page as it was, when they are not):

* ``neurons.parquet``: the concatenated outputs of :func:`critmass.metrics.top_neurons` (the top neurons of a
  ranking per feature set), with optionally ``neuron_overlap.parquet`` (:func:`critmass.metrics.neuron_overlap`:
  do two datasets use the same neurons?) and ``neuron_stability.parquet``
  (:func:`critmass.metrics.neuron_stability`: do bootstrap resamples pick them again?): the "Which neurons"
  section and ``tables/neurons.csv``, ``tables/neuron_overlap.csv``, ``tables/neuron_stability.csv``;
* ``export.parquet``: one row per (model, dataset, layer, solver) exported at its critical mass (bytes per stored
  vector, backbone and head parameters, FLOPs, accuracy cost with its paired bootstrap CI): the "Spending it"
  section and ``tables/export.csv``;
* ``study_table.parquet``: the study's Table 1 (:func:`critmass.study.study_table`, with the report's ``delta``
  as a column), one row per (model, dataset, layer): DR with its CI and k* for random neurons, PCA and the best
  supervised ranking, and the diffuseness. The page's first section, "The study: Table 1", and
  ``tables/study_table.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_write_bytes
from ..exceptions import DataError
from ._html import esc, html_table

__all__ = ["NEURONS_FILE", "OVERLAP_FILE", "STABILITY_FILE", "EXPORT_FILE", "NEURONS_REQUIRED", "OVERLAP_REQUIRED",
           "STABILITY_REQUIRED", "EXPORT_REQUIRED", "EXPORT_OPTIONAL", "EXPORT_KINDS", "TOP_SHOWN",
           "read_study_table", "neuron_top_table", "neuron_overlap_display", "neuron_stability_display",
           "interpret_neurons", "interpret_overlap", "interpret_stability", "export_table", "export_display",
           "interpret_export", "STUDY_TABLE_FILE", "STUDY_TABLE_REQUIRED", "study_table_display",
           "interpret_study_table", "read_study", "study_outputs"]

NEURONS_FILE = "neurons.parquet"
OVERLAP_FILE = "neuron_overlap.parquet"
STABILITY_FILE = "neuron_stability.parquet"
EXPORT_FILE = "export.parquet"
STUDY_TABLE_FILE = "study_table.parquet"

#: Columns the report reads from each table (``score``, ``n_features``, ``weights`` and ``pooling`` of the
#: neuron tables are shown when present; the overlap's ``selector`` too).
NEURONS_REQUIRED = ("model", "dataset", "layer", "selector", "rank", "neuron")
OVERLAP_REQUIRED = ("model", "layer", "k", "dataset_a", "dataset_b", "n_shared", "jaccard", "chance")
STABILITY_REQUIRED = ("model", "dataset", "layer", "selector", "k", "jaccard", "chance")
EXPORT_REQUIRED = ("model", "dataset", "layer", "solver", "kind", "k", "n_features")
#: Optional numeric columns of ``export.parquet``: NaN when absent (``accuracy_cost`` is then full - subset). A
#: ``not-reached`` row (no subset below the whole layer reaches delta x full: nothing to export) has them NaN.
EXPORT_OPTIONAL = ("fraction", "seed", "delta", "bytes_full", "bytes_reduced", "params_full", "params_exported",
                   "flops_full", "flops_exported", "head_params_full", "head_params_reduced", "full_test_accuracy",
                   "subset_test_accuracy", "accuracy_cost", "accuracy_cost_low", "accuracy_cost_high",
                   "latency_full_ms", "latency_exported_ms")
#: Columns of ``study_table.parquet``: ``critmass.study.STUDY_COLUMNS``, spelled out here because the report sits
#: below the study in the package's layering (tests/test_layering.py); ``delta`` is read when present.
STUDY_TABLE_REQUIRED = ("model", "dataset", "layer", "n_features", "full_accuracy", "dr_random", "dr_random_low",
                        "dr_random_high", "k_random", "dr_pca", "dr_pca_low", "dr_pca_high", "k_pca", "best_selector",
                        "dr_best", "dr_best_low", "dr_best_high", "k_best", "diffuseness", "diffuseness_bound")
#: The δ of a study table without a ``delta`` column (``critmass study``'s default).
STUDY_DEFAULT_DELTA = 0.9
#: ``kind`` of an export (``critmass export``'s config), or ``not-reached`` when there was nothing to export.
EXPORT_KINDS = ("pruned", "full", "head-only", "not-reached")
#: Neurons listed per feature set on the page (``tables/neurons.csv`` has them all).
TOP_SHOWN = 10

_WHAT = {
    NEURONS_FILE: "the concatenated outputs of critmass.metrics.top_neurons",
    OVERLAP_FILE: "the concatenated outputs of critmass.metrics.neuron_overlap",
    STABILITY_FILE: "the concatenated outputs of critmass.metrics.neuron_stability",
    EXPORT_FILE: "one row per exported (model, dataset, layer, solver)",
    STUDY_TABLE_FILE: "the output of critmass.study.study_table, one row per (model, dataset, layer)",
}
_FIX = "run `critmass study` again into that directory, or delete the file"


def read_study_table(run_dir, name: str, required) -> pd.DataFrame | None:
    """``run_dir/name``, checked for ``required`` columns; None when absent or empty (0 rows).

    Raises
    ------
    DataError
        An unreadable table or one that lacks required columns (one line naming the file and the fix).
    """
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a malformed file
        raise DataError(f"cannot read {path} as Parquet ({type(exc).__name__}); {_FIX}") from None
    if table.empty:
        return None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; pass {_WHAT[name]} (needs "
                        f"{', '.join(required)}): {_FIX}")
    return table


# ------------------------------------------------------------------------------------------ formatting helpers
def _num(x, digits: int = 3) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.{digits}f}"


def _g(x) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.3g}"


def _count(x) -> str:
    """A count (parameters, FLOPs): exact up to 9,999, then with K, M or G and three significant digits."""
    if x is None or pd.isna(x):
        return "–"
    x = float(x)
    for above, div, unit in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "K")):
        if abs(x) >= above:
            return f"{x / div:.3g}{unit}"
    return f"{round(x):,}"


def _ci(lo, hi, scale: float = 1.0, digits: int = 2) -> str:
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return ""
    return f" [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def _varying(df: pd.DataFrame, cols) -> list[str]:
    return [c for c in cols if c in df.columns and df[c].astype(str).nunique() > 1]


def _title(key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return " | ".join(map(str, key))


# ------------------------------------------------------------------------------------------------ which neurons
def _neuron_keys(df: pd.DataFrame) -> list[str]:
    """(model, [weights], layer, [pooling], selector, dataset): one feature set and ranking per group."""
    return ["model", *_varying(df, ("weights",)), "layer", *_varying(df, ("pooling",)), "selector", "dataset"]


def _neuron(n, s) -> str:
    return f"#{int(n)}" + ("" if s is None or pd.isna(s) else f" ({s:.3g})")


def neuron_top_table(neurons: pd.DataFrame, top: int = TOP_SHOWN) -> pd.DataFrame:
    """Per (model, layer, selector, dataset): the first ``top`` neurons by rank, ``#index (score)``, best first."""
    keys = _neuron_keys(neurons)
    has_score = "score" in neurons.columns
    rows = []
    for key, g in neurons.groupby(keys, sort=False, dropna=False):
        g = g.sort_values("rank", kind="stable").head(top)
        scores = g["score"] if has_score else [np.nan] * len(g)
        row = dict(zip(keys, map(str, key)))
        if "n_features" in g.columns:
            row["width"] = str(int(g["n_features"].iloc[0]))
        row[f"top {top} neurons (score)"] = ", ".join(_neuron(n, s) for n, s in zip(g["neuron"], scores))
        rows.append(row)
    return pd.DataFrame(rows)


def interpret_neurons(neurons: pd.DataFrame, top: int = TOP_SHOWN) -> list[tuple[str, str]]:
    """Per (model, layer, selector): each dataset's best neuron and the neurons every dataset's top list shares."""
    keys = [k for k in _neuron_keys(neurons) if k != "dataset"]
    out = []
    for key, g in neurons.groupby(keys, sort=False, dropna=False):
        tops, best = {}, []
        for ds, h in g.groupby("dataset", sort=False):
            h = h.sort_values("rank", kind="stable")
            tops[str(ds)] = [int(n) for n in h["neuron"].head(top)]
            first = h.iloc[0]
            score = first["score"] if "score" in h.columns else np.nan
            best.append(f"{_neuron(first['neuron'], score)} on {ds}")
        text = "Best neuron: " + "; ".join(best) + "."
        if len(tops) > 1:
            lists = list(tops.values())
            shared = [n for n in lists[0] if all(n in other for other in lists[1:])]
            n = min(map(len, lists))
            text += (f" {len(shared)} of the top {n} are in every dataset's list"
                     + (f" ({', '.join(f'#{i}' for i in shared)})" if shared else "") + ".")
        out.append((_title(key), text))
    return out


def _overlap_keys(ov: pd.DataFrame) -> list[str]:
    return ["model", *_varying(ov, ("weights",)), "layer", *(["selector"] if "selector" in ov.columns else [])]


def neuron_overlap_display(ov: pd.DataFrame) -> pd.DataFrame:
    """The overlap table for the page: shared / k, Jaccard next to chance."""
    keys = _overlap_keys(ov)
    ratio = ov["jaccard"] / ov["chance"].where(ov["chance"] > 0)
    return pd.DataFrame({
        **{k: ov[k].astype(str) for k in keys},
        "k": ov["k"].astype(int).astype(str),
        "datasets": ov["dataset_a"].astype(str) + " vs " + ov["dataset_b"].astype(str),
        "shared / k": ov["n_shared"].astype(int).astype(str) + " / " + ov["k"].astype(int).astype(str),
        "Jaccard": ov["jaccard"].map(_num),
        "chance": ov["chance"].map(_g),
        "Jaccard / chance": ratio.map(lambda v: "–" if pd.isna(v) else f"{v:.1f}×"),
    })


def interpret_overlap(ov: pd.DataFrame) -> list[tuple[str, str]]:
    """Per (model, layer, selector) at its largest k: the mean overlap of the dataset pairs against chance."""
    out = []
    for key, g in ov.groupby(_overlap_keys(ov), sort=False, dropna=False):
        k = int(g["k"].max())
        g = g[g["k"] == k]
        j, ch = float(g["jaccard"].mean()), float(g["chance"].mean())
        vs = f"(Jaccard {j:.3f}, chance {ch:.3g}" + (f": {j / ch:.1f}× chance" if ch > 0 else "") + ")"
        if len(g) == 1:
            r = g.iloc[0]
            text = (f"At k = {k} the top-k sets of {r['dataset_a']} and {r['dataset_b']} share {int(r['n_shared'])} "
                    f"of {k} neurons {vs}")
        else:
            text = (f"At k = {k} the top-k sets of {len(g)} dataset pairs share {g['n_shared'].mean():.1f} of {k} "
                    f"neurons on average {vs}")
        if len(g) > 1:
            hi, lo = g.loc[g["jaccard"].idxmax()], g.loc[g["jaccard"].idxmin()]
            text += (f"; most alike {hi['dataset_a']} and {hi['dataset_b']} ({hi['jaccard']:.3f}), least "
                     f"{lo['dataset_a']} and {lo['dataset_b']} ({lo['jaccard']:.3f})")
        text += (". Near chance, the datasets use unrelated neurons." if j < 1.5 * ch else
                 ". Above chance: partly the same neurons serve these datasets.")
        out.append((_title(key), text))
    return out


def _col(df: pd.DataFrame, c: str) -> pd.Series:
    return df[c] if c in df.columns else pd.Series(np.nan, index=df.index)


def neuron_stability_display(st: pd.DataFrame) -> pd.DataFrame:
    """The stability table for the page: overlap of resampled top-k sets with the run's and between resamples."""
    keys = _neuron_keys(st)
    lo, hi = _col(st, "jaccard_low"), _col(st, "jaccard_high")
    out = {**{k: st[k].astype(str) for k in keys}, "k": st["k"].astype(int).astype(str)}
    if "n_boot" in st.columns:
        out["resamples"] = st["n_boot"].astype(int).astype(str)
    out["Jaccard with the run [95%]"] = [_num(j) + _ci(a, b, digits=3) for j, a, b in zip(st["jaccard"], lo, hi)]
    if "pairwise" in st.columns:
        plo, phi = _col(st, "pairwise_low"), _col(st, "pairwise_high")
        out["between resamples [95%]"] = [_num(j) + _ci(a, b, digits=3) for j, a, b in zip(st["pairwise"], plo, phi)]
    if "n_core" in st.columns:
        out["in every resample"] = st["n_core"].astype(int).astype(str) + " / " + st["k"].astype(int).astype(str)
    out["chance"] = st["chance"].map(_g)
    return pd.DataFrame(out)


def interpret_stability(st: pd.DataFrame) -> list[tuple[str, str]]:
    """Per (model, layer, selector, dataset) at its largest k: how much of the top-k resamples find again."""
    out = []
    for key, g in st.groupby(_neuron_keys(st), sort=False, dropna=False):
        r = g.loc[g["k"].idxmax()]
        k = int(r["k"])
        text = (f"Bootstrap refits find the run's top {k} again with Jaccard {r['jaccard']:.3f}"
                f"{_ci(r.get('jaccard_low'), r.get('jaccard_high'), digits=3)} (chance {r['chance']:.3g})")
        if "n_core" in g.columns and not pd.isna(r["n_core"]):
            text += f"; {int(r['n_core'])} of the {k} neurons are in every resample's top {k}"
        out.append((_title(key), text + "."))
    return out


def _notes_html(notes: list[tuple[str, str]]) -> str:
    items = "".join(f"<li><b>{esc(t)}</b>: {esc(x)}</li>" for t, x in notes)
    return f'<ul class="cm-notes">{items}</ul>' if items else ""


def _neurons_section(neurons, overlap, stability) -> tuple[str, str, str]:
    parts = ['<section id="sec-neurons"><h2>Which neurons</h2>'
             "<p>The neurons a ranking selector puts first, per feature set; whether different datasets pick the "
             "same ones (overlap of the top-k sets against two random k-subsets: chance); and whether the picks "
             "survive a bootstrap of the fit rows (stability).</p>"]
    if neurons is not None:
        parts.append(html_table(neuron_top_table(neurons), table_id="neurons", caption=(
            f"Per model, layer, selector and dataset: the top {TOP_SHOWN} neurons, best first, as #index (the "
            "selector's score, higher is better; none where the selector has no score). All listed neurons as "
            "tables/neurons.csv.")))
        parts.append(_notes_html(interpret_neurons(neurons)))
    if overlap is not None:
        parts.append("<h3>Overlap between datasets</h3>" + html_table(neuron_overlap_display(overlap),
                     table_id="neuron-overlap", caption=(
                         "Per pair of datasets of one model and layer: neurons in both top-k sets (shared / k), the "
                         "Jaccard overlap |A ∩ B| / |A ∪ B| and its mean for two random k-subsets of the layer "
                         "(chance). Also as tables/neuron_overlap.csv.")))
        parts.append(_notes_html(interpret_overlap(overlap)))
    if stability is not None:
        parts.append("<h3>Stability under resampling</h3>" + html_table(neuron_stability_display(stability),
                     table_id="neuron-stability", caption=(
                         "The selector refitted on bootstrap resamples of the run's fit rows: mean Jaccard overlap "
                         "of each resample's top-k with the run's and between resamples, with the 2.5 / 97.5 "
                         "percentiles over the resamples, the neurons in every resample's top-k, and the chance "
                         "overlap. Also as tables/neuron_stability.csv.")))
        parts.append(_notes_html(interpret_stability(stability)))
    return "sec-neurons", "Which neurons", "".join(parts) + "</section>"


# --------------------------------------------------------------------------------------------------- export
def export_table(export: pd.DataFrame) -> pd.DataFrame:
    """``tables/export.csv``: the rows of ``export.parquet`` (absent optional columns as NaN, ``accuracy_cost``
    filled in as full - subset where missing) plus ``bytes_ratio`` (reduced / full), ``params_ratio``,
    ``flops_ratio`` (exported / full) and ``flops_saved`` (1 - flops_ratio)."""
    t = export.copy()
    for c in EXPORT_OPTIONAL:
        if c not in t.columns:
            t[c] = np.nan
    for c in ("selector", "export_dir"):
        if c not in t.columns:
            t[c] = ""
    cost = t["full_test_accuracy"].astype(float) - t["subset_test_accuracy"].astype(float)
    t["accuracy_cost"] = t["accuracy_cost"].astype(float).fillna(cost)

    def ratio(a, b):
        a, b = t[a].astype(float), t[b].astype(float)
        return b / a.where(a > 0)

    t["bytes_ratio"] = ratio("bytes_full", "bytes_reduced")
    t["params_ratio"] = ratio("params_full", "params_exported")
    t["flops_ratio"] = ratio("flops_full", "flops_exported")
    t["flops_saved"] = 1.0 - t["flops_ratio"]
    return t.reset_index(drop=True)


def _arrow(a, b, fmt) -> str:
    if pd.isna(a) and pd.isna(b):
        return "–"
    return f"{fmt(a)} → {fmt(b)}"  # each formatter writes NaN as –


def _change(a, b) -> str:
    if pd.isna(a) or pd.isna(b) or a <= 0:
        return ""
    return f" ({100 * (b / a - 1):+.1f}%)".replace("-", "−")


def export_display(t: pd.DataFrame) -> pd.DataFrame:
    """:func:`export_table` formatted for the page, one row per export."""
    keys = ["model", "dataset", "layer", *_varying(t, ("solver",))]
    out = {k: t[k].astype(str) for k in keys}
    out["selector"] = t["selector"].astype(str)
    out["kind"] = t["kind"].astype(str)
    out["k* / D"] = t["k"].astype(int).astype(str) + " / " + t["n_features"].astype(int).astype(str)
    out["bytes per vector"] = [
        _arrow(a, b, _count) + (f" ({a / b:.3g}× fewer)" if not (pd.isna(a) or pd.isna(b)) and b > 0 else "")
        for a, b in zip(t["bytes_full"], t["bytes_reduced"])]
    out["parameters"] = [_arrow(a, b, _count) + _change(a, b) for a, b in zip(t["params_full"], t["params_exported"])]
    out["FLOPs"] = [_arrow(a, b, _count) + _change(a, b) for a, b in zip(t["flops_full"], t["flops_exported"])]
    out["head parameters"] = [_arrow(a, b, _count) for a, b in zip(t["head_params_full"], t["head_params_reduced"])]
    out["accuracy full → subset"] = [_arrow(a, b, _num) for a, b in zip(t["full_test_accuracy"],
                                                                          t["subset_test_accuracy"])]
    out["cost (pt) [95% CI]"] = [_num(100 * c, 2) + _ci(lo, hi, 100) for c, lo, hi in
                                  zip(t["accuracy_cost"], t["accuracy_cost_low"], t["accuracy_cost_high"])]
    if t[["latency_full_ms", "latency_exported_ms"]].notna().any().any():
        out["CPU latency (ms)"] = [_arrow(a, b, lambda v: _num(v, 2)) for a, b in
                                   zip(t["latency_full_ms"], t["latency_exported_ms"])]
    return pd.DataFrame(out)


def interpret_export(t: pd.DataFrame) -> list[tuple[str, str]]:
    """One sentence per export: bytes per vector, backbone FLOPs and the accuracy cost of keeping the critical mass
    (or, for a ``not-reached`` row, that no subset below the whole layer reaches the target)."""
    keys = ["model", "dataset", *_varying(t, ("solver",))]
    out = []
    for _, r in t.iterrows():
        if r["kind"] == "not-reached" or pd.isna(r["bytes_full"]) or pd.isna(r["bytes_reduced"]):
            target = "δ × full" if pd.isna(r["delta"]) else f"{r['delta']:g} × full"
            sel = f"{r['selector']} " if str(r["selector"]) else ""
            text = (f"No subset of {sel}neurons of {r['layer']} smaller than the whole layer reaches {target} "
                    f"(k* = {int(r['k'])} of {int(r['n_features'])}), so nothing smaller was exported.")
            out.append((_title(tuple(r[k] for k in keys)), text))
            continue
        frac = r["fraction"] if not pd.isna(r["fraction"]) else r["k"] / r["n_features"]
        b = r["bytes_full"] / r["bytes_reduced"] if r["bytes_reduced"] > 0 else np.nan
        text = (f"Keeping the critical mass k* = {int(r['k'])} of {int(r['n_features'])} neurons of {r['layer']} "
                f"(fraction {frac:.3g}) cuts bytes per vector {b:.3g}×")
        if r["kind"] == "head-only":
            text += " (head-only export: the backbone is not part of it)"
        elif pd.isna(r["flops_saved"]):
            text += " (backbone FLOPs not counted)"
        else:
            text += f" and backbone FLOPs by {100 * r['flops_saved']:.1f}%"
        ci = _ci(r["accuracy_cost_low"], r["accuracy_cost_high"], 100)
        text += f" at an accuracy cost of {100 * r['accuracy_cost']:.2f} pt{ci}."
        out.append((_title(tuple(r[k] for k in keys)), text))
    return out


def _export_section(t: pd.DataFrame) -> tuple[str, str, str]:
    body = ('<section id="sec-export"><h2>Spending it: the exported critical-mass subset</h2>'
            "<p>Each (model, dataset, layer, solver) exported with only its critical-mass neurons: what a stored "
            "vector, the model and a forward pass cost then, and what accuracy it gives up.</p>"
            + html_table(export_display(t), table_id="export", caption=(
                "Per export: bytes per stored vector of the full layer → the kept k* values; backbone + head "
                "parameters and FLOPs (fvcore: one multiply-accumulate = 1) of the full model → the exported one "
                "(– for a head-only export, or when not counted); head parameters; test accuracy of the full layer → "
                "the subset and the cost in percentage points with its paired bootstrap 95% CI over test samples. "
                "kind: pruned (backbone channels cut), full (backbone kept whole), head-only, or not-reached (no "
                "subset below the whole layer reaches δ × full: nothing exported). Also as tables/export.csv (with "
                "the ratios)."))
            + _notes_html(interpret_export(t)) + "</section>")
    return "sec-export", "Exported subset", body


def _read_export(run_dir) -> pd.DataFrame | None:
    t = read_study_table(run_dir, EXPORT_FILE, EXPORT_REQUIRED)
    if t is None:
        return None
    bad = sorted(set(map(str, t["kind"].unique())) - set(EXPORT_KINDS))
    if bad:
        raise DataError(f"{Path(run_dir) / EXPORT_FILE} has kind value(s) {', '.join(map(repr, bad))}; expected "
                        f"{', '.join(EXPORT_KINDS)}: {_FIX}")
    return t


# ------------------------------------------------------------------------------------------ the study's Table 1
def _study_keys(t: pd.DataFrame) -> list[str]:
    """dataset, with model and layer in front / behind where they vary."""
    return [*_varying(t, ("model",)), "dataset", *_varying(t, ("layer",))]


def _study_delta(t: pd.DataFrame) -> pd.Series:
    """Each row's δ: its ``delta`` where the table has one, else :data:`STUDY_DEFAULT_DELTA`."""
    d = _col(t, "delta").astype(float)
    return d.fillna(STUDY_DEFAULT_DELTA)


def _bound(b) -> str:
    """``diffuseness_bound`` ('' / None / 'lower' / 'upper') as a suffix: ``" (lower bound)"``."""
    if b is None or (not isinstance(b, str) and pd.isna(b)) or not str(b).strip():
        return ""
    return f" ({str(b).strip()} bound)"


def _k(x) -> str:
    return "–" if x is None or pd.isna(x) else str(int(x))


def _dr_ci(v, lo, hi) -> str:
    return "–" if v is None or pd.isna(v) else f"{v:.2f}{_ci(lo, hi)}"


def study_table_display(t: pd.DataFrame) -> pd.DataFrame:
    """``study_table.parquet`` formatted for the page: one row per dataset (and model / layer where they vary):
    width, full accuracy, DR(δ) [95% CI] and k* for random neurons, PCA and the best supervised ranking, and the
    diffuseness ("–" where a selector is absent)."""
    deltas = _study_delta(t)
    one = deltas.nunique() == 1
    dr_name = f"DR({deltas.iloc[0]:g})" if one else "DR(δ)"
    out = {k: t[k].astype(str) for k in _study_keys(t)}
    if not one:
        out["δ"] = deltas.map(lambda v: f"{v:g}")
    out["neurons"] = t["n_features"].map(_k)
    out["full accuracy"] = t["full_accuracy"].map(_num)
    for tag, name in (("random", "random"), ("pca", "PCA")):
        out[f"{dr_name} {name} [95% CI]"] = [_dr_ci(*v) for v in zip(t[f"dr_{tag}"], t[f"dr_{tag}_low"],
                                                                       t[f"dr_{tag}_high"])]
        out[f"k* {name}"] = t[f"k_{tag}"].map(_k)
    out["best ranking"] = [str(s) if isinstance(s, str) and s else "–" for s in t["best_selector"]]
    out[f"{dr_name} best [95% CI]"] = [_dr_ci(*v) for v in zip(t["dr_best"], t["dr_best_low"], t["dr_best_high"])]
    out["k* best"] = t["k_best"].map(_k)
    out["diffuseness"] = ["–" if pd.isna(d) else f"{d:.2f}{_bound(b)}"
                          for d, b in zip(t["diffuseness"], t["diffuseness_bound"])]
    return pd.DataFrame(out)


def interpret_study_table(t: pd.DataFrame) -> list[tuple[str, str]]:
    """One sentence per row of ``study_table.parquet``: how many random neurons reach δ × full (k*, DR with its CI)
    and how many the best supervised ranking needs (with the diffuseness)."""
    keys = _study_keys(t)
    out = []
    for (_, r), delta in zip(t.iterrows(), _study_delta(t)):
        target = f"{100 * delta:g}% of the full layer's accuracy ({_num(r['full_accuracy'])})"
        n = _k(r["n_features"])
        if pd.isna(r["k_random"]):
            text = f"random neurons were not probed (the full layer's accuracy is {_num(r['full_accuracy'])})"
        elif not pd.isna(r["n_features"]) and r["k_random"] >= r["n_features"]:
            text = f"random neurons need the whole layer (k* = {n} of {n}) to reach {target}"
        else:
            text = (f"random neurons reach {target} with k* = {_k(r['k_random'])} of {n} "
                    f"(DR {_dr_ci(r['dr_random'], r['dr_random_low'], r['dr_random_high'])})")
        best = r["best_selector"]
        if not (isinstance(best, str) and best):
            text += "; no supervised ranking was run"
        else:
            text += f"; the best ranking, {best}, needs {_k(r['k_best'])}"
            if not pd.isna(r["diffuseness"]):
                b = _bound(r["diffuseness_bound"])[2:-1]  # 'lower bound'
                art = "an" if b[:1] in ("a", "e", "i", "o", "u") else "a"
                text += f" (diffuseness {r['diffuseness']:.1f}" + (f", {art} {b}" if b else "") + ")"
        out.append((_title(tuple(r[k] for k in keys)), text + "."))
    return out


def _study_table_section(t: pd.DataFrame) -> tuple[str, str, str]:
    keys = _study_keys(t)
    per = keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + f" and {keys[-1]}"
    body = ('<section id="study-table"><h2>The study: Table 1</h2>'
            + html_table(study_table_display(t), table_id="study", caption=(
                f"Per {per}: the width of the layer (neurons), the full layer's test accuracy, and for random "
                "neurons, PCA components and the best supervised ranking (the one with the smallest k*) the "
                "critical mass k* (smallest tested subset whose mean accuracy reaches δ × full) and DR(δ) = 1 − "
                "k* / width with its 95% bootstrap CI over seeds; diffuseness = k*(random) / k*(best ranking): 1 = "
                "no neuron is special, a lower or upper bound where the tested sizes only bound it. –: not in this "
                "run. Also as tables/study_table.csv."))
            + _notes_html(interpret_study_table(t)) + "</section>")
    return "study-table", "Study table", body


# ---------------------------------------------------------------------------------------------------- entry
def read_study(run_dir) -> dict[str, pd.DataFrame | None] | None:
    """The study tables of a run directory, checked (``neurons``, ``overlap``, ``stability``, ``export``,
    ``table`` (``study_table.parquet``): each None when absent or empty); None when it holds none of them.

    Raises
    ------
    DataError
        A table that cannot be read, lacks the columns the report reads, or (export) has an unknown ``kind``.
    """
    tabs = {"neurons": read_study_table(run_dir, NEURONS_FILE, NEURONS_REQUIRED),
            "overlap": read_study_table(run_dir, OVERLAP_FILE, OVERLAP_REQUIRED),
            "stability": read_study_table(run_dir, STABILITY_FILE, STABILITY_REQUIRED),
            "export": _read_export(run_dir),
            "table": read_study_table(run_dir, STUDY_TABLE_FILE, STUDY_TABLE_REQUIRED)}
    return None if all(t is None for t in tabs.values()) else tabs


_Section = tuple[str, str, str]


def study_outputs(study: dict[str, pd.DataFrame | None] | None, out
                  ) -> tuple[dict[str, Path], list[_Section], list[str], list[_Section]] | None:
    """Write the study tables of :func:`read_study` under ``out/tables`` and build their page sections.

    Returns (tables written by file name, page sections, summary lines, lead sections: the ones that open the
    page, right after its summary: the study's Table 1); None for ``study`` None.
    """
    if study is None:
        return None
    neurons, overlap, stability, export = (study[k] for k in ("neurons", "overlap", "stability", "export"))
    texts: dict[str, pd.DataFrame] = {}
    sections, summary, lead = [], [], []
    if study.get("table") is not None:
        texts["study_table.csv"] = study["table"]
        lead.append(_study_table_section(study["table"]))
    if neurons is not None or overlap is not None or stability is not None:
        sections.append(_neurons_section(neurons, overlap, stability))
        if neurons is not None:
            texts["neurons.csv"] = neurons
            n = neurons.groupby(_neuron_keys(neurons), sort=False, dropna=False).ngroups
            summary.append(f"top neurons: {n} list(s), selector(s) "
                           f"{', '.join(map(str, dict.fromkeys(neurons['selector'])))}")
        if overlap is not None:
            texts["neuron_overlap.csv"] = overlap
        if stability is not None:
            texts["neuron_stability.csv"] = stability
    if export is not None:
        tab = export_table(export)
        texts["export.csv"] = tab
        sections.append(_export_section(tab))
        kinds = ", ".join(dict.fromkeys(map(str, tab["kind"])))
        summary.append(f"exported critical-mass subsets: {len(tab)} ({kinds})")
    tables = {}
    for fname, df in texts.items():
        target = Path(out) / "tables" / fname
        atomic_write_bytes(target, df.to_csv(index=False).encode("utf-8"))
        tables[fname] = target
    return tables, sections, summary, lead
