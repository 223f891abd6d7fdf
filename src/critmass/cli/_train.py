"""`critmass train`: train a timm backbone on an upstream task from a YAML config (seeded, resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="Training config (YAML); see examples/factors/configs/."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: the config's output, "
                                       "else runs/train/<name>-seed<seed>)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the run (default: the config's seed, 0)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the config and print it resolved; train nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Train CONFIG's backbone; a killed run resumes from its last checkpoint, a finished one is not redone.

    The weights end in OUT/model.safetensors (with OUT/config.json and OUT/train.json beside them) and load
    with `critmass extract timm:ARCH DATASET --weights OUT/model.safetensors`.
    """
    from ..train import load_train_config, train

    cfg = load_train_config(config, seed=seed, output=out)
    if dry_run:
        import json

        typer.echo(json.dumps(cfg.resolved(), indent=2, sort_keys=True, default=str))
        return
    res = train(cfg, progress=not quiet)
    typer.echo(res.summary())
