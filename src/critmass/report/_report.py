"""``build_report``: a run directory -> figures (PNG/PDF), Table 1 (Markdown/LaTeX/CSV) and ``report.html``."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .._io import atomic_write_bytes
from ..exceptions import DataError
from ..metrics import (check_delta, check_n_boot, check_select_on, class_drops, class_label, critical_mass_table, dr,
                       dr_curve, dr_table, group_keys, join_diffuseness, selector_gap, table_notes)
from ._bytes import bytes_tables, has_codecs, interpret_bytes, plot_bytes_frontier
from ._gap import gap_n_boot, gap_selectors, gap_tables, interpret_gap, plot_gap
from ._html import esc, html_figure, html_page, html_table
from ._invert import INVERT_FILE, invert_figures, invert_sections, invert_table, read_inversion
from ._interpret import (
    interpret_accuracy,
    interpret_cka,
    interpret_class_drops,
    interpret_dr_curve,
    interpret_gini,
    interpret_heatmap,
)
from ._plots import (
    _primary_selector,
    _select_split,
    _subset_selectors,
    check_formats,
    default_deltas,
    gini_table,
    plot_cka,
    plot_class_drops,
    plot_curves,
    plot_dr_curve,
    plot_dr_heatmap,
    plot_gini,
)
from ._profile import PROFILE_FIGURES, profile_figures, profile_notes
from ._run import RunData, load_run
from ._savings import interpret_savings, plot_savings
from ._study import read_study, study_outputs
from ._style import render
from ._tables import table1_caption, table1_text

__all__ = ["FIGURES", "Report", "make_figures", "build_report"]

logger = logging.getLogger(__name__)

#: Figure name -> (title, navigation label, caption); the names are the files' stems and the HTML figures' ids.
FIGURES = {
    "accuracy_vs_fraction": (
        "Accuracy vs fraction of neurons", "Accuracy",
        "Linear-probe test accuracy on neuron subsets (log-x), mean over seeds with the min–max band, one line per "
        "selector. Dashed: the full layer; shaded: from δ × full to full; dotted verticals: each selector's critical "
        "fraction f* (smallest tested fraction whose mean reaches δ × full)."),
    "cka_vs_fraction": (
        "CKA vs fraction of neurons", "CKA",
        "Linear CKA between each neuron subset and the full layer (log-x), mean over seeds with the min–max band, "
        "one line per selector; dashed: the full layer's CKA with itself (1)."),
    "dr_vs_delta": (
        "Diffused redundancy DR(δ) as δ varies", "DR(δ)",
        "DR(δ) = 1 − f* for every accuracy target δ (read off the tested fractions), with the 95% bootstrap band "
        "over seeds; dotted: the δ of Table 1. A higher curve keeps the same share of accuracy with fewer "
        "neurons: the redundancy/performance frontier."),
    "class_drop_vs_fraction": (
        "Per-class accuracy drop vs fraction of neurons", "Per-class drop",
        "Drop of each class's test accuracy from the full layer (grey, mean over seeds), the mean over classes and "
        "the most affected class (largest drop averaged over the tested fractions)."),
    "gini_vs_fraction": (
        "Gini coefficient of class accuracies vs fraction of neurons", "Gini",
        "Inequality of accuracy across classes: each seed's Gini over classes, mean and min–max band over seeds; "
        "dashed: the full layer. Above the dashed line, dropping neurons costs some classes more than others."),
    "dr_heatmap": (
        "DR(δ) across models and datasets", "Model comparison",
        "DR at the report's δ for every model (rows, with feature length) and dataset (columns), one panel per "
        "selector."),
    "gap_vs_fraction": (
        "Gap to random neurons vs fraction of neurons", "Gap to random",
        "Test accuracy of each non-random selector minus that of random neurons at the same number of neurons k "
        "(log-x; random: mean over its seeds), with the 95% bootstrap band over whole seeds; dashed: random "
        "itself (gap 0). Above it a chosen subset beats as many random neurons; where the band reaches 0 the "
        "choice no longer matters. Drawn when the run has random subsets and another column selector."),
    "savings": (
        "Accuracy vs bytes per stored vector", "Savings",
        "Linear-probe test accuracy (mean over seeds, min–max band) against the bytes a stored vector takes with "
        "each selector's k values (float32, log-x); dashed: the full layer (square: its size); dotted: δ × full. "
        "`critmass export` / `critmass compress` turn a point of this curve into a model or a gallery."),
    "bytes_frontier": (
        "Recall vs bytes per vector across codecs", "Bytes",
        "Every (selector, size, codec) of the neighbour probes: mean over seeds of recall@1, recall@10 and mAP "
        "(retrieval) or kNN accuracy against the bytes a stored vector takes (log-x); marker: codec, colour: "
        "selector; the step line is the Pareto frontier (no point stores fewer bytes at a higher value); open "
        "circle: the full float32 vector. Drawn when the run has codecs other than float32; the points are "
        "tables/bytes_frontier.csv and the fewest bytes reaching δ × full, full − 1 pt and full − 5 pt "
        "tables/critical_bytes.csv."),
    **PROFILE_FIGURES,  # `critmass profile` runs: DR / accuracy across depth, layer x layer CKA
}


@dataclass
class Report:
    """What :func:`build_report` wrote.

    Attributes
    ----------
    out : pathlib.Path
        The report directory.
    html : pathlib.Path
        ``report.html``, self-contained.
    figures : dict of str to list of pathlib.Path
        Figure name (see :data:`FIGURES`; a partial inversion adds ``invert_grid*``, PNG only, and
        ``invert_rest_error``, one ``invert_rest_error_<dataset>`` per dataset when its table has a ``dataset``
        column) -> its files, one per format.
    tables : dict of str to pathlib.Path
        ``table1.md``, ``table1.tex``, ``table1.csv``, ``critical_mass.csv``, with per-class results
        ``per_class.csv``, with the gap panel ``gap.csv`` and ``gap_critical_mass.csv``, with a partial
        inversion ``invert.csv``, and with a study's tables ``neurons.csv``, ``neuron_overlap.csv``,
        ``neuron_stability.csv``, ``export.csv`` and ``study_table.csv`` (see :mod:`critmass.report._study`),
        keyed by file name.
    seconds : float
        Wall time.
    """

    out: Path
    html: Path
    figures: dict[str, list[Path]] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)
    seconds: float = float("nan")


def _as_run(run) -> RunData:
    return run if isinstance(run, RunData) else load_run(run)


def make_figures(run: RunData | str | os.PathLike, *, delta: float = 0.9, selector: str | None = None,
                 n_boot: int = 1000, interpolate: bool = False, random_state=0, select_on: str = "test") -> dict:
    """Every report figure of a run, by name (the keys of :data:`FIGURES` the run has data for).

    CKA figures need ``cka.parquet``, per-class figures ``per_class.parquet``; the others need only
    ``results.parquet``.

    Parameters
    ----------
    run : RunData or path
        A run directory or :func:`load_run`'s result.
    delta : float in (0, 1], default 0.9
    selector : str, optional
        The selector of the per-class drop figure; default 'random' if present, else the first subset
        selector. The other figures show every selector.
    n_boot, interpolate, random_state, select_on
        As in :func:`critmass.metrics.dr_curve`.

    Returns
    -------
    dict of str to matplotlib.figure.Figure
    """
    run = _as_run(run)
    delta = check_delta(delta)
    res = run.results
    figs = {"accuracy_vs_fraction": plot_curves(res, metric="test_accuracy", delta=delta, ylabel="test accuracy",
                                                select_on=select_on)}
    if run.cka is not None:
        figs["cka_vs_fraction"] = plot_cka(run.cka)
    figs["dr_vs_delta"] = plot_dr_curve(res, delta=delta, n_boot=n_boot, interpolate=interpolate,
                                        random_state=random_state, select_on=select_on)
    if run.per_class is not None:
        figs["class_drop_vs_fraction"] = plot_class_drops(run.per_class, selector=selector)
        figs["gini_vs_fraction"] = plot_gini(run.per_class)
    figs["dr_heatmap"] = plot_dr_heatmap(res, delta=delta, interpolate=interpolate, select_on=select_on)
    lines = gap_selectors(res)
    if lines:
        figs["gap_vs_fraction"] = plot_gap(res, selectors=lines, n_boot=gap_n_boot(res, n_boot),
                                           random_state=random_state)
    figs["savings"] = plot_savings(res, delta=delta)
    if has_codecs(res):
        figs["bytes_frontier"] = plot_bytes_frontier(res)
    figs.update(profile_figures(run, delta=delta, n_boot=n_boot, random_state=random_state, select_on=select_on))
    return figs


def _fmt(x, digits: int = 3) -> str:
    return "" if pd.isna(x) else f"{x:.{digits}f}"


def _critical_table(dr_long: pd.DataFrame, delta: float) -> pd.DataFrame:
    extra = [k for k in ("layer", "solver", "weights", "pooling", "codec") if k in dr_long.columns and dr_long[k].nunique() > 1]
    nominal = [("" if abs(n - f) < 1e-12 else f"{n:.3g}")
               for f, n in zip(dr_long["critical_fraction"], dr_long["critical_fraction_nominal"])]
    t = pd.DataFrame({"model": dr_long["model"], "dataset": dr_long["dataset"],
                      **{k: dr_long[k] for k in extra}, "selector": dr_long["selector"],
                      "full accuracy": dr_long["full_accuracy"].map(_fmt),
                      f"{delta:g} × full": dr_long["threshold"].map(_fmt),
                      "k* (neurons)": dr_long["critical_n_neurons"].astype(int).astype(str)
                      + " / " + dr_long["n_features"].astype(int).astype(str),
                      "f* = k*/width": dr_long["critical_fraction"].map(lambda v: f"{v:.3g}"),
                      "nominal fraction": nominal,
                      "test accuracy at f*": dr_long["test_accuracy_at_critical"].map(_fmt),
                      f"DR({delta:g})": dr_long["dr"].map(lambda v: f"{v:.2f}"),
                      "95% CI": [("" if pd.isna(lo) else f"[{lo:.2f}, {hi:.2f}]")
                                 for lo, hi in zip(dr_long["dr_ci_low"], dr_long["dr_ci_high"])],
                      "n_seeds": dr_long["n_seeds"].astype(int).astype(str),
                      "collapsed fractions": dr_long["collapsed_fractions"].astype(int).astype(str),
                      "reached": dr_long["reached"].map({True: "yes", False: "no"})})
    return t


def _per_class_table(drops: pd.DataFrame, gtab: pd.DataFrame, dr_long: pd.DataFrame) -> pd.DataFrame:
    """At each selector's critical mass k*: mean and largest class drop, Gini of the subset and the full layer.

    Matched by number of neurons (fractions that round to the same k are one fit); the most affected
    class is named by the dataset's own class name when the per-class table has one.
    """
    rows = []
    keys = [k for k in group_keys(drops) if k in dr_long.columns]
    gkeys = [k for k in keys if k in gtab.columns]
    gmean = gtab.groupby([*gkeys, "selector", "n_neurons"])["gini"].mean()
    gfull = gtab[gtab["selector"] == "all"].groupby(gkeys)["gini"].mean()
    named = "class_name" in drops.columns
    for _, r in dr_long[dr_long["reached"]].iterrows():
        key = tuple(r[k] for k in keys)
        sub = drops[(drops[keys] == pd.Series(key, index=keys)).all(axis=1) & (drops["selector"] == r["selector"])]
        sizes = sub["n_neurons"].unique()
        k = min((x for x in sizes if x >= r["critical_n_neurons"] - 1e-9), default=None)
        if k is None:
            continue
        at = sub[sub["n_neurons"] == k].groupby("class")["drop"].mean()
        worst = at.idxmax()
        name = sub.loc[sub["class"] == worst, "class_name"].iloc[0] if named else None
        gk = tuple(r[c] for c in gkeys)
        rows.append({**{c: r[c] for c in keys}, "selector": r["selector"],
                     "critical_n_neurons": int(k), "critical_fraction": float(r["critical_fraction"]),
                     "mean_class_drop": at.mean(), "max_class_drop": at.max(),
                     "max_drop_class": worst, "max_drop_class_name": class_label(worst, name),
                     "gini": gmean.get((*gk, r["selector"], k)), "full_gini": gfull.get(gk if len(gk) > 1 else gk[0])})
    return pd.DataFrame(rows)


_PC_NAMES = {"critical_n_neurons": "k*", "critical_fraction": "f*", "mean_class_drop": "mean class drop",
             "max_class_drop": "largest drop", "max_drop_class_name": "most affected class", "gini": "Gini (subset)",
             "full_gini": "Gini (full layer)"}


def _display(df: pd.DataFrame) -> pd.DataFrame:
    drop = [k for k in ("layer", "solver", "weights", "pooling", "codec") if k in df.columns and df[k].nunique() <= 1]
    out = df.drop(columns=[*drop, "max_drop_class"])
    out = out.rename(columns=_PC_NAMES)
    for c in out.columns:
        if c == "f*":
            out[c] = out[c].map(lambda v: f"{v:.3g}")
        elif pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(_fmt)
    return out


def _report_versions() -> dict[str, str]:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("critmass", "matplotlib", "pandas", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def build_report(run_dir: RunData | str | os.PathLike, *, delta: float = 0.9, out: str | os.PathLike | None = None,
                 formats=("png", "pdf"), selector: str | None = None, n_boot: int = 1000,
                 interpolate: bool = False, random_state=0, select_on: str = "test") -> Report:
    """Turn a run directory into figures, Table 1 and one self-contained ``report.html``.

    Writes, under ``out`` (default ``RUN_DIR/report``): ``figures/<name>.<fmt>`` for every figure of
    :func:`make_figures`; ``tables/table1.{md,tex,csv}`` (the paper's Table 1 at ``delta``: Markdown and
    LaTeX with bootstrap CIs, CSV as plain numbers), ``tables/critical_mass.csv`` (DR, k*, f* and CI of
    every model, dataset and selector), with per-class results ``tables/per_class.csv`` and, when the run
    has random subsets and another column selector (e.g. fscore), the gap to random:
    ``tables/gap.csv`` (:func:`critmass.metrics.selector_gap`) and ``tables/gap_critical_mass.csv`` (k* per
    selector next to random's, with the diffuseness of each group); when the directory holds the output of
    ``critmass invert`` (``invert.parquet``), a "Partial inversion" section: its image grids (copied, PNG),
    ``figures/invert_rest_error.<fmt>`` (redrawn from the table) and ``tables/invert.csv`` (mean subset and
    rest-of-layer error, start and end, and cosine per selector x fraction, next to the full-layer reference
    and the noise floor); when it holds a study's tables, a "Which neurons" section (``neurons.parquet``,
    ``neuron_overlap.parquet``, ``neuron_stability.parquet``: ``tables/neurons.csv``, ``tables/neuron_overlap.csv``,
    ``tables/neuron_stability.csv``), a "Spending it" section (``export.parquet``: ``tables/export.csv``) and, first
    on the page, "The study: Table 1" (``study_table.parquet``, written by ``critmass study``:
    ``tables/study_table.csv``); and
    ``report.html`` with the figures embedded as PNG, the tables, a note per panel (where the critical
    mass is, how the selectors compare), the config and the versions. The page loads nothing from the
    network. Every file is written atomically.

    Parameters
    ----------
    run_dir : path or RunData
        A directory holding ``results.parquet`` (``per_class.parquet``, ``cka.parquet``, ``invert.parquet``,
        ``profile.parquet`` and a study's ``neurons.parquet``, ``neuron_overlap.parquet``,
        ``neuron_stability.parquet``, ``export.parquet`` and ``study_table.parquet`` optional), or only the output
        of ``critmass invert`` (``invert.parquet``): then the page has the partial-inversion section alone, and the
        probe options (``delta``, ``selector``, ...) do not apply.
    delta : float in (0, 1], default 0.9
        The accuracy share of Table 1, the shaded bands and the heat map.
    out : path, optional
        Output directory; default ``RUN_DIR/report``.
    formats : sequence of {"png", "pdf", "svg"} or comma-separated str, default ("png", "pdf")
        Figure files to write (the HTML page always embeds PNG).
    selector : str, optional
        The selector of Table 1 and the per-class drop figure; default 'random' if present, else the
        first subset selector.
    n_boot : int, default 1000
        Bootstrap resamples of the seeds for the CIs (0: none).
    interpolate : bool, default False
        Interpolated DR instead of the grid reading (see :func:`critmass.metrics.dr_curve`).
    random_state : int, default 0
        Seed of the bootstrap.
    select_on : {"test", "val"}, default "test"
        Read f* off the test curve (the paper's Table 1) or the validation curve (see
        :func:`critmass.metrics.dr_curve`); Table 1, the marks, DR(δ) and the notes all follow it.

    Returns
    -------
    Report

    Examples
    --------
    >>> rep = build_report("runs/r50", delta=0.9, formats=["png", "pdf"])  # doctest: +SKIP
    >>> rep.html                                                          # doctest: +SKIP
    PosixPath('runs/r50/report/report.html')

    Raises
    ------
    DataError
        Neither ``results.parquet`` nor ``invert.parquet``, malformed run tables (see :func:`load_run`; a study
        table that lacks the columns the report reads), no full-layer or subset rows.
    ConfigError
        Bad ``delta``, ``formats`` or ``n_boot``.
    """
    t0 = time.perf_counter()
    delta = check_delta(delta)
    formats = check_formats(formats)
    n_boot = check_n_boot(n_boot)
    select_on = check_select_on(select_on)
    if not isinstance(run_dir, RunData):
        path = _run_path(run_dir)
        if path.is_dir() and not (path / "results.parquet").is_file():
            if not (path / INVERT_FILE).is_file():
                raise DataError(f"{path} has no results.parquet (nor {INVERT_FILE}); pass the --out directory of "
                                "`critmass probe`, `critmass sweep` or `critmass invert`")
            return _invert_only_report(path, out=out, formats=formats, t0=t0)
    run = _as_run(run_dir)
    study_tables = read_study(run.path)  # a malformed study table fails before anything is written
    res = run.results
    primary = _primary_selector(res, selector)
    names = _subset_selectors(res, None)
    dr_long = dr(res, delta, selector=names, interpolate=interpolate, n_boot=n_boot, random_state=random_state,
                 select_on=select_on)

    out = Path(out) if out is not None else run.path / "report"
    fig_dir, tab_dir = out / "figures", out / "tables"
    figures = make_figures(run, delta=delta, selector=primary, n_boot=n_boot, interpolate=interpolate,
                           random_state=random_state, select_on=select_on)
    written: dict[str, list[Path]] = {}
    pngs: dict[str, bytes] = {}
    for name, fig in figures.items():
        pngs[name] = render(fig, "png")
        written[name] = []
        for fmt in formats:
            target = fig_dir / f"{name}.{fmt}"
            atomic_write_bytes(target, pngs[name] if fmt == "png" else render(fig, fmt))
            written[name].append(target)
    logger.info("%d figures written to %s", len(figures), fig_dir)

    # Tables.
    tables: dict[str, Path] = {}
    texts = {f"table1.{ext}": table1_text(res, fmt, delta=delta, selector=primary, interpolate=interpolate,
                                          n_boot=n_boot, random_state=random_state, select_on=select_on)
             for ext, fmt in (("md", "markdown"), ("tex", "latex"), ("csv", "csv"))}
    texts["critical_mass.csv"] = dr_long.to_csv(index=False)
    drops = gtab = None
    if run.per_class is not None:
        drops = class_drops(run.per_class, selector=names)
        gtab = gini_table(run.per_class)
        pc_table = _per_class_table(drops, gtab, dr_long)
        texts["per_class.csv"] = pc_table.to_csv(index=False)
    gap = critical = diffuse = None
    lines = gap_selectors(res)
    if lines:
        gap = selector_gap(res, selectors=lines, n_boot=gap_n_boot(res, n_boot), random_state=random_state)
        critical, diffuse = gap_tables(res, delta=delta, selectors=lines, interpolate=interpolate,
                                       select_on=select_on)
        texts["gap.csv"] = gap.to_csv(index=False)
        texts["gap_critical_mass.csv"] = join_diffuseness(critical, diffuse).to_csv(index=False)
    bytes_tabs = bytes_tables(res, delta=delta) if has_codecs(res) else None
    if bytes_tabs is not None:
        texts.update({name: tab.to_csv(index=False) for name, tab in bytes_tabs.items()})
    for fname, text in texts.items():
        atomic_write_bytes(tab_dir / fname, text.encode("utf-8"))
        tables[fname] = tab_dir / fname
    inv = _invert_outputs(run.path, out, formats)
    if inv is not None:
        written.update(inv[0])
        tables.update(inv[1])
    study = study_outputs(study_tables, out)
    if study is not None:
        tables.update(study[0])

    # Notes per panel, from the same metrics the figures show.
    curve = dr_curve(res, default_deltas(delta), selector=names,
                     interpolate=interpolate, n_boot=0, select_on=select_on)
    notes = {"accuracy_vs_fraction": interpret_accuracy(res, dr_long, delta),
             "dr_vs_delta": interpret_dr_curve(curve, delta),
             "dr_heatmap": interpret_heatmap(dr_long, delta, primary)}
    if run.cka is not None:
        notes["cka_vs_fraction"] = interpret_cka(_select_split(run.cka, None), dr_long, delta)
    if drops is not None:
        notes["class_drop_vs_fraction"] = interpret_class_drops(drops[drops["selector"] == primary], dr_long, primary)
        notes["gini_vs_fraction"] = interpret_gini(gtab, dr_long)
    notes["savings"] = interpret_savings(res, delta=delta)
    if gap is not None:
        notes["gap_vs_fraction"] = interpret_gap(gap, diffuse, delta=delta)
    if bytes_tabs is not None:
        notes["bytes_frontier"] = interpret_bytes(bytes_tabs["critical_bytes.csv"], delta=delta)
    notes.update(profile_notes(run, delta=delta, select_on=select_on))

    html_path = out / "report.html"
    page = _page(run, delta=delta, primary=primary, names=names, dr_long=dr_long, pngs=pngs, notes=notes,
                 written=written, out=out, n_boot=n_boot, interpolate=interpolate, random_state=random_state,
                 pc_table=None if drops is None else pc_table, select_on=select_on,
                 gap_table=None if critical is None else critical_mass_table(critical, diffuse),
                 invert=None if inv is None else inv[2:], study=None if study is None else study[1:])
    atomic_write_bytes(html_path, page.encode("utf-8"))
    return Report(out=out, html=html_path, figures=written, tables=tables, seconds=time.perf_counter() - t0)


def _run_path(run_dir) -> Path:
    path = Path(run_dir)
    return path.parent if path.is_file() and path.suffix == ".parquet" else path


def _invert_outputs(path: Path, out: Path, formats) -> tuple | None:
    """Write the partial-inversion figures and ``tables/invert.csv``; None when ``path`` holds no ``invert.parquet``.

    Returns (figures written, tables written, page sections, the invert table). The run's grid PNGs are copied
    as they are (PNG only); the rest-of-layer error figure is redrawn in every format.
    """
    table = read_inversion(path)
    if table is None:
        return None
    written: dict[str, list[Path]] = {}
    pngs: dict[str, tuple[bytes, float]] = {}
    for name, (fig, scale) in invert_figures(path, table).items():
        if isinstance(fig, bytes):
            png, fmts = fig, ["png"]
        else:
            png, fmts = render(fig, "png"), formats
        pngs[name] = (png, scale)
        written[name] = []
        for fmt in fmts:
            target = out / "figures" / f"{name}.{fmt}"
            atomic_write_bytes(target, png if fmt == "png" else render(fig, fmt))
            written[name].append(target)
    tab = invert_table(table)
    target = out / "tables" / "invert.csv"
    atomic_write_bytes(target, tab.to_csv(index=False).encode("utf-8"))
    files = {n: [os.path.relpath(p, out) for p in ps] for n, ps in written.items()}
    return written, {"invert.csv": target}, invert_sections(table, tab, pngs, files), table


def _invert_summary(table: pd.DataFrame) -> list[str]:
    def vals(col):
        return ", ".join(map(str, dict.fromkeys(table[col].tolist())))

    on = f" on {vals('dataset')}" if "dataset" in table.columns else ""
    return [f"partial inversion: {vals('model')}{on}, layer {vals('layer')}; selectors {vals('selector')}; fractions "
            f"{', '.join(f'{f:g}' for f in sorted(table['fraction'].unique()))}; {table['target'].nunique()} "
            f"target(s) x {table['seed'].nunique()} seed(s)"
            + (f"; {vals('steps')} steps" if "steps" in table.columns else "")]


def _config_section(run_versions: dict, config: dict, report_options: dict) -> tuple[str, str, str]:
    report_versions = {f"{k} (report)": v for k, v in _report_versions().items() if run_versions.get(k) != v}
    vt = pd.DataFrame({"package": list(run_versions) + list(report_versions),
                       "version": list(run_versions.values()) + list(report_versions.values())})
    cfg = "".join(f"<h3>{esc(label)}</h3><pre>{esc(text)}</pre>" for label, text in config.items())
    return ("sec-config", "Config & versions", '<section id="sec-config"><h2>Config and versions</h2>'
            + html_table(vt, table_id="versions", caption="Package versions (report: those that made this page)")
            + f"<h3>report options</h3><pre>{esc(json.dumps(report_options, indent=2))}</pre>" + cfg + "</section>")


_FOOTER = ("Diffused redundancy: Nanda, Speicher, Dickerson, Feizi, Gummadi, Weller. <i>Diffused Redundancy in "
           "Pre-trained Representations</i>. NeurIPS 2023. Generated by critmass; this page is self-contained "
           "(no network access).")


def _invert_only_report(path: Path, *, out, formats, t0: float) -> Report:
    """The report of a directory that holds only ``critmass invert`` output: the partial-inversion section."""
    out = Path(out) if out is not None else path / "report"
    written, tables, sections, table = _invert_outputs(path, out, formats)
    versions: dict[str, str] = {}
    if (path / "versions.json").is_file():
        try:
            doc = json.loads((path / "versions.json").read_text(encoding="utf-8"))
            versions = {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}
        except ValueError:
            logger.warning("%s is not valid JSON; ignored", path / "versions.json")
    sections = [*sections, _config_section(versions, {}, {"formats": list(formats)})]
    summary = [*_invert_summary(table), "note: no results.parquet: this directory holds a partial inversion only; "
               "the probe stage (`critmass probe ... --out DIR`) adds Table 1 and the DR figures"]
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = html_page(title=f"critmass report: {path.resolve().name}",
                     meta=f"run directory {path.resolve()} · generated {now}", summary=summary, sections=sections,
                     footer=_FOOTER)
    html_path = out / "report.html"
    atomic_write_bytes(html_path, page.encode("utf-8"))
    return Report(out=out, html=html_path, figures=written, tables=tables, seconds=time.perf_counter() - t0)


def _page(run: RunData, *, delta, primary, names, dr_long, pngs, notes, written, out, n_boot, interpolate,
          random_state, pc_table, select_on="test", gap_table=None, invert=None, study=None) -> str:
    res = run.results
    sections = list(study[2]) if study is not None else []  # the study's Table 1 opens the page

    spread = "ci" if n_boot else "std"
    t1 = dr_table(res, delta, selector=primary, interpolate=interpolate, spread=spread,
                  n_boot=n_boot, random_state=random_state, select_on=select_on)
    t1_notes = table_notes(res, dr_long[dr_long["selector"] == primary], selector=primary, spread=spread,
                           select_on=select_on)
    sections.append(("sec-table1", "Table 1", '<section id="sec-table1"><h2>Table 1: diffused redundancy</h2>'
                     + html_table(t1, table_id="table1", caption=table1_caption(
                         delta, primary, interpolate=interpolate, spread=spread, select_on=select_on))
                     + "".join(f'<p class="cm-note">Note: {esc(n)}.</p>' for n in t1_notes)
                     + "<p>Also as " + ", ".join(f"tables/table1.{e}" for e in ("md", "tex", "csv")) + ".</p></section>"))

    for name, png in pngs.items():
        title, nav, caption = FIGURES[name]
        sections.append((f"sec-{name}", nav,
                         html_figure(name, png, title=title, caption=caption, notes=notes.get(name, []),
                                     files=[os.path.relpath(p, out) for p in written[name]])))
    missing = []
    if run.cka is None:
        missing.append("no cka.parquet: run `critmass cka CACHE_ENTRY --out RUN_DIR` for the CKA figure")
    if run.per_class is None:
        missing.append("no per_class.parquet: the per-class figures need the probe stage's per-class table")

    body = ('<section id="sec-tables"><h2>Critical mass per selector</h2>'
            + html_table(_critical_table(dr_long, delta), table_id="critical-mass",
                         caption=f"k*: smallest tested subset whose mean {select_on} accuracy reaches {delta:g} × "
                                 "full; f* = k* / width (the fraction of neurons actually used; nominal fraction: "
                                 "the smallest requested fraction that gave k*, shown where it differs); DR = 1 − f*; "
                                 "collapsed fractions: requested fractions that rounded to an already tested k (one "
                                 "fit, counted once); with n_seeds seeds a bootstrap CI takes at most "
                                 "C(2·n_seeds − 1, n_seeds) distinct values. Also as tables/critical_mass.csv.")
            + "</section>")
    sections.append(("sec-tables", "Critical mass", body))
    if gap_table is not None and len(gap_table):
        sections.append(("sec-gap", "Diffuseness", '<section id="sec-gap"><h2>Critical mass vs random neurons, '
                         "and diffuseness</h2>" + html_table(gap_table, table_id="gap-critical-mass", caption=(
                             f"k* at δ = {delta:g} under each non-random selector next to random's (same full-layer "
                             "reference), and their ratio; kind: whether the selector picks neurons or projects. "
                             "Diffuseness = k*(random) / k* of the best selector that picks neurons (named in "
                             "brackets): 1 = no neuron is special; ≥ / ≤: bounded by the smallest tested size; "
                             "–: undefined (a k* not reached). Also as tables/gap_critical_mass.csv; the gap per k "
                             "as tables/gap.csv.")) + "</section>"))
    if pc_table is not None and len(pc_table):
        sections.append(("sec-per-class", "Per-class", '<section id="sec-per-class"><h2>Per-class consequences at '
                         "the critical mass</h2>" + html_table(_display(pc_table), table_id="per-class",
                         caption="At each selector's critical mass k*: drop of the class accuracies from the "
                                 "full layer (mean over classes, largest) and the Gini of the class accuracies. "
                                 "Also as tables/per_class.csv.") + "</section>"))

    if invert is not None:
        sections += invert[0]
    if study is not None:
        sections += study[0]
    sections.append(_config_section({**run.versions}, run.config, {
        "delta": delta, "selector": primary, "n_boot": n_boot, "interpolate": interpolate,
        "random_state": random_state, "select_on": select_on}))

    models = sorted(map(str, res["model"].unique()))
    datasets = sorted(map(str, res["dataset"].unique()))
    summary = [f"{len(models)} model(s): {', '.join(models)}", f"{len(datasets)} dataset(s): {', '.join(datasets)}",
               f"layer(s): {', '.join(sorted(map(str, res['layer'].unique())))}; solver(s): "
               f"{', '.join(sorted(map(str, res['solver'].unique())))}",
               f"selectors: {', '.join(names)}; {res['seed'].nunique()} seed(s); "
               f"{res['fraction'].nunique()} fractions; {len(res)} probes",
               *(_invert_summary(invert[1]) if invert is not None else []),
               *(study[1] if study is not None else []),
               *(f"note: {m}" for m in missing)]
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    footer = _FOOTER
    return html_page(title=f"critmass report: {run.path.resolve().name}",
                     meta=f"run directory {run.path.resolve()} · generated {now} · δ = {delta:g}",
                     summary=summary, sections=sections, footer=footer)
