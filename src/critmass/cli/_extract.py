"""`critmass extract`: features of one layer (or several, in one pass) on dataset splits, into the cache."""

from __future__ import annotations

from pathlib import Path

import typer

from ..exceptions import ConfigError
from ._app import app, parse_list


def parse_max_samples(value: str | None) -> int | dict[str, int] | None:
    """``"4000"`` -> 4000; ``"train=4000,test=1000"`` -> ``{"train": 4000, "test": 1000}``."""
    if value is None or not value.strip():
        return None
    fix = "pass one number (4000) or split=number pairs (train=4000,test=1000)"
    try:
        if "=" not in value:
            return int(value)
        out = {}
        for part in parse_list(value):
            name, _, n = part.partition("=")
            name = name.strip()
            if name not in ("train", "val", "test") or name in out:
                raise ValueError(name)
            out[name] = int(n)
        return out
    except ValueError:
        raise ConfigError(f"--max-samples {value!r} is not understood; {fix}") from None


@app.command("extract")
def extract_cmd(
    model: str = typer.Argument(..., help="Model spec: timm:NAME, torchvision:NAME, hf:DIR, sbert:DIR, onnx:FILE, or an alias."),
    dataset: str = typer.Argument(..., help="Dataset spec: torchvision:NAME, imagefolder:DIR, hf:NAME, npz:FILE, or an alias."),
    layer: str = typer.Option("penultimate", "--layer", "-l", help="Layer name (`critmass layers MODEL`)."),
    layers: str = typer.Option(None, "--layers", help="Several layers in ONE forward pass, one cache entry each: "
                               "stages, all, or a comma list (e.g. blocks.3,blocks.6,penultimate)."),
    split: str = typer.Option("train,test", "--split", "-s", help="Comma-separated splits: train, val, test."),
    cache: Path = typer.Option(None, "--cache", help="Cache directory [default: $CRITMASS_CACHE or ~/.cache/critmass/features]."),
    data_root: Path = typer.Option(None, "--data-root", help="Root folder of torchvision datasets."),
    download: bool = typer.Option(False, "--download", help="Let torchvision download the dataset into --data-root."),
    weights: Path = typer.Option(None, "--weights", help="Local state dict (.pth/.pt/.safetensors) for the architecture."),
    pretrained: bool = typer.Option(True, "--pretrained/--no-pretrained", help="Load pretrained weights (default) or random init."),
    pooling: str = typer.Option("auto", "--pooling", help="auto, avg, max, flatten, cls, mean or none."),
    image_size: int = typer.Option(None, "--image-size", help="Override the model's input size (px)."),
    max_samples: str = typer.Option(None, "--max-samples", help="Stratified subset per split: one number for every "
                                    "split (4000) or per split (train=4000,test=1000)."),
    carve_test: bool = typer.Option(False, "--carve-test", help="For datasets without a test split: hold out a fixed "
                                    "20% of train as test."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sub-sampling and of the carved val split."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Images per forward pass."),
    num_workers: int = typer.Option(None, "--num-workers", help="DataLoader workers [default: cores - 1, max 4; max 8 on a GPU]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 or float16 on disk."),
    amp: str = typer.Option(None, "--amp", help="bf16 or fp16 autocast (GPU)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="channels_last memory format (GPU)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    mean: str = typer.Option(None, "--mean", help="onnx: models: per-channel mean (e.g. 104,117,123), in the "
                             "model's channel order and units of --scale [default: FILE.json, else ImageNet's]."),
    std: str = typer.Option(None, "--std", help="onnx: models: per-channel std (e.g. 58.4,57.1,57.4)."),
    scale: int = typer.Option(None, "--scale", help="onnx: models: pixel range before mean/std, 1 (0-1) or 255."),
    bgr: bool = typer.Option(None, "--bgr/--rgb", help="onnx: models: channel order of the input."),
    nhwc: bool = typer.Option(None, "--nhwc/--nchw", help="onnx: models: input layout (NHWC = channels-last input; "
                              "--channels-last is the GPU memory format) [default: from the graph]."),
    max_seq_length: int = typer.Option(None, "--max-seq-length", help="Text models: truncate inputs to this many "
                                       "tokens [default: the model's own, e.g. 256 for all-MiniLM-L6-v2]."),
    max_width: int = typer.Option(None, "--max-width", help="A pooled layer wider than this (e.g. --pooling flatten "
                                  "of a conv map) keeps this many seeded random units [default: no cap]."),
    width_seed: int = typer.Option(0, "--width-seed", help="Seed of the units kept by --max-width."),
):
    """Extract MODEL's LAYER features on DATASET splits into the cache (a second run does no work)."""
    prep = {k: v for k, v in (("mean", parse_list(mean, float) or None), ("std", parse_list(std, float) or None),
                              ("scale", scale), ("bgr", bgr), ("channels_last", nhwc)) if v is not None}
    common = dict(split=parse_list(split), cache=cache, data_root=data_root, download=download, weights=weights,
                  pretrained=pretrained, pooling=pooling, image_size=image_size,
                  max_samples=parse_max_samples(max_samples), carve_test=carve_test, seed=seed, batch_size=batch_size,
                  num_workers=num_workers, device=device, dtype=dtype, amp=amp, channels_last=channels_last,
                  progress=not quiet, preprocessing=prep or None, max_seq_length=max_seq_length,
                  max_width=max_width, width_seed=width_seed)
    if layers is not None:
        if layer != "penultimate":
            raise ConfigError("pass --layer NAME (one layer) or --layers SET (several, one pass), not both")
        from ..features import extract_layers

        found = extract_layers(model, dataset, layers=layers, **common)  # it parses and checks the set
    else:
        from ..features import extract

        found = {layer: extract(model, dataset, layer=layer, **common)}
    for layer_name, fs in found.items():
        for split_name, sp in fs.splits.items():
            speed = sp.manifest.get("images_per_s")
            typer.echo((f"{layer_name} " if len(found) > 1 else "") + f"{split_name}: {sp.n_samples} x "
                       f"{sp.n_features} {sp.x.dtype}" + (f"  ({speed} samples/s)" if speed else ""))
        typer.echo(fs.meta["source"])
