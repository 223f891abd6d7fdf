"""The paper's Table 1 (DR at one delta: models x datasets) as numbers, Markdown, LaTeX and CSV."""

from __future__ import annotations

import pandas as pd

from ..metrics import dr, dr_table_rows, format_table, table_layout, table_notes

__all__ = ["table1", "table1_caption", "table1_text"]


def table1(results: pd.DataFrame, *, delta: float = 0.9, selector: str = "random", interpolate: bool = False,
           select_on: str = "test") -> pd.DataFrame:
    """DR at ``delta`` laid out like Table 1 of Nanda et al. (2023), as numbers.

    The numeric twin of :func:`critmass.metrics.dr_table`: rows are models (with the layer, solver,
    weights or pooling when the table has several), ``n_features`` and ``n_seeds``; columns are
    datasets; cells are DR (float, NaN where a model was not probed on a dataset).

    Parameters
    ----------
    results : pandas.DataFrame
        The probe results table.
    delta : float in (0, 1], default 0.9
    selector : str, default "random"
    interpolate : bool, default False
    select_on : {"test", "val"}, default "test"
        As in :func:`critmass.metrics.dr` (Table 1 of the paper reads f* off the test curve).

    Returns
    -------
    pandas.DataFrame
    """
    res = dr(results, delta, selector=selector, interpolate=interpolate, n_boot=0, select_on=select_on)
    return table_layout(res, "value", lambda r: r.dr)


def table1_caption(delta: float, selector: str, *, interpolate: bool = False, spread: str = "ci",
                   select_on: str = "test") -> str:
    how = "interpolated in log-fraction" if interpolate else "read off the tested sizes"
    note = {"ci": "; brackets: 95% bootstrap CI over seeds (whole seed curves resampled)",
            "std": "; ± std over seeds"}.get(spread, "")
    curve = ("validation accuracy reaches {d} × the full layer's validation accuracy" if select_on == "val" else
             "test accuracy reaches {d} × the full layer's (the paper's reading)").format(d=f"{delta:g}")
    return (f"Diffused redundancy DR(δ = {delta:g}) = 1 − f*, f* = k*/n_features, k* the smallest number of "
            f"{selector} neurons whose mean linear-probe {curve} ({how}{note}); "
            "n_features: the layer's width; n_seeds: seeds per curve.")


def table1_text(results: pd.DataFrame, fmt: str, *, delta: float = 0.9, selector: str = "random",
                interpolate: bool = False, n_boot: int = 1000, random_state=0, label: str = "tab:dr",
                select_on: str = "test") -> str:
    """Table 1 rendered as ``markdown`` (with a caption line and notes), ``latex`` (a ``table`` float) or ``csv``.

    Markdown and LaTeX show the display strings of :func:`critmass.metrics.dr_table` (DR with its
    bootstrap CI); CSV holds the plain numbers of :func:`table1` for re-use.
    """
    if fmt == "csv":
        return table1(results, delta=delta, selector=selector, interpolate=interpolate,
                      select_on=select_on).to_csv(index=False)
    spread = "ci" if n_boot else "std"
    shown, res = dr_table_rows(results, delta, selector=selector, interpolate=interpolate, spread=spread,
                               n_boot=n_boot, random_state=random_state, select_on=select_on)
    caption = table1_caption(delta, selector, interpolate=interpolate, spread=spread, select_on=select_on)
    notes = table_notes(results, res, selector=selector, spread=spread, select_on=select_on)
    body = format_table(shown, fmt)
    if fmt == "markdown":
        return f"{caption}\n\n{body}\n" + "".join(f"\nNote: {n}." for n in notes) + ("\n" if notes else "")
    cap = caption.replace("%", r"\%").replace("δ", r"$\delta$").replace("−", "-").replace("×", r"$\times$")
    cap = cap.replace("f*", r"$f^*$").replace("k*", r"$k^*$").replace("_", r"\_").replace("±", r"$\pm$")
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{cap}}}", rf"\label{{{label}}}", body,
                      r"\end{table}", ""])
