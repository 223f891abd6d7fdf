"""`critmass study`: the paper's whole study of one model on several datasets, in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import app


@app.command("study")
def study_cmd(
    model: str = typer.Argument(..., help="Model spec: efficientnet-lite0, timm:NAME, torchvision:NAME, hf:DIR, "
                                          "sbert:DIR, all-minilm-l6-v2, ..."),
    datasets: str = typer.Option(..., "--datasets", "-d", help="Comma-separated dataset specs: fashion-mnist,digits,"
                                                               "textures, torchvision:CIFAR10, bbc-news, ..."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (resumable: re-run to continue)."),
    quick: bool = typer.Option(False, "--quick", help="A smoke version: 5 fractions, 2 seeds, 600 train / 300 test "
                                                      "samples, 64 px, 10 inversion steps (a couple of minutes)."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Time budget (1h, 90m, 3600s): scale fractions, seeds, "
                                                                "samples and inversion down to fit, and say what was cut."),
    parts: Optional[str] = typer.Option(None, "--parts", help="Comma-separated parts beyond the probe curves and CKA: "
                                                              "profile, neurons, inversion, export (default: all that "
                                                              "apply; text models leave out inversion)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the units and the estimated time; run nothing."),
    config_out: Optional[Path] = typer.Option(None, "--config-out", help="Write the study as a sweep config (YAML) "
                                                                         "that `critmass sweep` re-runs."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Root folder of torchvision datasets."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache [default: $CRITMASS_CACHE]."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input size (px) [default: the model's own]."),
    max_samples: Optional[str] = typer.Option(None, "--max-samples", help="Stratified subset per split (4000 or "
                                                                          "train=4000,test=1000) [default: all]."),
    fractions: Optional[str] = typer.Option(None, "--fractions", help="Comma-separated fractions in (0, 1] "
                                                                      "[default: the paper's 15]."),
    selectors: Optional[str] = typer.Option(None, "--selectors", help="Comma-separated selectors compared "
                                                                      "[default: random,pca,fscore,greedy,attribution]."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per subset size [default: the paper's 5]."),
    inversion_steps: Optional[int] = typer.Option(None, "--inversion-steps",
                                                  help="Inversion steps [default 200; the paper: 5000]."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local state dict for the architecture."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="Pretrained weights or random init."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    executor: Optional[str] = typer.Option(None, "--executor", "-e", help="local, ray or slurm (as `critmass sweep`)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Local worker processes [default: every core]."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address."),
    delta: float = typer.Option(0.9, "--delta", help="Share of the full layer's accuracy for DR, in (0, 1]."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of the report's CIs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the plan and the summary."),
):
    """Plan, run and report the paper's study of MODEL on --datasets: probe curves of random, PCA and supervised
    subsets with CKA and per-class costs, DR with CIs, the depth profile, which neurons, partial inversion and the
    savings of exporting the critical mass. The plan is an ordinary sweep (--config-out writes it); re-running
    continues a killed study. Exit code 0 when every unit succeeded, 3 when some failed, 2 for bad input."""
    from ..study import run_study
    from ._app import parse_list
    from ._extract import parse_max_samples

    echo = typer.echo
    quiet_echo = (lambda msg: None) if quiet else echo
    res = run_study(model, datasets, out=out, quick=quick, budget=budget, parts=parts, dry_run=dry_run,
                    config_out=config_out, executor=executor, workers=workers, address=address, delta=delta,
                    n_boot=n_boot, echo=echo if dry_run else quiet_echo, data_root=data_root, cache=cache,
                    image_size=image_size, max_samples=parse_max_samples(max_samples), seeds=seeds,
                    fractions=parse_list(fractions, float) or None, selectors=parse_list(selectors) or None,
                    inversion_steps=inversion_steps, weights=weights, pretrained=pretrained, device=device)
    if quiet and not dry_run and res.sweep is not None:
        echo(res.sweep.summary())
        if res.report is not None:
            echo(f"report: {res.report.html}")
    if not res.ok:
        raise SystemExit(3)
