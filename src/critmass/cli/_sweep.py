"""`critmass sweep`: a whole study from one YAML config; resumable, local / Ray / Slurm."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app


@app.command("sweep")
def sweep_cmd(
    config: Path = typer.Argument(..., help="Sweep config (YAML); see examples/demo.yaml and examples/paper/."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the config and print the plan; run nothing."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: the config's output)."),
    executor: Optional[str] = typer.Option(
        None, "--executor", "-e", help="local (processes), ray (Ray tasks) or slurm (Submitit job arrays) "
        "(default: the config's executor.kind, local)."),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-w", help="Local worker processes (default: every core)."),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster address (default: RAY_ADDRESS or a local instance)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the summary."),
):
    """Run every extraction, probe and CKA unit of CONFIG that is not done yet and merge the results.

    Finished units are skipped, so re-running continues a killed sweep and a changed config recomputes only
    the units it changes. Failed units are listed at the end; the exit code is 0 when all succeeded, 3 when
    some failed (their errors are in RUN_DIR/failures.json) and 2 for an invalid config.
    """
    from ..sweep import run_sweep

    echo = (lambda msg: None) if quiet else typer.echo
    res = run_sweep(config, out=out, executor=executor, workers=workers, address=address, dry_run=dry_run, echo=echo)
    if quiet and not dry_run:
        typer.echo(res.summary())
    if not res.ok:
        # SystemExit, not typer.Exit: with standalone_mode=False click returns an Exit's code, which main() drops
        raise SystemExit(3)
