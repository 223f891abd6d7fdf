"""The paper's Table 1 (DR at one delta: models x datasets) as numbers, Markdown, LaTeX and CSV."""

from __future__ import annotations

import pandas as pd

from ..metrics import dr, dr_table, format_table

__all__ = ["table1", "table1_caption", "table1_text"]


def table1(results: pd.DataFrame, *, delta: float = 0.9, selector: str = "random", interpolate: bool = False
           ) -> pd.DataFrame:
    """DR at ``delta`` laid out like Table 1 of Nanda et al. (2023), as numbers.

    The numeric twin of :func:`critmass.metrics.dr_table`: rows are models (with the layer / solver
    when the table has several) and ``n_features``; columns are datasets; cells are DR (float, NaN where
    a model was not probed on a dataset).

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table.
    delta : float in (0, 1], default 0.9
    selector : str, default "random"
    interpolate : bool, default False
        As in :func:`critmass.metrics.dr`.

    Returns
    -------
    pandas.DataFrame
    """
    res = dr(results, delta, selector=selector, interpolate=interpolate, n_boot=0)
    row_keys = ["model", *(k for k in ("layer", "solver") if res[k].nunique() > 1), "n_features"]
    table = res.pivot(index=row_keys, columns="dataset", values="dr").reset_index()
    table.columns.name = None
    return table


def table1_caption(delta: float, selector: str, *, interpolate: bool = False, spread: str = "ci") -> str:
    how = "interpolated in log-fraction" if interpolate else "read off the tested fractions"
    note = {"ci": "; brackets: 95% bootstrap CI over seeds", "std": "; ± std over seeds"}.get(spread, "")
    return (f"Diffused redundancy DR(δ = {delta:g}) = 1 − f*, f* the smallest fraction of {selector} neurons whose "
            f"mean linear-probe accuracy reaches {delta:g} × the full layer's ({how}{note}); "
            "n_features: the layer's width.")


def table1_text(results: pd.DataFrame, fmt: str, *, delta: float = 0.9, selector: str = "random",
                interpolate: bool = False, n_boot: int = 1000, random_state=0, label: str = "tab:dr") -> str:
    """Table 1 rendered as ``markdown`` (with a caption line), ``latex`` (a ``table`` float) or ``csv`` (numbers).

    Markdown and LaTeX show the display strings of :func:`critmass.metrics.dr_table` (DR with its
    bootstrap CI); CSV holds the plain numbers of :func:`table1` for re-use.
    """
    if fmt == "csv":
        return table1(results, delta=delta, selector=selector, interpolate=interpolate).to_csv(index=False)
    spread = "ci" if n_boot else "std"
    shown = dr_table(results, delta, selector=selector, interpolate=interpolate, spread=spread, n_boot=n_boot,
                     random_state=random_state)
    caption = table1_caption(delta, selector, interpolate=interpolate, spread=spread)
    body = format_table(shown, fmt)
    if fmt == "markdown":
        return f"{caption}\n\n{body}\n"
    cap = caption.replace("%", r"\%").replace("δ", r"$\delta$").replace("−", "-").replace("×", r"$\times$")
    cap = cap.replace("f*", r"$f^*$").replace("_", r"\_").replace("±", r"$\pm$")
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{cap}}}", rf"\label{{{label}}}", body,
                      r"\end{table}", ""])
