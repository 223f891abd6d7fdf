"""`critmass dr`: the paper's Table 1 (diffused redundancy at one delta) from a probe results table."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app


@app.command("dr")
def dr_command(
    results: Path = typer.Argument(..., help="A results.parquet file or the probe output directory holding one."),
    delta: float = typer.Option(
        0.9, "--delta", help="Share of the full layer's accuracy a subset must reach, in (0, 1]."
    ),
    selector: str = typer.Option("random", "--selector", help="Subset selector to read DR from."),
    interpolate: bool = typer.Option(
        False, "--interpolate",
        help="Interpolate the accuracy curve (in log-fraction) instead of reading DR off the tested grid.",
    ),
    spread: str = typer.Option(
        "ci", "--spread", help="Append the bootstrap CI over seeds (ci), the per-seed std (std) or nothing (none)."
    ),
    fmt: str = typer.Option("markdown", "--format", help="Output format: markdown, csv or latex."),
    digits: int = typer.Option(2, "--digits", help="Decimals shown."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of the seeds for the CI."),
    random_state: int = typer.Option(0, "--random-state", help="Seed of the bootstrap."),
):
    """Print DR(delta) = 1 - f* per model (rows) and dataset (columns), like Table 1 of Nanda et al. 2023."""
    from ..metrics import dr_table, format_table, read_results

    table = dr_table(read_results(results), delta, selector=selector, interpolate=interpolate, spread=spread,
                     digits=digits, n_boot=n_boot, random_state=random_state)
    text = format_table(table, fmt)
    if fmt == "markdown":
        how = "interpolated" if interpolate else "grid"
        note = {"ci": "; [95% bootstrap CI over seeds]", "std": "; ± std over seeds", "none": ""}.get(spread, "")
        typer.echo(f"DR at delta={delta:g} ({selector} subsets, {how}{note})\n")
    typer.echo(text)
