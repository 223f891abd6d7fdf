"""The paper's Table 1: DR at one delta, models as rows, datasets as columns; plain-text renderers."""

from __future__ import annotations

import math

import pandas as pd

from .._validation import closest
from ..exceptions import ConfigError
from ._dr import dr

__all__ = ["dr_table", "format_table"]

SPREADS = ("ci", "std", "none")
FORMATS = ("markdown", "csv", "latex")


def _cell(r, spread: str, digits: int) -> str:
    text = f"{r.dr:.{digits}f}"
    if spread == "ci" and not math.isnan(r.dr_ci_low):
        text += f" [{r.dr_ci_low:.{digits}f}, {r.dr_ci_high:.{digits}f}]"
    elif spread == "std" and not math.isnan(r.dr_seed_std):
        text += f" ± {r.dr_seed_std:.{digits}f}"
    return text


def dr_table(results: pd.DataFrame, delta: float = 0.9, *, selector: str = "random", interpolate: bool = False,
             spread: str = "ci", digits: int = 2, n_boot: int = 1000, ci: float = 0.95,
             random_state=0) -> pd.DataFrame:
    """DR at ``delta`` laid out like Table 1 of Nanda et al. (2023), as display strings.

    Rows are models (with the layer when the table has several layers, the solver when it has
    several solvers) and their feature length ``n_features``; columns are datasets; a cell is DR,
    e.g. ``"0.70 [0.50, 0.80]"``. A model not probed on a dataset gets an empty cell.

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
    n_boot, ci, random_state
        As in :func:`critmass.metrics.dr_curve`.

    Returns
    -------
    pandas.DataFrame
        String cells; render it with :func:`format_table`.
    """
    if spread not in SPREADS:
        raise ConfigError(f"spread must be one of {', '.join(SPREADS)}; got {spread!r}{closest(spread, SPREADS)}")
    if not isinstance(digits, int) or isinstance(digits, bool) or not 0 <= digits <= 10:
        raise ConfigError(f"digits must be an integer in [0, 10]; got {digits!r}")
    if not isinstance(selector, str):
        raise ConfigError(f"dr_table shows one selector; got {selector!r}; call it once per selector")
    res = dr(results, delta, selector=selector, interpolate=interpolate, n_boot=n_boot if spread == "ci" else 0,
             ci=ci, random_state=random_state)
    row_keys = ["model", *(k for k in ("layer", "solver") if res[k].nunique() > 1), "n_features"]
    res["cell"] = [_cell(r, spread, digits) for r in res.itertuples()]
    table = res.pivot(index=row_keys, columns="dataset", values="cell").fillna("").reset_index()
    table.columns.name = None
    return table.astype(str)


def _markdown(df: pd.DataFrame) -> str:
    rows = [[str(v).replace("|", "\\|") for v in r] for r in [df.columns, *df.itertuples(index=False)]]
    widths = [max(3, *(len(r[j]) for r in rows)) for j in range(len(rows[0]))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows[1:])])


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$"}


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
