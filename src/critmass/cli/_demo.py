"""`critmass demo`: the whole pipeline offline on a real pretrained model and real data."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app, parse_list


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("critmass-demo"), "--out", "-o", help="Output directory."),
    n_train: int = typer.Option(4000, "--n-train", help="Stratified training subset size."),
    n_test: int = typer.Option(1000, "--n-test", help="Stratified test subset size."),
    full: bool = typer.Option(False, "--full", help="Use all 70,000 Fashion-MNIST images."),
    image_size: int = typer.Option(112, "--image-size", help="Input size fed to the model (px)."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per (selector, fraction)."),
    selector: str = typer.Option("random,pca,randproj", "--selector", help="Comma-separated selectors."),
    solver: str = typer.Option("logistic", "--solver", help="A registered solver (critmass probe --help lists them)."),
    delta: float = typer.Option(0.9, "--delta", help="DR threshold: delta x full-layer accuracy."),
    cache: Path = typer.Option(None, "--cache", help="Feature cache directory."),
    data_root: Path = typer.Option(None, "--data-root", help="Where Fashion-MNIST is (or goes, with --download)."),
    download: bool = typer.Option(False, "--download", help="Download Fashion-MNIST if it is not installed."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """EfficientNet-Lite0 (ImageNet weights) on Fashion-MNIST: extract, probe subsets, DR table, plot."""
    from .._demo import run_demo

    run_demo(out, n_train=n_train, n_test=n_test, full=full, image_size=image_size, seeds=list(range(seeds)),
             selectors=parse_list(selector), solver=solver, delta=delta, cache=cache, data_root=data_root,
             download=download, device=device, progress=not quiet, echo=typer.echo)
