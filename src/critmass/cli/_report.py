"""`critmass report RUN_DIR`: figures, Table 1 and a self-contained report.html from a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app, parse_list


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="Run directory holding results.parquet (per_class / cka / invert "
                                             "optional), or only the invert.parquet of `critmass invert`."),
    delta: float = typer.Option(0.9, "--delta", help="Share of the full layer's accuracy for DR, in (0, 1]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default: RUN_DIR/report)."),
    formats: str = typer.Option("png,pdf", "--formats", help="Figure files to write: any of png, pdf, svg."),
    selector: Optional[str] = typer.Option(
        None, "--selector", help="Selector of Table 1 and the per-class figure (default: random)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of the seeds for the CIs (0: none)."),
    interpolate: bool = typer.Option(
        False, "--interpolate", help="Interpolate DR in log-fraction instead of reading it off the tested grid."),
    random_state: int = typer.Option(0, "--random-state", help="Seed of the bootstrap."),
    select_on: str = typer.Option(
        "test", "--select-on",
        help="Curve f* is read off: test (as the paper's Table 1) or val (the validation curve)."),
):
    """Figures (PNG/PDF), the paper's Table 1 (Markdown/LaTeX/CSV) and one self-contained report.html."""
    from ..report import build_report

    rep = build_report(run_dir, delta=delta, out=out, formats=parse_list(formats), selector=selector, n_boot=n_boot,
                       interpolate=interpolate, random_state=random_state, select_on=select_on)
    typer.echo(f"wrote {len(rep.figures)} figures ({', '.join(parse_list(formats))}) to {rep.out / 'figures'}, "
               f"{len(rep.tables)} tables to {rep.out / 'tables'}")
    typer.echo(f"open {rep.html}")
