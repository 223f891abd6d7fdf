"""`critmass invert`: partial inversion, what a subset of a layer's neurons pins down of the input and the layer."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app


@app.command("invert")
def invert_command(
    model: str = typer.Argument(..., help="Image model spec: timm:NAME, torchvision:NAME, hf:DIR, onnx:FILE or an "
                                          "alias such as efficientnet-lite0."),
    images: str = typer.Option(..., "--images", help="An image file, a directory of images, or a dataset spec "
                                                     "(fashion-mnist, imagefolder:DIR, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: invert.parquet, invert_images.npz, "
                                                      "invert_grid*.png, invert_rest_error.png."),
    index: str = typer.Option(None, "--index", help="Comma-separated image indices (default: every file of a path, "
                                                    "the first 4 samples of a dataset)."),
    split: str = typer.Option("train", "--split", help="Dataset split the indices point into."),
    layer: str = typer.Option("penultimate", "--layer", help="Layer to invert (`critmass layers MODEL`)."),
    pooling: str = typer.Option("auto", "--pooling", help="auto, avg, max, flatten, cls, mean or none."),
    selector: str = typer.Option("random", "--selector", help="Comma-separated column selectors: random, norm-min, "
                                                              "norm-max, variance, cluster, prefix, ..."),
    fraction: str = typer.Option("0.2", "--fraction",
                                 help="Comma-separated fractions of the layer's neurons, in (0, 1]."),
    regularised: bool = typer.Option(False, "--regularised", help="Also push the unselected neurons away (alpha "
                                                                  "fixed at the first step)."),
    steps: int = typer.Option(5000, "--steps", help="Optimisation steps (the paper: 5000)."),
    optimizer: str = typer.Option("normgrad", "--optimizer", help="normgrad (the paper's normalised-gradient step), "
                                                                  "sign or adam."),
    step_size: float = typer.Option(None, "--step-size", help="Step size / learning rate (default: normgrad 1, "
                                                              "sign 1/255, adam 0.01)."),
    image_size: int = typer.Option(None, "--image-size", help="Override the model's input size (px)."),
    seed: str = typer.Option("0", "--seed", help="Comma-separated seeds of the noise images and random masks."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    weights: Path = typer.Option(None, "--weights", help="Local state dict for the architecture."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="Pretrained weights or random init."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Synthesise images that match each target's representation on a subset of the layer's neurons only, and
    write how far the rest of the layer (and the picture) follows: one row per target, selector, fraction and seed,
    with the full-layer inversion (the reference) and the noise seed (the floor) measured on the same masks."""
    from .._validation import check_fraction
    from ..exceptions import ConfigError
    from ..invert import check_selector, invert, load_images, write_inversion
    from ..models import load_model
    from ._app import parse_list

    selectors = [check_selector(s) for s in parse_list(selector)]
    fractions = [check_fraction(f, name="--fraction") for f in parse_list(fraction)]
    if not selectors or not fractions:
        raise ConfigError("--selector and --fraction need at least one value each")
    if steps < 1:
        raise ConfigError(f"--steps must be a positive integer; got {steps!r}")
    seeds = parse_list(seed, int)
    backbone = load_model(model, pretrained=pretrained, weights=weights, image_size=image_size)
    if backbone.modality != "image":
        raise ConfigError(f"partial inversion needs an image model; {model} reads {backbone.modality}; "
                          "pass an image model such as timm:resnet50 or efficientnet-lite0")
    backbone.check_layer(layer)
    samples, names = load_images(images, index=parse_list(index, int) or None, split=split)
    result = invert(backbone, samples, layer=layer, pooling=pooling, selectors=selectors, fractions=fractions,
                    seeds=seeds or [0], regularised=regularised, steps=steps, optimizer=optimizer,
                    step_size=step_size, device=device, names=names, progress=not quiet)
    written = write_inversion(result, out)
    t = result.table
    summary = (t[t["inversion"] == "partial"].groupby(["selector", "fraction"])
               [["subset_error_start", "subset_error_end", "rest_error_end", "cosine_end"]].mean())
    typer.echo(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    for path in written:
        typer.echo(f"wrote {path}")
