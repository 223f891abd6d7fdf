"""`critmass dr`: the paper's Table 1 (diffused redundancy at one delta); `critmass gap`: the gap to random."""

from __future__ import annotations

from typing import List, Optional

import typer

from ._app import app


@app.command("dr")
def dr_command(
    results: List[str] = typer.Argument(
        ..., help="results.parquet files, probe / sweep output directories holding one, or glob patterns "
                  "(quoted, e.g. 'runs/*'); their rows are concatenated into one models x datasets table."),
    delta: float = typer.Option(
        0.9, "--delta", help="Share of the full layer's accuracy a subset must reach, in (0, 1]."
    ),
    selector: str = typer.Option("random", "--selector", help="Subset selector to read DR from."),
    interpolate: bool = typer.Option(
        False, "--interpolate",
        help="Interpolate the accuracy curve (in log-fraction) instead of reading DR off the tested grid.",
    ),
    select_on: str = typer.Option(
        "test", "--select-on",
        help="Curve f* is read off: test (as the paper's Table 1) or val (the validation curve; less biased "
             "towards a high DR by a noisy first crossing of the test curve).",
    ),
    spread: str = typer.Option(
        "ci", "--spread", help="Append the bootstrap CI over seeds (ci), the per-seed std (std) or nothing (none)."
    ),
    fmt: str = typer.Option("markdown", "--format", help="Output format: markdown, csv or latex."),
    digits: int = typer.Option(2, "--digits", help="Decimals shown."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of whole seeds for the CI."),
    random_state: int = typer.Option(0, "--random-state", help="Seed of the bootstrap."),
    diffuseness: bool = typer.Option(
        False, "--diffuseness",
        help="Append a column block per dataset: k*(selector) / k* of the best column selector (the neuron "
             "rankings: fscore, variance, greedy, ...), 1 = no neuron is special. Needs such selectors in the run."),
    critical_bytes: Optional[bool] = typer.Option(
        None, "--critical-bytes/--no-critical-bytes",
        help="Append the critical bytes: the fewest bytes per vector whose metric reaches delta x the full float32 "
             "vector's, with the selector, size and codec achieving it (default: when the run has codecs other "
             "than float32)."),
    bytes_metric: str = typer.Option(
        "auto", "--bytes-metric",
        help="Metric of the critical bytes: auto (recall_at_10 for retrieval, else test_accuracy) | recall_at_1 | "
             "recall_at_5 | recall_at_10 | map | test_accuracy."),
):
    """Print DR(delta) = 1 - f* per model (rows) and dataset (columns), like Table 1 of Nanda et al. 2023.

    f* = k* / n_features, k* the smallest tested number of neurons whose mean accuracy over seeds reaches
    delta x the full layer's; fractions that round to the same k count once. Notes (markdown: under the
    table; csv / latex: on stderr) say which curve f* was read off, flag small seed counts and list the
    fractions that were collapsed.
    """
    from ..metrics import dr_table_rows, format_table, read_many, table_notes

    df = read_many(results)
    table, res = dr_table_rows(df, delta, selector=selector, interpolate=interpolate, spread=spread, digits=digits,
                               n_boot=n_boot, random_state=random_state, select_on=select_on,
                               diffuseness=diffuseness)
    text = format_table(table, fmt)
    notes = table_notes(df, res, selector=selector, spread=spread, select_on=select_on)
    if fmt == "markdown":
        how = "interpolated" if interpolate else "grid"
        note = {"ci": "; [95% bootstrap CI over whole seeds]", "std": "; ± std over seeds", "none": ""}.get(spread, "")
        typer.echo(f"DR at delta={delta:g} ({selector} subsets, {how}, f* on {select_on}{note})\n")
        typer.echo(text)
        if notes:
            typer.echo("\n" + "\n".join(f"note: {n}" for n in notes))
    else:
        typer.echo(text)
        for n in notes:
            typer.echo(f"note: {n}", err=True)
    has_codecs = "codec" in df.columns and set(df["codec"].dropna().astype(str)) - {"float32", ""}
    if critical_bytes or (critical_bytes is None and has_codecs):
        _echo_critical_bytes(df, delta, bytes_metric, fmt, digits)


def _echo_critical_bytes(df, delta: float, metric: str, fmt: str, digits: int) -> None:
    """The critical-bytes block of `critmass dr`: one row per group, as markdown, csv or latex."""
    import pandas as pd

    from ..metrics import critical_bytes, format_table, solver_metrics

    pairs = solver_metrics(df) if metric == "auto" else [(metric, df)]
    cb = pd.concat([critical_bytes(rows, delta, metric=m, selector=None) for m, rows in pairs], ignore_index=True)
    keys = [k for k in ("model", "dataset", "layer", "solver", "weights", "pooling")
            if k in ("model", "dataset") or k in cb.columns and cb[k].nunique() > 1]
    if len(pairs) > 1:
        keys.append("metric")
    pct = lambda v: f"{100 * v:.{digits}f}"  # noqa: E731
    table = cb.assign(full=[f"{b} B: {pct(v)}" for b, v in zip(cb["full_bytes"], cb["full_value"])],
                      critical=[f"{b} B" + ("" if r else " (not reached)") for b, r in
                                zip(cb["critical_bytes"], cb["reached"])],
                      achieved_by=[f"{s} k={k} {c}" for s, k, c in zip(cb["selector"], cb["n_neurons"], cb["codec"])],
                      value=[pct(v) for v in cb["value_at_critical"]],
                      saving=[f"{v:.1f}x" for v in cb["saving"]])
    table = table[[*keys, "full", "critical", "achieved_by", "value", "saving"]]
    if fmt == "markdown":
        what = " / ".join(m for m, _ in pairs)
        typer.echo(f"\nCritical bytes at delta={delta:g}: the fewest bytes per vector whose mean {what} reaches "
                   f"{delta:g} x the full float32 vector's (every selector, size and codec competes)\n")
    typer.echo(format_table(table, fmt))


GAP_SHOW = ("both", "gap", "critical")


@app.command("gap")
def gap_command(
    results: List[str] = typer.Argument(
        ..., help="results.parquet files, probe / sweep output directories holding one, or glob patterns."),
    baseline: str = typer.Option("random", "--baseline", help="The reference selector (several seeds)."),
    selector: Optional[str] = typer.Option(
        None, "--selector", help="Comma-separated selectors to compare with the baseline (default: all the run has)."),
    delta: float = typer.Option(
        0.9, "--delta", help="Share of the full layer's accuracy that defines the critical mass k*, in (0, 1]."),
    show: str = typer.Option(
        "both", "--show", help="What to print: both (markdown only), gap (chosen minus baseline accuracy per k) or "
                               "critical (k* per selector and the diffuseness)."),
    interpolate: bool = typer.Option(False, "--interpolate", help="Interpolated k* instead of the tested grid's."),
    select_on: str = typer.Option("test", "--select-on", help="Curve k* is read off: test or val."),
    fmt: str = typer.Option("markdown", "--format", help="Output format: markdown, csv (the tidy numbers) or latex."),
    digits: int = typer.Option(3, "--digits", help="Decimals shown."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of whole seeds for the gap's CI "
                                                      "(0: none; needed when the baseline has one seed)."),
    random_state: int = typer.Option(0, "--random-state", help="Seed of the bootstrap."),
):
    """Print how much a chosen subset beats random neurons: the gap per k and the critical mass per selector.

    gap = a selector's mean test accuracy at k minus the baseline's mean over its seeds at the same k, with a
    95% bootstrap CI over whole seeds (the baseline's, and the selector's when it has several). k* per
    selector is `critmass dr`'s (delta x the full layer's accuracy); diffuseness = k*(baseline) / k* of the
    best column selector (projections such as pca do not count): 1 = no neuron is special.
    """
    from .._validation import closest
    from ..exceptions import ConfigError
    from ..metrics import (critical_mass_table, diffuseness, format_table, gap_table, join_diffuseness, read_many,
                           selector_critical_mass, selector_gap)
    from ._app import parse_list

    if show not in GAP_SHOW:
        raise ConfigError(f"--show must be one of {', '.join(GAP_SHOW)}; got {show!r}{closest(show, GAP_SHOW)}")
    if show == "both" and fmt != "markdown":
        raise ConfigError(f"--format {fmt} prints one table; pass --show gap or --show critical")
    df = read_many(results)
    names = parse_list(selector) or None
    if show in ("both", "gap"):
        gap = selector_gap(df, baseline=baseline, selectors=names, n_boot=n_boot, random_state=random_state)
        if fmt == "csv":
            typer.echo(gap.to_csv(index=False).rstrip("\n"))
        else:
            if fmt == "markdown":
                ci = "95% bootstrap CI over whole seeds" if n_boot else "no CI (--n-boot 0)"
                typer.echo(f"Gap to {baseline}: a selector's mean test accuracy at k neurons minus {baseline}'s "
                           f"(column {baseline}) [{ci}]\n")
            typer.echo(format_table(gap_table(gap, digits=digits), fmt))
    if show in ("both", "critical"):
        critical = selector_critical_mass(df, delta, baseline=baseline, selectors=names, interpolate=interpolate,
                                          select_on=select_on)
        has_columns = bool(critical["is_column"].any())
        diffuse = (diffuseness(df, delta, baseline=baseline, selectors=names, interpolate=interpolate,
                               select_on=select_on) if has_columns else None)
        if fmt == "csv":
            typer.echo(join_diffuseness(critical, diffuse).to_csv(index=False).rstrip("\n"))
            return
        if fmt == "markdown":
            typer.echo(("\n" if show == "both" else "") + f"Critical mass k*({delta:g}) per selector next to "
                       f"{baseline}'s; diffuseness = k*({baseline}) / k* of the best column selector "
                       "(1 = no neuron is special)\n")
        table = critical_mass_table(critical, diffuse, digits=min(digits, 2))
        typer.echo(format_table(table, fmt))
        notes = []
        if diffuse is None:
            notes.append(f"no diffuseness: no column selector besides {baseline} (projections pick no neurons)")
        else:
            for r in diffuse.itertuples():
                if r.reason:
                    notes.append(f"{r.model} / {r.dataset}: diffuseness undefined: {r.reason}")
                elif r.bound:
                    notes.append(f"{r.model} / {r.dataset}: diffuseness is a {r.bound} bound (a k* at the smallest "
                                 "tested size)")
        for r in critical.itertuples():
            if r.reason:
                notes.append(f"{r.model} / {r.dataset} / {r.selector}: {r.reason}")
        if fmt == "markdown" and notes:
            typer.echo("")
        for n in dict.fromkeys(notes):
            typer.echo(f"note: {n}", err=fmt != "markdown")
