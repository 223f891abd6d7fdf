"""The paper's Table 1: DR at one delta, models as rows, datasets as columns; plain-text renderers."""

from __future__ import annotations

import math

import pandas as pd

from .._validation import closest
from ..exceptions import ConfigError
from ._common import OPTIONAL_KEYS, group_keys
from ._dr import dr, duplicate_sizes, n_resample_values
from ._gap import diffuseness as _diffuseness
from ._gap import diffuseness_cell

__all__ = ["dr_table", "dr_table_rows", "format_table", "table_layout", "table_notes"]

SPREADS = ("ci", "std", "none")
#: Header prefix of Table 1's optional diffuseness columns (one per dataset, after the DR columns).
DIFFUSENESS_PREFIX = "diffuseness: "
#: Columns of :func:`critmass.metrics.diffuseness` carried into the DR rows behind a table with the block.
_DIFF_COLUMNS = ("diffuseness", "bound", "best_selector", "best_critical_n_neurons", "reason")
FORMATS = ("markdown", "csv", "latex")


def _cell(r, spread: str, digits: int) -> str:
    text = f"{r.dr:.{digits}f}"
    if spread == "ci" and not math.isnan(r.dr_ci_low):
        text += f" [{r.dr_ci_low:.{digits}f}, {r.dr_ci_high:.{digits}f}]"
    elif spread == "std" and not math.isnan(r.dr_seed_std):
        text += f" ± {r.dr_seed_std:.{digits}f}"
    return text


def row_keys(res: pd.DataFrame) -> list[str]:
    """Table 1 rows: the model, with whatever else varies (layer, solver, weights, pooling), and its width."""
    extra = [k for k in ("layer", "solver", *OPTIONAL_KEYS) if k in res.columns and res[k].nunique() > 1]
    return ["model", *extra, "n_features"]


def seeds_cell(values) -> str | int:
    """The n_seeds of a Table 1 row: one number, or ``"3-5"`` when the datasets of the row differ."""
    v = sorted({int(x) for x in values})
    return v[0] if len(v) == 1 else f"{v[0]}-{v[-1]}"


def table_notes(results: pd.DataFrame, res: pd.DataFrame, *, selector: str, spread: str = "ci",
                select_on: str = "test") -> list[str]:
    """Plain-text notes that go with Table 1: which curve f* is read off, small seed counts, duplicate sizes.

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table the DR rows were computed from.
    res : pandas.DataFrame
        The :func:`critmass.metrics.dr` rows shown (the second value of :func:`dr_table_rows`).
    selector : str
        The subset selector of the table.
    spread : {"ci", "std", "none"}, default "ci"
        As in :func:`dr_table`.
    select_on : {"test", "val"}, default "test"
        As in :func:`critmass.metrics.dr`.

    Returns
    -------
    list of str
        One sentence each, without a final full stop.
    """
    notes = [("f* read off the validation curve (threshold: delta x full-layer validation accuracy); "
              "DR and k* from it, test accuracy reported at f*") if select_on == "val" else
             "f* read off the test curve, as in the paper's Table 1 (use select_on='val' / --select-on val "
             "for the validation curve)"]
    if spread == "ci" and len(res):
        n = int(res["n_seeds"].min())
        if n < 5:
            notes.append(f"{n} seed(s): a bootstrap CI over seeds takes at most {n_resample_values(n)} distinct "
                         "values (5 seeds, as in the paper: 126)")
    dups = duplicate_sizes(results, selector=selector)
    if len(dups):
        shown = dups.drop_duplicates(subset=["n_neurons", "n_features", "fractions"]).head(4)
        more = len(dups) - len(shown)
        notes.append("fractions that round to the same k are one fit and count once, at k / n_features: "
                     + "; ".join(f"{r.fractions} give k = {r.n_neurons} of {r.n_features} "
                                 f"(f = {r.fraction_effective:.3g})" for r in shown.itertuples())
                     + (f"; and {more} more" if more > 0 else ""))
    if "diffuseness" in res.columns and len(res):
        text = (f"diffuseness: k*({selector}) / k* of the best column selector (named in brackets) at the same "
                f"delta; 1 = no neuron is special, 4 = a chosen quarter of the neurons does what {selector} ones do, "
                f"below 1 = {selector} subsets do better; ≥ / ≤: bounded by the smallest tested size")
        undefined = res[res["diffuseness"].isna()]
        if len(undefined):
            shown = undefined.head(3)
            text += ("; –: " + "; ".join(f"{r.model} / {r.dataset}: {r.reason}" for r in shown.itertuples())
                     + (f"; and {len(undefined) - len(shown)} more" if len(undefined) > len(shown) else ""))
        notes.append(text)
    return notes


def dr_table(results: pd.DataFrame, delta: float = 0.9, *, selector: str = "random", interpolate: bool = False,
             spread: str = "ci", digits: int = 2, n_boot: int = 1000, ci: float = 0.95,
             random_state=0, select_on: str = "test", diffuseness: bool = False) -> pd.DataFrame:
    """DR at ``delta`` laid out like Table 1 of Nanda et al. (2023), as display strings.

    Rows are models (with the layer, solver, weights or pooling when the table has several) and
    their feature length ``n_features`` and number of seeds ``n_seeds`` (with n seeds a bootstrap
    CI takes at most C(2n - 1, n) distinct values: 10 for 3); columns are datasets; a cell is DR,
    e.g. ``"0.70 [0.50, 0.80]"``. A model not probed on a dataset gets an empty cell. DR is computed
    on the fraction of neurons actually used, k / n_features (see :func:`critmass.metrics.dr_curve`).

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table (see :func:`critmass.metrics.dr`).
    delta : float in (0, 1], default 0.9
        Share of the full layer's accuracy a subset must reach.
    selector : str, default "random"
        The subset selector.
    interpolate : bool, default False
        Use the interpolated DR (see :func:`critmass.metrics.dr_curve`) instead of the grid reading.
    spread : {"ci", "std", "none"}, default "ci"
        Append the bootstrap interval ``[low, high]``, the per-seed std ``± s`` or nothing.
        Omitted where it is undefined (one seed, or ``n_boot=0``).
    digits : int, default 2
        Decimals of every number.
    n_boot, ci, random_state, select_on
        As in :func:`critmass.metrics.dr_curve` (``select_on="test"``, the default, is the paper's reading).
    diffuseness : bool, default False
        Append a column block, ``"diffuseness: <dataset>"`` per dataset: k*(selector) / k* of the best
        column selector at the same delta (:func:`critmass.metrics.diffuseness` with ``selector`` as the
        baseline), e.g. ``"2.00 (fscore)"``; ``"≥ 2.00 (fscore)"`` where the tested grid only bounds it,
        "–" where it is undefined (a note says why).

    Returns
    -------
    pandas.DataFrame
        String cells; render it with :func:`format_table`.
    """
    return dr_table_rows(results, delta, selector=selector, interpolate=interpolate, spread=spread, digits=digits,
                         n_boot=n_boot, ci=ci, random_state=random_state, select_on=select_on,
                         diffuseness=diffuseness)[0]


def dr_table_rows(results: pd.DataFrame, delta: float = 0.9, *, selector: str = "random", interpolate: bool = False,
                  spread: str = "ci", digits: int = 2, n_boot: int = 1000, ci: float = 0.95, random_state=0,
                  select_on: str = "test", diffuseness: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`dr_table` and the :func:`critmass.metrics.dr` rows it shows (for notes and numeric twins).

    Parameters
    ----------
    results, delta, selector, interpolate, spread, digits, n_boot, ci, random_state, select_on, diffuseness
        As in :func:`dr_table`.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        The display table and the DR rows behind it (for :func:`table_notes`); with ``diffuseness`` the
        rows also carry diffuseness, bound, best_selector, best_critical_n_neurons and reason (see
        :func:`critmass.metrics.diffuseness`; a group with no other selector gets NaN and a reason).
    """
    if spread not in SPREADS:
        raise ConfigError(f"spread must be one of {', '.join(SPREADS)}; got {spread!r}{closest(spread, SPREADS)}")
    if not isinstance(digits, int) or isinstance(digits, bool) or not 0 <= digits <= 10:
        raise ConfigError(f"digits must be an integer in [0, 10]; got {digits!r}")
    if not isinstance(selector, str):
        raise ConfigError(f"dr_table shows one selector; got {selector!r}; call it once per selector")
    res = dr(results, delta, selector=selector, interpolate=interpolate, n_boot=n_boot if spread == "ci" else 0,
             ci=ci, random_state=random_state, select_on=select_on)
    table = table_layout(res, "cell", lambda r: _cell(r, spread, digits), fill="").astype(str)
    if diffuseness:
        diff = _diffuseness(results, delta, baseline=selector, interpolate=interpolate, select_on=select_on)
        keys = [k for k in group_keys(res) if k in diff.columns]
        res = res.merge(diff[[*keys, *_DIFF_COLUMNS]], on=keys, how="left")
        res["reason"] = res["reason"].fillna(f"no column selector besides {selector} was probed")
        res["bound"] = res["bound"].fillna("")
        block = _diffuseness_block(res, lambda r: diffuseness_cell(r, digits), fill="")
        table = table.merge(block.astype(str), on=row_keys(res), how="left")
    return table, res


def _diffuseness_block(res: pd.DataFrame, value, *, fill=None) -> pd.DataFrame:
    """Table 1's diffuseness block: the row keys, then ``"diffuseness: <dataset>"`` per dataset.

    Parameters
    ----------
    res : pandas.DataFrame
        DR rows that carry the diffuseness columns (the second value of :func:`dr_table_rows` with
        ``diffuseness=True``).
    value : callable
        ``row -> cell``, e.g. ``lambda r: r.diffuseness``.
    fill : optional
        Cells of a model not probed on a dataset (default NaN).

    Returns
    -------
    pandas.DataFrame
        Merge it onto the table of :func:`table_layout` on the row keys.
    """
    block = table_layout(res, "_diffuseness", value, fill=fill).drop(columns="n_seeds")
    keys = row_keys(res)
    return block.rename(columns={c: f"{DIFFUSENESS_PREFIX}{c}" for c in block.columns if c not in keys})


def table_layout(res: pd.DataFrame, column: str, value, *, fill=None) -> pd.DataFrame:
    """Pivot DR rows into Table 1: row keys, n_seeds, one column per dataset.

    Parameters
    ----------
    res : pandas.DataFrame
        Rows of :func:`critmass.metrics.dr` (one per model, dataset, ...).
    column : str
        Name of the temporary column holding the cell values.
    value : callable
        ``row -> cell`` for each row (a named tuple of ``res``), e.g. ``lambda r: r.dr``.
    fill : optional
        Value of the cells of a model not probed on a dataset (default NaN).

    Returns
    -------
    pandas.DataFrame
        Row keys (model and what varies), ``n_seeds``, then one column per dataset.
    """
    keys = row_keys(res)
    res = res.copy()
    res[column] = [value(r) for r in res.itertuples()]
    table = res.pivot(index=keys, columns="dataset", values=column).reset_index()
    table.columns.name = None
    seeds = res.groupby(keys, sort=True)["n_seeds"].agg(seeds_cell).rename("n_seeds").reset_index()
    table = table.merge(seeds, on=keys, how="left")
    datasets = [c for c in table.columns if c not in (*keys, "n_seeds")]
    if fill is not None:
        table[datasets] = table[datasets].fillna(fill)
    return table[[*keys, "n_seeds", *datasets]]


def _markdown(df: pd.DataFrame) -> str:
    rows = [[str(v).replace("|", "\\|") for v in r] for r in [df.columns, *df.itertuples(index=False)]]
    widths = [max(3, *(len(r[j]) for r in rows)) for j in range(len(rows[0]))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows[1:])])


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
                  "≥": r"$\geq$", "≤": r"$\leq$", "–": "--"}


def _latex(df: pd.DataFrame) -> str:
    esc = lambda v: "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(v))  # noqa: E731
    body = [" & ".join(map(esc, df.columns)) + r" \\", r"\hline"]
    body += [" & ".join(map(esc, r)) + r" \\" for r in df.itertuples(index=False)]
    # Plain \hline keeps the output free of package requirements (no booktabs).
    return "\n".join([r"\begin{tabular}{" + "l" * df.shape[1] + "}", r"\hline", *body, r"\hline", r"\end{tabular}"])


def format_table(table: pd.DataFrame, fmt: str = "markdown") -> str:
    """Render a small table as Markdown, CSV or a LaTeX ``tabular``, with no extra dependencies.

    Parameters
    ----------
    table : pandas.DataFrame
        E.g. the output of :func:`dr_table`; the index is not printed.
    fmt : {"markdown", "csv", "latex"}, default "markdown"

    Returns
    -------
    str
        The rendered table, without a trailing newline.

    Examples
    --------
    >>> print(format_table(pd.DataFrame({"model": ["vit_s16"], "cifar10": ["0.70"]})))
    | model   | cifar10 |
    |---------|---------|
    | vit_s16 | 0.70    |
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}{closest(fmt, FORMATS)}")
    if fmt == "csv":
        return table.to_csv(index=False).rstrip("\n")
    return _markdown(table) if fmt == "markdown" else _latex(table)
