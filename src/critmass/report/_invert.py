"""The partial-inversion section of a report: what ``critmass invert --out RUN_DIR`` wrote, when it is there.

Reads ``invert.parquet`` (columns :data:`critmass.invert.COLUMNS`), copies the run's image grids
(``invert_grid*.png``), redraws the rest-of-layer error figure from the table with
:func:`critmass.invert.plot_rest_error`, and summarises the table per selector x fraction: the partial inversion
next to the full-layer inversion (the reference) and the noise seed (the floor), measured on the same mask.

A study runs the inversion on a few images of each of its datasets and concatenates the tables: ``invert.parquet``
then has a ``dataset`` column and the grids are ``invert_grid_<dataset>__<selector>.png``. The table, the notes,
the settings and the rest-of-layer error figure (one per dataset) are then kept apart by dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import DataError
from ..invert import METRICS, plot_rest_error
from ._html import esc, html_figure, html_table

__all__ = ["INVERT_FILE", "INVERT_REQUIRED", "INVERT_FIGURES", "read_inversion", "invert_table", "invert_display",
           "invert_notes", "invert_figures", "invert_sections"]

INVERT_FILE = "invert.parquet"
#: The columns the report reads (a subset of :data:`critmass.invert.COLUMNS`).
INVERT_REQUIRED = ("model", "layer", "target", "selector", "fraction", "k", "n_neurons", "seed", "inversion",
                   *METRICS)
_KINDS = ("partial", "full", "noise")
_KIND_LABELS = {"partial": "partial (subset matched)", "full": "full layer (reference)", "noise": "noise seed (floor)"}
#: Run settings shown above the table (constant per ``critmass invert`` call).
_SETTINGS = ("model", "weights", "dataset", "layer", "pooling", "image_size", "steps", "optimizer", "step_size",
             "regularised", "fake_relu")
#: Name -> (title, navigation label, caption) of the figures this section shows.
INVERT_FIGURES = {
    "invert_grid": (
        "Partial inversion: images", "Inversion images",
        "One row per target: the target image, then the image optimised to match its representation on the "
        "selected neurons only, one column per fraction (ascending), then the image matched on the full layer "
        "(the reference); all start from the same noise seed (first seed shown). Copied from the run directory."),
    "invert_rest_error": (
        "Partial inversion: rest-of-layer error vs fraction", "Rest-of-layer error",
        "Relative L2 error on the neurons NOT matched, at the end of the optimisation (mean over targets and "
        "seeds, log-x), one line per selector; dashed: the full-layer inversion, dotted: the noise seed, both "
        "measured on the same unselected neurons. Where the solid line meets the dashed one, matching the subset "
        "pins down the whole layer; where it stays on the dotted one, the rest of the layer is left free."),
}


def read_inversion(run_dir) -> pd.DataFrame | None:
    """``invert.parquet`` of a run directory, or None when it holds none.

    Raises
    ------
    DataError
        An unreadable or empty table, one that lacks the columns the report reads, or unknown ``inversion`` values.
    """
    path = Path(run_dir) / INVERT_FILE
    if not path.is_file():
        return None
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a malformed file
        raise DataError(f"cannot read {path} as Parquet ({type(exc).__name__}); run `critmass invert ... --out "
                        f"{path.parent}` again") from None
    if table.empty:
        raise DataError(f"{path} is empty (0 rows); run `critmass invert ... --out {path.parent}` again")
    missing = [c for c in INVERT_REQUIRED if c not in table.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; pass the table `critmass invert` writes "
                        f"(needs {', '.join(INVERT_REQUIRED)})")
    bad = sorted(set(map(str, table["inversion"].unique())) - set(_KINDS))
    if bad:
        raise DataError(f"{path} has inversion value(s) {', '.join(map(repr, bad))}; expected partial, full or "
                        "noise (the table `critmass invert` writes)")
    table = table.copy()
    table["fraction"] = table["fraction"].astype(float).round(12)
    return table


def _keys(table: pd.DataFrame) -> list[str]:
    return ["model", *(["dataset"] if "dataset" in table.columns else []), "layer",
            *(["regularised"] if "regularised" in table.columns else [])]


def _datasets(table: pd.DataFrame) -> list[str]:
    """The table's datasets in their order (empty for a single run's table, which has no ``dataset`` column)."""
    return list(dict.fromkeys(table["dataset"].astype(str))) if "dataset" in table.columns else []


def _file_part(name: str) -> str:
    """A dataset name as a study writes it into a file name: letters, digits, ``-`` and ``.`` kept, every other
    character (``/``, ``:``, ``_``, ...) as ``-``."""
    return "".join(c if c.isalnum() or c in "-." else "-" for c in str(name))


def _names(datasets) -> dict[str, str]:
    """File-name part -> dataset name (a grid named with the dataset's own name is matched too)."""
    return {**{str(d): str(d) for d in datasets}, **{_file_part(d): str(d) for d in datasets}}


def invert_table(table: pd.DataFrame) -> pd.DataFrame:
    """Means over targets and seeds per (model, [dataset,] layer, selector, fraction, inversion): ``tables/invert.csv``.

    Rows in the table's selector order, fractions ascending, then partial, full (the reference) and noise (the
    floor); columns ``k``, ``n_neurons``, ``n_targets``, ``n_seeds`` and the mean of each of
    :data:`critmass.invert.METRICS`.
    """
    keys = [*_keys(table), "selector", "fraction", "inversion"]
    t = table.assign(_sel=pd.Categorical(table["selector"], categories=list(dict.fromkeys(table["selector"]))),
                     _kind=pd.Categorical(table["inversion"], categories=list(_KINDS)))
    g = t.groupby([*keys[:-3], "_sel", "fraction", "_kind"], observed=True, sort=True)
    out = g.agg(selector=("selector", "first"), inversion=("inversion", "first"), k=("k", "max"),
                n_neurons=("n_neurons", "max"), n_targets=("target", "nunique"), n_seeds=("seed", "nunique"),
                **{m: (m, "mean") for m in METRICS}).reset_index()
    return out[[*keys, "k", "n_neurons", "n_targets", "n_seeds", *METRICS]].reset_index(drop=True)


def _arrow(a, b) -> str:
    return "–" if pd.isna(a) or pd.isna(b) else f"{a:.3f} → {b:.3f}"


def invert_display(tab: pd.DataFrame) -> pd.DataFrame:
    """:func:`invert_table` formatted for the page (constant model / layer / regularised columns dropped; the
    dataset column, when the table has one, kept)."""
    keep = [k for k in ("model", "dataset", "layer", "regularised")
            if k in tab.columns and (tab[k].nunique() > 1 or k == "dataset")]
    return pd.DataFrame({
        **{k: tab[k].astype(str) for k in keep},
        "selector": tab["selector"].astype(str),
        "fraction": tab["fraction"].map(lambda v: f"{v:g}"),
        "k / D": tab["k"].astype(int).astype(str) + " / " + tab["n_neurons"].astype(int).astype(str),
        "inversion": tab["inversion"].map(_KIND_LABELS),
        "subset error start → end": [_arrow(a, b) for a, b in zip(tab["subset_error_start"],
                                                                  tab["subset_error_end"])],
        "rest-of-layer error start → end": [_arrow(a, b) for a, b in zip(tab["rest_error_start"],
                                                                         tab["rest_error_end"])],
        "cosine (end)": tab["cosine_end"].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}"),
        "targets × seeds": tab["n_targets"].astype(int).astype(str) + " × " + tab["n_seeds"].astype(int).astype(str),
    })


def invert_notes(tab: pd.DataFrame) -> list[tuple[str, str]]:
    """One sentence per selector (and dataset, when the table has them) at its smallest fraction below 1: how far
    the rest of the layer followed. Labelled by the selector, or ``dataset, selector``."""
    notes = []
    by = ["dataset", "selector"] if "dataset" in tab.columns else "selector"
    for key, g in tab.groupby(by, sort=False):
        sel = ", ".join(map(str, key)) if isinstance(by, list) else key
        g = g[g["fraction"] < 1]
        if g.empty:
            continue
        f = g["fraction"].min()
        g = g[g["fraction"] == f]
        at = g.groupby("inversion")[["subset_error_start", "subset_error_end", "rest_error_end"]].mean()
        if not set(_KINDS) <= set(at.index):
            continue
        p, full, noise = (at.loc[k] for k in _KINDS)
        text = (f"at fraction {f:g} (k = {int(g['k'].max())} of {int(g['n_neurons'].max())}) the subset error falls "
                f"from {p['subset_error_start']:.3f} to {p['subset_error_end']:.3f}; the rest-of-layer error ends at "
                f"{p['rest_error_end']:.3f}, against {full['rest_error_end']:.3f} for the full-layer inversion and "
                f"{noise['rest_error_end']:.3f} for the noise seed")
        span = noise["rest_error_end"] - full["rest_error_end"]
        if np.isfinite(span) and span > 1e-12:
            share = (noise["rest_error_end"] - p["rest_error_end"]) / span
            text += f" ({100 * share:.0f}% of the way from the floor to the reference)"
        notes.append((str(sel), text))
    return notes


def _settings(table: pd.DataFrame) -> str:
    settings = {}
    for c in _SETTINGS:
        if c in table.columns:
            vals = list(dict.fromkeys(table[c].tolist()))
            settings[c] = vals[0] if len(vals) == 1 else vals
    settings["seeds"] = sorted(map(int, table["seed"].unique()))

    def targets(t):
        return (list(dict.fromkeys(t["target_name"].astype(str))) if "target_name" in t.columns
                else sorted(map(int, t["target"].unique())))

    settings["targets"] = ({d: targets(g) for d, g in table.groupby(table["dataset"].astype(str), sort=False)}
                           if "dataset" in table.columns else targets(table))
    return "\n".join(f"{k}: {json.dumps(v, default=lambda x: x.item() if hasattr(x, 'item') else str(x))}"
                     for k, v in settings.items())


def invert_figures(run_dir, table: pd.DataFrame) -> dict[str, tuple[object, float]]:
    """Name -> (figure, display scale): the run's grid PNGs as bytes (150 dpi) and the rest-of-layer error figure
    redrawn from the table as a matplotlib Figure (rendered by the report at 200 dpi).

    With a ``dataset`` column the grids come in the table's dataset order, then selector order, and the rest-of-layer
    error is one figure per dataset, ``invert_rest_error_<dataset>``.
    """
    figs: dict[str, tuple[object, float]] = {}
    selectors = list(dict.fromkeys(table["selector"].astype(str)))
    datasets = [_file_part(d) for d in _datasets(table)]
    order = [f"invert_grid_{s}" for s in selectors]
    if datasets:
        order = [n for d in datasets for n in (*(f"invert_grid_{d}__{s}" for s in selectors), f"invert_grid_{d}")]
    grids = sorted(Path(run_dir).glob("invert_grid*.png"),
                   key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.name))
    for p in grids:  # the selectors' order of the table (invert_grid.png: the run's only selector)
        figs[p.stem] = (p.read_bytes(), 130 / 150)
    if datasets:
        for d, g in table.groupby(table["dataset"].astype(str), sort=False):
            fig = plot_rest_error(g)
            fig.axes[0].set_title(d)
            figs[f"invert_rest_error_{_file_part(d)}"] = (fig, 0.65)
    else:
        figs["invert_rest_error"] = (plot_rest_error(table), 0.65)
    return figs


def _grid_title(name: str, datasets=()) -> tuple[str, str]:
    """Title and navigation label of a grid: ``invert_grid_<selector>`` -> "(selector)",
    ``invert_grid_<dataset>__<selector>`` -> "(dataset, selector)", ``invert_grid_<dataset>`` -> "(dataset)"."""
    title, nav, _ = INVERT_FIGURES["invert_grid"]
    rest = name[len("invert_grid_"):] if name.startswith("invert_grid_") else ""
    if not rest:
        return title, nav
    names = _names(datasets)
    if "__" in rest:
        ds, sel = rest.split("__", 1)
        rest = f"{names.get(ds, ds)}, {sel}"
    elif rest in names:
        rest = names[rest]
    return f"{title} ({rest})", f"{nav}: {rest}"


def _figure_text(name: str, datasets=()) -> tuple[str, str, str]:
    """(title, navigation label, caption) of one of :func:`invert_figures`' names."""
    if name.startswith("invert_grid"):
        return (*_grid_title(name, datasets), INVERT_FIGURES["invert_grid"][2])
    if name.startswith("invert_rest_error_"):
        part = name[len("invert_rest_error_"):]
        ds = _names(datasets).get(part, part)
        title, nav, caption = INVERT_FIGURES["invert_rest_error"]
        return f"{title} ({ds})", f"{nav}: {ds}", caption
    return INVERT_FIGURES[name]


def invert_sections(table: pd.DataFrame, tab: pd.DataFrame, pngs: dict[str, tuple[bytes, float]],
                    files: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """The page's "Partial inversion" sections: (anchor, navigation label, HTML) of the table, then the figures."""
    datasets = _datasets(table)
    n_s = table["seed"].nunique()
    if datasets:
        per = table.groupby(table["dataset"].astype(str), sort=False)["target"].nunique()
        n_t = (f"{per.iloc[0]} target(s) of each of {len(per)} dataset(s)" if per.nunique() == 1 else
               ", ".join(f"{n} target(s) of {d}" for d, n in per.items()))
    else:
        n_t = f"{table['target'].nunique()} target(s)"
    head = ('<section id="sec-invert"><h2>Partial inversion</h2>'
            "<p>Images synthesised so that their representation matches each target's on a subset of the layer's "
            f"neurons only ({n_t}, {n_s} seed(s)); then: how far the rest of the layer (and the picture) "
            "follows. Relative L2 errors: 0 = matched, about 1 = unrelated.</p>"
            + html_table(invert_display(tab), table_id="invert", caption=(
                ("Per dataset, selector and fraction" if datasets else "Per selector and fraction")
                + ", mean over targets and seeds: the relative L2 error on the selected "
                "neurons (subset) and on the others (rest of the layer) from the noise start to the end, and the "
                "cosine between the whole representations at the end, for the partial inversion, the inversion "
                "matched on the full layer (reference) and the noise seed it started from (floor), all measured on "
                "the same mask. Rest-of-layer error is – at fraction 1 (no unselected neurons). Also as "
                "tables/invert.csv."))
            + "".join(f"<p class=\"cm-note\">{esc(s)}: {esc(x)}.</p>" for s, x in invert_notes(tab))
            + f"<h3>invert settings</h3><pre>{esc(_settings(table))}</pre></section>")
    sections = [("sec-invert", "Partial inversion", head)]
    for name, (png, scale) in pngs.items():
        title, nav, caption = _figure_text(name, datasets)
        sections.append((f"sec-{name}", nav, html_figure(name, png, title=title, caption=caption, notes=[],
                                                         files=files.get(name, []), scale=scale)))
    return sections
