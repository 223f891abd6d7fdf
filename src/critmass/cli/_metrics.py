"""`critmass dr`: the paper's Table 1 (diffused redundancy at one delta) from one or more probe results tables."""

from __future__ import annotations

from typing import List

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
                               n_boot=n_boot, random_state=random_state, select_on=select_on)
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
